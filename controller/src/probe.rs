//! Asking one endpoint what it is: a troupe agent (`nodeinfo`), a stock circusd (answers
//! Circus commands, not troupe's), or nothing we can adopt.

use crate::membership::NodeFacts;
use futures::StreamExt;
use serde_json::Map;
use std::time::Duration;
use troupe::client::call_async;
use troupe::discovery::{ProbeTarget, ProbeTargets};
use troupe::protocol::{NodeInfo, Request};

/// What answered at an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Probed {
    Node(NodeFacts),
    /// Nothing listens, the port speaks something else, or no reply in time.
    Nothing,
}

/// Limits of a probe sweep.
#[derive(Debug, Clone, Copy)]
pub struct ProbeLimits {
    /// Addresses probed at once.
    pub concurrency: usize,
    /// TCP connect timeout: a closed port answers at once, a black hole costs this much.
    pub connect_timeout: Duration,
    /// Time for the ZeroMQ request/reply once the port is open.
    pub reply_timeout: Duration,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        Self {
            concurrency: 256,
            connect_timeout: Duration::from_millis(300),
            reply_timeout: Duration::from_millis(700),
        }
    }
}

/// Asks `endpoint` (`tcp://ADDR:PORT`) for `nodeinfo`; a Circus "unknown command" reply
/// marks a stock circusd, whose watchers are then counted with `list`.
pub async fn probe(context: &zmq::Context, endpoint: &str, timeout: Duration) -> Probed {
    let ask = |command: &str| {
        call_async(
            context,
            endpoint,
            Request::new(command, Map::new()),
            timeout,
        )
    };
    let Ok(reply) = ask("nodeinfo").await else {
        return Probed::Nothing;
    };
    if reply["status"] == "ok" {
        return match serde_json::from_value::<NodeInfo>(reply["node"].clone()) {
            Ok(info) => Probed::Node(NodeFacts::Troupe(Box::new(info))),
            Err(e) => {
                tracing::debug!(endpoint, "nodeinfo reply not understood: {e}");
                Probed::Nothing
            }
        };
    }
    if reply["errno"] != 2 {
        return Probed::Nothing;
    }
    match ask("list").await {
        Ok(list) if list["status"] == "ok" => Probed::Node(NodeFacts::Circus {
            watchers: list["watchers"].as_array().map_or(0, Vec::len),
        }),
        _ => Probed::Nothing,
    }
}

/// Probes every target, at most `limits.concurrency` at once, and returns those that are
/// nodes, with their endpoints.
pub async fn sweep(
    context: &zmq::Context,
    targets: &ProbeTargets,
    limits: ProbeLimits,
) -> Vec<(String, NodeFacts)> {
    futures::stream::iter(targets.iter())
        .map(|target| async move {
            let address = resolve(&target).await?;
            let connect = tokio::net::TcpStream::connect(address);
            match tokio::time::timeout(limits.connect_timeout, connect).await {
                Ok(Ok(_stream)) => {}
                _ => return None,
            }
            let endpoint = endpoint_of(address);
            match probe(context, &endpoint, limits.reply_timeout).await {
                Probed::Node(facts) => Some((endpoint, facts)),
                Probed::Nothing => None,
            }
        })
        .buffer_unordered(limits.concurrency.max(1))
        .filter_map(|found| async move { found })
        .collect()
        .await
}

async fn resolve(target: &ProbeTarget) -> Option<std::net::SocketAddr> {
    match target {
        ProbeTarget::Addr(address) => Some(*address),
        ProbeTarget::Host(host, port) => {
            let found: Vec<_> = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .ok()?
                .collect();
            found
                .iter()
                .find(|a| a.is_ipv4())
                .or(found.first())
                .copied()
        }
    }
}

/// `tcp://ADDR:PORT`, brackets around IPv6.
pub fn endpoint_of(address: std::net::SocketAddr) -> String {
    format!("tcp://{address}")
}
