//! One simulated agent: its three listening sockets, and the task that answers its control
//! requests and publishes its stats stream, in the shapes a troupe-agent uses (the core's
//! protocol types), so a controller cannot tell the difference on the wire.
//!
//! Cheap by design, so that the swarm's own CPU stays small next to the controller's: the
//! `nodeinfo` reply (a heartbeat each second from `troupe serve`) is serialised once per
//! start and spliced around the request's id; replies and samples go straight to ZeroMQ
//! (never blocking: a ROUTER drops what it cannot route, a PUB what a subscriber cannot take).

use futures::StreamExt;
use serde_json::{json, Map, Value};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tmq::AsZmqSocket;
use troupe::protocol::{
    error_reply, format_cpu_time, format_mem, now_epoch, ok_reply, CommandError, Endpoints, Errno,
    NodeInfo, ProcessInfo, Request, WatcherSummary,
};
use troupe::sockets::ServerContext;

/// The largest control request read (a troupe-agent's default `max_message_size`).
const MAX_MESSAGE_BYTES: u64 = troupe::config::DEFAULT_MAX_MESSAGE_SIZE;
/// The pid every simulated agent reports for itself, and the first of its processes'.
const AGENT_PID: u32 = 100;
const FIRST_PROCESS_PID: u32 = 1000;
/// Each simulated process's resident and virtual memory.
const PROCESS_RSS: u64 = 12 << 20;
const PROCESS_VMS: u64 = 256 << 20;

/// What every simulated agent has in common.
#[derive(Debug)]
pub struct Shape {
    pub cluster: String,
    pub port: u16,
    /// Watcher names, sorted.
    pub watchers: Vec<String>,
    pub processes: u32,
    pub stats_interval: Duration,
    /// The cluster key's fingerprint, claimed in `nodeinfo` as a keyed agent does.
    pub fingerprint: Option<String>,
}

/// Who one simulated agent is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub id: String,
    pub address: Ipv4Addr,
}

impl Identity {
    /// Agent `index` of a swarm: its name, and an id that stays the same across restarts of
    /// the agent and of the swarm (a hash of the name and cluster).
    pub fn new(prefix: &str, cluster: &str, index: u32, address: Ipv4Addr) -> Identity {
        use sha2::Digest;
        let name = format!("{prefix}-{:05}", index + 1);
        let digest = sha2::Sha256::digest(format!("troupe-swarm/{cluster}/{name}"));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let id = uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string();
        Identity { name, id, address }
    }

    fn endpoint(&self, port: u16) -> String {
        format!("tcp://{}:{port}", self.address)
    }
}

/// What the agents did, counted for the `tally` lines.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub samples: AtomicU64,
}

/// A simulated agent's sockets, bound: it is reachable from here on.
pub struct Bound {
    control: tmq::router::Router,
    /// Bound so that a controller's subscription connects; nothing happens to publish.
    _events: zmq::Socket,
    stats: zmq::Socket,
}

/// Binds agent `identity`'s control, events and stats sockets.
pub fn bind(server: &ServerContext, shape: &Shape, identity: &Identity) -> Result<Bound, String> {
    let listen = |kind, port: u16, max: u64| {
        let endpoint = identity.endpoint(port);
        troupe::sockets::bind_simulated_listener(server, kind, &endpoint, max)
            .map_err(|e| format!("cannot bind {endpoint}: {e}"))
    };
    let control = listen(zmq::ROUTER, shape.port, MAX_MESSAGE_BYTES)?;
    let events = listen(zmq::PUB, shape.port + 1, MAX_MESSAGE_BYTES)?;
    let stats = listen(zmq::PUB, shape.port + 2, MAX_MESSAGE_BYTES)?;
    let control = <tmq::router::Router as tmq::FromZmqSocket<_>>::from_zmq_socket(control)
        .map_err(|e| format!("cannot watch {}: {e}", identity.endpoint(shape.port)))?;
    Ok(Bound {
        control,
        _events: events,
        stats,
    })
}

/// A running simulated agent; the task ends (and its sockets close) when aborted.
pub struct Agent {
    shape: Arc<Shape>,
    identity: Identity,
    started: f64,
    /// The `node` of every `nodeinfo` reply, serialised once.
    node_json: String,
    counters: Arc<Counters>,
    rounds: u64,
}

