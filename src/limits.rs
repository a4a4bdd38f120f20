//! Process resource limits both daemons adjust.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the limits as they were
/// (soft, hard). Both sides keep a file or socket per node or process: the agent's sampler keeps
/// /proc files open per sampled process, serve a connection per member, and the common soft
/// limit of 1024 runs out at a few hundred of them.
pub fn raise_open_files() -> Option<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!("open files limit raised from {soft} to {hard}"),
            Err(e) => {
                tracing::warn!("cannot raise the open files limit from {soft} to {hard}: {e}")
            }
        }
    }
    Some((soft, hard))
}
