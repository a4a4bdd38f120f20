//! Decoding one control frame into a [`Request`], with every malformed case named.

use super::{CommandError, ConfigureRequest, Errno};
use serde_json::{Map, Value};

/// One decoded control request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Lower-cased command name (Circus dispatches case-insensitively).
    pub command: String,
    pub properties: Map<String, Value>,
    /// Echoed verbatim in the reply; `null` when the client sent none.
    pub id: Value,
    /// `msg_type: "cast"`: run the command, never reply.
    pub cast: bool,
    /// A `configure` decoded where it runs ([`Request::decode_at_node`]): its properties read
    /// straight from the frame into their type, not yet checked, and `properties` left empty.
    /// Taken by [`ConfigureRequest::from_request`].
    pub configure: Option<Box<ConfigureRequest>>,
}

/// Why a frame could not become a request, with the id when one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestError {
    pub error: CommandError,
    pub id: Value,
}

impl Request {
    pub fn new(command: &str, properties: Map<String, Value>) -> Self {
        Self {
            command: command.to_ascii_lowercase(),
            properties,
            id: Value::Null,
            cast: false,
            configure: None,
        }
    }

    /// Decodes a frame of at most `max_bytes` bytes.
    pub fn decode(frame: &[u8], max_bytes: usize) -> Result<Self, RequestError> {
        Self::decode_keeping(frame, max_bytes, false)
    }

    /// Decodes a frame as the node that runs it: like [`Request::decode`], but a `configure`
    /// is read in one pass straight into its type ([`Request::configure`]). A thousand peers
    /// through a JSON tree first were a third of an agent's CPU for a push. A frame that does
    /// not read that way is decoded as [`Request::decode`] does; its properties are then read
    /// into the type from the tree if they are of it (a frame with a duplicate key), else left
    /// there (`null` flags, fields of other types) for [`ConfigureRequest::from_request`] to
    /// read or name what is wrong.
    pub fn decode_at_node(frame: &[u8], max_bytes: usize) -> Result<Self, RequestError> {
        Self::decode_keeping(frame, max_bytes, true)
    }

