//! `reset_hook`: a shell command run after the data dirs are wiped, like a watcher's hooks.

use std::path::PathBuf;
use std::process::Stdio;
use troupe::config::{HookConfig, WatcherConfig};

/// Runs the hook with `/bin/sh -c` in its own process group, the watcher's name and the
/// wiped dirs (colon separated) in `TROUPE_WATCHER` / `TROUPE_DATA_DIRS`. Err carries the
/// exit status and the last line of stderr, or the timeout.
pub async fn run_hook(
    watcher: &WatcherConfig,
    hook: &HookConfig,
    dirs: &[PathBuf],
) -> Result<(), String> {
    let joined = std::env::join_paths(dirs).unwrap_or_default();
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&hook.cmd)
        .envs(&watcher.env)
        .env("TROUPE_WATCHER", &watcher.name)
        .env("TROUPE_HOOK", "reset")
        .env("TROUPE_DATA_DIRS", joined)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(dir) = watcher.working_dir.as_ref().filter(|d| d.is_dir()) {
        command.current_dir(dir);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", hook.cmd))?;
    let pid = child.id();
    match tokio::time::timeout(hook.timeout, child.wait_with_output()).await {
        Err(_) => {
            if let Some(pid) = pid {
                // The whole group: a hook's children must not outlive it.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(format!("timed out after {:?}", hook.timeout))
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
