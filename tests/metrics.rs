//! `/metrics` read by a real Prometheus server: Debian's `prometheus` (installed by
//! `scripts/test`), started by the test itself on loopback with its own storage dir and a
//! generated scrape config (scrape every second), never the Debian service. Queries go
//! through Prometheus's HTTP API (`/api/v1/query`, `/api/v1/targets`).
//!
//! Without /usr/bin/prometheus the tests fail, naming what is missing.

use crate::dashboard::{free_port, http, keyed_agent};
use crate::support::{bin, unique_loopback, wait_for, Agent, Daemon};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Fails `test` when Prometheus is missing: a test that cannot run is a failure, never a pass.
fn require_prometheus(test: &str) {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{test}: {PROMETHEUS} is missing: install it (apt-get install -y prometheus), as \
         scripts/test does as root"
    );
}

/// A scrape job: its name, the address it scrapes, and the token file it sends, if any.
struct Job<'a> {
    name: &'a str,
    target: &'a str,
    credentials_file: Option<&'a Path>,
}

/// A Prometheus server on 127.0.0.1 scraping `jobs` every second; stopped on drop.
struct Prometheus {
    _daemon: Daemon,
    address: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(jobs: &[Job]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n",
        );
        for job in jobs {
            config.push_str(&format!(
                "  - job_name: {}\n    static_configs:\n      - targets: ['{}']\n",
                job.name, job.target
            ));
            if let Some(file) = job.credentials_file {
                config.push_str(&format!(
                    "    authorization:\n      credentials_file: {}\n",
                    file.display()
                ));
            }
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let address = format!("127.0.0.1:{}", free_port("127.0.0.1"));
        let mut command = Command::new(PROMETHEUS);
        command
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .current_dir(dir.path());
        let daemon = Daemon::spawn("prometheus", command, &dir.path().join("prometheus.log"));
        let prometheus = Prometheus {
            _daemon: daemon,
            address,
            _dir: dir,
        };
        wait_for("Prometheus to be ready", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&prometheus.address).is_ok()
                && http(&prometheus.address, "GET", "/-/ready", &[], "").0 == 200
        });
        prometheus
    }

    /// `data` of an API answer (`path` with its query string).
    fn api(&self, path: &str) -> Value {
        let (status, body) = http(&self.address, "GET", path, &[], "");
        assert_eq!(status, 200, "{path}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["status"], "success", "{body}");
        answer["data"].clone()
    }

    /// The value of an instant query that gives one number, if it gives one now.
    fn number(&self, query: &str) -> Option<f64> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(query)));
        let result = data["result"].as_array()?;
        let [sample] = &result[..] else { return None };
        sample["value"][1].as_str()?.parse().ok()
    }

    /// The target of `job`: `(health, last error)` once it was scraped.
    fn target(&self, job: &str) -> Option<(String, String)> {
        let data = self.api("/api/v1/targets");
        let target = data["activeTargets"]
            .as_array()?
            .iter()
            .find(|t| t["labels"]["job"] == job)?
            .clone();
        let health = target["health"].as_str()?.to_string();
        let error = target["lastError"].as_str().unwrap_or_default().to_string();
        (health != "unknown").then_some((health, error))
    }
}

/// Percent-encodes a query string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'(' | b')' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `troupe serve` on a fresh loopback address probing `probe`, with `args` (`--metrics` or
/// `--http` and an address).
fn serve(probe: &[String], args: &[&str], key: Option<&Path>) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = crate::support::isolated(Command::new(bin("troupe")), dir.path());
    command
        .args(["serve", "--bind", &unique_loopback(), "--no-mdns"])
        .args(args)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    for address in probe {
        command.args(["--probe", address]);
    }
    if let Some(key) = key {
        command.arg("--key-file").arg(key);
    }
    let daemon = Daemon::spawn("troupe serve", command, &dir.path().join("serve.log"));
    (daemon, dir)
}

fn watchers(workers: usize) -> String {
    format!(
        "[watcher.worker]\ncmd = \"sh\"\nargs = [\"-c\", \"while :; do sleep 1; done\"]\n\
         numprocesses = {workers}\ngraceful_timeout = 1\n\n\
         [watcher.ticker]\ncmd = \"sh\"\nargs = [\"-c\", \"while :; do sleep 1; done\"]\n\
         graceful_timeout = 1\n"
    )
}

