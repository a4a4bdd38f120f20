//! Test support: start real agents on their own loopback addresses, run the stock circusctl,
//! wait for conditions with deadlines, and clean up every process even when a test fails.

#![allow(dead_code)] // each test module uses a different part of the support kit

pub mod garbage;
pub mod netns;
pub mod terminal;

use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use troupe::protocol::Request;

/// Where cargo put the workspace's binaries (next to this test binary's `deps/`), or
/// `$TROUPE_BIN_DIR` (a benchmark's release build).
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("TROUPE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("test binary path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target/<profile> dir")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build --workspace`) first",
        path.display()
    );
    path
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh loopback address per agent (127.77.x.y), so agents use Circus's default ports
/// without colliding with each other or with anything on 127.0.0.1.
pub fn unique_loopback() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) + (std::process::id() % 50) * 1000;
    format!("127.77.{}.{}", (n / 250) % 250, n % 250 + 2)
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A running `troupe-agent` and its scratch dir. Dropping it stops the agent (SIGTERM, then
/// SIGKILL) and prints its log if the test is failing.
pub struct Agent {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub address: String,
    pub config_path: PathBuf,
}

impl Agent {
    /// Starts an agent on a fresh loopback address with `watchers` (TOML `[watcher.X]`
    /// sections) and `agent_extra` lines added to `[agent]`, and waits until it answers.
    pub fn start_with(watchers: &str, agent_extra: &str) -> Agent {
        Agent::start_named("test-agent", &unique_loopback(), watchers, agent_extra)
    }

    /// Like [`Agent::start_with`], with the node's name and the address it binds (default
    /// ports 5555-5557 there). mDNS stays off: agents outside a namespace must not multicast.
    pub fn start_named(name: &str, address: &str, watchers: &str, agent_extra: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let address = address.to_string();
        let config_path = dir.path().join("troupe-agent.toml");
        let config = format!(
            "[agent]\nname = \"{name}\"\nbind = \"{address}\"\nstate_dir = \"{state}\"\nmdns = false\n{agent_extra}\n\n{watchers}\n",
            state = dir.path().join("state").display(),
        );
        std::fs::write(&config_path, config).expect("write config");
        let mut agent = Agent {
            child: None,
            dir,
            address,
            config_path,
        };
        agent.spawn();
        agent
    }

    /// An agent run with `--config config_path` (a file the test wrote in `dir`, binding
    /// `address` with the default ports), once it answers.
    pub fn start_from_file(dir: tempfile::TempDir, address: &str, config_path: PathBuf) -> Agent {
        let mut agent = Agent {
            child: None,
            dir,
            address: address.to_string(),
            config_path,
        };
        agent.spawn();
        agent
    }

    pub fn start(watchers: &str) -> Agent {
        Agent::start_with(watchers, "")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("agent log");
        let child = Command::new(bin("troupe-agent"))
            .arg("--config")
            .arg(&self.config_path)
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn troupe-agent");
        self.child = Some(child);
        let endpoint = self.endpoint();
        wait_for("the agent to answer", Duration::from_secs(10), || {
            troupe::client::call(
                &endpoint,
                Request::new("numwatchers", Map::new()),
                Duration::from_millis(300),
            )
            .is_ok()
        });
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("agent running")
    }

    pub fn endpoint(&self) -> String {
        format!("tcp://{}:5555", self.address)
    }

    /// `ipc://<state_dir>/control.sock`: the owner-only socket, the one that accepts `add` and
    /// `set cmd` (and the rest of what brings code) without `allow_remote_exec`.
    pub fn ipc_endpoint(&self) -> String {
        format!(
            "ipc://{}",
            self.dir.path().join("state/control.sock").display()
        )
    }

    pub fn pubsub_endpoint(&self) -> String {
        format!("tcp://{}:5556", self.address)
    }

    /// One request through troupe's own client over TCP; panics if there is no reply.
    pub fn call(&self, command: &str, properties: Value) -> Value {
        self.call_at(&self.endpoint(), command, properties)
    }

    /// One request over the owner-only Unix socket, as the node's owner sends `add`.
    pub fn call_as_owner(&self, command: &str, properties: Value) -> Value {
        self.call_at(&self.ipc_endpoint(), command, properties)
    }

    fn call_at(&self, endpoint: &str, command: &str, properties: Value) -> Value {
        let properties = match properties {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => panic!("properties must be an object, got {other}"),
        };
        troupe::client::call(
            endpoint,
            Request::new(command, properties),
            Duration::from_secs(15),
        )
        .unwrap_or_else(|e| panic!("{command}: {e}\n--- agent log ---\n{}", self.log()))
    }

    /// The pids of a watcher, via `list`.
    pub fn pids(&self, watcher: &str) -> Vec<u32> {
        let reply = self.call("list", serde_json::json!({ "name": watcher }));
        reply["pids"]
            .as_array()
            .unwrap_or_else(|| panic!("list {watcher}: {reply}"))
            .iter()
            .map(|p| p.as_u64().expect("pid") as u32)
            .collect()
    }

    /// The pids of `watcher` once it lists `count` live processes: the agent answers while its
    /// config is still being applied, so a test must not read the pids just after start.
    #[track_caller]
    pub fn running_pids(&self, watcher: &str, count: usize) -> Vec<u32> {
        let mut pids = Vec::new();
        wait_for(
            &format!("{count} live processes in '{watcher}'"),
            Duration::from_secs(15),
            || {
                pids = self.pids(watcher);
                pids.len() == count && pids.iter().all(|p| alive(*p))
            },
        );
        pids
    }

    /// Sends SIGTERM and waits for the agent to exit; returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent did not exit within 20 s of SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (no goodbye of any kind), and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("agent running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the agent again after [`Agent::stop`] or [`Agent::kill`]: same config, same
    /// state dir (so the same node id), same log file (appended).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the agent is still running");
        self.spawn();
    }

    /// Waits for the agent to exit on its own (after `quit`).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent did not exit within {timeout:?}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(
                &mut child,
                nix::sys::signal::Signal::SIGTERM,
                Duration::from_secs(10),
            );
        }
        if std::thread::panicking() {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "--- agent {} log ---\n{}", self.address, self.log());
        }
    }
}

