//! The stats actor: owns the subscriptions (one SUB reader task per member), the
//! [`ClusterStats`] and the optional publishing socket it re-publishes on. Readers, the control
//! socket and `troupe top` talk to it through one channel.

use super::history::{HistoryAnswer, HistoryQuery};
use super::model::ClusterStats;
use super::payload::Payload;
use super::reader::{self, StatsSource, Stream};
use super::snapshot::Snapshot;
use super::topic::{cluster_topic, node_total_topic, Topic};
use crate::membership::{Kind, Member, MemberState, MembershipHandle};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{interval, Instant, MissedTickBehavior};
use troupe::protocol::now_epoch;
use troupe::subscribers::GuardedPublisher;

/// How often node totals are published and the state is pruned (subscriptions follow the
/// roster: [`MembershipHandle::roster`]).
const TICK: Duration = Duration::from_secs(1);
/// Messages handled before the loop polls its other sources again. One turn per sample
/// polled the publisher's sockets (a `getsockopt` and a `poll`) for each of them: 15 % of the
/// actor's CPU at 2000 members.
const MESSAGES_PER_TURN: usize = 256;

/// What the actor is told.
#[derive(Debug)]
pub enum StatsMsg {
    /// One message of a stream (from a reader task), its topic already read; the body as
    /// received, copied only when re-published.
    Sample {
        node: Arc<str>,
        topic: Topic,
        body: zmq::Message,
    },
    Snapshot(oneshot::Sender<Snapshot>),
    History(HistoryQuery, oneshot::Sender<HistoryAnswer>),
}

/// Where the samples come from.
pub enum Feed {
    /// Every member's own stream, following membership (`troupe serve`, one-shot `top`).
    Members(MembershipHandle),
    /// One controller's re-published stream (`troupe top` against `troupe serve`).
    Controller(String),
}

/// A cheap, cloneable reference to the stats actor.
#[derive(Clone)]
pub struct StatsHandle {
    tx: mpsc::Sender<StatsMsg>,
}

