//! `configure` and `reset` against real agents: templates rendered from a 3-peer list and
//! written to disk, dry runs, restarts limited to the watchers whose files changed, data dirs
//! wiped under a running watcher, and a real 3-member etcd cluster formed from the profile.

use crate::support::{run_command, wait_for, Agent};
use serde_json::{json, Value};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use troupe::protocol::{ConfigureRequest, Peer, PeerList};

/// A node id for `name`, in the form agents make them (a UUID), the same on every call.
pub(crate) fn node_id(name: &str) -> String {
    let n = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff)
}

/// The `configure` properties for `me` among `nodes` (name, address), as the controller
/// builds them.
pub(crate) fn configure_props(
    nodes: &[(&str, &str)],
    me: &str,
    restart: bool,
    dry_run: bool,
) -> Value {
    let peers = nodes
        .iter()
        .map(|(name, address)| Peer {
            id: node_id(name).into(),
            name: (*name).into(),
            address: (*address).into(),
            index: 0,
            endpoints: [("control".into(), format!("tcp://{address}:5555").into())].into(),
        })
        .collect();
    let request = ConfigureRequest {
        peers: PeerList::assign("lab", peers, me).expect("me among the peers"),
        restart,
        dry_run,
    };
    Value::Object(request.to_properties())
}

const THREE: [(&str, &str); 3] = [
    ("node-c", "127.0.0.13"),
    ("node-a", "127.0.0.11"),
    ("node-b", "127.0.0.12"),
];

const TEMPLATE: &str = "node={{ self.name }} index={{ self.index }} of {{ cluster.size }}\n\
{% for p in peers %}\npeer.{{ p.index }}={{ p.name }}@{{ p.address }}\n{% endfor %}\n";

const RENDERED_FOR_B: &str = "node=node-b index=2 of 3\n\
peer.1=node-a@127.0.0.11\npeer.2=node-b@127.0.0.12\npeer.3=node-c@127.0.0.13\n";

/// A `[watcher.NAME]` running `sleep` that renders `<dir>/NAME.j2` to `<dir>/out/NAME.conf`.
fn template_watcher(dir: &Path, name: &str, template: &str) -> String {
    std::fs::write(dir.join(format!("{name}.j2")), template).unwrap();
    format!(
        "[watcher.{name}]\ncmd = \"sleep 1000\"\n\n[[watcher.{name}.template]]\nsource = \"{src}\"\ndest = \"{dest}\"\nmode = \"0640\"\n\n",
        src = dir.join(format!("{name}.j2")).display(),
        dest = dir.join(format!("out/{name}.conf")).display(),
    )
}

fn sha256_of(path: &Path) -> String {
    let run = run_command(
        {
            let mut c = Command::new("sha256sum");
            c.arg(path);
            c
        },
        Duration::from_secs(10),
    );
    run.stdout.split_whitespace().next().unwrap().to_string()
}

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["status"], "ok", "{reply}");
    reply
}

fn files_changed(reply: &Value) -> Vec<(String, bool)> {
    reply["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["watcher"].as_str().unwrap().to_string(),
                f["changed"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn configure_writes_the_rendered_templates_to_disk() {
    let work = tempfile::tempdir().unwrap();
    let agent = Agent::start(&template_watcher(work.path(), "web", TEMPLATE));
    let dest = work.path().join("out/web.conf");

    let reply = agent.call("configure", configure_props(&THREE, "node-b", false, false));
    ok(&reply);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), RENDERED_FOR_B);
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    let file = &reply["files"][0];
    assert_eq!(file["watcher"], "web");
    assert_eq!(file["path"], json!(dest));
    assert_eq!(file["sha256"], json!(sha256_of(&dest)));
    assert_eq!(file["changed"], true);
    assert_eq!(reply["restarted"], json!([]));
    assert!(reply.get("rendered").is_none(), "{reply}");

    let again = agent.call("configure", configure_props(&THREE, "node-b", false, false));
    assert_eq!(files_changed(ok(&again)), [("web".to_string(), false)]);
    assert!(!work.path().join("out/web.conf.bak").exists());
}

#[test]
fn a_dry_run_returns_the_text_and_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let agent = Agent::start(&template_watcher(work.path(), "web", TEMPLATE));
    let reply = agent.call("configure", configure_props(&THREE, "node-b", true, true));
    ok(&reply);
    assert_eq!(reply["rendered"][0]["text"], RENDERED_FOR_B);
    assert_eq!(reply["rendered"][0]["watcher"], "web");
    assert_eq!(reply["files"][0]["changed"], true);
    assert_eq!(reply["restarted"], json!([]));
    assert!(!work.path().join("out").exists());
}

