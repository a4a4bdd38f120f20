//! The membership actor: owns the [`MemberTable`], heartbeats every member each second,
//! turns sightings into probes, and publishes member events.
//!
//! Heartbeats run on kept connections, one per member endpoint, as [`crate::links`] does for
//! broadcasts: a new DEALER per member per second cost a TCP connect and a ZeroMQ handshake
//! each (200 members on loopback: `troupe serve` took 11.7-11.9 % of a core, 8.7-9.2 % with
//! kept connections).
//!
//! - The actor owns the idle connections (`kept`, by endpoint). A heartbeat task takes its
//!   member's connection out of the map (or opens a new one), asks `nodeinfo` on it (and `list`
//!   of a stock circusd, as [`probe`] does) and hands it back with its result when it was
//!   answered; after a timeout, an error or a reply not understood the task closes it, so a
//!   late reply can never be taken for a later heartbeat, and the next heartbeat connects
//!   afresh (the retry of a miss included).
//! - A connection is kept only while its endpoint belongs to an alive or suspect member: it is
//!   closed when the member goes down, leaves, is forgotten or moves. A down member is asked
//!   on a new connection each time, as before. An agent restarted on the same endpoint is
//!   reconnected to by ZeroMQ itself; if the request is lost meanwhile, the miss closes the
//!   connection and the retry connects afresh.
//! - First probes of sightings use a new connection each, closed afterwards.
//! - Every connection uses the actor's one ZeroMQ context.
//!
//! The member view ([`MembershipHandle::members`]) is published at once with every event
//! (join, suspect, down, leave, update) and on [`MembershipHandle::sync`]; what changes without
//! an event (a heartbeat's answer time, facts such as the watcher count) reaches it at the next
//! 250 ms tick. Publishing copies the whole table: after every heartbeat answer that was half
//! of `troupe serve`'s CPU with 200 members. So answers that arrive together are handled
//! together, one view for up to [`RESULTS_PER_VIEW`] of them, and the view is shared
//! (`Arc`): its readers (stats, links, activity, the dashboard) do not copy it again.

