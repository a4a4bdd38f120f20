//! One supervised process: how it is spawned, signalled and reaped.

pub use super::vfork::ExitCode;
use super::{env_file, vfork};
use crate::log_ring::LogRingHandle;
use crate::output::{OutputLog, Sinks};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use troupe::config::WatcherConfig;
use troupe::protocol::{now_epoch, LogStream};

/// How long a reaped process's output may keep draining before its exit is reported anyway
/// (a daemonised grandchild can hold the pipe open forever).
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// The `RLIMIT_NOFILE` (soft, hard) the agent was started with, given back to every child: the
/// agent raises its own soft limit (the sampler keeps files open per sampled process), but a
/// program that select()s or closes every fd up to the limit should get what circusd would give.
static CHILD_OPEN_FILES: OnceLock<(u64, u64)> = OnceLock::new();

/// Raises the agent's soft `RLIMIT_NOFILE` to the hard limit, at start, remembering the original
/// for the children.
pub fn raise_open_files_limit() {
    if let Some(original) = troupe::limits::raise_open_files() {
        let _ = CHILD_OPEN_FILES.set(original);
    }
}

/// A running (or just exited) process, as its watcher tracks it.
#[derive(Debug)]
pub struct Process {
    pub pid: u32,
    pub wid: u32,
    /// Epoch seconds when it was spawned.
    pub started: f64,
    pub spawned_at: Instant,
    /// When `max_age` recycles it, if ever.
    pub recycle_at: Option<Instant>,
    /// Becomes `Some` once the process was reaped and its output drained.
    pub exit: watch::Receiver<Option<ExitCode>>,
}

/// Where the watcher's output goes, shared by its processes: its files, and its ring (None
/// when `log_ring_bytes` is 0).
#[derive(Clone, Default)]
pub struct OutputLogs {
    pub stdout: Option<OutputLog>,
    pub stderr: Option<OutputLog>,
    pub ring: Option<LogRingHandle>,
}

/// How a process ended, as its reaper reports it to the watcher.
#[derive(Debug)]
pub struct Exit {
    pub pid: u32,
    pub code: ExitCode,
    /// The last non-blank line it wrote to stderr, when its stderr was read.
    pub last_stderr: Option<String>,
}

/// Spawns one process of `config` with worker id `wid`. The reaper task reports the exit on
/// `exits` once the process is reaped (at once: it waits on the process's pidfd). Its env
/// files are read now, so each spawn sees what `configure` last wrote. With `tail_stderr`, a
/// stderr that has no log file is read too (and passed on to the agent's stderr), so the exit
/// carries its last line.
pub fn spawn(
    config: &WatcherConfig,
    state_dir: &Path,
    wid: u32,
    logs: &OutputLogs,
    tail_stderr: bool,
    exits: &mpsc::UnboundedSender<Exit>,
) -> std::io::Result<Process> {
    let argv = config.argv_for(wid);
    let Some((program, args)) = argv.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        ));
    };
    let (from_files, skipped) = env_file::load(&env_file::for_watcher(config, state_dir))?;
    for line in skipped {
        tracing::warn!(watcher = %config.name, "{line}");
    }
    let mut env: Vec<(OsString, OsString)> = if config.copy_env {
        std::env::vars_os()
            .filter(|(key, _)| {
                !crate::systemd::AGENT_ONLY_VARIABLES
                    .iter()
                    .any(|v| key == v)
            })
            .collect()
    } else {
        Vec::new()
    };
    // Circus's copy_env=false leaves children without PATH; troupe always passes it on.
    let path = std::env::var_os("PATH").unwrap_or_else(|| troupe::config::DEFAULT_PATH.into());
    let overrides = std::iter::once((OsString::from("PATH"), path))
        .chain(from_files.into_iter().map(|(k, v)| (k.into(), v.into())))
        .chain(
            config
                .env
                .iter()
                .map(|(key, value)| (key.into(), value.into())),
        )
        .chain([
            ("TROUPE_WATCHER".into(), config.name.as_str().into()),
            ("TROUPE_WID".into(), wid.to_string().into()),
        ]);
    for (key, value) in overrides {
        env.retain(|(existing, _)| *existing != key);
        env.push((key, value));
    }
    let mut child = vfork::spawn(&vfork::Program {
        program: program.as_ref(),
        args,
        env,
        working_dir: config.working_dir.as_deref(),
        capture_stdout: logs.stdout.is_some() || logs.ring.is_some(),
        capture_stderr: logs.stderr.is_some() || logs.ring.is_some() || tail_stderr,
        open_files: CHILD_OPEN_FILES.get().copied(),
    })?;
    let pid = child.pid;
    let captures = match capture_output(pid, logs, &mut child) {
        Ok(captures) => captures,
        Err(e) => {
            // It runs already: it must not run on unsupervised, nor stay a zombie.
            kill_group(pid);
            tokio::spawn(child.wait());
            return Err(e);
        }
    };
    let (exit_tx, exit_rx) = watch::channel(None);
    let exits = exits.clone();
    tokio::spawn(async move {
        let code = match child.wait().await {
            Ok(code) => code,
            Err(e) => {
                tracing::error!(pid, "waiting for process failed: {e}");
                None
            }
        };
        // The leader is gone: nothing it started may outlive it unsupervised, and its
        // descendants would otherwise hold the output pipes open.
        kill_group(pid);
        // Output written before the exit must reach the log before the exit is reported.
        let drain = futures::future::join(
            futures::future::OptionFuture::from(captures.stdout),
            futures::future::OptionFuture::from(captures.stderr),
        );
        let last_stderr = match tokio::time::timeout(OUTPUT_DRAIN_LIMIT, drain).await {
            Ok((_, Some(Ok(last)))) => last,
            _ => None,
        };
        let _ = exit_tx.send(Some(code));
        let _ = exits.send(Exit {
            pid,
            code,
            last_stderr,
        });
    });
    let recycle_at = (!config.max_age.is_zero())
        .then(|| Instant::now() + config.max_age + jitter(config.max_age_variance, pid));
    Ok(Process {
        pid,
        wid,
        started: now_epoch(),
        spawned_at: Instant::now(),
        recycle_at,
        exit: exit_rx,
    })
}

