//! `troupe serve`: the long-running controller. Continuous discovery and membership, a
//! control socket (register_node, unregister_node, nodelist, cluster, stats_snapshot,
//! stats_history), an events socket publishing `node.<name>.join|suspect|down|leave|update`,
//! and a stats socket re-publishing every member's stats (see [`crate::stats`]). Commands for
//! members go out on connections kept across requests (see [`crate::links`]).
//!
//! serve acts for whoever reaches its port, so it must not lend them what they could not do
//! themselves (SECURITY.md): it never forwards a command that brings code, adopts a
//! registered endpoint only on the address the registration came from, and adopts nothing
//! on its own host that its operator did not name ([`crate::admission`]). What a
//! client can make it hold is bounded ([`gate`], [`troupe::bounds`]), and so are the connections
//! one address may keep open to each of its sockets ([`troupe::connections`]).

mod gate;
mod registration;

use crate::admission::Admission;
use crate::broadcast::{reply_ok, select};
use crate::discovery::{Discovery, Ranges, Sources};
use crate::membership::{table, MemberRow, MemberState, MembershipHandle, MembershipMsg, Source};
use crate::settings::Settings;
use crate::state::ControllerState;
use anyhow::Context;
use futures::{SinkExt, StreamExt};
use gate::{Gate, Peer};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use tokio::time::Instant;
use troupe::bounds::{SERVE_FIRST_DISCOVERY_WAIT, SERVE_REMOTE_SWEEP_ADDRESSES};
use troupe::discovery::parse_targets;
use troupe::protocol::{
    error_reply, ok_reply, CommandError, Errno, Request, NODE_COMMANDS, NODE_TIMEOUT,
};
use troupe::sockets::ControlSocket;
use troupe::subscribers::GuardedPublisher;

/// Runs until SIGINT/SIGTERM, reading the key file again on each SIGHUP.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    return_large_buffers();
    apply_member_bound(settings.config.serve.max_members)?;
    troupe::limits::keep_files_free(troupe::bounds::SERVE_FILES_KEPT_FOR_CLIENTS);
    let banner = banner(&settings);
    let serving = start(settings)?;
    println!("{banner}");
    if let Some(address) = serving.dashboard {
        // Printed, never logged: with a key the URL carries the dashboard's token.
        println!("Dashboard: {}", crate::dashboard::access::url(address));
    }
    if let Some(address) = serving.metrics {
        println!("Prometheus metrics: http://{address}/metrics");
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                if let Err(e) = serving.reload_key_file() {
                    tracing::error!("cluster key not reloaded: {e:#}");
                }
            }
        }
    }
    serving.stop();
    tracing::info!("troupe serve stopped");
    Ok(())
}

/// What serve says at start: its cluster, what it listens on, how it discovers.
fn banner(settings: &Settings) -> String {
    let serve = &settings.config.serve;
    let endpoint = |port: u16| format!("tcp://{}:{port}", serve.bind);
    let search = crate::nobody::Search::of(settings, Default::default());
    let registering = if search.sources.is_empty() {
        "; only agents that register themselves (master = ...) join"
    } else {
        ""
    };
    format!(
        "troupe serve: cluster '{}'; control {}, events {}, stats {}; discovering by {}{registering}",
        settings.config.cluster,
        endpoint(serve.control_port),
        endpoint(serve.events_port),
        endpoint(serve.stats_port),
        search.describe(),
    )
}

/// A running controller; it stops when dropped.
pub struct Serving {
    pub membership: MembershipHandle,
    pub control_endpoint: String,
    /// Where the web dashboard listens (`--http`), if it runs.
    pub dashboard: Option<std::net::SocketAddr>,
    /// Where `/metrics` is served on its own (`--metrics`), if it is.
    pub metrics: Option<std::net::SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Keeps the ZAP handler of the listening sockets running.
    sockets: troupe::sockets::ServerContext,
}

impl Serving {
    pub fn stop(self) {
        drop(self);
    }

