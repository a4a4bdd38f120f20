//! Agents that refuse our cluster key, found only by probing (no mDNS record to announce a
//! fingerprint), are listed as `locked` by a keyed `troupe nodes`, never alive, never in a
//! `configure` peer list; and a fan-out says in one line how many selected nodes it skipped
//! because they are locked, why and what to do, exiting nonzero when it reached nobody.
//!
//! Fails on the code before the fix: there a probe that the node refused (a failed CURVE
//! handshake) was the same as silence, so those agents were absent from `troupe nodes`, and a
//! broadcast said nothing of them ("no node matched" when they were all it found).

use super::impostor::{key_file, nodes, peer_names, troupe_on, LabAgent, CLUSTER};
use crate::security::HostServe;
use crate::support::garbage::GarbageServer;
use crate::support::netns::{Host, Segment};
use crate::support::{bin, isolated, run_command, wait_for};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use troupe::cluster_key::ClusterKey;

/// `troupe [--key-file KEY] ARGS` on `host`: exit code, stdout, stderr.
fn troupe_run(
    host: &Host,
    dir: &Path,
    key: Option<&Path>,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let mut command = isolated(host.command(bin("troupe")), dir);
    if let Some(key) = key {
        command.arg("--key-file").arg(key);
    }
    command.args(args).args([
        "--cluster",
        CLUSTER,
        "--state-dir",
        "cli-state",
        "--no-mdns",
    ]);
    let run = run_command(command, Duration::from_secs(30));
    (run.code, run.stdout, run.stderr)
}

#[test]
#[ignore = "needs root"]
fn probed_agents_refusing_our_key_are_locked_and_fan_outs_say_so() {
    let segment = Segment::new("lockprobe", 4);
    let (holder_host, other_host, keyless_host, observer) = (
        segment.host(1),
        segment.host(2),
        segment.host(3),
        segment.host(4),
    );
    let scratch = tempfile::tempdir().unwrap();
    let ours = ClusterKey::generate().unwrap();
    let our_path = key_file(scratch.path(), &ours);
    let other_dir = tempfile::tempdir().unwrap();
    let other_path = key_file(other_dir.path(), &ClusterKey::generate().unwrap());
    // mDNS off everywhere: these agents are found by probing only.
    let _holder = LabAgent::start(holder_host, "holder", Some(&our_path), false, None);
    let _other = LabAgent::start(other_host, "other-key", Some(&other_path), false, None);
    let _keyless = LabAgent::start(keyless_host, "keyless", None, false, None);
    let endpoint = |host: &Host| format!("tcp://{}:5555", host.address);
    let probe = format!(
        "{},{},{}",
        holder_host.address, other_host.address, keyless_host.address
    );

    let listed = nodes(observer, scratch.path(), Some(&our_path), &probe);
    let row = |host: &Host| -> &Value {
        let rows: Vec<&Value> = listed
            .iter()
            .filter(|n| n["endpoint"] == endpoint(host).as_str())
            .collect();
        assert_eq!(rows.len(), 1, "one row at {}: {listed:#?}", endpoint(host));
        rows[0]
    };
    assert_eq!(row(holder_host)["state"], "alive", "{listed:#?}");
    assert_eq!(
        row(holder_host)["key_fingerprint"],
        ours.fingerprint().as_str()
    );
    for host in [other_host, keyless_host] {
        let locked = row(host);
        assert_eq!(locked["state"], "locked", "{locked}");
        assert!(
            locked["locked"]
                .as_str()
                .is_some_and(|why| why.contains("refused this controller's cluster key")),
            "{locked}"
        );
    }
    let table = troupe_on(
        observer,
        scratch.path(),
        Some(&our_path),
        &["nodes", "--wait", "1s", "--probe", &probe],
    );
    assert!(
        table.contains("is locked: it refused this controller's cluster key"),
        "{table}"
    );

    // configure's peer list: the holder only.
    let dry_run = troupe_on(
        observer,
        scratch.path(),
        Some(&our_path),
        &["configure", "--dry-run", "--json", "--probe", &probe],
    );
    assert_eq!(peer_names(&dry_run), ["holder"]);

    // A broadcast reaches the holder and says, in one line after the results, what it skipped.
    let (code, stdout, stderr) = troupe_run(
        observer,
        scratch.path(),
        Some(&our_path),
        &["status", "--probe", &probe],
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("holder"), "{stdout}");
    let locked_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("locked")).collect();
    assert_eq!(locked_lines.len(), 1, "{stderr}");
    let line = locked_lines[0];
    assert!(
        line.starts_with("troupe: 2 nodes locked, not sent to ("),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "their cluster key differs from ours (ours {}, theirs none); copy the cluster key \
             file to them or use --key-file",
            ours.fingerprint()
        )),
        "{line}"
    );

    // Only locked nodes: nobody reached, a nonzero exit, and the same line says why.
    let (code, stdout, stderr) = troupe_run(
        observer,
        scratch.path(),
        Some(&our_path),
        &["status", "--probe", &other_host.address],
    );
    assert_ne!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("troupe: 1 node locked, not sent to (")
            && stderr.contains("copy the cluster key file to them or use --key-file"),
        "{stderr}"
    );

    // Through a keyless serve probing the same range (the holder and the other key are both
    // locked to it): its `nodelist` filtered by state lists those two alone, and a fan-out
    // through it says the same line as one without serve.
    let serve = HostServe::start(observer, false, &["--cluster", CLUSTER, "--probe", &probe]);
    let rows_in = |state: &str| -> Vec<Value> {
        serve
            .call(observer, "nodelist", json!({ "state": state }))
            .ok()
            .and_then(|reply| reply["nodes"].as_array().cloned())
            .unwrap_or_default()
    };
    wait_for(
        "serve to list 2 locked nodes and 1 alive",
        Duration::from_secs(15),
        || rows_in("locked").len() == 2 && rows_in("alive").len() == 1,
    );
    assert!(
        rows_in("locked").iter().all(|n| n["state"] == "locked"),
        "{:#?}",
        rows_in("locked")
    );
    let (code, stdout, stderr) = troupe_run(
        observer,
        scratch.path(),
        None,
        &["status", "--controller", &serve.endpoint],
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}\n{}", serve.log());
    assert!(stdout.contains("keyless"), "{stdout}");
    let locked_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("locked")).collect();
    assert_eq!(locked_lines.len(), 1, "{stderr}");
    assert!(
        locked_lines[0].starts_with("troupe: 2 nodes locked, not sent to (")
            && locked_lines[0].contains("they hold a cluster key and this command has none"),
        "{stderr}"
    );
}

