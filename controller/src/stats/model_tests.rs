//! The aggregation rules, with paused time and no sockets.

use super::*;
use crate::stats::history::HistoryQuery;
use crate::stats::payload::Payload;

fn payload(body: &Value) -> Payload {
    Payload::of_value(body).expect("a JSON object")
}
use crate::stats::snapshot::NameFilter;
use serde_json::json;

fn process(pid: u32, cpu: f64, mem: f64, age: f64) -> Value {
    json!({
        "pid": pid, "cpu": cpu, "mem": mem, "age": age, "mem_info1": "1.00M",
        "mem_info2": "10.00M", "ctime": "0:00.00", "username": "root", "nice": 0,
        "create_time": 0.0, "cmdline": "sh", "subtopic": pid, "name": null,
    })
}

fn topic(watcher: &str, pid: Option<u32>) -> Topic {
    Topic {
        watcher: watcher.into(),
        pid,
    }
}

/// One round of a node's stream, as the agent sends it: each process, then the aggregate.
fn round(stats: &mut ClusterStats, node: &str, watcher: &str, procs: &[(u32, f64)], now: Instant) {
    for &(pid, cpu) in procs {
        let info = process(pid, cpu, 0.5, 10.0 + pid as f64);
        stats.ingest(node, &topic(watcher, Some(pid)), payload(&info), now);
    }
    let pids: Vec<u32> = procs.iter().map(|(pid, _)| *pid).collect();
    let aggregate = json!({"pid": pids, "cpu": 0.0, "mem": 0.0, "age": 0.0});
    stats.ingest(node, &topic(watcher, None), payload(&aggregate), now);
}

#[tokio::test(start_paused = true)]
async fn node_totals_sum_cpu_and_memory_over_every_watcher() {
    let mut stats = ClusterStats::default();
    let now = Instant::now();
    round(&mut stats, "first", "busy", &[(10, 99.0), (11, 50.0)], now);
    round(&mut stats, "first", "idle", &[(20, 0.5)], now);
    round(&mut stats, "first", "circus", &[(5, 1.0)], now);
    let totals = stats.node_totals("first").unwrap();
    assert_eq!(totals.pid, [5, 10, 11, 20]);
    assert_eq!(totals.cpu, 150.5);
    assert_eq!(totals.mem, 2.0);
    assert_eq!(totals.age, 30.0);
    assert_eq!(totals.rss, 4 << 20);
    let snapshot = stats.snapshot(now, 1000.0);
    let node = &snapshot.nodes["first"];
    assert!(!node.stale);
    assert_eq!(node.last_sample, Some(1000.0));
    assert_eq!(node.total, totals);
    assert_eq!(node.watchers["busy"].total.cpu, 149.0);
    assert_eq!(node.watchers["busy"].processes["10"]["cpu"], 99.0);
}

