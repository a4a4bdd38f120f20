//! `reset_hook`: a shell command run after the data dirs are wiped, like a watcher's hooks.

use std::path::PathBuf;
use troupe::config::{HookConfig, WatcherConfig};

/// Runs the hook like a watcher's hooks (`TROUPE_HOOK=reset`), with the watcher's env and
/// the wiped dirs (colon separated) in `TROUPE_DATA_DIRS`.
pub async fn run_hook(
    watcher: &WatcherConfig,
    hook: &HookConfig,
    dirs: &[PathBuf],
) -> Result<(), String> {
    let joined = std::env::join_paths(dirs).unwrap_or_default();
    let mut env: Vec<(String, String)> = watcher
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push((
        "TROUPE_DATA_DIRS".to_string(),
        joined.to_string_lossy().into_owned(),
    ));
    // A working dir wiped or not yet created must not stop the hook from running.
    let dir = watcher.working_dir.as_deref().filter(|d| d.is_dir());
    crate::watcher::hooks::run_shell(hook, &watcher.name, "reset", dir, &env).await
}
