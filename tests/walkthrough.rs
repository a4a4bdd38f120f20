//! The README's 3-node walkthrough, run as written: its agent config verbatim on three
//! namespace hosts named node-1..3, its commands in order from a fourth host, ending in a
//! healthy 3-member etcd. The test reads README.md when it runs, from the blocks marked
//! `<!-- walkthrough:NAME -->`, so the README and this test cannot drift apart; only the
//! binaries' paths are substituted (`troupe` -> target/debug/troupe).
//!
//! Each node is a network namespace with a UTS namespace of its own (its host name) and a
//! mount namespace in which `/var/lib` and `/etc/troupe` are scratch dirs of its own: the
//! README's paths (`/var/lib/troupe/cluster.key`, `/etc/troupe/troupe-agent.toml`,
//! `/var/lib/troupe-etcd`) are then each node's, as on three machines, and nothing is written
//! to the machine's own.

use crate::support::netns::{Host, Segment};
use crate::support::terminal::Tmux;
use crate::support::{bin, isolated, repo_root, run_command, wait_for, Daemon, Run};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

/// The fenced block that follows `<!-- walkthrough:NAME -->` in README.md, verbatim.
fn readme_block(readme: &str, name: &str) -> String {
    let marker = format!("<!-- walkthrough:{name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let mut lines = after.lines().skip_while(|l| l.trim().is_empty());
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.starts_with("```"),
        "{marker} is not followed by a fenced block: {fence:?}"
    );
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    body.join("\n") + "\n"
}

/// One command line of a README block: its words (a `#` word starts a comment) and whether it
/// ends in `&` (runs in the background).
fn command_words(line: &str) -> (Vec<String>, bool) {
    let mut words: Vec<String> = shell_words::split(line)
        .unwrap_or_else(|e| panic!("README command {line:?}: {e}"))
        .into_iter()
        .take_while(|w| !w.starts_with('#'))
        .collect();
    let background = words.last().is_some_and(|w| w == "&");
    if background {
        words.pop();
    }
    (words, background)
}

/// The README's program names, as built here.
fn program(name: &str) -> PathBuf {
    match name {
        "troupe" | "troupe-agent" => bin(name),
        other => panic!("the walkthrough runs {other:?}, which this test does not know"),
    }
}

/// `/etc/troupe` must exist as a mount point for the nodes' own; made (and removed after) if
/// the machine has none.
struct MountPoint {
    made: Option<PathBuf>,
}

impl MountPoint {
    fn ensure(path: &str) -> MountPoint {
        let path = PathBuf::from(path);
        if path.exists() {
            return MountPoint { made: None };
        }
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        MountPoint { made: Some(path) }
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        if let Some(path) = &self.made {
            let _ = std::fs::remove_dir(path);
        }
    }
}

/// A node: host `host` named `name`, whose `/var/lib` and `/etc/troupe` are `root/var-lib`
/// and `root/etc-troupe`.
struct Node<'a> {
    name: &'static str,
    host: &'a Host,
    root: PathBuf,
}

