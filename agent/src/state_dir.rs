//! The state dir holds the node id and the owner-only control socket, so whoever can write it
//! can take the node's identity or put their own socket where the node's owner sends
//! code-bearing commands. The agent makes it 0700 and refuses one that another user owns or may
//! write (the default for a user without a home, `/tmp/troupe-state`, is in a shared dir).

use anyhow::{bail, Context};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

/// Creates `dir` (and missing parents) with mode 0700, then checks that it is a directory,
/// not a symlink, owned by the agent's user or root, and writable by nobody else.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating state dir {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("reading state dir {}", dir.display()))?;
    check(dir, &meta, nix::unistd::geteuid().as_raw())
}

fn check(dir: &Path, meta: &std::fs::Metadata, euid: u32) -> anyhow::Result<()> {
    let fix = "use a directory only the agent's user can write (chown it to that user and \
               chmod 700), or set state_dir in [agent]";
    if !meta.file_type().is_dir() {
        bail!(
            "state dir {} is not a directory (a symlink is refused too): {fix}",
            dir.display()
        );
    }
    if meta.uid() != euid && meta.uid() != 0 {
        bail!(
            "state dir {} belongs to uid {}, not to the agent's uid {euid} or root: its owner \
             could replace the node id or the owner socket; {fix}",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "state dir {} is writable by its group or by everyone (mode {:o}): they could \
             replace the node id or the owner socket; {fix}",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_state_dir_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/state");
        prepare(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_state_dir_others_may_write_is_refused_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = prepare(&dir).unwrap_err().to_string();
        assert!(
            err.contains("writable by its group or by everyone"),
            "{err}"
        );
        assert!(err.contains(&dir.display().to_string()), "{err}");
    }

    #[test]
    fn a_state_dir_of_another_user_or_a_symlink_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        let err = if nix::unistd::geteuid().is_root() {
            // Root: hand the dir to `nobody`.
            nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            prepare(&dir).unwrap_err()
        } else {
            // Seen by an agent of another (non-root) uid than the dir's owner.
            check(&dir, &meta, meta.uid() + 1000).unwrap_err()
        };
        assert!(err.to_string().contains("belongs to uid"), "{err}");
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = prepare(&link).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
