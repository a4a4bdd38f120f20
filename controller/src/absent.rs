//! The known nodes a fan-out did not reach, said in one place. A node that was there and does
//! not answer now is shown as such, every time, never dropped from the answer (issue 14: once
//! membership marked a frozen node `down`, `troupe status` printed only the live nodes and
//! exited 0).
//!
//! Every fan-out (a broadcast, `configure`, `reconfigure`, `reset`, `stats`, the shell, and
//! `troupe serve`'s forwarding) adds one error row per selected node it knows but did not send
//! to: `suspect` or `down` (membership's heartbeats), `no reply` (an address that accepts connections and never answers `nodeinfo`), or `down` from
//! the CLI's roster ([`crate::roster`]: seen before, not found now). The rows make the command
//! exit [`crate::exit_code::EXIT_NODE_FAILED`]; `--alive-only` removes them and says so.

use crate::broadcast::{select, Target};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use troupe::protocol::{now_epoch, Errno};

/// The states of a known node that is not sent to. `alive` nodes are sent to, and a `left`
/// node said goodbye (a clean `quit`): neither is reported. Nor is a `locked` row: it is a
/// sighting (an mDNS record, a refused handshake), never a proven member, so anyone on the
/// network could make every command fail with one; fan-outs count them on a line of their own.
/// A silent address is reported only when the operator's ranges or seeds named it.
const ABSENT_STATES: [&str; 3] = ["suspect", "down", crate::membership::NO_REPLY];

/// Whether a member in `state` gets an error row when it has no reply.
pub fn is_absent_state(state: &str) -> bool {
    ABSENT_STATES.contains(&state)
}

/// Adds to `replies` an error row for every node of `known` (member JSON objects, see
/// [`crate::membership::member_json`]) that `selection` selects, is in an absent state, and
/// has no reply already.
pub fn add(replies: &mut BTreeMap<String, Value>, known: &[Value], selection: Option<&str>) {
    let now = now_epoch();
    let absent = known
        .iter()
        .filter(|n| n["state"].as_str().is_some_and(is_absent_state));
    let targets = absent.clone().map(|n| Target {
        name: n["name"].as_str().unwrap_or_default().to_string(),
        endpoint: n["endpoint"].as_str().unwrap_or_default().to_string(),
    });
    // A bad pattern is reported by the fan-out itself.
    let Ok(selected) = select(targets, selection) else {
        return;
    };
    for target in selected {
        if replies.contains_key(&target.name) {
            continue;
        }
        if let Some(node) = absent.clone().find(|n| n["name"] == target.name.as_str()) {
            replies.insert(target.name.clone(), row(node, now));
        }
    }
}

/// The error row of an absent node: Circus's error shape, plus `state`, `endpoint`,
/// `last_seen` (seconds since the epoch, null when never seen answering) and `absent`.
pub fn row(node: &Value, now: f64) -> Value {
    let state = node["state"].as_str().unwrap_or("down");
    json!({
        "status": "error",
        "reason": reason(node, now),
        "tb": null,
        "errno": Errno::OsError as i64,
        "timeout": false,
        "state": state,
        "endpoint": node["endpoint"],
        "last_seen": node["last_seen"],
        "absent": true,
    })
}

/// What happened to the node, when it was last seen, and what to do.
fn reason(node: &Value, now: f64) -> String {
    let address = node["endpoint"]
        .as_str()
        .unwrap_or("?")
        .trim_start_matches("tcp://");
    let seen = |epoch: Option<f64>| match epoch {
        Some(epoch) => format!("last seen {}", when(epoch, now)),
        None => "never seen answering".to_string(),
    };
    let last_seen = node["last_seen"].as_f64();
    let what = match node["state"].as_str().unwrap_or("down") {
        "suspect" => format!(
            "suspect: it missed heartbeats at {address}, {}",
            seen(last_seen)
        ),
        crate::membership::NO_REPLY => format!(
            "no reply: {address} accepts connections but does not answer (a frozen or \
             overloaded agent?), silent since {}, {}",
            when(node["silent_since"].as_f64().unwrap_or(now), now),
            seen(last_seen)
        ),
        _ if node["source"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "roster")) =>
        {
            format!(
                "down: not found at {address} nor anywhere else, {}; `troupe nodes --forget \
                 {}` if it is gone for good",
                seen(last_seen),
                node["name"].as_str().unwrap_or("NODE")
            )
        }
        _ => format!("down: no answer at {address}, {}", seen(last_seen)),
    };
    format!("{what}; not sent to (--alive-only skips nodes that are not alive)")
}

