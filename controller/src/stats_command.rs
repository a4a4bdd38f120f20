//! `troupe stats [WATCHER] [--since 5m] [--node ..] [--json]`: one snapshot of the cluster's
//! figures (from a running `troupe serve`, else by asking every node for Circus `stats`), or
//! the history `troupe serve` keeps.

use crate::broadcast::reply_ok;
use crate::cluster_link::ClusterLink;
use crate::command::BroadcastFlags;
use crate::exit_code::{EXIT_NODE_FAILED, EXIT_NOTHING_MATCHED};
use crate::exit_code::{EXIT_OK, EXIT_USAGE};
use crate::render::table;
use crate::stats::history::Series;
use crate::stats::model::ClusterStats;
use crate::stats::payload::Payload;
use crate::stats::snapshot::{NameFilter, NodeSnapshot, Snapshot, Totals};
use crate::stats::topic::Topic;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;
use troupe::protocol::{now_epoch, Request};

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Only this watcher (a name or a glob).
    pub watcher: Option<String>,
    /// Only this process of WATCHER.
    #[arg(requires = "watcher")]
    pub pid: Option<u32>,
    /// The history of the last DURATION instead (e.g. 5m; at most 10m), kept by `troupe serve`.
    #[arg(long, value_parser = crate::settings::parse_duration, value_name = "DURATION")]
    pub since: Option<Duration>,
    #[command(flatten)]
    pub broadcast: BroadcastFlags,
}

