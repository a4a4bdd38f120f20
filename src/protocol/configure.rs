//! troupe's `configure` and `reset` messages: the peer list the controller pushes, and what the
//! agent answers.

use compact_str::CompactString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};

/// `cluster` of a peer list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub name: String,
    /// Number of peers.
    pub size: usize,
}

/// `self` of a peer list: the node receiving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub id: CompactString,
    pub name: CompactString,
    /// Host part of the node's control endpoint, as the controller reaches it.
    pub address: CompactString,
    /// 1-based position in the peer list.
    pub index: usize,
}

/// One member of the peer list. Its strings are [`CompactString`]s: an agent decodes the
/// whole list at every push, and names, addresses and endpoints (up to 24 bytes) are kept
/// inline, not each in an allocation of its own (2 allocations a peer instead of 10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: CompactString,
    pub name: CompactString,
    pub address: CompactString,
    pub index: usize,
    /// `control`, and `pubsub`/`stats` when known, as `tcp://HOST:PORT`.
    #[serde(default)]
    pub endpoints: BTreeMap<CompactString, CompactString>,
}

/// Everything a node needs to render its service config: who the cluster is and who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    pub cluster: ClusterInfo,
    #[serde(rename = "self")]
    pub me: NodeRef,
    /// Sorted by name; `index` is the 1-based position.
    pub peers: Vec<Peer>,
}

/// A property of a request that is missing or wrong: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{field}': {message}")]
pub struct FieldError {
    /// Dotted path of the property (`peers[1].index`).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Names a rule's failure after the field it was checked on.
fn rule(field: &str, result: Result<(), String>) -> Result<(), FieldError> {
    result.map_err(|message| FieldError::new(field, message))
}

impl Peer {
    /// Its id, name, address and endpoints well-formed ([`crate::config::names`]); the error
    /// names the field relative to the peer (`name`, `endpoints.control`).
    pub fn check(&self) -> Result<(), FieldError> {
        use crate::config::names::{check_host, check_name, check_node_id};
        rule("id", check_node_id(&self.id))?;
        rule("name", check_name(&self.name))?;
        rule("address", check_host(&self.address))?;
        for (kind, endpoint) in &self.endpoints {
            rule("endpoints", check_name(kind))?;
            // The rule of check_tcp_endpoint; the peer's own address, checked above, is not
            // parsed again for each endpoint that names it.
            crate::endpoint::Endpoint::split_on(endpoint, Some(&self.address))
                .map_err(|message| FieldError::new(format!("endpoints.{kind}"), message))?;
        }
        Ok(())
    }
}

impl PeerList {
    /// Sorts `peers` by name, numbers them from 1 and picks `me` among them: what the
    /// controller sends each node. None when `me` is not one of the peers.
    pub fn assign(cluster: &str, mut peers: Vec<Peer>, me: &str) -> Option<PeerList> {
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        for (i, peer) in peers.iter_mut().enumerate() {
            peer.index = i + 1;
        }
        let own = peers.iter().find(|p| p.name == me)?;
        Some(PeerList {
            cluster: ClusterInfo {
                name: cluster.to_string(),
                size: peers.len(),
            },
            me: NodeRef {
                id: own.id.clone(),
                name: own.name.clone(),
                address: own.address.clone(),
                index: own.index,
            },
            peers,
        })
    }

    /// The rules a peer list keeps: every name, id, address and endpoint well-formed
    /// ([`crate::config::names`]: these strings end up in rendered service configs), names
    /// unique, indexes exactly 1..=size, `cluster.size` the number of peers, `self` one of the
    /// peers with the same index.
    pub fn check(&self) -> Result<(), FieldError> {
        use crate::config::names::{check_host, check_name, check_node_id};
        rule("cluster.name", check_name(&self.cluster.name))?;
        rule("self.id", check_node_id(&self.me.id))?;
        rule("self.name", check_name(&self.me.name))?;
        rule("self.address", check_host(&self.me.address))?;
        if self.peers.is_empty() {
            return Err(FieldError::new("peers", "must list at least this node"));
        }
        if self.cluster.size != self.peers.len() {
            return Err(FieldError::new(
                "cluster.size",
                format!(
                    "is {} but peers lists {}",
                    self.cluster.size,
                    self.peers.len()
                ),
            ));
        }
        let mut names = HashSet::with_capacity(self.peers.len());
        let mut indexes = vec![false; self.peers.len() + 1];
        for (i, peer) in self.peers.iter().enumerate() {
            let field = |f: &str| format!("peers[{i}].{f}");
            peer.check()
                .map_err(|e| FieldError::new(field(&e.field), e.message))?;
            if !names.insert(peer.name.as_str()) {
                return Err(FieldError::new(
                    field("name"),
                    format!("{:?} appears twice", peer.name),
                ));
            }
            let fresh_index = peer.index != 0
                && indexes
                    .get_mut(peer.index)
                    .is_some_and(|seen| !std::mem::replace(seen, true));
            if !fresh_index {
                return Err(FieldError::new(
                    field("index"),
                    format!(
                        "{} is not a unique 1-based position among {} peers",
                        peer.index,
                        self.peers.len()
                    ),
                ));
            }
        }
        let Some(own) = self.peers.iter().find(|p| p.name == self.me.name) else {
            return Err(FieldError::new(
                "self.name",
                format!("{:?} is not among the peers", self.me.name),
            ));
        };
        if own.index != self.me.index {
            return Err(FieldError::new(
                "self.index",
                format!(
                    "is {} but peer {:?} has index {}",
                    self.me.index, own.name, own.index
                ),
            ));
        }
        Ok(())
    }