use super::round_trips::RoundTrips;
use super::row::MemberRow;
use super::table::{
    Announced, EventKind, Member, MemberEvent, MemberState, MemberTable, Silent, Source,
};
use crate::admission::Admission;
use crate::probe::{probe, probe_on, Dealer, Probed};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{interval, Instant, MissedTickBehavior};
use troupe::protocol::now_epoch;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Short enough that a silent member is asked twice before it is declared down (a miss is
/// retried at once), so `suspect` comes before `down`; one late answer alone changes nothing.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(500);
const TICK_EVERY: Duration = Duration::from_millis(250);
/// A tick this late means the actor itself did not run: see [`MemberTable::excuse`].
const STALL: Duration = Duration::from_millis(500);
/// Heartbeat results (or discovery messages) handled before the view is published again (see
/// the module doc).
const RESULTS_PER_VIEW: usize = 256;
/// Each member is asked once per [`HEARTBEAT_EVERY`], in one of this many slots of it (by a
/// hash of its key), so a thousand requests and answers are not all in flight at one instant.
const HEARTBEAT_SLOTS: u32 = 10;
/// How often a view is published for heartbeat answers alone (their times, for `last_seen`):
/// a copy of every member at each 250 ms tick was a tenth of serve's CPU at 2000 members.
/// Any other change goes out at the next tick, an event at once.
const ANSWERS_PUBLISHED_EVERY: Duration = Duration::from_secs(1);

/// What discovery sources and the control socket tell the actor.
#[derive(Debug)]
pub enum MembershipMsg {
    /// Something may be at `endpoint` (mDNS record, registration, UDP reply): probe it, if
    /// what it announced of its key lets it answer ([`MemberTable::lock_of`]; else it is
    /// listed as locked, named `name`) and the [`Admission`] lets it be adopted.
    Seen {
        endpoint: String,
        source: Source,
        announced: Announced,
        name: Option<String>,
    },
    /// Already probed (range sweep): adopt as is.
    Answered {
        endpoint: String,
        source: Source,
        facts: super::NodeFacts,
    },
    /// Probed (range sweep, seeds): refused our cluster key, so listed as locked.
    Refused { endpoint: String, source: Source },
    /// Probed (range sweep, seeds): connected, and no answer to `nodeinfo`.
    Silent { endpoint: String },
    /// Clean goodbye by id or endpoint (`unregister_node`).
    Goodbye { id_or_endpoint: String },
    /// mDNS goodbye of an instance (node name).
    GoodbyeByName { name: String },
    /// An agent of another cluster announced itself (mDNS): counted, never adopted.
    OtherCluster { cluster: String, name: String },
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
    view: watch::Receiver<Arc<Vec<Member>>>,
    roster: watch::Receiver<u64>,
    refused: watch::Receiver<u64>,
    others: watch::Receiver<BTreeMap<String, usize>>,
    silent: watch::Receiver<Vec<(String, Silent)>>,
    round_trips: watch::Receiver<RoundTrips>,
    events: broadcast::Sender<PublishedEvent>,
}

impl MembershipHandle {
    /// Starts the actor for `cluster`. Members found through mDNS whose heartbeat is missed
    /// are sent to `verify` (their node name), so the browser can flush a dead record.
    /// Sightings go through `admission`.
    pub fn spawn(
        cluster: &str,
        verify: Option<mpsc::UnboundedSender<String>>,
        admission: Admission,
    ) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let (view_tx, view) = watch::channel(Arc::new(Vec::new()));
        let (roster_tx, roster) = watch::channel(0);
        let (refused_tx, refused) = watch::channel(0);
        let (others_tx, others) = watch::channel(BTreeMap::new());
        let (silent_tx, silent) = watch::channel(Vec::new());
        let (round_trips_tx, round_trips) = watch::channel(RoundTrips::default());
        let (events, _) = broadcast::channel(1024);
        // The keyring is the process's, installed at start (troupe::sockets).
        let table = match troupe::sockets::client_keys() {
            Some(keys) => MemberTable::keyed(cluster, keys.keyring().fingerprints()),
            None => MemberTable::new(cluster),
        };
        let actor = Actor {
            table,
            admission,
            zmq: troupe::sockets::member_context(),
            view: view_tx,
            roster: roster_tx,
            refused: refused_tx,
            others: others_tx,
            silent: silent_tx,
            round_trips: RoundTrips::default(),
            published_round_trips: round_trips_tx,
            events: events.clone(),
            verify,
            in_flight: BTreeSet::new(),
            kept: HashMap::new(),
            view_stale: false,
            answers_stale: false,
            last_published: Instant::now(),
        };
        tokio::spawn(actor.run(rx));
        Self {
            tx,
            view,
            roster,
            refused,
            others,
            silent,
            round_trips,
            events,
        }
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
        self.view.borrow().as_ref().clone()
    }

    /// The members now, sorted by name, without a copy (what follows every change uses it).
    pub fn shared_members(&self) -> Arc<Vec<Member>> {
        self.view.borrow().clone()
    }

    /// Control endpoints of the members that `source` found and that heartbeats ask every
    /// second (alive, suspect or down): a sweep need not probe them again (at 1000 members,
    /// re-probing them every 5 s cost serve a tenth of its CPU and each agent a handshake).
    pub fn heartbeated_endpoints(&self, source: Source) -> HashSet<String> {
        self.view
            .borrow()
            .iter()
            .filter(|m| {
                matches!(
                    m.state,
                    MemberState::Alive | MemberState::Suspect | MemberState::Down
                ) && m.sources.contains(&source)
            })
            .map(|m| m.endpoint.clone())
            .collect()
    }

    /// Changes when who the members are, their states or their facts change (every member
    /// event, and a member forgotten), after the view saying so is published. What follows
    /// the members' sockets (stats and events readers) waits on this rather than on the view,
    /// which also changes four times a second with the heartbeats' answer times: at 1000
    /// members, reconciling a thousand readers at each was a twentieth of serve's CPU.
    pub fn roster(&self) -> watch::Receiver<u64> {
        self.roster.clone()
    }

    /// The member view, to wait on its changes (the dashboard's live page).
    pub fn view(&self) -> watch::Receiver<Arc<Vec<Member>>> {
        self.view.clone()
    }

    /// How many new members were not adopted because the table was full
    /// ([`troupe::bounds::max_members`]), up to the last published view.
    pub fn refused(&self) -> u64 {
        *self.refused.borrow()
    }

    /// The round trips of the heartbeats answered so far, up to the last published view.
    pub fn round_trips(&self) -> RoundTrips {
        self.round_trips.borrow().clone()
    }

    /// How many agents of each other cluster answered or announced themselves, up to the
    /// last published view.
    pub fn other_clusters(&self) -> BTreeMap<String, usize> {
        self.others.borrow().clone()
    }

    /// The members as JSON objects (see [`member_json`]), then the silent endpoints no
    /// member holds (see [`silent_json`]).
    pub fn members_json(&self) -> Vec<Value> {
        self.rows().iter().map(MemberRow::to_json).collect()
    }

    /// [`Self::members_json`], typed: the members, then the silent endpoints.
    pub fn rows(&self) -> Vec<MemberRow> {
        self.rows_where(|_| true)
    }

    /// [`Self::rows`] of the members and endpoints whose state (as listed) `keep` takes: the
    /// others are never made rows (a fan-out through serve wants only the absent few of a
    /// thousand; making every row was 4 % of serve's CPU under `status` requests).
    pub fn rows_where(&self, keep: impl Fn(&str) -> bool) -> Vec<MemberRow> {
        let mut rows: Vec<MemberRow> = self
            .shared_members()
            .iter()
            .filter(|m| keep(m.state.as_str()))
            .map(member_row)
            .collect();
        if keep(NO_REPLY) {
            let now = Instant::now();
            rows.extend(
                self.silent
                    .borrow()
                    .iter()
                    .map(|(endpoint, silent)| silent_row(endpoint, silent, now)),
            );
        }
        rows
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
    admission: Admission,
    zmq: zmq::Context,
    view: watch::Sender<Arc<Vec<Member>>>,
    /// Bumped with each view that comes with events or a member less (see
    /// [`MembershipHandle::roster`]).
    roster: watch::Sender<u64>,
    refused: watch::Sender<u64>,
    others: watch::Sender<BTreeMap<String, usize>>,
    silent: watch::Sender<Vec<(String, Silent)>>,
    /// Owned here, published with the view.
    round_trips: RoundTrips,
    published_round_trips: watch::Sender<RoundTrips>,
    events: broadcast::Sender<PublishedEvent>,
    verify: Option<mpsc::UnboundedSender<String>>,
    /// Member keys and endpoints with a heartbeat or probe under way.
    in_flight: BTreeSet<String>,
    /// Idle heartbeat connections by member endpoint (see the module doc).
    kept: HashMap<String, Dealer>,
    /// The table changed since the view was last published.
    view_stale: bool,
    /// Heartbeats were answered, changing nothing but when (and how often) members last
    /// answered, since the view was last published: that goes out at most once per
    /// [`ANSWERS_PUBLISHED_EVERY`].
    answers_stale: bool,
    last_published: Instant,
}

/// A probe result coming back to the actor.
struct ProbeResult {
    /// The heartbeat's member key, or None for a first probe of a sighting.
    key: Option<String>,
    endpoint: String,
    source: Option<Source>,
    probed: Probed,
    /// A heartbeat's connection, handed back after an answer.
    socket: Option<Dealer>,
    /// How long an answered heartbeat took (connecting included when it had no connection).
    round_trip: Option<std::time::Duration>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<MembershipMsg>) {
        let (results_tx, mut results) = mpsc::unbounded_channel::<ProbeResult>();
        let mut heartbeat = interval(HEARTBEAT_EVERY / HEARTBEAT_SLOTS);
        let mut slot: u32 = 0;
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tick = interval(TICK_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        loop {
            // Answers first: one waiting in the queue when the tick comes must count, or a
            // busy controller declares members down that did answer.
            let (events, ticked) = tokio::select! {
                biased;
                Some(result) = results.recv() => {
                    // Answers that arrived together (a heartbeat round, a first sweep) make one
                    // view, not one copy of the table each.
                    let mut events = self.on_result(result, &results_tx);
                    for _ in 1..RESULTS_PER_VIEW {
                        let Ok(result) = results.try_recv() else { break };
                        events.extend(self.on_result(result, &results_tx));
                    }
                    (events, false)
                }
                msg = rx.recv() => match msg {
                    // Likewise for what discovery sends together: a sweep's thousand answers
                    // were a thousand copies of a growing table, and stalled the actor.
                    Some(msg) => {
                        let mut events = self.on_message(msg, &results_tx);
                        for _ in 1..RESULTS_PER_VIEW {
                            let Ok(msg) = rx.try_recv() else { break };
                            events.extend(self.on_message(msg, &results_tx));
                        }
                        (events, false)
                    }
                    None => return,
                },
                _ = heartbeat.tick() => {
                    self.heartbeat(slot, &results_tx);
                    slot = (slot + 1) % HEARTBEAT_SLOTS;
                    (Vec::new(), false)
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let late = now.duration_since(last_tick).saturating_sub(TICK_EVERY);
                    last_tick = now;
                    if late >= STALL {
                        tracing::warn!(
                            "this controller did not run for {} ms (an overloaded machine?): \
                             members are not blamed for that silence",
                            late.as_millis()
                        );
                        self.table.excuse(late);
                    }
                    (self.table.tick(now), true)
                }
            };
            let answers_due =
                self.answers_stale && self.last_published.elapsed() >= ANSWERS_PUBLISHED_EVERY;
            if !events.is_empty() || (ticked && (self.view_stale || answers_due)) {
                self.publish(events);
            }
        }
    }

    fn on_message(
        &mut self,
        msg: MembershipMsg,
        results: &mpsc::UnboundedSender<ProbeResult>,
    ) -> Vec<MemberEvent> {
        let now = Instant::now();
        self.view_stale = true;
        match msg {
            MembershipMsg::Seen {
                endpoint,
                source,
                announced,
                name,
            } => {
                if let Some(why) = self.table.lock_of(&announced) {
                    tracing::debug!(%endpoint, source = source.as_str(), "not dialled: {why}");
                    let name = name.as_deref();
                    self.table
                        .locked(&endpoint, name, source, &announced, why, now);
                    return Vec::new();
                }
                match self.admission.check(&endpoint) {
                    Ok(()) => self.spawn_probe(None, endpoint, Some(source), results),
                    Err(refusal) => {
                        tracing::warn!(source = source.as_str(), "not adopted: {refusal}")
                    }
                }
                Vec::new()
            }
            MembershipMsg::Answered {
                endpoint,
                source,
                facts,
            } => self.table.answered(&endpoint, Some(source), facts, now),
            MembershipMsg::Refused { endpoint, source } => {
                tracing::debug!(%endpoint, source = source.as_str(), "refused our cluster key");
                self.table.refused_key(&endpoint, source, now);
                Vec::new()
            }
            MembershipMsg::Silent { endpoint } => {
                tracing::debug!(%endpoint, "connected, and no answer to nodeinfo");
                self.table.silent(&endpoint, now);
                Vec::new()
            }
            MembershipMsg::Goodbye { id_or_endpoint } => self.table.goodbye(&id_or_endpoint, now),
            MembershipMsg::GoodbyeByName { name } => self.table.goodbye_by_name(&name, now),
            MembershipMsg::OtherCluster { cluster, name } => {
                self.table.other_cluster(&cluster, &name);
                Vec::new()
            }
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
        if let Some(round_trip) = result.round_trip {
            self.round_trips.observe(round_trip);
        }
        match (result.probed, result.key) {
            (Probed::Node(facts), key) => {
                let events = self
                    .table
                    .answered(&result.endpoint, result.source, facts, now);
                let live = key
                    .as_deref()
                    .is_some_and(|k| self.is_live_at(k, &result.endpoint));
                // An alive member's heartbeat that changed nothing but its answer time (nearly
                // every one) does not call for a copy of the view at the next tick.
                if live && events.is_empty() && !self.table.take_facts_changed() {
                    self.answers_stale = true;
                } else {
                    self.view_stale = true;
                }
                if let Some(socket) = result.socket.filter(|_| live) {
                    self.kept.insert(result.endpoint, socket);
                }
                events
            }
            (Probed::Refused, None) => {
                self.view_stale = true;
                if let Some(source) = result.source {
                    self.table.refused_key(&result.endpoint, source, now);
                }
                Vec::new()
            }
            (Probed::Nothing | Probed::Refused | Probed::Silent, Some(key)) => {
                self.view_stale = true;
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
            // A sighting pointing at a mute port is not reported: anyone can announce one.
            (Probed::Nothing | Probed::Silent, None) => Vec::new(),
        }
    }

    /// Asks the members of heartbeat slot `slot`.
    fn heartbeat(&mut self, slot: u32, results: &mpsc::UnboundedSender<ProbeResult>) {
        // Rows dropped without an event (a locked row that answered) are caught here.
        if slot == 0 {
            self.close_stale();
        }
        let due: Vec<(String, String)> = self
            .table
            .members()
            .filter(|m| m.state != MemberState::Locked && heartbeat_slot(&m.key) == slot)
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
        // A heartbeat takes its member's kept connection, if any; a first probe has none.
        let kept = key.as_ref().map(|_| self.kept.remove(&endpoint));
        let zmq = self.zmq.clone();
        let results = results.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let asked = async {
                match kept {
                    None => (probe(&zmq, &endpoint, HEARTBEAT_TIMEOUT).await, None),
                    Some(kept) => heartbeat(&zmq, kept, &endpoint).await,
                }
            };
            // Connecting included: with several keys a new connection awaits its handshakes
            // (2 s each at most), and a member in flight that long is asked no more before
            // it is declared down.
            let (probed, socket) = tokio::time::timeout(HEARTBEAT_TIMEOUT, asked)
                .await
                .unwrap_or((Probed::Silent, None));
            let answered_heartbeat = key.is_some() && matches!(probed, Probed::Node(_));
            let _ = results.send(ProbeResult {
                key,
                endpoint,
                source,
                probed,
                socket,
                round_trip: answered_heartbeat.then(|| started.elapsed()),
            });
        });
    }

    /// Control endpoints of alive and suspect members.
    fn live_endpoints(&self) -> HashSet<&str> {
        self.table
            .members()
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|m| m.endpoint.as_str())
            .collect()
    }

    /// Whether member `key` is alive or suspect at `endpoint`: asked for every answered
    /// heartbeat, so by the member's own row, not by collecting every member's endpoint (that
    /// was a fifth of serve's CPU with 1000 members).
    fn is_live_at(&self, key: &str, endpoint: &str) -> bool {
        self.table.get(key).is_some_and(|m| {
            m.endpoint == endpoint && matches!(m.state, MemberState::Alive | MemberState::Suspect)
        })
    }

    /// Closes the kept connections of endpoints no longer an alive or suspect member's.
    fn close_stale(&mut self) {
        if self.kept.is_empty() {
            return;
        }
        let live: HashSet<String> = self
            .live_endpoints()
            .into_iter()
            .map(str::to_string)
            .collect();
        self.kept.retain(|endpoint, _| live.contains(endpoint));
    }

    fn publish(&mut self, events: Vec<MemberEvent>) {
        // Every change of state or endpoint comes with an event; forgotten members were down
        // or left already.
        if !events.is_empty() {
            self.close_stale();
        }
        // The view first, so whoever reacts to an event (the links pool) reads it up to date.
        let mut members: Vec<Member> = self.table.members().cloned().collect();
        members.sort_by(|a, b| a.name.cmp(&b.name).then(a.endpoint.cmp(&b.endpoint)));
        let forgotten = members.len() < self.view.borrow().len();
        self.view.send_replace(Arc::new(members));
        if !events.is_empty() || forgotten {
            self.roster.send_modify(|generation| *generation += 1);
        }
        let refused = self.table.refused();
        if refused != *self.refused.borrow() {
            tracing::warn!(
                "{refused} new members not adopted so far: {}",
                super::table::full_reason()
            );
            self.refused.send_replace(refused);
        }
        if self.round_trips != *self.published_round_trips.borrow() {
            self.published_round_trips
                .send_replace(self.round_trips.clone());
        }
        let silent = self.table.silent_endpoints();
        if silent != *self.silent.borrow() {
            self.silent.send_replace(silent);
        }
        let others = self.table.other_clusters();
        if others != *self.others.borrow() {
            self.others.send_replace(others);
        }
        self.view_stale = false;
        self.answers_stale = false;
        self.table.take_facts_changed();
        self.last_published = Instant::now();
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
            ) || event.kind == EventKind::Refused;
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
    }
}

