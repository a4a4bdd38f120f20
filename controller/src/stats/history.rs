//! Stats history: a ring buffer of samples per process (and per node total) covering the last
//! [`WINDOW`], for `troupe stats --since` and the dashboard's charts.
//!
//! Memory is bounded four ways: points older than the window are dropped as new ones come;
//! a series never holds more than [`MAX_POINTS`] (the window at 100 ms samples); a series
//! with no point in the window (its process is gone) is removed by [`History::prune`]; and a
//! new series is not started past [`SERVE_STATS_SERIES_PER_NODE`] for its node or
//! [`SERVE_STATS_SERIES`] in all, since nodes choose their pids.

use super::snapshot::{Figures, Totals};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;
use troupe::bounds::{SERVE_STATS_SERIES, SERVE_STATS_SERIES_PER_NODE};

/// How far back the history goes.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Most points one series keeps: the window at the fastest interval we expect (100 ms).
pub const MAX_POINTS: usize = 6000;
const WINDOW_MS: u64 = WINDOW.as_millis() as u64;
/// Points in a full window of 1 Hz samples, the agents' default interval.
const POINTS_AT_1HZ: usize = WINDOW.as_secs() as usize + 1;

/// Which series: a process of a watcher, or (watcher and pid None) a node's total.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesKey {
    pub node: String,
    pub watcher: Option<String>,
    pub pid: Option<u32>,
}

/// One point as kept: 20 bytes, where an `Instant` and four options took 80 (a full window
/// of 1 Hz samples is 12 KiB a series instead of 47: at 1000 members with three series each,
/// 35 MiB instead of 140). The figures are `f32`, NaN for none: their sources print at most
/// four significant digits (cpu, mem, psutil's sizes), and an age is kept within 8 ms at a
/// day, a quarter of a second at a month.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    /// Milliseconds since the history's origin, modulo 2^32 (49.7 days): only read as an age
    /// ([`age_ms`]), and no point is kept past the window.
    at_ms: u32,
    cpu: f32,
    mem: f32,
    age: f32,
    rss: f32,
}

impl Point {
    fn new(at_ms: u32, figures: Figures) -> Point {
        let narrow = |x: Option<f64>| x.map_or(f32::NAN, |x| x as f32);
        Point {
            at_ms,
            cpu: narrow(figures.cpu),
            mem: narrow(figures.mem),
            age: narrow(figures.age),
            rss: narrow(figures.rss.map(|rss| rss as f64)),
        }
    }
}

/// How long before `now_ms` a point was taken, both times modulo 2^32 ms: exact for ages up
/// to 24 days, and the window keeps them within 10 minutes; a point stamped after `now_ms` (a
/// `now` read before it) is of age 0.
fn age_ms(now_ms: u32, at_ms: u32) -> u64 {
    let age = now_ms.wrapping_sub(at_ms);
    if age > u32::MAX / 2 {
        0
    } else {
        u64::from(age)
    }
}

/// A kept figure back as the number it was sent as: the shortest decimal that reads back as
/// this `f32` (12.3, not 12.300000190734863).
fn widen(x: f32) -> Option<f64> {
    (!x.is_nan()).then(|| x.to_string().parse().unwrap_or(f64::from(x)))
}

/// One series as `stats_history` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub node: String,
    /// None for the node's total.
    pub watcher: Option<String>,
    pub pid: Option<u32>,
    pub points: Vec<HistoryPoint>,
}

/// One sample: epoch seconds and the figures (None where the node said "N/A").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub time: f64,
    pub cpu: Option<f64>,
    pub mem: Option<f64>,
    pub rss: Option<u64>,
    pub age: Option<f64>,
}

/// What `stats_history` answers: the series, and per node how many samples were not kept
/// because a bound was met.
#[derive(Debug, Clone, Default)]
pub struct HistoryAnswer {
    pub series: Vec<Series>,
    pub refused: BTreeMap<String, u64>,
}

