//! After a key rotation (issue 12), what a node or controller keeps open follows the new key:
//! `troupe serve` keeps receiving every node's stats, and an agent announces the new first
//! key's fingerprint over mDNS and Circus UDP.
//!
//! Each fails on the code before its fix: there serve's stats SUB sockets kept the key they
//! were made with, which the agents refused once they listened with the new one, so serve's
//! stats stream went silent; and the agent's mDNS record and UDP reply kept the fingerprint it
//! started with, so a controller holding only the new key skipped it as another cluster's.

use super::impostor::{circus_udp_reply, contains, Capture, LabAgent};
use super::rotation::{hangup, start_agent, start_serve, write_keys, Node};
use crate::support::netns::{Host, Segment};
use crate::support::wait_for;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use troupe::cluster_key::ClusterKey;

/// The nodes whose stats `troupe serve` on `host` re-publishes (topics `stat.<node>:...`),
/// read for up to `within` by a SUB presenting `key`, until every one of `expected` was seen.
fn nodes_streamed(
    host: &Host,
    key: &ClusterKey,
    expected: &[&str],
    within: Duration,
) -> BTreeSet<String> {
    let endpoint = format!("tcp://{}:5559", host.address);
    host.ns.run(|| {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::SUB).unwrap();
        socket.set_linger(0).unwrap();
        let curve = key.curve();
        socket.set_curve_serverkey(&curve.server.public).unwrap();
        socket.set_curve_publickey(&curve.client.public).unwrap();
        socket.set_curve_secretkey(curve.client.secret()).unwrap();
        socket.set_subscribe(b"stat.").unwrap();
        socket.connect(&endpoint).unwrap();
        let deadline = Instant::now() + within;
        let mut seen = BTreeSet::new();
        while !expected.iter().all(|n| seen.contains(*n)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || socket.poll(zmq::POLLIN, left.as_millis() as i64).unwrap() == 0 {
                break;
            }
            let frames = socket.recv_multipart(0).unwrap();
            let topic = String::from_utf8_lossy(&frames[0]).into_owned();
            // A sample of one watcher of a node: only a fresh sample from the node makes one.
            if let Some((node, _)) = topic.trim_start_matches("stat.").split_once(':') {
                seen.insert(node.to_string());
            }
        }
        seen
    })
}

#[test]
#[ignore = "needs root"]
fn serve_keeps_every_nodes_stats_through_a_rotation() {
    let segment = Segment::new("statskey", 3);
    let (a, b) = (
        ClusterKey::generate().unwrap(),
        ClusterKey::generate().unwrap(),
    );
    let mut nodes: Vec<Node> = (1..=2)
        .map(|i| start_agent(segment.host(i), &format!("node{i}"), &[&a]))
        .collect();
    let serve_host = segment.host(3);
    let serve_dir = tempfile::tempdir().unwrap();
    let serve_key = serve_dir.path().join("cluster.key");
    write_keys(&serve_key, &[&a]);
    let agents = [segment.host(1), segment.host(2)];
    let mut serve = start_serve(serve_host, serve_dir.path(), &serve_key, &agents);
    let both = ["node1", "node2"];
    let everyone = |seen: &BTreeSet<String>| both.iter().all(|n| seen.contains(*n));
    wait_for(
        "serve streams both nodes' stats",
        Duration::from_secs(30),
        || {
            serve.assert_running();
            everyone(&nodes_streamed(
                serve_host,
                &a,
                &both,
                Duration::from_secs(3),
            ))
        },
    );

    // B added everywhere, then first on the agents (they listen with it), then on serve.
    for node in &nodes {
        write_keys(&node.key_file, &[&a, &b]);
        hangup(&node.daemon);
    }
    write_keys(&serve_key, &[&a, &b]);
    hangup(&serve);
    for node in &nodes {
        write_keys(&node.key_file, &[&b, &a]);
        hangup(&node.daemon);
    }
    write_keys(&serve_key, &[&b, &a]);
    hangup(&serve);

    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !everyone(&seen) && Instant::now() < deadline {
        serve.assert_running();
        seen = nodes_streamed(serve_host, &b, &both, Duration::from_secs(3));
    }
    for node in &mut nodes {
        node.daemon.assert_running();
    }
    assert!(
        everyone(&seen),
        "after the rotation serve streams the stats of {seen:?} only\nserve log:\n{}",
        serve.log()
    );
}

#[test]
#[ignore = "needs root"]
fn an_agent_announces_its_new_first_key_after_a_rotation() {
    let segment = Segment::new("announcekey", 2);
    let (agent_host, observer) = (segment.host(1), segment.host(2));
    let scratch = tempfile::tempdir().unwrap();
    let (a, b) = (
        ClusterKey::generate().unwrap(),
        ClusterKey::generate().unwrap(),
    );
    let key_path = scratch.path().join("cluster.key");
    write_keys(&key_path, &[&a]);
    let agent = LabAgent::start(agent_host, "rotating", Some(&key_path), true, None);
    let fingerprint_of = |reply: &[u8]| -> Value {
        serde_json::from_slice::<Value>(reply).unwrap()["fingerprint"].clone()
    };
    assert_eq!(
        fingerprint_of(&circus_udp_reply(observer, &agent_host.address)),
        json!(a.fingerprint().as_str())
    );
    // The fingerprint in a UDP reply, or None when none came (the agent is busy re-binding).
    let answered = || -> Option<Value> {
        observer.ns.run(|| {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            socket
                .send_to(b"{}", (agent_host.address.as_str(), 12027))
                .unwrap();
            let mut buffer = [0u8; 2048];
            let (n, _) = socket.recv_from(&mut buffer).ok()?;
            Some(fingerprint_of(&buffer[..n]))
        })
    };

    let capture = Capture::mdns(observer);
    write_keys(&key_path, &[&b, &a]);
    hangup(&agent.daemon);
    wait_for(
        "the UDP reply to name the new first key",
        Duration::from_secs(10),
        || answered().is_some_and(|fp| fp == b.fingerprint().as_str()),
    );
    // mdns-sd sends a registered record at once and again a second later.
    std::thread::sleep(Duration::from_secs(3));
    let txt = format!("fp={}", b.fingerprint());
    let packets = capture.finish();
    assert!(
        packets.iter().any(|p| contains(p, txt.as_bytes())),
        "no mDNS packet of {} after the rotation holds {txt}\nagent log:\n{}",
        packets.len(),
        agent.daemon.log()
    );
}
