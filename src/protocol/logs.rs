//! troupe's `logs`, `log_files` and `log_file` messages: a watcher's output as the agent keeps
//! it (an in-memory ring of lines, and the `stdout`/`stderr` files with their backups), and
//! the `log.<watcher>.<pid>` events that carry new lines to followers.
//!
//! All three only read, so they are [`super::Request::changes_nothing`]; they expose what the
//! processes printed (secrets, often), so they are not among the Circus read commands the
//! plaintext `circus_bind` answers: only the cluster key's holders and the node's owner read
//! output.

use super::configure::FieldError;
use super::request::kind_of;
use crate::bounds::{LOGS_MAX_LINES, LOG_FILE_CHUNK_BYTES};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The command names, defined once.
pub const LOGS_COMMAND: &str = "logs";
pub const LOG_FILES_COMMAND: &str = "log_files";
pub const LOG_FILE_COMMAND: &str = "log_file";

/// Prefix of every log topic on the events socket.
pub const LOG_TOPIC_PREFIX: &str = "log.";

/// Longest watcher name a request may carry (a lookup key: the agent matches it exactly).
const MAX_WATCHER_NAME_BYTES: usize = 256;

/// Lines a `logs` request returns when it names no `lines`.
pub const DEFAULT_LOGS_LINES: u64 = 100;

/// One output stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub const ALL: [LogStream; 2] = [LogStream::Stdout, LogStream::Stderr];

    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// Which streams a request reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StreamSelection {
    Stdout,
    Stderr,
    #[default]
    Both,
}

impl StreamSelection {
    pub fn includes(self, stream: LogStream) -> bool {
        matches!(
            (self, stream),
            (StreamSelection::Both, _)
                | (StreamSelection::Stdout, LogStream::Stdout)
                | (StreamSelection::Stderr, LogStream::Stderr)
        )
    }

    /// `stdout`, `stderr` or `both`; the error says which values exist.
    pub fn parse(text: &str) -> Result<StreamSelection, String> {
        match text {
            "stdout" => Ok(StreamSelection::Stdout),
            "stderr" => Ok(StreamSelection::Stderr),
            "both" => Ok(StreamSelection::Both),
            other => Err(format!("must be stdout, stderr or both, got {other:?}")),
        }
    }
}

/// One line a process printed, as the agent recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Epoch seconds when the agent read it.
    pub time: f64,
    pub pid: u32,
    pub stream: LogStream,
    /// The text without its newline; bytes that are not UTF-8 are replaced (U+FFFD).
    pub line: String,
    /// Position in the watcher's ring, counted from 0 when the agent started the watcher:
    /// a follower that sees a jump missed lines, and can ask `logs` from `offset`.
    pub seq: u64,
    /// The line went on: it was longer than [`crate::bounds::LOG_LINE_BYTES`], and the next
    /// piece is the next record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

/// The payload of a `log.<watcher>.<pid>` event: the line and the watcher it belongs to
/// (the topic lower-cases the name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    pub watcher: String,
    #[serde(flatten)]
    pub line: LogLine,
}

/// `log.<watcher lower-cased, spaces to _>.<pid>`, as Circus forms `watcher.` topics.
pub fn log_topic(watcher: &str, pid: u32) -> String {
    format!(
        "{LOG_TOPIC_PREFIX}{}.{pid}",
        watcher.to_lowercase().replace(' ', "_")
    )
}

/// The topic prefix that follows every process of `watcher` (its pids come after it).
pub fn log_topic_prefix(watcher: &str) -> String {
    format!(
        "{LOG_TOPIC_PREFIX}{}.",
        watcher.to_lowercase().replace(' ', "_")
    )
}

/// Whether a subscription to the prefix `topic` asks for log lines: a prefix of `log.` or
/// one below it. The empty prefix (everything) does not count: Circus clients subscribe to it
/// for events, and must not make the agent publish every line.
pub fn subscription_follows_logs(topic: &[u8]) -> bool {
    !topic.is_empty()
        && (topic.starts_with(LOG_TOPIC_PREFIX.as_bytes())
            || LOG_TOPIC_PREFIX.as_bytes().starts_with(topic))
}

