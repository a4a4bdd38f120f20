//! The `env_file` watcher option: environment files in systemd's `EnvironmentFile=` syntax,
//! read by the agent itself at each spawn, so no shell ever sources a rendered file.
//!
//! The parser follows systemd's own (`parse_env_file_internal` in src/basic/env-file.c) state
//! for state: `KEY=value` lines; empty lines and lines starting with `#` or `;` are comments;
//! whitespace around the key and around an unquoted value is stripped; in an unquoted value a
//! backslash takes the next character literally and a backslash at the end of a line joins the
//! next one; `'single'` quotes take everything literally up to the closing quote, newlines
//! included; in `"double"` quotes a backslash escapes `"`, `\`, `` ` `` and `$` (others keep
//! their backslash) and a backslash-newline is dropped. Nothing is expanded. As systemd does,
//! a line without `=` is skipped and an assignment whose name is not a valid variable name
//! (letters, digits, `_`, not starting with a digit) is dropped; unlike systemd, these are
//! reported, and a file that is not UTF-8 or holds a NUL byte is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use troupe::config::WatcherConfig;

/// An env file larger than this is refused before it is read whole.
pub const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

/// One `env_file` entry: a path, and whether a missing file is fine (systemd's `-` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileSpec {
    pub path: PathBuf,
    pub optional: bool,
}

impl EnvFileSpec {
    /// `-PATH` is optional; a relative path is taken from `working_dir`.
    pub fn parse(entry: &str, working_dir: Option<&Path>) -> Self {
        let (optional, path) = match entry.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let path = match working_dir {
            Some(dir) if !Path::new(path).is_absolute() => dir.join(path),
            _ => PathBuf::from(path),
        };
        Self { path, optional }
    }
}

/// Reads every file in order, later assignments overriding earlier ones. Returns the
/// variables and what was skipped (for a log line); a missing file that is not optional, an
/// unreadable or oversized file, one that is not UTF-8 or holds a NUL is an error naming it.
pub fn load(
    files: &[EnvFileSpec],
) -> Result<(BTreeMap<String, String>, Vec<String>), std::io::Error> {
    let mut vars = BTreeMap::new();
    let mut skipped = Vec::new();
    for file in files {
        let shown = file.path.display();
        let fail =
            |kind, why: String| std::io::Error::new(kind, format!("env_file {shown}: {why}"));
        let meta = match std::fs::metadata(&file.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.optional => continue,
            Err(e) => return Err(fail(e.kind(), e.to_string())),
        };
        if meta.len() > MAX_ENV_FILE_BYTES {
            return Err(fail(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} bytes, over the limit of {MAX_ENV_FILE_BYTES}",
                    meta.len()
                ),
            ));
        }
        let bytes = std::fs::read(&file.path).map_err(|e| fail(e.kind(), e.to_string()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| fail(std::io::ErrorKind::InvalidData, "not UTF-8".into()))?;
        if text.contains('\0') {
            return Err(fail(
                std::io::ErrorKind::InvalidData,
                "contains a NUL byte".into(),
            ));
        }
        for (line, key, value) in parse(&text) {
            if valid_name(&key) {
                vars.insert(key, value);
            } else {
                skipped.push(format!(
                    "env_file {shown}, line {line}: {key:?} is not a variable name, ignored"
                ));
            }
        }
    }
    Ok((vars, skipped))
}

