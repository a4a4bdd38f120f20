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

/// The soft `RLIMIT_NOFILE`: how many files this process may open now.
pub fn open_files_limit() -> Option<u64> {
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// Raises `RLIMIT_NOFILE` to at least `wanted` descriptors, the hard limit too when it is lower
/// (root may), and returns the soft limit now. A process that knows how many sockets it will
/// hold (the swarm simulator: about eleven per simulated agent) asks for them up front rather
/// than failing at the thousandth bind.
pub fn raise_open_files_to(wanted: u64) -> Result<u64, String> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("cannot read the open files limit: {e}"))?;
    if soft >= wanted {
        return Ok(soft);
    }
    let new_hard = hard.max(wanted);
    setrlimit(Resource::RLIMIT_NOFILE, wanted, new_hard).map_err(|e| {
        format!(
            "needs {wanted} open files, and the limit is {soft} (hard {hard}); raising it \
             failed ({e}): run as root, or raise `ulimit -n` first"
        )
    })?;
    Ok(wanted)
}
