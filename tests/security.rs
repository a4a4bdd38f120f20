//! Attacks on the agent and on `troupe serve` from a second host, as SECURITY.md's "How it is
//! tested" says: a [`Lab`] is a segment with the victim on host 1 and the attacker on host 2,
//! each a network namespace joined by a bridge. Every submodule is one class of hole, and each
//! of its tests failed on the code before that hole was closed.

mod bounds;
mod circus_bind;
mod cluster_key;
mod configure_injection;
mod control_access;
mod follow_key;
mod impostor;
mod locked;
mod reset_race;
mod rotation;
mod serve_deputy;
mod signal_scope;

use crate::support::netns::{Host, Segment};
use crate::support::{bin, wait_for, Daemon};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use troupe::protocol::Request;

/// A victim host and an attacker host on one segment.
pub struct Lab {
    pub segment: Segment,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        Lab {
            segment: Segment::new(tag, 2),
        }
    }

    pub fn victim(&self) -> &Host {
        self.segment.host(1)
    }

    pub fn attacker(&self) -> &Host {
        self.segment.host(2)
    }

    /// Sends one request from the attacker's host and returns the reply, or the client's
    /// error text (a timeout when the daemon said nothing).
    pub fn attack(
        &self,
        endpoint: &str,
        command: &str,
        properties: Value,
    ) -> Result<Value, String> {
        let properties: Map<String, Value> = match properties {
            Value::Object(map) => map,
            other => panic!("properties must be an object, got {other}"),
        };
        let endpoint = endpoint.to_string();
        let command = command.to_string();
        self.attacker().ns.run(move || {
            troupe::client::call(
                &endpoint,
                Request::new(&command, properties),
                Duration::from_secs(3),
            )
            .map_err(|e| e.to_string())
        })
    }
}

/// A `troupe-agent` running on a lab host with mDNS off, its state and log in a scratch dir.
pub struct HostAgent {
    pub daemon: Daemon,
    pub dir: tempfile::TempDir,
    /// `tcp://<host address>:5555`.
    pub endpoint: String,
}

impl HostAgent {
    /// Starts an agent bound to 0.0.0.0 on `host` with `agent_extra` lines in `[agent]` and
    /// `watchers` (TOML `[watcher.X]` sections), and waits until it answers from the host.
    pub fn start(host: &Host, agent_extra: &str, watchers: &str) -> HostAgent {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = HostAgent::spawn_in(dir, host, "victim", agent_extra, watchers);
        let probe = agent.endpoint.clone();
        wait_for("the agent on its host", Duration::from_secs(10), || {
            host.ns.run(|| {
                troupe::client::call(
                    &probe,
                    Request::new("numwatchers", Map::new()),
                    Duration::from_millis(300),
                )
                .is_ok()
            })
        });
        agent
    }

