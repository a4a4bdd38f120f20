//! `troupe logs`: a watcher's output from every selected node, merged by time; `-f` follows it
//! ([`follow`]); `--collect DIR` copies everything the nodes keep into a directory
//! ([`collect`]).
//!
//! Everything goes through the agents' own `logs`, `log_files` and `log_file` commands (the
//! shapes in [`troupe::protocol`]), sent through a [`LogCluster`]: the CLI's [`ClusterLink`]
//! (so a running `troupe serve` forwards them and its selection rules apply), or whatever else
//! knows the members and can reach them (serve's dashboard).

pub mod collect;
pub mod follow;

use crate::broadcast::BroadcastOptions;
use crate::cluster_link::ClusterLink;
use crate::exit_code::{EXIT_NODE_FAILED, EXIT_NOTHING_MATCHED};
use crate::settings::{parse_duration, NodeFlags};
use crate::terminal::printable;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use troupe::protocol::{
    now_epoch, LogLine, LogsReply, LogsRequest, Request, StreamSelection, LOGS_COMMAND,
};

/// Read a watcher's output on every node (or --node ...).
///
/// `troupe logs web`: the last 100 lines of `web` on every node, merged by time, each
/// prefixed `node web[pid]`. `troupe logs web -f`: then follow, across restarts and nodes
/// leaving and coming back, until Ctrl-C. `troupe logs --collect DIR [WATCHER...]`: copy every
/// node's output (ring and files, rotated ones too) to DIR/<node>/<watcher>.<stream>.log with
/// a manifest; run it again to resume or refresh.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// WATCHER [PID]; with --collect, the watchers to collect (default: all).
    #[arg(value_name = "WATCHER")]
    pub args: Vec<String>,
    /// Follow: print new lines as they come, until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Lines per node to show first.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub lines: u64,
    /// Only lines this recent, e.g. 5m, 1h.
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// stdout, stderr or both.
    #[arg(long, default_value = "both", value_parser = StreamSelection::parse)]
    pub stream: StreamSelection,
    /// One JSON object per line: node, watcher, time, pid, stream, line, seq.
    #[arg(long)]
    pub json: bool,
    /// Copy everything the nodes keep for these watchers into DIR.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["follow", "since"])]
    pub collect: Option<PathBuf>,
    /// Nodes: names or globs, comma-separated (default: all alive nodes).
    #[arg(long)]
    pub node: Option<String>,
    /// Per-node timeout of each request.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub flags: NodeFlags,
}

/// What tail, follow and collect need of the cluster.
pub trait LogCluster {
    /// The members, as [`crate::membership::member_json`] shows them (`name`, `state`,
    /// `endpoints.pubsub`, ...).
    fn members(&self) -> impl Future<Output = Vec<Value>>;
    /// Sends `request` to the members `options.node` selects; replies keyed by node name.
    fn send(
        &self,
        request: &Request,
        options: &BroadcastOptions,
    ) -> impl Future<Output = anyhow::Result<BTreeMap<String, Value>>>;
}

impl LogCluster for ClusterLink {
    fn members(&self) -> impl Future<Output = Vec<Value>> {
        self.nodes()
    }

    fn send(
        &self,
        request: &Request,
        options: &BroadcastOptions,
    ) -> impl Future<Output = anyhow::Result<BTreeMap<String, Value>>> {
        ClusterLink::send(self, request, options.node.as_deref(), options.timeout)
    }
}

/// One line and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLine {
    pub node: String,
    pub watcher: String,
    pub line: LogLine,
}

