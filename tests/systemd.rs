//! systemd integration without systemd: the agent's `Type=notify` messages, read from a
//! notify socket the test binds (as systemd does), and its log format when stderr is the
//! journal. The unit files in dist/systemd are checked by `systemd-analyze verify`.

use crate::support::{bin, repo_root, run_command, unique_loopback, wait_for, Daemon};
use serde_json::json;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use troupe::protocol::Request;

/// The notify socket systemd would pass in NOTIFY_SOCKET; each datagram is one or more
/// `KEY=VALUE` lines.
struct NotifySocket {
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        NotifySocket { socket }
    }

    /// The next datagram, or None after `timeout`.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        let mut buffer = [0u8; 4096];
        match self.socket.recv(&mut buffer) {
            Ok(n) => Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Reads datagrams until one has the line `line`; returns it. Panics after `timeout`
    /// with every datagram seen meanwhile.
    #[track_caller]
    fn wait_for_line(&self, line: &str, timeout: Duration, agent: &Daemon) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left.max(Duration::from_millis(1))) {
                Some(datagram) if datagram.lines().any(|l| l == line) => return datagram,
                Some(datagram) => seen.push(datagram),
                None => break,
            }
        }
        panic!(
            "no {line} within {timeout:?}; got {seen:?}\n--- agent log ---\n{}",
            agent.log()
        );
    }
}

fn call(endpoint: &str, command: &str, properties: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(properties) = properties else {
        panic!("properties must be an object");
    };
    troupe::client::call(
        endpoint,
        Request::new(command, properties),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{command}: {e}"))
}

/// Starts an agent on `address` with `watchers`, its NOTIFY_SOCKET at `socket` and the
/// extra environment `env`.
fn start_agent(dir: &Path, address: &str, watchers: &str, env: &[(&str, String)]) -> Daemon {
    let config = dir.join("troupe-agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nname = \"notified\"\nbind = \"{address}\"\nstate_dir = \"{}\"\nmdns = false\n\n{watchers}\n",
            dir.join("state").display()
        ),
    )
    .expect("write config");
    let mut command = Command::new(bin("troupe-agent"));
    command.arg("--config").arg(&config);
    command.env("NOTIFY_SOCKET", dir.join("notify.sock"));
    for (key, value) in env {
        command.env(key, value);
    }
    Daemon::spawn("troupe-agent", command, &dir.join("agent.log"))
}

#[test]
fn ready_comes_after_the_autostart_watchers_then_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(&dir.path().join("notify.sock"));
    let address = unique_loopback();
    // Three processes 0.4 s apart: starting the watcher takes 0.8 s at least, so a READY
    // sent at boot (before the watchers) finds fewer than 3 pids.
    let watchers = format!(
        "[watcher.slow]\ncmd = \"sh -c 'env > {env}.$TROUPE_WID; exec sleep 600'\"\n\
         numprocesses = 3\nwarmup_delay = 0.4\ncopy_env = true\n\n\
         [watcher.manual]\ncmd = \"sleep 600\"\nautostart = false\n",
        env = dir.path().join("env").display()
    );
    let mut agent = start_agent(
        dir.path(),
        &address,
        &watchers,
        &[("WATCHDOG_USEC", "300000".into())],
    );
    let endpoint = format!("tcp://{address}:5555");
    let ready = notify.wait_for_line("READY=1", Duration::from_secs(20), &agent);
    let pids = call(&endpoint, "list", json!({ "name": "slow" }));
    assert_eq!(
        pids["pids"].as_array().map(Vec::len),
        Some(3),
        "READY=1 before every autostart process was started: {pids}\n{}",
        agent.log()
    );
    assert!(
        ready.contains("STATUS=supervising 2 watchers"),
        "READY's status line: {ready:?}"
    );
    // The watchdog pings every 150 ms (half of WATCHDOG_USEC); two in a row prove a timer.
    notify.wait_for_line("WATCHDOG=1", Duration::from_secs(10), &agent);
    notify.wait_for_line("WATCHDOG=1", Duration::from_secs(10), &agent);
    // copy_env passes the agent's environment on, but not the variables systemd meant for
    // the agent alone.
    for wid in 1..=3 {
        let env = std::fs::read_to_string(dir.path().join(format!("env.{wid}")))
            .unwrap_or_else(|e| panic!("env.{wid}: {e}"));
        assert!(env.contains("TROUPE_WATCHER=slow"), "{env}");
        for variable in ["NOTIFY_SOCKET", "WATCHDOG_USEC"] {
            assert!(
                !env.contains(variable),
                "watcher inherited {variable}: {env}"
            );
        }
    }
    // A reload (systemctl reload: SIGHUP) is bracketed by RELOADING=1 and READY=1.
    let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP the agent");
    let reloading = notify.wait_for_line("RELOADING=1", Duration::from_secs(10), &agent);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    notify.wait_for_line("READY=1", Duration::from_secs(10), &agent);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM the agent");
    notify.wait_for_line("STOPPING=1", Duration::from_secs(10), &agent);
    wait_for("the agent to exit", Duration::from_secs(20), || {
        !agent.running()
    });
}

