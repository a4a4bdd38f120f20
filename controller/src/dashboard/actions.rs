//! The dashboard's actions, checked here on the server whatever the page shows.
//!
//! `POST /api/action` `{action, node, watcher, confirm?, reset?}`:
//! - `action`: `start`, `stop`, `restart`, `incr`, `decr`, `reset` or `reconfigure`;
//! - `node`: a node name, or `"*"` for every alive node; `watcher`: a watcher name, or `"*"`
//!   for every watcher (ignored by `reconfigure`, which is the whole cycle on the nodes);
//! - `reset` and `reconfigure` wipe or stop data-bearing services: they need
//!   `"confirm": true`, which the page sends once its user read what [`plan`] listed;
//!   `reconfigure` with `"reset": true` also wipes every data_dir, as
//!   `troupe reconfigure --reset`.
//!
//! The answer is `{action, ok, results: [{command, watcher, nodes: {NODE: reply}, table}]}`:
//! each node's own reply, and the table the CLI prints for the same command. Commands go
//! through serve's kept connections ([`ClusterLink::Kept`]), with the CLI's request shapes
//! (`waiting` stops and starts, so the answer tells what happened) and `troupe reconfigure`'s
//! own code.
//!
//! `POST /api/plan` `{action: "reset" | "reconfigure", node, watcher, reset?}` answers what
//! the action would stop and wipe: `{nodes: [...], wipes: [{node, watcher, data_dir: [...],
//! reset_hook}], errors: {NODE: reason}}`, read from each node (`get data_dir reset_hook`).

use super::api::error;
use super::App;
use crate::activity::Activity;
use crate::broadcast::reply_ok;
use crate::cluster_link::ClusterLink;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use troupe::protocol::{now_epoch, Request};

/// What a request names, checked.
struct Scope {
    action: String,
    /// None: every alive node.
    node: Option<String>,
    /// None: every watcher.
    watcher: Option<String>,
}

const ACTIONS: [&str; 7] = [
    "start",
    "stop",
    "restart",
    "incr",
    "decr",
    "reset",
    "reconfigure",
];

fn field<'a>(body: &'a Value, key: &str) -> Result<&'a str, String> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s),
        None => Err(format!("'{key}' is missing")),
        Some(other) => Err(format!("'{key}' must be a string, got {other}")),
    }
}

fn flag(body: &Value, key: &str) -> Result<bool, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!("'{key}' must be true or false, got {other}")),
    }
}

/// A node or watcher name, or `*` for all.
fn name_or_all(body: &Value, key: &str) -> Result<Option<String>, String> {
    let text = field(body, key)?;
    if text == "*" {
        return Ok(None);
    }
    troupe::config::names::check_name(text).map_err(|e| format!("'{key}': {e}"))?;
    Ok(Some(text.to_string()))
}

fn scope(body: &Value) -> Result<Scope, String> {
    let action = field(body, "action")?;
    if !ACTIONS.contains(&action) {
        return Err(format!(
            "'action' must be one of {}, got {action:?}",
            ACTIONS.join(", ")
        ));
    }
    Ok(Scope {
        action: action.to_string(),
        node: name_or_all(body, "node")?,
        watcher: if action == "reconfigure" {
            None
        } else {
            name_or_all(body, "watcher")?
        },
    })
}

fn link(app: &App) -> ClusterLink {
    ClusterLink::Kept {
        membership: app.context.membership.clone(),
        links: app.context.links.clone(),
    }
}

/// The watchers of the selected alive nodes that `watcher` names (all of them for None).
fn watchers_of(app: &App, scope: &Scope) -> BTreeSet<String> {
    app.context
        .membership
        .shared_members()
        .iter()
        .filter(|m| m.state == crate::membership::MemberState::Alive)
        .filter(|m| scope.node.as_ref().is_none_or(|n| *n == m.name))
        .filter_map(|m| m.info.as_ref())
        .flat_map(|info| info.watchers.keys())
        .filter(|w| scope.watcher.as_ref().is_none_or(|name| name == *w))
        .cloned()
        .collect()
}

