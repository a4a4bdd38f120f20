//! The broadcast CLI for real: `troupe <circus command>` on five loopback agents, discovered on
//! the spot (`--probe`) or through a running `troupe serve`; `--node` selections, `--json`, the
//! documented exit codes, a SIGSTOPped node costing only its own `--timeout`, the stock
//! circusctl against the controller's cluster view, and `troupe demo` started and stopped
//! with Ctrl-C.
//!
//! Everything stays on loopback: agents run with `mdns = false`, every `troupe` with
//! `--no-mdns` and an explicit `--controller` (the demo binds 127.0.0.1:5558 when it is free,
//! and a broadcast without `--controller` would go through it).

use crate::support::terminal::{troupe_in_terminal, Tmux};
use crate::support::{
    alive, bin, circusctl, troupe, unique_loopback, wait_for, Agent, Daemon, Run,
};
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// No controller listens there (port 1 on loopback): a broadcast with it discovers on the spot.
const NO_CONTROLLER: &str = "tcp://127.0.0.1:1";

/// The watcher every agent of the cluster runs.
const WATCHER: &str = "sleeper";

/// The nodes of the cluster, sorted (the order the table prints them in).
const NODES: [&str; 5] = ["bc-db-1", "bc-db-2", "bc-web-1", "bc-web-2", "bc-web-3"];

// ----------------------------------------------------------------------------------------------
// Helpers

