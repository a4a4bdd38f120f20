//! troupe's own watcher options: what `configure` renders (`profile`, `profile_dir`,
//! `profile_options`, `template`) and what `reset` wipes (`data_dir`, `reset_hook`).
//!
//! They are applied through [`super::WatcherConfig::apply`] like every Circus option, so a
//! config file and `add`/`set` validate them with the same code.

use super::data_dir::read_data_dirs;
use super::option::{read_hook, HookConfig, OptionError};
use super::value::{read_int, read_string, ValueError};
use serde_json::{json, Map, Value};
use std::path::PathBuf;

/// A service whose cluster config troupe ships a built-in template for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Profile {
    Neo4j,
    Janusgraph,
    Titan,
    Etcd,
    Zookeeper,
}

/// What one profile knob (a key of `profile_options`) accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnobKind {
    /// A TCP port, 1 to 65535.
    Port,
    /// An absolute path.
    Path,
    /// An integer >= 0 (a count or milliseconds).
    Count,
    /// A non-empty string.
    Text,
    /// One of a few words.
    Choice(&'static [&'static str]),
}

impl Profile {
    pub const ALL: [Profile; 5] = [
        Profile::Neo4j,
        Profile::Janusgraph,
        Profile::Titan,
        Profile::Etcd,
        Profile::Zookeeper,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Neo4j => "neo4j",
            Profile::Janusgraph => "janusgraph",
            Profile::Titan => "titan",
            Profile::Etcd => "etcd",
            Profile::Zookeeper => "zookeeper",
        }
    }

    pub fn parse(name: &str) -> Option<Profile> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// The knobs `profile_options` may set for this profile (defaults live with the
    /// templates, in the agent).
    pub fn knobs(self) -> &'static [(&'static str, KnobKind)] {
        use KnobKind::*;
        match self {
            Profile::Neo4j => &[
                ("conf_dir", Path),
                ("data_dir", Path),
                ("listen_address", Text),
                ("discovery_port", Port),
                ("cluster_port", Port),
                ("raft_port", Port),
                ("routing_port", Port),
                ("bolt_port", Port),
                ("http_port", Port),
                ("primaries", Count),
                ("system_primaries", Count),
            ],
            Profile::Janusgraph | Profile::Titan => &[
                ("conf_dir", Path),
                ("backend", Text),
                ("cql_port", Port),
                ("keyspace", Text),
                ("datacenter", Text),
            ],
            Profile::Etcd => &[
                ("data_dir", Path),
                ("client_port", Port),
                ("peer_port", Port),
                ("token", Text),
                ("cluster_state", Choice(&["new", "existing"])),
                ("loopback_client", Choice(&["yes", "no"])),
            ],
            Profile::Zookeeper => &[
                ("data_dir", Path),
                ("client_port", Port),
                ("quorum_port", Port),
                ("election_port", Port),
                ("admin_port", Port),
                ("tick_time", Count),
                ("init_limit", Count),
                ("sync_limit", Count),
            ],
        }
    }
}

/// One `[[watcher.NAME.template]]`: a minijinja file rendered by `configure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateConfig {
    /// The template; a relative path is taken from the config file's directory (else the
    /// watcher's working_dir).
    pub source: PathBuf,
    /// Where the result goes; a relative path is taken from the watcher's profile dir.
    pub dest: PathBuf,
    /// Permission bits of the written file; None keeps the existing file's (0644 if new).
    pub mode: Option<u32>,
}

/// The table under `profile_options` that overrides knobs for one node, by node name.
pub const PER_NODE_KEY: &str = "nodes";

/// troupe's service options of one watcher.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceOptions {
    pub profile: Option<Profile>,
    /// Where the profile's files go; None = the watcher's working_dir, else
    /// `<state_dir>/<watcher>`.
    pub profile_dir: Option<PathBuf>,
    /// Knobs for the profile (or free variables for templates), with per-node overrides
    /// under `nodes.<node name>`.
    pub profile_options: Map<String, Value>,
    pub templates: Vec<TemplateConfig>,
    /// Directories whose contents `reset` deletes (normalized absolute paths).
    pub data_dirs: Vec<PathBuf>,
    /// Run by `reset` after wiping, before the watcher starts again.
    pub reset_hook: Option<HookConfig>,
}

impl ServiceOptions {
    pub const KEYS: [&'static str; 6] = [
        "profile",
        "profile_dir",
        "profile_options",
        "template",
        "data_dir",
        "reset_hook",
    ];

    /// Whether `configure` has anything to render for this watcher.
    pub fn renders(&self) -> bool {
        self.profile.is_some() || !self.templates.is_empty()
    }

