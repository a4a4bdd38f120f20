//! `troupe configure`, `reset` and `reconfigure`: the peer list from membership, pushed to
//! every node so each renders its service config; data wiped for clean repeats.

use crate::broadcast::{fan_out, reply_ok, Target};
use crate::command::{BroadcastOptions, ClusterLink};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use troupe::protocol::Request;

/// One peer as `configure` sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub id: String,
    pub name: String,
    pub address: String,
    pub index: usize,
    pub endpoints: Value,
    pub control: String,
}

/// The peer list: troupe members (alive) sorted by name, indexed from 1. Stock circusd nodes
/// cannot render configs and are left out.
pub fn peer_list(nodes: &[Value]) -> Vec<Peer> {
    let mut peers: Vec<&Value> = nodes
        .iter()
        .filter(|n| n["state"] == "alive" && n["kind"] == "troupe" && n["conflict"] != true)
        .collect();
    peers.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    peers
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let control = n["endpoint"].as_str().unwrap_or_default().to_string();
            Peer {
                id: n["id"].as_str().unwrap_or_default().to_string(),
                name: n["name"].as_str().unwrap_or_default().to_string(),
                address: host_of(&control),
                index: i + 1,
                endpoints: n["endpoints"].clone(),
                control,
            }
        })
        .collect()
}

