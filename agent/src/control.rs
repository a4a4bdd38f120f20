//! A control socket: a ROUTER speaking Circus's `[identity, json]` framing. The agent serves
//! two, the same way: TCP, where every request is the network's whatever its address, and the
//! owner-only Unix socket, where every request is the owner's ([`Caller`]).
//!
//! The serve loop owns a queue per client (ZeroMQ identity) and runs one request of a client at
//! a time, each in a task of its own, so a client's commands reach the watchers in the order it
//! sent them while different clients run concurrently. A client without requests in flight
//! costs nothing: every probe and one-shot `troupe ctl` is a new identity, and the idle worker
//! task each one used to keep for a minute held about 12 KB. Clients in flight are bounded
//! ([`CONTROL_CLIENTS`]). Every frame gets an answer: bad ones get an error reply and the socket
//! moves straight on.

use crate::commands::{dispatch, AgentContext, Caller};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use tmq::Multipart;
use tokio::sync::{mpsc, watch};
use troupe::bounds::{CLIENT_QUEUE, CONTROL_CLIENTS};
use troupe::protocol::{error_reply, ok_reply, CommandError, Errno, Request};
use troupe::sockets::ControlSocket;

/// Routing frames to put in front of a reply: the identity, plus an empty delimiter when the
/// client is a REQ socket.
type Envelope = Vec<Vec<u8>>;

struct Job {
    request: Request,
    envelope: Envelope,
    caller: Caller,
}

/// A request that ran: its reply frames (none for a cast), and whose it was.
struct Finished {
    identity: Vec<u8>,
    reply: Option<Vec<Vec<u8>>>,
}

/// Per client with a request running: the requests waiting behind it.
type Clients = HashMap<Vec<u8>, VecDeque<Job>>;

/// Serves a control socket whose requests all come from `caller`, until `shutdown` turns
/// true, then flushes pending replies.
pub async fn serve(
    mut control: ControlSocket,
    caller: Caller,
    ctx: AgentContext,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_bytes = ctx.settings.max_message_size as usize;
    let (finished_tx, mut finished) = mpsc::unbounded_channel::<Finished>();
    let mut clients = Clients::new();
    loop {
        tokio::select! {
            biased;
            Some(done) = finished.recv() => {
                if let Some(frames) = done.reply {
                    send(&mut control.router, frames).await;
                }
                let next = clients.get_mut(&done.identity).and_then(VecDeque::pop_front);
                match next {
                    Some(job) => start(done.identity, job, &ctx, &finished_tx),
                    None => {
                        clients.remove(&done.identity);
                    }
                }
            }
            rekeyed = troupe::sockets::watch_control(&mut control.connections, &mut control.key, clients.is_empty()) => {
                if let Some(pair) = rekeyed {
                    control.rebind(&pair);
                }

            }
            incoming = control.router.next() => match incoming {
                Some(Ok(message)) => {
                    let reply = route(message, caller, max_bytes, &ctx, &finished_tx, &mut clients);
                    if let Some(frames) = reply {
                        send(&mut control.router, frames).await;
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
    while let Ok(done) = finished.try_recv() {
        if let Some(frames) = done.reply {
            send(&mut control.router, frames).await;
        }
    }
    use tmq::AsZmqSocket;
    let _ = control.router.get_socket().set_linger(1000);
}

async fn send(router: &mut tmq::router::Router, frames: Vec<Vec<u8>>) {
    if let Err(e) = router.send(Multipart::from(frames)).await {
        tracing::warn!("control reply not sent: {e}");
    }
}

/// Decodes one message and runs it, or queues it behind its client's running request. Returns
/// frames to send back at once when the message cannot become a request.
fn route(
    message: Multipart,
    caller: Caller,
    max_bytes: usize,
    ctx: &AgentContext,
    finished: &mpsc::UnboundedSender<Finished>,
    clients: &mut Clients,
) -> Option<Vec<Vec<u8>>> {
    let frames: Vec<zmq::Message> = message.into_iter().collect();
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
    let request = match Request::decode_at_node(&frames[body_index], max_bytes) {
        Ok(request) => request,
        Err(bad) => return Some(with_envelope(&envelope, &error_reply(&bad.error, &bad.id))),
    };
    let job = Job {
        request,
        envelope,
        caller,
    };
    let in_flight = clients.len();
    let refusal = match clients.get_mut(&identity) {
        None if in_flight < CONTROL_CLIENTS => {
            clients.insert(identity.clone(), VecDeque::new());
            start(identity, job, ctx, finished);
            return None;
        }
        None => format!(
            "too many clients with requests in flight (limit {CONTROL_CLIENTS}): try again later"
        ),
        Some(waiting) if waiting.len() < CLIENT_QUEUE => {
            waiting.push_back(job);
            return None;
        }
        Some(_) => format!("too many requests in flight from this client (limit {CLIENT_QUEUE})"),
    };
    if job.request.cast {
        return None;
    }
    let error = CommandError::new(Errno::CommandError, refusal);
    Some(with_envelope(
        &job.envelope,
        &error_reply(&error, &job.request.id),
    ))
}

/// Runs `job` in a task of its own and reports it on `finished`.
fn start(
    identity: Vec<u8>,
    job: Job,
    ctx: &AgentContext,
    finished: &mpsc::UnboundedSender<Finished>,
) {
    let ctx = ctx.clone();
    let finished = finished.clone();
    tokio::spawn(async move {
        let reply = run_job(job, &ctx).await;
        let _ = finished.send(Finished { identity, reply });
    });
}

/// Runs one request; returns its reply frames unless it was a cast.
async fn run_job(mut job: Job, ctx: &AgentContext) -> Option<Vec<Vec<u8>>> {
    let reply = match dispatch(ctx, &mut job.request, job.caller).await {
        Ok(fields) => ok_reply(fields, &job.request.id),
        Err(error) => error_reply(&error, &job.request.id),
    };
    if job.request.command == "quit" {
        ctx.shutdown.send_replace(true);
    }
    (!job.request.cast).then(|| with_envelope(&job.envelope, &reply))
}

fn with_envelope(envelope: &[Vec<u8>], reply: &Value) -> Vec<Vec<u8>> {
    let mut frames = envelope.to_vec();
    frames.push(reply.to_string().into_bytes());
    frames
}
