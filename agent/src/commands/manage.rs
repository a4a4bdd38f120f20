//! add, rm, quit, reloadconfig: changes to the set of watchers and to the agent itself.

use super::lifecycle::run_on;
use super::options::check_remote_numprocesses;
use super::{fields, AgentContext, Caller, Fields, Props};
use crate::watcher::WatcherMsg;
use serde_json::{json, Map, Value};
use troupe::config::{check_watcher_name, AgentConfig, WatcherConfig};
use troupe::protocol::CommandError;

pub async fn add(ctx: &AgentContext, props: Props<'_>, caller: Caller) -> Fields {
    let name = props.required_str("name")?;
    let cmd = props.required_str("cmd")?;
    check_watcher_name(name).map_err(CommandError::message)?;
    let mut config = WatcherConfig::new(name, "");
    config
        .apply("cmd", &json!(cmd))
        .map_err(|e| CommandError::message(format!("cmd: {e}")))?;
    if let Some(args) = props.get("args") {
        config
            .apply("args", args)
            .map_err(|e| CommandError::message(format!("args: {e}")))?;
    }
    match props.get("options") {
        Some(Value::Object(options)) => {
            for (key, value) in options {
                config
                    .apply(key, value)
                    .map_err(|e| CommandError::message(e.to_string()))?;
            }
        }
        Some(_) => return Err(CommandError::message("'options' must be an object")),
        None => {}
    }
    config.check().map_err(CommandError::message)?;
    let what = format!("add '{name}'");
    check_remote_numprocesses(caller, &what, 0, config.numprocesses.into())?;
    let handle = ctx.arbiter.add(config).await?;
    if !props.bool_or("start", false)? {
        return Ok(Map::new());
    }
    Ok(
        match run_on(&handle, props.waiting()?, WatcherMsg::Start).await? {
            Some(t) => fields([("started", json!(t.started)), ("kept", json!(t.kept))]),
            None => Map::new(),
        },
    )
}

pub async fn rm(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let name = props.required_str("name")?;
    let stop = !props.bool_or("nostop", false)?;
    let handle = ctx
        .arbiter
        .remove(name)
        .await?
        .ok_or_else(|| CommandError::message(format!("program {name} not found")))?;
    run_on(&handle, props.waiting()?, |reply| WatcherMsg::Shutdown {
        stop,
        reply,
    })
    .await?;
    Ok(Map::new())
}

/// Stops every watcher (when waiting) and asks the agent to exit; the reply goes out first.
pub async fn quit(ctx: &AgentContext, props: Props<'_>) -> Fields {
    if props.waiting()? {
        stop_everything(ctx).await;
    }
    Ok(Map::new())
}

/// Stops all watchers concurrently and waits until they are stopped.
pub async fn stop_everything(ctx: &AgentContext) {
    let Ok(watchers) = ctx.arbiter.all().await else {
        return;
    };
    let stops = watchers.iter().map(|w| w.call(WatcherMsg::Stop));
    futures::future::join_all(stops).await;
}

pub async fn reloadconfig(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let Some(path) = &ctx.config_path else {
        return Err(CommandError::command(
            "the agent was started without a config file: nothing to reload",
        ));
    };
    let config = AgentConfig::load(path).map_err(|e| CommandError::message(e.to_string()))?;
    let key_warning = reload_key_file(ctx)
        .err()
        .map(|e| format!("cluster key not reloaded: {e}"));
    let mut warnings = apply_config(ctx, config, props.waiting()?).await?;
    warnings.extend(key_warning);
    Ok(if warnings.is_empty() {
        Map::new()
    } else {
        fields([("warnings", json!(warnings))])
    })
}

/// Reads the cluster key file again (SIGHUP and `reloadconfig`; a key rotation): keys added
/// are accepted at once, and a new first key is the one the agent listens with and tries
/// first from now on (its TCP sockets are bound again: clients connect again). The watchers
/// are not touched. On an error the keyring in use stays.
pub fn reload_key_file(ctx: &AgentContext) -> Result<(), String> {
    match ctx.settings.key_file_in_use() {
        Some(path) => ctx.server_keys.reload(&path, "the agent").map(drop),
        None => Ok(()),
    }
}

/// Makes the running watchers match `config`: adds new ones (starting those with autostart),
/// removes vanished ones, resizes those where only numprocesses changed, and replaces the
/// rest. Used at boot (everything is new) and by `reloadconfig`/SIGHUP. Returns warnings
/// about settings that need a restart of the agent.
pub async fn apply_config(
    ctx: &AgentContext,
    config: AgentConfig,
    waiting: bool,
) -> Result<Vec<String>, CommandError> {
    let mut warnings: Vec<String> = config
        .warnings()
        .into_iter()
        .map(|w| format!("{}: {}", w.key, w.message))
        .collect();
    if config.agent != *ctx.settings {
        warnings.push("[agent] settings changed: they take effect when the agent restarts".into());
    }
    let running = ctx.arbiter.all().await?;
    let wanted: Vec<String> = config
        .watchers
        .iter()
        .map(|w| w.name.to_lowercase())
        .collect();
    for old in &running {
        if !wanted.contains(&old.name.to_lowercase()) {
            if let Some(handle) = ctx.arbiter.remove(&old.name).await? {
                run_on(&handle, waiting, |reply| WatcherMsg::Shutdown {
                    stop: true,
                    reply,
                })
                .await?;
            }
        }
    }
    let mut to_start = Vec::new();
    for new in config.watchers {
        let current = running
            .iter()
            .find(|w| w.name.eq_ignore_ascii_case(&new.name));
        match current {
            Some(handle) => {
                let live = handle.view().config;
                if live == new {
                    continue;
                }
                if let Some(options) = live.changes_in_place(&new) {
                    run_on(handle, true, |reply| WatcherMsg::Set {
                        options,
                        waiting,
                        reply,
                    })
                    .await?;
                    continue;
                }
                if let Some(old) = ctx.arbiter.remove(&new.name).await? {
                    old.call(|reply| WatcherMsg::Shutdown { stop: true, reply })
                        .await?;
                }
                let autostart = new.autostart;
                let handle = ctx.arbiter.add(new).await?;
                if autostart {
                    to_start.push(handle);
                }
            }
            None => {
                let autostart = new.autostart;
                let handle = ctx.arbiter.add(new).await?;
                if autostart {
                    to_start.push(handle);
                }
            }
        }
    }
    // Highest priority first, each started before the next, as Circus does.
    to_start.sort_by_cached_key(|w| (-w.view().config.priority, w.name.to_lowercase()));
    for handle in to_start {
        // The watcher's errors name it already ("watcher 'web' could not start: ...").
        if let Err(e) = run_on(&handle, waiting, WatcherMsg::Start).await {
            warnings.push(e.to_string());
        }
    }
    Ok(warnings)
}
