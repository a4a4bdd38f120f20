//! Which endpoints that the network names a controller may adopt.
//!
//! mDNS records, Circus UDP replies, `register_node` and a remote `cluster` range all come
//! from whoever can send a packet. `troupe serve` acts for remote clients: an endpoint on the
//! controller's own host (loopback, 0.0.0.0) would let them reach an agent that sees the
//! controller's local address, or a local service nobody meant to expose. So serve adopts such
//! an endpoint only when its operator named it: in a probe range or seed (`troupe.toml`,
//! `TROUPE_PROBE`, `--probe`, the state dir's remembered ranges). A one-shot command
//! (`troupe nodes`, a broadcast) runs for the user who typed it and acts for nobody else, so
//! it adopts what it finds, loopback included (tests on a namespace with only `lo` rely on it).

use std::net::{IpAddr, SocketAddr};
use troupe::discovery::{is_this_host, ProbeTargets};

#[derive(Debug, Clone, Default)]
pub enum Admission {
    /// Every endpoint: a one-shot command, for its own user.
    #[default]
    Open,
    /// `troupe serve`: this host's addresses only where the operator's targets name them.
    OperatorNamed(ProbeTargets),
}

impl Admission {
    /// Whether `endpoint` (`tcp://IP:PORT`, as discovery builds them) may be adopted. A
    /// network-named endpoint must be an IP literal under [`Admission::OperatorNamed`]: a host
    /// name could resolve to loopback by the time it is used.
    pub fn check(&self, endpoint: &str) -> Result<(), String> {
        let Admission::OperatorNamed(operator) = self else {
            return Ok(());
        };
        let address = socket_address(endpoint)
            .ok_or_else(|| format!("{endpoint:?} is not tcp://IP:PORT with an IP literal"))?;
        if is_this_host(address.ip()) && !operator.contains(address) {
            return Err(format!(
                "{endpoint} is on the controller's own host, and only endpoints its operator \
                 named (--probe, troupe.toml probe or seeds) may be"
            ));
        }
        Ok(())
    }

    /// [`Admission::check`] for an address about to be probed.
    pub fn admits(&self, address: SocketAddr) -> bool {
        match self {
            Admission::Open => true,
            Admission::OperatorNamed(operator) => {
                !is_this_host(address.ip()) || operator.contains(address)
            }
        }
    }
}

/// `tcp://10.0.0.1:5555` or `tcp://[fd00::1]:5555` as a socket address.
pub fn socket_address(endpoint: &str) -> Option<SocketAddr> {
    troupe::endpoint::Endpoint::parse(endpoint)
        .ok()?
        .socket_address()
}

/// The host of a `tcp://IP:PORT` endpoint.
pub fn endpoint_ip(endpoint: &str) -> Option<IpAddr> {
    socket_address(endpoint).map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe::discovery::parse_targets;

    #[test]
    fn serve_adopts_this_host_only_where_the_operator_named_it() {
        let serve = Admission::OperatorNamed(parse_targets("127.0.0.2-5,10.0.0.1").unwrap());
        for endpoint in [
            "tcp://10.0.0.7:5555",
            "tcp://[fd00::7]:5555",
            "tcp://127.0.0.3:5555",
        ] {
            assert_eq!(serve.check(endpoint), Ok(()), "{endpoint}");
        }
        for endpoint in [
            "tcp://127.0.0.1:5555",
            "tcp://127.0.0.3:6000",
            "tcp://0.0.0.0:5555",
            "tcp://[::1]:5555",
            "tcp://[::]:5555",
            "tcp://[::ffff:127.0.0.1]:5555",
            "tcp://localhost:5555",
            "tcp://10.0.0.7",
            "udp://10.0.0.7:5555",
        ] {
            assert!(serve.check(endpoint).is_err(), "{endpoint}");
        }
        let refusal = serve.check("tcp://127.0.0.1:5555").unwrap_err();
        assert!(refusal.contains("own host"), "{refusal}");
        assert!(serve.admits("127.0.0.5:5555".parse().unwrap()));
        assert!(!serve.admits("127.0.0.6:5555".parse().unwrap()));
        assert!(serve.admits("10.9.9.9:1".parse().unwrap()));
    }

    #[test]
    fn a_one_shot_command_adopts_everything() {
        for endpoint in [
            "tcp://127.0.0.1:5555",
            "tcp://0.0.0.0:5555",
            "tcp://db1:5555",
        ] {
            assert_eq!(Admission::Open.check(endpoint), Ok(()));
        }
        assert!(Admission::Open.admits("127.0.0.1:5555".parse().unwrap()));
    }
}
