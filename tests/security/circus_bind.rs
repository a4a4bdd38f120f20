//! `circus_bind` (issue 12): stock `circusctl` and `circus-top`, which cannot speak CURVE, read a
//! keyed agent through its plaintext sockets on the node's loopback, and can change nothing
//! there; the cluster's ports still give a keyless client nothing, and the attacker's host
//! cannot reach `circus_bind` at all. On a keyless agent `circus_bind` is ignored.
//!
//! Each test fails on the code before `circus_bind`: there it was an unknown `[agent]` key, so
//! the agent refused its config and never answered.

use crate::support::netns::Host;
use crate::support::terminal::Tmux;
use crate::support::{circus_venv, wait_for, Daemon};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use troupe::cluster_key::ClusterKey;

use super::{HostAgent, Lab};

const WATCHERS: &str = "[watcher.sleeper]\ncmd = \"sleep 1000\"\ngraceful_timeout = 1\n";

/// How long a client that must get nothing is given.
const QUIET: Duration = Duration::from_secs(3);

/// One request from `host`, presenting `key` (CURVE) or nothing: the reply, or `None`.
fn request(host: &Host, endpoint: &str, key: Option<&ClusterKey>, command: &str) -> Option<Value> {
    host.ns.run(|| {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        if let Some(key) = key {
            let curve = key.curve();
            socket.set_curve_serverkey(&curve.server.public).unwrap();
            socket.set_curve_publickey(&curve.client.public).unwrap();
            socket.set_curve_secretkey(curve.client.secret()).unwrap();
        }
        socket.connect(endpoint).unwrap();
        let body = json!({"command": command, "properties": {"name": "sleeper"}, "id": "c1"});
        socket.send(body.to_string().as_bytes(), 0).unwrap();
        (socket.poll(zmq::POLLIN, QUIET.as_millis() as i64).unwrap() > 0)
            .then(|| serde_json::from_slice(&socket.recv_bytes(0).unwrap()).unwrap())
    })
}

/// An agent on `host` with `agent_extra` in `[agent]` (its key_file, circus_bind...), and
/// what it keeps: its guard and scratch dir.
struct NodeAgent {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl NodeAgent {
    /// Starts it and waits until `ready` holds.
    fn start(host: &Host, agent_extra: &str, ready: impl Fn() -> bool) -> NodeAgent {
        let HostAgent {
            mut daemon, dir, ..
        } = HostAgent::spawn_in(
            tempfile::tempdir().unwrap(),
            host,
            "victim",
            &format!("stats_interval = \"200ms\"\n{agent_extra}"),
            WATCHERS,
        );
        wait_for("the agent", Duration::from_secs(10), || {
            daemon.assert_running();
            ready()
        });
        NodeAgent { daemon, dir }
    }

