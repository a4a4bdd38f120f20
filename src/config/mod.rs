//! The agent's configuration file, `troupe-agent.toml`: model, defaults and validation.
//!
//! Every problem in a file is collected and reported at once, each naming the file, the key,
//! what was expected and what was found.

pub mod circus_ini;
pub mod controller;
mod data_dir;
pub mod names;
mod option;
mod program;
pub mod render;
mod service;
pub mod suggest;
pub mod value;
mod watcher;

pub use data_dir::{check_data_dir, DataDirRefusal, DataDirRule, SYSTEM_DIRS};
pub use option::{HookConfig, OptionError, HOOK_NAMES};
pub use program::{program_candidates, DEFAULT_PATH};
pub use service::{read_knob, KnobKind, Profile, ServiceOptions, TemplateConfig, PER_NODE_KEY};
pub use watcher::{
    OptionEffect, OutputConfig, WatcherConfig, DEFAULT_LOG_RING_BYTES, DEFAULT_TIME_FORMAT,
    MAX_NUMPROCESSES,
};

use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use value::{read_bool, read_duration, read_int, read_size, read_string, toml_to_json};

/// Circus's default control port.
pub const DEFAULT_CONTROL_PORT: u16 = 5555;
pub const DEFAULT_PUBSUB_PORT: u16 = 5556;
pub const DEFAULT_STATS_PORT: u16 = 5557;
/// The plaintext Circus ports of a keyed agent ([`AgentSettings::circus_bind`]): Circus's own
/// plus 10, as `127.0.0.1:5555` cannot be bound beside `0.0.0.0:5555`.
pub const DEFAULT_CIRCUS_CONTROL_PORT: u16 = 5565;
pub const DEFAULT_CIRCUS_PUBSUB_PORT: u16 = 5566;
pub const DEFAULT_CIRCUS_STATS_PORT: u16 = 5567;
/// Largest control frame the agent decodes.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1 << 20;

/// The `[agent]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    pub name: String,
    pub cluster: String,
    pub bind: String,
    pub control_port: u16,
    pub pubsub_port: u16,
    pub stats_port: u16,
    pub stats_interval: Duration,
    pub state_dir: PathBuf,
    pub data_root: Option<PathBuf>,
    pub mdns: bool,
    pub master: Option<String>,
    pub allow_remote_exec: bool,
    pub max_message_size: u64,
    /// Interfaces to announce on (empty = every usable one).
    pub announce_interfaces: Vec<String>,
    /// Interfaces never to announce on.
    pub ignore_interfaces: Vec<String>,
    /// The cluster key file (`key_file`); see [`AgentSettings::key_file_in_use`].
    pub key_file: Option<PathBuf>,
    /// Where a keyed agent also serves stock Circus clients in plaintext (`circus_bind`: an
    /// address, or `true` for 127.0.0.1), read-only unless `allow_remote_exec`; `None`: off.
    pub circus_bind: Option<String>,
    pub circus_control_port: u16,
    pub circus_pubsub_port: u16,
    pub circus_stats_port: u16,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            name: default_node_name(),
            cluster: "default".into(),
            bind: "0.0.0.0".into(),
            control_port: DEFAULT_CONTROL_PORT,
            pubsub_port: DEFAULT_PUBSUB_PORT,
            stats_port: DEFAULT_STATS_PORT,
            stats_interval: Duration::from_secs(1),
            state_dir: default_state_dir(),
            data_root: None,
            mdns: true,
            master: None,
            allow_remote_exec: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            announce_interfaces: Vec::new(),
            ignore_interfaces: Vec::new(),
            key_file: None,
            circus_bind: None,
            circus_control_port: DEFAULT_CIRCUS_CONTROL_PORT,
            circus_pubsub_port: DEFAULT_CIRCUS_PUBSUB_PORT,
            circus_stats_port: DEFAULT_CIRCUS_STATS_PORT,
        }
    }
}

impl AgentSettings {
    /// `tcp://<bind>:<port>` for one of the agent's sockets.
    pub fn endpoint(&self, port: u16) -> String {
        format!("tcp://{}:{}", self.bind, port)
    }

