//! A swarm larger than one process may hold: its agents split into shard processes (this
//! binary again, with `--shard I/M`), whose lines this one passes on.
//!
//! Each simulated agent takes about [`crate::FDS_PER_AGENT`] descriptors, and the hard
//! `RLIMIT_NOFILE` of a process that cannot raise it (no CAP_SYS_RESOURCE, as in many
//! containers) may be 20 000: 1 600 agents. Shards die with this process (PDEATHSIG); SIGUSR1
//! and SIGTERM/SIGINT are passed on to every shard.

use crate::args::Plan;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;
use tokio::sync::mpsc;

/// What a shard said or did.
enum ShardNews {
    Line(usize, String),
    Exited(usize, std::io::Result<std::process::ExitStatus>),
}

/// Runs `plan` as `count` shard processes until SIGTERM or SIGINT, or until one exits.
pub fn run(plan: &Plan, count: u32) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(supervise(plan, count))
}

async fn supervise(plan: &Plan, count: u32) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let exe = std::env::current_exe()?;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let (tx, mut news) = mpsc::unbounded_channel();
    let mut pids = Vec::new();
    for index in 0..count {
        let mut command = Command::new(&exe);
        command
            .args(&argv)
            .arg("--shard")
            .arg(format!("{index}/{count}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: only an async-signal-safe prctl between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start shard {index}/{count}: {e}"))?;
        pids.push(child.id().unwrap_or(0));
        let stdout = child.stdout.take().expect("piped");
        let lines_tx = tx.clone();
        let shard = index as usize;
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = lines_tx.send(ShardNews::Line(shard, line));
            }
            let _ = lines_tx.send(ShardNews::Exited(shard, child.wait().await));
        });
    }
    drop(tx);
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut ready: Vec<Option<Value>> = vec![None; count as usize];
    let mut stopping = false;
    let send_all = |signal| {
        for &pid in &pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
    };
    loop {
        tokio::select! {
            _ = usr1.recv() => send_all(nix::sys::signal::Signal::SIGUSR1),
            _ = term.recv() => {
                stopping = true;
                send_all(nix::sys::signal::Signal::SIGTERM);
            }
            _ = tokio::signal::ctrl_c() => {
                stopping = true;
                send_all(nix::sys::signal::Signal::SIGTERM);
            }
            item = news.recv() => match item {
                Some(ShardNews::Line(shard, line)) => {
                    let event: Option<Value> = serde_json::from_str(&line).ok();
                    match event {
                        Some(event) if event["event"] == "ready" => {
                            ready[shard] = Some(event);
                            if ready.iter().all(Option::is_some) {
                                print_ready(plan, &ready, &pids);
                            }
                        }
                        _ => println!("{line}"),
                    }
                }
                Some(ShardNews::Exited(..)) if stopping => {}
                Some(ShardNews::Exited(shard, status)) => {
                    send_all(nix::sys::signal::Signal::SIGTERM);
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    anyhow::bail!("shard {shard}/{count} ended ({status}): every shard stopped");
                }
                None => return Ok(()),
            }
        }
    }
}

/// One `ready` line for the whole swarm, with the shards' pids (their CPU is the swarm's).
fn print_ready(plan: &Plan, ready: &[Option<Value>], pids: &[u32]) {
    let bind_seconds = ready
        .iter()
        .flatten()
        .filter_map(|r| r["bind_seconds"].as_f64())
        .fold(0.0, f64::max);
    println!(
        "{}",
        json!({
            "event": "ready", "agents": plan.agents, "probe": plan.probe_range(),
            "cluster": plan.cluster, "keyed": plan.key_file.is_some(),
            "bind_seconds": bind_seconds, "shards": pids,
            "time": troupe::protocol::now_epoch(),
        })
    );
}
