//! `troupe logs` for real: three loopback agents whose watchers print, read by tail and by
//! follow (across a watcher's restart and an agent's), collected to a directory twice and
//! after an interruption; the ring's bound under a flood; hostile `logs` requests; and log
//! lines published only while someone follows them.
//!
//! Everything stays on loopback: agents run with `mdns = false`, every `troupe` with
//! `--no-mdns`, an explicit `--probe` and a `--controller` where nothing listens.

use crate::support::{proc_status_kib, troupe, unique_loopback, wait_for, Agent, Daemon, Run};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// No controller listens there: `troupe` discovers by probing.
const NO_CONTROLLER: &str = "tcp://127.0.0.1:1";

/// A watcher printing a numbered line to stdout every 50 ms and every tenth to stderr.
fn talker(node: &str) -> String {
    format!(
        "[watcher.talker]\ncmd = \"sh\"\nargs = [\"-c\", \"i=0; while true; do echo {node} out $i; \
         if [ $((i % 10)) = 0 ]; then echo {node} err $i >&2; fi; i=$((i+1)); sleep 0.05; done\"]\n\
         graceful_timeout = 1\n"
    )
}

struct Cluster {
    agents: Vec<Agent>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// One agent per `(name, watchers)`.
    fn start(nodes: &[(&str, String)]) -> Cluster {
        let agents = nodes
            .iter()
            .map(|(name, watchers)| Agent::start_named(name, &unique_loopback(), watchers, ""))
            .collect();
        Cluster {
            agents,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn discovery_flags(&self) -> Vec<String> {
        let probe = self
            .agents
            .iter()
            .map(|a| a.address.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let state = self.dir.path().join("cli-state").display().to_string();
        [
            "--no-mdns",
            "--probe",
            &probe,
            "--state-dir",
            &state,
            "--controller",
            NO_CONTROLLER,
        ]
        .map(String::from)
        .to_vec()
    }

    /// `troupe ARGS... <discovery flags>`, run to completion.
    fn troupe(&self, args: &[&str]) -> Run {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(self.discovery_flags());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        troupe(self.dir.path(), &all)
    }

    /// `troupe ARGS... <discovery flags>` left running, its output in `log`.
    fn spawn(&self, args: &[&str], log: &Path) -> Daemon {
        let mut command =
            crate::support::isolated(Command::new(crate::support::bin("troupe")), self.dir.path());
        command.args(args).args(self.discovery_flags());
        Daemon::spawn("troupe logs -f", command, log)
    }
}

/// The JSON objects `--json` printed, one per line.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The JSON lines of a follower's log file so far: the file is read while `troupe logs -f`
/// writes it, so its last line may be half written; only lines ended by a newline count.
fn written_json_lines(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let written = text.rfind('\n').map_or("", |end| &text[..=end]);
    json_lines(written)
}

#[track_caller]
fn assert_ordered_by_time(lines: &[Value], what: &str) {
    let times: Vec<f64> = lines.iter().map(|l| l["time"].as_f64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "{what}: not in time order: {times:?}"
    );
}

#[test]
fn tail_merges_three_nodes_by_time_and_follow_goes_on_across_restarts() {
    let names = ["lg-a", "lg-b", "lg-c"];
    let nodes: Vec<(&str, String)> = names.iter().map(|n| (*n, talker(n))).collect();
    let mut cluster = Cluster::start(&nodes);
    for agent in &cluster.agents {
        wait_for("20 lines in the ring", Duration::from_secs(20), || {
            let reply = agent.call("logs", json!({"name": "talker", "lines": 20}));
            reply["lines"].as_array().is_some_and(|l| l.len() == 20)
        });
    }

    let tail = cluster.troupe(&["logs", "talker", "-n", "5", "--json"]);
    assert_eq!(tail.code, Some(0), "{tail:#?}");
    let lines = json_lines(&tail.stdout);
    assert_ordered_by_time(&lines, "the tail");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        *per_node
            .entry(line["node"].as_str().unwrap().into())
            .or_default() += 1;
        let text = line["line"].as_str().unwrap();
        assert!(text.starts_with(line["node"].as_str().unwrap()), "{line}");
    }
    let expected: BTreeMap<String, usize> = names.iter().map(|n| (n.to_string(), 5)).collect();
    assert_eq!(per_node, expected, "{tail:#?}");

    let stderr_only = cluster.troupe(&["logs", "talker", "--stream", "stderr", "--json"]);
    let stderr_lines = json_lines(&stderr_only.stdout);
    assert!(!stderr_lines.is_empty(), "{stderr_only:#?}");
    assert!(stderr_lines
        .iter()
        .all(|l| l["stream"] == "stderr" && l["line"].as_str().unwrap().contains(" err ")));

    let human = cluster.troupe(&["logs", "talker", "-n", "1", "--node", "lg-b"]);
    let human_lines: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(human_lines.len(), 1, "{human:#?}");
    let pid = cluster.agents[1].pids("talker")[0];
    assert!(
        human_lines[0].starts_with(&format!("lg-b talker[{pid}] lg-b ")),
        "{human:#?}"
    );

    let log = cluster.dir.path().join("follow.log");
    let mut follower = cluster.spawn(&["logs", "talker", "-f", "-n", "3", "--json"], &log);
    let read = || written_json_lines(&log);
    let seen_from = |lines: &[Value], node: &str, pid: u32, after: f64| {
        lines
            .iter()
            .any(|l| l["node"] == node && l["pid"] == pid && l["time"].as_f64().unwrap() > after)
    };
    let start = troupe::protocol::now_epoch();
    wait_for(
        "followed lines of every node",
        Duration::from_secs(20),
        || {
            let lines = read();
            names
                .iter()
                .zip(&cluster.agents)
                .all(|(n, a)| seen_from(&lines, n, a.pids("talker")[0], start))
        },
    );

    // A restart of the watcher: its new process is followed without asking.
    let old = cluster.agents[0].pids("talker")[0];
    let restarted = cluster.agents[0].call("restart", json!({"name": "talker", "waiting": true}));
    assert_eq!(restarted["status"], "ok", "{restarted}");
    let new = cluster.agents[0].running_pids("talker", 1)[0];
    assert_ne!(old, new);
    wait_for(
        "a line of the restarted process",
        Duration::from_secs(20),
        || seen_from(&read(), "lg-a", new, start),
    );

    // The agent of lg-c goes away and comes back (a new ring, counted from 0 again).
    cluster.agents[2].stop();
    let back = troupe::protocol::now_epoch();
    cluster.agents[2].restart();
    let new_c = cluster.agents[2].running_pids("talker", 1)[0];
    wait_for(
        "a line of lg-c after it came back",
        Duration::from_secs(30),
        || seen_from(&read(), "lg-c", new_c, back),
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follower.pid() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    wait_for(
        "the follower to end on Ctrl-C",
        Duration::from_secs(10),
        || !follower.running(),
    );

    // Every node's lines in the order its ring numbered them, none twice and none missed
    // while each agent ran (the gaps were filled from the ring). The follower has ended: every
    // line it wrote must be whole.
    let lines = json_lines(&std::fs::read_to_string(&log).unwrap());
    for node in names {
        let mut runs: Vec<Vec<u64>> = vec![Vec::new()];
        for line in lines.iter().filter(|l| l["node"] == node) {
            let seq = line["seq"].as_u64().unwrap();
            if runs.last().unwrap().last().is_some_and(|&last| seq <= last) {
                runs.push(Vec::new());
            }
            runs.last_mut().unwrap().push(seq);
        }
        let restarts = if node == "lg-c" { 2 } else { 1 };
        assert_eq!(runs.len(), restarts, "{node}: {runs:?}");
        if node == "lg-c" {
            assert_eq!(
                runs[1][0], 0,
                "lg-c's new ring followed from its first line"
            );
        }
        for run in &runs {
            assert!(
                run.windows(2).all(|w| w[1] == w[0] + 1),
                "{node}: lines missed or repeated: {run:?}"
            );
        }
    }
}

/// The manifest `--collect` wrote.
fn manifest(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).expect("manifest JSON")
}

#[test]
fn collect_twice_gives_the_same_manifest_and_an_interrupted_collect_resumes() {
    // 3000 lines to a file rotating at 40 kB with 2 backups, a line to stderr (the ring
    // only), then nothing more: what there is to collect stops changing.
    let writer = |name: &str| {
        format!(
            "[watcher.writer]\ncmd = \"sh\"\nargs = [\"-c\", \"i=0; while [ $i -lt 3000 ]; do \
             echo {name} line $i; i=$((i+1)); done; echo {name} done >&2; exec sleep 1000\"]\n\
             stdout = {{ file = \"{{dir}}/writer.out\", max_bytes = 40000, backup_count = 2 }}\n\
             graceful_timeout = 1\n"
        )
    };
    let names = ["co-a", "co-b", "co-c"];
    let out_dir = tempfile::tempdir().expect("tempdir");
    let nodes: Vec<(&str, String)> = names
        .iter()
        .map(|n| {
            let dir = out_dir.path().join(n);
            (*n, writer(n).replace("{dir}", &dir.display().to_string()))
        })
        .collect();
    let cluster = Cluster::start(&nodes);
    for agent in &cluster.agents {
        wait_for("the writer to finish", Duration::from_secs(30), || {
            let reply = agent.call("logs", json!({"name": "writer", "stream": "stderr"}));
            reply["lines"].as_array().is_some_and(|l| !l.is_empty())
        });
    }

    let collected = cluster.dir.path().join("collected");
    let target = collected.display().to_string();
    let first = cluster.troupe(&["logs", "--collect", &target, "writer"]);
    assert_eq!(first.code, Some(0), "{first:#?}");
    let before = manifest(&collected);
    let files = before["files"].as_array().expect("files");
    for node in names {
        let mine: BTreeSet<&str> = files
            .iter()
            .filter(|f| f["node"] == node)
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        let expected: BTreeSet<String> = [
            "writer.stdout.log",
            "writer.stdout.log.1",
            "writer.stdout.log.2",
            "writer.stderr.log",
        ]
        .iter()
        .map(|f| format!("{node}/{f}"))
        .collect();
        assert_eq!(
            mine,
            expected.iter().map(String::as_str).collect(),
            "{first:#?}"
        );
        let stderr = std::fs::read_to_string(collected.join(node).join("writer.stderr.log"))
            .expect("the ring's copy");
        assert!(stderr.ends_with(&format!("] | {node} done\n")), "{stderr}");
        let current = std::fs::read_to_string(collected.join(node).join("writer.stdout.log"))
            .expect("the current file's copy");
        assert!(
            current.ends_with(&format!("| {node} line 2999\n")),
            "{current}"
        );
    }
    for file in files {
        let bytes = std::fs::read(collected.join(file["path"].as_str().unwrap())).unwrap();
        assert_eq!(file["bytes"], bytes.len(), "{file}");
        assert_eq!(file["sha256"], sha256_hex(&bytes), "{file}");
        let agent_copy = match file["source"].as_str().unwrap() {
            "file" => {
                let name = file["path"]
                    .as_str()
                    .unwrap()
                    .replace("writer.stdout.log", "writer.out");
                Some(std::fs::read(out_dir.path().join(name)).unwrap())
            }
            _ => None,
        };
        if let Some(original) = agent_copy {
            assert_eq!(bytes, original, "{file}: not the node's file");
        }
        assert!(file["last"].as_f64().is_some(), "{file}: no time span");
    }

    let again = cluster.troupe(&["logs", "--collect", &target, "writer"]);
    assert_eq!(again.code, Some(0), "{again:#?}");
    assert_eq!(
        manifest(&collected),
        before,
        "a second collect changed the manifest"
    );

    // Interrupted: half a copy on disk and no manifest yet.
    let partial = collected.join("co-b").join("writer.stdout.log.1");
    let length = std::fs::metadata(&partial).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    std::fs::remove_file(collected.join("manifest.json")).unwrap();
    let resumed = cluster.troupe(&["logs", "--collect", &target, "writer"]);
    assert_eq!(resumed.code, Some(0), "{resumed:#?}");
    assert!(
        resumed.stdout.contains(&format!(
            "co-b/writer.stdout.log.1  {length} bytes (resumed at byte {})",
            length / 2
        )),
        "{resumed:#?}"
    );
    assert_eq!(manifest(&collected), before, "the resumed collect differs");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_ring_bound_holds_under_a_watcher_printing_as_fast_as_it_can() {
    // Below what one reply carries (LOGS_REPLY_BYTES), so a reply shows the whole ring.
    let bound = 64 * 1024;
    let watchers = format!(
        "[watcher.flood]\ncmd = \"yes\"\nargs = [\"a line of output printed as fast as it can be\"]\n\
         log_ring_bytes = {bound}\ngraceful_timeout = 1\n\n\
         [watcher.longline]\ncmd = \"sh\"\nargs = [\"-c\", \"printf '%100000s' '' | tr ' ' x; \
         echo; exec sleep 1000\"]\ngraceful_timeout = 1\n"
    );
    let agent = Agent::start(&watchers);
    let ask = |props: Value| {
        let reply = agent.call("logs", props);
        assert_eq!(reply["status"], "ok", "{reply}");
        reply
    };
    let mut passes = Vec::new();
    // The ring went round many times: its offset counts every line ever kept.
    wait_for(
        "a million lines through the ring",
        Duration::from_secs(120),
        || {
            let reply = ask(json!({"name": "flood", "lines": 100_000}));
            let lines = reply["lines"].as_array().unwrap();
            let text: usize = lines
                .iter()
                .map(|l| l["line"].as_str().unwrap().len())
                .sum();
            assert!(text <= bound, "{text} bytes of text in a ring of {bound}");
            assert!(
                lines.len() < bound / 40,
                "{} lines in a ring of {bound} bytes",
                lines.len()
            );
            passes.push(lines.len());
            reply["offset"].as_u64().unwrap() > 1_000_000
        },
    );
    assert!(
        passes.iter().any(|&n| n > bound / 200),
        "the ring kept too little: {passes:?}"
    );
    let rss_kib = proc_status_kib(agent.pid(), "VmRSS");
    assert!(rss_kib < 64 * 1024, "agent RSS {rss_kib} KiB under a flood");

    let long = ask(json!({"name": "longline"}));
    let pieces: Vec<(usize, bool)> = long["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["line"].as_str().unwrap().len(), l["cut"] == true))
        .collect();
    let cut = troupe::bounds::LOG_LINE_BYTES;
    assert!(pieces.iter().all(|&(len, _)| len <= cut), "{pieces:?}");
    assert_eq!(
        pieces.iter().map(|p| p.0).sum::<usize>(),
        100_000,
        "{pieces:?}"
    );
    assert!(pieces[..pieces.len() - 1].iter().all(|p| p.1), "{pieces:?}");
    assert!(!pieces.last().unwrap().1, "{pieces:?}");
}

#[test]
fn hostile_logs_requests_get_errors_naming_the_field() {
    let agent = Agent::start(&talker("hostile"));
    let cases = [
        (json!({"name": "nope"}), "program nope not found"),
        (json!({}), "logs: 'name': is missing"),
        (
            json!({"name": "talker", "lines": 1u64 << 62}),
            "'lines': must be an integer from 0 to 100000",
        ),
        (
            json!({"name": "talker", "stream": "stdin"}),
            "'stream': must be stdout, stderr or both, got \"stdin\"",
        ),
        (json!({"name": "talker", "since": "yesterday"}), "'since'"),
        (json!({"name": "talker", "pid": -4}), "'pid'"),
        (json!({"name": "x".repeat(100_000)}), "'name'"),
    ];
    for (props, says) in cases {
        let reply = agent.call("logs", props.clone());
        assert_eq!(reply["status"], "error", "{props}: {reply}");
        let reason = reply["reason"].as_str().unwrap();
        assert!(reason.contains(says), "{reason:?} should say {says:?}");
        assert!(reason.len() < 400, "a long echo: {reason}");
    }
    let no_file = agent.call("log_file", json!({"name": "talker", "stream": "stdout"}));
    assert_eq!(no_file["status"], "error");
    assert!(
        no_file["reason"]
            .as_str()
            .unwrap()
            .contains("has no stdout file"),
        "{no_file}"
    );
    let files = agent.call("log_files", json!({"name": "talker"}));
    assert_eq!(files["files"], json!([]), "{files}");
    assert_eq!(files["configured"], json!([]), "{files}");
    // The agent still answers.
    assert_eq!(
        agent.call("logs", json!({"name": "talker"}))["status"],
        "ok"
    );
}

#[test]
fn lines_are_published_only_while_someone_follows_log_topics() {
    let agent = Agent::start(&talker("quiet"));
    let context = zmq::Context::new();
    let everything = context.socket(zmq::SUB).unwrap();
    everything.set_subscribe(b"").unwrap();
    everything.connect(&agent.pubsub_endpoint()).unwrap();
    let receive = |socket: &zmq::Socket, until: &dyn Fn(&str) -> bool| -> Vec<String> {
        let mut topics = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if socket.poll(zmq::POLLIN, 200).unwrap() == 0 {
                continue;
            }
            let frames = socket.recv_multipart(0).unwrap();
            let topic = String::from_utf8_lossy(&frames[0]).into_owned();
            let done = until(&topic);
            topics.push(topic);
            if done {
                return topics;
            }
        }
        panic!("nothing awaited arrived: {topics:?}");
    };
    // Restarting the watcher makes events: once they arrive, lines printed meanwhile would
    // have arrived too, had they been published.
    wait_for("lines in the ring", Duration::from_secs(10), || {
        let reply = agent.call("logs", json!({"name": "talker"}));
        reply["lines"].as_array().is_some_and(|l| l.len() > 5)
    });
    let restarted = agent.call("restart", json!({"name": "talker", "waiting": true}));
    assert_eq!(restarted["status"], "ok");
    let topics = receive(&everything, &|t| t.ends_with(".start"));
    assert!(
        topics.iter().all(|t| !t.starts_with("log.")),
        "lines published with nobody following: {topics:?}"
    );

    let follower = context.socket(zmq::SUB).unwrap();
    follower.set_subscribe(b"log.talker.").unwrap();
    follower.connect(&agent.pubsub_endpoint()).unwrap();
    let topics = receive(&follower, &|t| t.starts_with("log.talker."));
    let pid = agent.pids("talker")[0];
    assert_eq!(topics.last().unwrap(), &format!("log.talker.{pid}"));
}

#[test]
fn tail_and_follow_go_through_a_running_serve() {
    let names = ["sv-a", "sv-b"];
    let nodes: Vec<(&str, String)> = names.iter().map(|n| (*n, talker(n))).collect();
    let cluster = Cluster::start(&nodes);
    let address = unique_loopback();
    let probe = cluster
        .agents
        .iter()
        .map(|a| a.address.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut command = crate::support::isolated(
        Command::new(crate::support::bin("troupe")),
        cluster.dir.path(),
    );
    let serve_state = cluster.dir.path().join("serve-state").display().to_string();
    command
        .args([
            "serve",
            "--bind",
            &address,
            "--port",
            "5558",
            "--events-port",
            "5560",
        ])
        .args(["--stats-port", "5559", "--no-mdns", "--probe", &probe])
        .args(["--state-dir", &serve_state]);
    let mut serve = Daemon::spawn(
        "troupe serve",
        command,
        &cluster.dir.path().join("serve.log"),
    );
    let controller = format!("tcp://{address}:5558");
    let cli_state = cluster.dir.path().join("cli-state").display().to_string();
    let through_serve = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        args.extend(
            [
                "--no-mdns",
                "--controller",
                &controller,
                "--state-dir",
                &cli_state,
            ]
            .map(String::from),
        );
        args
    };
    let mut tail = None;
    wait_for(
        "a tail of both nodes through serve",
        Duration::from_secs(20),
        || {
            serve.assert_running();
            let args = through_serve(&["logs", "talker", "-n", "2", "--json"]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = troupe(cluster.dir.path(), &args);
            let lines = json_lines(&run.stdout);
            let nodes: BTreeSet<&str> = lines.iter().filter_map(|l| l["node"].as_str()).collect();
            let done = run.code == Some(0) && nodes == names.iter().copied().collect();
            if done {
                tail = Some(lines);
            }
            done
        },
    );
    let tail = tail.unwrap();
    assert_eq!(tail.len(), 4, "{tail:?}");
    assert_ordered_by_time(&tail, "the tail through serve");

    let log = cluster.dir.path().join("follow-serve.log");
    let args = through_serve(&["logs", "talker", "-f", "-n", "0", "--json"]);
    let mut command = crate::support::isolated(
        Command::new(crate::support::bin("troupe")),
        cluster.dir.path(),
    );
    command.args(&args);
    let _follower = Daemon::spawn("troupe logs -f through serve", command, &log);
    let start = troupe::protocol::now_epoch();
    wait_for(
        "followed lines of both nodes",
        Duration::from_secs(20),
        || {
            let lines = written_json_lines(&log);
            names.iter().all(|n| {
                lines
                    .iter()
                    .any(|l| l["node"] == *n && l["time"].as_f64().unwrap() > start)
            })
        },
    );
}
