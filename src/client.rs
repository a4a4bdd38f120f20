//! Control clients: one request, one reply or a timeout. [`call`] blocks; [`call_async`] opens
//! a DEALER per call; [`exchange`] runs one request on a [`Connection`] the caller keeps (the
//! pooled links of `troupe serve`, membership's heartbeats).

use crate::protocol::Request;
use crate::sockets::Context;
use serde_json::Value;
use std::time::{Duration, Instant};

/// What a keyless client adds to "no reply": a keyed peer's silence looks the same as a
/// frozen one's, so say which way out there is.
pub const KEYLESS_HINT: &str =
    " (this client has no cluster key, and a node or controller that has one \
     answers nobody else: name the key with --key-file or TROUPE_KEY_FILE)";

/// Why a call got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: zmq::Error,
    },
    #[error("no reply from {endpoint} within {timeout:?}{}", if *keyless { KEYLESS_HINT } else { "" })]
    Timeout {
        endpoint: String,
        timeout: Duration,
        /// This process holds no cluster key: a keyed node or controller never answers it.
        keyless: bool,
    },
    /// Every handshake failed and none succeeded: the endpoint holds none of our keys.
    #[error(
        "{endpoint} refused this client's cluster key: it holds another key, or none (copy \
         the cluster key file to it, or name its key with --key-file or TROUPE_KEY_FILE)"
    )]
    Refused { endpoint: String },
    #[error("transport error talking to {endpoint}: {source}")]
    Transport {
        endpoint: String,
        source: zmq::Error,
    },
    #[error("reply from {endpoint} is not JSON: {detail}")]
    BadReply { endpoint: String, detail: String },
}

