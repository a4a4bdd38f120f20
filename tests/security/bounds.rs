//! Floods past every bound on what a remote peer can make a daemon hold (issue 11, hole 7),
//! from the attacker's host; after each, the daemon still answers a normal request.

// ----------------------------------------------------------------------------------------------
// troupe serve (serve_*): the bounds in troupe::bounds named SERVE_* and MAX_MEMBERS. Each test
// failed on the code before them, which had none: every request was a task of its own, every
// new id a row, every pid a series, every range up to a /16 swept, every registration taken.
// SERVE_REQUESTS_IN_FLIGHT, SERVE_REGISTER_PER_SECOND and SERVE_STATS_SERIES (all peers or
// nodes together) need more addresses than a lab host has: serve::gate's and the history's unit
// tests cover them.

use super::{call_from, is_ok, FakeNodes, HostServe, Lab};
use crate::support::wait_for;
use serde_json::{json, Value};
use std::time::Duration;
use troupe::bounds::{
    MAX_MEMBERS, SERVE_REGISTER_BURST_PER_PEER, SERVE_REMOTE_SWEEP_ADDRESSES,
    SERVE_REQUESTS_IN_FLIGHT_PER_PEER, SERVE_STATS_SERIES_PER_NODE,
};
use troupe::protocol::Request;

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
    let reply = call_from(
        lab.attacker(),
        &serve.endpoint,
        "cluster",
        json!({"range": range.join(",")}),
        Duration::from_secs(60),
    );
    let reply = reply.expect("serve answers the sweep");
    assert_eq!(reply["status"], "error", "{reply}");
    assert!(
        serve_reason(&reply).contains("MAX_MEMBERS")
            && serve_reason(&reply).starts_with(&format!("{extra} node(s) not adopted")),
        "{reply}"
    );
    let nodes = serve.nodes(lab.victim());
    assert_eq!(nodes.len(), MAX_MEMBERS);
    let snapshot = serve.call(lab.victim(), "stats_snapshot", json!({}));
    assert!(is_ok(&snapshot), "{snapshot:?}");
    serve.assert_running();
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
