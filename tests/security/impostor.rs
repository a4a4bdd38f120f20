//! Membership by key (issue 12): an impostor agent of the same cluster name but without the
//! key, announced over mDNS and found by probing its address, and even holding a copy of a
//! member's id file, is never alive in a keyed `troupe nodes` nor in a `configure` peer list,
//! while the key holders are; a keyless `troupe nodes` lists the keyed agents as `locked`; a
//! second key holder with a copied id does not evict the first; the mDNS record and the
//! Circus UDP reply carry the key's fingerprint and never the key.
//!
//! Each fails on the code before membership knew keys: there the mDNS record and the UDP
//! reply carried no fingerprint, a keyed `troupe nodes` listed nothing for an agent it could
//! not talk to and a keyless one nothing for a keyed agent (no `locked` row, no KEY), and a
//! second agent answering with a held id made a second row with both flagged `conflict`,
//! which took the holder out of every peer list.

use crate::support::netns::{Host, Segment};
use crate::support::{bin, isolated, run_command, wait_for, Daemon};
use serde_json::Value;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use troupe::cluster_key::ClusterKey;

pub(super) const CLUSTER: &str = "lab";

/// A troupe-agent on a lab host, bound to 0.0.0.0, of cluster `lab`.
pub(super) struct LabAgent {
    pub(super) daemon: Daemon,
    pub(super) dir: tempfile::TempDir,
}

impl LabAgent {
    /// Starts agent `name` with `key` (a key file path) or none, mDNS on or off, and the node
    /// id `id` written in its state dir beforehand (a copied id file) when given; waits for
    /// its "ready" log line.
    pub(super) fn start(
        host: &Host,
        name: &str,
        key: Option<&Path>,
        mdns: bool,
        id: Option<&str>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        if let Some(id) = id {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&state)
                .unwrap();
            std::fs::write(state.join("node-id"), format!("{id}\n")).unwrap();
        }
        let key_line = key.map_or(String::new(), |k| {
            format!("key_file = \"{}\"\n", k.display())
        });
        let config = dir.path().join("troupe-agent.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nname = \"{name}\"\ncluster = \"{CLUSTER}\"\nbind = \"0.0.0.0\"\n\
                 mdns = {mdns}\nstate_dir = \"{}\"\n{key_line}\n[watcher.w]\ncmd = \"sleep 1000\"\n",
                state.display()
            ),
        )
        .unwrap();
        let mut command = host.command(bin("troupe-agent"));
        command
            .arg("--config")
            .arg(&config)
            .args(["--log-level", "debug"]);
        let mut daemon = Daemon::spawn("troupe-agent", command, &dir.path().join("agent.log"));
        wait_for(
            &format!("agent {name} ready"),
            Duration::from_secs(10),
            || {
                daemon.assert_running();
                daemon.log().contains("troupe-agent ready")
            },
        );
        LabAgent { daemon, dir }
    }

    fn id(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/node-id"))
            .unwrap()
            .trim()
            .to_string()
    }
}

