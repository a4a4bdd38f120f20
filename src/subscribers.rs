//! Publishing sockets whose subscribers are held to bounds.
//!
//! ZeroMQ keeps every topic prefix a SUB peer subscribes to in the publishing socket's trie for
//! as long as the peer stays connected, and offers neither an option to limit them nor a call
//! to drop one peer. So a [`GuardedPublisher`] is an XPUB that hears every subscription with
//! the address of the peer that sent it (`XPUB_VERBOSE`, and the message's `Peer-Address`),
//! follows its TCP connections through a socket monitor, and when an address passes
//! [`MAX_SUBSCRIBERS_PER_PEER`] connections or [`MAX_TOPICS_PER_PEER`] topics, shuts those
//! connections down under ZeroMQ (`shutdown(2)` on the descriptors the monitor reported, each
//! checked to still be a connection from that address to this socket's port). ZeroMQ sees them
//! end and forgets their subscriptions; everyone else keeps receiving.

use crate::bounds::{MAX_SUBSCRIBERS_PER_PEER, MAX_TOPICS_PER_PEER};
use futures::StreamExt;
use nix::sys::socket::{getpeername, getsockname, shutdown, Shutdown, SockaddrStorage};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::RawFd;
use tmq::Multipart;

/// An XPUB publishing to subscribers held to the bounds above.
pub struct GuardedPublisher {
    socket: tmq::pair::Pair,
    monitor: tmq::pair::Pair,
    port: u16,
    /// Names the socket in logs ("stats", "events").
    name: &'static str,
    ledger: Ledger,
    /// The topic prefixes anyone is subscribed to, as the XPUB reports them.
    subscribed: HashSet<Vec<u8>>,
}

impl GuardedPublisher {
    pub fn bind(
        server: &crate::sockets::ServerContext,
        endpoint: &str,
        name: &'static str,
    ) -> tmq::Result<GuardedPublisher> {
        let bound = crate::sockets::bind_subscribed_publisher(server, endpoint)?;
        Ok(GuardedPublisher {
            socket: bound.socket,
            monitor: bound.monitor,
            port: bound.port,
            name,
            ledger: Ledger::default(),
            subscribed: HashSet::new(),
        })
    }

    /// Whether anyone is subscribed to anything.
    pub fn has_subscribers(&self) -> bool {
        !self.subscribed.is_empty()
    }

    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        crate::sockets::publish_now(&self.socket, topic, payload);
    }

    /// Waits for the next subscription or connection change and applies it. Cancel-safe, for
    /// a `select!` loop: nothing is awaited once a message is taken.
    pub async fn watch(&mut self) {
        enum Change {
            Subscription(Option<tmq::Result<Multipart>>),
            Connection(Option<tmq::Result<Multipart>>),
        }
        let change = tokio::select! {
            message = self.socket.next() => Change::Subscription(message),
            event = self.monitor.next() => Change::Connection(event),
        };
        match change {
            Change::Subscription(Some(Ok(message))) => self.on_subscription(message),
            Change::Connection(Some(Ok(event))) => self.on_connection(&event),
            Change::Subscription(Some(Err(e))) | Change::Connection(Some(Err(e))) => {
                tracing::warn!(socket = self.name, "receive failed: {e}");
            }
            // ZeroMQ streams do not end while their socket lives.
            Change::Subscription(None) | Change::Connection(None) => {
                std::future::pending::<()>().await
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
        match kind {
            1 => {
                self.subscribed.insert(topic.to_vec());
                if let Some(peer) = peer {
                    if let Some(passed) = self.ledger.subscribed(peer, topic) {
                        let fds = self.ledger.connections_of(peer);
                        self.drop_connections(peer, &fds, passed);
                    }
                }
            }
            0 => {
                self.subscribed.remove(topic);
                if let Some(peer) = peer {
                    self.ledger.unsubscribed(peer, topic);
                }
            }
            _ => {}
        }
    }

    fn on_connection(&mut self, event: &Multipart) {
        // ZeroMQ's monitor frame: the event (u16) then its value (u32, here the descriptor),
        // in the host's byte order.
        let Some(frame) = event.iter().next().filter(|f| f.len() == 6) else {
            return;
        };
        let kind = u16::from_ne_bytes([frame[0], frame[1]]);
        let fd = u32::from_ne_bytes([frame[2], frame[3], frame[4], frame[5]]) as RawFd;
        if kind == zmq::SocketEvent::DISCONNECTED.to_raw() {
            self.ledger.disconnected(fd);
        } else if kind == zmq::SocketEvent::ACCEPTED.to_raw() {
            let Some(peer) = peer_of(fd) else {
                return;
            };
            if let Some(passed) = self.ledger.accepted(fd, peer) {
                self.drop_connections(peer, &[fd], passed);
            }
        }
    }

    fn drop_connections(&self, peer: IpAddr, fds: &[RawFd], passed: Bound) {
        let (bound, limit) = passed.name_and_value();
        tracing::warn!(
            socket = self.name,
            %peer,
            "subscriber dropped: past the bound {bound} ({limit})"
        );
        for &fd in fds {
            // The descriptor is ZeroMQ's and may have been closed and reused since the
            // monitor reported it: only a connection from `peer` to our port is shut down.
            let ours = getsockname::<SockaddrStorage>(fd)
                .ok()
                .and_then(|local| port_of(&local))
                == Some(self.port);
            if ours && peer_of(fd) == Some(peer) {
                let _ = shutdown(fd, Shutdown::Both);
            }
        }
    }
}

/// The remote address of a TCP connection.
fn peer_of(fd: RawFd) -> Option<IpAddr> {
    let address = getpeername::<SockaddrStorage>(fd).ok()?;
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| IpAddr::V6(v6.ip()).to_canonical())
}