    /// Peers in index order.
    pub fn by_index(&self) -> Vec<&Peer> {
        let mut peers: Vec<&Peer> = self.peers.iter().collect();
        peers.sort_by_key(|p| p.index);
        peers
    }
}

/// Properties of `configure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigureRequest {
    #[serde(flatten)]
    pub peers: PeerList,
    /// Restart the running watchers whose files changed.
    #[serde(default)]
    pub restart: bool,
    /// Render and report, write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl ConfigureRequest {
    /// Reads and checks a request's properties; the error names the first bad field.
    pub fn from_properties(props: &Map<String, Value>) -> Result<Self, FieldError> {
        let cluster: ClusterInfo = field(props, "cluster")?;
        let me: NodeRef = field(props, "self")?;
        let peers = match props.get("peers") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| decode(item, &format!("peers[{i}]")))
                .collect::<Result<Vec<Peer>, _>>()?,
            Some(_) => return Err(FieldError::new("peers", "must be a list of peers")),
            None => return Err(FieldError::new("peers", "is missing")),
        };
        let flag = |key: &str| match props.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(FieldError::new(key, "must be a boolean")),
        };
        let request = ConfigureRequest {
            peers: PeerList { cluster, me, peers },
            restart: flag("restart")?,
            dry_run: flag("dry_run")?,
        };
        request.peers.check()?;
        Ok(request)
    }

    /// Reads and checks the properties of a `configure` request: those read into their type at
    /// the node ([`super::Request::decode_at_node`]), taken from the request, else `properties`.
    pub fn from_request(request: &mut super::Request) -> Result<Self, FieldError> {
        match request.configure.take() {
            Some(typed) => {
                typed.peers.check()?;
                Ok(*typed)
            }
            None => Self::from_properties(&request.properties),
        }
    }

    /// The request's properties, as a client sends them.
    pub fn to_properties(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("a struct serialises to a JSON object"),
        }
    }
}

/// A `configure` frame as clients write it, read in one pass: the command first (anything
/// else stops the reading there), then the properties straight into their types.
#[derive(Deserialize)]
struct ConfigureFrame {
    #[serde(rename = "command")]
    _command: ConfigureCommand,
    #[serde(default)]
    id: Value,
    properties: ConfigureText,
    #[serde(default)]
    msg_type: Option<Value>,
}

/// `"configure"`, in any case; any other command is refused at once.
struct ConfigureCommand;

impl<'de> Deserialize<'de> for ConfigureCommand {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let command = std::borrow::Cow::<str>::deserialize(deserializer)?;
        match command.eq_ignore_ascii_case("configure") {
            true => Ok(ConfigureCommand),
            false => Err(serde::de::Error::custom("not a configure")),
        }
    }
}

/// `configure`'s properties as they are sent, without `flatten` (which buffers its fields in a
/// generic tree of serde's, the cost the typed reading avoids).
#[derive(Deserialize)]
struct ConfigureText {
    cluster: ClusterInfo,
    #[serde(rename = "self")]
    me: NodeRef,
    peers: Vec<Peer>,
    #[serde(default)]
    restart: bool,
    #[serde(default)]
    dry_run: bool,
}

impl From<ConfigureText> for ConfigureRequest {
    fn from(text: ConfigureText) -> Self {
        ConfigureRequest {
            peers: PeerList {
                cluster: text.cluster,
                me: text.me,
                peers: text.peers,
            },
            restart: text.restart,
            dry_run: text.dry_run,
        }
    }
}