    /// `tcp://<circus_bind>:<port>` for one of the plaintext Circus sockets, if `circus_bind`.
    pub fn circus_endpoint(&self, port: u16) -> Option<String> {
        let address = self.circus_bind.as_ref()?;
        Some(format!("tcp://{address}:{port}"))
    }

    /// The owner-only control socket, `<state_dir>/control.sock` (SECURITY.md).
    pub fn owner_socket(&self) -> PathBuf {
        self.state_dir.join("control.sock")
    }

    /// The cluster key file the agent reads: `key_file` when set (the file must then exist),
    /// else `<state_dir>/cluster.key` when present; `None`: the agent runs keyless.
    pub fn key_file_in_use(&self) -> Option<PathBuf> {
        if let Some(path) = &self.key_file {
            return Some(path.clone());
        }
        let default = self.state_dir.join(crate::cluster_key::DEFAULT_FILE_NAME);
        default.exists().then_some(default)
    }
}

/// A whole agent configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentConfig {
    pub agent: AgentSettings,
    /// Watchers in file order.
    pub watchers: Vec<WatcherConfig>,
    /// The file it came from, for `reloadconfig`.
    pub source: Option<PathBuf>,
    /// What the file sets that troupe has no use for (a Circus ini's `pidfile`...), reported
    /// once with the warnings.
    pub ignored: Vec<Problem>,
}

/// One thing wrong in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path (`watcher.web.numprocesses`), empty for the file as a whole.
    pub key: String,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.key.is_empty() {
                write!(f, "{}: {}", self.file, p.message)?;
            } else {
                write!(f, "{}: {}: {}", self.file, p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl AgentConfig {
    /// Reads and validates a file: a `troupe-agent.toml`, or a Circus ini
    /// ([`circus_ini::is_circus_ini`]) read with this process's environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_file(path)?;
        if circus_ini::is_circus_ini(path, &text) {
            let environ = circus_ini::substitute::Environ::new(std::env::vars());
            return circus_ini::load(path, &text, environ);
        }
        let mut config = Self::parse(&text, &path.display().to_string())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let fail = |problems| ConfigError {
            file: file.to_string(),
            problems,
        };
        let table = parse_toml(text, file)?;
        let mut problems = Vec::new();
        let mut config = AgentConfig::default();
        for (key, value) in &table {
            match (key.as_str(), value) {
                ("agent", toml::Value::Table(agent)) => {
                    read_agent(&mut config.agent, agent, &mut problems)
                }
                ("watcher", toml::Value::Table(watchers)) => {
                    for (name, spec) in watchers {
                        if let Some(w) = read_watcher(name, spec, &mut problems) {
                            config.watchers.push(w);
                        }
                    }
                }
                ("agent" | "watcher", _) => problems.push(Problem {
                    key: key.clone(),
                    message: "expected a table".into(),
                }),
                _ => problems.push(Problem {
                    key: key.clone(),
                    message: "unknown section (expected [agent] or [watcher.NAME])".into(),
                }),
            }
        }
        problems.extend(whole_file_problems(&config));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems))
        }
    }
}

/// What is wrong across sections: watcher names equal but for case, a port used twice.
fn whole_file_problems(config: &AgentConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for w in &config.watchers {
        if !seen.insert(w.name.to_lowercase()) {
            problems.push(Problem {
                key: format!("watcher.{}", w.name),
                message: "watcher names must be unique ignoring case".into(),
            });
        }
    }
    let mut ports = vec![
        ("control_port", config.agent.control_port),
        ("pubsub_port", config.agent.pubsub_port),
        ("stats_port", config.agent.stats_port),
    ];
    if config.agent.circus_bind.is_some() {
        ports.extend([
            ("circus_control_port", config.agent.circus_control_port),
            ("circus_pubsub_port", config.agent.circus_pubsub_port),
            ("circus_stats_port", config.agent.circus_stats_port),
        ]);
    }
    for (i, (a, pa)) in ports.iter().enumerate() {
        for (b, pb) in &ports[i + 1..] {
            if pa == pb && *pa != 0 {
                problems.push(Problem {
                    key: format!("agent.{b}"),
                    message: format!("port {pb} is already used by agent.{a}"),
                });
            }
        }
    }
    problems
}

