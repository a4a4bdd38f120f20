//! `signal` and `kill` reach only the named watcher's processes and their descendants (issue
//! 11, hole 2): with `pid` and `childpid`, the agent used to check only that one was the
//! other's child, so any process on the host with a parent could be killed from the network.

use super::{is_ok, HostAgent, Lab};
use crate::support::{alive, wait_for};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

/// `sh` with one `sleep` child, in a process group of its own, killed on drop.
struct Tree {
    shell: Child,
    sleep: u32,
}

impl Tree {
    /// Started by the test itself: nothing the agent supervises.
    fn foreign() -> Tree {
        let shell = Command::new("sh")
            .args(["-c", "sleep 1000 & wait"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let sleep = first_child(shell.id());
        Tree { shell, sleep }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.shell.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.shell.wait();
    }
}

/// The first child of `pid` once it has one.
fn first_child(pid: u32) -> u32 {
    let mut child = None;
    wait_for(&format!("a child of {pid}"), Duration::from_secs(5), || {
        child = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|list| list.split_whitespace().next()?.parse().ok());
        child.is_some()
    });
    child.expect("waited for")
}

#[track_caller]
fn assert_refused_naming(reply: &Result<Value, String>, pid: u32) {
    match reply {
        Ok(v) if v["status"] == "error" => {
            let reason = v["reason"].as_str().unwrap_or_default();
            assert!(reason.contains(&pid.to_string()), "{pid} not in {reason:?}");
        }
        other => panic!("expected a refusal naming {pid}, got {other:?}"),
    }
}

#[test]
#[ignore = "needs root"]
fn signal_and_kill_reach_only_the_watchers_own_processes() {
    let lab = Lab::new("signal");
    let agent = HostAgent::start(
        lab.victim(),
        "",
        "[watcher.tree]\ncmd = \"sh -c 'sleep 1000 & wait'\"\n",
    );
    let mut own = Vec::new();
    wait_for("the watcher's process", Duration::from_secs(10), || {
        let list = lab.attack(&agent.endpoint, "list", json!({"name": "tree"}));
        own = list.map_or(Vec::new(), |l| {
            l["pids"]
                .as_array()
                .map(|pids| pids.iter().filter_map(|p| p.as_u64()).collect())
                .unwrap_or_default()
        });
        !own.is_empty()
    });
    let own_shell = own[0] as u32;
    let own_sleep = first_child(own_shell);
    let foreign = Tree::foreign();
    let foreign_shell = foreign.shell.id();

    // A foreign parent and its child.
    let reply = lab.attack(
        &agent.endpoint,
        "signal",
        json!({"name": "tree", "pid": foreign_shell, "childpid": foreign.sleep, "signum": 9}),
    );
    assert_refused_naming(&reply, foreign_shell);
    // The watcher's own process as the parent of a foreign one.
    let reply = lab.attack(
        &agent.endpoint,
        "signal",
        json!({"name": "tree", "pid": own_shell, "childpid": foreign.sleep, "signum": 9}),
    );
    assert_refused_naming(&reply, foreign.sleep);
    // A foreign pid alone, to signal or to kill.
    for command in ["signal", "kill"] {
        let reply = lab.attack(
            &agent.endpoint,
            command,
            json!({"name": "tree", "pid": foreign_shell, "signum": 9}),
        );
        assert_refused_naming(&reply, foreign_shell);
    }
    assert!(alive(foreign.sleep), "the foreign child was killed");
    assert!(alive(foreign_shell), "the foreign parent was killed");

    // The watcher's own child is still fair game, as in Circus.
    let reply = lab.attack(
        &agent.endpoint,
        "signal",
        json!({"name": "tree", "pid": own_shell, "childpid": own_sleep, "signum": 9}),
    );
    assert!(is_ok(&reply), "{reply:?}");
    wait_for("the watcher's child to die", Duration::from_secs(5), || {
        !alive(own_sleep)
    });
}
