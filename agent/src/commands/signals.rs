//! signal and kill.

use super::lifecycle::run_on;
use super::{watcher, AgentContext, Fields, Props};
use crate::watcher::{SignalScope, WatcherMsg};
use serde_json::Map;
use std::time::Duration;
use troupe::protocol::CommandError;

pub async fn signal(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let handle = watcher(ctx, props.required_str("name")?).await?;
    let signum = props
        .opt_signal("signum")?
        .ok_or_else(|| CommandError::message("message invalid 'signum' is missing"))?;
    let scope = match (props.opt_pid("pid")?, props.opt_pid("childpid")?) {
        (None, Some(child)) => {
            return Err(CommandError::message(format!(
                "childpid {child} needs the pid of its parent"
            )))
        }
        (Some(pid), Some(childpid)) => SignalScope::Descendant { pid, childpid },
        (pid, None) => SignalScope::Processes {
            pid,
            children: props.bool_or("children", false)?,
            recursive: props.bool_or("recursive", false)?,
        },
    };
    handle
        .call(|reply| WatcherMsg::Signal {
            scope,
            signum,
            reply,
        })
        .await?;
    Ok(Map::new())
}

pub async fn kill(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let handle = watcher(ctx, props.required_str("name")?).await?;
    let view = handle.view();
    let signum = props
        .opt_signal("signum")?
        .unwrap_or(view.config.stop_signal);
    let graceful_timeout = props
        .opt_duration("graceful_timeout")?
        .unwrap_or(view.config.graceful_timeout)
        .min(Duration::from_secs(3600));
    let pid = props.opt_pid("pid")?;
    // Checked here as well as by the watcher, so a foreign pid is refused even when the caller
    // does not wait.
    if let Some(pid) = pid.filter(|pid| !view.pids().contains(pid)) {
        return Err(CommandError::message(format!(
            "process {pid} not found in '{}'",
            handle.name
        )));
    }
    run_on(&handle, props.waiting()?, |reply| WatcherMsg::Kill {
        pid,
        signum,
        graceful_timeout,
        reply,
    })
    .await?;
    Ok(Map::new())
}
