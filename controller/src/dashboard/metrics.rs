//! `GET /metrics`: the cluster for a Prometheus server, read from serve's actors at each
//! scrape (membership's view and heartbeat round trips, the stats actor's snapshot, the
//! activity actor's counters); nothing is kept here between scrapes.
//!
//! prometheus-client writes the text exposition format (0.0.4): HELP and TYPE lines, the
//! `_total` suffix of counters, and the escaping of label values (`\`, `"`, newline), which
//! matters here as node and watcher names come from the network. Names follow Prometheus's
//! conventions: the `troupe_` prefix, base units in the name (`_seconds`, `_bytes`,
//! `_ratio`). Series are bounded by what the actors keep: members by
//! [`troupe::bounds::MAX_MEMBERS`], processes by `SERVE_STATS_SERIES_PER_NODE`, crash and
//! respawn counters by `SERVE_METRICS_WATCHER_COUNTERS`.

use super::App;
use crate::activity::Counters;
use crate::membership::round_trips::RoundTrips;
use crate::membership::{Member, MemberState};
use crate::stats::snapshot::Figures;
use crate::stats::Snapshot;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// What one scrape reads from the actors.
pub struct Scrape {
    pub members: Vec<Member>,
    /// None when the stats actor has stopped.
    pub stats: Option<Snapshot>,
    pub counters: Counters,
    pub round_trips: RoundTrips,
}

pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let context = &app.context;
    let Some(counters) = context.activity.counters().await else {
        return super::api::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the activity actor has stopped: restart troupe serve",
        );
    };
    let scrape = Scrape {
        members: context.membership.members(),
        stats: context.stats.snapshot().await,
        counters,
        round_trips: context.membership.round_trips(),
    };
    match render(&scrape) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(_) => super::api::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be written out: see troupe serve's log",
        ),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatcherLabels {
    node: String,
    watcher: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    node: String,
    watcher: String,
    pid: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The exposition text of one scrape.
pub fn render(scrape: &Scrape) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();

    let members = Family::<StateLabels, Gauge>::default();
    for state in [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Down,
        MemberState::Left,
        MemberState::Locked,
    ] {
        let count = scrape.members.iter().filter(|m| m.state == state).count();
        members
            .get_or_create(&StateLabels {
                state: state.as_str(),
            })
            .set(count as i64);
    }
    registry.register(
        "troupe_members",
        "Nodes troupe serve knows, by membership state",
        members,
    );

    let processes = Family::<WatcherLabels, Gauge>::default();
    let live = scrape
        .members
        .iter()
        .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect));
    for member in live {
        for (watcher, summary) in member.info.iter().flat_map(|info| &info.watchers) {
            let labels = WatcherLabels {
                node: member.name.clone(),
                watcher: watcher.clone(),
            };
            processes
                .get_or_create(&labels)
                .set(summary.numprocesses as i64);
        }
    }
    registry.register(
        "troupe_watcher_processes",
        "Processes of a watcher on an alive or suspect node, as the node reports them \
         (sum by (node) for a node's)",
        processes,
    );

    let cpu = Family::<ProcessLabels, FloatGauge>::default();
    let rss = Family::<ProcessLabels, FloatGauge>::default();
    let fresh = scrape
        .stats
        .iter()
        .flat_map(|s| &s.nodes)
        .filter(|(_, node)| !node.stale);
    for (node, snapshot) in fresh {
        for (watcher, w) in &snapshot.watchers {
            for (pid, info) in &w.processes {
                let labels = ProcessLabels {
                    node: node.clone(),
                    watcher: watcher.clone(),
                    pid: pid.clone(),
                };
                let figures = Figures::of(info);
                if let Some(percent) = figures.cpu {
                    cpu.get_or_create(&labels).set(percent / 100.0);
                }
                if let Some(bytes) = figures.rss {
                    rss.get_or_create(&labels).set(bytes as f64);
                }
            }
        }
    }
    registry.register(
        "troupe_process_cpu_usage_ratio",
        "CPU used by a process over the node's last stats interval, in CPUs (1 = one core \
         busy)",
        cpu,
    );
    registry.register(
        "troupe_process_resident_memory_bytes",
        "Resident memory of a process",
        rss,
    );

    let crashes = Family::<WatcherLabels, Counter>::default();
    let respawns = Family::<WatcherLabels, Counter>::default();
    for ((node, watcher), counts) in &scrape.counters.watchers {
        let labels = WatcherLabels {
            node: node.clone(),
            watcher: watcher.clone(),
        };
        crashes.get_or_create(&labels).inc_by(counts.crashes);
        respawns.get_or_create(&labels).inc_by(counts.respawns);
    }
    registry.register(
        "troupe_watcher_crashes",
        "Processes that died without being asked to since troupe serve started",
        crashes,
    );
    registry.register(
        "troupe_watcher_respawns",
        "Processes started again after a crash since troupe serve started",
        respawns,
    );

    let pushes = Counter::<u64>::default();
    pushes.inc_by(scrape.counters.configure_pushes);
    registry.register(
        "troupe_configure_pushes",
        "Peer lists pushed with configure (auto-configure, the dashboard's reconfigure)",
        pushes,
    );
    let failures = Counter::<u64>::default();
    failures.inc_by(scrape.counters.configure_failures);
    registry.register(
        "troupe_configure_failures",
        "Configure pushes that failed on at least one node",
        failures,
    );

    registry.register(
        "troupe_heartbeat_round_trip_seconds",
        "Time from a heartbeat's nodeinfo request to its answer",
        HeartbeatHistogram(scrape.round_trips.clone()),
    );

    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// membership's [`RoundTrips`], encoded as a histogram.
