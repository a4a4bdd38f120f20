//! Human output of a broadcast: one table, a row per node (or per node and watcher).

use crate::broadcast::reply_ok;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use troupe::protocol::StopReason;

/// Renders the replies to `command` as a table.
pub fn render(
    command: &str,
    properties: &Map<String, Value>,
    replies: &BTreeMap<String, Value>,
) -> String {
    let named = properties.contains_key("name");
    let mut rows: Vec<Vec<String>> = Vec::new();
    let header: Vec<&str> = match (command, named) {
        ("status", false) => vec!["NODE", "WATCHER", "STATUS"],
        ("status", true) => vec!["NODE", "STATUS"],
        ("list", false) => vec!["NODE", "WATCHERS"],
        ("list", true) => vec!["NODE", "PIDS"],
        ("numprocesses" | "numwatchers" | "incr" | "decr", _) => vec!["NODE", "COUNT"],
        ("stats", _) => vec!["NODE", "WATCHER", "PID", "CPU%", "MEM%", "RSS", "AGE"],
        ("nodeinfo", _) => vec!["NODE", "ID", "VERSION", "WATCHERS", "ADDRESSES"],
        _ => vec!["NODE", "RESULT"],
    };
    for (node, reply) in replies {
        if !reply_ok(reply) {
            let reason = reply["reason"].as_str().unwrap_or("error");
            let mut row = vec![node.clone(), format!("error: {reason}")];
            row.resize(header.len(), String::new());
            rows.push(row);
            continue;
        }
        match (command, named) {
            ("status", false) => {
                for (watcher, state) in reply["statuses"].as_object().into_iter().flatten() {
                    let reason = &reply["stopped_reasons"][watcher];
                    rows.push(vec![
                        node.clone(),
                        watcher.clone(),
                        state_text(state, reason),
                    ]);
                }
            }
            ("status", true) => rows.push(vec![
                node.clone(),
                state_text(&reply["status"], &reply["stopped_reason"]),
            ]),
            ("list", false) => rows.push(vec![node.clone(), join(&reply["watchers"])]),
            ("list", true) => rows.push(vec![node.clone(), join(&reply["pids"])]),
            ("numprocesses" | "numwatchers" | "incr" | "decr", _) => {
                let count = reply
                    .get("numprocesses")
                    .or_else(|| reply.get("numwatchers"))
                    .map(text)
                    .unwrap_or_else(|| "ok".into());
                rows.push(vec![node.clone(), count]);
            }
            ("stats", _) => stats_rows(node, reply, &mut rows),
            ("nodeinfo", _) => {
                let info = &reply["node"];
                rows.push(vec![
                    node.clone(),
                    info["id"].as_str().unwrap_or("-").chars().take(8).collect(),
                    text(&info["version"]),
                    info["watchers"].as_object().map_or(0, Map::len).to_string(),
                    join(&info["addresses"]),
                ]);
            }
            _ => rows.push(vec![node.clone(), "ok".into()]),
        }
    }
    table(&header, &rows)
}

fn stats_rows(node: &str, reply: &Value, rows: &mut Vec<Vec<String>>) {
    let mut push = |watcher: &str, per_pid: &Value| {
        for (pid, info) in per_pid.as_object().into_iter().flatten() {
            if info.is_string() {
                rows.push(vec![node.into(), watcher.into(), pid.clone(), text(info)]);
                continue;
            }
            rows.push(vec![
                node.into(),
                watcher.into(),
                pid.clone(),
                format!("{:.1}", info["cpu"].as_f64().unwrap_or(0.0)),
                format!("{:.1}", info["mem"].as_f64().unwrap_or(0.0)),
                text(&info["mem_info1"]),
                format!("{:.0}s", info["age"].as_f64().unwrap_or(0.0)),
            ]);
        }
    };
    if let Some(infos) = reply["infos"].as_object() {
        for (watcher, per_pid) in infos {
            push(watcher, per_pid);
        }
    } else if reply.get("process").is_some() {
        let mut one = Map::new();
        one.insert(text(&reply["process"]), reply["info"].clone());
        push(&text(&reply["name"]), &Value::Object(one));
    } else {
        push(&text(&reply["name"]), &reply["info"]);
    }
}

/// A watcher's state, with the reason it stopped by itself when the agent gave one:
/// `stopped (flapping: 6 quick exits; last: exit 1 "...")`.
fn state_text(state: &Value, reason: &Value) -> String {
    match serde_json::from_value::<StopReason>(reason.clone()) {
        Ok(reason) => format!("{} ({reason})", text(state)),
        Err(_) => text(state),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn join(value: &Value) -> String {
    value
        .as_array()
        .map(|items| items.iter().map(text).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// Left-aligned columns two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

/// A per-node table of configure results.
pub fn render_configure(replies: &BTreeMap<String, Value>, dry_run: bool) -> String {
    let mut rows = Vec::new();
    for (node, reply) in replies {
        if !reply_ok(reply) {
            rows.push(vec![
                node.clone(),
                format!("error: {}", reply["reason"].as_str().unwrap_or("?")),
            ]);
            continue;
        }
        let files = reply["files"].as_array().cloned().unwrap_or_default();
        let changed = files.iter().filter(|f| f["changed"] == true).count();
        let restarted: Vec<String> = reply["restarted"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(str::to_string))
            .collect();
        rows.push(vec![
            node.clone(),
            format!(
                "{} file{}, {changed} changed{}{}",
                files.len(),
                if files.len() == 1 { "" } else { "s" },
                if dry_run { " (dry run)" } else { "" },
                if restarted.is_empty() {
                    String::new()
                } else {
                    format!(", restarted {}", restarted.join(","))
                }
            ),
        ]);
    }
    table(&["NODE", "CONFIGURE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_has_a_row_per_node_and_watcher_and_errors_inline() {
        let mut replies = BTreeMap::new();
        replies.insert(
            "a".to_string(),
            json!({"status": "ok", "statuses": {"web": "active", "db": "stopped"},
                   "stopped_reasons": {"db": {"cause": "flapping", "quick_exits": 6,
                                              "last_exit": 1, "last_output": "boom"}}}),
        );
        replies.insert(
            "b".to_string(),
            json!({"status": "error", "reason": "no reply from tcp://x within 5s"}),
        );
        let out = render("status", &Map::new(), &replies);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NODE", "WATCHER", "STATUS"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["a", "web", "active"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "a",
                "db",
                "stopped",
                "(flapping:",
                "6",
                "quick",
                "exits;",
                "last:",
                "exit",
                "1",
                "\"boom\")"
            ]
        );
        assert!(
            lines[3].starts_with("b") && lines[3].contains("error: no reply"),
            "{out}"
        );
    }
}
