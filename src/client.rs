//! Control clients: one request, one reply or a timeout. [`call`] blocks; [`call_async`] opens
//! a DEALER per call; [`exchange`] runs one request on a [`Connection`] the caller keeps (the
//! pooled links of `troupe serve`, membership's heartbeats).

use crate::protocol::Request;
use crate::sockets::{connect_control, poll_timeout_ms, Context};
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
    #[error("transport error talking to {endpoint}: {source}")]
    Transport {
        endpoint: String,
        source: zmq::Error,
    },
    #[error("reply from {endpoint} is not JSON: {detail}")]
    BadReply { endpoint: String, detail: String },
}

/// Sends `request` to `endpoint` and waits up to `timeout` for the reply with the same id.
pub fn call(endpoint: &str, mut request: Request, timeout: Duration) -> Result<Value, ClientError> {
    let context = Context::new();
    let socket = connect_control(&context, endpoint).map_err(|source| ClientError::Connect {
        endpoint: endpoint.to_string(),
        source,
    })?;
    let transport = |source| ClientError::Transport {
        endpoint: endpoint.to_string(),
        source,
    };
    if request.id.is_null() {
        request.id = Value::String(random_id());
    }
    socket.send(request.encode(), 0).map_err(transport)?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || socket
                .poll(zmq::POLLIN, poll_timeout_ms(left))
                .map_err(transport)?
                == 0
        {
            return Err(ClientError::Timeout {
                endpoint: endpoint.to_string(),
                timeout,
                keyless: crate::sockets::client_keys().is_none(),
            });
        }
        let frame = socket.recv_bytes(0).map_err(transport)?;
        let reply: Value = serde_json::from_slice(&frame).map_err(|e| ClientError::BadReply {
            endpoint: endpoint.to_string(),
            detail: e.to_string(),
        })?;
        // Replies to earlier, timed-out requests on a reused identity are skipped, as circusctl does.
        if reply.get("id") == Some(&request.id) || reply.get("id") == Some(&Value::Null) {
            return Ok(reply);
        }
    }
}

/// The async twin of [`call`], sharing one ZeroMQ context across many concurrent calls: a
/// new DEALER for this one request, closed afterwards.
pub async fn call_async(
    context: &Context,
    endpoint: &str,
    request: Request,
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
    /// Dropped first: closing it stops its monitor before `events` is closed.
    dealer: tmq::dealer::Dealer,
    /// The monitor of `dealer`'s handshakes and disconnections; `None` without a key.
    events: Option<tmq::pair::Pair>,
    /// Whether, as far as the events read say, a handshake succeeded and the connection has
    /// not ended since.
    up: bool,
    endpoint: String,
    /// To make the socket again.
    context: Context,
}

/// What one event of a connection's monitor means for the request in flight.
enum Outcome {
    Reply(Value),
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
        endpoint: &str,
    ) -> Connection {
        Connection {
            dealer,
            events,
            up,
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
        use tmq::AsZmqSocket;
        let mut refused = false;
        let Some(events) = &mut self.events else {
            return false;
        };
        // Straight from the socket: a stream that was not polled since its descriptor last
        // fired says "pending" with events queued.
        while let Ok(frames) = events.get_socket().recv_multipart(zmq::DONTWAIT) {
            match crate::sockets::handshake_event(&frames) {
                Some(Handshake::Succeeded) => self.up = true,
                Some(Handshake::Disconnected) => self.up = false,
                Some(Handshake::Refused) => {
                    self.up = false;
                    refused = true;
                }
                _ => {}
            }
        }
        refused
    }

    /// Waits for the reply to `request` or a refusal of the key, whichever comes first.
    async fn outcome(
        &mut self,
        request: &Request,
        sent_while_up: bool,
    ) -> Result<Outcome, ClientError> {
        use futures::StreamExt;
        let mut maybe_delivered = sent_while_up;
        let endpoint = &self.endpoint;
        loop {
            let event = async {
                match &mut self.events {
                    Some(events) => events.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = self.dealer.next() => {
                    let Some(message) = message else {
                        return Err(transport(endpoint, tmq::TmqError::Zmq(zmq::Error::ETERM)));
                    };
                    let message = message.map_err(|e| transport(endpoint, e))?;
                    let Some(frame) = message.iter().last() else {
                        continue;
                    };
                    let reply: Value = serde_json::from_slice(frame).map_err(|e| ClientError::BadReply {
                        endpoint: endpoint.to_string(),
                        detail: e.to_string(),
                    })?;
                    if reply.get("id") == Some(&request.id) || reply.get("id") == Some(&Value::Null) {
                        return Ok(Outcome::Reply(reply));
                    }
                }
                Some(Ok(message)) = event => {
                    let frames: Vec<Vec<u8>> = message.iter().map(|f| f.to_vec()).collect();
                    match crate::sockets::handshake_event(&frames) {
                        Some(Handshake::Succeeded) => {
                            self.up = true;
                            maybe_delivered = true;
                        }
                        Some(Handshake::Disconnected) => self.up = false,
                        Some(Handshake::Refused) => {
                            self.up = false;
                            return Ok(Outcome::Refused { maybe_delivered });
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

use crate::sockets::Handshake;

fn transport(endpoint: &str, e: tmq::TmqError) -> ClientError {
    ClientError::Transport {
        endpoint: endpoint.to_string(),
        source: match e {
            tmq::TmqError::Zmq(z) => z,
            _ => zmq::Error::EFAULT,
        },
    }
}

/// One request and its reply on `connection` (a new one, or one kept from earlier calls),
/// within `timeout`. Replies with another id (answers to earlier requests that timed out) are
/// skipped. After an error the connection may still hold the request or owe its reply:
/// callers that keep connections must close it instead of reusing it.
pub async fn exchange(
    connection: &mut Connection,
    mut request: Request,
    timeout: Duration,
) -> Result<Value, ClientError> {
    use futures::SinkExt;
    if request.id.is_null() {
        request.id = Value::String(random_id());
    }
    let endpoint = connection.endpoint.clone();
    let timed_out = || ClientError::Timeout {
        endpoint: endpoint.clone(),
        timeout,
        keyless: crate::sockets::client_keys().is_none(),
    };
    let exchange = async {
        // Bounded: each new connection takes the next key the endpoint may take.
        let mut reopened = 0;
        loop {
            if connection.drain() && !connection.up {
                reopen(connection).await?;
            }
            let sent_while_up = connection.events.is_none() || connection.up;
            connection
                .dealer
                .send(tmq::Multipart::from(vec![request.encode()]))
                .await
                .map_err(|e| transport(&endpoint, e))?;
            match connection.outcome(&request, sent_while_up).await? {
                Outcome::Reply(reply) => return Ok(reply),
                Outcome::Refused { maybe_delivered } => {
                    tracing::debug!(endpoint, maybe_delivered, "the endpoint refused the key");
                    reopened += 1;
                    if (maybe_delivered && !request.changes_nothing()) || reopened > 3 {
                        // A request that may have run is not sent twice: the reply, if
                        // any, is lost with the connection. One that changes nothing is.
                        std::future::pending::<()>().await;
                    }
                    reopen(connection).await?;
                }
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
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

fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
