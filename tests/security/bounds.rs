//! Floods past every bound on what a remote peer can make a daemon hold (issue 11, hole 7),
//! from the attacker's host: each gets an error naming the bound, and the daemon still answers
//! a normal request afterwards.

use super::{call_from, is_ok, FakeNodes, HostAgent, HostServe, Lab, HOSTILE_STATS_PIDS};
use crate::support::netns::Host;
use crate::support::{bin, run_command, wait_for};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use troupe::bounds::{
    MAX_CONTROL_CONNECTIONS_PER_PEER, MAX_MEMBERS, MAX_SUBSCRIBERS_PER_PEER, MAX_TOPICS_PER_PEER,
    SERVE_REGISTER_BURST_PER_PEER, SERVE_REMOTE_SWEEP_ADDRESSES, SERVE_REQUESTS_IN_FLIGHT_PER_PEER,
    SERVE_STATS_SERIES_PER_NODE,
};
use troupe::protocol::Request;

// ---- agent_: bounds on what a remote peer can make troupe-agent hold ----

/// An agent that takes code from the network, so `add` reaches the process bound too, with
/// a stopped watcher: nothing is spawned even where an old agent took the count.
fn agent_with_a_stopped_watcher(lab: &Lab) -> HostAgent {
    HostAgent::start(
        lab.victim(),
        "allow_remote_exec = true",
        "[watcher.web]\ncmd = \"sleep 1000\"\nautostart = false\n",
    )
}

/// The reply's error text, panicking on anything but an error that names the bound.
#[track_caller]
fn agent_refused_naming(reply: Result<Value, String>, bound: &str) -> String {
    let reply = reply.expect("the agent answers");
    let reason = reply["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reply["status"] == "error" && reason.contains(bound),
        "expected an error naming {bound}, got {reply}"
    );
    reason
}

#[test]
#[ignore = "needs root"]
fn agent_remote_requests_cannot_raise_numprocesses_past_the_bound() {
    let lab = Lab::new("bnproc");
    let agent = agent_with_a_stopped_watcher(&lab);
    let bound = "MAX_REMOTE_NUMPROCESSES";
    let ep = &agent.endpoint;

    agent_refused_naming(
        lab.attack(ep, "incr", json!({"name": "web", "nb": 100_000})),
        bound,
    );
    agent_refused_naming(
        lab.attack(
            ep,
            "set",
            json!({"name": "web", "options": {"numprocesses": 100_000}}),
        ),
        bound,
    );
    agent_refused_naming(
        lab.attack(
            ep,
            "add",
            json!({"name": "many", "cmd": "sleep 1000", "options": {"numprocesses": 100_000}}),
        ),
        bound,
    );
    // Small steps add up to the bound, and no further.
    let mut refused = false;
    for _ in 0..10 {
        let reply = lab.attack(
            ep,
            "incr",
            json!({"name": "web", "nb": 100, "waiting": true}),
        );
        if matches!(&reply, Ok(r) if r["status"] == "error") {
            agent_refused_naming(reply, bound);
            refused = true;
            break;
        }
        assert!(super::is_ok(&reply), "{reply:?}");
    }
    assert!(refused, "ten steps of 100 were all taken");

    let count = lab
        .attack(ep, "get", json!({"name": "web", "keys": ["numprocesses"]}))
        .expect("the agent still answers");
    assert_eq!(count["options"]["numprocesses"], 201, "{count}");
    let shrink = lab.attack(
        ep,
        "decr",
        json!({"name": "web", "nb": 200, "waiting": true}),
    );
    assert_eq!(
        shrink.expect("decr")["numprocesses"],
        1,
        "fewer is always fine"
    );
    let listed = lab.attack(ep, "list", json!({})).expect("list");
    assert_eq!(listed["watchers"], json!(["web"]), "`add` added nothing");
}

/// A SUB made on `host` (its sockets live in that namespace), connected to `endpoint` and
/// subscribed to `topics`, with a monitor that tells when ZeroMQ lost the connection.
struct AgentSubscriber {
    socket: zmq::Socket,
    monitor: zmq::Socket,
    _context: zmq::Context,
}

