//! troupe-swarm: one process standing in for thousands of troupe agents on loopback addresses,
//! so one controller (`troupe serve`) can be measured and tested at a scale one machine cannot
//! start for real (issue 15). See [`args::Args`] for what a simulated agent does.
//!
//! - [`args`]: the command line and its checks.
//! - [`node`]: one simulated agent (sockets, replies, stats stream).
//! - [`population`]: which agents are up; leaving and joining at set rates.
//!
//! One thread runs every agent (a current-thread runtime; ZeroMQ adds its I/O thread), so the
//! swarm's CPU is easy to read next to the controller's.

mod args;
mod node;
mod population;

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;

/// Descriptors a simulated agent takes: three listeners and their three ZeroMQ mailboxes, and
/// the connections of one controller (heartbeats, kept connection, stats, events, a probe).
const FDS_PER_AGENT: u64 = 12;

fn main() {
    let args = args::Args::parse();
    let plan = match args::Plan::from_args(&args) {
        Ok(plan) => plan,
        Err(problems) => {
            for problem in problems {
                eprintln!("troupe-swarm: {problem}");
            }
            eprintln!("troupe-swarm: see `troupe-swarm --help`");
            std::process::exit(2);
        }
    };
    troupe::logging::init(args.log_level.clone());
    if let Err(e) = run(plan) {
        eprintln!("troupe-swarm: {e:#}");
        std::process::exit(1);
    }
}

fn run(plan: args::Plan) -> anyhow::Result<()> {
    let wanted = u64::from(plan.agents) * FDS_PER_AGENT + 1024;
    troupe::limits::raise_open_files_to(wanted).map_err(anyhow::Error::msg)?;
    let keyring = match &plan.key_file {
        Some(path) => Some(
            troupe::cluster_key::Keyring::load(path)
                .with_context(|| format!("--key-file {}", path.display()))?,
        ),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut watchers: Vec<String> = (1..=plan.watchers).map(|w| format!("w{w}")).collect();
        watchers.sort();
        let shape = node::Shape {
            cluster: plan.cluster.clone(),
            port: plan.port,
            watchers,
            processes: plan.processes,
            stats_interval: plan.stats_interval,
            fingerprint: keyring.as_ref().map(|k| k.fingerprint().to_string()),
        };
        let counters = Arc::new(node::Counters::default());
        let started = std::time::Instant::now();
        let population =
            population::Population::start(plan.clone(), shape, keyring.as_ref(), counters)
                .map_err(anyhow::Error::msg)?;
        println!(
            "{}",
            serde_json::json!({
                "event": "ready", "agents": plan.agents, "probe": plan.probe_range(),
                "cluster": plan.cluster, "keyed": keyring.is_some(),
                "bind_seconds": started.elapsed().as_secs_f64(),
                "time": troupe::protocol::now_epoch(),
            })
        );
        tracing::info!(
            agents = plan.agents,
            probe = %plan.probe_range(),
            "simulated agents up"
        );
        population.run(Box::pin(stopped())).await;
        Ok(())
    })
}

/// Resolves at SIGINT or SIGTERM.
async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
