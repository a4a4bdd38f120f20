//! Asking one endpoint what it is: a troupe agent (`nodeinfo`), a stock circusd (answers
//! Circus commands, not troupe's), or nothing we can adopt.

use crate::admission::Admission;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::time::Duration;
use troupe::client::{exchange, exchange_as, ClientError, Reply};
use troupe::discovery::{ProbeTarget, ProbeTargets};
use troupe::protocol::{NodeInfo, Request};
use troupe::sockets::connect_probe_async;

/// An async ZeroMQ DEALER.
pub type Dealer = troupe::client::Connection;

/// What a node told us when it answered.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeFacts {
    Troupe(Box<NodeInfo>),
    /// A stock circusd: it answers Circus commands but not `nodeinfo`.
    Circus {
        watchers: usize,
    },
}

/// What answered at an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Probed {
    Node(NodeFacts),
    /// Nothing listens, or the port answers something that is not a node.
    Nothing,
    /// Something refused our cluster key (a CURVE handshake failed, none succeeded): a node
    /// holding another key, or none, or a keyed one when we have none.
    Refused,
    /// Connected, and no reply to `nodeinfo` in time: a frozen (SIGSTOPped) or overloaded
    /// agent, or a port that never speaks. Reported by fan-outs as `no reply`, never adopted.
    Silent,
}

/// Limits of a probe sweep.
#[derive(Debug, Clone, Copy)]
pub struct ProbeLimits {
    /// Addresses probed at once.
    pub concurrency: usize,
    /// TCP connect timeout: a closed port answers at once, a black hole costs this much.
    pub connect_timeout: Duration,
    /// Time for the ZeroMQ request/reply once the port is open.
    pub reply_timeout: Duration,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        Self {
            concurrency: 256,
            connect_timeout: Duration::from_millis(300),
            reply_timeout: Duration::from_millis(700),
        }
    }
}

/// Asks `endpoint` (`tcp://ADDR:PORT`) for `nodeinfo`; a Circus "unknown command" reply
/// marks a stock circusd, whose watchers are then counted with `list`. A new DEALER, closed
/// afterwards.
pub async fn probe(context: &zmq::Context, endpoint: &str, timeout: Duration) -> Probed {
    match connect_probe_async(context, endpoint).await {
        Ok(mut socket) => probe_on(&mut socket, endpoint, timeout).await,
        Err(e) => {
            tracing::debug!(endpoint, "cannot connect: {e}");
            Probed::Nothing
        }
    }
}

/// A reply to `nodeinfo`, read in one pass: a troupe agent's `node`, or a stock circusd's
/// error (`errno` 2: unknown command).
#[derive(Deserialize)]
struct NodeInfoReply {
    #[serde(default, deserialize_with = "troupe::client::present_id")]
    id: Option<Value>,
    #[serde(default)]
    status: Value,
    #[serde(default)]
    errno: Value,
    node: Option<NodeInfo>,
}

impl Reply for NodeInfoReply {
    fn id(&self) -> Option<&Value> {
        self.id.as_ref()
    }
}

/// [`probe`] on a DEALER connected to `endpoint` that the caller keeps (the heartbeats of
/// membership), each request within `timeout`. Only after [`Probed::Node`] was every request
/// answered, so the socket owes nothing and may be reused; after [`Probed::Nothing`] it may
/// still hold a request or owe a reply: close it.
pub async fn probe_on(socket: &mut Dealer, endpoint: &str, timeout: Duration) -> Probed {
    let request = |command: &str| Request::new(command, Map::new());
    let reply: NodeInfoReply = match exchange_as(socket, request("nodeinfo"), timeout).await {
        Ok(reply) => reply,
        Err(ClientError::Refused { .. }) => return Probed::Refused,
        Err(ClientError::Timeout { .. }) => return Probed::Silent,
        Err(e) => {
            tracing::debug!(endpoint, "nodeinfo: {e}");
            return Probed::Nothing;
        }
    };
    if reply.status == "ok" {
        return match reply.node {
            Some(info) => match check_node_info(&info) {
                Ok(()) => Probed::Node(NodeFacts::Troupe(Box::new(info))),
                Err(e) => {
                    tracing::debug!(endpoint, "nodeinfo refused: {e}");
                    Probed::Nothing
                }
            },
            None => {
                tracing::debug!(endpoint, "nodeinfo reply without its node");
                Probed::Nothing
            }
        };
    }
    if reply.errno != 2 {
        return Probed::Nothing;
    }
    match exchange(socket, request("list"), timeout).await {
        Ok(list) if list["status"] == "ok" => Probed::Node(NodeFacts::Circus {
            watchers: list["watchers"].as_array().map_or(0, Vec::len),
        }),
        _ => Probed::Nothing,
    }
}