#[test]
fn prometheus_reads_the_clusters_process_count_from_serve_metrics() {
    require_prometheus("prometheus process count");
    // 2 + 3 + 4 workers and a ticker each: 12 processes.
    let agents: Vec<Agent> = (0..3)
        .map(|i| Agent::start_named(&format!("m{i}"), &unique_loopback(), &watchers(i + 2), ""))
        .collect();
    let reported: u64 = agents
        .iter()
        .map(|a| {
            let reply = a.call("numprocesses", json!({}));
            reply["numprocesses"]
                .as_u64()
                .unwrap_or_else(|| panic!("{reply}"))
        })
        .sum();
    assert_eq!(reported, 12);
    let metrics = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let probe: Vec<String> = agents.iter().map(|a| a.address.clone()).collect();
    let (mut serve, _serve_dir) = serve(
        &probe,
        &[
            "--metrics",
            &metrics,
            "--auto-configure",
            "--quiet-period",
            "1s",
        ],
        None,
    );
    let prometheus = Prometheus::start(&[Job {
        name: "troupe",
        target: &metrics,
        credentials_file: None,
    }]);
    wait_for(
        "Prometheus to read the agents' process count",
        Duration::from_secs(60),
        || {
            serve.assert_running();
            prometheus.number("sum(troupe_watcher_processes)") == Some(reported as f64)
        },
    );
    assert_eq!(
        prometheus.number("count(troupe_watcher_processes)"),
        Some(6.0)
    );
    assert_eq!(
        prometheus.number("troupe_watcher_processes{node=\"m2\",watcher=\"worker\"}"),
        Some(4.0)
    );
    assert_eq!(
        prometheus.number("troupe_members{state=\"alive\"}"),
        Some(3.0)
    );
    wait_for(
        "heartbeat round trips and per-process memory",
        Duration::from_secs(30),
        || {
            prometheus
                .number("troupe_heartbeat_round_trip_seconds_count")
                .is_some_and(|n| n > 0.0)
                && prometheus
                    .number("count(troupe_process_resident_memory_bytes{watcher!=\"circus\"})")
                    == Some(reported as f64)
        },
    );
    // The members' joins made auto-configure push the peer list, and every node took it.
    wait_for("a configure push counted", Duration::from_secs(30), || {
        prometheus
            .number("troupe_configure_pushes_total")
            .is_some_and(|n| n >= 1.0)
    });
    assert_eq!(
        prometheus.number("troupe_configure_failures_total"),
        Some(0.0)
    );
    // A worker killed from outside is a crash, and its replacement a respawn.
    wait_for(
        "a crash and a respawn counted",
        Duration::from_secs(30),
        || {
            // No series until a first crash: an empty sum.
            let crashes = prometheus.number("sum(troupe_watcher_crashes_total)");
            if !crashes.is_some_and(|n| n >= 1.0) {
                if let Some(pid) = agents[0].pids("worker").first() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            prometheus
                .number("sum(troupe_watcher_respawns_total{node=\"m0\",watcher=\"worker\"})")
                .is_some_and(|n| n >= 1.0)
        },
    );
}

#[test]
fn with_a_key_prometheus_needs_the_dashboard_token() {
    require_prometheus("prometheus with a key");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.key");
    let made = crate::support::troupe(dir.path(), &["keygen", "--out", &key.display().to_string()]);
    assert!(made.code == Some(0), "{made:?}");
    let (_agent, agent_address, _agent_dir) = keyed_agent("k1", &key);
    let address = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let (mut serve, _serve_dir) = serve(&[agent_address], &["--http", &address], Some(&key));
    let printed = crate::support::troupe(
        dir.path(),
        &[
            "dashboard-url",
            "--http",
            &address,
            "--key-file",
            &key.display().to_string(),
        ],
    );
    assert!(printed.code == Some(0), "{printed:?}");
    let token = printed
        .stdout
        .trim()
        .split_once("#token=")
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| panic!("no token in {printed:?}"));
    let token_file = dir.path().join("troupe.token");
    std::fs::write(&token_file, &token).unwrap();
    let prometheus = Prometheus::start(&[
        Job {
            name: "without_token",
            target: &address,
            credentials_file: None,
        },
        Job {
            name: "with_token",
            target: &address,
            credentials_file: Some(&token_file),
        },
    ]);
    wait_for("both targets scraped", Duration::from_secs(30), || {
        serve.assert_running();
        prometheus.target("without_token").is_some() && prometheus.target("with_token").is_some()
    });
    let (health, error) = prometheus.target("without_token").unwrap();
    assert_eq!(health, "down", "{error}");
    assert!(error.contains("401"), "{error}");
    let (health, error) = prometheus.target("with_token").unwrap();
    assert_eq!(health, "up", "{error}");
    wait_for(
        "the keyed agent's processes through the token",
        Duration::from_secs(30),
        || prometheus.number("sum(troupe_watcher_processes{job=\"with_token\"})") == Some(3.0),
    );
    assert_eq!(prometheus.number("up{job=\"without_token\"}"), Some(0.0));
}
