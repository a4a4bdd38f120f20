//! Live stats of the whole cluster.
//!
//! `troupe serve` subscribes to every member's stats stream (Circus's format, see
//! `CIRCUS.md` section 4) and re-publishes it on its own stats socket with the node prefixed to
//! the watcher (`stat.first:dummy.2992`, `stat.first:dummy`), plus node totals
//! (`stat.first`), so the stock `circus-top` shows the cluster. It keeps the latest snapshot
//! and a 10-minute history, served by the `stats_snapshot` and `stats_history` commands.
//!
//! - [`topic`]: reading and writing stats topics (pure).
//! - [`snapshot`]: the snapshot's shape, totals, name filters (pure).
//! - [`model`]: [`model::ClusterStats`], the aggregation as a state machine (pure).
//! - [`history`]: the per-process ring buffers (pure).
//! - [`payload`]: a stats message's body, read once (pure).
//! - [`actor`]: the one task owning subscriptions, model and PUB socket; [`reader`]: the
//!   per-stream SUB tasks feeding it.
//! - [`control`]: the control commands. `troupe stats` is [`crate::stats_command`] and
//!   `troupe top` [`crate::top`]: the daemon's module uses neither.

pub mod actor;
pub mod control;
pub mod history;
pub mod model;
pub mod payload;
pub mod reader;
pub mod snapshot;
pub mod topic;
pub mod view;

pub use actor::{spawn, Feed, StatsHandle, StatsMsg};
pub use snapshot::Snapshot;
