//! `troupe serve` as a confused deputy (issue 11, hole 4): serve runs on the victim host next
//! to an agent that answers on 127.0.0.1:5555, and the attacker on its own host tries to make
//! serve carry code to that agent or adopt it (or anything else on the victim host) through
//! a forwarded `add`, a registration, a `cluster` range, a forged Circus UDP reply or a
//! forged mDNS record. Each test also shows the path works for what is allowed (a forwarded
//! `list`, the attacker registering or announcing its own fake node), so a refusal cannot
//! come from a broken set-up; and each failed on the code before the fix, where serve
//! forwarded `add` over loopback (the agent took it as local) and adopted every endpoint.

use super::{call_from, is_ok, spawn_in, FakeNodes, HostAgent, HostServe, Lab};
use crate::support::netns::Host;
use crate::support::wait_for;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WATCHER: &str = "[watcher.web]\ncmd = \"sleep\"\nargs = \"1000\"\n";
const FAKE_PORT: u16 = 40000;

/// The reply's `reason`, or the whole reply (or client error) when it has none.
fn reason(reply: &Result<Value, String>) -> String {
    match reply {
        Ok(value) => value["reason"]
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string),
        Err(e) => e.clone(),
    }
}

/// Watches serve's members for `window` and fails if `name` ever shows up.
fn never_a_member(serve: &HostServe, host: &Host, name: &str, window: Duration) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        let nodes = serve.nodes(host);
        assert!(
            nodes.iter().all(|n| n["name"] != name),
            "{name} became a member: {nodes:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root"]
fn serve_never_forwards_add_or_set_cmd_and_the_agent_behind_it_gets_nothing() {
    let lab = Lab::new("sd-add");
    let agent = HostAgent::start(lab.victim(), "", WATCHER);
    // One host: serve reaches its agent over loopback, because its operator said so.
    let serve = HostServe::start(lab.victim(), false, &["--probe", "127.0.0.1"]);
    wait_for("the agent to be a member", Duration::from_secs(15), || {
        serve.alive(lab.victim()) == ["victim"]
    });
    let listed = lab.attack(&serve.endpoint, "list", json!({"node": "victim"}));
    assert!(is_ok(&listed), "{listed:?}");
    assert_eq!(
        listed.as_ref().unwrap()["nodes"]["victim"]["watchers"],
        json!(["web"]),
        "serve forwards what brings no code: {listed:?}"
    );

    let marker = agent.dir.path().join("pwned");
    let marker = marker.display().to_string();
    for (command, properties) in [
        (
            "add",
            json!({"node": "victim", "name": "pwn", "cmd": "touch", "args": marker, "start": true}),
        ),
        (
            "set",
            json!({"node": "*", "name": "web", "options": {"cmd": "touch", "args": marker}}),
        ),
        (
            "add",
            json!({"name": "pwn", "cmd": "touch", "args": marker, "start": true}),
        ),
    ] {
        let reply = lab.attack(&serve.endpoint, command, properties.clone());
        assert!(
            matches!(&reply, Ok(r) if r["status"] == "error"),
            "{command} {properties}: {reply:?}"
        );
        let says = reason(&reply);
        assert!(
            says.contains("never forwards") && says.contains("Unix socket"),
            "{command}: {says}"
        );
    }

    // The agent got nothing: no new watcher, web still runs sleep, no marker.
    let list = call_from(
        lab.victim(),
        &agent.endpoint,
        "list",
        json!({}),
        Duration::from_secs(3),
    );
    assert_eq!(
        list.as_ref().unwrap()["watchers"],
        json!(["web"]),
        "{list:?}"
    );
    let options = call_from(
        lab.victim(),
        &agent.endpoint,
        "get",
        json!({"name": "web", "keys": ["cmd"]}),
        Duration::from_secs(3),
    );
    assert_eq!(
        options.as_ref().unwrap()["options"]["cmd"],
        "sleep",
        "{options:?}"
    );
    assert!(!std::path::Path::new(&marker).exists(), "the marker exists");
}