#[test]
fn restart_restarts_only_the_watcher_whose_files_changed() {
    let work = tempfile::tempdir().unwrap();
    let config = template_watcher(work.path(), "alpha", TEMPLATE)
        + &template_watcher(work.path(), "beta", TEMPLATE);
    let agent = Agent::start(&config);
    wait_for("both watchers", Duration::from_secs(5), || {
        agent.pids("alpha").len() == 1 && agent.pids("beta").len() == 1
    });
    let first = agent.call("configure", configure_props(&THREE, "node-b", true, false));
    let both: Vec<String> = ok(&first)["restarted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    assert_eq!(both, ["alpha", "beta"], "first rendering changes both");
    let (alpha, beta) = (agent.pids("alpha"), agent.pids("beta"));

    std::fs::write(work.path().join("alpha.j2"), format!("{TEMPLATE}# v2\n")).unwrap();
    let reply = agent.call("configure", configure_props(&THREE, "node-b", true, false));
    assert_eq!(ok(&reply)["restarted"], json!(["alpha"]));
    assert_eq!(
        files_changed(&reply),
        [("alpha".to_string(), true), ("beta".to_string(), false)]
    );
    let new_alpha = agent.pids("alpha");
    assert_eq!(new_alpha.len(), 1);
    assert_ne!(new_alpha, alpha, "alpha was restarted");
    assert_eq!(agent.pids("beta"), beta, "beta was left alone");
}

#[test]
fn a_template_error_is_an_error_reply_and_nothing_is_written() {
    let work = tempfile::tempdir().unwrap();
    let config = template_watcher(work.path(), "alpha", TEMPLATE)
        + &template_watcher(work.path(), "beta", "ok\n{{ self.nope }}\n");
    let agent = Agent::start(&config);
    let reply = agent.call("configure", configure_props(&THREE, "node-b", false, false));
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["errno"], 5);
    let reason = reply["reason"].as_str().unwrap();
    assert!(reason.contains("beta.j2, line 2"), "{reason}");
    assert!(reason.contains("undefined"), "{reason}");
    assert!(
        !work.path().join("out").exists(),
        "alpha's file was not written"
    );

    let mut bad = configure_props(&THREE, "node-b", false, false);
    bad["peers"][1]["index"] = json!(7);
    let reply = agent.call("configure", bad);
    assert_eq!(reply["errno"], 3, "{reply}");
    assert!(
        reply["reason"]
            .as_str()
            .unwrap()
            .contains("'peers[1].index'"),
        "{reply}"
    );
}

/// A watcher running `sleep` with `data_dir = [<dir>]`.
fn data_watcher(name: &str, dir: &Path, hook: &str) -> String {
    format!(
        "[watcher.{name}]\ncmd = \"sleep 1000\"\ndata_dir = [\"{}\"]\n{hook}\n",
        dir.display()
    )
}

fn fill(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.db"), "0123456789").unwrap();
    std::fs::write(dir.join("sub/b.log"), "abcde").unwrap();
}

#[test]
fn reset_wipes_a_running_watcher_and_starts_it_again() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data/db");
    fill(&data);
    let watchers = data_watcher(
        "db",
        &data,
        "reset_hook = \"echo 1 > \\\"$TROUPE_DATA_DIRS/myid\\\"\"",
    ) + "[watcher.web]\ncmd = \"sleep 1000\"\n";
    let agent = Agent::start_with(
        &watchers,
        &format!("data_root = \"{}\"", work.path().join("data").display()),
    );
    wait_for("db running", Duration::from_secs(5), || {
        agent.pids("db").len() == 1
    });
    let before = agent.pids("db");

    // What the controller's `reconfigure --reset` sends: a glob; web has nothing to reset.
    let reply = agent.call("reset", json!({"name": "*"}));
    ok(&reply);
    assert_eq!(reply["skipped"], json!(["web"]));
    assert_eq!(reply["wiped"], json!([{"path": data, "bytes": 15}]));
    assert_eq!(reply["restarted"], json!(["db"]));
    let left: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["myid"], "only what the reset_hook wrote");
    let after = agent.pids("db");
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "the watcher runs again, with a new process");
}