/// The heartbeat slot of the member with `key`: the same at every round.
fn heartbeat_slot(key: &str) -> u32 {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() has fixed keys: a member keeps its slot.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % u64::from(HEARTBEAT_SLOTS)) as u32
}

/// One heartbeat on `kept` (or a new connection): the result, and the connection when it
/// was answered and may be reused.
async fn heartbeat(
    zmq: &zmq::Context,
    kept: Option<Dealer>,
    endpoint: &str,
) -> (Probed, Option<Dealer>) {
    let mut socket = match kept {
        Some(socket) => socket,
        None => match troupe::sockets::connect_control_async(zmq, endpoint).await {
            Ok(socket) => socket,
            Err(e) => {
                tracing::debug!(endpoint, "cannot connect: {e}");
                return (Probed::Nothing, None);
            }
        },
    };
    match probe_on(&mut socket, endpoint, HEARTBEAT_TIMEOUT).await {
        Probed::Node(facts) => (Probed::Node(facts), Some(socket)),
        unanswered => (unanswered, None),
    }
}

/// A member as `nodelist`, `troupe nodes --json` and the dashboard show it.
pub fn member_json(m: &Member) -> Value {
    member_row(m).to_json()
}

/// A member as listed ([`MemberRow`]).
pub fn member_row(m: &Member) -> MemberRow {
    let now = Instant::now();
    let last_seen = now_epoch() - now.duration_since(m.last_ok).as_secs_f64();
    let mut endpoints = BTreeMap::from([("control".to_string(), m.endpoint.clone())]);
    if let Some(i) = &m.info {
        endpoints.insert(
            "pubsub".into(),
            wildcard_at_control_host(&i.endpoints.pubsub, &m.endpoint),
        );
        endpoints.insert(
            "stats".into(),
            wildcard_at_control_host(&i.endpoints.stats, &m.endpoint),
        );
    }
    MemberRow {
        name: m.name.clone(),
        id: m.id.clone(),
        kind: Some(m.kind),
        state: m.state.as_str().to_string(),
        endpoint: m.endpoint.clone(),
        endpoints,
        source: m.sources.iter().map(|s| s.as_str().to_string()).collect(),
        version: m.info.as_ref().map(|i| i.version.clone()),
        watchers: m.watchers,
        last_seen: Some(last_seen),
        silent_since: None,
        key_fingerprint: m.fingerprint.clone(),
        locked: m.locked.clone(),
    }
}