pub async fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let options = BroadcastOptions {
        node: args.node.clone(),
        timeout: args.timeout,
        json: args.json,
        ..BroadcastOptions::default()
    };
    if let Some(dir) = &args.collect {
        let link = ClusterLink::connect(&args.flags).await?;
        return collect::run(&link, &options, dir, &args.args).await;
    }
    let (watcher, pid) = match &args.args[..] {
        [watcher] => (watcher.clone(), None),
        [watcher, pid] => match pid.parse::<u32>() {
            Ok(pid) if pid > 0 => (watcher.clone(), Some(pid)),
            _ => {
                eprintln!("troupe logs: PID must be a process id (a positive number), got {pid:?}");
                return Ok(ExitCode::from(crate::exit_code::EXIT_USAGE));
            }
        },
        _ => {
            eprintln!(
                "troupe logs: give one WATCHER (and optionally a PID), e.g. `troupe logs web`, \
                 or --collect DIR [WATCHER...]"
            );
            return Ok(ExitCode::from(crate::exit_code::EXIT_USAGE));
        }
    };
    let request = LogsRequest {
        name: watcher,
        pid,
        stream: args.stream,
        lines: args.lines.min(troupe::bounds::LOGS_MAX_LINES),
        since: args.since.map(|d| now_epoch() - d.as_secs_f64()),
        offset: None,
    };
    let link = ClusterLink::connect(&args.flags).await?;
    let mut printer = Printer::new(args.json);
    let tail = tail(&link, &request, &options).await?;
    if tail.answered.is_empty() && tail.failed.is_empty() {
        eprintln!(
            "troupe logs: no node matched{}",
            options
                .node
                .as_deref()
                .map(|n| format!(" --node {n}"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::from(EXIT_NOTHING_MATCHED));
    }
    for (node, reason) in &tail.failed {
        eprintln!("troupe logs: {}: {}", printable(node), printable(reason));
    }
    if tail.answered.is_empty() {
        eprintln!("troupe logs: no node has lines of it; `troupe list` shows each node's watchers");
    }
    for line in &tail.lines {
        printer.print(line);
    }
    if args.follow {
        let (lines, mut followed) = tokio::sync::mpsc::channel(1024);
        let follow = follow::follow(&link, &options, &request, &tail, lines);
        let print = async {
            while let Some(line) = followed.recv().await {
                printer.print(&line);
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = futures::future::join(follow, print) => {}
        }
        return Ok(ExitCode::SUCCESS);
    }
    Ok(ExitCode::from(if tail.failed.is_empty() {
        0
    } else {
        EXIT_NODE_FAILED
    }))
}

/// What the nodes answered to one `logs` request.
#[derive(Debug, Default)]
pub struct Tail {
    /// Every node's lines, by time (then node, then seq).
    pub lines: Vec<NodeLine>,
    /// Each answering node's `offset`: where its ring goes on.
    pub answered: BTreeMap<String, u64>,
    /// Nodes that failed, and why.
    pub failed: BTreeMap<String, String>,
}

/// Asks the selected nodes for `request`'s lines and merges them by time.
pub async fn tail(
    cluster: &impl LogCluster,
    request: &LogsRequest,
    options: &BroadcastOptions,
) -> anyhow::Result<Tail> {
    let replies = cluster
        .send(
            &Request::new(LOGS_COMMAND, request.to_properties()),
            options,
        )
        .await?;
    Ok(merge(&request.name, replies))
}

/// Sorts every node's reply into a [`Tail`]; a reply that is not a `logs` reply counts as a
/// failure of that node.
pub fn merge(watcher: &str, replies: BTreeMap<String, Value>) -> Tail {
    let mut tail = Tail::default();
    for (node, reply) in replies {
        if reply["status"] != "ok" {
            let reason = reply["reason"].as_str().unwrap_or("no reason given");
            tail.failed.insert(node, reason.to_string());
            continue;
        }
        match serde_json::from_value::<LogsReply>(reply) {
            Ok(reply) => {
                tail.answered.insert(node.clone(), reply.offset);
                tail.lines
                    .extend(reply.lines.into_iter().map(|line| NodeLine {
                        node: node.clone(),
                        watcher: watcher.to_string(),
                        line,
                    }));
            }
            Err(e) => {
                tail.failed.insert(
                    node,
                    format!("answered something that is not a logs reply: {e}"),
                );
            }
        }
    }
    sort_by_time(&mut tail.lines);
    tail
}

/// By time, then node, then position in the node's ring.
pub fn sort_by_time(lines: &mut [NodeLine]) {
    lines.sort_by(|a, b| {
        a.line
            .time
            .total_cmp(&b.line.time)
            .then_with(|| a.node.cmp(&b.node))
            .then_with(|| a.line.seq.cmp(&b.line.seq))
    });
}

/// Writes lines to stdout: `node watcher[pid] text`, the prefix coloured per node on a
/// terminal, or JSON objects one per line.
pub struct Printer {
    json: bool,
    colour: bool,
    colours: BTreeMap<String, usize>,
}

/// ANSI foreground colours a node's prefix cycles through.
const PALETTE: [&str; 6] = ["36", "33", "35", "32", "34", "31"];

impl Printer {
    pub fn new(json: bool) -> Printer {
        Printer {
            json,
            colour: !json && std::io::stdout().is_terminal(),
            colours: BTreeMap::new(),
        }
    }

    pub fn print(&mut self, line: &NodeLine) {
        let text = if self.json {
            json!({
                "node": line.node,
                "watcher": line.watcher,
                "time": line.line.time,
                "pid": line.line.pid,
                "stream": line.line.stream,
                "line": line.line.line,
                "seq": line.line.seq,
                "cut": line.line.cut,
            })
            .to_string()
        } else {
            let prefix = printable(&format!(
                "{} {}[{}]",
                line.node, line.watcher, line.line.pid
            ));
            let prefix = if self.colour {
                let next = self.colours.len();
                let colour = *self.colours.entry(line.node.clone()).or_insert(next);
                format!("\x1b[{}m{prefix}\x1b[0m", PALETTE[colour % PALETTE.len()])
            } else {
                prefix
            };
            format!("{prefix} {}", printable(&line.line.line))
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(lines: &[(f64, u64)], offset: u64) -> Value {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(time, seq)| {
                json!({"time": time, "pid": 7, "stream": "stdout", "line": "x", "seq": seq})
            })
            .collect();
        json!({"status": "ok", "lines": lines, "offset": offset})
    }

    #[test]
    fn merge_orders_every_node_by_time_and_names_failures() {
        let replies = BTreeMap::from([
            ("b".to_string(), reply(&[(1.0, 0), (3.0, 1)], 2)),
            ("a".to_string(), reply(&[(2.0, 5), (3.0, 6)], 7)),
            (
                "c".to_string(),
                json!({"status": "error", "reason": "program w not found"}),
            ),
            (
                "d".to_string(),
                json!({"status": "ok", "lines": "not a list"}),
            ),
        ]);
        let tail = merge("w", replies);
        let order: Vec<(&str, u64)> = tail
            .lines
            .iter()
            .map(|l| (l.node.as_str(), l.line.seq))
            .collect();
        assert_eq!(order, [("b", 0), ("a", 5), ("a", 6), ("b", 1)]);
        assert_eq!(
            tail.answered,
            BTreeMap::from([("a".to_string(), 7), ("b".to_string(), 2)])
        );
        assert_eq!(tail.failed["c"], "program w not found");
        assert!(tail.failed["d"].contains("not a logs reply"));
    }
}
