//! Every bound on what a peer on the network can make a daemon hold or do: connections,
//! requests in flight, table rows, subscriptions, processes, sweeps, rates. One place, so the
//! README's list and the code cannot drift apart. At a bound the daemon answers that request
//! with an error naming the bound and keeps serving everyone else.

/// The most processes a remote request (`incr`, `set numprocesses`, `add` with `allow_remote_exec`)
/// may ask one watcher to run; it may always ask for fewer. A few hundred is plenty for a lab or
/// data-centre node (two per core on a 128-core host) and covers the benchmarks' 200-process
/// spawn, while each process costs a fork, a pid, memory and a sampled `/proc` entry: at
/// [`crate::config::MAX_NUMPROCESSES`] (100 000) one request could exhaust the host's pids. The
/// node's owner (config file, owner-only socket) keeps that higher limit.
pub const MAX_REMOTE_NUMPROCESSES: u32 = 256;
