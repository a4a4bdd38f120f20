//! The control socket under bad input, driven with raw ZeroMQ frames: every malformed or
//! oversize message gets an error reply with Circus's errno, and the same socket is served
//! right after (PROTOCOL.md "Fixed": a bad message never stalls the socket). Also the
//! framing cases Circus gets wrong or leaves out: REQ clients, extra frames, casts, and
//! concurrency between clients (no global lock, per-client order).

use crate::support::{proc_status_kib, wait_for, Agent};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// One idle watcher, so watcher commands have something to act on.
const SLEEPER: &str = "[watcher.sleeper]\ncmd = \"sleep 1000\"\n";
/// How long any reply may take.
const REPLY: Duration = Duration::from_secs(5);
/// The agent's default cap on a decoded control frame (1 MiB).
const CAP: usize = 1 << 20;

/// A socket of `kind` connected to the agent's control endpoint.
fn connect(agent: &Agent, kind: zmq::SocketType, identity: Option<&[u8]>) -> zmq::Socket {
    let socket = zmq::Context::new().socket(kind).expect("socket");
    socket.set_linger(0).expect("linger");
    if let Some(identity) = identity {
        socket.set_identity(identity).expect("identity");
    }
    socket.connect(&agent.endpoint()).expect("connect");
    socket
}

/// A DEALER, as circusctl uses.
fn dealer(agent: &Agent) -> zmq::Socket {
    connect(agent, zmq::DEALER, None)
}

fn send(socket: &zmq::Socket, frame: &[u8]) {
    socket.send(frame, 0).expect("send");
}

fn send_json(socket: &zmq::Socket, request: &Value) {
    send(socket, request.to_string().as_bytes());
}

/// The next reply within `timeout`, or None. A reply must be one frame of JSON.
fn try_recv(socket: &zmq::Socket, timeout: Duration) -> Option<Value> {
    let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    if socket.poll(zmq::POLLIN, ms).expect("poll") == 0 {
        return None;
    }
    let frames = socket.recv_multipart(0).expect("recv");
    let shown: Vec<String> = frames
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert_eq!(frames.len(), 1, "a reply is one JSON frame, got {shown:?}");
    Some(
        serde_json::from_slice(&frames[0])
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {:?}", shown[0])),
    )
}

/// The next reply; panics if none comes within [`REPLY`].
fn recv(socket: &zmq::Socket, what: &str) -> Value {
    try_recv(socket, REPLY).unwrap_or_else(|| panic!("no reply to {what} within {REPLY:?}"))
}

/// Asserts Circus's error reply shape with `errno`, a reason containing every one of
/// `reason_has` (ignoring case), and `id` echoed.
fn assert_error(reply: &Value, errno: i64, reason_has: &[&str], id: &Value) {
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["errno"].as_i64(), Some(errno), "errno: {reply}");
    assert!(reply["tb"].is_null(), "tb: {reply}");
    assert!(reply["time"].is_f64(), "time: {reply}");
    let reason = reply["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("reason: {reply}"));
    for part in reason_has {
        assert!(
            reason.to_lowercase().contains(&part.to_lowercase()),
            "reason {reason:?} should mention {part:?}"
        );
    }
    assert_eq!(&reply["id"], id, "id: {reply}");
}

/// Sends a valid request on `socket` and asserts its (correct) reply is the next one.
fn assert_keeps_serving(socket: &zmq::Socket, agent: &Agent) {
    send_json(
        socket,
        &json!({"command": "list", "properties": {}, "id": "after"}),
    );
    let reply = recv(socket, "the valid request sent after the bad one");
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["id"], "after", "{reply}");
    assert!(reply["watchers"].is_array(), "{reply}");
    assert!(agent.call("numwatchers", Value::Null)["numwatchers"].is_u64());
}

/// One bad frame on a fresh agent: the error reply, then the same socket still serves.
fn bad_frame(frame: &[u8], errno: i64, reason_has: &[&str], id: Value) {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    send(&socket, frame);
    let reply = recv(&socket, &format!("{:?}", String::from_utf8_lossy(frame)));
    assert_error(&reply, errno, reason_has, &id);
    assert_keeps_serving(&socket, &agent);
}