impl AgentSubscriber {
    fn connect(host: &Host, endpoint: &str, topics: &[String]) -> AgentSubscriber {
        static MONITORS: AtomicU32 = AtomicU32::new(0);
        let endpoint = endpoint.to_string();
        let topics = topics.to_vec();
        host.ns.run(move || {
            let context = zmq::Context::new();
            let socket = context.socket(zmq::SUB).unwrap();
            socket.set_linger(0).unwrap();
            let watch = format!(
                "inproc://agent-subscriber-{}",
                MONITORS.fetch_add(1, Ordering::Relaxed)
            );
            socket
                .monitor(&watch, zmq::SocketEvent::DISCONNECTED as i32)
                .unwrap();
            let monitor = context.socket(zmq::PAIR).unwrap();
            monitor.connect(&watch).unwrap();
            socket.connect(&endpoint).unwrap();
            for topic in &topics {
                socket.set_subscribe(topic.as_bytes()).unwrap();
            }
            AgentSubscriber {
                socket,
                monitor,
                _context: context,
            }
        })
    }

    /// Whether ZeroMQ reported the connection lost since the last call.
    fn was_dropped(&self) -> bool {
        let mut dropped = false;
        while let Ok(frames) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            dropped |= frames.first().is_some_and(|event| {
                event.len() == 6
                    && u16::from_ne_bytes([event[0], event[1]])
                        == zmq::SocketEvent::DISCONNECTED.to_raw()
            });
        }
        dropped
    }

    /// Waits for a message published after this call.
    fn receives_a_fresh_message(&self) -> bool {
        while self.socket.recv_multipart(zmq::DONTWAIT).is_ok() {}
        self.socket.poll(zmq::POLLIN, 5000).unwrap_or(0) > 0
    }
}

#[test]
#[ignore = "needs root"]
fn agent_stats_and_events_subscribers_past_the_bounds_are_dropped_and_others_served() {
    let lab = Lab::new("bnsub");
    let agent = HostAgent::start(lab.victim(), "stats_interval = \"250ms\"", "");
    let at = |port: u16| format!("tcp://{}:{port}", lab.victim().address);
    let (events, stats) = (at(5556), at(5557));
    // Someone on another address (the victim host itself), subscribed throughout.
    let polite = AgentSubscriber::connect(lab.victim(), &stats, &["stat.".to_string()]);
    assert!(polite.receives_a_fresh_message(), "the stats stream flows");

    for endpoint in [&stats, &events] {
        let mut topics: Vec<String> = (0..MAX_TOPICS_PER_PEER + 50)
            .map(|n| format!("stat.flood-{n}"))
            .collect();
        topics.insert(0, "stat.".to_string());
        let flooder = AgentSubscriber::connect(lab.attacker(), endpoint, &topics);
        wait_for(
            &format!("the topic flooder dropped from {endpoint}"),
            Duration::from_secs(10),
            || flooder.was_dropped(),
        );

        let crowd: Vec<AgentSubscriber> = (0..MAX_SUBSCRIBERS_PER_PEER + 4)
            .map(|_| AgentSubscriber::connect(lab.attacker(), endpoint, &["stat.".to_string()]))
            .collect();
        let mut dropped = std::collections::HashSet::new();
        wait_for(
            &format!("connections past the bound dropped from {endpoint}"),
            Duration::from_secs(10),
            || {
                for (n, subscriber) in crowd.iter().enumerate() {
                    if subscriber.was_dropped() {
                        dropped.insert(n);
                    }
                }
                dropped.len() >= 4
            },
        );
    }

    assert!(
        !polite.was_dropped(),
        "the other subscriber kept its connection"
    );
    assert!(polite.receives_a_fresh_message(), "and still receives");
    assert!(super::is_ok(&lab.attack(
        &agent.endpoint,
        "status",
        json!({})
    )));
    let log = agent.daemon.log();
    for bound in ["MAX_TOPICS_PER_PEER", "MAX_SUBSCRIBERS_PER_PEER"] {
        assert!(log.contains(bound), "the agent's log names {bound}");
    }
}

/// Connections past the bound of one address, beyond it.
const CONNECTIONS_PAST: usize = 6;

