//! The cluster's stats as a pure state machine: samples and time in, snapshots, node totals
//! and history out. The actor in [`super::actor`] does the sockets; every rule here is tested
//! with paused time.

use super::history::{History, HistoryQuery, Series, SeriesKey};
use super::payload::Payload;
use super::snapshot::{Figures, NodeSnapshot, Snapshot, Totals, WatcherSnapshot};
use super::topic::Topic;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use troupe::bounds::SERVE_STATS_SERIES_PER_NODE;

/// Until two samples of one topic have been seen, a node's interval is taken to be this
/// (the agent's default `stats_interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// A node (or a watcher of a live node) silent for this many intervals is stale.
pub const STALE_AFTER_INTERVALS: u32 = 3;
/// Bounds on a learned interval, so one odd gap cannot make staleness absurd.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// A node nothing was heard from for this long is dropped (membership forgets a down node
/// after the same time).
pub const FORGET_AFTER: Duration = super::history::WINDOW;

#[derive(Debug)]
struct NodeStats {
    /// When the node became known (subscribed or first heard from).
    known_since: Instant,
    last_sample: Option<Instant>,
    interval: Duration,
    /// Whether the interval was learned (else it is [`DEFAULT_INTERVAL`]).
    learned: bool,
    /// New samples since the totals were last published.
    dirty: bool,
    watchers: BTreeMap<String, WatcherStats>,
}

#[derive(Debug, Default)]
struct WatcherStats {
    /// Pids of the last aggregate, and when it came.
    aggregate: Option<(Vec<u32>, Instant)>,
    processes: BTreeMap<u32, ProcessStats>,
}

#[derive(Debug)]
struct ProcessStats {
    /// The info object as sent (see [`Payload`]).
    info: Box<str>,
    figures: Figures,
    at: Instant,
}

/// Every node's latest figures and the history.
#[derive(Debug, Default)]
pub struct ClusterStats {
    nodes: BTreeMap<String, NodeStats>,
    /// None where nothing asks for it (`troupe top`: at 300 nodes of 10 processes, a full
    /// window was most of its memory).
    history: Option<History>,
    /// Per node, the samples not kept because a bound was met (its own processes and
    /// watchers, or history series).
    refused: BTreeMap<String, u64>,
}

impl NodeStats {
    fn new(now: Instant) -> Self {
        NodeStats {
            known_since: now,
            last_sample: None,
            interval: DEFAULT_INTERVAL,
            learned: false,
            dirty: false,
            watchers: BTreeMap::new(),
        }
    }

    /// Watchers and processes held, together held to [`SERVE_STATS_SERIES_PER_NODE`].
    fn entries(&self) -> usize {
        self.watchers.len()
            + self
                .watchers
                .values()
                .map(|w| w.processes.len())
                .sum::<usize>()
    }

    /// How many entries a sample on `topic` would add.
    fn new_entries(&self, topic: &Topic) -> usize {
        match self.watchers.get(&topic.watcher) {
            None => 1 + usize::from(topic.pid.is_some()),
            Some(watcher) => usize::from(
                topic
                    .pid
                    .is_some_and(|pid| !watcher.processes.contains_key(&pid)),
            ),
        }
    }

    fn stale_after(&self) -> Duration {
        self.interval * STALE_AFTER_INTERVALS
    }

    fn is_stale(&self, now: Instant) -> bool {
        let since = self.last_sample.unwrap_or(self.known_since);
        now.duration_since(since) > self.stale_after()
    }

    /// Learns the interval from the gap between two aggregates of one watcher (one per
    /// round). A smoothed value, so one late round does not move it much.
    fn learn_interval(&mut self, gap: Duration) {
        if gap < MIN_INTERVAL / 2 {
            return; // the same round seen twice, not a new one
        }
        let gap = gap.clamp(MIN_INTERVAL, MAX_INTERVAL);
        self.interval = if self.learned {
            (self.interval * 3 + gap) / 4
        } else {
            gap
        };
        self.learned = true;
    }
}

impl WatcherStats {
    /// The processes the watcher has now: those of its last aggregate when it sent one.
    fn totals(&self) -> Totals {
        let mut pids: Vec<u32> = match &self.aggregate {
            Some((pids, _)) => pids.clone(),
            None => self.processes.keys().copied().collect(),
        };
        pids.sort_unstable();
        let figures = pids
            .iter()
            .filter_map(|pid| self.processes.get(pid))
            .map(|p| &p.figures);
        Totals::over(pids.clone(), figures)
    }

    fn last_heard(&self) -> Option<Instant> {
        let aggregate = self.aggregate.as_ref().map(|(_, at)| *at);
        let process = self.processes.values().map(|p| p.at).max();
        aggregate.max(process)
    }
}

impl ClusterStats {
    /// The latest figures and a history of the last [`super::history::WINDOW`] (what
    /// `troupe serve` answers `stats_history` from); `default()` keeps the latest only.
    pub fn keeping_history() -> Self {
        ClusterStats {
            history: Some(History::default()),
            ..ClusterStats::default()
        }
    }

