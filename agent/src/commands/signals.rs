//! signal and kill.

use super::lifecycle::run_on;
use super::{watcher, AgentContext, Fields, Props};
use crate::watcher::WatcherMsg;
use serde_json::Map;
use std::time::Duration;
use troupe::protocol::CommandError;

pub async fn signal(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let handle = watcher(ctx, props.required_str("name")?).await?;
    let signum = props
        .opt_signal("signum")?
        .ok_or_else(|| CommandError::message("message invalid 'signum' is missing"))?;
    let pid = match (props.opt_pid("pid")?, props.opt_pid("childpid")?) {
        (None, Some(child)) => {
            return Err(CommandError::message(format!(
                "childpid {child} needs the pid of its parent"
            )))
        }
        (Some(pid), Some(child)) => {
            // A single child of one of the watcher's processes.
            if !crate::watcher::process::children_of(pid).contains(&child) {
                return Err(CommandError::message(format!(
                    "child {child} not found for process {pid}"
                )));
            }
            crate::watcher::process::signal(child, signum, false)
                .map_err(|e| CommandError::os(format!("cannot signal {child}: {e}")))?;
            return Ok(Map::new());
        }
        (pid, None) => pid,
    };
    let children = props.bool_or("children", false)?;
    let recursive = props.bool_or("recursive", false)?;
    handle
        .call(|reply| WatcherMsg::Signal {
            pid,
            signum,
            children,
            recursive,
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
    run_on(&handle, props.waiting()?, |reply| WatcherMsg::Kill {
        pid,
        signum,
        graceful_timeout,
        reply,
    })
    .await?;
    Ok(Map::new())
}
