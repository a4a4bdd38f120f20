//! What a watcher's options and its service's options share: why an option was refused, and
//! hooks (a watcher's `hooks.<name>`, a service's `reset_hook`). A leaf: it uses only
//! [`super::value`] and [`super::suggest`].

use super::value::{read_bool, read_duration, read_string, ValueError};
use serde_json::Value;
use std::time::Duration;

/// The hooks a watcher may run, under Circus's names.
pub const HOOK_NAMES: [&str; 7] = [
    "before_start",
    "after_start",
    "before_stop",
    "after_stop",
    "before_spawn",
    "after_spawn",
    "after_reap",
];

/// A hook is a shell command run by `/bin/sh -c` with the watcher's context in env vars.
#[derive(Debug, Clone, PartialEq)]
pub struct HookConfig {
    pub cmd: String,
    /// A failing hook whose errors are ignored does not abort what it guards.
    pub ignore_errors: bool,
    pub timeout: Duration,
}

/// Why an option was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A key that is not an option; `known` are the keys that were possible there, for the
    /// "did you mean" hint.
    #[error("{}", super::suggest::unknown_key(key, known.iter().copied()))]
    UnknownKey {
        key: String,
        known: &'static [&'static str],
    },
    #[error("unknown hook '{0}' (known: {list})", list = HOOK_NAMES.join(", "))]
    UnknownHook(String),
    #[error("{0}")]
    Invalid(ValueError),
}

pub(super) fn known_hook(name: &str) -> Result<&'static str, OptionError> {
    HOOK_NAMES
        .iter()
        .find(|h| **h == name)
        .copied()
        .ok_or_else(|| OptionError::UnknownHook(name.to_string()))
}

/// A hook is `"command"` or `{ cmd = "...", ignore_errors = bool, timeout = "30s" }`.
pub(super) fn read_hook(value: &Value) -> Result<HookConfig, ValueError> {
    let mut hook = HookConfig {
        cmd: String::new(),
        ignore_errors: false,
        timeout: Duration::from_secs(30),
    };
    match value {
        Value::String(cmd) => hook.cmd = cmd.clone(),
        Value::Object(spec) => {
            for (key, v) in spec {
                match key.as_str() {
                    "cmd" => hook.cmd = read_string(v)?,
                    "ignore_errors" => hook.ignore_errors = read_bool(v)?,
                    "timeout" => hook.timeout = read_duration(v)?,
                    _ => {
                        return Err(ValueError {
                            expected: "hook keys cmd, ignore_errors, timeout".into(),
                            got: format!("'{key}'"),
                        })
                    }
                }
            }
        }
        _ => return Err(ValueError::new("a command string or a hook table", value)),
    }
    if hook.cmd.trim().is_empty() {
        return Err(ValueError::new("a non-empty hook command", value));
    }
    Ok(hook)
}
