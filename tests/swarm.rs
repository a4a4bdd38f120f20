//! The swarm simulator (`troupe-swarm`, issue 15) under a real `troupe serve`, in a namespace
//! of the test's own (a thousand loopback addresses, and serve probing them): the simulated
//! members all converge to `alive`, and those that leave go `down` while the rest stay alive.

use crate::support::netns::Netns;
use crate::support::{bin, isolated, wait_for, Daemon};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The simulated members. `troupe::bounds::MAX_MEMBERS` must hold them all.
const MEMBERS: u32 = 1000;
/// Leaves a second once churn starts (no joins): a few dozen in the second it runs.
const LEAVE_RATE: &str = "40";
/// At least this many leave before churn is stopped.
const LEAVES: usize = 20;

fn count(states: &BTreeMap<String, String>, state: &str) -> usize {
    states.values().filter(|s| *s == state).count()
}

/// The names in the swarm's `leave` lines so far (its log holds stdout and stderr).
fn leaves(swarm: &Daemon) -> BTreeSet<String> {
    swarm
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["event"] == "leave")
        .filter_map(|event| Some(event["name"].as_str()?.to_string()))
        .collect()
}

#[test]
#[ignore = "needs root"]
fn a_thousand_simulated_members_converge_to_alive_and_those_that_leave_go_down() {
    assert!(
        troupe::bounds::MAX_MEMBERS >= MEMBERS as usize,
        "MAX_MEMBERS ({}) is below the {MEMBERS} members of this test",
        troupe::bounds::MAX_MEMBERS
    );
    let ns = Netns::new("swarm");
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut swarm, range) = start_swarm(&ns, dir.path(), MEMBERS, &["--leave-rate", LEAVE_RATE]);

    let endpoint = "tcp://127.0.0.1:5558";
    let mut serve = isolated(ns.command(bin("troupe")), dir.path());
    serve
        .arg("serve")
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    serve.args(["--bind", "127.0.0.1", "--no-mdns", "--probe", &range]);
    let mut serve = Daemon::spawn("troupe serve", serve, &dir.path().join("serve.log"));

    settle(
        &format!("{MEMBERS} simulated members alive"),
        Duration::from_secs(120),
        || {
            serve.assert_running();
            let now = ns.serve_states(endpoint);
            let alive = count(&now, "alive");
            (alive == MEMBERS as usize).then_some(()).ok_or_else(|| {
                let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
                for state in now.values() {
                    *tally.entry(state).or_default() += 1;
                }
                format!("{alive} alive; members by state {tally:?}")
            })
        },
    );

    // Leaves: SIGUSR1 starts churn (leaves only), and stops it once enough have left.
    let usr1 = |daemon: &Daemon| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.pid() as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .expect("SIGUSR1 to the swarm")
    };
    usr1(&swarm);
    wait_for(
        &format!("{LEAVES} simulated leaves"),
        Duration::from_secs(30),
        || leaves(&swarm).len() >= LEAVES,
    );
    usr1(&swarm);
    wait_for("churn stopped", Duration::from_secs(10), || {
        swarm.log().contains(r#""event":"churn_stopped""#)
    });
    let left = leaves(&swarm);
    settle(
        &format!(
            "the {} members that left down, the others alive",
            left.len()
        ),
        Duration::from_secs(30),
        || {
            let now = ns.serve_states(endpoint);
            let wrong: Vec<String> = now
                .iter()
                .filter(|(name, state)| {
                    let wanted = if left.contains(*name) {
                        "down"
                    } else {
                        "alive"
                    };
                    *state != wanted
                })
                .map(|(name, state)| format!("{name}: {state}"))
                .collect();
            if now.len() == MEMBERS as usize && wrong.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} members listed; not as expected: {wrong:?}",
                    now.len()
                ))
            }
        },
    );
    assert_eq!(count(&ns.serve_states(endpoint), "down"), left.len());
    serve.assert_running();
    swarm.assert_running();
}