fn port_of(address: &SockaddrStorage) -> Option<u16> {
    address
        .as_sockaddr_in()
        .map(|v4| v4.port())
        .or_else(|| address.as_sockaddr_in6().map(|v6| v6.port()))
}

/// A bound an address went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Subscribers,
    Topics,
}

impl Bound {
    /// Its name in [`crate::bounds`], and its value.
    fn name_and_value(self) -> (&'static str, usize) {
        match self {
            Bound::Subscribers => ("MAX_SUBSCRIBERS_PER_PEER", MAX_SUBSCRIBERS_PER_PEER),
            Bound::Topics => ("MAX_TOPICS_PER_PEER", MAX_TOPICS_PER_PEER),
        }
    }
}

/// Each peer address's connections and topics: the pure half of the guard.
#[derive(Default)]
struct Ledger {
    /// Open connections, by descriptor.
    connections: HashMap<RawFd, IpAddr>,
    /// The topics each address subscribed to, kept until its last connection closes (an
    /// unsubscription is only reported when nobody else holds the topic).
    topics: HashMap<IpAddr, HashSet<Vec<u8>>>,
}

impl Ledger {
    /// Counts a new connection; past the bound it is to be dropped (and counted until it is).
    fn accepted(&mut self, fd: RawFd, peer: IpAddr) -> Option<Bound> {
        // A descriptor seen again was closed and reused: it is the new connection now.
        self.connections.insert(fd, peer);
        (self.connections_of(peer).len() > MAX_SUBSCRIBERS_PER_PEER).then_some(Bound::Subscribers)
    }

    fn disconnected(&mut self, fd: RawFd) {
        if let Some(peer) = self.connections.remove(&fd) {
            if self.connections_of(peer).is_empty() {
                self.topics.remove(&peer);
            }
        }
    }

    /// Counts a subscription; past the bound the address's topics are forgotten, as its
    /// connections are about to be.
    fn subscribed(&mut self, peer: IpAddr, topic: &[u8]) -> Option<Bound> {
        let topics = self.topics.entry(peer).or_default();
        topics.insert(topic.to_vec());
        if topics.len() <= MAX_TOPICS_PER_PEER {
            return None;
        }
        self.topics.remove(&peer);
        Some(Bound::Topics)
    }

    fn unsubscribed(&mut self, peer: IpAddr, topic: &[u8]) {
        if let Some(topics) = self.topics.get_mut(&peer) {
            topics.remove(topic);
        }
    }

    fn connections_of(&self, peer: IpAddr) -> Vec<RawFd> {
        self.connections
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(fd, _)| *fd)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_connection_past_the_bound_is_refused_and_others_are_not_counted() {
        let mut ledger = Ledger::default();
        for fd in 0..MAX_SUBSCRIBERS_PER_PEER as RawFd {
            assert_eq!(ledger.accepted(fd, ip(1)), None);
        }
        assert_eq!(ledger.accepted(100, ip(2)), None);
        assert_eq!(ledger.accepted(101, ip(1)), Some(Bound::Subscribers));
        ledger.disconnected(101);
        ledger.disconnected(0);
        assert_eq!(
            ledger.accepted(102, ip(1)),
            None,
            "a closed connection frees its place"
        );
    }

    #[test]
    fn topics_past_the_bound_drop_the_address_and_start_it_afresh() {
        let mut ledger = Ledger::default();
        ledger.accepted(3, ip(1));
        for n in 0..MAX_TOPICS_PER_PEER {
            let topic = format!("stat.w{n}");
            assert_eq!(ledger.subscribed(ip(1), topic.as_bytes()), None);
            assert_eq!(
                ledger.subscribed(ip(1), topic.as_bytes()),
                None,
                "the same topic again counts once"
            );
        }
        assert_eq!(ledger.subscribed(ip(2), b"stat.other"), None);
        assert_eq!(ledger.subscribed(ip(1), b"one more"), Some(Bound::Topics));
        assert_eq!(ledger.connections_of(ip(1)), vec![3]);
        assert_eq!(ledger.subscribed(ip(1), b"stat."), None);
    }

    #[test]
    fn an_unsubscription_or_the_last_connection_closing_frees_topics() {
        let mut ledger = Ledger::default();
        ledger.accepted(3, ip(1));
        ledger.accepted(4, ip(1));
        for n in 0..MAX_TOPICS_PER_PEER {
            ledger.subscribed(ip(1), format!("t{n}").as_bytes());
        }
        ledger.unsubscribed(ip(1), b"t0");
        assert_eq!(ledger.subscribed(ip(1), b"new"), None);
        ledger.disconnected(3);
        assert_eq!(
            ledger.subscribed(ip(1), b"newer"),
            Some(Bound::Topics),
            "kept while a connection stays"
        );
        ledger.subscribed(ip(1), b"x");
        ledger.disconnected(4);
        assert!(ledger.topics.is_empty() && ledger.connections.is_empty());
    }
}
