//! The controller's part of issue 18, the traps a new user fell into in the first hour: the
//! shell's `quit` stopped every agent; a command sent as `troupe serve` started reached
//! nobody and exited 0; "no node matched" where the nodes were of another cluster or nothing
//! was searched; a partial etcd reset answered ok; a `--waiting` start behind a slow stop
//! timed out though it was applied.
//!
//! Everything on loopback: agents with `mdns = false`, every `troupe` with `--no-mdns` and
//! no controller but the one a test starts.

use crate::support::terminal::{troupe_in_terminal, Tmux};
use crate::support::{bin, troupe, unique_loopback, wait_for, Agent, Daemon, Run};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// No controller listens there: commands discover on the spot.
const NO_CONTROLLER: &str = "tcp://127.0.0.1:1";

const SLEEPER: &str = "[watcher.sleeper]\ncmd = \"sleep 1000\"\ngraceful_timeout = 1\n";

/// `troupe ARGS` against the agents at `addresses`, discovered on the spot, from `dir`.
fn one_shot(dir: &Path, addresses: &[&str], args: &[&str]) -> Run {
    let probe = addresses.join(",");
    let state = dir.join("cli-state").display().to_string();
    let mut all = args.to_vec();
    all.extend([
        "--no-mdns",
        "--controller",
        NO_CONTROLLER,
        "--state-dir",
        &state,
    ]);
    if !addresses.is_empty() {
        all.extend(["--probe", &probe]);
    }
    troupe(dir, &all)
}