    fn owner_endpoint(&self) -> String {
        let socket = self.dir.path().join("state/control.sock");
        format!("ipc://{}", socket.display())
    }
}

/// A key file holding `key`, mode 0600, in `dir`.
fn write_key(dir: &Path, key: &ClusterKey) -> std::path::PathBuf {
    let path = dir.join("cluster.key");
    std::fs::write(&path, key.to_line() + "\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A keyed agent on `lab`'s victim with `circus_bind = true`, ready for its key holder.
fn keyed_agent_with_circus_bind(lab: &Lab, key: &ClusterKey, keys: &Path) -> NodeAgent {
    let victim = lab.victim();
    let extra = format!(
        "key_file = \"{}\"\ncircus_bind = true",
        write_key(keys, key).display()
    );
    let endpoint = format!("tcp://{}:5555", victim.address);
    NodeAgent::start(victim, &extra, || {
        request(victim, &endpoint, Some(key), "numwatchers").is_some()
    })
}

/// The stock circusctl run on `host` against `endpoint`.
fn circusctl(host: &Host, endpoint: &str, args: &[&str]) -> Output {
    host.ns
        .command(circus_venv().join("bin/circusctl"))
        .args(["--endpoint", endpoint, "--timeout", "10"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run circusctl")
}

fn text(output: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
#[ignore = "needs root"]
fn stock_circusctl_reads_a_keyed_agent_on_circus_bind_and_changes_nothing() {
    let lab = Lab::new("circus-bind");
    let (victim, attacker) = (lab.victim(), lab.attacker());
    let key = ClusterKey::generate().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let agent = keyed_agent_with_circus_bind(&lab, &key, keys.path());
    let cluster_port = format!("tcp://{}:5555", victim.address);
    let circus = "tcp://127.0.0.1:5565";

    // Reading works, from the node.
    let status = circusctl(victim, circus, &["status"]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("sleeper: active"),
        "{}",
        text(&status)
    );
    let list = circusctl(victim, circus, &["list"]);
    assert!(list.status.success(), "{}", text(&list));
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("sleeper"),
        "{}",
        text(&list)
    );

    // Events reach a plaintext subscriber: the key holder stops and starts the watcher.
    let events = victim.ns.run(|| {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::SUB).unwrap();
        socket.set_linger(0).unwrap();
        socket.set_subscribe(b"watcher.").unwrap();
        socket.connect("tcp://127.0.0.1:5566").unwrap();
        (context, socket)
    });

    // Changing is refused, with a reason naming the owner socket and the key.
    for args in [
        &["stop", "sleeper"][..],
        &["add", "intruder", "touch /tmp/circus-bind-intruder"][..],
    ] {
        let refused = circusctl(victim, circus, args);
        let shown = text(&refused);
        assert!(!refused.status.success(), "{shown}");
        assert!(
            shown.contains("plaintext circus_bind socket is refused"),
            "{shown}"
        );
        assert!(shown.contains(&agent.owner_endpoint()), "{shown}");
        assert!(shown.contains("cluster key"), "{shown}");
    }
    let reply = request(victim, &cluster_port, Some(&key), "status").expect("key holder");
    assert_eq!(reply["status"], "active", "a refused stop had no effect");
    let reply = request(victim, &cluster_port, Some(&key), "numwatchers").unwrap();
    assert_eq!(reply["numwatchers"], 1, "a refused add had no effect");

    // The cluster's port still gives a keyless client nothing, from the node itself and from
    // the attacker; and circus_bind, on the victim's loopback, is out of the attacker's reach.
    assert_eq!(
        request(victim, "tcp://127.0.0.1:5555", None, "status"),
        None
    );
    assert_eq!(request(attacker, &cluster_port, None, "status"), None);
    let from_attacker = format!("tcp://{}:5565", victim.address);
    assert_eq!(request(attacker, &from_attacker, None, "status"), None);

    for command in ["stop", "start"] {
        let reply = request(victim, &cluster_port, Some(&key), command).expect(command);
        assert_eq!(reply["status"], "ok", "{reply}");
    }
    let (_context, socket) = events;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut topics = Vec::new();
    while !topics
        .iter()
        .any(|t: &String| t.starts_with("watcher.sleeper."))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        if socket.poll(zmq::POLLIN, left.as_millis() as i64).unwrap() == 0 {
            break;
        }
        let frames = socket.recv_multipart(0).unwrap();
        topics.push(String::from_utf8_lossy(&frames[0]).into_owned());
    }
    assert!(
        topics.iter().any(|t| t.starts_with("watcher.sleeper.")),
        "no event on circus_bind's events socket: {topics:?}\n{}",
        agent.daemon.log()
    );
}

#[test]
#[ignore = "needs root"]
fn stock_circus_top_reads_a_keyed_agent_on_circus_bind() {
    let lab = Lab::new("circus-top");
    let key = ClusterKey::generate().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let _agent = keyed_agent_with_circus_bind(&lab, &key, keys.path());
    let top = circus_venv().join("bin/circus-top");
    let command = format!(
        "ip netns exec {} {} --endpoint tcp://127.0.0.1:5567",
        lab.victim().ns.name,
        shell_words::quote(&top.display().to_string()),
    );
    let tmux = Tmux::start(&command);
    let screen = tmux.wait_for_all(
        "circus-top to show the agent's watcher",
        &["Circus Top", "\nsleeper", "CPU (%)"],
        Duration::from_secs(20),
    );
    println!("{screen}");
}

#[test]
#[ignore = "needs root"]
fn a_keyless_agent_ignores_circus_bind_and_says_so() {
    let lab = Lab::new("circus-nokey");
    let victim = lab.victim();
    let endpoint = format!("tcp://{}:5555", victim.address);
    let agent = NodeAgent::start(victim, "circus_bind = true", || {
        request(victim, &endpoint, None, "numwatchers").is_some()
    });
    assert_eq!(
        request(victim, "tcp://127.0.0.1:5565", None, "status"),
        None,
        "nothing listens on circus_bind"
    );
    let log = agent.daemon.log();
    assert!(log.contains("circus_bind ignored"), "{log}");
}

/// Watcher output is for the key's holders and the node's owner: `logs` and `log_file`
/// change nothing, yet the plaintext `circus_bind` refuses them, and a keyless client on the
/// cluster's port gets nothing. Fails before `logs` existed (the key holder's `logs` was an
/// unknown command).
#[test]
#[ignore = "needs root"]
fn logs_are_for_key_holders_not_for_the_plaintext_circus_bind() {
    let lab = Lab::new("circus-bind-logs");
    let victim = lab.victim();
    let key = ClusterKey::generate().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let _agent = keyed_agent_with_circus_bind(&lab, &key, keys.path());
    let cluster_port = format!("tcp://{}:5555", victim.address);
    let circus = "tcp://127.0.0.1:5565";

    let reply = request(victim, &cluster_port, Some(&key), "logs").expect("key holder");
    assert_eq!(reply["status"], "ok", "{reply}");
    assert!(reply["lines"].is_array(), "{reply}");
    for command in ["logs", "log_files", "log_file"] {
        let refused = request(victim, circus, None, command).expect("an answer");
        assert_eq!(refused["status"], "error", "{command}: {refused}");
        let reason = refused["reason"].as_str().unwrap();
        assert!(
            reason.contains("plaintext circus_bind socket is refused"),
            "{command}: {reason}"
        );
    }
    assert!(
        request(victim, &cluster_port, None, "logs").is_none(),
        "a keyless client read output on the cluster's port"
    );
}
