//! Fan-out: one request to many nodes in parallel, each with its own timeout, so a dead or
//! black-holed node costs only its own timeout and never delays the others.

use futures::future::join_all;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;
use troupe::client::{call_async, ClientError};
use troupe::protocol::{Errno, Request};

/// The per-node timeout when `--timeout` is not given. A `--waiting` command adds the
/// graceful stops it may wait out (see [`crate::watchers::graceful_stops`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of a broadcast.
#[derive(Debug, Clone)]
pub struct BroadcastOptions {
    pub node: Option<String>,
    pub timeout: Duration,
    /// `--timeout` was given: it is not lengthened for a `--waiting` command.
    pub timeout_given: bool,
    pub json: bool,
    /// `--yes`: go ahead without the question of [`crate::confirm`].
    pub yes: bool,
    /// `--alive-only`: leave out the known nodes that did not answer ([`crate::absent`]).
    pub alive_only: bool,
}

impl Default for BroadcastOptions {
    fn default() -> Self {
        BroadcastOptions {
            node: None,
            timeout: DEFAULT_TIMEOUT,
            timeout_given: false,
            json: false,
            yes: false,
            alive_only: false,
        }
    }
}

pub use crate::membership::Target;

/// Whether a node's reply is a success.
pub fn reply_ok(reply: &Value) -> bool {
    // Fail closed: a reply without a status (null, `{}`) is not ok. Circus answers `status
    // NAME` with the watcher's status in that field ("active", "stopped"), so any status but
    // "error" is an answer.
    reply["status"]
        .as_str()
        .is_some_and(|status| status != "error")
}

/// A timeout or transport failure of `node` as an error reply, so every node's answer has
/// one shape.
pub fn failure_reply(node: &str, error: &ClientError) -> Value {
    let reason = match error {
        ClientError::Timeout {
            timeout, keyless, ..
        } => {
            let hint = if *keyless {
                troupe::client::KEYLESS_HINT
            } else {
                ""
            };
            format!("{}{hint}", timeout_reason(node, *timeout, None))
        }
        other => other.to_string(),
    };
    json!({
        "status": "error",
        "reason": reason,
        "tb": null,
        "errno": Errno::OsError as i64,
        "timeout": matches!(error, ClientError::Timeout { .. }),
        // A node that did not answer in time, as a row of `--json` says it.
        "state": matches!(error, ClientError::Timeout { .. }).then_some(crate::membership::NO_REPLY),
    })
}

/// What a node that did not answer in time is said to have done: maybe all of it (a stop
/// waits out the watcher's graceful stop, and a start queued behind it waits too), so the
/// reason says so and how to look. `graceful` is the longest graceful stop of the watchers
/// concerned on that node, when it is known.
pub fn timeout_reason(node: &str, timeout: Duration, graceful: Option<Duration>) -> String {
    let graceful = graceful
        .filter(|g| !g.is_zero())
        .map(|g| format!(" (the watcher's graceful stop can take up to {g:?})"))
        .unwrap_or_default();
    format!(
        "no reply from {node} within {timeout:?}; the command may still be applied{graceful}: \
         check with `troupe status`"
    )
}

/// Rewrites the reason of every timed-out reply with what is known of each node's graceful
/// stops (see [`timeout_reason`]).
pub fn explain_timeouts(
    replies: &mut BTreeMap<String, Value>,
    timeout: Duration,
    graceful: &BTreeMap<String, Duration>,
) {
    for (node, reply) in replies.iter_mut() {
        if reply["timeout"] == true {
            reply["reason"] = json!(timeout_reason(node, timeout, graceful.get(node).copied()));
        }
    }
}

/// Sends `request` to every target at once and collects each reply, keyed by node name, on a
/// new connection per node (the one-shot CLI; `troupe serve` keeps its connections, see
/// [`crate::links`]). With `progress`, a bar is drawn on a terminal's stderr once the fan-out
/// passes a second.
pub async fn fan_out(
    targets: &[Target],
    request: &Request,
    timeout: Duration,
    progress: bool,
) -> BTreeMap<String, Value> {
    // One context for the whole fan-out, never one per node: each context starts an I/O
    // thread and a reaper thread (a context per node made `configure` to 500 agents take 10 s).
    let zmq = zmq::Context::new();
    // Encoded once, one id for all: each reply is matched on its own node's connection.
    let outgoing = troupe::client::Outgoing::from(request.clone());
    gather(targets, progress, targets.len(), |target| {
        call_async(&zmq, &target.endpoint, outgoing.clone(), timeout)
    })
    .await
}