    /// Applies one of [`Self::KEYS`]; null clears it.
    pub fn apply(&mut self, key: &str, value: &Value) -> Result<(), OptionError> {
        let bad = OptionError::Invalid;
        match key {
            "profile" => {
                self.profile = match value {
                    Value::Null => None,
                    Value::String(s) if s.is_empty() => None,
                    _ => {
                        let name = read_string(value).map_err(bad)?;
                        Some(Profile::parse(&name).ok_or_else(|| {
                            bad(ValueError::new(
                                format!("one of {}", Profile::ALL.map(Profile::name).join(", ")),
                                value,
                            ))
                        })?)
                    }
                }
            }
            "profile_dir" => {
                self.profile_dir = match value {
                    Value::Null => None,
                    _ => Some(read_absolute(value).map_err(bad)?),
                }
            }
            "profile_options" => {
                self.profile_options = match value {
                    Value::Null => Map::new(),
                    Value::Object(map) => {
                        check_options_shape(map).map_err(bad)?;
                        map.clone()
                    }
                    _ => return Err(bad(ValueError::new("a table of profile knobs", value))),
                }
            }
            "template" => self.templates = read_templates(value).map_err(bad)?,
            "data_dir" => self.data_dirs = read_data_dirs(value).map_err(bad)?,
            "reset_hook" => {
                self.reset_hook = match value {
                    Value::Null => None,
                    Value::String(s) if s.is_empty() => None,
                    _ => Some(read_hook(value).map_err(bad)?),
                }
            }
            other => {
                return Err(OptionError::UnknownKey {
                    key: other.to_string(),
                    known: &Self::KEYS,
                })
            }
        }
        Ok(())
    }

    /// Rules across keys: `profile_options` knobs must be the profile's, of the right kind.
    pub fn check(&self) -> Result<(), String> {
        let Some(profile) = self.profile else {
            return Ok(());
        };
        let check_table = |table: &Map<String, Value>, prefix: &str| -> Result<(), String> {
            for (key, value) in table {
                if prefix.is_empty() && key == PER_NODE_KEY {
                    continue;
                }
                let Some((_, kind)) = profile.knobs().iter().find(|(k, _)| k == key) else {
                    let known: Vec<&str> = profile.knobs().iter().map(|(k, _)| *k).collect();
                    return Err(format!(
                        "profile_options.{prefix}{key}: unknown knob for profile {} (known: {})",
                        profile.name(),
                        known.join(", ")
                    ));
                };
                read_knob(*kind, value)
                    .map_err(|e| format!("profile_options.{prefix}{key}: {e}"))?;
            }
            Ok(())
        };
        check_table(&self.profile_options, "")?;
        if let Some(Value::Object(nodes)) = self.profile_options.get(PER_NODE_KEY) {
            for (node, table) in nodes {
                if let Value::Object(table) = table {
                    check_table(table, &format!("{PER_NODE_KEY}.{node}."))?;
                }
            }
        }
        Ok(())
    }

