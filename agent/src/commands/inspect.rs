//! Read-only commands: list, status, numprocesses, numwatchers, stats, dstats, listsockets,
//! nodeinfo. They read watcher snapshots and never wait behind a running command.

use super::{fields, watcher, AgentContext, Fields, Props};
use crate::sampler::SampleTarget;
use crate::watcher::WatcherView;
use serde_json::{json, Map, Value};
use troupe::protocol::{CommandError, Endpoints, NodeInfo, ProcessInfo, WatcherSummary};

const GONE: &str = "No such process (stopped?)";

pub async fn list(ctx: &AgentContext, props: Props<'_>) -> Fields {
    if let Some(name) = props.opt_str("name")? {
        let view = watcher(ctx, name).await?.view();
        return Ok(fields([("pids", json!(view.pids()))]));
    }
    let names: Vec<String> = ctx
        .arbiter
        .all()
        .await?
        .iter()
        .map(|w| w.name.to_lowercase())
        .collect();
    Ok(fields([("watchers", json!(names))]))
}

/// Circus's `status`, plus troupe's reason for every watcher that stopped by itself, in an
/// extra field stock clients ignore (`stopped_reason`, or `stopped_reasons` by watcher).
pub async fn status(ctx: &AgentContext, props: Props<'_>) -> Fields {
    if let Some(name) = props.opt_str("name")? {
        let view = watcher(ctx, name).await?.view();
        // Circus's quirk, relied upon by circusctl: the state replaces "ok".
        let mut reply = fields([("status", json!(view.state.as_str()))]);
        if let Some(reason) = &view.stopped_reason {
            reply.insert("stopped_reason".into(), json!(reason));
        }
        return Ok(reply);
    }
    let mut statuses = Map::new();
    let mut reasons = Map::new();
    for w in ctx.arbiter.all().await? {
        let view = w.view();
        statuses.insert(w.name.clone(), json!(view.state.as_str()));
        if let Some(reason) = &view.stopped_reason {
            reasons.insert(w.name.clone(), json!(reason));
        }
    }
    let mut reply = fields([("statuses", Value::Object(statuses))]);
    if !reasons.is_empty() {
        reply.insert("stopped_reasons".into(), Value::Object(reasons));
    }
    Ok(reply)
}

pub async fn numprocesses(ctx: &AgentContext, props: Props<'_>) -> Fields {
    if let Some(name) = props.opt_str("name")? {
        let view = watcher(ctx, name).await?.view();
        return Ok(fields([
            ("numprocesses", json!(view.processes.len())),
            ("watcher_name", json!(name)),
        ]));
    }
    let total: usize = ctx
        .arbiter
        .all()
        .await?
        .iter()
        .map(|w| w.view().processes.len())
        .sum();
    Ok(fields([("numprocesses", json!(total))]))
}

pub async fn numwatchers(ctx: &AgentContext) -> Fields {
    Ok(fields([(
        "numwatchers",
        json!(ctx.arbiter.all().await?.len()),
    )]))
}

/// Process info of every process of `view`, keyed by pid as a string.
async fn watcher_stats(
    ctx: &AgentContext,
    view: &WatcherView,
    only: Option<u32>,
) -> Map<String, Value> {
    let processes: Vec<_> = view
        .processes
        .iter()
        .filter(|p| only.is_none_or(|pid| pid == p.pid))
        .collect();
    let targets = processes
        .iter()
        .map(|p| SampleTarget {
            pid: p.pid,
            started: Some(p.started),
            wid: Some(p.wid),
            with_children: true,
        })
        .collect();
    let sampled = ctx.sampler.sample(targets).await;
    processes
        .iter()
        .zip(sampled)
        .map(|(p, info)| {
            let value = info.map_or(json!(GONE), |i: ProcessInfo| json!(i));
            (p.pid.to_string(), value)
        })
        .collect()
}

