//! The Circus wire protocol: request parsing, reply shapes and error numbers.
//!
//! Defined once here and used by the agent (server side) and the controller (client side).

mod configure;
mod event;
mod logs;
mod node;
mod process_info;
pub(crate) mod request;
mod stop_reason;

pub use configure::{
    ClusterInfo, ConfigureFrames, ConfigureReply, ConfigureRequest, ConfiguredFile, FieldError,
    NodeRef, Peer, PeerList, RenderedText, ResetReply, ResetRequest, WipedPath,
};
pub use event::{event_topic, Event};
pub use logs::{
    log_topic, log_topic_prefix, subscription_follows_logs, LogEvent, LogFileInfo, LogFileReply,
    LogFileRequest, LogFilesReply, LogFilesRequest, LogLine, LogStream, LogsReply, LogsRequest,
    StreamSelection, DEFAULT_LOGS_LINES, LOGS_COMMAND, LOG_FILES_COMMAND, LOG_FILE_COMMAND,
    LOG_TOPIC_PREFIX,
};
pub use node::{Endpoints, NodeInfo, Registration, WatcherSummary};
pub use process_info::{format_cpu_time, format_mem, round_mem_percent, ProcessInfo};
pub use request::{
    option_brings_code, Request, RequestError, CIRCUS_READ_COMMANDS, NODE_COMMANDS, NODE_TIMEOUT,
    TROUPE_READ_COMMANDS,
};
pub use stop_reason::{last_line, StopCause, StopReason, LAST_OUTPUT_MAX};

use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Circus's error numbers (`circus/exc.py`), sent in the `errno` field of error replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    NotSpecified = 0,
    InvalidJson = 1,
    UnknownCommand = 2,
    MessageError = 3,
    OsError = 4,
    CommandError = 5,
    BadMsgDataError = 6,
}

/// A command's failure: the errno Circus would use and a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct CommandError {
    pub errno: Errno,
    pub reason: String,
}

impl CommandError {
    pub fn new(errno: Errno, reason: impl Into<String>) -> Self {
        Self {
            errno,
            reason: reason.into(),
        }
    }

    /// Validation and lookup failures ("program x not found", "unknown key 'y'").
    pub fn message(reason: impl Into<String>) -> Self {
        Self::new(Errno::MessageError, reason)
    }

    /// A command that could not be carried out.
    pub fn command(reason: impl Into<String>) -> Self {
        Self::new(Errno::CommandError, reason)
    }

    pub fn os(reason: impl Into<String>) -> Self {
        Self::new(Errno::OsError, reason)
    }
}

/// Seconds since the epoch as a float, the `time` field of every reply and event.
pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Builds the success reply: `{"status": "ok", "time", ...fields, "id"}`.
///
/// Fields are merged over the base, so a command may replace `status` (Circus's quirk for
/// `status <name>`, which circusctl relies on).
pub fn ok_reply(fields: Map<String, Value>, id: &Value) -> Value {
    let mut reply = Map::new();
    reply.insert("status".into(), "ok".into());
    reply.insert("time".into(), now_epoch().into());
    reply.extend(fields);
    reply.insert("id".into(), id.clone());
    Value::Object(reply)
}

/// Builds the error reply: `{"status": "error", "reason", "tb": null, "time", "errno", "id"}`.
pub fn error_reply(error: &CommandError, id: &Value) -> Value {
    serde_json::json!({
        "status": "error",
        "reason": error.reason,
        "tb": null,
        "time": now_epoch(),
        "errno": error.errno as i64,
        "id": id,
    })
}

#[cfg(test)]
mod tests;
