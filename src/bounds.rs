//! Every bound on what a peer on the network can make a daemon hold or do: connections,
//! requests in flight, table rows, subscriptions, processes, sweeps, rates. One place, so the
//! README's list and the code cannot drift apart. At a bound the daemon answers that request
//! with an error naming the bound and keeps serving everyone else.

/// Clients (ZeroMQ identities: one per connection) with requests queued or running on one of
/// the agent's control sockets. Each holds a task and a queue of up to [`CLIENT_QUEUE`]
/// requests; an idle client holds nothing. A new client past this gets an error reply; clients
/// already in flight are served. The owner's Unix socket counts its clients separately, so a
/// flood over TCP cannot lock the node's owner out, and one address holds at most
/// [`MAX_CONTROL_CONNECTIONS_PER_PEER`] of these places.
pub const CONTROL_CLIENTS: usize = 256;

/// TCP connections one peer address may keep open to the agent's or `troupe serve`'s control
/// socket; one more is shut down as soon as it is accepted (and the address logged once while
/// it stays at the bound). Each costs libzmq a pipe, buffers and a descriptor, idle or not.
/// A controller host needs far fewer: `troupe serve` keeps one connection per agent plus a
/// probe now and then, each `troupe ctl`/`circusctl` holds one while it runs (`troupe top`
/// and `circus-top` read the stats socket), and serve sees one per agent behind an address
/// (20 agents behind one NAT fit, as for [`SERVE_REGISTER_PER_SECOND_PER_PEER`]). Below
/// [`CONTROL_CLIENTS`], so one address cannot take every place in flight either.
pub const MAX_CONTROL_CONNECTIONS_PER_PEER: usize = 64;

/// Requests one control client may have queued behind its running one; past it, that client
/// gets "too many requests" errors.
pub const CLIENT_QUEUE: usize = 64;

/// The most processes a remote request (`incr`, `set numprocesses`, `add` with `allow_remote_exec`)
/// may ask one watcher to run; it may always ask for fewer. A few hundred is plenty for a lab or
/// data-centre node (two per core on a 128-core host) and covers the benchmarks' 200-process
/// spawn, while each process costs a fork, a pid, memory and a sampled `/proc` entry: at
/// [`crate::config::MAX_NUMPROCESSES`] (100 000) one request could exhaust the host's pids. The
/// node's owner (config file, owner-only socket) keeps that higher limit.
pub const MAX_REMOTE_NUMPROCESSES: u32 = 256;

/// The longest subscription a SUB peer may send to a publishing socket (one byte of kind, then
/// the topic prefix); a longer one drops its connection before the frame is read. ZeroMQ keeps
/// a trie node per byte of every distinct prefix subscribed, so this and
/// [`MAX_TOPICS_PER_PEER`] together bound what one address can make a socket hold (about a
/// million nodes, some 40 MB, at worst); real topics (`stat.<watcher>.<pid>`) are far shorter.
pub const MAX_SUBSCRIPTION_BYTES: usize = 4096;

/// Connections one peer address may keep open to a stats or events socket (the agent's and
/// `troupe serve`'s); one more is dropped at once. A controller host running `troupe serve`,
/// a `troupe top` and a few `circus-top`s needs a handful.
pub const MAX_SUBSCRIBERS_PER_PEER: usize = 16;

/// Distinct topic prefixes one peer address may subscribe to on a stats or events socket (the
/// agent's and `troupe serve`'s), counted until its last connection closes; past it, all its
/// connections there are dropped (a SUB reconnects and subscribes again by itself, so a peer
/// within the bound never notices, and one beyond it is dropped each time). Circus's and
/// troupe's clients subscribe to one prefix; a script following a few hundred watchers one by
/// one still fits.
pub const MAX_TOPICS_PER_PEER: usize = 256;

// ---- troupe serve ------------------------------------------------------------------------

/// Requests `troupe serve` handles at once, all clients together. Each is a task, and a
/// forwarded one holds a connection per node until its nodes answer or time out (one ZeroMQ
/// context has 1023 sockets). A request past it is answered at once with an error.
pub const SERVE_REQUESTS_IN_FLIGHT: usize = 256;

/// Requests `troupe serve` handles at once from one peer address, so that one client cannot
/// take every slot of [`SERVE_REQUESTS_IN_FLIGHT`]. Every local client shares 127.0.0.1.
pub const SERVE_REQUESTS_IN_FLIGHT_PER_PEER: usize = 32;

