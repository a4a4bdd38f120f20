//! Control clients: one request, one reply or a timeout. [`call`] blocks; [`call_async`] opens
//! a DEALER per call; [`exchange`] runs one request on a DEALER the caller keeps (the pooled
//! links of `troupe serve`).

use crate::protocol::Request;
use crate::sockets::{connect_control, poll_timeout_ms, Context};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Why a call got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: zmq::Error,
    },
    #[error("no reply from {endpoint} within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
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
    let mut socket = crate::sockets::connect_control_async(context, endpoint)
        .await
        .map_err(|e| ClientError::Connect {
            endpoint: endpoint.to_string(),
            source: match e {
                tmq::TmqError::Zmq(z) => z,
                _ => zmq::Error::EINVAL,
            },
        })?;
    exchange(&mut socket, endpoint, request, timeout).await
}

/// One request and its reply on an async DEALER connected to `endpoint` (a new one, or one
/// kept from earlier calls), within `timeout`. Replies with another id (answers to earlier
/// requests that timed out) are skipped. After an error the socket may still hold the
/// request or owe its reply: callers that keep sockets must close it instead of reusing it.
pub async fn exchange(
    socket: &mut tmq::dealer::Dealer,
    endpoint: &str,
    mut request: Request,
    timeout: Duration,
) -> Result<Value, ClientError> {
    use futures::{SinkExt, StreamExt};
    let transport = |e: tmq::TmqError| ClientError::Transport {
        endpoint: endpoint.to_string(),
        source: match e {
            tmq::TmqError::Zmq(z) => z,
            _ => zmq::Error::EFAULT,
        },
    };
    if request.id.is_null() {
        request.id = Value::String(random_id());
    }
    let exchange = async {
        socket
            .send(tmq::Multipart::from(vec![request.encode()]))
            .await
            .map_err(transport)?;
        while let Some(message) = socket.next().await {
            let message = message.map_err(transport)?;
            let Some(frame) = message.iter().last() else {
                continue;
            };
            let reply: Value =
                serde_json::from_slice(frame).map_err(|e| ClientError::BadReply {
                    endpoint: endpoint.to_string(),
                    detail: e.to_string(),
                })?;
            if reply.get("id") == Some(&request.id) || reply.get("id") == Some(&Value::Null) {
                return Ok(reply);
            }
        }
        Err(ClientError::Timeout {
            endpoint: endpoint.to_string(),
            timeout,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Timeout {
                endpoint: endpoint.to_string(),
                timeout,
            })
        })
}

fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
