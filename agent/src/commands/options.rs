//! get, set, options, globaloptions.

use super::lifecycle::run_on;
use super::{fields, watcher, AgentContext, Fields, Props};
use crate::watcher::WatcherMsg;
use serde_json::{json, Map, Value};
use troupe::protocol::CommandError;

pub async fn get(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let handle = watcher(ctx, props.required_str("name")?).await?;
    let keys = match props.get("keys") {
        Some(Value::Array(keys)) => keys,
        Some(_) => {
            return Err(CommandError::message(
                "'keys' must be a list of option names",
            ))
        }
        None => return Err(CommandError::message("message invalid 'keys' is missing")),
    };
    let all = handle.view().config.options_json();
    let mut options = Map::new();
    for key in keys {
        let key = key.as_str().unwrap_or_default();
        let value = all
            .get(key)
            .ok_or_else(|| CommandError::message(format!("'{key}' option not found")))?;
        options.insert(key.to_string(), value.clone());
    }
    Ok(fields([("options", Value::Object(options))]))
}

pub async fn options(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let handle = watcher(ctx, props.required_str("name")?).await?;
    Ok(fields([(
        "options",
        Value::Object(handle.view().config.options_json()),
    )]))
}

pub async fn set(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let handle = watcher(ctx, props.required_str("name")?).await?;
    let options: Vec<(String, Value)> = match props.get("options") {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(_) => return Err(CommandError::message("'options' must be an object")),
        None => {
            return Err(CommandError::message(
                "message invalid 'options' is missing",
            ))
        }
    };
    // Validate now so a bad value is refused even when the caller does not wait.
    let mut probe = handle.view().config;
    for (key, value) in &options {
        probe
            .apply(key, value)
            .map_err(|e| CommandError::message(e.to_string()))?;
    }
    probe.check().map_err(CommandError::message)?;
    let waiting = props.waiting()?;
    // Like circusd, reply once the options are applied, so a `get` right after sees them.
    run_on(&handle, true, |reply| WatcherMsg::Set {
        options,
        waiting,
        reply,
    })
    .await?;
    Ok(Map::new())
}

pub fn globaloptions(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let s = &ctx.settings;
    let all: Map<String, Value> = [
        ("endpoint", json!(s.endpoint(s.control_port))),
        // troupe's own: the owner-only socket, the one that accepts code-bearing commands.
        ("owner_endpoint", json!(ctx.owner_endpoint)),
        ("pubsub_endpoint", json!(s.endpoint(s.pubsub_port))),
        ("stats_endpoint", json!(s.endpoint(s.stats_port))),
        // troupe reaps on child exit; there is no housekeeping period.
        ("check_delay", json!(0.0)),
        ("multicast_endpoint", json!("udp://237.219.251.97:12027")),
        ("name", json!(s.name)),
        ("cluster", json!(s.cluster)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let options = match props.opt_str("option")? {
        Some(option) => {
            let value = all.get(option).ok_or_else(|| {
                CommandError::message(format!("'{option}' not an existing option"))
            })?;
            fields([(option, value.clone())])
        }
        None => all,
    };
    Ok(fields([("options", Value::Object(options))]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn configure_and_reset_keys_are_protected_like_cmd() {
        for key in troupe::config::ServiceOptions::KEYS {
            assert!(troupe::protocol::option_brings_code(key), "{key}");
        }
        assert!(!troupe::protocol::option_brings_code("numprocesses"));
    }
}
