//! The stock Python `circusctl` (Circus 0.19) against the real agent, exactly as a user runs it:
//! every command's printed output and exit code. State is checked through `agent.call`/
//! `agent.pids` and /proc, never changed except through circusctl.
//!
//! Expected outputs come from CIRCUS.md and from running the same circusctl commands against a
//! real circusd 0.19. Reminders of how circusctl prints (circus/circusctl.py, commands/*.py):
//! success goes to stdout with exit 0; an error reply goes to stderr as `error: <reason>` with
//! exit 3 (except `status`, which prints only `error`, and `globaloptions`, which prints the bare
//! reason); with `--json` the raw reply is printed and the exit code is always 0.

use crate::support::{alive, circusctl, wait_for, Agent, CtlOutput};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(15);

// ----------------------------------------------------------------------------------------------
// Helpers

/// `[watcher.NAME]` running `sleep 1000` with a quick stop.
fn sleeper(name: &str, numprocesses: u32) -> String {
    format!(
        "[watcher.{name}]\ncmd = \"sleep 1000\"\nnumprocesses = {numprocesses}\ngraceful_timeout = 1\n\n"
    )
}

/// Like [`sleeper`], but not started with the agent.
fn manual_sleeper(name: &str, numprocesses: u32) -> String {
    format!(
        "[watcher.{name}]\ncmd = \"sleep 1000\"\nnumprocesses = {numprocesses}\ngraceful_timeout = 1\nautostart = false\n\n"
    )
}

/// Runs circusctl against `agent`.
fn ctl(agent: &Agent, args: &[&str]) -> CtlOutput {
    circusctl(&agent.endpoint(), args)
}

/// Runs circusctl against `agent`'s owner-only socket, asserting it succeeded silently on
/// stderr.
#[track_caller]
fn owner_ctl(agent: &Agent, args: &[&str]) -> CtlOutput {
    let out = circusctl(&agent.ipc_endpoint(), args);
    assert!(
        out.code == 0 && out.stderr.is_empty(),
        "`circusctl --endpoint {} {}` should succeed: {out:#?}",
        agent.ipc_endpoint(),
        args.join(" ")
    );
    out
}

/// Runs circusctl, asserts it succeeded silently on stderr, and returns its stdout.
#[track_caller]
fn ok(agent: &Agent, args: &[&str]) -> String {
    let out = ctl(agent, args);
    assert!(
        out.code == 0 && out.stderr.is_empty(),
        "`circusctl {}` should succeed: {out:#?}",
        args.join(" ")
    );
    out.stdout
}

/// Asserts that circusctl printed exactly `stdout` (trailing whitespace aside) and exited 0.
#[track_caller]
fn prints(agent: &Agent, args: &[&str], stdout: &str) {
    let printed = ok(agent, args);
    assert_eq!(
        printed,
        stdout.trim_end(),
        "output of `circusctl {}`",
        args.join(" ")
    );
}

/// Asserts that circusctl failed with `code`, printing nothing on stdout and exactly `stderr`.
#[track_caller]
fn fails(agent: &Agent, args: &[&str], code: i32, stderr: &str) {
    let out = ctl(agent, args);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.trim_end()),
        (code, "", stderr),
        "`circusctl {}`: {out:#?}",
        args.join(" ")
    );
}

/// Waits until `watcher` lists `n` live processes, none of them in `old`.
#[track_caller]
fn wait_replaced(agent: &Agent, watcher: &str, old: &[u32], n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    wait_for(
        &format!("{n} new processes in '{watcher}' replacing {old:?}"),
        TIMEOUT,
        || {
            pids = agent.pids(watcher);
            pids.len() == n && pids.iter().all(|p| alive(*p) && !old.contains(p))
        },
    );
    pids
}

/// Waits until every pid in `pids` is gone.
#[track_caller]
fn wait_gone(pids: &[u32]) {
    for pid in pids {
        wait_for(&format!("pid {pid} to be gone"), TIMEOUT, || !alive(*pid));
    }
}

/// Waits until `watcher` reports `state` (active, stopped, ...).
#[track_caller]
fn wait_state(agent: &Agent, watcher: &str, state: &str) {
    wait_for(&format!("'{watcher}' to be {state}"), TIMEOUT, || {
        agent.call("status", json!({ "name": watcher }))["status"] == state
    });
}

/// Pids as `list <w>` prints them.
fn joined(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The command line of `pid`, arguments separated by spaces.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Writes a `/bin/sh` script into `dir` and returns its path.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    path
}