/// What `stats_history` asks for.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub since: Duration,
    pub nodes: super::snapshot::NameFilter,
    pub watchers: super::snapshot::NameFilter,
    /// Whether a watcher selection was given: node totals then stay out.
    pub watcher_given: bool,
}

#[derive(Debug)]
pub struct History {
    /// What points' times count from: the history's start.
    origin: Instant,
    series: BTreeMap<SeriesKey, VecDeque<Point>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            origin: Instant::now(),
            series: BTreeMap::new(),
        }
    }
}

impl History {
    /// Adds a point; false when it would start a series past a bound (nothing is kept).
    pub fn record(&mut self, key: SeriesKey, figures: Figures, now: Instant) -> bool {
        if !self.series.contains_key(&key) && !self.has_room(&key.node) {
            return false;
        }
        let now_ms = self.ms(now);
        let ring = self.series.entry(key).or_default();
        while ring
            .front()
            .is_some_and(|p| age_ms(now_ms, p.at_ms) > WINDOW_MS)
        {
            ring.pop_front();
        }
        if ring.len() >= MAX_POINTS {
            ring.pop_front();
        }
        if ring.len() == ring.capacity() {
            // A quarter more, not double, and a ring of 1 Hz samples stops at its full window
            // exactly: doubling would leave it 1024 points long, quarters alone 713.
            let grown = ring.len() + (ring.len() / 4).max(8);
            let room = if ring.len() < POINTS_AT_1HZ {
                grown.min(POINTS_AT_1HZ)
            } else {
                grown
            };
            ring.reserve_exact(room - ring.len());
        }
        ring.push_back(Point::new(now_ms, figures));
        true
    }

    /// `at` in milliseconds since the origin, modulo 2^32 (0 for an instant before it).
    fn ms(&self, at: Instant) -> u32 {
        at.saturating_duration_since(self.origin).as_millis() as u32
    }

    /// Whether one more series fits, for `node` and in all.
    fn has_room(&self, node: &str) -> bool {
        let first_of_node = SeriesKey {
            node: node.to_string(),
            watcher: None,
            pid: None,
        };
        let of_node = self
            .series
            .range(first_of_node..)
            .take_while(|(key, _)| key.node == node)
            .count();
        of_node < SERVE_STATS_SERIES_PER_NODE && self.series.len() < SERVE_STATS_SERIES
    }

    /// Records a node's total as a series of its own; false when refused, as [`Self::record`].
    pub fn record_total(&mut self, node: &str, totals: &Totals, now: Instant) -> bool {
        let figures = Figures {
            cpu: Some(totals.cpu),
            mem: Some(totals.mem),
            age: Some(totals.age),
            rss: Some(totals.rss),
        };
        let key = SeriesKey {
            node: node.to_string(),
            watcher: None,
            pid: None,
        };
        self.record(key, figures, now)
    }

    /// Drops every series whose last point left the window (its process or node is gone).
    pub fn prune(&mut self, now: Instant) {
        let now_ms = self.ms(now);
        self.series.retain(|_, ring| {
            ring.back()
                .is_some_and(|p| age_ms(now_ms, p.at_ms) <= WINDOW_MS)
        });
    }

    /// Points newer than `query.since`, times in epoch seconds (`now` is `now_epoch`).
    pub fn query(&self, query: &HistoryQuery, now: Instant, now_epoch: f64) -> Vec<Series> {
        let since_ms = query.since.min(WINDOW).as_millis() as u64;
        let now_ms = self.ms(now);
        self.series
            .iter()
            .filter(|(key, _)| query.nodes.matches(&key.node))
            .filter(|(key, _)| match &key.watcher {
                Some(watcher) => query.watchers.matches(watcher),
                None => !query.watcher_given,
            })
            .filter_map(|(key, ring)| {
                let points: Vec<HistoryPoint> = ring
                    .iter()
                    .filter(|p| age_ms(now_ms, p.at_ms) <= since_ms)
                    .map(|p| HistoryPoint {
                        time: now_epoch - age_ms(now_ms, p.at_ms) as f64 / 1000.0,
                        cpu: widen(p.cpu),
                        mem: widen(p.mem),
                        rss: widen(p.rss).map(|rss| rss as u64),
                        age: widen(p.age),
                    })
                    .collect();
                (!points.is_empty()).then(|| Series {
                    node: key.node.clone(),
                    watcher: key.watcher.clone(),
                    pid: key.pid,
                    points,
                })
            })
            .collect()
    }