/// `count` TCP connections from `host` to `address:port`, each sending a ZMTP 3 greeting (NULL
/// mechanism) and then nothing, as an attacker hoarding connections would. The daemon's
/// ZeroMQ drops them after its handshake interval (30 s), longer than a test takes.
fn connections_from(host: &Host, address: &str, port: u16, count: usize) -> Vec<TcpStream> {
    let target = format!("{address}:{port}");
    let mut greeting = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 3, 0];
    greeting.extend_from_slice(b"NULL");
    greeting.resize(64, 0);
    host.ns.run(|| {
        (0..count)
            .map(|_| {
                let mut stream = TcpStream::connect(&target).expect("connect");
                stream.write_all(&greeting).expect("greeting");
                stream.set_nonblocking(true).expect("a non-blocking stream");
                stream
            })
            .collect()
    })
}

/// Whether the daemon closed `stream` (end of file or a reset); its greeting is read past.
fn closed_by_the_daemon(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 256];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Opens the bound's worth of connections and [`CONNECTIONS_PAST`] more to `port` from the
/// attacker's host, and waits until exactly the ones past the bound are closed. Returns the
/// connections still open.
fn connections_past_the_bound_are_closed(lab: &Lab, port: u16, bound: usize) -> Vec<TcpStream> {
    let address = &lab.victim().address;
    let mut streams = connections_from(lab.attacker(), address, port, bound + CONNECTIONS_PAST);
    let mut closed = std::collections::HashSet::new();
    wait_for(
        &format!("{CONNECTIONS_PAST} connections to port {port} closed"),
        Duration::from_secs(10),
        || {
            for (n, stream) in streams.iter_mut().enumerate() {
                if closed_by_the_daemon(stream) {
                    closed.insert(n);
                }
            }
            closed.len() >= CONNECTIONS_PAST
        },
    );
    assert_eq!(closed.len(), CONNECTIONS_PAST, "port {port}: {closed:?}");
    let mut open: Vec<TcpStream> = streams
        .into_iter()
        .enumerate()
        .filter(|(n, _)| !closed.contains(n))
        .map(|(_, stream)| stream)
        .collect();
    assert!(
        open.iter_mut().all(|stream| !closed_by_the_daemon(stream)),
        "the connections within the bound stay open"
    );
    open
}

#[test]
#[ignore = "needs root"]
fn agent_control_connections_past_the_per_peer_bound_are_closed_and_others_served() {
    let lab = Lab::new("bnconn");
    let agent = HostAgent::start(lab.victim(), "", "");
    let hoard = connections_past_the_bound_are_closed(&lab, 5555, MAX_CONTROL_CONNECTIONS_PER_PEER);
    // A ZeroMQ client from the attacker's address is at the bound too...
    let refused = lab.attack(&agent.endpoint, "status", json!({}));
    assert!(refused.is_err(), "{refused:?}");
    // ...while another address is served.
    let victim = call_from(
        lab.victim(),
        &agent.endpoint,
        "status",
        json!({}),
        Duration::from_secs(3),
    );
    assert!(is_ok(&victim), "{victim:?}");
    wait_for(
        "the bound in the agent's log",
        Duration::from_secs(5),
        || {
            agent
                .daemon
                .log()
                .contains("MAX_CONTROL_CONNECTIONS_PER_PEER")
        },
    );
    drop(hoard);
    wait_for(
        "the attacker served once its connections are closed",
        Duration::from_secs(10),
        || is_ok(&lab.attack(&agent.endpoint, "status", json!({}))),
    );
}

// ----------------------------------------------------------------------------------------------
// troupe serve (serve_*): the bounds in troupe::bounds named SERVE_* and MAX_MEMBERS. Each test
// failed on the code before them, which had none: every request was a task of its own, every
// new id a row, every pid a series, every range up to a /16 swept, every registration taken.
// SERVE_REQUESTS_IN_FLIGHT, SERVE_REGISTER_PER_SECOND and SERVE_STATS_SERIES (all peers or
// nodes together) need more addresses than a lab host has: serve::gate's and the history's unit
// tests cover them.

const SERVE_FAKE_PORT: u16 = 40000;

