//! troupe-agent: a Circus-compatible process supervisor.
//!
//! Layout, from the socket inward:
//! - [`cli`]: the command line (`troupe-agent`, and `troupe agent`); [`run()`]: starts every
//!   part below and stops them in order.
//! - [`control`]: the ROUTER socket; decodes frames, keeps each client's requests in order.
//! - [`commands`]: one handler per Circus command (and troupe's own), over [`AgentContext`].
//! - [`arbiter`]: the actor that owns the table of watchers.
//! - [`watcher`]: one actor per watcher, owning its processes (spawn, reap, respawn, stop);
//!   [`backoff`]: the pure respawn delay and flapping decision it takes.
//! - [`events`]: the PUB socket for `watcher.<name>.<event>` topics.
//! - [`stats`]: the stats stream (`stat.<watcher>.<pid>`), as circusd-stats publishes it.
//! - [`circus_bind`]: a keyed agent's plaintext sockets for the stock Circus clients.
//! - [`sampler`], [`output`], [`log_ring`]: process statistics, output capture, and the
//!   in-memory ring of output lines that `logs` reads.
//! - [`announce`]: mDNS announcement, Circus UDP discovery answers, registration with a master.
//! - [`configure`], [`reset`]: rendering service configs from the peer list; wiping data dirs.
//! - [`systemd`]: READY/STOPPING/WATCHDOG for a `Type=notify` unit.
//! - [`identity`], [`state_dir`]: the node id, kept in a state dir only the agent's user may write.
//! - [`fuzz_targets`]: what this crate's `cargo fuzz` targets run, replayed by `cargo test`.

pub mod announce;
pub mod arbiter;
pub mod backoff;
pub mod circus_bind;
pub mod cli;
pub mod commands;
pub mod configure;
pub mod control;
pub mod events;
pub mod fuzz_targets;
pub mod identity;
pub mod log_ring;
pub mod output;
pub mod reset;
pub mod sampler;
pub mod state_dir;
pub mod stats;
pub mod systemd;
pub mod watcher;

mod run;

pub use commands::AgentContext;
pub use run::run;
