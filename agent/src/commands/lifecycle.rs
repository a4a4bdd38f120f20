//! start, stop, restart, reload, incr, decr.

use super::options::{check_remote_numprocesses, numprocesses_ceiling};
use super::{fields, matching, watcher, AgentContext, Caller, Fields, Props};
use crate::watcher::{Reply, Transition, WatcherHandle, WatcherMsg};
use serde_json::{json, Map, Value};
use std::time::Duration;
use tokio::sync::oneshot;
use troupe::config::MAX_NUMPROCESSES;
use troupe::protocol::CommandError;

/// How long a `start` without `waiting` waits for its outcome before answering that it is
/// queued: a program that cannot be spawned fails within milliseconds, and that failure is
/// then the answer rather than "ok". A start that takes longer (many processes, a slow hook,
/// a slow stop queued before it) is answered as queued, as Circus does, and its outcome logged.
const START_FAILURE_WAIT: Duration = Duration::from_secs(1);

/// Queues a command on a watcher; with `waiting` returns its result, otherwise only makes
/// sure it is queued (its outcome is logged).
pub(super) async fn run_on<T: Send + 'static>(
    handle: &WatcherHandle,
    waiting: bool,
    make: impl FnOnce(Reply<T>) -> WatcherMsg,
) -> Result<Option<T>, CommandError> {
    let rx = handle.enqueue(make).await?;
    if waiting {
        return rx
            .await
            .map_err(|_| CommandError::command(format!("watcher '{}' was removed", handle.name)))?
            .map(Some);
    }
    failure_within(&handle.name, rx, Duration::ZERO).await
}

/// Waits up to `patience` for a queued command's result: a failure by then is returned; a
/// success, or no result yet, answers `Ok(None)` (queued), and a later failure is logged.
async fn failure_within<T: Send + 'static>(
    name: &str,
    mut rx: oneshot::Receiver<Result<T, CommandError>>,
    patience: Duration,
) -> Result<Option<T>, CommandError> {
    if !patience.is_zero() {
        match tokio::time::timeout(patience, &mut rx).await {
            Ok(Ok(Err(e))) => return Err(e),
            Ok(_) => return Ok(None),
            Err(_) => {}
        }
    }
    let name = name.to_string();
    tokio::spawn(async move {
        if let Ok(Err(e)) = rx.await {
            tracing::warn!(watcher = %name, "background command failed: {e}");
        }
    });
    Ok(None)
}

fn info(t: &Transition, with_stopped: bool) -> Value {
    let mut info = Map::new();
    if with_stopped {
        info.insert("stopped".into(), json!(t.stopped));
    }
    info.insert("started".into(), json!(t.started));
    info.insert("kept".into(), json!(t.kept));
    Value::Object(info)
}

/// Watchers sorted for starting: highest priority first, then by name.
fn by_priority(mut watchers: Vec<WatcherHandle>, descending: bool) -> Vec<WatcherHandle> {
    watchers.sort_by_cached_key(|w| {
        let p = w.view().config.priority;
        (if descending { -p } else { p }, w.name.to_lowercase())
    });
    watchers
}

