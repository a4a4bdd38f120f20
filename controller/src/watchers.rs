//! What the controller asks of watchers before a command: some of their options on every
//! node that runs them (`list`, then `get` per watcher), for the `--waiting` timeout (the
//! graceful stops it may wait out) and for `reset`'s check of profiled services.

use crate::cluster_link::ClusterLink;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use troupe::protocol::Request;

/// How long these questions may take: they are answered from the agents' views, not queued
/// behind a watcher's work.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The options `keys` of each watcher matching `pattern` (a name or glob; None for every
/// watcher), by node then watcher, on the nodes `selection` names (None: all). A node or
/// watcher that does not answer is left out: these answers only refine a command.
pub async fn options_of(
    link: &ClusterLink,
    selection: Option<&str>,
    pattern: Option<&str>,
    keys: &[&str],
) -> BTreeMap<String, BTreeMap<String, Map<String, Value>>> {
    let pattern = match pattern.map(glob::Pattern::new).transpose() {
        Ok(pattern) => pattern,
        Err(_) => return BTreeMap::new(),
    };
    let list = Request::new("list", Map::new());
    let Ok(lists) = link.send(&list, selection, ASK_TIMEOUT).await else {
        return BTreeMap::new();
    };
    // Watcher -> the nodes running it.
    let mut running: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (node, reply) in &lists {
        for watcher in reply["watchers"].as_array().into_iter().flatten() {
            let Some(watcher) = watcher.as_str() else {
                continue;
            };
            if pattern.as_ref().is_none_or(|p| p.matches(watcher)) {
                running
                    .entry(watcher.to_string())
                    .or_default()
                    .push(node.clone());
            }
        }
    }
    let asks = running.iter().map(|(watcher, nodes)| {
        let mut props = Map::new();
        props.insert("name".into(), json!(watcher));
        props.insert("keys".into(), json!(keys));
        let request = Request::new("get", props);
        let nodes = nodes.join(",");
        async move {
            (
                watcher,
                link.send(&request, Some(&nodes), ASK_TIMEOUT).await,
            )
        }
    });
    let mut found: BTreeMap<String, BTreeMap<String, Map<String, Value>>> = BTreeMap::new();
    for (watcher, replies) in futures::future::join_all(asks).await {
        for (node, reply) in replies.into_iter().flatten() {
            if let Some(options) = reply["options"].as_object() {
                found
                    .entry(node)
                    .or_default()
                    .insert(watcher.clone(), options.clone());
            }
        }
    }
    found
}

/// For each node, how long the graceful stops of the watchers matching `pattern` may take
/// together (a command on every watcher stops them one after another).
pub async fn graceful_stops(
    link: &ClusterLink,
    selection: Option<&str>,
    pattern: Option<&str>,
) -> BTreeMap<String, Duration> {
    options_of(link, selection, pattern, &["graceful_timeout"])
        .await
        .into_iter()
        .map(|(node, watchers)| {
            let total = watchers
                .values()
                .filter_map(|o| o["graceful_timeout"].as_f64())
                .filter_map(|secs| Duration::try_from_secs_f64(secs).ok())
                .sum();
            (node, total)
        })
        .collect()
}
