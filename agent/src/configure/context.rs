//! The variables a template sees: `self`, `peers`, `cluster`, `options`, `env`, `profile_dir`
//! and `watcher`, each node carrying its resolved `knobs`.

use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use troupe::config::{read_knob, Profile, WatcherConfig, PER_NODE_KEY};
use troupe::protocol::{ClusterInfo, Peer, PeerList};

/// A node's knobs: the profile's defaults, then `profile_options`, then
/// `profile_options.nodes.<node>`. Knob values are normalized (ports as integers).
pub fn knobs_for(
    node: &str,
    profile: Option<Profile>,
    defaults: &Map<String, Value>,
    options: &Map<String, Value>,
) -> Map<String, Value> {
    let normalize = |key: &str, value: &Value| {
        profile
            .and_then(|p| p.knobs().iter().find(|(k, _)| *k == key))
            .and_then(|(_, kind)| read_knob(*kind, value).ok())
            .unwrap_or_else(|| value.clone())
    };
    let mut knobs = defaults.clone();
    for (key, value) in options {
        if key != PER_NODE_KEY {
            knobs.insert(key.clone(), normalize(key, value));
        }
    }
    if let Some(Value::Object(own)) = options.get(PER_NODE_KEY).and_then(|nodes| nodes.get(node)) {
        for (key, value) in own {
            knobs.insert(key.clone(), normalize(key, value));
        }
    }
    knobs
}

/// One node as templates see it (`self`, and each of `peers`).
#[derive(Serialize)]
struct NodeContext<'a> {
    id: &'a str,
    name: &'a str,
    address: &'a str,
    index: usize,
    endpoints: &'a BTreeMap<String, String>,
    knobs: Map<String, Value>,
}

/// Everything one watcher's templates see.
#[derive(Serialize)]
struct TemplateContext<'a> {
    #[serde(rename = "self")]
    me: NodeContext<'a>,
    peers: Vec<NodeContext<'a>>,
    cluster: &'a ClusterInfo,
    options: Map<String, Value>,
    env: BTreeMap<String, String>,
    profile_dir: &'a Path,
    watcher: &'a str,
}

/// Builds the whole context of one watcher's templates, once for all its files: borrowed
/// straight into template values (a thousand peers through a JSON tree first took most of an
/// agent's time on a `configure`).
pub fn build(
    watcher: &WatcherConfig,
    peers: &PeerList,
    profile_dir: &Path,
    defaults: &Map<String, Value>,
    process_env: &BTreeMap<String, String>,
) -> minijinja::Value {
    let service = &watcher.service;
    let knobs = |name: &str| knobs_for(name, service.profile, defaults, &service.profile_options);
    let no_endpoints = BTreeMap::new();
    let me = &peers.me;
    let my_endpoints = peers
        .peers
        .iter()
        .find(|p| p.name == me.name)
        .map_or(&no_endpoints, |p| &p.endpoints);
    let mut env = process_env.clone();
    env.extend(watcher.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let context = TemplateContext {
        me: NodeContext {
            id: &me.id,
            name: &me.name,
            address: &me.address,
            index: me.index,
            endpoints: my_endpoints,
            knobs: knobs(&me.name),
        },
        peers: peers
            .by_index()
            .into_iter()
            .map(|p: &Peer| NodeContext {
                id: &p.id,
                name: &p.name,
                address: &p.address,
                index: p.index,
                endpoints: &p.endpoints,
                knobs: knobs(&p.name),
            })
            .collect(),
        cluster: &peers.cluster,
        options: watcher.options_json(),
        env,
        profile_dir,
        watcher: &watcher.name,
    };
    minijinja::Value::from_serialize(&context)
}
