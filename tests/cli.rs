//! The binaries as a user runs them: `troupe-agent --check` / `--config` and `troupe ctl`,
//! checking exit codes and what they print.

use crate::support::{bin, unique_loopback, wait_for, Agent};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Exit code and output of one run.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `program args...`, killing it (and failing) if it takes longer than `timeout`.
fn run(program: &Path, args: &[&str], timeout: Duration) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "{} {args:?} still running after {timeout:?}\nstdout: {}\nstderr: {}",
                program.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().expect("output");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn agent_bin(args: &[&str]) -> Run {
    run(&bin("troupe-agent"), args, Duration::from_secs(10))
}

fn ctl(args: &[&str]) -> Run {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    run(&bin("troupe"), &all, Duration::from_secs(15))
}

/// Writes `text` to `name` in a fresh temp dir; returns both (the dir must outlive the file).
fn config_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn stdout_json(run: &Run) -> Value {
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {run:?}"))
}

const VALID: &str = r#"
[agent]
name = "node-a"
bind = "127.0.0.1"
mdns = false

[watcher.web]
cmd = "python3 -m http.server"
args = ["--bind", "127.0.0.1", "8000"]
numprocesses = 2
graceful_timeout = "5s"

[watcher.worker]
cmd = "sleep 1000"
"#;

#[test]
fn check_accepts_a_valid_file() {
    let (_dir, path) = config_file("ok.toml", VALID);
    let out = agent_bin(&["--check", path_str(&path)]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(path_str(&path)),
        "names the file: {out:?}"
    );
    assert!(out.stdout.contains("ok"), "{out:?}");
    assert!(out.stdout.contains("2 watchers"), "{out:?}");
    assert!(out.stderr.trim().is_empty(), "nothing on stderr: {out:?}");
}

/// A profile's data-dir knob outside every data_dir of its watcher is valid but wrong (reset
/// would leave the service's data behind): `--check` says which knob, per node too.
#[test]
fn check_warns_about_a_profile_data_dir_outside_every_data_dir() {
    // Programs every machine has: a cmd not found on the PATH is a warning of its own.
    let text = r#"
[watcher.etcd]
cmd = "sh"
profile = "etcd"
data_dir = ["/data/etcd"]
profile_options = { data_dir = "/data/etcd/member", nodes = { node-b = { data_dir = "/elsewhere/etcd" } } }

[watcher.zk]
cmd = "sh"
profile = "zookeeper"
data_dir = "/data/zk"
profile_options = { data_dir = "/data/zookeeper" }
"#;
    let (_dir, path) = config_file("dirs.toml", text);
    let file = path_str(&path);
    let out = agent_bin(&["--check", file]);
    assert_eq!(out.code, Some(0), "valid, with warnings: {out:?}");
    assert!(out.stdout.contains("2 warnings"), "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(
        lines[0].starts_with(&format!(
            "{file}: watcher.etcd: warning: profile_options.nodes.node-b.data_dir \"/elsewhere/etcd\" is outside every data_dir"
        )),
        "{}",
        out.stderr
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}: watcher.zk: warning: profile_options.data_dir \"/data/zookeeper\" is outside"
        )),
        "{}",
        out.stderr
    );
}