/// `tcp://10.0.0.1:5555` -> `10.0.0.1` (brackets of IPv6 removed).
pub fn host_of(endpoint: &str) -> String {
    let rest = endpoint.trim_start_matches("tcp://");
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// The `configure` request for `me`.
pub fn configure_request(
    cluster: &str,
    peers: &[Peer],
    me: &Peer,
    restart: bool,
    dry_run: bool,
) -> Request {
    let peer_json = |p: &Peer| json!({"id": p.id, "name": p.name, "address": p.address, "index": p.index, "endpoints": p.endpoints});
    let mut props = Map::new();
    props.insert(
        "cluster".into(),
        json!({"name": cluster, "size": peers.len()}),
    );
    props.insert(
        "self".into(),
        json!({"id": me.id, "name": me.name, "address": me.address, "index": me.index}),
    );
    props.insert(
        "peers".into(),
        json!(peers.iter().map(peer_json).collect::<Vec<_>>()),
    );
    props.insert("restart".into(), json!(restart));
    props.insert("dry_run".into(), json!(dry_run));
    Request::new("configure", props)
}

/// Pushes `configure` to the selected peers (every peer gets the full list); replies keyed
/// by node name.
pub async fn push(
    nodes: &[Value],
    cluster: &str,
    options: &BroadcastOptions,
    restart: bool,
    dry_run: bool,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let peers = peer_list(nodes);
    let selected: Vec<Target> = crate::broadcast::select(
        peers.iter().map(|p| Target {
            name: p.name.clone(),
            endpoint: p.control.clone(),
        }),
        options.node.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let sends = selected.iter().map(|target| {
        let me = peers
            .iter()
            .find(|p| p.name == target.name)
            .expect("selected from peers");
        let request = configure_request(cluster, &peers, me, restart, dry_run);
        let target = target.clone();
        async move {
            let mut replies = fan_out(
                std::slice::from_ref(&target),
                &request,
                options.timeout,
                false,
            )
            .await;
            (
                target.name.clone(),
                replies.remove(&target.name).unwrap_or(Value::Null),
            )
        }
    });
    Ok(futures::future::join_all(sends).await.into_iter().collect())
}

/// A per-node table of configure results.
pub fn render_configure(replies: &BTreeMap<String, Value>, dry_run: bool) -> String {
    let mut rows = Vec::new();
    for (node, reply) in replies {
        if !reply_ok(reply) {
            rows.push(vec![
                node.clone(),
                format!("error: {}", reply["reason"].as_str().unwrap_or("?")),
            ]);
            continue;
        }
        let files = reply["files"].as_array().cloned().unwrap_or_default();
        let changed = files.iter().filter(|f| f["changed"] == true).count();
        let restarted: Vec<String> = reply["restarted"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(str::to_string))
            .collect();
        rows.push(vec![
            node.clone(),
            format!(
                "{} file{}, {changed} changed{}{}",
                files.len(),
                if files.len() == 1 { "" } else { "s" },
                if dry_run { " (dry run)" } else { "" },
                if restarted.is_empty() {
                    String::new()
                } else {
                    format!(", restarted {}", restarted.join(","))
                }
            ),
        ]);
    }
    crate::render::table(&["NODE", "CONFIGURE"], &rows)
}

/// `troupe reconfigure [--reset]`: stop all -> (reset) -> configure -> start (autostart
/// watchers and every configured one), one row a node.
pub async fn reconfigure(
    link: &ClusterLink,
    cluster: &str,
    options: &BroadcastOptions,
    reset: bool,
) -> anyhow::Result<(String, bool)> {
    let waiting = |command: &str, extra: Value| {
        let mut props = Map::new();
        props.insert("waiting".into(), json!(true));
        if let Value::Object(extra) = extra {
            props.extend(extra);
        }
        Request::new(command, props)
    };
    // Stops and starts wait for graceful timeouts: give them room beyond a plain command's.
    let slow = BroadcastOptions {
        timeout: options.timeout.max(Duration::from_secs(60)),
        ..options.clone()
    };
    let mut steps: Vec<(&str, BTreeMap<String, Value>)> = Vec::new();
    steps.push((
        "STOP",
        link.send(&waiting("stop", Value::Null), &slow).await?,
    ));
    if reset {
        let request = waiting("reset", json!({"name": "*"}));
        steps.push(("RESET", link.send(&request, &slow).await?));
    }
    let nodes = link.nodes().await;
    let configured = push(&nodes, cluster, options, false, false).await?;
    // Start what starts by itself, and every watcher configure rendered files for (a
    // service waiting for its peer list is usually autostart = false).
    let mut started = link.send(&waiting("start", Value::Null), &slow).await?;
    for (node, reply) in &configured {
        let mut watchers: Vec<&str> = reply["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["watcher"].as_str())
            .collect();
        watchers.dedup();
        let one_node = BroadcastOptions {
            node: Some(node.clone()),
            ..slow.clone()
        };
        for watcher in watchers {
            let request = waiting("start", json!({"name": watcher}));
            for (name, reply) in link.send(&request, &one_node).await? {
                if !reply_ok(&reply) {
                    started.insert(name, reply);
                }
            }
        }
    }
    steps.push(("CONFIGURE", configured));
    steps.push(("START", started));
    let names: std::collections::BTreeSet<&String> =
        steps.iter().flat_map(|(_, r)| r.keys()).collect();
    let mut all_ok = true;
    let rows: Vec<Vec<String>> = names
        .into_iter()
        .map(|node| {
            let mut row = vec![node.clone()];
            for (_, replies) in &steps {
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
    let mut header = vec!["NODE"];
    header.extend(steps.iter().map(|(name, _)| *name));
    Ok((crate::render::table(&header, &rows), all_ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, endpoint: &str, state: &str) -> Value {
        json!({"name": name, "id": format!("id-{name}"), "kind": "troupe", "state": state,
               "endpoint": endpoint, "endpoints": {"control": endpoint}, "conflict": false})
    }

    #[test]
    fn peers_are_alive_troupe_members_sorted_by_name_indexed_from_one() {
        let nodes = vec![
            node("c", "tcp://10.0.0.3:5555", "alive"),
            node("a", "tcp://10.0.0.1:5555", "alive"),
            node("b", "tcp://10.0.0.2:5555", "down"),
            json!({"name": "circus-x", "kind": "circus", "state": "alive", "endpoint": "tcp://10.0.0.9:5555"}),
            node("d", "tcp://[2001:db8::4]:5555", "alive"),
        ];
        let peers = peer_list(&nodes);
        let summary: Vec<(String, usize, String)> = peers
            .iter()
            .map(|p| (p.name.clone(), p.index, p.address.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("a".into(), 1, "10.0.0.1".into()),
                ("c".into(), 2, "10.0.0.3".into()),
                ("d".into(), 3, "2001:db8::4".into())
            ]
        );
    }

    #[test]
    fn the_request_carries_self_peers_and_cluster() {
        let nodes = vec![
            node("a", "tcp://10.0.0.1:5555", "alive"),
            node("b", "tcp://10.0.0.2:5555", "alive"),
        ];
        let peers = peer_list(&nodes);
        let request = configure_request("lab", &peers, &peers[1], true, false);
        let props = Value::Object(request.properties);
        assert_eq!(props["cluster"], json!({"name": "lab", "size": 2}));
        assert_eq!(props["self"]["index"], 2);
        assert_eq!(props["self"]["address"], "10.0.0.2");
        assert_eq!(props["peers"].as_array().unwrap().len(), 2);
        assert_eq!(props["restart"], true);
    }
}
