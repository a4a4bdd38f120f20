//! What an agent announces and how to read it back: the mDNS record and Circus's UDP
//! discovery datagram.
//!
//! Both carry the fingerprint of the agent's cluster key in use (never the key, SECURITY.md),
//! so a controller skips an agent of another key, or a keyless one, without dialling it, and a
//! keyless controller tells a keyed agent from a silent one. An agent without a key announces
//! none. The fingerprint is a claim, not a proof: membership still takes only what answered
//! `nodeinfo` over CURVE.

use crate::cluster_key::Fingerprint;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The mDNS service type every agent registers.
pub const SERVICE_TYPE: &str = "_troupe._tcp.local.";
/// Version of the announce record and node protocol, TXT key `proto`.
pub const PROTO_VERSION: u32 = 1;
/// Circus's UDP multicast discovery group and port: a datagram there gets
/// `{"endpoint": "<control endpoint>"}` back from every circusd (and troupe-agent).
pub const CIRCUS_MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(237, 219, 251, 97);
pub const CIRCUS_MULTICAST_PORT: u16 = 12027;
/// TXT key of the key fingerprint, and the field of the Circus UDP reply that carries it.
pub const TXT_FINGERPRINT: &str = "fp";
pub const UDP_FINGERPRINT: &str = "fingerprint";

/// The TXT record of an agent's mDNS announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRecord {
    pub id: String,
    pub cluster: String,
    pub version: String,
    pub pubsub_port: u16,
    pub stats_port: u16,
    pub proto: u32,
    /// The fingerprint of the key in use; `None` without a key.
    pub fingerprint: Option<Fingerprint>,
}

impl AnnounceRecord {
    /// TXT key/value pairs: id, cluster, v, pub, stats, proto, and fp with a key.
    pub fn to_txt(&self) -> BTreeMap<String, String> {
        let fingerprint = self
            .fingerprint
            .as_ref()
            .map(|fp| (TXT_FINGERPRINT, fp.to_string()));
        [
            ("id", self.id.clone()),
            ("cluster", self.cluster.clone()),
            ("v", self.version.clone()),
            ("pub", self.pubsub_port.to_string()),
            ("stats", self.stats_port.to_string()),
            ("proto", self.proto.to_string()),
        ]
        .into_iter()
        .chain(fingerprint)
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Reads a record back through `get` (a TXT lookup); names the first missing or bad key.
    pub fn from_txt<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, String> {
        let text = |key: &str| get(key).ok_or_else(|| format!("TXT key '{key}' is missing"));
        let port = |key: &str| {
            text(key)?
                .parse::<u16>()
                .map_err(|_| format!("TXT key '{key}' is not a port"))
        };
        Ok(Self {
            id: text("id")?.to_string(),
            cluster: text("cluster")?.to_string(),
            version: text("v")?.to_string(),
            pubsub_port: port("pub")?,
            stats_port: port("stats")?,
            proto: text("proto")?
                .parse()
                .map_err(|_| "TXT key 'proto' is not a number".to_string())?,
            fingerprint: get(TXT_FINGERPRINT)
                .map(Fingerprint::parse)
                .transpose()
                .map_err(|e| format!("TXT key '{TXT_FINGERPRINT}': {e}"))?,
        })
    }
}

/// The answer to a Circus UDP discovery datagram: `{"endpoint": "tcp://ADDR:PORT"}`, plus
/// `"fingerprint"` from a keyed troupe-agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircusUdpAnswer {
    pub endpoint: String,
    /// The fingerprint of the key in use; `None` without a key (and from circusd).
    pub fingerprint: Option<Fingerprint>,
}

impl CircusUdpAnswer {
    /// The datagram an agent sends.
    pub fn to_json(&self) -> String {
        let mut answer = serde_json::json!({ "endpoint": self.endpoint });
        if let Some(fingerprint) = &self.fingerprint {
            answer[UDP_FINGERPRINT] = fingerprint.as_str().into();
        }
        answer.to_string()
    }

    /// Reads a datagram as the controller receives it from anyone on the segment; the error
    /// names the field and what was wrong with it.
    pub fn parse(datagram: &[u8]) -> Result<Self, String> {
        let answer: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(datagram).map_err(|e| format!("not a JSON object: {e}"))?;
        let endpoint = match answer.get("endpoint") {
            Some(serde_json::Value::String(endpoint)) => endpoint,
            Some(other) => {
                return Err(format!(
                    "'endpoint' must be a string, got {}",
                    crate::protocol::request::kind_of(other)
                ))
            }
            None => return Err("'endpoint' is missing".into()),
        };
        crate::config::names::check_tcp_endpoint(endpoint)
            .map_err(|e| format!("'endpoint': {e}"))?;
        let fingerprint = match answer.get(UDP_FINGERPRINT) {
            None => None,
            Some(serde_json::Value::String(fp)) => {
                Some(Fingerprint::parse(fp).map_err(|e| format!("'{UDP_FINGERPRINT}': {e}"))?)
            }
            Some(other) => {
                return Err(format!(
                    "'{UDP_FINGERPRINT}' must be a string, got {}",
                    crate::protocol::request::kind_of(other)
                ))
            }
        };
        Ok(Self {
            endpoint: endpoint.clone(),
            fingerprint,
        })
    }
}