/// Rows in a controller's member table (alive, suspect, down, left and locked, until
/// forgotten), unless `troupe serve` was started with another `max_members`
/// ([`set_max_members`]).
/// Each alive member costs a heartbeat a second, a kept connection, a stats and an events
/// subscription: up to [`serve_files_per_member`] file descriptors, 4 ZeroMQ sockets (12 with
/// a cluster key, their handshake monitors; one context per kind of connection:
/// [`crate::sockets::member_context`] sizes them from this bound) and, at 1000
/// members on a 2-core VM (`bench/run mesh --agents 1000`), about 0.017 % of a core and
/// 100 KiB of serve: the thousand serve is measured with, and headroom. When the table is
/// full, a new member takes the place of the member down (left, locked) the longest; with
/// none, it is not adopted and `register_node` or `cluster` says so.
pub const MAX_MEMBERS: usize = 1024;

/// The largest `max_members` serve accepts: past it one serve would need more than a
/// machine's cores for heartbeats alone (README, "Scale").
pub const MAX_MEMBERS_SETTING: usize = 20_000;

/// File descriptors serve holds per member without a cluster key: three connections
/// (heartbeats, stats, events) and a kept control connection once it forwarded a command,
/// each its TCP socket and its ZeroMQ socket's eventfd mailbox (6 at steady state, 8 after a
/// command, counted in /proc at 10 and 20 members).
pub const SERVE_FILES_PER_MEMBER: u64 = 8;

/// [`SERVE_FILES_PER_MEMBER`] with a cluster key: each connection's handshakes are watched
/// (a key rotation), which takes two eventfds more, libzmq's monitor socket and the one that
/// reads it (12 at steady state, 16 after a command, counted the same way).
pub const SERVE_FILES_PER_KEYED_MEMBER: u64 = 16;

/// The file descriptors a member takes in this process: [`SERVE_FILES_PER_KEYED_MEMBER`] once
/// it holds a cluster key (its outgoing connections present it), else
/// [`SERVE_FILES_PER_MEMBER`].
pub fn serve_files_per_member() -> u64 {
    if crate::sockets::client_keys().is_some() {
        SERVE_FILES_PER_KEYED_MEMBER
    } else {
        SERVE_FILES_PER_MEMBER
    }
}

/// File descriptors serve holds besides its members' (its own sockets, clients, the
/// dashboard, probes under way).
pub const SERVE_FILES_BESIDES_MEMBERS: u64 = 1024;

/// File descriptors `troupe serve` keeps free for its clients (`troupe` commands,
/// `circusctl`, `troupe top`, the dashboard's browsers): out of descriptors, the connections it
/// opens to members stop short of these ([`crate::limits::keep_files_free`]), so it still
/// answers the operator its warning sends to look. Part of [`SERVE_FILES_BESIDES_MEMBERS`].
pub const SERVE_FILES_KEPT_FOR_CLIENTS: u64 = 64;

/// The member bound in force, when `troupe serve` set one at start.
static MEMBER_BOUND: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// The member bound in force: [`MAX_MEMBERS`], or what [`set_max_members`] set.
pub fn max_members() -> usize {
    MEMBER_BOUND.get().copied().unwrap_or(MAX_MEMBERS)
}

/// Sets the member bound for this process, once, before any member table or member context
/// is made (`troupe serve` at start, from its `max_members`).
pub fn set_max_members(bound: usize) -> Result<(), String> {
    if !(1..=MAX_MEMBERS_SETTING).contains(&bound) {
        return Err(format!(
            "max_members must be between 1 and {MAX_MEMBERS_SETTING}, got {bound}"
        ));
    }
    MEMBER_BOUND
        .set(bound)
        .map_err(|_| "max_members is set once, at start".to_string())
}

/// File descriptors a serve of `members` members needs.
pub fn serve_files_for(members: usize) -> u64 {
    members as u64 * serve_files_per_member() + SERVE_FILES_BESIDES_MEMBERS
}

/// Claims of an id already held by an alive member (a copied id file) that a controller
/// remembers having logged, so each (id, endpoint) is logged once, not at every sighting;
/// past it the memory starts afresh (a claim is logged again, nothing else changes).
pub const MAX_REFUSED_CLAIMS: usize = 256;

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

/// How long a request to `troupe serve` that reads the member list (a forwarded command,
/// `nodelist`, `status`) waits, at most, for serve's first discovery: the first sweep of its
/// ranges and seeds, and the moment mDNS answers take. A command sent as serve starts then
/// finds the nodes a one-shot command would; past this it gets what serve found so far.
pub const SERVE_FIRST_DISCOVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Agents of other clusters a controller remembers (cluster and node name) to tell its
/// operator where the nodes went ("3 agents of cluster 'lab' answered"); more are not counted.
pub const MAX_OTHER_CLUSTER_NODES: usize = 256;

/// Endpoints a controller remembers as silent: a probe opened a TCP connection there and got
/// no `nodeinfo` answer (a frozen agent, or something that does not speak ZeroMQ). Each is
/// reported by fan-outs as `no reply`; past the bound, new ones are not remembered.
pub const MAX_SILENT_ENDPOINTS: usize = 256;