    /// Starts an agent named `name` on `host`, its config, state and log in `dir` (where a
    /// test may have put its key file first), without waiting for it: a keyed agent answers
    /// only its key's holders, so the caller waits as one.
    pub fn spawn_in(
        dir: tempfile::TempDir,
        host: &Host,
        name: &str,
        agent_extra: &str,
        watchers: &str,
    ) -> HostAgent {
        let config = dir.path().join("troupe-agent.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nname = \"{name}\"\nbind = \"0.0.0.0\"\nmdns = false\nstate_dir = \"{state}\"\n{agent_extra}\n\n{watchers}\n",
                state = dir.path().join("state").display()
            ),
        )
        .expect("write config");
        let mut command: Command = host.command(bin("troupe-agent"));
        command
            .arg("--config")
            .arg(&config)
            .args(["--log-level", "debug"]);
        let daemon = Daemon::spawn("troupe-agent", command, &dir.path().join("agent.log"));
        HostAgent {
            daemon,
            dir,
            endpoint: format!("tcp://{}:5555", host.address),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// Whether a reply is Circus's `{"status": "ok", ...}`.
pub fn is_ok(reply: &Result<Value, String>) -> bool {
    matches!(reply, Ok(v) if v["status"] == "ok")
}

impl HostAgent {
    /// `ipc://<state_dir>/control.sock`: the agent's owner-only socket, reachable from any
    /// namespace (a Unix socket lives in the file system).
    pub fn owner_endpoint(&self) -> String {
        format!("ipc://{}", self.state_dir().join("control.sock").display())
    }
}

// ----------------------------------------------------------------------------------------------
// `troupe serve` on a lab host, and fake nodes an attacker runs (serve_deputy, bounds::serve_*)

/// `troupe serve` on a lab host, bound to 0.0.0.0 (its default), its state and log in a
/// scratch dir.
pub struct HostServe {
    daemon: Daemon,
    _dir: tempfile::TempDir,
    /// `tcp://<host address>:5558`.
    pub endpoint: String,
}

impl HostServe {
    /// Starts `troupe serve ARGS` on `host` (mDNS and Circus UDP off unless `multicast`) and
    /// waits until it answers from the host.
    pub fn start(host: &Host, multicast: bool, args: &[&str]) -> HostServe {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = crate::support::isolated(host.command(bin("troupe")), dir.path());
        command
            .arg("serve")
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--log-level", "info"])
            .args(args);
        if !multicast {
            command.arg("--no-mdns");
        }
        let mut daemon = Daemon::spawn("troupe serve", command, &dir.path().join("serve.log"));
        let endpoint = format!("tcp://{}:5558", host.address);
        wait_for("troupe serve on its host", Duration::from_secs(15), || {
            daemon.assert_running();
            let nodelist = serde_json::json!({});
            call_from(
                host,
                &endpoint,
                "nodelist",
                nodelist,
                Duration::from_millis(500),
            )
            .is_ok()
        });
        HostServe {
            daemon,
            _dir: dir,
            endpoint,
        }
    }

    /// serve's log so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Fails the test (printing the log) if serve has exited.
    pub fn assert_running(&mut self) {
        self.daemon.assert_running();
    }

    /// One request to this serve from `host`.
    pub fn call(&self, host: &Host, command: &str, properties: Value) -> Result<Value, String> {
        call_from(
            host,
            &self.endpoint,
            command,
            properties,
            Duration::from_secs(3),
        )
    }

    /// `nodelist`, asked from `host` (generously: serve may be busy with hundreds of members
    /// on a loaded machine).
    pub fn nodes(&self, host: &Host) -> Vec<Value> {
        let nodelist = serde_json::json!({});
        let reply = call_from(
            host,
            &self.endpoint,
            "nodelist",
            nodelist,
            Duration::from_secs(15),
        )
        .expect("troupe serve answers nodelist");
        reply["nodes"].as_array().cloned().unwrap_or_default()
    }

    /// The names of the members in state `alive`, asked from `host`.
    pub fn alive(&self, host: &Host) -> Vec<String> {
        self.nodes(host)
            .iter()
            .filter(|n| n["state"] == "alive")
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect()
    }
}

/// One request from `host` within `timeout`: the reply, or the client's error text.
pub fn call_from(
    host: &Host,
    endpoint: &str,
    command: &str,
    properties: Value,
    timeout: Duration,
) -> Result<Value, String> {
    let Value::Object(properties) = properties else {
        panic!("properties must be an object, got {properties}");
    };
    host.ns.run(|| {
        troupe::client::call(endpoint, Request::new(command, properties), timeout)
            .map_err(|e| e.to_string())
    })
}

/// Fake troupe nodes on a lab host (the attacker's), all on one thread inside its namespace:
/// node `i` is a ROUTER on `first_port + i` that answers `nodeinfo` as a valid agent of
/// cluster `default` (or as [`FakeNodes::start_answering`] says) and never answers anything
/// else (it counts what it got). Node 0 can also publish stats for `stats_pids` processes on
/// `first_port + count`. Stopped on drop.
pub struct FakeNodes {
    pub address: String,
    pub first_port: u16,
    pub count: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What fake node `i` sends for a `nodeinfo` request, given the reply a valid agent would send.
pub type NodeinfoReply = fn(usize, Value) -> Vec<u8>;

impl FakeNodes {
    pub fn start(host: &Host, first_port: u16, count: usize, stats_pids: u32) -> FakeNodes {
        Self::start_with(host, first_port, count, stats_pids, |_, valid| {
            valid.to_string().into_bytes()
        })
    }

    /// Fake nodes whose `nodeinfo` replies `reply` makes, no stats.
    pub fn start_answering(
        host: &Host,
        first_port: u16,
        count: usize,
        reply: NodeinfoReply,
    ) -> FakeNodes {
        Self::start_with(host, first_port, count, 0, reply)
    }

    fn start_with(
        host: &Host,
        first_port: u16,
        count: usize,
        stats_pids: u32,
        reply: NodeinfoReply,
    ) -> FakeNodes {
        use std::sync::atomic::AtomicBool;
        // A listening socket per node and a connection per node from serve.
        troupe::limits::raise_open_files();
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let fleet = FakeFleet {
            address: host.address.clone(),
            first_port,
            count,
            stats_pids,
            reply,
            stop: stop.clone(),
            received: received.clone(),
        };
        let thread = spawn_in(host, move || fleet.run(ready_tx));
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("the fake nodes bound their ports");
        FakeNodes {
            address: host.address.clone(),
            first_port,
            count,
            stop,
            received,
            thread: Some(thread),
        }
    }

    pub fn id(i: usize) -> String {
        format!("00000000-0000-4000-8000-{i:012x}")
    }

    pub fn name(i: usize) -> String {
        format!("fake-{i}")
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("tcp://{}:{}", self.address, self.first_port as usize + i)
    }

    /// `register_node` properties for node `i`, true to the address it runs on.
    pub fn registration(&self, i: usize) -> Value {
        let port = |offset: usize| {
            format!(
                "tcp://{}:{}",
                self.address,
                self.first_port as usize + offset
            )
        };
        serde_json::json!({
            "id": Self::id(i), "name": Self::name(i), "cluster": "default",
            "endpoint": self.endpoint(i),
            "pubsub_endpoint": port(self.count + 1),
            "stats_endpoint": port(self.count),
        })
    }

    /// The commands the nodes got besides `nodeinfo`.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().expect("not poisoned").clone()
    }
}

impl Drop for FakeNodes {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct FakeFleet {
    address: String,
    first_port: u16,
    count: usize,
    stats_pids: u32,
    reply: NodeinfoReply,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeFleet {
    fn run(self, ready: std::sync::mpsc::Sender<()>) {
        // Made on this thread, so ZeroMQ's I/O threads live in the namespace too; a router per
        // fake node, more than libzmq's default 1023 sockets past MAX_MEMBERS.
        let zmq = troupe::sockets::member_context();
        let port = |offset: usize| self.first_port as usize + offset;
        let routers: Vec<zmq::Socket> = (0..self.count)
            .map(|i| {
                let router = zmq.socket(zmq::ROUTER).expect("router");
                router.set_linger(0).expect("linger");
                router
                    .bind(&format!("tcp://{}:{}", self.address, port(i)))
                    .expect("bind a fake node");
                router
            })
            .collect();
        let stats = (self.stats_pids > 0).then(|| {
            let publisher = zmq.socket(zmq::PUB).expect("pub");
            publisher.set_linger(0).expect("linger");
            // A round is more messages than the default high-water mark.
            publisher.set_sndhwm(100_000).expect("sndhwm");
            publisher
                .bind(&format!("tcp://{}:{}", self.address, port(self.count)))
                .expect("bind the stats socket");
            publisher
        });
        let _ = ready.send(());
        let mut next_round = std::time::Instant::now();
        while !self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut items: Vec<zmq::PollItem> = routers
                .iter()
                .map(|r| r.as_poll_item(zmq::POLLIN))
                .collect();
            zmq::poll(&mut items, 50).expect("poll");
            let readable: Vec<usize> = (0..items.len())
                .filter(|&i| items[i].is_readable())
                .collect();
            for i in readable {
                while let Ok(frames) = routers[i].recv_multipart(zmq::DONTWAIT) {
                    self.answer(&routers[i], i, frames);
                }
            }
            if let Some(publisher) = &stats {
                if std::time::Instant::now() >= next_round {
                    self.publish_round(publisher);
                    next_round = std::time::Instant::now() + Duration::from_millis(500);
                }
            }
        }
    }

    fn answer(&self, router: &zmq::Socket, i: usize, frames: Vec<Vec<u8>>) {
        let Some(body) = frames.last() else { return };
        let request: Value = serde_json::from_slice(body).unwrap_or_default();
        let command = request["command"].as_str().unwrap_or_default().to_string();
        if command != "nodeinfo" {
            self.received.lock().expect("not poisoned").push(command);
            return;
        }
        let at = |offset: usize| {
            format!(
                "tcp://{}:{}",
                self.address,
                self.first_port as usize + offset
            )
        };
        let node = serde_json::json!({
            "id": FakeNodes::id(i), "name": FakeNodes::name(i), "cluster": "default",
            "version": "0.1.0", "hostname": "attacker", "addresses": [self.address],
            "endpoints": {"control": at(i), "pubsub": at(self.count + 1), "stats": at(self.count)},
            "started": 1.0, "watchers": {},
        });
        let reply = serde_json::json!({"status": "ok", "id": request["id"], "node": node});
        let mut out = frames[..frames.len() - 1].to_vec();
        out.push((self.reply)(i, reply));
        let _ = router.send_multipart(out, zmq::DONTWAIT);
    }

    /// One round of a node's stats stream: every process, then the watcher's aggregate; and
    /// before them, bodies no process info may be (see [`HOSTILE_STATS_BODIES`]).
    fn publish_round(&self, publisher: &zmq::Socket) {
        for (pid, body) in (HOSTILE_STATS_PIDS..).zip(HOSTILE_STATS_BODIES) {
            let _ = publisher.send_multipart(
                [format!("stat.w.{pid}").into_bytes(), body.to_vec()],
                zmq::DONTWAIT,
            );
        }
        for pid in 1..=self.stats_pids {
            let sample = serde_json::json!({"pid": pid, "cpu": 0.0, "mem": 0.0, "age": 1.0});
            let _ = publisher.send_multipart(
                [
                    format!("stat.w.{pid}").into_bytes(),
                    sample.to_string().into_bytes(),
                ],
                zmq::DONTWAIT,
            );
        }
        let pids: Vec<u32> = (1..=self.stats_pids).collect();
        let aggregate = serde_json::json!({"pid": pids, "cpu": 0.0, "mem": 0.0, "age": 1.0});
        let _ = publisher.send_multipart(
            [b"stat.w".to_vec(), aggregate.to_string().into_bytes()],
            zmq::DONTWAIT,
        );
    }
}

/// What a fake node publishes as process stats besides its real ones, each on a pid of its
/// own from [`HOSTILE_STATS_PIDS`]: an array (serde reads a struct from one), an object with a
/// duplicate key, truncated JSON, bytes that are no UTF-8. None may be kept.
pub const HOSTILE_STATS_BODIES: [&[u8]; 4] = [
    b"[1.5, 0.5, 1.0]",
    b"{\"pid\": 900001, \"cpu\": 1.0, \"cpu\": 2.0}",
    b"{\"pid\": 900002, \"cpu\": 1.",
    b"{\"cpu\": \"\xff\xfe\"}",
];
pub const HOSTILE_STATS_PIDS: u32 = 900_000;

/// Runs `f` on a new thread inside `host`'s network namespace (a server that outlives one
/// call, where [`crate::support::netns::Netns::run`] returns when its closure does).
pub fn spawn_in<T: Send + 'static>(
    host: &Host,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{}", host.ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}
