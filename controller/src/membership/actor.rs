//! The membership actor: owns the [`MemberTable`], heartbeats every member each second,
//! turns sightings into probes, and publishes member events.

use super::table::{Member, MemberEvent, MemberState, MemberTable, Source};
use crate::probe::{probe, Probed};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{interval, Instant, MissedTickBehavior};
use troupe::protocol::now_epoch;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Short enough that a silent member is asked twice before it is declared down (a miss is
/// retried at once), so `suspect` comes before `down`; one late answer alone changes nothing.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(500);
const TICK_EVERY: Duration = Duration::from_millis(250);

/// What discovery sources and the control socket tell the actor.
#[derive(Debug)]
pub enum MembershipMsg {
    /// Something may be at `endpoint` (mDNS record, registration, UDP reply): probe it.
    Seen { endpoint: String, source: Source },
    /// Already probed (range sweep): adopt as is.
    Answered {
        endpoint: String,
        source: Source,
        facts: super::NodeFacts,
    },
    /// Clean goodbye by id or endpoint (`unregister_node`).
    Goodbye { id_or_endpoint: String },
    /// mDNS goodbye of an instance (node name).
    GoodbyeByName { name: String },
    /// Answers once every message sent before it was handled.
    Sync(tokio::sync::oneshot::Sender<()>),
}

/// One published member event: topic `node.<name>.<kind>` and its JSON payload.
#[derive(Debug, Clone)]
pub struct PublishedEvent {
    pub topic: String,
    pub payload: Value,
}

/// A cheap, cloneable reference to the membership actor.
#[derive(Clone)]
pub struct MembershipHandle {
    tx: mpsc::Sender<MembershipMsg>,
    view: watch::Receiver<Vec<Member>>,
    events: broadcast::Sender<PublishedEvent>,
}

impl MembershipHandle {
    /// Starts the actor for `cluster`. Members found through mDNS whose heartbeat is missed
    /// are sent to `verify` (their node name), so the browser can flush a dead record.
    pub fn spawn(cluster: &str, verify: Option<mpsc::UnboundedSender<String>>) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let (view_tx, view) = watch::channel(Vec::new());
        let (events, _) = broadcast::channel(1024);
        let actor = Actor {
            table: MemberTable::new(cluster),
            zmq: zmq::Context::new(),
            view: view_tx,
            events: events.clone(),
            verify,
            in_flight: BTreeSet::new(),
        };
        tokio::spawn(actor.run(rx));
        Self { tx, view, events }
    }

    pub async fn send(&self, msg: MembershipMsg) {
        let _ = self.tx.send(msg).await;
    }

    /// Waits until everything sent so far is reflected in [`Self::members`].
    pub async fn sync(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(MembershipMsg::Sync(tx)).await;
        let _ = rx.await;
    }

    /// The members now, sorted by name.
    pub fn members(&self) -> Vec<Member> {
        self.view.borrow().clone()
    }

    /// The members as JSON objects (see [`member_json`]).
    pub fn members_json(&self) -> Vec<Value> {
        self.members().iter().map(member_json).collect()
    }

    /// Waits until `condition` holds for the member list or `timeout` passes.
    pub async fn wait_until(&self, timeout: Duration, condition: impl Fn(&[Member]) -> bool) {
        let mut view = self.view.clone();
        let _ = tokio::time::timeout(timeout, view.wait_for(|m| condition(m))).await;
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PublishedEvent> {
        self.events.subscribe()
    }
}

struct Actor {
    table: MemberTable,
    zmq: zmq::Context,
    view: watch::Sender<Vec<Member>>,
    events: broadcast::Sender<PublishedEvent>,
    verify: Option<mpsc::UnboundedSender<String>>,
    /// Member keys and endpoints with a heartbeat or probe under way.
    in_flight: BTreeSet<String>,
}

/// A probe result coming back to the actor.
struct ProbeResult {
    /// The heartbeat's member key, or None for a first probe of a sighting.
    key: Option<String>,
    endpoint: String,
    source: Option<Source>,
    probed: Probed,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<MembershipMsg>) {
        let (results_tx, mut results) = mpsc::unbounded_channel::<ProbeResult>();
        let mut heartbeat = interval(HEARTBEAT_EVERY);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tick = interval(TICK_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let events = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.on_message(msg, &results_tx),
                    None => return,
                },
                Some(result) = results.recv() => self.on_result(result, &results_tx),
                _ = heartbeat.tick() => {
                    self.heartbeat(&results_tx);
                    Vec::new()
                }
                _ = tick.tick() => self.table.tick(Instant::now()),
            };
            self.publish(events);
        }
    }

    fn on_message(
        &mut self,
        msg: MembershipMsg,
        results: &mpsc::UnboundedSender<ProbeResult>,
    ) -> Vec<MemberEvent> {
        let now = Instant::now();
        match msg {
            MembershipMsg::Seen { endpoint, source } => {
                self.spawn_probe(None, endpoint, Some(source), results);
                Vec::new()
            }
            MembershipMsg::Answered {
                endpoint,
                source,
                facts,
            } => self.table.answered(&endpoint, Some(source), facts, now),
            MembershipMsg::Goodbye { id_or_endpoint } => self.table.goodbye(&id_or_endpoint, now),
            MembershipMsg::GoodbyeByName { name } => self.table.goodbye_by_name(&name, now),
            MembershipMsg::Sync(done) => {
                // Publish the view before answering, so the caller reads it up to date.
                self.publish(Vec::new());
                let _ = done.send(());
                Vec::new()
            }
        }
    }

    fn on_result(
        &mut self,
        result: ProbeResult,
        results: &mpsc::UnboundedSender<ProbeResult>,
    ) -> Vec<MemberEvent> {
        let now = Instant::now();
        self.in_flight
            .remove(result.key.as_deref().unwrap_or(&result.endpoint));
        match (result.probed, result.key) {
            (Probed::Node(facts), _) => {
                self.table
                    .answered(&result.endpoint, result.source, facts, now)
            }
            (Probed::Nothing, Some(key)) => {
                if let (Some(verify), Some(member)) = (&self.verify, self.table.get(&key)) {
                    if member.sources.contains(&Source::Mdns) {
                        let _ = verify.send(member.name.clone());
                    }
                }
                let events = self.table.missed(&key, now);
                // Ask again at once rather than at the next tick, while it still counts.
                if let Some(member) = self.table.get(&key) {
                    if matches!(member.state, MemberState::Alive | MemberState::Suspect) {
                        let endpoint = member.endpoint.clone();
                        self.spawn_probe(Some(key), endpoint, None, results);
                    }
                }
                events
            }
            (Probed::Nothing, None) => Vec::new(),
        }
    }

    fn heartbeat(&mut self, results: &mpsc::UnboundedSender<ProbeResult>) {
        let due: Vec<(String, String)> = self
            .table
            .members()
            .map(|m| (m.key.clone(), m.endpoint.clone()))
            .collect();
        for (key, endpoint) in due {
            self.spawn_probe(Some(key), endpoint, None, results);
        }
    }

    fn spawn_probe(
        &mut self,
        key: Option<String>,
        endpoint: String,
        source: Option<Source>,
        results: &mpsc::UnboundedSender<ProbeResult>,
    ) {
        let flight = key.clone().unwrap_or_else(|| endpoint.clone());
        if !self.in_flight.insert(flight) {
            return;
        }
        let zmq = self.zmq.clone();
        let results = results.clone();
        tokio::spawn(async move {
            let probed = probe(&zmq, &endpoint, HEARTBEAT_TIMEOUT).await;
            let _ = results.send(ProbeResult {
                key,
                endpoint,
                source,
                probed,
            });
        });
    }

    fn publish(&mut self, events: Vec<MemberEvent>) {
        for event in events {
            let member = self.table.get(&event.key);
            let payload = json!({
                "name": event.name,
                "id": member.and_then(|m| m.id.clone()),
                "endpoint": member.map(|m| m.endpoint.clone()),
                "state": member.map(|m| m.state.as_str()),
                "detail": event.detail,
                "time": now_epoch(),
            });
            let level_warn = matches!(
                member.map(|m| m.state),
                Some(MemberState::Down | MemberState::Suspect)
            ) || member.is_some_and(|m| m.conflict);
            if level_warn {
                tracing::warn!(node = %event.name, "{}: {}", event.kind.as_str(), event.detail);
            } else {
                tracing::info!(node = %event.name, "{}: {}", event.kind.as_str(), event.detail);
            }
            let _ = self.events.send(PublishedEvent {
                topic: format!("node.{}.{}", event.name, event.kind.as_str()),
                payload,
            });
        }
        let mut members: Vec<Member> = self.table.members().cloned().collect();
        members.sort_by(|a, b| a.name.cmp(&b.name).then(a.endpoint.cmp(&b.endpoint)));
        self.view.send_replace(members);
    }
}

