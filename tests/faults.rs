//! Issue 14: a node that stops answering is reported, never dropped. A frozen (SIGSTOP) or
//! killed node is named with its state in every fan-out, in text and `--json`, and the command
//! exits 1, with or without `troupe serve`; `--alive-only` skips it and says so.

use crate::support::{troupe, wait_for, Agent, Daemon, Run};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// Three agents on loopback, and the CLI's flags that find exactly them.
struct Trio {
    agents: Vec<Agent>,
    dir: tempfile::TempDir,
}

impl Trio {
    fn start(prefix: &str) -> Trio {
        let agents = (1..=3)
            .map(|i| {
                let name = format!("{prefix}-{i}");
                Agent::start_named(&name, &crate::support::unique_loopback(), "", "")
            })
            .collect();
        Trio {
            agents,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn probes(&self) -> Vec<String> {
        self.agents
            .iter()
            .flat_map(|a| ["--probe".to_string(), format!("{}:5555", a.address)])
            .collect()
    }

    fn state(&self) -> String {
        self.dir.path().join("cli-state").display().to_string()
    }

    /// `troupe ARGS` discovering on the spot (no serve): the three probed, no multicast.
    fn one_shot(&self, args: &[&str]) -> Run {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(self.probes());
        all.extend(["--no-mdns".into(), "--state-dir".into(), self.state()]);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        troupe(self.dir.path(), &all)
    }

    fn signal(&self, index: usize, signal: Signal) {
        kill(Pid::from_raw(self.agents[index].pid() as i32), signal).expect("signal the agent");
    }
}

fn json_rows(run: &Run) -> serde_json::Map<String, Value> {
    serde_json::from_str::<Value>(&run.stdout)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_else(|| panic!("not a JSON object: {run:#?}"))
}

/// The node's row says `state`, and the two others answered.
fn assert_reported(run: &Run, prefix: &str, state: &str) {
    assert_eq!(run.code, Some(1), "{run:#?}");
    let rows = json_rows(run);
    let missing = format!("{prefix}-3");
    assert_eq!(rows[&missing]["state"], state, "{run:#?}");
    assert_eq!(rows[&missing]["status"], "error", "{run:#?}");
    for answered in [format!("{prefix}-1"), format!("{prefix}-2")] {
        assert_eq!(rows[&answered]["status"], "ok", "{run:#?}");
    }
    assert_eq!(rows.len(), 3, "{run:#?}");
}

/// Without serve: the roster names a node that answered before; frozen, its address accepts
/// connections and never answers (`no reply`); killed, nothing is there (`down`); forgotten,
/// it is no longer reported.
#[test]
fn a_frozen_then_killed_node_is_reported_without_serve() {
    let mut trio = Trio::start("fz");
    let run = trio.one_shot(&["status", "--timeout", "2s"]);
    assert_eq!(run.code, Some(0), "{run:#?}");

    trio.signal(2, Signal::SIGSTOP);
    let run = trio.one_shot(&["status", "--timeout", "2s", "--json"]);
    assert_reported(&run, "fz", "no reply");
    let run = trio.one_shot(&["status", "--timeout", "2s"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("fz-3"))
        .unwrap_or_else(|| panic!("fz-3 not listed: {run:#?}"));
    assert!(line.contains("no reply"), "{line}");
    assert!(line.contains(&trio.agents[2].address), "{line}");
    assert!(line.contains("last seen"), "{line}");

    trio.signal(2, Signal::SIGCONT);
    trio.agents[2].kill();
    let run = trio.one_shot(&["status", "--json"]);
    assert_reported(&run, "fz", "down");
    let run = trio.one_shot(&["status", "--alive-only"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(!run.stdout.contains("fz-3"), "{run:#?}");
    assert!(
        run.stderr.contains("--alive-only: skipped 1 node") && run.stderr.contains("fz-3 (down)"),
        "{run:#?}"
    );

    let mut forget = vec!["nodes", "--forget", "fz-3"];
    let probes = trio.probes();
    forget.extend(probes.iter().map(String::as_str));
    let state = trio.state();
    forget.extend(["--no-mdns", "--state-dir", &state]);
    let run = troupe(trio.dir.path(), &forget);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.starts_with("forgot fz-3"), "{run:#?}");
    let run = trio.one_shot(&["status"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
}

/// Through serve: once membership marks the frozen node down, it is still a row (it used to
/// vanish and the command exit 0); killed, the same.
#[test]
fn a_frozen_then_killed_node_is_reported_through_serve() {
    let mut trio = Trio::start("fs");
    let address = crate::support::unique_loopback();
    let mut command =
        crate::support::isolated(Command::new(crate::support::bin("troupe")), trio.dir.path());
    command
        .args(["serve", "--bind", &address, "--no-mdns"])
        .args([
            "--port",
            "5558",
            "--events-port",
            "5560",
            "--stats-port",
            "5559",
        ])
        .args(trio.probes())
        .args([
            "--state-dir",
            &trio.dir.path().join("serve-state").display().to_string(),
        ]);
    let mut serve = Daemon::spawn("troupe serve", command, &trio.dir.path().join("serve.log"));
    let control = format!("tcp://{address}:5558");
    let state = trio.state();
    let through = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--controller", &control, "--no-mdns", "--state-dir", &state]);
        troupe(trio.dir.path(), &all)
    };
    let node_state = |run: &Run, name: &str| -> Option<String> {
        serde_json::from_str::<Value>(&run.stdout)
            .ok()?
            .as_array()?
            .iter()
            .find(|n| n["name"] == name)?["state"]
            .as_str()
            .map(str::to_string)
    };
    wait_for(
        "serve to see the three alive",
        Duration::from_secs(20),
        || {
            serve.assert_running();
            let run = through(&["nodes", "--json"]);
            (1..=3).all(|i| node_state(&run, &format!("fs-{i}")).as_deref() == Some("alive"))
        },
    );
    let run = through(&["status", "--json"]);
    assert_eq!(run.code, Some(0), "{run:#?}");

    trio.signal(2, Signal::SIGSTOP);
    wait_for("serve to mark fs-3 down", Duration::from_secs(20), || {
        node_state(&through(&["nodes", "--json"]), "fs-3").as_deref() == Some("down")
    });
    let run = through(&["status", "--json", "--timeout", "2s"]);
    assert_reported(&run, "fs", "down");
    let run = through(&["status", "--timeout", "2s"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("fs-3"))
        .unwrap_or_else(|| panic!("fs-3 not listed: {run:#?}"));
    assert!(
        line.contains("down") && line.contains("last seen"),
        "{line}"
    );

    trio.signal(2, Signal::SIGCONT);
    trio.agents[2].kill();
    let run = through(&["numprocesses", "--json"]);
    assert_reported(&run, "fs", "down");
    let run = through(&["numprocesses", "--alive-only"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stderr.contains("fs-3 (down)"), "{run:#?}");
}

/// A watcher rendering three files that each name the cluster's size, so a node holding two
/// sizes holds a mix of two pushes.
fn three_files(dir: &std::path::Path) -> String {
    let template = dir.join("size.j2");
    std::fs::write(&template, "size={{ cluster.size }}\n").expect("template");
    let mut watcher = "[watcher.svc]\ncmd = \"sleep 1000\"\nautostart = false\n\n".to_string();
    for file in ["a", "b", "c"] {
        watcher.push_str(&format!(
            "[[watcher.svc.template]]\nsource = \"{}\"\ndest = \"{}\"\n\n",
            template.display(),
            dir.join(format!("out/{file}.conf")).display()
        ));
    }
    watcher
}

/// The sizes a node's three files under `dir` name (None for a file not written yet).
fn sizes(dir: &std::path::Path) -> Vec<Option<String>> {
    ["a", "b", "c"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(format!("out/{f}.conf"))).ok())
        .collect()
}

/// A controller SIGKILLed in the middle of a `configure` push to 20 agents leaves each node
/// with all its old files or all its new ones, and the next `configure` converges.
#[test]
fn a_controller_killed_mid_push_leaves_no_node_with_a_mix_and_the_next_push_converges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node_dir = |i: usize| {
        let path = dir.path().join(format!("mp-{i:02}"));
        std::fs::create_dir_all(&path).expect("node dir");
        path
    };
    let start = |i: usize| {
        let name = format!("mp-{i:02}");
        let address = crate::support::unique_loopback();
        Agent::start_named(&name, &address, &three_files(&node_dir(i)), "")
    };
    let mut agents: Vec<Agent> = (1..=19).map(start).collect();
    let state = dir.path().join("cli-state").display().to_string();
    let configure = |agents: &[Agent]| {
        let mut args = vec!["configure".to_string(), "--no-mdns".into()];
        for agent in agents {
            args.extend(["--probe".to_string(), format!("{}:5555", agent.address)]);
        }
        args.extend(["--state-dir".into(), state.clone()]);
        args
    };
    let args = configure(&agents);
    let run = troupe(
        dir.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let old = Some("size=19\n".to_string());
    for i in 1..=19 {
        assert_eq!(sizes(&node_dir(i)), [old.clone(), old.clone(), old.clone()]);
    }
    agents.push(start(20));

    let new = Some("size=20\n".to_string());
    let args = configure(&agents);
    let mut command =
        crate::support::isolated(Command::new(crate::support::bin("troupe")), dir.path());
    command.args(&args);
    let mut controller = Daemon::spawn("troupe configure", command, &dir.path().join("push.log"));
    // Killed as soon as the first node holds a new file: the push is under way.
    wait_for(
        "a first node to get the new files",
        Duration::from_secs(30),
        || (1..=20).any(|i| sizes(&node_dir(i)).contains(&new)),
    );
    controller.kill();
    // What each agent was sent it finishes; wait until no file moves any more.
    let mut last = Vec::new();
    wait_for("the files to settle", Duration::from_secs(10), || {
        let now: Vec<_> = (1..=20).map(|i| sizes(&node_dir(i))).collect();
        let settled = now == last;
        last = now;
        std::thread::sleep(Duration::from_millis(200));
        settled
    });
    for (i, files) in (1..=20).zip(&last) {
        let first = &files[0];
        assert!(
            files.iter().all(|f| f == first),
            "mp-{i:02} holds a mix of two pushes: {files:?}"
        );
    }

    let run = troupe(
        dir.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    for i in 1..=20 {
        let files = sizes(&node_dir(i));
        assert_eq!(files, [new.clone(), new.clone(), new.clone()], "mp-{i:02}");
    }
}
