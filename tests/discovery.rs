//! Discovery and membership with the real binaries: `troupe nodes` and `troupe serve` finding
//! troupe agents (mDNS, range probing, registration with a master) and stock circusd (range
//! probing, Circus UDP discovery), and the member states that follow (alive, left, down).
//!
//! Multicast never leaves a network namespace the test made: agents announce over mDNS and
//! circusd runs only inside namespaces; in the root namespace agents run with `mdns = false`,
//! the controller with `--no-mdns`, and probes go to loopback only.

use crate::support::garbage::GarbageServer;
use crate::support::netns::{Host, Netns, Segment};
use crate::support::{
    bin, circus_venv, isolated, run_command, troupe, unique_loopback, wait_for, Agent, Daemon, Run,
};
use serde_json::{json, Map, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use troupe::protocol::Request;

/// Generous bound for SIGKILL -> `down` (the table says 2.5 s of silence; the issue asks for
/// at most 3 s; this machine is shared and has 2 cores).
const DOWN_BOUND: Duration = Duration::from_secs(6);

// ----------------------------------------------------------------------------------------------
// Helpers

/// `troupe ARGS...` inside `ns`, run from `dir`.
fn troupe_in(ns: &Netns, dir: &Path, args: &[&str]) -> Run {
    let mut command = isolated(ns.command(bin("troupe")), dir);
    command.args(args);
    run_command(command, Duration::from_secs(30))
}

/// The JSON array `troupe nodes --json` printed.
#[track_caller]
fn nodes_of(run: &Run) -> Vec<Value> {
    assert_eq!(run.code, Some(0), "troupe nodes failed: {run:#?}");
    match serde_json::from_str::<Value>(&run.stdout) {
        Ok(Value::Array(nodes)) => nodes,
        _ => panic!("troupe nodes --json did not print a JSON array: {run:#?}"),
    }
}

fn named<'a>(nodes: &'a [Value], name: &str) -> Vec<&'a Value> {
    nodes.iter().filter(|n| n["name"] == name).collect()
}

/// The one row named `name`, if there is exactly one.
fn row<'a>(nodes: &'a [Value], name: &str) -> Option<&'a Value> {
    match named(nodes, name)[..] {
        [one] => Some(one),
        _ => None,
    }
}

fn state_of(nodes: &[Value], name: &str) -> Option<String> {
    row(nodes, name).and_then(|n| n["state"].as_str().map(str::to_string))
}

