//! `troupe shell` driven as a user would, through its standard input: the same commands as
//! the CLI (one command table), plus help and exit.

use crate::support::terminal::{troupe_in_terminal, Tmux};
use crate::support::Agent;
use std::time::Duration;

#[test]
fn the_shell_runs_commands_line_by_line_and_remembers_a_cluster_range() {
    let watchers = "[watcher.sleeper]\ncmd = \"sleep 1000\"\ngraceful_timeout = 1\n";
    let first = Agent::start_named("shell-a", &crate::support::unique_loopback(), watchers, "");
    let second = Agent::start_named("shell-b", &crate::support::unique_loopback(), watchers, "");
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let args = [
        "--no-mdns",
        "--controller",
        "tcp://127.0.0.1:1",
        "--probe",
        &first.address,
        "--state-dir",
        &state_dir,
    ];
    let script = format!(
        "# a comment line is skipped\nnodes\nstatus\nincr sleeper 2 --waiting --node shell-a\nbogus\ncluster {} 2\nnodes\nstop --waiting\nhelp\nexit\n",
        second.address
    );
    let run = crate::support::shell(state.path(), &args, &script);
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert_eq!(run.code, Some(0), "{stdout}\n{stderr}");
    // `nodes` before `cluster` knows only the probed agent; after it, both.
    let tables: Vec<&str> = stdout.split("NAME ").collect();
    assert_eq!(tables.len(), 3, "two node tables:\n{stdout}");
    assert!(
        tables[1].contains("shell-a") && !tables[1].contains("shell-b"),
        "{stdout}"
    );
    assert!(
        tables[2].contains("shell-a") && tables[2].contains("shell-b"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["shell-a", "sleeper", "active"]),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["shell-a", "3"]),
        "{stdout}"
    );
    assert!(stderr.contains("unknown command 'bogus'"), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "cluster: {} (1 addresses) remembered; swept it: 2 nodes alive, expecting 2",
            second.address
        )),
        "{stdout}"
    );
    assert!(stdout.contains("Shell commands"), "help:\n{stdout}");
    // The commands really ran: incr on shell-a only, then stop on both.
    assert!(first.pids("sleeper").is_empty() && second.pids("sleeper").is_empty());
    assert_eq!(
        first.call("numprocesses", serde_json::json!({"name": "sleeper"}))["numprocesses"],
        0
    );
    assert_eq!(
        first.call(
            "get",
            serde_json::json!({"name": "sleeper", "keys": ["numprocesses"]})
        )["options"]["numprocesses"],
        3
    );
    assert!(
        state.path().join("shell_history").exists(),
        "history is kept"
    );
}

/// In a terminal, Tab completes a command, a watcher name and, after `--node`, a node name
/// (names from the cluster, fetched when the shell starts), and the completed line runs.
#[test]
fn tab_completes_commands_watchers_and_nodes_in_a_terminal() {
    let agent = Agent::start_named(
        "shell-completion",
        &crate::support::unique_loopback(),
        "[watcher.sleeper]\ncmd = \"sleep 1000\"\nnumprocesses = 2\ngraceful_timeout = 1\n",
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").display().to_string();
    let args = [
        "shell",
        "--no-mdns",
        "--controller",
        "tcp://127.0.0.1:1",
        "--probe",
        &agent.address,
        "--state-dir",
        &state,
    ];
    let tmux = Tmux::start(&troupe_in_terminal(dir.path(), &args, false));
    tmux.wait_for_all("the prompt", &["Type `help`"], Duration::from_secs(20));
    // One key press at a time, each once the screen shows the one before: rustyline reads
    // each completion request on its own.
    for (keys, shown) in [
        ("nump", "nump"),
        ("Tab", "numprocesses"),
        (" sl", "numprocesses sl"),
        ("Tab", "numprocesses sleeper"),
        (" --node shell-c", "sleeper --node shell-c"),
        ("Tab", "numprocesses sleeper --node shell-completion"),
    ] {
        tmux.keys(keys);
        tmux.wait_for_all(
            &format!("{shown:?} after {keys:?}"),
            &[shown],
            Duration::from_secs(10),
        );
    }
    tmux.keys("Enter");
    let screen = tmux.wait_until("the reply", Duration::from_secs(20), |screen| {
        screen
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["shell-completion", "2"])
    });
    println!("{screen}");
    tmux.keys("exit");
    tmux.keys("Enter");
    tmux.wait_for_all(
        "the shell to exit",
        &["TROUPE-EXIT=0"],
        Duration::from_secs(10),
    );
}

/// The shell runs the CLI's cluster commands from the same command table (configure, stats,
/// logs, reconfigure), and says that `top`, a full-screen view, runs outside it.
#[test]
fn the_shell_runs_the_clis_cluster_commands_and_says_which_run_outside_it() {
    let watchers = "[watcher.talker]\ncmd = \"sh\"\nargs = [\"-c\", \"echo shell-log-line; exec sleep 1000\"]\ngraceful_timeout = 1\n";
    let agent = Agent::start_named(
        "shell-cli",
        &crate::support::unique_loopback(),
        watchers,
        "",
    );
    crate::support::wait_for("the line in the ring", Duration::from_secs(20), || {
        let reply = agent.call("logs", serde_json::json!({"name": "talker", "lines": 5}));
        reply.to_string().contains("shell-log-line")
    });
    let state = tempfile::tempdir().unwrap();
    let args = [
        "--no-mdns",
        "--controller",
        "tcp://127.0.0.1:1",
        "--probe",
        &agent.address,
        "--state-dir",
        "cli-state",
    ];
    let script = "configure --dry-run\nstats talker\nlogs talker -n 5\ntop\nreconfigure\nexit\n";
    let run = crate::support::shell(state.path(), &args, script);
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    let row = |words: &[&str]| {
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == words)
    };
    assert!(
        row(&["shell-cli", "0", "files,", "0", "changed", "(dry", "run)"]),
        "configure --dry-run:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("shell-cli") && l.contains("talker")),
        "stats talker:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("shell-log-line"),
        "logs talker:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("`top` is a full-screen view and does not run inside the shell"),
        "top:\n{stderr}"
    );
    assert!(
        row(&["NODE", "STOP", "CONFIGURE", "START"]) && row(&["shell-cli", "ok", "ok", "ok"]),
        "reconfigure:\n{stdout}\n{stderr}"
    );
    assert_eq!(run.code, Some(0), "{stdout}\n{stderr}");
}
