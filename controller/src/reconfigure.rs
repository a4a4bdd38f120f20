//! `troupe configure` and `troupe reconfigure` as the CLI runs them (asks, prints, exit
//! codes), and the reconfigure cycle itself, which serve's dashboard runs too.

use crate::broadcast::reply_ok;
use crate::broadcast::BroadcastOptions;
use crate::cluster_link::ClusterLink;
use crate::command::{report_locked, BroadcastFlags};
use crate::confirm::{confirm, Question};
use crate::exit_code::{EXIT_NODE_FAILED, EXIT_OK};
use std::process::ExitCode;

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
    report_locked(&link.locked().await, options);
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
    let mut steps = crate::cycle::reconfigure(
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