impl Agent {
    pub fn new(shape: Arc<Shape>, identity: Identity, counters: Arc<Counters>) -> Agent {
        let started = now_epoch();
        let node = node_info(&shape, &identity, started);
        let node_json = serde_json::to_string(&node).expect("a NodeInfo always serialises");
        Agent {
            shape,
            identity,
            started,
            node_json,
            counters,
            rounds: 0,
        }
    }

    /// Answers requests and publishes stats until the task is aborted.
    pub async fn run(mut self, mut bound: Bound) {
        let interval = self.shape.stats_interval;
        // A random phase, as agents started at different moments have.
        let first = tokio::time::Instant::now() + interval.mul_f64(fastrand::f64());
        let mut tick = tokio::time::interval_at(first, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = bound.control.next() => match message {
                    Some(Ok(message)) => {
                        let frames: Vec<Vec<u8>> = message.iter().map(|f| f.to_vec()).collect();
                        self.on_request(&bound.control, frames);
                    }
                    Some(Err(e)) => tracing::warn!(agent = %self.identity.name, "receive failed: {e}"),
                    None => return,
                },
                _ = tick.tick() => self.publish_stats(&bound.stats),
            }
        }
    }

    fn on_request(&self, control: &tmq::router::Router, mut frames: Vec<Vec<u8>>) {
        let Some(body) = frames.pop() else { return };
        let Some(reply) = self.answer(&body) else {
            return;
        };
        frames.push(reply);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = control.get_socket().send_multipart(frames, zmq::DONTWAIT) {
            tracing::debug!(agent = %self.identity.name, "reply not sent: {e}");
        }
    }

    /// The reply to one control frame; None for a cast.
    pub fn answer(&self, body: &[u8]) -> Option<Vec<u8>> {
        let request = match Request::decode(body, MAX_MESSAGE_BYTES as usize) {
            Ok(request) => request,
            Err(e) => return Some(error_reply(&e.error, &e.id).to_string().into_bytes()),
        };
        if request.cast {
            return None;
        }
        if request.command == "nodeinfo" {
            let id = serde_json::to_string(&request.id).expect("a JSON value serialises");
            let reply = format!(
                r#"{{"status":"ok","time":{},"node":{},"id":{id}}}"#,
                now_epoch(),
                self.node_json
            );
            return Some(reply.into_bytes());
        }
        let reply = match self.command(&request) {
            Ok(fields) => ok_reply(fields, &request.id),
            Err(e) => error_reply(&e, &request.id),
        };
        Some(reply.to_string().into_bytes())
    }

    fn command(&self, request: &Request) -> Result<Map<String, Value>, CommandError> {
        let name = match request.properties.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(self.watcher(name)?),
            Some(other) => {
                return Err(CommandError::message(format!(
                    "'name' must be a string, got {other}"
                )))
            }
        };
        let fields = |pairs: Vec<(&str, Value)>| -> Map<String, Value> {
            pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
        };
        Ok(match (request.command.as_str(), name) {
            ("status", None) => {
                let statuses: Map<String, Value> = self
                    .shape
                    .watchers
                    .iter()
                    .map(|w| (w.clone(), json!("active")))
                    .collect();
                fields(vec![("statuses", Value::Object(statuses))])
            }
            // Circus's quirk: the watcher's state replaces "ok".
            ("status", Some(_)) => fields(vec![("status", json!("active"))]),
            ("list", None) => fields(vec![("watchers", json!(self.shape.watchers))]),
            ("list", Some(w)) => fields(vec![("pids", json!(self.pids(w)))]),
            ("numwatchers", _) => fields(vec![("numwatchers", json!(self.shape.watchers.len()))]),
            ("numprocesses", None) => {
                let total = self.shape.watchers.len() as u32 * self.shape.processes;
                fields(vec![("numprocesses", json!(total))])
            }
            ("numprocesses", Some(w)) => fields(vec![
                ("numprocesses", json!(self.shape.processes)),
                ("watcher_name", json!(self.shape.watchers[w])),
            ]),
            ("stats", None) => {
                let infos: Map<String, Value> = (0..self.shape.watchers.len())
                    .map(|w| (self.shape.watchers[w].clone(), self.watcher_infos(w)))
                    .collect();
                fields(vec![("infos", Value::Object(infos))])
            }
            ("stats", Some(w)) => fields(vec![
                ("name", json!(self.shape.watchers[w])),
                ("info", self.watcher_infos(w)),
            ]),
            ("dstats", _) => {
                let mut info = json!(self.process_info(AGENT_PID, "troupe-agent"));
                info["children"] = json!([]);
                fields(vec![("info", info)])
            }
            (command, _) => {
                return Err(CommandError::new(
                    Errno::UnknownCommand,
                    format!(
                        "unknown command: {command:?} (troupe-swarm simulates nodeinfo, status, \
                         list, numwatchers, numprocesses, stats and dstats)"
                    ),
                ))
            }
        })
    }

    /// The index of the watcher `name`, as Circus looks it up (case-insensitively).
    fn watcher(&self, name: &str) -> Result<usize, CommandError> {
        self.shape
            .watchers
            .iter()
            .position(|w| w.eq_ignore_ascii_case(name))
            .ok_or_else(|| CommandError::message(format!("program {name} not found")))
    }

    fn pids(&self, watcher: usize) -> Vec<u32> {
        let first = FIRST_PROCESS_PID + watcher as u32 * self.shape.processes;
        (first..first + self.shape.processes).collect()
    }

    fn watcher_infos(&self, watcher: usize) -> Value {
        let infos: Map<String, Value> = self
            .pids(watcher)
            .into_iter()
            .map(|pid| (pid.to_string(), json!(self.process_info(pid, "sleep"))))
            .collect();
        Value::Object(infos)
    }

    /// A process as the agent's sampler reports it; CPU wanders a little from round to round.
    fn process_info(&self, pid: u32, cmdline: &str) -> ProcessInfo {
        let now = now_epoch();
        let age = (now - self.started).max(0.0);
        let cpu = ((self.rounds + u64::from(pid)) % 17) as f64 / 10.0;
        ProcessInfo {
            pid,
            mem_info1: format_mem(PROCESS_RSS),
            mem_info2: format_mem(PROCESS_VMS),
            cpu,
            mem: 0.3,
            ctime: format_cpu_time(age * cpu / 100.0),
            username: "root".into(),
            nice: 0,
            create_time: self.started,
            age,
            cmdline: cmdline.into(),
            children: (pid != AGENT_PID).then(Vec::new),
            started: (pid != AGENT_PID).then_some(self.started),
            wid: (pid != AGENT_PID).then(|| pid - FIRST_PROCESS_PID + 1),
        }
    }

    /// One round of the stats stream, as a troupe-agent publishes it: every process
    /// (`stat.<watcher>.<pid>`, then the agent's own `stat.circus.<pid>`), then an aggregate
    /// per watcher (`stat.<watcher>`, `stat.circus`).
    fn publish_stats(&mut self, stats: &zmq::Socket) {
        self.rounds += 1;
        let mut messages = Vec::new();
        let mut aggregates = Vec::new();
        let owners =
            (0..self.shape.watchers.len()).map(|w| (self.shape.watchers[w].as_str(), self.pids(w)));
        for (owner, pids) in owners.chain(std::iter::once(("circus", vec![AGENT_PID]))) {
            let mut cpu = 0.0;
            let mut age: f64 = 0.0;
            for &pid in &pids {
                let agent = pid == AGENT_PID;
                let info = self.process_info(pid, if agent { "troupe-agent" } else { "sleep" });
                cpu += info.cpu;
                age = age.max(info.age);
                let mut sample = json!(info);
                sample["subtopic"] = json!(pid);
                sample["name"] = if agent {
                    json!("troupe-agent")
                } else {
                    Value::Null
                };
                messages.push((format!("stat.{owner}.{pid}"), sample.to_string()));
            }
            let n = pids.len().max(1) as f64;
            let aggregate =
                json!({"pid": pids, "cpu": cpu / n, "mem": 0.3 * pids.len() as f64, "age": age});
            aggregates.push((format!("stat.{owner}"), aggregate.to_string()));
        }
        messages.append(&mut aggregates);
        let count = messages.len() as u64;
        for (topic, payload) in messages {
            if let Err(e) =
                stats.send_multipart([topic.into_bytes(), payload.into_bytes()], zmq::DONTWAIT)
            {
                tracing::debug!(agent = %self.identity.name, "stats not published: {e}");
            }
        }
        self.counters.samples.fetch_add(count, Ordering::Relaxed);
    }
}

