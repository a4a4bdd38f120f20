//! Hooks: shell commands run at points of a watcher's life, Circus's hooks as programs.

use crate::events::EventSender;
use std::path::Path;
use std::process::Stdio;
use troupe::config::{HookConfig, WatcherConfig};
use troupe::protocol::Event;

/// Context a hook sees in its environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct HookContext {
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
}

/// Runs the watcher's `hook`, if configured, and emits hook_success/hook_failure.
/// Returns false only when the hook failed and its errors are not ignored.
pub async fn run(
    config: &WatcherConfig,
    hook: &str,
    context: HookContext,
    events: &EventSender,
) -> bool {
    let Some(spec) = config.hooks.get(hook) else {
        return true;
    };
    match execute(config, hook, spec, context).await {
        Ok(()) => {
            events.emit(
                &config.name,
                Event::HookSuccess {
                    hook: hook.to_string(),
                },
            );
            true
        }
        Err(error) => {
            tracing::warn!(watcher = %config.name, hook, "hook failed: {error}");
            events.emit(
                &config.name,
                Event::HookFailure {
                    hook: hook.to_string(),
                    error,
                },
            );
            spec.ignore_errors
        }
    }
}

async fn execute(
    config: &WatcherConfig,
    hook: &str,
    spec: &HookConfig,
    context: HookContext,
) -> Result<(), String> {
    let mut env = Vec::new();
    if let Some(pid) = context.pid {
        env.push(("TROUPE_PID".to_string(), pid.to_string()));
    }
    if let Some(code) = context.exit_code {
        env.push(("TROUPE_EXIT_CODE".to_string(), code.to_string()));
    }
    run_shell(
        spec,
        &config.name,
        hook,
        config.working_dir.as_deref(),
        &env,
    )
    .await
}

/// Runs a hook command with `/bin/sh -c` in its own process group, with `TROUPE_WATCHER`,
/// `TROUPE_HOOK` and `env`; the group is killed at the hook's timeout. Err carries the exit
/// status and the last line of stderr, or the timeout. Shared by the watcher's hooks and
/// `reset_hook`.
pub(crate) async fn run_shell(
    spec: &HookConfig,
    watcher: &str,
    hook: &str,
    working_dir: Option<&Path>,
    env: &[(String, String)],
) -> Result<(), String> {
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&spec.cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("TROUPE_WATCHER", watcher)
        .env("TROUPE_HOOK", hook)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(dir) = working_dir {
        command.current_dir(dir);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", spec.cmd))?;
    let pid = child.id();
    match tokio::time::timeout(spec.timeout, child.wait_with_output()).await {
        Err(_) => {
            if let Some(pid) = pid {
                // The whole group: a hook's children must not outlive it.
                super::process::kill_group(pid);
            }
            Err(format!("timed out after {:?}", spec.timeout))
        }
        Ok(Err(e)) => Err(format!("waiting for the hook: {e}")),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            match stderr.trim().lines().last() {
                Some(tail) => Err(format!("{}: {tail}", output.status)),
                None => Err(output.status.to_string()),
            }
        }
    }
}