/// Interface name prefixes of container and VM bridges, skipped by default when announcing:
/// their addresses are not reachable from other machines.
pub const VIRTUAL_INTERFACE_PREFIXES: [&str; 7] =
    ["docker", "br-", "veth", "virbr", "cni", "flannel", "podman"];

/// Whether an agent announces on interface `name`, given `[agent]` announce_interfaces
/// (empty = all) and ignore_interfaces.
pub fn announces_on(name: &str, announce: &[String], ignore: &[String]) -> bool {
    if ignore.iter().any(|i| i == name) {
        return false;
    }
    if !announce.is_empty() {
        return announce.iter().any(|i| i == name);
    }
    !VIRTUAL_INTERFACE_PREFIXES
        .iter()
        .any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_round_trips() {
        let record = AnnounceRecord {
            id: "1c0d0193-643e-489f-800d-18b848a499b9".into(),
            cluster: "lab".into(),
            version: "0.1.0".into(),
            pubsub_port: 5556,
            stats_port: 5557,
            proto: PROTO_VERSION,
            fingerprint: None,
        };
        let txt = record.to_txt();
        assert_eq!(txt["pub"], "5556");
        assert!(!txt.contains_key(TXT_FINGERPRINT));
        let back = AnnounceRecord::from_txt(|k| txt.get(k).map(String::as_str)).unwrap();
        assert_eq!(back, record);
        let keyed = AnnounceRecord {
            fingerprint: Some(Fingerprint::parse("1a370741c810a9b4").unwrap()),
            ..record
        };
        let txt = keyed.to_txt();
        assert_eq!(txt[TXT_FINGERPRINT], "1a370741c810a9b4");
        let back = AnnounceRecord::from_txt(|k| txt.get(k).map(String::as_str)).unwrap();
        assert_eq!(back, keyed);
    }

    #[test]
    fn a_bad_record_names_the_key() {
        let err = AnnounceRecord::from_txt(|k| (k != "stats").then_some("1")).unwrap_err();
        assert!(err.contains("'stats'"), "{err}");
        let err =
            AnnounceRecord::from_txt(|k| Some(if k == "pub" { "x" } else { "1" })).unwrap_err();
        assert!(err.contains("'pub' is not a port"), "{err}");
        let err = AnnounceRecord::from_txt(|k| Some(if k == "fp" { "not-hex" } else { "1" }))
            .unwrap_err();
        assert!(err.contains("'fp'"), "{err}");
    }

    #[test]
    fn circus_udp_answers_read_back_and_bad_ones_name_the_field() {
        let circusd = CircusUdpAnswer::parse(br#"{"endpoint": "tcp://10.0.0.7:5555"}"#).unwrap();
        assert_eq!(circusd.endpoint, "tcp://10.0.0.7:5555");
        assert_eq!(circusd.fingerprint, None);
        let keyed = CircusUdpAnswer {
            endpoint: "tcp://[::1]:6000".into(),
            fingerprint: Some(Fingerprint::parse("1a370741c810a9b4").unwrap()),
        };
        assert_eq!(
            CircusUdpAnswer::parse(keyed.to_json().as_bytes()),
            Ok(keyed)
        );
        for (datagram, named) in [
            (&br#"[1]"#[..], "not a JSON object"),
            (br#"{}"#, "'endpoint' is missing"),
            (br#"{"endpoint": 7}"#, "'endpoint' must be a string"),
            (br#"{"endpoint": "tcp://10.0.0.7"}"#, "has no port"),
            (br#"{"endpoint": "tcp://a b:5555"}"#, "'endpoint'"),
            (
                br#"{"endpoint": "tcp://10.0.0.7:5555", "fingerprint": 1}"#,
                "'fingerprint' must be a string",
            ),
            (
                br#"{"endpoint": "tcp://10.0.0.7:5555", "fingerprint": "xyz"}"#,
                "'fingerprint': expected",
            ),
        ] {
            let error = CircusUdpAnswer::parse(datagram).unwrap_err();
            assert!(error.contains(named), "{error}");
        }
    }

    #[test]
    fn interface_selection() {
        let none: Vec<String> = Vec::new();
        assert!(announces_on("eth0", &none, &none));
        assert!(!announces_on("docker0", &none, &none));
        assert!(!announces_on("veth12ab", &none, &none));
        assert!(announces_on("docker0", &["docker0".into()], &none));
        assert!(!announces_on("eth1", &["eth0".into()], &none));
        assert!(!announces_on("eth0", &none, &["eth0".into()]));
    }
}
