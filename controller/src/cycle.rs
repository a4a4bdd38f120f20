//! The reconfigure cycle: stop every watcher -> (reset) -> configure -> start, on the nodes a
//! selection names. Run by `troupe reconfigure` ([`crate::reconfigure`]) and by serve's
//! dashboard, so it lives below both.

use crate::broadcast::reply_ok;
use crate::cluster_link::ClusterLink;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use troupe::protocol::Request;

/// The replies of each step of a reconfigure, by node.
pub struct Steps(Vec<(&'static str, BTreeMap<String, Value>)>);

/// `troupe reconfigure [--reset]` (and the dashboard's): stop all -> (reset) -> configure ->
/// start (autostart watchers and every configured one), on the nodes `selection` names.
pub async fn reconfigure(
    link: &ClusterLink,
    cluster: &str,
    selection: Option<&str>,
    timeout: Duration,
    reset: bool,
) -> anyhow::Result<Steps> {
    let waiting = |command: &str, extra: Value| {
        let mut props = Map::new();
        props.insert("waiting".into(), json!(true));
        if let Value::Object(extra) = extra {
            props.extend(extra);
        }
        Request::new(command, props)
    };
    // Stops and starts wait for graceful timeouts: give them room beyond a plain command's.
    let slow = timeout.max(Duration::from_secs(60));
    let mut steps: Vec<(&str, BTreeMap<String, Value>)> = Vec::new();
    steps.push((
        "STOP",
        link.send(&waiting("stop", Value::Null), selection, slow)
            .await?,
    ));
    if reset {
        let request = waiting("reset", json!({"name": "*"}));
        steps.push(("RESET", link.send(&request, selection, slow).await?));
    }
    let nodes = link.nodes().await;
    let configured = link
        .push_configure(&nodes, cluster, selection, timeout, false, false)
        .await?;
    // Start what starts by itself, and every watcher configure rendered files for (a
    // service waiting for its peer list is usually autostart = false).
    let mut started = link
        .send(&waiting("start", Value::Null), selection, slow)
        .await?;
    for (node, reply) in &configured {
        let mut watchers: Vec<&str> = reply["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["watcher"].as_str())
            .collect();
        watchers.dedup();
        for watcher in watchers {
            let request = waiting("start", json!({"name": watcher}));
            for (name, reply) in link.send(&request, Some(node), slow).await? {
                if !reply_ok(&reply) {
                    started.insert(name, reply);
                }
            }
        }
    }
    steps.push(("CONFIGURE", configured));
    steps.push(("START", started));
    Ok(Steps(steps))
}

impl Steps {
    /// `--alive-only`: leaves out the known nodes that did not answer; the line saying which.
    pub fn skip_absent(&mut self) -> Option<String> {
        let mut skipped = None;
        for (_, replies) in &mut self.0 {
            skipped = crate::absent::skip(replies).or(skipped);
        }
        skipped
    }

    /// One row a node, one column a step; and whether every step went well on every node.
    pub fn table(&self) -> (String, bool) {
        let steps = &self.0;
        let names: std::collections::BTreeSet<&String> =
            steps.iter().flat_map(|(_, r)| r.keys()).collect();
        let mut all_ok = true;
        let rows: Vec<Vec<String>> = names
            .into_iter()
            .map(|node| {
                let mut row = vec![node.clone()];
                for (_, replies) in steps {
                    let cell = match replies.get(node) {
                        Some(reply) if reply_ok(reply) => "ok".to_string(),
                        Some(reply) => {
                            all_ok = false;
                            format!("error: {}", reply["reason"].as_str().unwrap_or("?"))
                        }
                        None => {
                            all_ok = false;
                            "-".to_string()
                        }
                    };
                    row.push(cell);
                }
                row
            })
            .collect();
        // A fan-out that reached nobody is no success.
        all_ok &= !rows.is_empty();
        let mut header = vec!["NODE"];
        header.extend(steps.iter().map(|(name, _)| *name));
        (crate::render::table(&header, &rows), all_ok)
    }
}
