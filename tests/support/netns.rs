//! Network namespaces the tests create themselves (root only), deleted on drop, and
//! [`Segment`]: several "hosts" (namespaces) on one Ethernet segment, a bridge living in a
//! namespace of its own, so the root namespace is never touched (TESTING.md, "Several nodes
//! on one machine").

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A namespace with `lo` up; names are unique per test process.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        Netns::named(format!("tr-{tag}-{}-{}", std::process::id(), next()))
    }

    /// A namespace with exactly this name (the caller makes it unique), `lo` up.
    pub fn named(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip -n NAME ARGS...`, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// A non-loopback address that exists only here, on a veth pair whose both ends stay in
    /// the namespace.
    pub fn add_local_address(&self, cidr: &str) {
        self.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        self.ip(&["addr", "add", cidr, "dev", "v0"]);
        self.ip(&["link", "set", "v0", "up"]);
        self.ip(&["link", "set", "v1", "up"]);
    }

    /// Multicast over `lo` in a namespace that has nothing else: a route to 224.0.0.0/4.
    /// Without one, joining a group on INADDR_ANY (stock circusd's UDP discovery socket)
    /// fails with ENODEV and circusd runs with its discovery disabled.
    pub fn enable_loopback_multicast(&self) {
        self.ip(&["link", "set", "lo", "multicast", "on"]);
        self.ip(&["route", "add", "224.0.0.0/4", "dev", "lo"]);
    }

    /// A command that runs `program` inside the namespace (`ip netns exec` execs it, so the
    /// child's pid is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `f` on a thread that has entered this namespace, and returns what it returns.
    /// Sockets made there (std's, and ZeroMQ's, whose I/O threads start from that thread)
    /// live in the namespace: a test talks as a remote host without a helper process.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                    f()
                })
                .join()
                .expect("the thread in the namespace panicked")
        })
    }

    /// The member states (name -> state) of the `troupe serve` at `endpoint`, asked from
    /// inside this namespace; empty while it does not answer.
    pub fn serve_states(&self, endpoint: &str) -> std::collections::BTreeMap<String, String> {
        let reply = self.run(|| {
            troupe::client::call(
                endpoint,
                troupe::protocol::Request::new("nodelist", Default::default()),
                std::time::Duration::from_secs(5),
            )
        });
        let Ok(reply) = reply else {
            return Default::default();
        };
        reply["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| Some((n["name"].as_str()?.into(), n["state"].as_str()?.into())))
            .collect()
    }

    /// The processes running inside.
    pub fn pids(&self) -> Vec<i32> {
        let output = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output();
        output
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Every process in here was started by the test that made the namespace; the guards
        // have normally stopped them already. Whatever is left (a grandchild, a guard that
        // never ran) is killed so the namespace really goes away.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// One host of a [`Segment`]: a namespace whose `eth0` is plugged into the segment's bridge.
pub struct Host {
    pub ns: Netns,
    /// The host's IPv4 address on the segment, e.g. `10.77.3.2`.
    pub address: String,
}

impl Host {
    /// The host's name: its namespace's (`tr-<tag>-<pid>-<n>-h<i>`).
    pub fn hostname(&self) -> &str {
        &self.ns.name
    }

    /// A command that runs `program` on this host: inside its network namespace and in a
    /// UTS namespace of its own named [`Host::hostname`], as on a machine of its own
    /// (namespaces share the machine's hostname otherwise, and mDNS announces
    /// `<hostname>.local.`). `unshare` and `sh` exec, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = self.ns.command("unshare");
        command
            .args(["--uts", "--", "sh", "-c", "hostname \"$0\" && exec \"$@\""])
            .arg(self.hostname())
            .arg(program);
        command
    }
}

/// An Ethernet segment: a bridge (multicast snooping off, so mDNS crosses it) in a namespace
/// of its own, and hosts, each a namespace with `lo` and `eth0` up and an address in a /24
/// that exists only inside them. Hosts can be added while a test runs (a node booting late).
/// Dropping it deletes every namespace it made (hosts first, then the bridge); drop the
/// guards of the processes running inside before it.
pub struct Segment {
    /// Declared before `bridge`: fields drop in order.
    hosts: Vec<Host>,
    bridge: Netns,
    prefix: String,
    /// `tr-<tag>-<pid>-<n>`: every namespace of the segment is named `<base>-br`, `<base>-h1`...
    base: String,
}

impl Segment {
    /// A segment with `hosts` hosts, named `tr-<tag>-<pid>-<n>-h1`, `-h2`, ... on
    /// 10.77.<n>.0/24 (host i has 10.77.<n>.i).
    pub fn new(tag: &str, hosts: usize) -> Segment {
        let n = next();
        let base = format!("tr-{tag}-{}-{n}", std::process::id());
        let subnet = (std::process::id() as usize * 7 + n as usize) % 250 + 1;
        let bridge = Netns::named(format!("{base}-br"));
        bridge.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        bridge.ip(&["link", "set", "br0", "up"]);
        let mut segment = Segment {
            hosts: Vec::new(),
            bridge,
            prefix: format!("10.77.{subnet}"),
            base,
        };
        for _ in 0..hosts {
            segment.add_host();
        }
        segment
    }

    /// Plugs a new host into the bridge and returns it.
    pub fn add_host(&mut self) -> &Host {
        let i = self.hosts.len() + 1;
        assert!(i < 255, "a /24 holds at most 254 hosts");
        let ns = Netns::named(format!("{}-h{i}", self.base));
        let veth = format!("v{i}");
        // Both ends are created inside namespaces of ours: the bridge's end in the bridge
        // namespace, the host's end (eth0) straight into the host.
        self.bridge.ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        self.bridge
            .ip(&["link", "set", &veth, "master", "br0", "up"]);
        let address = format!("{}.{i}", self.prefix);
        ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        // Like a LAN host with a default route: multicast leaves through eth0 even for
        // sockets that join their group on INADDR_ANY.
        ns.ip(&["route", "add", "224.0.0.0/4", "dev", "eth0"]);
        self.hosts.push(Host { ns, address });
        self.hosts.last().expect("just pushed")
    }

    /// Host `i`, counting from 1 like the addresses.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The bridge's namespace (to shape a host's link from the bridge's end, `v<i>`).
    pub fn bridge(&self) -> &Netns {
        &self.bridge
    }

    /// The segment's subnet, e.g. `10.77.3.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}.0/24", self.prefix)
    }
}

fn next() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}
