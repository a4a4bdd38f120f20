//! `[watcher:NAME]` and the `[env]` / `[env:PATTERNS]` sections that give it its environment.

use super::parse::{Entry, Section};
use super::substitute::{circus_vars, dollar_vars, fnmatch, leftover_circus_var, Environ};
use super::Report;
use crate::config::option::OptionError;
use crate::config::value::{read_bool, read_int, read_size, read_string};
use crate::config::watcher::OutputConfig;
use crate::config::{check_watcher_name, suggest, Problem, WatcherConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Circus options troupe reads under the same name, with the same meaning.
const SAME: [&str; 18] = [
    "cmd",
    "args",
    "numprocesses",
    "working_dir",
    "shell",
    "send_hup",
    "stop_signal",
    "stop_children",
    "max_retry",
    "graceful_timeout",
    "priority",
    "singleton",
    "copy_env",
    "max_age",
    "max_age_variance",
    "respawn",
    "autostart",
    "warmup_delay",
];

/// Circus options for what troupe always does one way: accepted when they ask for that.
const FIXED: [(&str, bool, &str); 7] = [
    (
        "close_child_stdin",
        true,
        "troupe always gives processes /dev/null as stdin",
    ),
    (
        "close_child_stdout",
        false,
        "troupe always reads processes' stdout",
    ),
    (
        "close_child_stderr",
        false,
        "troupe always reads processes' stderr",
    ),
    (
        "use_sockets",
        false,
        "troupe opens no sockets for its watchers ([socket:NAME])",
    ),
    (
        "on_demand",
        false,
        "troupe starts processes with the watcher, not on a first connection",
    ),
    (
        "copy_path",
        false,
        "troupe passes no Python sys.path on (set PYTHONPATH in [env:NAME])",
    ),
    (
        "use_papa",
        false,
        "troupe does not hand processes to a papa server",
    ),
];

/// Circus options troupe cannot honour: the process would run other than the file says.
const REFUSED: [(&str, &str); 6] = [
    ("uid", "troupe runs processes as the agent's user: run an agent per user, or start the program with setpriv/runuser in cmd"),
    ("gid", "troupe runs processes with the agent's group: start the program with setpriv/sg in cmd"),
    ("executable", "troupe runs cmd's first word as the program: put the executable there"),
    ("shell_args", "troupe's shell is /bin/sh -c: put the arguments in cmd"),
    ("virtualenv", "troupe does not activate virtualenvs: use the virtualenv's bin/python in cmd"),
    ("virtualenv_py_ver", "troupe does not activate virtualenvs: use the virtualenv's bin/python in cmd"),
];

/// Circus options that only concern circusd's plugins or internals.
const IGNORED: [&str; 6] = [
    "check_flapping",
    "flapping_attempts",
    "flapping_window",
    "flapping_retry_in",
    "flapping_max_retry",
    "stream_backend",
];

/// The keys of `stdout_stream.*` / `stderr_stream.*` troupe reads (with class FileStream).
const STREAM_KEYS: [&str; 5] = [
    "class",
    "filename",
    "max_bytes",
    "backup_count",
    "time_format",
];

/// Every key a `[watcher:NAME]` section may hold, for the "did you mean" hint.
fn known_keys() -> impl Iterator<Item = &'static str> {
    SAME.into_iter()
        .chain(FIXED.iter().map(|f| f.0))
        .chain(REFUSED.iter().map(|r| r.0))
        .chain(IGNORED)
        .chain([
            "stdin_socket",
            "stdout_stream.filename",
            "stderr_stream.filename",
        ])
        .chain(WatcherConfig::KEYS)
}

/// The watcher's env as circusd builds it: `[env]`, then every `[env:PATTERNS]` whose
/// fnmatch pattern matches `name` (raw, in file order), then `$VAR` from `environ`.
pub(super) fn env_for(
    name: &str,
    local_env: &[(String, String)],
    sections: &[Section],
    environ: &Environ,
) -> Environ {
    let mut env = Environ::new(local_env.iter().cloned());
    for section in sections {
        let Some(patterns) = section.name.strip_prefix("env:") else {
            continue;
        };
        if patterns.split(',').any(|p| fnmatch(name, p.trim())) {
            env.update(
                section
                    .entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone())),
            );
        }
    }
    Environ::new(
        env.iter()
            .map(|(k, v)| (k.trim().to_string(), dollar_vars(v, environ))),
    )
}

