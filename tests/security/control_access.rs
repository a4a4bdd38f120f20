//! Who may bring code into a node (issue 11, holes 1 and 5) and how many clients a control
//! socket holds. ZMTP 1.0 and 2.0 peers, which send no `Peer-Address`, are refused at the
//! handshake; code-bearing commands over TCP are refused from any address, loopback included,
//! and accepted on the owner-only Unix socket, which no other user can connect to; clients past
//! `CONTROL_CLIENTS` get an error while the others are served.

use super::{is_ok, HostAgent, Lab};
use crate::support::{wait_for, Agent};
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};
use troupe::protocol::Request;

const SLEEPER: &str = "[watcher.w]\ncmd = \"sleep 1000\"\n";

/// One request through troupe's client from wherever the calling thread is.
fn request(endpoint: &str, command: &str, properties: Value) -> Result<Value, String> {
    let Value::Object(properties) = properties else {
        panic!("properties must be an object, got {properties}")
    };
    troupe::client::call(
        endpoint,
        Request::new(command, properties),
        Duration::from_secs(3),
    )
    .map_err(|e| e.to_string())
}

#[track_caller]
fn assert_code_refused(reply: &Result<Value, String>, owner_endpoint: &str) {
    let reason = match reply {
        Ok(v) if v["status"] == "error" => v["reason"].as_str().unwrap_or_default(),
        other => panic!("expected a refusal, got {other:?}"),
    };
    for hint in ["over TCP is refused", owner_endpoint, "allow_remote_exec"] {
        assert!(reason.contains(hint), "{hint:?} not in {reason:?}");
    }
}

/// A greeting with an empty identity and one request, as a ZMTP 1.0 peer sends them: frames
/// are `LENGTH FLAGS BODY`, the length counting the flags byte.
fn zmtp_1_0(body: &[u8]) -> Vec<u8> {
    let length = u8::try_from(body.len() + 1).expect("a short frame");
    let mut bytes = vec![0x01, 0x00, length, 0x00];
    bytes.extend_from_slice(body);
    bytes
}

/// The same as a ZMTP 2.0 DEALER: signature, revision 1, socket type 5, an empty identity,
/// then frames as `FLAGS LENGTH BODY`.
fn zmtp_2_0(body: &[u8]) -> Vec<u8> {
    let length = u8::try_from(body.len()).expect("a short frame");
    let mut bytes = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 0x01, 0x05, 0x00, 0x00];
    bytes.extend_from_slice(&[0x00, length]);
    bytes.extend_from_slice(body);
    bytes
}

/// Sends `bytes` on a plain TCP connection and returns what came back until the agent closed
/// it, a reply showed up, or 5 s passed.
fn raw_exchange(address: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.write_all(bytes).expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut heard = Vec::new();
    let mut buffer = [0u8; 4096];
    while !heard.windows(8).any(|w| w == b"\"status\"") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => heard.extend_from_slice(&buffer[..n]),
        }
    }
    heard
}

#[test]
#[ignore = "needs root"]
fn zmtp_1_and_2_peers_are_refused_before_their_first_request() {
    let lab = Lab::new("zmtp");
    let mut agent = HostAgent::start(lab.victim(), "", SLEEPER);
    let address = format!("{}:5555", lab.victim().address);
    type Framing = fn(&[u8]) -> Vec<u8>;
    let framings: [(&str, Framing); 2] = [("1", zmtp_1_0), ("2", zmtp_2_0)];
    for (version, frame) in framings {
        let name = format!("zmtp{version}");
        let marker = agent.dir.path().join(&name);
        let body = json!({
            "command": "add",
            "properties": {"name": name, "cmd": format!("touch {}", marker.display()), "start": true},
            "id": "raw",
        })
        .to_string();
        let heard = lab
            .attacker()
            .ns
            .run(|| raw_exchange(&address, &frame(body.as_bytes())));
        assert!(
            !heard.windows(8).any(|w| w == b"\"status\""),
            "a ZMTP {version}.0 peer got a reply: {}",
            String::from_utf8_lossy(&heard)
        );
        let list = lab.attack(&agent.endpoint, "list", json!({}));
        assert!(is_ok(&list), "the agent still answers: {list:?}");
        assert!(
            !list.unwrap().to_string().contains(&name),
            "ZMTP {version}.0 added a watcher"
        );
        assert!(!marker.exists(), "ZMTP {version}.0 ran a command");
    }
    agent.daemon.assert_running();
}

#[test]
#[ignore = "needs root"]
fn code_over_tcp_is_refused_from_any_address_and_accepted_on_the_owner_socket() {
    let lab = Lab::new("code");
    let agent = HostAgent::start(lab.victim(), "", SLEEPER);
    let owner = agent.owner_endpoint();
    let marker = agent.dir.path().join("ran");
    let add = json!({"name": "x", "cmd": format!("touch {}", marker.display()), "start": true});
    let set_cmd = json!({"name": "w", "options": {"cmd": format!("touch {}", marker.display())}});

    // Another host, over ZMTP 3.
    assert_code_refused(&lab.attack(&agent.endpoint, "add", add.clone()), &owner);
    // The node itself over loopback TCP, as another local user, a container on the host
    // network or a supervised service could send it.
    let loopback = "tcp://127.0.0.1:5555";
    let (local_add, local_set) = lab.victim().ns.run(|| {
        (
            request(loopback, "add", add.clone()),
            request(loopback, "set", set_cmd.clone()),
        )
    });
    assert_code_refused(&local_add, &owner);
    assert_code_refused(&local_set, &owner);
    assert!(!marker.exists());

    // The owner, on the node's Unix socket.
    let added = request(&owner, "add", add);
    assert!(is_ok(&added), "{added:?}");
    wait_for("the added watcher to run", Duration::from_secs(10), || {
        marker.exists()
    });
}

