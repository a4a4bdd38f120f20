//! Which addresses the agent announces: the host's interfaces, the `bind` setting, the
//! `announce_interfaces`/`ignore_interfaces` filters, and the local address towards a peer.

use nix::net::if_::InterfaceFlags;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use troupe::discovery::announce::announces_on;

/// One address of one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub name: String,
    pub ip: IpAddr,
    /// Prefix length of the address's subnet.
    pub prefix: u8,
    /// Administratively up and running (carrier), as mdns-sd requires.
    pub up: bool,
    pub loopback: bool,
    pub point_to_point: bool,
}

impl InterfaceAddress {
    /// Whether `ip` lies in this address's subnet (how `bind = "127.0.0.2"` finds `lo`).
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.ip, ip) {
            (IpAddr::V4(own), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(own) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(own), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(own) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Every IPv4/IPv6 address of the host's interfaces, from `getifaddrs`.
pub fn system_interfaces() -> std::io::Result<Vec<InterfaceAddress>> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addresses
        .filter_map(|a| {
            let address = a.address?;
            let (ip, prefix) = if let Some(v4) = address.as_sockaddr_in() {
                let mask = a.netmask.and_then(|m| m.as_sockaddr_in().map(|m| m.ip()));
                let prefix = mask.map_or(32, |m| u32::from(m).count_ones() as u8);
                (IpAddr::V4(v4.ip()), prefix)
            } else if let Some(v6) = address.as_sockaddr_in6() {
                let mask = a.netmask.and_then(|m| m.as_sockaddr_in6().map(|m| m.ip()));
                let prefix = mask.map_or(128, |m| u128::from(m).count_ones() as u8);
                (IpAddr::V6(v6.ip()), prefix)
            } else {
                return None;
            };
            Some(InterfaceAddress {
                name: a.interface_name,
                ip,
                prefix,
                up: a
                    .flags
                    .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING),
                loopback: a.flags.contains(InterfaceFlags::IFF_LOOPBACK),
                point_to_point: a.flags.contains(InterfaceFlags::IFF_POINTOPOINT),
            })
        })
        .collect())
}

/// The agent's `bind` setting, as far as announcing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// `0.0.0.0`, `*` or `::`: every interface.
    Any,
    /// One address: announce only it.
    Addr(IpAddr),
    /// An interface name (ZeroMQ binds those too): announce its addresses.
    Interface(String),
}

impl Bind {
    pub fn parse(bind: &str, interfaces: &[InterfaceAddress]) -> Result<Bind, String> {
        let bind = bind.trim_start_matches('[').trim_end_matches(']');
        match bind.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => Ok(Bind::Any),
            Ok(ip) => Ok(Bind::Addr(ip)),
            Err(_) if bind == "*" => Ok(Bind::Any),
            Err(_) if interfaces.iter().any(|i| i.name == bind) => {
                Ok(Bind::Interface(bind.to_string()))
            }
            Err(_) => Err(format!(
                "bind {bind:?} is neither an IP address nor an interface of this host"
            )),
        }
    }

    /// The address to put in an endpoint given to `peer`: the bound address itself, or the
    /// one the kernel would use to reach `peer`.
    pub fn advertised_towards(&self, peer: IpAddr) -> std::io::Result<IpAddr> {
        match self {
            Bind::Addr(ip) => Ok(*ip),
            Bind::Any | Bind::Interface(_) => local_address_towards(peer),
        }
    }
}

/// What to announce: addresses grouped by interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// `(interface, address)`, sorted, IPv4 first.
    pub addresses: Vec<(String, IpAddr)>,
}

impl Selection {
    /// Interface names, sorted and deduplicated.
    pub fn interfaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.addresses.iter().map(|(n, _)| n.clone()).collect();
        names.dedup();
        names
    }

    pub fn ips(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(|(_, ip)| *ip).collect()
    }

    /// One IPv4 address per interface: where the Circus multicast group is joined.
    pub fn ipv4_per_interface(&self) -> Vec<(String, Ipv4Addr)> {
        let mut seen = Vec::new();
        for (name, ip) in &self.addresses {
            if let IpAddr::V4(v4) = ip {
                if !seen.iter().any(|(n, _): &(String, Ipv4Addr)| n == name) {
                    seen.push((name.clone(), *v4));
                }
            }
        }
        seen
    }
}

