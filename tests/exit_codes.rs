//! `troupe`'s exit codes, one test per code of the table (README, `troupe --help`): 0 all ok,
//! 1 some node (or the controller) failed or did not answer, 2 usage or config error, 3 no
//! node reached. `troupe shell` exits with its last command's code, from the same table.

use crate::support::{shell, troupe, unique_loopback, Agent};

const SLEEPER: &str = "[watcher.sleeper]\ncmd = \"sleep 1000\"\ngraceful_timeout = 1\n";

#[test]
fn exit_0_when_every_node_answers_ok() {
    let agent = Agent::start_named("exit-ok", &unique_loopback(), SLEEPER, "");
    let dir = tempfile::tempdir().unwrap();
    let run = troupe(
        dir.path(),
        &["status", "--no-mdns", "--probe", &agent.address],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("exit-ok"), "{run:#?}");
}

#[test]
fn exit_1_when_a_node_refuses() {
    let agent = Agent::start_named("exit-refuses", &unique_loopback(), SLEEPER, "");
    let dir = tempfile::tempdir().unwrap();
    let run = troupe(
        dir.path(),
        &["start", "ghost", "--no-mdns", "--probe", &agent.address],
    );
    assert_eq!(run.code, Some(1), "{run:#?}");
}

/// A controller that takes the connection and never answers: a network failure, so exit 1
/// (not 2, "usage or config"), from the CLI and from the shell alike.
#[test]
fn exit_1_when_the_controller_does_not_answer_from_the_cli_and_the_shell() {
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let controller = format!("tcp://{}", mute.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let args = ["--controller", controller.as_str(), "--timeout", "1"];
    let run = troupe(dir.path(), &[&["status"], &args[..]].concat());
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("no reply from"), "{run:#?}");
    let run = shell(dir.path(), &args[..2], "status --timeout 1\nexit\n");
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("no reply from"), "{run:#?}");
}

#[test]
fn exit_2_on_a_usage_or_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = troupe(dir.path(), &["status", "--timeout", "soon", "--no-mdns"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    std::fs::write(dir.path().join("troupe.toml"), "cluster = [\n").unwrap();
    let run = troupe(dir.path(), &["status", "--no-mdns"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("troupe.toml"), "{run:#?}");
}

#[test]
fn exit_3_when_no_node_is_reached_from_the_cli_and_the_shell() {
    let agent = Agent::start_named("exit-none", &unique_loopback(), SLEEPER, "");
    let dir = tempfile::tempdir().unwrap();
    let args = ["--no-mdns", "--probe", agent.address.as_str()];
    let run = troupe(
        dir.path(),
        &[&["status", "--node", "nope"], &args[..]].concat(),
    );
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains("no node matched --node nope"),
        "{run:#?}"
    );
    let run = shell(dir.path(), &args, "status --node nope\nexit\n");
    assert_eq!(run.code, Some(3), "{run:#?}");
}