/// Properties of `logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsRequest {
    /// The watcher (case-insensitive, exact: no glob).
    pub name: String,
    /// Only this process's lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default)]
    pub stream: StreamSelection,
    /// The last this many lines of what matches (at most [`LOGS_MAX_LINES`]).
    pub lines: u64,
    /// Only lines at or after this time (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<f64>,
    /// Only lines whose `seq` is at least this (the `offset` of an earlier reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl LogsRequest {
    pub fn new(name: &str) -> LogsRequest {
        LogsRequest {
            name: name.to_string(),
            pid: None,
            stream: StreamSelection::Both,
            lines: DEFAULT_LOGS_LINES,
            since: None,
            offset: None,
        }
    }

    /// Reads and checks a request's properties; the error names the first bad field and
    /// what it got.
    pub fn from_properties(props: &Map<String, Value>) -> Result<LogsRequest, FieldError> {
        let name = watcher_name(props)?;
        let pid = optional_uint(props, "pid", 1, u64::from(u32::MAX))?.map(|p| p as u32);
        let stream = match present(props, "stream") {
            None => StreamSelection::Both,
            Some(Value::String(s)) => {
                StreamSelection::parse(s).map_err(|m| FieldError::new("stream", m))?
            }
            Some(other) => {
                return Err(FieldError::new(
                    "stream",
                    format!("must be stdout, stderr or both, got {}", kind_of(other)),
                ))
            }
        };
        let lines = optional_uint(props, "lines", 0, LOGS_MAX_LINES)?.unwrap_or(DEFAULT_LOGS_LINES);
        let since = match present(props, "since") {
            None => None,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(t) if t.is_finite() && t >= 0.0 => Some(t),
                _ => return Err(FieldError::new("since", format!("{n} is not a time"))),
            },
            Some(other) => {
                return Err(FieldError::new(
                    "since",
                    format!(
                        "must be a time in epoch seconds (a number), got {}",
                        kind_of(other)
                    ),
                ))
            }
        };
        let offset = optional_uint(props, "offset", 0, u64::MAX)?;
        Ok(LogsRequest {
            name,
            pid,
            stream,
            lines,
            since,
            offset,
        })
    }

    pub fn to_properties(&self) -> Map<String, Value> {
        to_map(self)
    }
}

/// The fields of a `logs` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsReply {
    /// Oldest first.
    pub lines: Vec<LogLine>,
    /// The `seq` the next line of the ring will have: ask from it to read on.
    pub offset: u64,
    /// Matching lines were left out, older than those sent, to keep the reply within
    /// [`crate::bounds::LOGS_REPLY_BYTES`]; or the ring had already dropped some lines asked
    /// for by `offset`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

/// Properties of `log_files`: the watcher whose output files to list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogFilesRequest {
    pub name: String,
}

impl LogFilesRequest {
    pub fn from_properties(props: &Map<String, Value>) -> Result<LogFilesRequest, FieldError> {
        Ok(LogFilesRequest {
            name: watcher_name(props)?,
        })
    }

    pub fn to_properties(&self) -> Map<String, Value> {
        to_map(self)
    }
}

/// One output file of a watcher: the current one (`backup` 0) or a rotated one (`.1`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogFileInfo {
    pub stream: LogStream,
    pub backup: u32,
    pub path: String,
    pub size: u64,
    /// Device and inode: a file that was rotated or replaced has another one, so a client
    /// resuming a copy knows whether its bytes still belong to this file.
    pub id: String,
    /// Modification time, epoch seconds.
    pub modified: f64,
}

/// The fields of a `log_files` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogFilesReply {
    /// The streams the watcher's config sends to a file (whether or not it exists yet): the
    /// others are only in the ring.
    pub configured: Vec<LogStream>,
    /// The files that exist, current first, then backups from `.1`. A file both streams
    /// share is listed once, under stdout.
    pub files: Vec<LogFileInfo>,
}

