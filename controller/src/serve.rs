//! `troupe serve`: the long-running controller. Continuous discovery and membership, a
//! control socket (register_node, unregister_node, nodelist, cluster, stats_snapshot,
//! stats_history), an events socket publishing `node.<name>.join|suspect|down|leave|update`,
//! and a stats socket re-publishing every member's stats (see [`crate::stats`]). Commands for
//! members go out on connections kept across requests (see [`crate::links`]).

use crate::broadcast::{reply_ok, select};
use crate::command::alive_targets;
use crate::discovery::{Discovery, Sources};
use crate::membership::{MemberState, MembershipHandle, MembershipMsg, Source};
use crate::settings::Settings;
use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use troupe::discovery::{parse_targets, ProbeTargets};
use troupe::protocol::{error_reply, ok_reply, CommandError, Errno, Registration, Request};

/// Runs until SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let serving = start(settings)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    serving.stop();
    tracing::info!("troupe serve stopped");
    Ok(())
}

/// A running controller; it stops when dropped.
pub struct Serving {
    pub membership: MembershipHandle,
    pub control_endpoint: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Keeps the ZAP handler of the listening sockets running.
    _sockets: troupe::sockets::ServerContext,
}

impl Serving {
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds the controller's sockets and starts discovery, membership and the control loop.
pub fn start(settings: Settings) -> anyhow::Result<Serving> {
    let serve = settings.config.serve.clone();
    let (membership, discovery) = Discovery::start(sources(&settings))?;
    let zmq = troupe::sockets::ServerContext::new(troupe::zap::Policy::default())
        .context("starting the ZAP handler")?;
    let control_endpoint = format!("tcp://{}:{}", serve.bind, serve.control_port);
    let router = troupe::sockets::bind_control(
        &zmq,
        &control_endpoint,
        troupe::config::DEFAULT_MAX_MESSAGE_SIZE,
    )
    .with_context(|| format!("binding the controller's control socket on {control_endpoint}"))?;
    let events_endpoint = format!("tcp://{}:{}", serve.bind, serve.events_port);
    let events = troupe::sockets::bind_publisher(&zmq, &events_endpoint)
        .with_context(|| format!("binding the controller's events socket on {events_endpoint}"))?;
    let stats_endpoint = format!("tcp://{}:{}", serve.bind, serve.stats_port);
    let stats_socket = troupe::sockets::bind_publisher(&zmq, &stats_endpoint)
        .with_context(|| format!("binding the controller's stats socket on {stats_endpoint}"))?;
    let (stats, stats_actor) = crate::stats::spawn(
        crate::stats::Feed::Members(membership.clone()),
        Some(stats_socket),
    );
    let (links, links_actor) =
        crate::links::Links::spawn(zmq.context().clone(), Some(membership.clone()));
    let mut member_events = membership.subscribe();
    let publisher = tokio::spawn(async move {
        while let Ok(event) = member_events.recv().await {
            troupe::sockets::publish_now(
                &events,
                event.topic,
                event.payload.to_string().into_bytes(),
            );
        }
    });
    tracing::info!(control = %control_endpoint, events = %events_endpoint, stats = %stats_endpoint, multicast = settings.multicast, "troupe serve ready");
    let context = Arc::new(ServeContext {
        membership: membership.clone(),
        discovery,
        settings,
        stats,
        links,
    });
    let mut tasks = vec![publisher, stats_actor, links_actor];
    if context.settings.config.serve.auto_configure {
        tasks.push(tokio::spawn(auto_configure(context.clone())));
    }
    tasks.push(tokio::spawn(control_loop(router, context)));
    Ok(Serving {
        membership,
        control_endpoint,
        tasks,
        _sockets: zmq,
    })
}

/// `--auto-configure`: re-push `configure` (restarting only what changed) once membership
/// has been quiet for `quiet_period` after a join, leave, down or address change, so a node
/// joining mid-experiment is folded in without a storm of pushes.
async fn auto_configure(context: Arc<ServeContext>) {
    use crate::membership::EventKind;
    let quiet = context.settings.config.serve.quiet_period;
    let mut events = context.membership.subscribe();
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
        let nodes = context.membership.members_json();
        let options = crate::command::BroadcastOptions {
            node: None,
            timeout: context.settings.config.timeout,
            json: false,
        };
        let cluster = &context.settings.config.cluster;
        match crate::configure::push(&nodes, cluster, &options, true, false).await {
            Ok(replies) => {
                let failed: Vec<&String> = replies
                    .iter()
                    .filter(|(_, r)| !reply_ok(r))
                    .map(|(n, _)| n)
                    .collect();
                tracing::info!(
                    nodes = replies.len(),
                    ?failed,
                    "auto-configure pushed the peer list"
                );
            }
            Err(e) => tracing::warn!("auto-configure failed: {e:#}"),
        }
    }
}

pub fn sources(settings: &Settings) -> Sources {
    Sources {
        cluster: settings.config.cluster.clone(),
        multicast: settings.multicast,
        probe: settings.probe.clone(),
        seeds: settings.seeds.clone(),
        probe_interval: settings.config.probe_interval,
        limits: Default::default(),
    }
}

struct ServeContext {
    membership: MembershipHandle,
    discovery: Discovery,
    settings: Settings,
    stats: crate::stats::StatsHandle,
    links: crate::links::Links,
}