/// Starts watchers one after another in priority order, as Circus does.
async fn start_in_order(watchers: Vec<WatcherHandle>, waiting: bool) -> Result<(), CommandError> {
    let watchers: Vec<WatcherHandle> = by_priority(watchers, true)
        .into_iter()
        .filter(|w| w.view().config.autostart)
        .collect();
    let sequence = async move {
        let mut first_error = None;
        for w in watchers {
            if let Err(e) = w.call(WatcherMsg::Start).await {
                tracing::warn!(watcher = %w.name, "start failed: {e}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    };
    if waiting {
        return sequence.await;
    }
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(sequence.await);
    });
    failure_within("*", rx, START_FAILURE_WAIT).await?;
    Ok(())
}

/// Stops watchers concurrently, as Circus's stop-all does.
async fn stop_all(watchers: &[WatcherHandle], waiting: bool) -> Result<(), CommandError> {
    let mut pending = Vec::new();
    for w in watchers {
        pending.push(w.enqueue(WatcherMsg::Stop).await?);
    }
    if waiting {
        for rx in pending {
            let _ = rx.await;
        }
    }
    Ok(())
}

pub async fn start(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let waiting = props.waiting()?;
    if !props.has("name") {
        start_in_order(ctx.arbiter.all().await?, waiting).await?;
        return Ok(Map::new());
    }
    let found = matching(ctx, props).await?;
    if let [single] = found.as_slice() {
        if !waiting {
            let rx = single.enqueue(WatcherMsg::Start).await?;
            failure_within(&single.name, rx, START_FAILURE_WAIT).await?;
            return Ok(Map::new());
        }
        return Ok(match run_on(single, waiting, WatcherMsg::Start).await? {
            Some(t) => fields([("info", info(&t, false))]),
            None => Map::new(),
        });
    }
    start_in_order(found, waiting).await?;
    Ok(Map::new())
}

pub async fn stop(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let waiting = props.waiting()?;
    let found = if props.has("name") {
        matching(ctx, props).await?
    } else {
        ctx.arbiter.all().await?
    };
    if let [single] = found.as_slice() {
        if props.has("name") {
            run_on(single, waiting, WatcherMsg::Stop).await?;
            return Ok(if waiting {
                fields([("info", Value::Null)])
            } else {
                Map::new()
            });
        }
    }
    stop_all(&found, waiting).await?;
    Ok(Map::new())
}

pub async fn restart(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let waiting = props.waiting()?;
    let found = if props.has("name") {
        matching(ctx, props).await?
    } else {
        // troupe restarts every watcher; unlike circusd it never rebinds its own sockets.
        ctx.arbiter.all().await?
    };
    if let ([single], true) = (found.as_slice(), props.has("name")) {
        return Ok(match run_on(single, waiting, WatcherMsg::Restart).await? {
            Some(t) => fields([("info", info(&t, true))]),
            None => Map::new(),
        });
    }
    let sequence = async move {
        stop_all(&found, true).await?;
        start_in_order(found, true).await
    };
    if waiting {
        sequence.await?;
    } else {
        tokio::spawn(sequence);
    }
    Ok(Map::new())
}

pub async fn reload(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let waiting = props.waiting()?;
    let graceful = props.bool_or("graceful", true)?;
    let sequential = props.bool_or("sequential", false)?;
    let make = move |reply| WatcherMsg::Reload {
        graceful,
        sequential,
        reply,
    };
    if let Some(name) = props.opt_str("name")? {
        let handle = watcher(ctx, name).await?;
        return Ok(match run_on(&handle, waiting, make).await? {
            Some(t) => fields([("info", info(&t, true))]),
            None => Map::new(),
        });
    }
    let watchers = by_priority(ctx.arbiter.all().await?, true);
    let mut pending = Vec::new();
    for w in &watchers {
        pending.push(w.enqueue(make).await?);
    }
    if waiting {
        for rx in pending {
            let _ = rx.await;
        }
    }
    Ok(Map::new())
}

/// incr (`sign` = 1) and decr (`sign` = -1).
pub async fn resize(ctx: &AgentContext, props: Props<'_>, sign: i64, caller: Caller) -> Fields {
    let handle = watcher(ctx, props.required_str("name")?).await?;
    let nb = props
        .opt_int("nb", 0, i64::from(MAX_NUMPROCESSES))?
        .unwrap_or(1);
    let waiting = props.waiting()?;
    let view = handle.view();
    if view.config.singleton {
        // Circus answers a singleton before looking at `waiting`.
        return Ok(fields([
            ("numprocesses", json!(view.config.numprocesses)),
            ("singleton", json!(true)),
        ]));
    }
    let current = view.config.numprocesses;
    let what = format!("incr '{}'", handle.name);
    check_remote_numprocesses(caller, &what, current, i64::from(current) + sign * nb)?;
    let result = run_on(&handle, waiting, |reply| WatcherMsg::Resize {
        delta: sign * nb,
        ceiling: numprocesses_ceiling(caller),
        reply,
    })
    .await?;
    let mut reply = Map::new();
    if let Some(n) = result {
        reply.insert("numprocesses".into(), json!(n));
    }
    Ok(reply)
}
