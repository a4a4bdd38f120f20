//! `troupe <command> [args]`: one Circus (or troupe) command to every node, or a selection,
//! through a running `troupe serve` or by discovering on the spot.

use crate::broadcast::{reply_ok, BroadcastOptions, DEFAULT_TIMEOUT};
use crate::circus_args::build_request;
use crate::cluster_link::ClusterLink;
use crate::confirm::{confirm, Question};
use crate::exit_code::{EXIT_NODE_FAILED, EXIT_OK, EXIT_USAGE};
use crate::settings::NodeFlags;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;
use troupe::protocol::Request;

/// The flags a broadcast takes besides the command's own.
#[derive(clap::Parser, Debug)]
#[command(name = "troupe COMMAND")]
pub struct BroadcastFlags {
    /// Nodes to send to: names or globs, comma-separated (default: all alive nodes).
    #[arg(long)]
    pub node: Option<String>,
    /// Per-node timeout (default 5s; a --waiting command waits out the watchers' graceful
    /// stops on top of it).
    #[arg(long, value_parser = crate::settings::parse_duration)]
    pub timeout: Option<Duration>,
    /// One JSON object keyed by node instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Go ahead without asking: commands that stop agents or wipe data on more than one
    /// node ask first on a terminal, and refuse without one.
    #[arg(long)]
    pub yes: bool,
    /// Leave out known nodes that did not answer (down, suspect, locked, no reply), which
    /// are otherwise listed and make the command exit 1.
    #[arg(long)]
    pub alive_only: bool,
    #[command(flatten)]
    pub flags: NodeFlags,
}

/// Splits the words after a broadcast command into troupe's flags and the command's own.
pub fn split_broadcast_args(words: &[String]) -> (Vec<String>, Vec<String>) {
    const WITH_VALUE: [&str; 7] = [
        "--node",
        "--timeout",
        "--probe",
        "--controller",
        "--config",
        "--cluster",
        "--state-dir",
    ];
    // `--help` and `-h` are troupe's too: `troupe status --help` must print help, not run.
    const SWITCHES: [&str; 7] = [
        "--json",
        "--no-mdns",
        "--force",
        "--yes",
        "--alive-only",
        "--help",
        "-h",
    ];
    let mut ours = vec!["troupe".to_string()];
    let mut theirs = Vec::new();
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let flag = word.split('=').next().unwrap_or(word);
        if WITH_VALUE.contains(&flag) {
            ours.push(word.clone());
            if !word.contains('=') {
                if let Some(value) = iter.next() {
                    ours.push(value.clone());
                }
            }
        } else if SWITCHES.contains(&word.as_str()) {
            ours.push(word.clone());
        } else {
            theirs.push(word.clone());
        }
    }
    (ours, theirs)
}

impl BroadcastFlags {
    /// Parses troupe's flags out of the words after a command; returns the command's words.
    pub fn parse_words(words: &[String]) -> Result<(BroadcastFlags, Vec<String>), clap::Error> {
        use clap::Parser;
        let (ours, theirs) = split_broadcast_args(words);
        Ok((BroadcastFlags::try_parse_from(&ours)?, theirs))
    }

    pub fn options(&self) -> BroadcastOptions {
        BroadcastOptions {
            node: self.node.clone(),
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            timeout_given: self.timeout.is_some(),
            json: self.json,
            yes: self.yes,
            alive_only: self.alive_only,
        }
    }
}

/// `troupe COMMAND [ARGS] [FLAGS]`, any Circus command: the words after `troupe` (the
/// command first), split into troupe's flags and the command's own, sent to the nodes.
pub async fn run_words(words: Vec<String>) -> anyhow::Result<ExitCode> {
    let Some((command, rest)) = words.split_first() else {
        return Ok(ExitCode::from(EXIT_USAGE));
    };
    let (parsed, theirs) = match BroadcastFlags::parse_words(rest) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            // 0 for --help, 2 for a usage error.
            return Ok(ExitCode::from(e.exit_code().clamp(0, 2) as u8));
        }
    };
    run(command, &theirs, &parsed.options(), &parsed.flags).await
}