/// One `[watcher:NAME]` as a [`WatcherConfig`]; None (with problems reported) if refused.
pub(super) fn read(
    section: &Section,
    name: &str,
    env: &Environ,
    global_env: &Environ,
    report: &mut Report,
) -> Option<WatcherConfig> {
    let before = report.problems.len();
    let title = section.name.as_str();
    if let Err(message) = check_watcher_name(name) {
        report.problem(&section.origin, title, None, message);
    }
    if section.entries.is_empty() {
        let key = report.at(&section.origin, title, None);
        report.ignored.push(Problem {
            key,
            message: "an empty watcher section: skipped, as circusd skips it".into(),
        });
        return None;
    }
    // Options are expanded with circusd's environment, [env] and then the watcher's own env.
    let mut expand_env = global_env.clone();
    expand_env.update(env.iter().cloned());
    let mut watcher = WatcherConfig::new(name, "");
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut ignored = Vec::new();
    for entry in &section.entries {
        let key = entry.key.as_str();
        let value = circus_vars(&entry.value, &expand_env);
        let result = match key {
            "cmd" | "args" => match leftover_circus_var(&value) {
                Some(var) => Err(unsubstituted(var)),
                None => apply(&mut watcher, key, value),
            },
            // circusd runs a watcher with an empty working_dir in its own.
            "working_dir" if value.is_empty() => Ok(()),
            _ if SAME.contains(&key) => apply(&mut watcher, key, value),
            "env" | "hooks" | "stdout" | "stderr" => Err(format!(
                "not a Circus watcher option: {}",
                match key {
                    "env" => "set the environment in an [env:NAME] section",
                    "hooks" => "troupe's hooks are shell commands, set in a troupe-agent.toml",
                    _ => "use stdout_stream.filename / stderr_stream.filename",
                }
            )),
            _ if WatcherConfig::KEYS.contains(&key) => apply(&mut watcher, key, value),
            _ => {
                if let Some(stream) = key.strip_prefix("stdout_stream.") {
                    stdout.push((stream, value, entry));
                    Ok(())
                } else if let Some(stream) = key.strip_prefix("stderr_stream.") {
                    stderr.push((stream, value, entry));
                    Ok(())
                } else if IGNORED.contains(&key) {
                    ignored.push(key);
                    Ok(())
                } else {
                    other_option(key, &value)
                }
            }
        };
        if let Err(message) = result {
            report.problem(&entry.origin, title, Some(key), message);
        }
    }
    watcher.env = env.iter().cloned().collect::<BTreeMap<_, _>>();
    for (target, name, options) in [
        (&mut watcher.stdout, "stdout", stdout),
        (&mut watcher.stderr, "stderr", stderr),
    ] {
        match read_stream(name, &options) {
            Ok(output) => *target = output,
            Err(problems) => {
                for (entry, message) in problems {
                    let key = entry.map(|e| e.key.as_str());
                    let origin = entry.map_or(&section.origin, |e| &e.origin);
                    report.problem(origin, title, key, message);
                }
            }
        }
    }
    if section.get("cmd").is_none() {
        report.problem(
            &section.origin,
            title,
            Some("cmd"),
            "missing: every watcher needs a cmd".into(),
        );
    }
    if let Err(message) = watcher.check() {
        report.problem(&section.origin, title, None, message);
    }
    if !ignored.is_empty() {
        let key = report.at(&section.origin, title, None);
        report.ignored.push(Problem {
            key,
            message: format!(
                "ignored, as troupe has no use for them: {} (max_retry and the respawn backoff \
                 do the flapping plugin's job)",
                ignored.join(", ")
            ),
        });
    }
    (report.problems.len() == before).then_some(watcher)
}

/// Why a `$(circus.X)` is left in a command line, and what to do instead.
fn unsubstituted(var: &str) -> String {
    let inner = var.trim_start_matches(['$', '(']).trim_end_matches(')');
    let name = inner.to_lowercase();
    if name.starts_with("circus.env.") {
        let env = &inner["circus.env.".len()..];
        format!(
            "{var}: {env} is set neither in the agent's environment nor in [env] (circusd would \
             run the command with {var} as written): set it in one of them"
        )
    } else {
        format!(
            "{var} is filled in by circusd at each spawn, not by troupe: troupe opens no \
             sockets for its watchers; let the program bind its own address"
        )
    }
}

