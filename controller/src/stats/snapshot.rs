//! What a snapshot of the cluster's stats looks like: the reply of `stats_snapshot`, the
//! output of `troupe stats --json`, and what `troupe top` draws.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The whole cluster at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Epoch seconds when it was taken.
    pub time: f64,
    pub nodes: BTreeMap<String, NodeSnapshot>,
}

/// One node: its totals, its watchers, and whether its figures are current.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// No sample for more than 3 intervals: the figures are the last ones received.
    pub stale: bool,
    /// Epoch seconds of the last sample (None: nothing received yet).
    pub last_sample: Option<f64>,
    /// The node's stats interval in seconds, as learned from the stream.
    pub interval: f64,
    /// Why the node gave no figures (one-shot `troupe stats` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// All its processes: see [`Totals`].
    pub total: Totals,
    pub watchers: BTreeMap<String, WatcherSnapshot>,
}

/// One watcher: totals over its processes and each process's latest info.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatcherSnapshot {
    pub total: Totals,
    /// Circus process info objects (cpu, mem, mem_info1, age, cmdline, ...) keyed by pid.
    pub processes: BTreeMap<String, Value>,
}

/// Totals over a set of processes. Unlike Circus's per-watcher aggregate (cpu averaged), CPU
/// is summed: a node or watcher running four busy processes shows 400%, which is what an
/// operator looking for load needs. Memory is summed (percent of the machine and RSS bytes);
/// age is the oldest process's. Figures a node reported as "N/A" count as absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub pid: Vec<u32>,
    pub cpu: f64,
    pub mem: f64,
    pub age: f64,
    /// Resident memory in bytes (from each process's `mem_info1`).
    pub rss: u64,
}

/// The numbers of one process info object; None where the node said "N/A" or nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub cpu: Option<f64>,
    pub mem: Option<f64>,
    pub age: Option<f64>,
    pub rss: Option<u64>,
}

impl Figures {
    pub fn of(info: &Value) -> Figures {
        Figures {
            cpu: info["cpu"].as_f64(),
            mem: info["mem"].as_f64(),
            age: info["age"].as_f64(),
            rss: info["mem_info1"].as_str().and_then(parse_mem),
        }
    }
}

impl Totals {
    /// Sums `figures` of the processes `pids`.
    pub fn over<'a>(pids: Vec<u32>, figures: impl IntoIterator<Item = &'a Figures>) -> Totals {
        let mut totals = Totals {
            pid: pids,
            ..Totals::default()
        };
        for f in figures {
            totals.cpu += f.cpu.unwrap_or(0.0);
            totals.mem += f.mem.unwrap_or(0.0);
            totals.age = totals.age.max(f.age.unwrap_or(0.0));
            totals.rss += f.rss.unwrap_or(0);
        }
        totals.cpu = (totals.cpu * 100.0).round() / 100.0;
        totals.mem = troupe::protocol::round_mem_percent(totals.mem);
        totals
    }

    /// Adds up other totals (a node's from its watchers').
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Totals>) -> Totals {
        let mut totals = Totals::default();
        for part in parts {
            totals.pid.extend(&part.pid);
            totals.cpu += part.cpu;
            totals.mem += part.mem;
            totals.age = totals.age.max(part.age);
            totals.rss += part.rss;
        }
        totals.pid.sort_unstable();
        totals.cpu = (totals.cpu * 100.0).round() / 100.0;
        totals.mem = troupe::protocol::round_mem_percent(totals.mem);
        totals
    }
}

/// psutil's human sizes back to bytes: "512B", "1.46M", "2.00G" (approximate, as printed).
pub fn parse_mem(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let number: f64 = number.parse().ok()?;
    let power = match unit {
        "B" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        "P" => 5,
        _ => return None,
    };
    Some((number * 1024f64.powi(power)).round() as u64)
}

/// A selection by name: comma-separated names or globs (`web-*`); empty selects everything.
#[derive(Debug, Clone, Default)]
pub struct NameFilter(Vec<glob::Pattern>);