/// A keyless controller probing a range: agents holding a key (a keyed server answers a
/// NULL client with a mechanism mismatch) are `locked` rows saying what to do, never alive,
/// never in a peer list; a port that speaks something else (garbage) is no row at all, as
/// it never was; and a fan-out names the locked nodes in one line.
///
/// Fails on the code before the fix: there a keyless probe did not watch its handshake, so
/// the keyed agents were `no reply` rows, as a frozen node would be, with no word of a key.
#[test]
#[ignore = "needs root"]
fn a_keyless_controller_lists_probed_keyed_agents_as_locked_and_garbage_not_at_all() {
    let segment = Segment::new("lockfree", 5);
    let (holder_host, other_host, keyless_host, garbage_host, observer) = (
        segment.host(1),
        segment.host(2),
        segment.host(3),
        segment.host(4),
        segment.host(5),
    );
    let scratch = tempfile::tempdir().unwrap();
    let ours = key_file(scratch.path(), &ClusterKey::generate().unwrap());
    let other_dir = tempfile::tempdir().unwrap();
    let other = key_file(other_dir.path(), &ClusterKey::generate().unwrap());
    let _holder = LabAgent::start(holder_host, "holder", Some(&ours), false, None);
    let _other = LabAgent::start(other_host, "other-key", Some(&other), false, None);
    let _keyless = LabAgent::start(keyless_host, "keyless", None, false, None);
    let address = format!("{}:5555", garbage_host.address);
    let listener = garbage_host
        .ns
        .run(|| std::net::TcpListener::bind(&address))
        .unwrap_or_else(|e| panic!("{address}: {e}"));
    let _garbage = GarbageServer::on(listener);
    let endpoint = |host: &Host| format!("tcp://{}:5555", host.address);
    let probe = [holder_host, other_host, keyless_host, garbage_host]
        .map(|h| h.address.as_str())
        .join(",");

    let listed = nodes(observer, scratch.path(), None, &probe);
    let rows = |host: &Host| -> Vec<&Value> {
        listed
            .iter()
            .filter(|n| n["endpoint"] == endpoint(host).as_str())
            .collect()
    };
    assert_eq!(rows(keyless_host).len(), 1, "{listed:#?}");
    assert_eq!(rows(keyless_host)[0]["state"], "alive", "{listed:#?}");
    for host in [holder_host, other_host] {
        let found = rows(host);
        assert_eq!(found.len(), 1, "one row at {}: {listed:#?}", endpoint(host));
        assert_eq!(found[0]["state"], "locked", "{}", found[0]);
        assert!(
            found[0]["locked"].as_str().is_some_and(|why| why.contains(
                "refused this controller, which has no cluster key: it holds one; use --key-file"
            )),
            "{}",
            found[0]
        );
    }
    assert!(rows(garbage_host).is_empty(), "{listed:#?}");

    let dry_run = troupe_on(
        observer,
        scratch.path(),
        None,
        &["configure", "--dry-run", "--json", "--probe", &probe],
    );
    assert_eq!(peer_names(&dry_run), ["keyless"]);

    let (code, stdout, stderr) = troupe_run(
        observer,
        scratch.path(),
        None,
        &["status", "--probe", &probe],
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let locked_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("locked")).collect();
    assert_eq!(locked_lines.len(), 1, "{stderr}");
    assert!(
        locked_lines[0].starts_with("troupe: 2 nodes locked, not sent to (")
            && locked_lines[0].ends_with(
                "they hold a cluster key and this command has none; use --key-file or \
                 TROUPE_KEY_FILE with the cluster's key file"
            ),
        "{}",
        locked_lines[0]
    );
}