/// The configured numprocesses of a watcher (`get`), not the live count.
fn configured(agent: &Agent, watcher: &str) -> u64 {
    let reply = agent.call("get", json!({"name": watcher, "keys": ["numprocesses"]}));
    reply["options"]["numprocesses"]
        .as_u64()
        .unwrap_or_else(|| panic!("get numprocesses: {reply}"))
}

/// Live processes of a watcher (`numprocesses`).
fn live(agent: &Agent, watcher: &str) -> u64 {
    let reply = agent.call("numprocesses", json!({"name": watcher}));
    reply["numprocesses"]
        .as_u64()
        .unwrap_or_else(|| panic!("numprocesses: {reply}"))
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn malformed_json_gets_errno_1_and_the_socket_keeps_serving() {
    bad_frame(
        br#"{"command": "list", "id": "m1", "#,
        1,
        &["json invalid"],
        Value::Null,
    );
}

#[test]
fn json_that_is_not_an_object_gets_errno_1() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    for (frame, kind) in [
        (&br#"["list", {}]"#[..], "a list"),
        (&br#""list""#[..], "a string"),
        (&b"42"[..], "a number"),
    ] {
        send(&socket, frame);
        let reply = recv(&socket, kind);
        assert_error(&reply, 1, &["json invalid", "object", kind], &Value::Null);
        assert_keeps_serving(&socket, &agent);
    }
}

#[test]
fn missing_command_gets_errno_3_with_the_id() {
    bad_frame(
        br#"{"properties": {}, "id": "m2"}"#,
        3,
        &["'command' is missing"],
        json!("m2"),
    );
}

#[test]
fn command_that_is_not_a_string_gets_errno_3_with_the_id() {
    bad_frame(
        br#"{"command": ["list"], "properties": {}, "id": "m3"}"#,
        3,
        &["'command' must be a string", "a list"],
        json!("m3"),
    );
}

#[test]
fn properties_that_are_not_an_object_get_errno_3_with_the_id() {
    bad_frame(
        br#"{"command": "list", "properties": ["sleeper"], "id": "m4"}"#,
        3,
        &["'properties' must be an object", "a list"],
        json!("m4"),
    );
}

#[test]
fn unknown_command_gets_errno_2() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    send_json(
        &socket,
        &json!({"command": "x", "properties": {}, "id": "u1"}),
    );
    let reply = recv(&socket, "command x");
    assert_error(&reply, 2, &[], &json!("u1"));
    assert_eq!(reply["reason"], "unknown command: 'x'");
    assert_keeps_serving(&socket, &agent);
}

#[test]
fn unknown_watcher_gets_errno_3() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    for command in ["status", "incr", "stop", "get"] {
        let id = format!("w-{command}");
        send_json(
            &socket,
            &json!({"command": command, "properties": {"name": "ghost", "keys": ["cmd"]}, "id": id}),
        );
        let reply = recv(&socket, command);
        assert_error(&reply, 3, &["ghost", "not found"], &json!(id));
    }
    assert_keeps_serving(&socket, &agent);
}

#[test]
fn mistyped_property_gets_errno_3_and_changes_nothing() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    send_json(
        &socket,
        &json!({"command": "incr", "properties": {"name": "sleeper", "nb": "two", "waiting": true}, "id": "t1"}),
    );
    let reply = recv(&socket, "incr nb=\"two\"");
    assert_error(&reply, 3, &["nb", "integer", "\"two\""], &json!("t1"));
    assert_keeps_serving(&socket, &agent);
    assert_eq!(
        configured(&agent, "sleeper"),
        1,
        "the bad incr had no effect"
    );
}

#[test]
fn invalid_utf8_gets_errno_1() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    let frames: [&[u8]; 2] = [
        b"\xff\xfe\xfd",
        b"{\"command\": \"list\", \"properties\": {\"name\": \"sl\xc3\x28eeper\"}}",
    ];
    for frame in frames {
        send(&socket, frame);
        let reply = recv(&socket, "invalid UTF-8");
        assert_error(&reply, 1, &["json invalid", "utf-8"], &Value::Null);
        assert_keeps_serving(&socket, &agent);
    }
}

