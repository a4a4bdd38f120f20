//! `configure`: the peer list from membership, pushed to every node so each renders its
//! service config. Used by the CLI ([`crate::reconfigure`]), serve's auto-configure and its
//! dashboard: it takes a selection and a timeout, and returns the replies; it prints nothing.

use crate::broadcast::{gather, Target};
use crate::links::Reach;
use crate::membership::MemberRow;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use troupe::client::Outgoing;
use troupe::endpoint::Endpoint;
use troupe::protocol::{ConfigureFrames, Peer};

/// The peers: alive and suspect troupe members (a member that missed a heartbeat or two is
/// still one: a peer list is not rewritten for a lost packet) (never a locked row, and an id held by one member only) (stock circusd nodes cannot render
/// configs), with the host the controller reaches each at. Sorting and indexing is
/// [`PeerList::assign`]'s job.
///
/// Names, ids and endpoints come from each member's own `nodeinfo`: a member whose strings
/// break troupe's rules ([`Peer::check`]) is left out, with the reason, rather than pushed to
/// every node (where it would end up in their service configs, or make them all refuse the
/// list).
pub fn peers(nodes: &[MemberRow]) -> (Vec<Peer>, Vec<RefusedMember>) {
    let mut peers = Vec::new();
    let mut refused = Vec::new();
    for n in nodes.iter().filter(|n| n.is_peer()) {
        let control = n.endpoint.clone();
        let peer = Peer {
            id: n.id.as_deref().unwrap_or_default().into(),
            name: n.name.as_str().into(),
            address: host_of(&control).into(),
            index: 0,
            endpoints: n
                .endpoints
                .iter()
                .map(|(kind, endpoint)| (kind.into(), endpoint.into()))
                .collect(),
        };
        match peer.check() {
            Ok(()) => peers.push(peer),
            Err(e) => refused.push(RefusedMember {
                name: peer.name.into(),
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

/// `tcp://10.0.0.1:5555` -> `10.0.0.1` (brackets of IPv6 removed); a malformed endpoint as
/// it is, which [`Peer::check`] then refuses, naming it.
pub fn host_of(endpoint: &str) -> String {
    Endpoint::parse(endpoint).map_or_else(|_| endpoint.to_string(), |e| e.host().to_string())
}

/// Pushes `configure` to the peers among `rows` that `selection` names (every peer gets the
/// full list), each with `timeout`, on `reach`'s connections (serve's kept ones, or new ones
/// on one context); replies keyed by node name. A member left out of the list gets an error
/// row of its own, keyed by its endpoint (its name is what failed the rules).
/// Pushes under way at once. Each carries the whole peer list (250 KB at 1000 peers): a push
/// to 1000 nodes all at once held 250 MB of frames, which the allocator kept after, and had
/// every node render and restart at the same moment.
const PUSHES_AT_ONCE: usize = 64;

pub async fn push_via(
    reach: &Reach,
    rows: &[MemberRow],
    cluster: &str,
    selection: Option<&str>,
    timeout: Duration,
    restart: bool,
    dry_run: bool,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let (peers, refused) = peers(rows);
    for member in &refused {
        tracing::warn!(
            endpoint = %member.endpoint,
            "member left out of the peer list: {}",
            member.reason
        );
    }
    let names: HashSet<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    let selected: Vec<Target> = crate::broadcast::select(
        rows.iter()
            .filter(|row| names.contains(row.name.as_str()))
            .map(|row| Target {
                name: row.name.clone(),
                endpoint: row.endpoint.clone(),
            }),
        selection,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let frames = ConfigureFrames::new(cluster, peers, restart, dry_run);
    let mut replies = gather(&selected, false, PUSHES_AT_ONCE, |target| {
        let id = Value::String(troupe::client::random_id());
        let request = frames.frame(&target.name, &id).map(|frame| Outgoing {
            id,
            frame,
            changes_nothing: false,
        });
        async move {
            match request {
                Some(request) => reach.call(&target.endpoint, request, timeout).await,
                None => Ok(json!({
                    "status": "error",
                    "reason": "not in the peer list (another member has its name)",
                })),
            }
        }
    })
    .await;
    // Suspect peers are in the list and sent to: they answer or time out.
    let listed: Vec<Value> = rows.iter().map(MemberRow::to_json).collect();
    crate::absent::add(&mut replies, &listed, selection);
    for member in refused {
        let reason = format!("left out of the peer list: {}", member.reason);
        replies.insert(
            member.endpoint,
            json!({"status": "error", "reason": reason}),
        );
    }
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe::protocol::{ConfigureRequest, Request};

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
        let (peers, refused) = peers(&MemberRow::from_json(nodes));
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
        let (peers, refused) = peers(&MemberRow::from_json(&nodes));
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
