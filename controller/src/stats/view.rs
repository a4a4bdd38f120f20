//! What `troupe top` shows, as data: a snapshot turned into sorted, filtered rows (nodes,
//! their watchers, their processes). Pure, so sorting and filtering are unit-tested; the
//! drawing is in [`crate::top`].

use super::snapshot::{Figures, Snapshot, Totals};
use std::cmp::Ordering;

/// What rows are sorted by, biggest first (keys `c`, `m`, `a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Cpu,
    Mem,
    Age,
}

impl SortKey {
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Cpu => "cpu",
            SortKey::Mem => "mem",
            SortKey::Age => "age",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RowKind {
    Node { stale: bool },
    Watcher,
    Process,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub kind: RowKind,
    /// Node name, watcher name, or a process's command.
    pub name: String,
    /// A pid, or "(n)" processes for a node or watcher.
    pub pid: String,
    pub cpu: f64,
    pub mem: f64,
    pub rss: u64,
    pub age: f64,
    /// Nodes only: "live", "stale 12s", "no data".
    pub state: String,
}

/// Rows for `snapshot`: every node (sorted by `sort`), under it its watchers, under each its
/// processes. `filter` (case-insensitive, part of a name) keeps a node whose name matches with
/// all its watchers, else only the watchers whose names match, with their node.
pub fn rows(snapshot: &Snapshot, sort: SortKey, filter: &str) -> Vec<Row> {
    let filter = filter.to_lowercase();
    let matches = |name: &str| filter.is_empty() || name.to_lowercase().contains(&filter);
    let mut nodes: Vec<_> = snapshot.nodes.iter().collect();
    nodes.sort_by(|a, b| by(sort, &a.1.total, &b.1.total).then(a.0.cmp(b.0)));
    let mut out = Vec::new();
    for (name, node) in nodes {
        let node_matches = matches(name);
        let mut watchers: Vec<_> = node
            .watchers
            .iter()
            .filter(|(w, _)| node_matches || matches(w))
            .collect();
        if watchers.is_empty() && !node_matches {
            continue;
        }
        watchers.sort_by(|a, b| by(sort, &a.1.total, &b.1.total).then(a.0.cmp(b.0)));
        let state = if node.stale {
            match node.last_sample {
                Some(at) => format!("stale {:.0}s", (snapshot.time - at).max(0.0)),
                None => "no data".to_string(),
            }
        } else {
            "live".to_string()
        };
        out.push(row(
            RowKind::Node { stale: node.stale },
            name,
            &node.total,
            state,
        ));
        for (watcher, w) in watchers {
            out.push(row(RowKind::Watcher, watcher, &w.total, String::new()));
            let mut processes: Vec<(u32, Totals, String)> = w
                .processes
                .iter()
                .filter_map(|(pid, info)| {
                    let pid: u32 = pid.parse().ok()?;
                    let totals = Totals::over(vec![pid], [&Figures::of(info)]);
                    let command = info["cmdline"].as_str().unwrap_or("").to_string();
                    Some((pid, totals, command))
                })
                .collect();
            processes.sort_by(|a, b| by(sort, &a.1, &b.1).then(a.0.cmp(&b.0)));
            for (pid, totals, command) in processes {
                let mut line = row(RowKind::Process, &command, &totals, String::new());
                line.pid = pid.to_string();
                out.push(line);
            }
        }
    }
    out
}

fn row(kind: RowKind, name: &str, totals: &Totals, state: String) -> Row {
    Row {
        kind,
        name: name.to_string(),
        pid: format!("({})", totals.pid.len()),
        cpu: totals.cpu,
        mem: totals.mem,
        rss: totals.rss,
        age: totals.age,
        state,
    }
}

/// Biggest first.
fn by(sort: SortKey, a: &Totals, b: &Totals) -> Ordering {
    let (x, y) = match sort {
        SortKey::Cpu => (a.cpu, b.cpu),
        SortKey::Mem => (a.mem, b.mem),
        SortKey::Age => (a.age, b.age),
    };
    y.partial_cmp(&x).unwrap_or(Ordering::Equal)
}

/// The header line's figures: nodes, stale nodes, processes, CPU and RSS over the cluster.
pub fn summary(snapshot: &Snapshot) -> (usize, usize, usize, f64, u64) {
    let nodes = snapshot.nodes.values();
    let stale = nodes.clone().filter(|n| n.stale).count();
    let processes = nodes.clone().map(|n| n.total.pid.len()).sum();
    // Folded from +0.0: an empty f64 sum is -0.0, which showed as "CPU -0.0%".
    let cpu = nodes
        .clone()
        .map(|n| n.total.cpu)
        .fold(0.0, |sum, cpu| sum + cpu);
    let rss = nodes.map(|n| n.total.rss).sum();
    (snapshot.nodes.len(), stale, processes, cpu, rss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::model::ClusterStats;
    use crate::stats::payload::Payload;
    use crate::stats::topic::Topic;
    use serde_json::json;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn no_nodes_is_zero_cpu_not_minus_zero() {
        let (nodes, _, _, cpu, _) = summary(&Snapshot::default());
        assert_eq!(nodes, 0);
        assert_eq!(format!("{cpu:.1}"), "0.0");
    }

    fn sample(stats: &mut ClusterStats, node: &str, watcher: &str, procs: &[(u32, f64, f64)]) {
        let now = Instant::now();
        for &(pid, cpu, age) in procs {
            let info = json!({"pid": pid, "cpu": cpu, "mem": cpu / 100.0, "age": age,
                              "mem_info1": "1.00M", "cmdline": format!("cmd{pid}")});
            let topic = Topic {
                watcher: watcher.into(),
                pid: Some(pid),
            };
            stats.ingest(node, &topic, Payload::of_value(&info).unwrap(), now);
        }
        let pids: Vec<u32> = procs.iter().map(|p| p.0).collect();
        let topic = Topic {
            watcher: watcher.into(),
            pid: None,
        };
        stats.ingest(
            node,
            &topic,
            Payload::of_value(&json!({ "pid": pids })).unwrap(),
            now,
        );
    }

    fn cluster() -> ClusterStats {
        let mut stats = ClusterStats::default();
        sample(&mut stats, "alpha", "idle", &[(1, 0.5, 100.0)]);
        sample(
            &mut stats,
            "alpha",
            "busy",
            &[(2, 90.0, 5.0), (3, 40.0, 50.0)],
        );
        sample(&mut stats, "beta", "web", &[(4, 200.0, 1.0)]);
        stats
    }

    fn names(rows: &[Row]) -> Vec<String> {
        rows.iter()
            .map(|r| match r.kind {
                RowKind::Node { .. } => r.name.clone(),
                RowKind::Watcher => format!(" {}", r.name),
                RowKind::Process => format!("  {}", r.pid),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn rows_nest_and_sort_by_cpu_memory_or_age() {
        let snapshot = cluster().snapshot(Instant::now(), 0.0);
        let by_cpu = rows(&snapshot, SortKey::Cpu, "");
        assert_eq!(
            names(&by_cpu),
            ["beta", " web", "  4", "alpha", " busy", "  2", "  3", " idle", "  1"]
        );
        assert_eq!(by_cpu[3].cpu, 130.5);
        assert_eq!(by_cpu[3].pid, "(3)");
        assert_eq!(by_cpu[3].state, "live");
        assert_eq!(by_cpu[2].name, "cmd4");
        let by_age = rows(&snapshot, SortKey::Age, "");
        assert_eq!(
            names(&by_age),
            ["alpha", " idle", "  1", " busy", "  3", "  2", "beta", " web", "  4"]
        );
        let by_mem = rows(&snapshot, SortKey::Mem, "");
        assert_eq!(by_mem[0].name, "beta");
    }

    #[tokio::test(start_paused = true)]
    async fn a_filter_keeps_a_matching_node_whole_or_the_matching_watchers() {
        let snapshot = cluster().snapshot(Instant::now(), 0.0);
        assert_eq!(
            names(&rows(&snapshot, SortKey::Cpu, "BETA")),
            ["beta", " web", "  4"]
        );
        assert_eq!(
            names(&rows(&snapshot, SortKey::Cpu, "idl")),
            ["alpha", " idle", "  1"]
        );
        assert!(rows(&snapshot, SortKey::Cpu, "nothing").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_node_shows_its_last_values_marked_stale() {
        let stats = cluster();
        let later = Instant::now() + Duration::from_secs(10);
        let snapshot = stats.snapshot(later, 1000.0);
        let rows = rows(&snapshot, SortKey::Cpu, "beta");
        assert_eq!(rows[0].kind, RowKind::Node { stale: true });
        assert_eq!(rows[0].state, "stale 10s");
        assert_eq!(rows[0].cpu, 200.0);
        let (nodes, stale, processes, cpu, _) = summary(&snapshot);
        assert_eq!((nodes, stale, processes, cpu), (2, 2, 4, 330.5));
    }
}