/// Circus 0.19 raises on a whitespace-only message, sends nothing and stalls the peer
/// (CIRCUS.md 1.8); troupe answers errno 1.
#[test]
fn empty_and_blank_frames_get_errno_1() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    for frame in [&b""[..], b"   \n\t "] {
        send(&socket, frame);
        let reply = recv(&socket, &format!("{frame:?}"));
        assert_error(&reply, 1, &["json invalid"], &Value::Null);
        assert_keeps_serving(&socket, &agent);
    }
}

#[test]
fn extra_frames_get_an_error_naming_the_frame_count() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    let request = json!({"command": "list", "properties": {}, "id": "x2"}).to_string();
    for count in [2usize, 3] {
        let frames = vec![request.as_bytes(); count];
        socket.send_multipart(frames, 0).expect("send");
        let reply = recv(&socket, &format!("{count} frames"));
        assert_error(
            &reply,
            3,
            &["one json frame", &format!("got {count} frames")],
            &Value::Null,
        );
        assert_keeps_serving(&socket, &agent);
    }
}

#[test]
fn frame_over_the_cap_gets_an_error_naming_the_limit() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    let padding = "a".repeat(2 * CAP);
    let frame = json!({"command": "list", "properties": {"pad": padding}, "id": "big"}).to_string();
    assert!(frame.len() > 2 * CAP);
    send(&socket, frame.as_bytes());
    let reply = recv(&socket, "a 2 MiB frame");
    assert_error(
        &reply,
        3,
        &[
            &format!("{} bytes", frame.len()),
            &format!("limit of {CAP} bytes"),
        ],
        &Value::Null,
    );
    assert_keeps_serving(&socket, &agent);
}

/// Beyond 4x the cap ZeroMQ itself drops the connection (ZMQ_MAXMSGSIZE): no reply, the
/// frame never reaches memory, and the agent keeps serving everyone else.
#[test]
fn frame_far_over_the_hard_cap_drops_the_connection_and_the_agent_serves_on() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    send_json(
        &socket,
        &json!({"command": "list", "properties": {}, "id": "warm"}),
    );
    assert_eq!(recv(&socket, "list before")["id"], "warm");
    let frame = vec![b' '; 8 * CAP];
    send(&socket, &frame);
    // Observing that nothing arrives: a bounded wait is the only way.
    let reply = try_recv(&socket, Duration::from_millis(1500));
    assert!(
        reply.is_none(),
        "no reply expected to an 8 MiB frame, got {reply:?}"
    );
    let fresh = dealer(&agent);
    assert_keeps_serving(&fresh, &agent);
    // The dropped DEALER reconnects by itself and is served again.
    assert_keeps_serving(&socket, &agent);
    assert_eq!(live(&agent, "sleeper"), 1);
}

#[test]
fn cast_gets_no_reply_but_takes_effect() {
    let agent = Agent::start(SLEEPER);
    wait_for("the sleeper", REPLY, || live(&agent, "sleeper") == 1);
    let socket = dealer(&agent);
    send_json(
        &socket,
        &json!({"command": "incr", "properties": {"name": "sleeper", "nb": 2}, "msg_type": "cast", "id": "c1"}),
    );
    // Observing that nothing arrives: a bounded wait is the only way.
    let reply = try_recv(&socket, Duration::from_millis(500));
    assert!(reply.is_none(), "a cast gets no reply, got {reply:?}");
    wait_for("the cast incr to apply", REPLY, || {
        configured(&agent, "sleeper") == 3 && live(&agent, "sleeper") == 3
    });
    // A cast that fails is silent too.
    send_json(
        &socket,
        &json!({"command": "nope", "properties": {}, "msg_type": "cast", "id": "c2"}),
    );
    // The next reply on this socket is the one to the valid request, not a late cast reply.
    assert_keeps_serving(&socket, &agent);
}

#[test]
fn commands_are_case_insensitive() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    send_json(
        &socket,
        &json!({"command": "LIST", "properties": {}, "id": "l1"}),
    );
    let reply = recv(&socket, "LIST");
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["watchers"], json!(["sleeper"]), "{reply}");
    assert_eq!(reply["id"], "l1");
    send_json(
        &socket,
        &json!({"command": "NumWatchers", "properties": {}, "id": "l2"}),
    );
    let reply = recv(&socket, "NumWatchers");
    assert_eq!(reply["numwatchers"], 1, "{reply}");
    assert_eq!(reply["id"], "l2");
}

