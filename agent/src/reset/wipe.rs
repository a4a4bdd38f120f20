//! Deleting a directory's contents without ever following a symlink out of it.

use std::fs;
use std::io;
use std::path::Path;

/// Deletes everything inside `dir` (not `dir` itself) and returns the bytes of regular files
/// removed. A symlink inside is removed as a link; its target is never read or touched.
pub fn wipe(dir: &Path) -> io::Result<u64> {
    let mut bytes = 0;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        // symlink_metadata: the entry itself, never what a link points at.
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            bytes += size_of_tree(&path)?;
            // std's remove_dir_all does not follow symlinks (and is race-safe on Linux).
            fs::remove_dir_all(&path)?;
        } else {
            if meta.is_file() {
                bytes += meta.len();
            }
            fs::remove_file(&path)?;
        }
    }
    Ok(bytes)
}

/// Bytes of the regular files below `dir`, not following symlinks.
fn size_of_tree(dir: &Path) -> io::Result<u64> {
    let mut bytes = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = fs::symlink_metadata(entry.path())?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                bytes += meta.len();
            }
        }
    }
    Ok(bytes)
}
