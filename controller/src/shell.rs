//! `troupe shell`: the seed's console. An interactive prompt with history and completion
//! (commands, watcher names, node names after `--node`). Each line is parsed with the CLI's
//! own command table ([`crate::cli::Cli`]) and runs on the shell's one link to the cluster:
//! every Circus command, `nodes`, `cluster`, `configure`, `reset`, `reconfigure`, `stats`
//! and `logs`. The commands that cannot run inside it (`top`, a full-screen view; `serve`
//! and `demo`, which run until stopped; the setup commands) say so. `help` lists them,
//! `exit` or `quit` leaves.
//!
//! `quit` alone leaves the shell, as in every shell: it is never Circus's `quit` broadcast
//! to the cluster (that stopped every agent once, without a question). Stopping agents is
//! `quit --node SEL`, with the CLI's rules ([`crate::command::dispatch`]).

use crate::circus_args::build_request;
use crate::cli::{Cli, Command};
use crate::cluster_link::ClusterLink;
use crate::command::{dispatch, BroadcastFlags};
use crate::exit_code::{Exit, EXIT_NODE_FAILED, EXIT_OK, EXIT_USAGE};
use crate::settings::NodeFlags;
use clap::{CommandFactory, Parser};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Context, Editor, Helper, Highlighter, Hinter, Validator};
use std::process::ExitCode;
use troupe::protocol::NODE_COMMANDS;

/// What the shell adds to the CLI's commands.
const SHELL_COMMANDS: [&str; 2] = ["help", "exit"];

/// The CLI's commands that run in the shell, besides the Circus ones.
const CLUSTER_COMMANDS: [&str; 7] = [
    "nodes",
    "cluster",
    "configure",
    "reset",
    "reconfigure",
    "stats",
    "logs",
];

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
            NODE_COMMANDS
                .iter()
                .chain(CLUSTER_COMMANDS.iter())
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