/// Properties of `log_file`: one chunk of one of the watcher's output files. Only files the
/// watcher's config names (and their backups) can be read, never a path the client gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFileRequest {
    pub name: String,
    pub stream: LogStream,
    /// 0 for the current file, n for `<file>.<n>`.
    #[serde(default)]
    pub backup: u32,
    /// First byte to read.
    #[serde(default)]
    pub offset: u64,
    /// Bytes to read, at most [`LOG_FILE_CHUNK_BYTES`].
    pub length: u64,
}

impl LogFileRequest {
    pub fn from_properties(props: &Map<String, Value>) -> Result<LogFileRequest, FieldError> {
        let name = watcher_name(props)?;
        let stream = match present(props, "stream") {
            Some(Value::String(s)) if s == "stdout" => LogStream::Stdout,
            Some(Value::String(s)) if s == "stderr" => LogStream::Stderr,
            Some(Value::String(s)) => {
                return Err(FieldError::new(
                    "stream",
                    format!("must be stdout or stderr, got {s:?}"),
                ))
            }
            Some(other) => {
                return Err(FieldError::new(
                    "stream",
                    format!("must be stdout or stderr, got {}", kind_of(other)),
                ))
            }
            None => return Err(FieldError::new("stream", "is missing (stdout or stderr)")),
        };
        let backup = optional_uint(props, "backup", 0, u64::from(u32::MAX))?.unwrap_or(0) as u32;
        let offset = optional_uint(props, "offset", 0, u64::MAX)?.unwrap_or(0);
        let length = optional_uint(props, "length", 1, LOG_FILE_CHUNK_BYTES)?
            .unwrap_or(LOG_FILE_CHUNK_BYTES);
        Ok(LogFileRequest {
            name,
            stream,
            backup,
            offset,
            length,
        })
    }

    pub fn to_properties(&self) -> Map<String, Value> {
        to_map(self)
    }
}

/// The fields of a `log_file` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogFileReply {
    pub file: LogFileInfo,
    pub offset: u64,
    /// The bytes read, base64 (standard alphabet, padded): files hold whatever was printed.
    pub data: String,
}

impl LogFileReply {
    pub fn new(file: LogFileInfo, offset: u64, bytes: &[u8]) -> LogFileReply {
        use base64::Engine;
        LogFileReply {
            file,
            offset,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The bytes in `data`; an error names the field.
    pub fn bytes(&self) -> Result<Vec<u8>, FieldError> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|e| FieldError::new("data", format!("is not base64: {e}")))
    }
}

fn present<'a>(props: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    props.get(key).filter(|v| !v.is_null())
}

fn watcher_name(props: &Map<String, Value>) -> Result<String, FieldError> {
    match present(props, "name") {
        Some(Value::String(name))
            if !name.is_empty()
                && name.len() <= MAX_WATCHER_NAME_BYTES
                && !name.chars().any(char::is_control) =>
        {
            Ok(name.clone())
        }
        Some(Value::String(name)) => Err(FieldError::new(
            "name",
            format!(
                "must be a watcher name of 1 to {MAX_WATCHER_NAME_BYTES} bytes without control \
                 characters, got {:?}",
                name.chars().take(80).collect::<String>()
            ),
        )),
        Some(other) => Err(FieldError::new(
            "name",
            format!("must be a watcher name (a string), got {}", kind_of(other)),
        )),
        None => Err(FieldError::new("name", "is missing (the watcher)")),
    }
}

/// An integer in `min..=max`, or None when absent.
fn optional_uint(
    props: &Map<String, Value>,
    key: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, FieldError> {
    match present(props, key) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(FieldError::new(
                key,
                format!("must be an integer from {min} to {max}, got {n}"),
            )),
        },
        Some(other) => Err(FieldError::new(
            key,
            format!(
                "must be an integer from {min} to {max}, got {}",
                kind_of(other)
            ),
        )),
    }
}

fn to_map<T: Serialize>(value: &T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("a struct serialises to a JSON object"),
    }
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
