//! `troupe configure`, `reset` and `reconfigure`: the peer list from membership, pushed to
//! every node so each renders its service config; data wiped for clean repeats.

use crate::broadcast::{gather, reply_ok, Reach, Target};
use crate::command::{BroadcastOptions, ClusterLink};
use crate::confirm::{confirm, Question};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use troupe::client::Outgoing;
use troupe::protocol::{ConfigureFrames, Peer, Request};

/// The peers: alive and suspect troupe members (a member that missed a heartbeat or two is
/// still one: a peer list is not rewritten for a lost packet) (never a locked row, and an id held by one member only) (stock circusd nodes cannot render
/// configs), with the host the controller reaches each at. Sorting and indexing is
/// [`PeerList::assign`]'s job.
///
/// Names, ids and endpoints come from each member's own `nodeinfo`: a member whose strings
/// break troupe's rules ([`Peer::check`]) is left out, with the reason, rather than pushed to
/// every node (where it would end up in their service configs, or make them all refuse the
/// list).
pub fn peers(nodes: &[Value]) -> (Vec<Peer>, Vec<RefusedMember>) {
    let mut peers = Vec::new();
    let mut refused = Vec::new();
    let members = nodes
        .iter()
        .filter(|n| (n["state"] == "alive" || n["state"] == "suspect") && n["kind"] == "troupe");
    for n in members {
        let control = n["endpoint"].as_str().unwrap_or_default().to_string();
        let endpoints: BTreeMap<String, String> = n["endpoints"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect();
        let peer = Peer {
            id: n["id"].as_str().unwrap_or_default().to_string(),
            name: n["name"].as_str().unwrap_or_default().to_string(),
            address: host_of(&control),
            index: 0,
            endpoints,
        };
        match peer.check() {
            Ok(()) => peers.push(peer),
            Err(e) => refused.push(RefusedMember {
                name: peer.name,
                endpoint: control,
                reason: e.to_string(),
            }),
        }
    }
    (peers, refused)
}

/// A member left out of the peer list, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedMember {
    pub name: String,
    pub endpoint: String,
    pub reason: String,
}

