//! Circus's UDP discovery responder: any datagram to 237.219.251.97:12027 gets
//! `{"endpoint": "tcp://ADDR:PORT"}` back, as circusd answers, so Circus tooling finds agents;
//! a keyed agent adds `"fingerprint"`, its cluster key's (Circus reads only `endpoint`).

use super::interfaces::{tcp_endpoint, Bind};
use anyhow::Context;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockProtocol, SockType};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use troupe::discovery::announce::{CircusUdpAnswer, CIRCUS_MULTICAST_GROUP, CIRCUS_MULTICAST_PORT};

/// The running responder; dropping it (or [`Responder::stop`]) ends the task.
pub struct Responder {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Responder {
    /// Binds `0.0.0.0:12027`, joins the group on `interfaces` (one IPv4 address each) and
    /// answers with the control endpoint.
    pub fn start(
        bind: Bind,
        control_port: u16,
        keys: super::KeyringUpdates,
        interfaces: &[(String, Ipv4Addr)],
    ) -> anyhow::Result<Self> {
        let socket = bind_group_socket(CIRCUS_MULTICAST_PORT, interfaces)?;
        let (stop, stopped) = oneshot::channel();
        let answer = Answer {
            bind,
            port: control_port,
            keys,
        };
        let task = tokio::spawn(serve(socket, answer, stopped));
        Ok(Self { stop, task })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The socket circusd opens (`circus.util.create_udp_socket`): SO_REUSEADDR and SO_REUSEPORT
/// so several responders (agents, circusd) share the port and each gets every multicast
/// datagram; bound to the wildcard address. Options must be set before `bind`, which std and
/// tokio do not allow, hence nix.
fn bind_group_socket(port: u16, interfaces: &[(String, Ipv4Addr)]) -> anyhow::Result<UdpSocket> {
    let what = format!("the Circus discovery socket on 0.0.0.0:{port}");
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::Udp,
    )
    .with_context(|| format!("creating {what}"))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
        .and_then(|()| socket::setsockopt(&fd, sockopt::ReusePort, &true))
        .with_context(|| format!("setting SO_REUSEADDR/SO_REUSEPORT on {what}"))?;
    let address = socket::SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    socket::bind(fd.as_raw_fd(), &address).with_context(|| format!("binding {what}"))?;
    for (name, ip) in interfaces {
        let membership = socket::IpMembershipRequest::new(CIRCUS_MULTICAST_GROUP, Some(*ip));
        socket::setsockopt(&fd, sockopt::IpAddMembership, &membership).with_context(|| {
            format!("joining {CIRCUS_MULTICAST_GROUP} on {name} ({ip}) for {what}")
        })?;
    }
    let socket = std::net::UdpSocket::from(fd);
    UdpSocket::from_std(socket).with_context(|| format!("registering {what} with tokio"))
}

/// What the responder says: the control endpoint and the fingerprint of the first key of
/// `keys`, read at each answer (a rotation changes it).
struct Answer {
    bind: Bind,
    port: u16,
    keys: super::KeyringUpdates,
}

async fn serve(socket: UdpSocket, answer: Answer, mut stopped: oneshot::Receiver<()>) {
    let mut buffer = [0u8; 2048];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            _ = &mut stopped => return,
        };
        let peer = match received {
            Ok((_, peer)) => peer,
            Err(e) => {
                tracing::debug!("Circus discovery socket: {e}");
                continue;
            }
        };
        // Two responders answering each other would never stop: a datagram from the
        // discovery port is another responder's answer, not a question.
        if peer.port() == CIRCUS_MULTICAST_PORT {
            continue;
        }
        match answer.to(peer) {
            Ok(answer) => {
                if let Err(e) = socket.send_to(answer.as_bytes(), peer).await {
                    tracing::debug!(%peer, "Circus discovery answer not sent: {e}");
                }
            }
            Err(e) => tracing::debug!(%peer, "no route back for a Circus discovery query: {e}"),
        }
    }
}

impl Answer {
    /// `{"endpoint": "tcp://ADDR:PORT"}` with the address `peer` can reach us on, and the
    /// fingerprint with a key.
    fn to(&self, peer: SocketAddr) -> std::io::Result<String> {
        let ip = self.bind.advertised_towards(peer.ip())?;
        Ok(CircusUdpAnswer {
            endpoint: tcp_endpoint(ip, self.port),
            fingerprint: super::fingerprint_of(&self.keys),
        }
        .to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_the_bound_address_or_the_route_back_and_the_key_in_use() {
        use troupe::cluster_key::{ClusterKey, Keyring};
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (first, second) = (
            ClusterKey::generate().unwrap(),
            ClusterKey::generate().unwrap(),
        );
        let (keys, updates) = tokio::sync::watch::channel(None);
        let answer = |bind, port| Answer {
            bind,
            port,
            keys: updates.clone(),
        };
        let bound = Bind::Addr("127.0.0.9".parse().unwrap());
        assert_eq!(
            answer(bound, 5555).to(peer).unwrap(),
            r#"{"endpoint":"tcp://127.0.0.9:5555"}"#
        );
        let keyed = answer(Bind::Any, 6000);
        keys.send_replace(Keyring::new(vec![first.clone()]));
        assert_eq!(
            keyed.to(peer).unwrap(),
            format!(
                r#"{{"endpoint":"tcp://127.0.0.1:6000","fingerprint":"{}"}}"#,
                first.fingerprint()
            )
        );
        // A rotation: the answer names the new first key from then on.
        keys.send_replace(Keyring::new(vec![second.clone(), first]));
        let rotated: serde_json::Value = serde_json::from_str(&keyed.to(peer).unwrap()).unwrap();
        assert_eq!(rotated["fingerprint"], second.fingerprint().as_str());
    }

    /// Unicast only, so it needs no namespace: two responders share the port, as circusd
    /// and an agent would on one host.
    #[tokio::test]
    async fn the_port_is_shared_and_every_datagram_is_answered() {
        let first = bind_group_socket(0, &[]).unwrap();
        let port = first.local_addr().unwrap().port();
        let second = bind_group_socket(port, &[]).expect("SO_REUSEADDR/SO_REUSEPORT share");
        drop(second);
        let (stop, stopped) = oneshot::channel();
        let answer = Answer {
            bind: Bind::Any,
            port: 7000,
            keys: tokio::sync::watch::channel(None).1,
        };
        let task = tokio::spawn(serve(first, answer, stopped));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"{}", ("127.0.0.1", port)).await.unwrap();
        let mut buffer = [0u8; 256];
        let (n, _) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.recv_from(&mut buffer),
        )
        .await
        .expect("an answer")
        .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&buffer[..n]).unwrap();
        assert_eq!(answer["endpoint"], "tcp://127.0.0.1:7000");
        let _ = stop.send(());
        task.await.unwrap();
    }
}
