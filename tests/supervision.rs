//! Supervision for real: respawn after kill -9, graceful stop escalating to SIGKILL of the
//! whole group, no zombies after many crashes, flapping, hooks, output capture, reload.

use crate::support::{alive, proc_status, wait_for, zombie_children, Agent};
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn kill_9_is_respawned_at_once() {
    let agent = Agent::start("[watcher.sleeper]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n");
    wait_for("2 processes", Duration::from_secs(5), || {
        agent.pids("sleeper").len() == 2
    });
    let before = agent.pids("sleeper");
    let victim = before[0];
    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Circus notices a crash only at its next check_delay tick (5 s by default); troupe reaps
    // on child exit. The exact latency is measured by the benchmark, not asserted here.
    wait_for("a replacement process", Duration::from_secs(2), || {
        let pids = agent.pids("sleeper");
        pids.len() == 2 && !pids.contains(&victim)
    });
    let latency = killed_at.elapsed();
    eprintln!("respawned after {latency:?}");
    assert!(
        agent.pids("sleeper").contains(&before[1]),
        "the other process was left alone"
    );
}

#[test]
fn sigterm_ignoring_process_and_its_children_are_killed_at_graceful_timeout() {
    let agent = Agent::start(
        "[watcher.stubborn]\ncmd = \"sh\"\nargs = [\"-c\", \"trap '' TERM; sleep 1000 & sleep 1000 & wait\"]\ngraceful_timeout = 1\n",
    );
    wait_for("the process tree", Duration::from_secs(5), || {
        agent
            .pids("stubborn")
            .first()
            .is_some_and(|pid| children(*pid).len() == 2)
    });
    let leader = agent.pids("stubborn")[0];
    let kids = children(leader);
    let started = Instant::now();
    let reply = agent.call("stop", json!({"name": "stubborn", "waiting": true}));
    let took = started.elapsed();
    assert_eq!(reply["status"], "ok", "{reply}");
    assert!(
        took >= Duration::from_millis(900),
        "stop returned before graceful_timeout: {took:?}"
    );
    for pid in std::iter::once(leader).chain(kids) {
        wait_for(
            &format!("pid {pid} to be gone"),
            Duration::from_secs(2),
            || !alive(pid),
        );
    }
}

#[test]
fn five_hundred_crash_cycles_leave_no_zombie() {
    let agent = Agent::start(
        "[watcher.crasher]\ncmd = \"sh\"\nargs = [\"-c\", \"exit 3\"]\nnumprocesses = 4\nmin_uptime = 0\nmax_retry = -1\n",
    );
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).unwrap();
    sub.connect(&agent.pubsub_endpoint()).unwrap();
    sub.set_subscribe(b"watcher.crasher.reap").unwrap();
    sub.set_rcvtimeo(5000).unwrap();
    let mut reaps = 0;
    let mut codes = std::collections::BTreeSet::new();
    while reaps < 500 {
        let frames = sub
            .recv_multipart(0)
            .unwrap_or_else(|e| panic!("after {reaps} reaps: {e}\n{}", agent.log()));
        let payload: serde_json::Value = serde_json::from_slice(&frames[1]).unwrap();
        codes.insert(payload["exit_code"].as_i64());
        reaps += 1;
    }
    assert_eq!(
        codes,
        [Some(3)].into_iter().collect(),
        "every reap reports exit code 3"
    );
    let reply = agent.call("stop", json!({"name": "crasher", "waiting": true}));
    assert_eq!(reply["status"], "ok");
    wait_for(
        "no zombie children of the agent",
        Duration::from_secs(2),
        || zombie_children(agent.pid()).is_empty(),
    );
}

