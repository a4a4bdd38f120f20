//! The events socket: one task owns the publishing socket (an XPUB whose subscribers are held
//! to the bounds of [`troupe::subscribers`]); everyone else holds an [`EventSender`].

use crate::circus_bind::Publishers;
use serde_json::Value;
use tokio::sync::mpsc;
use troupe::protocol::{event_topic, Event};
use troupe::subscribers::GuardedPublisher;

/// Events queued beyond this are dropped: PUB is lossy by nature and a stuck socket must never
/// stall a watcher.
const QUEUE: usize = 4096;

/// Cheap to clone; publishing never blocks.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<(String, Value)>,
}

impl EventSender {
    /// Publishes `event` of watcher `watcher` under Circus's topic.
    pub fn emit(&self, watcher: &str, event: Event) {
        let topic = event_topic(watcher, &event);
        if self.tx.try_send((topic, event.payload())).is_err() {
            tracing::warn!(watcher, "event queue full, event dropped");
        }
    }

    /// A sender whose events go nowhere, for tests of code that emits.
    pub fn disconnected() -> Self {
        let (tx, _) = mpsc::channel(1);
        Self { tx }
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
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some((topic, payload)) => {
                        publisher.publish(topic, payload.to_string().into_bytes());
                    }
                    None => break,
                },
                _ = publisher.watch() => {}
            }
        }
    });
    Ok(EventSender { tx })
}
