//! The JSON API's read side and the embedded page.
//!
//! - `GET /api/members`: `{cluster, time, nodes: [...], watchers: [...]}`; each node as
//!   `troupe nodes --json` shows it plus `started`, `uptime` and `matrix` (watcher ->
//!   `{status, numprocesses, stopped_reason}`), last values kept for a down node.
//! - `GET /api/stats?since=SECONDS`: the charts' series from serve's stats history, summed per
//!   node and per node and watcher: `{window_seconds, nodes: {NODE: [[time, cpu, rss]...]},
//!   watchers: {"NODE/WATCHER": [...]}}`.
//! - `POST /api/login` (token in `Authorization`): sets the session cookie.

use super::access;
use super::App;
use crate::membership::Member;
use crate::stats::history::{HistoryQuery, Series, WINDOW};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use troupe::protocol::now_epoch;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            // The page runs only its own script and style, and is framed by no one.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// A JSON error: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

pub async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: see the README's dashboard section for /api/members, /api/stats, \
         /api/events, /api/plan, /api/action, /api/logs, /api/logs/follow, and /metrics",
    )
}

/// Bounds the requests handled at once ([`troupe::bounds::DASHBOARD_REQUESTS_IN_FLIGHT`]).
pub async fn in_flight(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = app.requests.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the dashboard is handling {} requests already \
                 (troupe::bounds::DASHBOARD_REQUESTS_IN_FLIGHT): try again when they are done",
                troupe::bounds::DASHBOARD_REQUESTS_IN_FLIGHT
            ),
        );
    };
    next.run(request).await
}

pub async fn login(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    // `check` let the request in: with a key, it carried a valid token.
    match access::presented_token(&headers) {
        Some(token) => (
            StatusCode::NO_CONTENT,
            [(
                header::SET_COOKIE,
                access::session_cookie(&app.access, &token),
            )],
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

pub async fn members(State(app): State<Arc<App>>) -> Json<Value> {
    Json(members_json(
        &app.context.cluster,
        &app.context.membership.members(),
    ))
}

/// The members and their watchers, as `/api/members` and the live stream's `members` give them.
pub fn members_json(cluster: &str, members: &[Member]) -> Value {
    let nodes: Vec<Value> = members.iter().map(node_json).collect();
    let watchers: BTreeSet<&String> = members
        .iter()
        .filter_map(|m| m.info.as_ref())
        .flat_map(|info| info.watchers.keys())
        .collect();
    json!({
        "cluster": cluster,
        "time": now_epoch(),
        "nodes": nodes,
        "watchers": watchers,
    })
}

fn node_json(member: &Member) -> Value {
    let mut node = crate::membership::member_json(member);
    let info = member.info.as_ref();
    let matrix: Map<String, Value> = info
        .map(|info| {
            info.watchers
                .iter()
                .map(|(name, w)| {
                    let reason = w.stopped_reason.as_ref().map(|r| r.to_string());
                    let cell = json!({
                        "status": w.status,
                        "numprocesses": w.numprocesses,
                        "stopped_reason": reason,
                    });
                    (name.clone(), cell)
                })
                .collect()
        })
        .unwrap_or_default();
    let started = info.map(|i| i.started);
    if let Some(object) = node.as_object_mut() {
        object.insert("started".into(), json!(started));
        object.insert(
            "uptime".into(),
            json!(started.map(|s| (now_epoch() - s).max(0.0))),
        );
        object.insert("matrix".into(), Value::Object(matrix));
    }
    node
}

#[derive(Deserialize)]
pub struct StatsParams {
    since: Option<f64>,
}

pub async fn stats(State(app): State<Arc<App>>, Query(params): Query<StatsParams>) -> Response {
    let since = match params.since {
        None => WINDOW,
        Some(s) => match Duration::try_from_secs_f64(s) {
            Ok(since) if !since.is_zero() => since.min(WINDOW),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("since: expected a positive number of seconds, got {s}"),
                )
            }
        },
    };
    match chart_series(&app, since).await {
        Some(series) => Json(series).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the stats aggregation has stopped",
        ),
    }
}

/// The last `since` of the stats history, summed per node and per node and watcher.
pub async fn chart_series(app: &App, since: Duration) -> Option<Value> {
    let query = HistoryQuery {
        since,
        ..HistoryQuery::default()
    };
    let answer = app.context.stats.history(query).await?;
    let (nodes, watchers) = sum_series(&answer.series);
    Some(json!({
        "window_seconds": WINDOW.as_secs(),
        "nodes": nodes,
        "watchers": watchers,
    }))
}

/// One chart line: `[time, cpu %, rss bytes]` points, oldest first.
type Line = Vec<(f64, f64, u64)>;

/// Node totals as they are, processes of one watcher summed per second (each process is
/// sampled on its own, a few milliseconds apart).
fn sum_series(series: &[Series]) -> (BTreeMap<String, Line>, BTreeMap<String, Line>) {
    let mut nodes = BTreeMap::new();
    let mut sums: BTreeMap<String, BTreeMap<i64, (f64, u64)>> = BTreeMap::new();
    for s in series {
        match &s.watcher {
            None => {
                let line: Line = s
                    .points
                    .iter()
                    .map(|p| (p.time, p.cpu.unwrap_or(0.0), p.rss.unwrap_or(0)))
                    .collect();
                nodes.insert(s.node.clone(), line);
            }
            Some(watcher) => {
                let buckets = sums.entry(format!("{}/{watcher}", s.node)).or_default();
                for p in &s.points {
                    let bucket = buckets.entry(p.time.floor() as i64).or_default();
                    bucket.0 += p.cpu.unwrap_or(0.0);
                    bucket.1 += p.rss.unwrap_or(0);
                }
            }
        }
    }
    let watchers = sums
        .into_iter()
        .map(|(key, buckets)| {
            let line = buckets
                .into_iter()
                .map(|(second, (cpu, rss))| (second as f64, cpu, rss))
                .collect();
            (key, line)
        })
        .collect();
    (nodes, watchers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::history::HistoryPoint;

    fn point(time: f64, cpu: f64, rss: u64) -> HistoryPoint {
        HistoryPoint {
            time,
            cpu: Some(cpu),
            mem: None,
            rss: Some(rss),
            age: None,
        }
    }

    #[test]
    fn processes_of_a_watcher_are_summed_per_second_and_node_totals_kept() {
        let series = vec![
            Series {
                node: "a".into(),
                watcher: None,
                pid: None,
                points: vec![point(10.5, 3.0, 30)],
            },
            Series {
                node: "a".into(),
                watcher: Some("web".into()),
                pid: Some(1),
                points: vec![point(10.1, 1.0, 10), point(11.1, 1.0, 10)],
            },
            Series {
                node: "a".into(),
                watcher: Some("web".into()),
                pid: Some(2),
                points: vec![point(10.2, 2.0, 20)],
            },
        ];
        let (nodes, watchers) = sum_series(&series);
        assert_eq!(nodes["a"], vec![(10.5, 3.0, 30)]);
        assert_eq!(watchers["a/web"], vec![(10.0, 3.0, 30), (11.0, 1.0, 10)]);
    }
}
