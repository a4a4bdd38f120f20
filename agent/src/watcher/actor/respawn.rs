//! Keeping the process count: spawning, reaping, respawn with backoff, recycling by max_age.

use super::*;

impl WatcherActor {
    pub(super) async fn on_exit(&mut self, exit: Exit) {
        let Exit {
            pid,
            code,
            last_stderr,
        } = exit;
        let Some(index) = self.processes.iter().position(|p| p.pid == pid) else {
            return; // a stop already reaped and reported it
        };
        self.last_exit = Some((code, last_stderr));
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
                self.stopped_reason = Some(self.with_last_exit(StopReason::new(StopCause::Exited)));
                self.set_state(WatcherState::Stopped);
                self.emit(Event::Stop { reason: None });
            }
            return;
        }
        let uptime = dead.spawned_at.elapsed();
        self.after_death(Some(uptime)).await;
    }

    /// Applies the respawn policy after a death or a failed spawn.
    pub(super) async fn after_death(&mut self, uptime: Option<Duration>) {
        let decision = self.policy.on_death(
            uptime,
            self.config.min_uptime,
            self.config.max_retry,
            self.config.backoff_max,
        );
        match decision {
            RespawnDecision::GiveUp { quick_failures } => {
                let reason = StopReason {
                    quick_exits: Some(quick_failures),
                    error: self
                        .last_spawn_error
                        .as_ref()
                        .map(|e| self.spawn_error_text(e)),
                    ..StopReason::new(StopCause::Flapping)
                };
                let reason = self.with_last_exit(reason);
                self.give_up(reason).await;
            }
            RespawnDecision::After(delay) if delay.is_zero() => Box::pin(self.maintain()).await,
            RespawnDecision::After(delay) => {
                let at = Instant::now() + delay;
                self.respawn_at = Some(self.respawn_at.map_or(at, |t| t.min(at)));
            }
        }
    }

    pub(super) async fn on_timer(&mut self) {
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
    pub(super) async fn maintain(&mut self) {
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
                // A spawn blocks the agent's one thread until the child has exec'd: let other
                // requests in between the spawns of a large watcher.
                tokio::task::yield_now().await;
            }
            first = false;
            match self.spawn_one().await {
                Ok(_) => {}
                Err(SpawnError::Hook(hook)) => {
                    let reason = StopReason {
                        error: Some(format!("{hook} hook failed")),
                        ..StopReason::new(StopCause::HookFailed)
                    };
                    self.give_up(reason).await;
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

    /// `reason` with the last process's exit code and stderr line, when one exited.
    fn with_last_exit(&self, mut reason: StopReason) -> StopReason {
        if let Some((code, last_stderr)) = &self.last_exit {
            reason.last_exit = *code;
            reason = reason.with_last_output(last_stderr.as_deref());
        }
        reason
    }

    pub(super) async fn warmup(&self) {
        if !self.config.warmup_delay.is_zero() {
            sleep(self.config.warmup_delay).await;
        }
    }

    pub(super) async fn spawn_one(&mut self) -> Result<u32, SpawnError> {
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
        let spawned = process::spawn(
            &self.config,
            &self.state_dir,
            wid,
            &self.logs,
            self.policy.retrying(),
            &self.exits_tx,
        )
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
