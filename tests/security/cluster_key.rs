//! The cluster key (issue 12): a keyed agent and a keyed `troupe serve` give a client without
//! the key, or with another cluster's key, nothing on any socket (no reply, no message, no
//! effect), while a holder of the key is served on all of them; key files that others could
//! read or that are malformed are refused by name.
//!
//! Each attack test fails on the code before the key: there `key_file` was an unknown config
//! key (and `--key-file` an unknown flag), and a keyless agent or serve answers every NULL
//! client, which is what the "gets nothing" assertions check.

use super::{call_from, HostAgent, Lab};
use crate::support::netns::Host;
use crate::support::{bin, isolated, wait_for, Daemon};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use troupe::cluster_key::ClusterKey;

const SLEEPER: &str = "[watcher.w]\ncmd = \"sleep 1000\"\n";

/// How long a refused client is given to get something it should not.
const QUIET: Duration = Duration::from_secs(3);

/// Writes a key file of `keys` (the first in use), mode 0600, in `dir`.
fn key_file(dir: &Path, name: &str, keys: &[&ClusterKey]) -> PathBuf {
    let path = dir.join(name);
    let text: String = keys.iter().map(|key| key.to_line() + "\n").collect();
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Makes `socket` a CURVE client of `key` (as the sockets layer does), or leaves it NULL.
fn present(socket: &zmq::Socket, key: Option<&ClusterKey>) {
    if let Some(key) = key {
        let curve = key.curve();
        socket.set_curve_serverkey(&curve.server.public).unwrap();
        socket.set_curve_publickey(&curve.client.public).unwrap();
        socket.set_curve_secretkey(curve.client.secret()).unwrap();
    }
}

/// One request from `host` presenting `key`: the reply, or `None` after `timeout`.
fn request(
    host: &Host,
    endpoint: &str,
    key: Option<&ClusterKey>,
    command: &str,
    properties: Value,
    timeout: Duration,
) -> Option<Value> {
    host.ns.run(|| {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        present(&socket, key);
        socket.connect(endpoint).unwrap();
        let body = json!({"command": command, "properties": properties, "id": "k1"});
        socket.send(body.to_string().as_bytes(), 0).unwrap();
        let waited = timeout.as_millis() as i64;
        (socket.poll(zmq::POLLIN, waited).unwrap() > 0)
            .then(|| serde_json::from_slice(&socket.recv_bytes(0).unwrap()).unwrap())
    })
}

/// A SUB made on `host` presenting `key`, subscribed to everything; its context is kept
/// with it so its I/O thread (in the host's namespace) lives as long as the socket.
struct Subscriber {
    socket: zmq::Socket,
    _context: zmq::Context,
}

impl Subscriber {
    fn connect(host: &Host, endpoint: &str, key: Option<&ClusterKey>) -> Subscriber {
        host.ns.run(|| {
            let context = zmq::Context::new();
            let socket = context.socket(zmq::SUB).unwrap();
            socket.set_linger(0).unwrap();
            present(&socket, key);
            socket.set_subscribe(b"").unwrap();
            socket.connect(endpoint).unwrap();
            Subscriber {
                socket,
                _context: context,
            }
        })
    }

    /// Topics of the messages received until `deadline` (those already queued, once it has
    /// passed), or until `enough` of them came.
    fn topics_until(&self, deadline: Instant, enough: usize) -> Vec<String> {
        let mut topics = Vec::new();
        while topics.len() < enough {
            let left = deadline.saturating_duration_since(Instant::now());
            if self
                .socket
                .poll(zmq::POLLIN, left.as_millis() as i64)
                .unwrap()
                == 0
            {
                break;
            }
            let frames = self.socket.recv_multipart(0).unwrap();
            topics.push(String::from_utf8_lossy(&frames[0]).into_owned());
        }
        topics
    }
}

/// A keyless, a wrong-key and a right-key subscriber on `host` to `events` and to `stats`, each
/// named, with the key it presents.
fn subscribers_of_every_kind<'k>(
    host: &Host,
    events: &str,
    stats: &str,
    key: &'k ClusterKey,
    other: &'k ClusterKey,
) -> Vec<(&'static str, Option<&'k ClusterKey>, Subscriber, Subscriber)> {
    [
        ("keyless", None),
        ("wrong key", Some(other)),
        ("right key", Some(key)),
    ]
    .into_iter()
    .map(|(who, k)| {
        let on_events = Subscriber::connect(host, events, k);
        let on_stats = Subscriber::connect(host, stats, k);
        (who, k, on_events, on_stats)
    })
    .collect()
}

