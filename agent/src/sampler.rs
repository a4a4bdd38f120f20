//! Process statistics in Circus's format, sampled with sysinfo by one actor that owns the System.
//!
//! One actor task owns a [`sysinfo::System`] and all per-pid history. [`Sampler::sample`] sends the
//! targets to it; requests that queue up while a batch is being sampled are answered together by
//! one pass over `/proc`, each pid read once per batch even when several requests name it. The
//! reads run on tokio's blocking pool, never on a runtime worker.
//!
//! # Cost
//!
//! Only the requested pids (and, with `with_children`, their direct children) are read, never the
//! whole process table, and reading /proc is most of the cost. Per pid and sample that is **two
//! reads**: `/proc/<pid>/stat` for CPU ticks, nice and the start time in clock ticks (a sub-second
//! `create_time`; sysinfo rounds it to whole seconds and has no nice value), and
//! `/proc/<pid>/statm` for RSS and VMS (psutil's source; the RSS in `stat` is the kernel's per-CPU
//! approximation, off by up to 64 pages per CPU). The files of a tracked pid are kept open (see
//! Open files), so each read is one `pread` from offset 0: about 3 us for `stat`, which the kernel
//! generates from the task's state at every read, under 1 us for `statm`. Reading them by path
//! adds the path lookup, open and close, about 4 us per file; that is left for a pid's first
//! sample. A sysinfo refresh reads `status` + `stat` (+ `statm` + `cmdline`) by path, several times
//! as much, so it is used only for what rarely changes: the real uid and argv. It runs for a pid
//! when it is first seen, when its command name changed (an exec), and otherwise on a backoff:
//! after an interval equal to the process's age at the last refresh, clamped to [`META_MIN`,
//! `META_MAX`], which catches title and uid changes made while a process starts up and then costs
//! almost nothing. Sampling children adds one read per parent: a `pread` for a single-threaded
//! parent, a read by path per thread for a multi-threaded one.
//!
//! # Open files
//!
//! The `stat` and `statm` files of a pid are opened when it is first seen, the `children` file of
//! a single-threaded parent at its next sample with children; all are close-on-exec, so children
//! never inherit them, and closed with the pid's history. An open file refers to the process, not
//! to the pid: once that process is gone, reading `stat` or `statm` fails or yields nothing, which
//! is taken as the process being gone; the pid is then read by path once, as at first sight, since
//! a new process may have it (the start time tells them apart). At most half of the soft
//! `RLIMIT_NOFILE` (raised to the hard limit at agent start by
//! [`crate::watcher::process::raise_open_files_limit`]; children get the original back) is kept
//! open; beyond that, pids are read by path. An open that fails for lack of descriptors (`EMFILE`,
//! or `ENFILE` for the whole system) releases all kept files, as the agent's pipes and sockets need
//! them more, and none are kept until the next sweep.
//!
//! # Children
//!
//! `/proc/<pid>/task/<tid>/children`: the kernel's list of a thread's children, one small read
//! for a single-threaded parent. Kernels built without `CONFIG_PROC_CHILDREN` lack that file;
//! then, and only for batches that ask for children, every `/proc/<pid>/stat` is scanned for the
//! parent pid, as psutil does.
//!
//! # CPU percent
//!
//! sysinfo's `cpu_usage` is relative to the last *global* CPU refresh of the `System`, so it is
//! wrong as soon as different callers sample different pid sets at different times. The sampler
//! keeps per pid the CPU ticks (utime + stime) and the instant of the sample that serves as its
//! baseline, and reports `CPU seconds / wall seconds * 100` over that interval rounded to 1
//! decimal, like psutil's `Process.cpu_percent(interval=None)`: 0.0 on the first sample of a pid,
//! about 100.0 for a busy loop, more for several busy threads. A sample taken less than
//! [`MIN_CPU_INTERVAL`] after the baseline repeats the last value and keeps the baseline, so a
//! `stats` command arriving right after a stats-stream tick does not read a noisy value over a
//! few 10 ms ticks, and the stream's next interval keeps its length.
//!
//! # History
//!
//! A pid's history (here and in sysinfo), with its open files, is dropped as soon as a sample
//! finds it gone, or finds its pid reused (the start time is part of its identity). Every
//! [`SWEEP_INTERVAL`] the pids not sampled lately are checked and dropped if gone, or if idle for
//! [`IDLE_LIMIT`].

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use troupe::protocol::{format_cpu_time, format_mem, round_mem_percent, ProcessInfo};

