//! troupe's controller: discovery, membership, and the `troupe` CLI built on them.
//!
//! - [`membership`]: the member table (pure) and the actor that heartbeats members.
//! - [`probe`]: asking an endpoint whether it is a troupe agent or a stock circusd.
//! - [`discovery`]: the sources feeding membership (mDNS, range probing, seeds, Circus UDP).
//! - [`serve`]: the long-running controller, reaching members on kept connections
//!   ([`links`]); [`nodes`]: the one-shot listing.
//! - [`settings`], [`state`]: troupe.toml, env and flags; ranges remembered by `troupe cluster`.
//! - [`import`]: `troupe import`, a Circus ini as a troupe-agent.toml.
//! - [`keygen`]: `troupe keygen`, a new cluster key.
//! - [`stats`]: live stats aggregation (`troupe serve`'s stats socket, `troupe stats`);
//!   [`top`]: the `troupe top` terminal view.
//! - [`command`]: a command to the cluster, guarded by [`confirm`] (and [`reset`]'s check of
//!   clustered services), lengthened by what [`watchers`] say of graceful stops; [`nobody`]:
//!   why a command reached no node; [`absent`]: the known nodes a fan-out did not reach,
//!   remembered without serve by the [`roster`].
//! - [`dashboard`]: `troupe serve --http`, the web dashboard and its JSON API, fed by serve's
//!   actors and [`activity`] (every member's watcher events, named).
//! - [`logs`]: `troupe logs`, a watcher's output from every node: tail, follow, collect.
//! - [`fuzz_targets`]: the bodies of the cargo-fuzz targets of this crate (stats topics),
//!   replayed on their corpora by `cargo test`.
//! - [`docs`]: shell completions and man pages from the clap definitions.
//! - [`exit`]: the exit codes of every command and the shell, one table.

pub mod absent;
pub mod activity;
pub mod broadcast;
pub mod circus_args;
pub mod command;
pub mod configure;
pub mod confirm;
pub mod dashboard;
pub mod demo;
pub mod discovery;
pub mod docs;
pub mod exit;
#[cfg(test)]
mod fake_agent;
pub mod fuzz_targets;
pub mod import;
pub mod keygen;
pub mod links;
pub mod logs;
pub mod membership;
pub mod nobody;
pub mod nodes;
pub mod probe;
pub mod render;
pub mod reset;
pub mod roster;
pub mod serve;
pub mod settings;
pub mod shell;
pub mod state;
pub mod stats;
pub mod top;
pub mod watchers;
