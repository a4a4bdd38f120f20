//! `troupe configure` and `troupe reconfigure` as the CLI runs them (asks, prints, exit
//! codes), and the reconfigure cycle itself, which serve's dashboard runs too.

use crate::broadcast::reply_ok;
use crate::cluster_link::ClusterLink;
use crate::command::{report_locked, BroadcastFlags, BroadcastOptions};
use crate::confirm::{confirm, Question};
use crate::exit_code::{EXIT_NODE_FAILED, EXIT_OK};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;
use troupe::protocol::Request;

/// `troupe configure [--restart] [--dry-run]`: pushes the peer list, prints a row a node.
pub async fn run_configure(
    restart: bool,
    dry_run: bool,
    broadcast: BroadcastFlags,
) -> anyhow::Result<ExitCode> {
    let link = ClusterLink::connect(&broadcast.flags).await?;
    let cluster = broadcast.flags.settings()?.config.cluster;
    let code = configure_on(&link, &cluster, &broadcast.options(), restart, dry_run).await?;
    Ok(ExitCode::from(code))
}

/// `configure` on the nodes of `link` that `options` selects: prints a row a node (or JSON);
/// the exit code.
pub async fn configure_on(
    link: &ClusterLink,
    cluster: &str,
    options: &BroadcastOptions,
    restart: bool,
    dry_run: bool,
) -> anyhow::Result<u8> {
    let nodes = link.nodes().await;
    let selection = options.node.as_deref();
    let mut replies = link
        .push_configure(
            &nodes,
            cluster,
            selection,
            options.timeout,
            restart,
            dry_run,
        )
        .await?;
    crate::absent::apply_alive_only(&mut replies, options.alive_only);
    if replies.is_empty() {
        report_locked(&nodes, options);
        let nobody = link.nobody(selection).await;
        return Ok(crate::nobody::report(&nobody));
    }
    if options.json {
        println!("{}", serde_json::to_string_pretty(&replies)?);
    } else {
        println!("{}", crate::render::render_configure(&replies, dry_run));
    }
    report_locked(&nodes, options);
    let ok = replies.values().all(reply_ok);
    Ok(if ok { EXIT_OK } else { EXIT_NODE_FAILED })
}

/// `troupe reconfigure [--reset]`: connects, runs [`reconfigure_on`].
pub async fn run(reset: bool, broadcast: BroadcastFlags) -> anyhow::Result<ExitCode> {
    let link = ClusterLink::connect(&broadcast.flags).await?;
    let cluster = broadcast.flags.settings()?.config.cluster;
    let code = reconfigure_on(&link, &cluster, &broadcast.options(), reset).await?;
    Ok(ExitCode::from(code))
}

/// [`run_reconfigure`] on `link`, then the line on locked nodes skipped; the exit code.
pub async fn reconfigure_on(
    link: &ClusterLink,
    cluster: &str,
    options: &BroadcastOptions,
    reset: bool,
) -> anyhow::Result<u8> {
    let code = run_reconfigure(link, cluster, options, reset).await?;
    report_locked(&link.nodes().await, options);
    Ok(code)
}

/// `troupe reconfigure [--reset]` as the CLI runs it: reaching nobody says why and exits
/// [`crate::exit_code::EXIT_NOTHING_MATCHED`], as every command does; a reset of more than one
/// node (or of some members of a clustered service) asks first ([`crate::confirm`]). Prints
/// the table and returns the exit code.
pub async fn run_reconfigure(
    link: &ClusterLink,
    cluster: &str,
    options: &BroadcastOptions,
    reset: bool,
) -> anyhow::Result<u8> {
    let targets = link.target_names(options.node.as_deref()).await?;
    if targets.is_empty() {
        let nobody = link.nobody(options.node.as_deref()).await;
        return Ok(crate::nobody::report(&nobody));
    }
    if reset {
        let warning = crate::reset::partial_member_warning(link, "*", &targets).await;
        let action = "stop every watcher, wipe every data_dir, configure and start again on";
        if let Some(question) = Question::when_needed(action, &targets, warning) {
            if let Err(refusal) = confirm(&question, options.yes) {
                eprintln!("troupe: {refusal}");
                return Ok(crate::exit_code::EXIT_USAGE);
            }
        }
    }
    let mut steps = reconfigure(
        link,
        cluster,
        options.node.as_deref(),
        options.timeout,
        reset,
    )
    .await?;
    if options.alive_only {
        if let Some(line) = steps.skip_absent() {
            eprintln!("troupe: {line}");
        }
    }
    let (table, ok) = steps.table();
    println!("{table}");
    Ok(if ok { EXIT_OK } else { EXIT_NODE_FAILED })
}