impl StatsHandle {
    /// The latest snapshot; None once the actor has stopped.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(StatsMsg::Snapshot(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn history(&self, query: HistoryQuery) -> Option<HistoryAnswer> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(StatsMsg::History(query, tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Starts the actor. With `publisher`, every sample is re-published there with the node
/// prefixed to the watcher, plus node totals (`stat.<node>`).
/// With `keep_history`, the actor keeps the history `StatsHandle::history` answers from.
pub fn spawn(
    feed: Feed,
    publisher: Option<GuardedPublisher>,
    keep_history: bool,
) -> (StatsHandle, JoinHandle<()>) {
    // Bounded: a slow actor makes readers wait, and ZeroMQ drops at the SUB's high-water mark
    // instead of this process growing without limit.
    let (tx, rx) = mpsc::channel(4096);
    let zmq = troupe::sockets::member_context();
    let mut actor = Actor {
        stats: if keep_history {
            ClusterStats::keeping_history()
        } else {
            ClusterStats::default()
        },
        subscriptions: BTreeMap::new(),
        publisher,
        zmq,
        tx: tx.clone(),
    };
    let (membership, controller) = match feed {
        Feed::Members(membership) => (Some(membership), None),
        Feed::Controller(endpoint) => (None, Some(endpoint)),
    };
    if let Some(endpoint) = controller {
        actor.subscribe_controller(endpoint);
    }
    let task = tokio::spawn(actor.run(rx, membership));
    (StatsHandle { tx }, task)
}

/// The publisher's subscriptions and connections, read as they come (it has to be: see
/// [`GuardedPublisher::watch`]); without one, never.
async fn watch(publisher: &mut Option<GuardedPublisher>) {
    match publisher {
        Some(publisher) => publisher.watch().await,
        None => std::future::pending().await,
    }
}

struct Subscription {
    node: String,
    source: StatsSource,
    task: JoinHandle<()>,
}

struct Actor {
    stats: ClusterStats,
    /// By member key ("" for a controller's stream).
    subscriptions: BTreeMap<String, Subscription>,
    publisher: Option<GuardedPublisher>,
    zmq: zmq::Context,
    tx: mpsc::Sender<StatsMsg>,
}

impl Drop for Actor {
    fn drop(&mut self) {
        for subscription in self.subscriptions.values() {
            subscription.task.abort();
        }
    }
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<StatsMsg>, membership: Option<MembershipHandle>) {
        let mut roster = membership.as_ref().map(MembershipHandle::roster);
        if let Some(membership) = &membership {
            self.reconcile(&membership.shared_members());
        }
        let mut tick = interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => {
                        // What arrived together is handled in one turn: every turn polls the
                        // publisher's sockets as well (see the constant).
                        self.on_message(msg);
                        for _ in 1..MESSAGES_PER_TURN {
                            let Ok(msg) = rx.try_recv() else { break };
                            self.on_message(msg);
                        }
                    }
                    None => return,
                },
                changed = roster_change(&mut roster) => {
                    if changed.is_err() {
                        roster = None; // membership is gone; keep serving what we have
                    }
                    if let Some(membership) = &membership {
                        self.reconcile(&membership.shared_members());
                    }
                }
                _ = watch(&mut self.publisher) => {}
                _ = tick.tick() => {
                    self.on_tick();
                }
            }
        }
    }

    fn on_message(&mut self, msg: StatsMsg) {
        let now = Instant::now();
        match msg {
            StatsMsg::Sample { node, topic, body } => {
                let Some(payload) = Payload::decode(&body) else {
                    return;
                };
                self.stats.ingest(&node, &topic, payload, now);
                if self.republishing() {
                    self.publish(cluster_topic(&node, &topic), body.to_vec());
                }
            }
            StatsMsg::Snapshot(reply) => {
                let _ = reply.send(self.stats.snapshot(now, now_epoch()));
            }
            StatsMsg::History(query, reply) => {
                let answer = HistoryAnswer {
                    series: self.stats.history(&query, now, now_epoch()),
                    refused: self.stats.refused(&query.nodes),
                };
                let _ = reply.send(answer);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        // Taken (and kept in the history) whether or not anyone is subscribed.
        let fresh = self.stats.take_fresh_totals(now);
        if self.republishing() {
            for (node, totals) in fresh {
                let payload = json!({
                    "pid": totals.pid, "cpu": totals.cpu, "mem": totals.mem, "age": totals.age,
                    "rss": totals.rss,
                });
                self.publish(node_total_topic(&node), payload.to_string().into_bytes());
            }
        }
        self.stats.prune(now);
    }

    /// Whether anyone subscribes to the re-published stream: nobody does while no `troupe top`
    /// or circus-top is open, and a topic built for every sample (a `format!` and two
    /// `replace`s) and sent to nobody was a twentieth of serve's CPU at 2000 members.
    fn republishing(&self) -> bool {
        self.publisher
            .as_ref()
            .is_some_and(GuardedPublisher::has_subscribers)
    }

    fn publish(&self, topic: String, body: Vec<u8>) {
        if let Some(publisher) = &self.publisher {
            publisher.publish(topic, body);
        }
    }

    /// Subscribes to alive (and suspect: it may still be sending) members, unsubscribes from
    /// those down, left or forgotten, and re-subscribes when a stats endpoint changes. Down
    /// and left nodes stay in the stats, to be shown stale; forgotten ones go.
    fn reconcile(&mut self, members: &[Member]) {
        let now = Instant::now();
        let wanted: BTreeMap<String, (String, StatsSource)> = members
            .iter()
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .filter_map(|m| Some((m.key.clone(), (m.name.clone(), stats_source(m)?))))
            .collect();
        let stale: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|(key, s)| {
                wanted
                    .get(*key)
                    .is_none_or(|(node, source)| *node != s.node || *source != s.source)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(subscription) = self.subscriptions.remove(&key) {
                tracing::debug!(node = %subscription.node, "unsubscribing from stats");
                subscription.task.abort();
            }
        }
        for (key, (node, source)) in wanted {
            if self.subscriptions.contains_key(&key) {
                continue;
            }
            self.stats.add_node(&node, now);
            let stream = Stream::Node {
                node: node.as_str().into(),
                source: source.clone(),
            };
            let task = tokio::spawn(reader::read(self.zmq.clone(), stream, self.tx.clone()));
            self.subscriptions
                .insert(key, Subscription { node, source, task });
        }
        let known: HashSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
        let forgotten: Vec<String> = self
            .stats
            .nodes()
            .filter(|node| !known.contains(node))
            .map(String::from)
            .collect();
        for node in forgotten {
            self.stats.forget(&node);
        }
    }

    /// A controller's stream: the only subscription when there is no membership to follow.
    fn subscribe_controller(&mut self, endpoint: String) {
        let stream = Stream::Controller {
            endpoint: endpoint.clone(),
        };
        let task = tokio::spawn(reader::read(self.zmq.clone(), stream, self.tx.clone()));
        let subscription = Subscription {
            node: String::new(),
            source: StatsSource::Known(endpoint),
            task,
        };
        self.subscriptions.insert(String::new(), subscription);
    }
}

/// Where a member's stats are: its reported stats port at the host we reach it on, or (a
/// stock circusd, which has no `nodeinfo`) whatever its `globaloptions` say.
fn stats_source(member: &Member) -> Option<StatsSource> {
    match (&member.kind, &member.info) {
        (Kind::Troupe, Some(info)) => {
            reader::port_at_control_host(&info.endpoints.stats, &member.endpoint)
                .map(StatsSource::Known)
        }
        (Kind::Circus, _) => Some(StatsSource::AskCircus {
            control: member.endpoint.clone(),
        }),
        (Kind::Troupe, None) => None,
    }
}

/// The next change of the roster, or never when there is no membership to follow.
async fn roster_change(roster: &mut Option<watch::Receiver<u64>>) -> Result<(), ()> {
    match roster {
        None => std::future::pending().await,
        Some(rx) => rx.changed().await.map_err(|_| ()),
    }
}
