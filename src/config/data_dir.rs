//! `data_dir`: the directories `reset` empties, and the rules that keep it from emptying
//! the wrong one. The rules that need no filesystem are checked when the config is read;
//! the agent checks them again, with the rest, on the real paths at reset time, while it opens
//! each dir without following a symlink anyone else could have made.

use super::value::{read_string, ValueError};
use serde_json::Value;
use std::path::{Component, Path, PathBuf};

/// Top-level directories `data_dir` may never be (what lies below them is fine).
pub const SYSTEM_DIRS: [&str; 17] = [
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root", "/run",
    "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
];

/// One absolute path or a list of them, each passing [`check_data_dir`], normalized.
pub(super) fn read_data_dirs(value: &Value) -> Result<Vec<PathBuf>, ValueError> {
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::String(_) => std::slice::from_ref(value),
        Value::Array(items) => items.as_slice(),
        _ => return Err(ValueError::new("a list of absolute directory paths", value)),
    };
    items
        .iter()
        .map(|item| {
            let path = read_string(item)?;
            check_data_dir(Path::new(&path)).map_err(|refusal| ValueError {
                expected: format!("a directory reset may wipe ({})", refusal.rule.describe()),
                got: format!("{path:?}"),
            })
        })
        .collect()
}

/// A rule `reset` applies to a `data_dir` before deleting anything in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirRule {
    Absolute,
    NoParentComponents,
    NotRoot,
    NotSystemDir,
    UnderDataRoot,
    NotStateDir,
    IsDirectory,
    NoForeignSymlink,
}

impl DataDirRule {
    /// The rule's name, as a refusal reports it.
    pub fn name(self) -> &'static str {
        match self {
            DataDirRule::Absolute => "absolute",
            DataDirRule::NoParentComponents => "no-dotdot",
            DataDirRule::NotRoot => "not-root",
            DataDirRule::NotSystemDir => "not-system-dir",
            DataDirRule::UnderDataRoot => "under-data-root",
            DataDirRule::NotStateDir => "not-state-dir",
            DataDirRule::IsDirectory => "is-directory",
            DataDirRule::NoForeignSymlink => "no-foreign-symlink",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            DataDirRule::Absolute => "the path must be absolute",
            DataDirRule::NoParentComponents => "the path must not contain '..'",
            DataDirRule::NotRoot => "the path must not be /",
            DataDirRule::NotSystemDir => "the path must not be a top-level system directory",
            DataDirRule::UnderDataRoot => "the path must lie below the agent's data_root",
            DataDirRule::NotStateDir => {
                "the path must not be the agent's state_dir or a directory containing it"
            }
            DataDirRule::IsDirectory => "the path must be a directory",
            DataDirRule::NoForeignSymlink => {
                "no component of the path may be a symlink that a user other than root or the \
                 agent's own could have made or replaced"
            }
        }
    }
}

/// Why `reset` will not touch a directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data_dir {path:?} refused by rule {rule_name}: {description}", rule_name = rule.name(), description = rule.describe())]
pub struct DataDirRefusal {
    pub path: PathBuf,
    pub rule: DataDirRule,
}

/// The rules that need no filesystem: absolute, no `..`, not `/`, not a system dir.
/// Returns the path normalized (no `.`, repeated or trailing slashes).
pub fn check_data_dir(path: &Path) -> Result<PathBuf, DataDirRefusal> {
    let refuse = |rule| DataDirRefusal {
        path: path.to_path_buf(),
        rule,
    };
    if !path.is_absolute() {
        return Err(refuse(DataDirRule::Absolute));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(refuse(DataDirRule::NoParentComponents));
    }
    let normal: PathBuf = path.components().collect();
    if normal == Path::new("/") {
        return Err(refuse(DataDirRule::NotRoot));
    }
    if SYSTEM_DIRS.iter().any(|d| normal == Path::new(d)) {
        return Err(refuse(DataDirRule::NotSystemDir));
    }
    Ok(normal)
}