/// A member as `nodelist`, `troupe nodes --json` and the dashboard show it.
pub fn member_json(m: &Member) -> Value {
    let now = Instant::now();
    let last_seen = now_epoch() - now.duration_since(m.last_ok).as_secs_f64();
    let endpoints = m.info.as_ref().map(|i| {
        json!({
            "control": m.endpoint,
            "pubsub": reachable(&i.endpoints.pubsub, &m.endpoint),
            "stats": reachable(&i.endpoints.stats, &m.endpoint),
        })
    });
    json!({
        "name": m.name,
        "id": m.id,
        "kind": m.kind,
        "state": m.state.as_str(),
        "endpoint": m.endpoint,
        "endpoints": endpoints.unwrap_or_else(|| json!({"control": m.endpoint})),
        "source": m.sources.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "version": m.info.as_ref().map(|i| i.version.clone()),
        "watchers": m.watchers,
        "last_seen": last_seen,
        "conflict": m.conflict,
    })
}

/// An agent bound to every interface (`bind = "0.0.0.0"`, the default) reports its pubsub and
/// stats sockets as `tcp://0.0.0.0:PORT`, which means nothing elsewhere: others reach them at
/// the host they reach its control socket on.
fn reachable(endpoint: &str, control: &str) -> String {
    let host_port = |e: &str| {
        e.strip_prefix("tcp://")
            .and_then(|rest| rest.rsplit_once(':'))
            .map(|(host, port)| (host.to_string(), port.to_string()))
    };
    match (host_port(endpoint), host_port(control)) {
        (Some((host, port)), Some((control_host, _)))
            if matches!(host.as_str(), "0.0.0.0" | "*" | "::" | "[::]") =>
        {
            format!("tcp://{control_host}:{port}")
        }
        _ => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::reachable;

    #[test]
    fn wildcard_endpoints_take_the_control_host() {
        let control = "tcp://10.0.0.7:5555";
        for wildcard in [
            "tcp://0.0.0.0:5556",
            "tcp://*:5556",
            "tcp://:::5556",
            "tcp://[::]:5556",
        ] {
            assert_eq!(reachable(wildcard, control), "tcp://10.0.0.7:5556");
        }
        assert_eq!(
            reachable("tcp://[::]:5557", "tcp://[fd00::7]:5555"),
            "tcp://[fd00::7]:5557"
        );
        assert_eq!(
            reachable("tcp://127.0.0.2:5556", control),
            "tcp://127.0.0.2:5556"
        );
    }
}