fn sources(node: &Value) -> Vec<String> {
    node["source"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The node id an agent keeps in its state dir.
fn node_id(state_dir: &Path) -> String {
    std::fs::read_to_string(state_dir.join("node-id"))
        .unwrap_or_else(|e| panic!("{}: {e}", state_dir.join("node-id").display()))
        .trim()
        .to_string()
}

/// Fails with a clear message if something already listens on `address` (the fixed-address
/// test must not silently talk to a stranger).
#[track_caller]
fn assert_free(address: &str, why: &str) {
    if let Err(e) = TcpListener::bind(address) {
        panic!("{address} is busy ({e}): {why}");
    }
}

/// `troupe serve` in the root namespace: on a fresh loopback address, `--no-mdns`, with its
/// own state dir. Stopped on drop.
struct LoopbackServe {
    daemon: Daemon,
    control: String,
    events: String,
    dir: tempfile::TempDir,
}

impl LoopbackServe {
    fn start(extra: &[&str]) -> LoopbackServe {
        let dir = tempfile::tempdir().expect("tempdir");
        let address = unique_loopback();
        let state = dir.path().join("state");
        let mut command = isolated(Command::new(bin("troupe")), dir.path());
        command
            .args(["serve", "--no-mdns", "--bind", &address])
            .args(["--port", "5558", "--events-port", "5560"])
            .arg("--state-dir")
            .arg(&state)
            .args(["--log-level", "info"])
            .args(extra);
        let daemon = Daemon::spawn("troupe serve", command, &dir.path().join("serve.log"));
        let mut serve = LoopbackServe {
            daemon,
            control: format!("tcp://{address}:5558"),
            events: format!("tcp://{address}:5560"),
            dir,
        };
        let control = serve.control.clone();
        wait_for("troupe serve to answer", Duration::from_secs(15), || {
            serve.daemon.assert_running();
            call(&control, "nodelist").is_some()
        });
        serve
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `nodelist`, straight from the control socket.
    fn nodes(&self) -> Vec<Value> {
        let reply = call(&self.control, "nodelist")
            .unwrap_or_else(|| panic!("troupe serve did not answer nodelist"));
        reply["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("nodelist: {reply}"))
    }

    /// `nodelist` with a `state` filter: the raw reply, whatever its status.
    fn nodelist_in(&self, state: &str) -> Value {
        let mut filter = Map::new();
        filter.insert("state".into(), json!(state));
        troupe::client::call(
            &self.control,
            Request::new("nodelist", filter),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|e| panic!("nodelist state={state}: {e}"))
    }

    /// `troupe nodes --controller <this serve> --json`, as a user asks a running serve. No
    /// probe range and no multicast: whatever it lists came from the serve. A short --wait,
    /// so that if the serve ever failed to answer, the empty fallback comes back quickly.
    fn troupe_nodes(&self) -> Vec<Value> {
        let run = troupe(
            self.dir.path(),
            &[
                "nodes",
                "--controller",
                &self.control,
                "--json",
                "--no-mdns",
                "--wait",
                "100ms",
                "--state-dir",
                &self.dir.path().join("cli-state").display().to_string(),
            ],
        );
        nodes_of(&run)
    }
}

fn nodes_in(reply: &Value) -> Vec<Value> {
    reply["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no nodes in {reply}"))
}

fn call(endpoint: &str, command: &str) -> Option<Value> {
    troupe::client::call(
        endpoint,
        Request::new(command, Map::new()),
        Duration::from_secs(2),
    )
    .ok()
    .filter(|reply| reply["status"] == "ok")
}

/// A SUB socket on a serve's events: `node.<name>.<event>` topics, JSON payloads.
struct Events {
    socket: zmq::Socket,
    _context: zmq::Context,
    seen: Vec<String>,
}

impl Events {
    fn subscribe(endpoint: &str) -> Events {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::SUB).expect("SUB socket");
        socket.set_rcvtimeo(100).expect("rcvtimeo");
        socket.set_linger(0).expect("linger");
        socket.connect(endpoint).expect("connect events");
        socket.set_subscribe(b"node.").expect("subscribe");
        Events {
            socket,
            _context: context,
            seen: Vec::new(),
        }
    }

    /// Waits for an event on `topic` and returns its payload.
    #[track_caller]
    fn wait(&mut self, topic: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Ok(frames) = self.socket.recv_multipart(0) else {
                continue;
            };
            let got = String::from_utf8_lossy(&frames[0]).to_string();
            let payload = frames
                .get(1)
                .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                .unwrap_or(Value::Null);
            self.seen.push(format!("{got} {payload}"));
            if got == topic {
                return payload;
            }
        }
        panic!(
            "no {topic} event within {timeout:?}; events seen: {:#?}",
            self.seen
        );
    }
}

/// A troupe agent inside a namespace: `bind = "0.0.0.0"`, `mdns = true` (only ever inside
/// namespaces). Its state dir outlives restarts, so a restart keeps the node id.
struct NsAgent {
    /// Before `dir`: fields drop in order, and the daemon's guard reads its log from `dir`.
    daemon: Option<Daemon>,
    name: String,
    dir: tempfile::TempDir,
}

impl NsAgent {
    fn new(name: &str) -> NsAgent {
        NsAgent::with(name, "mdns = true")
    }

    /// With `agent_lines` in `[agent]` instead of `mdns = true`.
    fn with(name: &str, agent_lines: &str) -> NsAgent {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("troupe-agent.toml"),
            format!(
                "[agent]\nname = \"{name}\"\nbind = \"0.0.0.0\"\n{agent_lines}\nstate_dir = \"{}\"\n\n[watcher.idle]\ncmd = \"sleep 1000\"\ngraceful_timeout = 1\n",
                dir.path().join("state").display()
            ),
        )
        .expect("write agent config");
        NsAgent {
            name: name.to_string(),
            dir,
            daemon: None,
        }
    }

    /// Starts it on `host` and waits until it answers there; returns when it did.
    fn start(&mut self, host: &Host) -> Instant {
        let ns = &host.ns;
        let mut command = host.command(bin("troupe-agent"));
        command
            .arg("--config")
            .arg(self.dir.path().join("troupe-agent.toml"))
            .args(["--log-level", "debug"]);
        let what = format!("troupe-agent {} in {}", self.name, ns.name);
        let daemon = self.daemon.insert(Daemon::spawn(
            &what,
            command,
            &self.dir.path().join("agent.log"),
        ));
        wait_for(
            &format!("{what} to answer"),
            Duration::from_secs(15),
            || {
                daemon.assert_running();
                troupe_in(
                    ns,
                    self.dir.path(),
                    &[
                        "ctl",
                        "tcp://127.0.0.1:5555",
                        "numwatchers",
                        "--timeout",
                        "1",
                    ],
                )
                .code
                    == Some(0)
            },
        );
        Instant::now()
    }

    fn id(&self) -> String {
        node_id(&self.dir.path().join("state"))
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("agent started")
    }
}

