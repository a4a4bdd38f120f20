//! The log view's endpoints, on the agents' `logs` command and `log.<watcher>.<pid>` events
//! (see [`crate::logs`], which `troupe logs` uses the same way).
//!
//! - `GET /api/logs?watcher=W&node=N&lines=100&stream=both`: the last lines of `W` on node `N`
//!   (or `*`, every alive node), merged by time: `{lines: [{node, watcher, time, pid, stream,
//!   line, seq}], failed: {NODE: reason}}`.
//! - `GET /api/logs/follow?watcher=W&node=N`: Server-Sent Events, one `line` event (same
//!   shape) per line printed from then on, from a SUB per node subscribed to `log.<w>.`
//!   (which is what makes an agent publish them). It takes one of the
//!   [`troupe::bounds::DASHBOARD_EVENT_STREAMS`] places. Unlike `troupe logs -f` it does not
//!   fill gaps from the ring: a page that needs every line reads the tail again.

use super::api::error;
use super::App;
use crate::broadcast::BroadcastOptions;
use crate::cluster_link::ClusterLink;
use crate::membership::MemberState;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;
use troupe::bounds::{DASHBOARD_EVENT_STREAMS, LOGS_MAX_LINES};
use troupe::protocol::{log_topic_prefix, LogEvent, LogsRequest, StreamSelection};

#[derive(Deserialize)]
pub struct LogsParams {
    watcher: String,
    node: Option<String>,
    lines: Option<u64>,
    stream: Option<String>,
}

/// The watcher and node selection, checked: None for every alive node.
fn selection(watcher: &str, node: Option<&str>) -> Result<Option<String>, String> {
    troupe::config::names::check_name(watcher).map_err(|e| format!("watcher: {e}"))?;
    match node {
        None | Some("*") => Ok(None),
        Some(node) => {
            troupe::config::names::check_name(node).map_err(|e| format!("node: {e}"))?;
            Ok(Some(node.to_string()))
        }
    }
}

pub async fn tail(State(app): State<Arc<App>>, Query(params): Query<LogsParams>) -> Response {
    let node = match selection(&params.watcher, params.node.as_deref()) {
        Ok(node) => node,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut request = LogsRequest::new(&params.watcher);
    if let Some(lines) = params.lines {
        request.lines = lines.min(LOGS_MAX_LINES);
    }
    if let Some(stream) = &params.stream {
        match StreamSelection::parse(stream) {
            Ok(stream) => request.stream = stream,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("stream: {e}")),
        }
    }
    let link = ClusterLink::Kept {
        membership: app.context.membership.clone(),
        links: app.context.links.clone(),
    };
    let options = BroadcastOptions {
        node,
        timeout: app.context.timeout,
        json: true,
        ..BroadcastOptions::default()
    };
    match crate::logs::tail(&link, &request, &options).await {
        Ok(tail) => {
            let lines: Vec<Value> = tail
                .lines
                .iter()
                .map(|l| line_json(&l.node, &l.watcher, &l.line))
                .collect();
            Json(json!({"lines": lines, "failed": tail.failed})).into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("{e:#}")),
    }
}

fn line_json(node: &str, watcher: &str, line: &troupe::protocol::LogLine) -> Value {
    json!({
        "node": node, "watcher": watcher, "time": line.time, "pid": line.pid,
        "stream": line.stream.as_str(), "line": line.line, "seq": line.seq,
    })
}

#[derive(Deserialize)]
pub struct FollowParams {
    watcher: String,
    node: Option<String>,
}

pub async fn follow(State(app): State<Arc<App>>, Query(params): Query<FollowParams>) -> Response {
    let node = match selection(&params.watcher, params.node.as_deref()) {
        Ok(node) => node,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{DASHBOARD_EVENT_STREAMS} pages follow this dashboard already \
                 (troupe::bounds::DASHBOARD_EVENT_STREAMS): close one and reload"
            ),
        );
    };
    let targets =
        match crate::broadcast::select(app.context.membership.alive_targets(), node.as_deref()) {
            Ok(targets) => targets,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
    // Each selected node's events socket, as membership knows it.
    let members = app.context.membership.members();
    let endpoints: Vec<(String, String)> = targets
        .iter()
        .filter_map(|t| {
            let member = members
                .iter()
                .find(|m| m.name == t.name && m.state == MemberState::Alive)?;
            let pubsub = &member.info.as_ref()?.endpoints.pubsub;
            Some((
                t.name.clone(),
                crate::stats::reader::port_at_control_host(pubsub, &member.endpoint)?,
            ))
        })
        .collect();
    let (tx, rx) = mpsc::channel::<Event>(256);
    let prefix = log_topic_prefix(&params.watcher);
    for (node, endpoint) in endpoints {
        let tx = tx.clone();
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let zmq = zmq::Context::new();
            let max = troupe::config::DEFAULT_MAX_MESSAGE_SIZE;
            let Ok(mut socket) =
                troupe::sockets::connect_subscriber(&zmq, &endpoint, prefix.as_bytes(), max).await
            else {
                return;
            };
            loop {
                let message = tokio::select! {
                    message = socket.next() => message,
                    _ = tx.closed() => return,
                };
                let Some(Ok(message)) = message else { return };
                let Some(body) = message.iter().nth(1) else {
                    continue;
                };
                let Ok(event) = serde_json::from_slice::<LogEvent>(body) else {
                    continue;
                };
                let data = line_json(&node, &event.watcher, &event.line);
                let sse = Event::default().event("line").data(data.to_string());
                if tx.send(sse).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let stream = futures::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), (rx, permit)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
