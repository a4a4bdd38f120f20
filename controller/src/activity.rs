//! The cluster's activity, as the dashboard's event list shows it: membership events (join,
//! suspect, down, leave, update), every member's watcher events (read from its events socket,
//! `watcher.<name>.<event>`), and what the dashboard's own actions did (configure, reset).
//!
//! One actor owns it: it follows membership as the stats actor does (a SUB reader task per
//! alive or suspect member, aborted when the member goes), names what a raw event means for
//! an operator ([`Classifier`]: a `reap` with no `kill` before it is a crash, the `spawn`
//! after it a respawn), keeps the last [`DASHBOARD_RECENT_EVENTS`] for a page that opens, and
//! broadcasts each new one to the pages already open. Nothing here polls a node.
//!
//! It also counts what `/metrics` exposes as counters ([`Counters`]): crashes and respawns
//! per node and watcher, configure pushes and their failures.

use crate::membership::{Kind, Member, MemberState, MembershipHandle, PublishedEvent};
use crate::stats::reader::port_at_control_host;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use troupe::bounds::{
    DASHBOARD_KILLED_PIDS_PER_NODE, DASHBOARD_RECENT_EVENTS, SERVE_METRICS_WATCHER_COUNTERS,
};
use troupe::config::DEFAULT_MAX_MESSAGE_SIZE;
use troupe::protocol::now_epoch;

/// One line of the event list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    /// Epoch seconds.
    pub time: f64,
    pub node: String,
    /// None for a node's own events.
    pub watcher: Option<String>,
    /// join, suspect, down, leave, update, refused; crash, exit, respawn, spawn, kill, reap,
    /// start, stop, ...; configure, reset and the other dashboard actions.
    pub kind: String,
    pub pid: Option<u32>,
    pub detail: String,
}

enum Msg {
    /// A raw watcher event from a member's events socket.
    Watcher {
        node: String,
        topic: String,
        body: Vec<u8>,
    },
    /// Something the controller did (a dashboard action).
    Note(Activity),
    /// A configure push (the dashboard's reconfigure, auto-configure), and whether every
    /// node took it.
    Configured {
        activity: Activity,
        ok: bool,
    },
    Recent(oneshot::Sender<Vec<Activity>>),
    Counters(oneshot::Sender<Counters>),
}

/// What happened since serve started, counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// By (node, watcher): crashes and respawns (see [`Classifier`]).
    pub watchers: BTreeMap<(String, String), WatcherCounts>,
    /// Configure pushes, and those that failed on some node.
    pub configure_pushes: u64,
    pub configure_failures: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WatcherCounts {
    pub crashes: u64,
    pub respawns: u64,
}

/// Where a (node, watcher) pair beyond [`SERVE_METRICS_WATCHER_COUNTERS`] is counted.
pub const OTHER_WATCHERS: &str = "_other";

impl Counters {
    /// Counts `activity` if it is a crash or a respawn.
    fn count(&mut self, activity: &Activity) {
        let Some(watcher) = &activity.watcher else {
            return;
        };
        if activity.kind != "crash" && activity.kind != "respawn" {
            return;
        }
        let mut key = (activity.node.clone(), watcher.clone());
        if !self.watchers.contains_key(&key)
            && self.watchers.len() >= SERVE_METRICS_WATCHER_COUNTERS
        {
            key.1 = OTHER_WATCHERS.to_string();
        }
        let counts = self.watchers.entry(key).or_default();
        match activity.kind.as_str() {
            "crash" => counts.crashes += 1,
            _ => counts.respawns += 1,
        }
    }
}

/// A cheap, cloneable handle to the activity actor.
#[derive(Clone)]
pub struct ActivityHandle {
    tx: mpsc::Sender<Msg>,
    live: broadcast::Sender<Activity>,
}