    /// How many series and points are held (for tests and logs).
    pub fn size(&self) -> (usize, usize) {
        (
            self.series.len(),
            self.series.values().map(VecDeque::len).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::snapshot::NameFilter;

    fn key(node: &str, watcher: &str, pid: u32) -> SeriesKey {
        SeriesKey {
            node: node.into(),
            watcher: Some(watcher.into()),
            pid: Some(pid),
        }
    }

    fn cpu(value: f64) -> Figures {
        Figures {
            cpu: Some(value),
            ..Figures::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_ring_holds_the_window_and_no_more() {
        let mut history = History::default();
        let start = Instant::now();
        // 15 minutes of 1 s samples: only the last 10 minutes stay.
        for i in 0..900 {
            history.record(
                key("a", "w", 1),
                cpu(i as f64),
                start + Duration::from_secs(i),
            );
        }
        let now = start + Duration::from_secs(899);
        assert_eq!(history.size(), (1, 601));
        let ring = &history.series[&key("a", "w", 1)];
        assert_eq!(ring.capacity(), 601, "a full window's room, no more");
        let query = HistoryQuery {
            since: Duration::from_secs(3600),
            ..HistoryQuery::default()
        };
        let series = history.query(&query, now, 10_000.0);
        assert_eq!(series[0].points.len(), 601);
        assert_eq!(series[0].points[0].cpu, Some(299.0));
        assert_eq!(series[0].points[600].time, 10_000.0);
        assert_eq!(series[0].points[0].time, 9_400.0);
    }

    #[tokio::test(start_paused = true)]
    async fn points_read_back_as_the_figures_sent_and_stay_small() {
        let mut history = History::default();
        let now = Instant::now();
        let sent = Figures {
            cpu: Some(12.3),
            mem: Some(0.07),
            age: Some(86_399.123),
            rss: Some(1_530_920),
        };
        history.record(key("a", "w", 1), sent, now);
        history.record(key("a", "w", 2), Figures::default(), now);
        let all = HistoryQuery {
            since: WINDOW,
            ..HistoryQuery::default()
        };
        let series = history.query(&all, now, 50.0);
        let point = &series[0].points[0];
        assert_eq!(
            (point.cpu, point.mem, point.age, point.rss),
            (Some(12.3), Some(0.07), Some(86_399.125), Some(1_530_920))
        );
        let none = &series[1].points[0];
        assert_eq!(
            (none.cpu, none.mem, none.age, none.rss),
            (None, None, None, None)
        );
        assert_eq!(point.time, 50.0);
        assert_eq!(std::mem::size_of::<Point>(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn points_across_the_49_day_wrap_of_their_times_keep_their_ages() {
        let mut history = History::default();
        let wrap = history.origin + Duration::from_millis(1 << 32);
        // 20 s of 1 Hz samples around the wrap, and one after the window.
        for i in 0..20u64 {
            let at = wrap - Duration::from_secs(10) + Duration::from_secs(i);
            history.record(key("a", "w", 1), cpu(i as f64), at);
        }
        let now = wrap + Duration::from_secs(9);
        let all = HistoryQuery {
            since: WINDOW,
            ..HistoryQuery::default()
        };
        let series = history.query(&all, now, 1000.0);
        let times: Vec<f64> = series[0].points.iter().map(|p| p.time).collect();
        let expected: Vec<f64> = (0..20).map(|i| 981.0 + i as f64).collect();
        assert_eq!(times, expected);
        history.record(
            key("a", "w", 1),
            cpu(0.0),
            now + WINDOW + Duration::from_secs(1),
        );
        assert_eq!(history.size(), (1, 1), "the points past the window dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_stream_is_capped_at_max_points() {
        let mut history = History::default();
        let start = Instant::now();
        for i in 0..(MAX_POINTS as u64 + 500) {
            history.record(
                key("a", "w", 1),
                cpu(1.0),
                start + Duration::from_millis(i * 10),
            );
        }
        assert_eq!(history.size(), (1, MAX_POINTS));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_cannot_start_more_series_than_its_bound_nor_all_nodes_more_than_theirs() {
        let mut history = History::default();
        let now = Instant::now();
        let pids = SERVE_STATS_SERIES_PER_NODE as u32;
        for pid in 0..pids {
            assert!(history.record(key("greedy", "w", pid), cpu(1.0), now));
        }
        assert!(!history.record(key("greedy", "w", pids), cpu(1.0), now));
        assert!(!history.record_total("greedy", &Totals::default(), now));
        assert!(
            history.record(key("greedy", "w", 0), cpu(2.0), now),
            "known series go on"
        );
        assert!(history.record(key("other", "w", 1), cpu(1.0), now));
        assert!(history.record_total("other", &Totals::default(), now));
        assert_eq!(history.size().0, SERVE_STATS_SERIES_PER_NODE + 2);

        let nodes = SERVE_STATS_SERIES / SERVE_STATS_SERIES_PER_NODE;
        for node in 0..nodes {
            for pid in 0..pids {
                history.record(key(&format!("n{node}"), "w", pid), cpu(1.0), now);
            }
        }
        assert_eq!(history.size().0, SERVE_STATS_SERIES);
        assert!(!history.record(key("late", "w", 1), cpu(1.0), now));
    }

    #[tokio::test(start_paused = true)]
    async fn gone_processes_are_dropped_after_the_window() {
        let mut history = History::default();
        let start = Instant::now();
        history.record(key("a", "gone", 1), cpu(1.0), start);
        for s in 0..=601 {
            history.record(
                key("a", "kept", 2),
                cpu(1.0),
                start + Duration::from_secs(s),
            );
        }
        history.prune(start + Duration::from_secs(599));
        assert_eq!(history.size().0, 2, "still inside the window");
        history.prune(start + Duration::from_secs(601));
        assert_eq!(history.size().0, 1);
        let all = HistoryQuery {
            since: WINDOW,
            ..HistoryQuery::default()
        };
        let series = history.query(&all, start + Duration::from_secs(601), 0.0);
        assert_eq!(series[0].watcher.as_deref(), Some("kept"));
    }

    #[tokio::test(start_paused = true)]
    async fn queries_select_by_time_node_and_watcher() {
        let mut history = History::default();
        let start = Instant::now();
        for s in 0..10 {
            let at = start + Duration::from_secs(s);
            history.record(key("a", "web", 1), cpu(1.0), at);
            history.record(key("b", "db", 2), cpu(2.0), at);
            history.record_total("a", &Totals::default(), at);
        }
        let now = start + Duration::from_secs(9);
        let last = |since: u64, nodes: Option<&str>, watchers: Option<&str>| {
            let query = HistoryQuery {
                since: Duration::from_secs(since),
                nodes: NameFilter::parse(nodes).unwrap(),
                watchers: NameFilter::parse(watchers).unwrap(),
                watcher_given: watchers.is_some(),
            };
            history
                .query(&query, now, 100.0)
                .into_iter()
                .map(|s| (s.node, s.watcher, s.points.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            last(3, None, None),
            [
                ("a".to_string(), None, 4),
                ("a".to_string(), Some("web".to_string()), 4),
                ("b".to_string(), Some("db".to_string()), 4),
            ]
        );
        assert_eq!(
            last(60, Some("b"), None),
            [("b".to_string(), Some("db".to_string()), 10)]
        );
        assert_eq!(
            last(60, None, Some("web")),
            [("a".to_string(), Some("web".to_string()), 10)]
        );
    }
}