/// Runs `call` for every target, at most `at_once` at a time (a call starts, and builds what
/// it sends, only when it runs), and collects each result, a failure as [`failure_reply`],
/// keyed by node name.
pub async fn gather<'a, F, C>(
    targets: &'a [Target],
    progress: bool,
    at_once: usize,
    call: F,
) -> BTreeMap<String, Value>
where
    F: Fn(&'a Target) -> C,
    C: std::future::Future<Output = Result<Value, ClientError>>,
{
    let bar =
        ProgressBar::with_draw_target(Some(targets.len() as u64), ProgressDrawTarget::hidden());
    if progress && std::io::stderr().is_terminal() {
        let bar = bar.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !bar.is_finished() {
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {pos}/{len} nodes answered {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(100));
            }
        });
    }
    let slots = tokio::sync::Semaphore::new(at_once.max(1));
    let calls = targets.iter().map(|target| {
        let bar = &bar;
        let call = &call;
        let slots = &slots;
        async move {
            // Never closed: Err only if it were.
            let _slot = slots.acquire().await;
            let reply = match call(target).await {
                Ok(reply) => reply,
                Err(e) => failure_reply(&target.name, &e),
            };
            bar.inc(1);
            (target.name.clone(), reply)
        }
    });
    let replies = join_all(calls).await.into_iter().collect();
    bar.finish_and_clear();
    replies
}

/// Targets whose names match `selection`: comma-separated names or globs (`web-*`);
/// None selects everything.
pub fn select(
    members: impl IntoIterator<Item = Target>,
    selection: Option<&str>,
) -> Result<Vec<Target>, String> {
    let patterns: Vec<glob::Pattern> = match selection {
        None => Vec::new(),
        Some(text) => text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| glob::Pattern::new(p).map_err(|e| format!("bad --node pattern {p:?}: {e}")))
            .collect::<Result<_, _>>()?,
    };
    Ok(members
        .into_iter()
        .filter(|t| patterns.is_empty() || patterns.iter().any(|p| p.matches(&t.name)))
        .collect())
}

