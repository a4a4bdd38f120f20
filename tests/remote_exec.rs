//! `add` and `set cmd` bring a program into the agent: refused over TCP, from any address,
//! unless `allow_remote_exec = true`, and accepted on the owner-only Unix socket. The remote
//! peer is real: a client in a network namespace connecting to the namespace's own non-loopback
//! address.

use crate::support::netns::Netns;
use crate::support::{bin, wait_for};
use std::process::{Child, Stdio};
use std::time::Duration;

struct AgentInNetns {
    child: Child,
    dir: tempfile::TempDir,
}

impl AgentInNetns {
    fn owner_endpoint(&self) -> String {
        format!(
            "ipc://{}",
            self.dir.path().join("state/control.sock").display()
        )
    }
}

impl Drop for AgentInNetns {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn start_agent(ns: &Netns, allow_remote_exec: bool) -> AgentInNetns {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nbind = \"0.0.0.0\"\nmdns = false\nstate_dir = \"{}\"\nallow_remote_exec = {allow_remote_exec}\n\n[watcher.w]\ncmd = \"sleep 1000\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let child = ns
        .command(bin("troupe-agent"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = AgentInNetns { child, dir };
    wait_for(
        "the agent in the namespace",
        Duration::from_secs(10),
        || ctl(ns, "tcp://10.99.0.1:5555", "numwatchers", "{}").0 == 0,
    );
    agent
}

/// `troupe ctl` inside the namespace: (exit code, stdout).
fn ctl(ns: &Netns, endpoint: &str, command: &str, properties: &str) -> (i32, String) {
    let output = ns
        .command(bin("troupe"))
        .args(["ctl", endpoint, command, properties, "--timeout", "2"])
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

#[test]
#[ignore = "needs root"]
fn add_and_set_cmd_from_a_remote_peer_are_refused_by_default() {
    let ns = Netns::new("rexec");
    ns.add_local_address("10.99.0.1/24");
    let agent = start_agent(&ns, false);
    let remote = "tcp://10.99.0.1:5555";
    let (code, out) = ctl(&ns, remote, "add", r#"{"name": "evil", "cmd": "sleep 1"}"#);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("allow_remote_exec"), "{out}");
    let (code, out) = ctl(
        &ns,
        remote,
        "set",
        r#"{"name": "w", "options": {"cmd": "sleep 2"}}"#,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("allow_remote_exec"), "{out}");
    // Harmless options and read commands are fine from anywhere.
    let (code, out) = ctl(
        &ns,
        remote,
        "set",
        r#"{"name": "w", "options": {"numprocesses": 2}}"#,
    );
    assert_eq!(code, 0, "{out}");
    // Loopback TCP is no different: other local users connect from there too.
    let (code, out) = ctl(
        &ns,
        "tcp://127.0.0.1:5555",
        "add",
        r#"{"name": "ok", "cmd": "sleep 1"}"#,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("allow_remote_exec"), "{out}");
    // The owner-only socket accepts them.
    let owner = agent.owner_endpoint();
    let (code, out) = ctl(&ns, &owner, "add", r#"{"name": "ok", "cmd": "sleep 1"}"#);
    assert_eq!(code, 0, "{out}");
    let (code, out) = ctl(
        &ns,
        &owner,
        "set",
        r#"{"name": "w", "options": {"cmd": "sleep 2"}}"#,
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
#[ignore = "needs root"]
fn allow_remote_exec_lets_a_remote_peer_add() {
    let ns = Netns::new("rexec");
    ns.add_local_address("10.99.0.1/24");
    let _agent = start_agent(&ns, true);
    let (code, out) = ctl(
        &ns,
        "tcp://10.99.0.1:5555",
        "add",
        r#"{"name": "x", "cmd": "sleep 1"}"#,
    );
    assert_eq!(code, 0, "{out}");
}
