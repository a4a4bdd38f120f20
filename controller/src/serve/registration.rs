//! `register_node` and `unregister_node` as they arrive: every field checked, and a node
//! speaks only for itself. A registration names an endpoint on the address it was sent from
//! (so nobody registers someone else's host, or serve's own loopback); an unregistration
//! comes from the address of the member it removes. A request whose sender ZeroMQ cannot
//! tell (no `Peer-Address`) is refused: fail closed.

use super::gate::Peer;
use crate::admission::{endpoint_ip, socket_address, Admission};
use crate::membership::Member;
use serde_json::{Map, Value};
use std::net::IpAddr;
use troupe::config::names::{check_name, check_node_id};
use troupe::protocol::{CommandError, Registration};

/// The registration in `properties`, if `sender` may make it to a controller of `cluster`.
pub fn check_registration(
    properties: &Map<String, Value>,
    sender: Peer,
    cluster: &str,
    admission: &Admission,
) -> Result<Registration, CommandError> {
    let refuse = |reason: String| CommandError::message(format!("register_node: {reason}"));
    let registration: Registration = serde_json::from_value(Value::Object(properties.clone()))
        .map_err(|e| refuse(e.to_string()))?;
    check_node_id(&registration.id).map_err(|e| refuse(format!("'id': {e}")))?;
    check_name(&registration.name).map_err(|e| refuse(format!("'name': {e}")))?;
    check_name(&registration.cluster).map_err(|e| refuse(format!("'cluster': {e}")))?;
    if registration.cluster != cluster {
        return Err(CommandError::command(format!(
            "this controller serves cluster '{cluster}', not '{}'",
            registration.cluster
        )));
    }
    let host = ip_endpoint("endpoint", &registration.endpoint).map_err(refuse)?;
    for (field, endpoint) in [
        ("pubsub_endpoint", &registration.pubsub_endpoint),
        ("stats_endpoint", &registration.stats_endpoint),
    ] {
        let other = ip_endpoint(field, endpoint).map_err(refuse)?;
        if other != host {
            return Err(refuse(format!(
                "'{field}' {endpoint:?} is not on the host of 'endpoint' ({host})"
            )));
        }
    }
    let sender = sender_address(sender).map_err(refuse)?;
    if host != sender {
        return Err(refuse(format!(
            "'endpoint' {:?} is not on the address this request came from ({sender}): a node \
             registers itself only",
            registration.endpoint
        )));
    }
    admission
        .check(&registration.endpoint)
        .map_err(|e| refuse(format!("'endpoint': {e}")))?;
    Ok(registration)
}

/// The id in `properties` of `unregister_node`, if `sender` may remove it: a member with
/// that id must be on the sender's address (an unknown id removes nothing).
pub fn check_unregistration(
    properties: &Map<String, Value>,
    sender: Peer,
    members: &[Member],
) -> Result<String, CommandError> {
    let refuse = |reason: String| CommandError::message(format!("unregister_node: {reason}"));
    let id = match properties.get("id") {
        Some(Value::String(id)) => id,
        Some(other) => return Err(refuse(format!("'id' must be a string, got {other}"))),
        None => return Err(refuse("'id' is missing".into())),
    };
    check_node_id(id).map_err(|e| refuse(format!("'id': {e}")))?;
    let sender = sender_address(sender).map_err(refuse)?;
    for member in members.iter().filter(|m| m.id.as_deref() == Some(id)) {
        let host = endpoint_ip(&member.endpoint).map(|ip| ip.to_canonical());
        if host != Some(sender) {
            return Err(refuse(format!(
                "node {id} is at {}, not on the address this request came from ({sender}): a \
                 node unregisters itself only",
                member.endpoint
            )));
        }
    }
    Ok(id.clone())
}

/// The host of `tcp://IP:PORT`, with a reason naming `field` when it is not one.
fn ip_endpoint(field: &str, endpoint: &str) -> Result<IpAddr, String> {
    match socket_address(endpoint) {
        Some(address) if address.port() != 0 => Ok(address.ip().to_canonical()),
        _ => Err(format!(
            "'{field}' {endpoint:?} is not tcp://IP:PORT (an IP literal and a port from 1 to \
             65535)"
        )),
    }
}