/// The one line a fan-out (a broadcast, `configure`, `reset`) prints after its per-node
/// results when selected nodes were skipped because they are locked (see `troupe nodes`):
/// how many, which, why, and what to do. `nodes` are member JSON objects
/// ([`crate::membership::member_json`]), `selection` the `--node` patterns, `ours` the
/// fingerprint of this command's cluster key. None when no selected node is locked.
pub fn locked_line(nodes: &[Value], selection: Option<&str>, ours: Option<&str>) -> Option<String> {
    let locked: Vec<&Value> = nodes.iter().filter(|n| n["state"] == "locked").collect();
    let targets = locked.iter().map(|n| Target {
        name: n["name"].as_str().unwrap_or_default().to_string(),
        endpoint: n["endpoint"].as_str().unwrap_or_default().to_string(),
    });
    // A bad pattern was reported with the results already.
    let selected = select(targets, selection).ok().filter(|s| !s.is_empty())?;
    let names: Vec<&str> = selected.iter().map(|t| t.name.as_str()).collect();
    let mut theirs: Vec<&str> = locked
        .iter()
        .filter(|n| {
            selected
                .iter()
                .any(|t| n["endpoint"] == t.endpoint.as_str())
        })
        .map(|n| n["key_fingerprint"].as_str().unwrap_or("none"))
        .collect();
    theirs.sort_unstable();
    theirs.dedup();
    let (why, fix) = match ours {
        Some(ours) => (
            format!(
                "their cluster key differs from ours (ours {ours}, theirs {})",
                theirs.join(", ")
            ),
            "copy the cluster key file to them or use --key-file",
        ),
        None => (
            // Found by probing, their fingerprint is unknown: a keyless handshake names none.
            match theirs.iter().filter(|fp| **fp != "none").count() {
                0 => "they hold a cluster key and this command has none".to_string(),
                _ => format!(
                    "they hold a cluster key ({}) and this command has none",
                    theirs.join(", ")
                ),
            },
            "use --key-file or TROUPE_KEY_FILE with the cluster's key file",
        ),
    };
    let count = match selected.len() {
        1 => "1 node".to_string(),
        n => format!("{n} nodes"),
    };
    Some(format!(
        "{count} locked, not sent to ({}): {why}; {fix}",
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_locked_line_names_the_selected_locked_nodes_why_and_what_to_do() {
        let row = |name: &str, state: &str, fp: Option<&str>| {
            let endpoint = format!("tcp://{name}:5555");
            json!({"name": name, "state": state, "endpoint": endpoint, "key_fingerprint": fp})
        };
        let nodes = [
            row("web-1", "alive", Some("1111111111111111")),
            row("web-2", "locked", Some("ab12ab12ab12ab12")),
            row("locked-10-0-0-9-5555", "locked", None),
            row("db-1", "locked", Some("ab12ab12ab12ab12")),
        ];
        let keyed = locked_line(&nodes, None, Some("1111111111111111")).unwrap();
        assert_eq!(
            keyed,
            "3 nodes locked, not sent to (web-2, locked-10-0-0-9-5555, db-1): their cluster \
             key differs from ours (ours 1111111111111111, theirs ab12ab12ab12ab12, none); \
             copy the cluster key file to them or use --key-file"
        );
        let one = locked_line(&nodes, Some("web-*"), None).unwrap();
        assert_eq!(
            one,
            "1 node locked, not sent to (web-2): they hold a cluster key (ab12ab12ab12ab12) \
             and this command has none; use --key-file or TROUPE_KEY_FILE with the cluster's \
             key file"
        );
        assert_eq!(locked_line(&nodes, Some("web-1"), None), None);
        assert_eq!(locked_line(&nodes[..1], None, None), None);
    }

    fn targets(names: &[&str]) -> Vec<Target> {
        names
            .iter()
            .map(|n| Target {
                name: n.to_string(),
                endpoint: format!("tcp://127.0.0.1:1/{n}"),
            })
            .collect()
    }

    #[test]
    fn selection_by_names_and_globs() {
        let all = targets(&["web-1", "web-2", "db-1"]);
        let names = |sel| -> Vec<String> {
            select(all.clone(), sel)
                .unwrap()
                .into_iter()
                .map(|t| t.name)
                .collect()
        };
        assert_eq!(names(None), ["web-1", "web-2", "db-1"]);
        assert_eq!(names(Some("web-*")), ["web-1", "web-2"]);
        assert_eq!(names(Some("db-1, web-2")), ["web-2", "db-1"]);
        assert!(names(Some("nope")).is_empty());
        assert!(select(all, Some("["))
            .unwrap_err()
            .contains("bad --node pattern"));
    }

    #[tokio::test]
    async fn an_unreachable_node_costs_only_its_timeout_and_is_an_error_reply() {
        // Port 9 on loopback: nothing listens, ZeroMQ keeps reconnecting, the call times out.
        let targets = vec![Target {
            name: "gone".into(),
            endpoint: "tcp://127.0.0.1:9".into(),
        }];
        let request = Request::new("status", Default::default());
        let started = std::time::Instant::now();
        let replies = fan_out(&targets, &request, Duration::from_millis(200), false).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        let reply = &replies["gone"];
        assert!(!reply_ok(reply));
        assert_eq!(reply["timeout"], true);
        assert!(
            reply["reason"]
                .as_str()
                .unwrap()
                .starts_with("no reply from gone within 200ms; the command may still be applied"),
            "{reply}"
        );
    }

    #[test]
    fn a_reply_without_a_status_is_not_ok() {
        assert!(reply_ok(&serde_json::json!({"status": "ok"})));
        assert!(reply_ok(&serde_json::json!({"status": "stopped"})));
        for reply in [
            serde_json::json!(null),
            serde_json::json!({}),
            serde_json::json!({"status": "error"}),
            serde_json::json!({"status": 1}),
        ] {
            assert!(!reply_ok(&reply), "{reply}");
        }
    }
}
