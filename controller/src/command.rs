//! `troupe <command> [args]`: one Circus (or troupe) command to every node, or a selection,
//! through a running `troupe serve` or by discovering on the spot.

use crate::broadcast::{fan_out, reply_ok, select, Target};
use crate::circus_args::build_request;
use crate::confirm::{confirm, Question};
use crate::discovery::Discovery;
use crate::membership::{MemberState, MembershipHandle};
use crate::nobody::{Nobody, Search};
use crate::roster::Roster;
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

/// How long discovery listens for mDNS answers after the first probe sweep, before a
/// command (one-shot, or the first ones a new `troupe serve` gets) takes the member list.
pub const MDNS_LISTEN: Duration = Duration::from_millis(1500);

/// The per-node timeout when `--timeout` is not given. A `--waiting` command adds the
/// graceful stops it may wait out (see [`crate::watchers::graceful_stops`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of a broadcast.
#[derive(Debug, Clone)]
pub struct BroadcastOptions {
    pub node: Option<String>,
    pub timeout: Duration,
    /// `--timeout` was given: it is not lengthened for a `--waiting` command.
    pub timeout_given: bool,
    pub json: bool,
    /// `--yes`: go ahead without the question of [`crate::confirm`].
    pub yes: bool,
    /// `--alive-only`: leave out the known nodes that did not answer ([`crate::absent`]).
    pub alive_only: bool,
}

impl Default for BroadcastOptions {
    fn default() -> Self {
        BroadcastOptions {
            node: None,
            timeout: DEFAULT_TIMEOUT,
            timeout_given: false,
            json: false,
            yes: false,
            alive_only: false,
        }
    }
}

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
        let targets = link.target_names(&options).await?;
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
    let mut replies = link.send(request, &options).await?;
    report_locked(&link.nodes().await, &options);
    if replies.is_empty() {
        return Ok(crate::nobody::report(
            &link.nobody(options.node.as_deref()).await,
        ));
    }
    crate::broadcast::explain_timeouts(&mut replies, options.timeout, &graceful);
    print_replies(request, &replies, &options)
}

/// Prints replies as a table (or JSON) and returns the exit code they call for; a caller
/// with no replies says why instead ([`crate::nobody`]). With `--alive-only`, the known
/// nodes that did not answer are left out, and a line on stderr says which.
pub fn print_replies(
    request: &Request,
    replies: &BTreeMap<String, Value>,
    options: &BroadcastOptions,
) -> anyhow::Result<u8> {
    let mut replies = replies.clone();
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

/// How commands reach the cluster: through a running controller, or by a discovery of our
/// own that stays up as long as this value (the shell keeps it for the session).
pub enum ClusterLink {
    Controller(String),
    Local {
        membership: MembershipHandle,
        discovery: Discovery,
        /// How it searches (other clusters are read from `membership` when asked).
        search: Search,
        /// The nodes seen before by this search ([`crate::roster`]), this one's recorded.
        /// Boxed: it is read once per command, and keeps the enum small.
        roster: Box<Roster>,
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
        discovery
            .first_discovery(&membership, listen, settings.expect)
            .await;
        let search = Search::of(&settings, Default::default());
        let roster = remember(&membership, &settings, &search);
        Ok(ClusterLink::Local {
            membership,
            discovery,
            search,
            roster: Box::new(roster),
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
                let mut replies = fan_out(&targets, request, options.timeout, true).await;
                crate::absent::add(&mut replies, &self.nodes().await, options.node.as_deref());
                Ok(replies)
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
        self.census().await.0
    }

    /// The members, and how they were searched for.
    pub async fn census(&self) -> (Vec<Value>, Search) {
        match self {
            ClusterLink::Controller(endpoint) => {
                let zmq = zmq::Context::new();
                let request = Request::new("nodelist", Default::default());
                let reply = troupe::client::call_async(&zmq, endpoint, request, NODELIST_TIMEOUT)
                    .await
                    .unwrap_or_default();
                let nodes = reply["nodes"].as_array().cloned().unwrap_or_default();
                // An older serve says nothing of its search: then only "not found" is known.
                let search = serde_json::from_value(reply["search"].clone()).unwrap_or(Search {
                    sources: vec![format!("the controller at {endpoint}")],
                    ..Search::default()
                });
                (nodes, search)
            }
            ClusterLink::Local {
                membership,
                search,
                roster,
                ..
            } => {
                let search = Search {
                    other_clusters: membership.other_clusters(),
                    ..search.clone()
                };
                let mut nodes = membership.members_json();
                roster.missing(&mut nodes);
                (nodes, search)
            }
            ClusterLink::Kept { membership, .. } => {
                let search = Search {
                    sources: vec!["troupe serve's membership".to_string()],
                    other_clusters: membership.other_clusters(),
                    ..Search::default()
                };
                (membership.members_json(), search)
            }
        }
    }

    /// Why a command with this `--node` selection reached nobody.
    pub async fn nobody(&self, selection: Option<&str>) -> Nobody {
        let (nodes, search) = self.census().await;
        crate::nobody::why(&nodes, &search, selection)
    }

    /// The names of the alive members `options.node` selects.
    pub async fn target_names(&self, options: &BroadcastOptions) -> anyhow::Result<Vec<String>> {
        let alive = self
            .nodes()
            .await
            .into_iter()
            .filter(|n| n["state"] == "alive")
            .filter_map(|n| {
                Some(Target {
                    name: n["name"].as_str()?.to_string(),
                    endpoint: n["endpoint"].as_str()?.to_string(),
                })
            });
        let selected = select(alive, options.node.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
        Ok(selected.into_iter().map(|t| t.name).collect())
    }
}

/// Reads the roster of this search, records the members alive now and writes it back; the
/// roster as it was read, plus them. A roster that cannot be read or written is a warning.
fn remember(membership: &MembershipHandle, settings: &Settings, search: &Search) -> Roster {
    let path = crate::roster::path(
        &settings.config.state_dir,
        &settings.config.cluster,
        &search.sources,
    );
    let now = troupe::protocol::now_epoch();
    let (mut roster, warning) = Roster::load(&path, settings.config.roster_ttl, now);
    if let Some(warning) = warning {
        eprintln!("troupe: {warning}");
    }
    let before = roster.clone();
    roster.record(&membership.members_json(), now);
    if roster != before {
        if let Err(e) = roster.save(&path) {
            eprintln!(
                "troupe: cannot write the roster {}: {e}; nodes seen now will not be reported                  when they stop answering (set a writable --state-dir)",
                path.display()
            );
        }
    }
    roster
}

/// How long a `nodelist` asked of a running controller may take.
const NODELIST_TIMEOUT: Duration = Duration::from_secs(2);

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
pub async fn via_controller(
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
    // The controller applies the per-node timeout itself, after its first discovery at most;
    // allow it that plus a margin.
    let margin =
        options.timeout + troupe::bounds::SERVE_FIRST_DISCOVERY_WAIT + Duration::from_secs(2);
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
