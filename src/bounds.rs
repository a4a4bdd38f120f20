//! Every bound on what a peer on the network can make a daemon hold or do: connections,
//! requests in flight, table rows, subscriptions, processes, sweeps, rates. One place, so the
//! README's list and the code cannot drift apart. At a bound the daemon answers that request
//! with an error naming the bound and keeps serving everyone else.

/// Clients (ZeroMQ identities: one per connection) with requests queued or running on one of
/// the agent's control sockets. Each holds a task and a queue of up to [`CLIENT_QUEUE`]
/// requests; an idle client holds nothing. A new client past this gets an error reply; clients
/// already in flight are served. The owner's Unix socket counts its clients separately, so a
/// flood over TCP cannot lock the node's owner out.
pub const CONTROL_CLIENTS: usize = 256;

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

/// Connections one peer address may keep open to the agent's stats or events socket; one more
/// is dropped at once. A controller host running `troupe serve`, a `troupe top` and a few
/// `circus-top`s needs a handful.
pub const MAX_SUBSCRIBERS_PER_PEER: usize = 16;

/// Distinct topic prefixes one peer address may subscribe to on the agent's stats or events
/// socket, counted until its last connection closes; past it, all its connections there are
/// dropped (a SUB reconnects and subscribes again by itself, so a peer within the bound never
/// notices, and one beyond it is dropped each time). Circus's and troupe's clients subscribe to
/// one prefix; a script following a few hundred watchers one by one still fits.
pub const MAX_TOPICS_PER_PEER: usize = 256;
