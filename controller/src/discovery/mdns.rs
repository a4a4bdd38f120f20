//! mDNS browsing: every resolved `_troupe._tcp` record of our cluster becomes a sighting, and
//! a removal a goodbye. Missed heartbeats come back here as `verify` requests, so a record
//! of a crashed agent is flushed in seconds rather than at its 120 s TTL.

use crate::membership::{Announced, MembershipHandle, MembershipMsg, Source};
use anyhow::Context;
use mdns_sd::{ServiceDaemon, ServiceEvent};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use troupe::discovery::announce::{AnnounceRecord, SERVICE_TYPE};

const VERIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts browsing; the browse ends when the returned daemon is shut down or dropped.
pub fn start(
    membership: MembershipHandle,
    cluster: String,
    mut verify: mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<ServiceDaemon> {
    let daemon = ServiceDaemon::new().context("starting the mDNS daemon")?;
    let receiver = daemon
        .browse(SERVICE_TYPE)
        .context("browsing for troupe agents over mDNS")?;
    let verifier = daemon.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = receiver.recv_async() => match event {
                    Ok(ServiceEvent::ServiceResolved(service)) => {
                        let txt = |key: &str| service.get_property_val_str(key);
                        let announced = match AnnounceRecord::from_txt(txt) {
                            Ok(record) if record.cluster == cluster => {
                                record.fingerprint.map_or(Announced::Keyless, Announced::Key)
                            }
                            Ok(record) => {
                                if let Some(name) = instance_name(&service.fullname) {
                                    let cluster = record.cluster;
                                    membership.send(MembershipMsg::OtherCluster { cluster, name }).await;
                                }
                                continue;
                            }
                            Err(e) => {
                                tracing::debug!(instance = %service.fullname, "ignored mDNS record: {e}");
                                continue;
                            }
                        };
                        let addresses = service.get_addresses().iter().map(|a| a.to_ip_addr());
                        if let Some(ip) = best_address(addresses) {
                            let endpoint = crate::probe::endpoint_of((ip, service.get_port()).into());
                            let name = instance_name(&service.fullname);
                            let seen = MembershipMsg::Seen { endpoint, source: Source::Mdns, announced, name };
                            membership.send(seen).await;
                        }
                    }
                    Ok(ServiceEvent::ServiceRemoved(_, fullname)) => {
                        if let Some(name) = instance_name(&fullname) {
                            membership.send(MembershipMsg::GoodbyeByName { name }).await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                Some(name) = verify.recv() => {
                    let _ = verifier.verify(format!("{name}.{SERVICE_TYPE}"), VERIFY_TIMEOUT);
                }
            }
        }
    });
    Ok(daemon)
}

/// IPv4 first (non-loopback before loopback), then global IPv6; never link-local IPv6,
/// which needs a scope a ZeroMQ endpoint cannot carry.
fn best_address(addresses: impl Iterator<Item = IpAddr>) -> Option<IpAddr> {
    addresses
        .filter(|ip| match ip {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(_) => true,
        })
        .max_by_key(|ip| match ip {
            IpAddr::V4(v4) if !v4.is_loopback() => 3,
            IpAddr::V4(_) => 2,
            IpAddr::V6(_) => 1,
        })
}

/// `node-a._troupe._tcp.local.` -> `node-a`.
fn instance_name(fullname: &str) -> Option<String> {
    fullname
        .strip_suffix(SERVICE_TYPE)
        .and_then(|s| s.strip_suffix('.'))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_ipv4_and_skips_link_local() {
        let ips: Vec<IpAddr> = ["fe80::1", "2001:db8::1", "127.0.0.1", "10.0.0.5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            best_address(ips.iter().copied()),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            best_address(ips[..2].iter().copied()),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(best_address(ips[..1].iter().copied()), None);
    }

    #[test]
    fn instance_names() {
        assert_eq!(
            instance_name("node-a._troupe._tcp.local."),
            Some("node-a".into())
        );
        assert_eq!(instance_name("x._http._tcp.local."), None);
    }
}
