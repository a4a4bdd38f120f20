//! `reset`: empties a watcher's `data_dir`s, after checking each against the safety rules,
//! and runs its `reset_hook`. The command handler (stop, wipe, hook, start) is in
//! `commands/reset.rs`; this module owns the rules and the filesystem work.

mod hook;
mod open;
mod wipe;

pub use hook::run_hook;
pub use open::{identity, open_dir, OpenedDir};
pub use wipe::wipe;

use open::OpenError;
use std::path::{Path, PathBuf};
use troupe::config::{check_data_dir, DataDirRefusal, DataDirRule};

/// Where the agent keeps what a reset must never touch, and where it may.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// When set, every data dir must lie below it.
    pub data_root: Option<PathBuf>,
    /// Never wiped, nor any directory containing it.
    pub state_dir: PathBuf,
}

/// A data dir that passed every rule, held open so that nothing swapped in at its path
/// later (while the watcher stops) is what gets wiped.
#[derive(Debug)]
pub struct Target {
    /// As the config declares it (normalized).
    pub declared: PathBuf,
    /// The directory, None when it does not exist: nothing to wipe.
    pub dir: Option<OpenedDir>,
}

/// Opens one data dir (see [`open_dir`]) and checks it against every rule. The rules that need
/// no filesystem were checked when the config was loaded too; they are checked again on the
/// real path the dir was opened by, so a symlink cannot lead a reset to `/etc`.
pub fn check(path: &Path, bounds: &Bounds) -> Result<Target, DataDirRefusal> {
    let declared = check_data_dir(path)?;
    let refuse = |rule| DataDirRefusal {
        path: declared.clone(),
        rule,
    };
    let dir = open_dir(&declared).map_err(|e| {
        tracing::debug!(path = %declared.display(), "data dir not opened: {e:?}");
        refuse(match e {
            OpenError::ForeignSymlink(_) => DataDirRule::NoForeignSymlink,
            OpenError::NotDirectory(_) | OpenError::Io(..) => DataDirRule::IsDirectory,
        })
    })?;
    if let Some(dir) = &dir {
        check_data_dir(&dir.real).map_err(|r| refuse(r.rule))?;
    }
    let real = dir.as_ref().map(|d| d.real.as_path());
    let effective = real.unwrap_or(&declared);
    if let Some(root) = &bounds.data_root {
        let below = |p: &Path, root: &Path| p.starts_with(root) && p != root;
        let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
        // A missing dir has no real path yet: its declared path is all there is to judge.
        let inside = below(effective, &real_root) || (real.is_none() && below(&declared, root));
        if !inside {
            return Err(refuse(DataDirRule::UnderDataRoot));
        }
    }
    let real_state =
        std::fs::canonicalize(&bounds.state_dir).unwrap_or_else(|_| bounds.state_dir.clone());
    if real_state.starts_with(effective) || bounds.state_dir.starts_with(&declared) {
        return Err(refuse(DataDirRule::NotStateDir));
    }
    Ok(Target { declared, dir })
}

#[cfg(test)]
mod tests;