/// Any long-running process a test starts besides a loopback [`Agent`] (a controller, a
/// stock circusd, an agent inside a namespace). Its stdout and stderr are appended to a log
/// file; dropping it stops it (SIGTERM, SIGKILL after 10 s) and prints the log if the test is
/// failing.
pub struct Daemon {
    what: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Spawns `command`, `what` naming it in messages.
    pub fn spawn(what: &str, mut command: Command, log: &Path) -> Daemon {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what} ({command:?}): {e}"));
        Daemon {
            what: what.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has not exited yet (a zombie counts as exited: it is reaped here).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Panics with the log if the process has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if !self.running() {
            panic!("{} exited early\n--- log ---\n{}", self.what, self.log());
        }
    }

    /// SIGTERM, then waits up to 20 s for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within 20 s of SIGTERM\n{}",
                    self.what,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(
                &mut child,
                nix::sys::signal::Signal::SIGTERM,
                Duration::from_secs(10),
            );
        }
        if std::thread::panicking() {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "--- {} log ---\n{}", self.what, self.log());
        }
    }
}

/// Sends `signal`, waits up to `grace` for the child to exit, then SIGKILLs and reaps it:
/// what every guard does when a test ends, passing or failing.
pub fn stop_child(child: &mut Child, signal: nix::sys::signal::Signal, grace: Duration) {
    self::signal(child.id(), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Exit code and output of one finished command.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `troupe shell ARGS` fed `script` on its standard input, run in `dir` as [`isolated`] does.
pub fn shell(dir: &std::path::Path, args: &[&str], script: &str) -> Run {
    let mut child = isolated(Command::new(bin("troupe")), dir)
        .arg("shell")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn troupe shell");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `command` to completion, killing it (and failing) if it takes longer than `timeout`.
pub fn run_command(mut command: Command, timeout: Duration) -> Run {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    // Drain both pipes while waiting, so a chatty command cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            );
            panic!(
                "{command:?} still running after {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
    }
}

/// The venv with the stock Circus 0.19 clients (`scripts/test` creates it).
pub fn circus_venv() -> PathBuf {
    let venv = std::env::var_os("TROUPE_CIRCUS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-circus"));
    assert!(
        venv.join("bin/circusctl").exists(),
        "stock circusctl not found in {}: run scripts/test, which installs circus==0.19.0 there",
        venv.display()
    );
    venv
}

/// Result of one circusctl run.
#[derive(Debug)]
pub struct CtlOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the stock `circusctl --endpoint ENDPOINT ARGS...` as a user would.
pub fn circusctl(endpoint: &str, args: &[&str]) -> CtlOutput {
    let output: Output = Command::new(circus_venv().join("bin/circusctl"))
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--timeout")
        .arg("10")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run circusctl");
    CtlOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    }
}

/// A field of `/proc/<pid>/status` ("SigBlk", "VmRSS", ...), its value as text.
#[track_caller]
pub fn proc_status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A size field of `/proc/<pid>/status` ("VmRSS", "RssAnon") in KiB.
#[track_caller]
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let value = proc_status(pid, field);
    value
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{field} of {pid} is not a size in kB: {value:?}"))
}

/// Whether `pid` is alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Zombie children of `pid`.
pub fn zombie_children(pid: u32) -> Vec<u32> {
    let mut zombies = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return zombies;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str()) {
            zombies.push(child);
        }
    }
    zombies
}

/// `command` (a `troupe` invocation, possibly behind `ip netns exec`) isolated from the
/// caller's environment: no TROUPE_* variables, no troupe.toml in the working dir, no user
/// config, and its state (the roster of nodes seen, remembered ranges) in `dir/state`: as
/// root it was /var/lib/troupe, shared by every test and every run, and a node another test
/// left there on the same address was listed `down`.
pub fn isolated(mut command: Command, dir: &Path) -> Command {
    command
        .current_dir(dir)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("TROUPE_STATE_DIR", dir.join("state"));
    for var in [
        "TROUPE_CONTROLLER",
        "TROUPE_PROBE",
        "TROUPE_MDNS",
        "TROUPE_CONFIG",
        "TROUPE_LOG",
    ] {
        command.env_remove(var);
    }
    command
}

/// `troupe ARGS...` in the root namespace, run from `dir`, isolated, killed after 30 s.
pub fn troupe(dir: &Path, args: &[&str]) -> Run {
    let mut command = isolated(Command::new(bin("troupe")), dir);
    command.args(args);
    run_command(command, Duration::from_secs(30))
}
