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