pub async fn run(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let options = args.broadcast.options();
    let flags = &args.broadcast.flags;
    let (nodes, watchers) = match (
        NameFilter::parse(options.node.as_deref()),
        NameFilter::parse(args.watcher.as_deref()),
    ) {
        (Ok(nodes), Ok(watchers)) => (nodes, watchers),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("troupe stats: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let endpoint = flags.controller_endpoint();
    let serving = crate::cluster_link::controller_answers(&endpoint).await;
    let mut properties = Map::new();
    properties.insert("node".into(), json!(options.node));
    properties.insert("watcher".into(), json!(args.watcher));
    let margin = options.timeout + Duration::from_secs(2);
    if let Some(since) = args.since {
        if !serving {
            eprintln!(
                "troupe stats: --since needs the history a running `troupe serve` keeps, and \
                 none answers at {endpoint} (start one, or point --controller at it)"
            );
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        properties.insert("since_seconds".into(), json!(since.as_secs_f64()));
        let reply = ask(&endpoint, "stats_history", properties, margin).await?;
        let mut series: Vec<Series> = serde_json::from_value(reply["series"].clone())?;
        if let Some(pid) = args.pid {
            series.retain(|s| s.pid == Some(pid));
        }
        if options.json {
            let out = json!({"since": reply["since"], "series": series});
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            println!("{}", history_table(&series));
        }
        return Ok(ExitCode::from(if series.is_empty() {
            EXIT_NOTHING_MATCHED
        } else {
            EXIT_OK
        }));
    }
    let snapshot = if serving {
        let reply = ask(&endpoint, "stats_snapshot", properties, margin).await?;
        serde_json::from_value(reply["snapshot"].clone())?
    } else {
        match ClusterLink::connect(flags).await? {
            ClusterLink::Controller(endpoint) => {
                let reply = ask(&endpoint, "stats_snapshot", properties, margin).await?;
                serde_json::from_value(reply["snapshot"].clone())?
            }
            link => {
                let request = Request::new("stats", Map::new());
                let replies = link
                    .send(&request, options.node.as_deref(), options.timeout)
                    .await?;
                from_replies(&replies, tokio::time::Instant::now(), now_epoch())
            }
        }
    };
    let mut snapshot = snapshot.filtered(&nodes, &watchers);
    if let Some(pid) = args.pid {
        only_process(&mut snapshot, pid);
    }
    // A node that gave no figures (an error, or samples that stopped: its row keeps the last
    // ones and says since when) did not answer: exit 1, unless --alive-only skips it.
    let unanswered = |n: &NodeSnapshot| n.error.is_some() || n.stale;
    if options.alive_only {
        let skipped: Vec<String> = snapshot
            .nodes
            .iter()
            .filter(|(_, n)| unanswered(n))
            .map(|(name, _)| name.clone())
            .collect();
        if !skipped.is_empty() {
            snapshot.nodes.retain(|_, n| !unanswered(n));
            eprintln!(
                "troupe stats: --alive-only: skipped {} that did not answer: {}",
                skipped.len(),
                skipped.join(", ")
            );
        }
    }
    if snapshot.nodes.is_empty() {
        eprintln!("troupe stats: no node matched");
        return Ok(ExitCode::from(EXIT_NOTHING_MATCHED));
    }
    if options.json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        println!("{}", snapshot_table(&snapshot));
    }
    let failed = snapshot.nodes.values().any(unanswered);
    Ok(ExitCode::from(if failed {
        EXIT_NODE_FAILED
    } else {
        EXIT_OK
    }))
}

/// Keeps only process `pid` (and the watchers and nodes that have it).
fn only_process(snapshot: &mut Snapshot, pid: u32) {
    let pid = pid.to_string();
    for node in snapshot.nodes.values_mut() {
        for watcher in node.watchers.values_mut() {
            watcher.processes.retain(|p, _| *p == pid);
        }
        node.watchers.retain(|_, w| !w.processes.is_empty());
    }
    snapshot.nodes.retain(|_, n| !n.watchers.is_empty());
}

/// One request to the controller; its error replies become errors.
async fn ask(
    endpoint: &str,
    command: &str,
    properties: Map<String, Value>,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let zmq = zmq::Context::new();
    let request = Request::new(command, properties);
    let reply = troupe::client::call_async(&zmq, endpoint, request, timeout).await?;
    if !reply_ok(&reply) {
        anyhow::bail!(
            "the controller at {endpoint} refused {command}: {}",
            reply["reason"].as_str().unwrap_or("error")
        );
    }
    Ok(reply)
}

/// A snapshot from the nodes' replies to Circus `stats` (`infos`: watcher -> pid -> info).
/// Nodes that failed carry their reason in `error`.
pub fn from_replies(
    replies: &BTreeMap<String, Value>,
    now: tokio::time::Instant,
    now_epoch: f64,
) -> Snapshot {
    let mut stats = ClusterStats::default();
    let mut errors = BTreeMap::new();
    for (node, reply) in replies {
        if !reply_ok(reply) {
            let reason = reply["reason"].as_str().unwrap_or("error").to_string();
            errors.insert(node.clone(), reason);
            continue;
        }
        stats.add_node(node, now);
        for (watcher, per_pid) in reply["infos"].as_object().into_iter().flatten() {
            let watcher = watcher.to_lowercase();
            let mut pids = Vec::new();
            for (pid, info) in per_pid.as_object().into_iter().flatten() {
                // A process that exited while sampled is a string ("No such process").
                let Ok(pid) = pid.parse::<u32>() else {
                    continue;
                };
                let Some(payload) = Payload::of_value(info) else {
                    continue;
                };
                let topic = Topic {
                    watcher: watcher.clone(),
                    pid: Some(pid),
                };
                stats.ingest(node, &topic, payload, now);
                pids.push(pid);
            }
            let topic = Topic { watcher, pid: None };
            let aggregate = Payload::of_value(&json!({ "pid": pids }));
            stats.ingest(node, &topic, aggregate.expect("an object"), now);
        }
    }
    let mut snapshot = stats.snapshot(now, now_epoch);
    for (node, error) in errors {
        snapshot.nodes.insert(
            node,
            NodeSnapshot {
                error: Some(error),
                ..NodeSnapshot::default()
            },
        );
    }
    snapshot
}

/// A row per node (its totals, WATCHER `*`, and whether it is live or stale), then a row per
/// process.
pub fn snapshot_table(snapshot: &Snapshot) -> String {
    let header = [
        "NODE", "WATCHER", "PID", "CPU%", "MEM%", "RSS", "AGE", "STATE",
    ];
    let mut rows = Vec::new();
    for (name, node) in &snapshot.nodes {
        let state = match (&node.error, node.stale) {
            (Some(error), _) => format!("error: {error}"),
            (None, true) => match node.last_sample {
                Some(at) => format!("stale {:.0}s", (snapshot.time - at).max(0.0)),
                None => "no data".into(),
            },
            (None, false) => "live".into(),
        };
        let procs = format!("({})", node.total.pid.len());
        rows.push(totals_row(name, "*", &procs, &node.total, state));
        for (watcher, w) in &node.watchers {
            for (pid, info) in &w.processes {
                let one = Totals::over(vec![], [&crate::stats::snapshot::Figures::of(info)]);
                rows.push(totals_row(name, watcher, pid, &one, String::new()));
            }
        }
    }
    table(&header, &rows)
}

fn totals_row(node: &str, watcher: &str, pid: &str, t: &Totals, state: String) -> Vec<String> {
    vec![
        node.to_string(),
        watcher.to_string(),
        pid.to_string(),
        format!("{:.1}", t.cpu),
        format!("{:.2}", t.mem),
        troupe::protocol::format_mem(t.rss),
        format!("{:.0}s", t.age),
        state,
    ]
}

/// A row per series: how many points, and CPU/MEM average and peak over them.
fn history_table(series: &[Series]) -> String {
    let header = [
        "NODE", "WATCHER", "PID", "POINTS", "CPU% avg", "max", "MEM% avg", "max",
    ];
    let rows: Vec<Vec<String>> = series
        .iter()
        .map(|s| {
            let stat = |pick: fn(&crate::stats::history::HistoryPoint) -> Option<f64>| {
                let values: Vec<f64> = s.points.iter().filter_map(pick).collect();
                let avg = values.iter().sum::<f64>() / values.len().max(1) as f64;
                let max = values.iter().copied().fold(0.0, f64::max);
                (format!("{avg:.1}"), format!("{max:.1}"))
            };
            let (cpu_avg, cpu_max) = stat(|p| p.cpu);
            let (mem_avg, mem_max) = stat(|p| p.mem);
            vec![
                s.node.clone(),
                s.watcher.clone().unwrap_or_else(|| "*".into()),
                s.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                s.points.len().to_string(),
                cpu_avg,
                cpu_max,
                mem_avg,
                mem_max,
            ]
        })
        .collect();
    table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_shot_replies_make_the_same_snapshot_shape() {
        let mut replies = BTreeMap::new();
        replies.insert(
            "a".to_string(),
            json!({"status": "ok", "infos": {"Web": {
                "10": {"pid": 10, "cpu": 90.0, "mem": 1.0, "age": 5.0, "mem_info1": "2.00M"},
                "11": "No such process",
            }}}),
        );
        replies.insert(
            "b".to_string(),
            json!({"status": "error", "reason": "no reply within 5s"}),
        );
        let snapshot = from_replies(&replies, tokio::time::Instant::now(), 100.0);
        let a = &snapshot.nodes["a"];
        assert_eq!(a.total.pid, [10]);
        assert_eq!(a.total.cpu, 90.0);
        assert_eq!(a.watchers["web"].processes["10"]["cpu"], 90.0);
        assert_eq!(
            snapshot.nodes["b"].error.as_deref(),
            Some("no reply within 5s")
        );
        let text = snapshot_table(&snapshot);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            ["NODE", "WATCHER", "PID", "CPU%", "MEM%", "RSS", "AGE", "STATE"]
        );
        assert_eq!(
            lines[1],
            ["a", "*", "(1)", "90.0", "1.00", "2.00M", "5s", "live"]
        );
        assert_eq!(lines[2], ["a", "web", "10", "90.0", "1.00", "2.00M", "5s"]);
        assert_eq!(lines[3][..3], ["b", "*", "(0)"]);
        assert!(text.contains("error: no reply within 5s"), "{text}");
    }
}
