//! `troupe logs -f`: new lines from every selected node as they come, until Ctrl-C.
//!
//! One SUB socket per node on its events socket, subscribed to `log.<watcher>.` (which is what
//! makes the agent publish lines at all), so a restarted watcher's new pids arrive without
//! asking. The member list is read again every second: a node that joins, or comes back at
//! another address, gets a subscription; one that comes back at the same address is
//! reconnected by ZeroMQ itself. Each node's lines carry their ring position (`seq`): a line
//! already printed by the tail is skipped, and a jump (lines published before the agent saw
//! the subscription, or dropped from a full queue) is filled by asking `logs` from the last
//! position seen; a line numbered lower but newer means the agent came back with a new ring,
//! filled from its start. Only a follow not filtered by pid or stream fills (filtered lines
//! jump by nature). Lines wait [`REORDER`] before printing, so those of several nodes come out by time.

use super::{sort_by_time, LogCluster, NodeLine, Tail};
use crate::broadcast::BroadcastOptions;
use crate::broadcast::{select, Target};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use troupe::bounds::LOGS_MAX_LINES;
use troupe::config::DEFAULT_MAX_MESSAGE_SIZE;
use troupe::protocol::{log_topic_prefix, LogEvent, LogsRequest, StreamSelection};

/// How long a line waits for lines of other nodes that are older.
const REORDER: Duration = Duration::from_millis(250);
/// How often the member list is read for nodes to subscribe to.
const MEMBERS_EVERY: Duration = Duration::from_secs(1);

/// Where a node's printed lines stopped.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    next_seq: u64,
    last_time: f64,
}

