//! How a command reaches the cluster ([`ClusterLink`]): through a running `troupe serve`, by
//! a discovery of its own (the CLI, the shell), or on serve's own kept connections (its
//! dashboard). It sends a request to a selection of alive nodes, each with a timeout, and
//! says who the members are; it prints nothing but warnings.

use crate::broadcast::{fan_out, select, Target};
use crate::discovery::{Discovery, Sources};
use crate::links::Reach;
use crate::membership::MembershipHandle;
use crate::nobody::{Nobody, Search};
use crate::roster::Roster;
use crate::settings::{NodeFlags, Settings};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use troupe::protocol::Request;

/// How long discovery listens for mDNS answers after the first probe sweep, before a
/// command (one-shot, or the first ones a new `troupe serve` gets) takes the member list.
pub const MDNS_LISTEN: Duration = Duration::from_millis(1500);

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
        let (membership, discovery) = Discovery::start(Sources::of(&settings))?;
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

    /// Sends `request` to the alive nodes `selection` names (the `--node` patterns; None for
    /// all), each with `timeout`; replies keyed by node name.
    pub async fn send(
        &self,
        request: &Request,
        selection: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<BTreeMap<String, Value>> {
        match self {
            ClusterLink::Controller(endpoint) => {
                via_controller(endpoint, request, selection, timeout).await
            }
            ClusterLink::Local { membership, .. } => {
                let targets = select(membership.alive_targets(), selection)
                    .map_err(|e| anyhow::anyhow!(e))?;
                let mut replies = fan_out(&targets, request, timeout, true).await;
                crate::absent::add(&mut replies, &self.nodes().await, selection);
                Ok(replies)
            }
            ClusterLink::Kept { membership, links } => {
                let targets = select(membership.alive_targets(), selection)
                    .map_err(|e| anyhow::anyhow!(e))?;
                Ok(links.fan_out(&targets, request, timeout).await)
            }
        }
    }

    /// Pushes `configure` (the peer list of `nodes`) to the peers `selection` names: a running
    /// controller pushes it itself, from its own membership and on the connections it keeps
    /// to every member (`configure` with a `node` property, see [`crate::serve`]); otherwise
    /// it goes out from here ([`crate::configure::push_via`]). Replies keyed by node name.
    pub async fn push_configure(
        &self,
        nodes: &[Value],
        cluster: &str,
        selection: Option<&str>,
        timeout: Duration,
        restart: bool,
        dry_run: bool,
    ) -> anyhow::Result<BTreeMap<String, Value>> {
        let reach = match self {
            ClusterLink::Controller(endpoint) => {
                let flags = [("restart", restart), ("dry_run", dry_run)]
                    .map(|(name, flag)| (name.to_string(), Value::Bool(flag)));
                let request = Request::new("configure", serde_json::Map::from_iter(flags));
                return via_controller(endpoint, &request, selection, timeout).await;
            }
            ClusterLink::Kept { links, .. } => Reach::Kept(links.clone()),
            ClusterLink::Local { .. } => Reach::fresh(),
        };
        let rows = crate::membership::MemberRow::from_json(nodes);
        crate::configure::push_via(&reach, &rows, cluster, selection, timeout, restart, dry_run)
            .await
    }

    /// The members as JSON objects (see [`crate::membership::member_json`]).
    pub async fn nodes(&self) -> Vec<Value> {
        self.census().await.0
    }

    /// The members, and how they were searched for.
    pub async fn census(&self) -> (Vec<Value>, Search) {
        match self {
            ClusterLink::Controller(endpoint) => {
                let mut reply = controller_nodelist(endpoint, None).await;
                let nodes = take_nodes(&mut reply);
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

    /// The locked rows of [`Self::nodes`], all [`crate::command::report_locked`] reads: a
    /// controller is asked for those alone, so a fan-out's closing line does not fetch and
    /// parse every member.
    pub async fn locked(&self) -> Vec<Value> {
        let nodes = match self {
            ClusterLink::Controller(endpoint) => {
                take_nodes(&mut controller_nodelist(endpoint, Some("locked")).await)
            }
            _ => self.nodes().await,
        };
        nodes
            .into_iter()
            .filter(|n| n["state"] == "locked")
            .collect()
    }

    /// Why a command with this `--node` selection reached nobody.
    pub async fn nobody(&self, selection: Option<&str>) -> Nobody {
        let (nodes, search) = self.census().await;
        crate::nobody::why(&nodes, &search, selection)
    }

    /// The names of the alive members `selection` names.
    pub async fn target_names(&self, selection: Option<&str>) -> anyhow::Result<Vec<String>> {
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
        let selected = select(alive, selection).map_err(|e| anyhow::anyhow!(e))?;
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
    let Ok(endpoint) = troupe::endpoint::Endpoint::parse(endpoint) else {
        return false;
    };
    let connect = tokio::net::TcpStream::connect(endpoint.address());
    matches!(
        tokio::time::timeout(Duration::from_millis(300), connect).await,
        Ok(Ok(_))
    )
}

/// The controller's `nodelist` reply (empty when it does not answer), only the members in
/// `state` when given (a controller older than the filter sends every member).
async fn controller_nodelist(endpoint: &str, state: Option<&str>) -> Value {
    let zmq = zmq::Context::new();
    let filter = state.map(|state| ("state".to_string(), json!(state)));
    let request = Request::new("nodelist", filter.into_iter().collect());
    let reply = troupe::client::call_async(&zmq, endpoint, request, NODELIST_TIMEOUT)
        .await
        .unwrap_or_default();
    if let Some(line) = warning_line(endpoint, &reply) {
        say_now_and_then(&line);
    }
    reply
}

/// What the user is told of a controller's `warning` (it ran short of descriptors), if its
/// reply has one: the controller's words, whose control characters cannot drive the terminal.
fn warning_line(endpoint: &str, reply: &Value) -> Option<String> {
    let warning = reply["warning"].as_str()?;
    let said = format!("the controller at {endpoint} was {warning}");
    Some(format!("troupe: {}", crate::terminal::printable(&said)))
}

/// Prints `line` on stderr, at most once a minute, as serve's warning itself goes: one command
/// may ask the controller twice, and the shell asks for as long as it runs.
fn say_now_and_then(line: &str) {
    static WARNING: troupe::logging::OnceAMinute = troupe::logging::OnceAMinute::new();
    if WARNING.due() {
        eprintln!("{line}");
    }
}

fn take_nodes(reply: &mut Value) -> Vec<Value> {
    match reply["nodes"].take() {
        Value::Array(nodes) => nodes,
        _ => Vec::new(),
    }
}

/// Sends through a running controller.
async fn via_controller(
    endpoint: &str,
    request: &Request,
    selection: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut forwarded = request.clone();
    forwarded
        .properties
        .insert("node".into(), json!(selection.unwrap_or("*")));
    // The per-node timeout travels with the request: the controller's own default would
    // outlast the margin this call allows it.
    forwarded.properties.insert(
        troupe::protocol::NODE_TIMEOUT.into(),
        json!(timeout.as_secs_f64()),
    );
    let zmq = zmq::Context::new();
    // The controller applies the per-node timeout itself, after its first discovery at most;
    // allow it that plus a margin.
    let margin = timeout + troupe::bounds::SERVE_FIRST_DISCOVERY_WAIT + Duration::from_secs(2);
    let mut reply = troupe::client::call_async(&zmq, endpoint, forwarded, margin).await?;
    if reply["status"] != "ok" {
        anyhow::bail!(
            "the controller at {endpoint} refused: {}",
            reply["reason"].as_str().unwrap_or("error")
        );
    }
    Ok(match reply["nodes"].take() {
        Value::Object(nodes) => nodes.into_iter().collect(),
        _ => BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A controller's warning reaches the user's terminal as text: an escape sequence in it
    /// (a hostile or broken controller) is defused; a reply without one says nothing.
    #[test]
    fn a_controllers_warning_is_printed_without_its_control_characters() {
        let reply = json!({"nodes": [], "warning": "out of file descriptors\x1b[2J\n(1 of 2)"});
        let line = warning_line("tcp://10.0.0.1:5558", &reply).unwrap();
        assert_eq!(
            line,
            "troupe: the controller at tcp://10.0.0.1:5558 was out of file descriptors\u{FFFD}[2J\u{FFFD}(1 of 2)"
        );
        assert_eq!(
            warning_line("tcp://10.0.0.1:5558", &json!({"nodes": []})),
            None
        );
    }
}
