//! The watcher actor: the one owner of a watcher's processes and their lifecycle.

use super::hooks::{self, HookContext};
use super::process::{self, Exit, ExitCode, OutputLogs, Process};
use super::{
    ProcessView, SignalScope, Transition, WatcherHandle, WatcherMsg, WatcherState, WatcherView,
};
use crate::backoff::{RespawnDecision, RespawnPolicy};
use crate::events::EventSender;
use crate::log_ring::LogRingHandle;
use crate::output::OutputLog;
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};
use troupe::config::{OptionEffect, WatcherConfig};
use troupe::protocol::{CommandError, Event, StopCause, StopReason};

/// How long processes may take to die after SIGKILL before the stop gives up on them
/// (a process in uninterruptible sleep cannot be killed until its I/O returns).
const AFTER_KILL_WAIT: Duration = Duration::from_secs(5);
const MAILBOX: usize = 256;

mod respawn;
mod signals;

/// Starts the actor for `config`, with its processes stopped. `state_dir` is the agent's: a
/// profile's files (etcd's env file) lie below it unless the watcher says otherwise.
pub fn spawn(
    config: WatcherConfig,
    events: EventSender,
    state_dir: PathBuf,
) -> Result<WatcherHandle, CommandError> {
    let ring = LogRingHandle::spawn(&config.name, config.log_ring_bytes, events.clone());
    let logs = open_logs(&config, &ring)?;
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (exits_tx, exits_rx) = mpsc::unbounded_channel();
    let (view_tx, view_rx) = watch::channel(WatcherView {
        config: config.clone(),
        state: WatcherState::Stopped,
        processes: Vec::new(),
        stopped_reason: None,
    });
    let handle = WatcherHandle {
        name: config.name.clone(),
        tx,
        view: view_rx,
        ring: ring.clone(),
    };
    let actor = WatcherActor {
        config,
        state: WatcherState::Stopped,
        processes: Vec::new(),
        policy: RespawnPolicy::default(),
        respawn_at: None,
        last_spawn_error: None,
        last_exit: None,
        stopped_reason: None,
        state_dir,
        logs,
        ring,
        events,
        exits_tx,
        view_tx,
    };
    tokio::spawn(actor.run(rx, exits_rx));
    Ok(handle)
}

/// The watcher's files, and its ring unless `log_ring_bytes` is 0.
fn open_logs(config: &WatcherConfig, ring: &LogRingHandle) -> Result<OutputLogs, CommandError> {
    let open = |output: &Option<troupe::config::OutputConfig>| {
        output
            .as_ref()
            .map(|o| {
                OutputLog::open(o).map_err(|e| {
                    CommandError::os(format!(
                        "watcher '{}': cannot open output file {}: {e}",
                        config.name,
                        o.file.display()
                    ))
                })
            })
            .transpose()
    };
    let stdout = open(&config.stdout)?;
    // One file for both streams gets one writer, so rotation sees every byte.
    let same_file =
        matches!((&config.stdout, &config.stderr), (Some(o), Some(e)) if o.file == e.file);
    let stderr = if same_file {
        stdout.clone()
    } else {
        open(&config.stderr)?
    };
    let ring = (config.log_ring_bytes > 0).then(|| ring.clone());
    Ok(OutputLogs {
        stdout,
        stderr,
        ring,
    })
}

/// Why spawning a process failed.
enum SpawnError {
    /// A before_spawn/after_spawn hook failed: the watcher stops.
    Hook(&'static str),
    Io(std::io::Error),
}

struct WatcherActor {
    config: WatcherConfig,
    state: WatcherState,
    /// Oldest first.
    processes: Vec<Process>,
    policy: RespawnPolicy,
    respawn_at: Option<Instant>,
    last_spawn_error: Option<std::io::Error>,
    /// The last process's exit code and last stderr line, for a stop reason.
    last_exit: Option<(ExitCode, Option<String>)>,
    /// Why the watcher stopped by itself; cleared by a start or a commanded stop.
    stopped_reason: Option<StopReason>,
    state_dir: PathBuf,
    logs: OutputLogs,
    /// Kept while `log_ring_bytes` is 0 too, so lines already in it stay readable.
    ring: LogRingHandle,
    events: EventSender,
    exits_tx: mpsc::UnboundedSender<Exit>,
    view_tx: watch::Sender<WatcherView>,
}

impl WatcherActor {
    async fn run(
        mut self,
        mut mailbox: mpsc::Receiver<WatcherMsg>,
        mut exits: mpsc::UnboundedReceiver<Exit>,
    ) {
        loop {
            let timer = self.next_timer();
            tokio::select! {
                msg = mailbox.recv() => match msg {
                    Some(WatcherMsg::Shutdown { stop, reply }) => {
                        if stop {
                            self.stop(None).await;
                        }
                        self.publish_view();
                        let _ = reply.send(Ok(()));
                        return;
                    }
                    Some(msg) => self.handle(msg).await,
                    None => {
                        self.stop(None).await;
                        return;
                    }
                },
                Some(exit) = exits.recv() => self.on_exit(exit).await,
                _ = sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => {
                    self.on_timer().await
                }
            }
            self.publish_view();
        }
    }

