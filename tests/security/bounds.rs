//! Floods past each bound of SECURITY.md from the attacker's host: each gets an error naming
//! the bound, and the daemon still answers a normal request afterwards.

use super::{HostAgent, Lab};
use serde_json::{json, Value};

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