/// Circus drops REQ messages (3 frames with the empty delimiter) without a reply; troupe
/// answers them with the delimiter so the REQ socket accepts the reply.
#[test]
fn req_client_gets_replies() {
    let agent = Agent::start(SLEEPER);
    let socket = connect(&agent, zmq::REQ, None);
    send_json(
        &socket,
        &json!({"command": "list", "properties": {}, "id": "r1"}),
    );
    let reply = recv(&socket, "list from REQ");
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["id"], "r1");
    send(&socket, b"not json");
    let reply = recv(&socket, "garbage from REQ");
    assert_error(&reply, 1, &["json invalid"], &Value::Null);
    send_json(
        &socket,
        &json!({"command": "status", "properties": {"name": "ghost"}, "id": "r2"}),
    );
    let reply = recv(&socket, "status ghost from REQ");
    assert_error(&reply, 3, &["ghost"], &json!("r2"));
    assert_keeps_serving(&socket, &agent);
}

/// A REQ client sending two frames: the error reply must carry the empty delimiter too, or
/// the REQ socket discards it and is stuck waiting forever.
#[test]
fn req_client_with_extra_frames_gets_an_error_reply() {
    let agent = Agent::start(SLEEPER);
    let socket = connect(&agent, zmq::REQ, None);
    let request = json!({"command": "list", "properties": {}, "id": "r3"}).to_string();
    socket
        .send_multipart([request.as_bytes(), request.as_bytes()], 0)
        .expect("send");
    let reply = recv(&socket, "2 frames from REQ");
    assert_error(&reply, 3, &["got 2 frames"], &Value::Null);
    assert_keeps_serving(&socket, &agent);
}

#[test]
fn ipython_is_not_supported() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    send_json(
        &socket,
        &json!({"command": "ipython", "properties": {}, "id": "ip"}),
    );
    let reply = recv(&socket, "ipython");
    assert_error(&reply, 5, &["not supported"], &json!("ip"));
    assert_keeps_serving(&socket, &agent);
}

#[test]
fn listen_on_the_control_socket_gets_errno_3() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    send_json(
        &socket,
        &json!({"command": "listen", "properties": {}, "id": "ls"}),
    );
    let reply = recv(&socket, "listen");
    assert_error(&reply, 3, &["pub/sub"], &json!("ls"));
    assert_keeps_serving(&socket, &agent);
}

