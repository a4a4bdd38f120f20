//! The variables a template sees: `self`, `peers`, `cluster`, `options`, `env`, `profile_dir`
//! and `watcher`, each node carrying its resolved `knobs`.

use compact_str::CompactString;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use troupe::config::{read_knob, Profile, WatcherConfig, PER_NODE_KEY};
use troupe::protocol::{ClusterInfo, PeerList};

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

/// What the views of every node share: the peer list and how to resolve a node's knobs.
#[derive(Debug)]
struct Nodes {
    list: Arc<PeerList>,
    /// Positions in `list.peers`, in index order: what `peers` lists.
    by_index: Vec<usize>,
    /// The position of the peer of `self`'s name, whose endpoints are `self`'s.
    own: Option<usize>,
    profile: Option<Profile>,
    defaults: Map<String, Value>,
    options: Map<String, Value>,
}

/// `peers`: each node made into a template value only when a template reads it. Serialising
/// a thousand peers up front, knobs and all, then dropping them, was a fifth of an agent's CPU
/// for a push whose template read three fields a peer.
#[derive(Debug)]
struct PeersView(Arc<Nodes>);

/// `self` (no position) or one of `peers` (its position in the list).
#[derive(Debug)]
struct NodeView {
    nodes: Arc<Nodes>,
    position: Option<usize>,
}

/// A node's fields, in the order templates enumerate them.
const NODE_FIELDS: &[&str] = &["id", "name", "address", "index", "endpoints", "knobs"];

static NO_ENDPOINTS: BTreeMap<CompactString, CompactString> = BTreeMap::new();

impl Object for PeersView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let position = *self.0.by_index.get(key.as_usize()?)?;
        Some(minijinja::Value::from_object(NodeView {
            nodes: self.0.clone(),
            position: Some(position),
        }))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.0.by_index.len())
    }
}

impl Object for NodeView {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let nodes = &self.nodes;
        let list = &nodes.list;
        let (id, name, address, index, endpoints) = match self.position {
            Some(at) => {
                let p = &list.peers[at];
                (&p.id, &p.name, &p.address, p.index, &p.endpoints)
            }
            None => {
                let me = &list.me;
                let endpoints = nodes
                    .own
                    .map_or(&NO_ENDPOINTS, |at| &list.peers[at].endpoints);
                (&me.id, &me.name, &me.address, me.index, endpoints)
            }
        };
        Some(match key.as_str()? {
            "id" => minijinja::Value::from(id.as_str()),
            "name" => minijinja::Value::from(name.as_str()),
            "address" => minijinja::Value::from(address.as_str()),
            "index" => minijinja::Value::from(index),
            "endpoints" => minijinja::Value::from_serialize(endpoints),
            "knobs" => minijinja::Value::from_serialize(knobs_for(
                name,
                nodes.profile,
                &nodes.defaults,
                &nodes.options,
            )),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(NODE_FIELDS)
    }
}

/// Everything one watcher's templates see.
#[derive(Serialize)]
struct TemplateContext<'a> {
    #[serde(rename = "self")]
    me: minijinja::Value,
    peers: minijinja::Value,
    cluster: &'a ClusterInfo,
    options: Map<String, Value>,
    env: BTreeMap<String, String>,
    profile_dir: &'a Path,
    watcher: &'a str,
}