async fn control_loop(mut router: tmq::router::Router, context: Arc<ServeContext>) {
    let (replies_tx, mut replies) = mpsc::unbounded_channel::<Vec<Vec<u8>>>();
    loop {
        tokio::select! {
            Some(frames) = replies.recv() => {
                let _ = router.send(tmq::Multipart::from(frames)).await;
            }
            incoming = router.next() => {
                let Some(Ok(message)) = incoming else { return };
                let frames: Vec<Vec<u8>> = message.iter().map(|m| m.to_vec()).collect();
                let context = context.clone();
                let replies = replies_tx.clone();
                tokio::spawn(async move {
                    if let Some(reply) = handle_frames(frames, &context).await {
                        let _ = replies.send(reply);
                    }
                });
            }
        }
    }
}

async fn handle_frames(mut frames: Vec<Vec<u8>>, context: &ServeContext) -> Option<Vec<Vec<u8>>> {
    let body = frames.pop()?;
    let envelope = frames;
    let (reply, cast) =
        match Request::decode(&body, troupe::config::DEFAULT_MAX_MESSAGE_SIZE as usize) {
            Err(bad) => (error_reply(&bad.error, &bad.id), false),
            Ok(request) => {
                let reply = match handle(&request, context).await {
                    Ok(fields) => ok_reply(fields, &request.id),
                    Err(error) => error_reply(&error, &request.id),
                };
                (reply, request.cast)
            }
        };
    if cast || envelope.is_empty() {
        return None;
    }
    let mut out = envelope;
    out.push(reply.to_string().into_bytes());
    Some(out)
}

async fn handle(
    request: &Request,
    context: &ServeContext,
) -> Result<Map<String, Value>, CommandError> {
    // Before forwarding: `node` is a filter for these, not a destination.
    if let Some(reply) = crate::stats::control::handle(request, &context.stats).await {
        return reply;
    }
    if let Some(selection) = request.properties.get("node") {
        return forward(request, selection, context).await;
    }
    let props = Value::Object(request.properties.clone());
    match request.command.as_str() {
        "register_node" => {
            let registration: Registration = serde_json::from_value(props)
                .map_err(|e| CommandError::message(format!("register_node: {e}")))?;
            if registration.cluster != context.settings.config.cluster {
                return Err(CommandError::command(format!(
                    "this controller serves cluster '{}', not '{}'",
                    context.settings.config.cluster, registration.cluster
                )));
            }
            context
                .membership
                .send(MembershipMsg::Seen {
                    endpoint: registration.endpoint.clone(),
                    source: Source::Registered,
                })
                .await;
            Ok(fields([("node", json!(registration.name))]))
        }
        "unregister_node" => {
            let id = props["id"]
                .as_str()
                .ok_or_else(|| CommandError::message("message invalid 'id' is missing"))?;
            context
                .membership
                .send(MembershipMsg::Goodbye {
                    id_or_endpoint: id.to_string(),
                })
                .await;
            Ok(Map::new())
        }
        "nodelist" => {
            let nodes = context.membership.members_json();
            Ok(fields([("nodes", json!(nodes))]))
        }
        "cluster" => {
            let range = props["range"]
                .as_str()
                .ok_or_else(|| CommandError::message("message invalid 'range' is missing"))?;
            let targets = cluster_ranges(&context.settings, range)?;
            context.discovery.sweep_ranges(targets).await;
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
        other if crate::circus_args::COMMANDS.contains(&other) => Err(CommandError::message(format!(
            "'{other}' goes to nodes: add a 'node' property (a name, a glob or \"*\") to send it to the cluster"
        ))),
        other => Err(CommandError::new(
            Errno::UnknownCommand,
            format!("unknown command: '{other}'"),
        )),
    }
}

/// A property of a forwarded request (next to `node`): the per-node timeout in seconds,
/// instead of the controller's configured one. Removed before the request goes to nodes.
pub const NODE_TIMEOUT: &str = "node_timeout";

/// Sends the request (without `node` and `node_timeout`) to the selected alive members.
async fn forward(
    request: &Request,
    selection: &Value,
    context: &ServeContext,
) -> Result<Map<String, Value>, CommandError> {
    let selection = match selection {
        Value::String(s) if s == "*" || s.is_empty() => None,
        Value::String(s) => Some(s.as_str()),
        other => {
            return Err(CommandError::message(format!(
                "'node' must be a string (names, globs, \"*\"), got {other}"
            )))
        }
    };
    let targets =
        select(alive_targets(&context.membership), selection).map_err(CommandError::message)?;
    let mut inner = request.clone();
    inner.properties.remove("node");
    let timeout = match inner.properties.remove(NODE_TIMEOUT) {
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
    inner.id = Value::Null;
    let replies = context.links.fan_out(&targets, &inner, timeout).await;
    Ok(fields([("nodes", json!(replies))]))
}

/// Read commands without `node` answer for the whole cluster in Circus's shapes, with the
/// node prefixed to each watcher (`node:watcher`), so the stock circusctl shows the cluster.
async fn cluster_view(
    request: &Request,
    context: &ServeContext,
) -> Result<Map<String, Value>, CommandError> {
    let targets = alive_targets(&context.membership);
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
            let statuses: Map<String, Value> = ok
                .flat_map(|(node, r)| {
                    r["statuses"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(move |(w, s)| (format!("{node}:{w}"), s.clone()))
                })
                .collect();
            fields([("statuses", Value::Object(statuses))])
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

/// The configured ranges plus a new one from `cluster`.
fn cluster_ranges(settings: &Settings, range: &str) -> Result<ProbeTargets, CommandError> {
    let mut targets = settings.probe.clone();
    targets.append(parse_targets(range).map_err(|e| CommandError::message(e.to_string()))?);
    targets
        .check_size(false)
        .map_err(|e| CommandError::message(e.to_string()))?;
    Ok(targets)
}

fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