/// Sends `request` to `endpoint` and waits up to `timeout` for the reply with the same id:
/// [`call_async`] on a runtime of its own, so a blocking caller (`troupe ctl`) follows a key
/// rotation as every other client does ([`exchange`]). The runtime runs on a thread of its
/// own: a caller may itself run on one (a runtime cannot be started inside another).
pub fn call(endpoint: &str, request: Request, timeout: Duration) -> Result<Value, ClientError> {
    // No thread or runtime for it: the process is out of descriptors or threads.
    let exhausted = |e: std::io::Error| ClientError::Transport {
        endpoint: endpoint.to_string(),
        source: match e.raw_os_error() {
            Some(code) if code == nix::errno::Errno::EMFILE as i32 => zmq::Error::EMFILE,
            _ => zmq::Error::EFAULT,
        },
    };
    let on_own_runtime = || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(exhausted)?;
        runtime.block_on(call_async(&Context::new(), endpoint, request, timeout))
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .spawn_scoped(scope, on_own_runtime)
            .map_err(exhausted)?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The async twin of [`call`], sharing one ZeroMQ context across many concurrent calls: a
/// new DEALER for this one request, closed afterwards.
pub async fn call_async(
    context: &Context,
    endpoint: &str,
    request: impl Into<Outgoing>,
    timeout: Duration,
) -> Result<Value, ClientError> {
    let mut connection = crate::sockets::connect_control_async(context, endpoint)
        .await
        .map_err(|e| connect_error(endpoint, e))?;
    exchange(&mut connection, request, timeout).await
}

/// An async DEALER to one control endpoint that follows the endpoint through a key rotation.
///
/// A node that makes a new key first binds its listeners again (see
/// [`crate::sockets::ListenerKey`]): its connections end, and libzmq connects again with the
/// key the socket was made with, which the node now refuses, for ever. So with a key, the
/// socket's handshakes are watched while it lives: when its endpoint refuses its key, a
/// request that cannot have reached the node (sent while no handshake had succeeded, and
/// none succeeded before the refusal), or one that changes nothing
/// ([`Request::changes_nothing`]: the node may have dropped it unread when it re-bound), is
/// sent again on a new socket, made with the key the endpoint takes now
/// ([`crate::sockets::ClientKeys`]), within the request's own timeout.
pub struct Connection {
    /// Its monitor is stopped when the connection is dropped, before the handshakes' end is
    /// closed ([`crate::sockets::stop_watching`]).
    dealer: tmq::dealer::Dealer,
    handshakes: Handshakes,
    endpoint: String,
    /// To make the socket again.
    context: Context,
}

/// The handshakes of a client socket with a key, watched for as long as it lives: what lets
/// a kept socket ([`Connection`], [`Subscription`]) see that its endpoint now refuses the key
/// it was made with (a key rotation), and be made again.
pub(crate) struct Handshakes {
    /// The monitor of the socket's handshakes and disconnections; `None` without a key.
    events: Option<tmq::pair::Pair>,
    /// Whether, as far as the events read say, a handshake succeeded and the connection has
    /// not ended since.
    up: bool,
    /// The key the socket presents. Without one, only a server that names another mechanism
    /// refuses it (see [`crate::sockets::handshake_event`]), and no other key of ours could
    /// open it.
    key: Option<PresentedKey>,
}

impl Handshakes {
    pub(crate) fn new(
        events: Option<tmq::pair::Pair>,
        up: bool,
        key: Option<PresentedKey>,
    ) -> Handshakes {
        Handshakes { events, up, key }
    }

    fn keyed(&self) -> bool {
        self.key.is_some()
    }

    fn note(&mut self, handshake: Handshake) {
        match handshake {
            Handshake::Succeeded => self.up = true,
            Handshake::Disconnected => self.up = false,
            Handshake::Refused => {
                self.up = false;
                if let Some(key) = &self.key {
                    key.refused();
                }
            }
            Handshake::Unknown => {}
        }
    }

    /// Reads the events that are waiting; whether one said the endpoint refused the key.
    fn drain(&mut self) -> bool {
        use tmq::AsZmqSocket;
        let mut refused = false;
        let keyed = self.keyed();
        let Some(events) = &mut self.events else {
            return false;
        };
        // Straight from the socket: a stream that was not polled since its descriptor last
        // fired says "pending" with events queued.
        let mut seen = Vec::new();
        while let Ok(frames) = events.get_socket().recv_multipart(zmq::DONTWAIT) {
            seen.extend(crate::sockets::handshake_event(&frames, keyed));
        }
        for handshake in seen {
            refused |= handshake == Handshake::Refused;
            self.note(handshake);
        }
        refused
    }

    /// The next handshake event; never, without a key. Cancel-safe.
    async fn next(&mut self) -> Handshake {
        use futures::StreamExt;
        loop {
            let Some(events) = &mut self.events else {
                return std::future::pending().await;
            };
            let Some(Ok(message)) = events.next().await else {
                return std::future::pending().await;
            };
            let frames: Vec<Vec<u8>> = message.iter().map(|f| f.to_vec()).collect();
            if let Some(handshake) = crate::sockets::handshake_event(&frames, self.keyed()) {
                self.note(handshake);
                return handshake;
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.handshakes.events.is_some() {
            crate::sockets::stop_watching(tmq::AsZmqSocket::get_socket(&self.dealer));
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.handshakes.events.is_some() {
            crate::sockets::stop_watching(tmq::AsZmqSocket::get_socket(&self.subscriber));
        }
    }
}

/// A reply as [`exchange_as`] reads it: any shape that carries the request's `id`.
pub trait Reply: serde::de::DeserializeOwned {
    /// The reply's `id`: None when it has none, `Some(null)` when it is null.
    fn id(&self) -> Option<&Value>;
}

impl Reply for Value {
    fn id(&self) -> Option<&Value> {
        self.get("id")
    }
}

/// Reads a typed reply's `id` as [`Reply::id`] tells it: `#[serde(default, deserialize_with =
/// "troupe::client::present_id")] id: Option<Value>` (serde alone reads null as None).
pub fn present_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Value>, D::Error> {
    serde::Deserialize::deserialize(deserializer).map(Some)
}

/// What one event of a connection's monitor means for the request in flight.
enum Outcome<R> {
    Reply(R),
    /// The endpoint refused the socket's key; whether the request may have reached it.
    Refused {
        maybe_delivered: bool,
    },
}

impl Connection {
    pub(crate) fn new(
        context: &Context,
        dealer: tmq::dealer::Dealer,
        events: Option<tmq::pair::Pair>,
        up: bool,
        key: Option<PresentedKey>,
        endpoint: &str,
    ) -> Connection {
        Connection {
            dealer,
            handshakes: Handshakes::new(events, up, key),
            endpoint: endpoint.to_string(),
            context: context.clone(),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Reads the events that are waiting; whether one said the endpoint refused the key.
    /// Called on every use, and by a pool on its idle connections, so the monitor never
    /// holds more than a few events.
    pub fn drain(&mut self) -> bool {
        self.handshakes.drain()
    }

    /// Waits for the reply to the request with `id` or a refusal of the key, whichever comes
    /// first.
    async fn outcome<R: Reply>(
        &mut self,
        id: &Value,
        sent_while_up: bool,
    ) -> Result<Outcome<R>, ClientError> {
        use futures::StreamExt;
        let mut maybe_delivered = sent_while_up;
        let endpoint = &self.endpoint;
        loop {
            tokio::select! {
                message = self.dealer.next() => {
                    let Some(message) = message else {
                        return Err(transport(endpoint, tmq::TmqError::Zmq(zmq::Error::ETERM)));
                    };
                    let message = message.map_err(|e| transport(endpoint, e))?;
                    let Some(frame) = message.iter().last() else {
                        continue;
                    };
                    let reply: R = serde_json::from_slice(frame).map_err(|e| ClientError::BadReply {
                        endpoint: endpoint.to_string(),
                        detail: e.to_string(),
                    })?;
                    // A null id is an answer to whichever request: a node that could not read
                    // the request's id still says why.
                    if matches!(reply.id(), Some(reply_id) if reply_id == id || reply_id.is_null()) {
                        return Ok(Outcome::Reply(reply));
                    }
                }
                handshake = self.handshakes.next() => match handshake {
                    Handshake::Succeeded => maybe_delivered = true,
                    Handshake::Refused => return Ok(Outcome::Refused { maybe_delivered }),
                    Handshake::Disconnected | Handshake::Unknown => {}
                }
            }
        }
    }
}

/// A SUB to a stats stream (a node's, a controller's) that follows its endpoint through a key
/// rotation as [`Connection`] does: when the endpoint refuses the key the socket was made with,
/// the socket is made again with the key the endpoint takes now ([`crate::sockets::ClientKeys`])
/// and subscribes again. Samples published meanwhile are missed, as across any reconnection.
pub struct Subscription {
    /// Its monitor is stopped when the subscription is dropped, before the handshakes' end is
    /// closed ([`crate::sockets::stop_watching`]).
    subscriber: tmq::subscribe::Subscribe,
    handshakes: Handshakes,
    endpoint: String,
    prefix: Vec<u8>,
    max_message_size: u64,
    context: Context,
    /// When the socket was made: one that every key of ours opens no more (the endpoint is of
    /// another cluster now) is made again at most every [`RESUBSCRIBE_EVERY`].
    opened: Instant,
}

/// How often a subscription whose endpoint refuses its key is made again, at most.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);

impl Subscription {
    /// Connects to `endpoint`, subscribed to `prefix`; see [`crate::sockets::connect_subscriber`].
    pub(crate) async fn open(
        context: &Context,
        endpoint: &str,
        prefix: &[u8],
        max_message_size: u64,
    ) -> tmq::Result<Subscription> {
        let (subscriber, handshakes) =
            crate::sockets::open_subscriber(context, endpoint, prefix, max_message_size).await?;
        Ok(Subscription {
            subscriber,
            handshakes,
            endpoint: endpoint.to_string(),
            prefix: prefix.to_vec(),
            max_message_size,
            context: context.clone(),
            opened: Instant::now(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next message; `None` once the socket is closed.
    pub async fn next(&mut self) -> Option<tmq::Result<tmq::Multipart>> {
        use futures::StreamExt;
        loop {
            tokio::select! {
                message = self.subscriber.next() => return message,
                handshake = self.handshakes.next() => {
                    if handshake == Handshake::Refused {
                        tracing::debug!(endpoint = %self.endpoint, "the endpoint refused the key: subscribing again");
                        tokio::time::sleep_until((self.opened + RESUBSCRIBE_EVERY).into()).await;
                        let again = Subscription::open(&self.context, &self.endpoint, &self.prefix, self.max_message_size).await;
                        match again {
                            Ok(again) => *self = again,
                            Err(e) => return Some(Err(e)),
                        }
                    }
                }
            }
        }
    }
}

use crate::sockets::{Handshake, PresentedKey};

fn transport(endpoint: &str, e: tmq::TmqError) -> ClientError {
    ClientError::Transport {
        endpoint: endpoint.to_string(),
        source: match e {
            tmq::TmqError::Zmq(z) => z,
            _ => zmq::Error::EFAULT,
        },
    }
}

/// A request as it goes on the wire: its frame, encoded once (a `configure` to many nodes
/// is made straight into frames, see [`crate::protocol::ConfigureFrames`]), and what the
/// exchange needs to know of it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The id in the frame, which the reply echoes.
    pub id: Value,
    pub frame: Vec<u8>,
    /// [`Request::changes_nothing`].
    pub changes_nothing: bool,
}

impl From<Request> for Outgoing {
    fn from(mut request: Request) -> Outgoing {
        if request.id.is_null() {
            request.id = Value::String(random_id());
        }
        Outgoing {
            frame: request.encode(),
            changes_nothing: request.changes_nothing(),
            id: request.id,
        }
    }
}

/// One request and its reply on `connection` (a new one, or one kept from earlier calls),
/// within `timeout`. Replies with another id (answers to earlier requests that timed out) are
/// skipped. After an error the connection may still hold the request or owe its reply:
/// callers that keep connections must close it instead of reusing it.
pub async fn exchange(
    connection: &mut Connection,
    request: impl Into<Outgoing>,
    timeout: Duration,
) -> Result<Value, ClientError> {
    exchange_as(connection, request, timeout).await
}

/// [`exchange`], the reply read straight into `R` rather than into a JSON tree: membership
/// asks every member each second, and reading each `nodeinfo` reply into a tree, then the tree
/// into its type, cost serve about 3.5 % more CPU (2000 members). A reply that is not an `R` is
/// [`ClientError::BadReply`].
pub async fn exchange_as<R: Reply>(
    connection: &mut Connection,
    request: impl Into<Outgoing>,
    timeout: Duration,
) -> Result<R, ClientError> {
    use futures::SinkExt;
    let request: Outgoing = request.into();
    let endpoint = connection.endpoint.clone();
    let timed_out = || ClientError::Timeout {
        endpoint: endpoint.clone(),
        timeout,
        keyless: crate::sockets::client_keys().is_none(),
    };
    // Whether the endpoint refused our key, for the error at the deadline.
    let mut refused = false;
    let exchange = async {
        // Bounded: each new connection takes the next key the endpoint may take.
        let mut reopened = 0;
        loop {
            if connection.drain() && !connection.handshakes.up {
                if !connection.handshakes.keyed() {
                    return Err(ClientError::Refused {
                        endpoint: endpoint.clone(),
                    });
                }
                reopen(connection).await?;
            }
            let handshakes = &connection.handshakes;
            let sent_while_up = handshakes.events.is_none() || handshakes.up;
            connection
                .dealer
                .send(tmq::Multipart::from(vec![request.frame.clone()]))
                .await
                .map_err(|e| transport(&endpoint, e))?;
            match connection.outcome(&request.id, sent_while_up).await? {
                Outcome::Reply(reply) => return Ok(reply),
                Outcome::Refused { maybe_delivered } => {
                    tracing::debug!(endpoint, maybe_delivered, "the endpoint refused the key");
                    if !connection.handshakes.keyed() {
                        // It holds a key and we have none: no other socket would be heard.
                        return Err(ClientError::Refused {
                            endpoint: endpoint.clone(),
                        });
                    }
                    reopened += 1;
                    if maybe_delivered && !request.changes_nothing {
                        // A request that may have run is not sent twice: the reply, if
                        // any, is lost with the connection. One that changes nothing is.
                        // The key opened the endpoint before, so the caller hears at the
                        // deadline that no reply came, not that its key was refused.
                        refused = false;
                        std::future::pending::<()>().await;
                    }
                    refused = true;
                    if reopened > 3 {
                        std::future::pending::<()>().await;
                    }
                    reopen(connection).await?;
                }
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        // Refused and never up since: no key of ours opens it (not a node that is slow).
        Err(_) if refused && !connection.handshakes.up => Err(ClientError::Refused { endpoint }),
        Err(_) => Err(timed_out()),
    }
}

/// Replaces `connection`'s socket with a new one, presenting the key its endpoint takes now.
async fn reopen(connection: &mut Connection) -> Result<(), ClientError> {
    let context = connection.context.clone();
    let endpoint = connection.endpoint.clone();
    *connection = crate::sockets::connect_control_async(&context, &endpoint)
        .await
        .map_err(|e| connect_error(&endpoint, e))?;
    Ok(())
}

fn connect_error(endpoint: &str, e: tmq::TmqError) -> ClientError {
    ClientError::Connect {
        endpoint: endpoint.to_string(),
        source: match e {
            tmq::TmqError::Zmq(z) => z,
            _ => zmq::Error::EINVAL,
        },
    }
}

/// A new request id.
pub fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
