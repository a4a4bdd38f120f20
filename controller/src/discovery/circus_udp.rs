//! Circus's UDP discovery: one datagram to 237.219.251.97:12027, and every circusd (and
//! troupe-agent) on the segment answers `{"endpoint": "tcp://..."}`; a keyed troupe-agent adds
//! `"fingerprint"`.

use crate::membership::Announced;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;
use tokio::net::UdpSocket;
use troupe::discovery::announce::{CircusUdpAnswer, CIRCUS_MULTICAST_GROUP, CIRCUS_MULTICAST_PORT};

/// Sends the discovery datagram out of every multicast-capable IPv4 interface and collects
/// the endpoints that answer within `wait`, with what each said of its cluster key (a reply
/// that [`CircusUdpAnswer::parse`] refuses is dropped).
pub async fn query(wait: Duration) -> std::io::Result<BTreeMap<String, Announced>> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
    let group = SocketAddrV4::new(CIRCUS_MULTICAST_GROUP, CIRCUS_MULTICAST_PORT);
    let mut sent = false;
    for interface in ipv4_interfaces() {
        // A namespace may have no default route: name the interface explicitly.
        if socket2_set_multicast_if(&socket, interface).is_ok()
            && socket.send_to(b"{}", group).await.is_ok()
        {
            sent = true;
        }
    }
    if !sent {
        socket.send_to(b"{}", group).await?;
    }
    let mut endpoints = BTreeMap::new();
    let mut buffer = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok((n, from))) =
        tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await
    {
        let answer = match CircusUdpAnswer::parse(&buffer[..n]) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(%from, "Circus UDP reply ignored: {e}");
                continue;
            }
        };
        let announced = answer
            .fingerprint
            .map_or(Announced::Keyless, Announced::Key);
        endpoints.insert(answer.endpoint, announced);
    }
    Ok(endpoints)
}

/// IP_MULTICAST_IF, which neither std, tokio nor nix expose.
fn socket2_set_multicast_if(socket: &UdpSocket, interface: Ipv4Addr) -> std::io::Result<()> {
    socket2::SockRef::from(socket).set_multicast_if_v4(&interface)
}

/// Addresses of the up, multicast-capable IPv4 interfaces (including loopback, which is how
/// single-host test namespaces reach each other).
fn ipv4_interfaces() -> Vec<Ipv4Addr> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    use nix::net::if_::InterfaceFlags;
    let mut found: Vec<Ipv4Addr> = addresses
        .filter(|a| a.flags.contains(InterfaceFlags::IFF_UP))
        .filter(|a| {
            a.flags.contains(InterfaceFlags::IFF_MULTICAST)
                || a.flags.contains(InterfaceFlags::IFF_LOOPBACK)
        })
        .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|v4| v4.ip())))
        .collect();
    found.sort();
    found.dedup();
    found
}