/// Sends every request at once on one connection from the attacker's host, and returns the
/// replies that come within `wait`.
fn serve_pipelined(
    lab: &Lab,
    endpoint: &str,
    requests: Vec<Request>,
    wait: Duration,
) -> Vec<Value> {
    let endpoint = endpoint.to_string();
    lab.attacker().ns.run(move || {
        let zmq = zmq::Context::new();
        let socket = troupe::sockets::connect_control(&zmq, &endpoint).expect("connect");
        for (i, mut request) in requests.into_iter().enumerate() {
            request.id = json!(i);
            socket.send(request.encode(), 0).expect("send");
        }
        socket
            .set_rcvtimeo(i32::try_from(wait.as_millis()).unwrap_or(i32::MAX))
            .expect("rcvtimeo");
        let mut replies = Vec::new();
        while let Ok(body) = socket.recv_bytes(0) {
            replies.push(serde_json::from_slice(&body).expect("a JSON reply"));
        }
        replies
    })
}

fn serve_reason(reply: &Value) -> &str {
    reply["reason"].as_str().unwrap_or_default()
}

/// The attacker registers a fake node of its own and waits until serve lists it alive.
fn serve_with_a_fake_member(lab: &Lab, stats_pids: u32) -> (HostServe, FakeNodes) {
    let serve = HostServe::start(lab.victim(), false, &[]);
    let fake = FakeNodes::start(lab.attacker(), SERVE_FAKE_PORT, 1, stats_pids);
    let registered = lab.attack(&serve.endpoint, "register_node", fake.registration(0));
    assert!(is_ok(&registered), "{registered:?}");
    wait_for(
        "the fake node to be a member",
        Duration::from_secs(10),
        || serve.alive(lab.victim()) == [FakeNodes::name(0)],
    );
    (serve, fake)
}

#[test]
#[ignore = "needs root"]
fn serve_requests_in_flight_past_the_per_peer_bound_are_refused_while_others_are_served() {
    let lab = Lab::new("sb-flight");
    // The fake node never answers `status`: each forwarded one stays in flight.
    let (mut serve, fake) = serve_with_a_fake_member(&lab, 0);
    let extra = 8;
    let flood: Vec<Request> = (0..SERVE_REQUESTS_IN_FLIGHT_PER_PEER + extra)
        .map(|_| {
            let properties = json!({"node": FakeNodes::name(0), "node_timeout": 60});
            Request::new("status", properties.as_object().cloned().unwrap())
        })
        .collect();
    let replies = serve_pipelined(&lab, &serve.endpoint, flood, Duration::from_secs(3));
    assert_eq!(replies.len(), extra, "{replies:#?}");
    for reply in &replies {
        assert_eq!(reply["status"], "error", "{reply}");
        assert!(
            serve_reason(reply).contains("SERVE_REQUESTS_IN_FLIGHT_PER_PEER"),
            "{reply}"
        );
    }
    wait_for(
        "the admitted requests to reach the node",
        Duration::from_secs(10),
        || fake.received().len() == SERVE_REQUESTS_IN_FLIGHT_PER_PEER,
    );
    // With the attacker's requests still in flight, everyone else is served.
    let nodelist = serve.call(lab.victim(), "nodelist", json!({}));
    assert!(is_ok(&nodelist), "{nodelist:?}");
    assert_eq!(fake.received().len(), SERVE_REQUESTS_IN_FLIGHT_PER_PEER);
    serve.assert_running();
}