/// A key file of `key`, mode 0600, in `dir`.
pub(super) fn key_file(dir: &Path, key: &ClusterKey) -> PathBuf {
    let path = dir.join("cluster.key");
    std::fs::write(&path, key.to_line() + "\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `troupe [--key-file KEY] ARGS` on `host`, in `dir`: its stdout, or the test fails.
pub(super) fn troupe_on(host: &Host, dir: &Path, key: Option<&Path>, args: &[&str]) -> String {
    let mut command = isolated(host.command(bin("troupe")), dir);
    if let Some(key) = key {
        command.arg("--key-file").arg(key);
    }
    command
        .args(args)
        .args(["--cluster", CLUSTER, "--state-dir", "cli-state"]);
    let run = run_command(command, Duration::from_secs(30));
    assert_eq!(run.code, Some(0), "troupe {args:?}: {}", run.stderr);
    run.stdout
}

/// `troupe nodes --json` on `host`: mDNS for 3 s and a sweep of `probe`.
pub(super) fn nodes(host: &Host, dir: &Path, key: Option<&Path>, probe: &str) -> Vec<Value> {
    let out = troupe_on(
        host,
        dir,
        key,
        &["nodes", "--json", "--wait", "3s", "--probe", probe],
    );
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The (state, key) of the row named `name`, and how many rows carry that name.
pub(super) fn row(nodes: &[Value], name: &str) -> (Vec<(String, String)>, usize) {
    let rows: Vec<(String, String)> = nodes
        .iter()
        .filter(|n| n["name"] == name)
        .map(|n| {
            let text = |v: &Value| v.as_str().unwrap_or("none").to_string();
            (text(&n["state"]), text(&n["key_fingerprint"]))
        })
        .collect();
    let count = rows.len();
    (rows, count)
}

/// Multicast and unicast UDP datagrams received on `port` of `host` (mDNS: 5353, joined to
/// 224.0.0.251) until stopped, for grepping their raw bytes.
pub(super) struct Capture {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Vec<u8>>>>,
}

impl Capture {
    pub(super) fn mdns(host: &Host) -> Capture {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let address: std::net::Ipv4Addr = host.address.parse().unwrap();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = super::spawn_in(host, move || {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .unwrap();
            socket.set_reuse_address(true).unwrap();
            socket.set_reuse_port(true).unwrap();
            let any = std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 5353);
            socket.bind(&any.into()).unwrap();
            socket
                .join_multicast_v4(&std::net::Ipv4Addr::new(224, 0, 0, 251), &address)
                .unwrap();
            let socket: std::net::UdpSocket = socket.into();
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let _ = ready_tx.send(());
            let mut packets = Vec::new();
            let mut buffer = [0u8; 9000];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buffer) {
                    packets.push(buffer[..n].to_vec());
                }
            }
            packets
        });
        ready.recv_timeout(Duration::from_secs(5)).unwrap();
        Capture {
            stop,
            thread: Some(thread),
        }
    }

    pub(super) fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The Circus UDP discovery answer of the agent at `address`, asked from `host` (unicast: the
/// responder answers any datagram to its port).
pub(super) fn circus_udp_reply(host: &Host, address: &str) -> Vec<u8> {
    host.ns.run(|| {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        socket.send_to(b"{}", (address, 12027)).unwrap();
        let mut buffer = [0u8; 2048];
        let (n, _) = socket.recv_from(&mut buffer).expect("a Circus UDP reply");
        buffer[..n].to_vec()
    })
}

/// The nodes `troupe configure --dry-run --json` configured: those of its peer list.
pub(super) fn peer_names(dry_run: &str) -> Vec<String> {
    let replies: serde_json::Map<String, Value> =
        serde_json::from_str(dry_run).unwrap_or_else(|e| panic!("{e}: {dry_run}"));
    replies.keys().cloned().collect()
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that no packet holds the key, in any form a leak would take.
fn assert_no_key(packets: &[Vec<u8>], key: &ClusterKey) {
    use base64::Engine;
    let line = key.to_line();
    let encoded = &line[troupe::cluster_key::PREFIX.len()..];
    let secret = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    for packet in packets {
        for needle in [encoded.as_bytes(), &secret[..], &secret[..8]] {
            assert!(!contains(packet, needle), "a packet holds the key");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn an_impostor_without_the_key_is_never_a_member_and_fingerprints_are_announced() {
    let segment = Segment::new("impostor", 4);
    let (h1, h2, impostor_host, observer) = (
        segment.host(1),
        segment.host(2),
        segment.host(3),
        segment.host(4),
    );
    let scratch = tempfile::tempdir().unwrap();
    let key = ClusterKey::generate().unwrap();
    let fingerprint = key.fingerprint().to_string();
    let key_path = key_file(scratch.path(), &key);

    let capture = Capture::mdns(observer);
    let real_1 = LabAgent::start(h1, "real-1", Some(&key_path), true, None);
    let _real_2 = LabAgent::start(h2, "real-2", Some(&key_path), true, None);
    // The impostor: same cluster name, no key, and a copy of real-1's id file.
    let victim_id = real_1.id();
    let _impostor = LabAgent::start(impostor_host, "impostor", None, true, Some(&victim_id));
    let probe = format!("{},{}", h1.address, impostor_host.address);

    // With the key: the two holders are alive with the key's fingerprint, the impostor is
    // listed as locked (found over mDNS, never dialled), never alive, and real-1 holds its id.
    let mut keyed = Vec::new();
    wait_for(
        "a keyed troupe nodes to see all three",
        Duration::from_secs(30),
        || {
            keyed = nodes(observer, scratch.path(), Some(&key_path), &probe);
            let alive = |name| row(&keyed, name).0 == [("alive".to_string(), fingerprint.clone())];
            alive("real-1") && alive("real-2") && row(&keyed, "impostor").1 > 0
        },
    );
    for n in &keyed {
        if n["name"] == "impostor" {
            assert_eq!(n["state"], "locked", "{n}");
            assert!(n["key_fingerprint"].is_null(), "{n}");
            assert!(
                n["locked"].as_str().unwrap().contains("no cluster key"),
                "{n}"
            );
        }
        if n["id"] == victim_id.as_str() {
            assert_eq!(n["name"], "real-1", "the copied id took the row: {n}");
        }
    }
    assert!(!keyed
        .iter()
        .any(|n| n["state"] == "alive" && n["name"] == "impostor"));
    let table = troupe_on(
        observer,
        scratch.path(),
        Some(&key_path),
        &["nodes", "--wait", "3s", "--probe", &probe],
    );
    assert!(
        table.contains("impostor is locked: it has no cluster key"),
        "{table}"
    );

    // configure's peer list, as the key holder would push it: the two holders only.
    let dry_run = troupe_on(
        observer,
        scratch.path(),
        Some(&key_path),
        &["configure", "--dry-run", "--json", "--probe", &probe],
    );
    assert_eq!(peer_names(&dry_run), ["real-1", "real-2"]);

    // Without the key: the holders are locked (their fingerprint shown), never alive.
    let keyless = nodes(observer, scratch.path(), None, &probe);
    for name in ["real-1", "real-2"] {
        assert_eq!(
            row(&keyless, name).0,
            [("locked".to_string(), fingerprint.clone())],
            "{keyless:?}"
        );
    }
    assert_eq!(
        row(&keyless, "impostor").0,
        [("alive".into(), "none".into())]
    );

    // The fingerprint is announced over mDNS and Circus UDP; the key never is.
    let udp = circus_udp_reply(observer, &h1.address);
    let reply: Value = serde_json::from_slice(&udp).unwrap();
    assert_eq!(reply["fingerprint"], fingerprint.as_str(), "{reply}");
    assert_eq!(reply["endpoint"], format!("tcp://{}:5555", h1.address));
    let packets = capture.finish();
    let txt = format!("fp={fingerprint}");
    assert!(
        packets.iter().any(|p| contains(p, txt.as_bytes())),
        "no mDNS packet of {} holds {txt}",
        packets.len()
    );
    let mut everything = packets;
    everything.push(udp);
    assert_no_key(&everything, &key);
}

#[test]
#[ignore = "needs root"]
fn a_second_key_holder_with_a_copied_id_does_not_evict_the_first() {
    let segment = Segment::new("twin", 3);
    let (victim_host, twin_host, serve_host) = (segment.host(1), segment.host(2), segment.host(3));
    let scratch = tempfile::tempdir().unwrap();
    let key = ClusterKey::generate().unwrap();
    let key_path = key_file(scratch.path(), &key);
    let victim = LabAgent::start(victim_host, "victim", Some(&key_path), false, None);
    let victim_endpoint = format!("tcp://{}:5555", victim_host.address);
    let twin_endpoint = format!("tcp://{}:5555", twin_host.address);

    let probe = format!("{},{}", victim_host.address, twin_host.address);
    let mut serve = {
        let dir = scratch.path().join("serve");
        std::fs::create_dir(&dir).unwrap();
        let mut command = isolated(serve_host.command(bin("troupe")), &dir);
        command
            .arg("--key-file")
            .arg(&key_path)
            .args([
                "serve",
                "--no-mdns",
                "--cluster",
                CLUSTER,
                "--probe",
                &probe,
                "--log-level",
                "info",
            ])
            .arg("--state-dir")
            .arg(dir.join("state"));
        Daemon::spawn("troupe serve", command, &dir.join("serve.log"))
    };
    let rows = |serve: &mut Daemon| -> Vec<Value> {
        serve.assert_running();
        let nodes = troupe_on(
            serve_host,
            scratch.path(),
            Some(&key_path),
            &[
                "nodes",
                "--json",
                "--controller",
                &format!("tcp://{}:5558", serve_host.address),
            ],
        );
        serde_json::from_str(&nodes).unwrap_or_default()
    };
    let holds = |nodes: &[Value]| {
        let with_id: Vec<&Value> = nodes
            .iter()
            .filter(|n| n["id"] == victim.id().as_str())
            .collect();
        with_id.len() == 1
            && with_id[0]["endpoint"] == victim_endpoint.as_str()
            && with_id[0]["state"] == "alive"
    };
    wait_for("serve to adopt the victim", Duration::from_secs(20), || {
        holds(&rows(&mut serve))
    });

    // A second key holder with the victim's id file, found by the next sweeps.
    let victim_id = victim.id();
    let _twin = LabAgent::start(twin_host, "twin", Some(&key_path), false, Some(&victim_id));
    wait_for("serve to refuse the twin", Duration::from_secs(20), || {
        serve.log().contains(&format!("refused {twin_endpoint}"))
    });
    let log = serve.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("refused {twin_endpoint}")))
        .unwrap();
    assert!(
        line.contains(&victim_endpoint) && line.contains(&victim_id),
        "{line}"
    );
    // Through several sweeps and heartbeats: the victim keeps its row, alone, in the peer list.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let nodes = rows(&mut serve);
        assert!(holds(&nodes), "{nodes:#?}");
        assert!(
            !nodes
                .iter()
                .any(|n| n["endpoint"] == twin_endpoint.as_str()),
            "{nodes:#?}"
        );
    }
    let dry_run = troupe_on(
        serve_host,
        scratch.path(),
        Some(&key_path),
        &[
            "configure",
            "--dry-run",
            "--json",
            "--controller",
            &format!("tcp://{}:5558", serve_host.address),
        ],
    );
    assert_eq!(peer_names(&dry_run), ["victim"]);
    let log = serve.log();
    assert_eq!(
        log.matches(&format!("refused {twin_endpoint}")).count(),
        1,
        "logged once: {log}"
    );
}
