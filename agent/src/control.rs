//! The control socket: a ROUTER speaking Circus's `[identity, json]` framing.
//!
//! Each client (ZeroMQ identity) gets a worker that runs its requests one after another, so a
//! client's commands reach the watchers in the order it sent them, while different clients
//! run concurrently. Every frame gets an answer: bad ones get an error reply and the socket
//! moves straight on.

use crate::commands::{dispatch, AgentContext, Caller};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tmq::Multipart;
use tokio::sync::{mpsc, watch};
use troupe::protocol::{error_reply, ok_reply, CommandError, Errno, Request};

/// Requests one client may have queued before it gets "too many requests" errors.
const CLIENT_QUEUE: usize = 64;
/// A client's worker ends after this long without requests.
const CLIENT_IDLE: Duration = Duration::from_secs(60);

/// Routing frames to put in front of a reply: the identity, plus an empty delimiter when the
/// client is a REQ socket.
type Envelope = Vec<Vec<u8>>;

struct Job {
    request: Request,
    envelope: Envelope,
    caller: Caller,
}

/// Serves the control socket until `shutdown` turns true, then flushes pending replies.
pub async fn serve(
    mut router: tmq::router::Router,
    ctx: AgentContext,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_bytes = ctx.settings.max_message_size as usize;
    let (replies_tx, mut replies) = mpsc::unbounded_channel::<Vec<Vec<u8>>>();
    let mut clients: HashMap<Vec<u8>, mpsc::Sender<Job>> = HashMap::new();
    loop {
        tokio::select! {
            biased;
            Some(frames) = replies.recv() => send(&mut router, frames).await,
            incoming = router.next() => match incoming {
                Some(Ok(message)) => {
                    let reply = route(message, max_bytes, &ctx, &replies_tx, &mut clients);
                    if let Some(frames) = reply {
                        send(&mut router, frames).await;
                    }
                }
                Some(Err(e)) => tracing::warn!("control socket receive failed: {e}"),
                None => break,
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    // The reply to `quit` (and any other finished request) still goes out.
    while let Ok(frames) = replies.try_recv() {
        send(&mut router, frames).await;
    }
    use tmq::AsZmqSocket;
    let _ = router.get_socket().set_linger(1000);
}

async fn send(router: &mut tmq::router::Router, frames: Vec<Vec<u8>>) {
    if let Err(e) = router.send(Multipart::from(frames)).await {
        tracing::warn!("control reply not sent: {e}");
    }
}

/// Decodes one message and queues it on its client's worker. Returns frames to send back at
/// once when the message cannot become a request.
fn route(
    message: Multipart,
    max_bytes: usize,
    ctx: &AgentContext,
    replies: &mpsc::UnboundedSender<Vec<Vec<u8>>>,
    clients: &mut HashMap<Vec<u8>, mpsc::Sender<Job>>,
) -> Option<Vec<Vec<u8>>> {
    let mut frames: Vec<zmq::Message> = message.into_iter().collect();
    let identity = frames.first()?.to_vec();
    // A REQ client puts an empty delimiter before its body; answer it the same way.
    let envelope = if frames.len() >= 3 && frames[1].is_empty() {
        vec![identity.clone(), Vec::new()]
    } else {
        vec![identity.clone()]
    };
    let body_frames = frames.len() - envelope.len();
    if body_frames != 1 {
        let error = CommandError::message(format!(
            "message invalid: expected one JSON frame, got {body_frames} frames"
        ));
        return Some(with_envelope(&envelope, &error_reply(&error, &Value::Null)));
    }
    let body_index = envelope.len();
    let body = &mut frames[body_index];
    let caller = Caller {
        local: peer_is_local(body.gets("Peer-Address")),
    };
    let request = match Request::decode(body, max_bytes) {
        Ok(request) => request,
        Err(bad) => return Some(with_envelope(&envelope, &error_reply(&bad.error, &bad.id))),
    };
    let id = request.id.clone();
    let cast = request.cast;
    let job = Job {
        request,
        envelope: envelope.clone(),
        caller,
    };
    let queued = match clients.get(&identity) {
        Some(tx) => tx.try_send(job),
        None => Err(mpsc::error::TrySendError::Closed(job)),
    };
    let job = match queued {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Closed(job)) => Some(job),
        Err(mpsc::error::TrySendError::Full(_)) => {
            if cast {
                return None;
            }
            let error = CommandError::new(
                Errno::CommandError,
                format!("too many requests in flight from this client (limit {CLIENT_QUEUE})"),
            );
            return Some(with_envelope(&envelope, &error_reply(&error, &id)));
        }
    };
    if let Some(job) = job {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let _ = tx.try_send(job);
        tokio::spawn(client_worker(rx, ctx.clone(), replies.clone()));
        clients.retain(|_, sender| !sender.is_closed());
        clients.insert(identity, tx);
    }
    None
}

async fn client_worker(
    mut jobs: mpsc::Receiver<Job>,
    ctx: AgentContext,
    replies: mpsc::UnboundedSender<Vec<Vec<u8>>>,
) {
    loop {
        match tokio::time::timeout(CLIENT_IDLE, jobs.recv()).await {
            Ok(Some(job)) => run_job(job, &ctx, &replies).await,
            Ok(None) => return,
            Err(_) => {
                // Close first, then drain: a job queued just before closing still runs.
                jobs.close();
                while let Ok(job) = jobs.try_recv() {
                    run_job(job, &ctx, &replies).await;
                }
                return;
            }
        }
    }
}

async fn run_job(job: Job, ctx: &AgentContext, replies: &mpsc::UnboundedSender<Vec<Vec<u8>>>) {
    let reply = match dispatch(ctx, &job.request, job.caller).await {
        Ok(fields) => ok_reply(fields, &job.request.id),
        Err(error) => error_reply(&error, &job.request.id),
    };
    if !job.request.cast {
        let _ = replies.send(with_envelope(&job.envelope, &reply));
    }
    if job.request.command == "quit" {
        ctx.shutdown.send_replace(true);
    }
}

fn with_envelope(envelope: &[Vec<u8>], reply: &Value) -> Vec<Vec<u8>> {
    let mut frames = envelope.to_vec();
    frames.push(reply.to_string().into_bytes());
    frames
}

/// Loopback TCP peers and non-TCP transports (ipc, inproc) count as local.
fn peer_is_local(address: Option<&str>) -> bool {
    match address {
        None | Some("") => true,
        Some(address) => address
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::peer_is_local;

    #[test]
    fn loopback_and_unix_peers_are_local() {
        assert!(peer_is_local(Some("127.0.0.1")));
        assert!(peer_is_local(Some("127.0.0.9")));
        assert!(peer_is_local(Some("::1")));
        assert!(peer_is_local(None));
        assert!(!peer_is_local(Some("10.0.0.7")));
        assert!(!peer_is_local(Some("not an address")));
    }
}