impl NameFilter {
    pub fn parse(selection: Option<&str>) -> Result<NameFilter, String> {
        let Some(text) = selection else {
            return Ok(NameFilter::default());
        };
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| glob::Pattern::new(p).map_err(|e| format!("bad pattern {p:?}: {e}")))
            .collect::<Result<_, _>>()
            .map(NameFilter)
    }

    pub fn matches(&self, name: &str) -> bool {
        let options = glob::MatchOptions {
            case_sensitive: false,
            ..Default::default()
        };
        self.0.is_empty() || self.0.iter().any(|p| p.matches_with(name, options))
    }
}

impl Snapshot {
    /// Only the nodes and watchers selected. With a watcher selection a node's totals are
    /// those of its selected watchers (a `*` row of every process next to the rows of a few
    /// read as theirs); without one they stay the node's own.
    pub fn filtered(mut self, nodes: &NameFilter, watchers: &NameFilter) -> Snapshot {
        self.nodes.retain(|name, _| nodes.matches(name));
        for node in self.nodes.values_mut() {
            node.watchers.retain(|name, _| watchers.matches(name));
            if !watchers.0.is_empty() {
                node.total = Totals::sum(node.watchers.values().map(|w| &w.total));
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn human_sizes_read_back_as_bytes() {
        assert_eq!(parse_mem("512B"), Some(512));
        assert_eq!(parse_mem("1.00K"), Some(1024));
        assert_eq!(parse_mem("1.46M"), Some(1_530_921));
        assert_eq!(parse_mem("2.00G"), Some(2 << 30));
        assert_eq!(parse_mem("N/A"), None);
        assert_eq!(parse_mem("12"), None);
    }

    #[test]
    fn totals_sum_cpu_and_memory_and_keep_the_oldest_age() {
        let a = Figures::of(&json!({"cpu": 99.5, "mem": 0.25, "age": 10.0, "mem_info1": "1.00M"}));
        let b = Figures::of(&json!({"cpu": "N/A", "mem": 0.5, "age": 30.0, "mem_info1": "N/A"}));
        let totals = Totals::over(vec![1, 2], [&a, &b]);
        assert_eq!(
            totals,
            Totals {
                pid: vec![1, 2],
                cpu: 99.5,
                mem: 0.75,
                age: 30.0,
                rss: 1 << 20
            }
        );
        let node = Totals::sum([&totals, &Totals::over(vec![0], [&a])]);
        assert_eq!(node.pid, [0, 1, 2]);
        assert_eq!(node.cpu, 199.0);
        assert_eq!(node.age, 30.0);
    }

    #[test]
    fn a_watcher_selection_totals_the_node_over_the_selected_watchers_only() {
        let watcher = |pid: u32, cpu: f64| WatcherSnapshot {
            total: Totals::over(vec![pid], [&Figures::of(&json!({"cpu": cpu, "mem": 1.0}))]),
            processes: BTreeMap::new(),
        };
        let node = NodeSnapshot {
            total: Totals::over(vec![1, 2, 3], [&Figures::of(&json!({"cpu": 60.0}))]),
            watchers: [
                ("web".into(), watcher(1, 10.0)),
                ("db".into(), watcher(2, 40.0)),
            ]
            .into(),
            ..NodeSnapshot::default()
        };
        let snapshot = Snapshot {
            time: 0.0,
            nodes: [("a".to_string(), node)].into(),
        };
        let all = NameFilter::default();
        let whole = snapshot.clone().filtered(&all, &all);
        assert_eq!(
            whole.nodes["a"].total.cpu, 60.0,
            "no selection: the node's own"
        );
        let web = snapshot.filtered(&all, &NameFilter::parse(Some("web")).unwrap());
        assert_eq!(web.nodes["a"].total.cpu, 10.0);
        assert_eq!(web.nodes["a"].total.pid, [1]);
    }

    #[test]
    fn name_filters_take_names_and_globs() {
        let filter = NameFilter::parse(Some("web-*, db-1")).unwrap();
        assert!(filter.matches("web-2") && filter.matches("DB-1"));
        assert!(!filter.matches("db-2"));
        assert!(NameFilter::parse(None).unwrap().matches("anything"));
        assert!(NameFilter::parse(Some("[")).is_err());
    }
}