#[test]
#[ignore = "needs root"]
fn serve_adopts_a_registration_only_on_the_address_it_came_from() {
    let lab = Lab::new("sd-reg");
    let _agent = HostAgent::start(lab.victim(), "", WATCHER);
    let serve = HostServe::start(lab.victim(), false, &[]);
    let fake = FakeNodes::start(lab.attacker(), FAKE_PORT, 1, 0);
    let mut registration = fake.registration(0);

    for host in ["127.0.0.1", "0.0.0.0", lab.victim().address.as_str()] {
        for (field, port) in [
            ("endpoint", 5555),
            ("pubsub_endpoint", 5556),
            ("stats_endpoint", 5557),
        ] {
            registration[field] = json!(format!("tcp://{host}:{port}"));
        }
        let reply = lab.attack(&serve.endpoint, "register_node", registration.clone());
        let says = reason(&reply);
        assert!(
            matches!(&reply, Ok(r) if r["status"] == "error") && says.contains("came from"),
            "a registration of {host}: {reply:?}"
        );
    }
    for (field, value) in [
        ("name", "x;touch${IFS}/tmp/p;"),
        ("cluster", "de\nfault"),
        ("id", "$(id)"),
    ] {
        let mut bad = fake.registration(0);
        bad[field] = json!(value);
        let reply = lab.attack(&serve.endpoint, "register_node", bad);
        assert!(
            reason(&reply).contains(&format!("'{field}'")),
            "{field} = {value:?}: {reply:?}"
        );
    }

    // The attacker's own node, on the address it sends from, is adopted.
    let own = lab.attack(&serve.endpoint, "register_node", fake.registration(0));
    assert!(is_ok(&own), "{own:?}");
    wait_for(
        "the fake node to be a member",
        Duration::from_secs(10),
        || serve.alive(lab.victim()).contains(&FakeNodes::name(0)),
    );
    never_a_member(&serve, lab.victim(), "victim", Duration::from_secs(2));
}

/// ZMTP 1.0 (`\x01\x00`, then `LEN FLAGS BODY` frames): libzmq gives such a peer's messages
/// no `Peer-Address`, and serve cannot tell who sent a registration it cannot check.
#[test]
#[ignore = "needs root"]
fn serve_refuses_a_registration_whose_sender_it_cannot_tell() {
    let lab = Lab::new("sd-zmtp1");
    let serve = HostServe::start(lab.victim(), false, &[]);
    let fake = FakeNodes::start(lab.attacker(), FAKE_PORT, 1, 0);
    let request =
        json!({"command": "register_node", "id": "zmtp1", "properties": fake.registration(0)});
    let control = format!("{}:5558", lab.victim().address);
    let reply = lab
        .attacker()
        .ns
        .run(move || zmtp1_request(&control, request.to_string().as_bytes()));
    println!("ZMTP 1.0 register_node: {reply:?}");
    if let Some(reply) = &reply {
        assert_eq!(reply["status"], "error", "{reply}");
        assert!(
            reply["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("unknown"),
            "{reply}"
        );
    }
    never_a_member(
        &serve,
        lab.victim(),
        &FakeNodes::name(0),
        Duration::from_secs(3),
    );
}

/// Sends one request over ZMTP 1.0 and returns the reply, or None when the peer closed the
/// connection or said nothing within 3 s.
fn zmtp1_request(address: &str, body: &[u8]) -> Option<Value> {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut bytes = vec![0x01, 0x00];
    let length = body.len() as u64 + 1;
    if length < 255 {
        bytes.push(length as u8);
    } else {
        bytes.push(0xff);
        bytes.extend_from_slice(&length.to_be_bytes());
    }
    bytes.push(0x00);
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).ok()?;
    // The server's identity frame first, then the reply.
    read_zmtp1_frame(&mut stream)?;
    let reply = read_zmtp1_frame(&mut stream)?;
    serde_json::from_slice(&reply).ok()
}

fn read_zmtp1_frame(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut short = [0u8; 1];
    stream.read_exact(&mut short).ok()?;
    let length = if short[0] == 0xff {
        let mut long = [0u8; 8];
        stream.read_exact(&mut long).ok()?;
        u64::from_be_bytes(long)
    } else {
        u64::from(short[0])
    };
    let mut frame = vec![0u8; usize::try_from(length).ok()?];
    stream.read_exact(&mut frame).ok()?;
    // The first byte is the flags.
    Some(frame.split_off(1))
}