impl Node<'_> {
    /// `program ARGS` on this node (as `Host::command`, plus the node's own mounts).
    fn command(&self, program: &Path, args: &[String]) -> Command {
        let mut command = self.host.ns.command("unshare");
        command
            .args([
                "--uts",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(
                "hostname \"$0\" && mount --bind \"$1/var-lib\" /var/lib && \
                 mount --bind \"$1/etc-troupe\" /etc/troupe && shift && exec \"$@\"",
            )
            .arg(self.name)
            .arg(&self.root)
            .arg(program)
            .args(args);
        command
    }

    /// `etcdctl ARGS` on the node, with etcdctl's default endpoint (127.0.0.1:2379).
    fn etcdctl(&self, args: &[&str]) -> Run {
        let mut command = self.host.ns.command("etcdctl");
        command.args(args).env("ETCDCTL_API", "3");
        run_command(command, Duration::from_secs(15))
    }
}

#[test]
#[ignore = "needs root"]
fn the_readme_walkthrough_ends_in_a_healthy_three_member_etcd() {
    assert!(
        Path::new("/usr/bin/etcd").exists() && Path::new("/usr/bin/etcdctl").exists(),
        "etcd-server and etcd-client are not installed: run scripts/test as root"
    );
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let keygen = readme_block(&readme, "keygen");
    let agent_config = readme_block(&readme, "agent-config");
    let agent_command = readme_block(&readme, "agent-command");
    let troupe_toml = readme_block(&readme, "troupe-toml");
    let commands = readme_block(&readme, "commands");
    let config_path = agent_config
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .expect("the agent config's first line names its path")
        .to_string();
    assert_eq!(config_path, "/etc/troupe/troupe-agent.toml");

    let _etc_troupe = MountPoint::ensure("/etc/troupe");
    let scratch = tempfile::tempdir().expect("tempdir");
    let segment = Segment::new("walk", 4);
    let admin = segment.host(4);
    let admin_dir = scratch.path().join("admin");
    std::fs::create_dir(&admin_dir).unwrap();
    // A command of the README, run on the fourth machine from the directory it works in.
    let on_admin = |words: &[String]| {
        let mut command = isolated(admin.ns.command(program(&words[0])), &admin_dir);
        command.args(&words[1..]);
        command
    };

    // The cluster key, then the nodes: key, config and agent each.
    for line in keygen.lines() {
        let (words, _) = command_words(line);
        let out = run_command(on_admin(&words), Duration::from_secs(30));
        assert_eq!(out.code, Some(0), "{line}: {out:?}");
    }
    let key = admin_dir.join("cluster.key");
    let nodes: Vec<Node> = NODES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let root = scratch.path().join(name);
            let state = root.join("var-lib/troupe");
            std::fs::create_dir_all(&state).unwrap();
            std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::fs::copy(&key, state.join("cluster.key")).unwrap();
            std::fs::set_permissions(
                state.join("cluster.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            std::fs::create_dir_all(root.join("etc-troupe")).unwrap();
            std::fs::write(root.join("etc-troupe/troupe-agent.toml"), &agent_config).unwrap();
            Node {
                name,
                host: segment.host(i + 1),
                root,
            }
        })
        .collect();
    let mut daemons: Vec<Daemon> = Vec::new();
    for node in &nodes {
        for line in agent_command.lines() {
            let (words, _) = command_words(line);
            let log = node.root.join("agent.log");
            let what = format!("troupe-agent on {}", node.name);
            daemons.push(Daemon::spawn(
                &what,
                node.command(&program(&words[0]), &words[1..]),
                &log,
            ));
        }
    }
    std::fs::write(admin_dir.join("troupe.toml"), &troupe_toml).unwrap();

    for line in commands.lines().filter(|l| !l.trim().is_empty()) {
        let (words, background) = command_words(line);
        match (words[1].as_str(), background) {
            (_, true) => {
                let log = admin_dir.join(format!("{}.log", words[1]));
                // Its log says when it has seen the nodes (the environment only: the command
                // is the README's).
                let mut command = on_admin(&words);
                command.env("TROUPE_LOG", "info");
                let mut daemon = Daemon::spawn(line, command, &log);
                // A user starts the next command a moment later; the test waits until serve
                // has seen the three nodes (serve's own wait for its first discovery is
                // tested on its own).
                wait_for(
                    "serve to see the three nodes",
                    Duration::from_secs(20),
                    || {
                        daemon.assert_running();
                        let log = daemon.log();
                        NODES.iter().all(|n| log.contains(&format!("node={n}")))
                    },
                );
                daemons.push(daemon);
            }
            ("nodes", false) => {
                // The agents have just started: who is there, once they announce.
                wait_for(
                    "troupe nodes to list node-1..3 alive",
                    Duration::from_secs(20),
                    || {
                        let out = run_command(on_admin(&words), Duration::from_secs(30));
                        let alive = |node: &str| {
                            out.stdout
                                .lines()
                                .any(|l| l.starts_with(node) && l.contains("alive"))
                        };
                        out.code == Some(0) && NODES.iter().all(|n| alive(n))
                    },
                );
            }
            ("top", false) => run_top(&admin.ns.name, &admin_dir, &words),
            ("reconfigure", false) if words.iter().any(|w| w == "--reset") => {
                run_answering_yes(&admin.ns.name, &admin_dir, &words)
            }
            ("shell", false) => run_shell(&admin.ns.name, &admin_dir, &words),
            (_, false) => {
                let out = run_command(on_admin(&words), Duration::from_secs(60));
                assert_eq!(out.code, Some(0), "{line}: {out:?}");
                if words[1] == "status" {
                    let rows: Vec<&str> =
                        out.stdout.lines().filter(|l| l.contains("etcd")).collect();
                    assert_eq!(rows.len(), 3, "{out:?}");
                    assert!(rows.iter().all(|r| r.contains("active")), "{out:?}");
                }
            }
        }
    }

    // The end: etcd healthy on every node, three members, each node's etcdctl on its default
    // endpoint (the profile's loopback listener).
    for node in &nodes {
        wait_for(
            &format!("etcd healthy on {}", node.name),
            Duration::from_secs(30),
            || node.etcdctl(&["endpoint", "health"]).code == Some(0),
        );
        let members = node.etcdctl(&["member", "list"]);
        assert_eq!(members.code, Some(0), "{members:?}");
        for name in NODES {
            assert!(members.stdout.contains(name), "{name} in {members:?}");
        }
        assert_eq!(members.stdout.lines().count(), 3, "{members:?}");
    }
    drop(daemons);
}

/// A README command that asks first (it wipes data on several nodes), in a terminal: the
/// question names the three nodes, the user answers `y`, and it succeeds.
fn run_answering_yes(netns: &str, dir: &Path, words: &[String]) {
    let tmux = Tmux::start(&terminal_line(netns, dir, words, true));
    let mut question = vec!["Continue? [y/N]"];
    question.extend(NODES);
    tmux.wait_for_all("the question", &question, Duration::from_secs(20));
    tmux.keys("y");
    tmux.keys("Enter");
    tmux.wait_for_all(
        "the command to succeed",
        &["TROUPE-EXIT=0"],
        Duration::from_secs(60),
    );
}

/// The README's `troupe top`, in a terminal on the fourth machine: the three nodes' etcd
/// processes show, and `q` quits.
fn run_top(netns: &str, dir: &Path, words: &[String]) {
    let tmux = Tmux::start(&terminal_line(netns, dir, words, false));
    tmux.wait_for_all("top to show the nodes", &NODES, Duration::from_secs(20));
    tmux.keys("q");
    tmux.wait_for_all("top to quit", &["TROUPE-EXIT=0"], Duration::from_secs(10));
}

/// The README's `troupe shell`, in a terminal: `status` shows the three etcd members active,
/// and `exit` leaves.
fn run_shell(netns: &str, dir: &Path, words: &[String]) {
    let tmux = Tmux::start(&terminal_line(netns, dir, words, false));
    tmux.wait_for_all("the shell's greeting", &["exit"], Duration::from_secs(20));
    tmux.keys("status");
    tmux.keys("Enter");
    tmux.wait_until("status in the shell", Duration::from_secs(20), |screen| {
        screen
            .lines()
            .filter(|l| l.contains("etcd") && l.contains("active"))
            .count()
            == 3
    });
    tmux.keys("exit");
    tmux.keys("Enter");
    tmux.wait_for_all(
        "the shell to end",
        &["TROUPE-EXIT=0"],
        Duration::from_secs(10),
    );
}

/// A terminal's command line: `words` (the program substituted) on the fourth machine, from
/// `dir`, isolated as `support::isolated`; then the exit code, and the terminal stays. Its
/// stderr goes to `terminal.err` unless it asks a question there.
fn terminal_line(netns: &str, dir: &Path, words: &[String], stderr_on_screen: bool) -> String {
    let dir_text = dir.display().to_string();
    let mut line = vec![
        "ip".to_string(),
        "netns".into(),
        "exec".into(),
        netns.into(),
        "env".into(),
        "-u".into(),
        "TROUPE_CONTROLLER".into(),
        "-u".into(),
        "TROUPE_PROBE".into(),
        "-u".into(),
        "TROUPE_CONFIG".into(),
        "-u".into(),
        "TROUPE_MDNS".into(),
        format!("HOME={dir_text}"),
        format!("XDG_CONFIG_HOME={dir_text}"),
        program(&words[0]).display().to_string(),
    ];
    line.extend(words[1..].iter().cloned());
    let stderr = if stderr_on_screen {
        String::new()
    } else {
        format!(
            " 2>{}",
            shell_words::quote(&dir.join("terminal.err").display().to_string())
        )
    };
    format!(
        "cd {} && {}{stderr}; echo TROUPE-EXIT=$?; sleep 600",
        shell_words::quote(&dir_text),
        shell_words::join(&line),
    )
}