#[test]
fn quick_deaths_beyond_max_retry_stop_the_watcher_with_a_reason() {
    let agent = Agent::start("[watcher.flappy]\ncmd = \"false\"\nmax_retry = 2\n");
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).unwrap();
    sub.connect(&agent.pubsub_endpoint()).unwrap();
    sub.set_subscribe(b"watcher.flappy.stop").unwrap();
    sub.set_rcvtimeo(10_000).unwrap();
    wait_for("the watcher to give up", Duration::from_secs(10), || {
        agent.call("status", json!({"name": "flappy"}))["status"] == "stopped"
    });
    // The agent keeps answering meanwhile, and says why.
    assert_eq!(agent.call("numwatchers", json!({}))["numwatchers"], 1);
    assert!(agent.log().contains("flapping"), "{}", agent.log());
    // Starting it again is allowed and fails the same way (a fresh count).
    let reply = agent.call("start", json!({"name": "flappy", "waiting": true}));
    assert_eq!(reply["status"], "ok", "{reply}");
    let frames = sub.recv_multipart(0).expect("a stop event with a reason");
    let payload: serde_json::Value = serde_json::from_slice(&frames[1]).unwrap();
    assert!(
        payload["reason"]
            .as_str()
            .unwrap_or("")
            .contains("flapping"),
        "{payload}"
    );
}

#[test]
fn a_command_that_does_not_exist_fails_start_with_the_cause() {
    let agent =
        Agent::start("[watcher.ghost]\ncmd = \"/nonexistent/bin/ghost\"\nautostart = false\n");
    let reply = agent.call("start", json!({"name": "ghost", "waiting": true}));
    assert_eq!(reply["status"], "error", "{reply}");
    let reason = reply["reason"].as_str().unwrap();
    assert!(
        reason.contains("/nonexistent/bin/ghost") && reason.contains("No such file"),
        "{reason}"
    );
    assert_eq!(
        agent.call("status", json!({"name": "ghost"}))["status"],
        "stopped"
    );
}

#[test]
fn hooks_run_with_context_and_a_failing_before_start_aborts_the_start() {
    let agent = Agent::start("");
    let marker = agent.dir.path().join("spawned");
    let add = agent.call_as_owner(
        "add",
        json!({"name": "hooked", "cmd": "sleep 1000", "options": {
            "hooks": {"after_spawn": format!("echo \"$TROUPE_WATCHER $TROUPE_PID\" >> {}", marker.display())}
        }, "start": true, "waiting": true}),
    );
    assert_eq!(add["status"], "ok", "{add}");
    let pid = agent.pids("hooked")[0];
    wait_for("the after_spawn hook", Duration::from_secs(5), || {
        std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == format!("hooked {pid}"))
    });

    let add = agent.call_as_owner(
        "add",
        json!({"name": "guarded", "cmd": "sleep 1000", "options": {
            "hooks": {"before_start": "echo disk full >&2; exit 1"}
        }}),
    );
    assert_eq!(add["status"], "ok", "{add}");
    let start = agent.call("start", json!({"name": "guarded", "waiting": true}));
    assert_eq!(start["status"], "error", "{start}");
    assert!(
        start["reason"].as_str().unwrap().contains("before_start"),
        "{start}"
    );
    assert_eq!(
        agent.call("status", json!({"name": "guarded"}))["status"],
        "stopped"
    );
    assert!(agent.pids("guarded").is_empty());
}

#[test]
fn output_is_captured_with_circus_prefix_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let agent = Agent::start(&format!(
        "[watcher.talker]\ncmd = \"sh\"\nargs = [\"-c\", \"i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; sleep 1000\"]\nstdout = {{ file = \"{}\", max_bytes = 4000, backup_count = 2 }}\n",
        log.display()
    ));
    let pid = agent.running_pids("talker", 1)[0];
    wait_for("the last line", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("line-199-"))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap();
    assert!(first.contains(&format!(" [{pid}] | line-")), "{first}");
    assert!(dir.path().join("out.log.1").exists() && dir.path().join("out.log.2").exists());
    assert!(!dir.path().join("out.log.3").exists());
    assert!(std::fs::metadata(&log).unwrap().len() <= 4000);
}

