//! A TCP endpoint as ZeroMQ and Circus write it: `tcp://HOST:PORT`, an IPv6 host in brackets
//! (`tcp://[fd00::1]:5555`). The one parser of that text: endpoints arrive from the network
//! (`nodeinfo`, mDNS, `register_node`), from config files and from the command line, so HOST
//! must pass [`check_host`] (an IP literal or an RFC 1123 name: nothing a shell, a template or
//! a log line would read as more than a host) and PORT must be 1 to 65535.

use crate::config::names::check_host;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// `tcp://HOST:PORT`, parsed. HOST is kept without brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// The endpoint of `address`.
    pub fn of(address: SocketAddr) -> Endpoint {
        Endpoint {
            host: address.ip().to_string(),
            port: address.port(),
        }
    }

    /// Parses `tcp://HOST:PORT`; the error names the text and what is wrong with it.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let (host, port) = Self::split(text)?;
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }

    /// HOST (without brackets) and PORT of `tcp://HOST:PORT`, as [`Endpoint::parse`] reads
    /// them, borrowed: checking a thousand peers' endpoints allocates nothing.
    pub(crate) fn split(text: &str) -> Result<(&str, u16), String> {
        Self::split_on(text, None)
    }

    /// As [`Endpoint::split`], but HOST is not checked again when it is `checked_host`, a host
    /// that passed [`check_host`] already (a peer's own address, which its endpoints name).
    pub(crate) fn split_on<'t>(
        text: &'t str,
        checked_host: Option<&str>,
    ) -> Result<(&'t str, u16), String> {
        let refuse = |why: String| format!("{text:?} is not a tcp://HOST:PORT endpoint: {why}");
        let rest = text
            .strip_prefix("tcp://")
            .ok_or_else(|| refuse("it must start with tcp://".into()))?;
        let colon = rest
            .bytes()
            .rposition(|b| b == b':')
            .ok_or_else(|| refuse("it has no port".into()))?;
        let (host, port) = (&rest[..colon], &rest[colon + 1..]);
        let host = match host.strip_prefix('[') {
            Some(bracketed) => match bracketed.strip_suffix(']') {
                Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
                _ => return Err(refuse("brackets must hold an IPv6 address".into())),
            },
            None if host.contains(':') => {
                return Err(refuse("an IPv6 address must be in brackets".into()))
            }
            None => host,
        };
        if checked_host != Some(host) {
            check_host(host).map_err(refuse)?;
        }
        let port = Some(port)
            .filter(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| refuse(format!("{port:?} is not a port from 1 to 65535")))?;
        Ok((host, port))
    }

    /// The host, without brackets: `10.0.0.1`, `fd00::1`, `node-a.lan`.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The same host on another port.
    pub fn with_port(&self, port: u16) -> Endpoint {
        Endpoint {
            host: self.host.clone(),
            port,
        }
    }

    /// `HOST:PORT`, an IPv6 host in brackets: what a TCP connect or a person reads.
    pub fn address(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    /// The socket address, when HOST is an IP literal (a name would need resolving).
    pub fn socket_address(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp://{}", self.address())
    }
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Endpoint, String> {
        Endpoint::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_ipv4_ipv6_and_names() {
        for (text, host, port, address) in [
            ("tcp://10.0.0.1:5555", "10.0.0.1", 5555, "10.0.0.1:5555"),
            ("tcp://[fd00::1]:5558", "fd00::1", 5558, "[fd00::1]:5558"),
            ("tcp://node-a.lan:1", "node-a.lan", 1, "node-a.lan:1"),
            ("tcp://0.0.0.0:65535", "0.0.0.0", 65535, "0.0.0.0:65535"),
        ] {
            let endpoint = Endpoint::parse(text).unwrap();
            assert_eq!(
                (endpoint.host(), endpoint.port(), endpoint.address()),
                (host, port, address.to_string()),
                "{text}"
            );
            assert_eq!(endpoint.to_string(), text, "displayed as parsed");
            assert_eq!(text.parse::<Endpoint>(), Ok(endpoint));
        }
    }

    #[test]
    fn socket_addresses_and_other_ports() {
        let v6 = Endpoint::parse("tcp://[fd00::1]:5555").unwrap();
        assert_eq!(v6.socket_address(), Some("[fd00::1]:5555".parse().unwrap()));
        assert_eq!(v6.with_port(5557).to_string(), "tcp://[fd00::1]:5557");
        assert_eq!(
            Endpoint::parse("tcp://a.lan:5555")
                .unwrap()
                .socket_address(),
            None
        );
        let address: SocketAddr = "127.0.0.2:5555".parse().unwrap();
        assert_eq!(Endpoint::of(address).to_string(), "tcp://127.0.0.2:5555");
    }

    /// What a hostile `nodeinfo`, mDNS record or `register_node` may send instead of an
    /// endpoint: each is refused, naming the text and what is wrong.
    #[test]
    fn hostile_and_malformed_endpoints_are_refused_with_the_reason() {
        for (text, why) in [
            ("10.0.0.1:5555", "must start with tcp://"),
            ("udp://10.0.0.1:5555", "must start with tcp://"),
            ("tcp://10.0.0.1", "has no port"),
            ("tcp://fd00::1:5555", "must be in brackets"),
            ("tcp://[10.0.0.1]:5555", "brackets must hold an IPv6"),
            ("tcp://[fd00::1:5555", "brackets must hold an IPv6"),
            ("tcp://:5555", "is not an IP address or a host name"),
            (
                "tcp://a;touch${IFS}x:5555",
                "is not an IP address or a host name",
            ),
            ("tcp://$(id):5555", "is not an IP address or a host name"),
            ("tcp://a\nb:5555", "is not an IP address or a host name"),
            ("tcp://-a:5555", "is not an IP address or a host name"),
            ("tcp://10.0.0.1:0", "is not a port from 1 to 65535"),
            ("tcp://10.0.0.1:65536", "is not a port from 1 to 65535"),
            ("tcp://10.0.0.1:+80", "is not a port from 1 to 65535"),
            ("tcp://10.0.0.1:5555\nx=y", "is not a port from 1 to 65535"),
            ("tcp://10.0.0.1:", "is not a port from 1 to 65535"),
        ] {
            let error = Endpoint::parse(text).unwrap_err();
            assert!(
                error.contains(why) && error.starts_with(&format!("{text:?}")),
                "{text:?}: {error}"
            );
        }
        let long = format!("tcp://{}:5555", "a".repeat(300));
        assert!(Endpoint::parse(&long).is_err());
    }
}