fn answers(agent: &Agent) -> bool {
    troupe::client::call(
        &agent.endpoint(),
        troupe::protocol::Request::new("numwatchers", Map::new()),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// In a terminal, `quit` leaves the shell and the agents keep running; `quit --node '*'`
/// asks first, listing the nodes, and a "no" leaves them running too.
#[test]
fn the_shells_quit_leaves_the_shell_and_stopping_agents_asks_first() {
    let first = Agent::start_named("fh-quit-a", &unique_loopback(), SLEEPER, "");
    let second = Agent::start_named("fh-quit-b", &unique_loopback(), SLEEPER, "");
    let dir = tempfile::tempdir().unwrap();
    let probe = format!("{},{}", first.address, second.address);
    let state = dir.path().join("state").display().to_string();
    let args = [
        "shell",
        "--no-mdns",
        "--controller",
        NO_CONTROLLER,
        "--probe",
        &probe,
        "--state-dir",
        &state,
    ];
    let tmux = Tmux::start(&troupe_in_terminal(dir.path(), &args, true));
    tmux.wait_for_all("the prompt", &["Type `help`"], Duration::from_secs(20));
    tmux.keys("quit --node '*'");
    tmux.keys("Enter");
    tmux.wait_for_all(
        "the question",
        &[
            "This will stop the agents (and every watcher they run) on 2 nodes: fh-quit-a, fh-quit-b.",
            "Continue? [y/N]",
        ],
        Duration::from_secs(20),
    );
    tmux.keys("n");
    tmux.keys("Enter");
    tmux.wait_for_all(
        "the refusal",
        &["not confirmed: nothing was done"],
        Duration::from_secs(10),
    );
    // The shell exits with its last command's code: one that succeeds, then `quit`.
    tmux.keys("status");
    tmux.keys("Enter");
    tmux.wait_until("the status rows", Duration::from_secs(20), |screen| {
        screen
            .lines()
            .any(|l| l.split_whitespace().eq(["fh-quit-b", "sleeper", "active"]))
    });
    tmux.keys("quit");
    tmux.keys("Enter");
    let screen = tmux.wait_for_all(
        "the shell to exit",
        &["TROUPE-EXIT=0"],
        Duration::from_secs(10),
    );
    for agent in [&first, &second] {
        assert!(answers(agent), "{}\n{screen}", agent.log());
        assert_eq!(agent.pids("sleeper").len(), 1, "{}", agent.log());
    }
}

/// Without a terminal: `quit` needs `--node`; `quit`, `reset` and `reconfigure --reset` on
/// more than one node refuse without `--yes`, naming it; one node is not asked.
#[test]
fn commands_that_stop_agents_or_wipe_data_refuse_without_a_terminal_or_yes() {
    let first = Agent::start_named("fh-yes-a", &unique_loopback(), SLEEPER, "");
    let second = Agent::start_named("fh-yes-b", &unique_loopback(), SLEEPER, "");
    let dir = tempfile::tempdir().unwrap();
    let both = [first.address.as_str(), second.address.as_str()];

    let run = one_shot(dir.path(), &both, &["quit"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("troupe quit --node NAME"), "{run:#?}");
    for args in [
        &["quit", "--node", "*"][..],
        &["reset", "sleeper"],
        &["reconfigure", "--reset"],
    ] {
        let run = one_shot(dir.path(), &both, args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains("2 nodes: fh-yes-a, fh-yes-b")
                && run.stderr.contains("add --yes to go ahead"),
            "{args:?}: {run:#?}"
        );
        assert!(run.stdout.trim().is_empty(), "{args:?}: {run:#?}");
    }
    for agent in [&first, &second] {
        assert!(answers(agent), "{}", agent.log());
        assert_eq!(agent.pids("sleeper").len(), 1, "{}", agent.log());
    }

    // One node named: no question.
    let run = one_shot(dir.path(), &both, &["quit", "--node", "fh-yes-b"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    wait_for("fh-yes-b to stop", Duration::from_secs(10), || {
        !answers(&second)
    });
    assert!(answers(&first));
}

/// A command sent within milliseconds of `troupe serve`'s start waits for serve's first
/// discovery and finds the nodes; serve says at start what it listens on and how it discovers.
#[test]
fn a_command_sent_as_serve_starts_waits_for_its_first_discovery() {
    let first = Agent::start_named("fh-serve-a", &unique_loopback(), SLEEPER, "");
    let second = Agent::start_named("fh-serve-b", &unique_loopback(), SLEEPER, "");
    let dir = tempfile::tempdir().unwrap();
    let address = unique_loopback();
    // A silent address too: the first sweep ends only when its probe times out, as a sweep
    // of a real range does (nothing listens there; the two agents answer at once).
    let silent = unique_loopback();
    let probe = format!("{},{},{silent}", first.address, second.address);
    let mut command = Command::new(bin("troupe"));
    command
        .current_dir(dir.path())
        .args(["serve", "--bind", &address, "--no-mdns", "--probe", &probe])
        .args([
            "--state-dir",
            &dir.path().join("serve").display().to_string(),
        ]);
    let started = Instant::now();
    let mut serve = Daemon::spawn("troupe serve", command, &dir.path().join("serve.log"));
    // At once: ZeroMQ queues the request until serve binds.
    let control = format!("tcp://{address}:5558");
    let mut ctl = Command::new(bin("troupe"));
    ctl.args([
        "ctl",
        &control,
        "status",
        r#"{"node": "*"}"#,
        "--timeout",
        "20",
    ]);
    let sent_after = started.elapsed();
    let run = crate::support::run_command(ctl, Duration::from_secs(30));
    println!("ctl sent {sent_after:?} after serve was spawned");
    serve.assert_running();
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", serve.log());
    let reply: Value = serde_json::from_str(&run.stdout).unwrap();
    let nodes: Vec<&String> = reply["nodes"].as_object().unwrap().keys().collect();
    assert_eq!(nodes, ["fh-serve-a", "fh-serve-b"], "{reply}");
    let log = serve.log();
    assert!(
        log.contains(&format!(
            "troupe serve: cluster 'default'; control tcp://{address}:5558, events \
             tcp://{address}:5560, stats tcp://{address}:5559; discovering by probing {}:5555,{}:5555,{silent}:5555",
            first.address, second.address
        )),
        "{log}"
    );
}

/// "No node matched" only where the `--node` filter removed the nodes found; agents of
/// another cluster, and a search of nothing at all, are said as such, by a broadcast and
/// under `troupe nodes`' empty table.
#[test]
fn a_command_that_reaches_nobody_says_why() {
    let lab = Agent::start_named("fh-lab", &unique_loopback(), SLEEPER, "cluster = \"lab\"");
    let dir = tempfile::tempdir().unwrap();
    let here = [lab.address.as_str()];

    let other_cluster = "no node of cluster 'default' answered, but 1 agent of cluster 'lab' \
                         answered; add --cluster lab or set cluster = \"lab\" in troupe.toml";
    let run = one_shot(dir.path(), &here, &["status"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains(other_cluster), "{run:#?}");
    let run = one_shot(dir.path(), &here, &["nodes"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.starts_with("NAME"), "{run:#?}");
    assert!(run.stderr.contains(other_cluster), "{run:#?}");

    let run = one_shot(
        dir.path(),
        &here,
        &["status", "--cluster", "lab", "--node", "x"],
    );
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr
            .contains("no node matched --node x (1 node found: fh-lab)"),
        "{run:#?}"
    );

    for args in [&["status"][..], &["reconfigure"], &["nodes"]] {
        let run = one_shot(dir.path(), &[], args);
        let code = if args == ["nodes"] { 0 } else { 3 };
        assert_eq!(run.code, Some(code), "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains(
                "nothing was searched: multicast discovery is off (--no-mdns, TROUPE_MDNS=off \
                 or mdns = false in troupe.toml) and no probe range or seed is set"
            ),
            "{args:?}: {run:#?}"
        );
    }
}

/// Resetting one of three etcd members wipes a member that cannot rejoin: refused without
/// `--yes` (no terminal to ask on), naming the operations that fit; `--yes` forces it.
#[test]
fn a_partial_etcd_reset_is_refused_without_yes() {
    let work = tempfile::tempdir().unwrap();
    let agents: Vec<Agent> = ["fh-etcd-1", "fh-etcd-2", "fh-etcd-3"]
        .iter()
        .map(|name| {
            let data = work.path().join(name).join("data");
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("member"), "state").unwrap();
            let watcher = format!(
                "[watcher.etcd]\ncmd = \"sleep 1000\"\nprofile = \"etcd\"\n\
                 data_dir = [\"{}\"]\ngraceful_timeout = 1\n",
                data.display()
            );
            Agent::start_named(name, &unique_loopback(), &watcher, "")
        })
        .collect();
    let addresses: Vec<&str> = agents.iter().map(|a| a.address.as_str()).collect();
    let marker = work.path().join("fh-etcd-1/data/member");

    let run = one_shot(
        work.path(),
        &addresses,
        &["reset", "etcd", "--node", "fh-etcd-1"],
    );
    assert_eq!(run.code, Some(2), "{run:#?}");
    for needle in [
        "'etcd' (etcd profile) has cluster members on fh-etcd-1, fh-etcd-2, fh-etcd-3; \
         resetting only fh-etcd-1 wipes members that cannot rejoin",
        "troupe reconfigure --reset",
        "etcdctl member remove",
        "add --yes to go ahead",
    ] {
        assert!(run.stderr.contains(needle), "{needle}: {run:#?}");
    }
    assert!(marker.exists(), "nothing was wiped");

    let run = one_shot(
        work.path(),
        &addresses,
        &["reset", "etcd", "--node", "fh-etcd-1", "--yes"],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(!marker.exists(), "--yes forces the reset");
    assert!(work.path().join("fh-etcd-2/data/member").exists());
}

/// A watcher that ignores SIGTERM takes its whole graceful_timeout to stop. A `--waiting`
/// stop cut short by `--timeout` says the command may still be applied and how long the
/// stop can take; a `start --waiting` queued behind that stop waits it out (the default 5 s
/// timeout alone ran out first, and the start happened later anyway).
#[test]
fn a_waiting_command_waits_out_a_slow_graceful_stop_and_a_timeout_says_it_may_still_apply() {
    let slow = "[watcher.slow]\ncmd = \"sh\"\nargs = [\"-c\", \"trap '' TERM; sleep 1000\"]\n\
                graceful_timeout = 7\n";
    let agent = Agent::start_named("fh-slow", &unique_loopback(), slow, "");
    wait_for("the slow watcher", Duration::from_secs(10), || {
        agent.pids("slow").len() == 1
    });
    let dir = tempfile::tempdir().unwrap();
    let here = [agent.address.as_str()];

    let run = one_shot(
        dir.path(),
        &here,
        &["stop", "slow", "--waiting", "--timeout", "1s"],
    );
    assert_eq!(run.code, Some(1), "{run:#?}");
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains(
            "no reply from fh-slow within 1s; the command may still be applied (the watcher's \
             graceful stop can take up to 7s): check with `troupe status`"
        ),
        "{run:#?}"
    );

    let run = one_shot(dir.path(), &here, &["start", "slow", "--waiting"]);
    assert_eq!(run.code, Some(0), "{run:#?}\n{}", agent.log());
    assert_eq!(agent.pids("slow").len(), 1);
    assert_eq!(
        agent.call("status", json!({"name": "slow"}))["status"],
        "active"
    );
}