/// An agent on `host` with `key_file` as its `[agent] key_file`, waited for with `key`.
fn keyed_agent(host: &Host, key_path: &Path, key: &ClusterKey, extra: &str) -> KeyedAgent {
    let HostAgent {
        mut daemon,
        dir,
        endpoint,
    } = HostAgent::spawn_in(
        tempfile::tempdir().unwrap(),
        host,
        "victim",
        &format!(
            "stats_interval = \"200ms\"\nkey_file = \"{}\"\n{extra}",
            key_path.display()
        ),
        SLEEPER,
    );
    wait_for("the keyed agent", Duration::from_secs(10), || {
        daemon.assert_running();
        request(
            host,
            &endpoint,
            Some(key),
            "numwatchers",
            json!({}),
            Duration::from_millis(300),
        )
        .is_some()
    });
    KeyedAgent {
        _daemon: daemon,
        dir,
        endpoint,
    }
}

struct KeyedAgent {
    _daemon: Daemon,
    dir: tempfile::TempDir,
    endpoint: String,
}

fn watcher_status(host: &Host, endpoint: &str, key: &ClusterKey) -> String {
    let reply = request(
        host,
        endpoint,
        Some(key),
        "status",
        json!({"name": "w"}),
        QUIET,
    )
    .expect("the key holder is answered");
    reply["status"].as_str().unwrap_or_default().to_string()
}