impl ActivityHandle {
    /// The last events, oldest first, and a receiver of every later one (subscribed before the
    /// list is read, so nothing falls between them; an event may come in both).
    pub async fn follow(&self) -> (Vec<Activity>, broadcast::Receiver<Activity>) {
        let live = self.live.subscribe();
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Recent(tx)).await;
        (rx.await.unwrap_or_default(), live)
    }

    /// Adds what the controller did to the list.
    pub async fn note(&self, activity: Activity) {
        let _ = self.tx.send(Msg::Note(activity)).await;
    }

    /// Adds a configure push to the list and counts it (a failure when `ok` is false).
    pub async fn configured(&self, activity: Activity, ok: bool) {
        let _ = self.tx.send(Msg::Configured { activity, ok }).await;
    }

    /// The counters now; None once the actor has stopped.
    pub async fn counters(&self) -> Option<Counters> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Counters(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Starts the actor following `membership`.
pub fn spawn(membership: MembershipHandle) -> (ActivityHandle, JoinHandle<()>) {
    // Bounded: a slow actor makes readers wait, and ZeroMQ drops at the SUB's high-water mark.
    let (tx, rx) = mpsc::channel(1024);
    let (live, _) = broadcast::channel(DASHBOARD_RECENT_EVENTS);
    let actor = Actor {
        recent: VecDeque::new(),
        counters: Counters::default(),
        classifier: Classifier::default(),
        readers: BTreeMap::new(),
        live: live.clone(),
        tx: tx.clone(),
        zmq: troupe::sockets::member_context(),
    };
    let task = tokio::spawn(actor.run(rx, membership));
    (ActivityHandle { tx, live }, task)
}

struct Reader {
    node: String,
    endpoint: String,
    task: JoinHandle<()>,
}

struct Actor {
    recent: VecDeque<Activity>,
    counters: Counters,
    classifier: Classifier,
    /// By member key.
    readers: BTreeMap<String, Reader>,
    live: broadcast::Sender<Activity>,
    tx: mpsc::Sender<Msg>,
    zmq: zmq::Context,
}

impl Drop for Actor {
    fn drop(&mut self) {
        for reader in self.readers.values() {
            reader.task.abort();
        }
    }
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, membership: MembershipHandle) {
        let mut events = membership.subscribe();
        let mut roster = membership.roster();
        self.reconcile(&membership.shared_members());
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Watcher { node, topic, body }) => {
                        if let Some(activity) = self.classifier.watcher_event(&node, &topic, &body) {
                            self.add(activity);
                        }
                    }
                    Some(Msg::Note(activity)) => self.add(activity),
                    Some(Msg::Configured { activity, ok }) => {
                        self.counters.configure_pushes += 1;
                        if !ok {
                            self.counters.configure_failures += 1;
                        }
                        self.add(activity);
                    }
                    Some(Msg::Recent(reply)) => {
                        let _ = reply.send(self.recent.iter().cloned().collect());
                    }
                    Some(Msg::Counters(reply)) => {
                        let _ = reply.send(self.counters.clone());
                    }
                    None => return,
                },
                event = events.recv() => match event {
                    Ok(event) => {
                        if let Some(activity) = member_activity(&event) {
                            self.add(activity);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                // Readers follow the roster, not every view.
                changed = roster.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.reconcile(&membership.shared_members());
                }
            }
        }
    }

    fn add(&mut self, activity: Activity) {
        self.counters.count(&activity);
        if self.recent.len() >= DASHBOARD_RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(activity.clone());
        let _ = self.live.send(activity);
    }

    /// A reader for each alive or suspect troupe member's events socket; readers of members
    /// gone, or moved, are aborted.
    fn reconcile(&mut self, members: &[Member]) {
        let wanted: BTreeMap<&str, (&str, String)> = members
            .iter()
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .filter(|m| m.kind == Kind::Troupe)
            .filter_map(|m| {
                let pubsub = &m.info.as_ref()?.endpoints.pubsub;
                Some((
                    m.key.as_str(),
                    (m.name.as_str(), port_at_control_host(pubsub, &m.endpoint)?),
                ))
            })
            .collect();
        self.readers.retain(|key, reader| {
            let keep = wanted.get(key.as_str()).is_some_and(|(node, endpoint)| {
                *node == reader.node && *endpoint == reader.endpoint
            });
            if !keep {
                reader.task.abort();
            }
            keep
        });
        for (key, (node, endpoint)) in wanted {
            if self.readers.contains_key(key) {
                continue;
            }
            let task = tokio::spawn(read(
                self.zmq.clone(),
                node.to_string(),
                endpoint.clone(),
                self.tx.clone(),
            ));
            let reader = Reader {
                node: node.to_string(),
                endpoint,
                task,
            };
            self.readers.insert(key.to_string(), reader);
        }
        let alive: BTreeSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
        self.classifier.forget_except(&alive);
        // Counters of nodes gone from membership go with them (Prometheus reads a counter
        // that disappears and comes back from 0 as a reset).
        self.counters
            .watchers
            .retain(|(node, _), _| alive.contains(node.as_str()));
    }
}

