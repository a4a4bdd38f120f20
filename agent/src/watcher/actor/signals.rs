//! Signals and stops: how a watcher's processes are asked, then forced, to exit.

use super::*;

impl WatcherActor {
    /// Stops processes the table no longer holds: stop_signal, then SIGKILL to the group at
    /// graceful_timeout, and SIGKILL to whatever the leader left behind in its group.
    pub(super) async fn stop_processes(&mut self, processes: Vec<Process>) -> Vec<u32> {
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

    pub(super) fn targets(&self, pid: Option<u32>) -> Result<Vec<u32>, CommandError> {
        match pid {
            Some(pid) if self.processes.iter().any(|p| p.pid == pid) => Ok(vec![pid]),
            Some(pid) => Err(CommandError::message(format!(
                "process {pid} not found in '{}'",
                self.name()
            ))),
            None => Ok(self.pids()),
        }
    }

    /// Sends `signum` to the processes `scope` names, once they are known to be this
    /// watcher's own or their descendants: a pid from the wire is never signalled on its word.
    pub(super) fn signal(&self, scope: SignalScope, signum: i32) -> Result<(), CommandError> {
        let mut pids = Vec::new();
        match scope {
            SignalScope::Descendant { pid, childpid } => {
                self.targets(Some(pid))?;
                if !process::descendants_of(pid).contains(&childpid) {
                    return Err(CommandError::message(format!(
                        "child {childpid} not found for process {pid} of '{}'",
                        self.name()
                    )));
                }
                pids.push(childpid);
            }
            SignalScope::Processes {
                pid,
                children,
                recursive,
            } => {
                for target in self.targets(pid)? {
                    if children {
                        pids.extend(process::children_of(target));
                    } else {
                        pids.push(target);
                        if recursive {
                            pids.extend(process::descendants_of(target));
                        }
                    }
                }
            }
        }
        for p in pids {
            process::signal(p, signum, false)
                .map_err(|e| CommandError::os(format!("cannot signal {p}: {e}")))?;
        }
        Ok(())
    }

    pub(super) async fn kill(
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
}