/// The strings of a `nodeinfo` reply that membership keeps and passes on (event topics
/// `node.<name>.join`, the peer lists `configure` pushes): checked by the config's rules.
pub fn check_node_info(info: &NodeInfo) -> Result<(), String> {
    use troupe::config::names::{check_name, check_node_id};
    check_node_id(&info.id).map_err(|e| format!("id: {e}"))?;
    check_name(&info.name).map_err(|e| format!("name: {e}"))?;
    check_name(&info.cluster).map_err(|e| format!("cluster: {e}"))?;
    Ok(())
}

/// Probes every target that `admission` admits once resolved, except the endpoints in
/// `known`, at most `limits.concurrency` at once, and returns those that are nodes, refused
/// our key, or silent (a TCP connection, no answer), with their endpoints.
pub async fn sweep(
    context: &zmq::Context,
    targets: &ProbeTargets,
    limits: ProbeLimits,
    admission: &Admission,
    known: &HashSet<String>,
) -> Vec<(String, Probed)> {
    futures::stream::iter(targets.iter())
        .map(|target| async move {
            let address = resolve(&target).await?;
            if !admission.admits(address) {
                tracing::debug!(%target, %address, "not probed: on this host and not named by the operator");
                return None;
            }
            let endpoint = endpoint_of(address);
            if known.contains(&endpoint) {
                return None;
            }
            if !troupe::limits::room_for(1) {
                return None;
            }
            let connect = tokio::net::TcpStream::connect(address);
            let stream = match tokio::time::timeout(limits.connect_timeout, connect).await {
                Ok(Ok(stream)) => stream,
                _ => return None,
            };
            match probe(context, &endpoint, limits.reply_timeout).await {
                Probed::Nothing => None,
                Probed::Silent if !mute(&stream) => None,
                Probed::Silent
                    if troupe::sockets::client_keys().is_none()
                        && asks_for_a_key(address, limits.reply_timeout).await =>
                {
                    Some((endpoint, Probed::Refused))
                }
                found => Some((endpoint, found)),
            }
        })
        .buffer_unordered(limits.concurrency.max(1))
        .filter_map(|found| async move { found })
        .collect()
        .await
}