/// "2024-05-01 14:02:07 (3m 12s ago)", in local time.
pub fn when(epoch: f64, now: f64) -> String {
    let ago = std::time::Duration::from_secs((now - epoch).max(0.0) as u64);
    let local = chrono::DateTime::from_timestamp(epoch as i64, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "?".into());
    format!("{local} ({} ago)", humantime::format_duration(ago))
}

/// `--alive-only`: removes the absent rows from `replies`; the line saying which were skipped,
/// if any.
pub fn skip(replies: &mut BTreeMap<String, Value>) -> Option<String> {
    let skipped: Vec<String> = replies
        .iter()
        .filter(|(_, reply)| reply["absent"] == true)
        .map(|(name, reply)| format!("{name} ({})", reply["state"].as_str().unwrap_or("down")))
        .collect();
    replies.retain(|_, reply| reply["absent"] != true);
    let count = match skipped.len() {
        0 => return None,
        1 => "1 node".to_string(),
        n => format!("{n} nodes"),
    };
    Some(format!(
        "--alive-only: skipped {count} that did not answer: {}",
        skipped.join(", ")
    ))
}

/// [`skip`] when `alive_only`, printing its line on stderr.
pub fn apply_alive_only(replies: &mut BTreeMap<String, Value>, alive_only: bool) {
    if let Some(line) = alive_only.then(|| skip(replies)).flatten() {
        eprintln!("troupe: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: &str, last_seen: Option<f64>) -> Value {
        json!({"name": name, "state": state, "endpoint": format!("tcp://10.0.0.9:{}", name.len()),
               "last_seen": last_seen, "source": ["probe"], "silent_since": 100.0})
    }

    #[test]
    fn every_selected_known_node_without_a_reply_gets_a_row_with_its_state() {
        let known = [
            node("a", "alive", Some(1.0)),
            node("b", "down", Some(1000.0)),
            node("c", "suspect", Some(1000.0)),
            node("10.0.0.9:5555", "no reply", None),
            node("d", "left", Some(1.0)),
            node("e", "locked", None),
        ];
        let mut replies = BTreeMap::from([("a".to_string(), json!({"status": "ok"}))]);
        add(&mut replies, &known, None);
        let states: Vec<(&str, &str)> = replies
            .iter()
            .map(|(n, r)| (n.as_str(), r["state"].as_str().unwrap_or("answered")))
            .collect();
        assert_eq!(
            states,
            [
                ("10.0.0.9:5555", "no reply"),
                ("a", "answered"),
                ("b", "down"),
                ("c", "suspect"),
            ]
        );
        assert!(!crate::broadcast::reply_ok(&replies["b"]));
        let reason = replies["b"]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("down: no answer at 10.0.0.9:1, last seen 19"),
            "{reason}"
        );
        assert!(reason.ends_with("ago); not sent to (--alive-only skips nodes that are not alive)"));
        let mut selected = BTreeMap::new();
        add(&mut selected, &known, Some("b,a"));
        assert_eq!(selected.keys().collect::<Vec<_>>(), ["b"]);
        let line = skip(&mut replies).unwrap();
        assert_eq!(
            line,
            "--alive-only: skipped 3 nodes that did not answer: 10.0.0.9:5555 (no reply), \
             b (down), c (suspect)"
        );
        assert_eq!(replies.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(skip(&mut replies), None);
    }
}
