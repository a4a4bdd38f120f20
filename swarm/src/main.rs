//! troupe-swarm: one process standing in for thousands of troupe agents on loopback addresses,
//! so one controller (`troupe serve`) can be measured and tested at a scale one machine cannot
//! start for real (issue 15). See [`args::Args`] for what a simulated agent does.
//!
//! - [`args`]: the command line and its checks.
//! - [`node`]: one simulated agent (sockets, replies, stats stream).
//! - [`population`]: which agents are up; leaving and joining at set rates.
//! - [`shards`]: a swarm split into several processes, for more agents than one may hold.
//!
//! One thread runs every agent of a process (a current-thread runtime; ZeroMQ adds an I/O
//! thread per 320 agents), so the swarm's CPU is easy to read next to the controller's.

mod args;
mod node;
mod population;
mod shards;

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;

/// Descriptors a simulated agent takes: three listeners and their three ZeroMQ mailboxes, and
/// the connections of one controller (heartbeats, kept connection, stats, events, a probe).
pub const FDS_PER_AGENT: u64 = 12;
/// Descriptors kept for everything else (ZeroMQ's own, the runtime's, stdio).
const RESERVED_FDS: u64 = 512;

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
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .context("reading the open files limit")?;
    let per_process = hard.saturating_sub(RESERVED_FDS) / FDS_PER_AGENT;
    // Root may raise its hard limit (CAP_SYS_RESOURCE); else more agents take more processes.
    let wanted = u64::from(plan.agents) * FDS_PER_AGENT + RESERVED_FDS;
    if plan.shard.is_none()
        && u64::from(plan.agents) > per_process
        && troupe::limits::raise_open_files_to(wanted).is_err()
    {
        let count = u64::from(plan.agents).div_ceil(per_process.max(1));
        tracing::info!(count, per_process, "the agents run in several processes");
        return shards::run(&plan, u32::try_from(count).unwrap_or(u32::MAX));
    }
    let wanted = plan.mine().len() as u64 * FDS_PER_AGENT + RESERVED_FDS;
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
                "event": "ready", "agents": plan.mine().len(), "probe": plan.probe_range(),
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
