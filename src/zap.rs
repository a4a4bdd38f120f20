//! ZAP (rfc.zeromq.org/spec:27/ZAP): the hook libzmq asks before it admits a peer on a
//! listening socket, and troupe's one handler for it.
//!
//! Why every listening socket has a ZAP domain: libzmq 4.3.4 refuses ZMTP 1.0 and 2.0 peers on
//! a socket whose `ZMQ_ZAP_DOMAIN` is set (`zmtp_engine_t::handshake_v1_0_unversioned`,
//! `handshake_v1_0` and `handshake_v2_0` fail when `session_base_t::zap_enabled()`), whether a
//! handler runs or not. Such peers send no connection metadata, so their requests arrived
//! without a `Peer-Address`, which the agent took for local ones.
//!
//! Why a handler as well: with a domain set, libzmq sends the handler a request for every ZMTP 3
//! handshake and admits the peer only on its "200". With no handler bound, a NULL handshake
//! goes on unchecked (`session_base_t::zap_connect` fails and `ZMQ_ZAP_ENFORCE_DOMAIN` is off).
//! With a cluster key, the handler is what checks CURVE client keys ([`Policy`]).
//!
//! What the handler never sees: with a key, libzmq itself drops a NULL peer at the greeting
//! (mechanism mismatch) and a CURVE peer whose HELLO is not sealed for this node's server key
//! (a client of another key), before any ZAP request; such peers get no reply either. libzmq
//! 4.3.4's socket monitor names only the local endpoint for those failures, so only the
//! refusals the handler makes are logged with the peer's address. The handler is a task that
//! owns its policy, bound at [`HANDLER_ENDPOINT`] of its context before any listening socket of
//! that context ([`crate::sockets::ServerContext`] makes that the only possible order).

use crate::bounds;
use crate::cluster_key::Keyring;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The domain every listening socket sets; the handler sees it in each request.
pub const DOMAIN: &str = "troupe";

/// Where libzmq looks for a context's ZAP handler (fixed by the ZAP spec).
pub const HANDLER_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// The only ZAP version there is.
const VERSION: &[u8] = b"1.0";

/// One handshake libzmq asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZapRequest {
    pub domain: String,
    /// The peer's IP address (empty for a Unix socket).
    pub address: String,
    /// "NULL", "PLAIN" or "CURVE".
    pub mechanism: String,
    /// Mechanism-specific: nothing for NULL, the client's public key for CURVE.
    pub credentials: Vec<Vec<u8>>,
}

/// What the handler answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// ZAP status 400: the peer is disconnected with an ERROR command carrying the reason.
    Refuse(String),
}

/// The domain of the agent's owner-only Unix socket: NULL peers are admitted there with or
/// without a cluster key, as its file permissions decide who connects (SECURITY.md). Set by
/// the listening socket itself, so no peer can choose it.
pub const OWNER_DOMAIN: &str = "troupe-owner";

/// The domain of a keyed agent's plaintext Circus sockets (`circus_bind`): NULL peers are
/// admitted there, and what they may do is decided per request (read-only unless
/// `allow_remote_exec`). Set by the listening socket itself, so no peer can choose it.
pub const PLAINTEXT_DOMAIN: &str = "troupe-plaintext";

/// Who may complete a handshake on a listening socket. Keyless, every ZMTP 3 peer with the
/// NULL mechanism, and what a request may do is decided per request, by the socket it came on
/// (SECURITY.md). With a cluster key, the TCP sockets are CURVE servers and only a client
/// presenting the client public key of a key in the keyring is admitted. Refusals are logged
/// once per peer address and [`REFUSAL_LOG_INTERVAL`], from a map of at most
/// [`bounds::REFUSAL_LOG_PEERS`] addresses.
#[derive(Debug, Default)]
pub struct Policy {
    /// The client public keys of the keyring; `None` without a key.
    accepted_clients: Option<Vec<[u8; 32]>>,
    refusals: RefusalLog,
}

