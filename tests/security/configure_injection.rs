//! Hole 3: injection through `configure`. A peer string from the wire (`cluster.name`,
//! `self.*`, `peers[].*`) used to be rendered unescaped into every profile's file: a peer
//! named `x;touch${IFS}/tmp/p;` ran code when the README's recipe sourced etcd.env with `sh`,
//! a newline in an address added lines to zoo.cfg, neo4j.conf and the .properties files. Now
//! each string is checked on arrival and a bad one is an error reply naming the field, with
//! nothing written; the renderer escapes per format besides (unit tests in the agent).

use super::{HostAgent, Lab};
use crate::configure::configure_props;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A watcher per built-in profile, none running: rendering needs no service.
fn every_profile() -> String {
    ["etcd", "zookeeper", "neo4j", "janusgraph", "titan"]
        .iter()
        .map(|p| {
            format!("[watcher.{p}]\ncmd = \"sleep 1000\"\nprofile = \"{p}\"\nautostart = false\n\n")
        })
        .collect()
}

/// Every file under `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.insert(entry.path(), std::fs::read(entry.path()).unwrap());
            }
        }
    }
    files
}

/// What an attacker puts in a string to leave a shell word, a quote or a line.
const HOSTILE: [&str; 6] = [
    "x;touch${IFS}/tmp/p;",
    "$(touch /tmp/p)",
    "`touch /tmp/p`",
    "a\"b",
    "a'b",
    "a\nETCD_NAME=evil",
];

type Edit = fn(&mut Value, &str);

/// Each field a peer list carries, and how to set it so that the old checks (non-empty, names
/// unique, `self` among the peers) still passed: what the victim rendered before the fix.
/// `peers[0]` is "a-node", `peers[1]` the victim.
const FIELDS: [(&str, Edit); 8] = [
    ("cluster.name", |p, v| p["cluster"]["name"] = json!(v)),
    ("self.id", |p, v| {
        p["self"]["id"] = json!(v);
        p["peers"][1]["id"] = json!(v);
    }),
    ("self.name", |p, v| {
        p["self"]["name"] = json!(v);
        p["peers"][1]["name"] = json!(v);
    }),
    ("self.address", |p, v| {
        p["self"]["address"] = json!(v);
        p["peers"][1]["address"] = json!(v);
    }),
    ("peers[0].id", |p, v| p["peers"][0]["id"] = json!(v)),
    ("peers[0].name", |p, v| p["peers"][0]["name"] = json!(v)),
    ("peers[0].address", |p, v| {
        p["peers"][0]["address"] = json!(v)
    }),
    ("peers[0].endpoints.control", |p, v| {
        p["peers"][0]["endpoints"]["control"] = json!(format!("tcp://{v}:5555"))
    }),
];

#[test]
#[ignore = "needs root"]
fn hostile_peer_strings_are_refused_naming_the_field_and_no_file_changes() {
    let lab = Lab::new("cfginj");
    let mut agent = HostAgent::start(lab.victim(), "", &every_profile());
    let nodes = [
        ("a-node", lab.attacker().address.as_str()),
        ("victim", lab.victim().address.as_str()),
        ("z-node", lab.attacker().address.as_str()),
    ];
    let good = configure_props(&nodes, "victim", false, false);

    // A well-formed push renders every profile's files.
    let reply = lab.attack(&agent.endpoint, "configure", good.clone());
    assert!(super::is_ok(&reply), "{reply:?}");
    let before = snapshot(&agent.state_dir());
    let etcd_env = agent.state_dir().join("etcd/etcd.env");
    let rendered = String::from_utf8(before[&etcd_env].clone()).unwrap();
    assert!(rendered.contains("ETCD_NAME=victim\n"), "{rendered}");
    for file in [
        "zookeeper/zoo.cfg",
        "zookeeper/data/myid",
        "neo4j/neo4j.conf",
        "janusgraph/janusgraph.properties",
        "titan/titan.properties",
    ] {
        assert!(before.contains_key(&agent.state_dir().join(file)), "{file}");
    }

    for (field, set) in FIELDS {
        for value in HOSTILE {
            let mut props = good.clone();
            set(&mut props, value);
            let reply = lab
                .attack(&agent.endpoint, "configure", props)
                .unwrap_or_else(|e| {
                    panic!("{field} = {value:?}: no reply: {e}\n{}", agent.daemon.log())
                });
            assert_eq!(reply["status"], "error", "{field} = {value:?}: {reply}");
            let reason = reply["reason"].as_str().unwrap_or_default();
            let shown = format!("{value:?}");
            assert!(
                reason.contains(&format!("'{field}'")) && reason.contains(shown.trim_matches('"')),
                "{field} = {value:?}: the reason names the field and the value: {reason}"
            );
            assert!(
                snapshot(&agent.state_dir()) == before,
                "{field} = {value:?}: a file changed"
            );
        }
    }

    // Fields of other types than a peer list's are read through the JSON tree at the node
    // rather than in its one typed pass: they too are refused naming the field, with nothing
    // written; a null flag there reads as false and the push goes through.
    let wrong_types: [(&str, Edit); 5] = [
        ("peers[1]", |p, _| p["peers"][1]["index"] = json!("2")),
        ("restart", |p, _| p["restart"] = json!("yes")),
        ("self", |p, _| p["self"] = json!(5)),
        ("peers", |p, _| p["peers"] = json!("everyone")),
        ("cluster", |p, _| p["cluster"]["size"] = json!(-3)),
    ];
    for (field, set) in wrong_types {
        let mut props = good.clone();
        set(&mut props, "");
        let reply = lab.attack(&agent.endpoint, "configure", props);
        let reply = reply.unwrap_or_else(|e| panic!("{field}: no reply: {e}"));
        assert_eq!(reply["status"], "error", "{field}: {reply}");
        let reason = reply["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(&format!("'{field}'")), "{field}: {reason}");
        assert!(
            snapshot(&agent.state_dir()) == before,
            "{field}: a file changed"
        );
    }
    let mut null_flag = good.clone();
    null_flag["dry_run"] = Value::Null;
    let reply = lab.attack(&agent.endpoint, "configure", null_flag);
    assert!(super::is_ok(&reply), "{reply:?}");

    // The agent still runs and takes a good push.
    agent.daemon.assert_running();
    let reply = lab.attack(&agent.endpoint, "configure", good);
    assert!(super::is_ok(&reply), "{reply:?}");
    assert!(snapshot(&agent.state_dir()) == before);
}