/// An ini value through the one option reader (`set` and the TOML file use it too).
fn apply(watcher: &mut WatcherConfig, key: &str, value: String) -> Result<(), String> {
    watcher
        .apply(key, &Value::String(value))
        .map(|_| ())
        .map_err(|e| match e {
            OptionError::UnknownKey { key, .. } => suggest::unknown_key(&key, known_keys()),
            other => other.to_string(),
        })
}

/// Options troupe does not read under [`SAME`]: fixed behaviour, refused, or unknown.
fn other_option(key: &str, value: &str) -> Result<(), String> {
    if let Some((_, troupe_does, why)) = FIXED.iter().find(|f| f.0 == key) {
        let asked = read_bool(&Value::String(value.into())).map_err(|e| e.to_string())?;
        return if asked == *troupe_does {
            Ok(())
        } else {
            Err(format!(
                "{key} = {value} is not supported: {why}; remove the line"
            ))
        };
    }
    if let Some((_, why)) = REFUSED.iter().find(|r| r.0 == key) {
        return if value.is_empty() {
            Ok(())
        } else {
            Err(format!("not supported: {why}"))
        };
    }
    if let Some(hook) = key.strip_prefix("hooks.") {
        return Err(format!(
            "not supported: Circus hooks are Python callables ({value:?}); troupe's hooks are \
             shell commands, set as hooks.{} in a troupe-agent.toml (`troupe import` writes \
             one)",
            hook
        ));
    }
    if let Some(limit) = key.strip_prefix("rlimit_") {
        return Err(format!(
            "not supported: troupe does not set resource limits per watcher; set it for the \
             agent (systemd Limit{}=) or in cmd (sh -c 'ulimit ...; exec ...')",
            limit.to_uppercase()
        ));
    }
    if key == "stdin_socket" {
        return Err("not supported: troupe opens no sockets for its watchers".into());
    }
    Err(suggest::unknown_key(key, known_keys()))
}

type StreamOption<'a> = (&'a str, String, &'a Entry);

/// A stream option's problem: the line it is on (None: the section's) and the message.
type StreamProblem<'a> = (Option<&'a Entry>, String);

/// `stdout_stream.*`: a FileStream (named or implied by `filename`) as an [`OutputConfig`].
fn read_stream<'a>(
    name: &str,
    options: &[StreamOption<'a>],
) -> Result<Option<OutputConfig>, Vec<StreamProblem<'a>>> {
    if options.is_empty() {
        return Ok(None);
    }
    let mut output = OutputConfig {
        file: PathBuf::new(),
        max_bytes: 0,
        // Circus's FileStream keeps no backups unless told, and writes lines bare.
        backup_count: 0,
        time_format: String::new(),
    };
    let mut problems = Vec::new();
    for (key, value, entry) in options {
        let json = Value::String(value.clone());
        let result: Result<(), String> = match *key {
            "class" => {
                let file_stream = [
                    "FileStream",
                    "circus.stream.FileStream",
                    "circus.stream.file_stream.FileStream",
                ];
                if file_stream.contains(&value.as_str()) {
                    Ok(())
                } else {
                    Err(format!(
                        "stream class {value:?} is not supported: troupe writes output to a \
                         file (FileStream, with filename, max_bytes, backup_count, \
                         time_format), or keeps it in memory for `troupe logs` when no \
                         {name}_stream.filename is set"
                    ))
                }
            }
            "filename" => read_string(&json)
                .map(|f| output.file = PathBuf::from(f))
                .map_err(|e| e.to_string()),
            "max_bytes" => read_size(&json)
                .map(|b| output.max_bytes = b)
                .map_err(|e| e.to_string()),
            "backup_count" => read_int(&json, 0, 1000)
                .map(|n| output.backup_count = n as u32)
                .map_err(|e| e.to_string()),
            "time_format" => {
                output.time_format = value.clone();
                Ok(())
            }
            other => {
                let known: Vec<String> = STREAM_KEYS
                    .iter()
                    .map(|k| format!("{name}_stream.{k}"))
                    .collect();
                Err(suggest::unknown_key(
                    &format!("{name}_stream.{other}"),
                    known.iter().map(String::as_str),
                ))
            }
        };
        if let Err(message) = result {
            problems.push((Some(*entry), message));
        }
    }
    if output.file.as_os_str().is_empty() && problems.is_empty() {
        problems.push((
            options.first().map(|o| o.2),
            format!("{name}_stream needs a filename: troupe writes a stream to a file"),
        ));
    }
    if problems.is_empty() {
        Ok(Some(output))
    } else {
        Err(problems)
    }
}