/// The unchecked request, id and cast flag of a `configure` frame's text, when it reads as one
/// in a single typed pass; None sends it through the generic decoding, which names what is
/// wrong. What this accepts, the generic decoding and
/// [`ConfigureRequest::from_properties`] read the same (the fuzz target
/// `control_request` holds them to it).
pub(super) fn decode_frame(text: &str) -> Option<(ConfigureRequest, Value, bool)> {
    let frame: ConfigureFrame = serde_json::from_str(text).ok()?;
    let cast = matches!(frame.msg_type, Some(Value::String(t)) if t == "cast");
    Some((frame.properties.into(), frame.id, cast))
}

/// The same types read from properties already in a tree: a frame [`decode_frame`] could not
/// read whole (a duplicate key) whose properties are still of the types, so that a node decodes
/// the same request into the same form however it was written.
pub(super) fn typed_from_tree(properties: &Map<String, Value>) -> Option<ConfigureRequest> {
    ConfigureText::deserialize(properties).ok().map(Into::into)
}

fn field<T: DeserializeOwned>(props: &Map<String, Value>, key: &str) -> Result<T, FieldError> {
    match props.get(key) {
        None | Some(Value::Null) => Err(FieldError::new(key, "is missing")),
        Some(value) => decode(value, key),
    }
}

fn decode<T: DeserializeOwned>(value: &Value, path: &str) -> Result<T, FieldError> {
    // From the borrowed tree: no copy of it first (a 1000-peer list's is 0.45 ms).
    T::deserialize(value).map_err(|e| FieldError::new(path, e.to_string()))
}

/// The `configure` request of every peer of one list, made straight into frames: the list is
/// sorted, numbered and serialised once, and each node's frame is that text with its own
/// `self` around it. Making a [`ConfigureRequest`] per node instead costs O(peers) allocations
/// per node, O(peers²) per push (2 s of CPU at 500 nodes). The frame decodes to what
/// [`PeerList::assign`] makes for that node.
pub struct ConfigureFrames {
    /// Sorted by name, numbered from 1.
    peers: Vec<Peer>,
    /// `"cluster":{...},"peers":[...],"restart":..,"dry_run":..`: everything but `self`.
    shared: String,
}

impl ConfigureFrames {
    pub fn new(cluster: &str, mut peers: Vec<Peer>, restart: bool, dry_run: bool) -> Self {
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        for (i, peer) in peers.iter_mut().enumerate() {
            peer.index = i + 1;
        }
        let info = ClusterInfo {
            name: cluster.to_string(),
            size: peers.len(),
        };
        let shared = format!(
            "\"cluster\":{},\"peers\":{},\"restart\":{restart},\"dry_run\":{dry_run}",
            json(&info),
            json(&peers),
        );
        ConfigureFrames { peers, shared }
    }

    /// The frame of the request to the peer called `me`, with `id`; None when `me` is not one
    /// of the peers.
    pub fn frame(&self, me: &str, id: &Value) -> Option<Vec<u8>> {
        let own = &self.peers[self
            .peers
            .binary_search_by(|p| p.name.as_str().cmp(me))
            .ok()?];
        let me = NodeRef {
            id: own.id.clone(),
            name: own.name.clone(),
            address: own.address.clone(),
            index: own.index,
        };
        Some(
            format!(
                "{{\"command\":\"configure\",\"id\":{},\"properties\":{{\"self\":{},{}}}}}",
                json(id),
                json(&me),
                self.shared
            )
            .into_bytes(),
        )
    }
}

/// The JSON text of one part of a [`ConfigureFrames`]: plain structs and strings, which
/// always serialise.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// One file of a `configure` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfiguredFile {
    pub watcher: String,
    pub path: String,
    /// Hex SHA-256 of the rendered content.
    pub sha256: String,
    /// Whether the content (or mode) on disk differs / differed from the rendering.
    pub changed: bool,
}

/// The rendered text of one file, in a `dry_run` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedText {
    pub watcher: String,
    pub path: String,
    pub text: String,
}

/// The fields of a `configure` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigureReply {
    pub files: Vec<ConfiguredFile>,
    /// Only with `dry_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered: Option<Vec<RenderedText>>,
    pub restarted: Vec<String>,
}

/// Properties of `reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetRequest {
    /// A watcher name or a glob.
    pub name: String,
    /// Start the watcher again even when its `reset_hook` failed.
    #[serde(default)]
    pub force: bool,
}

/// One directory a `reset` emptied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipedPath {
    pub path: String,
    /// Bytes of regular files deleted.
    pub bytes: u64,
}

/// The fields of a `reset` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetReply {
    pub wiped: Vec<WipedPath>,
    pub restarted: Vec<String>,
    /// Watchers a glob matched that declare neither data_dir nor reset_hook.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Failures that did not stop the reset (a failed hook under `force`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[cfg(test)]
#[path = "configure_tests.rs"]
mod tests;