/// The replies of each step of a reconfigure, by node.
pub struct Steps(Vec<(&'static str, BTreeMap<String, Value>)>);

/// `troupe reconfigure [--reset]` (and the dashboard's): stop all -> (reset) -> configure ->
/// start (autostart watchers and every configured one), on the nodes `selection` names.
pub async fn reconfigure(
    link: &ClusterLink,
    cluster: &str,
    selection: Option<&str>,
    timeout: Duration,
    reset: bool,
) -> anyhow::Result<Steps> {
    let waiting = |command: &str, extra: Value| {
        let mut props = Map::new();
        props.insert("waiting".into(), json!(true));
        if let Value::Object(extra) = extra {
            props.extend(extra);
        }
        Request::new(command, props)
    };
    // Stops and starts wait for graceful timeouts: give them room beyond a plain command's.
    let slow = timeout.max(Duration::from_secs(60));
    let mut steps: Vec<(&str, BTreeMap<String, Value>)> = Vec::new();
    steps.push((
        "STOP",
        link.send(&waiting("stop", Value::Null), selection, slow)
            .await?,
    ));
    if reset {
        let request = waiting("reset", json!({"name": "*"}));
        steps.push(("RESET", link.send(&request, selection, slow).await?));
    }
    let nodes = link.nodes().await;
    let configured = link
        .push_configure(&nodes, cluster, selection, timeout, false, false)
        .await?;
    // Start what starts by itself, and every watcher configure rendered files for (a
    // service waiting for its peer list is usually autostart = false).
    let mut started = link
        .send(&waiting("start", Value::Null), selection, slow)
        .await?;
    for (node, reply) in &configured {
        let mut watchers: Vec<&str> = reply["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["watcher"].as_str())
            .collect();
        watchers.dedup();
        for watcher in watchers {
            let request = waiting("start", json!({"name": watcher}));
            for (name, reply) in link.send(&request, Some(node), slow).await? {
                if !reply_ok(&reply) {
                    started.insert(name, reply);
                }
            }
        }
    }
    steps.push(("CONFIGURE", configured));
    steps.push(("START", started));
    Ok(Steps(steps))
}

impl Steps {
    /// `--alive-only`: leaves out the known nodes that did not answer; the line saying which.
    pub fn skip_absent(&mut self) -> Option<String> {
        let mut skipped = None;
        for (_, replies) in &mut self.0 {
            skipped = crate::absent::skip(replies).or(skipped);
        }
        skipped
    }

    /// One row a node, one column a step; and whether every step went well on every node.
    pub fn table(&self) -> (String, bool) {
        let steps = &self.0;
        let names: std::collections::BTreeSet<&String> =
            steps.iter().flat_map(|(_, r)| r.keys()).collect();
        let mut all_ok = true;
        let rows: Vec<Vec<String>> = names
            .into_iter()
            .map(|node| {
                let mut row = vec![node.clone()];
                for (_, replies) in steps {
                    let cell = match replies.get(node) {
                        Some(reply) if reply_ok(reply) => "ok".to_string(),
                        Some(reply) => {
                            all_ok = false;
                            format!("error: {}", reply["reason"].as_str().unwrap_or("?"))
                        }
                        None => {
                            all_ok = false;
                            "-".to_string()
                        }
                    };
                    row.push(cell);
                }
                row
            })
            .collect();
        // A fan-out that reached nobody is no success.
        all_ok &= !rows.is_empty();
        let mut header = vec!["NODE"];
        header.extend(steps.iter().map(|(name, _)| *name));
        (crate::render::table(&header, &rows), all_ok)
    }
}