/// A silent endpoint (see [`MemberTable::silent`]) as a row of [`MembershipHandle::members_json`]:
/// named after its address, state `no reply`, never seen answering.
pub fn silent_json(endpoint: &str, silent: &Silent, now: Instant) -> Value {
    silent_row(endpoint, silent, now).to_json()
}

/// A silent endpoint as listed ([`MemberRow`]).
pub fn silent_row(endpoint: &str, silent: &Silent, now: Instant) -> MemberRow {
    let silent_since = now_epoch() - now.duration_since(silent.since).as_secs_f64();
    MemberRow {
        name: endpoint.trim_start_matches("tcp://").to_string(),
        state: NO_REPLY.to_string(),
        endpoint: endpoint.to_string(),
        endpoints: BTreeMap::from([("control".to_string(), endpoint.to_string())]),
        source: vec!["probe".to_string()],
        silent_since: Some(silent_since),
        ..MemberRow::default()
    }
}

/// The state of a silent endpoint's row.
pub const NO_REPLY: &str = "no reply";

/// An agent bound to every interface (`bind = "0.0.0.0"`, the default) reports its pubsub and
/// stats sockets as `tcp://0.0.0.0:PORT`, which means nothing elsewhere: others reach them at
/// the host they reach its control socket on. Any other endpoint is kept as reported (unlike
/// [`crate::stats::reader::port_at_control_host`], which keeps only the port).
fn wildcard_at_control_host(endpoint: &str, control: &str) -> String {
    // A wildcard host (`*`, `::`) is no endpoint's: the reported text is split by hand.
    let wildcard_port = endpoint
        .strip_prefix("tcp://")
        .and_then(|rest| rest.rsplit_once(':'))
        .filter(|(host, _)| matches!(*host, "0.0.0.0" | "*" | "::" | "[::]"))
        .and_then(|(_, port)| port.parse::<u16>().ok());
    match (wildcard_port, troupe::endpoint::Endpoint::parse(control)) {
        (Some(port), Ok(control)) => control.with_port(port).to_string(),
        _ => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard_at_control_host;

    #[test]
    fn wildcard_endpoints_take_the_control_host() {
        let control = "tcp://10.0.0.7:5555";
        for wildcard in [
            "tcp://0.0.0.0:5556",
            "tcp://*:5556",
            "tcp://:::5556",
            "tcp://[::]:5556",
        ] {
            assert_eq!(
                wildcard_at_control_host(wildcard, control),
                "tcp://10.0.0.7:5556"
            );
        }
        assert_eq!(
            wildcard_at_control_host("tcp://[::]:5557", "tcp://[fd00::7]:5555"),
            "tcp://[fd00::7]:5557"
        );
        assert_eq!(
            wildcard_at_control_host("tcp://127.0.0.2:5556", control),
            "tcp://127.0.0.2:5556"
        );
    }
}

#[cfg(test)]
mod heartbeat_tests {
    use super::*;
    use crate::fake_agent::{bind, next_request, reply};
    use crate::membership::NodeFacts;
    use futures::StreamExt;
    use std::future::Future;
    use troupe::protocol::{Endpoints, NodeInfo};

    const CLUSTER: &str = "heartbeat-test";
    const ID_A: &str = "00000000-0000-4000-8000-00000000000a";
    const ID_B: &str = "00000000-0000-4000-8000-00000000000b";

    fn node_info(id: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            name: "hb".into(),
            cluster: CLUSTER.into(),
            version: "0.1.0".into(),
            hostname: "host-hb".into(),
            addresses: vec![],
            endpoints: Endpoints {
                control: String::new(),
                pubsub: String::new(),
                stats: String::new(),
            },
            started: 1.0,
            watchers: Default::default(),
            fingerprint: None,
        }
    }

    /// Answers every `nodeinfo` as the node with `id` until `done`; returns the connections
    /// (ROUTER identities) the requests came on, in order.
    async fn answer_until(
        router: &mut tmq::router::Router,
        id: &str,
        done: impl Future<Output = ()>,
    ) -> Vec<Vec<u8>> {
        let mut identities = Vec::new();
        tokio::pin!(done);
        loop {
            let message = tokio::select! {
                () = &mut done => return identities,
                message = router.next() => message.expect("open").expect("a message"),
            };
            identities.push(answer_nodeinfo(router, id, message).await);
        }
    }

    /// Answers the next `count` heartbeats as the node with `id` (failing if they do not come
    /// within 20 s); returns the connections they came on, in order.
    async fn answer_next(router: &mut tmq::router::Router, id: &str, count: usize) -> Vec<Vec<u8>> {
        let mut identities = Vec::new();
        let answered = tokio::time::timeout(Duration::from_secs(20), async {
            while identities.len() < count {
                let message = router.next().await.expect("open").expect("a message");
                identities.push(answer_nodeinfo(router, id, message).await);
            }
        })
        .await;
        assert!(
            answered.is_ok(),
            "{} of {count} heartbeats within 20 s",
            identities.len()
        );
        identities
    }

    /// Answers `message`, a `nodeinfo`, as the node with `id`; returns its connection.
    async fn answer_nodeinfo(
        router: &mut tmq::router::Router,
        id: &str,
        message: tmq::Multipart,
    ) -> Vec<u8> {
        let node = serde_json::to_value(node_info(id)).unwrap();
        let frames: Vec<Vec<u8>> = message.iter().map(|f| f.to_vec()).collect();
        let body: Value = serde_json::from_slice(frames.last().unwrap()).unwrap();
        assert_eq!(body["command"], "nodeinfo");
        let answer = json!({"status": "ok", "id": body["id"], "node": node});
        reply(router, &frames[0], &answer).await;
        frames[0].clone()
    }

    /// A fake agent on a free port, and a membership that has adopted it as [`ID_A`].
    async fn adopted_agent(
        zmq: &troupe::sockets::ServerContext,
    ) -> (tmq::router::Router, String, MembershipHandle) {
        let (agent, endpoint) = bind(zmq, "tcp://127.0.0.1:*").await;
        let membership = MembershipHandle::spawn(CLUSTER, None, Admission::Open);
        adopt(&membership, &endpoint, ID_A).await;
        (agent, endpoint, membership)
    }

    fn state_of(membership: &MembershipHandle, id: &str) -> Option<MemberState> {
        membership
            .members()
            .iter()
            .find(|m| m.id.as_deref() == Some(id))
            .map(|m| m.state)
    }

    /// An answer from the member `id` at `endpoint` that changes only its version: a fact,
    /// no member event.
    async fn answer_as_version(
        membership: &MembershipHandle,
        endpoint: &str,
        id: &str,
        version: &str,
    ) {
        let mut upgraded = node_info(id);
        upgraded.version = version.into();
        membership
            .send(MembershipMsg::Answered {
                endpoint: endpoint.to_string(),
                source: Source::Seed,
                facts: NodeFacts::Troupe(Box::new(upgraded)),
            })
            .await;
    }

    async fn adopt(membership: &MembershipHandle, endpoint: &str, id: &str) {
        membership
            .send(MembershipMsg::Answered {
                endpoint: endpoint.to_string(),
                source: Source::Seed,
                facts: NodeFacts::Troupe(Box::new(node_info(id))),
            })
            .await;
        membership.sync().await;
    }

    /// An answer that changes a member's facts without an event (a new version here) does not
    /// republish the view, a copy of the whole table, at once; the next tick does.
    #[tokio::test(start_paused = true)]
    async fn facts_without_an_event_reach_the_view_at_the_next_tick() {
        let membership = MembershipHandle::spawn(CLUSTER, None, Admission::Open);
        let endpoint = "tcp://127.0.0.1:1";
        adopt(&membership, endpoint, ID_A).await;
        let mut view = membership.view.clone();
        view.mark_unchanged();
        answer_as_version(&membership, endpoint, ID_A, "9.9.9").await;
        // One thread, time paused: the actor handles the answer while this task yields.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!view.has_changed().unwrap(), "view published per answer");
        tokio::time::sleep(TICK_EVERY + Duration::from_millis(10)).await;
        assert!(
            view.has_changed().unwrap(),
            "view not published at the tick"
        );
        let version = |members: &[Member]| {
            members
                .iter()
                .find_map(|m| Some(m.info.as_ref()?.version.clone()))
        };
        assert_eq!(version(&membership.members()).as_deref(), Some("9.9.9"));
    }

    /// The roster moves with member events, not with answers that change nothing but facts
    /// (those republish the view); sweeps skip only the endpoints of their own source.
    #[tokio::test(start_paused = true)]
    async fn the_roster_follows_member_events_and_sweeps_skip_heartbeated_endpoints() {
        let membership = MembershipHandle::spawn(CLUSTER, None, Admission::Open);
        let endpoint = "tcp://127.0.0.1:1";
        let mut roster = membership.roster();
        adopt(&membership, endpoint, ID_A).await;
        assert!(roster.has_changed().unwrap(), "a join moves the roster");
        roster.mark_unchanged();
        assert_eq!(
            membership.heartbeated_endpoints(Source::Seed),
            HashSet::from([endpoint.to_string()])
        );
        assert!(membership.heartbeated_endpoints(Source::Probe).is_empty());

        let mut view = membership.view.clone();
        view.mark_unchanged();
        answer_as_version(&membership, endpoint, ID_A, "9.9.9").await;
        tokio::time::sleep(TICK_EVERY + Duration::from_millis(10)).await;
        assert!(view.has_changed().unwrap(), "the view takes the new facts");
        assert!(!roster.has_changed().unwrap(), "no event, no roster change");

        membership
            .send(MembershipMsg::Goodbye {
                id_or_endpoint: ID_A.to_string(),
            })
            .await;
        membership.sync().await;
        assert!(roster.has_changed().unwrap(), "a leave moves the roster");
    }

    /// A sighting (mDNS record, Circus UDP reply, registration) of an endpoint on this host
    /// is not even probed by `troupe serve` unless its operator named it; then it is adopted.
    #[tokio::test]
    async fn serve_probes_a_sighting_on_its_own_host_only_when_its_operator_named_it() {
        let zmq = crate::fake_agent::context();
        let (mut agent, endpoint) = bind(&zmq, "tcp://127.0.0.1:*").await;
        let port = endpoint.rsplit_once(':').unwrap().1;
        let seen = || MembershipMsg::Seen {
            endpoint: endpoint.clone(),
            source: Source::Mdns,
            announced: Announced::Keyless,
            name: None,
        };

        let other = troupe::discovery::parse_targets("127.0.0.1:1,10.0.0.1").unwrap();
        let membership = MembershipHandle::spawn(CLUSTER, None, Admission::OperatorNamed(other));
        membership.send(seen()).await;
        membership.sync().await;
        let asked = tokio::time::timeout(Duration::from_millis(1500), agent.next()).await;
        assert!(asked.is_err(), "the agent was asked: {asked:?}");
        assert!(membership.members().is_empty());

        let named = troupe::discovery::parse_targets(&format!("127.0.0.1:{port}")).unwrap();
        let membership = MembershipHandle::spawn(CLUSTER, None, Admission::OperatorNamed(named));
        membership.send(seen()).await;
        let adopted = membership.wait_until(Duration::from_secs(5), |members| {
            members.iter().any(|m| m.state == MemberState::Alive)
        });
        answer_until(&mut agent, ID_A, adopted).await;
        assert_eq!(state_of(&membership, ID_A), Some(MemberState::Alive));
    }

    fn count_connections(identities: &[Vec<u8>]) -> usize {
        identities.iter().collect::<BTreeSet<_>>().len()
    }

    /// Heartbeats of an alive member come on one connection; one that goes unanswered closes
    /// it (its late reply never counts), and the retry and what follows use a new one.
    #[tokio::test]
    async fn heartbeats_reuse_one_connection_until_one_is_missed() {
        let zmq = crate::fake_agent::context();
        let (mut agent, _, membership) = adopted_agent(&zmq).await;

        let seen = answer_next(&mut agent, ID_A, 3).await;
        assert_eq!(count_connections(&seen), 1, "{} heartbeats", seen.len());

        // Leave one unanswered: the retry comes at once, on another connection.
        let (ignored, ..) = next_request(&mut agent).await;
        assert_eq!(ignored, seen[0]);
        let (retry, retry_id, _) = next_request(&mut agent).await;
        assert_ne!(retry, ignored, "the unanswered connection was reused");
        let node = serde_json::to_value(node_info(ID_A)).unwrap();
        reply(
            &mut agent,
            &retry,
            &json!({"status": "ok", "id": retry_id, "node": node}),
        )
        .await;
        let after = answer_next(&mut agent, ID_A, 2).await;
        assert!(
            after.iter().all(|i| *i == retry),
            "not kept after the retry"
        );
        assert_eq!(state_of(&membership, ID_A), Some(MemberState::Alive));
    }

    /// Heartbeat answers that change nothing but their time publish the view at most once a
    /// second (each tick had one with ten members, and copied every member); an answer that
    /// changes a fact still reaches the view.
    #[tokio::test]
    async fn routine_answers_publish_the_view_once_a_second_and_new_facts_still_reach_it() {
        const MEMBERS: usize = 10;
        let zmq = crate::fake_agent::context();
        let membership = MembershipHandle::spawn(CLUSTER, None, Admission::Open);
        let mut agents = Vec::new();
        for n in 0..MEMBERS {
            let (agent, endpoint) = bind(&zmq, "tcp://127.0.0.1:*").await;
            let id = format!("00000000-0000-4000-8000-0000000001{n:02}");
            adopt(&membership, &endpoint, &id).await;
            agents.push((agent, id));
        }
        // Ten members land in several of the ten heartbeat slots: answers every 100-500 ms.
        let mut view = membership.view.clone();
        view.borrow_and_update();
        let watched = Duration::from_secs(4);
        let count_views = async {
            let mut views = 0;
            let _ = tokio::time::timeout(watched, async {
                while view.changed().await.is_ok() {
                    views += 1;
                }
            })
            .await;
            views
        };
        let answer_all = futures::future::join_all(
            agents
                .iter_mut()
                .map(|(agent, id)| answer_until(agent, id, tokio::time::sleep(watched))),
        );
        let (views, answered) = tokio::join!(count_views, answer_all);
        let answers: usize = answered.iter().map(Vec::len).sum();
        assert!(
            answers >= 3 * MEMBERS,
            "{answers} heartbeats answered in {watched:?}"
        );
        // Once a second: 4-5 views (slack for a slow machine's missed answer); one a tick
        // would be 16.
        assert!(
            views <= 8,
            "{views} views published for {answers} routine answers"
        );

        // A new version in the next heartbeat's answer reaches the view.
        let (agent, id) = &mut agents[0];
        let message = agent.next().await.expect("open").expect("a heartbeat");
        let frames: Vec<Vec<u8>> = message.iter().map(|f| f.to_vec()).collect();
        let body: Value = serde_json::from_slice(frames.last().unwrap()).unwrap();
        let mut upgraded = node_info(id);
        upgraded.version = "9.9.9".into();
        let answer = json!({"status": "ok", "id": body["id"], "node": upgraded});
        reply(agent, &frames[0], &answer).await;
        let seen = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let upgraded = membership.shared_members().iter().any(|m| {
                    m.id.as_deref() == Some(id.as_str())
                        && m.info.as_ref().is_some_and(|i| i.version == "9.9.9")
                });
                if upgraded {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(seen.is_ok(), "the new version never reached the view");
    }

    /// An agent restarted on the same endpoint comes back alive: at once (the kept connection
    /// reconnects), or after it was down long enough to be declared so, with another id.
    #[tokio::test]
    async fn a_restarted_agent_on_the_same_endpoint_is_alive_again() {
        let zmq = crate::fake_agent::context();
        let (mut agent, endpoint, membership) = adopted_agent(&zmq).await;
        let seen = answer_next(&mut agent, ID_A, 1).await;
        assert_eq!(count_connections(&seen), 1);

        // A quick restart, between two heartbeats.
        drop(agent);
        let (mut agent, _) = bind(&zmq, &endpoint).await;
        answer_next(&mut agent, ID_A, 2).await;
        assert_eq!(state_of(&membership, ID_A), Some(MemberState::Alive));

        // Gone long enough to be down; back with a new id.
        drop(agent);
        membership
            .wait_until(Duration::from_secs(5), |members| {
                members
                    .iter()
                    .any(|m| m.id.as_deref() == Some(ID_A) && m.state == MemberState::Down)
            })
            .await;
        assert_eq!(state_of(&membership, ID_A), Some(MemberState::Down));
        let (mut agent, _) = bind(&zmq, &endpoint).await;
        let back = membership.wait_until(Duration::from_secs(5), |members| {
            members
                .iter()
                .any(|m| m.id.as_deref() == Some(ID_B) && m.state == MemberState::Alive)
        });
        let seen = answer_until(&mut agent, ID_B, back).await;
        assert!(!seen.is_empty());
        assert_eq!(state_of(&membership, ID_B), Some(MemberState::Alive));
        assert_eq!(state_of(&membership, ID_A), Some(MemberState::Down));
    }
}