/// Whether the peer of `stream`, connected before the probe, has said nothing that tells it
/// is no node: silent (a frozen process, whose kernel still accepts), or the start of a ZMTP
/// greeting (an agent too slow to answer). A port that wrote something else (an HTTP
/// server's error) or hung up is no node, not a silent one.
fn mute(stream: &tokio::net::TcpStream) -> bool {
    /// The first byte of every ZMTP 3 greeting.
    const ZMTP_SIGNATURE: u8 = 0xff;
    let mut first = [0u8; 1];
    match stream.try_read(&mut first) {
        Ok(0) => false,
        Ok(_) => first[0] == ZMTP_SIGNATURE,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// Whether the ZeroMQ server at `address` asks for a security mechanism other than NULL (it
/// holds a cluster key), read from its greeting. A keyless probe's own handshake tells it only
/// when it reads the server's greeting before the server hangs up on its NULL one: on a loaded
/// host it often writes first, and libzmq then reports a bare hang-up, as for any port that
/// closes. Asked only of a port that gave a keyless probe no answer.
async fn asks_for_a_key(address: std::net::SocketAddr, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// A ZMTP 3.0 greeting up to its mechanism: the signature (0xff, padding, 0x7f) and the
    /// version, after which a server sends the rest of its own greeting.
    const SIGNATURE_AND_VERSION: [u8; 12] = [0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0];
    let greeting = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream.write_all(&SIGNATURE_AND_VERSION).await.ok()?;
        // Signature (10), version (2), mechanism (20, padded with zeros).
        let mut greeting = [0u8; 32];
        stream.read_exact(&mut greeting).await.ok()?;
        Some(greeting)
    };
    let Ok(Some(greeting)) = tokio::time::timeout(timeout, greeting).await else {
        return false;
    };
    let mechanism = &greeting[12..];
    let named = &mechanism[..mechanism
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(mechanism.len())];
    greeting[0] == 0xff
        && greeting[9] == 0x7f
        && greeting[10] >= 3
        && !named.is_empty()
        && named != b"NULL"
}

async fn resolve(target: &ProbeTarget) -> Option<std::net::SocketAddr> {
    match target {
        ProbeTarget::Addr(address) => Some(*address),
        ProbeTarget::Host(host, port) => {
            let found: Vec<_> = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .ok()?
                .collect();
            found
                .iter()
                .find(|a| a.is_ipv4())
                .or(found.first())
                .copied()
        }
    }
}

/// `tcp://ADDR:PORT`, brackets around IPv6.
pub fn endpoint_of(address: std::net::SocketAddr) -> String {
    format!("tcp://{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `nodeinfo` reply read in one pass says what the JSON tree said: the node of an
    /// agent, circusd's errno, and an id that is absent apart from one that is null (only a
    /// null one answers whichever request).
    #[test]
    fn nodeinfo_replies_read_in_one_pass() {
        let agent = serde_json::json!({
            "status": "ok", "id": "r1",
            "node": {
                "id": "00000000-0000-4000-8000-00000000000a", "name": "a", "cluster": "lab",
                "version": "0.1.0", "hostname": "host-a", "addresses": ["10.0.0.1"],
                "endpoints": {"control": "tcp://10.0.0.1:5555", "pubsub": "tcp://10.0.0.1:5556",
                              "stats": "tcp://10.0.0.1:5557"},
                "started": 1.0, "watchers": {}
            }
        });
        let read =
            |value: &Value| -> NodeInfoReply { serde_json::from_value(value.clone()).unwrap() };
        let reply = read(&agent);
        assert_eq!(reply.status, "ok");
        assert_eq!(reply.id(), Some(&serde_json::json!("r1")));
        let node = reply.node.expect("the node");
        assert_eq!(
            node,
            serde_json::from_value::<NodeInfo>(agent["node"].clone()).unwrap()
        );
        let circusd =
            serde_json::json!({"status": "error", "reason": "unknown", "errno": 2, "id": null});
        let reply = read(&circusd);
        assert_eq!(reply.errno, 2);
        assert!(reply.node.is_none());
        assert_eq!(reply.id(), Some(&Value::Null));
        assert_eq!(read(&serde_json::json!({"status": "ok"})).id(), None);
        // A node that is not one is refused whole, as the tree's reading refused it.
        let mut bad = agent.clone();
        bad["node"]["started"] = serde_json::json!("yesterday");
        assert!(serde_json::from_value::<NodeInfoReply>(bad).is_err());
    }

    /// A sweep does not even connect to an endpoint it is told heartbeats already ask; the
    /// same sweep without it does (and reports the mute port).
    #[tokio::test]
    async fn a_sweep_skips_known_endpoints_without_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let targets = troupe::discovery::parse_targets(&address.to_string()).unwrap();
        let zmq = zmq::Context::new();
        let limits = ProbeLimits {
            reply_timeout: Duration::from_millis(200),
            ..ProbeLimits::default()
        };
        let known = HashSet::from([endpoint_of(address)]);
        let found = sweep(&zmq, &targets, limits, &Admission::Open, &known).await;
        assert!(found.is_empty(), "{found:?}");
        let connected = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(
            connected.is_err(),
            "the sweep connected to a known endpoint"
        );

        let found = sweep(&zmq, &targets, limits, &Admission::Open, &HashSet::new()).await;
        assert_eq!(found, [(endpoint_of(address), Probed::Silent)]);
        let connected = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
        assert!(connected.is_ok(), "the sweep did not connect");
    }

    /// A ZeroMQ server's greeting names its mechanism: CURVE (a keyed agent) asks for a key,
    /// NULL (a keyless one) does not, and a port that answers anything else, or nothing, is no
    /// server that asks. Read the same on a loaded host: nothing here races the server's hang-up.
    #[tokio::test]
    async fn a_greeting_tells_a_keyed_server_from_a_keyless_one_and_garbage() {
        use tokio::io::AsyncWriteExt;
        let zmq = zmq::Context::new();
        let server = |curve: Option<&troupe::cluster_key::CurvePair>| {
            let socket = zmq.socket(zmq::ROUTER).unwrap();
            if let Some(pair) = curve {
                socket.set_curve_server(true).unwrap();
                socket.set_curve_secretkey(pair.secret()).unwrap();
            }
            socket.bind("tcp://127.0.0.1:0").unwrap();
            let bound = socket.get_last_endpoint().unwrap().unwrap();
            let address: std::net::SocketAddr = bound.trim_start_matches("tcp://").parse().unwrap();
            (socket, address)
        };
        let key = troupe::cluster_key::ClusterKey::generate().unwrap();
        let (_keyed, keyed) = server(Some(&key.curve().server));
        let (_keyless, keyless) = server(None);
        let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let garbage_address = garbage.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = garbage.accept().await {
                let _ = stream
                    .write_all(
                        &[0xff; 10]
                            .iter()
                            .chain(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                            .copied()
                            .collect::<Vec<u8>>(),
                    )
                    .await;
            }
        });
        // A port that accepts and never says a word: no answer within the timeout.
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mute_address = mute.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = mute.accept().await {
                held.push(stream);
            }
        });
        let timeout = Duration::from_secs(2);
        assert!(asks_for_a_key(keyed, timeout).await, "CURVE");
        assert!(!asks_for_a_key(keyless, timeout).await, "NULL");
        assert!(!asks_for_a_key(garbage_address, timeout).await, "garbage");
        let started = std::time::Instant::now();
        assert!(
            !asks_for_a_key(mute_address, Duration::from_millis(200)).await,
            "mute"
        );
        assert!(
            started.elapsed() < timeout,
            "a mute port held the probe past its timeout"
        );
    }
}
