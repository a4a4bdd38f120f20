//! Every bound on what a peer on the network can make a daemon hold or do: connections,
//! requests in flight, table rows, subscriptions, processes, sweeps, rates. One place, so the
//! README's list and the code cannot drift apart. At a bound the daemon answers that request
//! with an error naming the bound and keeps serving everyone else.

// ---- troupe serve ------------------------------------------------------------------------

/// Requests `troupe serve` handles at once, all clients together. Each is a task, and a
/// forwarded one holds a connection per node until its nodes answer or time out (one ZeroMQ
/// context has 1023 sockets). A request past it is answered at once with an error.
pub const SERVE_REQUESTS_IN_FLIGHT: usize = 256;

/// Requests `troupe serve` handles at once from one peer address, so that one client cannot
/// take every slot of [`SERVE_REQUESTS_IN_FLIGHT`]. Every local client shares 127.0.0.1.
pub const SERVE_REQUESTS_IN_FLIGHT_PER_PEER: usize = 32;

/// Rows in a controller's member table (alive, suspect, down and left, until forgotten).
/// Each alive member costs a heartbeat a second and a kept connection. When the table is
/// full, a new member takes the place of the member down (or left) the longest; with none,
/// it is not adopted and `register_node` or `cluster` says so.
pub const MAX_MEMBERS: usize = 512;

/// Stats history series (one per process, plus the node's total) and processes in the
/// snapshot that `troupe serve` keeps for one node. A node chooses its own pids and watcher
/// names, so a hostile member could otherwise grow them without end; beyond the bound its
/// new processes are re-published but not kept, and `stats_history` reports how many.
pub const SERVE_STATS_SERIES_PER_NODE: usize = 1024;

/// Stats history series `troupe serve` keeps for all nodes together (each holds at most 10
/// minutes of points).
pub const SERVE_STATS_SERIES: usize = 16_384;

/// Addresses a `cluster` request may make `troupe serve` sweep (a /22), when the range is
/// not one its operator gave it (`--probe`, `troupe.toml`, or `troupe cluster` writing
/// serve's own state dir, where `--force` still lifts the CLI's limit). Keeps serve from
/// being a port-scan reflector for anyone who reaches it.
pub const SERVE_REMOTE_SWEEP_ADDRESSES: u64 = 1024;

/// `register_node` from one peer address: a token bucket holding this many...
pub const SERVE_REGISTER_BURST_PER_PEER: u32 = 20;
/// ...refilled at this many per second. An agent registers every 2 s, so this is enough
/// for 20 agents behind one address.
pub const SERVE_REGISTER_PER_SECOND_PER_PEER: u32 = 10;

/// `register_node` from all peers together: a token bucket holding this many...
pub const SERVE_REGISTER_BURST: u32 = 600;
/// ...refilled at this many per second ([`MAX_MEMBERS`] agents registering every 2 s need
/// 256). Checked before the per-peer bucket, so the map of per-peer buckets grows by at most
/// this rate, and buckets that refilled are dropped.
pub const SERVE_REGISTER_PER_SECOND: u32 = 300;
