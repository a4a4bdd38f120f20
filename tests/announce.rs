//! The agent makes itself known: its mDNS record and goodbye, Circus's UDP discovery answer,
//! and registration with a controller (`master`). Multicast happens only inside network
//! namespaces with nothing but `lo`; the test talks to the agent from a thread that entered
//! the namespace (`setns`), so its mDNS daemon and ZeroMQ threads live there too.

use crate::support::netns::Netns;
use crate::support::{bin, wait_for};
use mdns_sd::{ServiceDaemon, ServiceEvent};
use serde_json::Value;
use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use troupe::discovery::announce::{
    AnnounceRecord, CIRCUS_MULTICAST_GROUP, CIRCUS_MULTICAST_PORT, PROTO_VERSION, SERVICE_TYPE,
};

/// An agent running inside a namespace; dropping it stops it and prints its log if the test
/// is failing.
struct NsAgent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    name: String,
    control_port: u16,
}

impl NsAgent {
    /// Starts `name` on 0.0.0.0 with control/pubsub/stats ports `base`, `base + 1`, `base + 2`
    /// and `extra` lines in `[agent]`.
    fn start(ns: &Netns, name: &str, base: u16, extra: &str) -> NsAgent {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nname = \"{name}\"\ncluster = \"lab\"\nbind = \"0.0.0.0\"\n\
                 control_port = {base}\npubsub_port = {}\nstats_port = {}\n\
                 state_dir = \"{}\"\n{extra}\n",
                base + 1,
                base + 2,
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = ns
            .command(bin("troupe-agent"))
            .arg("--config")
            .arg(&config)
            .args(["--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        NsAgent {
            child: Some(child),
            dir,
            name: name.to_string(),
            control_port: base,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The node id the agent keeps in its state dir.
    fn node_id(&self) -> String {
        let path: PathBuf = self.dir.path().join("state/node-id");
        wait_for("the node-id file", Duration::from_secs(10), || {
            path.exists()
        });
        std::fs::read_to_string(path).unwrap().trim().to_string()
    }

    fn fullname(&self) -> String {
        format!("{}.{SERVICE_TYPE}", self.name)
    }

    /// SIGTERM; returns once the agent has exited.
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("agent running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent did not exit after SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the control socket answers (from inside the namespace).
    fn wait_ready(&self) {
        let endpoint = format!("tcp://127.0.0.1:{}", self.control_port);
        wait_for("the agent to answer", Duration::from_secs(10), || {
            troupe::client::call(
                &endpoint,
                troupe::protocol::Request::new("numwatchers", Default::default()),
                Duration::from_millis(300),
            )
            .is_ok()
        });
    }
}

impl Drop for NsAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "--- agent {} log ---\n{}",
                self.name,
                self.log()
            );
        }
    }
}

/// Runs `body` on a thread that entered `ns`'s network namespace; threads it starts (the
/// mDNS daemon, ZeroMQ's I/O threads) stay in there.
fn in_netns<T: Send>(ns: &Netns, body: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                body()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Waits for an mDNS event about `fullname` that `pick` accepts.
fn wait_event<T>(
    events: &mdns_sd::Receiver<ServiceEvent>,
    timeout: Duration,
    what: &str,
    mut pick: impl FnMut(&ServiceEvent) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(event) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
            Err(_) => panic!("no {what} within {timeout:?}"),
        }
    }
}

fn resolved(
    fullname: &str,
) -> impl FnMut(&ServiceEvent) -> Option<Box<mdns_sd::ResolvedService>> + '_ {
    move |event| match event {
        ServiceEvent::ServiceResolved(service) if service.fullname == fullname => {
            Some(service.clone())
        }
        _ => None,
    }
}

#[test]
#[ignore = "needs root"]
fn an_agent_alone_on_lo_is_resolved_over_mdns_with_its_record() {
    let ns = Netns::new("mdns");
    in_netns(&ns, || {
        let browser = ServiceDaemon::new().unwrap();
        let events = browser.browse(SERVICE_TYPE).unwrap();
        let started = Instant::now();
        let agent = NsAgent::start(&ns, "node-a", 6101, "");
        let service = wait_event(
            &events,
            Duration::from_secs(10),
            "ServiceResolved",
            resolved(&agent.fullname()),
        );
        eprintln!("resolved {:?} after agent start", started.elapsed());
        let record = AnnounceRecord::from_txt(|k| service.get_property_val_str(k)).unwrap();
        assert_eq!(
            record,
            AnnounceRecord {
                id: agent.node_id(),
                cluster: "lab".into(),
                version: troupe::VERSION.into(),
                pubsub_port: 6102,
                stats_port: 6103,
                proto: PROTO_VERSION,
                fingerprint: None,
            }
        );
        assert_eq!(service.get_port(), 6101);
        assert!(
            service.get_addresses_v4().contains(&Ipv4Addr::LOCALHOST),
            "{:?}",
            service.get_addresses()
        );
        let _ = browser.shutdown();
    });
}

