//! `troupe demo`: the zero-setup first run. Starts N agents on 127.0.0.2.. with sample
//! watchers and a controller, shows discovery (range probing on loopback: no multicast, so
//! nothing leaves the machine), a broadcast and a stats line per node, then stops
//! everything on Ctrl-C.

use crate::broadcast::fan_out;
use crate::discovery::{Discovery, Sources};
use crate::membership::{MemberState, MembershipHandle};
use crate::settings::Settings;
use anyhow::Context;
use serde_json::{Map, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use troupe::discovery::parse_targets;
use troupe::protocol::Request;

const WATCHERS: &str = r#"
[watcher.worker]
cmd = "sh"
args = ["-c", "while :; do sleep 1; done"]
numprocesses = 2
graceful_timeout = 2

[watcher.ticker]
cmd = "sh"
args = ["-c", "while :; do echo tick from $TROUPE_WATCHER $TROUPE_WID; sleep 5; done"]
graceful_timeout = 2
"#;

/// The demo's agents, stopped (SIGTERM, then SIGKILL) when dropped.
struct Agents {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the demo with `count` agents from `first` on, until Ctrl-C (or SIGTERM).
pub async fn run(count: u8, first: Ipv4Addr) -> anyhow::Result<()> {
    anyhow::ensure!((1..=50).contains(&count), "--agents must be from 1 to 50");
    anyhow::ensure!(
        first.is_loopback(),
        "the demo runs on loopback addresses only (127.x.y.z)"
    );
    // Ctrl-C is handled from here on: during startup too (the agents and the temp dir go
    // either way), and with no window between the prompt and the handler.
    let mut stop = StopSignals::new()?;
    let agent_bin = std::env::current_exe().context("locating the troupe binary")?;
    let addresses: Vec<Ipv4Addr> = (0..count)
        .map(|i| Ipv4Addr::from(u32::from(first) + u32::from(i)))
        .collect();
    for address in &addresses {
        if std::net::TcpListener::bind((*address, 5555)).is_err() {
            anyhow::bail!("{address}:5555 is in use: stop what runs there or pass --first-address");
        }
    }
    let dir = std::env::temp_dir().join(format!("troupe-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut agents = Agents {
        children: Vec::new(),
        dir: dir.clone(),
    };
    let key_file = cluster_key(&dir)?;
    println!("Starting {count} agents (logs in {}):", dir.display());
    for (i, address) in addresses.iter().enumerate() {
        let name = format!("demo-{}", i + 1);
        let child = start_agent(&agent_bin, &dir, &key_file, &name, *address)?;
        println!("  {name}  tcp://{address}:5555  (pid {})", child.id());
        agents.children.push(child);
    }
    let range = format!("{}-{}", first, addresses.last().copied().unwrap_or(first));
    let shown = tokio::select! {
        shown = show(count, first, &range, &dir, &key_file) => Some(shown?),
        _ = stop.wait() => None,
    };
    if let Some(_controller) = shown {
        stop.wait().await;
    }
    println!("\nStopping...");
    drop(agents);
    println!("All agents stopped.");
    Ok(())
}

/// Discovery, a broadcast and stats, then the prompt; returns what keeps the controller (or
/// discovery) running.
async fn show(
    count: u8,
    first: Ipv4Addr,
    range: &str,
    dir: &Path,
    key_file: &Path,
) -> anyhow::Result<KeepRunning> {
    println!("\nDiscovering by probing {range} (no multicast: nothing leaves this machine)...");
    let (membership, controller) = start_controller(range)?;
    let all_up = |m: &[crate::membership::Member]| {
        m.iter().filter(|m| m.state == MemberState::Alive).count() >= count as usize
    };
    membership.wait_until(Duration::from_secs(15), all_up).await;
    let nodes = membership.members_json();
    println!("{}\n", crate::nodes::table(&nodes));
    anyhow::ensure!(
        all_up(&membership.members()),
        "not every agent answered: see the logs in {}",
        dir.display()
    );

    let targets = membership.alive_targets();
    let status = Request::new("status", Map::new());
    let replies = fan_out(&targets, &status, Duration::from_secs(5), false).await;
    println!(
        "$ troupe status\n{}\n",
        crate::render::render("status", &Map::new(), &replies)
    );

    let stats = Request::new("stats", Map::new());
    let replies = fan_out(&targets, &stats, Duration::from_secs(5), false).await;
    println!("Stats per node:");
    for (node, reply) in &replies {
        println!("  {}", stats_line(node, reply));
    }
    let key = key_file.display();
    let owner_socket = dir.join("demo-1").join("control.sock");
    println!(
        "\nThe demo runs keyed: its agents and controller answer only holders of {key}.\n\
         From another shell, in this directory:\n  \
         TROUPE_KEY_FILE={key} {troupe} status      (or stats, nodes)\n\
         and with the stock Circus clients (.venv-circus/bin/ once scripts/test has run):\n  \
         circusctl --endpoint ipc://{owner} status      (demo-1's owner socket: every command)\n  \
         circus-top --endpoint tcp://{first}:{stats}      (demo-1's circus_bind: read-only, plaintext)\n\
         Ctrl-C stops everything.",
        troupe = this_binary().display(),
        owner = owner_socket.display(),
        stats = troupe::config::DEFAULT_CIRCUS_STATS_PORT,
    );
    Ok(controller)
}

/// How to run this `troupe` again from the working dir: `target/debug/troupe` after `cargo
/// run` in the repository (which puts no `troupe` on the PATH), else its full path.
fn this_binary() -> PathBuf {
    let Ok(exe) = std::env::current_exe() else {
        return PathBuf::from("troupe");
    };
    std::env::current_dir()
        .ok()
        .and_then(|dir| exe.strip_prefix(dir).ok().map(Path::to_path_buf))
        .unwrap_or(exe)
}

/// Runs a controller on 127.0.0.1:5558 when that port is free (so `troupe status` in
/// another shell uses it), else discovery alone.
fn start_controller(range: &str) -> anyhow::Result<(MembershipHandle, KeepRunning)> {
    let probe = parse_targets(range)?;
    let port = troupe::config::controller::DEFAULT_CONTROLLER_PORT;
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        let mut config = troupe::config::controller::ControllerConfig {
            mdns: false,
            probe_interval: Duration::from_secs(2),
            ..Default::default()
        };
        config.serve.bind = "127.0.0.1".into();
        // The dashboard, when its default port is free.
        let http = troupe::config::controller::default_dashboard_address();
        if std::net::TcpListener::bind(http).is_ok() {
            config.serve.http = Some(http);
        }
        let settings = Settings {
            config,
            probe,
            seeds: Default::default(),
            multicast: false,
            expect: None,
        };
        let serving = crate::serve::start(settings)?;
        println!(
            "Controller on {} (events on port 5560).",
            serving.control_endpoint
        );
        match serving.dashboard {
            Some(address) => println!("Dashboard: {}", crate::dashboard::access::url(address)),
            None => println!("Port {} is taken: no dashboard.", http.port()),
        }
        return Ok((serving.membership.clone(), Box::new(serving)));
    }
    println!("Port {port} is taken: running without a controller socket.");
    let sources = Sources {
        cluster: "default".into(),
        multicast: false,
        probe,
        seeds: Default::default(),
        probe_interval: Duration::from_secs(2),
        limits: Default::default(),
        admission: Default::default(),
    };
    let (membership, discovery) = Discovery::start(sources)?;
    Ok((membership, Box::new(discovery)))
}

/// Keeps discovery (and the controller, if any) running until dropped.
type KeepRunning = Box<dyn Send>;

/// `demo-1: 3 processes, cpu 0.2%, rss 5.1 MiB`.
pub fn stats_line(node: &str, reply: &Value) -> String {
    if reply["status"] == "error" {
        return format!("{node}: error: {}", reply["reason"].as_str().unwrap_or("?"));
    }
    let (mut processes, mut cpu, mut mem) = (0, 0.0, 0.0);
    for per_pid in reply["infos"]
        .as_object()
        .into_iter()
        .flat_map(|w| w.values())
    {
        for info in per_pid.as_object().into_iter().flat_map(|p| p.values()) {
            processes += 1;
            cpu += info["cpu"].as_f64().unwrap_or(0.0);
            mem += info["mem"].as_f64().unwrap_or(0.0);
        }
    }
    format!("{node}: {processes} processes, cpu {cpu:.1}%, mem {mem:.2}%")
}

/// SIGINT (Ctrl-C) and SIGTERM, caught from the moment this is made: one arriving before
/// [`StopSignals::wait`] is polled is not lost.
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            int: signal(SignalKind::interrupt()).context("catching SIGINT")?,
            term: signal(SignalKind::terminate()).context("catching SIGTERM")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// The demo's cluster key, `<dir>/cluster.key`, which its agents read and every connection of
/// this process presents: the key given with `--key-file` or `TROUPE_KEY_FILE` if any, else a
/// new one.
fn cluster_key(dir: &Path) -> anyhow::Result<PathBuf> {
    use troupe::cluster_key::{write_new, ClusterKey, Keyring};
    let path = dir.join(troupe::cluster_key::DEFAULT_FILE_NAME);
    let given = troupe::sockets::client_keys().map(|keys| keys.keyring().first().clone());
    let key = match given {
        Some(key) => key,
        None => ClusterKey::generate().context("making the demo's cluster key")?,
    };
    write_new(&path, &key).with_context(|| format!("writing {}", path.display()))?;
    if let Some(keyring) = Keyring::new(vec![key]) {
        troupe::sockets::install_client_keyring(&keyring);
        println!(
            "Cluster key {} (fingerprint {}).",
            path.display(),
            keyring.fingerprint()
        );
    }
    Ok(path)
}

/// An agent on `address`, keyed with `key_file`, with a read-only plaintext `circus_bind` on
/// the same loopback address for circus-top.
fn start_agent(
    bin: &Path,
    dir: &Path,
    key_file: &Path,
    name: &str,
    address: Ipv4Addr,
) -> anyhow::Result<Child> {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[agent]\nname = \"{name}\"\nbind = \"{address}\"\nmdns = false\nstate_dir = \"{}\"\n\
             key_file = \"{}\"\ncircus_bind = \"{address}\"\n{WATCHERS}",
            dir.join(name).display(),
            key_file.display()
        ),
    )?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let mut command = Command::new(bin);
    command
        .arg("agent")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own group: a terminal's Ctrl-C reaches the demo, which stops the agents itself.
        .process_group(0);
    use std::os::unix::process::CommandExt;
    // SAFETY: only prctl runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // If the demo dies without stopping its agents, they stop too.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}