/// Chooses the announced addresses.
///
/// A specific `bind` address is announced alone. Otherwise every address of the up interfaces
/// that pass `announces_on` is, except loopback ones: `lo` is announced only when it is the
/// only interface up (a test namespace, a machine whose network is not up yet) or when
/// `announce_interfaces` names it, since peers cannot reach a loopback address.
pub fn select(
    interfaces: &[InterfaceAddress],
    bind: &Bind,
    announce: &[String],
    ignore: &[String],
) -> Result<Selection, String> {
    let usable: Vec<&InterfaceAddress> = interfaces
        .iter()
        .filter(|i| i.up && !i.point_to_point)
        .collect();
    let mut addresses: Vec<(String, IpAddr)> = match bind {
        Bind::Addr(ip) => {
            let owner = usable
                .iter()
                .find(|i| i.ip == *ip)
                .or_else(|| usable.iter().find(|i| i.contains(*ip)))
                .ok_or_else(|| format!("bind address {ip} is on no interface that is up"))?;
            vec![(owner.name.clone(), *ip)]
        }
        Bind::Interface(name) => usable
            .iter()
            .filter(|i| &i.name == name)
            .map(|i| (i.name.clone(), i.ip))
            .collect(),
        Bind::Any => {
            let only_loopback_is_up = usable.iter().all(|i| i.loopback);
            usable
                .iter()
                .filter(|i| announces_on(&i.name, announce, ignore))
                .filter(|i| {
                    !i.loopback || only_loopback_is_up || announce.iter().any(|a| a == &i.name)
                })
                .map(|i| (i.name.clone(), i.ip))
                .collect()
        }
    };
    if addresses.is_empty() {
        let mut up: Vec<&str> = usable.iter().map(|i| i.name.as_str()).collect();
        up.dedup();
        return Err(format!(
            "no address to announce: bind = {bind:?}, interfaces up = {up:?}, \
             announce_interfaces = {announce:?}, ignore_interfaces = {ignore:?}"
        ));
    }
    addresses.sort_by_key(|(name, ip)| (name.clone(), ip.is_ipv6(), *ip));
    addresses.dedup();
    Ok(Selection { addresses })
}

/// The local address the kernel would use to reach `peer`: connecting a UDP socket only
/// picks a route and a source address, it sends nothing.
pub fn local_address_towards(peer: IpAddr) -> std::io::Result<IpAddr> {
    let any: IpAddr = match peer {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0))?;
    socket.connect(SocketAddr::new(peer, 9))?;
    Ok(socket.local_addr()?.ip())
}

