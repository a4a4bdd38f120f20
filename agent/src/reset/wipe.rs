//! Deleting a directory's contents by descriptor, never by path, never following a symlink.

use nix::dir::Dir;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

/// One directory being emptied: its descriptor, the entries still to remove, and its name in
/// the directory above (none for the top, which stays).
struct Level {
    dir: OwnedFd,
    entries: Vec<OsString>,
    name: Option<OsString>,
}

impl Level {
    fn open(dir: OwnedFd, name: Option<OsString>) -> io::Result<Level> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut listing = Dir::openat(&dir, ".", flags, Mode::empty())?;
        let mut entries = Vec::new();
        for entry in listing.iter() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                entries.push(name.to_os_string());
            }
        }
        Ok(Level { dir, entries, name })
    }
}

/// Deletes everything inside the directory open at `top` (not the directory itself) and
/// returns the bytes of regular files removed. Each entry is looked at without following it
/// and removed relative to its parent's descriptor; a subdirectory is opened with `O_NOFOLLOW`
/// and emptied the same way, so a symlink is removed as a link, and an entry swapped for a
/// symlink while the wipe runs makes it fail rather than lead it out. Iterative, so a deep
/// tree costs a descriptor per level and no stack.
pub fn wipe(top: OwnedFd) -> io::Result<u64> {
    let mut bytes = 0;
    let mut levels = vec![Level::open(top, None)?];
    while let Some(level) = levels.last_mut() {
        let Some(name) = level.entries.pop() else {
            let done = levels.pop().expect("looked at just now");
            if let (Some(parent), Some(name)) = (levels.last(), done.name) {
                unlinkat(&parent.dir, name.as_os_str(), UnlinkatFlags::RemoveDir)?;
            }
            continue;
        };
        let entry = fstatat(&level.dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let kind = SFlag::from_bits_truncate(entry.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFDIR {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let dir = openat(&level.dir, name.as_os_str(), flags, Mode::empty())?;
            let below = Level::open(dir, Some(name))?;
            levels.push(below);
        } else {
            if kind == SFlag::S_IFREG {
                bytes += entry.st_size as u64;
            }
            unlinkat(&level.dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
        }
    }
    Ok(bytes)
}
