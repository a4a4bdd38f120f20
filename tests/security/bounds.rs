//! Floods past each bound of SECURITY.md from the attacker's host: each gets an error naming
//! the bound, and the daemon still answers a normal request afterwards.

use super::{HostAgent, Lab};
use crate::support::netns::Host;
use crate::support::wait_for;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use troupe::bounds::{MAX_SUBSCRIBERS_PER_PEER, MAX_TOPICS_PER_PEER};

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
