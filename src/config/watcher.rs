//! One watcher's options: defaults, validation, and the Circus option names seen by `get`/`set`.

use super::option::{known_hook, read_hook, HookConfig, OptionError};
use super::service::ServiceOptions;
use super::value::{
    read_args, read_bool, read_duration, read_int, read_signal, read_size, read_string, ValueError,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where one output stream of the watcher's processes goes.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    pub file: PathBuf,
    /// Rotate when the file would pass this size; 0 = never.
    pub max_bytes: u64,
    pub backup_count: u32,
    /// strftime format of the line prefix `<time> [<pid>] | `; empty: no prefix, lines as
    /// written (Circus's FileStream without a time_format).
    pub time_format: String,
}

/// What a watcher should be, whether it came from the config file or from `add`/`set`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatcherConfig {
    pub name: String,
    pub cmd: String,
    pub args: Vec<String>,
    pub numprocesses: u32,
    pub working_dir: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    /// Environment files in systemd `EnvironmentFile=` syntax, read by the agent at each
    /// spawn and laid under `env`; `-PATH` may be missing, a relative PATH is taken from
    /// `working_dir`. None: the profile's own (etcd's `etcd.env`), if any.
    pub env_files: Option<Vec<String>>,
    pub copy_env: bool,
    pub autostart: bool,
    pub respawn: bool,
    /// Quick deaths in a row before the watcher gives up; -1 = never give up.
    pub max_retry: i64,
    pub warmup_delay: Duration,
    pub graceful_timeout: Duration,
    pub stop_signal: i32,
    pub stop_children: bool,
    pub priority: i64,
    pub singleton: bool,
    /// Recycle a process after this long (plus up to `max_age_variance`); zero = never.
    pub max_age: Duration,
    pub max_age_variance: Duration,
    /// Run `cmd args` through `/bin/sh -c`.
    pub shell: bool,
    /// `reload` sends SIGHUP instead of replacing processes.
    pub send_hup: bool,
    /// A process that dies sooner than this counts as a quick death (backoff, max_retry).
    pub min_uptime: Duration,
    /// Ceiling of the respawn backoff.
    pub backoff_max: Duration,
    pub hooks: BTreeMap<String, HookConfig>,
    pub stdout: Option<OutputConfig>,
    pub stderr: Option<OutputConfig>,
    /// Bytes of output lines kept in memory for `logs`, whether or not `stdout`/`stderr`
    /// name files (at most [`crate::bounds::MAX_LOG_RING_BYTES`]; 0 keeps none).
    pub log_ring_bytes: u64,
    /// troupe's own: what `configure` renders and `reset` wipes.
    pub service: ServiceOptions,
}

/// What changing one option requires of a running watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionEffect {
    /// Nothing beyond storing it.
    None,
    /// The process count changed: spawn or trim.
    Resize,
    /// Processes must be replaced to pick it up (cmd, args, env, ...).
    Reload,
}

pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// `log_ring_bytes` when the config names none: the last few thousand lines of a watcher.
pub const DEFAULT_LOG_RING_BYTES: u64 = 1024 * 1024;

/// The most processes one watcher may run, as its config file or the node's owner sets it (a
/// remote peer is held to [`crate::bounds::MAX_REMOTE_NUMPROCESSES`]).
pub const MAX_NUMPROCESSES: u32 = 100_000;

/// `a` then `b`, as one array (of `N` = `A + B` keys, checked when compiled).
const fn concat_keys<const A: usize, const B: usize, const N: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; N] {
    assert!(A + B == N, "N must be A + B");
    let mut all = [""; N];
    let mut i = 0;
    while i < A {
        all[i] = a[i];
        i += 1;
    }
    while i < N {
        all[i] = b[i - A];
        i += 1;
    }
    all
}

impl WatcherConfig {
    /// A watcher with Circus's defaults.
    pub fn new(name: &str, cmd: &str) -> Self {
        Self {
            name: name.to_string(),
            cmd: cmd.to_string(),
            args: Vec::new(),
            numprocesses: 1,
            working_dir: None,
            env: BTreeMap::new(),
            env_files: None,
            copy_env: false,
            autostart: true,
            respawn: true,
            max_retry: 5,
            warmup_delay: Duration::ZERO,
            graceful_timeout: Duration::from_secs(30),
            stop_signal: nix::sys::signal::Signal::SIGTERM as i32,
            stop_children: false,
            priority: 0,
            singleton: false,
            max_age: Duration::ZERO,
            max_age_variance: Duration::from_secs(30),
            shell: false,
            send_hup: false,
            min_uptime: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            hooks: BTreeMap::new(),
            stdout: None,
            stderr: None,
            log_ring_bytes: DEFAULT_LOG_RING_BYTES,
            service: ServiceOptions::default(),
        }
    }