/// The `nodeinfo` of a simulated agent started at `started`.
fn node_info(shape: &Shape, identity: &Identity, started: f64) -> NodeInfo {
    let watchers = shape
        .watchers
        .iter()
        .map(|w| {
            let summary = WatcherSummary {
                status: "active".into(),
                numprocesses: shape.processes as usize,
                stopped_reason: None,
            };
            (w.clone(), summary)
        })
        .collect();
    NodeInfo {
        id: identity.id.clone(),
        name: identity.name.clone(),
        cluster: shape.cluster.clone(),
        version: troupe::VERSION.to_string(),
        hostname: identity.name.clone(),
        addresses: vec![identity.address.to_string()],
        endpoints: Endpoints {
            control: identity.endpoint(shape.port),
            pubsub: identity.endpoint(shape.port + 1),
            stats: identity.endpoint(shape.port + 2),
        },
        started,
        watchers,
        fingerprint: shape.fingerprint.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        let shape = Shape {
            cluster: "lab".into(),
            port: 5555,
            watchers: vec!["db".into(), "web".into()],
            processes: 3,
            stats_interval: Duration::from_secs(1),
            fingerprint: None,
        };
        let identity = Identity::new("sim", "lab", 4, Ipv4Addr::new(127, 1, 0, 5));
        Agent::new(Arc::new(shape), identity, Arc::default())
    }

    fn ask(agent: &Agent, request: Value) -> Value {
        serde_json::from_slice(&agent.answer(request.to_string().as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn nodeinfo_is_a_node_the_controller_adopts() {
        let agent = agent();
        let reply = ask(&agent, json!({"command": "NodeInfo", "id": "abc"}));
        assert_eq!(reply["status"], "ok");
        assert_eq!(reply["id"], "abc");
        let node: NodeInfo = serde_json::from_value(reply["node"].clone()).unwrap();
        assert_eq!(node.name, "sim-00005");
        assert_eq!(node.endpoints.stats, "tcp://127.1.0.5:5557");
        troupe::config::names::check_node_id(&node.id).unwrap();
        let again = Identity::new("sim", "lab", 4, Ipv4Addr::new(127, 1, 0, 5));
        assert_eq!(node.id, again.id, "the id is kept across restarts");
        assert_ne!(node.id, Identity::new("sim", "lab", 5, again.address).id);
    }

    #[test]
    fn circus_read_commands_get_circus_shapes() {
        let agent = agent();
        let status = ask(&agent, json!({"command": "status", "id": 1}));
        assert_eq!(status["statuses"], json!({"db": "active", "web": "active"}));
        let one = ask(
            &agent,
            json!({"command": "status", "properties": {"name": "WEB"}}),
        );
        assert_eq!(one["status"], "active");
        let pids = ask(
            &agent,
            json!({"command": "list", "properties": {"name": "web"}}),
        );
        assert_eq!(pids["pids"], json!([1003, 1004, 1005]));
        let count = ask(&agent, json!({"command": "numprocesses"}));
        assert_eq!(count["numprocesses"], 6);
        let stats = ask(&agent, json!({"command": "stats"}));
        assert_eq!(stats["infos"]["db"]["1001"]["pid"], 1001);
    }

    #[test]
    fn bad_requests_get_circus_errors() {
        let agent = agent();
        let unknown = ask(&agent, json!({"command": "start", "id": 7}));
        assert_eq!(
            (unknown["errno"].clone(), unknown["id"].clone()),
            (json!(2), json!(7))
        );
        let missing = ask(
            &agent,
            json!({"command": "list", "properties": {"name": "nope"}}),
        );
        assert_eq!(missing["errno"], 3);
        let garbage: Value = serde_json::from_slice(&agent.answer(b"{nope").unwrap()).unwrap();
        assert_eq!(garbage["errno"], 1);
        assert!(agent
            .answer(br#"{"command": "status", "msg_type": "cast"}"#)
            .is_none());
    }
}