/// A node's subscription: the endpoint and the task reading it.
struct Subscription {
    endpoint: String,
    reader: JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Sends every selected node's new lines of `request`'s watcher to `out`, in time order, after
/// those of `tail` (which it does not repeat); runs until `out` is closed.
pub async fn follow(
    cluster: &impl LogCluster,
    options: &BroadcastOptions,
    request: &LogsRequest,
    tail: &Tail,
    out: mpsc::Sender<NodeLine>,
) {
    let mut cursors: HashMap<String, Cursor> = HashMap::new();
    for (node, offset) in &tail.answered {
        let last_time = tail
            .lines
            .iter()
            .filter(|l| &l.node == node)
            .map(|l| l.line.time)
            .fold(0.0, f64::max);
        cursors.insert(
            node.clone(),
            Cursor {
                next_seq: *offset,
                last_time,
            },
        );
    }
    let unfiltered = request.pid.is_none() && request.stream == StreamSelection::Both;
    let (tx, mut rx) = mpsc::channel::<(String, LogEvent)>(4096);
    let mut subscriptions: HashMap<String, Subscription> = HashMap::new();
    let mut pending: Vec<(Instant, NodeLine)> = Vec::new();
    let mut members = tokio::time::interval(MEMBERS_EVERY);
    let mut flush = tokio::time::interval(REORDER / 2);
    loop {
        tokio::select! {
            _ = out.closed() => return,
            _ = members.tick() => {
                subscribe_new(cluster, options, &request.name, &mut subscriptions, &tx).await;
            }
            Some((node, event)) = rx.recv() => {
                if !wanted(request, &event) {
                    continue;
                }
                if let Some(cursor) = cursors.get(&node).copied() {
                    let (seq, time) = (event.line.seq, event.line.time);
                    if seq < cursor.next_seq && time <= cursor.last_time {
                        continue;
                    }
                    // A lower seq with a newer time: the agent came back with a new ring,
                    // whose lines before this one are missed too.
                    let from = if seq < cursor.next_seq {
                        Cursor { next_seq: 0, ..cursor }
                    } else {
                        cursor
                    };
                    if unfiltered && seq > from.next_seq {
                        let missed = fill(cluster, options, request, &node, from, seq).await;
                        pending.extend(missed.into_iter().map(|l| (Instant::now(), l)));
                    }
                }
                cursors.insert(
                    node.clone(),
                    Cursor {
                        next_seq: event.line.seq + 1,
                        last_time: event.line.time,
                    },
                );
                let line = NodeLine { node, watcher: request.name.clone(), line: event.line };
                pending.push((Instant::now(), line));
            }
            _ = flush.tick() => {
                let due = Instant::now() - REORDER;
                let (ready, waiting): (Vec<_>, Vec<_>) =
                    pending.drain(..).partition(|(at, _)| *at <= due);
                pending = waiting;
                let mut ready: Vec<NodeLine> = ready.into_iter().map(|(_, l)| l).collect();
                sort_by_time(&mut ready);
                for line in ready {
                    if out.send(line).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Whether an event is one of the lines asked for (the topic prefix may also match a
/// watcher whose name merely starts the same, `web` and `web.2`).
fn wanted(request: &LogsRequest, event: &LogEvent) -> bool {
    event.watcher.eq_ignore_ascii_case(&request.name)
        && request.pid.is_none_or(|pid| pid == event.line.pid)
        && request.stream.includes(event.line.stream)
}

/// The lines of `node` from `cursor` up to (not including) `until`, asked of its ring.
async fn fill(
    cluster: &impl LogCluster,
    options: &BroadcastOptions,
    request: &LogsRequest,
    node: &str,
    cursor: Cursor,
    until: u64,
) -> Vec<NodeLine> {
    let asked = LogsRequest {
        offset: Some(cursor.next_seq),
        lines: (until - cursor.next_seq).min(LOGS_MAX_LINES),
        since: None,
        ..request.clone()
    };
    let one = BroadcastOptions {
        node: Some(node.to_string()),
        ..options.clone()
    };
    match super::tail(cluster, &asked, &one).await {
        Ok(tail) => tail
            .lines
            .into_iter()
            .filter(|l| l.node == node && l.line.seq < until && l.line.time > cursor.last_time)
            .collect(),
        Err(e) => {
            tracing::debug!(node, "cannot fill the gap in its lines: {e}");
            Vec::new()
        }
    }
}

/// Subscribes to every selected alive member not yet subscribed at its current address.
async fn subscribe_new(
    cluster: &impl LogCluster,
    options: &BroadcastOptions,
    watcher: &str,
    subscriptions: &mut HashMap<String, Subscription>,
    tx: &mpsc::Sender<(String, LogEvent)>,
) {
    let alive = cluster.members().await.into_iter().filter_map(|member| {
        if member["state"] != "alive" {
            return None;
        }
        let name = member["name"].as_str()?;
        troupe::config::names::check_name(name).ok()?;
        Some(Target {
            name: name.to_string(),
            endpoint: member["endpoints"]["pubsub"].as_str()?.to_string(),
        })
    });
    let Ok(targets) = select(alive, options.node.as_deref()) else {
        return;
    };
    for target in targets {
        if subscriptions
            .get(&target.name)
            .is_some_and(|s| s.endpoint == target.endpoint && !s.reader.is_finished())
        {
            continue;
        }
        let reader = tokio::spawn(read(
            target.name.clone(),
            target.endpoint.clone(),
            log_topic_prefix(watcher),
            tx.clone(),
        ));
        subscriptions.insert(
            target.name,
            Subscription {
                endpoint: target.endpoint,
                reader,
            },
        );
    }
}

/// Reads one node's log events until the receiver goes away.
async fn read(
    node: String,
    endpoint: String,
    prefix: String,
    tx: mpsc::Sender<(String, LogEvent)>,
) {
    let zmq = zmq::Context::new();
    let mut socket = match troupe::sockets::connect_subscriber(
        &zmq,
        &endpoint,
        prefix.as_bytes(),
        DEFAULT_MAX_MESSAGE_SIZE,
    )
    .await
    {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(%node, %endpoint, "cannot subscribe to its log lines: {e}");
            return;
        }
    };
    while let Some(message) = socket.next().await {
        let Ok(message) = message else { continue };
        let frames: Vec<&[u8]> = message.iter().map(|m| &m[..]).collect();
        let [_, body] = frames[..] else { continue };
        let Ok(event) = serde_json::from_slice::<LogEvent>(body) else {
            continue;
        };
        if tx.send((node.clone(), event)).await.is_err() {
            return;
        }
    }
}