/// `tcp://ADDR:PORT`, with brackets around an IPv6 address.
pub fn tcp_endpoint(ip: IpAddr, port: u16) -> String {
    format!("tcp://{}", SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, ip: &str, prefix: u8) -> InterfaceAddress {
        InterfaceAddress {
            name: name.into(),
            ip: ip.parse().unwrap(),
            prefix,
            up: true,
            loopback: name == "lo",
            point_to_point: false,
        }
    }

    fn host() -> Vec<InterfaceAddress> {
        vec![
            iface("lo", "127.0.0.1", 8),
            iface("lo", "::1", 128),
            iface("eth0", "10.0.0.5", 24),
            iface("eth0", "fe80::1", 64),
            iface("docker0", "172.17.0.1", 16),
            iface("wlan0", "192.168.1.9", 24),
        ]
    }

    fn names(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn selected(result: Result<Selection, String>) -> Vec<String> {
        result
            .unwrap()
            .addresses
            .into_iter()
            .map(|(n, ip)| format!("{n}/{ip}"))
            .collect()
    }

    #[test]
    fn any_bind_skips_loopback_and_virtual_bridges() {
        let got = selected(select(&host(), &Bind::Any, &[], &[]));
        assert_eq!(got, ["eth0/10.0.0.5", "eth0/fe80::1", "wlan0/192.168.1.9"]);
    }

    #[test]
    fn loopback_is_announced_when_it_is_the_only_interface_up() {
        let mut only_lo = host();
        only_lo.iter_mut().for_each(|i| i.up = i.loopback);
        let got = selected(select(&only_lo, &Bind::Any, &[], &[]));
        assert_eq!(got, ["lo/127.0.0.1", "lo/::1"]);
    }

    #[test]
    fn filters_apply() {
        let got = selected(select(&host(), &Bind::Any, &[], &names(&["wlan0"])));
        assert_eq!(got, ["eth0/10.0.0.5", "eth0/fe80::1"]);
        let got = selected(select(&host(), &Bind::Any, &names(&["wlan0", "lo"]), &[]));
        assert_eq!(got, ["lo/127.0.0.1", "lo/::1", "wlan0/192.168.1.9"]);
        let err = select(&host(), &Bind::Any, &names(&["eth9"]), &[]).unwrap_err();
        assert!(err.contains("no address to announce"), "{err}");
    }

    #[test]
    fn down_and_point_to_point_interfaces_are_skipped() {
        let mut interfaces = host();
        interfaces[5].up = false;
        interfaces.push(InterfaceAddress {
            point_to_point: true,
            ..iface("tun0", "10.8.0.2", 32)
        });
        let got = selected(select(&interfaces, &Bind::Any, &[], &[]));
        assert_eq!(got, ["eth0/10.0.0.5", "eth0/fe80::1"]);
    }

    #[test]
    fn a_specific_bind_is_announced_alone() {
        let bind = Bind::parse("10.0.0.5", &host()).unwrap();
        assert_eq!(
            selected(select(&host(), &bind, &[], &[])),
            ["eth0/10.0.0.5"]
        );
        // 127.0.0.2 is not assigned anywhere but lo's /8 holds it.
        let bind = Bind::parse("127.0.0.2", &host()).unwrap();
        assert_eq!(selected(select(&host(), &bind, &[], &[])), ["lo/127.0.0.2"]);
        let bind = Bind::parse("10.1.0.1", &host()).unwrap();
        assert!(select(&host(), &bind, &[], &[]).is_err());
    }

    #[test]
    fn bind_forms() {
        assert_eq!(Bind::parse("0.0.0.0", &host()), Ok(Bind::Any));
        assert_eq!(Bind::parse("*", &host()), Ok(Bind::Any));
        assert_eq!(Bind::parse("::", &host()), Ok(Bind::Any));
        assert_eq!(
            Bind::parse("[::1]", &host()),
            Ok(Bind::Addr("::1".parse().unwrap()))
        );
        assert_eq!(
            Bind::parse("wlan0", &host()),
            Ok(Bind::Interface("wlan0".into()))
        );
        assert!(Bind::parse("nowhere", &host()).is_err());
        let bind = Bind::Interface("wlan0".into());
        assert_eq!(
            selected(select(&host(), &bind, &[], &[])),
            ["wlan0/192.168.1.9"]
        );
    }

    #[test]
    fn multicast_joins_once_per_interface() {
        let mut interfaces = host();
        interfaces.push(iface("eth0", "10.0.0.6", 24));
        let selection = select(&interfaces, &Bind::Any, &[], &[]).unwrap();
        assert_eq!(
            selection.ipv4_per_interface(),
            [
                ("eth0".to_string(), "10.0.0.5".parse().unwrap()),
                ("wlan0".to_string(), "192.168.1.9".parse().unwrap())
            ]
        );
    }

    #[test]
    fn endpoints_bracket_ipv6() {
        assert_eq!(
            tcp_endpoint("10.0.0.5".parse().unwrap(), 5555),
            "tcp://10.0.0.5:5555"
        );
        assert_eq!(
            tcp_endpoint("::1".parse().unwrap(), 5555),
            "tcp://[::1]:5555"
        );
    }

    #[test]
    fn the_route_to_loopback_starts_at_loopback() {
        let local = local_address_towards("127.0.0.1".parse().unwrap()).unwrap();
        assert!(local.is_loopback(), "{local}");
    }
}