/// Builds the whole context of one watcher's templates, once for all its files.
pub fn build(
    watcher: &WatcherConfig,
    peers: &Arc<PeerList>,
    profile_dir: &Path,
    defaults: &Map<String, Value>,
    process_env: &BTreeMap<String, String>,
) -> minijinja::Value {
    let mut by_index: Vec<usize> = (0..peers.peers.len()).collect();
    by_index.sort_by_key(|&at| peers.peers[at].index);
    let nodes = Arc::new(Nodes {
        list: peers.clone(),
        by_index,
        own: peers.peers.iter().position(|p| p.name == peers.me.name),
        profile: watcher.service.profile,
        defaults: defaults.clone(),
        options: watcher.service.profile_options.clone(),
    });
    let mut env = process_env.clone();
    env.extend(watcher.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let context = TemplateContext {
        me: minijinja::Value::from_object(NodeView {
            nodes: nodes.clone(),
            position: None,
        }),
        peers: minijinja::Value::from_object(PeersView(nodes)),
        cluster: &peers.cluster,
        options: watcher.options_json(),
        env,
        profile_dir,
        watcher: &watcher.name,
    };
    minijinja::Value::from_serialize(&context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use troupe::protocol::{NodeRef, Peer};

    /// Peers listed out of index order, `self` with an address of its own.
    fn list() -> Arc<PeerList> {
        let peer = |i: usize, name: &str| Peer {
            id: format!("00000000-0000-4000-8000-00000000000{i}").into(),
            name: name.into(),
            address: format!("10.0.0.{i}").into(),
            index: i,
            endpoints: BTreeMap::from([(
                "control".into(),
                format!("tcp://10.0.0.{i}:5555").into(),
            )]),
        };
        Arc::new(PeerList {
            cluster: ClusterInfo {
                name: "lab".into(),
                size: 3,
            },
            me: NodeRef {
                id: "00000000-0000-4000-8000-000000000002".into(),
                name: "b".into(),
                address: "b.lan".into(),
                index: 2,
            },
            peers: vec![peer(3, "c"), peer(1, "a"), peer(2, "b")],
        })
    }

    /// A node as templates saw it before the views: a struct serialised with its knobs.
    #[derive(Serialize)]
    struct PlainNode<'a> {
        id: &'a str,
        name: &'a str,
        address: &'a str,
        index: usize,
        endpoints: &'a BTreeMap<CompactString, CompactString>,
        knobs: Map<String, Value>,
    }

    /// `self` and `peers` as templates saw them before the views, and must see them still.
    fn plain(
        list: &PeerList,
        watcher: &WatcherConfig,
        defaults: &Map<String, Value>,
    ) -> minijinja::Value {
        let service = &watcher.service;
        let knobs =
            |name: &str| knobs_for(name, service.profile, defaults, &service.profile_options);
        let me = &list.me;
        let own = list.peers.iter().find(|p| p.name == me.name).unwrap();
        let mut peers: Vec<PlainNode> = list
            .peers
            .iter()
            .map(|p| PlainNode {
                id: &p.id,
                name: &p.name,
                address: &p.address,
                index: p.index,
                endpoints: &p.endpoints,
                knobs: knobs(&p.name),
            })
            .collect();
        peers.sort_by_key(|p| p.index);
        let me = PlainNode {
            id: &me.id,
            name: &me.name,
            address: &me.address,
            index: me.index,
            endpoints: &own.endpoints,
            knobs: knobs(&me.name),
        };
        minijinja::Value::from_serialize(BTreeMap::from([
            ("self", minijinja::Value::from_serialize(me)),
            ("peers", minijinja::Value::from_serialize(peers)),
        ]))
    }

    #[test]
    fn templates_see_the_views_as_they_saw_plain_maps() {
        let mut watcher = WatcherConfig::new("svc", "true");
        watcher
            .apply(
                "profile_options",
                &json!({"peer_port": 7000, "nodes": {"c": {"peer_port": 7003}}}),
            )
            .unwrap();
        let defaults = match json!({"peer_port": 2380, "token": "t"}) {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let list = list();
        let views = build(
            &watcher,
            &list,
            Path::new("/srv"),
            &defaults,
            &BTreeMap::new(),
        );
        let plain = plain(&list, &watcher, &defaults);
        let template = concat!(
            "{{ self }}|{{ peers }}|{{ peers|length }}|{{ peers[1].name }}|{{ peers[-1].name }}|",
            "{{ peers|map(attribute='address')|join(',') }}|",
            "{% for k, v in self|items %}{{ k }}={{ v }};{% endfor %}|",
            "{{ peers|selectattr('index', '>', 1)|map(attribute='name')|list }}|",
            "{{ peers|sort(attribute='name', reverse=true)|map(attribute='name')|list }}|",
            "{% for p in peers %}{{ loop.index }}:{{ p.knobs.peer_port }}:{{ p.endpoints.control }} {% endfor %}|",
            "{{ self.knobs }}|{{ self is mapping }}|{{ peers is sequence }}|{{ peers|first|length }}|",
            "{{ self.missing is defined }}|{{ peers[7] is defined }}|{{ peers|reverse|first }}",
        );
        let env = super::super::environment();
        let render = |ctx: &minijinja::Value| env.render_str(template, ctx).unwrap();
        assert_eq!(render(&views), render(&plain));
        assert!(render(&views)
            .contains("1:7000:tcp://10.0.0.1:5555 2:7000:tcp://10.0.0.2:5555 3:7003:"));
    }
}
