//! A watcher whose program does not exist, or that flaps, as a user meets it (issue 18, item
//! 4): `troupe-agent --check` warns, `troupe start` fails naming the program and the errno
//! (without `--waiting`), and `status` says why the watcher is stopped in text and JSON while
//! the stock circusctl still reads the plain Circus state.

use crate::support::{bin, circusctl, run_command, troupe, wait_for, Agent, Run};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const NO_CONTROLLER: &str = "tcp://127.0.0.1:1";
const MISSING: &str = "no-such-program-troupe-test";

/// `troupe ARGS... --no-mdns --probe <agent> --controller <none>`, from the agent's dir.
fn one_shot(agent: &Agent, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend([
        "--no-mdns",
        "--probe",
        &agent.address,
        "--controller",
        NO_CONTROLLER,
    ]);
    troupe(agent.dir.path(), &all)
}

#[test]
fn check_warns_about_a_program_not_on_the_watchers_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("troupe-agent.toml");
    std::fs::write(
        &config,
        format!(
            "[watcher.web]\ncmd = \"{MISSING} --port 8080\"\n\n[watcher.ok]\ncmd = \"sleep 1\"\n\n\
             [watcher.own]\ncmd = \"sleep 1\"\nenv = {{ PATH = \"{}\" }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut command = Command::new(bin("troupe-agent"));
    command
        .arg("--check")
        .arg(&config)
        .env("PATH", "/usr/bin:/bin");
    let out = run_command(command, Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "a warning is not an error: {out:?}");
    assert!(
        out.stdout.contains("ok (3 watchers, 2 warnings)"),
        "{out:?}"
    );
    let web = format!(
        "watcher.web: warning: cmd: no program `{MISSING}` on the watcher's PATH (/usr/bin:/bin)"
    );
    assert!(out.stderr.contains(&web), "{web:?} in {out:?}");
    // The watcher's own PATH is the one its program is looked up in.
    let own = format!(
        "watcher.own: warning: cmd: no program `sleep` on the watcher's PATH ({})",
        dir.path().display()
    );
    assert!(out.stderr.contains(&own), "{own:?} in {out:?}");
    assert!(!out.stderr.contains("watcher.ok:"), "{out:?}");
}

#[test]
fn start_status_and_circusctl_say_why_a_missing_program_is_stopped() {
    let agent = Agent::start(&format!(
        "[watcher.web]\ncmd = \"{MISSING} --port 8080\"\nautostart = false\n"
    ));
    // Without --waiting, the start that fails at once is reported, not answered "ok".
    let start = one_shot(&agent, &["start", "web"]);
    assert_eq!(start.code, Some(1), "{start:?}");
    let expected = format!("cannot spawn {MISSING}: No such file or directory (os error 2)");
    assert!(
        start.stdout.contains(&expected),
        "{expected:?} in {start:?}"
    );
    assert!(
        start.stdout.contains("watcher 'web' could not start"),
        "{start:?}"
    );

    let status = one_shot(&agent, &["status"]);
    assert_eq!(status.code, Some(0), "{status:?}");
    let line = status
        .stdout
        .lines()
        .find(|l| l.contains("web"))
        .unwrap_or_else(|| panic!("no web row: {status:?}"));
    assert!(
        line.contains(&format!("stopped (spawn failed: {expected})")),
        "{line:?}"
    );
    let json = one_shot(&agent, &["status", "--json"]);
    assert!(
        json.stdout.contains("\"stopped_reasons\"") && json.stdout.contains("\"spawn_failed\""),
        "{json:?}"
    );
    let named = agent.call("status", serde_json::json!({"name": "web"}));
    assert_eq!(named["status"], "stopped", "{named}");
    assert_eq!(named["stopped_reason"]["cause"], "spawn_failed", "{named}");
    assert_eq!(
        named["stopped_reason"]["error"],
        expected.as_str(),
        "{named}"
    );

    // Stock circusctl reads the Circus state, unchanged by the extra field.
    let ctl = circusctl(&agent.endpoint(), &["status"]);
    assert_eq!(
        (ctl.code, ctl.stdout.as_str()),
        (0, "web: stopped"),
        "{ctl:?}"
    );
    let ctl = circusctl(&agent.endpoint(), &["status", "web"]);
    assert_eq!((ctl.code, ctl.stdout.as_str()), (0, "stopped"), "{ctl:?}");
}

#[test]
fn a_flapping_watcher_is_stopped_with_its_last_exit_and_stderr_line() {
    let agent = Agent::start(
        "[watcher.etcd]\ncmd = \"sh\"\nargs = [\"-c\", \"echo starting; echo member abc already bootstrapped >&2; exit 1\"]\nmax_retry = 2\nbackoff_max = \"100ms\"\n",
    );
    let reason = || -> Value {
        agent.call("status", serde_json::json!({"name": "etcd"}))["stopped_reason"].clone()
    };
    wait_for("etcd to give up", Duration::from_secs(20), || {
        !reason().is_null()
    });
    let status = one_shot(&agent, &["status"]);
    let line = status
        .stdout
        .lines()
        .find(|l| l.contains("etcd"))
        .unwrap_or_else(|| panic!("no etcd row: {status:?}"));
    assert!(
        line.contains(
            r#"stopped (flapping: 3 quick exits; last: exit 1 "member abc already bootstrapped")"#
        ),
        "{line:?}"
    );
    // A start clears the reason; a commanded stop leaves none.
    let start = one_shot(&agent, &["start", "etcd"]);
    assert_eq!(start.code, Some(0), "{start:?}");
    let stop = one_shot(&agent, &["stop", "etcd", "--waiting"]);
    assert_eq!(stop.code, Some(0), "{stop:?}");
    assert!(reason().is_null(), "{}", reason());
}

#[test]
fn an_autostart_failure_is_logged_naming_the_watcher_once() {
    let agent = Agent::start(&format!("[watcher.web]\ncmd = \"{MISSING}\"\n"));
    wait_for(
        "the start failure in the log",
        Duration::from_secs(10),
        || agent.log().contains("could not start"),
    );
    let log = agent.log();
    assert!(log.contains("watcher 'web' could not start"), "{log}");
    assert!(!log.contains("watcher 'web': watcher 'web'"), "{log}");
}
