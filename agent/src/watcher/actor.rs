//! The watcher actor: the one owner of a watcher's processes and their lifecycle.

use super::hooks::{self, HookContext};
use super::process::{self, ExitCode, OutputLogs, Process};
use super::{ProcessView, Transition, WatcherHandle, WatcherMsg, WatcherState, WatcherView};
use crate::backoff::{RespawnDecision, RespawnPolicy};
use crate::events::EventSender;
use crate::output::OutputLog;
use nix::sys::signal::Signal;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};
use troupe::config::{OptionEffect, WatcherConfig};
use troupe::protocol::{CommandError, Event};

/// How long processes may take to die after SIGKILL before the stop gives up on them
/// (a process in uninterruptible sleep cannot be killed until its I/O returns).
const AFTER_KILL_WAIT: Duration = Duration::from_secs(5);
const MAILBOX: usize = 256;

/// Starts the actor for `config`, with its processes stopped.
pub fn spawn(config: WatcherConfig, events: EventSender) -> Result<WatcherHandle, CommandError> {
    let logs = open_logs(&config)?;
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (exits_tx, exits_rx) = mpsc::unbounded_channel();
    let (view_tx, view_rx) = watch::channel(WatcherView {
        config: config.clone(),
        state: WatcherState::Stopped,
        processes: Vec::new(),
    });
    let handle = WatcherHandle {
        name: config.name.clone(),
        tx,
        view: view_rx,
    };
    let actor = WatcherActor {
        config,
        state: WatcherState::Stopped,
        processes: Vec::new(),
        policy: RespawnPolicy::default(),
        respawn_at: None,
        last_spawn_error: None,
        logs,
        events,
        exits_tx,
        view_tx,
    };
    tokio::spawn(actor.run(rx, exits_rx));
    Ok(handle)
}

fn open_logs(config: &WatcherConfig) -> Result<OutputLogs, CommandError> {
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
    Ok(OutputLogs { stdout, stderr })
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
    logs: OutputLogs,
    events: EventSender,
    exits_tx: mpsc::UnboundedSender<(u32, ExitCode)>,
    view_tx: watch::Sender<WatcherView>,
}

