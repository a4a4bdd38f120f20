//! `troupe <command> [args]`: one Circus (or troupe) command to every node, or a selection,
//! through a running `troupe serve` or by discovering on the spot.

use crate::broadcast::{fan_out, reply_ok, select, Target};
use crate::circus_args::build_request;
use crate::discovery::Discovery;
use crate::membership::{MemberState, MembershipHandle};
use crate::settings::NodeFlags;
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

/// The flags a broadcast takes besides the command's own.
#[derive(clap::Parser, Debug)]
#[command(name = "troupe COMMAND")]
pub struct BroadcastFlags {
    /// Nodes to send to: names or globs, comma-separated (default: all alive nodes).
    #[arg(long)]
    pub node: Option<String>,
    /// Per-node timeout.
    #[arg(long, default_value = "5s", value_parser = crate::settings::parse_duration)]
    pub timeout: Duration,
    /// One JSON object keyed by node instead of a table.
    #[arg(long)]
    pub json: bool,
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
    const SWITCHES: [&str; 3] = ["--json", "--no-mdns", "--force"];
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
            timeout: self.timeout,
            json: self.json,
        }
    }
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
    let link = ClusterLink::connect(flags).await?;
    let replies = link.send(&request, options).await?;
    Ok(ExitCode::from(print_replies(&request, &replies, options)?))
}

/// Prints replies as a table (or JSON) and returns the exit code they call for.
pub fn print_replies(
    request: &Request,
    replies: &BTreeMap<String, Value>,
    options: &BroadcastOptions,
) -> anyhow::Result<u8> {
    if replies.is_empty() {
        eprintln!(
            "troupe: no node matched{}",
            options
                .node
                .as_deref()
                .map(|n| format!(" --node {n}"))
                .unwrap_or_default()
        );
        return Ok(EXIT_NOTHING_MATCHED);
    }
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

/// How commands reach the cluster: through a running controller, or by a discovery of our
/// own that stays up as long as this value (the shell keeps it for the session).
pub enum ClusterLink {
    Controller(String),
    Local {
        membership: MembershipHandle,
        discovery: Discovery,
    },
    /// Inside `troupe serve` (its dashboard): serve's own membership and kept connections.
    Kept {
        membership: MembershipHandle,
        links: crate::links::Links,
    },
}

impl ClusterLink {
    /// Uses the controller at `flags.controller_endpoint()` if it answers; otherwise
    /// discovers (first probe sweep, plus a moment for mDNS answers when multicast is on).
    pub async fn connect(flags: &NodeFlags) -> anyhow::Result<ClusterLink> {
        Self::connect_listening(flags, MDNS_LISTEN).await
    }

    /// [`Self::connect`], listening up to `listen` for mDNS answers (or until the expected
    /// node count from `troupe cluster` is alive). Probing is complete after its first sweep.
    pub async fn connect_listening(
        flags: &NodeFlags,
        listen: Duration,
    ) -> anyhow::Result<ClusterLink> {
        // First: it reads the cluster key that the controller is asked with.
        let settings = flags.settings()?;
        let endpoint = flags.controller_endpoint();
        if controller_answers(&endpoint).await {
            return Ok(ClusterLink::Controller(endpoint));
        }
        // A controller asked for by name that is not there is worth a word: the answer then
        // comes from this command's own discovery, which may see a different cluster.
        if flags.controller.is_some() {
            eprintln!("troupe: no controller answers at {endpoint}; discovering on the spot");
        }
        let (membership, discovery) = Discovery::start(crate::serve::sources(&settings))?;
        discovery.first_sweep().await;
        if settings.multicast {
            let expect = settings.expect;
            membership
                .wait_until(listen, |m| {
                    expect.is_some_and(|n| {
                        m.iter().filter(|m| m.state == MemberState::Alive).count() >= n
                    })
                })
                .await;
        }
        membership.sync().await;
        Ok(ClusterLink::Local {
            membership,
            discovery,
        })
    }

    /// Sends `request` to the selected alive nodes; replies keyed by node name.
    pub async fn send(
        &self,
        request: &Request,
        options: &BroadcastOptions,
    ) -> anyhow::Result<BTreeMap<String, Value>> {
        match self {
            ClusterLink::Controller(endpoint) => via_controller(endpoint, request, options).await,
            ClusterLink::Local { membership, .. } => {
                let targets = select(alive_targets(membership), options.node.as_deref())
                    .map_err(|e| anyhow::anyhow!(e))?;
                Ok(fan_out(&targets, request, options.timeout, true).await)
            }
            ClusterLink::Kept { membership, links } => {
                let targets = select(alive_targets(membership), options.node.as_deref())
                    .map_err(|e| anyhow::anyhow!(e))?;
                Ok(links.fan_out(&targets, request, options.timeout).await)
            }
        }
    }

    /// The members as JSON objects (see [`crate::membership::member_json`]).
    pub async fn nodes(&self) -> Vec<Value> {
        match self {
            ClusterLink::Controller(endpoint) => {
                let zmq = zmq::Context::new();
                let request = Request::new("nodelist", Default::default());
                troupe::client::call_async(&zmq, endpoint, request, Duration::from_secs(2))
                    .await
                    .ok()
                    .and_then(|r| r["nodes"].as_array().cloned())
                    .unwrap_or_default()
            }
            ClusterLink::Local { membership, .. } | ClusterLink::Kept { membership, .. } => {
                membership.members_json()
            }
        }
    }
}

/// How long a `cluster` request may take: serve replies once it has swept the new range (a
/// /16 of mostly unanswered addresses takes a while).
pub const CLUSTER_SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether something accepts TCP at a controller endpoint: a closed port answers at once,
/// so no ZeroMQ timeout is paid when no controller runs.
pub async fn controller_answers(endpoint: &str) -> bool {
    let address = endpoint.trim_start_matches("tcp://");
    let connect = tokio::net::TcpStream::connect(address);
    matches!(
        tokio::time::timeout(Duration::from_millis(300), connect).await,
        Ok(Ok(_))
    )
}

/// Sends through a running controller.
async fn via_controller(
    endpoint: &str,
    request: &Request,
    options: &BroadcastOptions,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut forwarded = request.clone();
    forwarded.properties.insert(
        "node".into(),
        json!(options.node.clone().unwrap_or_else(|| "*".into())),
    );
    // The per-node timeout travels with the request: the controller's own default would
    // outlast the margin this call allows it.
    forwarded.properties.insert(
        crate::serve::NODE_TIMEOUT.into(),
        json!(options.timeout.as_secs_f64()),
    );
    let zmq = zmq::Context::new();
    // The controller applies the per-node timeout itself; allow it that plus a margin.
    let margin = options.timeout + Duration::from_secs(2);
    let reply = troupe::client::call_async(&zmq, endpoint, forwarded, margin).await?;
    if reply["status"] != "ok" {
        anyhow::bail!(
            "the controller at {endpoint} refused: {}",
            reply["reason"].as_str().unwrap_or("error")
        );
    }
    Ok(reply["nodes"]
        .as_object()
        .map(|nodes| nodes.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
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