#[test]
#[ignore = "needs root"]
fn sigterm_sends_an_mdns_goodbye() {
    let ns = Netns::new("bye");
    in_netns(&ns, || {
        let browser = ServiceDaemon::new().unwrap();
        let events = browser.browse(SERVICE_TYPE).unwrap();
        let mut agent = NsAgent::start(&ns, "node-b", 6201, "");
        let fullname = agent.fullname();
        wait_event(
            &events,
            Duration::from_secs(10),
            "ServiceResolved",
            resolved(&fullname),
        );
        let signalled = Instant::now();
        agent.terminate();
        let exited = signalled.elapsed();
        // A record that merely expired would take its TTL (120 s): this is the goodbye.
        wait_event(&events, Duration::from_secs(5), "ServiceRemoved", |event| {
            matches!(event, ServiceEvent::ServiceRemoved(_, name) if *name == fullname)
                .then_some(())
        });
        eprintln!(
            "agent exited {exited:?} and ServiceRemoved arrived {:?} after SIGTERM",
            signalled.elapsed()
        );
        let _ = browser.shutdown();
    });
}

/// Sends Circus's discovery datagram out of `lo` and collects the answers for `wait`.
fn circus_discovery(wait: Duration) -> Vec<Value> {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    // A namespace has no route to multicast groups: name the interface.
    socket2::SockRef::from(&socket)
        .set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
        .unwrap();
    socket
        .send_to(b"{}", (CIRCUS_MULTICAST_GROUP, CIRCUS_MULTICAST_PORT))
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut answers = Vec::new();
    let mut buffer = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((n, _)) = socket.recv_from(&mut buffer) {
            answers.push(serde_json::from_slice(&buffer[..n]).expect("JSON answer"));
        }
    }
    answers
}

fn endpoints(answers: &[Value]) -> Vec<String> {
    let mut endpoints: Vec<String> = answers
        .iter()
        .map(|a| a["endpoint"].as_str().expect("endpoint").to_string())
        .collect();
    endpoints.sort();
    endpoints
}

#[test]
#[ignore = "needs root"]
fn agents_sharing_a_host_all_answer_circus_udp_discovery() {
    let ns = Netns::new("cudp");
    in_netns(&ns, || {
        let first = NsAgent::start(&ns, "node-c", 6301, "");
        let second = NsAgent::start(&ns, "node-d", 6401, "");
        first.wait_ready();
        second.wait_ready();
        let want = ["tcp://127.0.0.1:6301", "tcp://127.0.0.1:6401"];
        let mut got = Vec::new();
        wait_for("both agents to answer", Duration::from_secs(10), || {
            got = endpoints(&circus_discovery(Duration::from_millis(300)));
            got == want
        });
        assert!(
            second.log().contains("announcing over mDNS"),
            "{}",
            second.log()
        );
    });
}

