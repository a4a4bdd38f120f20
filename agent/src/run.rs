//! Boot and shutdown of the agent: bind sockets, start actors, apply the config, handle signals.

use crate::arbiter::ArbiterHandle;
use crate::commands::{self, AgentContext, Caller};
use crate::sampler::Sampler;
use anyhow::Context;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use troupe::config::AgentConfig;
use troupe::protocol::now_epoch;

/// Runs the agent until SIGTERM, SIGINT or `quit`; all watchers are stopped before it returns.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    crate::watcher::process::raise_open_files_limit();
    let settings = Arc::new(config.agent.clone());
    let node_id = crate::identity::load_or_create(&settings.state_dir)?;
    // Before any watcher starts: a `configure` killed among its renames is finished, so no
    // service reads a mix of old and new files.
    let recovered = crate::configure::write::recover(&settings.state_dir)
        .map_err(|e| anyhow::anyhow!("finishing an interrupted configure: {e}"))?;
    if !recovered.is_empty() {
        tracing::warn!(
            files = recovered.len(),
            "finished a configure interrupted among its renames: every file is now the new version"
        );
    }
    let keyring = load_keyring(&settings)?;
    let zmq = troupe::sockets::ServerContext::new(keyring.as_ref())
        .context("starting the ZAP handler")?;
    let control_endpoint = settings.endpoint(settings.control_port);
    let control_socket =
        troupe::sockets::bind_control(&zmq, &control_endpoint, settings.max_message_size)
            .with_context(|| format!("binding the control socket on {control_endpoint}"))?;
    // Absolute, so the endpoint the agent shows works from any directory.
    let owner_socket = std::path::absolute(settings.owner_socket())
        .context("resolving the owner socket's path")?;
    let owner_endpoint = format!("ipc://{}", owner_socket.display());
    let owner_control_socket =
        troupe::sockets::bind_owner_control(&zmq, &owner_socket, settings.max_message_size)
            .with_context(|| format!("binding the owner-only control socket {owner_endpoint}"))?;
    let circus = crate::circus_bind::bind(&zmq, &settings)?;
    let (circus_control, circus_events, circus_stats) = match circus {
        Some(sockets) => (
            Some(sockets.control),
            Some(sockets.events),
            Some(sockets.stats),
        ),
        None => (None, None, None),
    };
    let pubsub_endpoint = settings.endpoint(settings.pubsub_port);
    let events = crate::events::spawn_publisher(&zmq, &pubsub_endpoint, circus_events)
        .with_context(|| format!("binding the events socket on {pubsub_endpoint}"))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let arbiter = ArbiterHandle::spawn(events.clone(), settings.state_dir.clone());
    let sampler = Sampler::spawn();
    let stats_endpoint = settings.endpoint(settings.stats_port);
    let stats = crate::stats::spawn_stats(
        &zmq,
        &stats_endpoint,
        circus_stats,
        settings.stats_interval,
        arbiter.clone(),
        sampler.clone(),
    )
    .with_context(|| format!("binding the stats socket on {stats_endpoint}"))?;
    let ctx = AgentContext {
        arbiter,
        events,
        sampler,
        settings: settings.clone(),
        node_id,
        started: now_epoch(),
        config_path: config.source.clone(),
        shutdown: Arc::new(shutdown_tx),
        disk_changes: Arc::new(tokio::sync::Mutex::new(())),
        owner_endpoint,
        server_keys: zmq.keys(),
        addresses: crate::commands::watch_addresses(),
    };
    let control = tokio::spawn(crate::control::serve(
        control_socket,
        Caller::Network,
        ctx.clone(),
        shutdown_rx.clone(),
    ));
    let owner_control = tokio::spawn(crate::control::serve(
        owner_control_socket,
        Caller::Owner,
        ctx.clone(),
        shutdown_rx.clone(),
    ));
    let circus_control = circus_control.map(|socket| {
        tokio::spawn(crate::control::serve(
            socket,
            Caller::Plaintext,
            ctx.clone(),
            shutdown_rx.clone(),
        ))
    });
    // Announce once the sockets answer, and say ready once the announcer's sockets (the
    // Circus UDP responder) are bound too; say goodbye before stopping the watchers, so
    // controllers stop sending commands early.
    let announcer =
        crate::announce::Announcer::start(&settings, &ctx.node_id, ctx.server_keys.updates())?;
    tracing::info!(
        name = %settings.name,
        id = %ctx.node_id,
        control = %control_endpoint,
        owner_control = %ctx.owner_endpoint,
        pubsub = %pubsub_endpoint,
        allow_remote_exec = settings.allow_remote_exec,
        "troupe-agent ready"
    );
    let watchdog = crate::systemd::spawn_watchdog(&ctx);
    // READY=1 only once apply_config has started every autostart watcher (it waits for each
    // start), so units ordered After=troupe-agent find them running.
    let boot = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            crate::systemd::status(&format!("starting {} watchers", config.watchers.len()));
            let status = match commands::apply_config(&ctx, config, true).await {
                Ok(warnings) => {
                    warnings.iter().for_each(|w| tracing::warn!("{w}"));
                    let watchers = ctx.arbiter.all().await.map_or(0, |all| all.len());
                    crate::systemd::supervising(watchers, warnings.len())
                }
                Err(e) => {
                    tracing::error!("applying the config failed: {e}");
                    format!("config not applied: {e}; fix it and reload (systemctl reload troupe-agent)")
                }
            };
            crate::systemd::ready(&status);
        })
    };
    wait_for_exit(&ctx, shutdown_rx).await?;
    crate::systemd::stopping();
    announcer.shutdown().await;
    boot.abort();
    stats.abort();
    tracing::info!("stopping all watchers");
    commands::stop_everything(&ctx).await;
    ctx.shutdown.send_replace(true);
    let _ = control.await;
    let _ = owner_control.await;
    if let Some(circus_control) = circus_control {
        let _ = circus_control.await;
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!("troupe-agent stopped");
    Ok(())
}