#[test]
fn sighup_reloads_the_config_file() {
    let agent = Agent::start("[watcher.one]\ncmd = \"sleep 1000\"\n");
    let config = std::fs::read_to_string(&agent.config_path).unwrap();
    std::fs::write(
        &agent.config_path,
        config.replace(
            "[watcher.one]\ncmd = \"sleep 1000\"\n",
            "[watcher.one]\ncmd = \"sleep 1000\"\nnumprocesses = 3\n\n[watcher.two]\ncmd = \"sleep 1000\"\n",
        ),
    )
    .unwrap();
    let one_before = agent.running_pids("one", 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_for(
        "watcher two and 3 processes of one",
        Duration::from_secs(5),
        || {
            agent.call("list", json!({}))["watchers"] == json!(["one", "two"])
                && agent.pids("one").len() == 3
                && agent.pids("two").len() == 1
        },
    );
    assert!(
        agent.pids("one").contains(&one_before[0]),
        "a numprocesses change keeps the running process"
    );
}

#[test]
fn sigterm_stops_every_process_and_exits_cleanly() {
    let mut agent = Agent::start(
        "[watcher.a]\ncmd = \"sleep 1000\"\nnumprocesses = 3\n\n[watcher.b]\ncmd = \"sleep 1000\"\n",
    );
    let mut pids = agent.running_pids("a", 3);
    pids.extend(agent.running_pids("b", 1));
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived the agent");
    }
}

/// Direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The agent raises its own soft open-files limit (its sampler keeps files open per process),
/// but its children get the limit it was started with.
#[test]
fn children_get_the_open_files_limit_the_agent_was_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("limit");
    let address = crate::support::unique_loopback();
    let config = dir.path().join("troupe-agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nbind = \"{address}\"\nstate_dir = \"{}\"\nmdns = false\n\n\
             [watcher.probe]\ncmd = \"sh\"\nargs = [\"-c\", \"ulimit -Sn > {}; exec sleep 1000\"]\n",
            dir.path().join("state").display(),
            seen.display()
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" --config \"$1\"")
        .arg(crate::support::bin("troupe-agent"))
        .arg(&config);
    let agent = crate::support::Daemon::spawn("troupe-agent", command, &dir.path().join("log"));
    wait_for("the watcher's report", Duration::from_secs(10), || {
        std::fs::read_to_string(&seen).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(&seen).unwrap().trim(), "256");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3], open_files[4],
        "agent's soft = hard: {limits}"
    );
}