#[test]
fn reset_refuses_a_dir_outside_data_root_and_touches_nothing() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("elsewhere/db");
    fill(&data);
    let agent = Agent::start_with(
        &data_watcher("db", &data, ""),
        &format!("data_root = \"{}\"", work.path().join("data").display()),
    );
    wait_for("db running", Duration::from_secs(5), || {
        agent.pids("db").len() == 1
    });
    let before = agent.pids("db");
    let reply = agent.call("reset", json!({"name": "d*"}));
    assert_eq!(reply["status"], "error", "{reply}");
    assert!(
        reply["reason"]
            .as_str()
            .unwrap()
            .contains("under-data-root"),
        "{reply}"
    );
    assert!(data.join("a.db").exists());
    assert_eq!(agent.pids("db"), before, "never stopped");
}

#[test]
fn a_three_member_etcd_cluster_forms_from_the_profile() {
    // scripts/test installs them; a missing service is a failure, not a silent pass.
    assert!(
        Path::new("/usr/bin/etcd").exists() && Path::new("/usr/bin/etcdctl").exists(),
        "etcd-server and etcd-client are not installed: run scripts/test as root"
    );
    let names = ["etcd-1", "etcd-2", "etcd-3"];
    let addresses: Vec<String> = names
        .iter()
        .map(|_| crate::support::unique_loopback())
        .collect();
    let work = tempfile::tempdir().unwrap();
    // etcd-2 keeps its data in a dir whose name a shell would split and expand: the agent
    // reads etcd.env itself, so etcd gets the path as it is.
    let data_dir = |name: &str| match name {
        "etcd-2" => work.path().join(name).join("data dir;$HOME #1 `x`"),
        _ => work.path().join(name).join("data"),
    };
    let agents: Vec<Agent> = names
        .iter()
        .zip(&addresses)
        .map(|(name, address)| {
            // The profile writes etcd.env in the working_dir; etcd keeps its data in the
            // watcher's data_dir, the one `reset` wipes.
            let dir = work.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let watcher = format!(
                "[watcher.etcd]\ncmd = \"etcd\"\nworking_dir = \"{}\"\nprofile = \"etcd\"\n\
                 data_dir = [{:?}]\nautostart = false\ngraceful_timeout = 5\n",
                dir.display(),
                data_dir(name).display().to_string(),
            );
            Agent::start_named(name, address, &watcher, "")
        })
        .collect();
    let nodes: Vec<(&str, &str)> = names
        .iter()
        .zip(&addresses)
        .map(|(n, a)| (*n, a.as_str()))
        .collect();
    for (agent, name) in agents.iter().zip(names) {
        ok(&agent.call("configure", configure_props(&nodes, name, false, false)));
        ok(&agent.call("start", json!({"name": "etcd", "waiting": true})));
    }
    let endpoints = addresses
        .iter()
        .map(|a| format!("http://{a}:2379"))
        .collect::<Vec<_>>()
        .join(",");
    wait_for("3 healthy etcd members", Duration::from_secs(30), || {
        let mut c = Command::new("etcdctl");
        c.args([
            "--endpoints",
            &endpoints,
            "--command-timeout=2s",
            "endpoint",
            "health",
        ])
        .env("ETCDCTL_API", "3");
        let run = run_command(c, Duration::from_secs(10));
        run.code == Some(0)
            && run.stdout.matches("is healthy").count() + run.stderr.matches("is healthy").count()
                == 3
    });
    let mut c = Command::new("etcdctl");
    c.args(["--endpoints", &endpoints, "member", "list"])
        .env("ETCDCTL_API", "3");
    let members = run_command(c, Duration::from_secs(10)).stdout;
    eprintln!("etcd members:\n{members}");
    for name in names {
        assert!(members.contains(name), "{name} missing from\n{members}");
        assert!(
            data_dir(name).join("member").is_dir(),
            "{name} keeps its data in its data_dir"
        );
    }
}

/// ZooKeeper's `srvr` four-letter command: the server's mode (leader, follower, standalone).
pub(crate) fn zookeeper_mode(address: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = format!("{address}:2181").parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"srvr").ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(str::to_string)
}