/// Waits for SIGTERM/SIGINT or a `quit`, reloading the key file and the config on each SIGHUP
/// meanwhile.
async fn wait_for_exit(
    ctx: &AgentContext,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return Ok(());
                }
            }
            _ = hup.recv() => reload(ctx).await,
        }
    }
}

async fn reload(ctx: &AgentContext) {
    crate::systemd::reloading();
    let status = reload_files(ctx).await;
    crate::systemd::ready(&status);
}

/// Reloads the key file and the config; returns the STATUS line to show after.
async fn reload_files(ctx: &AgentContext) -> String {
    if let Err(e) = commands::reload_key_file(ctx) {
        tracing::error!("cluster key not reloaded: {e}");
    }
    let Some(path) = &ctx.config_path else {
        tracing::warn!("SIGHUP ignored: the agent was started without a config file");
        return "no config file to reload (started without --config)".into();
    };
    match AgentConfig::load(path) {
        Ok(config) => match commands::apply_config(ctx, config, false).await {
            Ok(warnings) => {
                warnings.iter().for_each(|w| tracing::warn!("{w}"));
                let watchers = ctx.arbiter.all().await.map_or(0, |all| all.len());
                crate::systemd::supervising(watchers, warnings.len())
            }
            Err(e) => {
                tracing::error!("reloading the config failed: {e}");
                format!("reloading the config failed: {e}")
            }
        },
        Err(e) => {
            tracing::error!("config not reloaded:\n{e}");
            format!(
                "config not reloaded: {} has errors (troupe-agent --check {})",
                path.display(),
                path.display()
            )
        }
    }
}

/// Reads the cluster key file, if any, and makes the agent's outgoing connections (to its
/// `master`) present it; says at start what the key protects, or what anyone may do without one.
fn load_keyring(
    settings: &troupe::config::AgentSettings,
) -> anyhow::Result<Option<troupe::cluster_key::Keyring>> {
    let Some(path) = settings.key_file_in_use() else {
        tracing::warn!(
            "no cluster key: anyone who reaches this node's TCP ports ({}, {}, {} on {}) can \
             stop, start and signal every watcher, reset them, read every command line, \
             environment, status and stats, and present it as a member of cluster {:?}; \
             make a key with `troupe keygen --out {}` and copy it to every node",
            settings.control_port,
            settings.pubsub_port,
            settings.stats_port,
            settings.bind,
            settings.cluster,
            settings
                .state_dir
                .join(troupe::cluster_key::DEFAULT_FILE_NAME)
                .display()
        );
        return Ok(None);
    };
    let keyring = troupe::cluster_key::Keyring::load(&path)?;
    troupe::sockets::install_client_keyring(&keyring);
    tracing::info!(
        fingerprint = %keyring.fingerprint(),
        keys = keyring.keys().len(),
        file = %path.display(),
        "cluster key: the TCP sockets admit only its holders (CURVE)"
    );
    Ok(Some(keyring))
}