/// `nodelist` of the `troupe serve` listening on 127.0.0.1:5558 inside `ns`, through
/// `troupe ctl` (which fails loudly, unlike `troupe nodes`, if the serve does not answer).
fn ns_nodelist(ns: &Netns, dir: &Path) -> Option<Vec<Value>> {
    let run = troupe_in(
        ns,
        dir,
        &["ctl", "tcp://127.0.0.1:5558", "nodelist", "--timeout", "2"],
    );
    if run.code != Some(0) {
        return None;
    }
    let reply: Value = serde_json::from_str(&run.stdout).ok()?;
    reply["nodes"].as_array().cloned()
}

// ----------------------------------------------------------------------------------------------
// Several hosts on a bridged segment, found by mDNS alone

/// Three agents on three hosts and `troupe serve` on a fourth, all on one bridge: the serve
/// has no probe range, so everything it knows comes from multicast. Then a clean stop is
/// `left`, a SIGKILL is `down` within seconds, a restart is the same member `alive` again,
/// and an agent booted on a fifth host mid-test joins.
#[test]
#[ignore = "needs root"]
fn agents_on_a_bridged_segment_join_by_mdns_leave_die_and_come_back() {
    let mut segment = Segment::new("disc", 4);
    let work = tempfile::tempdir().expect("tempdir");
    let serve_host = &segment.host(4).ns;
    let mut command = isolated(segment.host(4).command(bin("troupe")), work.path());
    command
        .arg("serve")
        .arg("--state-dir")
        .arg(work.path().join("serve-state"))
        .args(["--log-level", "info"]);
    let mut serve = Daemon::spawn(
        "troupe serve (host 4)",
        command,
        &work.path().join("serve.log"),
    );
    wait_for("troupe serve to answer", Duration::from_secs(15), || {
        serve.assert_running();
        ns_nodelist(serve_host, work.path()).is_some()
    });
    let nodelist = |segment: &Segment| {
        ns_nodelist(&segment.host(4).ns, work.path()).expect("troupe serve answers nodelist")
    };

    // Three agents, one per host.
    let mut agents: Vec<NsAgent> = (1..=3)
        .map(|i| NsAgent::new(&format!("node-{i}")))
        .collect();
    let mut ready = Vec::new();
    for (i, agent) in agents.iter_mut().enumerate() {
        ready.push(agent.start(segment.host(i + 1)));
    }
    let mut joined: Vec<Option<Duration>> = vec![None; 3];
    wait_for(
        "the three agents to be alive by mDNS",
        Duration::from_secs(20),
        || {
            let nodes = nodelist(&segment);
            for (i, agent) in agents.iter().enumerate() {
                if joined[i].is_none() && state_of(&nodes, &agent.name).as_deref() == Some("alive")
                {
                    joined[i] = Some(ready[i].elapsed());
                }
            }
            joined.iter().all(Option::is_some)
        },
    );
    for (agent, took) in agents.iter().zip(&joined) {
        println!(
            "figure: {} joined by mDNS {:.2} s after it answered",
            agent.name,
            took.expect("joined").as_secs_f64()
        );
    }
    let nodes = nodelist(&segment);
    assert_eq!(nodes.len(), 3, "{nodes:#?}");
    for (i, agent) in agents.iter().enumerate() {
        let node = row(&nodes, &agent.name).expect("one row per agent");
        assert_eq!(node["kind"], "troupe", "{node}");
        assert_eq!(node["id"], agent.id(), "{node}");
        let address = &segment.host(i + 1).address;
        assert_eq!(node["endpoint"], format!("tcp://{address}:5555"), "{node}");
        // Bound to 0.0.0.0, the agent's other sockets are reported at the address it was
        // reached on.
        assert_eq!(
            node["endpoints"]["pubsub"],
            format!("tcp://{address}:5556"),
            "{node}"
        );
        assert_eq!(
            node["endpoints"]["stats"],
            format!("tcp://{address}:5557"),
            "{node}"
        );
        assert_eq!(node["watchers"], 1, "{node}");
        let found_by = sources(node);
        println!("{} found by {found_by:?}", agent.name);
        assert!(found_by.contains(&"mdns".to_string()), "{node}");
        for other in ["probe", "seed", "registered"] {
            assert!(!found_by.contains(&other.to_string()), "{node}");
        }
    }

    // A clean stop (SIGTERM) says goodbye: left.
    let stopped = Instant::now();
    let status = agents[0].daemon().terminate();
    assert!(status.success(), "node-1 exited with {status}");
    wait_for("node-1 to be left", Duration::from_secs(10), || {
        state_of(&nodelist(&segment), "node-1").as_deref() == Some("left")
    });
    println!(
        "figure: node-1 left {:.2} s after SIGTERM",
        stopped.elapsed().as_secs_f64()
    );

    // A crash (SIGKILL) says nothing: down, from the heartbeat.
    let killed = Instant::now();
    agents[1].daemon().kill();
    wait_for("node-2 to be down", Duration::from_secs(15), || {
        state_of(&nodelist(&segment), "node-2").as_deref() == Some("down")
    });
    let took = killed.elapsed();
    println!(
        "figure: node-2 down {:.2} s after SIGKILL (multi-host, mDNS)",
        took.as_secs_f64()
    );
    assert!(took <= DOWN_BOUND, "SIGKILL -> down took {took:?}");
    assert_eq!(
        state_of(&nodelist(&segment), "node-1").as_deref(),
        Some("left"),
        "a left member stays left"
    );

    // The same agent (same state dir, same id) comes back: the same row, alive.
    let id = agents[1].id();
    let restarted = agents[1].start(segment.host(2));
    wait_for("node-2 to be alive again", Duration::from_secs(15), || {
        state_of(&nodelist(&segment), "node-2").as_deref() == Some("alive")
    });
    println!(
        "figure: node-2 alive again {:.2} s after its restart answered",
        restarted.elapsed().as_secs_f64()
    );
    let nodes = nodelist(&segment);
    let rows: Vec<&Value> = nodes.iter().filter(|n| n["id"] == id).collect();
    assert_eq!(rows.len(), 1, "one row for node-2's id: {nodes:#?}");
    assert_eq!(rows[0]["name"], "node-2");
    assert_eq!(nodes.len(), 3, "no duplicate rows: {nodes:#?}");

    // A fourth agent boots on a new host mid-test and joins.
    let host5 = segment.add_host().address.clone();
    let mut late = NsAgent::new("node-4");
    let ready = late.start(segment.host(5));
    // Circus UDP discovery (also multicast) may see it first: the row is the same, and the
    // mDNS sighting is what this waits for.
    wait_for("node-4 to join by mDNS", Duration::from_secs(20), || {
        let nodes = nodelist(&segment);
        state_of(&nodes, "node-4").as_deref() == Some("alive")
            && row(&nodes, "node-4").is_some_and(|n| sources(n).contains(&"mdns".to_string()))
    });
    println!(
        "figure: node-4 (booted mid-test) joined by mDNS {:.2} s after it answered",
        ready.elapsed().as_secs_f64()
    );
    let nodes = nodelist(&segment);
    let node = row(&nodes, "node-4").expect("one row for node-4");
    assert_eq!(node["endpoint"], format!("tcp://{host5}:5555"), "{node}");
    assert!(sources(node).contains(&"mdns".to_string()), "{node}");
    assert_eq!(nodes.len(), 4, "{nodes:#?}");
    serve.assert_running();
    // Guards stop the agents and the serve before the segment goes (reverse declaration).
    drop(late);
    drop(agents);
    drop(serve);
}

