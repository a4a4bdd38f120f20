//! configure: renders every watcher's profile and templates from the controller's peer list,
//! writes them atomically, and restarts the running watchers whose files changed.

use super::{AgentContext, Fields};
use crate::configure::write::{preview, write_all, Outcome};
use crate::configure::{render_all, RenderInputs, RenderedFile};
use crate::watcher::{WatcherHandle, WatcherMsg, WatcherState};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use troupe::config::WatcherConfig;
use troupe::protocol::{
    CommandError, ConfigureReply, ConfigureRequest, ConfiguredFile, RenderedText, Request,
};

pub async fn configure(ctx: &AgentContext, request: &mut Request) -> Fields {
    let request = ConfigureRequest::from_request(request)
        .map_err(|e| CommandError::message(format!("configure: {e}")))?;
    let _turn = ctx.disk_turn("configure").await;
    let mut handles = ctx.arbiter.all().await?;
    handles.sort_by_cached_key(|h| h.name.to_lowercase());
    let configs: Vec<WatcherConfig> = handles.iter().map(|h| h.view().config).collect();
    let inputs = render_inputs(ctx);
    let state_dir = inputs.state_dir.clone();
    let ConfigureRequest {
        peers,
        restart,
        dry_run,
    } = request;
    // Rendering reads template files and writing fsyncs: off the async workers.
    let (files, outcomes) = tokio::task::spawn_blocking(move || {
        let files = render_all(&configs, &Arc::new(peers), &inputs)?;
        let outcomes = if dry_run {
            preview(&files)?
        } else {
            write_all(&files, &state_dir)?
        };
        Ok((files, outcomes))
    })
    .await
    .map_err(|e| CommandError::command(format!("configure: rendering task failed: {e}")))?
    .map_err(|e: crate::configure::TemplateError| CommandError::command(e.to_string()))?;

    let restarted = if restart && !dry_run {
        restart_changed(&handles, &files, &outcomes).await?
    } else {
        Vec::new()
    };
    let reply = ConfigureReply {
        files: files
            .iter()
            .zip(&outcomes)
            .map(|(f, o)| ConfiguredFile {
                watcher: f.watcher.clone(),
                path: o.path.display().to_string(),
                sha256: o.sha256.clone(),
                changed: o.changed,
            })
            .collect(),
        rendered: dry_run.then(|| {
            files
                .iter()
                .map(|f| RenderedText {
                    watcher: f.watcher.clone(),
                    path: f.path.display().to_string(),
                    text: f.text.clone(),
                })
                .collect()
        }),
        restarted,
    };
    match serde_json::to_value(reply) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(CommandError::command("configure: cannot encode the reply")),
    }
}

fn render_inputs(ctx: &AgentContext) -> RenderInputs {
    let config_dir = ctx
        .config_path
        .as_ref()
        .and_then(|p| std::path::absolute(p).ok())
        .and_then(|p| p.parent().map(|d| d.to_path_buf()));
    RenderInputs {
        state_dir: ctx.settings.state_dir.clone(),
        config_dir,
        env: std::env::vars().collect(),
    }
}

/// Restarts, one after another, the running watchers with at least one changed file.
async fn restart_changed(
    handles: &[WatcherHandle],
    files: &[RenderedFile],
    outcomes: &[Outcome],
) -> Result<Vec<String>, CommandError> {
    let changed: BTreeSet<&str> = files
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| o.changed)
        .map(|(f, _)| f.watcher.as_str())
        .collect();
    let mut restarted = Vec::new();
    for handle in handles.iter().filter(|h| changed.contains(h.name.as_str())) {
        if handle.view().state == WatcherState::Stopped {
            continue;
        }
        handle.call(WatcherMsg::Restart).await.map_err(|e| {
            CommandError::command(format!(
                "configure wrote the files but restarting '{}' failed: {e}",
                handle.name
            ))
        })?;
        restarted.push(handle.name.clone());
    }
    Ok(restarted)
}