impl Policy {
    /// Admits NULL peers: a node without a cluster key.
    pub fn keyless() -> Policy {
        Policy::default()
    }

    /// Admits CURVE clients holding any key of `keyring` (and NULL peers on the owner socket).
    pub fn keyed(keyring: &Keyring) -> Policy {
        Policy {
            accepted_clients: Some(
                keyring
                    .keys()
                    .iter()
                    .map(|key| key.curve().client.public)
                    .collect(),
            ),
            refusals: RefusalLog::default(),
        }
    }

    /// From now on admits the clients of `keyring` instead (its refusal log is kept).
    pub fn accept(&mut self, keyring: &Keyring) {
        self.accepted_clients = Policy::keyed(keyring).accepted_clients;
    }

    pub fn decide(&mut self, request: &ZapRequest) -> Verdict {
        let mechanism = request.mechanism.as_str();
        if request.domain == OWNER_DOMAIN || request.domain == PLAINTEXT_DOMAIN {
            return match mechanism {
                "NULL" => Verdict::Admit,
                other => Verdict::Refuse(format!("mechanism {other} is not accepted")),
            };
        }
        match (&self.accepted_clients, mechanism) {
            (None, "NULL") => Verdict::Admit,
            (Some(accepted), "CURVE") => match request.credentials.first() {
                Some(key) if accepted.iter().any(|a| a.as_slice() == key.as_slice()) => {
                    Verdict::Admit
                }
                _ => Verdict::Refuse("the client key is not one of this cluster's keys".into()),
            },
            (Some(_), other) => Verdict::Refuse(format!(
                "mechanism {other}: this node admits only holders of the cluster key (CURVE)"
            )),
            (None, other) => Verdict::Refuse(format!("mechanism {other} is not accepted")),
        }
    }
}

/// How long a peer address whose refusal was logged stays quiet.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(600);

/// When each refused peer address was last logged.
#[derive(Debug, Default)]
struct RefusalLog {
    logged: HashMap<String, Instant>,
    /// Refusals not logged since the map was full, reported with the next line logged.
    unlogged: u64,
}

impl RefusalLog {
    /// Whether a refusal of `address` at `now` is logged; if so, also how many were not
    /// logged for want of room.
    fn should_log(&mut self, address: &str, now: Instant) -> Option<u64> {
        if let Some(last) = self.logged.get(address) {
            if now.duration_since(*last) < REFUSAL_LOG_INTERVAL {
                return None;
            }
        } else if self.logged.len() >= bounds::REFUSAL_LOG_PEERS {
            self.logged
                .retain(|_, last| now.duration_since(*last) < REFUSAL_LOG_INTERVAL);
            if self.logged.len() >= bounds::REFUSAL_LOG_PEERS {
                self.unlogged += 1;
                return None;
            }
        }
        self.logged.insert(address.to_string(), now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// The running handler; dropping it stops the task and unbinds the endpoint.
pub struct Handler {
    task: JoinHandle<()>,
}

impl Drop for Handler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the handler in `context` and starts answering for the keyring in `keyring` (none:
/// keyless), taking each new keyring it is sent (rotation). Needs a Tokio runtime.
pub fn start(
    context: &zmq::Context,
    mut keyring: tokio::sync::watch::Receiver<Option<Keyring>>,
) -> tmq::Result<Handler> {
    let mut policy = keyring
        .borrow_and_update()
        .as_ref()
        .map_or_else(Policy::keyless, Policy::keyed);
    let mut socket = tmq::router(context).set_linger(0).bind(HANDLER_ENDPOINT)?;
    let task = tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                changed = keyring.changed(), if keyring.has_changed().is_ok() => {
                    if changed.is_ok() {
                        if let Some(keys) = keyring.borrow_and_update().as_ref() {
                            policy.accept(keys);
                        }
                    }
                    continue;
                }
                message = socket.next() => message,
            };
            let Some(message) = message else { break };
            let frames: Vec<Vec<u8>> = match message {
                Ok(message) => message.iter().map(|frame| frame.to_vec()).collect(),
                Err(e) => {
                    // Only the context ending does this; peers then wait out their handshake
                    // timeout instead of being admitted.
                    tracing::error!("ZAP handler stopped: {e}");
                    break;
                }
            };
            let Some(reply) = answer(&mut policy, frames) else {
                continue;
            };
            if let Err(e) = socket.send(tmq::Multipart::from(reply)).await {
                tracing::warn!("ZAP reply not sent: {e}");
            }
        }
    });
    Ok(Handler { task })
}