/// The tasks copying a child's output; each ends with its stream's last line.
#[derive(Default)]
struct Captures {
    stdout: Option<tokio::task::JoinHandle<Option<String>>>,
    stderr: Option<tokio::task::JoinHandle<Option<String>>>,
}

/// Starts copying the child's captured output into the watcher's logs (a stderr read only for
/// its last line goes on to the agent's stderr).
fn capture_output(
    pid: u32,
    logs: &OutputLogs,
    child: &mut vfork::Child,
) -> std::io::Result<Captures> {
    let pipe = |fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd);
    let ring = |stream| logs.ring.clone().map(|ring| (ring, stream));
    let mut captures = Captures::default();
    if let Some(read_end) = child.stdout.take() {
        let sinks = Sinks {
            file: logs.stdout.clone(),
            ring: ring(LogStream::Stdout),
            agent_stderr: false,
        };
        captures.stdout = Some(crate::output::capture(pid, pipe(read_end)?, sinks));
    }
    if let Some(read_end) = child.stderr.take() {
        let sinks = Sinks {
            file: logs.stderr.clone(),
            ring: ring(LogStream::Stderr),
            agent_stderr: logs.stderr.is_none() && logs.ring.is_none(),
        };
        captures.stderr = Some(crate::output::capture(pid, pipe(read_end)?, sinks));
    }
    Ok(captures)
}

/// Spreads recycling over `[0, variance)` so processes started together do not all restart
/// together; it needs spread, not unpredictability.
fn jitter(variance: Duration, pid: u32) -> Duration {
    let nanos = variance.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    let seed = now_epoch().to_bits() ^ u64::from(pid).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Duration::from_nanos(seed % nanos)
}

/// Sends `signal` to the process, or to its whole group.
pub fn signal(pid: u32, signal: i32, whole_group: bool) -> nix::Result<()> {
    let signal = Signal::try_from(signal)?;
    let target = Pid::from_raw(pid as i32);
    if whole_group {
        killpg(target, signal)
    } else {
        kill(target, signal)
    }
}

/// SIGKILLs whatever is left in the process's group (its descendants, after it exited).
pub fn kill_group(pid: u32) {
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// Direct children of `pid`, from `/proc/<pid>/task/*/children`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return children;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    children
}

/// `pid`'s descendants, depth first.
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut stack = children_of(pid);
    while let Some(p) = stack.pop() {
        if !found.contains(&p) {
            found.push(p);
            stack.extend(children_of(p));
        }
    }
    found
}