/// The whitespace-separated cells of every table row (the header excluded).
fn rows(run: &Run) -> Vec<Vec<String>> {
    run.stdout
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The header's cells.
fn header(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The rows as expected: one per node, each `[node, cells...]`.
fn per_node(nodes: &[&str], cells: &[&str]) -> Vec<Vec<String>> {
    nodes
        .iter()
        .map(|node| {
            std::iter::once(node.to_string())
                .chain(cells.iter().map(|c| c.to_string()))
                .collect()
        })
        .collect()
}

/// The JSON object `--json` printed.
#[track_caller]
fn stdout_object(run: &Run) -> serde_json::Map<String, Value> {
    match serde_json::from_str::<Value>(&run.stdout) {
        Ok(Value::Object(map)) => map,
        _ => panic!("--json did not print one JSON object: {run:#?}"),
    }
}

/// Five agents on their own loopback addresses, each with `sleep 1000` as [`WATCHER`].
struct Cluster {
    agents: Vec<Agent>,
    /// Scratch dir: the working dir and state dirs of the `troupe` runs.
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let watchers = format!("[watcher.{WATCHER}]\ncmd = \"sleep 1000\"\ngraceful_timeout = 1\n");
        let agents: Vec<Agent> = NODES
            .iter()
            .map(|name| Agent::start_named(name, &unique_loopback(), &watchers, ""))
            .collect();
        for agent in &agents {
            wait_for("the watcher's process", Duration::from_secs(10), || {
                agent.pids(WATCHER).len() == 1
            });
        }
        Cluster {
            agents,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn agent(&self, name: &str) -> &Agent {
        let i = NODES.iter().position(|n| *n == name).expect("a node name");
        &self.agents[i]
    }

    /// The five addresses as one comma-separated `--probe` list.
    fn probe(&self) -> String {
        self.agents
            .iter()
            .map(|a| a.address.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `troupe ARGS... --no-mdns --probe <the five> --state-dir <tmp> --controller <none>`:
    /// a one-shot broadcast, discovering by probing the five addresses.
    fn one_shot(&self, args: &[&str]) -> Run {
        let (probe, state) = (self.probe(), self.path("cli-state"));
        let mut all = args.to_vec();
        all.extend([
            "--no-mdns",
            "--probe",
            &probe,
            "--state-dir",
            &state,
            "--controller",
            NO_CONTROLLER,
        ]);
        troupe(self.dir.path(), &all)
    }

    /// How many processes `node`'s watcher has, asked of the agent directly.
    fn count(&self, node: &str) -> usize {
        self.agent(node).pids(WATCHER).len()
    }

    #[track_caller]
    fn assert_counts(&self, expected: &[(&str, usize)], what: &str) {
        let actual: Vec<(&str, usize)> = expected
            .iter()
            .map(|(node, _)| (*node, self.count(node)))
            .collect();
        assert_eq!(actual, expected, "{what}");
    }
}

/// Sends `signal` to `pid`, panicking if that fails.
fn send(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// SIGCONTs a SIGSTOPped process when dropped, so its own guard can stop it afterwards.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        send(pid, nix::sys::signal::Signal::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

// ----------------------------------------------------------------------------------------------
// One-shot broadcasts

/// Status, stop, start and incr on all five nodes, each node's row checked against the real
/// state of its agent; `--node` by names and by glob; `--json`; exit codes 1 and 3.
#[test]
fn one_shot_broadcasts_reach_every_node_and_report_each() {
    let cluster = Cluster::start();

    // status: a row per node and watcher.
    let run = cluster.one_shot(&["status"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        header(&run),
        ["NODE", "WATCHER", "STATUS"],
        "{}",
        run.stdout
    );
    assert_eq!(
        rows(&run),
        per_node(&NODES, &[WATCHER, "active"]),
        "{}",
        run.stdout
    );

    // stop --waiting: every node says ok, and every watcher really has no process left.
    let run = cluster.one_shot(&["stop", WATCHER, "--waiting"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(header(&run), ["NODE", "RESULT"], "{}", run.stdout);
    assert_eq!(rows(&run), per_node(&NODES, &["ok"]), "{}", run.stdout);
    cluster.assert_counts(&NODES.map(|n| (n, 0)), "stopped everywhere");
    let run = cluster.one_shot(&["status", WATCHER]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(header(&run), ["NODE", "STATUS"], "{}", run.stdout);
    assert_eq!(rows(&run), per_node(&NODES, &["stopped"]), "{}", run.stdout);

    // start --waiting.
    let run = cluster.one_shot(&["start", WATCHER, "--waiting"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(rows(&run), per_node(&NODES, &["ok"]), "{}", run.stdout);
    cluster.assert_counts(&NODES.map(|n| (n, 1)), "started everywhere");

    // incr 2 --waiting: the new count per node, and three processes each.
    let run = cluster.one_shot(&["incr", WATCHER, "2", "--waiting"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(header(&run), ["NODE", "COUNT"], "{}", run.stdout);
    assert_eq!(rows(&run), per_node(&NODES, &["3"]), "{}", run.stdout);
    cluster.assert_counts(&NODES.map(|n| (n, 3)), "incremented everywhere");

    // --node by names: only those two answer, and only they change.
    let run = cluster.one_shot(&["decr", WATCHER, "--waiting", "--node", "bc-db-2,bc-web-1"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        rows(&run),
        per_node(&["bc-db-2", "bc-web-1"], &["2"]),
        "{}",
        run.stdout
    );
    cluster.assert_counts(
        &[
            ("bc-db-1", 3),
            ("bc-db-2", 2),
            ("bc-web-1", 2),
            ("bc-web-2", 3),
            ("bc-web-3", 3),
        ],
        "decremented on the two named nodes only",
    );

    // --node by glob.
    let run = cluster.one_shot(&["stop", WATCHER, "--waiting", "--node", "bc-web-*"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        rows(&run),
        per_node(&["bc-web-1", "bc-web-2", "bc-web-3"], &["ok"]),
        "{}",
        run.stdout
    );
    cluster.assert_counts(
        &[
            ("bc-db-1", 3),
            ("bc-db-2", 2),
            ("bc-web-1", 0),
            ("bc-web-2", 0),
            ("bc-web-3", 0),
        ],
        "stopped on the web nodes only",
    );
    let run = cluster.one_shot(&["status", WATCHER, "--node", "bc-db-*"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        rows(&run),
        per_node(&["bc-db-1", "bc-db-2"], &["active"]),
        "{}",
        run.stdout
    );

    // --json: one object keyed by node, each value that node's own reply.
    let run = cluster.one_shot(&["list", WATCHER, "--json"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let replies = stdout_object(&run);
    assert_eq!(
        replies.keys().collect::<Vec<_>>(),
        NODES.iter().collect::<Vec<_>>(),
        "{}",
        run.stdout
    );
    for node in NODES {
        let reply = &replies[node];
        assert_eq!(reply["status"], "ok", "{node}: {reply}");
        let mut listed: Vec<u32> = reply["pids"]
            .as_array()
            .unwrap_or_else(|| panic!("{node}: {reply}"))
            .iter()
            .map(|p| p.as_u64().expect("a pid") as u32)
            .collect();
        let mut real = cluster.agent(node).pids(WATCHER);
        listed.sort_unstable();
        real.sort_unstable();
        assert_eq!(listed, real, "{node}: {reply}");
    }
    let run = cluster.one_shot(&["numprocesses", "--json", "--node", "bc-db-1"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let replies = stdout_object(&run);
    assert_eq!(replies.len(), 1, "{}", run.stdout);
    assert_eq!(replies["bc-db-1"]["numprocesses"], 3, "{}", run.stdout);

    // A command every node refuses: an error row per node, exit 1.
    let run = cluster.one_shot(&["status", "nosuchwatcher"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let out = rows(&run);
    assert_eq!(out.len(), NODES.len(), "{}", run.stdout);
    for (row, node) in out.iter().zip(NODES) {
        assert_eq!(row[0], node, "{}", run.stdout);
        assert_eq!(row[1], "error:", "{}", run.stdout);
    }

    // Nothing matched: exit 3, nothing on stdout, the selection named on stderr.
    let run = cluster.one_shot(&["status", "--node", "nope"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert_eq!(run.stdout.trim(), "", "{run:#?}");
    assert!(
        run.stderr.contains("no node matched --node nope"),
        "{run:#?}"
    );
}

/// Usage errors exit 2 and say what is wrong, before any discovery.
#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state").display().to_string();
    let common = [
        "--no-mdns",
        "--probe",
        "127.0.0.1:1",
        "--state-dir",
        &state,
        "--controller",
        NO_CONTROLLER,
    ];
    for (args, says) in [
        (&["incr"][..], "incr needs a watcher name"),
        (&["incr", "web", "two"][..], "nb must be a number"),
        (&["bogus"][..], "unknown command 'bogus'"),
        (&["status", "web", "extra"][..], "unexpected argument"),
        (&["status", "--timeout", "soon"][..], "--timeout"),
    ] {
        let mut all = args.to_vec();
        all.extend(common);
        let run = troupe(dir.path(), &all);
        assert_eq!(run.code, Some(2), "troupe {args:?}: {run:#?}");
        assert!(run.stderr.contains(says), "troupe {args:?}: {run:#?}");
        assert_eq!(run.stdout.trim(), "", "troupe {args:?}: {run:#?}");
    }
}

// ----------------------------------------------------------------------------------------------
// Through a running `troupe serve`

/// `troupe serve` on a fresh loopback address, probing the cluster, stopped on drop.
struct Serve {
    daemon: Daemon,
    control: String,
}

impl Serve {
    fn start(cluster: &Cluster) -> Serve {
        let address = unique_loopback();
        let mut command = Command::new(bin("troupe"));
        command
            .current_dir(cluster.dir.path())
            .env("HOME", cluster.dir.path())
            .env("XDG_CONFIG_HOME", cluster.dir.path())
            .env_remove("TROUPE_CONTROLLER")
            .env_remove("TROUPE_PROBE")
            .env_remove("TROUPE_MDNS")
            .env_remove("TROUPE_CONFIG")
            .env_remove("TROUPE_LOG")
            .args(["serve", "--bind", &address])
            .args(["--port", "5558", "--events-port", "5560", "--no-mdns"])
            .args(["--probe", &cluster.probe()])
            .args(["--state-dir", &cluster.path("serve-state")])
            .args(["--log-level", "info"]);
        let daemon = Daemon::spawn(
            "troupe serve",
            command,
            &cluster.dir.path().join("serve.log"),
        );
        let mut serve = Serve {
            daemon,
            control: format!("tcp://{address}:5558"),
        };
        serve.wait_all_alive(cluster);
        serve
    }

    /// Waits until `troupe nodes` through the serve lists the five nodes, all alive.
    fn wait_all_alive(&mut self, cluster: &Cluster) {
        let cli_state = cluster.path("cli-state");
        wait_for(
            "troupe nodes through the serve to list 5 alive nodes",
            Duration::from_secs(20),
            || {
                self.daemon.assert_running();
                let run = troupe(
                    cluster.dir.path(),
                    &[
                        "nodes",
                        "--controller",
                        &self.control,
                        "--json",
                        "--no-mdns",
                        "--wait",
                        "100ms",
                        "--state-dir",
                        &cli_state,
                    ],
                );
                let alive = serde_json::from_str::<Value>(&run.stdout)
                    .ok()
                    .and_then(|v| v.as_array().cloned())
                    .map(|nodes| {
                        let mut names: Vec<String> = nodes
                            .iter()
                            .filter(|n| n["state"] == "alive")
                            .filter_map(|n| n["name"].as_str().map(str::to_string))
                            .collect();
                        names.sort();
                        names
                    });
                alive.as_deref() == Some(&NODES.map(String::from)[..])
            },
        );
    }

    /// `troupe ARGS... --controller <this serve>`: no probe range and no multicast, so
    /// whatever answers came through the serve.
    fn broadcast(&self, cluster: &Cluster, args: &[&str]) -> Run {
        let state = cluster.path("cli-state");
        let mut all = args.to_vec();
        all.extend([
            "--controller",
            &self.control,
            "--no-mdns",
            "--state-dir",
            &state,
        ]);
        troupe(cluster.dir.path(), &all)
    }
}

/// Broadcasts through `troupe serve`; a SIGSTOPped node costs only the `--timeout` and is an
/// error row while the other four answer; the stock circusctl sees the whole cluster.
#[test]
fn broadcasts_through_serve_and_a_frozen_node_costs_only_its_timeout() {
    let cluster = Cluster::start();
    let mut serve = Serve::start(&cluster);

    let run = serve.broadcast(&cluster, &["status"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        rows(&run),
        per_node(&NODES, &[WATCHER, "active"]),
        "{}",
        run.stdout
    );

    let run = serve.broadcast(
        &cluster,
        &["incr", WATCHER, "2", "--waiting", "--node", "bc-db-*"],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        rows(&run),
        per_node(&["bc-db-1", "bc-db-2"], &["3"]),
        "{}",
        run.stdout
    );
    cluster.assert_counts(
        &[
            ("bc-db-1", 3),
            ("bc-db-2", 3),
            ("bc-web-1", 1),
            ("bc-web-2", 1),
            ("bc-web-3", 1),
        ],
        "incremented on the db nodes only, through the serve",
    );

    let run = serve.broadcast(
        &cluster,
        &["stop", WATCHER, "--waiting", "--node", "bc-web-3"],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        rows(&run),
        per_node(&["bc-web-3"], &["ok"]),
        "{}",
        run.stdout
    );
    assert_eq!(cluster.count("bc-web-3"), 0);
    let run = serve.broadcast(
        &cluster,
        &["start", WATCHER, "--waiting", "--node", "bc-web-3"],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(cluster.count("bc-web-3"), 1);

    let run = serve.broadcast(&cluster, &["numprocesses", WATCHER, "--json"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let replies = stdout_object(&run);
    assert_eq!(
        replies.keys().collect::<Vec<_>>(),
        NODES.iter().collect::<Vec<_>>(),
        "{}",
        run.stdout
    );
    for (node, count) in [
        ("bc-db-1", 3),
        ("bc-db-2", 3),
        ("bc-web-1", 1),
        ("bc-web-2", 1),
        ("bc-web-3", 1),
    ] {
        assert_eq!(replies[node]["status"], "ok", "{}", run.stdout);
        assert_eq!(replies[node]["numprocesses"], count, "{}", run.stdout);
    }

    let run = serve.broadcast(&cluster, &["status", "--node", "nope"]);
    assert_eq!(run.code, Some(3), "{run:#?}");

    // The stock circusctl against the controller: the cluster view, `node:watcher` names.
    let ctl = circusctl(&serve.control, &["status"]);
    assert_eq!(ctl.code, 0, "{ctl:#?}");
    let expected: Vec<String> = NODES
        .iter()
        .map(|n| format!("{n}:{WATCHER}: active"))
        .collect();
    assert_eq!(
        ctl.stdout.lines().map(str::trim).collect::<Vec<_>>(),
        expected,
        "{ctl:#?}"
    );
    let ctl = circusctl(&serve.control, &["list"]);
    assert_eq!(ctl.code, 0, "{ctl:#?}");
    let mut listed: Vec<&str> = ctl.stdout.trim().split(',').map(str::trim).collect();
    listed.sort_unstable();
    let expected: Vec<String> = NODES.iter().map(|n| format!("{n}:{WATCHER}")).collect();
    assert_eq!(listed, expected, "{ctl:#?}");

    // One node frozen: the others answer at once, it costs its own timeout, exit 1.
    let frozen = "bc-web-2";
    let guard = Stopped::stop(cluster.agent(frozen).pid());
    let started = Instant::now();
    let run = serve.broadcast(&cluster, &["status", "--timeout", "1s"]);
    let took = started.elapsed();
    eprintln!("figure: status through serve with one SIGSTOPped node (--timeout 1s) took {took:?}");
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        took < Duration::from_secs(6),
        "one frozen node held the broadcast for {took:?}: {run:#?}"
    );
    let out = rows(&run);
    let ok: Vec<&Vec<String>> = out.iter().filter(|r| r[1] != "error:").collect();
    let failed: Vec<&Vec<String>> = out.iter().filter(|r| r[1] == "error:").collect();
    assert_eq!(
        ok,
        per_node(
            &["bc-db-1", "bc-db-2", "bc-web-1", "bc-web-3"],
            &[WATCHER, "active"]
        )
        .iter()
        .collect::<Vec<_>>(),
        "{}",
        run.stdout
    );
    assert_eq!(failed.len(), 1, "{}", run.stdout);
    assert_eq!(failed[0][0], frozen, "{}", run.stdout);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with(frozen))
        .expect("the frozen node's row");
    assert!(
        line.contains("no reply") && line.contains("within 1s"),
        "the error row names the timeout: {line}"
    );
    drop(guard);

    // Thawed, it answers again (the serve may have marked it suspect meanwhile).
    wait_for(
        "all five nodes to answer through the serve again",
        Duration::from_secs(20),
        || {
            let run = serve.broadcast(&cluster, &["status"]);
            run.code == Some(0) && rows(&run) == per_node(&NODES, &[WATCHER, "active"])
        },
    );
    serve.daemon.assert_running();
}

/// The serve keeps its connections to members across requests (`controller/src/links.rs`):
/// a member that restarts (a new process on the same endpoint) is reached by the next
/// broadcast, and the late reply of a frozen member to a request that timed out is never
/// taken for the answer to a request sent after it.
#[test]
fn serve_reaches_a_restarted_member_and_never_takes_a_late_reply_for_a_later_one() {
    let mut cluster = Cluster::start();
    let mut serve = Serve::start(&cluster);
    let all_active =
        |run: &Run| run.code == Some(0) && rows(run) == per_node(&NODES, &[WATCHER, "active"]);
    // Twice: the second broadcast runs on the connections the first one opened.
    for _ in 0..2 {
        let run = serve.broadcast(&cluster, &["status"]);
        assert!(all_active(&run), "{run:#?}");
    }

    // A new agent process on the same endpoint, quickly enough that it stays a member.
    let restarted = "bc-db-2";
    let i = NODES.iter().position(|n| *n == restarted).expect("a node");
    let old_pid = cluster.agents[i].pid();
    cluster.agents[i].kill();
    cluster.agents[i].restart();
    assert_ne!(cluster.agents[i].pid(), old_pid);
    wait_for(
        "the restarted agent's watcher",
        Duration::from_secs(10),
        || cluster.count(restarted) == 1,
    );
    serve.wait_all_alive(&cluster);
    let run = serve.broadcast(&cluster, &["status"]);
    assert!(
        all_active(&run),
        "the first broadcast after {restarted} restarted: {run:#?}"
    );

    // Frozen: `list` times out, `numwatchers` is sent while the agent is still frozen, then
    // the agent thaws and answers both, `list` too late.
    let frozen = "bc-web-1";
    let node = |run: &Run| {
        stdout_object(run)
            .get(frozen)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        serve.wait_all_alive(&cluster);
        let guard = Stopped::stop(cluster.agent(frozen).pid());
        // `list` first, to its end: the serve gives up on it while the agent is frozen.
        let late = serve.broadcast(
            &cluster,
            &["list", "--node", frozen, "--timeout", "500ms", "--json"],
        );
        let next = std::thread::scope(|scope| {
            let next = scope.spawn(|| {
                serve.broadcast(
                    &cluster,
                    &[
                        "numwatchers",
                        "--node",
                        frozen,
                        "--timeout",
                        "10s",
                        "--json",
                    ],
                )
            });
            // Thaw once `numwatchers` has had time to reach the agent's socket.
            std::thread::sleep(Duration::from_millis(300));
            drop(guard);
            next.join().expect("the numwatchers run")
        });
        // On a stalled machine the serve may have marked the frozen node suspect before
        // `numwatchers` arrived ("no node matched"): that proves nothing, go again.
        if next.code == Some(3) && attempts < 3 {
            continue;
        }
        assert_eq!(late.code, Some(1), "{late:#?}");
        assert_eq!(node(&late)["timeout"], true, "{late:#?}");
        assert_eq!(next.code, Some(0), "{next:#?}");
        let reply = node(&next);
        assert_eq!(reply["status"], "ok", "{next:#?}");
        assert_eq!(reply["numwatchers"], 1, "{next:#?}");
        assert!(
            reply.get("watchers").is_none(),
            "numwatchers got the late reply to list: {next:#?}"
        );
        break;
    }

    // And everything answers afterwards.
    serve.wait_all_alive(&cluster);
    let run = serve.broadcast(&cluster, &["status"]);
    assert!(all_active(&run), "{run:#?}");
    serve.daemon.assert_running();
}

// ----------------------------------------------------------------------------------------------
// `troupe demo`

/// A running `troupe demo`: its stdout collected line by line; dropping it sends SIGINT,
/// then SIGKILL after 20 s, and kills any agent of its temp dir left behind.
struct Demo {
    child: Option<Child>,
    output: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: PathBuf,
    dir: PathBuf,
}

impl Demo {
    fn start(work: &Path, agents: u8, first: &str) -> Demo {
        let stderr = work.join("demo.stderr");
        let mut child = Command::new(bin("troupe"))
            .args(["demo", "--agents", &agents.to_string()])
            .args(["--first-address", first])
            .current_dir(work)
            .env("HOME", work)
            .env("XDG_CONFIG_HOME", work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn troupe demo");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let collected = output.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut text = collected.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
        let dir = std::env::temp_dir().join(format!("troupe-demo-{}", child.id()));
        Demo {
            child: Some(child),
            output,
            reader: Some(reader),
            stderr,
            dir,
        }
    }

    fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn report(&self) -> String {
        format!(
            "--- demo stdout ---\n{}\n--- demo stderr ---\n{}",
            self.output(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits for `what` in the output, failing if the demo exits first.
    #[track_caller]
    fn wait_for_output(&mut self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.output()) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "troupe demo exited ({status}) before {what}\n{}",
                    self.report()
                );
            }
            if Instant::now() > deadline {
                panic!("no {what} within {timeout:?}\n{}", self.report());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT (Ctrl-C) and the exit status, or None if it is still running after `timeout`.
    fn interrupt(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("running");
        send(child.id(), nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Live agents started with a config file in `dir` (the demo's temp dir): `troupe-agent
/// --config DIR/x.toml` or `troupe agent --config DIR/x.toml`, whichever the demo runs.
fn agents_of(dir: &Path) -> Vec<u32> {
    let needle = format!("--config {}/", dir.display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::support::stop_child(
                &mut child,
                nix::sys::signal::Signal::SIGINT,
                Duration::from_secs(20),
            );
        }
        // The demo's agents die with it (parent-death signal); make sure of it.
        for pid in agents_of(&self.dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}

/// `troupe demo --agents 3` on 127.0.1.2-4 (addresses no other test uses): it shows the three
/// agents discovered, and Ctrl-C stops it with exit 0 and no agent left behind.
#[test]
fn demo_discovers_its_agents_and_ctrl_c_stops_everything() {
    let addresses = ["127.0.1.2", "127.0.1.3", "127.0.1.4"];
    assert_free(&addresses);
    let work = tempfile::tempdir().expect("tempdir");
    let mut demo = Demo::start(work.path(), 3, addresses[0]);
    let started = Instant::now();

    // The discovery table: a row per agent, each alive on its address.
    demo.wait_for_output(
        "the discovery table with the three agents",
        Duration::from_secs(30),
        |out| {
            let table: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("NAME")).collect();
            (1..=3).all(|i| {
                let name = format!("demo-{i}");
                table.iter().any(|l| {
                    l.split_whitespace().next() == Some(name.as_str())
                        && l.contains(&format!("{}:5555", addresses[i - 1]))
                        && l.contains("alive")
                })
            })
        },
    );
    eprintln!(
        "figure: troupe demo showed its 3 agents discovered after {:?}",
        started.elapsed()
    );
    // The end of its output: it now waits for Ctrl-C.
    demo.wait_for_output("the Ctrl-C prompt", Duration::from_secs(30), |out| {
        out.contains("Ctrl-C stops everything.")
    });
    // The broadcast it shows: every agent's two sample watchers active.
    let output = demo.output();
    let mut status: Vec<Vec<&str>> = output
        .lines()
        .skip_while(|l| *l != "$ troupe status")
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    status.sort();
    let expected: Vec<Vec<String>> = (1..=3)
        .flat_map(|i| {
            ["ticker", "worker"].map(|w| vec![format!("demo-{i}"), w.to_string(), "active".into()])
        })
        .collect();
    assert_eq!(status, expected, "{}", demo.report());
    let mut agents = agents_of(&demo.dir);
    agents.sort_unstable();
    assert_eq!(
        agents,
        printed_agent_pids(&output),
        "the demo runs the 3 agents it printed\n{}",
        demo.report()
    );

    demo_is_keyed(&demo, addresses[0]);
    ctrl_c_stops_everything(&mut demo, &agents, "at the prompt");
}

/// The demo runs keyed (issue 12): a keyless client gets nothing from its agents nor its
/// controller, while the commands it prints for another shell work: `troupe` with its key
/// file, circusctl on demo-1's owner socket.
fn demo_is_keyed(demo: &Demo, first: &str) {
    let output = demo.output();
    let key_file = output
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cluster key ")?
                .split(" (fingerprint ")
                .next()
        })
        .unwrap_or_else(|| panic!("no cluster key line\n{}", demo.report()));
    let agent = format!("tcp://{first}:5555");
    let controller = output
        .lines()
        .find_map(|l| l.strip_prefix("Controller on ")?.split_whitespace().next())
        .map(|endpoint| endpoint.trim_end_matches('.').to_string());
    let status = || troupe::protocol::Request::new("status", Default::default());
    for endpoint in std::iter::once(agent.clone()).chain(controller.clone()) {
        let keyless = troupe::client::call(&endpoint, status(), Duration::from_secs(2));
        let refused = keyless.expect_err(&format!("{endpoint} answered a keyless client"));
        assert!(
            refused
                .to_string()
                .contains("this client has no cluster key"),
            "a keyless client is not told why nothing answers: {refused}"
        );
        let keyed = Command::new(bin("troupe"))
            .env("TROUPE_KEY_FILE", key_file)
            .args(["ctl", &endpoint, "status"])
            .output()
            .expect("troupe ctl");
        assert!(keyed.status.success(), "{endpoint} with the key: {keyed:?}");
    }
    // The binary by its path: after `cargo run`, `troupe` is on nobody's PATH (issue 18).
    let troupe = bin("troupe");
    assert!(
        output.contains(&format!(
            "TROUPE_KEY_FILE={key_file} {} status",
            troupe.display()
        )),
        "{}",
        demo.report()
    );
    let owner = output
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("circusctl --endpoint ")?
                .split_whitespace()
                .next()
        })
        .unwrap_or_else(|| panic!("no circusctl line\n{}", demo.report()));
    let by_owner = circusctl(owner, &["status"]);
    assert!(by_owner.stdout.contains("worker: active"), "{by_owner:?}");
}

/// Ctrl-C while the demo is still discovering its agents stops it just as cleanly. Discovery
/// on loopback takes milliseconds: when the SIGINT lands after it, the run checked nothing
/// about startup (it still must stop everything) and is tried again.
#[test]
fn demo_interrupted_during_startup_stops_everything() {
    let addresses = ["127.0.1.6", "127.0.1.7"];
    for _ in 0..5 {
        assert_free(&addresses);
        let work = tempfile::tempdir().expect("tempdir");
        let mut demo = Demo::start(work.path(), 2, addresses[0]);
        demo.wait_for_output("the discovery to start", Duration::from_secs(30), |out| {
            out.contains("Discovering by probing")
        });
        let agents = printed_agent_pids(&demo.output());
        assert_eq!(agents.len(), 2, "{}", demo.report());
        ctrl_c_stops_everything(&mut demo, &agents, "during startup");
        if !demo.output().contains("$ troupe status") {
            return;
        }
    }
    panic!("the demo finished its startup before every SIGINT: this test checked nothing");
}

/// The agents' pids from the demo's `  demo-1  tcp://...:5555  (pid 123)` lines, sorted.
fn printed_agent_pids(output: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = output
        .lines()
        .filter(|l| l.trim_start().starts_with("demo-"))
        .filter_map(|l| l.split("(pid ").nth(1))
        .filter_map(|rest| rest.trim_end_matches(')').parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// Fails unless the demo's agent ports are free on every address.
#[track_caller]
fn assert_free(addresses: &[&str]) {
    for address in addresses {
        for port in [5555, 5556, 5557] {
            if let Err(e) = std::net::TcpListener::bind((*address, port)) {
                panic!("{address}:{port} is busy ({e}): the demo test needs {addresses:?}");
            }
        }
    }
}

/// SIGINT: the demo exits 0 within a few seconds, says so, and leaves no agent (of `agents`
/// or with its temp dir on the command line) and no temp dir behind.
#[track_caller]
fn ctrl_c_stops_everything(demo: &mut Demo, agents: &[u32], when: &str) {
    let interrupted = Instant::now();
    let status = demo.interrupt(Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "troupe demo still running 20 s after SIGINT\n{}",
            demo.report()
        )
    });
    let took = interrupted.elapsed();
    eprintln!("figure: troupe demo exited {took:?} after SIGINT {when}");
    assert_eq!(status.code(), Some(0), "{status}\n{}", demo.report());
    assert!(
        took < Duration::from_secs(10),
        "Ctrl-C took {took:?}\n{}",
        demo.report()
    );
    let output = demo.output();
    assert!(
        output.trim_end().ends_with("All agents stopped."),
        "{}",
        demo.report()
    );
    let left = agents_of(&demo.dir);
    assert!(
        left.is_empty(),
        "agents left behind: {left:?}\n{}",
        demo.report()
    );
    for &pid in agents {
        assert!(!alive(pid), "agent {pid} still alive\n{}", demo.report());
    }
    assert!(
        !demo.dir.exists(),
        "{} is left behind\n{}",
        demo.dir.display(),
        demo.report()
    );
}

/// In a terminal, a broadcast still waiting after a second says how many nodes answered; the
/// line is gone when the table prints. One node's `stop --waiting` takes its graceful_timeout
/// (its process ignores SIGTERM), the other's is at once.
#[test]
fn a_slow_broadcast_shows_its_progress_in_a_terminal() {
    let quick = Agent::start_named(
        "progress-quick",
        &unique_loopback(),
        "[watcher.w]\ncmd = \"sleep 1000\"\n",
        "",
    );
    let slow = Agent::start_named(
        "progress-slow",
        &unique_loopback(),
        "[watcher.w]\ncmd = \"sh\"\nargs = [\"-c\", \"trap '' TERM; sleep 1000 & wait\"]\n\
         graceful_timeout = 4\n",
        "",
    );
    // The trap is set once the shell has forked its sleep.
    wait_for("the stubborn process tree", Duration::from_secs(10), || {
        slow.pids("w").first().is_some_and(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .is_ok_and(|c| !c.trim().is_empty())
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let probe = format!("{},{}", quick.address, slow.address);
    let state = dir.path().join("state").display().to_string();
    let command = troupe_in_terminal(
        dir.path(),
        &[
            "stop",
            "w",
            "--waiting",
            "--timeout",
            "10s",
            "--no-mdns",
            "--probe",
            &probe,
            "--state-dir",
            &state,
            "--controller",
            NO_CONTROLLER,
        ],
        true,
    );
    let terminal = Tmux::start(&command);
    terminal.wait_for_all(
        "the progress line",
        &["1/2 nodes answered"],
        Duration::from_secs(4),
    );
    let screen = terminal.wait_for_all("the table", &["TROUPE-EXIT=0"], Duration::from_secs(15));
    assert!(!screen.contains("nodes answered"), "cleared:\n{screen}");
    for node in ["progress-quick", "progress-slow"] {
        assert!(
            screen
                .lines()
                .any(|l| l.split_whitespace().eq([node, "ok"])),
            "{node} ok:\n{screen}"
        );
    }
}