// ----------------------------------------------------------------------------------------------
// Range probing on loopback

/// Agents on the fixed addresses 127.0.0.2, .5 and .9 (default ports), and a TCP server
/// that is no Circus node on 127.0.0.12:5555: probing 127.0.0.1-16 lists exactly the three
/// agents. The only test using 127.0.0.x addresses (others use 127.77.x.y).
#[test]
fn range_probe_on_loopback_lists_exactly_the_agents() {
    let addresses = ["127.0.0.2", "127.0.0.5", "127.0.0.9"];
    for address in addresses {
        for port in [5555, 5556, 5557] {
            assert_free(
                &format!("{address}:{port}"),
                "this test needs agents on 127.0.0.2, .5 and .9 with the default ports",
            );
        }
    }
    let _garbage = GarbageServer::start("127.0.0.12:5555");
    let agents: Vec<Agent> = addresses
        .iter()
        .enumerate()
        .map(|(i, address)| Agent::start_named(&format!("probe-{i}"), address, "", ""))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state").display().to_string();

    let run = troupe(
        dir.path(),
        &[
            "nodes",
            "--probe",
            "127.0.0.1-16",
            "--no-mdns",
            "--json",
            "--state-dir",
            &state,
            // On-the-spot discovery, even if a controller (e.g. a demo) runs on 5558.
            "--controller",
            "tcp://127.0.0.1:1",
        ],
    );
    assert!(
        run.stderr
            .contains("no controller answers at tcp://127.0.0.1:1; discovering on the spot"),
        "a controller named but absent is said: {run:#?}"
    );
    let nodes = nodes_of(&run);
    let mut listed: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("?").to_string(),
                n["endpoint"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    listed.sort();
    let expected: Vec<(String, String)> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("probe-{i}"), format!("tcp://{a}:5555")))
        .collect();
    assert_eq!(listed, expected, "{nodes:#?}");
    for (i, agent) in agents.iter().enumerate() {
        let node = row(&nodes, &format!("probe-{i}")).expect("one row");
        assert_eq!(node["kind"], "troupe", "{node}");
        assert_eq!(node["state"], "alive", "{node}");
        assert_eq!(sources(node), ["probe"], "{node}");
        assert_eq!(
            node["id"],
            node_id(&agent.dir.path().join("state")),
            "{node}"
        );
        assert_eq!(node["version"], env!("CARGO_PKG_VERSION"), "{node}");
        let address = addresses[i];
        assert_eq!(
            node["endpoints"],
            serde_json::json!({
                "control": format!("tcp://{address}:5555"),
                "pubsub": format!("tcp://{address}:5556"),
                "stats": format!("tcp://{address}:5557"),
            }),
            "{node}"
        );
    }

    // The table a person reads.
    let run = troupe(
        dir.path(),
        &[
            "nodes",
            "--probe",
            "127.0.0.1-16",
            "--no-mdns",
            // Probing is complete after one sweep: no listening time is needed.
            "--wait",
            "0s",
            "--state-dir",
            &state,
            // On-the-spot discovery, even if a controller (e.g. a demo) runs on 5558.
            "--controller",
            "tcp://127.0.0.1:1",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{}", run.stdout);
    assert_eq!(lines.len(), 4, "a header and three rows:\n{}", run.stdout);
    for (i, address) in addresses.iter().enumerate() {
        let name = format!("probe-{i}");
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no row for {name}:\n{}", run.stdout));
        assert!(line.contains(&format!("{address}:5555")), "{line}");
        assert!(line.contains("alive") && line.contains("probe"), "{line}");
    }
}

// ----------------------------------------------------------------------------------------------
// Stock circusd

/// A stock circusd 0.19 (in a namespace with only `lo`: it joins a multicast group) is found
/// by range probing, as kind "circus" with its watcher count, and by Circus UDP discovery.
#[test]
#[ignore = "needs root"]
fn stock_circusd_is_found_by_range_probe_and_by_circus_udp() {
    let ns = Netns::new("circusd");
    ns.enable_loopback_multicast();
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("circus.ini");
    std::fs::write(
        &ini,
        "[circus]\ncheck_delay = 5\nendpoint = tcp://127.0.0.1:5555\npubsub_endpoint = tcp://127.0.0.1:5556\n\n\
         [watcher:web]\ncmd = sleep 1000\nnumprocesses = 1\ngraceful_timeout = 2\n\n\
         [watcher:worker]\ncmd = sleep 1000\nnumprocesses = 2\ngraceful_timeout = 2\n",
    )
    .expect("write circus.ini");
    let mut command = ns.command(circus_venv().join("bin/circusd"));
    command
        .current_dir(dir.path())
        .args(["--log-level", "debug"])
        .arg(&ini);
    let mut circusd = Daemon::spawn("circusd", command, &dir.path().join("circusd.log"));
    wait_for(
        "circusd to run its watchers",
        Duration::from_secs(30),
        || {
            circusd.assert_running();
            let run = troupe_in(
                &ns,
                dir.path(),
                &["ctl", "tcp://127.0.0.1:5555", "list", "--timeout", "1"],
            );
            serde_json::from_str::<Value>(&run.stdout)
                .is_ok_and(|reply| reply["watchers"].as_array().is_some_and(|w| w.len() == 2))
        },
    );
    assert!(
        !circusd.log().contains("Multicast discovery is disabled"),
        "circusd could not open its UDP discovery socket:\n{}",
        circusd.log()
    );
    let state = dir.path().join("state").display().to_string();

    let run = troupe_in(
        &ns,
        dir.path(),
        &[
            "nodes",
            "--probe",
            "127.0.0.1",
            "--no-mdns",
            "--json",
            "--state-dir",
            &state,
        ],
    );
    let nodes = nodes_of(&run);
    assert_eq!(nodes.len(), 1, "{nodes:#?}");
    let node = &nodes[0];
    assert_eq!(node["kind"], "circus", "{node}");
    assert_eq!(node["watchers"], 2, "{node}");
    assert_eq!(node["state"], "alive", "{node}");
    assert_eq!(node["endpoint"], "tcp://127.0.0.1:5555", "{node}");
    assert_eq!(node["id"], Value::Null, "{node}");
    assert_eq!(sources(node), ["probe"], "{node}");

    // Multicast on, no probe range: the Circus UDP query finds it.
    let run = troupe_in(&ns, dir.path(), &["nodes", "--json", "--state-dir", &state]);
    let nodes = nodes_of(&run);
    assert_eq!(nodes.len(), 1, "{nodes:#?}");
    let node = &nodes[0];
    assert_eq!(node["kind"], "circus", "{node}");
    assert_eq!(node["watchers"], 2, "{node}");
    assert_eq!(node["endpoint"], "tcp://127.0.0.1:5555", "{node}");
    assert!(sources(node).contains(&"circus-udp".to_string()), "{node}");
    circusd.assert_running();
}

// ----------------------------------------------------------------------------------------------
// `troupe serve` on loopback

/// A probed agent that is SIGKILLed goes down (and a `node.<name>.down` event says so); the
/// same agent restarted is the same member, alive again. `troupe nodes --controller` lists
/// what only the running serve knows.
#[test]
fn serve_marks_a_killed_agent_down_and_its_restart_alive() {
    let address = unique_loopback();
    let mut agent = Agent::start_named("lb-crash", &address, "", "");
    let id = node_id(&agent.dir.path().join("state"));
    let serve = LoopbackServe::start(&["--probe", &address]);
    let mut events = Events::subscribe(&serve.events);
    wait_for("the agent to be alive", Duration::from_secs(15), || {
        state_of(&serve.nodes(), "lb-crash").as_deref() == Some("alive")
    });

    // `troupe nodes --controller`: no probe, no multicast, yet the agent is there.
    let nodes = serve.troupe_nodes();
    let node = row(&nodes, "lb-crash").unwrap_or_else(|| panic!("{nodes:#?}"));
    assert_eq!(node["state"], "alive", "{node}");
    assert_eq!(node["id"], id, "{node}");
    assert_eq!(node["endpoint"], format!("tcp://{address}:5555"), "{node}");
    assert_eq!(sources(node), ["probe"], "{node}");

    let killed = Instant::now();
    agent.kill();
    wait_for("the agent to be down", Duration::from_secs(15), || {
        state_of(&serve.troupe_nodes(), "lb-crash").as_deref() == Some("down")
    });
    let took = killed.elapsed();
    println!(
        "figure: SIGKILL -> down {:.2} s (loopback serve, seen through troupe nodes --controller)",
        took.as_secs_f64()
    );
    assert!(took <= DOWN_BOUND, "SIGKILL -> down took {took:?}");
    // `nodelist` filtered by state: the down member alone, or none; an unknown state is named.
    let down_only = serve.nodelist_in("down");
    assert_eq!(
        state_of(&nodes_in(&down_only), "lb-crash").as_deref(),
        Some("down")
    );
    assert_eq!(nodes_in(&serve.nodelist_in("alive")), Vec::<Value>::new());
    let refused = serve.nodelist_in("dead");
    assert_eq!(refused["status"], "error", "{refused}");
    let reason = refused["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("'state' must be one of") && reason.contains("\"locked\""),
        "{refused}"
    );
    // Two missed heartbeats (the second asked at once) make it suspect before it is down.
    let suspect = events.wait("node.lb-crash.suspect", Duration::from_secs(5));
    assert_eq!(suspect["state"], "suspect", "{suspect}");
    let down = events.wait("node.lb-crash.down", Duration::from_secs(5));
    assert_eq!(down["name"], "lb-crash", "{down}");
    assert_eq!(down["id"], id, "{down}");
    assert_eq!(down["state"], "down", "{down}");
    assert_eq!(down["endpoint"], format!("tcp://{address}:5555"), "{down}");
    assert!(down["time"].as_f64().is_some(), "{down}");
    assert!(down["detail"].as_str().is_some(), "{down}");

    agent.restart();
    wait_for(
        "the agent to be alive again",
        Duration::from_secs(15),
        || state_of(&serve.troupe_nodes(), "lb-crash").as_deref() == Some("alive"),
    );
    let join = events.wait("node.lb-crash.join", Duration::from_secs(5));
    assert_eq!(join["state"], "alive", "{join}");
    let nodes = serve.nodes();
    assert_eq!(nodes.len(), 1, "one member, no duplicate: {nodes:#?}");
    assert_eq!(nodes[0]["id"], id, "{nodes:#?}");
}