    /// The profile's data-dir knob set (for all nodes or under `nodes.<node>`) to a path
    /// outside every `data_dir`: `reset` would leave the service's data there. One message per
    /// knob, naming it; nothing when the watcher declares no data_dir (the knob then follows
    /// nothing) or the profile has no such knob.
    pub fn data_dir_disagreements(&self) -> Vec<String> {
        const KNOB: &str = "data_dir";
        let has_knob = self
            .profile
            .is_some_and(|p| p.knobs().iter().any(|(k, _)| *k == KNOB));
        if !has_knob || self.data_dirs.is_empty() {
            return Vec::new();
        }
        let mut tables = vec![(String::new(), &self.profile_options)];
        if let Some(Value::Object(nodes)) = self.profile_options.get(PER_NODE_KEY) {
            for (node, table) in nodes {
                if let Value::Object(table) = table {
                    tables.push((format!("{PER_NODE_KEY}.{node}."), table));
                }
            }
        }
        let inside = |path: &std::path::Path| {
            let path: PathBuf = path.components().collect();
            self.data_dirs.iter().any(|dir| path.starts_with(dir))
        };
        tables
            .into_iter()
            .filter_map(|(prefix, table)| {
                let path = table.get(KNOB)?.as_str()?;
                (!inside(std::path::Path::new(path))).then(|| {
                    format!(
                        "profile_options.{prefix}{KNOB} {path:?} is outside every data_dir ({}): \
                         reset would not wipe what the service keeps there",
                        self.data_dirs
                            .iter()
                            .map(|d| format!("{:?}", d.display().to_string()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect()
    }

    /// Adds these options to an `options`/`get` map, in the shapes `set` accepts back.
    pub fn write_options(&self, map: &mut Map<String, Value>) {
        map.insert("profile".into(), json!(self.profile.map(Profile::name)));
        map.insert("profile_dir".into(), json!(self.profile_dir));
        map.insert(
            "profile_options".into(),
            Value::Object(self.profile_options.clone()),
        );
        let templates: Vec<Value> = self
            .templates
            .iter()
            .map(|t| {
                json!({
                    "source": t.source,
                    "dest": t.dest,
                    "mode": t.mode.map(|m| format!("{m:04o}")),
                })
            })
            .collect();
        map.insert("template".into(), Value::Array(templates));
        map.insert("data_dir".into(), json!(self.data_dirs));
        map.insert(
            "reset_hook".into(),
            json!(self.reset_hook.as_ref().map(|h| &h.cmd)),
        );
    }
}

/// Reads a knob's value as its kind wants it: ports and counts as integers, paths absolute.
pub fn read_knob(kind: KnobKind, value: &Value) -> Result<Value, ValueError> {
    Ok(match kind {
        KnobKind::Port => json!(read_int(value, 1, 65535)?),
        KnobKind::Count => json!(read_int(value, 0, 1_000_000_000)?),
        KnobKind::Path => json!(read_absolute(value)?),
        KnobKind::Text => {
            let text = read_string(value)?;
            if text.is_empty() {
                return Err(ValueError::new("a non-empty string", value));
            }
            json!(text)
        }
        KnobKind::Choice(words) => {
            let word = read_string(value)?;
            if !words.contains(&word.as_str()) {
                return Err(ValueError::new(
                    format!("one of {}", words.join(", ")),
                    value,
                ));
            }
            json!(word)
        }
    })
}

/// `nodes`, when present, must be a table of tables.
fn check_options_shape(map: &Map<String, Value>) -> Result<(), ValueError> {
    match map.get(PER_NODE_KEY) {
        None => Ok(()),
        Some(Value::Object(nodes)) => {
            for table in nodes.values() {
                if !table.is_object() {
                    return Err(ValueError::new(
                        "a table of knobs for each node under 'nodes'",
                        table,
                    ));
                }
            }
            Ok(())
        }
        Some(other) => Err(ValueError::new(
            "a table of node name to knob table under 'nodes'",
            other,
        )),
    }
}

fn read_absolute(value: &Value) -> Result<PathBuf, ValueError> {
    let path = read_string(value)?;
    if !path.starts_with('/') {
        return Err(ValueError::new("an absolute path", value));
    }
    Ok(PathBuf::from(path))
}

/// A list of `{ source, dest, mode }` tables (one table alone is accepted too).
fn read_templates(value: &Value) -> Result<Vec<TemplateConfig>, ValueError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Object(_) => Ok(vec![read_template(value)?]),
        Value::Array(items) => items.iter().map(read_template).collect(),
        _ => Err(ValueError::new(
            "a list of { source, dest, mode } tables",
            value,
        )),
    }
}

fn read_template(value: &Value) -> Result<TemplateConfig, ValueError> {
    let Value::Object(spec) = value else {
        return Err(ValueError::new("a { source, dest, mode } table", value));
    };
    let mut source = None;
    let mut dest = None;
    let mut mode = None;
    for (key, v) in spec {
        match key.as_str() {
            "source" => source = Some(read_string(v)?),
            "dest" => dest = Some(read_string(v)?),
            "mode" => mode = read_mode(v)?,
            _ => {
                return Err(ValueError {
                    expected: "template keys source, dest, mode".into(),
                    got: format!("'{key}'"),
                })
            }
        }
    }
    match (source, dest) {
        (Some(source), Some(dest)) if !source.is_empty() && !dest.is_empty() => {
            Ok(TemplateConfig {
                source: source.into(),
                dest: dest.into(),
                mode,
            })
        }
        _ => Err(ValueError::new(
            "a template table with non-empty 'source' and 'dest'",
            value,
        )),
    }
}

/// `"0640"` / `"640"` (octal, as chmod takes it) or an integer (TOML's `0o640`).
fn read_mode(value: &Value) -> Result<Option<u32>, ValueError> {
    const EXPECTED: &str = "a file mode such as \"0640\"";
    let mode = match value {
        Value::Null => return Ok(None),
        Value::String(s) => {
            let digits = s.trim().trim_start_matches("0o");
            u32::from_str_radix(digits, 8).map_err(|_| ValueError::new(EXPECTED, value))?
        }
        Value::Number(_) => {
            read_int(value, 0, 0o7777).map_err(|_| ValueError::new(EXPECTED, value))? as u32
        }
        _ => return Err(ValueError::new(EXPECTED, value)),
    };
    if mode > 0o7777 {
        return Err(ValueError::new(EXPECTED, value));
    }
    Ok(Some(mode))
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