#[test]
fn no_watchdog_pings_without_watchdog_usec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(&dir.path().join("notify.sock"));
    let address = unique_loopback();
    let agent = start_agent(
        dir.path(),
        &address,
        "[watcher.one]\ncmd = \"sleep 600\"\n",
        &[],
    );
    notify.wait_for_line("READY=1", Duration::from_secs(20), &agent);
    assert_eq!(notify.next(Duration::from_secs(1)), None);
}

/// The `device:inode` JOURNAL_STREAM holds for the file at `path`.
fn stream_of(path: &Path) -> String {
    let stat = nix::sys::stat::stat(path).expect("stat the log");
    format!("{}:{}", stat.st_dev, stat.st_ino)
}

#[test]
fn log_lines_have_no_timestamp_when_stderr_is_the_journal() {
    let first_line = |journal: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("agent.log");
        std::fs::write(&log, "").expect("create the log");
        // JOURNAL_STREAM naming the very file stderr goes to, or another one (a service
        // whose stderr was redirected keeps the variable).
        let stream = if journal {
            stream_of(&log)
        } else {
            stream_of(dir.path())
        };
        let _notify = NotifySocket::bind(&dir.path().join("notify.sock"));
        let agent = start_agent(
            dir.path(),
            &unique_loopback(),
            "",
            &[("JOURNAL_STREAM", stream)],
        );
        wait_for(
            "the agent's first log line",
            Duration::from_secs(20),
            || {
                agent
                    .log()
                    .lines()
                    .any(|l| l.contains("troupe-agent ready"))
            },
        );
        let line = agent
            .log()
            .lines()
            .find(|l| l.contains("troupe-agent ready"))
            .expect("ready line")
            .to_string();
        line
    };
    let journal = first_line(true);
    assert!(
        journal.trim_start().starts_with("INFO"),
        "journal line should start with the level: {journal:?}"
    );
    let terminal = first_line(false);
    assert!(
        terminal.starts_with(|c: char| c.is_ascii_digit()),
        "a line not to the journal starts with its timestamp: {terminal:?}"
    );
}

/// `systemd-analyze verify` on each unit, with its /usr/bin binaries replaced by the ones
/// built here and MANPATH holding the man pages its Documentation= names, so that every
/// message verify prints is a defect of the unit.
#[test]
fn unit_files_pass_systemd_analyze_verify() {
    assert!(
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok(),
        "systemd-analyze is not installed, so the unit files cannot be verified: install \
         systemd (scripts/test does as root)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let man = dir.path().join("man/man1");
    let mut command = Command::new(bin("troupe"));
    command.arg("man").arg(&man);
    let run = run_command(command, Duration::from_secs(30));
    assert_eq!(run.code, Some(0), "troupe man: {}", run.stderr);
    for unit in ["troupe-agent.service", "troupe-serve.service"] {
        let text = std::fs::read_to_string(repo_root().join("dist/systemd").join(unit))
            .unwrap_or_else(|e| panic!("dist/systemd/{unit}: {e}"));
        let text = text
            .replace(
                "/usr/bin/troupe-agent",
                &bin("troupe-agent").display().to_string(),
            )
            .replace("/usr/bin/troupe ", &format!("{} ", bin("troupe").display()));
        let path = dir.path().join(unit);
        std::fs::write(&path, text).expect("write unit");
        let mut command = Command::new("systemd-analyze");
        command
            .arg("verify")
            .arg(&path)
            .env("MANPATH", dir.path().join("man"));
        let run = run_command(command, Duration::from_secs(60));
        assert_eq!(
            (run.code, run.stderr.trim()),
            (Some(0), ""),
            "systemd-analyze verify {unit}: {}",
            run.stdout
        );
    }
}
