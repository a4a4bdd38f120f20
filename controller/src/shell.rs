//! `troupe shell`: the seed's console. An interactive prompt with history and completion
//! (commands, watcher names, node names after `--node`) that accepts the same commands as
//! the CLI, plus `nodes`, `cluster RANGE [COUNT]`, `help`, and `exit` or `quit` to leave.
//!
//! `quit` alone leaves the shell, as in every shell: it is never Circus's `quit` broadcast
//! to the cluster (that stopped every agent once, without a question). Stopping agents is
//! `quit --node SEL`, with the CLI's rules ([`crate::command::dispatch`]).

use crate::circus_args::{build_request, COMMANDS};
use crate::command::{dispatch, BroadcastFlags, ClusterLink};
use crate::settings::NodeFlags;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Context, Editor, Helper, Highlighter, Hinter, Validator};
use std::process::ExitCode;

const SHELL_COMMANDS: [&str; 4] = ["nodes", "cluster", "help", "exit"];

/// Whether a line leaves the shell: `exit`, or `quit` with nothing after it.
fn leaves(command: &str, rest: &[String]) -> bool {
    command == "exit" || (command == "quit" && rest.is_empty())
}

/// Completion candidates, refreshed after every command.
#[derive(Default, Helper, Hinter, Highlighter, Validator)]
struct Names {
    watchers: Vec<String>,
    nodes: Vec<String>,
}

impl Completer for Names {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let previous = before[..start].split_whitespace().last();
        let pool: Vec<&str> = if start == 0 {
            COMMANDS
                .iter()
                .chain(SHELL_COMMANDS.iter())
                .copied()
                .collect()
        } else if previous == Some("--node") {
            self.nodes.iter().map(String::as_str).collect()
        } else {
            self.watchers.iter().map(String::as_str).collect()
        };
        let candidates = pool
            .into_iter()
            .filter(|c| c.starts_with(word))
            .map(|c| Pair {
                display: c.to_string(),
                replacement: c.to_string(),
            })
            .collect();
        Ok((start, candidates))
    }
}

/// Runs the shell until `exit` or end of input. Reads piped input too (one command a line).
pub fn run(flags: NodeFlags) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    let link = runtime.block_on(ClusterLink::connect(&flags))?;
    let mut editor: Editor<Names, DefaultHistory> = Editor::new()?;
    editor.set_helper(Some(Names::default()));
    let history = flags
        .settings()
        .map(|s| s.config.state_dir.join("shell_history"))
        .ok();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    runtime.block_on(refresh_names(&link, &mut editor));
    match &link {
        ClusterLink::Controller(endpoint) => {
            println!("troupe shell: using the controller at {endpoint}")
        }
        ClusterLink::Local { .. } | ClusterLink::Kept { .. } => {
            println!("troupe shell: discovering on the spot")
        }
    }
    println!("Type `help` for commands, `exit`, `quit` or Ctrl-D to leave.");
    let mut last = 0u8;
    loop {
        let line = match editor.readline("troupe> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        let words = match shell_words::split(line) {
            Ok(words) => words,
            Err(e) => {
                eprintln!("error: {e}");
                continue;
            }
        };
        // A line of only a comment (`# x`) splits into no words.
        let Some((command, rest)) = words.split_first() else {
            continue;
        };
        if leaves(command, rest) {
            break;
        }
        last = match command.as_str() {
            "help" => {
                println!("{}", help());
                crate::exit::Exit::Ok.code()
            }
            "nodes" => {
                let nodes = runtime.block_on(link.nodes());
                println!("{}", crate::nodes::table(&nodes));
                crate::exit::Exit::Ok.code()
            }
            "cluster" => cluster(&runtime, &link, &flags, rest),
            _ => runtime.block_on(broadcast(&link, command, rest)),
        };
        runtime.block_on(refresh_names(&link, &mut editor));
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    Ok(ExitCode::from(last))
}

async fn broadcast(link: &ClusterLink, command: &str, rest: &[String]) -> u8 {
    let (flags, words) = match BroadcastFlags::parse_words(rest) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}");
            return crate::command::EXIT_USAGE;
        }
    };
    let request = match build_request(command, &words) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::command::EXIT_USAGE;
        }
    };
    let options = flags.options();
    match dispatch(link, &request, &options).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            crate::exit::Exit::of_error(&e).code()
        }
    }
}