/// `troupe cluster RANGE COUNT --controller EP` remembers the range and tells the running
/// serve, which probes it at once and replies once the agents there joined.
#[test]
fn troupe_cluster_makes_a_running_serve_probe_a_new_range() {
    let a = unique_loopback();
    let b = unique_loopback();
    let _agents = [
        Agent::start_named("lb-cluster-a", &a, "", ""),
        Agent::start_named("lb-cluster-b", &b, "", ""),
    ];
    let serve = LoopbackServe::start(&[]);
    // It has no range, so it finds nobody: `nodelist` answers once serve's first discovery
    // (started with the agents up) is done.
    assert_eq!(serve.nodes(), Vec::<Value>::new());

    let range = format!("{a},{b}");
    let state = serve.state_dir().display().to_string();
    let run = troupe(
        serve.dir.path(),
        &[
            "cluster",
            &range,
            "2",
            "--state-dir",
            &state,
            "--controller",
            &serve.control,
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout
            .contains("the running controller swept it: 2 nodes alive, expecting 2"),
        "{run:#?}"
    );
    let nodes = serve.nodes();
    assert_eq!(nodes.len(), 2, "{nodes:#?}");
    for name in ["lb-cluster-a", "lb-cluster-b"] {
        assert_eq!(
            state_of(&nodes, name).as_deref(),
            Some("alive"),
            "{nodes:#?}"
        );
    }
    for node in &nodes {
        assert_eq!(sources(node), ["probe"], "{node}");
    }
    let saved: Value = serde_json::from_slice(
        &std::fs::read(serve.state_dir().join("controller.json")).expect("controller.json"),
    )
    .expect("controller.json is JSON");
    assert_eq!(saved["probe"], serde_json::json!([range]), "{saved}");
    assert_eq!(saved["expect"], 2, "{saved}");
}

/// An agent with `master = "tcp://<serve>"` registers itself (source "registered"), and its
/// SIGTERM says goodbye (`left`, and a leave event). On two hosts of a segment: serve adopts a
/// registered endpoint only on the address the registration came from, and nothing on its own
/// loopback that its operator did not name, so an agent registering over loopback is refused
/// (security::serve_deputy).
#[test]
#[ignore = "needs root"]
fn an_agent_with_a_master_registers_and_leaves_on_sigterm() {
    let segment = Segment::new("master", 2);
    let (agent_host, serve_host) = (segment.host(1), segment.host(2));
    let work = tempfile::tempdir().expect("tempdir");
    let mut command = isolated(serve_host.command(bin("troupe")), work.path());
    command
        .args(["serve", "--no-mdns", "--state-dir"])
        .arg(work.path().join("serve-state"))
        .args(["--log-level", "info"]);
    let mut serve = Daemon::spawn("troupe serve", command, &work.path().join("serve.log"));
    let nodelist = || ns_nodelist(&serve_host.ns, work.path());
    wait_for("troupe serve to answer", Duration::from_secs(15), || {
        serve.assert_running();
        nodelist().is_some()
    });
    let mut events = serve_host
        .ns
        .run(|| Events::subscribe("tcp://127.0.0.1:5560"));

    let master = format!(
        "master = \"tcp://{}:5558\"\nmdns = false",
        serve_host.address
    );
    let mut agent = NsAgent::with("registered", &master);
    agent.start(agent_host);
    let id = agent.id();
    wait_for("the agent to register", Duration::from_secs(15), || {
        nodelist().is_some_and(|nodes| state_of(&nodes, "registered").as_deref() == Some("alive"))
    });
    let nodes = nodelist().expect("nodelist");
    let node = row(&nodes, "registered").expect("one row");
    assert_eq!(sources(node), ["registered"], "{node}");
    assert_eq!(node["id"], id, "{node}");
    assert_eq!(
        node["endpoint"],
        format!("tcp://{}:5555", agent_host.address),
        "{node}"
    );
    let join = events.wait("node.registered.join", Duration::from_secs(5));
    assert_eq!(join["id"], id, "{join}");

    let stopped = Instant::now();
    let status = agent.daemon().terminate();
    assert!(status.success(), "agent exited with {status}");
    wait_for("the agent to be left", Duration::from_secs(10), || {
        nodelist().is_some_and(|nodes| state_of(&nodes, "registered").as_deref() == Some("left"))
    });
    println!(
        "figure: registered agent left {:.2} s after SIGTERM",
        stopped.elapsed().as_secs_f64()
    );
    let leave = events.wait("node.registered.leave", Duration::from_secs(5));
    assert_eq!(leave["state"], "left", "{leave}");
    assert_eq!(leave["id"], id, "{leave}");
    // Guards stop the agent and the serve before the segment goes.
    drop(agent);
    drop(serve);
}

// ----------------------------------------------------------------------------------------------
// Bad input: refused before anything is sent anywhere

#[test]
fn nodes_refuses_a_bad_probe_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = troupe(
        dir.path(),
        &["nodes", "--probe", "10.0.0.300", "--no-mdns", "--json"],
    );
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("10.0.0.300"), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
}