/// Runs `command args` on the selected nodes and prints the result.
pub async fn run(
    command: &str,
    args: &[String],
    options: &BroadcastOptions,
    flags: &NodeFlags,
) -> anyhow::Result<ExitCode> {
    let request = match build_request(command, args) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("troupe: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    if let Some(refusal) = refuse(&request, options) {
        eprintln!("troupe: {refusal}");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let link = ClusterLink::connect(flags).await?;
    Ok(ExitCode::from(dispatch(&link, &request, options).await?))
}

/// `troupe reset WATCHER`: connects and runs [`reset`].
pub async fn run_reset(watcher: String, broadcast: BroadcastFlags) -> anyhow::Result<ExitCode> {
    let link = ClusterLink::connect(&broadcast.flags).await?;
    Ok(ExitCode::from(
        reset(&link, watcher, &broadcast.options()).await?,
    ))
}

/// Resets `watcher` on the selected nodes of `link` (asking first, as [`dispatch`] does); the
/// exit code.
pub async fn reset(
    link: &ClusterLink,
    watcher: String,
    options: &BroadcastOptions,
) -> anyhow::Result<u8> {
    let mut props = Map::new();
    props.insert("name".into(), json!(watcher));
    props.insert("waiting".into(), json!(true));
    dispatch(link, &Request::new("reset", props), options).await
}

/// Prints, after a fan-out's results, how many selected nodes were skipped because they are
/// locked, and why ([`crate::broadcast::locked_line`]).
pub fn report_locked(nodes: &[Value], options: &BroadcastOptions) {
    let ours = troupe::sockets::client_keys().map(|keys| keys.keyring().fingerprint());
    let ours = ours.as_ref().map(|fp| fp.as_str());
    if let Some(line) = crate::broadcast::locked_line(nodes, options.node.as_deref(), ours) {
        eprintln!("troupe: {line}");
    }
}

/// `quit` stops the agents themselves, and every watcher with them: it needs `--node`.
pub const QUIT_NEEDS_NODE: &str = "quit stops the agents themselves (every watcher they run \
     goes down with them) and needs the nodes named: troupe quit --node NAME[,NAME] (or \
     --node '*' for every node, which asks first; --yes for scripts)";

/// Why `request` is refused before anything is sent, if it is.
pub fn refuse(request: &Request, options: &BroadcastOptions) -> Option<&'static str> {
    (request.command == "quit" && options.node.is_none()).then_some(QUIT_NEEDS_NODE)
}

/// What a command that cannot be taken back does to the nodes it reaches, asked about by
/// [`crate::confirm`]: the question for `request` on `targets`, if one is due.
async fn question(link: &ClusterLink, request: &Request, targets: &[String]) -> Option<Question> {
    match request.command.as_str() {
        "quit" => Question::when_needed(
            "stop the agents (and every watcher they run) on",
            targets,
            None,
        ),
        "reset" => {
            let name = request.properties["name"].as_str().unwrap_or("*");
            let warning = crate::reset::partial_member_warning(link, name, targets).await;
            let action = format!("stop '{name}', wipe its data_dir and start it again on");
            Question::when_needed(&action, targets, warning)
        }
        _ => None,
    }
}

/// Sends `request` as [`run`] does, on a link the caller holds (the shell keeps one): asks
/// first when [`question`] says so, lengthens the timeout of a `--waiting` command by the
/// graceful stops it may wait out, prints the replies, and returns the exit code. A command
/// that reaches nobody says why ([`crate::nobody`]) and exits [`EXIT_NOTHING_MATCHED`].
pub async fn dispatch(
    link: &ClusterLink,
    request: &Request,
    options: &BroadcastOptions,
) -> anyhow::Result<u8> {
    if let Some(refusal) = refuse(request, options) {
        eprintln!("troupe: {refusal}");
        return Ok(EXIT_USAGE);
    }
    let mut options = options.clone();
    if matches!(request.command.as_str(), "quit" | "reset") {
        let targets = link.target_names(options.node.as_deref()).await?;
        if targets.is_empty() {
            return Ok(crate::nobody::report(
                &link.nobody(options.node.as_deref()).await,
            ));
        }
        if let Some(question) = question(link, request, &targets).await {
            if let Err(refusal) = confirm(&question, options.yes) {
                eprintln!("troupe: {refusal}");
                return Ok(EXIT_USAGE);
            }
        }
        // Exactly the nodes the question named.
        options.node = Some(targets.join(","));
    }
    // A `--waiting` command may wait out graceful stops: known, they lengthen its timeout
    // (unless `--timeout` says otherwise) and are named if it still runs out.
    let graceful = if request.properties.get("waiting") == Some(&Value::Bool(true)) {
        let pattern = request.properties.get("name").and_then(Value::as_str);
        crate::watchers::graceful_stops(link, options.node.as_deref(), pattern).await
    } else {
        BTreeMap::new()
    };
    if let (false, Some(longest)) = (options.timeout_given, graceful.values().max()) {
        options.timeout += *longest;
    }
    // The locked nodes are asked for while the fan-out runs: the line on them follows it.
    let (replies, locked) = tokio::join!(
        link.send(request, options.node.as_deref(), options.timeout),
        link.locked()
    );
    let mut replies = replies?;
    report_locked(&locked, &options);
    if replies.is_empty() {
        return Ok(crate::nobody::report(
            &link.nobody(options.node.as_deref()).await,
        ));
    }
    crate::broadcast::explain_timeouts(&mut replies, options.timeout, &graceful);
    print_replies(request, replies, &options)
}

/// Prints replies as a table (or JSON) and returns the exit code they call for; a caller
/// with no replies says why instead ([`crate::nobody`]). With `--alive-only`, the known
/// nodes that did not answer are left out, and a line on stderr says which.
pub fn print_replies(
    request: &Request,
    mut replies: BTreeMap<String, Value>,
    options: &BroadcastOptions,
) -> anyhow::Result<u8> {
    crate::absent::apply_alive_only(&mut replies, options.alive_only);
    let replies = &replies;
    if options.json {
        println!("{}", serde_json::to_string_pretty(replies)?);
    } else {
        println!(
            "{}",
            crate::render::render(&request.command, &request.properties, replies)
        );
    }
    Ok(if replies.values().all(reply_ok) {
        EXIT_OK
    } else {
        EXIT_NODE_FAILED
    })
}
