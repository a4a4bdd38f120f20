//! Circus ini files (tests/fixtures/circus-ini/) read by troupe and by Circus 0.19's own
//! `circus.config.get_config()`, compared watcher by watcher and option by option; the
//! refused ones refused by section and key; `troupe import`; and an ini run for real.

use crate::support::{bin, circus_venv, circusctl, repo_root, unique_loopback, wait_for, Agent};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use troupe::config::circus_ini::{self, substitute::Environ};
use troupe::config::{render, AgentConfig, OutputConfig, WatcherConfig};

/// The environment both readers run with (circusd's: `$(circus.env.X)`, `$VAR`, copy_env).
const ENV: [(&str, &str); 7] = [
    ("PATH", "/usr/bin:/bin"),
    ("HOME", "/home/circus"),
    ("LANG", "C.UTF-8"),
    ("BIND", "127.0.0.1"),
    ("CONTROL_PORT", "7655"),
    ("APP_PORT", "8080"),
    ("WORK_SECONDS", "30"),
];

fn corpus() -> PathBuf {
    repo_root().join("tests/fixtures/circus-ini")
}

/// The `.ini` files directly in `dir`, sorted.
fn ini_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ini"))
        .collect();
    files.sort();
    files
}

/// What Circus 0.19 reads in `files`: `{environ, files: {path: {circus, watchers, ...}}}`.
fn circus_reading(files: &[PathBuf]) -> Value {
    let output = Command::new(circus_venv().join("bin/python"))
        .arg(corpus().join("read_with_circus.py"))
        .args(files)
        .env_clear()
        .envs(ENV)
        .output()
        .expect("run the Circus venv's python");
    assert!(
        output.status.success(),
        "Circus could not read the corpus:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from read_with_circus.py")
}

/// troupe's reading of `path`, with the environment Circus saw.
fn troupe_reading(path: &Path, environ: &Value) -> Result<AgentConfig, String> {
    let environ = Environ::new(
        environ
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())),
    );
    let text = std::fs::read_to_string(path).unwrap();
    circus_ini::load(path, &text, environ).map_err(|e| e.to_string())
}

fn number(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => s.trim().parse().unwrap(),
        other => panic!("expected a number, got {other}"),
    }
}

/// Circus's watcher options that troupe does not read, with the value Circus gives them when
/// the file does not set them (a file that sets them otherwise is refused: see refused/).
fn circus_default(key: &str) -> Option<Value> {
    Some(match key {
        "executable" | "uid" | "gid" => Value::Null,
        "use_sockets" | "on_demand" | "copy_path" | "close_child_stdout" | "close_child_stderr" => {
            Value::Bool(false)
        }
        "close_child_stdin" => Value::Bool(true),
        "hooks" | "rlimits" => Value::Object(Map::new()),
        _ => return None,
    })
}

/// Asserts that troupe's watcher `t` is what Circus read as `w`, option by option.
fn compare_watcher(
    file: &str,
    w: &Map<String, Value>,
    t: &WatcherConfig,
    config: &AgentConfig,
    environ: &Value,
) {
    let at = |key: &str| format!("{file} [watcher:{}] {key}", t.name);
    for (key, value) in w {
        let want = || format!("{}: Circus read {value}", at(key));
        match key.as_str() {
            "name" => assert_eq!(value.as_str(), Some(t.name.as_str()), "{}", want()),
            "cmd" => assert_eq!(value.as_str(), Some(t.cmd.as_str()), "{}", want()),
            "args" => {
                let circus = shell_words::split(value.as_str().unwrap()).unwrap();
                assert_eq!(circus, t.args, "{}", want());
            }
            "numprocesses" => assert_eq!(number(value), f64::from(t.numprocesses), "{}", want()),
            "working_dir" => {
                let circus = value.as_str().filter(|d| !d.is_empty()).map(PathBuf::from);
                assert_eq!(circus, t.working_dir, "{}", want());
            }
            "shell" => assert_eq!(value.as_bool(), Some(t.shell), "{}", want()),
            "send_hup" => assert_eq!(value.as_bool(), Some(t.send_hup), "{}", want()),
            "stop_children" => assert_eq!(value.as_bool(), Some(t.stop_children), "{}", want()),
            "singleton" => assert_eq!(value.as_bool(), Some(t.singleton), "{}", want()),
            "copy_env" => assert_eq!(value.as_bool(), Some(t.copy_env), "{}", want()),
            "respawn" => assert_eq!(value.as_bool(), Some(t.respawn), "{}", want()),
            "autostart" => assert_eq!(value.as_bool(), Some(t.autostart), "{}", want()),
            "stop_signal" => assert_eq!(number(value), f64::from(t.stop_signal), "{}", want()),
            "max_retry" => assert_eq!(number(value), t.max_retry as f64, "{}", want()),
            "priority" => assert_eq!(number(value), t.priority as f64, "{}", want()),
            "warmup_delay" => assert_eq!(number(value), t.warmup_delay.as_secs_f64(), "{}", want()),
            "graceful_timeout" => {
                assert_eq!(
                    number(value),
                    t.graceful_timeout.as_secs_f64(),
                    "{}",
                    want()
                )
            }
            "max_age" => assert_eq!(number(value), t.max_age.as_secs_f64(), "{}", want()),
            "max_age_variance" => {
                assert_eq!(
                    number(value),
                    t.max_age_variance.as_secs_f64(),
                    "{}",
                    want()
                )
            }
            "env" => {
                // With copy_env, Circus's env holds circusd's whole environment, which troupe
                // copies when it spawns.
                let mut expected: Map<String, Value> = if t.copy_env {
                    environ.as_object().unwrap().clone()
                } else {
                    Map::new()
                };
                for (k, v) in &t.env {
                    expected.insert(k.clone(), Value::String(v.clone()));
                }
                let mut circus = value.as_object().unwrap().clone();
                circus.sort_keys();
                expected.sort_keys();
                assert_eq!(circus, expected, "{}", want());
            }
            "stdout_stream" => compare_stream(value, t.stdout.as_ref(), &want()),
            "stderr_stream" => compare_stream(value, t.stderr.as_ref(), &want()),
            "check_flapping" | "flapping_attempts" | "flapping_window" | "flapping_retry_in"
            | "flapping_max_retry" => {
                let reported = config.ignored.iter().any(|p| {
                    p.key.contains(&format!("[watcher:{}]", t.name))
                        && p.message.contains(key.as_str())
                });
                assert!(
                    reported,
                    "{}: not reported as ignored: {:?}",
                    want(),
                    config.ignored
                );
            }
            other => match circus_default(other) {
                Some(default) => assert_eq!(
                    *value,
                    default,
                    "{}: troupe accepted a value it does not honour",
                    want()
                ),
                None => panic!("{}: an option this test does not compare", want()),
            },
        }
    }
}