impl WatcherActor {
    async fn run(
        mut self,
        mut mailbox: mpsc::Receiver<WatcherMsg>,
        mut exits: mpsc::UnboundedReceiver<(u32, ExitCode)>,
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
                Some((pid, code)) = exits.recv() => self.on_exit(pid, code).await,
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
            WatcherMsg::Resize { delta, reply } => {
                let _ = reply.send(Ok(self.resize(delta).await));
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
                pid,
                signum,
                children,
                recursive,
                reply,
            } => {
                let _ = reply.send(self.signal(pid, signum, children, recursive));
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
        self.view_tx.send_replace(WatcherView {
            config: self.config.clone(),
            state: self.state,
            processes,
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
            return Err(CommandError::command(format!(
                "watcher '{}' could not start: {}",
                self.name(),
                self.last_failure()
            )));
        }
        if self.processes.is_empty() && self.config.numprocesses > 0 {
            if let Some(e) = &self.last_spawn_error {
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) {
                    let reason = format!("cannot spawn {:?}: {e}", self.config.cmd);
                    self.give_up(reason.clone()).await;
                    return Err(CommandError::command(format!(
                        "watcher '{}' could not start: {reason}",
                        self.name()
                    )));
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
            self.stop(Some("after_start hook failed".into())).await;
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

    fn last_failure(&self) -> String {
        self.last_spawn_error
            .as_ref()
            .map(|e| format!("cannot spawn {:?}: {e}", self.config.cmd))
            .unwrap_or_else(|| "a spawn hook failed".into())
    }

    /// Stops every process; `reason` is set when the watcher stops itself.
    async fn stop(&mut self, reason: Option<String>) -> Transition {
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

    /// The watcher gives up on itself (flapping, unspawnable command).
    async fn give_up(&mut self, reason: String) {
        tracing::warn!(watcher = %self.name(), "stopping: {reason}");
        self.last_spawn_error = None;
        self.stop(Some(reason)).await;
    }

    /// Stops processes the table no longer holds: stop_signal, then SIGKILL to the group at
    /// graceful_timeout, and SIGKILL to whatever the leader left behind in its group.
    async fn stop_processes(&mut self, processes: Vec<Process>) -> Vec<u32> {
        if processes.is_empty() {
            return Vec::new();
        }
        for p in &processes {
            match process::signal(p.pid, self.config.stop_signal, self.config.stop_children) {
                Ok(()) => self.emit(Event::Kill { pid: p.pid }),
                Err(e) => tracing::debug!(pid = p.pid, "stop signal not delivered: {e}"),
            }
        }
        let deadline = Instant::now() + self.config.graceful_timeout;
        for p in &processes {
            let mut exit = p.exit.clone();
            let _ = timeout_at(deadline, exit.wait_for(Option::is_some)).await;
        }
        for p in &processes {
            process::kill_group(p.pid);
        }
        let mut stopped = Vec::with_capacity(processes.len());
        for p in processes {
            let mut exit = p.exit.clone();
            let code = match timeout(AFTER_KILL_WAIT, exit.wait_for(Option::is_some)).await {
                Ok(Ok(code)) => code.flatten(),
                _ => {
                    tracing::error!(pid = p.pid, watcher = %self.config.name, "process survived SIGKILL");
                    None
                }
            };
            self.emit(Event::Reap {
                pid: p.pid,
                exit_code: code,
            });
            let context = HookContext {
                pid: Some(p.pid),
                exit_code: code,
            };
            hooks::run(&self.config, "after_reap", context, &self.events).await;
            stopped.push(p.pid);
        }
        stopped
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

    async fn resize(&mut self, delta: i64) -> u32 {
        if self.config.singleton {
            return self.config.numprocesses;
        }
        let target = (i64::from(self.config.numprocesses) + delta).clamp(0, 100_000);
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
        if updated.stdout != self.config.stdout || updated.stderr != self.config.stderr {
            self.logs = open_logs(&updated)?;
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
        if self.state == WatcherState::Active {
            if reload {
                self.reload(true, false).await?;
            } else {
                self.maintain().await;
            }
        }
        Ok(())
    }

    fn targets(&self, pid: Option<u32>) -> Result<Vec<u32>, CommandError> {
        match pid {
            Some(pid) if self.processes.iter().any(|p| p.pid == pid) => Ok(vec![pid]),
            Some(pid) => Err(CommandError::message(format!(
                "process {pid} not found in '{}'",
                self.name()
            ))),
            None => Ok(self.pids()),
        }
    }

    fn signal(
        &self,
        pid: Option<u32>,
        signum: i32,
        children: bool,
        recursive: bool,
    ) -> Result<(), CommandError> {
        for target in self.targets(pid)? {
            let mut pids = Vec::new();
            if children {
                pids.extend(process::children_of(target));
            } else {
                pids.push(target);
                if recursive {
                    pids.extend(process::descendants_of(target));
                }
            }
            for p in pids {
                process::signal(p, signum, false)
                    .map_err(|e| CommandError::os(format!("cannot signal {p}: {e}")))?;
            }
        }
        Ok(())
    }

    async fn kill(
        &mut self,
        pid: Option<u32>,
        signum: i32,
        graceful_timeout: Duration,
    ) -> Result<(), CommandError> {
        let targets = self.targets(pid)?;
        let mut exits = Vec::new();
        for p in self.processes.iter().filter(|p| targets.contains(&p.pid)) {
            if process::signal(p.pid, signum, false).is_ok() {
                self.events
                    .emit(&self.config.name, Event::Kill { pid: p.pid });
            }
            exits.push((p.pid, p.exit.clone()));
        }
        let deadline = Instant::now() + graceful_timeout;
        for (pid, mut exit) in exits {
            if timeout_at(deadline, exit.wait_for(Option::is_some))
                .await
                .is_err()
            {
                process::kill_group(pid);
            }
        }
        Ok(())
    }

    async fn on_exit(&mut self, pid: u32, code: ExitCode) {
        let Some(index) = self.processes.iter().position(|p| p.pid == pid) else {
            return; // a stop already reaped and reported it
        };
        let dead = self.processes.remove(index);
        self.emit(Event::Reap {
            pid,
            exit_code: code,
        });
        let context = HookContext {
            pid: Some(pid),
            exit_code: code,
        };
        hooks::run(&self.config, "after_reap", context, &self.events).await;
        if self.state != WatcherState::Active {
            return;
        }
        if !self.config.respawn {
            if self.processes.is_empty() {
                self.set_state(WatcherState::Stopped);
                self.emit(Event::Stop { reason: None });
            }
            return;
        }
        let uptime = dead.spawned_at.elapsed();
        self.after_death(Some(uptime)).await;
    }

    /// Applies the respawn policy after a death or a failed spawn.
    async fn after_death(&mut self, uptime: Option<Duration>) {
        let decision = self.policy.on_death(
            uptime,
            self.config.min_uptime,
            self.config.max_retry,
            self.config.backoff_max,
        );
        match decision {
            RespawnDecision::GiveUp { quick_failures } => {
                let cause = match &self.last_spawn_error {
                    Some(e) => format!(" (last spawn error: {e})"),
                    None => String::new(),
                };
                self.give_up(format!(
                    "flapping: {quick_failures} quick exits in a row (max_retry = {}){cause}",
                    self.config.max_retry
                ))
                .await;
            }
            RespawnDecision::After(delay) if delay.is_zero() => Box::pin(self.maintain()).await,
            RespawnDecision::After(delay) => {
                let at = Instant::now() + delay;
                self.respawn_at = Some(self.respawn_at.map_or(at, |t| t.min(at)));
            }
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if self.respawn_at.is_some_and(|t| t <= now) {
            self.respawn_at = None;
            self.maintain().await;
        }
        let expired: Vec<u32> = self
            .processes
            .iter()
            .filter(|p| p.recycle_at.is_some_and(|t| t <= now))
            .map(|p| p.pid)
            .collect();
        for pid in expired {
            if self.state != WatcherState::Active {
                break;
            }
            let _ = self.spawn_one().await;
            if let Some(index) = self.processes.iter().position(|p| p.pid == pid) {
                let old = self.processes.remove(index);
                self.stop_processes(vec![old]).await;
            }
        }
    }

    /// Brings the process count to `numprocesses` while active: spawns what is missing
    /// (oldest-first trimming of any surplus), deferring to the backoff on failures.
    async fn maintain(&mut self) {
        let target = self.config.numprocesses as usize;
        if self.state == WatcherState::Active && self.processes.len() > target {
            let surplus = self.processes.len() - target;
            let oldest: Vec<Process> = self.processes.drain(..surplus).collect();
            self.stop_processes(oldest).await;
        }
        let mut first = true;
        while self.state == WatcherState::Active
            && self.processes.len() < self.config.numprocesses as usize
            && self.respawn_at.is_none()
        {
            if !first {
                self.warmup().await;
            }
            first = false;
            match self.spawn_one().await {
                Ok(_) => {}
                Err(SpawnError::Hook(hook)) => {
                    self.give_up(format!("{hook} hook failed")).await;
                    return;
                }
                Err(SpawnError::Io(e)) => {
                    tracing::warn!(watcher = %self.name(), "spawn failed: {e}");
                    self.last_spawn_error = Some(e);
                    Box::pin(self.after_death(None)).await;
                    return;
                }
            }
        }
    }

    async fn warmup(&self) {
        if !self.config.warmup_delay.is_zero() {
            sleep(self.config.warmup_delay).await;
        }
    }

    async fn spawn_one(&mut self) -> Result<u32, SpawnError> {
        if !hooks::run(
            &self.config,
            "before_spawn",
            HookContext::default(),
            &self.events,
        )
        .await
        {
            return Err(SpawnError::Hook("before_spawn"));
        }
        let wid = (1..)
            .find(|w| !self.processes.iter().any(|p| p.wid == *w))
            .unwrap_or(1);
        let spawned = process::spawn(&self.config, wid, &self.logs, &self.exits_tx)
            .map_err(SpawnError::Io)?;
        let pid = spawned.pid;
        self.processes.push(spawned);
        self.emit(Event::Spawn { pid });
        let context = HookContext {
            pid: Some(pid),
            exit_code: None,
        };
        if !hooks::run(&self.config, "after_spawn", context, &self.events).await {
            if let Some(index) = self.processes.iter().position(|p| p.pid == pid) {
                let p = self.processes.remove(index);
                self.stop_processes(vec![p]).await;
            }
            return Err(SpawnError::Hook("after_spawn"));
        }
        Ok(pid)
    }
}
