//! reset: stops a watcher, empties its data dirs, runs its reset_hook, starts it again.

use super::{matching, AgentContext, Fields, Props};
use crate::reset::{check, identity, open_dir, run_hook, wipe, Bounds, Target};
use crate::watcher::{WatcherHandle, WatcherMsg, WatcherState};
use serde_json::Value;
use troupe::config::WatcherConfig;
use troupe::protocol::{CommandError, Event, ResetReply, WipedPath};

/// One watcher to reset, every data dir already checked.
struct Plan {
    handle: WatcherHandle,
    config: WatcherConfig,
    targets: Vec<Target>,
}

pub async fn reset(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let name = props.required_str("name")?;
    let force = props.bool_or("force", false)?;
    // A pattern may match watchers with nothing to reset: those are skipped, not an error.
    let pattern = match props.opt_str("match")? {
        Some("regex") => true,
        Some("simple") => false,
        _ => name.contains(['*', '?', '[']),
    };
    let _turn = ctx.disk_turn("reset").await;
    let mut handles = matching(ctx, props).await?;
    handles.sort_by_cached_key(|h| h.name.to_lowercase());
    let bounds = Bounds {
        data_root: ctx.settings.data_root.clone(),
        state_dir: ctx.settings.state_dir.clone(),
    };
    let mut reply = ResetReply {
        wiped: Vec::new(),
        restarted: Vec::new(),
        skipped: Vec::new(),
        warnings: Vec::new(),
    };
    // Every dir of every watcher is opened and checked before anything is stopped or deleted;
    // what is wiped later is what was opened now, whatever is at its path by then.
    let mut plans = Vec::new();
    for handle in handles {
        let config = handle.view().config;
        let service = &config.service;
        if service.data_dirs.is_empty() && service.reset_hook.is_none() {
            if pattern {
                reply.skipped.push(handle.name.clone());
                continue;
            }
            return Err(CommandError::message(format!(
                "watcher '{}' declares no data_dir or reset_hook: nothing to reset",
                handle.name
            )));
        }
        let targets = service
            .data_dirs
            .iter()
            .map(|dir| check(dir, &bounds))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CommandError::command(format!("reset '{}': {e}", handle.name)))?;
        plans.push(Plan {
            handle,
            config,
            targets,
        });
    }
    for plan in plans {
        reset_one(ctx, plan, force, &mut reply).await?;
    }
    match serde_json::to_value(reply) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(CommandError::command("reset: cannot encode the reply")),
    }
}

async fn reset_one(
    ctx: &AgentContext,
    plan: Plan,
    force: bool,
    reply: &mut ResetReply,
) -> Result<(), CommandError> {
    let Plan {
        handle,
        config,
        mut targets,
    } = plan;
    let name = &handle.name;
    let left_stopped = |what: String| {
        CommandError::command(format!(
            "reset '{name}': {what}; the watcher is left stopped"
        ))
    };
    let was_running = handle.view().state != WatcherState::Stopped;
    if was_running {
        handle.call(WatcherMsg::Stop).await?;
    }
    for target in &mut targets {
        let declared = target.declared.clone();
        let dir = target.dir.take();
        let opened = dir.as_ref().and_then(identity);
        let bytes = match dir {
            None => 0,
            Some(dir) => tokio::task::spawn_blocking(move || wipe(dir.fd))
                .await
                .map_err(|e| left_stopped(format!("wipe task failed: {e}")))?
                .map_err(|e| left_stopped(format!("cannot wipe {}: {e}", declared.display())))?,
        };
        // Someone moved the dir or put something at its path while the watcher stopped: the
        // service must not start on that, nor the hook write there.
        if !still_leads_to(&declared, opened) {
            return Err(left_stopped(format!(
                "data_dir {} changed while the watcher stopped: what was there before the stop \
                 was emptied ({bytes} bytes), what is at that path now was left alone and the \
                 reset_hook was not run",
                declared.display()
            )));
        }
        reply.wiped.push(WipedPath {
            path: declared.display().to_string(),
            bytes,
        });
    }
    if let Some(hook) = &config.service.reset_hook {
        let dirs: Vec<_> = targets.iter().map(|t| t.declared.clone()).collect();
        match run_hook(&config, hook, &dirs).await {
            Ok(()) => ctx.events.emit(
                name,
                Event::HookSuccess {
                    hook: "reset".into(),
                },
            ),
            Err(error) => {
                ctx.events.emit(
                    name,
                    Event::HookFailure {
                        hook: "reset".into(),
                        error: error.clone(),
                    },
                );
                if !(hook.ignore_errors || force) {
                    return Err(left_stopped(format!("reset_hook failed: {error}")));
                }
                reply
                    .warnings
                    .push(format!("watcher '{name}': reset_hook failed: {error}"));
            }
        }
    }
    if was_running {
        handle.call(WatcherMsg::Start).await?;
        reply.restarted.push(name.clone());
    }
    Ok(())
}

/// Whether `declared` still leads to the directory that was opened (by device and inode), or
/// still to nothing when there was none.
fn still_leads_to(declared: &std::path::Path, opened: Option<(libc::dev_t, libc::ino_t)>) -> bool {
    match open_dir(declared) {
        Ok(now) => now.as_ref().and_then(identity) == opened,
        Err(_) => false,
    }
}