#[test]
fn a_three_server_zookeeper_ensemble_forms_from_the_profile() {
    let jar = "/usr/share/java/zookeeper.jar";
    assert!(
        Path::new(jar).exists() && Path::new("/usr/bin/java").exists(),
        "zookeeper (and java) are not installed: run scripts/test as root"
    );
    let names = ["zk-1", "zk-2", "zk-3"];
    let addresses: Vec<String> = names
        .iter()
        .map(|_| crate::support::unique_loopback())
        .collect();
    let work = tempfile::tempdir().unwrap();
    // zk-2's dataDir holds a backslash, a space, '#', '=' and ':': ZooKeeper reads zoo.cfg
    // with java.util.Properties, so it finds its myid there only if the profile escaped them.
    let data_dir = |name: &str| match name {
        "zk-2" => work.path().join(name).join("da\\ta #1=x:y"),
        _ => work.path().join(name).join("data"),
    };
    let agents: Vec<Agent> = names
        .iter()
        .zip(&addresses)
        .map(|(name, address)| {
            let dir = work.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let watcher = format!(
                "[watcher.zk]\ncmd = \"java\"\n\
                 args = \"-Xmx128m -cp /etc/zookeeper/conf:{jar} org.apache.zookeeper.server.quorum.QuorumPeerMain zoo.cfg\"\n\
                 working_dir = \"{}\"\nprofile = \"zookeeper\"\ndata_dir = [{:?}]\n\
                 autostart = false\ngraceful_timeout = 5\n",
                dir.display(),
                data_dir(name).display().to_string(),
            );
            Agent::start_named(name, address, &watcher, "")
        })
        .collect();
    let nodes: Vec<(&str, &str)> = names
        .iter()
        .zip(&addresses)
        .map(|(n, a)| (*n, a.as_str()))
        .collect();
    for (i, (agent, name)) in agents.iter().zip(names).enumerate() {
        ok(&agent.call("configure", configure_props(&nodes, name, false, false)));
        let myid = data_dir(name).join("myid");
        assert_eq!(
            std::fs::read_to_string(myid).unwrap(),
            format!("{}\n", i + 1)
        );
        ok(&agent.call("start", json!({"name": "zk", "waiting": true})));
    }
    wait_for(
        "a leader and two followers",
        Duration::from_secs(60),
        || {
            let mut modes: Vec<String> =
                addresses.iter().filter_map(|a| zookeeper_mode(a)).collect();
            modes.sort();
            modes == ["follower", "follower", "leader"]
        },
    );
}

/// Two controllers pushing `configure` one right after the other: the first push renders for
/// three peers and is held at a gate the test keeps shut (a FIFO `w00`'s template includes), the
/// second renders for two at once. Each push is applied whole, in the order they arrived: the
/// second waits (the agent logs that it does) until the first is written, so the later peer list
/// is the one on disk (without that, the quick push finished first and the held, older one
/// overwrote it).
#[test]
fn configures_are_applied_one_at_a_time_in_arrival_order() {
    let work = tempfile::tempdir().unwrap();
    let gate = work.path().join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let plain = "peers={{ peers | length }}\n";
    let held_for_three =
        format!("{{% if peers | length == 3 %}}{{% include \"gate\" %}}{{% endif %}}{plain}");
    let names: Vec<String> = (0..10).map(|i| format!("w{i:02}")).collect();
    let config: String = names
        .iter()
        .map(|name| {
            let template = if name == "w00" {
                &held_for_three
            } else {
                plain
            };
            template_watcher(work.path(), name, template)
        })
        .collect();
    let agent = Agent::start(&config);
    const TWO: [(&str, &str); 2] = [("node-b", "127.0.0.22"), ("node-z", "127.0.0.23")];
    std::thread::scope(|scope| {
        let slow = scope
            .spawn(|| agent.call("configure", configure_props(&THREE, "node-b", false, false)));
        // Opening the gate's writing end succeeds once the first push reads it: rendering.
        let mut held = None;
        wait_for(
            "the first push to reach the gate",
            Duration::from_secs(10),
            || {
                held = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                    .open(&gate)
                    .ok();
                held.is_some()
            },
        );
        let quick =
            scope.spawn(|| agent.call("configure", configure_props(&TWO, "node-b", false, false)));
        wait_for(
            "the second push to wait its turn",
            Duration::from_secs(10),
            || {
                agent
                    .log()
                    .contains("configure waits for the configure or reset running before it")
            },
        );
        // Closing the gate's only writer ends the include: the first push goes on.
        drop(held);
        ok(&slow.join().unwrap());
        ok(&quick.join().unwrap());
    });
    for name in &names {
        let text = std::fs::read_to_string(work.path().join(format!("out/{name}.conf"))).unwrap();
        assert_eq!(text, "peers=2\n", "{name}: the later push is on disk");
    }
}