/// A node name with shell or config metacharacters is refused on the command line, as in the
/// file: it would reach every peer's service config.
#[test]
fn a_node_name_with_metacharacters_is_refused() {
    let (_dir, path) = config_file("ok.toml", VALID);
    let out = agent_bin(&["--config", path_str(&path), "--name", "a;touch${IFS}/tmp/p"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--name"), "{out:?}");
    let (_dir, path) = config_file(
        "bad.toml",
        "[agent]\nname = \"a$(id)\"\ncluster = \"b`id`\"\n",
    );
    let out = agent_bin(&["--check", path_str(&path)]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("agent.name: \"a$(id)\" is not a valid name"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("agent.cluster: \"b`id`\" is not a valid name"),
        "{out:?}"
    );
}

/// `--check` without a value validates the `--config` file, as its help says.
#[test]
fn check_without_a_value_validates_the_config_option() {
    let (_dir, path) = config_file("ok.toml", VALID);
    let out = agent_bin(&["--config", path_str(&path), "--check"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(path_str(&path)), "{out:?}");
    assert!(out.stdout.contains("ok"), "{out:?}");
}

#[test]
fn check_reports_every_problem_at_once() {
    let text = r#"[agent]
mdns = false
colour = "blue"

[watcher.web]
cmd = "sleep 10"
numprocesses = "two"
bogus = 1

[watcher.worker]
args = ["x"]
graceful_timeout = "soon"
"#;
    let (_dir, path) = config_file("bad.toml", text);
    let file = path_str(&path);
    let out = agent_bin(&["--check", file]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(!out.stdout.contains("ok"), "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let line_for = |key: &str| -> &str {
        lines
            .iter()
            .find(|l| l.contains(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no problem reported for {key}:\n{}", out.stderr))
    };
    let expectations: [(&str, &[&str]); 5] = [
        (
            "watcher.web.numprocesses",
            &["expected an integer", "got \"two\""],
        ),
        ("watcher.web.bogus", &["unknown key"]),
        ("agent.colour", &["unknown key"]),
        ("watcher.worker.cmd", &["missing"]),
        (
            "watcher.worker.graceful_timeout",
            &["expected a duration", "got \"soon\""],
        ),
    ];
    for (key, parts) in expectations {
        let line = line_for(key);
        assert!(line.starts_with(file), "names the file first: {line}");
        for part in parts {
            assert!(line.contains(part), "{key}: expected {part:?} in {line:?}");
        }
    }
    assert_eq!(
        lines.len(),
        expectations.len(),
        "one line per problem:\n{}",
        out.stderr
    );
}

/// TOML syntax errors name the 1-based line, wherever on the line the error is.
#[test]
fn check_names_the_line_of_a_toml_syntax_error() {
    let cases = [
        // Mid-line: `cmd = = "x"` on line 5.
        ("[agent]\nmdns = false\n\n[watcher.web]\ncmd = = \"x\"\n", 5),
        // At the start of a line: the duplicate key is on line 3.
        ("[agent]\nmdns = false\nmdns = true\n", 3),
        // A line starting with `=` (no key) is line 5.
        ("[agent]\nmdns = false\n\n[watcher.web]\n= \"x\"\n", 5),
    ];
    let mut wrong = Vec::new();
    for (text, line) in cases {
        let (_dir, path) = config_file("syntax.toml", text);
        let file = path_str(&path);
        let out = agent_bin(&["--check", file]);
        assert_eq!(out.code, Some(2), "{text:?}: {out:?}");
        assert!(out.stderr.contains(file), "names the file: {out:?}");
        assert!(out.stderr.contains("invalid TOML"), "{out:?}");
        if !out.stderr.contains(&format!("line {line}:")) {
            wrong.push(format!(
                "{text:?} should name line {line}: {}",
                out.stderr.trim()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong line numbers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn config_that_does_not_exist_exits_2_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    let file = path_str(&missing);
    for args in [vec!["--config", file], vec!["--check", file]] {
        let out = agent_bin(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(file), "names the file: {out:?}");
        assert!(out.stderr.contains("cannot read"), "{out:?}");
        assert!(out.stderr.contains("No such file"), "{out:?}");
    }
}

const SLEEPER: &str = "[watcher.sleeper]\ncmd = \"sleep 1000\"\n";

#[test]
fn ctl_status_prints_the_json_reply() {
    let agent = Agent::start(SLEEPER);
    wait_for("the sleeper", Duration::from_secs(5), || {
        agent.pids("sleeper").len() == 1
    });
    let out = ctl(&[&agent.endpoint(), "status"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let reply = stdout_json(&out);
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["statuses"]["sleeper"], "active", "{reply}");
    assert!(reply["id"].is_string(), "{reply}");
}

#[test]
fn ctl_sends_the_properties_json() {
    let agent = Agent::start(SLEEPER);
    wait_for("the sleeper", Duration::from_secs(5), || {
        agent.pids("sleeper").len() == 1
    });
    let out = ctl(&[&agent.endpoint(), "status", r#"{"name": "sleeper"}"#]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(stdout_json(&out)["status"], "active", "{out:?}");
    let out = ctl(&[
        &agent.endpoint(),
        "incr",
        r#"{"name": "sleeper", "nb": 2, "waiting": true}"#,
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(stdout_json(&out)["numprocesses"], 3, "{out:?}");
    assert_eq!(agent.pids("sleeper").len(), 3);
}

#[test]
fn ctl_refuses_malformed_properties_json() {
    let agent = Agent::start(SLEEPER);
    for (properties, message) in [
        (r#"{"name": "#, "not valid JSON"),
        (r#"["sleeper"]"#, "must be a JSON object"),
    ] {
        let out = ctl(&[&agent.endpoint(), "status", properties]);
        assert_eq!(out.code, Some(2), "{properties}: {out:?}");
        assert!(out.stderr.contains("properties"), "{out:?}");
        assert!(out.stderr.contains(message), "{properties}: {out:?}");
        assert!(out.stdout.trim().is_empty(), "{out:?}");
    }
}

#[test]
fn ctl_times_out_when_nothing_listens() {
    let endpoint = format!("tcp://{}:5555", unique_loopback());
    let started = Instant::now();
    let out = ctl(&[&endpoint, "status", "--timeout", "0.5"]);
    let took = started.elapsed();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no reply"), "{out:?}");
    assert!(
        out.stderr.contains(&endpoint),
        "names the endpoint: {out:?}"
    );
    assert!(out.stderr.contains("within"), "{out:?}");
    assert!(took < Duration::from_secs(4), "--timeout 0.5 took {took:?}");
}

#[test]
fn ctl_refuses_a_bad_endpoint_or_timeout() {
    let out = ctl(&["not-an-endpoint", "status"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("not-an-endpoint"), "{out:?}");
    let out = ctl(&["tcp://127.0.0.1:1", "status", "--timeout=-1"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("timeout"), "{out:?}");
}

#[test]
fn ctl_exits_1_on_an_error_reply() {
    let agent = Agent::start(SLEEPER);
    let out = ctl(&[&agent.endpoint(), "status", r#"{"name": "ghost"}"#]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let reply = stdout_json(&out);
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["errno"], 3, "{reply}");
    assert!(
        reply["reason"].as_str().unwrap_or("").contains("ghost"),
        "{reply}"
    );
    let out = ctl(&[&agent.endpoint(), "frobnicate"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(stdout_json(&out)["errno"], 2, "{out:?}");
}

/// Stops a bare agent process on drop.
struct Bare(Child);

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent with nothing but `[agent]` basics, its address given on the command line
/// (`--bind` overrides the file), supervises nothing and says so.
#[test]
fn agent_without_watchers_answers_numwatchers_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let in_file = unique_loopback();
    let address = unique_loopback();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nbind = \"{in_file}\"\nstate_dir = \"{}\"\nmdns = false\n",
            dir.path().join("state").display()
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let child = Command::new(bin("troupe-agent"))
        .arg("--config")
        .arg(&path)
        .arg("--bind")
        .arg(&address)
        .arg("--name")
        .arg("bare-node")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .expect("spawn troupe-agent");
    let _agent = Bare(child);
    let endpoint = format!("tcp://{address}:5555");
    let show_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = ctl(&[&endpoint, "numwatchers", "--timeout", "0.5"]);
        if out.code == Some(0) || Instant::now() > deadline {
            break out;
        }
    };
    assert_eq!(out.code, Some(0), "{out:?}\nagent log:\n{}", show_log());
    let reply = stdout_json(&out);
    assert_eq!(reply["numwatchers"], 0, "{reply}");
    let out = ctl(&[&endpoint, "list"]);
    assert_eq!(
        stdout_json(&out)["watchers"],
        serde_json::json!([]),
        "{out:?}"
    );
    let out = ctl(&[&endpoint, "globaloptions", r#"{"option": "name"}"#]);
    assert_eq!(
        stdout_json(&out)["options"]["name"],
        "bare-node",
        "--name overrides: {out:?}"
    );
}

#[test]
fn a_circus_commands_help_prints_troupes_flags_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for help in ["--help", "-h"] {
        let mut command = crate::support::isolated(Command::new(bin("troupe")), dir.path());
        // Were --help taken for the command's own word, it would search: nowhere, here.
        command.args(["status", help]).env("TROUPE_MDNS", "off");
        let run = crate::support::run_command(command, Duration::from_secs(30));
        assert_eq!(run.code, Some(0), "{help}: {run:?}");
        assert!(
            run.stdout.contains("--node") && run.stdout.contains("--alive-only"),
            "{help}: {run:?}"
        );
        assert!(!run.stderr.contains("answered"), "{help}: {run:?}");
    }
}