#[derive(Debug)]
struct HeartbeatHistogram(RoundTrips);

impl EncodeMetric for HeartbeatHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(
            self.0.sum_seconds,
            self.0.count,
            &self.0.buckets(),
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::WatcherCounts;
    use crate::membership::{MemberTable, NodeFacts};
    use crate::stats::snapshot::{NodeSnapshot, WatcherSnapshot};

    /// A watcher name a hostile node may send: quotes, a backslash and a newline that, left
    /// unescaped, would close the label value and start a sample of its own.
    const HOSTILE: &str = "w\"} 1\ntroupe_members{state=\"alive\"} 99\\";

    /// One alive node `n1` with the watcher [`HOSTILE`] (2 processes, one sampled), 4
    /// crashes of it, 3 configure pushes (1 failed) and heartbeats of 2, 2, 40 and 2000 ms.
    fn populated() -> Scrape {
        let mut table = MemberTable::new("lab");
        let watcher = troupe::protocol::WatcherSummary {
            status: "active".into(),
            numprocesses: 2,
            stopped_reason: None,
        };
        let info = troupe::protocol::NodeInfo {
            id: "id-1".into(),
            name: "n1".into(),
            cluster: "lab".into(),
            version: "0".into(),
            hostname: "h".into(),
            addresses: Vec::new(),
            endpoints: troupe::protocol::Endpoints {
                control: "tcp://127.0.0.1:5555".into(),
                pubsub: "tcp://127.0.0.1:5556".into(),
                stats: "tcp://127.0.0.1:5557".into(),
            },
            started: 0.0,
            watchers: [(HOSTILE.to_string(), watcher)].into(),
            fingerprint: None,
        };
        let now = tokio::time::Instant::now();
        let facts = NodeFacts::Troupe(Box::new(info));
        table.answered("tcp://127.0.0.1:5555", None, facts, now);
        let process = serde_json::json!({"cpu": 50.0, "mem_info1": "2.00M"});
        let watcher = WatcherSnapshot {
            total: Default::default(),
            processes: [("41".to_string(), process)].into(),
        };
        let node = NodeSnapshot {
            watchers: [(HOSTILE.to_string(), watcher)].into(),
            ..NodeSnapshot::default()
        };
        let mut scrape = Scrape {
            members: table.members().cloned().collect(),
            stats: Some(Snapshot {
                time: 0.0,
                nodes: [("n1".to_string(), node)].into(),
            }),
            counters: Counters::default(),
            round_trips: RoundTrips::default(),
        };
        scrape.counters.watchers.insert(
            ("n1".into(), HOSTILE.into()),
            WatcherCounts {
                crashes: 4,
                respawns: 0,
            },
        );
        scrape.counters.configure_pushes = 3;
        scrape.counters.configure_failures = 1;
        for ms in [2, 2, 40, 2000] {
            scrape
                .round_trips
                .observe(std::time::Duration::from_millis(ms));
        }
        scrape
    }

    /// The sample lines of `text` (no comments).
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn every_metric_has_help_and_type_and_follows_the_naming_conventions() {
        let text = render(&populated()).unwrap();
        let types: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        let expected = [
            ("troupe_members", "gauge"),
            ("troupe_watcher_processes", "gauge"),
            ("troupe_process_cpu_usage_ratio", "gauge"),
            ("troupe_process_resident_memory_bytes", "gauge"),
            ("troupe_watcher_crashes_total", "counter"),
            ("troupe_watcher_respawns_total", "counter"),
            ("troupe_configure_pushes_total", "counter"),
            ("troupe_configure_failures_total", "counter"),
            ("troupe_heartbeat_round_trip_seconds", "histogram"),
        ];
        assert_eq!(types, expected, "{text}");
        for (name, _) in expected {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
        }
        let lines = samples(&text);
        for line in &lines {
            assert!(line.starts_with("troupe_"), "{line}");
        }
        assert!(lines.contains(&"troupe_configure_pushes_total 3"), "{text}");
        assert!(
            lines.contains(&"troupe_configure_failures_total 1"),
            "{text}"
        );
        assert!(
            lines.contains(&"troupe_members{state=\"alive\"} 1"),
            "{text}"
        );
        assert!(
            lines.contains(&"troupe_members{state=\"down\"} 0"),
            "{text}"
        );
        // Base units: a CPU ratio (Circus's 50 %), bytes (psutil's "2.00M").
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("troupe_process_cpu_usage_ratio{")
                    && l.contains(",pid=\"41\"}")
                    && l.ends_with(" 0.5")),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("troupe_process_resident_memory_bytes{")
                    && l.ends_with(" 2097152.0")),
            "{text}"
        );
        // Buckets are cumulative: each counts the round trips at or below its bound.
        let buckets: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("troupe_heartbeat_round_trip_seconds_bucket"))
            .collect();
        assert_eq!(
            buckets,
            [
                "{le=\"0.0005\"} 0",
                "{le=\"0.001\"} 0",
                "{le=\"0.0025\"} 2",
                "{le=\"0.005\"} 2",
                "{le=\"0.01\"} 2",
                "{le=\"0.025\"} 2",
                "{le=\"0.05\"} 3",
                "{le=\"0.1\"} 3",
                "{le=\"0.25\"} 3",
                "{le=\"0.5\"} 3",
                "{le=\"1\"} 3",
                "{le=\"+Inf\"} 4",
            ],
            "{text}"
        );
        assert!(
            lines.contains(&"troupe_heartbeat_round_trip_seconds_count 4"),
            "{text}"
        );
    }

    #[test]
    fn names_from_the_network_are_escaped_in_label_values() {
        let text = render(&populated()).unwrap();
        let escaped = r#"w\"} 1\ntroupe_members{state=\"alive\"} 99\\"#;
        let lines = samples(&text);
        for expected in [
            format!("troupe_watcher_processes{{node=\"n1\",watcher=\"{escaped}\"}} 2"),
            format!("troupe_watcher_crashes_total{{node=\"n1\",watcher=\"{escaped}\"}} 4"),
            format!(
                "troupe_process_resident_memory_bytes{{node=\"n1\",watcher=\"{escaped}\",pid=\"41\"}} 2097152.0"
            ),
        ] {
            assert!(lines.contains(&expected.as_str()), "{expected}\n{text}");
        }
        // No sample was injected: troupe_members has its five states, nothing more.
        let members = lines
            .iter()
            .filter(|l| l.starts_with("troupe_members"))
            .count();
        assert_eq!(members, 5, "{text}");
    }
}
