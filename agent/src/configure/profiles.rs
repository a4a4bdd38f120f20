//! The built-in profiles: which templates each renders, where each file goes, and the
//! default of every knob. The templates themselves are `profiles/*.j2`, shipped in the binary.

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use troupe::config::Profile;
use troupe::protocol::ClusterInfo;

/// One file a profile writes.
pub struct ProfileFile {
    /// Names the template in errors: `profile:etcd/etcd.env.j2`.
    pub template: String,
    pub source: &'static str,
    pub dest: PathBuf,
}

const ETCD_ENV: &str = include_str!("profiles/etcd.env.j2");
const ZOO_CFG: &str = include_str!("profiles/zoo.cfg.j2");
const MYID: &str = include_str!("profiles/myid.j2");
const NEO4J_CONF: &str = include_str!("profiles/neo4j.conf.j2");
const JANUSGRAPH_PROPERTIES: &str = include_str!("profiles/janusgraph.properties.j2");
const TITAN_PROPERTIES: &str = include_str!("profiles/titan.properties.j2");

/// The env file a profile writes for its service to read, in its profile dir.
pub fn env_file(profile: Profile) -> Option<&'static str> {
    match profile {
        Profile::Etcd => Some("etcd.env"),
        Profile::Zookeeper | Profile::Neo4j | Profile::Janusgraph | Profile::Titan => None,
    }
}

/// Every knob of `profile` at its default; `profile_options` are laid over these. A data-dir
/// knob defaults to the watcher's first `data_dir`, so `reset` wipes what the service wrote.
pub fn defaults(
    profile: Profile,
    profile_dir: &Path,
    data_dirs: &[PathBuf],
    cluster: &ClusterInfo,
) -> Map<String, Value> {
    let dir = |sub: &str| json!(profile_dir.join(sub));
    let data_dir = |fallback: Value| data_dirs.first().map_or(fallback, |d| json!(d));
    let quorum = cluster.size.clamp(1, 3);
    let pairs: Vec<(&str, Value)> = match profile {
        Profile::Etcd => vec![
            ("data_dir", data_dir(dir("data"))),
            ("client_port", json!(2379)),
            ("peer_port", json!(2380)),
            ("token", json!(format!("troupe-{}", cluster.name))),
            ("cluster_state", json!("new")),
            ("loopback_client", json!("yes")),
        ],
        Profile::Zookeeper => vec![
            ("data_dir", data_dir(dir("data"))),
            ("client_port", json!(2181)),
            ("quorum_port", json!(2888)),
            ("election_port", json!(3888)),
            ("admin_port", Value::Null),
            ("tick_time", json!(2000)),
            ("init_limit", json!(10)),
            ("sync_limit", json!(5)),
        ],
        Profile::Neo4j => vec![
            ("conf_dir", json!(profile_dir)),
            ("data_dir", data_dir(Value::Null)),
            // None: the node's own address (the template falls back to it).
            ("listen_address", Value::Null),
            ("discovery_port", json!(5000)),
            ("cluster_port", json!(6000)),
            ("raft_port", json!(7000)),
            ("routing_port", json!(7688)),
            ("bolt_port", json!(7687)),
            ("http_port", json!(7474)),
            ("primaries", json!(quorum)),
            ("system_primaries", json!(quorum)),
        ],
        Profile::Janusgraph | Profile::Titan => vec![
            ("conf_dir", json!(profile_dir)),
            ("backend", json!("cql")),
            ("cql_port", json!(9042)),
            ("keyspace", json!(profile.name())),
            ("datacenter", json!("datacenter1")),
        ],
    };
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The files `profile` writes, given this node's resolved knobs.
pub fn files(profile: Profile, knobs: &Map<String, Value>, profile_dir: &Path) -> Vec<ProfileFile> {
    let knob_dir = |key: &str| {
        knobs
            .get(key)
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .unwrap_or_else(|| profile_dir.to_path_buf())
    };
    let file = |name: &str, source: &'static str, dest: PathBuf| ProfileFile {
        template: format!("profile:{}/{name}.j2", profile.name()),
        source,
        dest,
    };
    match profile {
        Profile::Etcd => vec![file("etcd.env", ETCD_ENV, profile_dir.join("etcd.env"))],
        Profile::Zookeeper => vec![
            file("zoo.cfg", ZOO_CFG, profile_dir.join("zoo.cfg")),
            file("myid", MYID, knob_dir("data_dir").join("myid")),
        ],
        Profile::Neo4j => vec![file(
            "neo4j.conf",
            NEO4J_CONF,
            knob_dir("conf_dir").join("neo4j.conf"),
        )],
        Profile::Janusgraph => vec![file(
            "janusgraph.properties",
            JANUSGRAPH_PROPERTIES,
            knob_dir("conf_dir").join("janusgraph.properties"),
        )],
        Profile::Titan => vec![file(
            "titan.properties",
            TITAN_PROPERTIES,
            knob_dir("conf_dir").join("titan.properties"),
        )],
    }
}