fn compare_stream(circus: &Value, troupe: Option<&OutputConfig>, want: &str) {
    let circus = circus.as_object().unwrap();
    let Some(out) = troupe else {
        assert!(circus.is_empty(), "{want}: troupe has no stream");
        return;
    };
    assert_eq!(circus["filename"].as_str(), out.file.to_str(), "{want}");
    let int = |key: &str| circus.get(key).map_or(0.0, number);
    assert_eq!(int("max_bytes"), out.max_bytes as f64, "{want}");
    assert_eq!(int("backup_count"), f64::from(out.backup_count), "{want}");
    // No time_format: Circus writes lines bare, and so does troupe with an empty one.
    let format = circus
        .get("time_format")
        .map_or("", |f| f.as_str().unwrap());
    assert_eq!(format, out.time_format, "{want}");
}

/// Every file of the corpus that Circus runs and troupe runs too: the same watchers with
/// the same options, the same endpoints, and what troupe ignores reported by name.
#[test]
fn troupe_reads_every_circus_ini_of_the_corpus_as_circus_does() {
    let files = ini_files(&corpus());
    assert!(files.len() >= 5, "the corpus is missing: {files:?}");
    let reading = circus_reading(&files);
    let environ = &reading["environ"];
    for file in &files {
        let name = file.display().to_string();
        let circus = &reading["files"][&name];
        let config = troupe_reading(file, environ).unwrap_or_else(|e| panic!("{e}"));
        let agent = &config.agent;
        for (key, value) in circus["circus"].as_object().unwrap() {
            let port = match key.as_str() {
                "endpoint" => Some(agent.control_port),
                "pubsub_endpoint" => Some(agent.pubsub_port),
                "stats_endpoint" => Some(agent.stats_port),
                _ => None,
            };
            if let Some(port) = port {
                assert_eq!(
                    value.as_str().unwrap(),
                    format!("tcp://{}:{port}", agent.bind),
                    "{name} [circus] {key}"
                );
                continue;
            }
            // circusd turns statsd on by itself when stats_endpoint is set.
            if key == "statsd"
                && circus["circus"].get("stats_endpoint").is_some()
                && !std::fs::read_to_string(file).unwrap().contains("statsd")
            {
                continue;
            }
            let reported = config
                .ignored
                .iter()
                .any(|p| p.key.contains("[circus]") && p.message.contains(key.as_str()));
            assert!(reported, "{name} [circus] {key} = {value}: read by Circus, not reported as ignored by troupe: {:?}", config.ignored);
        }
        let watchers = circus["watchers"].as_array().unwrap();
        let names: Vec<&str> = watchers
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        let ours: Vec<&str> = config.watchers.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(ours, names, "{name}: the watchers, in Circus's order");
        for (w, t) in watchers.iter().zip(&config.watchers) {
            compare_watcher(&name, w.as_object().unwrap(), t, &config, environ);
        }
        assert!(circus["sockets"].as_array().unwrap().is_empty(), "{name}");
        assert!(circus["plugins"].as_array().unwrap().is_empty(), "{name}");
    }
}

