//! The mDNS announcement: one `_troupe._tcp.local.` service per agent, registered with
//! mdns-sd on the selected interfaces only, and a goodbye when the agent stops cleanly.

use super::interfaces::Selection;
use super::{fingerprint_of, KeyringUpdates};
use anyhow::Context;
use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo, UnregisterStatus};
use std::time::Duration;
use troupe::config::AgentSettings;
use troupe::discovery::announce::{AnnounceRecord, PROTO_VERSION, SERVICE_TYPE};

/// mdns-sd resends a goodbye 120 ms after the first; waiting a little longer before stopping
/// the daemon lets that copy out too.
const GOODBYE_RESEND: Duration = Duration::from_millis(200);

/// A registered service and the daemon that answers for it.
pub struct MdnsAnnouncement {
    daemon: ServiceDaemon,
    fullname: String,
    /// Registers the record again when the cluster key in use changes (see [`follow_key`]).
    follower: tokio::task::JoinHandle<()>,
}

/// What the record is made of, to make it again with another fingerprint.
struct Registration {
    record: AnnounceRecord,
    name: String,
    host: String,
    ips: Vec<std::net::IpAddr>,
    port: u16,
}

impl Registration {
    fn service(&self) -> anyhow::Result<ServiceInfo> {
        let txt: Vec<(String, String)> = self.record.to_txt().into_iter().collect();
        ServiceInfo::new(
            SERVICE_TYPE,
            &self.name,
            &self.host,
            &self.ips[..],
            self.port,
            &txt[..],
        )
        .with_context(|| format!("building the mDNS record of {:?}", self.name))
    }
}

impl MdnsAnnouncement {
    /// Starts a daemon restricted to the selected interfaces and registers the agent, its
    /// TXT `fp` the fingerprint of the first key of `keys` (the agent's keyring, which a
    /// rotation replaces).
    pub fn start(
        settings: &AgentSettings,
        node_id: &str,
        keys: KeyringUpdates,
        selection: &Selection,
    ) -> anyhow::Result<Self> {
        let registration = Registration {
            record: AnnounceRecord {
                id: node_id.to_string(),
                cluster: settings.cluster.clone(),
                version: troupe::VERSION.to_string(),
                pubsub_port: settings.pubsub_port,
                stats_port: settings.stats_port,
                proto: PROTO_VERSION,
                fingerprint: fingerprint_of(&keys),
            },
            name: settings.name.clone(),
            host: format!("{}.local.", short_hostname()),
            ips: selection.ips(),
            port: settings.control_port,
        };
        let service = registration.service()?;
        let fullname = service.get_fullname().to_string();

        let daemon = ServiceDaemon::new().context("starting the mDNS daemon")?;
        // Commands run in order: everything off, then only what we announce on.
        let enabled: Vec<IfKind> = selection
            .interfaces()
            .into_iter()
            .map(IfKind::Name)
            .collect();
        daemon
            .disable_interface(IfKind::All)
            .and_then(|()| daemon.enable_interface(enabled))
            .context("restricting the mDNS daemon to the announced interfaces")?;
        let events = daemon.monitor().context("monitoring the mDNS daemon")?;
        daemon
            .register(service)
            .with_context(|| format!("registering {fullname} over mDNS"))?;
        tokio::spawn(log_daemon_events(events));
        tracing::info!(
            service = %fullname,
            host = %registration.host,
            addresses = ?selection.ips(),
            "announcing over mDNS"
        );
        let follower = tokio::spawn(follow_key(daemon.clone(), registration, keys));
        Ok(Self {
            daemon,
            fullname,
            follower,
        })
    }

    /// Unregisters (browsers see a goodbye) and stops the daemon, within `bound`.
    pub async fn goodbye(self, bound: Duration) {
        self.follower.abort();
        let deadline = tokio::time::Instant::now() + bound;
        match self.daemon.unregister(&self.fullname) {
            Ok(status) => match tokio::time::timeout_at(deadline, status.recv_async()).await {
                Ok(Ok(UnregisterStatus::OK)) => {
                    tracing::debug!(service = %self.fullname, "mDNS goodbye sent");
                    let resend = tokio::time::Instant::now() + GOODBYE_RESEND;
                    tokio::time::sleep_until(resend.min(deadline)).await;
                }
                Ok(Ok(UnregisterStatus::NotFound)) => {
                    tracing::warn!(service = %self.fullname, "mDNS goodbye: service not registered")
                }
                Ok(Err(_)) => tracing::warn!("mDNS goodbye: the daemon has stopped"),
                Err(_) => tracing::warn!("mDNS goodbye not confirmed within {bound:?}"),
            },
            Err(e) => tracing::warn!("mDNS goodbye not sent: {e}"),
        }
        if let Ok(status) = self.daemon.shutdown() {
            let _ = tokio::time::timeout_at(deadline, status.recv_async()).await;
        }
    }
}

/// Registers the record again, with the new fingerprint, each time the agent's first key
/// changes (a rotation: SIGHUP, `reloadconfig`), so controllers that skip agents of other keys
/// by their announcement keep finding this one. mdns-sd sends the new record unsolicited; its
/// TXT is a unique record, so browsers replace the old one.
async fn follow_key(
    daemon: ServiceDaemon,
    mut registration: Registration,
    mut keys: KeyringUpdates,
) {
    while keys.changed().await.is_ok() {
        let fingerprint = fingerprint_of(&keys);
        if fingerprint == registration.record.fingerprint {
            continue;
        }
        registration.record.fingerprint = fingerprint;
        let registered = registration
            .service()
            .and_then(|service| daemon.register(service).map_err(anyhow::Error::from));
        match registered {
            Ok(()) => tracing::info!(
                fingerprint = ?registration.record.fingerprint.as_ref().map(|fp| fp.to_string()),
                "mDNS record announced again with the new cluster key's fingerprint"
            ),
            Err(e) => tracing::warn!("mDNS record not announced again after a key change: {e:#}"),
        }
    }
}

/// The host's name without its domain: the mDNS host is `<name>.local.`.
fn short_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .and_then(|h| h.split('.').next().map(str::to_string))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "troupe-node".into())
}

/// A renamed instance or host (another machine already uses the name) matters to an
/// operator; the daemon's other events do not. A host rename is reported per record type
/// (A, AAAA), so a repeat of the same rename is not logged again.
async fn log_daemon_events(events: mdns_sd::Receiver<DaemonEvent>) {
    let mut renamed = std::collections::BTreeSet::new();
    while let Ok(event) = events.recv_async().await {
        match event {
            DaemonEvent::NameChange(change)
                if renamed.insert((change.original.clone(), change.new_name.clone())) =>
            {
                tracing::warn!(
                    original = %change.original,
                    new = %change.new_name,
                    "mDNS name conflict: announced under a new name"
                )
            }
            DaemonEvent::Error(e) => tracing::debug!("mDNS daemon: {e}"),
            _ => {}
        }
    }
}