/// `cluster RANGE [COUNT]`: remember the range and probe it now, then say how many nodes are
/// alive.
fn cluster(
    runtime: &tokio::runtime::Runtime,
    link: &ClusterLink,
    flags: &NodeFlags,
    rest: &[String],
) -> u8 {
    let (Some(range), count) = (rest.first(), rest.get(1)) else {
        eprintln!("usage: cluster RANGE [COUNT]   e.g. cluster 192.168.0.0/24 32");
        return crate::command::EXIT_USAGE;
    };
    let result = (|| -> anyhow::Result<()> {
        let targets = troupe::discovery::parse_targets(range)?;
        targets.check_size(flags.force)?;
        let expect = count.map(|c| c.parse::<usize>()).transpose()?;
        let settings = flags.settings()?;
        crate::state::ControllerState {
            probe: vec![range.clone()],
            expect,
        }
        .save(&settings.config.state_dir)?;
        match link {
            ClusterLink::Local { discovery, .. } => {
                let mut operator = settings.probe.clone();
                operator.append(targets);
                let ranges = crate::discovery::Ranges {
                    operator,
                    requested: Default::default(),
                };
                runtime.block_on(discovery.sweep_ranges(ranges));
            }
            ClusterLink::Controller(endpoint) => {
                let mut props = serde_json::Map::new();
                props.insert("range".into(), serde_json::json!(range));
                let zmq = zmq::Context::new();
                let request = troupe::protocol::Request::new("cluster", props);
                let reply = runtime.block_on(troupe::client::call_async(
                    &zmq,
                    endpoint,
                    request,
                    crate::command::CLUSTER_SWEEP_TIMEOUT,
                ))?;
                if reply["status"] != "ok" {
                    anyhow::bail!(
                        "the controller did not sweep it: {}",
                        reply["reason"].as_str().unwrap_or("no reason given")
                    );
                }
            }
            // serve's own link (its dashboard) sweeps through serve: never the shell's.
            ClusterLink::Kept { .. } => anyhow::bail!("the shell has no serve link"),
        }
        let alive = runtime
            .block_on(link.nodes())
            .iter()
            .filter(|n| n["state"] == "alive")
            .count();
        println!(
            "probed {range}: {alive} nodes alive{}",
            expect
                .map(|n| format!(", expecting {n}"))
                .unwrap_or_default()
        );
        Ok(())
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            crate::exit::Exit::of_error(&e).code()
        }
    }
}

/// Node names from membership, watcher names from a quick `list` (for completion).
async fn refresh_names(link: &ClusterLink, editor: &mut Editor<Names, DefaultHistory>) {
    let nodes: Vec<String> = link
        .nodes()
        .await
        .iter()
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .collect();
    let options = crate::command::BroadcastOptions {
        timeout: std::time::Duration::from_millis(500),
        ..Default::default()
    };
    let list = troupe::protocol::Request::new("list", Default::default());
    let mut watchers: Vec<String> = match link.send(&list, &options).await {
        Ok(replies) => replies
            .values()
            .flat_map(|r| r["watchers"].as_array().cloned().unwrap_or_default())
            .filter_map(|w| w.as_str().map(str::to_string))
            .collect(),
        Err(_) => Vec::new(),
    };
    watchers.sort();
    watchers.dedup();
    if let Some(names) = editor.helper_mut() {
        names.nodes = nodes;
        names.watchers = watchers;
    }
}

fn help() -> String {
    format!(
        "Commands (sent to every alive node, or `--node a,b` / `--node 'web-*'`; `--json`, `--timeout 5s`):\n  {}\n\
         Shell commands:\n  nodes                 list the members\n  cluster RANGE [COUNT] probe RANGE (e.g. 192.168.0.0/24 32)\n  \
         help\n  exit, quit            leave the shell (the agents keep running)\n\
         Stopping agents: quit --node NAME[,NAME] (--node '*' for all; asks first, --yes skips)",
        COMMANDS.join(" ")
    )
}