/// Letters, digits and `_`, not empty, not starting with a digit (systemd's rule, and the
/// shell's).
fn valid_name(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The env files a spawn of `config` reads: its `env_file`, else its profile's (etcd's
/// `etcd.env`, where `configure` writes it).
pub fn for_watcher(config: &WatcherConfig, state_dir: &Path) -> Vec<EnvFileSpec> {
    match &config.env_files {
        Some(entries) => entries
            .iter()
            .map(|entry| EnvFileSpec::parse(entry, config.working_dir.as_deref()))
            .collect(),
        None => crate::configure::profile_env_file(config, state_dir)
            .map(|path| EnvFileSpec {
                path,
                optional: false,
            })
            .into_iter()
            .collect(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    SingleQuote,
    DoubleQuote,
    DoubleQuoteEscape,
    Comment,
    CommentEscape,
}

const NEWLINE: [char; 2] = ['\n', '\r'];
const WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];
/// Inside double quotes, a backslash before one of these is dropped (systemd's
/// SHELL_NEED_ESCAPE).
const DOUBLE_QUOTE_ESCAPES: [char; 4] = ['"', '\\', '`', '$'];

/// Every `KEY=value` of `text` with the line it ends on, in order, names not yet checked.
pub fn parse(text: &str) -> Vec<(usize, String, String)> {
    use State::*;
    let mut out = Vec::new();
    let mut state = PreKey;
    let mut line = 1;
    let mut key = String::new();
    let mut value = String::new();
    // Where trailing whitespace of the key / an unquoted value starts, if it does.
    let mut key_ws: Option<usize> = None;
    let mut value_ws: Option<usize> = None;
    let mut push = |line: usize, key: &mut String, value: &mut String, key_ws: Option<usize>| {
        if let Some(at) = key_ws {
            key.truncate(at);
        }
        out.push((line, std::mem::take(key), std::mem::take(value)));
    };
    for c in text.chars() {
        match state {
            PreKey => {
                if c == '#' || c == ';' {
                    state = Comment;
                } else if !WHITESPACE.contains(&c) {
                    state = Key;
                    key_ws = None;
                    key.push(c);
                }
            }
            Key => {
                if NEWLINE.contains(&c) {
                    state = PreKey;
                    line += 1;
                    key.clear();
                } else if c == '=' {
                    state = PreValue;
                    value_ws = None;
                } else {
                    if !WHITESPACE.contains(&c) {
                        key_ws = None;
                    } else if key_ws.is_none() {
                        key_ws = Some(key.len());
                    }
                    key.push(c);
                }
            }
            PreValue => {
                if NEWLINE.contains(&c) {
                    state = PreKey;
                    line += 1;
                    push(line - 1, &mut key, &mut value, key_ws);
                } else if c == '\'' {
                    state = SingleQuote;
                } else if c == '"' {
                    state = DoubleQuote;
                } else if c == '\\' {
                    state = ValueEscape;
                } else if !WHITESPACE.contains(&c) {
                    state = Value;
                    value.push(c);
                }
            }
            Value => {
                if NEWLINE.contains(&c) {
                    state = PreKey;
                    line += 1;
                    if let Some(at) = value_ws {
                        value.truncate(at);
                    }
                    push(line - 1, &mut key, &mut value, key_ws);
                } else if c == '\\' {
                    state = ValueEscape;
                    value_ws = None;
                } else {
                    if !WHITESPACE.contains(&c) {
                        value_ws = None;
                    } else if value_ws.is_none() {
                        value_ws = Some(value.len());
                    }
                    value.push(c);
                }
            }
            ValueEscape => {
                state = Value;
                if NEWLINE.contains(&c) {
                    line += 1;
                } else {
                    value.push(c);
                }
            }
            SingleQuote => {
                if c == '\'' {
                    state = PreValue;
                } else {
                    if c == '\n' {
                        line += 1;
                    }
                    value.push(c);
                }
            }
            DoubleQuote => {
                if c == '"' {
                    state = PreValue;
                } else if c == '\\' {
                    state = DoubleQuoteEscape;
                } else {
                    if c == '\n' {
                        line += 1;
                    }
                    value.push(c);
                }
            }
            DoubleQuoteEscape => {
                state = DoubleQuote;
                if DOUBLE_QUOTE_ESCAPES.contains(&c) {
                    value.push(c);
                } else if c == '\n' {
                    line += 1;
                } else {
                    value.push('\\');
                    value.push(c);
                }
            }
            Comment => {
                if c == '\\' {
                    state = CommentEscape;
                } else if NEWLINE.contains(&c) {
                    state = PreKey;
                    line += 1;
                }
            }
            CommentEscape => {
                if NEWLINE.contains(&c) {
                    state = PreKey;
                    line += 1;
                } else {
                    state = Comment;
                }
            }
        }
    }
    match state {
        PreValue | ValueEscape | SingleQuote | DoubleQuote | DoubleQuoteEscape => {
            push(line, &mut key, &mut value, key_ws)
        }
        Value => {
            if let Some(at) = value_ws {
                value.truncate(at);
            }
            push(line, &mut key, &mut value, key_ws)
        }
        PreKey | Key | Comment | CommentEscape => {}
    }
    out
}

#[cfg(test)]
#[path = "env_file_tests.rs"]
mod tests;
