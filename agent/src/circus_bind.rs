//! `circus_bind`: where a keyed agent also serves the stock Circus clients, which cannot speak
//! CURVE. A control socket whose requests are [`Caller::Plaintext`] (read-only unless
//! `allow_remote_exec`), plus the same events and stats streams as the cluster's sockets, so
//! `circusctl status` and `circus-top` work on the node.
//!
//! Off unless set: even read-only, a plaintext socket shows every command line, environment
//! and status to whoever reaches it, and on loopback that is every local user, container on
//! the host network and supervised service (SECURITY.md). The node's owner needs none of it
//! for `circusctl` (the owner-only Unix socket does everything); it is for `circus-top`,
//! which reads a TCP stats stream, and for local tools that only read. On a keyless agent it
//! is ignored, with a warning: the cluster's ports speak plaintext Circus already, and the
//! same config file serves nodes before and after their key is copied.
//!
//! [`Caller::Plaintext`]: crate::commands::Caller::Plaintext

use anyhow::Context;
use troupe::config::AgentSettings;
use troupe::sockets::{ControlSocket, Listener, ServerContext};
use troupe::subscribers::GuardedPublisher;

/// The plaintext sockets, bound.
pub struct CircusSockets {
    pub control: ControlSocket,
    pub events: GuardedPublisher,
    pub stats: GuardedPublisher,
}

/// Binds the plaintext sockets when `circus_bind` is set and the agent has a cluster key.
pub fn bind(
    server: &ServerContext,
    settings: &AgentSettings,
) -> anyhow::Result<Option<CircusSockets>> {
    let Some(control_endpoint) = settings.circus_endpoint(settings.circus_control_port) else {
        return Ok(None);
    };
    if !server.is_keyed() {
        tracing::warn!(
            "circus_bind ignored: without a cluster key the agent's own ports ({}, {}, {}) \
             already serve stock Circus clients in plaintext",
            settings.control_port,
            settings.pubsub_port,
            settings.stats_port
        );
        return Ok(None);
    }
    let endpoint = |port| settings.circus_endpoint(port).unwrap_or_default();
    let (pubsub_endpoint, stats_endpoint) = (
        endpoint(settings.circus_pubsub_port),
        endpoint(settings.circus_stats_port),
    );
    let control = troupe::sockets::bind_tcp_control(
        server,
        &control_endpoint,
        settings.max_message_size,
        Listener::Plaintext,
    )
    .with_context(|| {
        format!("binding the plaintext Circus control socket on {control_endpoint}")
    })?;
    let events = GuardedPublisher::bind_for(
        server,
        &pubsub_endpoint,
        "circus events",
        Listener::Plaintext,
    )
    .with_context(|| format!("binding the plaintext Circus events socket on {pubsub_endpoint}"))?;
    let stats =
        GuardedPublisher::bind_for(server, &stats_endpoint, "circus stats", Listener::Plaintext)
            .with_context(|| {
                format!("binding the plaintext Circus stats socket on {stats_endpoint}")
            })?;
    let is_loopback = settings
        .circus_bind
        .as_deref()
        .and_then(|address| address.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback());
    if !is_loopback {
        tracing::warn!(
            circus_bind = settings.circus_bind.as_deref().unwrap_or_default(),
            "circus_bind is not a loopback address: anyone who reaches it reads every command \
             line, environment and status in plaintext, without the cluster key"
        );
    }
    tracing::info!(
        control = %control_endpoint,
        pubsub = %pubsub_endpoint,
        stats = %stats_endpoint,
        read_only = !settings.allow_remote_exec,
        "plaintext Circus sockets (circus_bind) for circusctl and circus-top"
    );
    Ok(Some(CircusSockets {
        control,
        events,
        stats,
    }))
}

/// One stream (events or stats) on the cluster's socket and, with `circus_bind`, on the
/// plaintext one as well.
pub struct Publishers {
    pub cluster: GuardedPublisher,
    pub plaintext: Option<GuardedPublisher>,
}

impl Publishers {
    pub fn has_subscribers(&self) -> bool {
        self.cluster.has_subscribers()
            || self
                .plaintext
                .as_ref()
                .is_some_and(GuardedPublisher::has_subscribers)
    }

    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        // A copy only for someone listening: the stats stream is most of what an agent sends.
        if let Some(plaintext) = self.plaintext.as_ref().filter(|p| p.has_subscribers()) {
            plaintext.publish(topic.clone(), payload.clone());
        }
        self.cluster.publish(topic, payload);
    }

    /// [`GuardedPublisher::watch`] of both; cancel-safe as each is.
    pub async fn watch(&mut self) {
        match &mut self.plaintext {
            None => self.cluster.watch().await,
            Some(plaintext) => tokio::select! {
                _ = self.cluster.watch() => {}
                _ = plaintext.watch() => {}
            },
        }
    }
}
