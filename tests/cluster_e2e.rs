//! The seed's cycle end to end with a real clustered service: agents that know nothing of
//! their peers, a controller that discovers them, and `troupe reconfigure` forming an etcd
//! cluster; then a 4th node joins and `reconfigure --reset` forms a 4-member cluster from
//! clean data.

use crate::support::{bin, run_command, unique_loopback, wait_for, Agent};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// An agent supervising one etcd member through the etcd profile; nothing about peers.
fn etcd_agent(name: &str, work: &Path) -> Agent {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let watcher = format!(
        "[watcher.etcd]\ncmd = \"etcd\"\n\
         working_dir = \"{dir}\"\nprofile = \"etcd\"\ndata_dir = [\"{dir}/data\"]\n\
         autostart = false\ngraceful_timeout = 5\n",
        dir = dir.display()
    );
    Agent::start_named(name, &unique_loopback(), &watcher, "")
}

/// `troupe ARGS` against exactly `agents`, with no multicast and no stray controller.
fn troupe(agents: &[&Agent], state: &Path, args: &[&str]) -> crate::support::Run {
    let probe: Vec<String> = agents.iter().map(|a| a.address.clone()).collect();
    let mut command = Command::new(bin("troupe"));
    command
        .args(args)
        .args(["--no-mdns", "--probe", &probe.join(",")])
        .args(["--controller", "tcp://127.0.0.1:1", "--timeout", "20s"])
        .arg("--state-dir")
        .arg(state);
    run_command(command, Duration::from_secs(120))
}

fn etcdctl(endpoints: &str, args: &[&str]) -> crate::support::Run {
    let mut command = Command::new("etcdctl");
    command
        .args(["--endpoints", endpoints, "--command-timeout=3s"])
        .args(args)
        .env("ETCDCTL_API", "3");
    run_command(command, Duration::from_secs(15))
}

fn client_endpoints(agents: &[&Agent]) -> String {
    agents
        .iter()
        .map(|a| format!("http://{}:2379", a.address))
        .collect::<Vec<_>>()
        .join(",")
}

fn wait_for_members(agents: &[&Agent], names: &[&str]) -> String {
    let endpoints = client_endpoints(agents);
    let mut members = String::new();
    wait_for(
        &format!("{} healthy etcd members", names.len()),
        Duration::from_secs(60),
        || {
            let health = etcdctl(&endpoints, &["endpoint", "health"]);
            let healthy = health.stdout.matches("is healthy").count()
                + health.stderr.matches("is healthy").count();
            members = etcdctl(&endpoints, &["member", "list"]).stdout;
            healthy == names.len() && members.lines().count() == names.len()
        },
    );
    for name in names {
        assert!(members.contains(name), "{name} missing from\n{members}");
    }
    members
}

#[test]
fn reconfigure_forms_an_etcd_cluster_and_reset_reforms_it_with_a_fourth_node() {
    assert!(
        Path::new("/usr/bin/etcd").exists() && Path::new("/usr/bin/etcdctl").exists(),
        "etcd-server and etcd-client are not installed: run scripts/test as root"
    );
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("controller");
    let names = ["etcd-a", "etcd-b", "etcd-c"];
    let three: Vec<Agent> = names.iter().map(|n| etcd_agent(n, work.path())).collect();
    let refs: Vec<&Agent> = three.iter().collect();

    let run = troupe(&refs, &state, &["reconfigure"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    for name in names {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(name) && !l.contains("error")),
            "{}",
            run.stdout
        );
    }
    let members = wait_for_members(&refs, &names);
    eprintln!("3 members:\n{members}");

    // A key written through one member is read through another.
    let first = format!("http://{}:2379", three[0].address);
    let last = format!("http://{}:2379", three[2].address);
    let put = etcdctl(&first, &["put", "experiment", "run-1"]);
    assert_eq!(put.code, Some(0), "{}", put.stderr);
    let get = etcdctl(&last, &["get", "experiment", "--print-value-only"]);
    assert_eq!(get.stdout.trim(), "run-1", "{}", get.stderr);

    // A 4th node boots; reconfigure --reset forms a 4-member cluster from clean data.
    let fourth = etcd_agent("etcd-d", work.path());
    let mut refs = refs;
    refs.push(&fourth);
    // Four nodes wiped: no terminal here to ask on, so `--yes`.
    let run = troupe(&refs, &state, &["reconfigure", "--reset", "--yes"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.lines().next().unwrap_or("").contains("RESET"),
        "{}",
        run.stdout
    );
    let members = wait_for_members(&refs, &["etcd-a", "etcd-b", "etcd-c", "etcd-d"]);
    eprintln!("4 members:\n{members}");
    let get = etcdctl(
        &client_endpoints(&refs),
        &["get", "experiment", "--print-value-only"],
    );
    assert_eq!(get.code, Some(0), "{}", get.stderr);
    assert_eq!(
        get.stdout.trim(),
        "",
        "the data was wiped: a fresh cluster has no key"
    );
}

#[test]
fn reconfigure_forms_a_zookeeper_quorum_with_myid_from_the_node_index() {
    let jar = "/usr/share/java/zookeeper.jar";
    assert!(
        Path::new(jar).exists() && Path::new("/usr/bin/java").exists(),
        "zookeeper (and java) are not installed: run scripts/test as root"
    );
    let work = tempfile::tempdir().unwrap();
    let names = ["zk-a", "zk-b", "zk-c"];
    let agents: Vec<Agent> = names
        .iter()
        .map(|name| {
            let dir = work.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let watcher = format!(
                "[watcher.zk]\ncmd = \"java\"\n\
                 args = \"-Xmx128m -cp /etc/zookeeper/conf:{jar} org.apache.zookeeper.server.quorum.QuorumPeerMain zoo.cfg\"\n\
                 working_dir = \"{dir}\"\nprofile = \"zookeeper\"\ndata_dir = [\"{dir}/data\"]\n\
                 autostart = false\ngraceful_timeout = 5\n",
                dir = dir.display(),
            );
            Agent::start_named(name, &unique_loopback(), &watcher, "")
        })
        .collect();
    let refs: Vec<&Agent> = agents.iter().collect();
    let run = troupe(&refs, &work.path().join("controller"), &["reconfigure"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    for (i, name) in names.iter().enumerate() {
        let myid = std::fs::read_to_string(work.path().join(name).join("data/myid")).unwrap();
        assert_eq!(myid.trim(), (i + 1).to_string(), "{name}");
    }
    wait_for(
        "a leader and two followers",
        Duration::from_secs(60),
        || {
            let mut modes: Vec<String> = agents
                .iter()
                .filter_map(|a| crate::configure::zookeeper_mode(&a.address))
                .collect();
            modes.sort();
            modes == ["follower", "follower", "leader"]
        },
    );
}
