//! A member as it is listed: by serve's `nodelist` (on the wire), `troupe nodes --json`, the
//! dashboard, and what `configure` builds its peer list from. One struct, serialized: the
//! JSON shape is pinned by a test, since a running serve sends it to older and newer CLIs.

use super::table::Kind;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberRow {
    pub name: String,
    pub id: Option<String>,
    /// None for an endpoint that never answered (state `no reply`).
    pub kind: Option<Kind>,
    /// A [`super::MemberState`] name, or [`super::NO_REPLY`].
    pub state: String,
    /// The control endpoint, `tcp://HOST:PORT`.
    pub endpoint: String,
    /// `control`, and `pubsub` and `stats` once the node said them, at the host the
    /// controller reaches it on.
    pub endpoints: BTreeMap<String, String>,
    pub source: Vec<String>,
    pub version: Option<String>,
    pub watchers: usize,
    /// Epoch seconds of the last answer; None if it never answered.
    pub last_seen: Option<f64>,
    /// Epoch seconds since an endpoint that never answered has been silent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_since: Option<f64>,
    pub key_fingerprint: Option<String>,
    pub locked: Option<String>,
}

impl MemberRow {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a member row always serialises")
    }

    /// The rows of `nodes` (as [`Self::to_json`] makes them, from this controller or a running
    /// serve); a row that is not one is left out, with a warning.
    pub fn from_json(nodes: &[Value]) -> Vec<MemberRow> {
        nodes
            .iter()
            .filter_map(|node| match MemberRow::deserialize(node) {
                Ok(row) => Some(row),
                Err(e) => {
                    tracing::warn!(%node, "not a member row, left out: {e}");
                    None
                }
            })
            .collect()
    }

    /// Whether the row counts in a peer list: a troupe agent alive or suspect (a member that
    /// missed a heartbeat or two is still one: a peer list is not rewritten for a lost packet).
    pub fn is_peer(&self) -> bool {
        self.kind == Some(Kind::Troupe) && matches!(self.state.as_str(), "alive" | "suspect")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> MemberRow {
        MemberRow {
            name: "node-a".into(),
            id: Some("00000000-0000-4000-8000-000000000001".into()),
            kind: Some(Kind::Troupe),
            state: "alive".into(),
            endpoint: "tcp://10.0.0.1:5555".into(),
            endpoints: [
                ("control", "tcp://10.0.0.1:5555"),
                ("pubsub", "tcp://10.0.0.1:5556"),
                ("stats", "tcp://10.0.0.1:5557"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            source: vec!["probe".into(), "mdns".into()],
            version: Some("0.1.0".into()),
            watchers: 2,
            last_seen: Some(1700000000.5),
            silent_since: None,
            key_fingerprint: None,
            locked: None,
        }
    }

    /// The wire shape of a `nodelist` row, field for field and in order.
    #[test]
    fn a_member_row_is_the_json_nodelist_sends() {
        assert_eq!(
            row().to_json().to_string(),
            r#"{"name":"node-a","id":"00000000-0000-4000-8000-000000000001","kind":"troupe","state":"alive","endpoint":"tcp://10.0.0.1:5555","endpoints":{"control":"tcp://10.0.0.1:5555","pubsub":"tcp://10.0.0.1:5556","stats":"tcp://10.0.0.1:5557"},"source":["probe","mdns"],"version":"0.1.0","watchers":2,"last_seen":1700000000.5,"key_fingerprint":null,"locked":null}"#
        );
        let silent = MemberRow {
            name: "10.0.0.9:5555".into(),
            state: super::super::NO_REPLY.into(),
            endpoint: "tcp://10.0.0.9:5555".into(),
            endpoints: [("control".to_string(), "tcp://10.0.0.9:5555".to_string())].into(),
            source: vec!["probe".into()],
            silent_since: Some(1700000001.0),
            ..MemberRow::default()
        };
        assert_eq!(
            silent.to_json().to_string(),
            r#"{"name":"10.0.0.9:5555","id":null,"kind":null,"state":"no reply","endpoint":"tcp://10.0.0.9:5555","endpoints":{"control":"tcp://10.0.0.9:5555"},"source":["probe"],"version":null,"watchers":0,"last_seen":null,"silent_since":1700000001.0,"key_fingerprint":null,"locked":null}"#
        );
    }

    #[test]
    fn rows_read_back_and_a_row_that_is_not_one_is_left_out() {
        let nodes = vec![
            row().to_json(),
            serde_json::json!({"name": 7}),
            serde_json::json!("node-b"),
        ];
        assert_eq!(MemberRow::from_json(&nodes), [row()]);
    }
}