/// Starts `agents` simulated agents in `ns` (churn waits for SIGUSR1) and returns the swarm
/// and the range its ready line says to probe.
fn start_swarm(ns: &Netns, dir: &std::path::Path, agents: u32, extra: &[&str]) -> (Daemon, String) {
    let mut command = ns.command(bin("troupe-swarm"));
    command.args(["--agents", &agents.to_string()]).args(extra);
    command.args(["--churn-after", "signal", "--report-every", "1h"]);
    let mut swarm = Daemon::spawn("troupe-swarm", command, &dir.join("swarm.log"));
    wait_for("the swarm's ready line", Duration::from_secs(60), || {
        swarm.assert_running();
        swarm.log().contains(r#""event":"ready""#)
    });
    let range = swarm
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["event"] == "ready")
        .and_then(|ready| Some(ready["probe"].as_str()?.to_string()))
        .expect("a ready line with the range to probe");
    (swarm, range)
}

/// A serve that runs out of file descriptors (a hard limit of 300 that it may not raise, 150
/// members to hold) says so, once a minute rather than at every failed connection, naming
/// the limit and what to do; and it keeps running and answering its clients.
#[test]
#[ignore = "needs root"]
fn a_serve_out_of_files_says_so_once_and_keeps_answering() {
    let ns = Netns::new("swarm-nofile");
    let dir = tempfile::tempdir().expect("tempdir");
    let (swarm, range) = start_swarm(&ns, dir.path(), 150, &[]);
    let mut serve = isolated(ns.command("prlimit"), dir.path());
    serve.args([
        "--nofile=300:300",
        "setpriv",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]);
    serve.arg(bin("troupe")).arg("serve").arg("--state-dir");
    serve.arg(dir.path().join("state"));
    serve.args(["--bind", "127.0.0.1", "--no-mdns", "--probe", &range]);
    let mut serve = Daemon::spawn("troupe serve", serve, &dir.path().join("serve.log"));
    let warning = "cannot open a socket: Too many open files";
    wait_for(
        "serve's warning that it ran out of files",
        Duration::from_secs(60),
        || {
            serve.assert_running();
            serve.log().contains(warning)
        },
    );
    let log = serve.log();
    assert!(
        log.contains("files open of 300 allowed") && log.contains("raise `ulimit -n`"),
        "{log}"
    );
    // How many are open is told even then (counting them needs a descriptor too).
    assert!(!log.contains("(? files open"), "{log}");
    assert!(log.contains("the last 64 kept for clients"), "{log}");
    // Members come and go as descriptors free up; serve answers all the while: its last
    // descriptors are its clients' (libzmq would otherwise retry its accept until a member's
    // connection took the next one freed).
    std::thread::sleep(Duration::from_secs(5));
    for _ in 0..10 {
        let reply = ns.run(|| {
            troupe::client::call(
                "tcp://127.0.0.1:5558",
                troupe::protocol::Request::new("nodelist", Default::default()),
                Duration::from_secs(5),
            )
        });
        let states = reply.unwrap_or_else(|e| panic!("serve's nodelist under 300 files: {e}"));
        let nodes = states["nodes"].as_array().cloned().unwrap_or_default();
        let alive = nodes.iter().filter(|node| node["state"] == "alive").count();
        assert!(!nodes.is_empty() && alive < 150, "{states}");
        // Its members' `down` is its own doing, and the reply says so.
        let warning = states["warning"].as_str().unwrap_or_default();
        assert!(
            warning.starts_with("out of file descriptors") && warning.contains("of 300 allowed"),
            "{states}"
        );
    }
    // And the CLI tells its user, once, on stderr.
    let mut nodes = isolated(ns.command(bin("troupe")), dir.path());
    let nodes = nodes
        .args(["nodes", "--controller", "tcp://127.0.0.1:5558"])
        .output()
        .expect("troupe nodes");
    let stderr = String::from_utf8_lossy(&nodes.stderr);
    let said = "troupe: the controller at tcp://127.0.0.1:5558 was out of file descriptors";
    assert_eq!(stderr.matches(said).count(), 1, "{stderr}");
    assert!(stderr.contains("raise its open-files limit"), "{stderr}");
    assert_eq!(serve.log().matches(warning).count(), 1, "{}", serve.log());
    serve.assert_running();
    drop(swarm);
}

/// Polls `check` every 200 ms until it is Ok, panicking after `timeout` with what it said last.
fn settle(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