/// The alive members `scope` selects; an answer naming why when none is, or the selection is bad.
fn selected(app: &App, scope: &Scope) -> Result<Vec<crate::broadcast::Target>, Box<Response>> {
    match crate::broadcast::select(
        app.context.membership.alive_targets(),
        scope.node.as_deref(),
    ) {
        Ok(targets) if !targets.is_empty() => Ok(targets),
        Ok(_) => Err(Box::new(no_node(scope))),
        Err(e) => Err(Box::new(error(StatusCode::BAD_REQUEST, e))),
    }
}

fn no_node(scope: &Scope) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no alive node matched {}: it may be down or gone (see the members list)",
            scope.node.as_deref().unwrap_or("*")
        ),
    )
}

pub async fn plan(State(app): State<Arc<App>>, Json(body): Json<Value>) -> Response {
    let scope = match scope(&body) {
        Ok(scope) => scope,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let reset = match flag(&body, "reset") {
        Ok(reset) => reset || scope.action == "reset",
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let targets = match selected(&app, &scope) {
        Ok(targets) => targets,
        Err(response) => return *response,
    };
    let nodes: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let mut wipes = Vec::new();
    let mut errors = BTreeMap::new();
    if reset {
        let link = link(&app);
        for watcher in watchers_of(&app, &scope) {
            let request = Request::new(
                "get",
                props([
                    ("name", json!(watcher)),
                    ("keys", json!(["data_dir", "reset_hook"])),
                ]),
            );
            let replies = match link
                .send(&request, scope.node.as_deref(), app.context.timeout)
                .await
            {
                Ok(replies) => replies,
                Err(e) => return error(StatusCode::BAD_GATEWAY, format!("{e:#}")),
            };
            for (node, reply) in replies {
                if !reply_ok(&reply) {
                    // A node without this watcher says "program X not found": nothing to wipe.
                    let reason = reply["reason"].as_str().unwrap_or("no answer");
                    if !reason.contains("not found") {
                        errors.insert(node, reason.to_string());
                    }
                    continue;
                }
                let options = &reply["options"];
                let dirs = options["data_dir"].as_array().cloned().unwrap_or_default();
                if dirs.is_empty() && options["reset_hook"].is_null() {
                    continue;
                }
                wipes.push(json!({
                    "node": node,
                    "watcher": watcher,
                    "data_dir": dirs,
                    "reset_hook": options["reset_hook"],
                }));
            }
        }
    }
    Json(json!({
        "action": scope.action,
        "nodes": nodes,
        "watcher": scope.watcher,
        "wipes": wipes,
        "errors": errors,
    }))
    .into_response()
}

pub async fn act(State(app): State<Arc<App>>, Json(body): Json<Value>) -> Response {
    let scope = match scope(&body) {
        Ok(scope) => scope,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (confirm, reset) = match (flag(&body, "confirm"), flag(&body, "reset")) {
        (Ok(confirm), Ok(reset)) => (confirm, reset),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let wipes = scope.action == "reset" || (scope.action == "reconfigure" && reset);
    if (wipes || scope.action == "reconfigure") && !confirm {
        return error(
            StatusCode::PRECONDITION_REQUIRED,
            format!(
                "{} {}: ask POST /api/plan what it stops and wipes, then send it again with \
                 \"confirm\": true",
                scope.action,
                if wipes {
                    "wipes data_dirs"
                } else {
                    "stops every watcher"
                }
            ),
        );
    }
    let targets = match selected(&app, &scope) {
        Ok(targets) => targets,
        Err(response) => return *response,
    };
    let result = if scope.action == "reconfigure" {
        reconfigure(&app, &scope, reset).await
    } else {
        commands(&app, &scope).await
    };
    let results = match result {
        Ok(results) => results,
        Err(e) => {
            if scope.action == "reconfigure" {
                let activity = Activity {
                    time: now_epoch(),
                    node: scope.node.clone().unwrap_or_else(|| "*".into()),
                    watcher: Some("*".into()),
                    kind: "configure".into(),
                    pid: None,
                    detail: format!("from the dashboard: {e:#}"),
                };
                app.context.activity.configured(activity, false).await;
            }
            return error(StatusCode::BAD_GATEWAY, format!("{e:#}"));
        }
    };
    let ok = results.iter().all(|r| r["ok"] == true);
    let failed: BTreeSet<&str> = results
        .iter()
        .flat_map(|r| r["failed"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    let activity = Activity {
        time: now_epoch(),
        node: scope.node.clone().unwrap_or_else(|| "*".into()),
        watcher: scope.watcher.clone().or_else(|| Some("*".into())),
        kind: if scope.action == "reconfigure" {
            "configure".into()
        } else {
            scope.action.clone()
        },
        pid: None,
        detail: if ok {
            format!("from the dashboard: ok on {} node(s)", targets.len())
        } else {
            format!(
                "from the dashboard: failed on {}",
                failed.into_iter().collect::<Vec<_>>().join(", ")
            )
        },
    };
    if scope.action == "reconfigure" {
        app.context.activity.configured(activity, ok).await;
    } else {
        app.context.activity.note(activity).await;
    }
    Json(json!({"action": scope.action, "ok": ok, "results": results})).into_response()
}

/// start, stop, restart, reset: one request; incr and decr of every watcher: one per watcher
/// (a Circus `incr` names one).
async fn commands(app: &App, scope: &Scope) -> anyhow::Result<Vec<Value>> {
    let link = link(app);
    let names: Vec<Option<String>> = match (&scope.watcher, scope.action.as_str()) {
        (None, "incr" | "decr") => watchers_of(app, scope).into_iter().map(Some).collect(),
        (None, "reset") => vec![Some("*".to_string())],
        (watcher, _) => vec![watcher.clone()],
    };
    let mut results = Vec::new();
    for name in names {
        let mut properties = Map::new();
        if let Some(name) = &name {
            properties.insert("name".into(), json!(name));
        }
        if scope.action != "incr" && scope.action != "decr" {
            properties.insert("waiting".into(), json!(true));
        }
        let request = Request::new(scope.action.as_str(), properties);
        let mut replies = link
            .send(&request, scope.node.as_deref(), app.context.timeout)
            .await?;
        if let Some(name) = name.as_deref().filter(|_| scope.node.is_none()) {
            // "watcher on every node": a node without it is not a failure of the action.
            let absent = format!("program {name} not found");
            replies.retain(|_, reply| reply_ok(reply) || reply["reason"] != absent.as_str());
        }
        let table = crate::render::render(&request.command, &request.properties, &replies);
        results.push(result(&request.command, name.as_deref(), replies, table));
    }
    Ok(results)
}

async fn reconfigure(app: &App, scope: &Scope, reset: bool) -> anyhow::Result<Vec<Value>> {
    let link = link(app);
    let selection = scope.node.as_deref();
    let steps = crate::cycle::reconfigure(
        &link,
        &app.context.cluster,
        selection,
        app.context.timeout,
        reset,
    )
    .await?;
    let (table, ok) = steps.table();
    let command = if reset {
        "reconfigure --reset"
    } else {
        "reconfigure"
    };
    Ok(vec![json!({
        "command": command,
        "watcher": null,
        "nodes": {},
        "table": table,
        "ok": ok,
        "failed": [],
    })])
}

fn result(
    command: &str,
    watcher: Option<&str>,
    replies: BTreeMap<String, Value>,
    table: String,
) -> Value {
    let failed: Vec<&String> = replies
        .iter()
        .filter(|(_, r)| !reply_ok(r))
        .map(|(n, _)| n)
        .collect();
    json!({
        "command": command,
        "watcher": watcher,
        "ok": failed.is_empty(),
        "failed": failed,
        "table": table,
        "nodes": replies,
    })
}

fn props<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_a_known_action_and_valid_names() {
        let ok = scope(&json!({"action": "stop", "node": "n1", "watcher": "*"})).unwrap();
        assert_eq!(
            (ok.action.as_str(), ok.node.as_deref(), ok.watcher),
            ("stop", Some("n1"), None)
        );
        let refused = |body: Value| scope(&body).err().unwrap();
        assert!(refused(json!({"action": "rm", "node": "*", "watcher": "*"})).contains("'action'"));
        assert!(refused(json!({"action": "stop", "watcher": "*"})).contains("'node' is missing"));
        assert!(
            refused(json!({"action": "stop", "node": "a b;", "watcher": "*"})).contains("'node'")
        );
        assert!(
            refused(json!({"action": "stop", "node": "*", "watcher": 3})).contains("'watcher'")
        );
        let reconfigure = scope(&json!({"action": "reconfigure", "node": "*"})).unwrap();
        assert_eq!(reconfigure.watcher, None);
    }
}