/// Stock circusd binds the discovery port with SO_REUSEADDR and SO_REUSEPORT too: on one
/// host both answer.
#[test]
#[ignore = "needs root"]
fn an_agent_and_stock_circusd_on_one_host_both_answer_circus_udp_discovery() {
    let ns = Netns::new("circd");
    // circusd joins its group on INADDR_ANY, which needs a multicast route.
    ns.enable_loopback_multicast();
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("circus.ini");
    std::fs::write(
        &ini,
        "[circus]\nendpoint = tcp://127.0.0.1:7555\npubsub_endpoint = tcp://127.0.0.1:7556\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("circusd.log")).unwrap();
    let circusd = ns
        .command(crate::support::circus_venv().join("bin/circusd"))
        .arg(&ini)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _circusd = KillOnDrop(circusd);
    in_netns(&ns, || {
        wait_for("circusd to answer", Duration::from_secs(10), || {
            endpoints(&circus_discovery(Duration::from_millis(200))) == ["tcp://127.0.0.1:7555"]
        });
        let agent = NsAgent::start(&ns, "node-g", 6301, "");
        agent.wait_ready();
        let want = ["tcp://127.0.0.1:6301", "tcp://127.0.0.1:7555"];
        wait_for(
            "circusd and the agent to answer",
            Duration::from_secs(10),
            || endpoints(&circus_discovery(Duration::from_millis(300))) == want,
        );
    });
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs root"]
fn with_mdns_off_an_agent_neither_announces_nor_answers() {
    let ns = Netns::new("quiet");
    in_netns(&ns, || {
        let agent = NsAgent::start(&ns, "node-e", 6501, "mdns = false");
        agent.wait_ready();
        // Nobody holds the mDNS or Circus port: a bind without SO_REUSEADDR succeeds.
        for port in [5353, CIRCUS_MULTICAST_PORT] {
            UdpSocket::bind(("0.0.0.0", port))
                .unwrap_or_else(|e| panic!("port {port} is taken with mdns = false: {e}"));
        }
        let browser = ServiceDaemon::new().unwrap();
        let events = browser.browse(SERVICE_TYPE).unwrap();
        // Observing absence: a running announcer is resolved in under 100 ms, a new one ~1 s.
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Ok(event) =
            events.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            assert!(
                !matches!(
                    event,
                    ServiceEvent::ServiceFound(..) | ServiceEvent::ServiceResolved(_)
                ),
                "{event:?}"
            );
        }
        assert_eq!(
            circus_discovery(Duration::from_secs(1)),
            Vec::<Value>::new()
        );
        let _ = browser.shutdown();
    });
}

/// A fake controller: a ROUTER on `endpoint` that reads requests.
struct FakeMaster {
    socket: zmq::Socket,
}

impl FakeMaster {
    /// Binds, retrying while a previous fake's listener is still being closed (ZeroMQ
    /// closes sockets asynchronously, on its reaper thread).
    fn bind(context: &zmq::Context, endpoint: &str) -> FakeMaster {
        let socket = context.socket(zmq::ROUTER).unwrap();
        socket.set_linger(0).unwrap();
        wait_for(
            &format!("{endpoint} to be free"),
            Duration::from_secs(5),
            || socket.bind(endpoint).is_ok(),
        );
        FakeMaster { socket }
    }

    /// The next `command` request within `timeout`, answered with `ok`; other requests are
    /// answered too and skipped.
    fn expect(&self, command: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ready = self
                .socket
                .poll(zmq::POLLIN, left.as_millis() as i64)
                .unwrap();
            assert!(ready > 0, "no {command} within {timeout:?}");
            let frames = self.socket.recv_multipart(0).unwrap();
            assert_eq!(frames.len(), 2, "Circus envelope: [identity, json]");
            let request: Value = serde_json::from_slice(&frames[1]).unwrap();
            let reply = serde_json::json!({"status": "ok", "time": 0.0, "id": request["id"]});
            self.socket
                .send_multipart([frames[0].clone(), reply.to_string().into_bytes()], 0)
                .unwrap();
            if request["command"] == command {
                return request;
            }
        }
    }
}

#[test]
#[ignore = "needs root"]
fn an_agent_registers_with_its_master_again_after_a_restart_and_unregisters() {
    let ns = Netns::new("master");
    in_netns(&ns, || {
        let master = "tcp://127.0.0.1:5558";
        let mut agent = NsAgent::start(
            &ns,
            "node-f",
            6601,
            &format!("mdns = false\nmaster = \"{master}\""),
        );
        agent.wait_ready();
        let id = agent.node_id();
        // The master is down: the agent says so once, not at every attempt (observing
        // absence: three attempts, the later two logged at debug level).
        wait_for(
            "three attempts to register",
            Duration::from_secs(20),
            || {
                agent
                    .log()
                    .matches("register_node attempt: as the last one")
                    .count()
                    >= 2
            },
        );
        let complaints = agent.log().matches("cannot register").count();
        assert_eq!(complaints, 1, "{}", agent.log());

        let context = zmq::Context::new();
        let fake = FakeMaster::bind(&context, master);
        let request = fake.expect("register_node", Duration::from_secs(4));
        assert_eq!(
            request["properties"],
            serde_json::json!({
                "id": id,
                "name": "node-f",
                "cluster": "lab",
                "endpoint": "tcp://127.0.0.1:6601",
                "pubsub_endpoint": "tcp://127.0.0.1:6602",
                "stats_endpoint": "tcp://127.0.0.1:6603",
            })
        );

        // A restarted controller learns the agent again within one interval.
        drop(fake);
        let fake = FakeMaster::bind(&context, master);
        let rebound = Instant::now();
        fake.expect("register_node", Duration::from_secs(3));
        eprintln!("registered again {:?} after the restart", rebound.elapsed());

        let signalled = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| agent.terminate());
            let request = fake.expect("unregister_node", Duration::from_secs(5));
            assert_eq!(request["properties"], serde_json::json!({ "id": id }));
        });
        eprintln!("unregistered {:?} after SIGTERM", signalled.elapsed());
    });
}