    /// Reads the key file again (a key rotation): keys added are accepted at once; a new
    /// first key is the one serve listens with (its sockets are bound again) and tries first.
    pub fn reload_key_file(&self) -> anyhow::Result<()> {
        if let Some(path) = crate::settings::key_file_in_use() {
            self.sockets
                .keys()
                .reload(path, "troupe serve")
                .map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Sets the member bound (`max_members`, before any member table or context is made) and
/// makes sure serve may open the descriptors its members take: set explicitly, a bound the
/// open-files limit cannot reach is an error naming both; the default one only warns.
fn apply_member_bound(max_members: Option<usize>) -> anyhow::Result<()> {
    let files_per_member = troupe::bounds::serve_files_per_member();
    let Some(bound) = max_members else {
        let bound = troupe::bounds::MAX_MEMBERS;
        let wanted = troupe::bounds::serve_files_for(bound);
        if let Some(limit) = troupe::limits::open_files_limit().filter(|l| *l < wanted) {
            let fit = limit.saturating_sub(troupe::bounds::SERVE_FILES_BESIDES_MEMBERS)
                / files_per_member;
            tracing::warn!(
                "this process may open {limit} files: about {fit} members fit, not the \
                 {bound} of max_members ({files_per_member} files a member); raise its limit \
                 (LimitNOFILE= in its unit, ulimit -n) or set a lower --max-members"
            );
        }
        return Ok(());
    };
    troupe::bounds::set_max_members(bound).map_err(anyhow::Error::msg)?;
    troupe::limits::raise_open_files_to(troupe::bounds::serve_files_for(bound)).map_err(|e| {
        anyhow::anyhow!(
            "max_members = {bound} ({files_per_member} files a member) {e}; or set a lower \
             --max-members"
        )
    })?;
    Ok(())
}

/// Binds the controller's sockets and starts discovery, membership and the control loop.
pub fn start(settings: Settings) -> anyhow::Result<Serving> {
    let serve = settings.config.serve.clone();
    let admission = operator_admission(&settings);
    let sources = Sources {
        admission: admission.clone(),
        ..Sources::of(&settings)
    };
    let (membership, discovery) = Discovery::start(sources)?;
    // The key `--key-file`, `TROUPE_KEY_FILE` or troupe.toml named (settings() read it).
    let keyring = troupe::sockets::client_keys().map(|keys| keys.keyring().clone());
    let zmq = troupe::sockets::ServerContext::new(keyring.as_ref())
        .context("starting the ZAP handler")?;
    let control_endpoint = format!("tcp://{}:{}", serve.bind, serve.control_port);
    let control = troupe::sockets::bind_control(
        &zmq,
        &control_endpoint,
        troupe::config::DEFAULT_MAX_MESSAGE_SIZE,
    )
    .with_context(|| format!("binding the controller's control socket on {control_endpoint}"))?;
    let events_endpoint = format!("tcp://{}:{}", serve.bind, serve.events_port);
    let mut events = GuardedPublisher::bind(&zmq, &events_endpoint, "events")
        .with_context(|| format!("binding the controller's events socket on {events_endpoint}"))?;
    let stats_endpoint = format!("tcp://{}:{}", serve.bind, serve.stats_port);
    let stats_socket = GuardedPublisher::bind(&zmq, &stats_endpoint, "stats")
        .with_context(|| format!("binding the controller's stats socket on {stats_endpoint}"))?;
    let (stats, stats_actor) = crate::stats::spawn(
        crate::stats::Feed::Members(membership.clone()),
        Some(stats_socket),
        true,
    );
    let (links, links_actor) =
        crate::links::Links::spawn(zmq.context().clone(), Some(membership.clone()));
    let (activity, activity_actor) = crate::activity::spawn(membership.clone());
    let mut member_events = membership.subscribe();
    let publisher = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            tokio::select! {
                event = member_events.recv() => match event {
                    Ok(event) => {
                        events.publish(event.topic, event.payload.to_string().into_bytes());
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                _ = events.watch() => {}
            }
        }
    });
    let dashboard_context = crate::dashboard::DashboardContext {
        membership: membership.clone(),
        stats: stats.clone(),
        activity: activity.clone(),
        links: links.clone(),
        cluster: settings.config.cluster.clone(),
        timeout: settings.config.timeout,
    };
    let dashboard = match serve.http {
        Some(address) => Some(crate::dashboard::start(
            address,
            dashboard_context.clone(),
            crate::dashboard::Serves::Dashboard,
        )?),
        None => None,
    };
    let metrics = match serve.metrics {
        Some(address) => Some(crate::dashboard::start(
            address,
            dashboard_context,
            crate::dashboard::Serves::MetricsOnly,
        )?),
        None => None,
    };
    tracing::info!(control = %control_endpoint, events = %events_endpoint, stats = %stats_endpoint, multicast = settings.multicast, "troupe serve ready");
    let (discovered_tx, discovered) = tokio::sync::watch::channel(false);
    let context = Arc::new(ServeContext {
        membership: membership.clone(),
        admission,
        discovery,
        settings,
        stats,
        links,
        activity,
        discovered,
    });
    let first = context.clone();
    let first_discovery = tokio::spawn(async move {
        let expect = first.settings.expect;
        first
            .discovery
            .first_discovery(&first.membership, crate::cluster_link::MDNS_LISTEN, expect)
            .await;
        discovered_tx.send_replace(true);
    });
    let mut tasks = vec![
        publisher,
        stats_actor,
        links_actor,
        activity_actor,
        first_discovery,
    ];
    let dashboard = dashboard.map(|dashboard| {
        tasks.push(dashboard.task);
        dashboard.address
    });
    let metrics = metrics.map(|metrics| {
        tasks.push(metrics.task);
        metrics.address
    });
    if context.settings.config.serve.auto_configure {
        tasks.push(tokio::spawn(auto_configure(context.clone())));
    }
    tasks.push(tokio::spawn(control_loop(control, context)));
    Ok(Serving {
        membership,
        control_endpoint,
        dashboard,
        metrics,
        tasks,
        sockets: zmq,
    })
}

/// `--auto-configure`: re-push `configure` (restarting only what changed) once membership
/// has been quiet for `quiet_period` after a join, leave, down or address change, so a node
/// joining mid-experiment is folded in without a storm of pushes. A peer list equal to the
/// last one pushed is not pushed again: a node down and back within the quiet period, or a
/// suspect one answering again (suspect members stay in the list), changes nothing.
async fn auto_configure(context: Arc<ServeContext>) {
    use crate::membership::EventKind;
    let quiet = context.settings.config.serve.quiet_period;
    let mut events = context.membership.subscribe();
    let mut pushed: Option<Vec<troupe::protocol::Peer>> = None;
    loop {
        // Wait for a change that alters the peer list.
        loop {
            match events.recv().await {
                Ok(event) if !event.topic.ends_with(EventKind::Suspect.as_str()) => break,
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                Err(_) => return,
            }
        }
        // Debounce: every further change restarts the quiet period.
        loop {
            match tokio::time::timeout(quiet, events.recv()).await {
                Err(_) => break,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                Ok(_) => continue,
            }
        }
        let rows = context.membership.rows();
        let (peers, _) = crate::configure::peers(&rows);
        if pushed.as_ref() == Some(&peers) {
            tracing::debug!("auto-configure: the peer list is the one last pushed");
            continue;
        }
        let timeout = context.settings.config.timeout;
        let cluster = &context.settings.config.cluster;
        let reach = crate::links::Reach::Kept(context.links.clone());
        let (ok, detail) =
            match crate::configure::push_via(&reach, &rows, cluster, None, timeout, true, false)
                .await
            {
                Ok(replies) => {
                    // Down members get a row of their own in the replies; only peers count.
                    let failed: Vec<&String> = replies
                        .iter()
                        .filter(|(name, _)| peers.iter().any(|p| p.name == *name))
                        .filter(|(_, r)| !reply_ok(r))
                        .map(|(n, _)| n)
                        .collect();
                    tracing::info!(
                        nodes = replies.len(),
                        ?failed,
                        "auto-configure pushed the peer list"
                    );
                    // A push some node did not take is made again at the next change, even to
                    // the same list.
                    let ok = failed.is_empty();
                    let detail = match ok {
                        true => format!("auto-configure: ok on {} node(s)", replies.len()),
                        false => format!("auto-configure: failed on {failed:?}"),
                    };
                    pushed = ok.then_some(peers);
                    (ok, detail)
                }
                Err(e) => {
                    tracing::warn!("auto-configure failed: {e:#}");
                    (false, format!("auto-configure failed: {e:#}"))
                }
            };
        let activity = crate::activity::Activity {
            time: troupe::protocol::now_epoch(),
            node: "*".into(),
            watcher: None,
            kind: "configure".into(),
            pid: None,
            detail,
        };
        context.activity.configured(activity, ok).await;
    }
}

/// serve's own host is adopted only where its operator's ranges and seeds name it.
fn operator_admission(settings: &Settings) -> Admission {
    let mut named = settings.probe.clone();
    named.append(settings.seeds.clone());
    Admission::OperatorNamed(named)
}

struct ServeContext {
    membership: MembershipHandle,
    admission: Admission,
    discovery: Discovery,
    settings: Settings,
    stats: crate::stats::StatsHandle,
    links: crate::links::Links,
    /// Where auto-configure pushes are listed and counted.
    activity: crate::activity::ActivityHandle,
    /// True once the first discovery is done (see [`ServeContext::first_discovery`]).
    discovered: tokio::sync::watch::Receiver<bool>,
}

impl ServeContext {
    /// Waits for serve's first discovery, at most [`SERVE_FIRST_DISCOVERY_WAIT`]: a command
    /// sent as serve starts would otherwise find an empty member list and reach nobody.
    async fn first_discovery(&self) {
        let mut discovered = self.discovered.clone();
        let _ = tokio::time::timeout(
            SERVE_FIRST_DISCOVERY_WAIT,
            discovered.wait_for(|done| *done),
        )
        .await;
    }
}

/// Where a control message came from and where its reply goes.
struct Received {
    envelope: Vec<Vec<u8>>,
    peer: Peer,
}

impl Received {
    /// The message's origin and its body frame; None for a message without one.
    fn read(message: tmq::Multipart) -> Option<(Received, zmq::Message)> {
        let mut frames: Vec<zmq::Message> = message.into_iter().collect();
        let mut body = frames.pop()?;
        // ZeroMQ tells a TCP peer's address in the message metadata; anything else (no
        // address, or one that does not parse) is an unknown sender.
        let peer = body
            .gets("Peer-Address")
            .and_then(|address| address.parse().ok());
        let envelope = frames.iter().map(|frame| frame.to_vec()).collect();
        Some((Received { envelope, peer }, body))
    }

    /// The frames of `reply` to this message, or None when nothing goes back.
    fn reply(self, reply: &Value, cast: bool) -> Option<Vec<Vec<u8>>> {
        if cast || self.envelope.is_empty() {
            return None;
        }
        let mut out = self.envelope;
        out.push(reply.to_string().into_bytes());
        Some(out)
    }
}

/// Decodes each message in the loop, asks the [`Gate`] (requests in flight, the rate of
/// `register_node`), and runs what it admits as a task of its own, so a slow request (a
/// sweep, a frozen node) holds up no other; one it refuses is answered at once. The loop owns
/// the gate, the running tasks, whose replies come back through the [`JoinSet`], and the
/// guard that holds connections to their bound per address.
async fn control_loop(mut control: ControlSocket, context: Arc<ServeContext>) {
    let max_bytes = troupe::config::DEFAULT_MAX_MESSAGE_SIZE as usize;
    let mut gate = Gate::new(Instant::now());
    let mut running = JoinSet::new();
    let mut peers: HashMap<tokio::task::Id, Peer> = HashMap::new();
    loop {
        let idle = running.is_empty();
        let reply = tokio::select! {
            Some(done) = running.join_next_with_id() => {
                let (id, reply) = match done {
                    Ok((id, reply)) => (id, reply),
                    Err(failed) => {
                        tracing::error!("a control request failed: {failed}");
                        (failed.id(), None)
                    }
                };
                if let Some(peer) = peers.remove(&id) {
                    gate.finished(peer);
                }
                reply
            }
            rekeyed = troupe::sockets::watch_control(&mut control.connections, &mut control.key, idle) => {
                if let Some(pair) = rekeyed {
                    control.rebind(&pair);
                }
                None
            }
            incoming = control.router.next() => {
                let message = match received(incoming) {
                    ControlFlow::Break(()) => return,
                    ControlFlow::Continue(None) => continue,
                    ControlFlow::Continue(Some(message)) => message,
                };
                let Some((received, body)) = Received::read(message) else { continue };
                match Request::decode(&body, max_bytes) {
                    Err(bad) => received.reply(&error_reply(&bad.error, &bad.id), false),
                    Ok(request) => match gate.admit(&request.command, received.peer, Instant::now()) {
                        Err(bound) => {
                            let cast = request.cast;
                            received.reply(&error_reply(&bound, &request.id), cast)
                        }
                        Ok(()) => {
                            let peer = received.peer;
                            let task = running.spawn(answer(request, received, context.clone()));
                            peers.insert(task.id(), peer);
                            None
                        }
                    },
                }
            }
        };
        if let Some(frames) = reply {
            let _ = control.router.send(tmq::Multipart::from(frames)).await;
        }
    }
}

/// What the control loop does with what its socket gave: the message, or nothing to handle
/// (`Continue(None)`: a receive error, logged; the loop goes on, as the agent's does), or stop
/// (`Break`: the socket is gone).
fn received(
    incoming: Option<tmq::Result<tmq::Multipart>>,
) -> ControlFlow<(), Option<tmq::Multipart>> {
    match incoming {
        Some(Ok(message)) => ControlFlow::Continue(Some(message)),
        Some(Err(e)) => {
            tracing::warn!("control socket receive failed: {e}");
            ControlFlow::Continue(None)
        }
        None => ControlFlow::Break(()),
    }
}

/// Handles one admitted request; its reply frames, unless it was a cast.
async fn answer(
    request: Request,
    received: Received,
    context: Arc<ServeContext>,
) -> Option<Vec<Vec<u8>>> {
    let reply = match handle(&request, received.peer, &context).await {
        Ok(fields) => ok_reply(fields, &request.id),
        Err(error) => error_reply(&error, &request.id),
    };
    received.reply(&reply, request.cast)
}

async fn handle(
    request: &Request,
    peer: Peer,
    context: &ServeContext,
) -> Result<Map<String, Value>, CommandError> {
    if let Some(code) = request.brings_code() {
        return Err(CommandError::command(format!(
            "troupe serve never forwards '{code}': it brings code to a node. Run it on the node \
             itself, over the agent's owner-only Unix socket: troupe ctl \
             ipc://<state_dir>/control.sock {} ... (or circusctl --endpoint ipc://...)",
            request.command
        )));
    }
    let reads_members = request.properties.contains_key("node")
        || matches!(
            request.command.as_str(),
            "nodelist" | "status" | "list" | "numwatchers" | "numprocesses"
        );
    if reads_members {
        context.first_discovery().await;
    }
    // Before forwarding: `node` is a filter for these, not a destination.
    if let Some(reply) = crate::stats::control::handle(request, &context.stats).await {
        return reply;
    }
    if let Some(selection) = request.properties.get("node") {
        if request.command == "configure" {
            return push_configure(request, selection, context).await;
        }
        return forward(request, selection, context).await;
    }
    let props = Value::Object(request.properties.clone());
    match request.command.as_str() {
        "register_node" => {
            let registration = registration::check_registration(
                &request.properties,
                peer,
                &context.settings.config.cluster,
                &context.admission,
            )?;
            let members = context.membership.members();
            let known = members
                .iter()
                .any(|m| m.id.as_deref() == Some(registration.id.as_str()));
            if !known && table::is_full(&members) {
                return Err(table_full(1));
            }
            context
                .membership
                .send(MembershipMsg::Seen {
                    endpoint: registration.endpoint.clone(),
                    source: Source::Registered,
                    announced: crate::membership::Announced::Unsaid,
                    name: None,
                })
                .await;
            Ok(fields([("node", json!(registration.name))]))
        }
        "unregister_node" => {
            let members = context.membership.members();
            let id = registration::check_unregistration(&request.properties, peer, &members)?;
            context
                .membership
                .send(MembershipMsg::Goodbye { id_or_endpoint: id })
                .await;
            Ok(Map::new())
        }
        "nodelist" => {
            let state = nodelist_state(&props)?;
            let nodes: Vec<Value> = context
                .membership
                .rows_where(|row_state| state.is_none_or(|state| row_state == state))
                .iter()
                .map(MemberRow::to_json)
                .collect();
            let others = context.membership.other_clusters();
            let search = crate::nobody::Search::of(&context.settings, others);
            let mut reply = fields([("nodes", Value::Array(nodes)), ("search", json!(search))]);
            if let Some(warning) = troupe::sockets::short_of_files() {
                reply.insert("warning".into(), json!(warning));
            }
            Ok(reply)
        }
        "cluster" => {
            let range = props["range"]
                .as_str()
                .ok_or_else(|| CommandError::message("message invalid 'range' is missing"))?;
            let ranges = cluster_ranges(&context.settings, range)?;
            let refused_before = context.membership.refused();
            context.discovery.sweep_ranges(ranges).await;
            let refused = context.membership.refused() - refused_before;
            if refused > 0 {
                return Err(table_full(refused));
            }
            let alive = context
                .membership
                .members()
                .iter()
                .filter(|member| member.state == MemberState::Alive)
                .count();
            Ok(fields([("range", json!(range)), ("alive", json!(alive))]))
        }
        "status" | "list" | "numwatchers" | "numprocesses" => cluster_view(request, context).await,
        "globaloptions" => {
            let serve = &context.settings.config.serve;
            let endpoint = |port: u16| json!(format!("tcp://{}:{}", serve.bind, port));
            Ok(fields([(
                "options",
                json!({
                    "endpoint": endpoint(serve.control_port),
                    "pubsub_endpoint": endpoint(serve.events_port),
                    "stats_endpoint": endpoint(serve.stats_port),
                    "cluster": context.settings.config.cluster,
                }),
            )]))
        }
        other if NODE_COMMANDS.contains(&other) => Err(CommandError::message(format!(
            "'{other}' goes to nodes: add a 'node' property (a name, a glob or \"*\") to send it to the cluster"
        ))),
        other => Err(CommandError::new(
            Errno::UnknownCommand,
            format!("unknown command: '{other}'"),
        )),
    }
}

/// `configure` with `node`: serve makes each selected member's request itself (the peer
/// list from its membership, `restart` and `dry_run` from the request) and pushes it on its
/// kept connections ([`crate::configure::push_via`]).
async fn push_configure(
    request: &Request,
    selection: &Value,
    context: &ServeContext,
) -> Result<Map<String, Value>, CommandError> {
    let (selection, timeout) = forwarding(request, selection, context)?;
    let flag = |name: &str| match request.properties.get(name) {
        None => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(other) => Err(CommandError::message(format!(
            "'{name}' must be true or false, got {other}"
        ))),
    };
    let rows = context.membership.rows();
    let reach = crate::links::Reach::Kept(context.links.clone());
    let cluster = &context.settings.config.cluster;
    let replies = crate::configure::push_via(
        &reach,
        &rows,
        cluster,
        selection,
        timeout,
        flag("restart")?,
        flag("dry_run")?,
    )
    .await
    .map_err(|e| CommandError::message(e.to_string()))?;
    Ok(fields([("nodes", nodes_object(replies))]))
}

/// Per-node replies as the `nodes` object of serve's reply, moved, not copied.
fn nodes_object(replies: std::collections::BTreeMap<String, Value>) -> Value {
    Value::Object(replies.into_iter().collect())
}

/// Buffers of 128 KiB and more (a `configure` frame carries the whole peer list: 250 KB at
/// 1000 peers) are mapped and unmapped on their own. glibc otherwise raises that threshold to
/// the largest buffer freed and then serves them from its heap, which keeps the memory: with
/// 1000 members, four pushes left serve 100 MiB larger.
fn return_large_buffers() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning, and is safe to call from any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// The selection (None for every member) and the per-node timeout of a request with `node`.
fn forwarding<'a>(
    request: &Request,
    selection: &'a Value,
    context: &ServeContext,
) -> Result<(Option<&'a str>, Duration), CommandError> {
    let selection = match selection {
        Value::String(s) if s == "*" || s.is_empty() => None,
        Value::String(s) => Some(s.as_str()),
        other => {
            return Err(CommandError::message(format!(
                "'node' must be a string (names, globs, \"*\"), got {other}"
            )))
        }
    };
    let timeout = match request.properties.get(NODE_TIMEOUT) {
        None => context.settings.config.timeout,
        Some(value) => value
            .as_f64()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .filter(|t| !t.is_zero())
            .ok_or_else(|| {
                CommandError::message(format!(
                    "'{NODE_TIMEOUT}' must be a positive number of seconds, got {value}"
                ))
            })?,
    };
    Ok((selection, timeout))
}

/// Sends the request (without `node` and `node_timeout`) to the selected alive members.
async fn forward(
    request: &Request,
    selection: &Value,
    context: &ServeContext,
) -> Result<Map<String, Value>, CommandError> {
    let (selection, timeout) = forwarding(request, selection, context)?;
    let targets =
        select(context.membership.alive_targets(), selection).map_err(CommandError::message)?;
    let mut inner = request.clone();
    inner.properties.remove("node");
    inner.properties.remove(NODE_TIMEOUT);
    inner.id = Value::Null;
    let mut replies = context.links.fan_out(&targets, &inner, timeout).await;
    // Only the absent rows matter here: not a thousand alive members made JSON per request.
    let absent: Vec<Value> = context
        .membership
        .rows_where(crate::absent::is_absent_state)
        .iter()
        .map(MemberRow::to_json)
        .collect();
    crate::absent::add(&mut replies, &absent, selection);
    Ok(fields([("nodes", nodes_object(replies))]))
}

/// Read commands without `node` answer for the whole cluster in Circus's shapes, with the
/// node prefixed to each watcher (`node:watcher`), so the stock circusctl shows the cluster.
async fn cluster_view(
    request: &Request,
    context: &ServeContext,
) -> Result<Map<String, Value>, CommandError> {
    let targets = context.membership.alive_targets();
    let mut inner = request.clone();
    inner.id = Value::Null;
    let name = request
        .properties
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(name) = &name {
        // `status node:watcher` asks one watcher of one node.
        let (node, watcher) = name.split_once(':').ok_or_else(|| {
            CommandError::message(format!("program {name} not found (use node:watcher)"))
        })?;
        let target: Vec<_> = targets.into_iter().filter(|t| t.name == node).collect();
        if target.is_empty() {
            return Err(CommandError::message(format!("program {name} not found")));
        }
        inner.properties.insert("name".into(), json!(watcher));
        let mut replies = context
            .links
            .fan_out(&target, &inner, context.settings.config.timeout)
            .await;
        let reply = replies.remove(node).unwrap_or(Value::Null);
        if !reply.is_object() || !reply_ok(&reply) {
            let reason = reply["reason"].as_str().unwrap_or("node did not answer");
            return Err(CommandError::message(reason.to_string()));
        }
        let mut map = reply.as_object().cloned().unwrap_or_default();
        map.remove("id");
        map.remove("time");
        return Ok(map);
    }
    let replies = context
        .links
        .fan_out(&targets, &inner, context.settings.config.timeout)
        .await;
    let ok = replies.iter().filter(|(_, r)| reply_ok(r));
    Ok(match request.command.as_str() {
        "status" => {
            let by_watcher = |field: &'static str| -> Map<String, Value> {
                replies
                    .iter()
                    .filter(|(_, r)| reply_ok(r))
                    .flat_map(|(node, r)| {
                        r[field]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(move |(w, s)| (format!("{node}:{w}"), s.clone()))
                    })
                    .collect()
            };
            let mut reply = fields([("statuses", Value::Object(by_watcher("statuses")))]);
            let reasons = by_watcher("stopped_reasons");
            if !reasons.is_empty() {
                reply.insert("stopped_reasons".into(), Value::Object(reasons));
            }
            reply
        }
        "list" => {
            let watchers: Vec<String> = ok
                .flat_map(|(node, r)| {
                    r["watchers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(move |w| format!("{node}:{w}"))
                })
                .collect();
            fields([("watchers", json!(watchers))])
        }
        command => {
            let total: u64 = ok.filter_map(|(_, r)| r[command].as_u64()).sum();
            fields([(command, json!(total))])
        }
    })
}

/// The configured ranges plus the one a `cluster` request names. A range remembered in
/// serve's own state dir (`troupe cluster` on this host writes it there before it asks, after
/// checking its size against `--force`) is the operator's; any other is a client's, which may
/// not reach this host and is swept within [`SERVE_REMOTE_SWEEP_ADDRESSES`].
fn cluster_ranges(settings: &Settings, range: &str) -> Result<Ranges, CommandError> {
    let targets = parse_targets(range).map_err(|e| CommandError::message(e.to_string()))?;
    let mut ranges = Ranges {
        operator: settings.probe.clone(),
        requested: Default::default(),
    };
    if remembered_by_operator(settings, range) {
        ranges.operator.append(targets);
        return Ok(ranges);
    }
    let own_host = targets.this_host_items();
    if !own_host.is_empty() {
        return Err(CommandError::command(format!(
            "cluster: {} would reach troupe serve's own host, which a client's range may not; \
             its operator can name it with troupe serve --probe, the probe list of \
             troupe.toml, or troupe cluster with serve's --state-dir",
            own_host.join(", ")
        )));
    }
    if targets.len() > SERVE_REMOTE_SWEEP_ADDRESSES {
        return Err(CommandError::command(format!(
            "cluster: {range} is {} addresses, more than a client may have troupe serve sweep \
             (troupe::bounds::SERVE_REMOTE_SWEEP_ADDRESSES = {SERVE_REMOTE_SWEEP_ADDRESSES}); \
             its operator can give larger ranges with troupe serve --probe, troupe.toml, or \
             troupe cluster --force with serve's --state-dir",
            targets.len()
        )));
    }
    ranges.requested = targets;
    Ok(ranges)
}

/// Whether `range` is one that `troupe cluster` remembered in serve's state dir.
fn remembered_by_operator(settings: &Settings, range: &str) -> bool {
    match ControllerState::load(&settings.config.state_dir) {
        Ok(state) => state.probe.iter().any(|remembered| remembered == range),
        Err(e) => {
            tracing::warn!("{e:#}");
            false
        }
    }
}

/// The error for members not adopted because the table is full.
fn table_full(refused: u64) -> CommandError {
    CommandError::command(format!(
        "{refused} node(s) not adopted: {}",
        table::full_reason()
    ))
}

/// `nodelist`'s optional `state` filter (a member state, or the silent endpoints' "no
/// reply"): a client that only reports locked nodes asks for those, and a thousand-member
/// reply stays out of its path.
fn nodelist_state(props: &Value) -> Result<Option<&'static str>, CommandError> {
    let Some(state) = props.get("state") else {
        return Ok(None);
    };
    let states = MemberState::ALL
        .map(MemberState::as_str)
        .into_iter()
        .chain([crate::membership::NO_REPLY]);
    states
        .clone()
        .find(|known| state == known)
        .map(Some)
        .ok_or_else(|| {
            let names: Vec<String> = states.map(|s| format!("\"{s}\"")).collect();
            CommandError::message(format!(
                "message invalid 'state' must be one of {}",
                names.join(", ")
            ))
        })
}

fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe::config::controller::ControllerConfig;

    fn settings(state_dir: &std::path::Path) -> Settings {
        Settings {
            config: ControllerConfig {
                state_dir: state_dir.to_path_buf(),
                ..ControllerConfig::default()
            },
            probe: parse_targets("10.0.0.1").unwrap(),
            seeds: Default::default(),
            multicast: false,
            expect: None,
        }
    }

    /// One failed receive is not the end of the socket: the loop goes on (as the agent's
    /// does); only the stream's end stops it.
    #[test]
    fn a_receive_error_is_logged_and_the_control_loop_goes_on() {
        let error = tmq::TmqError::Zmq(zmq::Error::EINTR);
        assert!(matches!(
            received(Some(Err(error))),
            ControlFlow::Continue(None)
        ));
        assert!(matches!(received(None), ControlFlow::Break(())));
        let message = tmq::Multipart::from(vec![b"id".to_vec(), b"{}".to_vec()]);
        assert!(matches!(
            received(Some(Ok(message))),
            ControlFlow::Continue(Some(_))
        ));
    }

    #[test]
    fn a_clients_range_may_not_reach_this_host_nor_exceed_the_remote_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        let ranges = cluster_ranges(&settings, "10.1.0.0/22").unwrap();
        assert_eq!(ranges.operator, settings.probe);
        assert_eq!(ranges.requested.len(), 1022);
        let refused = |range: &str| cluster_ranges(&settings, range).unwrap_err().reason;
        assert!(refused("127.0.0.1").contains("own host"));
        assert!(refused("10.0.0.2,0.0.0.0").contains("0.0.0.0:5555"));
        let too_large = refused("10.1.0.0-10.1.4.0");
        assert!(
            too_large.contains("1025 addresses") && too_large.contains("SERVE_REMOTE_SWEEP"),
            "{too_large}"
        );
        assert!(refused("10.0.0.300").contains("octet"));
    }

    #[test]
    fn a_range_troupe_cluster_remembered_in_serves_state_dir_is_the_operators() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        for range in ["127.0.0.1-16", "10.0.0.0/8"] {
            assert!(cluster_ranges(&settings, range).is_err(), "{range}");
            ControllerState {
                probe: vec![range.into()],
                expect: None,
            }
            .save(dir.path())
            .unwrap();
            let ranges = cluster_ranges(&settings, range).unwrap();
            assert!(ranges.requested.is_empty(), "{range}");
            assert_eq!(
                ranges.operator.len(),
                1 + parse_targets(range).unwrap().len()
            );
        }
    }
}
