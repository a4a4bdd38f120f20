//! troupe's own node-level messages: `nodeinfo` replies and `register_node` requests.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The three endpoints of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    pub control: String,
    pub pubsub: String,
    pub stats: String,
}

/// One watcher as `nodeinfo` summarises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherSummary {
    pub status: String,
    pub numprocesses: usize,
    /// Why it is stopped, when it stopped by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<super::StopReason>,
}

/// The `node` field of a `nodeinfo` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    pub cluster: String,
    pub version: String,
    pub hostname: String,
    pub addresses: Vec<String>,
    pub endpoints: Endpoints,
    /// Epoch seconds when this agent process started: tells a restart from a second address
    /// of the same running agent.
    pub started: f64,
    pub watchers: BTreeMap<String, WatcherSummary>,
    /// The fingerprint of the cluster key the agent uses (its first); absent without a key.
    /// A claim: what proves the key is that the reply came over CURVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// Properties of `register_node` (agent -> controller) and `unregister_node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub id: String,
    pub name: String,
    pub cluster: String,
    /// The control endpoint, with an address the controller can reach.
    pub endpoint: String,
    pub pubsub_endpoint: String,
    pub stats_endpoint: String,
}
