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

/// Descriptors this process keeps free for the connections it accepts: [`keep_files_free`].
static KEPT_FREE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Keeps `files` descriptors free for the connections this process accepts (`troupe serve`:
/// its clients). libzmq accepts on its own thread and, out of descriptors, retries at once
/// for as long as none frees; the connections serve opens to its members would take each
/// descriptor that does, and `troupe status` would go unanswered exactly when the log tells
/// the operator to look. Connections this process opens check [`room_for`] first.
pub fn keep_files_free(files: u64) {
    KEPT_FREE.store(files, std::sync::atomic::Ordering::Relaxed);
}

/// The descriptors [`keep_files_free`] keeps free (0 when it was not called).
pub fn files_kept_free() -> u64 {
    KEPT_FREE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether this process may open `files` more descriptors and still leave the number
/// [`keep_files_free`] keeps. Always so when none are kept, or when the count is unknown.
pub fn room_for(files: u64) -> bool {
    let kept = files_kept_free();
    if kept == 0 {
        return true;
    }
    let open = match counted_by_kernel() {
        Some(open) => Some(open),
        None => {
            let mut last = LAST_COUNT
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            open_lately(&mut last, std::time::Instant::now(), files, counted_entries)
        }
    };
    match (open_files_limit(), open) {
        (Some(limit), Some(open)) => open + files + kept <= limit,
        _ => true,
    }
}

/// How often [`room_for`] counts `/proc/self/fd`'s entries, at most, on a kernel that gives
/// no count: serve asks at every socket it opens, thousands at its start.
const RECOUNT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// When [`room_for`] last counted the entries, and that count plus what it allowed since.
static LAST_COUNT: std::sync::Mutex<Option<(std::time::Instant, u64)>> =
    std::sync::Mutex::new(None);

/// The open files as of `now` for a question about `files` more: `last`'s count while it is
/// recent (then counting `files` in it, as if opened), else `count()`'s.
fn open_lately(
    last: &mut Option<(std::time::Instant, u64)>,
    now: std::time::Instant,
    files: u64,
    count: impl FnOnce() -> Option<u64>,
) -> Option<u64> {
    match last {
        Some((at, open)) if now.duration_since(*at) < RECOUNT_EVERY => {
            let before = *open;
            *open += files;
            Some(before)
        }
        _ => {
            let open = count()?;
            *last = Some((now, open + files));
            Some(open)
        }
    }
}

/// How many files this process has open. Linux from 6.2 gives the count as the size of
/// `/proc/self/fd`, without a descriptor and in about a microsecond; an older kernel says 0
/// there, and the entries are counted instead (about a millisecond at 6000, and a descriptor
/// of its own: none left means every one allowed is open).
pub fn open_files() -> Option<u64> {
    counted_by_kernel().or_else(counted_entries)
}

const OPEN_FILES: &str = "/proc/self/fd";

/// The kernel's count of this process's open files (Linux 6.2 on).
fn counted_by_kernel() -> Option<u64> {
    std::fs::metadata(OPEN_FILES)
        .ok()
        .map(|table| table.len())
        .filter(|open| *open > 0)
}

/// This process's open files, counted from `/proc/self/fd`'s entries.
fn counted_entries() -> Option<u64> {
    match std::fs::read_dir(OPEN_FILES) {
        // The directory's own descriptor is one of the entries.
        Ok(entries) => Some(entries.count().saturating_sub(1) as u64),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EMFILE as i32) => open_files_limit(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Other tests of this process open and close files meanwhile, so a try whose count is
    /// off is made again; a count that is wrong is off every time.
    #[test]
    fn open_files_counts_what_this_process_opens() {
        let mut tries = Vec::new();
        for _ in 0..20 {
            let before = open_files().expect("a count of open files");
            let opened: Vec<_> = (0..200)
                .map(|_| std::fs::File::open("/dev/null").expect("/dev/null"))
                .collect();
            let after = open_files().expect("a count of open files");
            drop(opened);
            if after.abs_diff(before + 200) <= 5 {
                return;
            }
            tries.push((before, after));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("200 files opened, and the counts before and after were {tries:?}");
    }

    /// Both ways of counting agree (the kernel's, where it gives one, and the entries).
    /// Other tests of this process open and close files meanwhile (one opens 200 at once), so
    /// a count is judged only when the kernel's is the same before and after the entries were
    /// counted; a kernel that counts wrong disagrees every time.
    #[test]
    fn the_entries_counted_are_the_kernels_count() {
        if counted_by_kernel().is_none() {
            return;
        }
        let mut seen = Vec::new();
        for _ in 0..100 {
            let before = counted_by_kernel().expect("the kernel's count");
            let entries = counted_entries().expect("a count of entries");
            let after = counted_by_kernel().expect("the kernel's count");
            if before == after {
                if entries.abs_diff(before) <= 2 {
                    return;
                }
                seen.push((before, entries));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the kernel's count and the entries never agreed (kernel, entries): {seen:?}");
    }

    /// Without the kernel's count, the entries are counted at most every RECOUNT_EVERY; in
    /// between, what was asked for is taken as opened.
    #[test]
    fn entries_are_counted_again_only_after_a_while() {
        let start = std::time::Instant::now();
        let mut last = None;
        let mut counts = 0;
        let mut count = |open| {
            counts += 1;
            Some(open)
        };
        assert_eq!(open_lately(&mut last, start, 4, || count(100)), Some(100));
        let soon = start + RECOUNT_EVERY / 2;
        assert_eq!(open_lately(&mut last, soon, 4, || count(0)), Some(104));
        assert_eq!(open_lately(&mut last, soon, 2, || count(0)), Some(108));
        let later = start + RECOUNT_EVERY;
        assert_eq!(open_lately(&mut last, later, 2, || count(90)), Some(90));
        assert_eq!(counts, 2);
    }
}
