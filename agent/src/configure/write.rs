//! Atomic file writes for `configure`: every file is staged in a temp file beside its
//! destination (written, chmod-ed, fsync-ed) before any is renamed into place, the previous
//! version is kept as `<file>.bak`, and a file whose content and mode already match is left
//! alone (`changed: false`).
//!
//! **All or nothing per node, across a crash.** Renames are one per file, so an agent killed
//! between two of them would leave old and new files side by side. Before the first rename,
//! the list of (staged file, destination) pairs is written to a journal in the state dir
//! ([`JOURNAL`], itself written to a temp file, fsync-ed and renamed, so it is whole or
//! absent); it is removed once every rename is done. An agent that starts and finds it
//! finishes the renames ([`recover`]) before it starts any watcher: every staged file was
//! fsync-ed before the journal existed, so the node ends with the whole new set.

use super::{RenderedFile, TemplateError};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of a new file when its template asks for none.
pub const DEFAULT_MODE: u32 = 0o644;

/// What happened (or, in a dry run, would happen) to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub path: PathBuf,
    pub sha256: String,
    pub changed: bool,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether each file would change, without touching the disk.
pub fn preview(files: &[RenderedFile]) -> Result<Vec<Outcome>, TemplateError> {
    files
        .iter()
        .map(|file| {
            let current = current(file).map_err(|cause| error(file, cause))?;
            Ok(Outcome {
                path: file.path.clone(),
                sha256: sha256_hex(file.text.as_bytes()),
                changed: differs(file, current.as_ref()),
            })
        })
        .collect()
}

/// The journal's file name in the agent's state dir.
pub const JOURNAL: &str = "configure-journal.json";

/// One rename still to do: the staged file and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Rename {
    temp: PathBuf,
    dest: PathBuf,
}

/// Writes every file, or none: all are staged first; a failure while staging removes the
/// temp files and the directories it created. The renames are journaled in `state_dir` (see
/// the module doc), so a crash among them is finished by [`recover`].
pub fn write_all(files: &[RenderedFile], state_dir: &Path) -> Result<Vec<Outcome>, TemplateError> {
    let mut staging = Staging::default();
    let mut staged = Vec::with_capacity(files.len());
    for file in files {
        match staging.stage(file) {
            Ok(s) => staged.push(s),
            Err(cause) => {
                staging.roll_back();
                return Err(error(file, cause));
            }
        }
    }
    let renames: Vec<Rename> = files
        .iter()
        .zip(&staged)
        .filter_map(|(file, s)| {
            Some(Rename {
                temp: s.temp.clone()?,
                dest: file.path.clone(),
            })
        })
        .collect();
    let journal = state_dir.join(JOURNAL);
    if renames.len() > 1 {
        if let Err(cause) = write_journal(&journal, &renames) {
            return Err(error(&files[0], cause));
        }
    }
    staging.committed();
    let mut outcomes = Vec::with_capacity(files.len());
    let mut renamed = 0;
    for (file, staged) in files.iter().zip(&staged) {
        if let Some(temp) = &staged.temp {
            if let Err(cause) = commit(&file.path, temp, staged.existed) {
                // Not a crash: say so, and leave nothing to finish at the next start.
                for rename in &renames[renamed..] {
                    let _ = fs::remove_file(&rename.temp);
                }
                let _ = remove_journal(&journal);
                return Err(error(file, cause));
            }
            renamed += 1;
        }
        outcomes.push(staged.outcome.clone());
    }
    if renames.len() > 1 {
        remove_journal(&journal).map_err(|cause| error(&files[0], cause))?;
    }
    Ok(outcomes)
}

/// Finishes the renames of a `configure` the agent was killed in the middle of (see the module
/// doc): returns the files it renamed into place. Called at start, before any watcher runs.
pub fn recover(state_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let journal = state_dir.join(JOURNAL);
    let text = match fs::read(&journal) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", journal.display())),
    };
    let renames: Vec<Rename> = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{} is not a configure journal ({e}); remove it and run `troupe configure` again",
            journal.display()
        )
    })?;
    let mut done = Vec::new();
    for rename in &renames {
        check_rename(rename).map_err(|why| format!("{}: {why}", journal.display()))?;
        // Renamed before the crash: nothing left to do for this one.
        if fs::symlink_metadata(&rename.temp).is_err() {
            continue;
        }
        let existed = fs::symlink_metadata(&rename.dest).is_ok();
        commit(&rename.dest, &rename.temp, existed)?;
        done.push(rename.dest.clone());
    }
    remove_journal(&journal)?;
    Ok(done)
}

/// A journal entry renames one of our own temp files beside its destination, nothing else
/// (the journal is the agent's own, in its private state dir; this is a sanity check).
fn check_rename(rename: &Rename) -> Result<(), String> {
    let same_dir = rename.temp.parent().is_some() && rename.temp.parent() == rename.dest.parent();
    let ours = rename.temp.file_name().is_some_and(|name| {
        let name = name.to_string_lossy();
        name.starts_with('.') && name.ends_with(".tmp") && name.contains(".troupe-")
    });
    if same_dir && ours {
        Ok(())
    } else {
        Err(format!(
            "entry {} -> {} is not a staged configure file beside its destination",
            rename.temp.display(),
            rename.dest.display()
        ))
    }
}

