//! The events socket: one task owns the publishing socket (an XPUB whose subscribers are held
//! to the bounds of [`troupe::subscribers`]); everyone else holds an [`EventSender`].
//!
//! Watcher output goes out here too, as `log.<watcher>.<pid>` events, on the cluster's socket
//! only (never the plaintext `circus_bind`: output is for the key's holders) and only while
//! someone subscribes to `log.`: the task publishes whether anyone does on a `watch`, which
//! [`EventSender::publish_log`] reads before it does any work. Lines have their own queue, so
//! a flood of output never pushes watcher events out.

use crate::circus_bind::Publishers;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::sync::watch;
use troupe::bounds::LOG_PUBLISH_QUEUE;
use troupe::protocol::{
    event_topic, log_topic, subscription_follows_logs, Event, LogEvent, LogLine,
};
use troupe::subscribers::GuardedPublisher;

/// Events queued beyond this are dropped: PUB is lossy by nature and a stuck socket must never
/// stall a watcher.
const QUEUE: usize = 4096;

/// Cheap to clone; publishing never blocks.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<(String, Value)>,
    log_tx: mpsc::Sender<(String, Vec<u8>)>,
    /// Whether anyone subscribes to `log.` on the cluster's events socket.
    logs_followed: watch::Receiver<bool>,
}

impl EventSender {
    /// Publishes `event` of watcher `watcher` under Circus's topic.
    pub fn emit(&self, watcher: &str, event: Event) {
        let topic = event_topic(watcher, &event);
        if self.tx.try_send((topic, event.payload())).is_err() {
            tracing::warn!(watcher, "event queue full, event dropped");
        }
    }

    /// Publishes one output line of `watcher` as `log.<watcher>.<pid>`, if anyone follows
    /// logs; dropped (the follower sees a gap in `seq`) when the queue is full.
    pub fn publish_log(&self, watcher: &str, line: &LogLine) {
        if !*self.logs_followed.borrow() {
            return;
        }
        let event = LogEvent {
            watcher: watcher.to_string(),
            line: line.clone(),
        };
        let Ok(payload) = serde_json::to_vec(&event) else {
            return;
        };
        let _ = self
            .log_tx
            .try_send((log_topic(watcher, line.pid), payload));
    }

    /// A sender whose events go nowhere, for tests of code that emits.
    pub fn disconnected() -> Self {
        let (tx, _) = mpsc::channel(1);
        let (log_tx, _) = mpsc::channel(1);
        let (_, logs_followed) = watch::channel(false);
        Self {
            tx,
            log_tx,
            logs_followed,
        }
    }
}

/// Binds the events socket on `endpoint` for the cluster, and spawns the task that owns it
/// and `plaintext` (`circus_bind`'s), until every sender is gone.
pub fn spawn_publisher(
    server: &troupe::sockets::ServerContext,
    endpoint: &str,
    plaintext: Option<GuardedPublisher>,
) -> tmq::Result<EventSender> {
    let mut publisher = Publishers {
        cluster: GuardedPublisher::bind(server, endpoint, "events")?,
        plaintext,
    };
    let (tx, mut rx) = mpsc::channel::<(String, Value)>(QUEUE);
    let (log_tx, mut log_rx) = mpsc::channel::<(String, Vec<u8>)>(LOG_PUBLISH_QUEUE);
    let (followed_tx, logs_followed) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some((topic, payload)) => {
                        publisher.publish(topic, payload.to_string().into_bytes());
                    }
                    None => break,
                },
                Some((topic, payload)) = log_rx.recv() => {
                    publisher.cluster.publish(topic, payload);
                }
                _ = publisher.watch() => {
                    let followed = publisher.cluster.is_subscribed(subscription_follows_logs);
                    followed_tx.send_if_modified(|was| std::mem::replace(was, followed) != followed);
                }
            }
        }
    });
    Ok(EventSender {
        tx,
        log_tx,
        logs_followed,
    })
}