impl AgentConfig {
    /// What is valid but likely wrong, keyed like problems: what the file sets that troupe
    /// ignores; a program the agent (with this process's `PATH`) would not find; a profile's
    /// data-dir knob outside every data_dir of its watcher. `--check` prints these; the agent
    /// logs them.
    pub fn warnings(&self) -> Vec<Problem> {
        let agent_path = std::env::var_os("PATH");
        let watchers = self.watchers.iter().flat_map(|w| {
            w.program_problem(agent_path.as_deref())
                .into_iter()
                .chain(w.service.data_dir_disagreements())
                .map(|message| Problem {
                    key: format!("watcher.{}", w.name),
                    message,
                })
        });
        self.ignored.iter().cloned().chain(watchers).collect()
    }
}

/// Reads a config file; a read error is a problem naming the file.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    let fail = |message: String| ConfigError {
        file: path.display().to_string(),
        problems: vec![Problem {
            key: String::new(),
            message,
        }],
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        fail(format!(
            "line {line}: not UTF-8 text (byte {} of the file): save it as UTF-8",
            valid.len() + 1
        ))
    })
}

/// Parses TOML, turning a syntax error into a problem that names the line.
pub(crate) fn parse_toml(text: &str, file: &str) -> Result<toml::Table, ConfigError> {
    text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| format!("line {}: ", text[..s.start].matches('\n').count() + 1))
            .unwrap_or_default();
        ConfigError {
            file: file.to_string(),
            problems: vec![Problem {
                key: String::new(),
                message: format!("{line}invalid TOML: {}", e.message()),
            }],
        }
    })
}

/// The keys of `[agent]`, for the "did you mean" hint.
const AGENT_KEYS: [&str; 20] = [
    "name",
    "cluster",
    "bind",
    "control_port",
    "pubsub_port",
    "stats_port",
    "stats_interval",
    "state_dir",
    "data_root",
    "mdns",
    "master",
    "allow_remote_exec",
    "max_message_size",
    "announce_interfaces",
    "ignore_interfaces",
    "key_file",
    "circus_bind",
    "circus_control_port",
    "circus_pubsub_port",
    "circus_stats_port",
];

fn read_agent(settings: &mut AgentSettings, table: &toml::Table, problems: &mut Vec<Problem>) {
    for (key, value) in table {
        let json = toml_to_json(value);
        let result: Result<(), String> = (|| {
            let err = |e: value::ValueError| e.to_string();
            match key.as_str() {
                "name" => settings.name = read_name(&json)?,
                "cluster" => settings.cluster = read_name(&json)?,
                "bind" => settings.bind = read_string(&json).map_err(err)?,
                "control_port" => settings.control_port = read_port(&json)?,
                "pubsub_port" => settings.pubsub_port = read_port(&json)?,
                "stats_port" => settings.stats_port = read_port(&json)?,
                "stats_interval" => {
                    let d = read_duration(&json).map_err(err)?;
                    if d < Duration::from_millis(100) {
                        return Err(format!("expected at least 100ms, got {}", json));
                    }
                    settings.stats_interval = d;
                }
                "state_dir" => settings.state_dir = read_string(&json).map_err(err)?.into(),
                "data_root" => settings.data_root = Some(read_string(&json).map_err(err)?.into()),
                "mdns" => settings.mdns = read_bool(&json).map_err(err)?,
                "master" => {
                    let endpoint = read_string(&json).map_err(err)?;
                    if !endpoint.starts_with("tcp://") {
                        return Err(format!("expected a tcp://HOST:PORT endpoint, got {json}"));
                    }
                    settings.master = Some(endpoint);
                }
                "allow_remote_exec" => {
                    settings.allow_remote_exec = read_bool(&json).map_err(err)?
                }
                "max_message_size" => {
                    let size = read_size(&json).map_err(err)?;
                    if !(1024..=(256 << 20)).contains(&size) {
                        return Err(format!("expected a size from 1KiB to 256MiB, got {json}"));
                    }
                    settings.max_message_size = size;
                }
                "announce_interfaces" => settings.announce_interfaces = read_names(&json)?,
                "ignore_interfaces" => settings.ignore_interfaces = read_names(&json)?,
                "key_file" => settings.key_file = Some(read_string(&json).map_err(err)?.into()),
                "circus_bind" => settings.circus_bind = read_circus_bind(&json)?,
                "circus_control_port" => settings.circus_control_port = read_port(&json)?,
                "circus_pubsub_port" => settings.circus_pubsub_port = read_port(&json)?,
                "circus_stats_port" => settings.circus_stats_port = read_port(&json)?,
                _ => return Err(suggest::unknown_key(key, AGENT_KEYS)),
            }
            Ok(())
        })();
        if let Err(message) = result {
            problems.push(Problem {
                key: format!("agent.{key}"),
                message,
            });
        }
    }
}