/// Writes the journal whole or not at all: temp file, fsync, rename, directory fsync.
fn write_journal(journal: &Path, renames: &[Rename]) -> Result<(), String> {
    let shown = journal.display();
    let text = serde_json::to_vec(renames)
        .map_err(|e| format!("cannot write the configure journal {shown}: {e}"))?;
    let mut temp = journal.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let written = File::create(&temp)
        .and_then(|mut out| {
            out.write_all(&text)?;
            out.sync_all()
        })
        .and_then(|()| fs::rename(&temp, journal))
        .and_then(|()| sync_parent(journal));
    written.map_err(|e| {
        let _ = fs::remove_file(&temp);
        format!("cannot write the configure journal {shown}: {e}")
    })
}

fn remove_journal(journal: &Path) -> Result<(), String> {
    match fs::remove_file(journal) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot remove {}: {e}", journal.display())),
    }
    sync_parent(journal).map_err(|e| format!("cannot sync beside {}: {e}", journal.display()))
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) => File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

fn error(file: &RenderedFile, cause: String) -> TemplateError {
    TemplateError {
        watcher: file.watcher.clone(),
        template: file.template.clone(),
        line: None,
        cause,
    }
}

/// The destination as it is now: content and mode, None when it does not exist.
struct Current {
    content: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
}

fn current(file: &RenderedFile) -> Result<Option<Current>, String> {
    let shown = file.path.display();
    let meta = match fs::metadata(&file.path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot write {shown}: {e}")),
    };
    if meta.is_dir() {
        return Err(format!("cannot write {shown}: it is a directory"));
    }
    let content = fs::read(&file.path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    Ok(Some(Current {
        content,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// The mode the file should end up with.
fn wanted_mode(file: &RenderedFile, current: Option<&Current>) -> u32 {
    file.mode
        .or(current.map(|c| c.mode))
        .unwrap_or(DEFAULT_MODE)
}

fn differs(file: &RenderedFile, current: Option<&Current>) -> bool {
    match current {
        None => true,
        Some(c) => c.content != file.text.as_bytes() || c.mode != wanted_mode(file, current),
    }
}

struct Staged {
    temp: Option<PathBuf>,
    existed: bool,
    outcome: Outcome,
}

/// Temp files and directories made so far, undone unless [`Staging::committed`] is called.
#[derive(Default)]
struct Staging {
    temps: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Staging {
    fn stage(&mut self, file: &RenderedFile) -> Result<Staged, String> {
        let current = current(file)?;
        let outcome = Outcome {
            path: file.path.clone(),
            sha256: sha256_hex(file.text.as_bytes()),
            changed: differs(file, current.as_ref()),
        };
        if !outcome.changed {
            return Ok(Staged {
                temp: None,
                existed: true,
                outcome,
            });
        }
        let shown = file.path.display();
        let (Some(parent), Some(name)) = (file.path.parent(), file.path.file_name()) else {
            return Err(format!("cannot write {shown}: not a file path"));
        };
        self.create_dirs(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let temp = parent.join(temp_name(name));
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| format!("cannot write {shown}: {e}"))?;
        self.temps.push(temp.clone());
        fill(&mut out, file, current.as_ref()).map_err(|e| format!("cannot write {shown}: {e}"))?;
        Ok(Staged {
            temp: Some(temp),
            existed: current.is_some(),
            outcome,
        })
    }

    /// `mkdir -p`, remembering what it made so a rollback can remove it.
    fn create_dirs(&mut self, dir: &Path) -> std::io::Result<()> {
        let mut missing = Vec::new();
        let mut probe = dir;
        while fs::symlink_metadata(probe).is_err() {
            missing.push(probe.to_path_buf());
            match probe.parent() {
                Some(parent) => probe = parent,
                None => break,
            }
        }
        for dir in missing.into_iter().rev() {
            fs::create_dir(&dir)?;
            self.dirs.push(dir);
        }
        Ok(())
    }

    fn roll_back(&mut self) {
        for temp in self.temps.drain(..) {
            let _ = fs::remove_file(temp);
        }
        for dir in self.dirs.drain(..).rev() {
            let _ = fs::remove_dir(dir);
        }
    }

    fn committed(mut self) {
        self.temps.clear();
        self.dirs.clear();
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        self.roll_back();
    }
}

/// `.<name>.troupe-<pid>-<n>.tmp`: hidden, unique per agent and per file.
fn temp_name(name: &std::ffi::OsStr) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{}.troupe-{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Content, mode and (when replacing a file) its owner, then fsync.
fn fill(out: &mut File, file: &RenderedFile, current: Option<&Current>) -> std::io::Result<()> {
    out.write_all(file.text.as_bytes())?;
    out.set_permissions(fs::Permissions::from_mode(wanted_mode(file, current)))?;
    if let Some(c) = current {
        // Keeps a root-run agent from handing a service's config to root; EPERM when the
        // agent is not root and the file is someone else's, which it cannot fix anyway.
        let _ = std::os::unix::fs::fchown(&*out, Some(c.uid), Some(c.gid));
    }
    out.sync_all()
}

/// Keeps the old file as `.bak` (a hard link, so the destination never goes missing), then
/// renames the staged file over it and syncs the directory.
fn commit(dest: &Path, temp: &Path, existed: bool) -> Result<(), String> {
    let shown = dest.display();
    if existed {
        let mut bak = dest.as_os_str().to_owned();
        bak.push(".bak");
        let bak = PathBuf::from(bak);
        match fs::remove_file(&bak) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot replace {}: {e}", bak.display())),
        }
        if fs::hard_link(dest, &bak).is_err() {
            fs::copy(dest, &bak).map_err(|e| format!("cannot keep {}: {e}", bak.display()))?;
        }
    }
    fs::rename(temp, dest).map_err(|e| format!("cannot write {shown}: {e}"))?;
    if let Some(parent) = dest.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", parent.display()))?;
    }
    Ok(())
}