/// A sample closer than this to a pid's CPU baseline repeats the last CPU percent.
pub const MIN_CPU_INTERVAL: Duration = Duration::from_millis(200);
/// Shortest interval between two reads of a pid's uid and argv.
pub const META_MIN: Duration = Duration::from_secs(1);
/// Longest interval between two reads of a pid's uid and argv (an exec is noticed at once).
pub const META_MAX: Duration = Duration::from_secs(60);
/// How often the history of pids that were not sampled lately is checked against /proc.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// History of a pid not sampled for this long is dropped even if it still runs.
pub const IDLE_LIMIT: Duration = Duration::from_secs(600);
/// Requests queued behind a batch are answered together, up to this many.
const MAX_BATCH: usize = 64;

/// One process to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleTarget {
    pub pid: u32,
    /// Copied into the result (watcher processes: when the supervisor spawned it).
    pub started: Option<f64>,
    /// Copied into the result (watcher processes: the worker id).
    pub wid: Option<u32>,
    /// Also sample the direct children into `children` (else `children` is None).
    pub with_children: bool,
}

struct Request {
    targets: Vec<SampleTarget>,
    reply: oneshot::Sender<Vec<Option<ProcessInfo>>>,
}

/// Handle to the sampling actor; cheap to clone.
#[derive(Clone)]
pub struct Sampler {
    tx: mpsc::Sender<Request>,
}

impl Sampler {
    /// Spawns the actor (inside a tokio runtime).
    pub fn spawn() -> Sampler {
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(actor(rx));
        Sampler { tx }
    }

    /// Samples the targets; a pid that no longer exists yields None in its slot (same order as input).
    pub async fn sample(&self, targets: Vec<SampleTarget>) -> Vec<Option<ProcessInfo>> {
        let n = targets.len();
        if n == 0 {
            return Vec::new();
        }
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Request { targets, reply }).await.is_err() {
            tracing::warn!("process sampler is gone; reporting {n} process(es) as unavailable");
            return vec![None; n];
        }
        match answer.await {
            Ok(infos) if infos.len() == n => infos,
            _ => vec![None; n],
        }
    }
}

async fn actor(mut rx: mpsc::Receiver<Request>) {
    let mut state: Option<State> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let st = match state.take() {
            Some(st) => st,
            None => match State::new() {
                Ok(st) => st,
                Err(e) => {
                    tracing::error!("cannot initialise the process sampler: {e}");
                    // Dropping the replies answers every request with None.
                    continue;
                }
            },
        };
        let (replies, targets): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|r| (r.reply, r.targets)).unzip();
        let work = tokio::task::spawn_blocking(move || {
            let mut st = st;
            let out = st.sample(&targets);
            (st, out)
        });
        match work.await {
            Ok((st, out)) => {
                state = Some(st);
                for (reply, infos) in replies.into_iter().zip(out) {
                    // The caller may have given up waiting; nothing to do then.
                    let _ = reply.send(infos);
                }
            }
            // The state is lost with the task; the next batch starts afresh.
            Err(e) => tracing::error!("process sampling failed: {e}"),
        }
    }
}

