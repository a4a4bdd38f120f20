//! Connections to a listening socket, held to a bound per peer address.
//!
//! libzmq has no option to limit the connections a listening socket accepts, nor a call to
//! drop one peer, and each connection costs it a pipe, buffers and a descriptor. So a
//! [`ConnectionGuard`] follows a socket's TCP connections through a socket monitor started
//! before the bind (ACCEPTED and DISCONNECTED, each with the descriptor), counts them per peer
//! address, and when an address passes its bound shuts the new connection down under ZeroMQ
//! (`shutdown(2)` on the descriptor, checked to still be a connection from that address to this
//! socket's port): ZeroMQ sees it end and frees what it held, and everyone else is served. The
//! guard belongs to the task that owns the socket, whose `select!` loop polls
//! [`ConnectionGuard::watch`]. Unix-socket peers have no address and are not counted.

use futures::StreamExt;
use nix::sys::socket::{getpeername, getsockname, shutdown, Shutdown, SockaddrStorage};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::RawFd;
use tmq::Multipart;

/// A bound on the connections one peer address may hold: its name in [`crate::bounds`], for
/// the log, and its value.
#[derive(Debug, Clone, Copy)]
pub struct PerPeer {
    pub name: &'static str,
    pub limit: usize,
}

/// The connections of one listening socket, held to a [`PerPeer`] bound. Watch it for as long
/// as its socket lives, and drop it after the socket: libzmq's monitor blocks the socket's I/O
/// thread when its queue is full or nobody holds the other end.
pub struct ConnectionGuard {
    monitor: tmq::pair::Pair,
    port: u16,
    /// Names the socket in logs ("control", "stats", "events").
    socket: &'static str,
    bound: PerPeer,
    connections: Connections,
    /// Addresses whose refusal was logged: one line per address until its last connection
    /// closes, however often it tries meanwhile.
    logged: HashSet<IpAddr>,
}

impl ConnectionGuard {
    /// `monitor` receives the socket's ACCEPTED and DISCONNECTED events; `port` is its TCP port.
    pub(crate) fn new(
        monitor: tmq::pair::Pair,
        port: u16,
        socket: &'static str,
        bound: PerPeer,
    ) -> ConnectionGuard {
        ConnectionGuard {
            monitor,
            port,
            socket,
            bound,
            connections: Connections::default(),
            logged: HashSet::new(),
        }
    }

    /// Waits for the next connection event and applies it. Returns the address whose last
    /// connection this event closed, if it did. Cancel-safe, for a `select!` loop: nothing is
    /// awaited once an event is taken.
    pub async fn watch(&mut self) -> Option<IpAddr> {
        match self.monitor.next().await {
            Some(Ok(event)) => self.on_event(&event),
            Some(Err(e)) => {
                tracing::warn!(socket = self.socket, "connection monitor failed: {e}");
                None
            }
            // A ZeroMQ stream does not end while its socket lives.
            None => std::future::pending().await,
        }
    }

    fn on_event(&mut self, event: &Multipart) -> Option<IpAddr> {
        // ZeroMQ's monitor frame: the event (u16) then its value (u32, here the descriptor),
        // in the host's byte order.
        let frame = event.iter().next().filter(|f| f.len() == 6)?;
        let kind = u16::from_ne_bytes([frame[0], frame[1]]);
        let fd = u32::from_ne_bytes([frame[2], frame[3], frame[4], frame[5]]) as RawFd;
        if kind == zmq::SocketEvent::DISCONNECTED.to_raw() {
            let last = self.connections.closed(fd)?;
            self.logged.remove(&last);
            return Some(last);
        }
        if kind == zmq::SocketEvent::ACCEPTED.to_raw() {
            let peer = peer_of(fd)?;
            if self.connections.accepted(fd, peer, self.bound.limit) {
                // A DISCONNECTED the monitor lost would hold a place for ever: forget the
                // descriptors that are no longer this address's connections, and count again.
                let port = self.port;
                self.connections
                    .forget_unless(peer, |fd| is_connection(fd, peer, port));
                if self.connections.of(peer).len() > self.bound.limit {
                    self.refuse(fd, peer);
                }
            }
        }
        None
    }