#[tokio::test(start_paused = true)]
async fn a_process_missing_from_the_next_aggregate_is_gone() {
    let mut stats = ClusterStats::default();
    let start = Instant::now();
    round(&mut stats, "n", "w", &[(1, 1.0), (2, 2.0)], start);
    round(
        &mut stats,
        "n",
        "w",
        &[(1, 1.0), (3, 3.0)],
        start + Duration::from_secs(1),
    );
    let snapshot = stats.snapshot(start + Duration::from_secs(1), 0.0);
    let pids: Vec<&String> = snapshot.nodes["n"].watchers["w"].processes.keys().collect();
    assert_eq!(pids, ["1", "3"]);
    assert_eq!(stats.node_totals("n").unwrap().pid, [1, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_turns_stale_after_three_intervals_and_keeps_its_values() {
    let mut stats = ClusterStats::default();
    let start = Instant::now();
    for s in 0..5 {
        round(
            &mut stats,
            "n",
            "w",
            &[(1, 80.0)],
            start + Duration::from_secs(s),
        );
    }
    let last = start + Duration::from_secs(4);
    assert!(!stats.is_stale("n", last + Duration::from_secs(3)));
    let later = last + Duration::from_millis(3100);
    assert!(stats.is_stale("n", later));
    stats.prune(later);
    let snapshot = stats.snapshot(later, 500.0);
    let node = &snapshot.nodes["n"];
    assert!(node.stale);
    assert_eq!(node.total.cpu, 80.0, "last values, not zero");
    assert_eq!(node.watchers["w"].processes.len(), 1);
    assert!((node.last_sample.unwrap() - 496.9).abs() < 1e-6);
    // Samples again: live again.
    round(&mut stats, "n", "w", &[(1, 10.0)], later);
    assert!(!stats.snapshot(later, 0.0).nodes["n"].stale);
}

#[tokio::test(start_paused = true)]
async fn the_interval_is_learned_from_the_stream() {
    let mut stats = ClusterStats::default();
    let start = Instant::now();
    for s in 0..4 {
        round(
            &mut stats,
            "slow",
            "w",
            &[(1, 1.0)],
            start + Duration::from_secs(5 * s),
        );
    }
    let last = start + Duration::from_secs(15);
    assert_eq!(stats.snapshot(last, 0.0).nodes["slow"].interval, 5.0);
    // 10 s of silence is two missed rounds at 5 s, not yet stale; 16 s is.
    assert!(!stats.is_stale("slow", last + Duration::from_secs(10)));
    assert!(stats.is_stale("slow", last + Duration::from_secs(16)));
}

#[tokio::test(start_paused = true)]
async fn a_known_node_without_samples_is_stale_after_three_default_intervals() {
    let mut stats = ClusterStats::default();
    let start = Instant::now();
    stats.add_node("quiet", start);
    assert!(!stats.snapshot(start, 0.0).nodes["quiet"].stale);
    let later = start + Duration::from_secs(4);
    let snapshot = stats.snapshot(later, 0.0);
    assert!(snapshot.nodes["quiet"].stale);
    assert_eq!(snapshot.nodes["quiet"].last_sample, None);
}

#[tokio::test(start_paused = true)]
async fn a_live_node_drops_a_watcher_it_stopped_reporting() {
    let mut stats = ClusterStats::default();
    let start = Instant::now();
    round(&mut stats, "n", "removed", &[(7, 1.0)], start);
    for s in 0..6 {
        round(
            &mut stats,
            "n",
            "kept",
            &[(8, 1.0)],
            start + Duration::from_secs(s),
        );
    }
    stats.prune(start + Duration::from_secs(5));
    let snapshot = stats.snapshot(start + Duration::from_secs(5), 0.0);
    let watchers: Vec<&String> = snapshot.nodes["n"].watchers.keys().collect();
    assert_eq!(watchers, ["kept"]);
}

#[tokio::test(start_paused = true)]
async fn fresh_totals_are_taken_once_per_new_round_and_never_for_stale_nodes() {
    let mut stats = ClusterStats::keeping_history();
    let start = Instant::now();
    round(&mut stats, "a", "w", &[(1, 10.0), (2, 20.0)], start);
    round(&mut stats, "b", "w", &[(3, 5.0)], start);
    let fresh = stats.take_fresh_totals(start);
    assert_eq!(
        fresh
            .iter()
            .map(|(n, t)| (n.as_str(), t.cpu))
            .collect::<Vec<_>>(),
        [("a", 30.0), ("b", 5.0)]
    );
    assert!(stats.take_fresh_totals(start).is_empty(), "nothing new");
    // `b` goes quiet; `a` keeps sending.
    for s in 1..=5 {
        round(
            &mut stats,
            "a",
            "w",
            &[(1, 10.0)],
            start + Duration::from_secs(s),
        );
    }
    let now = start + Duration::from_secs(5);
    let fresh: Vec<String> = stats
        .take_fresh_totals(now)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(fresh, ["a"]);
    // Node totals went into the history, next to the processes.
    let query = HistoryQuery {
        since: Duration::from_secs(60),
        nodes: NameFilter::parse(Some("a")).unwrap(),
        ..HistoryQuery::default()
    };
    let series = stats.history(&query, now, 0.0);
    let total = series.iter().find(|s| s.watcher.is_none()).unwrap();
    assert_eq!(total.points.len(), 2);
    assert_eq!(total.points[1].cpu, Some(10.0));
}

#[tokio::test(start_paused = true)]
async fn nodes_silent_for_the_forget_time_are_dropped_with_their_history() {
    let mut stats = ClusterStats::keeping_history();
    let start = Instant::now();
    round(&mut stats, "gone", "w", &[(1, 1.0)], start);
    stats.prune(start + Duration::from_secs(599));
    assert_eq!(stats.nodes().collect::<Vec<_>>(), ["gone"]);
    assert_eq!(stats.history_size(), (1, 1));
    stats.prune(start + FORGET_AFTER + Duration::from_secs(1));
    assert_eq!(stats.nodes().count(), 0);
    assert_eq!(stats.history_size(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn many_short_lived_processes_do_not_grow_memory_without_bound() {
    let mut stats = ClusterStats::default();
    let start = Instant::now();
    // 20 minutes of a watcher whose process is replaced every second.
    for s in 0..1200u32 {
        let now = start + Duration::from_secs(u64::from(s));
        round(&mut stats, "n", "flappy", &[(1000 + s, 1.0)], now);
        stats.prune(now);
    }
    let snapshot = stats.snapshot(start + Duration::from_secs(1199), 0.0);
    assert_eq!(snapshot.nodes["n"].watchers["flappy"].processes.len(), 1);
    let (series, points) = stats.history_size();
    assert!(series <= 602, "{series} series kept");
    assert!(points <= 602, "{points} points kept");
}

#[tokio::test(start_paused = true)]
async fn a_node_with_too_many_processes_is_held_to_its_bound_and_others_are_not() {
    let mut stats = ClusterStats::default();
    let now = Instant::now();
    let greedy: Vec<(u32, f64)> = (0..SERVE_STATS_SERIES_PER_NODE as u32 + 50)
        .map(|pid| (pid, 1.0))
        .collect();
    round(&mut stats, "greedy", "w", &greedy, now);
    round(&mut stats, "calm", "w", &[(1, 1.0)], now);
    let snapshot = stats.snapshot(now, 0.0);
    let kept = snapshot.nodes["greedy"].watchers["w"].processes.len();
    assert_eq!(
        kept + 1,
        SERVE_STATS_SERIES_PER_NODE,
        "the watcher is an entry too"
    );
    assert_eq!(snapshot.nodes["calm"].watchers["w"].processes.len(), 1);
    let everyone = NameFilter::parse(None).unwrap();
    let refused = stats.refused(&everyone);
    assert_eq!(refused.get("greedy"), Some(&51), "{refused:?}");
    assert_eq!(refused.get("calm"), None);
    // A pid that exits frees its place once an aggregate leaves it out.
    let mut next: Vec<(u32, f64)> = greedy[1..kept].to_vec();
    next.push((100_000, 1.0));
    round(
        &mut stats,
        "greedy",
        "w",
        &next,
        now + Duration::from_secs(1),
    );
    round(
        &mut stats,
        "greedy",
        "w",
        &next,
        now + Duration::from_secs(2),
    );
    let snapshot = stats.snapshot(now + Duration::from_secs(2), 0.0);
    assert!(snapshot.nodes["greedy"].watchers["w"]
        .processes
        .contains_key("100000"));
    stats.forget("greedy");
    assert!(stats.refused(&everyone).is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_history_only_the_latest_figures_are_kept() {
    let mut stats = ClusterStats::default();
    let start = Instant::now();
    for s in 0..3 {
        let at = start + Duration::from_secs(s);
        round(&mut stats, "a", "w", &[(1, 1.0)], at);
        stats.take_fresh_totals(at);
    }
    assert_eq!(stats.history_size(), (0, 0));
    let snapshot = stats.snapshot(start + Duration::from_secs(2), 0.0);
    assert_eq!(snapshot.nodes["a"].total.pid, [1]);
    assert!(stats.refused(&NameFilter::default()).is_empty());
}