/// What we read ourselves from `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq)]
struct Stat {
    comm: String,
    ppid: u32,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    nice: i64,
    num_threads: u64,
    /// Start time after boot, in clock ticks.
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat` (proc(5)); the command name may contain spaces and parentheses.
fn parse_stat(data: &[u8]) -> Option<Stat> {
    let open = data.iter().position(|&b| b == b'(')?;
    let close = data.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = String::from_utf8_lossy(&data[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(data.get(close + 1..)?).ok()?;
    // proc(5) numbers fields from 1; field 3 (state) comes first after the name. One pass over
    // them: fields are asked for in increasing order.
    let mut fields = (3..).zip(rest.split_ascii_whitespace());
    let mut field = |n: usize| fields.find(|&(i, _)| i == n).map(|(_, f)| f);
    let ppid = field(4)?.parse().ok()?;
    let utime: u64 = field(14)?.parse().ok()?;
    let stime: u64 = field(15)?.parse().ok()?;
    let nice = field(19)?.parse().ok()?;
    let num_threads = field(20)?.parse().ok()?;
    let start_ticks = field(22)?.parse().ok()?;
    Some(Stat {
        comm,
        ppid,
        cpu_ticks: utime.saturating_add(stime),
        nice,
        num_threads,
        start_ticks,
    })
}

/// Parses `/proc/<pid>/statm` into (virtual, resident) sizes in pages.
fn parse_statm(data: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// Circus's `cmdline`: base name of argv[0] (psutil splits a single space-joined argument, as left
/// by processes that rewrite their title); the process name when there is no argv.
fn cmdline_name(argv: &[std::ffi::OsString], name: &str) -> String {
    let Some(first) = argv.first() else {
        return name.to_string();
    };
    let first = first.to_string_lossy();
    let arg0 = if argv.len() == 1 {
        first.split(' ').next().unwrap_or_default()
    } else {
        &first
    };
    match arg0.rsplit('/').next() {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => name.to_string(),
    }
}

/// What sysinfo told us last about a pid, and when to ask again.
#[derive(Debug, Clone)]
struct Meta {
    cmdline: String,
    uid: Option<u32>,
    /// The command name when this was read; a different one means an exec.
    comm: String,
    at: Instant,
    every: Duration,
}

/// A pid's history.
#[derive(Debug)]
struct Track {
    start_ticks: u64,
    /// CPU baseline: ticks and when they were read.
    cpu_ticks: u64,
    at: Instant,
    /// Last CPU percent reported.
    cpu: f64,
    last_seen: Instant,
    meta: Meta,
    /// None while it is read by path (no room to keep them, or they belonged to a process that
    /// is gone).
    files: Option<ProcFiles>,
}

/// The files read at every sample of a pid, kept open between samples.
#[derive(Debug)]
struct ProcFiles {
    stat: File,
    statm: File,
    /// `task/<pid>/children`, once a single-threaded pid was sampled with its children.
    children: Option<File>,
}

impl ProcFiles {
    /// Reads both files; None if either cannot be read or is empty (the process is gone).
    fn read(&self, buf: &mut Vec<u8>, page_size: u64) -> Option<Observed> {
        if !read_whole(&self.stat, buf) || buf.is_empty() {
            return None;
        }
        let stat = parse_stat(buf)?;
        let at = Instant::now();
        if !read_whole(&self.statm, buf) || buf.is_empty() {
            return None;
        }
        let (vms, rss) = parse_statm(buf)?;
        Some(Observed {
            stat,
            vms: vms.saturating_mul(page_size),
            rss: rss.saturating_mul(page_size),
            at,
            files: None,
        })
    }
}

/// One pid as read in this batch.
struct Observed {
    stat: Stat,
    /// Virtual and resident memory, bytes.
    vms: u64,
    rss: u64,
    at: Instant,
    /// Files opened by path in this batch, to be kept in the pid's history.
    files: Option<ProcFiles>,
}

struct State {
    sys: System,
    tracks: HashMap<u32, Track>,
    users: HashMap<u32, String>,
    clock_ticks: f64,
    page_size: u64,
    boot_time: f64,
    total_memory: u64,
    /// Whether the kernel has `/proc/<pid>/task/<tid>/children`.
    children_file: bool,
    next_sweep: Instant,
    buf: Vec<u8>,
    path: String,
    /// How many files may be kept open in all: half the soft `RLIMIT_NOFILE`.
    file_budget: usize,
    /// Whether files are kept open at all; false from running out of descriptors to the next
    /// sweep.
    keep_files: bool,
    /// How many more files may be kept open in this batch.
    files_room: usize,
}

impl State {
    fn new() -> Result<State, sysinfo::Error> {
        let mut sys = System::new()?;
        sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let boot_time = match System::boot_time() {
            Ok(t) => t as f64,
            Err(e) => {
                tracing::warn!("cannot read the boot time ({e}); create_time will be off");
                0.0
            }
        };
        let me = std::process::id();
        let children_file =
            std::path::Path::new(&format!("/proc/{me}/task/{me}/children")).exists();
        if !children_file {
            tracing::info!(
                "no /proc/<pid>/task/<tid>/children: children will be found by scanning /proc"
            );
        }
        Ok(State {
            total_memory: sys.total_memory(),
            sys,
            tracks: HashMap::new(),
            users: HashMap::new(),
            clock_ticks: sysconf(nix::libc::_SC_CLK_TCK).unwrap_or(100) as f64,
            page_size: sysconf(nix::libc::_SC_PAGESIZE).unwrap_or(4096),
            boot_time,
            children_file,
            next_sweep: Instant::now() + SWEEP_INTERVAL,
            buf: Vec::with_capacity(4096),
            path: String::with_capacity(64),
            file_budget: file_budget(),
            keep_files: true,
            files_room: 0,
        })
    }

    /// Opens `/proc/<pid>/<name>`, releasing the kept files first if descriptors ran out.
    fn open(&mut self, pid: u32, name: std::fmt::Arguments) -> Option<File> {
        self.path.clear();
        let _ = write!(self.path, "/proc/{pid}/{name}");
        match File::open(&self.path) {
            Ok(file) => Some(file),
            Err(e) if self.out_of_files(&e) => File::open(&self.path).ok(),
            Err(_) => None,
        }
    }

    /// Whether `error` (of an open) means that no descriptor was left. Then all kept files are
    /// closed, since the agent's pipes and sockets need descriptors more than the sampler, which
    /// can read by path, and none are kept until the next sweep.
    fn out_of_files(&mut self, error: &std::io::Error) -> bool {
        use nix::libc::{EMFILE, ENFILE};
        if !matches!(error.raw_os_error(), Some(EMFILE | ENFILE)) {
            return false;
        }
        let released = self
            .tracks
            .values_mut()
            .filter_map(|t| t.files.take())
            .count();
        self.keep_files = false;
        self.files_room = 0;
        tracing::warn!(
            "out of file descriptors ({error}): closed the files of {released} sampled \
             process(es); they are read by path until the next sweep"
        );
        true
    }

    /// How many files are kept open.
    fn kept_files(&self) -> usize {
        self.tracks
            .values()
            .filter_map(|t| t.files.as_ref())
            .map(|f| 2 + usize::from(f.children.is_some()))
            .sum()
    }

    /// Reads `/proc/<pid>/<name>` by path into `buf`; false if it cannot be opened or read.
    fn read_path(&mut self, pid: u32, name: std::fmt::Arguments) -> bool {
        self.open(pid, name)
            .is_some_and(|file| read_whole(&file, &mut self.buf))
    }

    fn read_stat(&mut self, pid: u32) -> Option<Stat> {
        if self.read_path(pid, format_args!("stat")) {
            parse_stat(&self.buf)
        } else {
            None
        }
    }

    /// Reads `/proc/<pid>/stat` and `statm`: through the files kept for the pid, else (first
    /// sight, the process of the kept files is gone, or no room to keep them) by path, keeping
    /// the files opened if there is room.
    fn read_observed(&mut self, pid: u32) -> Option<Observed> {
        if let Some(track) = self.tracks.get_mut(&pid) {
            if let Some(files) = &track.files {
                let observed = files.read(&mut self.buf, self.page_size);
                if observed.is_some() {
                    return observed;
                }
                // A new process may have the pid already; it is read by path below.
                track.files = None;
            }
        }
        let files = ProcFiles {
            stat: self.open(pid, format_args!("stat"))?,
            statm: self.open(pid, format_args!("statm"))?,
            children: None,
        };
        let mut observed = files.read(&mut self.buf, self.page_size)?;
        if self.files_room >= 2 {
            self.files_room -= 2;
            observed.files = Some(files);
        }
        Some(observed)
    }

    /// Reads `pid`, once per batch.
    fn observe(&mut self, pid: u32, seen: &mut HashMap<u32, Option<Observed>>) {
        if let std::collections::hash_map::Entry::Vacant(slot) = seen.entry(pid) {
            slot.insert(self.read_observed(pid));
        }
    }

    /// Direct children of `pid` from the kernel's per-thread lists, sorted.
    fn children_from_file(&mut self, pid: u32, num_threads: u64) -> Vec<u32> {
        let mut out = Vec::new();
        if num_threads <= 1 {
            if self.read_children(pid) {
                push_pids(&self.buf, &mut out);
            }
        } else if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            let tids: Vec<u32> = dir
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .collect();
            for tid in tids {
                if self.read_path(pid, format_args!("task/{tid}/children")) {
                    push_pids(&self.buf, &mut out);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Reads the children list of single-threaded `pid` into `buf`: through the file kept for
    /// it, else by path, keeping the file with the pid's others if they are kept and there is room.
    fn read_children(&mut self, pid: u32) -> bool {
        let kept = self
            .tracks
            .get(&pid)
            .and_then(|t| t.files.as_ref()?.children.as_ref());
        if let Some(file) = kept {
            // That of a process gone meanwhile reads as empty: no children, which is true.
            return read_whole(file, &mut self.buf);
        }
        let Some(file) = self.open(pid, format_args!("task/{pid}/children")) else {
            return false;
        };
        if !read_whole(&file, &mut self.buf) {
            return false;
        }
        if self.files_room >= 1 {
            if let Some(files) = self.tracks.get_mut(&pid).and_then(|t| t.files.as_mut()) {
                self.files_room -= 1;
                files.children = Some(file);
            }
        }
        true
    }

    /// Direct children of each of `parents`, by reading every process's parent pid (fallback).
    fn children_by_scan(&mut self, parents: &HashSet<u32>) -> HashMap<u32, Vec<u32>> {
        let mut out: HashMap<u32, Vec<u32>> = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        let pids: Vec<u32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .collect();
        for pid in pids {
            if let Some(stat) = self.read_stat(pid) {
                if parents.contains(&stat.ppid) {
                    out.entry(stat.ppid).or_default().push(pid);
                }
            }
        }
        for kids in out.values_mut() {
            kids.sort_unstable();
        }
        out
    }

    /// The name of `uid` (its number if it has none; "N/A" if the uid could not be read).
    fn username(&mut self, uid: Option<u32>) -> String {
        let Some(uid) = uid else {
            return "N/A".to_string();
        };
        self.users
            .entry(uid)
            .or_insert_with(
                || match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
                    Ok(Some(user)) => user.name,
                    _ => uid.to_string(),
                },
            )
            .clone()
    }

    /// Whether uid and argv of `pid` must be read (again) from sysinfo.
    fn meta_due(&self, pid: u32, stat: &Stat, now: Instant) -> bool {
        match self.tracks.get(&pid) {
            None => true,
            Some(t) => {
                t.start_ticks != stat.start_ticks
                    || t.meta.comm != stat.comm
                    || now.saturating_duration_since(t.meta.at) >= t.meta.every
            }
        }
    }

    /// Samples a batch of requests; one answer list per request, in order.
    fn sample(&mut self, requests: &[Vec<SampleTarget>]) -> Vec<Vec<Option<ProcessInfo>>> {
        let now_wall = epoch_now();
        self.files_room = if self.keep_files {
            self.file_budget.saturating_sub(self.kept_files())
        } else {
            0
        };

        // 1. Our stat read of every requested pid, then of their children.
        let mut seen: HashMap<u32, Option<Observed>> = HashMap::new();
        for target in requests.iter().flatten() {
            self.observe(target.pid, &mut seen);
        }
        let mut parents: Vec<(u32, u64)> = requests
            .iter()
            .flatten()
            .filter(|t| t.with_children)
            .filter_map(|t| match seen.get(&t.pid) {
                Some(Some(o)) => Some((t.pid, o.stat.num_threads)),
                _ => None,
            })
            .collect();
        parents.sort_unstable();
        parents.dedup();
        let mut children: HashMap<u32, Vec<u32>> = if parents.is_empty() {
            HashMap::new()
        } else if self.children_file {
            parents
                .into_iter()
                .map(|(pid, threads)| (pid, self.children_from_file(pid, threads)))
                .collect()
        } else {
            self.children_by_scan(&parents.into_iter().map(|(pid, _)| pid).collect())
        };
        for kids in children.values() {
            for &kid in kids {
                self.observe(kid, &mut seen);
            }
        }

        // 2. sysinfo, for the pids whose uid and argv are due, and for vanished pids it knows
        // (refreshing them with `remove_dead_processes` makes it forget them).
        let now = Instant::now();
        let refresh: Vec<Pid> = seen
            .iter()
            .filter(|(&pid, observed)| match observed {
                Some(o) => self.meta_due(pid, &o.stat, now),
                None => self.sys.process(Pid::from_u32(pid)).is_some(),
            })
            .map(|(&pid, _)| Pid::from_u32(pid))
            .collect();
        if !refresh.is_empty() {
            self.sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&refresh),
                true,
                ProcessRefreshKind::nothing()
                    .with_user(UpdateKind::Always)
                    .with_cmd(UpdateKind::Always)
                    .without_tasks(),
            );
        }
        // An exec between our stat read and sysinfo's argv read would pair the old command name
        // with the new argv, and an exec back to the old name (`sh -c 'exec nice sh ...'`) would
        // then never be noticed: a name that changed across the refresh is recorded as unknown,
        // so the next sample reads argv again.
        let mut refreshed: HashMap<u32, bool> = HashMap::with_capacity(refresh.len());
        for pid in refresh.iter().map(|p| p.as_u32()) {
            let before = seen
                .get(&pid)
                .and_then(|o| o.as_ref())
                .map(|o| &o.stat.comm);
            let settled = match (before, self.read_stat(pid).map(|s| s.comm)) {
                (Some(before), Some(after)) => *before == after,
                _ => true,
            };
            refreshed.insert(pid, settled);
        }

        // 3. One ProcessInfo (without started/wid/children) per live pid.
        let mut infos: HashMap<u32, ProcessInfo> = HashMap::with_capacity(seen.len());
        for (pid, observed) in seen {
            let info = observed
                .and_then(|o| self.describe(pid, o, refreshed.get(&pid).copied(), now_wall));
            match info {
                Some(info) => {
                    infos.insert(pid, info);
                }
                None => {
                    self.tracks.remove(&pid);
                }
            }
        }

        // 4. Answers, in request order.
        let answers = requests
            .iter()
            .map(|targets| {
                targets
                    .iter()
                    .map(|t| {
                        let mut info = infos.get(&t.pid)?.clone();
                        info.started = t.started;
                        info.wid = t.wid;
                        if t.with_children {
                            let kids = children.entry(t.pid).or_default();
                            info.children =
                                Some(kids.iter().filter_map(|k| infos.get(k).cloned()).collect());
                        }
                        Some(info)
                    })
                    .collect()
            })
            .collect();

        let now = Instant::now();
        if now >= self.next_sweep {
            self.sweep(now);
        }
        answers
    }

    /// The process info of one pid read in this batch, updating its history. `refreshed`: sysinfo
    /// has just read its uid and argv, and whether its command name stayed the same meanwhile.
    /// None if the process vanished meanwhile.
    fn describe(
        &mut self,
        pid: u32,
        observed: Observed,
        refreshed: Option<bool>,
        now_wall: f64,
    ) -> Option<ProcessInfo> {
        let Observed {
            stat,
            vms,
            rss,
            at,
            files,
        } = observed;
        let create_time = self.boot_time + stat.start_ticks as f64 / self.clock_ticks;
        let age = (now_wall - create_time).max(0.0);
        let meta = if let Some(settled) = refreshed {
            let process = self.sys.process(Pid::from_u32(pid))?;
            Some(Meta {
                cmdline: cmdline_name(process.cmd(), &stat.comm),
                uid: process.user_id().map(|uid| **uid),
                // The kernel's comm is never empty, so an empty one is always due again.
                comm: if settled {
                    stat.comm.clone()
                } else {
                    String::new()
                },
                at,
                every: Duration::try_from_secs_f64(age)
                    .unwrap_or(META_MAX)
                    .clamp(META_MIN, META_MAX),
            })
        } else {
            None
        };
        let (cpu, uid, cmdline) = match self.tracks.get_mut(&pid) {
            Some(track) if track.start_ticks == stat.start_ticks => {
                if let Some(meta) = meta {
                    track.meta = meta;
                }
                if files.is_some() {
                    track.files = files;
                }
                track.last_seen = at;
                let elapsed = at.saturating_duration_since(track.at);
                if elapsed >= MIN_CPU_INTERVAL {
                    let busy =
                        stat.cpu_ticks.saturating_sub(track.cpu_ticks) as f64 / self.clock_ticks;
                    track.cpu = (busy / elapsed.as_secs_f64() * 1000.0).round() / 10.0;
                    track.cpu_ticks = stat.cpu_ticks;
                    track.at = at;
                }
                (track.cpu, track.meta.uid, track.meta.cmdline.clone())
            }
            // First sight of this process (or its pid was reused): psutil's 0.0.
            _ => {
                let meta = meta?;
                let known = (0.0, meta.uid, meta.cmdline.clone());
                let track = Track {
                    start_ticks: stat.start_ticks,
                    cpu_ticks: stat.cpu_ticks,
                    at,
                    cpu: 0.0,
                    last_seen: at,
                    meta,
                    files,
                };
                self.tracks.insert(pid, track);
                known
            }
        };
        let mem = if self.total_memory == 0 {
            0.0
        } else {
            round_mem_percent(rss as f64 * 100.0 / self.total_memory as f64)
        };
        Some(ProcessInfo {
            pid,
            mem_info1: format_mem(rss),
            mem_info2: format_mem(vms),
            cpu,
            mem,
            ctime: format_cpu_time(stat.cpu_ticks as f64 / self.clock_ticks),
            username: self.username(uid),
            nice: stat.nice,
            create_time,
            age,
            cmdline,
            children: None,
            started: None,
            wid: None,
        })
    }

    /// Drops the history of pids not sampled lately that exited (or were idle too long), in
    /// sysinfo too; rereads total memory and the file budget; keeps files again after running out
    /// of descriptors; forgets cached user names.
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + SWEEP_INTERVAL;
        self.file_budget = file_budget();
        self.keep_files = true;
        let before = self.tracks.len();
        let stale: Vec<(u32, u64, Duration)> = self
            .tracks
            .iter()
            .map(|(&pid, t)| {
                (
                    pid,
                    t.start_ticks,
                    now.saturating_duration_since(t.last_seen),
                )
            })
            .filter(|&(_, _, idle)| idle >= SWEEP_INTERVAL)
            .collect();
        for (pid, start_ticks, idle) in stale {
            let alive = idle < IDLE_LIMIT
                && self
                    .read_stat(pid)
                    .is_some_and(|s| s.start_ticks == start_ticks);
            if !alive {
                self.tracks.remove(&pid);
            }
        }
        if self.tracks.len() < before || self.sys.processes().len() > self.tracks.len() {
            // sysinfo cannot forget a live process; a fresh System holds nothing we still need
            // (uid and argv of tracked pids are kept in their Track).
            match System::new() {
                Ok(sys) => self.sys = sys,
                Err(e) => tracing::warn!("cannot renew the sysinfo System: {e}"),
            }
        }
        self.sys
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        self.total_memory = self.sys.total_memory();
        self.users.clear();
    }
}

/// Appends the pids listed in a `children` file.
fn push_pids(data: &[u8], out: &mut Vec<u32>) {
    let text = String::from_utf8_lossy(data);
    out.extend(
        text.split_ascii_whitespace()
            .filter_map(|s| s.parse::<u32>().ok()),
    );
}

/// Reads a whole small /proc file from its start into `buf` with `pread`s; false if it cannot be
/// read. procfs produces such a file in one go, so a read that does not fill the buffer has
/// reached the end: one call, not a second one that would only find the end (and for which the
/// kernel would generate the file again).
fn read_whole(file: &File, buf: &mut Vec<u8>) -> bool {
    const CHUNK: usize = 4096;
    buf.clear();
    loop {
        let len = buf.len();
        buf.resize(len + CHUNK, 0);
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(n) => {
                buf.truncate(len + n);
                if n < CHUNK {
                    return true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
            Err(_) => return false,
        }
    }
}

/// Half the soft `RLIMIT_NOFILE`: the other half is the rest of the agent's (sockets, and two
/// output pipes per child).
fn file_budget() -> usize {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => usize::try_from(soft / 2).unwrap_or(usize::MAX),
        Err(_) => 0,
    }
}

/// A positive `sysconf` value.
fn sysconf(name: nix::libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no preconditions; it only reads system configuration.
    let value = unsafe { nix::libc::sysconf(name) };
    u64::try_from(value).ok().filter(|&v| v > 0)
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