/// The reply frames to one request as a ROUTER receives it: `[routing id, "", version,
/// request id, domain, address, identity, mechanism, credentials...]`. `None` for frames that
/// are not a request (libzmq never sends those; nothing else can reach an inproc endpoint).
fn answer(policy: &mut Policy, frames: Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
    let mut frames = frames.into_iter();
    let routing_id = frames.next()?;
    if !frames.next()?.is_empty() {
        return None;
    }
    let version = frames.next()?;
    let request_id = frames.next()?;
    let reply = |status: &str, text: &str| {
        vec![
            routing_id.clone(),
            Vec::new(),
            VERSION.to_vec(),
            request_id.clone(),
            status.as_bytes().to_vec(),
            text.as_bytes().to_vec(),
            // User id and metadata: none.
            Vec::new(),
            Vec::new(),
        ]
    };
    if version != VERSION {
        return Some(reply("500", "ZAP version 1.0 expected"));
    }
    let text = |frame: Option<Vec<u8>>| frame.map(|f| String::from_utf8_lossy(&f).into_owned());
    let domain = text(frames.next())?;
    let address = text(frames.next())?;
    let _identity = frames.next()?;
    let mechanism = text(frames.next())?;
    let request = ZapRequest {
        domain,
        address,
        mechanism,
        credentials: frames.collect(),
    };
    Some(match policy.decide(&request) {
        Verdict::Admit => reply("200", "OK"),
        Verdict::Refuse(reason) => {
            if let Some(unlogged) = policy.refusals.should_log(&request.address, Instant::now()) {
                tracing::warn!(
                    address = %request.address,
                    unlogged,
                    "handshake refused: {reason} (logged once per address every {}s)",
                    REFUSAL_LOG_INTERVAL.as_secs()
                );
            }
            reply("400", &reason)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: &str, mechanism: &str) -> Vec<Vec<u8>> {
        ["peer", "", version, "7", DOMAIN, "10.0.0.2", "", mechanism]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    fn status(reply: &[Vec<u8>]) -> (&str, &str, &str) {
        (
            std::str::from_utf8(&reply[0]).unwrap(),
            std::str::from_utf8(&reply[3]).unwrap(),
            std::str::from_utf8(&reply[4]).unwrap(),
        )
    }

    #[test]
    fn null_peers_are_admitted_with_the_request_id_echoed() {
        let reply = answer(&mut Policy::default(), request("1.0", "NULL")).unwrap();
        assert_eq!(
            reply.len(),
            8,
            "routing id, delimiter and the 6 ZAP reply frames"
        );
        assert_eq!(status(&reply), ("peer", "7", "200"));
        assert!(reply[1].is_empty());
        assert_eq!(reply[2], b"1.0");
    }

    #[test]
    fn other_mechanisms_and_versions_are_refused() {
        let reply = answer(&mut Policy::default(), request("1.0", "PLAIN")).unwrap();
        assert_eq!(status(&reply).2, "400");
        assert_eq!(reply[5], b"mechanism PLAIN is not accepted");
        let reply = answer(&mut Policy::default(), request("2.0", "NULL")).unwrap();
        assert_eq!(status(&reply).2, "500");
    }

    #[test]
    fn frames_that_are_not_a_request_get_no_reply() {
        let mut truncated = request("1.0", "NULL");
        truncated.truncate(5);
        assert_eq!(answer(&mut Policy::default(), truncated), None);
        let mut no_delimiter = request("1.0", "NULL");
        no_delimiter[1] = b"x".to_vec();
        assert_eq!(answer(&mut Policy::default(), no_delimiter), None);
    }

    fn curve_request(domain: &str, client_public: &[u8]) -> ZapRequest {
        ZapRequest {
            domain: domain.into(),
            address: "10.0.0.2".into(),
            mechanism: "CURVE".into(),
            credentials: vec![client_public.to_vec()],
        }
    }

    #[test]
    fn a_keyed_policy_admits_clients_of_every_key_of_the_ring_and_nobody_else() {
        use crate::cluster_key::ClusterKey;
        let (new, old, other) = (
            ClusterKey::generate().unwrap(),
            ClusterKey::generate().unwrap(),
            ClusterKey::generate().unwrap(),
        );
        let ring = Keyring::new(vec![new.clone(), old.clone()]).unwrap();
        let mut policy = Policy::keyed(&ring);
        for key in [&new, &old] {
            let client = key.curve().client.public;
            assert_eq!(
                policy.decide(&curve_request(DOMAIN, &client)),
                Verdict::Admit
            );
        }
        let refused = |policy: &mut Policy, request: &ZapRequest| {
            matches!(policy.decide(request), Verdict::Refuse(_))
        };
        // Another cluster's client key, a key's server public key, nothing, and NULL.
        assert!(refused(
            &mut policy,
            &curve_request(DOMAIN, &other.curve().client.public)
        ));
        assert!(refused(
            &mut policy,
            &curve_request(DOMAIN, &new.curve().server.public)
        ));
        assert!(refused(&mut policy, &curve_request(DOMAIN, &[])));
        let null = |domain: &str| ZapRequest {
            mechanism: "NULL".into(),
            credentials: Vec::new(),
            ..curve_request(domain, &[])
        };
        assert!(refused(&mut policy, &null(DOMAIN)));
        // The owner's Unix socket and the plaintext Circus sockets stay NULL; keyless TCP too.
        assert_eq!(policy.decide(&null(OWNER_DOMAIN)), Verdict::Admit);
        assert_eq!(policy.decide(&null(PLAINTEXT_DOMAIN)), Verdict::Admit);
        assert!(refused(
            &mut policy,
            &curve_request(PLAINTEXT_DOMAIN, &new.curve().client.public)
        ));
        assert_eq!(Policy::keyless().decide(&null(DOMAIN)), Verdict::Admit);
        assert!(refused(
            &mut Policy::keyless(),
            &curve_request(DOMAIN, &new.curve().client.public)
        ));
    }

    #[test]
    fn refusals_are_logged_once_per_address_and_interval_within_the_bound() {
        let mut log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.should_log("10.0.0.2", start), Some(0));
        assert_eq!(
            log.should_log("10.0.0.2", start + Duration::from_secs(1)),
            None
        );
        let later = start + REFUSAL_LOG_INTERVAL;
        assert_eq!(log.should_log("10.0.0.2", later), Some(0));
        for n in 1..bounds::REFUSAL_LOG_PEERS {
            assert!(log.should_log(&format!("peer-{n}"), later).is_some());
        }
        assert_eq!(log.logged.len(), bounds::REFUSAL_LOG_PEERS);
        assert_eq!(log.should_log("one-too-many", later), None);
        assert_eq!(log.should_log("two-too-many", later), None);
        assert_eq!(log.logged.len(), bounds::REFUSAL_LOG_PEERS, "bounded");
        // Once entries expire, room is made, and the count of unlogged ones is reported.
        let much_later = later + REFUSAL_LOG_INTERVAL;
        assert_eq!(log.should_log("one-too-many", much_later), Some(2));
        assert_eq!(log.logged.len(), 1);
    }
}
