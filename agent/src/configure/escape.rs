//! Escaping per file format, as minijinja filters: `env_file`, `properties`, `zoo_cfg` and
//! `neo4j_conf`. Every value a built-in profile writes goes through the filter of its file,
//! so even a value that passed validation cannot end a line, open a quote or start a command;
//! user templates have the same filters. Each follows the real reader of its format:
//!
//! - `env_file`: systemd's `EnvironmentFile=` parser (src/basic/env-file.c), which the agent's
//!   own reader ([`crate::watcher::env_file`]) follows. In an unquoted value a backslash takes
//!   the next character literally, and so it does in a POSIX shell: every ASCII character but
//!   letters, digits and `_-./:,=@+%` gets one, so the line reads the same to systemd, to the
//!   agent and to `sh`. A newline, carriage return or NUL cannot be written and is an error.
//! - `properties`: `java.util.Properties.load` (JanusGraph, Titan), escaped as
//!   `Properties.store` does: `\\`, `\t`, `\n`, `\r`, `\f`, a backslash before ` `, `=`, `:`,
//!   `#`, `!`, and `\uXXXX` for anything outside printable ASCII (the file is read as
//!   ISO-8859-1).
//! - `zoo_cfg`: ZooKeeper's QuorumPeerConfig loads zoo.cfg with `Properties.load`, then splits
//!   `server.N` values on `;` (client address) and `|` (several addresses), which no escape
//!   survives: those two are refused, the rest escaped as `properties`.
//! - `neo4j_conf`: Neo4j 5 loads neo4j.conf with `Properties.load` too, then runs a value of the
//!   form `$(...)` as a command (with `--expand-commands`); escaping cannot stop that (it
//!   happens after unescaping), so a value containing `$(` is refused.

use minijinja::value::Value;
use minijinja::{Error, ErrorKind};

/// Registers the four filters.
pub fn register(env: &mut minijinja::Environment<'_>) {
    env.add_filter("env_file", |value: Value| env_file(&text(&value)?));
    env.add_filter("properties", |value: Value| Ok(properties(&text(&value)?)));
    env.add_filter("zoo_cfg", |value: Value| zoo_cfg(&text(&value)?));
    env.add_filter("neo4j_conf", |value: Value| neo4j_conf(&text(&value)?));
}

/// A string as it is, a number or a boolean as it prints; none is an error (a config line
/// reading `none` is never what was meant).
fn text(value: &Value) -> Result<String, Error> {
    if value.is_none() || value.is_undefined() {
        return Err(refused("there is no value to write"));
    }
    Ok(value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string()))
}

fn refused(why: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, why.into())
}

/// Characters written as they are in an env file value.
fn env_file_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-./:,=@+%".contains(c) || !c.is_ascii()
}

/// A value for a `KEY=value` line of an env file.
pub fn env_file(value: &str) -> Result<String, Error> {
    if let Some(c) = value.chars().find(|c| matches!(c, '\n' | '\r' | '\0')) {
        return Err(refused(format!(
            "{value:?} cannot be written to an env file: it contains {c:?}"
        )));
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if !env_file_plain(c) {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

/// A value (or a piece of one) for a `key=value` line of a Java properties file.
pub fn properties(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x0c' => out.push_str("\\f"),
            ' ' | '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
        }
    }
    out
}

/// A value (or a piece of one) for zoo.cfg.
pub fn zoo_cfg(value: &str) -> Result<String, Error> {
    if let Some(c) = value.chars().find(|c| matches!(c, ';' | '|')) {
        return Err(refused(format!(
            "{value:?} cannot be written to zoo.cfg: ZooKeeper splits values on {c:?}"
        )));
    }
    Ok(properties(value))
}

/// A value (or a piece of one) for neo4j.conf.
pub fn neo4j_conf(value: &str) -> Result<String, Error> {
    if value.contains("$(") {
        return Err(refused(format!(
            "{value:?} cannot be written to neo4j.conf: Neo4j runs a $(...) value as a command"
        )));
    }
    Ok(properties(value))
}

#[cfg(test)]
#[path = "escape_tests.rs"]
mod tests;
