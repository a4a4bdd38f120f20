//! The controller's stats commands on its control socket:
//! `stats_snapshot` {node?, watcher?} -> `snapshot`, and
//! `stats_history` {since_seconds, node?, watcher?} -> `since`, `series`, `series_refused`
//! (per node, samples not kept at `troupe::bounds::SERVE_STATS_SERIES_PER_NODE` or
//! `SERVE_STATS_SERIES`).
//! `node` and `watcher` are comma-separated names or globs.

use super::actor::StatsHandle;
use super::history::{HistoryQuery, WINDOW};
use super::snapshot::NameFilter;
use serde_json::{json, Map, Value};
use std::time::Duration;
use troupe::protocol::{now_epoch, CommandError, Errno, Request};

/// Answers the stats commands; None for any other command. Called before the `node`
/// property is taken as "forward to these nodes", which for these commands it is not.
pub async fn handle(
    request: &Request,
    stats: &StatsHandle,
) -> Option<Result<Map<String, Value>, CommandError>> {
    match request.command.as_str() {
        "stats_snapshot" => Some(snapshot(&request.properties, stats).await),
        "stats_history" => Some(history(&request.properties, stats).await),
        _ => None,
    }
}

async fn snapshot(
    props: &Map<String, Value>,
    stats: &StatsHandle,
) -> Result<Map<String, Value>, CommandError> {
    let (nodes, watchers) = filters(props)?;
    let snapshot = stats.snapshot().await.ok_or_else(stopped)?;
    let snapshot = snapshot.filtered(&nodes, &watchers);
    Ok(one("snapshot", json!(snapshot)))
}

async fn history(
    props: &Map<String, Value>,
    stats: &StatsHandle,
) -> Result<Map<String, Value>, CommandError> {
    let (nodes, watchers) = filters(props)?;
    let since = match props.get("since_seconds") {
        None => WINDOW,
        Some(value) => value
            .as_f64()
            .filter(|s| *s > 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| {
                CommandError::message(format!(
                    "'since_seconds' must be a positive number, got {value}"
                ))
            })?,
    };
    let query = HistoryQuery {
        since,
        nodes,
        watchers,
        watcher_given: props.get("watcher").is_some_and(|w| !w.is_null()),
    };
    let answer = stats.history(query).await.ok_or_else(stopped)?;
    let mut fields = one("series", json!(answer.series));
    fields.insert("series_refused".into(), json!(answer.refused));
    fields.insert(
        "since".into(),
        json!(now_epoch() - since.min(WINDOW).as_secs_f64()),
    );
    fields.insert("window_seconds".into(), json!(WINDOW.as_secs()));
    Ok(fields)
}

fn filters(props: &Map<String, Value>) -> Result<(NameFilter, NameFilter), CommandError> {
    let text = |key: &str| -> Result<Option<&str>, CommandError> {
        match props.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(CommandError::message(format!(
                "'{key}' must be a string (names or globs), got {other}"
            ))),
        }
    };
    let parse = |key: &str| {
        NameFilter::parse(text(key)?).map_err(|e| CommandError::message(format!("'{key}': {e}")))
    };
    Ok((parse("node")?, parse("watcher")?))
}

fn stopped() -> CommandError {
    CommandError::new(Errno::BadMsgDataError, "the stats aggregation has stopped")
}

fn one(key: &str, value: Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(key.to_string(), value);
    map
}