    fn refuse(&mut self, fd: RawFd, peer: IpAddr) {
        if self.logged.insert(peer) {
            let PerPeer { name, limit } = self.bound;
            tracing::warn!(
                socket = self.socket,
                %peer,
                "connection refused: past the bound {name} ({limit} per address); further \
                 ones from this address are refused without a log line until its connections \
                 have all closed"
            );
        }
        self.shut_down(fd, peer);
    }

    /// Shuts down every connection of `peer`, for a bound the socket's owner keeps itself.
    pub fn drop_peer(&self, peer: IpAddr) {
        for fd in self.connections.of(peer) {
            self.shut_down(fd, peer);
        }
    }

    fn shut_down(&self, fd: RawFd, peer: IpAddr) {
        // The descriptor is ZeroMQ's and may have been closed and reused since the monitor
        // reported it: only a connection from `peer` to our port is shut down.
        if is_connection(fd, peer, self.port) {
            let _ = shutdown(fd, Shutdown::Both);
        }
    }
}

/// Whether `fd` is a TCP connection from `peer` to our `port`.
fn is_connection(fd: RawFd, peer: IpAddr, port: u16) -> bool {
    let local_port = getsockname::<SockaddrStorage>(fd)
        .ok()
        .and_then(|local| port_of(&local));
    local_port == Some(port) && peer_of(fd) == Some(peer)
}

/// [`ConnectionGuard::watch`] for a socket that may have no guard (then it waits for ever).
pub async fn watch(guard: &mut Option<ConnectionGuard>) {
    match guard {
        Some(guard) => {
            guard.watch().await;
        }
        None => std::future::pending().await,
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

/// Each open connection's peer address, by descriptor: the pure half of the guard.
#[derive(Default)]
struct Connections {
    by_fd: HashMap<RawFd, IpAddr>,
}

impl Connections {
    /// Counts a new connection; true when it takes its address past `limit` (it stays counted
    /// until it closes).
    fn accepted(&mut self, fd: RawFd, peer: IpAddr, limit: usize) -> bool {
        // A descriptor seen again was closed and reused: it is the new connection now.
        self.by_fd.insert(fd, peer);
        self.of(peer).len() > limit
    }

    /// Forgets a closed connection; its address, when that was the address's last.
    fn closed(&mut self, fd: RawFd) -> Option<IpAddr> {
        let peer = self.by_fd.remove(&fd)?;
        self.of(peer).is_empty().then_some(peer)
    }

    fn forget_unless(&mut self, peer: IpAddr, live: impl Fn(RawFd) -> bool) {
        self.by_fd.retain(|&fd, &mut p| p != peer || live(fd));
    }

    fn of(&self, peer: IpAddr) -> Vec<RawFd> {
        self.by_fd
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
        let mut connections = Connections::default();
        let limit = 4;
        for fd in 0..limit as RawFd {
            assert!(!connections.accepted(fd, ip(1), limit));
        }
        assert!(!connections.accepted(100, ip(2), limit));
        assert!(connections.accepted(101, ip(1), limit));
        assert_eq!(connections.closed(101), None);
        assert_eq!(connections.closed(0), None);
        assert!(
            !connections.accepted(102, ip(1), limit),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn the_last_connection_closing_names_its_address_and_a_reused_descriptor_moves() {
        let mut connections = Connections::default();
        connections.accepted(3, ip(1), 8);
        connections.accepted(4, ip(1), 8);
        assert_eq!(connections.closed(3), None);
        assert_eq!(connections.closed(3), None, "closed twice counts once");
        // Descriptor 4 closed unseen and came back as a connection from another address.
        connections.accepted(4, ip(2), 8);
        assert!(connections.of(ip(1)).is_empty());
        assert_eq!(connections.closed(4), Some(ip(2)));
    }

    #[test]
    fn descriptors_no_longer_connected_are_forgotten_for_that_address_only() {
        let mut connections = Connections::default();
        for fd in 0..4 {
            connections.accepted(fd, ip(1), 8);
            connections.accepted(10 + fd, ip(2), 8);
        }
        connections.forget_unless(ip(1), |fd| fd % 2 == 0);
        let mut kept = connections.of(ip(1));
        kept.sort();
        assert_eq!(kept, vec![0, 2]);
        assert_eq!(connections.of(ip(2)).len(), 4);
    }
}