/// Nodes the CLI's roster (`<state_dir>/roster/<cluster>.json`) keeps: the ones seen last are
/// kept when more have been seen.
pub const MAX_ROSTER_NODES: usize = 1024;

/// Bytes of a roster file read at most (1024 nodes take about 250 KiB); a longer file is
/// reported as corrupt and replaced.
pub const MAX_ROSTER_BYTES: u64 = 1024 * 1024;

// ---- the cluster key ---------------------------------------------------------------------

/// Peer addresses whose refused handshake a daemon remembers having logged, so each address
/// is logged once per [`crate::zap::REFUSAL_LOG_INTERVAL`]. When full, expired addresses are
/// dropped; if none has expired, the refusal is counted and the count logged with the next line.
pub const REFUSAL_LOG_PEERS: usize = 1024;

/// Endpoints for which a controller remembers that a key other than its first one opened the
/// connection (during a key rotation). When full, the memory is cleared: forgetting costs one
/// extra handshake per endpoint.
pub const REMEMBERED_KEY_CHOICES: usize = 4096;

// ---- the web dashboard (`troupe serve --http`) --------------------------------------------

/// Requests the dashboard's HTTP server handles at once, live event streams not counted (they
/// have [`DASHBOARD_EVENT_STREAMS`]). An action holds a task and, while its nodes answer, a
/// connection per node; one more request is answered 503 at once.
pub const DASHBOARD_REQUESTS_IN_FLIGHT: usize = 64;

/// Live event streams (Server-Sent Events: one per open page) the dashboard serves at once.
/// Each holds a task and subscriptions to membership and watcher events; one more gets 503
/// and a message saying so. A handful of people watching an experiment need a few each.
pub const DASHBOARD_EVENT_STREAMS: usize = 32;

/// The largest request body the dashboard reads (an action is a few hundred bytes); a larger
/// one is refused with 413 before it is read.
pub const DASHBOARD_BODY_BYTES: usize = 16 * 1024;

/// Events the dashboard keeps for a page that opens (the last ones, newest last), and the
/// most one stream may fall behind before it is told it missed some.
pub const DASHBOARD_RECENT_EVENTS: usize = 200;

/// Pids per node whose `kill` the dashboard remembers, to tell a requested stop from a crash
/// when their `reap` comes; past it the oldest is forgotten (its reap may then read as a crash).
pub const DASHBOARD_KILLED_PIDS_PER_NODE: usize = 1024;

/// (node, watcher) pairs whose crashes and respawns `troupe serve` counts for `/metrics`. A
/// node names its own watchers in its events, so a hostile member could otherwise add series
/// without end (and a Prometheus server would keep each); past the bound, events of a new
/// pair are counted under `watcher="_other"` of their node.
pub const SERVE_METRICS_WATCHER_COUNTERS: usize = 4096;

// ---- watcher output (`logs`, `log_files`, `log_file`) --------------------------------------

/// The longest piece of one output line the agent keeps as one record (ring, file, event); a
/// longer line is cut into pieces of this size, each but the last marked `cut`, so a process
/// that never prints a newline cannot make the agent buffer without end.
pub const LOG_LINE_BYTES: usize = 16 * 1024;

/// The most bytes of output lines one watcher's in-memory ring may be configured to hold
/// (`log_ring_bytes`); its default is [`crate::config::DEFAULT_LOG_RING_BYTES`].
pub const MAX_LOG_RING_BYTES: u64 = 64 * 1024 * 1024;

/// The most lines one `logs` request may ask for (`lines`).
pub const LOGS_MAX_LINES: u64 = 100_000;

/// Bytes of line text one `logs` reply carries at most: below the default message size
/// ([`crate::config::DEFAULT_MAX_MESSAGE_SIZE`], 1 MiB) with room for JSON escaping of the
/// worst text. A reply that stops at it says so (`more`), and the client asks again from its
/// `offset`.
pub const LOGS_REPLY_BYTES: usize = 256 * 1024;

/// Bytes of a file one `log_file` request may read (`length`), sent base64 (a third more).
pub const LOG_FILE_CHUNK_BYTES: u64 = 256 * 1024;

/// Log lines queued for the events socket while someone follows `log.`; past it lines are
/// dropped from the socket (never from the ring), and a follower sees the gap in `seq`.
pub const LOG_PUBLISH_QUEUE: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound out of range is refused naming the range, and sets nothing.
    #[test]
    fn max_members_out_of_range_is_refused_and_the_default_stays() {
        for bound in [0, MAX_MEMBERS_SETTING + 1] {
            let refused = set_max_members(bound).unwrap_err();
            assert_eq!(
                refused,
                format!("max_members must be between 1 and {MAX_MEMBERS_SETTING}, got {bound}")
            );
        }
        assert_eq!(max_members(), MAX_MEMBERS);
        assert_eq!(serve_files_for(1000), 9024);
    }
}