/// `troupe shell`: [`run`], its error printed and its exit as [`Exit::of_error`] says.
pub fn main(flags: NodeFlags) -> ExitCode {
    match run(flags) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("troupe shell: {}", troupe::logging::error_chain(e.as_ref()));
            Exit::of_error(&e).into()
        }
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
        last = if command == "help" {
            println!("{}", help());
            EXIT_OK
        } else {
            let words = std::iter::once("troupe").chain(words.iter().map(String::as_str));
            match Cli::try_parse_from(words) {
                Ok(cli) => runtime.block_on(run_line(&link, &flags, cli.command)),
                Err(e) => {
                    let _ = e.print();
                    // 0 for --help, 2 for a usage error.
                    e.exit_code().clamp(0, 2) as u8
                }
            }
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

/// Runs one parsed line on the shell's `link`; `session` are the shell's own flags, which a
/// command's flags refine. The exit code the CLI would give.
async fn run_line(link: &ClusterLink, session: &NodeFlags, command: Command) -> u8 {
    let result = match command {
        Command::Circus(words) => match words.split_first() {
            Some((command, rest)) => return broadcast(link, command, rest).await,
            None => return EXIT_USAGE,
        },
        Command::Nodes {
            forget: Some(name),
            flags,
            ..
        } => return exit_code(crate::nodes::forget(&flags.within(session), &name)),
        Command::Nodes { json, .. } => crate::nodes::print(link, json).await.map(|()| EXIT_OK),
        Command::Cluster {
            range,
            count,
            flags,
        } => crate::cluster::run(&range, count, &flags.within(session), Some(link))
            .await
            .map(|()| EXIT_OK),
        Command::Configure {
            restart,
            dry_run,
            broadcast,
        } => match cluster_of(session) {
            Ok(cluster) => {
                let options = broadcast.options();
                crate::reconfigure::configure_on(link, &cluster, &options, restart, dry_run).await
            }
            Err(e) => Err(e),
        },
        Command::Reset { watcher, broadcast } => {
            crate::command::reset(link, watcher, &broadcast.options()).await
        }
        Command::Reconfigure { reset, broadcast } => match cluster_of(session) {
            Ok(cluster) => {
                let options = broadcast.options();
                crate::reconfigure::reconfigure_on(link, &cluster, &options, reset).await
            }
            Err(e) => Err(e),
        },
        Command::Stats(mut args) => {
            args.broadcast.flags = args.broadcast.flags.within(session);
            crate::stats_command::run(args).await.map(exit_code)
        }
        Command::Logs(mut args) => {
            args.flags = args.flags.within(session);
            crate::logs::run(args).await.map(exit_code)
        }
        other => {
            eprintln!("{}", outside(&other));
            return EXIT_USAGE;
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        Exit::of_error(&e).code()
    })
}

/// Why a command does not run in the shell, and where it does.
fn outside(command: &Command) -> String {
    let (name, why) = match command {
        Command::Top { .. } => ("top", "a full-screen view"),
        Command::Serve(_) => ("serve", "the controller, which runs until stopped"),
        Command::Demo { .. } => ("demo", "a local mesh, which runs until stopped"),
        Command::Shell { .. } => ("shell", "this console"),
        Command::Keygen { .. } => ("keygen", "a setup command"),
        Command::Import { .. } => ("import", "a setup command"),
        Command::Ctl { .. } => ("ctl", "one raw request to one endpoint"),
        Command::DashboardUrl { .. } => ("dashboard-url", "a setup command"),
        Command::Completions { .. } | Command::CompleteNames { .. } | Command::Man { .. } => {
            ("completions", "a setup command")
        }
        _ => ("this command", "not a cluster command"),
    };
    format!(
        "error: `{name}` is {why} and does not run inside the shell: run `troupe {name}` from \
         your system shell (leave this one with `exit`)"
    )
}

/// The cluster the session works on (its troupe.toml, env and flags).
fn cluster_of(session: &NodeFlags) -> anyhow::Result<String> {
    Ok(session.settings()?.config.cluster)
}

/// An [`ExitCode`] as the shell's `u8`: ExitCode hides its number, so it is compared with
/// the documented ones.
fn exit_code(code: ExitCode) -> u8 {
    [
        EXIT_OK,
        EXIT_NODE_FAILED,
        EXIT_USAGE,
        crate::exit_code::EXIT_NOTHING_MATCHED,
    ]
    .into_iter()
    .find(|c| ExitCode::from(*c) == code)
    .unwrap_or(EXIT_NODE_FAILED)
}

async fn broadcast(link: &ClusterLink, command: &str, rest: &[String]) -> u8 {
    let (flags, words) = match BroadcastFlags::parse_words(rest) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    let request = match build_request(command, &words) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let options = flags.options();
    match dispatch(link, &request, &options).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::of_error(&e).code()
        }
    }
}

/// How long the `list` behind watcher-name completion may take.
const NAMES_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Node names from membership, watcher names from a quick `list` (for completion).
async fn refresh_names(link: &ClusterLink, editor: &mut Editor<Names, DefaultHistory>) {
    let nodes: Vec<String> = link
        .nodes()
        .await
        .iter()
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .collect();
    let list = troupe::protocol::Request::new("list", Default::default());
    let mut watchers: Vec<String> = match link.send(&list, None, NAMES_TIMEOUT).await {
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

/// The commands the shell runs: the Circus ones, the CLI's cluster commands (each with its
/// first line of help, from the same table), and its own.
fn help() -> String {
    let cli = Cli::command();
    let cluster_commands: Vec<String> = CLUSTER_COMMANDS
        .iter()
        .map(|name| {
            let about = cli
                .find_subcommand(name)
                .and_then(|c| c.get_about())
                .map(|about| about.to_string())
                .unwrap_or_default();
            let first = about
                .split(". ")
                .next()
                .unwrap_or_default()
                .trim_end_matches('.');
            format!("  {name:<12} {first}")
        })
        .collect();
    format!(
        "Circus commands (sent to every alive node, or `--node a,b` / `--node 'web-*'`; \
         `--json`, `--timeout 5s`):\n  {}\n\
         Cluster commands (as on the command line; `COMMAND --help` for their flags):\n{}\n\
         Shell commands:\n  help\n  exit, quit   leave the shell (the agents keep running)\n\
         Not in the shell: top, serve, demo and the setup commands (keygen, import, ctl, \
         completions, dashboard-url): run them from your system shell.\n\
         Stopping agents: quit --node NAME[,NAME] (--node '*' for all; asks first, --yes skips)",
        NODE_COMMANDS.join(" "),
        cluster_commands.join("\n")
    )
}