fn read_name(value: &Value) -> Result<String, String> {
    let name = read_string(value).map_err(|e| e.to_string())?;
    names::check_name(&name)?;
    Ok(name)
}

fn read_names(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                read_string(i)
                    .map_err(|_| format!("expected a list of interface names, got {value}"))
            })
            .collect(),
        _ => Err(format!("expected a list of interface names, got {value}")),
    }
}

/// `circus_bind`: `true` (loopback), `false` (off) or an address to bind.
fn read_circus_bind(value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Bool(true) => Ok(Some("127.0.0.1".into())),
        Value::Bool(false) => Ok(None),
        Value::String(address) if !address.trim().is_empty() => Ok(Some(address.clone())),
        other => Err(format!(
            "expected true (127.0.0.1), false or an address such as \"127.0.0.1\", got {other}"
        )),
    }
}

fn read_port(value: &Value) -> Result<u16, String> {
    read_int(value, 0, 65535)
        .map(|p| p as u16)
        .map_err(|e| e.to_string())
}

fn read_watcher(
    name: &str,
    spec: &toml::Value,
    problems: &mut Vec<Problem>,
) -> Option<WatcherConfig> {
    let key = format!("watcher.{name}");
    let toml::Value::Table(table) = spec else {
        problems.push(Problem {
            key,
            message: "expected a table".into(),
        });
        return None;
    };
    let before = problems.len();
    if let Err(message) = check_watcher_name(name) {
        problems.push(Problem {
            key: key.clone(),
            message,
        });
    }
    let mut watcher = WatcherConfig::new(name, "");
    for (option, value) in table {
        if let Err(e) = watcher.apply(option, &toml_to_json(value)) {
            problems.push(Problem {
                key: format!("{key}.{option}"),
                message: e.to_string(),
            });
        }
    }
    if !table.contains_key("cmd") {
        problems.push(Problem {
            key: format!("{key}.cmd"),
            message: "missing: every watcher needs a cmd".into(),
        });
    }
    if let Err(message) = watcher.check() {
        problems.push(Problem { key, message });
    }
    (problems.len() == before).then_some(watcher)
}

/// Watcher names end up in pubsub and stats topics split on '.', so '.' and ':' are refused.
pub fn check_watcher_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['.', ':']) || name.chars().any(char::is_control) {
        return Err(format!(
            "watcher name {name:?} must be non-empty and contain no '.', ':' or control characters"
        ));
    }
    Ok(())
}

fn default_node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or_default().to_string())
        .filter(|h| names::check_name(h).is_ok())
        .unwrap_or_else(|| "troupe-node".into())
}

/// `/var/lib/troupe` for root, else `$XDG_STATE_HOME/troupe` or `~/.local/state/troupe`.
pub(crate) fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/troupe");
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("troupe");
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".local/state/troupe"))
        .unwrap_or_else(|| PathBuf::from("/tmp/troupe-state"))
}

#[cfg(test)]
mod tests;