#[test]
#[ignore = "needs root"]
fn keyless_and_wrong_key_clients_get_nothing_from_a_keyed_agent() {
    let lab = Lab::new("key-agent");
    let (victim, attacker) = (lab.victim(), lab.attacker());
    let (key, other) = (
        ClusterKey::generate().unwrap(),
        ClusterKey::generate().unwrap(),
    );
    let keys = tempfile::tempdir().unwrap();
    let agent = keyed_agent(victim, &key_file(keys.path(), "k", &[&key]), &key, "");
    let address = &victim.address;
    let (events, stats) = (
        format!("tcp://{address}:5556"),
        format!("tcp://{address}:5557"),
    );
    assert_eq!(watcher_status(attacker, &agent.endpoint, &key), "active");

    // Subscribers of every kind first, so each has had the same chance to hear something.
    let subscribers = subscribers_of_every_kind(attacker, &events, &stats, &key, &other);

    for (who, k) in [("keyless", None), ("wrong key", Some(&other))] {
        for command in ["stop", "status", "options"] {
            let reply = request(
                attacker,
                &agent.endpoint,
                k,
                command,
                json!({"name": "w"}),
                QUIET,
            );
            assert_eq!(reply, None, "{who} client got a reply to {command}");
        }
    }
    assert_eq!(
        watcher_status(attacker, &agent.endpoint, &key),
        "active",
        "a refused stop had no effect"
    );
    // A rotation's keyring (an unknown key first) still reaches the agent through the CLI.
    let rotating = key_file(keys.path(), "rotating", &[&other, &key]);
    let output = attacker
        .ns
        .command(bin("troupe"))
        .env("TROUPE_KEY_FILE", &rotating)
        .args([
            "ctl",
            &agent.endpoint,
            "stop",
            r#"{"name": "w", "waiting": true}"#,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(watcher_status(attacker, &agent.endpoint, &key), "stopped");
    request(
        attacker,
        &agent.endpoint,
        Some(&key),
        "start",
        json!({"name": "w"}),
        QUIET,
    )
    .expect("start");

    let deadline = Instant::now() + QUIET;
    for (who, k, on_events, on_stats) in &subscribers {
        let event_topics = on_events.topics_until(deadline, 1);
        let stat_topics = on_stats.topics_until(deadline, 1);
        if k == &Some(&key) {
            assert!(
                !event_topics.is_empty(),
                "{who}: no event after stop and start"
            );
            assert!(!stat_topics.is_empty(), "{who}: no stats");
        } else {
            assert_eq!(event_topics, Vec::<String>::new(), "{who} heard events");
            assert_eq!(stat_topics, Vec::<String>::new(), "{who} heard stats");
        }
    }
    // The owner's Unix socket stays open to the owner, keyless.
    let owner = format!(
        "ipc://{}",
        agent.dir.path().join("state/control.sock").display()
    );
    let reply = request(victim, &owner, None, "status", json!({"name": "w"}), QUIET);
    assert_eq!(reply.expect("the owner is answered")["status"], "active");
}

#[test]
#[ignore = "needs root"]
fn keyless_and_wrong_key_clients_get_nothing_from_a_keyed_serve() {
    let lab = Lab::new("key-serve");
    let (victim, attacker) = (lab.victim(), lab.attacker());
    let (key, other) = (
        ClusterKey::generate().unwrap(),
        ClusterKey::generate().unwrap(),
    );
    let keys = tempfile::tempdir().unwrap();
    let path = key_file(keys.path(), "k", &[&key]);
    let agent = keyed_agent(victim, &path, &key, "");
    let address = &victim.address;
    let serve_dir = tempfile::tempdir().unwrap();
    let mut command = isolated(victim.command(bin("troupe")), serve_dir.path());
    command
        .args(["serve", "--no-mdns", "--log-level", "info", "--probe"])
        .arg(format!("{address}:5555"))
        .arg("--state-dir")
        .arg(serve_dir.path().join("state"))
        .arg("--key-file")
        .arg(&path);
    let mut serve = Daemon::spawn("troupe serve", command, &serve_dir.path().join("serve.log"));
    let control = format!("tcp://{address}:5558");
    let (stats, events) = (
        format!("tcp://{address}:5559"),
        format!("tcp://{address}:5560"),
    );
    // serve reaches the keyed agent (its probes and heartbeats present the key) and says so.
    wait_for(
        "serve adopts the keyed agent",
        Duration::from_secs(20),
        || {
            serve.assert_running();
            request(
                attacker,
                &control,
                Some(&key),
                "nodelist",
                json!({}),
                Duration::from_millis(500),
            )
            .is_some_and(|reply| {
                reply["nodes"]
                    .as_array()
                    .is_some_and(|nodes| nodes.iter().any(|n| n["state"] == "alive"))
            })
        },
    );
    let subscribers = subscribers_of_every_kind(attacker, &events, &stats, &key, &other);
    for (who, k) in [("keyless", None), ("wrong key", Some(&other))] {
        for command in ["nodelist", "stop"] {
            let reply = request(attacker, &control, k, command, json!({"name": "w"}), QUIET);
            assert_eq!(
                reply, None,
                "{who} client got a reply from serve to {command}"
            );
        }
    }
    assert_eq!(watcher_status(victim, &agent.endpoint, &key), "active");
    // Stats flow from the member; the member going away is an event.
    let deadline = Instant::now() + QUIET;
    for (who, k, _, on_stats) in &subscribers {
        let topics = on_stats.topics_until(deadline, 1);
        if k == &Some(&key) {
            assert!(!topics.is_empty(), "{who}: no stats from serve");
        } else {
            assert_eq!(topics, Vec::<String>::new(), "{who} heard serve's stats");
        }
    }
    drop(agent);
    let deadline = Instant::now() + Duration::from_secs(15);
    for (who, k, on_events, _) in &subscribers {
        let topics = on_events.topics_until(deadline, 1);
        if k == &Some(&key) {
            assert!(
                !topics.is_empty(),
                "{who}: no event when the member went away"
            );
        } else {
            assert_eq!(topics, Vec::<String>::new(), "{who} heard serve's events");
        }
    }
    // What serve answers the key holder, it answered to nobody else.
    let reply = call_from(attacker, &control, "nodelist", json!({}), QUIET);
    assert!(reply.is_err(), "a keyless troupe::client got {reply:?}");
}

/// Runs `troupe-agent` with `key_file` and returns its exit status and stderr.
fn agent_with_key_file(key_file: &Path) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("troupe-agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nbind = \"{}\"\nmdns = false\nstate_dir = \"{}\"\nkey_file = \"{}\"\n",
            crate::support::unique_loopback(),
            dir.path().join("state").display(),
            key_file.display()
        ),
    )
    .unwrap();
    let output = Command::new(bin("troupe-agent"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn key_files_readable_by_others_or_malformed_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::generate().unwrap();
    let open = key_file(dir.path(), "open.key", &[&key]);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, stderr) = agent_with_key_file(&open);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("key file {} has mode 0644", open.display()))
            && stderr.contains("chmod 600"),
        "{stderr}"
    );
    let bad = dir.path().join("bad.key");
    std::fs::write(
        &bad,
        format!("# ok\n{}\ntroupe-key-v1:short\n", key.to_line()),
    )
    .unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (status, stderr) = agent_with_key_file(&bad);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("key file {}: line 3:", bad.display())),
        "{stderr}"
    );
    let secret = &key.to_line()["troupe-key-v1:".len()..];
    assert!(
        !stderr.contains(secret),
        "the error shows the key: {stderr}"
    );
    let missing = dir.path().join("missing.key");
    let (status, stderr) = agent_with_key_file(&missing);
    assert!(
        !status.success() && stderr.contains("missing.key"),
        "{stderr}"
    );
}

#[test]
fn keygen_writes_a_0600_key_once_and_prints_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cluster.key");
    let keygen = || {
        Command::new(bin("troupe"))
            .args(["keygen", "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    let first = keygen();
    assert!(first.status.success(), "{first:?}");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let keyring = troupe::cluster_key::Keyring::load(&out).unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(stdout.contains(keyring.fingerprint().as_str()), "{stdout}");
    assert!(
        !stdout.contains(&keyring.first().to_line()),
        "keygen printed the key: {stdout}"
    );
    let second = keygen();
    assert!(
        !second.status.success(),
        "an existing key file was replaced"
    );
    assert_eq!(troupe::cluster_key::Keyring::load(&out).unwrap(), keyring);
    // --version --verbose names CURVE and the fingerprint in use, never the key.
    let version = Command::new(bin("troupe-agent"))
        .args(["--version", "--verbose", "--key-file"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(text.contains("CURVE: yes"), "{text}");
    assert!(text.contains(keyring.fingerprint().as_str()), "{text}");
}
