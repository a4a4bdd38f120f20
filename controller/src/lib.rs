//! troupe's controller: discovery, membership, `troupe serve`, and the `troupe` CLI built on
//! them. The modules, from the bottom layer up (none uses one above it: the test in
//! `layering` keeps it so):
//!
//! **Finding and keeping members** (state: one membership actor; serve's kept connections)
//! - [`admission`]: which endpoints that the network names may be adopted.
//! - [`probe`]: asking one endpoint whether it is a troupe agent or a stock circusd.
//! - [`membership`]: the member table (pure) and the actor that owns it and heartbeats members.
//! - [`discovery`]: the sources feeding membership (mDNS, range probing, seeds, Circus UDP).
//! - [`links`]: serve's kept connections to members.
//! - [`broadcast`]: one request to many nodes at once, each with its timeout; [`absent`]:
//!   the known nodes a fan-out did not reach, remembered without serve by the [`roster`].
//! - [`configure`]: the peer list from membership, pushed to every node.
//! - [`settings`], [`state`]: troupe.toml, env and flags; ranges remembered by `troupe cluster`.
//! - [`cluster_link`]: how a command reaches the cluster: a running serve, a discovery of its
//!   own, or serve's own membership and links. [`nobody`]: why a command reached no node.
//! - [`watchers`]: watcher options asked of the nodes before a command (graceful stops).
//! - [`cycle`]: the reconfigure cycle (stop, reset, configure, start), run by the CLI and
//!   the dashboard.
//!
//! **The daemon**
//! - [`serve`]: `troupe serve`, the long-running controller (control, events, stats sockets);
//!   [`dashboard`]: its web dashboard and JSON API, fed by serve's actors and [`activity`]
//!   (every member's watcher events, named); [`stats`]: live stats aggregation (serve's stats
//!   socket). None of them uses a module of the command line (a test in `layering` says so).
//!
//! **The command line** (prints, asks, exits with [`exit_code`])
//! - [`cli`]: every command and its flags, the one table that `main.rs` and [`shell`] parse.
//! - [`command`]: any Circus command (`troupe incr web 2`): its words made a request by
//!   [`circus_args`], guarded by [`confirm`] (and [`reset`]'s check of clustered services),
//!   sent, and its replies printed by [`render`].
//! - [`nodes`], [`cluster`], [`reconfigure`] (`configure` and `reconfigure`), [`stats_command`]
//!   (`troupe stats`),
//!   [`logs`], [`top`] (the terminal view), [`shell`] (the console), [`ctl`] (one raw
//!   request), [`demo`], [`import`] (a Circus ini as a troupe-agent.toml), [`keygen`] (a new
//!   cluster key), [`docs`] (completions and man pages).
//! - [`terminal`]: text from the network made safe for the user's terminal.
//! - [`fuzz_targets`]: the bodies of this crate's cargo-fuzz targets (stats topics), replayed
//!   on their corpora by `cargo test`; `fake_agent`: a scripted agent for unit tests.

pub mod absent;
pub mod activity;
pub mod admission;
pub mod broadcast;
pub mod circus_args;
pub mod cli;
pub mod cluster;
pub mod cluster_link;
pub mod command;
pub mod configure;
pub mod confirm;
pub mod ctl;
pub mod cycle;
pub mod dashboard;
pub mod demo;
pub mod discovery;
pub mod docs;
pub mod exit_code;
#[cfg(test)]
mod fake_agent;
pub mod fuzz_targets;
pub mod import;
pub mod keygen;
#[cfg(test)]
mod layering;
pub mod links;
pub mod logs;
pub mod membership;
pub mod nobody;
pub mod nodes;
pub mod probe;
pub mod reconfigure;
pub mod render;
pub mod reset;
pub mod roster;
pub mod serve;
pub mod settings;
pub mod shell;
pub mod state;
pub mod stats;
pub mod stats_command;
pub mod terminal;
pub mod top;
pub mod watchers;
