//! SUB reader tasks: one per stats stream, each turning messages into [`StatsMsg::Sample`]s
//! for the stats actor. Aborting the task closes its socket (the unsubscribe).

use super::actor::StatsMsg;
use super::topic::{parse_cluster_topic, parse_node_topic, PREFIX};
use serde_json::Map;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use troupe::config::DEFAULT_MAX_MESSAGE_SIZE;
use troupe::protocol::Request;

/// Where a member's stats come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsSource {
    /// A troupe agent's stats endpoint, from `nodeinfo`.
    Known(String),
    /// A stock circusd: ask its control endpoint (`globaloptions`) where its stats are.
    AskCircus { control: String },
}

/// Whose stream a reader reads.
#[derive(Debug, Clone)]
pub enum Stream {
    /// One node's stream; the node's name tags each sample (shared: a sample is not worth an
    /// allocation for it).
    Node { node: Arc<str>, source: StatsSource },
    /// A controller's stream, the node in each topic (`troupe top` against `troupe serve`).
    Controller { endpoint: String },
}

/// Reads `stream` until the actor goes away (or the task is aborted).
pub async fn read(zmq: zmq::Context, stream: Stream, actor: mpsc::Sender<StatsMsg>) {
    let endpoint = match &stream {
        Stream::Node { source, node } => match resolve(&zmq, source).await {
            Some(endpoint) => endpoint,
            None => {
                tracing::debug!(%node, "no stats endpoint");
                return;
            }
        },
        Stream::Controller { endpoint } => endpoint.clone(),
    };
    let mut socket = match troupe::sockets::connect_subscriber(
        &zmq,
        &endpoint,
        PREFIX.as_bytes(),
        DEFAULT_MAX_MESSAGE_SIZE,
    )
    .await
    {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(%endpoint, "cannot subscribe to stats: {e}");
            return;
        }
    };
    tracing::debug!(%endpoint, "subscribed to stats");
    while let Some(message) = socket.next().await {
        let Ok(mut message) = message else { continue };
        let (Some(topic), Some(body), None) = (
            message.pop_front(),
            message.pop_front(),
            message.pop_front(),
        ) else {
            continue;
        };
        let Ok(topic) = std::str::from_utf8(&topic) else {
            continue;
        };
        let sample = match &stream {
            Stream::Node { node, .. } => parse_node_topic(topic).map(|t| (node.clone(), t)),
            Stream::Controller { .. } => parse_cluster_topic(topic).map(|(n, t)| (n.into(), t)),
        };
        let Some((node, topic)) = sample else {
            continue;
        };
        let msg = StatsMsg::Sample { node, topic, body };
        if actor.send(msg).await.is_err() {
            return;
        }
    }
}

/// The endpoint to connect to. A stock circusd is asked until it answers: it may be busy.
async fn resolve(zmq: &zmq::Context, source: &StatsSource) -> Option<String> {
    match source {
        StatsSource::Known(endpoint) => Some(endpoint.clone()),
        StatsSource::AskCircus { control } => loop {
            let request = Request::new("globaloptions", Map::new());
            let reply =
                troupe::client::call_async(zmq, control, request, Duration::from_secs(2)).await;
            if let Some(stats) = reply
                .ok()
                .and_then(|r| r["options"]["stats_endpoint"].as_str().map(String::from))
            {
                return port_at_control_host(&stats, control);
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        },
    }
}

/// The stats endpoint others can reach: the HOST of the control endpoint they reach the node
/// at, and the PORT of the stats endpoint the node reports (which carries its bind address,
/// often 0.0.0.0), whatever host it reports.
pub fn port_at_control_host(stats: &str, control: &str) -> Option<String> {
    // The stats host may be a wildcard (`*`, `0.0.0.0`) that is no endpoint's: only its port.
    let port = stats.rsplit_once(':')?.1.parse::<u16>().ok()?;
    let control = troupe::endpoint::Endpoint::parse(control).ok()?;
    Some(control.with_port(port).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_endpoint_takes_the_control_host_and_the_stats_port() {
        let control = "tcp://10.0.0.7:5555";
        assert_eq!(
            port_at_control_host("tcp://0.0.0.0:5557", control).as_deref(),
            Some("tcp://10.0.0.7:5557")
        );
        assert_eq!(
            port_at_control_host("tcp://127.0.0.2:6000", "tcp://127.0.0.2:5555").as_deref(),
            Some("tcp://127.0.0.2:6000")
        );
        assert_eq!(
            port_at_control_host("tcp://[::]:5557", "tcp://[fd00::7]:5555").as_deref(),
            Some("tcp://[fd00::7]:5557")
        );
        assert_eq!(port_at_control_host("garbage", control), None);
        assert_eq!(port_at_control_host("tcp://0.0.0.0:x", control), None);
    }
}