    /// The option keys `set` and the config file accept (besides `hooks.<name>`): the
    /// watcher's own, then its service's ([`ServiceOptions::KEYS`]).
    pub const KEYS: [&'static str; 32] = concat_keys(Self::OWN_KEYS, ServiceOptions::KEYS);

    /// The keys of the watcher's own options (not its service's).
    const OWN_KEYS: [&'static str; 26] = [
        "cmd",
        "args",
        "numprocesses",
        "working_dir",
        "env",
        "env_file",
        "copy_env",
        "autostart",
        "respawn",
        "max_retry",
        "warmup_delay",
        "graceful_timeout",
        "stop_signal",
        "stop_children",
        "priority",
        "singleton",
        "max_age",
        "max_age_variance",
        "shell",
        "send_hup",
        "min_uptime",
        "backoff_max",
        "hooks",
        "stdout",
        "stderr",
        "log_ring_bytes",
    ];

    /// Applies one option, validating it. `hooks.<name>` sets a single hook.
    pub fn apply(&mut self, key: &str, value: &Value) -> Result<OptionEffect, OptionError> {
        use OptionEffect::*;
        let bad = |e: ValueError| OptionError::Invalid(e);
        let effect = match key {
            "cmd" => {
                let cmd = read_string(value).map_err(bad)?;
                if shell_words::split(&cmd)
                    .map(|w| w.is_empty())
                    .unwrap_or(true)
                {
                    return Err(OptionError::Invalid(ValueError::new(
                        "a non-empty command with balanced quotes",
                        value,
                    )));
                }
                self.cmd = cmd;
                Reload
            }
            "args" => {
                self.args = read_args(value).map_err(bad)?;
                Reload
            }
            "log_ring_bytes" => {
                let max = crate::bounds::MAX_LOG_RING_BYTES;
                let bytes = read_size(value).map_err(bad)?;
                if bytes > max {
                    return Err(OptionError::Invalid(ValueError::new(
                        "a size of at most 64MiB (troupe::bounds::MAX_LOG_RING_BYTES)",
                        value,
                    )));
                }
                self.log_ring_bytes = bytes;
                None
            }
            "numprocesses" => {
                self.numprocesses =
                    read_int(value, 0, i64::from(MAX_NUMPROCESSES)).map_err(bad)? as u32;
                Resize
            }
            "working_dir" => {
                self.working_dir = Some(PathBuf::from(read_string(value).map_err(bad)?));
                Reload
            }
            "env" => {
                self.env = read_env(value).map_err(bad)?;
                Reload
            }
            "env_file" => {
                self.env_files = read_env_files(value).map_err(bad)?;
                Reload
            }
            "copy_env" => {
                self.copy_env = read_bool(value).map_err(bad)?;
                Reload
            }
            "autostart" => {
                self.autostart = read_bool(value).map_err(bad)?;
                None
            }
            "respawn" => {
                self.respawn = read_bool(value).map_err(bad)?;
                None
            }
            "max_retry" => {
                self.max_retry = read_int(value, -1, i64::MAX).map_err(bad)?;
                None
            }
            "warmup_delay" => {
                self.warmup_delay = read_duration(value).map_err(bad)?;
                None
            }
            "graceful_timeout" => {
                self.graceful_timeout = read_duration(value).map_err(bad)?;
                None
            }
            "stop_signal" => {
                self.stop_signal = read_signal(value).map_err(bad)?;
                None
            }
            "stop_children" => {
                self.stop_children = read_bool(value).map_err(bad)?;
                None
            }
            "priority" => {
                self.priority = read_int(value, i64::MIN, i64::MAX).map_err(bad)?;
                None
            }
            "singleton" => {
                self.singleton = read_bool(value).map_err(bad)?;
                Resize
            }
            "max_age" => {
                self.max_age = read_duration(value).map_err(bad)?;
                None
            }
            "max_age_variance" => {
                self.max_age_variance = read_duration(value).map_err(bad)?;
                None
            }
            "shell" => {
                self.shell = read_bool(value).map_err(bad)?;
                Reload
            }
            "send_hup" => {
                self.send_hup = read_bool(value).map_err(bad)?;
                None
            }
            "min_uptime" => {
                self.min_uptime = read_duration(value).map_err(bad)?;
                None
            }
            "backoff_max" => {
                self.backoff_max = read_duration(value).map_err(bad)?;
                None
            }
            "hooks" => {
                let Value::Object(hooks) = value else {
                    return Err(bad(ValueError::new(
                        "a table of hook name to command",
                        value,
                    )));
                };
                let mut parsed = BTreeMap::new();
                for (hook, spec) in hooks {
                    let hook = known_hook(hook)?;
                    parsed.insert(hook.to_string(), read_hook(spec).map_err(bad)?);
                }
                self.hooks = parsed;
                None
            }
            "stdout" | "stderr" => {
                let output = match value {
                    Value::Null => Option::None,
                    _ => Some(read_output(value)?),
                };
                if key == "stdout" {
                    self.stdout = output;
                } else {
                    self.stderr = output;
                }
                Reload
            }
            key if ServiceOptions::KEYS.contains(&key) => {
                self.service.apply(key, value)?;
                None
            }
            other => match other.strip_prefix("hooks.") {
                Some(hook) => {
                    let hook = known_hook(hook)?;
                    if value.is_null() || value == &json!("") {
                        self.hooks.remove(hook);
                    } else {
                        self.hooks
                            .insert(hook.to_string(), read_hook(value).map_err(bad)?);
                    }
                    None
                }
                Option::None => {
                    return Err(OptionError::UnknownKey {
                        key: other.to_string(),
                        known: &WatcherConfig::KEYS,
                    })
                }
            },
        };
        Ok(effect)
    }

    /// Cross-option rules, checked after every option is applied.
    pub fn check(&self) -> Result<(), String> {
        if self.singleton && self.numprocesses > 1 {
            return Err(format!(
                "singleton watcher '{}' cannot have numprocesses = {}",
                self.name, self.numprocesses
            ));
        }
        let relative = self
            .env_files
            .iter()
            .flatten()
            .find(|entry| !entry.trim_start_matches('-').starts_with('/'));
        if let (Some(entry), None) = (relative, &self.working_dir) {
            return Err(format!(
                "env_file {entry:?} is relative: it needs a working_dir to start from"
            ));
        }
        self.service.check()
    }

    /// The full command line: `cmd` split like a shell, then `args`. With `shell`, `cmd` goes
    /// to `/bin/sh -c` as written (so `$VAR` and pipes work) followed by the quoted args.
    pub fn argv(&self) -> Vec<String> {
        if self.shell {
            let mut line = self.cmd.clone();
            if !self.args.is_empty() {
                line.push(' ');
                line.push_str(&shell_words::join(&self.args));
            }
            return vec!["/bin/sh".to_string(), "-c".to_string(), line];
        }
        let mut argv = shell_words::split(&self.cmd).unwrap_or_default();
        argv.extend(self.args.iter().cloned());
        argv
    }

    /// [`Self::argv`] for the process with worker id `wid`: `$(circus.wid)` (or
    /// `((circus.wid))`, any case) replaced by it, as circusd does when it spawns.
    pub fn argv_for(&self, wid: u32) -> Vec<String> {
        static WID: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(r"(?i)\$\(circus\.wid\)|\(\(circus\.wid\)\)").expect("valid regex")
        });
        let wid = wid.to_string();
        self.argv()
            .into_iter()
            .map(|arg| WID.replace_all(&arg, wid.as_str()).into_owned())
            .collect()
    }

    /// The options to `set` on a running watcher configured as `self` to make it `new`, when
    /// none of them needs new processes (a count, timeouts, hooks, profile keys...): a reload
    /// of the config file then leaves the running processes alone. None when `new` differs in
    /// anything that does (cmd, env, output files...) or that options cannot express.
    pub fn changes_in_place(&self, new: &WatcherConfig) -> Option<Vec<(String, Value)>> {
        let (old_options, new_options) = (self.options_json(), new.options_json());
        let changed: Vec<(String, Value)> = new_options
            .into_iter()
            .filter(|(key, value)| old_options.get(key) != Some(value))
            .collect();
        let mut updated = self.clone();
        for (key, value) in &changed {
            if updated.apply(key, value).ok()? == OptionEffect::Reload {
                return None;
            }
        }
        (updated == *new).then_some(changed)
    }

    /// Every option under its Circus name, as `options` and `get` report them.
    pub fn options_json(&self) -> Map<String, Value> {
        // Circus reads whole seconds from its ini as integers and prints them so.
        let secs = |d: Duration| {
            if d.subsec_nanos() == 0 {
                json!(d.as_secs())
            } else {
                json!(d.as_secs_f64())
            }
        };
        let hooks: Map<String, Value> = self
            .hooks
            .iter()
            .map(|(k, h)| (k.clone(), json!(h.cmd)))
            .collect();
        let output = |o: &Option<OutputConfig>| match o {
            Some(o) => json!({
                "file": o.file, "max_bytes": o.max_bytes,
                "backup_count": o.backup_count, "time_format": o.time_format,
            }),
            Option::None => json!({}),
        };
        let args = if self.args.is_empty() {
            json!("")
        } else {
            json!(self.args)
        };
        let mut map = Map::new();
        map.insert("cmd".into(), json!(self.cmd));
        map.insert("args".into(), args);
        map.insert("numprocesses".into(), json!(self.numprocesses));
        map.insert("working_dir".into(), json!(self.working_dir));
        map.insert("env".into(), json!(self.env));
        map.insert("env_file".into(), json!(self.env_files));
        map.insert("copy_env".into(), json!(self.copy_env));
        map.insert("autostart".into(), json!(self.autostart));
        map.insert("respawn".into(), json!(self.respawn));
        map.insert("max_retry".into(), json!(self.max_retry));
        map.insert("warmup_delay".into(), secs(self.warmup_delay));
        map.insert(
            "graceful_timeout".into(),
            json!(self.graceful_timeout.as_secs_f64()),
        );
        map.insert("stop_signal".into(), json!(self.stop_signal));
        map.insert("stop_children".into(), json!(self.stop_children));
        map.insert("priority".into(), json!(self.priority));
        map.insert("singleton".into(), json!(self.singleton));
        map.insert("max_age".into(), secs(self.max_age));
        map.insert("max_age_variance".into(), secs(self.max_age_variance));
        map.insert("shell".into(), json!(self.shell));
        map.insert("send_hup".into(), json!(self.send_hup));
        map.insert("min_uptime".into(), secs(self.min_uptime));
        map.insert("backoff_max".into(), secs(self.backoff_max));
        map.insert("hooks".into(), Value::Object(hooks));
        map.insert("stdout_stream_conf".into(), output(&self.stdout));
        map.insert("stderr_stream_conf".into(), output(&self.stderr));
        map.insert("log_ring_bytes".into(), json!(self.log_ring_bytes));
        self.service.write_options(&mut map);
        // Circus options troupe does not offer, shown with the fixed behaviour troupe has, so
        // tools that `get` them keep working. `set` refuses them as unknown keys.
        for (key, value) in [
            ("close_child_stdin", json!(true)),
            ("close_child_stdout", json!(false)),
            ("close_child_stderr", json!(false)),
            ("executable", Value::Null),
            ("uid", Value::Null),
            ("gid", Value::Null),
            ("on_demand", json!(false)),
            ("shell_args", Value::Null),
            ("use_sockets", json!(false)),
        ] {
            map.insert(key.into(), value);
        }
        map.sort_keys();
        map
    }
}

