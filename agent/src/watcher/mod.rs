//! Watchers: one actor task per watcher owns its processes; everyone else holds a
//! [`WatcherHandle`] that queues commands in order and reads a [`WatcherView`] snapshot.

mod actor;
pub mod env_file;
pub(crate) mod hooks;
pub mod process;
mod vfork;

use serde_json::Value;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use troupe::config::WatcherConfig;
use troupe::protocol::{CommandError, StopReason};

pub use actor::spawn;

/// Circus's watcher states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatcherState {
    Stopped,
    Starting,
    Active,
    Stopping,
}

impl WatcherState {
    pub fn as_str(self) -> &'static str {
        match self {
            WatcherState::Stopped => "stopped",
            WatcherState::Starting => "starting",
            WatcherState::Active => "active",
            WatcherState::Stopping => "stopping",
        }
    }
}

/// One process as readers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessView {
    pub pid: u32,
    pub wid: u32,
    pub started: f64,
}

/// What a watcher looks like now; published after every change.
#[derive(Debug, Clone)]
pub struct WatcherView {
    pub config: WatcherConfig,
    pub state: WatcherState,
    /// Oldest first.
    pub processes: Vec<ProcessView>,
    /// Why it is stopped, when it stopped by itself (flapping, unspawnable...).
    pub stopped_reason: Option<StopReason>,
}

impl WatcherView {
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(|p| p.pid).collect()
    }
}

/// Pids a lifecycle command started, stopped and kept: Circus's `info` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transition {
    pub started: Vec<u32>,
    pub stopped: Vec<u32>,
    pub kept: Vec<u32>,
}

pub type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

/// Which processes a `signal` reaches: never any but the watcher's own and their descendants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalScope {
    /// Every process of the watcher, or the one `pid` of it; with `children`, their children
    /// instead; with `recursive`, them and all their descendants.
    Processes {
        pid: Option<u32>,
        children: bool,
        recursive: bool,
    },
    /// One descendant `childpid` of the watcher's process `pid` (Circus's `childpid`).
    Descendant { pid: u32, childpid: u32 },
}

/// Commands a watcher actor carries out, one at a time, in the order they were queued.
pub enum WatcherMsg {
    Start(Reply<Transition>),
    Stop(Reply<Transition>),
    Restart(Reply<Transition>),
    Reload {
        graceful: bool,
        sequential: bool,
        reply: Reply<Transition>,
    },
    /// incr (positive) / decr (negative), growing to `ceiling` at most (or the current count
    /// when that is higher); replies with the new numprocesses.
    Resize {
        delta: i64,
        ceiling: u32,
        reply: Reply<u32>,
    },
    /// Applies options, replying once they are applied (or, with `waiting`, once the reload
    /// they need is done too).
    Set {
        options: Vec<(String, Value)>,
        waiting: bool,
        reply: Reply<()>,
    },
    Signal {
        scope: SignalScope,
        signum: i32,
        reply: Reply<()>,
    },
    Kill {
        pid: Option<u32>,
        signum: i32,
        graceful_timeout: Duration,
        reply: Reply<()>,
    },
    /// Ends the actor, stopping the processes first unless `stop` is false (`rm --nostop`).
    Shutdown {
        stop: bool,
        reply: Reply<()>,
    },
}

/// A cheap, cloneable reference to a watcher actor.
#[derive(Clone)]
pub struct WatcherHandle {
    pub name: String,
    tx: mpsc::Sender<WatcherMsg>,
    view: watch::Receiver<WatcherView>,
    /// The watcher's output lines, read by `logs` without queuing behind its commands.
    pub ring: crate::log_ring::LogRingHandle,
}

impl WatcherHandle {
    pub fn view(&self) -> WatcherView {
        self.view.borrow().clone()
    }

    /// Queues a command and returns where its result will arrive. Queuing is what orders
    /// commands; awaiting the result is what `waiting = true` means.
    pub async fn enqueue<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> WatcherMsg,
    ) -> Result<oneshot::Receiver<Result<T, CommandError>>, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| self.gone())?;
        Ok(rx)
    }

    /// Queues a command and waits for its result.
    pub async fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> WatcherMsg,
    ) -> Result<T, CommandError> {
        let rx = self.enqueue(make).await?;
        rx.await.map_err(|_| self.gone())?
    }

    /// Resolves when the actor has ended.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    fn gone(&self) -> CommandError {
        CommandError::command(format!("watcher '{}' was removed", self.name))
    }
}
