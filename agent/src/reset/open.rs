//! Opening a data dir once, by descriptor, so that the directory `reset` checked is the one it
//! empties, however long the watcher takes to stop in between.
//!
//! The path is walked one component at a time from `/`, each directory opened relative to the
//! one before with `O_NOFOLLOW`, and the real path is built from what was actually entered. A
//! symlink on the way is followed only when nobody but root or the agent's own user could have
//! put it there: the link belongs to one of them, and so does the directory holding it, which
//! nobody else may write (or which is sticky, as `/tmp` is, so others cannot replace the link).
//! Every other symlink, such as one a service user made in a directory it owns, is refused.
//! `openat2`'s `RESOLVE_NO_SYMLINKS` would be one call, but it also refuses root's own links
//! (`/srv -> /data/srv`), which an operator may well have on the way to a data dir.

use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{geteuid, Uid};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one walk before giving up, as the kernel's own limit.
const MAX_LINKS: usize = 40;

/// A data dir open for reading, and the symlink-free path it was reached by.
#[derive(Debug)]
pub struct OpenedDir {
    pub fd: OwnedFd,
    pub real: PathBuf,
}

/// Why a data dir could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// A symlink someone other than root or the agent's user could have made or replaced.
    ForeignSymlink(PathBuf),
    /// Something other than a directory (or a symlink) on the way, or a loop of links.
    NotDirectory(PathBuf),
    /// Any other failure (a permission, an entry swapped between two system calls).
    Io(PathBuf, Errno),
}

/// Opens the directory at `path` (absolute). `None` when it (or a directory on the way, or a
/// trusted link's target) does not exist: there is nothing to wipe.
pub fn open_dir(path: &Path) -> Result<Option<OpenedDir>, OpenError> {
    let io = |at: &Path, errno| OpenError::Io(at.to_path_buf(), errno);
    let path_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root = open("/", path_flags, Mode::empty()).map_err(|e| io(Path::new("/"), e))?;
    // The directories entered so far, from `/`: `..` in a link's target goes back one.
    let mut entered = vec![root];
    let mut real = PathBuf::from("/");
    let mut pending: VecDeque<OsString> = names(path).collect();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if entered.len() > 1 {
                entered.pop();
                real.pop();
            }
            continue;
        }
        let here = entered.last().expect("the root is never popped");
        let at = real.join(&name);
        let entry = match fstatat(here, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(entry) => entry,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(io(&at, e)),
        };
        match SFlag::from_bits_truncate(entry.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => {
                let flags = path_flags | OFlag::O_NOFOLLOW;
                let next =
                    openat(here, name.as_os_str(), flags, Mode::empty()).map_err(|e| io(&at, e))?;
                entered.push(next);
                real = at;
            }
            SFlag::S_IFLNK => {
                let holder = fstat(here).map_err(|e| io(&real, e))?;
                if !placed_by_us(&entry, &holder) {
                    return Err(OpenError::ForeignSymlink(at));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(OpenError::NotDirectory(at));
                }
                let target = readlinkat(here, name.as_os_str()).map_err(|e| io(&at, e))?;
                let target = Path::new(&target);
                if target.is_absolute() {
                    entered.truncate(1);
                    real = PathBuf::from("/");
                }
                for component in names(target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(component);
                }
            }
            _ => return Err(OpenError::NotDirectory(at)),
        }
    }
    let here = entered.last().expect("the root is never popped");
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = openat(here, ".", flags, Mode::empty()).map_err(|e| io(&real, e))?;
    Ok(Some(OpenedDir { fd, real }))
}

/// The (device, inode) of an open directory, to tell later whether a path still leads to it.
pub fn identity(dir: &OpenedDir) -> Option<(libc::dev_t, libc::ino_t)> {
    fstat(&dir.fd).ok().map(|st| (st.st_dev, st.st_ino))
}

/// Whether a symlink (`link`) in a directory (`holder`) can only have been made, and kept
/// as it is, by root or the agent's user.
fn placed_by_us(link: &FileStat, holder: &FileStat) -> bool {
    let ours = |uid| uid == Uid::from_raw(0).as_raw() || uid == geteuid().as_raw();
    let others_write = holder.st_mode & 0o022 != 0;
    let sticky = holder.st_mode & libc::S_ISVTX != 0;
    ours(link.st_uid) && ours(holder.st_uid) && (!others_write || sticky)
}

/// The names to walk, `..` kept (only a link's target may have one), `/` and `.` dropped.
fn names(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|component| match component {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}