/// Every file of refused/ is a config Circus reads, and troupe refuses it with each error
/// its `# refused:` lines name (file, line, section and key).
#[test]
fn what_troupe_cannot_honour_is_refused_by_line_section_and_key() {
    let files = ini_files(&corpus().join("refused"));
    assert!(files.len() >= 10, "the corpus is missing: {files:?}");
    let reading = circus_reading(&files);
    for file in &files {
        let name = file.display().to_string();
        assert!(
            reading["files"].get(&name).is_some(),
            "Circus did not read {name}"
        );
        let text = std::fs::read_to_string(file).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# refused: "))
            .collect();
        assert!(!expected.is_empty(), "{name} names no expected error");
        let err = match troupe_reading(file, &reading["environ"]) {
            Ok(_) => panic!("{name}: troupe accepted it"),
            Err(e) => e,
        };
        for want in expected {
            assert!(
                err.contains(&format!("{name}: {want}")),
                "{name}: no {want:?} in:\n{err}"
            );
        }
    }
}

/// `troupe import` prints a troupe-agent.toml that reads back as the same config, and
/// `troupe-agent --check` takes both files.
#[test]
fn troupe_import_prints_the_equivalent_toml_and_check_accepts_both() {
    let files = ini_files(&corpus());
    let reading = circus_reading(&files);
    for file in &files {
        let config = troupe_reading(file, &reading["environ"]).unwrap();
        let text = render::to_toml(&config);
        let back =
            AgentConfig::parse(&text, "imported.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.agent, config.agent, "{}:\n{text}", file.display());
        assert_eq!(
            back.watchers,
            config.watchers,
            "{}:\n{text}",
            file.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let full = corpus().join("full.ini");
    let import = Command::new(bin("troupe"))
        .arg("import")
        .arg(&full)
        .envs(ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&import.stdout);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(
        stdout.contains("ignored, as troupe has no use for them: check_delay"),
        "{stdout}"
    );
    let toml = dir.path().join("troupe-agent.toml");
    std::fs::write(&toml, stdout.as_bytes()).unwrap();
    for config in [&full, &toml] {
        let check = Command::new(bin("troupe-agent"))
            .arg("--check")
            .arg(config)
            .envs(ENV)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(out.contains("ok (4 watchers"), "{out}");
    }
    let refused = corpus().join("refused/users.ini");
    let import = Command::new(bin("troupe"))
        .arg("import")
        .arg(&refused)
        .output()
        .unwrap();
    assert_eq!(import.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&import.stderr).contains("line 5: [watcher:w] uid: not supported")
    );
}

/// A Circus ini run as it is: the agent serves its endpoints, runs its watchers with their
/// [env:NAME], and the stock circusctl sees them.
#[test]
fn an_agent_runs_a_circus_ini_that_stock_circusctl_drives() {
    let dir = tempfile::tempdir().unwrap();
    let address = unique_loopback();
    let ini = dir.path().join("circus.ini");
    std::fs::write(
        &ini,
        format!(
            "[circus]\nendpoint = tcp://{address}:5555\npubsub_endpoint = tcp://{address}:5556\n\
             stats_endpoint = tcp://{address}:5557\ncheck_delay = 5\n\
             ; troupe's own keys (circusd does not read them): no multicast outside a test's namespace\n\
             state_dir = {state}\nmdns = false\n\n\
             [watcher:sleeper]\ncmd = /bin/sh -c 'echo \"$GREETING from $(circus.env.HOME)\" > {out}.$(circus.wid); exec sleep 1000'\n\
             numprocesses = 2\n\n[env:sleep*]\nGREETING = hello\n",
            state = dir.path().join("state").display(),
            out = dir.path().join("greeting").display(),
        ),
    )
    .unwrap();
    let home = std::env::var("HOME").expect("HOME is set");
    let agent = Agent::start_from_file(dir, &address, ini);
    agent.running_pids("sleeper", 2);
    let status = circusctl(&agent.endpoint(), &["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(status.stdout, "sleeper: active", "{status:?}");
    // One file per process: $(circus.wid) is filled in at each spawn.
    for wid in [1, 2] {
        let greeting = agent.dir.path().join(format!("greeting.{wid}"));
        wait_for("the watcher's output", Duration::from_secs(10), || {
            std::fs::read_to_string(&greeting).is_ok_and(|g| *g == format!("hello from {home}\n"))
        });
    }
    wait_for(
        "check_delay reported as ignored",
        Duration::from_secs(5),
        || {
            agent
                .log()
                .contains("ignored, as troupe has no use for them: check_delay")
        },
    );
}
