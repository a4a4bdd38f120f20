//! `troupe <command> [args]`: one Circus (or troupe) command to every node, or a selection,
//! through a running `troupe serve` or by discovering on the spot.

use crate::broadcast::{fan_out, reply_ok, select, Target};
use crate::circus_args::build_request;
use crate::discovery::Discovery;
use crate::membership::{MemberState, MembershipHandle};
use crate::settings::{NodeFlags, Settings};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;
use troupe::protocol::Request;

/// Documented exit codes.
pub const EXIT_OK: u8 = 0;
pub const EXIT_NODE_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NOTHING_MATCHED: u8 = 3;

/// How long one-shot discovery listens for mDNS answers after the first probe sweep.
const MDNS_LISTEN: Duration = Duration::from_millis(1500);

/// Options of a broadcast.
#[derive(Debug, Clone)]
pub struct BroadcastOptions {
    pub node: Option<String>,
    pub timeout: Duration,
    pub json: bool,
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
    let replies = match via_controller(&flags.controller_endpoint(), &request, options).await {
        Some(replies) => replies?,
        None => {
            let settings = flags.settings()?;
            one_shot(&settings, &request, options).await?
        }
    };
    if replies.is_empty() {
        eprintln!(
            "troupe: no node matched{}",
            options
                .node
                .as_deref()
                .map(|n| format!(" --node {n}"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::from(EXIT_NOTHING_MATCHED));
    }
    if options.json {
        println!("{}", serde_json::to_string_pretty(&replies)?);
    } else {
        println!(
            "{}",
            crate::render::render(&request.command, &request.properties, &replies)
        );
    }
    let all_ok = replies.values().all(reply_ok);
    Ok(ExitCode::from(if all_ok {
        EXIT_OK
    } else {
        EXIT_NODE_FAILED
    }))
}

/// Sends through a running controller, if one answers: None when there is none.
async fn via_controller(
    endpoint: &str,
    request: &Request,
    options: &BroadcastOptions,
) -> Option<anyhow::Result<BTreeMap<String, Value>>> {
    let address = endpoint.trim_start_matches("tcp://");
    let connect = tokio::net::TcpStream::connect(address);
    tokio::time::timeout(Duration::from_millis(300), connect)
        .await
        .ok()?
        .ok()?;
    let mut forwarded = request.clone();
    forwarded.properties.insert(
        "node".into(),
        json!(options.node.clone().unwrap_or_else(|| "*".into())),
    );
    let zmq = zmq::Context::new();
    // The controller applies the per-node timeout itself; allow it that plus a margin.
    let reply = troupe::client::call_async(
        &zmq,
        endpoint,
        forwarded,
        options.timeout + Duration::from_secs(2),
    )
    .await;
    Some(match reply {
        Ok(reply) if reply["status"] == "ok" => Ok(reply["nodes"]
            .as_object()
            .map(|nodes| nodes.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()),
        Ok(reply) => Err(anyhow::anyhow!(
            "the controller at {endpoint} refused: {}",
            reply["reason"].as_str().unwrap_or("error")
        )),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    })
}

/// Discovers the cluster (first probe sweep, plus a moment for mDNS), then fans out.
async fn one_shot(
    settings: &Settings,
    request: &Request,
    options: &BroadcastOptions,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let (membership, discovery) = Discovery::start(crate::serve::sources(settings))?;
    discovery.first_sweep().await;
    if settings.multicast {
        let expect = settings.expect;
        membership
            .wait_until(MDNS_LISTEN, |m| {
                expect.is_some_and(|n| {
                    m.iter().filter(|m| m.state == MemberState::Alive).count() >= n
                })
            })
            .await;
    }
    membership.sync().await;
    let targets = alive_targets(&membership);
    let targets = select(targets, options.node.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    let replies = fan_out(&targets, request, options.timeout, true).await;
    discovery.stop();
    Ok(replies)
}

/// Alive members as broadcast targets.
pub fn alive_targets(membership: &MembershipHandle) -> Vec<Target> {
    membership
        .members()
        .into_iter()
        .filter(|m| m.state == MemberState::Alive)
        .map(|m| Target {
            name: m.name,
            endpoint: m.endpoint,
        })
        .collect()
}