/// `env_file`: read by the agent at each spawn (a rewritten file reaches the next process),
/// laid under the watcher's `env`, `-` for a file that may be missing; a missing one is a
/// start error naming it.
#[test]
fn env_files_are_read_at_each_spawn_and_a_missing_one_is_a_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::write(
        dir.join("app.env"),
        "# read by the agent\nGREETING=\"hello world\"\nOVERRIDDEN=from-file\n",
    )
    .unwrap();
    let watchers = format!(
        "[watcher.app]\ncmd = \"sh\"\n\
         args = [\"-c\", \"echo \\\"$GREETING|$OVERRIDDEN\\\" >> seen; exec sleep 1000\"]\n\
         working_dir = \"{dir}\"\nenv_file = [\"app.env\", \"-absent.env\"]\n\
         env = {{ OVERRIDDEN = \"from-env\" }}\n\n\
         [watcher.broken]\ncmd = \"sleep 1000\"\nworking_dir = \"{dir}\"\n\
         env_file = \"absent.env\"\nautostart = false\n",
        dir = dir.display()
    );
    let agent = Agent::start(&watchers);
    let seen = || std::fs::read_to_string(dir.join("seen")).unwrap_or_default();
    wait_for("the first spawn", Duration::from_secs(5), || {
        seen() == "hello world|from-env\n"
    });

    std::fs::write(dir.join("app.env"), "GREETING=again\n").unwrap();
    ok(&agent.call("restart", json!({"name": "app", "waiting": true})));
    wait_for("the second spawn", Duration::from_secs(5), || {
        seen() == "hello world|from-env\nagain|from-env\n"
    });

    let reply = agent.call("start", json!({"name": "broken", "waiting": true}));
    assert_eq!(reply["status"], "error", "{reply}");
    let reason = reply["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("env_file {}", dir.join("absent.env").display()))
            && reason.contains("No such file"),
        "{reason}"
    );
}

/// issue 14: an agent SIGKILLed among the renames of a `configure` leaves a mix of old and new
/// files on disk for an instant; at its next start, before any watcher runs, it finishes the
/// renames from its journal, so the node holds the whole new set. 100 files, each renamed with
/// a directory fsync, keep the renames going long enough to kill the agent among them: the
/// journal exists exactly while they run.
#[test]
fn an_agent_killed_among_the_renames_of_a_configure_ends_with_every_file_new() {
    const FILES: usize = 100;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("peers.j2"), TEMPLATE).unwrap();
    let mut watcher = String::from("[watcher.web]\ncmd = \"sleep 1000\"\n\n");
    for i in 0..FILES {
        watcher.push_str(&format!(
            "[[watcher.web.template]]\nsource = \"{src}\"\ndest = \"{dest}\"\n\n",
            src = work.path().join("peers.j2").display(),
            dest = work.path().join(format!("out/{i}.conf")).display(),
        ));
    }
    let mut agent = Agent::start(&watcher);
    let two = [THREE[1], THREE[2]];
    ok(&agent.call("configure", configure_props(&two, "node-b", false, false)));
    let contents = || -> Vec<String> {
        (0..FILES)
            .map(|i| std::fs::read_to_string(work.path().join(format!("out/{i}.conf"))).unwrap())
            .collect()
    };
    let old = contents()[0].clone();
    assert!(contents().iter().all(|c| *c == old));
    assert_ne!(old, RENDERED_FOR_B);

    let endpoint = agent.endpoint();
    let push = std::thread::spawn(move || {
        let props = configure_props(&THREE, "node-b", false, false);
        let Value::Object(props) = props else {
            unreachable!()
        };
        // Killed before it answers: no reply is expected.
        let _ = troupe::client::call(
            &endpoint,
            troupe::protocol::Request::new("configure", props),
            Duration::from_secs(20),
        );
    });
    let journal = agent.dir.path().join("state/configure-journal.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !journal.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never journaled its renames\n{}",
            agent.log()
        );
        std::hint::spin_loop();
    }
    agent.kill();
    push.join().unwrap();
    let after_kill = contents();
    let new = after_kill.iter().filter(|c| *c == RENDERED_FOR_B).count();
    assert!(
        after_kill.iter().all(|c| *c == old || c == RENDERED_FOR_B),
        "a file neither old nor new"
    );
    assert!(
        new < FILES,
        "the agent finished every rename before it was killed: the test did not hit the window"
    );

    agent.restart();
    assert!(
        contents().iter().all(|c| c == RENDERED_FOR_B),
        "a mix after the restart: {} of {FILES} new\n{}",
        contents().iter().filter(|c| *c == RENDERED_FOR_B).count(),
        agent.log()
    );
    assert!(!journal.exists());
    assert!(
        agent.log().contains("finished a configure interrupted"),
        "{}",
        agent.log()
    );
}
