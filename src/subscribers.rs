//! Publishing sockets whose subscribers are held to bounds.
//!
//! ZeroMQ keeps every topic prefix a SUB peer subscribes to in the publishing socket's trie for
//! as long as the peer stays connected, and offers neither an option to limit them nor a call
//! to drop one peer. So a [`GuardedPublisher`] is an XPUB that hears every subscription with
//! the address of the peer that sent it (`XPUB_VERBOSE`, and the message's `Peer-Address`),
//! and whose connections a [`ConnectionGuard`] holds to [`MAX_SUBSCRIBERS_PER_PEER`] per
//! address; an address past [`MAX_TOPICS_PER_PEER`] topics has all its connections shut down
//! by the guard. ZeroMQ sees them end and forgets their subscriptions; everyone else keeps
//! receiving.

use crate::bounds::MAX_TOPICS_PER_PEER;
use crate::connections::ConnectionGuard;
use crate::sockets::Listener;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use tmq::Multipart;

/// An XPUB publishing to subscribers held to the bounds above.
pub struct GuardedPublisher {
    socket: tmq::pair::Pair,
    connections: ConnectionGuard,
    /// Follows the cluster key; None without one.
    key: Option<crate::sockets::ListenerKey>,
    /// Names the socket in logs ("stats", "events").
    name: &'static str,
    topics: Topics,
    /// The topic prefixes anyone is subscribed to, as the XPUB reports them.
    subscribed: HashSet<Vec<u8>>,
}

impl GuardedPublisher {
    /// A publisher for the cluster ([`Listener::Cluster`]).
    pub fn bind(
        server: &crate::sockets::ServerContext,
        endpoint: &str,
        name: &'static str,
    ) -> tmq::Result<GuardedPublisher> {
        GuardedPublisher::bind_for(server, endpoint, name, Listener::Cluster)
    }

    pub fn bind_for(
        server: &crate::sockets::ServerContext,
        endpoint: &str,
        name: &'static str,
        listener: Listener,
    ) -> tmq::Result<GuardedPublisher> {
        let bound = crate::sockets::bind_subscribed_publisher(server, endpoint, name, listener)?;
        Ok(GuardedPublisher {
            socket: bound.socket,
            connections: bound.connections,
            key: bound.key,
            name,
            topics: Topics::default(),
            subscribed: HashSet::new(),
        })
    }

    /// Whether anyone is subscribed to anything.
    pub fn has_subscribers(&self) -> bool {
        !self.subscribed.is_empty()
    }

    /// Whether any subscription's prefix satisfies `wanted` (e.g.
    /// [`crate::protocol::subscription_follows_logs`]).
    pub fn is_subscribed(&self, wanted: impl Fn(&[u8]) -> bool) -> bool {
        self.subscribed.iter().any(|topic| wanted(topic))
    }

    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        crate::sockets::publish_now(&self.socket, topic, payload);
    }

    /// Waits for the next subscription or connection change and applies it. Cancel-safe, for
    /// a `select!` loop: nothing is awaited once a message is taken. Poll it for as long as
    /// the publisher lives: the XPUB queues every subscription until it is read, and the
    /// guard's monitor must be read too ([`ConnectionGuard`]).
    pub async fn watch(&mut self) {
        tokio::select! {
            message = self.socket.next() => match message {
                Some(Ok(message)) => self.on_subscription(message),
                Some(Err(e)) => tracing::warn!(socket = self.name, "receive failed: {e}"),
                // A ZeroMQ stream does not end while its socket lives.
                None => std::future::pending::<()>().await,
            },
            closed = self.connections.watch() => {
                if let Some(peer) = closed {
                    self.topics.forget(peer);
                }
            }
            // A subscriber misses what is published while it connects again.
            pair = crate::sockets::key_changed(&mut self.key) => {
                use tmq::AsZmqSocket;
                if let Some(key) = &mut self.key {
                    key.rebind(self.socket.get_socket(), &pair);
                }
            }
        }
    }

    fn on_subscription(&mut self, mut message: Multipart) {
        let Some(frame) = message.iter_mut().next() else {
            return;
        };
        let peer = frame
            .gets("Peer-Address")
            .and_then(|address| address.parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical());
        let Some((&kind, topic)) = frame.split_first() else {
            return;
        };
        let shown = String::from_utf8_lossy(topic);
        match kind {
            1 => {
                tracing::debug!(socket = self.name, ?peer, topic = %shown.escape_debug(), "subscribed");
                self.subscribed.insert(topic.to_vec());
                if let Some(peer) = peer {
                    if self.topics.subscribed(peer, topic) {
                        tracing::warn!(
                            socket = self.name,
                            %peer,
                            "subscriber dropped: past the bound MAX_TOPICS_PER_PEER \
                             ({MAX_TOPICS_PER_PEER})"
                        );
                        self.connections.drop_peer(peer);
                    }
                }
            }
            0 => {
                tracing::debug!(socket = self.name, ?peer, topic = %shown.escape_debug(), "unsubscribed");
                self.subscribed.remove(topic);
                if let Some(peer) = peer {
                    self.topics.unsubscribed(peer, topic);
                }
            }
            _ => {}
        }
    }
}

/// The topics each address subscribed to, kept until its last connection closes (an
/// unsubscription is only reported when nobody else holds the topic).
#[derive(Default)]
struct Topics {
    by_peer: HashMap<IpAddr, HashSet<Vec<u8>>>,
}

impl Topics {
    /// Counts a subscription; true when it takes the address past the bound, whose topics are
    /// then forgotten, as its connections are about to be.
    fn subscribed(&mut self, peer: IpAddr, topic: &[u8]) -> bool {
        let topics = self.by_peer.entry(peer).or_default();
        topics.insert(topic.to_vec());
        if topics.len() <= MAX_TOPICS_PER_PEER {
            return false;
        }
        self.by_peer.remove(&peer);
        true
    }

    fn unsubscribed(&mut self, peer: IpAddr, topic: &[u8]) {
        if let Some(topics) = self.by_peer.get_mut(&peer) {
            topics.remove(topic);
        }
    }

    fn forget(&mut self, peer: IpAddr) {
        self.by_peer.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn topics_past_the_bound_drop_the_address_and_start_it_afresh() {
        let mut topics = Topics::default();
        for n in 0..MAX_TOPICS_PER_PEER {
            let topic = format!("stat.w{n}");
            assert!(!topics.subscribed(ip(1), topic.as_bytes()));
            assert!(
                !topics.subscribed(ip(1), topic.as_bytes()),
                "the same topic again counts once"
            );
        }
        assert!(!topics.subscribed(ip(2), b"stat.other"));
        assert!(topics.subscribed(ip(1), b"one more"));
        assert!(!topics.subscribed(ip(1), b"stat."));
    }

    #[test]
    fn an_unsubscription_or_the_last_connection_closing_frees_topics() {
        let mut topics = Topics::default();
        for n in 0..MAX_TOPICS_PER_PEER {
            topics.subscribed(ip(1), format!("t{n}").as_bytes());
        }
        topics.unsubscribed(ip(1), b"t0");
        assert!(!topics.subscribed(ip(1), b"new"));
        assert!(topics.subscribed(ip(1), b"newer"));
        topics.subscribed(ip(1), b"x");
        topics.forget(ip(1));
        assert!(topics.by_peer.is_empty());
    }
}