/// A reload that changes only options needing no new processes (timeouts, retries, the
/// service profile) applies them to the running watcher: its processes are left alone.
/// (zookeeper: etcd's profile also hands later spawns its etcd.env, which `sleep` lacks.)
#[test]
fn a_reload_of_options_that_need_no_new_processes_keeps_the_processes() {
    let agent = Agent::start("[watcher.one]\ncmd = \"sleep 1000\"\nnumprocesses = 2\n");
    let before = agent.running_pids("one", 2);
    let config = std::fs::read_to_string(&agent.config_path).unwrap();
    std::fs::write(
        &agent.config_path,
        config.replace(
            "numprocesses = 2\n",
            "numprocesses = 2\ngraceful_timeout = 2\nmax_retry = 7\nprofile = \"zookeeper\"\n",
        ),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_for("the new options", Duration::from_secs(5), || {
        let reply = agent.call(
            "get",
            json!({"name": "one", "keys": ["graceful_timeout", "max_retry", "profile"]}),
        );
        let options = &reply["options"];
        options["graceful_timeout"].as_f64() == Some(2.0)
            && options["max_retry"] == 7
            && options["profile"] == "zookeeper"
    });
    assert_eq!(agent.pids("one"), before, "no process was replaced");
    // A change that needs new processes still replaces them.
    let config = std::fs::read_to_string(&agent.config_path).unwrap();
    std::fs::write(
        &agent.config_path,
        config.replace("sleep 1000", "sleep 999"),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    // The watcher is replaced: for a moment it is not there at all.
    wait_for("new processes", Duration::from_secs(10), || {
        let pids = agent.call("list", json!({"name": "one"}))["pids"].clone();
        pids.as_array().is_some_and(|pids| {
            pids.len() == 2
                && pids
                    .iter()
                    .all(|p| !before.contains(&(p.as_u64().unwrap() as u32)))
        })
    });
}

/// What a supervised process starts with: its own process group, stdin on /dev/null, no file
/// of the agent's beyond 0-2, no blocked signal, no ignored one but those the agent was started
/// with (not the SIGPIPE it ignores itself), its working dir and environment, and death with a
/// SIGKILLed agent.
#[test]
fn a_child_starts_clean_in_its_own_group_and_dies_with_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&format!(
        "[watcher.clean]\ncmd = \"sleep\"\nargs = \"1000\"\ncopy_env = false\nworking_dir = \"{}\"\nenv = {{ COLOUR = \"blue\" }}\n",
        dir.path().display()
    ));
    let pid = agent.running_pids("clean", 1)[0];
    // Past its start-up (the loader opens and closes files, libc sets its signal mask): asleep.
    wait_for(
        "the child asleep in clock_nanosleep",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(format!("/proc/{pid}/wchan"))
                .is_ok_and(|w| w == "hrtimer_nanosleep")
        },
    );
    assert_eq!(
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
            .unwrap()
            .as_raw() as u32,
        pid,
        "a process group of its own"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap(),
        std::path::Path::new("/dev/null")
    );
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|fd| fd.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "no descriptor of the agent leaks into a child"
    );
    assert_eq!(proc_status(pid, "SigBlk"), "0000000000000000");
    // Ignored: what the agent was started with (inherited, as from any parent), minus the
    // SIGPIPE the Rust runtime ignores in the agent.
    let ignored = |pid| u64::from_str_radix(&proc_status(pid, "SigIgn"), 16).unwrap();
    let sigpipe = 1u64 << (nix::sys::signal::Signal::SIGPIPE as u32 - 1);
    assert_ne!(
        ignored(agent.pid()) & sigpipe,
        0,
        "the agent ignores SIGPIPE"
    );
    assert_eq!(ignored(pid), ignored(agent.pid()) & !sigpipe);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        dir.path().canonicalize().unwrap()
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut keys: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect();
    keys.sort();
    let keys: Vec<&str> = keys.iter().map(|e| e.split('=').next().unwrap()).collect();
    assert_eq!(keys, ["COLOUR", "PATH", "TROUPE_WATCHER", "TROUPE_WID"]);
    agent.kill();
    wait_for(
        "the child to die with the agent",
        Duration::from_secs(5),
        || !alive(pid),
    );
}

/// A command that exists but cannot be executed fails the start with the cause, and the agent
/// serves on.
#[test]
fn a_command_that_cannot_be_executed_fails_start_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\nsleep 1000\n").unwrap();
    let agent = Agent::start(&format!(
        "[watcher.denied]\ncmd = \"{}\"\nautostart = false\n\n[watcher.nowhere]\ncmd = \"sleep\"\nargs = \"1000\"\nworking_dir = \"/nonexistent/dir\"\nautostart = false\n",
        script.display()
    ));
    for (watcher, cause) in [("denied", "Permission denied"), ("nowhere", "No such file")] {
        let reply = agent.call("start", json!({"name": watcher, "waiting": true}));
        let reason = reply["reason"].as_str().unwrap_or_default();
        assert!(
            reply["status"] == "error" && reason.contains(cause),
            "{watcher}: {reply}"
        );
    }
    assert_eq!(agent.call("numwatchers", json!({}))["numwatchers"], 2);
}
