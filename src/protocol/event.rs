//! Pub/sub events: Circus topics `watcher.<name>.<event>` and their payloads.

use super::now_epoch;
use serde_json::{json, Value};

/// One event of a watcher, published as `[topic, json]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Spawn {
        pid: u32,
    },
    /// `exit_code` is the exit status, or the negated signal number when killed.
    Reap {
        pid: u32,
        exit_code: Option<i32>,
    },
    Kill {
        pid: u32,
    },
    Start,
    /// `reason` is troupe's addition, set when the watcher stopped itself (flapping, hook failure).
    Stop {
        reason: Option<String>,
    },
    Reload,
    Updated,
    Add,
    Remove,
    HookSuccess {
        hook: String,
    },
    HookFailure {
        hook: String,
        error: String,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Spawn { .. } => "spawn",
            Event::Reap { .. } => "reap",
            Event::Kill { .. } => "kill",
            Event::Start => "start",
            Event::Stop { .. } => "stop",
            Event::Reload => "reload",
            Event::Updated => "updated",
            Event::Add => "add",
            Event::Remove => "remove",
            Event::HookSuccess { .. } => "hook_success",
            Event::HookFailure { .. } => "hook_failure",
        }
    }

    /// The JSON payload, stamped with the current time.
    pub fn payload(&self) -> Value {
        let time = now_epoch();
        match self {
            Event::Spawn { pid } | Event::Kill { pid } => {
                json!({"process_pid": pid, "time": time})
            }
            Event::Reap { pid, exit_code } => {
                json!({"process_pid": pid, "time": time, "exit_code": exit_code})
            }
            Event::Stop {
                reason: Some(reason),
            } => json!({"time": time, "reason": reason}),
            Event::Start
            | Event::Stop { reason: None }
            | Event::Reload
            | Event::Updated
            | Event::Add
            | Event::Remove => json!({"time": time}),
            Event::HookSuccess { hook } => json!({"name": hook, "time": time}),
            Event::HookFailure { hook, error } => {
                json!({"name": hook, "time": time, "error": error})
            }
        }
    }
}

/// `watcher.<name lower-cased, spaces to _>.<event>`, as Circus names topics.
pub fn event_topic(watcher: &str, event: &Event) -> String {
    format!(
        "watcher.{}.{}",
        watcher.to_lowercase().replace(' ', "_"),
        event.name()
    )
}
