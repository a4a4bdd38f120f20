//! How the agent makes itself known: the mDNS record ([`mdns`]), Circus's UDP discovery
//! responder ([`circus_udp`]) and registration with a controller ([`master`]); which
//! addresses they name is decided in [`interfaces`].
//!
//! With `mdns = false` nothing here touches multicast: no mDNS daemon (it joins its group on
//! every interface as soon as it starts) and no UDP socket.

pub mod circus_udp;
pub mod interfaces;
pub mod master;
pub mod mdns;

use anyhow::Context;
use interfaces::{Bind, Selection};
use std::time::Duration;
use troupe::cluster_key::{Fingerprint, Keyring};
use troupe::config::AgentSettings;

/// How long a clean shutdown waits for the mDNS goodbye to go out.
const GOODBYE_BOUND: Duration = Duration::from_secs(2);
/// How long a clean shutdown waits for the controller to acknowledge `unregister_node`.
const UNREGISTER_BOUND: Duration = Duration::from_secs(1);

/// The agent's keyring as it changes (a rotation); `None` without a key.
pub type KeyringUpdates = tokio::sync::watch::Receiver<Option<Keyring>>;

/// The fingerprint to announce now: the first key's.
pub fn fingerprint_of(keys: &KeyringUpdates) -> Option<Fingerprint> {
    keys.borrow().as_ref().map(Keyring::fingerprint)
}

/// Everything the agent announces; dropping without shutdown is allowed (no goodbye then).
pub struct Announcer {
    mdns: Option<mdns::MdnsAnnouncement>,
    udp: Option<circus_udp::Responder>,
    master: Option<master::Registrar>,
}

impl Announcer {
    /// Starts mDNS registration and the Circus UDP responder when settings.mdns is true, and the
    /// master registration loop when settings.master is Some. Errors name what failed.
    ///
    /// Must be called within a tokio runtime. The Circus responder failing to bind is only a
    /// warning, as in circusd: mDNS and the controller still find the agent. Both multicast
    /// answers carry the fingerprint of the first key of `keys` (none without a key), and
    /// follow it when a rotation changes it.
    pub fn start(
        settings: &AgentSettings,
        node_id: &str,
        keys: KeyringUpdates,
    ) -> anyhow::Result<Announcer> {
        let mut announcer = Announcer {
            mdns: None,
            udp: None,
            master: None,
        };
        if !settings.mdns && settings.master.is_none() {
            return Ok(announcer);
        }
        tokio::runtime::Handle::try_current().context("announcing needs a tokio runtime")?;
        let interfaces = interfaces::system_interfaces().context("listing network interfaces")?;
        let bind = Bind::parse(&settings.bind, &interfaces).map_err(anyhow::Error::msg)?;
        if settings.mdns {
            let selection = interfaces::select(
                &interfaces,
                &bind,
                &settings.announce_interfaces,
                &settings.ignore_interfaces,
            )
            .map_err(anyhow::Error::msg)
            .context(
                "choosing what to announce over mDNS (set mdns = false to announce nothing)",
            )?;
            announcer.mdns = Some(mdns::MdnsAnnouncement::start(
                settings,
                node_id,
                keys.clone(),
                &selection,
            )?);
            announcer.udp = start_udp(&bind, settings.control_port, keys, &selection);
        }
        if settings.master.is_some() {
            announcer.master = Some(master::Registrar::start(settings, node_id, bind)?);
        }
        Ok(announcer)
    }

    /// Clean shutdown: mDNS goodbye (unregister and wait for it to be sent, bounded to ~2 s),
    /// `unregister_node` to the master (bounded ~1 s), stop the UDP responder.
    pub async fn shutdown(self) {
        let goodbye = async {
            if let Some(mdns) = self.mdns {
                mdns.goodbye(GOODBYE_BOUND).await;
            }
        };
        let unregister = async {
            if let Some(master) = self.master {
                master.stop(UNREGISTER_BOUND).await;
            }
        };
        let udp = async {
            if let Some(udp) = self.udp {
                udp.stop().await;
            }
        };
        // Independent of each other: the slowest bounds the whole shutdown.
        tokio::join!(goodbye, unregister, udp);
    }
}

fn start_udp(
    bind: &Bind,
    control_port: u16,
    keys: KeyringUpdates,
    selection: &Selection,
) -> Option<circus_udp::Responder> {
    let groups = selection.ipv4_per_interface();
    if groups.is_empty() {
        tracing::warn!("Circus UDP discovery off: no IPv4 address is announced");
        return None;
    }
    match circus_udp::Responder::start(bind.clone(), control_port, keys, &groups) {
        Ok(responder) => Some(responder),
        Err(e) => {
            tracing::warn!("Circus UDP discovery off: {e:#}");
            None
        }
    }
}
