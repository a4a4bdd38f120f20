//! `troupe nodes`: who is there. Asks a running `troupe serve`, or discovers on the spot.

use crate::command::ClusterLink;
use crate::settings::NodeFlags;
use serde_json::Value;
use std::time::Duration;

/// Members as JSON objects (see [`crate::membership::member_json`]): from a running
/// controller, or discovered on the spot, listening `wait` for mDNS answers.
pub async fn list(flags: &NodeFlags, wait: Duration) -> anyhow::Result<Vec<Value>> {
    let link = ClusterLink::connect_listening(flags, wait).await?;
    Ok(link.nodes().await)
}

/// The human table: one row per member.
pub fn table(nodes: &[Value]) -> String {
    let header = [
        "NAME", "ID", "ADDRESS", "STATE", "SOURCE", "VERSION", "WATCHERS",
    ];
    let rows: Vec<[String; 7]> = nodes
        .iter()
        .map(|n| {
            let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| "-".into());
            let id = n["id"]
                .as_str()
                .map(|i| i.chars().take(8).collect())
                .unwrap_or_else(|| "-".into());
            let mut state = text(&n["state"]);
            if n["conflict"] == true {
                state.push_str(" (id clash!)");
            }
            let source = n["source"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let version = match n["kind"].as_str() {
                Some("circus") => "circusd".to_string(),
                _ => text(&n["version"]),
            };
            [
                text(&n["name"]),
                id,
                text(&n["endpoint"])
                    .trim_start_matches("tcp://")
                    .to_string(),
                state,
                source,
                version,
                n["watchers"].to_string(),
            ]
        })
        .collect();
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    crate::render::table(&header, &rows)
}