fn read_env(value: &Value) -> Result<BTreeMap<String, String>, ValueError> {
    let Value::Object(vars) = value else {
        return Err(ValueError::new("a table of strings", value));
    };
    vars.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(_) | Value::Bool(_) => Ok((k.clone(), v.to_string())),
            _ => Err(ValueError::new(format!("a string for env var {k}"), v)),
        })
        .collect()
}

/// `env_file`: one path or a list of them (each optionally `-`-prefixed); null or "" unsets
/// it (the profile's file applies), `[]` means none at all.
fn read_env_files(value: &Value) -> Result<Option<Vec<String>>, ValueError> {
    const EXPECTED: &str = "an env file path or a list of them";
    let items = match value {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        Value::String(_) => std::slice::from_ref(value),
        Value::Array(items) => items.as_slice(),
        _ => return Err(ValueError::new(EXPECTED, value)),
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(path) if !path.trim_start_matches('-').is_empty() => Ok(path.clone()),
            _ => Err(ValueError::new(EXPECTED, value)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The keys of an output table (`stdout`, `stderr`).
const OUTPUT_KEYS: [&str; 4] = ["file", "max_bytes", "backup_count", "time_format"];

/// `{ file = "...", max_bytes = "50MB", backup_count = 5, time_format = "..." }` or a path.
fn read_output(value: &Value) -> Result<OutputConfig, OptionError> {
    let bad = OptionError::Invalid;
    let mut output = OutputConfig {
        file: PathBuf::new(),
        max_bytes: 0,
        backup_count: 5,
        time_format: DEFAULT_TIME_FORMAT.to_string(),
    };
    match value {
        Value::String(path) => output.file = PathBuf::from(path),
        Value::Object(spec) => {
            for (key, v) in spec {
                match key.as_str() {
                    "file" => output.file = PathBuf::from(read_string(v).map_err(bad)?),
                    "max_bytes" => output.max_bytes = read_size(v).map_err(bad)?,
                    "backup_count" => {
                        output.backup_count = read_int(v, 0, 1000).map_err(bad)? as u32
                    }
                    "time_format" => output.time_format = read_string(v).map_err(bad)?,
                    _ => {
                        return Err(OptionError::UnknownKey {
                            key: key.clone(),
                            known: &OUTPUT_KEYS,
                        })
                    }
                }
            }
        }
        _ => {
            return Err(bad(ValueError::new(
                "a file path or a table with file, max_bytes, backup_count",
                value,
            )))
        }
    }
    if output.file.as_os_str().is_empty() {
        return Err(bad(ValueError::new("a table with a 'file' path", value)));
    }
    Ok(output)
}
