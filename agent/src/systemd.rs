//! systemd's `Type=notify` protocol (READY, RELOADING, STATUS, WATCHDOG, STOPPING), spoken
//! through the `sd-notify` crate.
//!
//! Every call is a no-op when the agent was not started by systemd (no `NOTIFY_SOCKET`), so
//! the agent runs the same by hand, under another supervisor or in tests. A failed send is
//! logged and otherwise ignored: the agent keeps supervising whatever systemd believes.

use crate::commands::AgentContext;
use sd_notify::NotifyState;
use std::time::Duration;

/// Variables systemd sets for the agent's own process, which its watchers must not inherit
/// (with `copy_env`): a watcher that speaks sd_notify would report itself ready, stopping or
/// alive as if it were the agent, and JOURNAL_STREAM would say its stderr is the journal when
/// it is the agent's pipe.
pub const AGENT_ONLY_VARIABLES: [&str; 4] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
];

fn notify(what: &str, states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(
            "could not tell systemd {what} (NOTIFY_SOCKET {:?}): {e}; systemd may time the \
             service out: check the unit's Type= and NotifyAccess=",
            std::env::var_os("NOTIFY_SOCKET").unwrap_or_default()
        );
    }
}

/// A free-form line `systemctl status` shows.
pub fn status(text: &str) {
    notify("the status", &[NotifyState::Status(text)]);
}

/// READY=1: the sockets are bound and every autostart watcher has started (or failed to,
/// which `status_line` says).
pub fn ready(status_line: &str) {
    notify(
        "the agent is ready",
        &[NotifyState::Ready, NotifyState::Status(status_line)],
    );
}

/// The STATUS line once the config is applied: how many watchers, and whether some failed.
pub fn supervising(watchers: usize, warnings: usize) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    match warnings {
        0 => format!("supervising {watchers} watcher{}", plural(watchers)),
        n => format!(
            "supervising {watchers} watcher{}, {n} warning{} (see the log: journalctl -u troupe-agent)",
            plural(watchers),
            plural(n)
        ),
    }
}

/// RELOADING=1 at a SIGHUP (with the monotonic time `Type=notify-reload` asks for); `ready`
/// follows once the config is applied.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(
            "the agent is reloading",
            &[
                NotifyState::Reloading,
                now,
                NotifyState::Status("reloading the key file and config"),
            ],
        ),
        Err(e) => tracing::warn!("RELOADING=1 not sent: reading the monotonic clock: {e}"),
    }
}

/// STOPPING=1 at SIGTERM, SIGINT or `quit`, before the watchers are stopped (which can take
/// their graceful timeouts).
pub fn stopping() {
    notify(
        "the agent is stopping",
        &[
            NotifyState::Stopping,
            NotifyState::Status("stopping all watchers"),
        ],
    );
}

/// With `WatchdogSec=` set (WATCHDOG_USEC for this pid), pings WATCHDOG=1 every half period
/// for as long as the arbiter answers: a wedged agent stops pinging and systemd restarts it.
pub fn spawn_watchdog(ctx: &AgentContext) -> Option<tokio::task::JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()?;
    let every = (period / 2).max(Duration::from_millis(1));
    tracing::info!("systemd watchdog: {period:?}, pinging every {every:?}");
    let arbiter = ctx.arbiter.clone();
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            // The arbiter owns the watcher table: if it cannot answer, neither can commands.
            if arbiter.all().await.is_ok() {
                notify("the watchdog ping", &[NotifyState::Watchdog]);
            }
        }
    }))
}