/// `configure` sent to serve with `node` makes serve push the peer list itself: its flags come
/// from the network, so a bad one is an error reply naming it and nothing is pushed. A good
/// request afterwards does reach the member (so "nothing pushed" is not a member that hears
/// nothing at all).
#[test]
#[ignore = "needs root"]
fn serve_configure_with_hostile_flags_is_refused_naming_the_field_and_pushes_nothing() {
    let lab = Lab::new("sb-conf");
    let (mut serve, fake) = serve_with_a_fake_member(&lab, 0);
    let hostile = [
        (
            json!({"node": "*", "restart": "yes"}),
            "'restart' must be true or false",
        ),
        (
            json!({"node": "*", "dry_run": 1}),
            "'dry_run' must be true or false",
        ),
        (json!({"node": 5}), "'node' must be a string"),
        (
            json!({"node": "*", "node_timeout": -1}),
            "'node_timeout' must be a positive number",
        ),
    ];
    for (properties, why) in hostile {
        let reply = lab
            .attack(&serve.endpoint, "configure", properties.clone())
            .unwrap_or_else(|e| panic!("{properties}: {e}"));
        assert_eq!(reply["status"], "error", "{properties}: {reply}");
        assert!(serve_reason(&reply).contains(why), "{properties}: {reply}");
    }
    let sent = lab.attack(
        &serve.endpoint,
        "configure",
        json!({"node": "*", "dry_run": true, "node_timeout": 1}),
    );
    assert!(is_ok(&sent), "{sent:?}");
    let received = fake.received();
    assert_eq!(received, ["configure"], "{received:?}");
    serve.assert_running();
}

#[test]
#[ignore = "needs root"]
fn serve_register_node_past_its_rate_is_refused_and_serve_answers_after() {
    let lab = Lab::new("sb-rate");
    let serve = HostServe::start(lab.victim(), false, &[]);
    let fake = FakeNodes::start(lab.attacker(), SERVE_FAKE_PORT, 1, 0);
    let sent = 2 * SERVE_REGISTER_BURST_PER_PEER as usize;
    let registration = fake.registration(0).as_object().cloned().unwrap();
    let flood = (0..sent)
        .map(|_| Request::new("register_node", registration.clone()))
        .collect();
    let replies = serve_pipelined(&lab, &serve.endpoint, flood, Duration::from_secs(3));
    assert_eq!(replies.len(), sent, "every registration is answered");
    let accepted = replies.iter().filter(|r| r["status"] == "ok").count();
    let refused: Vec<&Value> = replies.iter().filter(|r| r["status"] != "ok").collect();
    // The bucket refills at SERVE_REGISTER_PER_SECOND_PER_PEER while the flood is read.
    assert!(
        (SERVE_REGISTER_BURST_PER_PEER as usize..=SERVE_REGISTER_BURST_PER_PEER as usize + 2)
            .contains(&accepted),
        "{accepted} of {sent} accepted"
    );
    for reply in &refused {
        assert!(
            serve_reason(reply).contains("SERVE_REGISTER_PER_SECOND_PER_PEER"),
            "{reply}"
        );
    }
    for host in [lab.victim(), lab.attacker()] {
        let nodelist = serve.call(host, "nodelist", json!({}));
        assert!(is_ok(&nodelist), "{nodelist:?}");
    }
    wait_for(
        "the registered node to be a member",
        Duration::from_secs(10),
        || serve.alive(lab.victim()) == [FakeNodes::name(0)],
    );
}

#[test]
#[ignore = "needs root"]
fn serve_cluster_past_the_member_bound_is_refused_and_the_table_holds() {
    let lab = Lab::new("sb-members");
    let mut serve = HostServe::start(lab.victim(), false, &[]);
    let extra = 8;
    let fakes = FakeNodes::start(lab.attacker(), SERVE_FAKE_PORT, MAX_MEMBERS + extra, 0);
    let range: Vec<String> = (0..fakes.count)
        .map(|i| format!("{}:{}", fakes.address, fakes.first_port as usize + i))
        .collect();
    // A request sweeps at most SERVE_REMOTE_SWEEP_ADDRESSES: the table fills over several, and
    // the last one, of the extra nodes alone, is refused.
    let (filling, past) = range.split_at(MAX_MEMBERS);
    for chunk in filling.chunks(SERVE_REMOTE_SWEEP_ADDRESSES as usize) {
        let reply = call_from(
            lab.attacker(),
            &serve.endpoint,
            "cluster",
            json!({"range": chunk.join(",")}),
            Duration::from_secs(60),
        );
        let reply = reply.expect("serve answers the sweep");
        assert_eq!(reply["status"], "ok", "{reply}");
    }
    let reply = call_from(
        lab.attacker(),
        &serve.endpoint,
        "cluster",
        json!({"range": past.join(",")}),
        Duration::from_secs(60),
    );
    let reply = reply.expect("serve answers the sweep");
    assert_eq!(reply["status"], "error", "{reply}");
    assert!(
        serve_reason(&reply).contains(&format!("max_members = {MAX_MEMBERS}"))
            && serve_reason(&reply).starts_with(&format!("{extra} node(s) not adopted")),
        "{reply}"
    );
    let nodes = serve.nodes(lab.victim());
    assert_eq!(nodes.len(), MAX_MEMBERS);
    let snapshot = serve.call(lab.victim(), "stats_snapshot", json!({}));
    assert!(is_ok(&snapshot), "{snapshot:?}");
    serve.assert_running();
}

