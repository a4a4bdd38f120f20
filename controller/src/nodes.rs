//! `troupe nodes`: who is there. Asks a running `troupe serve`, or discovers on the spot.

use crate::discovery::Discovery;
use crate::membership::{member_json, MemberState};
use crate::settings::{NodeFlags, Settings};
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::time::Instant;
use troupe::protocol::Request;

/// How long to wait for a running controller to answer before discovering ourselves.
const CONTROLLER_TIMEOUT: Duration = Duration::from_millis(500);

/// Members as JSON objects (see [`member_json`]), from a running controller or discovered.
pub async fn list(
    flags: &NodeFlags,
    settings: &Settings,
    wait: Duration,
) -> anyhow::Result<Vec<Value>> {
    if let Some(nodes) = from_controller(&flags.controller_endpoint()).await {
        return Ok(nodes);
    }
    let (membership, discovery) = Discovery::start(crate::serve::sources(settings))?;
    let deadline = Instant::now() + wait;
    // Probing is complete after its first sweep, whatever --wait says; mDNS answers keep
    // arriving, so with multicast on, listen until --wait (or the expected count).
    discovery.first_sweep().await;
    if settings.multicast {
        let expect = settings.expect;
        let left = deadline.saturating_duration_since(Instant::now());
        membership
            .wait_until(left, |m| {
                expect.is_some_and(|n| {
                    m.iter().filter(|m| m.state == MemberState::Alive).count() >= n
                })
            })
            .await;
    }
    membership.sync().await;
    let nodes = membership.members().iter().map(member_json).collect();
    discovery.stop();
    Ok(nodes)
}

async fn from_controller(endpoint: &str) -> Option<Vec<Value>> {
    let address = endpoint.trim_start_matches("tcp://");
    // A closed port answers at once; only then is a ZeroMQ round trip worth trying.
    let connect = tokio::net::TcpStream::connect(address);
    tokio::time::timeout(CONTROLLER_TIMEOUT, connect)
        .await
        .ok()?
        .ok()?;
    let zmq = zmq::Context::new();
    let reply = troupe::client::call_async(
        &zmq,
        endpoint,
        Request::new("nodelist", Map::new()),
        CONTROLLER_TIMEOUT,
    )
    .await
    .ok()?;
    reply["nodes"].as_array().cloned()
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