    fn decode_keeping(
        frame: &[u8],
        max_bytes: usize,
        typed_configure: bool,
    ) -> Result<Self, RequestError> {
        let fail = |errno, reason: String, id: Value| RequestError {
            error: CommandError::new(errno, reason),
            id,
        };
        if frame.len() > max_bytes {
            return Err(fail(
                Errno::MessageError,
                format!(
                    "message of {} bytes exceeds the limit of {} bytes",
                    frame.len(),
                    max_bytes
                ),
                Value::Null,
            ));
        }
        let text = std::str::from_utf8(frame).map_err(|e| {
            fail(
                Errno::InvalidJson,
                format!("json invalid: message is not valid UTF-8 ({e})"),
                Value::Null,
            )
        })?;
        let text = text.trim();
        if typed_configure {
            if let Some((configure, id, cast)) = super::configure::decode_frame(text) {
                return Ok(Self {
                    command: "configure".into(),
                    properties: Map::new(),
                    id,
                    cast,
                    configure: Some(Box::new(configure)),
                });
            }
        }
        let value: Value = serde_json::from_str(text).map_err(|e| {
            fail(
                Errno::InvalidJson,
                format!("json invalid: {e}"),
                Value::Null,
            )
        })?;
        let Value::Object(mut object) = value else {
            return Err(fail(
                Errno::InvalidJson,
                format!("json invalid: expected an object, got {}", kind_of(&value)),
                Value::Null,
            ));
        };
        let id = object.remove("id").unwrap_or(Value::Null);
        let command = match object.remove("command") {
            Some(Value::String(command)) => command.to_ascii_lowercase(),
            Some(other) => {
                return Err(fail(
                    Errno::MessageError,
                    format!(
                        "message invalid: 'command' must be a string, got {}",
                        kind_of(&other)
                    ),
                    id,
                ))
            }
            None => {
                return Err(fail(
                    Errno::MessageError,
                    "message invalid: 'command' is missing".into(),
                    id,
                ))
            }
        };
        let properties = match object.remove("properties") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(properties)) => properties,
            Some(other) => {
                return Err(fail(
                    Errno::MessageError,
                    format!(
                        "message invalid: 'properties' must be an object, got {}",
                        kind_of(&other)
                    ),
                    id,
                ))
            }
        };
        let cast = matches!(object.get("msg_type"), Some(Value::String(t)) if t == "cast");
        let configure = match typed_configure && command == "configure" {
            true => super::configure::typed_from_tree(&properties).map(Box::new),
            false => None,
        };
        Ok(Self {
            command,
            properties: match configure {
                Some(_) => Map::new(),
                None => properties,
            },
            id,
            cast,
            configure,
        })
    }

    /// What this request would bring into the agent as code, if anything: `"add"`, or
    /// `"set KEY"` for the first option that names a program, its environment or the files and
    /// directories it writes (see [`option_brings_code`]). The agent accepts such requests only
    /// from its owner's Unix socket or, with `allow_remote_exec`, over TCP; `troupe serve`
    /// never forwards them.
    pub fn brings_code(&self) -> Option<String> {
        match self.command.as_str() {
            "add" => Some("add".into()),
            "set" => match self.properties.get("options") {
                Some(Value::Object(options)) => options
                    .keys()
                    .find(|key| option_brings_code(key))
                    .map(|key| format!("set {key}")),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether running this request changes nothing where it runs, so sending it twice is the
    /// same as sending it once: the Circus read commands ([`CIRCUS_READ_COMMANDS`]), troupe's
    /// [`TROUPE_READ_COMMANDS`] and `troupe serve`'s [`CONTROLLER_READ_COMMANDS`]. A client may
    /// resend such a request whose first copy may have been lost with its connection.
    pub fn changes_nothing(&self) -> bool {
        let command = self.command.as_str();
        CIRCUS_READ_COMMANDS.contains(&command)
            || TROUPE_READ_COMMANDS.contains(&command)
            || CONTROLLER_READ_COMMANDS.contains(&command)
    }

    /// Encodes the request as a client sends it.
    pub fn encode(&self) -> Vec<u8> {
        let mut object = Map::new();
        object.insert("command".into(), self.command.clone().into());
        let properties = match &self.configure {
            Some(configure) => configure.to_properties(),
            None => self.properties.clone(),
        };
        object.insert("properties".into(), Value::Object(properties));
        object.insert("id".into(), self.id.clone());
        if self.cast {
            object.insert("msg_type".into(), "cast".into());
        }
        serde_json::to_vec(&Value::Object(object)).expect("a JSON map always serialises")
    }
}

/// Every command troupe sends on to nodes: Circus's and troupe's own. `troupe serve` answers
/// one of them without a `node` property by saying where it goes; the CLI and its shell
/// complete and document them.
pub const NODE_COMMANDS: [&str; 24] = [
    "add",
    "decr",
    "dstats",
    "get",
    "globaloptions",
    "incr",
    "kill",
    "list",
    "listsockets",
    "nodeinfo",
    "numprocesses",
    "numwatchers",
    "options",
    "quit",
    "reload",
    "reloadconfig",
    "restart",
    "rm",
    "set",
    "signal",
    "start",
    "stats",
    "status",
    "stop",
];

/// A property of a request forwarded by `troupe serve` (next to `node`): the per-node timeout
/// in seconds, instead of the controller's configured one. Removed before the request goes
/// to nodes.
pub const NODE_TIMEOUT: &str = "node_timeout";

/// The Circus commands that change nothing: what `circusctl status/list/stats/...` and
/// `circus-top` send.
pub const CIRCUS_READ_COMMANDS: &[&str] = &[
    "status",
    "list",
    "numprocesses",
    "numwatchers",
    "stats",
    "dstats",
    "listsockets",
    "get",
    "options",
    "globaloptions",
];

/// troupe's own commands that change nothing. Unlike [`CIRCUS_READ_COMMANDS`], the plaintext
/// `circus_bind` refuses them: the log commands expose what processes printed, for the
/// cluster key's holders and the node's owner only.
pub const TROUPE_READ_COMMANDS: &[&str] = &[
    "nodeinfo",
    super::logs::LOGS_COMMAND,
    super::logs::LOG_FILES_COMMAND,
    super::logs::LOG_FILE_COMMAND,
];

/// `troupe serve`'s own commands that change nothing: its member list and its stats. A
/// `troupe nodes` whose connection a rotation of serve's key ended is sent again with the new
/// key, as a `status` is; before, it waited out its timeout and said the key was refused.
pub const CONTROLLER_READ_COMMANDS: &[&str] = &["nodelist", "stats_snapshot", "stats_history"];

/// Watcher options that make the agent run a different program or write elsewhere. The
/// `configure`/`reset` keys count: they decide which files `configure` writes and which dirs
/// `reset` empties (the commands themselves only act on what the config declares).
pub fn option_brings_code(key: &str) -> bool {
    matches!(
        key,
        "cmd"
            | "args"
            | "env"
            | "env_file"
            | "working_dir"
            | "shell"
            | "hooks"
            | "stdout"
            | "stderr"
            | "profile"
            | "profile_dir"
            | "profile_options"
            | "template"
            | "data_dir"
            | "reset_hook"
    ) || key.starts_with("hooks.")
}

/// The JSON type name used in error messages ("got a string").
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