pub async fn stats(ctx: &AgentContext, props: Props<'_>) -> Fields {
    let Some(name) = props.opt_str("name")? else {
        let mut infos = Map::new();
        for w in ctx.arbiter.all().await? {
            let view = w.view();
            infos.insert(
                w.name.clone(),
                Value::Object(watcher_stats(ctx, &view, None).await),
            );
        }
        return Ok(fields([("infos", Value::Object(infos))]));
    };
    let handle = watcher(ctx, name).await?;
    let view = handle.view();
    if let Some(pid) = props.opt_pid("process")? {
        if !view.pids().contains(&pid) {
            return Err(CommandError::message(format!(
                "process {pid} not found in '{}'",
                handle.name
            )));
        }
        let mut info = watcher_stats(ctx, &view, Some(pid)).await;
        let single = info.remove(&pid.to_string()).unwrap_or(json!(GONE));
        return Ok(fields([("process", json!(pid)), ("info", single)]));
    }
    let info = watcher_stats(ctx, &view, None).await;
    // Circus echoes the name as the request spelled it.
    Ok(fields([
        ("name", json!(name)),
        ("info", Value::Object(info)),
    ]))
}

pub async fn dstats(ctx: &AgentContext) -> Fields {
    let target = SampleTarget {
        pid: std::process::id(),
        started: None,
        wid: None,
        with_children: false,
    };
    let info = ctx.sampler.sample(vec![target]).await.pop().flatten();
    let mut info =
        json!(info.ok_or_else(|| CommandError::os("cannot read the agent's own process"))?);
    if let Value::Object(map) = &mut info {
        // Circus lists the daemon without its children.
        map.insert("children".into(), json!([]));
    }
    Ok(fields([("info", info)]))
}

/// troupe-agent binds no sockets for its watchers (Circus's `[socket:*]`), so the list is empty.
pub fn listsockets() -> Fields {
    Ok(fields([("sockets", json!([]))]))
}

pub async fn nodeinfo(ctx: &AgentContext) -> Fields {
    let s = &ctx.settings;
    let watchers = ctx
        .arbiter
        .all()
        .await?
        .iter()
        .map(|w| {
            let view = w.view();
            let summary = WatcherSummary {
                status: view.state.as_str().to_string(),
                numprocesses: view.processes.len(),
                stopped_reason: view.stopped_reason,
            };
            (w.name.clone(), summary)
        })
        .collect();
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let node = NodeInfo {
        id: ctx.node_id.clone(),
        name: s.name.clone(),
        cluster: s.cluster.clone(),
        version: troupe::VERSION.to_string(),
        hostname,
        addresses: ctx.addresses.borrow().clone(),
        endpoints: Endpoints {
            control: s.endpoint(s.control_port),
            pubsub: s.endpoint(s.pubsub_port),
            stats: s.endpoint(s.stats_port),
        },
        started: ctx.started,
        watchers,
        fingerprint: troupe::sockets::client_keys()
            .map(|keys| keys.keyring().fingerprint().to_string()),
    };
    Ok(fields([("node", json!(node))]))
}

/// How often the host's addresses are read again for `nodeinfo`: reading them (a netlink
/// dump) at every request was four fifths of the agent's work on a heartbeat.
const ADDRESSES_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The host's addresses as `nodeinfo` reports them, read now and every [`ADDRESSES_EVERY`] by
/// a task of their own until the agent ends.
pub fn watch_addresses() -> tokio::sync::watch::Receiver<Vec<String>> {
    let (tx, rx) = tokio::sync::watch::channel(addresses());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(ADDRESSES_EVERY);
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let now = addresses();
                    if *tx.borrow() != now {
                        tx.send_replace(now);
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    rx
}

/// The host's IPv4 and IPv6 addresses, loopback last.
fn addresses() -> Vec<String> {
    let Ok(interfaces) = crate::announce::interfaces::system_interfaces() else {
        return Vec::new();
    };
    let mut found: Vec<std::net::IpAddr> = interfaces.iter().map(|i| i.ip).collect();
    found.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6(), *ip));
    found.dedup();
    found.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `nodeinfo` reports from the start: the host's addresses, loopback last, each once.
    #[tokio::test]
    async fn the_addresses_nodeinfo_reports_are_the_hosts_loopback_last() {
        let reported = watch_addresses().borrow().clone();
        assert_eq!(reported, addresses());
        assert!(reported.iter().any(|a| a == "127.0.0.1"), "{reported:?}");
        let loopback: Vec<bool> = reported
            .iter()
            .map(|a| a.parse::<std::net::IpAddr>().unwrap().is_loopback())
            .collect();
        assert!(loopback.windows(2).all(|w| w[0] <= w[1]), "{reported:?}");
        let mut unique = reported.clone();
        unique.dedup();
        assert_eq!(unique, reported);
    }
}