#[test]
#[ignore = "needs root"]
fn other_users_cannot_connect_to_the_owner_socket() {
    let agent = Agent::start(SLEEPER);
    let socket = agent.dir.path().join("state/control.sock");
    let reply = request(&agent.ipc_endpoint(), "numwatchers", json!({}));
    assert!(is_ok(&reply), "the owner is served: {reply:?}");

    let metadata = std::fs::symlink_metadata(&socket).expect("the owner socket");
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.mode() & 0o777, 0o600);
    assert_eq!(metadata.uid(), nix::unistd::geteuid().as_raw());

    // Anyone may walk to it (a scratch dir and the state dir are 0700), so only the socket's
    // mode stands in the way.
    for dir in [
        agent.dir.path().to_path_buf(),
        agent.dir.path().join("state"),
    ] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a user nobody");
    let connect_as_nobody = || {
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", CONNECT])
            .arg(&socket)
            .current_dir("/")
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .output()
            .expect("run python3 as nobody")
    };
    let refused = connect_as_nobody();
    assert_eq!(refused.status.code(), Some(13), "{refused:?}");
    // The same client gets through once the mode lets it: the mode is what refused it.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let connected = connect_as_nobody();
    assert_eq!(connected.status.code(), Some(0), "{connected:?}");
}

/// Connects to the Unix socket named by argv[1]; exits 13 on EACCES.
const CONNECT: &str = "
import socket, sys
try:
    socket.socket(socket.AF_UNIX).connect(sys.argv[1])
except PermissionError:
    sys.exit(13)
";

#[test]
#[ignore = "needs root"]
fn clients_past_the_bound_get_an_error_while_the_others_are_served() {
    use troupe::bounds::{CONTROL_CLIENTS, MAX_CONTROL_CONNECTIONS_PER_PEER};
    // A few hundred sockets in this process.
    troupe::limits::raise_open_files();
    let mut lab = Lab::new("flood");
    let flood = CONTROL_CLIENTS + 16;
    // One address keeps at most MAX_CONTROL_CONNECTIONS_PER_PEER connections open: the flood
    // comes from enough attacker hosts (2, 3, ...) to stay within it.
    let per_host = MAX_CONTROL_CONNECTIONS_PER_PEER - 4;
    let hosts = flood.div_ceil(per_host);
    for _ in 1..hosts {
        lab.segment.add_host();
    }
    // `stop` asks with SIGCONT, which sleep ignores: the watcher is busy for the whole
    // graceful_timeout, and every request for it waits behind, its client in flight.
    let agent = HostAgent::start(
        lab.victim(),
        "",
        "[watcher.slow]\ncmd = \"sleep 1000\"\nstop_signal = \"CONT\"\ngraceful_timeout = 6\n",
    );
    let endpoint = agent.endpoint.clone();
    // Sockets made on a host's thread (with a context of their own) live in its namespace.
    let send = |zmq: &zmq::Context, command: &str, properties: Value| {
        let socket = troupe::sockets::connect_control(zmq, &endpoint).expect("connect");
        let Value::Object(properties) = properties else {
            unreachable!()
        };
        let mut request = Request::new(command, properties);
        request.id = json!(command);
        socket.send(request.encode(), 0).expect("send");
        socket
    };
    let stop = lab.attacker().ns.run(|| {
        let status = || request(&endpoint, "status", json!({"name": "slow"}));
        wait_for("a running watcher", Duration::from_secs(10), || {
            status().is_ok_and(|s| s["status"] == "active")
        });
        let stop = send(
            &zmq::Context::new(),
            "stop",
            json!({"name": "slow", "waiting": true}),
        );
        wait_for("the stop to begin", Duration::from_secs(10), || {
            status().is_ok_and(|s| s["status"] == "stopping")
        });
        stop
    });
    let mut clients: Vec<zmq::Socket> = Vec::new();
    for host in &lab.segment.hosts()[1..] {
        let count = per_host.min(flood - clients.len());
        clients.extend(host.ns.run(|| {
            let zmq = zmq::Context::new();
            (0..count)
                .map(|_| send(&zmq, "signal", json!({"name": "slow", "signum": "CONT"})))
                .collect::<Vec<_>>()
        }));
    }
    assert_eq!(clients.len(), flood);
    clients.push(stop);
    let replies: Vec<Value> = clients
        .iter()
        .map(|socket| {
            socket.set_rcvtimeo(30_000).expect("rcvtimeo");
            let frame = socket.recv_bytes(0).expect("a reply within 30 s");
            serde_json::from_slice(&frame).expect("JSON")
        })
        .collect();
    let limit = format!("limit {CONTROL_CLIENTS}");
    let refused = replies
        .iter()
        .filter(|r| r["status"] == "error" && r["reason"].as_str().unwrap().contains(&limit))
        .count();
    let served = replies.iter().filter(|r| r["status"] == "ok").count();
    // The stop held one place of the bound.
    assert_eq!(
        (served, refused),
        (CONTROL_CLIENTS, flood + 1 - CONTROL_CLIENTS),
        "{:?}",
        replies
            .iter()
            .filter(|r| r["status"] != "ok")
            .collect::<Vec<_>>()
    );
    let after = lab.attack(&agent.endpoint, "numwatchers", Value::Object(Map::new()));
    assert!(is_ok(&after), "{after:?}");
}