/// Reads one member's watcher events until aborted.
async fn read(zmq: zmq::Context, node: String, endpoint: String, actor: mpsc::Sender<Msg>) {
    let mut socket = match troupe::sockets::connect_subscriber(
        &zmq,
        &endpoint,
        b"watcher.",
        DEFAULT_MAX_MESSAGE_SIZE,
    )
    .await
    {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(%node, %endpoint, "cannot subscribe to watcher events: {e}");
            return;
        }
    };
    while let Some(message) = socket.next().await {
        let Ok(message) = message else { continue };
        let frames: Vec<&[u8]> = message.iter().map(|m| &m[..]).collect();
        let [topic, body] = frames[..] else { continue };
        let Ok(topic) = std::str::from_utf8(topic) else {
            continue;
        };
        let msg = Msg::Watcher {
            node: node.clone(),
            topic: topic.to_string(),
            body: body.to_vec(),
        };
        if actor.send(msg).await.is_err() {
            return;
        }
    }
}

/// A membership event as a line of the list.
fn member_activity(event: &PublishedEvent) -> Option<Activity> {
    let (node, kind) = event.topic.strip_prefix("node.")?.rsplit_once('.')?;
    Some(Activity {
        time: event.payload["time"].as_f64().unwrap_or_else(now_epoch),
        node: node.to_string(),
        watcher: None,
        kind: kind.to_string(),
        pid: None,
        detail: event.payload["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// Names raw watcher events (pure: unit-tested below). Remembers, per node, the pids whose
/// `kill` it saw (at most [`DASHBOARD_KILLED_PIDS_PER_NODE`]) and the watchers with a death
/// not yet followed by a spawn.
#[derive(Debug, Default)]
pub struct Classifier {
    killed: HashMap<String, VecDeque<u32>>,
    died: HashMap<String, BTreeSet<String>>,
}

impl Classifier {
    /// The line for `watcher.<name>.<event>` from `node`; None for what is not a watcher event.
    pub fn watcher_event(&mut self, node: &str, topic: &str, body: &[u8]) -> Option<Activity> {
        let (watcher, event) = topic.strip_prefix("watcher.")?.rsplit_once('.')?;
        let payload: Value = serde_json::from_slice(body).ok().filter(Value::is_object)?;
        let pid = payload["process_pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok());
        let killed = self.killed.entry(node.to_string()).or_default();
        let died = self.died.entry(node.to_string()).or_default();
        let (kind, detail) = match (event, pid) {
            ("kill", Some(pid)) => {
                if killed.len() >= DASHBOARD_KILLED_PIDS_PER_NODE {
                    killed.pop_front();
                }
                killed.push_back(pid);
                ("kill".to_string(), String::new())
            }
            ("reap", Some(pid)) => {
                let code = &payload["exit_code"];
                let detail = match code.as_i64() {
                    Some(c) if c < 0 => format!("killed by signal {}", -c),
                    Some(c) => format!("exit code {c}"),
                    None => "exit status unknown".to_string(),
                };
                match killed.iter().position(|p| *p == pid) {
                    Some(at) => {
                        killed.remove(at);
                        ("reap".to_string(), detail)
                    }
                    None => {
                        died.insert(watcher.to_string());
                        let kind = if code.as_i64() == Some(0) {
                            "exit"
                        } else {
                            "crash"
                        };
                        (kind.to_string(), detail)
                    }
                }
            }
            ("spawn", _) => {
                let kind = if died.remove(watcher) {
                    "respawn"
                } else {
                    "spawn"
                };
                (kind.to_string(), String::new())
            }
            ("stop", _) => {
                died.remove(watcher);
                let reason = payload["reason"].as_str().unwrap_or_default();
                ("stop".to_string(), reason.to_string())
            }
            ("hook_failure", _) => (
                "hook_failure".to_string(),
                format!(
                    "{}: {}",
                    payload["name"].as_str().unwrap_or("?"),
                    payload["error"].as_str().unwrap_or_default()
                ),
            ),
            (other, _) => (other.to_string(), String::new()),
        };
        Some(Activity {
            time: payload["time"].as_f64().unwrap_or_else(now_epoch),
            node: node.to_string(),
            watcher: Some(watcher.to_string()),
            kind,
            pid,
            detail,
        })
    }

    /// Forgets the nodes not named (gone from membership).
    fn forget_except(&mut self, nodes: &BTreeSet<&str>) {
        self.killed.retain(|node, _| nodes.contains(node.as_str()));
        self.died.retain(|node, _| nodes.contains(node.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(c: &mut Classifier, topic: &str, body: &str) -> Option<(String, String)> {
        c.watcher_event("n1", topic, body.as_bytes())
            .map(|a| (a.kind, a.detail))
    }

    #[test]
    fn a_reap_without_a_kill_is_a_crash_and_the_next_spawn_a_respawn() {
        let mut c = Classifier::default();
        let crash = event(
            &mut c,
            "watcher.web.reap",
            r#"{"process_pid": 7, "exit_code": -9}"#,
        );
        assert_eq!(crash, Some(("crash".into(), "killed by signal 9".into())));
        let respawn = event(&mut c, "watcher.web.spawn", r#"{"process_pid": 8}"#);
        assert_eq!(respawn.unwrap().0, "respawn");
        assert_eq!(
            event(&mut c, "watcher.web.spawn", r#"{"process_pid": 9}"#)
                .unwrap()
                .0,
            "spawn"
        );
        // A requested stop: kill, then reap.
        assert_eq!(
            event(&mut c, "watcher.web.kill", r#"{"process_pid": 8}"#)
                .unwrap()
                .0,
            "kill"
        );
        let reap = event(
            &mut c,
            "watcher.web.reap",
            r#"{"process_pid": 8, "exit_code": -15}"#,
        );
        assert_eq!(reap.unwrap().0, "reap");
        let exit = event(
            &mut c,
            "watcher.web.reap",
            r#"{"process_pid": 9, "exit_code": 0}"#,
        );
        assert_eq!(exit, Some(("exit".into(), "exit code 0".into())));
    }

    #[test]
    fn crashes_and_respawns_are_counted_per_watcher_within_the_bound() {
        let mut counters = Counters::default();
        let line = |node: &str, watcher: &str, kind: &str| Activity {
            time: 0.0,
            node: node.into(),
            watcher: Some(watcher.into()),
            kind: kind.into(),
            pid: None,
            detail: String::new(),
        };
        counters.count(&line("n1", "web", "crash"));
        counters.count(&line("n1", "web", "respawn"));
        counters.count(&line("n1", "web", "crash"));
        counters.count(&line("n1", "web", "spawn"));
        let web = counters.watchers[&("n1".to_string(), "web".to_string())];
        assert_eq!((web.crashes, web.respawns), (2, 1));
        for i in 0..SERVE_METRICS_WATCHER_COUNTERS + 5 {
            counters.count(&line("n2", &format!("w{i}"), "crash"));
        }
        assert_eq!(counters.watchers.len(), SERVE_METRICS_WATCHER_COUNTERS + 1);
        let other = counters.watchers[&("n2".to_string(), OTHER_WATCHERS.to_string())];
        assert_eq!(other.crashes, 6);
    }

    #[test]
    fn hostile_events_are_skipped_and_the_killed_pids_are_bounded() {
        let mut c = Classifier::default();
        assert_eq!(event(&mut c, "stat.web", "{}"), None);
        assert_eq!(event(&mut c, "watcher.web.reap", "not json"), None);
        assert_eq!(event(&mut c, "watcher.web.reap", "[1]"), None);
        for pid in 0..(DASHBOARD_KILLED_PIDS_PER_NODE as u32 + 10) {
            event(
                &mut c,
                "watcher.web.kill",
                &format!(r#"{{"process_pid": {pid}}}"#),
            );
        }
        assert_eq!(c.killed["n1"].len(), DASHBOARD_KILLED_PIDS_PER_NODE);
    }
}