/// `--max-members` sets the bound: past it, the same refusal naming the bound set and how to
/// raise it; below the open-files limit it needs, serve refuses to start and says why.
#[test]
#[ignore = "needs root"]
fn serve_max_members_sets_the_bound_and_is_checked_against_the_open_files_limit() {
    let lab = Lab::new("sb-maxmem");
    let mut serve = HostServe::start(lab.victim(), false, &["--max-members", "20"]);
    let extra = 5;
    let fakes = FakeNodes::start(lab.attacker(), SERVE_FAKE_PORT, 20 + extra, 0);
    let range: Vec<String> = (0..fakes.count)
        .map(|i| format!("{}:{}", fakes.address, fakes.first_port as usize + i))
        .collect();
    let (filling, past) = range.split_at(20);
    let sweep = |addresses: &[String]| {
        call_from(
            lab.attacker(),
            &serve.endpoint,
            "cluster",
            json!({"range": addresses.join(",")}),
            Duration::from_secs(60),
        )
        .expect("serve answers the sweep")
    };
    let reply = sweep(filling);
    assert_eq!(reply["status"], "ok", "{reply}");
    let reply = sweep(past);
    let reason = serve_reason(&reply);
    assert!(
        reason.starts_with(&format!("{extra} node(s) not adopted"))
            && reason.contains("max_members = 20")
            && reason.contains("--max-members"),
        "{reply}"
    );
    assert_eq!(serve.nodes(lab.victim()).len(), 20);
    // nodelist's state filter, from the attacker: anything but a known state is refused, and
    // what was sent is not echoed back.
    for hostile in [json!("dead"), json!({"$ne": 1}), json!("x".repeat(100_000))] {
        let reply = call_from(
            lab.attacker(),
            &serve.endpoint,
            "nodelist",
            json!({ "state": hostile }),
            Duration::from_secs(5),
        )
        .expect("serve answers");
        let reason = serve_reason(&reply);
        assert!(
            reason.starts_with("message invalid 'state' must be one of \"alive\"")
                && !reason.contains("dead")
                && !reason.contains("xxxx"),
            "{reply}"
        );
    }
    serve.assert_running();

    // serve on the victim under a hard limit of 4096 files that no capability may raise,
    // stopped after `seconds` if it runs.
    let dir = tempfile::tempdir().unwrap();
    let limited_serve = |seconds: &str, extra: &[&str]| {
        let mut command = crate::support::isolated(lab.victim().command("timeout"), dir.path());
        command
            .args([seconds, "prlimit", "--nofile=4096:4096", "setpriv"])
            .args(["--inh-caps=-all", "--bounding-set=-all"])
            .arg(bin("troupe"))
            .args([
                "serve",
                "--no-mdns",
                "--port",
                "5658",
                "--events-port",
                "5660",
            ])
            .args(["--stats-port", "5659", "--state-dir"])
            .arg(dir.path().join("state"))
            .args(extra);
        run_command(command, Duration::from_secs(20))
    };
    // 5000 members need 41 024 files: serve does not start, and says what it needs and what
    // to do.
    let run = limited_serve("15", &["--max-members", "5000"]);
    assert_ne!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("max_members = 5000 (8 files a member) needs 41024 open files")
            && run.stderr.contains("or set a lower --max-members"),
        "{}",
        run.stderr
    );

    // With a cluster key every connection's handshakes are watched: 16 files a member.
    let key = super::impostor::key_file(
        dir.path(),
        &troupe::cluster_key::ClusterKey::generate().unwrap(),
    );
    let run = limited_serve(
        "15",
        &["--max-members", "5000", "--key-file", key.to_str().unwrap()],
    );
    assert_ne!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("max_members = 5000 (16 files a member) needs 81024 open files"),
        "{}",
        run.stderr
    );

    // The default bound under that limit: serve starts, and warns how many members fit.
    let run = limited_serve("3", &[]);
    assert!(
        run.stderr.contains(
            "this process may open 4096 files: about 384 members fit, not the 1024 of \
             max_members"
        ) && run.stdout.contains("troupe serve: cluster"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
#[ignore = "needs root"]
fn serve_cluster_range_past_the_remote_sweep_bound_is_refused() {
    let lab = Lab::new("sb-sweep");
    let serve = HostServe::start(lab.victim(), false, &[]);
    let prefix = lab.victim().address.rsplit_once('.').unwrap().0.to_string();
    let range = format!("{prefix}.0/21");
    let reply = lab.attack(&serve.endpoint, "cluster", json!({"range": range}));
    let reply = reply.expect("an answer at once");
    assert_eq!(reply["status"], "error", "{reply}");
    assert!(
        serve_reason(&reply).contains(&format!(
            "SERVE_REMOTE_SWEEP_ADDRESSES = {SERVE_REMOTE_SWEEP_ADDRESSES}"
        )),
        "{reply}"
    );
    let nodelist = lab.attack(&serve.endpoint, "nodelist", json!({}));
    assert!(is_ok(&nodelist), "{nodelist:?}");
}

#[test]
#[ignore = "needs root"]
fn serve_stats_of_a_node_past_its_series_bound_are_not_kept() {
    let lab = Lab::new("sb-stats");
    let pids = SERVE_STATS_SERIES_PER_NODE as u32 + 100;
    let (serve, _fake) = serve_with_a_fake_member(&lab, pids);
    let node = FakeNodes::name(0);
    let history = || {
        let query = json!({"node": node, "since_seconds": 2});
        serve
            .call(lab.victim(), "stats_history", query)
            .expect("stats_history answers")
    };
    wait_for(
        "samples past the bound to be refused",
        Duration::from_secs(30),
        || history()["series_refused"][&node].as_u64().unwrap_or(0) > 0,
    );
    let series = history()["series"].as_array().cloned().unwrap_or_default();
    assert!(!series.is_empty());
    assert!(
        series.len() <= SERVE_STATS_SERIES_PER_NODE,
        "{} series kept for {node}",
        series.len()
    );
    let snapshot = serve.call(lab.victim(), "stats_snapshot", json!({"node": node}));
    let processes = snapshot.as_ref().expect("stats_snapshot answers")["snapshot"]["nodes"][&node]
        ["watchers"]["w"]["processes"]
        .as_object()
        .map_or(0, |p| p.len());
    assert!(
        (1..SERVE_STATS_SERIES_PER_NODE).contains(&processes),
        "{processes} processes kept"
    );
}

/// A member's stats bodies that are no JSON object (an array, a duplicate key, truncated
/// JSON, no UTF-8) are dropped on arrival: never a series, never a process; its good ones are.
#[test]
#[ignore = "needs root"]
fn serve_drops_stats_bodies_that_are_no_json_object() {
    let lab = Lab::new("sb-garbage");
    let (serve, _fake) = serve_with_a_fake_member(&lab, 2);
    let node = FakeNodes::name(0);
    // (pid, points) of each process series.
    let series = || {
        let query = json!({"node": node, "since_seconds": 60});
        let history = serve
            .call(lab.victim(), "stats_history", query)
            .expect("stats_history answers");
        let mut series: Vec<(u64, usize)> = history["series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["pid"].as_u64()?, s["points"].as_array()?.len())))
            .collect();
        series.sort_unstable();
        series
    };
    // Rounds come every 500 ms, the hostile bodies first in each: five rounds of them.
    wait_for(
        "five rounds of the good processes",
        Duration::from_secs(20),
        || series().first().is_some_and(|(_, points)| *points >= 5),
    );
    let pids: Vec<u64> = series().into_iter().map(|(pid, _)| pid).collect();
    assert_eq!(
        pids,
        [1, 2],
        "pids from {HOSTILE_STATS_PIDS} on must not be kept"
    );
    let snapshot = serve.call(lab.victim(), "stats_snapshot", json!({"node": node}));
    let processes = &snapshot.expect("stats_snapshot answers")["snapshot"]["nodes"][&node]
        ["watchers"]["w"]["processes"];
    let kept: Vec<&String> = processes.as_object().map(|p| p.keys().collect()).unwrap();
    assert_eq!(kept, ["1", "2"]);
}

#[test]
#[ignore = "needs root"]
fn serve_connections_past_the_per_peer_bounds_are_closed_and_others_served() {
    let lab = Lab::new("sb-conn");
    let serve = HostServe::start(lab.victim(), false, &[]);
    let control =
        connections_past_the_bound_are_closed(&lab, 5558, MAX_CONTROL_CONNECTIONS_PER_PEER);
    let refused = lab.attack(&serve.endpoint, "nodelist", json!({}));
    assert!(refused.is_err(), "{refused:?}");
    let nodelist = serve.call(lab.victim(), "nodelist", json!({}));
    assert!(is_ok(&nodelist), "{nodelist:?}");
    // The events and the stats sockets.
    let events = connections_past_the_bound_are_closed(&lab, 5560, MAX_SUBSCRIBERS_PER_PEER);
    let stats = connections_past_the_bound_are_closed(&lab, 5559, MAX_SUBSCRIBERS_PER_PEER);
    wait_for("the bounds in serve's log", Duration::from_secs(5), || {
        let log = serve.daemon.log();
        log.contains("MAX_CONTROL_CONNECTIONS_PER_PEER") && log.contains("MAX_SUBSCRIBERS_PER_PEER")
    });
    drop((control, events, stats));
    wait_for(
        "the attacker served once its connections are closed",
        Duration::from_secs(10),
        || is_ok(&lab.attack(&serve.endpoint, "nodelist", json!({}))),
    );
}

/// What fake node `i` of [`serve_adopts_no_node_whose_nodeinfo_is_malformed_or_hostile`]
/// answers: node 0 as a valid agent, each other one wrong in its own way.
fn malformed_nodeinfo(i: usize, mut valid: Value) -> Vec<u8> {
    match i {
        1 => valid["node"]["name"] = json!("x;rm -rf /"),
        2 => valid["node"]["started"] = json!("yesterday"),
        3 => {
            valid.as_object_mut().unwrap().remove("node");
        }
        4 => valid["id"] = json!("an-answer-to-another-request"),
        5 => return b"\xff\xfe not json".to_vec(),
        6 => valid["node"] = json!([1, 2]),
        7 => valid["node"]["cluster"] = json!("../etc"),
        _ => {}
    }
    valid.to_string().into_bytes()
}

/// Probed nodes whose `nodeinfo` replies break the rules (a hostile name or cluster, a field
/// of another type, no node, an answer to another request, not JSON) are never members; the
/// valid one beside them is, and serve goes on answering.
#[test]
#[ignore = "needs root"]
fn serve_adopts_no_node_whose_nodeinfo_is_malformed_or_hostile() {
    const NODES: usize = 8;
    let lab = Lab::new("sb-nodeinfo");
    let fakes =
        FakeNodes::start_answering(lab.attacker(), SERVE_FAKE_PORT, NODES, malformed_nodeinfo);
    let probe = (0..NODES)
        .map(|i| format!("{}:{}", fakes.address, SERVE_FAKE_PORT as usize + i))
        .collect::<Vec<_>>()
        .join(",");
    let mut serve = HostServe::start(lab.victim(), false, &["--probe", &probe]);
    wait_for(
        "the valid fake node to be a member",
        Duration::from_secs(15),
        || serve.alive(lab.victim()) == [FakeNodes::name(0)],
    );
    // Another sweep (serve probes every 5 s) meets the same replies.
    std::thread::sleep(Duration::from_secs(6));
    serve.assert_running();
    assert_eq!(serve.alive(lab.victim()), [FakeNodes::name(0)]);
    for node in serve.nodes(lab.victim()) {
        let name = node["name"].as_str().unwrap_or_default();
        assert!(
            name == FakeNodes::name(0) || node["state"] == "no reply",
            "a node adopted from a malformed nodeinfo: {node}"
        );
    }
}
