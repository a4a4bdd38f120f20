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

/// A node to send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub endpoint: String,
}

/// Whether a node's reply is a success.
pub fn reply_ok(reply: &Value) -> bool {
    reply["status"] != "error"
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
    let zmq = zmq::Context::new();
    gather(targets, progress, |target| {
        call_async(&zmq, &target.endpoint, request.clone(), timeout)
    })
    .await
}

/// Runs `call` for every target at once and collects each result, a failure as
/// [`failure_reply`], keyed by node name.
pub async fn gather<'a, F, C>(
    targets: &'a [Target],
    progress: bool,
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
    let calls = targets.iter().map(|target| {
        let bar = &bar;
        let call = call(target);
        async move {
            let reply = match call.await {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