/// `tcp://10.0.0.1:5555` -> `10.0.0.1` (brackets of IPv6 removed).
pub fn host_of(endpoint: &str) -> String {
    let rest = endpoint.trim_start_matches("tcp://");
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Pushes `configure` to the selected peers (every peer gets the full list); replies keyed
/// by node name. A member left out of the list gets an error row of its own, keyed by its
/// endpoint (its name is what failed the rules). New connections, on one context.
pub async fn push(
    nodes: &[Value],
    cluster: &str,
    options: &BroadcastOptions,
    restart: bool,
    dry_run: bool,
) -> anyhow::Result<BTreeMap<String, Value>> {
    push_via(&Reach::fresh(), nodes, cluster, options, restart, dry_run).await
}

/// [`push`] as `link` reaches the cluster: a running controller pushes it itself from its own
/// membership, on the connections it keeps to every member (`configure` with a `node`
/// property, see [`crate::serve`]); otherwise it goes out from here, to `nodes`.
pub async fn push_on(
    link: &ClusterLink,
    nodes: &[Value],
    cluster: &str,
    options: &BroadcastOptions,
    restart: bool,
    dry_run: bool,
) -> anyhow::Result<BTreeMap<String, Value>> {
    match link {
        ClusterLink::Controller(endpoint) => {
            let mut props = Map::new();
            props.insert("restart".into(), json!(restart));
            props.insert("dry_run".into(), json!(dry_run));
            let request = Request::new("configure", props);
            crate::command::via_controller(endpoint, &request, options).await
        }
        ClusterLink::Kept { links, .. } => {
            let reach = Reach::Kept(links.clone());
            push_via(&reach, nodes, cluster, options, restart, dry_run).await
        }
        ClusterLink::Local { .. } => push(nodes, cluster, options, restart, dry_run).await,
    }
}

/// [`push`] on `reach`'s connections.
pub async fn push_via(
    reach: &Reach,
    nodes: &[Value],
    cluster: &str,
    options: &BroadcastOptions,
    restart: bool,
    dry_run: bool,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let (peers, refused) = peers(nodes);
    for member in &refused {
        tracing::warn!(
            endpoint = %member.endpoint,
            "member left out of the peer list: {}",
            member.reason
        );
    }
    let names: HashSet<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    let selected: Vec<Target> = crate::broadcast::select(
        nodes
            .iter()
            .filter(|n| n["name"].as_str().is_some_and(|name| names.contains(name)))
            .map(|n| Target {
                name: n["name"].as_str().unwrap_or_default().to_string(),
                endpoint: n["endpoint"].as_str().unwrap_or_default().to_string(),
            }),
        options.node.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let frames = ConfigureFrames::new(cluster, peers, restart, dry_run);
    let mut replies = gather(&selected, false, |target| {
        let id = Value::String(troupe::client::random_id());
        let request = frames.frame(&target.name, &id).map(|frame| Outgoing {
            id,
            frame,
            changes_nothing: false,
        });
        async move {
            match request {
                Some(request) => reach.call(&target.endpoint, request, options.timeout).await,
                None => Ok(json!({
                    "status": "error",
                    "reason": "not in the peer list (another member has its name)",
                })),
            }
        }
    })
    .await;
    // Suspect peers are in the list and sent to: they answer or time out.
    crate::absent::add(&mut replies, nodes, options.node.as_deref());
    for member in refused {
        let reason = format!("left out of the peer list: {}", member.reason);
        replies.insert(
            member.endpoint,
            json!({"status": "error", "reason": reason}),
        );
    }
    Ok(replies)
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

/// `troupe reconfigure [--reset]` as the CLI runs it: reaching nobody says why and exits
/// [`crate::command::EXIT_NOTHING_MATCHED`], as every command does; a reset of more than one
/// node (or of some members of a clustered service) asks first ([`crate::confirm`]). Prints
/// the table and returns the exit code.
pub async fn run_reconfigure(
    link: &ClusterLink,
    cluster: &str,
    options: &BroadcastOptions,
    reset: bool,
) -> anyhow::Result<u8> {
    let targets = link.target_names(options).await?;
    if targets.is_empty() {
        let nobody = link.nobody(options.node.as_deref()).await;
        return Ok(crate::nobody::report(&nobody));
    }
    if reset {
        let warning = crate::reset::partial_member_warning(link, "*", &targets).await;
        let action = "stop every watcher, wipe every data_dir, configure and start again on";
        if let Some(question) = Question::when_needed(action, &targets, warning) {
            if let Err(refusal) = confirm(&question, options.yes) {
                eprintln!("troupe: {refusal}");
                return Ok(crate::command::EXIT_USAGE);
            }
        }
    }
    let (table, ok) = reconfigure(link, cluster, options, reset).await?;
    println!("{table}");
    Ok(if ok {
        crate::command::EXIT_OK
    } else {
        crate::command::EXIT_NODE_FAILED
    })
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
    let configured = push_on(link, &nodes, cluster, options, false, false).await?;
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
    if options.alive_only {
        let mut skipped = None;
        for (_, replies) in &mut steps {
            skipped = crate::absent::skip(replies).or(skipped);
        }
        if let Some(line) = skipped {
            eprintln!("troupe: {line}");
        }
    }
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
    // A fan-out that reached nobody is no success.
    all_ok &= !rows.is_empty();
    let mut header = vec!["NODE"];
    header.extend(steps.iter().map(|(name, _)| *name));
    Ok((crate::render::table(&header, &rows), all_ok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe::protocol::ConfigureRequest;

    /// The `configure` request for the peer called `me`, as [`push`] sends it.
    fn configure_request(
        cluster: &str,
        peers: &[Peer],
        me: &str,
        restart: bool,
        dry_run: bool,
    ) -> Option<Request> {
        let frames = ConfigureFrames::new(cluster, peers.to_vec(), restart, dry_run);
        let frame = frames.frame(me, &Value::Null)?;
        Some(Request::decode(&frame, usize::MAX).expect("a frame decodes"))
    }

    fn node(name: &str, endpoint: &str, state: &str) -> Value {
        // A UUID per name, as agents make them.
        let id = format!(
            "00000000-0000-4000-8000-{:012x}",
            name.len() * 1000 + name.as_bytes()[0] as usize
        );
        json!({"name": name, "id": id, "kind": "troupe", "state": state,
               "endpoint": endpoint, "endpoints": {"control": endpoint}})
    }

    fn valid_peers(nodes: &[Value]) -> Vec<Peer> {
        let (peers, refused) = peers(nodes);
        assert_eq!(refused, [], "every member is well-formed");
        peers
    }

    #[test]
    fn peers_are_alive_troupe_members_indexed_from_one_by_name() {
        let nodes = vec![
            node("c", "tcp://10.0.0.3:5555", "alive"),
            node("a", "tcp://10.0.0.1:5555", "alive"),
            node("b", "tcp://10.0.0.2:5555", "down"),
            json!({"name": "circus-x", "kind": "circus", "state": "alive", "endpoint": "tcp://10.0.0.9:5555"}),
            node("d", "tcp://[2001:db8::4]:5555", "alive"),
        ];
        let request = configure_request("lab", &valid_peers(&nodes), "c", false, false).unwrap();
        let props = Value::Object(request.properties);
        let summary: Vec<(String, u64, String)> = props["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let text = |k: &str| p[k].as_str().unwrap().to_string();
                (text("name"), p["index"].as_u64().unwrap(), text("address"))
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a".into(), 1, "10.0.0.1".into()),
                ("c".into(), 2, "10.0.0.3".into()),
                ("d".into(), 3, "2001:db8::4".into())
            ]
        );
        assert_eq!(props["self"]["name"], "c");
        assert_eq!(props["self"]["index"], 2);
        assert_eq!(props["cluster"], json!({"name": "lab", "size": 3}));
        assert_eq!(props["restart"], false);
        assert!(
            configure_request("lab", &valid_peers(&nodes), "b", false, false).is_none(),
            "a down node is no peer"
        );
    }

    #[test]
    fn the_request_is_what_the_agent_accepts() {
        let nodes = vec![
            node("a", "tcp://10.0.0.1:5555", "alive"),
            node("b", "tcp://10.0.0.2:5555", "alive"),
        ];
        let request = configure_request("lab", &valid_peers(&nodes), "b", true, true).unwrap();
        let parsed = ConfigureRequest::from_properties(&request.properties).unwrap();
        assert_eq!(parsed.peers.me.address, "10.0.0.2");
        assert!(parsed.restart && parsed.dry_run);
    }

    #[test]
    fn a_member_with_hostile_strings_is_left_out_and_named() {
        let mut hostile = node("x", "tcp://10.0.0.9:5555", "alive");
        hostile["name"] = json!("x;touch${IFS}/tmp/p;");
        let mut bad_id = node("y", "tcp://10.0.0.8:5555", "alive");
        bad_id["id"] = json!("$(id)");
        let mut bad_endpoint = node("z", "tcp://10.0.0.7:5555", "alive");
        bad_endpoint["endpoints"]["stats"] = json!("tcp://10.0.0.7:5557\nx=y");
        let nodes = vec![
            node("a", "tcp://10.0.0.1:5555", "alive"),
            hostile,
            bad_id,
            bad_endpoint,
        ];
        let (peers, refused) = peers(&nodes);
        let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a"]);
        let reasons: Vec<(&str, &str)> = refused
            .iter()
            .map(|r| (r.endpoint.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].1.starts_with("'name': "), "{reasons:?}");
        assert!(reasons[1].1.starts_with("'id': "), "{reasons:?}");
        assert!(
            reasons[2].1.starts_with("'endpoints.stats': "),
            "{reasons:?}"
        );
        assert_eq!(reasons[0].0, "tcp://10.0.0.9:5555");
        let request = configure_request("lab", &peers, "a", false, false).unwrap();
        ConfigureRequest::from_properties(&request.properties).unwrap();
    }
}