#[test]
fn nodes_refuses_a_huge_range_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Never add --force here: that would really probe 16 million addresses.
    let run = troupe(
        dir.path(),
        &["nodes", "--probe", "10.0.0.0/8", "--no-mdns", "--json"],
    );
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("--force"), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
}

#[test]
fn serve_refuses_a_bad_config_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("troupe.toml");
    std::fs::write(
        &config,
        "cluster = \"lab\"\n[serve]\ncontrol_port = 70000\n",
    )
    .expect("write troupe.toml");
    // Loopback and no multicast, in case the config were ever accepted.
    let run = troupe(
        dir.path(),
        &[
            "serve",
            "--config",
            &config.display().to_string(),
            "--no-mdns",
            "--bind",
            &unique_loopback(),
        ],
    );
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("serve.control_port"), "{run:#?}");
    assert!(run.stderr.contains("troupe.toml"), "{run:#?}");
}

/// `troupe serve --auto-configure`: a node joining mid-experiment is folded in; every node's
/// rendered file ends up naming all peers, pushed once membership is quiet.
#[test]
fn serve_auto_configure_pushes_the_peer_list_when_a_node_joins() {
    let work = tempfile::tempdir().expect("tempdir");
    let start = |name: &str, address: &str| {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("peers.j2"),
            "{% for p in peers %}{{ p.index }}={{ p.name }}@{{ p.address }}\n{% endfor %}",
        )
        .unwrap();
        let watcher = format!(
            "[watcher.svc]\ncmd = \"sleep 1000\"\ngraceful_timeout = 1\n\
             [[watcher.svc.template]]\nsource = \"{dir}/peers.j2\"\ndest = \"{dir}/peers.txt\"\n",
            dir = dir.display()
        );
        Agent::start_named(name, address, &watcher, "")
    };
    let addresses: Vec<String> = (0..3).map(|_| unique_loopback()).collect();
    let _a = start("auto-a", &addresses[0]);
    let _b = start("auto-b", &addresses[1]);
    let probe = addresses.join(",");
    let _serve = LoopbackServe::start(&[
        "--probe",
        &probe,
        "--auto-configure",
        "--quiet-period",
        "1s",
    ]);
    let rendered = |name: &str| {
        std::fs::read_to_string(work.path().join(name).join("peers.txt")).unwrap_or_default()
    };
    let two = format!("1=auto-a@{}\n2=auto-b@{}\n", addresses[0], addresses[1]);
    wait_for(
        "both nodes configured with 2 peers",
        Duration::from_secs(20),
        || rendered("auto-a") == two && rendered("auto-b") == two,
    );
    let _c = start("auto-c", &addresses[2]);
    let three = format!("{two}3=auto-c@{}\n", addresses[2]);
    wait_for(
        "every node configured with 3 peers",
        Duration::from_secs(20),
        || {
            ["auto-a", "auto-b", "auto-c"]
                .iter()
                .all(|n| rendered(n) == three)
        },
    );
    assert!(
        work.path().join("auto-a").join("peers.txt.bak").exists(),
        "the 2-peer version is kept as .bak"
    );
}