/// The lines of a file, or none if it does not exist yet.
fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `key: value` lines (options, get, globaloptions) in printed order.
fn key_values(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .map(|line| {
            let (key, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("not a `key: value` line: {line:?}"));
            let value = value.strip_prefix(' ').unwrap_or(value);
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// The name of the user running the tests, as `stats` prints it.
fn username() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("current user name")
}

/// One process line of `stats`/`dstats`: `<pid>  <cmdline> <user> <nice> <mem_info1>
/// <mem_info2> <cpu> <mem> <ctime>` (Circus's `_INFOLINE`). Returns (pid, cmdline, user).
#[track_caller]
fn parse_info_line(line: &str) -> (u32, String, String) {
    let (pid, rest) = line
        .split_once("  ")
        .unwrap_or_else(|| panic!("no `<pid>  ` in {line:?}"));
    let fields: Vec<&str> = rest.split(' ').collect();
    assert_eq!(fields.len(), 8, "8 fields after the pid in {line:?}");
    let human = |s: &str| {
        s.len() > 1
            && "BKMGTPEZY".contains(&s[s.len() - 1..])
            && s[..s.len() - 1].parse::<f64>().is_ok()
    };
    assert!(
        fields[2].parse::<i64>().is_ok(),
        "nice is a number in {line:?}"
    );
    assert!(
        human(fields[3]) && human(fields[4]),
        "mem_info1/2 are human sizes in {line:?}"
    );
    assert!(
        fields[5].parse::<f64>().is_ok() && fields[6].parse::<f64>().is_ok(),
        "cpu and mem are numbers in {line:?}"
    );
    let ctime_ok = fields[7].split_once(':').is_some_and(|(m, s)| {
        m.parse::<u64>().is_ok()
            && s.split_once('.').is_some_and(|(secs, frac)| {
                secs.len() == 2 && secs.parse::<u8>().is_ok() && frac.parse::<u32>().is_ok()
            })
    });
    assert!(ctime_ok, "ctime is M:SS.cc in {line:?}");
    (
        pid.parse().unwrap_or_else(|_| panic!("pid in {line:?}")),
        fields[0].to_string(),
        fields[1].to_string(),
    )
}

/// `stats` output: watcher header (`name:`) -> the pids of its `<pid>: <info>` lines. Each
/// process line must name the same pid twice, run `cmd` and belong to the current user.
#[track_caller]
fn parse_stats(output: &str, cmd: &str) -> BTreeMap<String, Vec<u32>> {
    let mut watchers: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut current = None;
    let user = username();
    for line in output.lines() {
        if let Some(name) = line.strip_suffix(':') {
            watchers.insert(name.to_string(), Vec::new());
            current = Some(name.to_string());
            continue;
        }
        let (key, info) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("unexpected stats line {line:?} in\n{output}"));
        assert!(
            !info.starts_with("No such process"),
            "stats reports a running process as gone: {line:?} in\n{output}"
        );
        let (pid, command, owner) = parse_info_line(info);
        assert_eq!(key, pid.to_string(), "the key is the pid in {line:?}");
        assert_eq!((command.as_str(), owner.as_str()), (cmd, user.as_str()));
        let watcher = current.as_ref().expect("a process line after a header");
        watchers.get_mut(watcher).unwrap().push(pid);
    }
    watchers
}

fn sorted(mut pids: Vec<u32>) -> Vec<u32> {
    pids.sort_unstable();
    pids
}

#[test]
fn the_stats_line_parser_accepts_what_circusd_prints() {
    // Lines printed by `circusctl stats w` and `circusctl dstats` against circusd 0.19.
    assert_eq!(
        parse_info_line("22805  sleep root 0 1.46M 2.44M 0.0 0.006 0:00.0"),
        (22805, "sleep".to_string(), "root".to_string())
    );
    assert_eq!(
        parse_info_line("22632  python3 root 0 30.95M 118.50M 0.0 0.128 0:00.25"),
        (22632, "python3".to_string(), "root".to_string())
    );
}

// ----------------------------------------------------------------------------------------------
// list, status, numprocesses, numwatchers

#[test]
fn list_prints_sorted_lowercase_names_and_comma_joined_pids() {
    let agent = Agent::start(&format!(
        "{}{}{}",
        sleeper("beta", 2),
        sleeper("Alpha", 1),
        manual_sleeper("gamma", 1)
    ));
    let beta = agent.running_pids("beta", 2);
    let alpha = agent.running_pids("alpha", 1);
    prints(&agent, &["list"], "alpha,beta,gamma");
    prints(&agent, &["list", "beta"], &joined(&beta));
    prints(&agent, &["list", "Alpha"], &joined(&alpha));
    // A stopped watcher has no pids: an empty line.
    prints(&agent, &["list", "gamma"], "");
}

#[test]
fn status_prints_every_watcher_sorted_by_name_or_the_state_of_one() {
    let agent = Agent::start(&format!(
        "{}{}",
        sleeper("Web", 1),
        manual_sleeper("idle", 1)
    ));
    wait_state(&agent, "web", "active");
    // circusctl sorts the original-case names (Python order: uppercase first).
    prints(&agent, &["status"], "Web: active\nidle: stopped");
    prints(&agent, &["status", "web"], "active");
    prints(&agent, &["status", "idle"], "stopped");
}

#[test]
fn numprocesses_and_numwatchers_print_the_counts() {
    let agent = Agent::start(&format!(
        "{}{}{}",
        sleeper("a", 2),
        sleeper("b", 3),
        manual_sleeper("c", 1)
    ));
    agent.running_pids("a", 2);
    agent.running_pids("b", 3);
    prints(&agent, &["numprocesses"], "5");
    prints(&agent, &["numprocesses", "b"], "3");
    prints(&agent, &["numprocesses", "c"], "0");
    prints(&agent, &["numwatchers"], "3");
}

#[test]
fn watcher_names_are_case_insensitive_and_echoed_as_given() {
    let agent = Agent::start(&sleeper("Web", 1));
    let pids = agent.running_pids("web", 1);
    prints(&agent, &["list"], "web");
    prints(&agent, &["status", "WEB"], "active");
    prints(&agent, &["list", "WEB"], &joined(&pids));
    let reply: Value =
        serde_json::from_str(&ok(&agent, &["--json", "numprocesses", "WEB"])).unwrap();
    assert_eq!(
        (&reply["numprocesses"], &reply["watcher_name"]),
        (&json!(1), &json!("WEB")),
        "{reply}"
    );
    // Circus's stats reply names the watcher as the request did: circusctl prints "WEB:".
    let stats = ok(&agent, &["stats", "WEB"]);
    assert_eq!(stats.lines().next(), Some("WEB:"), "{stats}");
}

// ----------------------------------------------------------------------------------------------
// start, stop, restart

#[test]
fn stop_and_start_one_watcher_with_waiting_and_all_watchers() {
    let agent = Agent::start(&format!(
        "{}{}",
        sleeper("w", 2),
        manual_sleeper("manual", 1)
    ));
    let first = agent.running_pids("w", 2);

    prints(&agent, &["stop", "w", "--waiting"], "ok");
    prints(&agent, &["status", "w"], "stopped");
    prints(&agent, &["list", "w"], "");
    wait_gone(&first);

    prints(&agent, &["start", "w", "--waiting"], "ok");
    prints(&agent, &["status", "w"], "active");
    let second = agent.pids("w");
    assert_eq!(second.len(), 2, "start --waiting replies once both run");
    assert!(second.iter().all(|p| alive(*p) && !first.contains(p)));

    // Without a name: every watcher; `start` skips autostart = false ones.
    prints(&agent, &["stop"], "ok");
    wait_state(&agent, "w", "stopped");
    wait_gone(&second);
    prints(&agent, &["start", "--waiting"], "ok");
    prints(&agent, &["status"], "manual: stopped\nw: active");
    agent.running_pids("w", 2);

    // Naming it starts it anyway.
    prints(&agent, &["start", "manual", "--waiting"], "ok");
    prints(&agent, &["status", "manual"], "active");
    let manual = agent.pids("manual");
    assert_eq!(manual.len(), 1);
    assert_eq!(cmdline(manual[0]), "sleep 1000");
}

#[test]
fn start_and_stop_select_watchers_with_match() {
    let agent = Agent::start(&format!(
        "{}{}{}",
        sleeper("web1", 1),
        sleeper("web2", 1),
        sleeper("db", 1)
    ));
    let db = agent.running_pids("db", 1);
    agent.running_pids("web1", 1);
    agent.running_pids("web2", 1);

    // The default match is glob.
    prints(&agent, &["stop", "web*", "--waiting"], "ok");
    prints(
        &agent,
        &["status"],
        "db: active\nweb1: stopped\nweb2: stopped",
    );

    prints(
        &agent,
        &["start", "--match", "glob", "WEB?", "--waiting"],
        "ok",
    );
    prints(
        &agent,
        &["status"],
        "db: active\nweb1: active\nweb2: active",
    );
    agent.running_pids("web1", 1);
    agent.running_pids("web2", 1);

    prints(
        &agent,
        &["stop", "--match", "regex", "web[12]", "--waiting"],
        "ok",
    );
    prints(
        &agent,
        &["status"],
        "db: active\nweb1: stopped\nweb2: stopped",
    );

    prints(
        &agent,
        &["start", "--match", "simple", "web2", "--waiting"],
        "ok",
    );
    prints(
        &agent,
        &["status"],
        "db: active\nweb1: stopped\nweb2: active",
    );
    assert_eq!(agent.pids("db"), db, "db was never touched");

    fails(
        &agent,
        &["start", "--match", "glob", "nothing*"],
        3,
        "error: program nothing* not found",
    );
}

#[test]
fn regex_match_is_anchored_at_the_start_only_as_in_circus() {
    // Circus compiles the pattern and uses re.match: "web" selects web1 and web2.
    let agent = Agent::start(&format!(
        "{}{}{}",
        sleeper("web1", 1),
        sleeper("web2", 1),
        sleeper("db", 1)
    ));
    wait_state(&agent, "web1", "active");
    wait_state(&agent, "web2", "active");
    wait_state(&agent, "db", "active");
    prints(
        &agent,
        &["stop", "--match", "regex", "web", "--waiting"],
        "ok",
    );
    prints(
        &agent,
        &["status"],
        "db: active\nweb1: stopped\nweb2: stopped",
    );
}

#[test]
fn restart_replaces_every_process() {
    let agent = Agent::start(&format!("{}{}", sleeper("w", 2), sleeper("other", 1)));
    let first = agent.running_pids("w", 2);
    let other = agent.running_pids("other", 1);

    prints(&agent, &["restart", "w", "--waiting"], "ok");
    let second = agent.pids("w");
    assert_eq!(second.len(), 2, "restart --waiting replies once both run");
    assert!(second.iter().all(|p| alive(*p) && !first.contains(p)));
    wait_gone(&first);
    assert_eq!(agent.pids("other"), other, "only 'w' was restarted");

    // Without a name: every watcher, in the background.
    prints(&agent, &["restart"], "ok");
    wait_replaced(&agent, "w", &second, 2);
    wait_replaced(&agent, "other", &other, 1);
}

// ----------------------------------------------------------------------------------------------
// incr, decr

#[test]
fn incr_and_decr_resize_and_print_the_new_count_when_waiting() {
    let agent = Agent::start(&sleeper("w", 1));
    let first = agent.running_pids("w", 1)[0];

    // Without --waiting the reply carries no count: circusctl prints "ok".
    prints(&agent, &["incr", "w"], "ok");
    let two = agent.running_pids("w", 2);
    assert!(two.contains(&first));

    prints(&agent, &["incr", "w", "2", "--waiting"], "4");
    let four = agent.pids("w");
    assert_eq!(
        four.len(),
        4,
        "incr --waiting replies once all run: {four:?}"
    );
    prints(&agent, &["numprocesses", "w"], "4");

    // Surplus processes go oldest first.
    prints(&agent, &["decr", "w", "--waiting"], "3");
    assert_eq!(agent.pids("w"), four[1..].to_vec());
    assert!(!agent.pids("w").contains(&first));

    prints(&agent, &["decr", "w", "2"], "ok");
    assert_eq!(agent.running_pids("w", 1), vec![four[3]]);

    // The count never goes below 0.
    prints(&agent, &["decr", "w", "5", "--waiting"], "0");
    assert_eq!(agent.pids("w"), Vec::<u32>::new());
    prints(&agent, &["numprocesses", "w"], "0");
    wait_gone(&four);
}

#[test]
fn incr_and_decr_on_a_singleton_print_the_notice() {
    const NOTICE: &str = "This watcher is a Singleton - not changing the number of processes";
    let agent = Agent::start(
        "[watcher.single]\ncmd = \"sleep 1000\"\nsingleton = true\ngraceful_timeout = 1\n",
    );
    let pid = agent.running_pids("single", 1);
    // Circus answers a singleton before looking at `waiting`: the notice comes either way.
    prints(&agent, &["incr", "single", "--waiting"], NOTICE);
    prints(&agent, &["decr", "single", "--waiting"], NOTICE);
    prints(&agent, &["incr", "single"], NOTICE);
    prints(&agent, &["incr", "single", "3"], NOTICE);
    prints(&agent, &["decr", "single"], NOTICE);
    prints(&agent, &["numprocesses", "single"], "1");
    assert_eq!(agent.pids("single"), pid);
}

// ----------------------------------------------------------------------------------------------
// stats, dstats

#[test]
fn stats_print_one_line_per_process_for_all_one_watcher_or_one_pid() {
    let agent = Agent::start(&format!("{}{}", sleeper("w", 2), manual_sleeper("idle", 1)));
    let pids = agent.running_pids("w", 2);

    let one = ok(&agent, &["stats", "w"]);
    assert_eq!(one.lines().next(), Some("w:"), "{one}");
    let parsed = parse_stats(&one, "sleep");
    assert_eq!(parsed.len(), 1, "{one}");
    assert_eq!(sorted(parsed["w"].clone()), sorted(pids.clone()), "{one}");

    let all = ok(&agent, &["stats"]);
    let parsed = parse_stats(&all, "sleep");
    let expected: BTreeMap<String, Vec<u32>> = [
        ("idle".to_string(), vec![]),
        ("w".to_string(), sorted(pids.clone())),
    ]
    .into_iter()
    .collect();
    let parsed: BTreeMap<String, Vec<u32>> =
        parsed.into_iter().map(|(k, v)| (k, sorted(v))).collect();
    assert_eq!(parsed, expected, "{all}");

    let pid = pids[1].to_string();
    let single = ok(&agent, &["stats", "w", &pid]);
    assert_eq!(single.lines().count(), 1, "{single}");
    let (key, info) = single.split_once(": ").expect("`<pid>: <info>`");
    assert_eq!(key, pid);
    let (listed, command, user) = parse_info_line(info);
    assert_eq!(
        (listed, command.as_str(), user),
        (pids[1], "sleep", username())
    );

    fails(
        &agent,
        &["stats", "w", "999999"],
        3,
        "error: process 999999 not found in 'w'",
    );
}

#[test]
fn dstats_prints_the_agents_own_process() {
    let agent = Agent::start("");
    let out = ok(&agent, &["dstats"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "no `Children:` section: {out}");
    assert_eq!(lines[0], "Main Process:");
    let info = lines[1]
        .strip_prefix("    ")
        .unwrap_or_else(|| panic!("indented by 4: {out}"));
    let (pid, command, user) = parse_info_line(info);
    assert_eq!(
        (pid, command.as_str(), user),
        (agent.pid(), "troupe-agent", username())
    );
}

// ----------------------------------------------------------------------------------------------
// get, set, options, globaloptions

const CONFIGURED: &str = "[watcher.w]\ncmd = \"sleep 1000\"\nnumprocesses = 2\ngraceful_timeout = 1\nenv = { FOO = \"bar\", ANSWER = \"42\" }\n";

#[test]
fn get_prints_the_requested_options_as_circus_renders_them() {
    let agent = Agent::start(CONFIGURED);
    prints(
        &agent,
        &["get", "w", "cmd", "env", "graceful_timeout", "numprocesses", "stop_signal"],
        "cmd: sleep 1000\nenv: ANSWER=42,FOO=bar\ngraceful_timeout: 1.0\nnumprocesses: 2\nstop_signal: 15",
    );
    prints(
        &agent,
        &["get", "w", "copy_env", "respawn"],
        "copy_env: False\nrespawn: True",
    );
}

#[test]
fn get_prints_the_options_in_the_order_they_were_asked_for() {
    // Circus builds the reply dict in request order; circusctl prints it in that order.
    let agent = Agent::start(CONFIGURED);
    prints(
        &agent,
        &[
            "get",
            "w",
            "stop_signal",
            "numprocesses",
            "graceful_timeout",
        ],
        "stop_signal: 15\nnumprocesses: 2\ngraceful_timeout: 1.0",
    );
}

#[test]
fn get_an_unknown_option_exits_3() {
    let agent = Agent::start(CONFIGURED);
    fails(
        &agent,
        &["get", "w", "bogus_key"],
        3,
        "error: 'bogus_key' option not found",
    );
    fails(
        &agent,
        &["get", "w", "numprocesses", "bogus_key"],
        3,
        "error: 'bogus_key' option not found",
    );
}

#[test]
fn options_prints_every_option_sorted_by_name() {
    let agent = Agent::start(CONFIGURED);
    let out = ok(&agent, &["options", "w"]);
    let pairs = key_values(&out);
    let keys: Vec<&String> = pairs.iter().map(|(k, _)| k).collect();
    let mut sorted_keys = keys.clone();
    sorted_keys.sort();
    assert_eq!(keys, sorted_keys, "options are printed sorted:\n{out}");
    let options: BTreeMap<String, String> = pairs.iter().cloned().collect();
    for (key, value) in [
        ("cmd", "sleep 1000"),
        ("numprocesses", "2"),
        ("graceful_timeout", "1.0"),
        ("stop_signal", "15"),
        ("env", "ANSWER=42,FOO=bar"),
        ("copy_env", "False"),
        ("respawn", "True"),
        ("singleton", "False"),
        ("send_hup", "False"),
        ("shell", "False"),
        ("stop_children", "False"),
        ("max_retry", "5"),
        ("priority", "0"),
    ] {
        assert_eq!(
            options.get(key).map(String::as_str),
            Some(value),
            "`{key}` in\n{out}"
        );
    }
}

#[test]
fn options_and_get_know_every_circus_option_with_circus_defaults() {
    // What `circusctl options w` prints for these keys against circusd 0.19 for a watcher
    // that sets only cmd, numprocesses and graceful_timeout.
    let agent = Agent::start(CONFIGURED);
    let out = ok(&agent, &["options", "w"]);
    let options: BTreeMap<String, String> = key_values(&out).into_iter().collect();
    let circus = [
        ("args", ""),
        ("close_child_stderr", "False"),
        ("close_child_stdin", "True"),
        ("close_child_stdout", "False"),
        ("executable", ""),
        ("gid", ""),
        ("max_age", "0"),
        ("max_age_variance", "30"),
        ("on_demand", "False"),
        ("shell_args", ""),
        ("stderr_stream_conf", "{}"),
        ("stdout_stream_conf", "{}"),
        ("uid", ""),
        ("use_sockets", "False"),
        ("warmup_delay", "0"),
        ("working_dir", ""),
    ];
    let mismatches: Vec<String> = circus
        .iter()
        .filter(|(key, value)| match options.get(*key) {
            // working_dir is circusd's cwd: only its presence is checked.
            Some(_) if *key == "working_dir" => false,
            Some(got) => got != value,
            None => true,
        })
        .map(|(key, value)| {
            format!(
                "{key}: expected {value:?}, got {:?}",
                options.get(*key).map(String::as_str).unwrap_or("<missing>")
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "`circusctl options w` differs from Circus:\n  {}\n--- printed ---\n{out}",
        mismatches.join("\n  ")
    );
    prints(&agent, &["get", "w", "uid", "gid"], "uid: \ngid:");
}

#[test]
fn set_numprocesses_and_graceful_timeout() {
    let agent = Agent::start(&sleeper("w", 1));
    let first = agent.running_pids("w", 1)[0];

    prints(&agent, &["set", "w", "numprocesses", "3"], "ok");
    let three = agent.running_pids("w", 3);
    assert!(three.contains(&first), "growing keeps the running process");
    prints(&agent, &["get", "w", "numprocesses"], "numprocesses: 3");

    prints(
        &agent,
        &["set", "w", "graceful_timeout", "0.5", "--waiting"],
        "ok",
    );
    prints(
        &agent,
        &["get", "w", "graceful_timeout"],
        "graceful_timeout: 0.5",
    );
    assert_eq!(agent.pids("w"), three, "graceful_timeout needs no reload");
}

#[test]
fn set_stop_signal_int_is_what_stop_sends() {
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("stopped-by");
    let ready = scratch.path().join("ready");
    let body = format!(
        "trap 'echo int > {m}; exit 0' INT\ntrap 'echo term > {m}; exit 0' TERM\necho $$ >> {r}\nwhile :; do sleep 0.1; done",
        m = marker.display(),
        r = ready.display()
    );
    let path = script(scratch.path(), "traps.sh", &body);
    let agent = Agent::start(&format!(
        "[watcher.w]\ncmd = \"sh {}\"\ngraceful_timeout = 5\n",
        path.display()
    ));
    let pid = agent.running_pids("w", 1)[0];
    wait_for("the traps to be set", TIMEOUT, || {
        lines_of(&ready) == vec![pid.to_string()]
    });

    prints(&agent, &["set", "w", "stop_signal", "INT"], "ok");
    prints(&agent, &["get", "w", "stop_signal"], "stop_signal: 2");
    assert_eq!(agent.pids("w"), vec![pid], "stop_signal needs no reload");

    prints(&agent, &["stop", "w", "--waiting"], "ok");
    assert_eq!(
        lines_of(&marker),
        vec!["int".to_string()],
        "signal received"
    );
    assert!(!alive(pid));
}

#[test]
fn set_cmd_reloads_the_processes_with_the_new_command() {
    // `set cmd` goes to the owner-only socket; over TCP, even loopback, it is refused.
    let agent = Agent::start(&sleeper("w", 2));
    let old = agent.running_pids("w", 2);
    let refused = ctl(&agent, &["set", "w", "cmd", "sleep 999"]);
    assert_eq!(refused.code, 3, "{refused:#?}");
    assert!(
        refused.stderr.contains("set cmd over TCP is refused")
            && refused.stderr.contains(&agent.ipc_endpoint()),
        "{refused:#?}"
    );
    assert_eq!(
        owner_ctl(&agent, &["set", "w", "cmd", "sleep 999"]).stdout,
        "ok"
    );
    let new = wait_replaced(&agent, "w", &old, 2);
    for pid in &new {
        assert_eq!(cmdline(*pid), "sleep 999");
    }
    wait_gone(&old);
    prints(&agent, &["get", "w", "cmd"], "cmd: sleep 999");
    prints(&agent, &["status", "w"], "active");
}

#[test]
fn set_with_a_bad_option_exits_3_with_the_reason_and_changes_nothing() {
    let agent = Agent::start(&sleeper("w", 1));
    let pid = agent.running_pids("w", 1);
    // circusctl passes rlimit_* through; circusd refuses an unknown rlimit with errno 3
    // ("'rlimit_bogus' isn't a valid rlimit setting").
    let out = ctl(&agent, &["set", "w", "rlimit_bogus", "5"]);
    assert_eq!((out.code, out.stdout.as_str()), (3, ""), "{out:#?}");
    assert!(
        out.stderr.starts_with("error: ") && out.stderr.contains("rlimit_bogus"),
        "{out:#?}"
    );
    fails(
        &agent,
        &["set", "ghost", "numprocesses", "2"],
        3,
        "error: program ghost not found",
    );
    prints(&agent, &["get", "w", "numprocesses"], "numprocesses: 1");
    assert_eq!(agent.pids("w"), pid);
}

#[test]
fn globaloptions_prints_the_agents_endpoints() {
    let agent = Agent::start("");
    let address = &agent.address;
    let out = ok(&agent, &["globaloptions"]);
    let options: BTreeMap<String, String> = key_values(&out).into_iter().collect();
    for (key, value) in [
        ("endpoint", format!("tcp://{address}:5555")),
        ("owner_endpoint", agent.ipc_endpoint()),
        ("pubsub_endpoint", format!("tcp://{address}:5556")),
        ("stats_endpoint", format!("tcp://{address}:5557")),
        (
            "multicast_endpoint",
            "udp://237.219.251.97:12027".to_string(),
        ),
    ] {
        assert_eq!(options.get(key), Some(&value), "`{key}` in\n{out}");
    }
    assert!(
        options
            .get("check_delay")
            .is_some_and(|v| v.parse::<f64>().is_ok()),
        "check_delay is a number:\n{out}"
    );
    prints(
        &agent,
        &["globaloptions", "endpoint"],
        &format!("endpoint: tcp://{address}:5555"),
    );
    // globaloptions prints the bare reason (no "error: ") for an unknown option.
    fails(
        &agent,
        &["globaloptions", "bogus"],
        3,
        "'bogus' not an existing option",
    );
}

// ----------------------------------------------------------------------------------------------
// add, rm

#[test]
fn add_creates_a_stopped_watcher_and_add_start_runs_it() {
    // `add` goes to the owner-only socket (stock circusctl speaks ipc:// as well); over TCP,
    // even loopback, it is refused.
    let agent = Agent::start("");
    let refused = ctl(&agent, &["add", "x", "sleep", "1000"]);
    assert_eq!(
        (refused.code, refused.stdout.as_str()),
        (3, ""),
        "{refused:#?}"
    );
    assert!(
        refused.stderr.starts_with("error: add over TCP is refused")
            && refused.stderr.contains(&agent.ipc_endpoint()),
        "{refused:#?}"
    );
    assert_eq!(
        owner_ctl(&agent, &["add", "x", "sleep", "1000"]).stdout,
        "ok"
    );
    prints(&agent, &["list"], "x");
    prints(&agent, &["status", "x"], "stopped");
    prints(&agent, &["list", "x"], "");

    let added = owner_ctl(&agent, &["add", "--start", "y", "sleep", "1000"]);
    assert_eq!(added.stdout, "ok");
    let pid = agent.running_pids("y", 1)[0];
    assert_eq!(cmdline(pid), "sleep 1000");
    prints(&agent, &["status", "y"], "active");
    prints(&agent, &["list"], "x,y");
    prints(&agent, &["numwatchers"], "2");

    // Names are unique ignoring case (circusd: errno 5, "... 'X' already exist").
    let out = circusctl(&agent.ipc_endpoint(), &["add", "X", "sleep", "5"]);
    assert_eq!((out.code, out.stdout.as_str()), (3, ""), "{out:#?}");
    assert!(
        out.stderr.starts_with("error: ") && out.stderr.contains("'X' already exist"),
        "{out:#?}"
    );
    prints(&agent, &["get", "x", "cmd"], "cmd: sleep 1000");
}

#[test]
fn rm_removes_the_watcher_and_stops_its_processes() {
    let agent = Agent::start(&format!("{}{}", sleeper("w", 2), sleeper("keep", 1)));
    let doomed = agent.running_pids("w", 2);
    let kept = agent.running_pids("keep", 1);
    prints(&agent, &["rm", "w"], "ok");
    prints(&agent, &["list"], "keep");
    prints(&agent, &["numwatchers"], "1");
    wait_gone(&doomed);
    fails(&agent, &["status", "w"], 3, "error");
    assert_eq!(agent.pids("keep"), kept);
}

// ----------------------------------------------------------------------------------------------
// signal, kill

#[test]
fn signal_hup_reaches_every_process_or_one_pid() {
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("hups");
    let ready = scratch.path().join("ready");
    let body = format!(
        "trap 'echo hup $$ >> {m}' HUP\ntrap 'echo usr1 $$ >> {m}' USR1\necho $$ >> {r}\n\
         while :; do sleep 0.1; done",
        m = marker.display(),
        r = ready.display()
    );
    let path = script(scratch.path(), "hup.sh", &body);
    let agent = Agent::start(&format!(
        "[watcher.w]\ncmd = \"sh {}\"\nnumprocesses = 2\ngraceful_timeout = 1\n",
        path.display()
    ));
    let pids = agent.running_pids("w", 2);
    let expected_ready: BTreeSet<String> = pids.iter().map(u32::to_string).collect();
    wait_for("the traps to be set", TIMEOUT, || {
        lines_of(&ready).into_iter().collect::<BTreeSet<_>>() == expected_ready
    });

    prints(&agent, &["signal", "w", "HUP"], "ok");
    let both: BTreeSet<String> = pids.iter().map(|p| format!("hup {p}")).collect();
    wait_for("both processes to log the HUP", TIMEOUT, || {
        lines_of(&marker).into_iter().collect::<BTreeSet<_>>() == both
    });
    assert_eq!(agent.pids("w"), pids, "trapped HUP kills nobody");

    let target = pids[1].to_string();
    prints(&agent, &["signal", "w", &target, "HUP"], "ok");
    wait_for("the second HUP", TIMEOUT, || lines_of(&marker).len() == 3);
    assert_eq!(lines_of(&marker)[2], format!("hup {target}"));
    // A negative: the other process must not get it. A USR1 sent to it later is trapped
    // after any HUP it got before (pending signals run in number order), so the line it
    // logs closes the window a stray HUP had to land in.
    let other = pids[0].to_string();
    prints(&agent, &["signal", "w", &other, "USR1"], "ok");
    wait_for("the other process's USR1", TIMEOUT, || {
        lines_of(&marker).contains(&format!("usr1 {other}"))
    });
    assert_eq!(
        lines_of(&marker)[2..],
        [format!("hup {target}"), format!("usr1 {other}")],
        "{:?}",
        lines_of(&marker)
    );
    assert_eq!(agent.pids("w"), pids);
}

#[test]
fn kill_one_pid_or_all_and_the_watcher_respawns() {
    let agent = Agent::start(&sleeper("w", 2));
    let pids = agent.running_pids("w", 2);
    let (victim, survivor) = (pids[0], pids[1]);

    prints(&agent, &["kill", "w", &victim.to_string()], "ok");
    wait_gone(&[victim]);
    let after = wait_replaced(&agent, "w", &[victim], 2);
    assert!(
        after.contains(&survivor),
        "only {victim} was killed: {after:?}"
    );

    prints(&agent, &["kill", "w", "--signum", "KILL"], "ok");
    wait_gone(&after);
    wait_replaced(&agent, "w", &after, 2);
    prints(&agent, &["status", "w"], "active");
}

// ----------------------------------------------------------------------------------------------
// reload, reloadconfig

#[test]
fn reload_replaces_processes_gracefully_and_sequentially() {
    let agent = Agent::start(&format!("{}{}", sleeper("w", 2), sleeper("other", 1)));
    let first = agent.running_pids("w", 2);
    let other = agent.running_pids("other", 1);

    prints(&agent, &["reload", "w"], "ok");
    let second = wait_replaced(&agent, "w", &first, 2);
    wait_gone(&first);

    prints(&agent, &["reload", "w", "--waiting"], "ok");
    let third = agent.pids("w");
    assert_eq!(third.len(), 2, "{third:?}");
    assert!(third.iter().all(|p| alive(*p) && !second.contains(p)));

    prints(&agent, &["reload", "w", "--sequential", "--waiting"], "ok");
    let fourth = agent.pids("w");
    assert_eq!(fourth.len(), 2, "{fourth:?}");
    assert!(fourth.iter().all(|p| alive(*p) && !third.contains(p)));
    assert_eq!(agent.pids("other"), other, "only 'w' was reloaded");

    // Without a name: every watcher.
    prints(&agent, &["reload"], "ok");
    wait_replaced(&agent, "w", &fourth, 2);
    wait_replaced(&agent, "other", &other, 1);
}

#[test]
fn reloadconfig_applies_the_edited_file() {
    let agent = Agent::start(&format!(
        "{}{}{}",
        sleeper("keep", 1),
        sleeper("grow", 1),
        sleeper("gone", 1)
    ));
    let keep = agent.running_pids("keep", 1);
    let grow = agent.running_pids("grow", 1);
    let gone = agent.running_pids("gone", 1);

    let text = std::fs::read_to_string(&agent.config_path).unwrap();
    let head = &text[..text.find("[watcher.").expect("watchers in the config")];
    let edited = format!(
        "{head}{}{}{}",
        sleeper("keep", 1),
        sleeper("grow", 3),
        sleeper("fresh", 1)
    );
    std::fs::write(&agent.config_path, edited).unwrap();

    prints(&agent, &["reloadconfig"], "ok");
    wait_for("the new set of watchers", TIMEOUT, || {
        ctl(&agent, &["list"]).stdout == "fresh,grow,keep"
    });
    let grown = agent.running_pids("grow", 3);
    assert!(
        grown.contains(&grow[0]),
        "a numprocesses-only change is applied live: {grown:?}"
    );
    agent.running_pids("fresh", 1);
    wait_gone(&gone);
    assert_eq!(
        agent.pids("keep"),
        keep,
        "an unchanged watcher is left alone"
    );
}

// ----------------------------------------------------------------------------------------------
// quit

#[test]
fn quit_stops_every_process_and_the_agent_exits_0() {
    let mut agent = Agent::start(&format!("{}{}", sleeper("w", 2), sleeper("other", 1)));
    let mut pids = agent.running_pids("w", 2);
    pids.extend(agent.running_pids("other", 1));
    prints(&agent, &["quit"], "ok");
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{status:?}");
    wait_gone(&pids);
}

#[test]
fn quit_waiting_replies_once_the_processes_are_gone() {
    let mut agent = Agent::start(&sleeper("w", 2));
    let pids = agent.running_pids("w", 2);
    prints(&agent, &["quit", "--waiting"], "ok");
    for pid in &pids {
        assert!(!alive(*pid), "{pid} still runs after `quit --waiting`");
    }
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

// ----------------------------------------------------------------------------------------------
// Errors and --json

#[test]
fn unknown_watcher_exits_3_for_every_command() {
    let agent = Agent::start(&sleeper("w", 1));
    // circusctl's `status` prints only "error" (its console_msg returns the status field).
    fails(&agent, &["status", "ghost"], 3, "error");
    let not_found = "error: program ghost not found";
    for args in [
        &["list", "ghost"][..],
        &["start", "ghost"],
        &["stop", "ghost"],
        &["restart", "ghost"],
        &["reload", "ghost"],
        &["incr", "ghost"],
        &["decr", "ghost"],
        &["numprocesses", "ghost"],
        &["stats", "ghost"],
        &["options", "ghost"],
        &["get", "ghost", "numprocesses"],
        &["set", "ghost", "numprocesses", "1"],
        &["signal", "ghost", "HUP"],
        &["kill", "ghost"],
        &["rm", "ghost"],
    ] {
        fails(&agent, args, 3, not_found);
    }
    prints(&agent, &["list"], "w");
}

#[test]
fn json_output_is_the_raw_reply_with_the_request_id() {
    let agent = Agent::start(&sleeper("w", 1));
    agent.running_pids("w", 1);
    let is_request_id = |id: &Value| {
        id.as_str()
            .is_some_and(|s| s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let parse = |args: &[&str]| -> Value {
        let out = ok(&agent, args);
        assert_eq!(out.lines().count(), 1, "one line: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };

    let list = parse(&["--json", "list"]);
    assert_eq!(list["status"], "ok", "{list}");
    assert_eq!(list["watchers"], json!(["w"]), "{list}");
    assert!(list["time"].is_f64(), "{list}");
    assert!(is_request_id(&list["id"]), "{list}");

    let status = parse(&["--json", "status", "w"]);
    assert_eq!(status["status"], "active", "{status}");
    assert!(is_request_id(&status["id"]), "{status}");
    assert_ne!(status["id"], list["id"], "a fresh id per request");

    let incr = parse(&["--json", "incr", "w", "2", "--waiting"]);
    assert_eq!(
        (&incr["status"], &incr["numprocesses"]),
        (&json!("ok"), &json!(3)),
        "{incr}"
    );

    // With --json an error reply is printed as is, and circusctl exits 0.
    let error = parse(&["--json", "status", "ghost"]);
    assert_eq!(error["status"], "error", "{error}");
    assert_eq!(error["errno"], 3, "{error}");
    assert_eq!(error["reason"], "program ghost not found", "{error}");
    assert!(error["tb"].is_null(), "{error}");
    assert!(is_request_id(&error["id"]), "{error}");
}