#[test]
fn a_burst_of_200_garbage_messages_is_answered_and_the_next_valid_one_too() {
    let agent = Agent::start(SLEEPER);
    let socket = dealer(&agent);
    let garbage: [&[&[u8]]; 7] = [
        &[b"not json"],
        &[b""],
        &[b"[1, 2]"],
        &[b"\xff\xfe"],
        &[br#"{"properties": {}}"#],
        &[b"   "],
        &[br#"{"command": "list"}"#, b"extra"],
    ];
    for i in 0..200 {
        socket
            .send_multipart(garbage[i % garbage.len()].iter().copied(), 0)
            .expect("send");
    }
    send_json(
        &socket,
        &json!({"command": "list", "properties": {}, "id": "last"}),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut errors = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = try_recv(&socket, left).unwrap_or_else(|| {
            panic!("after {errors} error replies, nothing more within the deadline")
        });
        if reply["status"] == "error" {
            let errno = reply["errno"].as_i64();
            assert!(
                matches!(errno, Some(1 | 3)),
                "garbage gets errno 1 or 3: {reply}"
            );
            errors += 1;
            continue;
        }
        assert_eq!(reply["status"], "ok", "{reply}");
        assert_eq!(reply["id"], "last", "{reply}");
        assert_eq!(reply["watchers"], json!(["sleeper"]));
        break;
    }
    assert_eq!(errors, 200, "one error reply per garbage message");
    // Observing that nothing else arrives: a bounded wait is the only way.
    let extra = try_recv(&socket, Duration::from_millis(300));
    assert!(
        extra.is_none(),
        "no reply beyond one per message: {extra:?}"
    );
}

/// While client A waits for a slow `stop` (a process ignoring TERM, graceful_timeout 2 s),
/// client B is answered at once, even for a mutating command on another watcher: no global
/// lock (Circus answers "arbiter is already running watcher_stop command"). A's own later
/// request is answered after its stop, in order.
#[test]
fn a_slow_stop_from_one_client_does_not_block_another_client() {
    let agent = Agent::start(
        "[watcher.stubborn]\ncmd = \"sh\"\nargs = [\"-c\", \"trap '' TERM; sleep 1000 & wait\"]\ngraceful_timeout = 2\n\n\
         [watcher.other]\ncmd = \"sleep 1000\"\n",
    );
    // The trap is set once the shell has forked its sleep.
    wait_for("the TERM-ignoring shell", REPLY, || {
        agent
            .pids("stubborn")
            .first()
            .is_some_and(|pid| !children(*pid).is_empty())
    });
    let a = connect(&agent, zmq::DEALER, Some(b"client-a"));
    let b = connect(&agent, zmq::DEALER, Some(b"client-b"));
    for (socket, id) in [(&a, "hello-a"), (&b, "hello-b")] {
        send_json(
            socket,
            &json!({"command": "list", "properties": {}, "id": id}),
        );
        assert_eq!(recv(socket, id)["id"], id);
    }
    let sent = Instant::now();
    send_json(
        &a,
        &json!({"command": "stop", "properties": {"name": "stubborn", "waiting": true}, "id": "a-stop"}),
    );
    send_json(
        &a,
        &json!({"command": "status", "properties": {"name": "stubborn"}, "id": "a-status"}),
    );
    wait_for("stubborn to be stopping", REPLY, || {
        agent.call("status", json!({"name": "stubborn"}))["status"] == "stopping"
    });
    let requests = [
        json!({"command": "status", "properties": {"name": "stubborn"}, "id": "b1"}),
        json!({"command": "list", "properties": {}, "id": "b2"}),
        json!({"command": "incr", "properties": {"name": "other", "waiting": true}, "id": "b3"}),
        json!({"command": "numprocesses", "properties": {"name": "other"}, "id": "b4"}),
    ];
    for request in &requests {
        let asked = Instant::now();
        send_json(&b, request);
        let reply = recv(&b, &request.to_string());
        let took = asked.elapsed();
        assert_eq!(reply["id"], request["id"], "{reply}");
        assert_ne!(reply["status"], "error", "{reply}");
        assert!(
            took < Duration::from_millis(1000),
            "client B waited {took:?} for {request} while A's stop ran"
        );
    }
    assert!(
        sent.elapsed() < Duration::from_millis(1900),
        "the test itself was too slow to show concurrency: {:?}",
        sent.elapsed()
    );
    let early = try_recv(&a, Duration::ZERO);
    assert!(
        early.is_none(),
        "A's stop cannot be done before graceful_timeout: {early:?}"
    );
    let stop = recv(&a, "stop stubborn (waiting)");
    assert_eq!(stop["id"], "a-stop", "A's replies come in order: {stop}");
    assert_eq!(stop["status"], "ok", "{stop}");
    assert!(
        sent.elapsed() >= Duration::from_millis(1800),
        "stop returned before graceful_timeout: {:?}",
        sent.elapsed()
    );
    let status = recv(&a, "status stubborn");
    assert_eq!(status["id"], "a-status", "{status}");
    assert_eq!(
        status["status"], "stopped",
        "A's status ran after its stop: {status}"
    );
    assert_eq!(configured(&agent, "other"), 2);
}

/// Non-waiting commands on one watcher from one client are applied in the order sent, and
/// none is refused (Circus refuses `set` while a `decr` runs, CIRCUS.md 1.5).
#[test]
fn one_clients_commands_on_a_watcher_apply_in_order() {
    let agent = Agent::start("[watcher.sleeper]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n");
    wait_for("2 sleepers", REPLY, || live(&agent, "sleeper") == 2);
    let socket = dealer(&agent);
    // 2 -> 1 -> 5 -> 3 -> 4; any reordering ends elsewhere (e.g. set last: 5, set first: 3).
    let requests = [
        json!({"command": "decr", "properties": {"name": "sleeper", "waiting": false}, "id": "o1"}),
        json!({"command": "set", "properties": {"name": "sleeper", "options": {"numprocesses": 5}}, "id": "o2"}),
        json!({"command": "decr", "properties": {"name": "sleeper", "nb": 2, "waiting": false}, "id": "o3"}),
        json!({"command": "incr", "properties": {"name": "sleeper", "waiting": false}, "id": "o4"}),
    ];
    for request in &requests {
        send_json(&socket, request);
    }
    for request in &requests {
        let reply = recv(&socket, &request.to_string());
        assert_eq!(reply["id"], request["id"], "replies in order: {reply}");
        assert_eq!(reply["status"], "ok", "never 'already running': {reply}");
    }
    wait_for(
        "numprocesses to settle at 4",
        Duration::from_secs(10),
        || configured(&agent, "sleeper") == 4 && live(&agent, "sleeper") == 4,
    );
    // Stays there: nothing queued is still to come.
    send_json(
        &socket,
        &json!({"command": "incr", "properties": {"name": "sleeper", "nb": 0, "waiting": true}, "id": "o5"}),
    );
    let reply = recv(&socket, "incr nb=0 waiting");
    assert_eq!(reply["numprocesses"], 4, "{reply}");
    assert_eq!(agent.pids("sleeper").len(), 4);
}

/// A client may have 64 requests waiting behind the one running; the next gets errno 5 "too
/// many requests" at once, and the 64 still run, in order, once the first is done.
#[test]
fn a_client_past_its_queue_limit_gets_an_error_and_its_queue_still_runs() {
    let agent = Agent::start(
        "[watcher.stubborn]\ncmd = \"sh\"\nargs = [\"-c\", \"trap '' TERM; sleep 1000 & wait\"]\ngraceful_timeout = 2\n",
    );
    wait_for("the TERM-ignoring shell", REPLY, || {
        agent
            .pids("stubborn")
            .first()
            .is_some_and(|pid| !children(*pid).is_empty())
    });
    let socket = dealer(&agent);
    send_json(
        &socket,
        &json!({"command": "stop", "properties": {"name": "stubborn", "waiting": true}, "id": "stop"}),
    );
    wait_for("stubborn to be stopping", REPLY, || {
        agent.call("status", json!({"name": "stubborn"}))["status"] == "stopping"
    });
    for n in 0..64 {
        send_json(
            &socket,
            &json!({"command": "status", "properties": {"name": "stubborn"}, "id": format!("q{n}")}),
        );
    }
    send_json(
        &socket,
        &json!({"command": "status", "properties": {"name": "stubborn"}, "id": "one-too-many"}),
    );
    let refused = recv(&socket, "the 65th waiting request");
    assert_error(
        &refused,
        5,
        &["too many requests", "64"],
        &json!("one-too-many"),
    );
    let stop = recv(&socket, "stop stubborn (waiting)");
    assert_eq!(stop["id"], "stop", "{stop}");
    assert_eq!(stop["status"], "ok", "{stop}");
    for n in 0..64 {
        let reply = recv(&socket, "a queued status");
        assert_eq!(
            reply["id"],
            format!("q{n}"),
            "queued requests in order: {reply}"
        );
        assert_eq!(reply["status"], "stopped", "ran after the stop: {reply}");
    }
    assert_keeps_serving(&socket, &agent);
}

/// Probes and one-shot `troupe ctl`s are a new client each: once answered, a client costs the
/// agent nothing. (Each used to keep an idle worker for a minute, about 12 KB: 300 of them
/// grew the agent by 3.2 MiB.)
#[test]
fn answered_one_shot_clients_leave_no_memory_behind() {
    let agent = Agent::start(SLEEPER);
    let one_shot = || {
        let socket = dealer(&agent);
        send_json(
            &socket,
            &json!({"command": "status", "properties": {}, "id": "once"}),
        );
        assert_eq!(recv(&socket, "status")["id"], "once");
    };
    // Warm up: buffers and maps reach their working size first.
    (0..50).for_each(|_| one_shot());
    let before = proc_status_kib(agent.pid(), "RssAnon");
    (0..300).for_each(|_| one_shot());
    let grown = proc_status_kib(agent.pid(), "RssAnon").saturating_sub(before);
    assert!(
        grown < 1024,
        "300 answered one-shot clients grew the agent by {grown} KiB"
    );
}