#[test]
#[ignore = "needs root"]
fn serve_refuses_a_clients_cluster_range_on_its_own_host() {
    let lab = Lab::new("sd-range");
    let _agent = HostAgent::start(lab.victim(), "", WATCHER);
    let serve = HostServe::start(lab.victim(), false, &[]);
    let fake = FakeNodes::start(lab.attacker(), FAKE_PORT, 1, 0);
    for range in [
        "127.0.0.1",
        "127.0.0.0/8",
        "0.0.0.0",
        "[::1]",
        "10.0.0.1,127.0.0.1",
    ] {
        let reply = lab.attack(&serve.endpoint, "cluster", json!({"range": range}));
        let says = reason(&reply);
        assert!(
            matches!(&reply, Ok(r) if r["status"] == "error") && says.contains("own host"),
            "cluster {range}: {reply:?}"
        );
    }
    // A range of the attacker's own is swept.
    let own = format!("{}:{FAKE_PORT}", fake.address);
    let reply = call_from(
        lab.attacker(),
        &serve.endpoint,
        "cluster",
        json!({"range": own}),
        Duration::from_secs(15),
    );
    assert!(is_ok(&reply), "{reply:?}");
    assert_eq!(serve.alive(lab.victim()), [FakeNodes::name(0)]);
    never_a_member(&serve, lab.victim(), "victim", Duration::from_secs(1));
}

