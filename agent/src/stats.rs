//! The stats stream: every `stats_interval`, one `stat.<watcher>.<pid>` sample per process,
//! a `stat.<watcher>` aggregate per watcher and `stat.circus.<pid>` for the agent itself, in
//! circusd-stats' format, so the stock circus-top reads the agent directly.

use crate::arbiter::ArbiterHandle;
use crate::circus_bind::Publishers;
use crate::sampler::{SampleTarget, Sampler};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;
use troupe::protocol::ProcessInfo;
use troupe::subscribers::GuardedPublisher;

/// Binds the stats socket and spawns the publishing loop. A round is sampled only while
/// someone is subscribed: sampling 1000 processes costs about 1.5 % of a core, and an agent
/// nobody watches (or one busy spawning) should not pay it. Subscribers are held to the bounds
/// of [`troupe::subscribers`]. The same stream goes to `plaintext`, `circus_bind`'s socket.
pub fn spawn_stats(
    server: &troupe::sockets::ServerContext,
    endpoint: &str,
    plaintext: Option<GuardedPublisher>,
    interval: Duration,
    arbiter: ArbiterHandle,
    sampler: Sampler,
) -> tmq::Result<tokio::task::JoinHandle<()>> {
    let mut publisher = Publishers {
        cluster: GuardedPublisher::bind(server, endpoint, "stats")?,
        plaintext,
    };
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether the last round was sampled: a change is logged (at debug level).
        let mut sampling = None;
        loop {
            tokio::select! {
                _ = publisher.watch() => {}
                _ = tick.tick() => {
                    let subscribed = publisher.has_subscribers();
                    if sampling.replace(subscribed) != Some(subscribed) {
                        if subscribed {
                            tracing::debug!("stats: someone subscribes: sampling each round");
                        } else {
                            tracing::debug!("stats: nobody subscribes: sampling paused");
                        }
                    }
                    if !subscribed {
                        continue;
                    }
                    let Ok(messages) = collect(&arbiter, &sampler).await else {
                        return;
                    };
                    // Subscriptions are still read through tmq: the next turn of this loop
                    // reads whatever arrived while these were sent.
                    for (topic, payload) in messages {
                        publisher.publish(topic, payload);
                    }
                }
            }
        }
    }))
}

/// One process's sample on the stream: its info plus circusd-stats' `subtopic` and `name`.
#[derive(Serialize)]
struct StreamSample<'a> {
    #[serde(flatten)]
    info: &'a ProcessInfo,
    subtopic: u32,
    name: Option<&'static str>,
}

/// One round of samples as `(topic, JSON payload)` pairs. Samples are serialized straight to
/// bytes: a `Value` tree per process was most of the stream's cost at 1000 processes.
pub async fn collect(
    arbiter: &ArbiterHandle,
    sampler: &Sampler,
) -> Result<Vec<(String, Vec<u8>)>, troupe::protocol::CommandError> {
    let watchers = arbiter.all().await?;
    let mut targets = Vec::new();
    let mut owners = Vec::new();
    for watcher in &watchers {
        let view = watcher.view();
        for process in &view.processes {
            targets.push(SampleTarget {
                pid: process.pid,
                started: Some(process.started),
                wid: Some(process.wid),
                with_children: true,
            });
            owners.push(watcher.name.to_lowercase());
        }
    }
    let agent_pid = std::process::id();
    targets.push(SampleTarget {
        pid: agent_pid,
        started: None,
        wid: None,
        with_children: false,
    });
    owners.push("circus".into());
    let samples = sampler.sample(targets).await;
    let mut messages = Vec::new();
    let mut per_watcher: std::collections::BTreeMap<String, Vec<ProcessInfo>> = Default::default();
    for (owner, sample) in owners.into_iter().zip(samples) {
        // A process that exited between listing and sampling is simply left out.
        let Some(info) = sample else { continue };
        let sample = StreamSample {
            info: &info,
            subtopic: info.pid,
            name: (owner == "circus").then_some("troupe-agent"),
        };
        match serde_json::to_vec(&sample) {
            Ok(payload) => messages.push((format!("stat.{owner}.{}", info.pid), payload)),
            Err(e) => tracing::warn!(pid = info.pid, "stats sample not encoded: {e}"),
        }
        per_watcher.entry(owner).or_default().push(info);
    }
    for watcher in &watchers {
        per_watcher.entry(watcher.name.to_lowercase()).or_default();
    }
    for (owner, infos) in per_watcher {
        messages.push((
            format!("stat.{owner}"),
            aggregate(&infos).to_string().into_bytes(),
        ));
    }
    Ok(messages)
}

/// Circus's aggregate: `{pid: [..], cpu: average, mem: sum, age: max}`.
pub fn aggregate(infos: &[ProcessInfo]) -> Value {
    let pids: Vec<u32> = infos.iter().map(|i| i.pid).collect();
    let cpu = if infos.is_empty() {
        0.0
    } else {
        infos.iter().map(|i| i.cpu).sum::<f64>() / infos.len() as f64
    };
    let mem: f64 = infos.iter().map(|i| i.mem).sum();
    let age = infos.iter().map(|i| i.age).fold(0.0, f64::max);
    json!({"pid": pids, "cpu": cpu, "mem": troupe::protocol::round_mem_percent(mem), "age": age})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: u32, cpu: f64, mem: f64, age: f64) -> ProcessInfo {
        ProcessInfo {
            pid,
            mem_info1: "1.00M".into(),
            mem_info2: "2.00M".into(),
            cpu,
            mem,
            ctime: "0:00.00".into(),
            username: "root".into(),
            nice: 0,
            create_time: 0.0,
            age,
            cmdline: "sleep".into(),
            children: None,
            started: None,
            wid: None,
        }
    }

    #[test]
    fn aggregate_averages_cpu_sums_mem_and_takes_the_oldest_age() {
        let value = aggregate(&[info(1, 10.0, 0.5, 3.0), info(2, 30.0, 0.25, 9.0)]);
        assert_eq!(
            value,
            json!({"pid": [1, 2], "cpu": 20.0, "mem": 0.75, "age": 9.0})
        );
        assert_eq!(
            aggregate(&[]),
            json!({"pid": [], "cpu": 0.0, "mem": 0.0, "age": 0.0})
        );
    }
}