    async fn handle(&mut self, msg: WatcherMsg) {
        match msg {
            WatcherMsg::Start(reply) => {
                let _ = reply.send(self.start().await);
            }
            WatcherMsg::Stop(reply) => {
                let _ = reply.send(Ok(self.stop(None).await));
            }
            WatcherMsg::Restart(reply) => {
                let _ = reply.send(self.restart().await);
            }
            WatcherMsg::Reload {
                graceful,
                sequential,
                reply,
            } => {
                let _ = reply.send(self.reload(graceful, sequential).await);
            }
            WatcherMsg::Resize {
                delta,
                ceiling,
                reply,
            } => {
                let _ = reply.send(Ok(self.resize(delta, ceiling).await));
            }
            WatcherMsg::Set {
                options,
                waiting,
                reply,
            } => match self.apply_options(options) {
                Ok(reload) if waiting => {
                    let result = self.after_set(reload).await;
                    let _ = reply.send(result);
                }
                Ok(reload) => {
                    let _ = reply.send(Ok(()));
                    if let Err(e) = self.after_set(reload).await {
                        tracing::warn!(watcher = %self.name(), "reload after set failed: {e}");
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            WatcherMsg::Signal {
                scope,
                signum,
                reply,
            } => {
                let _ = reply.send(self.signal(scope, signum));
            }
            WatcherMsg::Kill {
                pid,
                signum,
                graceful_timeout,
                reply,
            } => {
                let _ = reply.send(self.kill(pid, signum, graceful_timeout).await);
            }
            WatcherMsg::Shutdown { .. } => unreachable!("handled by the run loop"),
        }
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn emit(&self, event: Event) {
        self.events.emit(&self.config.name, event);
    }

    fn set_state(&mut self, state: WatcherState) {
        self.state = state;
        self.publish_view();
    }

    fn publish_view(&self) {
        let processes = self
            .processes
            .iter()
            .map(|p| ProcessView {
                pid: p.pid,
                wid: p.wid,
                started: p.started,
            })
            .collect();
        let stopped_reason = match self.state {
            WatcherState::Stopped => self.stopped_reason.clone(),
            _ => None,
        };
        self.view_tx.send_replace(WatcherView {
            config: self.config.clone(),
            state: self.state,
            processes,
            stopped_reason,
        });
    }

    fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(|p| p.pid).collect()
    }

    fn next_timer(&self) -> Option<Instant> {
        let recycle = self.processes.iter().filter_map(|p| p.recycle_at).min();
        match (self.respawn_at, recycle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn start(&mut self) -> Result<Transition, CommandError> {
        if self.state == WatcherState::Active {
            return Ok(Transition {
                kept: self.pids(),
                ..Default::default()
            });
        }
        self.policy.reset();
        self.last_spawn_error = None;
        self.last_exit = None;
        self.stopped_reason = None;
        self.set_state(WatcherState::Starting);
        if !hooks::run(
            &self.config,
            "before_start",
            HookContext::default(),
            &self.events,
        )
        .await
        {
            self.set_state(WatcherState::Stopped);
            return Err(CommandError::command(format!(
                "before_start hook of '{}' failed: start aborted",
                self.name()
            )));
        }
        let before: Vec<u32> = self.pids();
        self.state = WatcherState::Active;
        self.maintain().await;
        if self.state != WatcherState::Active {
            return Err(self.could_not_start());
        }
        if self.processes.is_empty() && self.config.numprocesses > 0 {
            if let Some(e) = &self.last_spawn_error {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) {
                    let reason = StopReason {
                        error: Some(self.spawn_error_text(e)),
                        ..StopReason::new(StopCause::SpawnFailed)
                    };
                    self.give_up(reason).await;
                    return Err(self.could_not_start());
                }
            }
        }
        self.emit(Event::Start);
        if !hooks::run(
            &self.config,
            "after_start",
            HookContext::default(),
            &self.events,
        )
        .await
        {
            let reason = StopReason {
                error: Some("after_start hook failed".into()),
                ..StopReason::new(StopCause::HookFailed)
            };
            self.give_up(reason).await;
            return Err(CommandError::command(format!(
                "after_start hook of '{}' failed: watcher stopped",
                self.name()
            )));
        }
        let started = self
            .pids()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        Ok(Transition {
            started,
            ..Default::default()
        })
    }

    /// The error of a start that left the watcher stopped, with the reason it gave up.
    fn could_not_start(&self) -> CommandError {
        let why = self
            .stopped_reason
            .as_ref()
            .map_or_else(|| "a spawn hook failed".into(), ToString::to_string);
        CommandError::command(format!("watcher '{}' could not start: {why}", self.name()))
    }

    /// `cannot spawn etcd: No such file or directory (os error 2)`: the program as the
    /// watcher's command names it, and the error.
    fn spawn_error_text(&self, e: &std::io::Error) -> String {
        let argv = self.config.argv();
        let program = argv
            .first()
            .map_or(self.config.cmd.as_str(), String::as_str);
        format!("cannot spawn {program}: {e}")
    }

    /// Stops every process; `reason` is set when the watcher stops itself.
    async fn stop(&mut self, reason: Option<String>) -> Transition {
        if reason.is_none() {
            self.stopped_reason = None;
        }
        self.respawn_at = None;
        if self.state == WatcherState::Stopped && self.processes.is_empty() {
            return Transition::default();
        }
        self.set_state(WatcherState::Stopping);
        hooks::run(
            &self.config,
            "before_stop",
            HookContext::default(),
            &self.events,
        )
        .await;
        let processes = std::mem::take(&mut self.processes);
        let stopped = self.stop_processes(processes).await;
        self.set_state(WatcherState::Stopped);
        self.emit(Event::Stop { reason });
        hooks::run(
            &self.config,
            "after_stop",
            HookContext::default(),
            &self.events,
        )
        .await;
        Transition {
            stopped,
            ..Default::default()
        }
    }

    /// The watcher gives up on itself (flapping, unspawnable command, failed hook); `status`
    /// shows why until the next start.
    async fn give_up(&mut self, reason: StopReason) {
        tracing::warn!(watcher = %self.name(), "stopping: {reason}");
        self.last_spawn_error = None;
        let text = reason.to_string();
        self.stopped_reason = Some(reason);
        self.stop(Some(text)).await;
    }

    async fn restart(&mut self) -> Result<Transition, CommandError> {
        let stopped = self.stop(None).await.stopped;
        let started = self.start().await?.started;
        Ok(Transition {
            started,
            stopped,
            kept: Vec::new(),
        })
    }

    async fn reload(
        &mut self,
        graceful: bool,
        sequential: bool,
    ) -> Result<Transition, CommandError> {
        let transition = if self.state != WatcherState::Active {
            // Circus starts a stopped watcher on reload.
            self.start().await?
        } else if self.config.send_hup {
            for pid in self.pids() {
                let _ = process::signal(pid, Signal::SIGHUP as i32, false);
            }
            Transition {
                kept: self.pids(),
                ..Default::default()
            }
        } else if !graceful {
            self.restart().await?
        } else if sequential {
            let mut transition = Transition::default();
            let old = std::mem::take(&mut self.processes);
            for p in old {
                transition
                    .stopped
                    .extend(self.stop_processes(vec![p]).await);
                if let Ok(pid) = self.spawn_one().await {
                    transition.started.push(pid);
                }
                self.warmup().await;
            }
            self.maintain().await;
            transition
        } else {
            let old = std::mem::take(&mut self.processes);
            let mut transition = Transition::default();
            for _ in 0..self.config.numprocesses {
                match self.spawn_one().await {
                    Ok(pid) => transition.started.push(pid),
                    Err(_) => break,
                }
                self.warmup().await;
            }
            transition.stopped = self.stop_processes(old).await;
            self.maintain().await;
            transition
        };
        self.emit(Event::Reload);
        Ok(transition)
    }

    async fn resize(&mut self, delta: i64, ceiling: u32) -> u32 {
        if self.config.singleton {
            return self.config.numprocesses;
        }
        // The caller checked the ceiling against what it saw; requests queued together could
        // still add up past it, so it holds here too.
        let ceiling = ceiling.max(self.config.numprocesses);
        let target = (i64::from(self.config.numprocesses) + delta).clamp(0, i64::from(ceiling));
        self.config.numprocesses = target as u32;
        if self.state == WatcherState::Active {
            self.maintain().await;
        }
        self.config.numprocesses
    }

    /// Validates and applies options; returns whether processes must be replaced.
    fn apply_options(
        &mut self,
        options: Vec<(String, serde_json::Value)>,
    ) -> Result<bool, CommandError> {
        let mut updated = self.config.clone();
        let mut reload = false;
        for (key, value) in &options {
            let effect = updated
                .apply(key, value)
                .map_err(|e| CommandError::message(e.to_string()))?;
            reload |= effect == OptionEffect::Reload;
        }
        updated.check().map_err(CommandError::message)?;
        if updated.stdout != self.config.stdout
            || updated.stderr != self.config.stderr
            || updated.log_ring_bytes != self.config.log_ring_bytes
        {
            self.logs = open_logs(&updated, &self.ring)?;
        }
        self.config = updated;
        for _ in &options {
            self.emit(Event::Updated);
        }
        self.publish_view();
        Ok(reload)
    }

    /// Brings running processes in line with newly set options.
    async fn after_set(&mut self, reload: bool) -> Result<(), CommandError> {
        self.ring.resize(self.config.log_ring_bytes).await;
        if self.state == WatcherState::Active {
            if reload {
                self.reload(true, false).await?;
            } else {
                self.maintain().await;
            }
        }
        Ok(())
    }
}