/// A thread in the attacker's namespace answering every Circus UDP discovery datagram with
/// each of `endpoints`; counts the datagrams it answered.
struct ForgedUdpResponder {
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ForgedUdpResponder {
    fn start(host: &Host, endpoints: Vec<String>) -> ForgedUdpResponder {
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let interface: Ipv4Addr = host.address.parse().expect("an IPv4 host");
        let (count, halt) = (answered.clone(), stop.clone());
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = spawn_in(host, move || {
            let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 12027))
                .expect("bind the Circus discovery port");
            socket
                .join_multicast_v4(&Ipv4Addr::new(237, 219, 251, 97), &interface)
                .expect("join the Circus discovery group");
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let _ = ready_tx.send(());
            let mut buffer = [0u8; 2048];
            while !halt.load(Ordering::Relaxed) {
                let Ok((_, from)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                for endpoint in &endpoints {
                    let reply = json!({ "endpoint": endpoint }).to_string();
                    let _ = socket.send_to(reply.as_bytes(), from);
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        ready
            .recv_timeout(Duration::from_secs(5))
            .expect("responder ready");
        ForgedUdpResponder {
            answered,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ForgedUdpResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
#[ignore = "needs root"]
fn serve_does_not_adopt_a_forged_circus_udp_reply_pointing_at_its_loopback() {
    let lab = Lab::new("sd-udp");
    let _agent = HostAgent::start(lab.victim(), "", WATCHER);
    let fake = FakeNodes::start(lab.attacker(), FAKE_PORT, 1, 0);
    let responder = ForgedUdpResponder::start(
        lab.attacker(),
        vec![
            "tcp://127.0.0.1:5555".into(),
            "tcp://0.0.0.0:5555".into(),
            fake.endpoint(0),
        ],
    );
    let serve = HostServe::start(lab.victim(), true, &[]);
    wait_for(
        "serve to adopt the attacker's own node by Circus UDP",
        Duration::from_secs(20),
        || serve.alive(lab.victim()).contains(&FakeNodes::name(0)),
    );
    // serve asks again every probe interval (5 s): two rounds of forged answers.
    wait_for("a second discovery round", Duration::from_secs(15), || {
        responder.answered.load(Ordering::Relaxed) >= 2
    });
    never_a_member(&serve, lab.victim(), "victim", Duration::from_secs(2));
    assert_eq!(serve.alive(lab.victim()), [FakeNodes::name(0)]);
}

/// An unsolicited mDNS response announcing `instance` of `_troupe._tcp` at `ip:port` with the
/// TXT record of an agent of cluster `default`.
fn mdns_announcement(instance: &str, id: &str, ip: Ipv4Addr, port: u16) -> Vec<u8> {
    fn name(out: &mut Vec<u8>, dotted: &str) {
        for label in dotted.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
    }
    fn record(out: &mut Vec<u8>, owner: &str, kind: u16, class: u16, rdata: &[u8]) {
        name(out, owner);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&class.to_be_bytes());
        out.extend_from_slice(&120u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    let service = "_troupe._tcp.local";
    let full = format!("{instance}.{service}");
    let target = format!("{instance}-host.local");
    let mut packet = vec![0, 0, 0x84, 0, 0, 0, 0, 4, 0, 0, 0, 0];
    let mut ptr = Vec::new();
    name(&mut ptr, &full);
    record(&mut packet, service, 12, 1, &ptr);
    let mut srv = vec![0, 0, 0, 0];
    srv.extend_from_slice(&port.to_be_bytes());
    name(&mut srv, &target);
    record(&mut packet, &full, 33, 0x8001, &srv);
    let mut txt = Vec::new();
    for pair in [
        format!("id={id}"),
        "cluster=default".into(),
        "v=0.1.0".into(),
        "pub=5556".into(),
        "stats=5557".into(),
        "proto=1".into(),
    ] {
        txt.push(pair.len() as u8);
        txt.extend_from_slice(pair.as_bytes());
    }
    record(&mut packet, &full, 16, 0x8001, &txt);
    record(&mut packet, &target, 1, 0x8001, &ip.octets());
    packet
}

#[test]
#[ignore = "needs root"]
fn serve_does_not_adopt_a_forged_mdns_record_pointing_at_its_loopback() {
    let lab = Lab::new("sd-mdns");
    let _agent = HostAgent::start(lab.victim(), "", WATCHER);
    let _fake = FakeNodes::start(lab.attacker(), FAKE_PORT, 1, 0);
    let serve = HostServe::start(lab.victim(), true, &[]);
    let attacker: Ipv4Addr = lab.attacker().address.parse().expect("IPv4");
    let packets = [
        mdns_announcement("evil-lo", &FakeNodes::id(7), Ipv4Addr::LOCALHOST, 5555),
        mdns_announcement("evil-any", &FakeNodes::id(8), Ipv4Addr::UNSPECIFIED, 5555),
        mdns_announcement("fake-0", &FakeNodes::id(0), attacker, FAKE_PORT),
    ];
    let send = || {
        let packets = packets.clone();
        lab.attacker().ns.run(move || {
            let socket = UdpSocket::bind(SocketAddrV4::new(attacker, 5353)).expect("bind 5353");
            socket.set_multicast_ttl_v4(255).expect("ttl");
            // The namespace has no default route: name the interface.
            socket2::SockRef::from(&socket)
                .set_multicast_if_v4(&attacker)
                .expect("multicast interface");
            let group = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 251), 5353);
            for packet in &packets {
                socket
                    .send_to(packet, group)
                    .expect("send the announcement");
            }
        })
    };
    wait_for(
        "serve to adopt the attacker's own node by mDNS",
        Duration::from_secs(20),
        || {
            send();
            std::thread::sleep(Duration::from_millis(500));
            serve.alive(lab.victim()).contains(&FakeNodes::name(0))
        },
    );
    send();
    never_a_member(&serve, lab.victim(), "victim", Duration::from_secs(2));
    let nodes = serve.nodes(lab.victim());
    assert_eq!(nodes.len(), 1, "{nodes:#?}");
    assert!(
        nodes[0]["source"]
            .as_array()
            .unwrap()
            .contains(&json!("mdns")),
        "{nodes:#?}"
    );
}

/// The rule an operator gets on one host: agents in a namespace with only `lo` announce
/// 127.0.0.1 over mDNS, and serve adopts them when its operator named that address (here a
/// `probe` entry of troupe.toml, swept once at start and then hourly, so what adopts the agent
/// is its mDNS record); a serve told nothing adopts nothing on its own host.
#[test]
#[ignore = "needs root"]
fn serve_adopts_an_mdns_record_on_its_own_host_only_where_its_operator_named_it() {
    let host = Host {
        ns: crate::support::netns::Netns::new("sd-lo"),
        address: "127.0.0.1".into(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("troupe.toml");
    std::fs::write(
        &config,
        "probe = [\"127.0.0.1\"]\nprobe_interval = \"1h\"\n",
    )
    .expect("write");
    let config = config.display().to_string();
    let named = HostServe::start(&host, true, &["--config", &config]);

    std::fs::write(
        dir.path().join("troupe-agent.toml"),
        format!(
            "[agent]\nname = \"lo-node\"\nbind = \"0.0.0.0\"\nmdns = true\nstate_dir = \"{}\"\n\n{WATCHER}",
            dir.path().join("state").display()
        ),
    )
    .expect("write the agent's config");
    let mut command = host.command(crate::support::bin("troupe-agent"));
    command
        .arg("--config")
        .arg(dir.path().join("troupe-agent.toml"));
    let _agent = crate::support::Daemon::spawn(
        "troupe-agent (lo only)",
        command,
        &dir.path().join("agent.log"),
    );
    wait_for(
        "the agent to be adopted by mDNS",
        Duration::from_secs(20),
        || serve_sources(&named, &host, "lo-node").is_some_and(|s| s == [json!("mdns")]),
    );
    drop(named);

    let unnamed = HostServe::start(&host, true, &[]);
    never_a_member(&unnamed, &host, "lo-node", Duration::from_secs(4));
}

/// How serve found the member `name`, if it is one.
fn serve_sources(serve: &HostServe, host: &Host, name: &str) -> Option<Vec<Value>> {
    let nodes = serve.nodes(host);
    let node = nodes.iter().find(|n| n["name"] == name)?;
    node["source"].as_array().cloned()
}