    /// A node to show even before it sends anything (a new subscription).
    pub fn add_node(&mut self, node: &str, now: Instant) {
        self.nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeStats::new(now));
    }

    /// Forgets a node (membership forgot it).
    pub fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
        self.refused.remove(node);
    }

    /// Per node, how many samples were not kept because a bound was met, for the nodes
    /// `nodes` selects.
    pub fn refused(&self, nodes: &super::snapshot::NameFilter) -> BTreeMap<String, u64> {
        self.refused
            .iter()
            .filter(|(node, _)| nodes.matches(node))
            .map(|(node, count)| (node.clone(), *count))
            .collect()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// One message of a node's stream: a process sample or a watcher's aggregate.
    pub fn ingest(&mut self, node: &str, topic: &Topic, payload: Payload, now: Instant) {
        let stats = self
            .nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeStats::new(now));
        stats.last_sample = Some(now);
        let adds = stats.new_entries(topic);
        if adds > 0 && stats.entries() + adds > SERVE_STATS_SERIES_PER_NODE {
            *self.refused.entry(node.to_string()).or_default() += 1;
            return;
        }
        stats.dirty = true;
        let watcher = stats.watchers.entry(topic.watcher.clone()).or_default();
        match topic.pid {
            Some(pid) => {
                let figures = payload.figures;
                watcher.processes.insert(
                    pid,
                    ProcessStats {
                        info: payload.text,
                        figures,
                        at: now,
                    },
                );
                let key = SeriesKey {
                    node: node.to_string(),
                    watcher: Some(topic.watcher.clone()),
                    pid: Some(pid),
                };
                let kept = self
                    .history
                    .as_mut()
                    .is_none_or(|h| h.record(key, figures, now));
                if !kept {
                    *self.refused.entry(node.to_string()).or_default() += 1;
                }
            }
            None => {
                let pids = payload.pids;
                // A round sends its processes, then the aggregate: a pid not in the aggregate
                // has exited.
                watcher.processes.retain(|pid, _| pids.contains(pid));
                let previous = watcher.aggregate.replace((pids, now));
                if let Some((_, before)) = previous {
                    stats.learn_interval(now.duration_since(before));
                }
            }
        }
    }

    /// Totals of a node's every process (the agent's own included: it loads the node too).
    pub fn node_totals(&self, node: &str) -> Option<Totals> {
        let stats = self.nodes.get(node)?;
        let parts: Vec<Totals> = stats.watchers.values().map(WatcherStats::totals).collect();
        Some(Totals::sum(&parts))
    }

    pub fn is_stale(&self, node: &str, now: Instant) -> bool {
        self.nodes.get(node).is_none_or(|n| n.is_stale(now))
    }

    /// Nodes with new samples since the last call that are not stale, with their totals, to
    /// publish as `stat.<node>` and record in the history. A stale node gets no new totals:
    /// re-sending its last ones would present them as current.
    pub fn take_fresh_totals(&mut self, now: Instant) -> Vec<(String, Totals)> {
        let fresh: Vec<String> = self
            .nodes
            .iter_mut()
            .filter(|(_, n)| n.dirty && !n.is_stale(now))
            .map(|(name, n)| {
                n.dirty = false;
                name.clone()
            })
            .collect();
        fresh
            .into_iter()
            .filter_map(|name| {
                let totals = self.node_totals(&name)?;
                let kept = self
                    .history
                    .as_mut()
                    .is_none_or(|h| h.record_total(&name, &totals, now));
                if !kept {
                    *self.refused.entry(name.clone()).or_default() += 1;
                }
                Some((name, totals))
            })
            .collect()
    }

    /// Time-driven clean-up. A live node drops watchers and processes it stopped reporting
    /// (removed watcher, process gone without an aggregate); a stale node keeps its last
    /// values, to be shown as stale; nodes silent for [`FORGET_AFTER`] and history older
    /// than its window go.
    pub fn prune(&mut self, now: Instant) {
        self.nodes.retain(|_, n| {
            let since = n.last_sample.unwrap_or(n.known_since);
            now.duration_since(since) < FORGET_AFTER
        });
        let nodes = &self.nodes;
        self.refused.retain(|node, _| nodes.contains_key(node));
        for node in self.nodes.values_mut() {
            if node.is_stale(now) {
                continue;
            }
            let limit = node.stale_after();
            let recent = |at: Instant| now.duration_since(at) <= limit;
            node.watchers
                .retain(|_, w| w.last_heard().is_some_and(recent));
            for watcher in node.watchers.values_mut() {
                if watcher.aggregate.is_none() {
                    watcher.processes.retain(|_, p| recent(p.at));
                }
            }
        }
        if let Some(history) = &mut self.history {
            history.prune(now);
        }
    }

    /// The cluster now; times in epoch seconds (`now_epoch` is the wall clock at `now`).
    pub fn snapshot(&self, now: Instant, now_epoch: f64) -> Snapshot {
        let epoch = |at: Instant| now_epoch - now.duration_since(at).as_secs_f64();
        let nodes = self
            .nodes
            .iter()
            .map(|(name, n)| {
                let watchers: BTreeMap<String, WatcherSnapshot> = n
                    .watchers
                    .iter()
                    .map(|(w, stats)| {
                        let processes = stats
                            .processes
                            .iter()
                            .map(|(pid, p)| {
                                let info = serde_json::from_str(&p.info).unwrap_or(Value::Null);
                                (pid.to_string(), info)
                            })
                            .collect();
                        let total = stats.totals();
                        (w.clone(), WatcherSnapshot { total, processes })
                    })
                    .collect();
                let total = Totals::sum(watchers.values().map(|w| &w.total));
                let node = NodeSnapshot {
                    stale: n.is_stale(now),
                    last_sample: n.last_sample.map(epoch),
                    interval: n.interval.as_secs_f64(),
                    error: None,
                    total,
                    watchers,
                };
                (name.clone(), node)
            })
            .collect();
        Snapshot {
            time: now_epoch,
            nodes,
        }
    }

    pub fn history(&self, query: &HistoryQuery, now: Instant, now_epoch: f64) -> Vec<Series> {
        self.history
            .as_ref()
            .map_or_else(Vec::new, |h| h.query(query, now, now_epoch))
    }

    pub fn history_size(&self) -> (usize, usize) {
        self.history.as_ref().map_or((0, 0), History::size)
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