fn sender_address(sender: Peer) -> Result<IpAddr, String> {
    sender.map(|ip| ip.to_canonical()).ok_or_else(|| {
        "the address this request came from is unknown, so it cannot be a node's own".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use troupe::discovery::parse_targets;

    const ID: &str = "0b0e5a1c-5f3e-4d8a-9c1b-2f6e7d8a9b0c";

    fn registration(host: &str) -> Map<String, Value> {
        let value = json!({
            "id": ID, "name": "node-1", "cluster": "default",
            "endpoint": format!("tcp://{host}:5555"),
            "pubsub_endpoint": format!("tcp://{host}:5556"),
            "stats_endpoint": format!("tcp://{host}:5557"),
        });
        value.as_object().cloned().unwrap()
    }

    fn from(ip: &str) -> Peer {
        Some(ip.parse().unwrap())
    }

    fn serve() -> Admission {
        Admission::OperatorNamed(parse_targets("127.0.0.2").unwrap())
    }

    fn refusal(props: Map<String, Value>, sender: Peer) -> String {
        check_registration(&props, sender, "default", &serve())
            .expect_err("refused")
            .reason
    }

    #[test]
    fn a_node_registers_itself() {
        let ok = check_registration(
            &registration("10.0.0.7"),
            from("10.0.0.7"),
            "default",
            &serve(),
        );
        assert_eq!(ok.unwrap().endpoint, "tcp://10.0.0.7:5555");
        let mapped = check_registration(
            &registration("10.0.0.7"),
            from("::ffff:10.0.0.7"),
            "default",
            &serve(),
        );
        assert!(mapped.is_ok(), "{mapped:?}");
        let v6 = check_registration(
            &registration("[fd00::7]"),
            from("fd00::7"),
            "default",
            &serve(),
        );
        assert!(v6.is_ok(), "{v6:?}");
        let named = check_registration(
            &registration("127.0.0.2"),
            from("127.0.0.2"),
            "default",
            &serve(),
        );
        assert!(
            named.is_ok(),
            "an operator-named loopback endpoint: {named:?}"
        );
    }

    #[test]
    fn nobody_registers_another_host_or_this_one() {
        let says = refusal(registration("10.0.0.8"), from("10.0.0.7"));
        assert!(
            says.contains("not on the address this request came from (10.0.0.7)"),
            "{says}"
        );
        let says = refusal(registration("127.0.0.1"), from("10.0.0.7"));
        assert!(says.contains("came from"), "{says}");
        let says = refusal(registration("127.0.0.1"), from("127.0.0.1"));
        assert!(says.contains("own host"), "{says}");
        let says = refusal(registration("0.0.0.0"), from("0.0.0.0"));
        assert!(says.contains("own host"), "{says}");
        let says = refusal(registration("10.0.0.7"), None);
        assert!(says.contains("unknown"), "{says}");
    }

    #[test]
    fn every_field_is_checked() {
        let with = |key: &str, value: Value| {
            let mut props = registration("10.0.0.7");
            props.insert(key.into(), value);
            refusal(props, from("10.0.0.7"))
        };
        for (key, value, expected) in [
            ("id", json!("x;touch /tmp/p"), "'id'"),
            ("id", json!(7), "invalid type"),
            ("name", json!("a\nb"), "'name'"),
            ("name", json!("node.1"), "'name'"),
            ("cluster", json!("$(id)"), "'cluster'"),
            ("cluster", json!("other"), "serves cluster 'default'"),
            ("endpoint", json!("tcp://db1.lan:5555"), "'endpoint'"),
            ("endpoint", json!("tcp://10.0.0.7:0"), "'endpoint'"),
            ("endpoint", json!("tcp://10.0.0.7:5555\nx"), "'endpoint'"),
            ("endpoint", json!("ipc:///tmp/x"), "'endpoint'"),
            (
                "stats_endpoint",
                json!("tcp://10.0.0.9:5557"),
                "'stats_endpoint'",
            ),
            (
                "pubsub_endpoint",
                json!("tcp://10.0.0.7"),
                "'pubsub_endpoint'",
            ),
        ] {
            let says = with(key, value.clone());
            assert!(says.contains(expected), "{key}={value}: {says}");
        }
        let mut missing = registration("10.0.0.7");
        missing.remove("stats_endpoint");
        let says = refusal(missing, from("10.0.0.7"));
        assert!(says.contains("stats_endpoint"), "{says}");
    }

    #[test]
    fn a_node_unregisters_itself_only() {
        let member = |endpoint: &str| {
            let mut table = crate::membership::MemberTable::new("default");
            let info = troupe::protocol::NodeInfo {
                id: ID.into(),
                name: "node-1".into(),
                cluster: "default".into(),
                version: "0".into(),
                hostname: "h".into(),
                addresses: vec![],
                endpoints: troupe::protocol::Endpoints {
                    control: String::new(),
                    pubsub: String::new(),
                    stats: String::new(),
                },
                started: 1.0,
                watchers: Default::default(),
                fingerprint: None,
            };
            let facts = crate::membership::NodeFacts::Troupe(Box::new(info));
            table.answered(endpoint, None, facts, tokio::time::Instant::now());
            table.members().cloned().collect::<Vec<_>>()
        };
        let members = member("tcp://10.0.0.7:5555");
        let props = |id: &str| json!({ "id": id }).as_object().cloned().unwrap();
        assert_eq!(
            check_unregistration(&props(ID), from("10.0.0.7"), &members).unwrap(),
            ID
        );
        let says = check_unregistration(&props(ID), from("10.0.0.8"), &members).unwrap_err();
        assert!(says.reason.contains("unregisters itself only"), "{says}");
        assert!(check_unregistration(&props(ID), None, &members).is_err());
        assert!(
            check_unregistration(&props("tcp://10.0.0.7:5555"), from("10.0.0.7"), &members)
                .is_err()
        );
        let unknown = "1b0e5a1c-5f3e-4d8a-9c1b-2f6e7d8a9b0c";
        assert_eq!(
            check_unregistration(&props(unknown), from("10.0.0.8"), &members).unwrap(),
            unknown
        );
    }
}
