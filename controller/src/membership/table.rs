//! The member table as a pure state machine: observations and time in, member events out.
//!
//! Rows are keyed by node id (troupe agents) or by endpoint (stock circusd, which has no id).
//! The actor in [`super::actor`] does the I/O and feeds results here, so every rule below is
//! unit-tested with paused time and no sockets.
//!
//! **Keys** (SECURITY.md: membership is proven, not claimed). A member is only ever made from
//! a `nodeinfo` answer, and a keyed controller's every connection is CURVE: an answer proves
//! the key. A sighting (mDNS record, Circus UDP reply) names the fingerprint of the node's
//! key, and [`MemberTable::lock_of`] decides from it alone whether to dial at all: a node of
//! another key, a keyless node seen by a keyed controller and a keyed node seen by a keyless
//! one could never answer, so they are listed as [`MemberState::Locked`] rows, never dialled,
//! never alive, never in a peer list, so an operator sees why a node is missing.
//!
//! **Ids.** The first member to hold an id keeps it while it is alive: another node answering
//! with that id (a copied id file, a cloned disk) is refused, logged once with both
//! endpoints, and not listed; once the holder is down, the next answer of the other is
//! adopted as the same node moved.

use crate::probe::NodeFacts;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use troupe::bounds::{
    max_members, MAX_OTHER_CLUSTER_NODES, MAX_REFUSED_CLAIMS, MAX_SILENT_ENDPOINTS,
};
use troupe::cluster_key::Fingerprint;
use troupe::protocol::NodeInfo;

/// Consecutive missed heartbeats that make an alive member suspect.
pub const SUSPECT_AFTER_MISSES: u32 = 2;
/// No successful heartbeat for this long makes a member down.
pub const DOWN_AFTER: Duration = Duration::from_millis(2500);
/// Answers in a row, without a miss, that bring a down member back to alive, when the same
/// process answers again (a healed partition, a thawed process); doubled each time a run of
/// answers breaks while it is down (a lossy link). A restarted agent (another process) is back
/// at its first answer. Five, not three: through a link losing 30 % of packets each way a
/// down member's heartbeat (a new connection each) was answered 14-29 % of the time, so its
/// first run reached three often enough (p^2, 2-8 %) to bring it back and down again under
/// load; five in a row is p^4, 0.04-0.7 %.
pub const RECOVER_AFTER_ANSWERS: u32 = 5;
/// A member that came back from down is trusted again once it has answered this many
/// heartbeats in a row (a minute); one that goes down before relapsed: it then needs twice as
/// many answers in a row ([`RECOVER_AFTER_ANSWERS`] doubled at each relapse, at most
/// [`MAX_RECOVER_ANSWERS`]). A link losing 30 % of heartbeats never gives 60 in a row.
pub const STABLE_AFTER_ANSWERS: u32 = 60;
/// The most answers in a row a relapsing member must give (24 heartbeats: about 24 s).
pub const MAX_RECOVER_ANSWERS: u32 = 24;
/// Left members are forgotten after this long, down ones this long after their last answer.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// How a member was found. A member may be known through several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Mdns,
    Probe,
    Seed,
    Registered,
    CircusUdp,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mdns => "mdns",
            Source::Probe => "probe",
            Source::Seed => "seed",
            Source::Registered => "registered",
            Source::CircusUdp => "circus-udp",
        }
    }
}

/// What kind of supervisor answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Troupe,
    Circus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
    Left,
    /// Seen, but of another cluster key than this controller's (or one of the two has none):
    /// never dialled, never a member.
    Locked,
}

impl MemberState {
    /// Every state, in the order a member goes through them.
    pub const ALL: [MemberState; 5] = [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Down,
        MemberState::Left,
        MemberState::Locked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Left => "left",
            MemberState::Locked => "locked",
        }
    }

    /// Down, left or locked: a row that gives its place when the table is full.
    fn is_gone(self) -> bool {
        matches!(
            self,
            MemberState::Down | MemberState::Left | MemberState::Locked
        )
    }
}

/// What a sighting says about the node's cluster key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announced {
    /// Nothing (a `register_node`, a probed address): only the answer will tell.
    Unsaid,
    /// An mDNS record or UDP reply without a fingerprint: the node has no key.
    Keyless,
    /// The fingerprint of the node's key in use.
    Key(Fingerprint),
}

/// One member.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub key: String,
    pub name: String,
    pub id: Option<String>,
    /// Control endpoint, `tcp://ADDR:PORT`.
    pub endpoint: String,
    pub kind: Kind,
    pub state: MemberState,
    pub sources: BTreeSet<Source>,
    /// Shared, as the member view is copied several times a second (at 1000 members, cloning
    /// every node's facts was a twentieth of serve's CPU).
    pub info: Option<Arc<NodeInfo>>,
    pub watchers: usize,
    /// Heartbeats missed in a row.
    pub misses: u32,
    /// Answers in a row since the last miss.
    pub answers: u32,
    /// Answers in a row a down member must give to be alive again (see
    /// [`RECOVER_AFTER_ANSWERS`]).
    pub recover_after: u32,
    /// Came back from down and not yet trusted again (see [`STABLE_AFTER_ANSWERS`]): a fall
    /// now is a relapse.
    pub on_probation: bool,
    pub last_ok: Instant,
    /// When `state` last changed.
    pub since: Instant,
    /// The fingerprint of the member's cluster key: the one its `nodeinfo` names, answered
    /// over CURVE; `None` for a keyless member (a keyless controller's members all are).
    /// For a locked row, what its sighting announced.
    pub fingerprint: Option<String>,
    /// Why a [`MemberState::Locked`] row is not dialled.
    pub locked: Option<String>,
}

/// A change others should hear about: topic `node.<name>.<kind>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEvent {
    pub name: String,
    pub key: String,
    pub kind: EventKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Join,
    Suspect,
    Down,
    Leave,
    Update,
    /// Another node answered with a held id and was not adopted (on the holder's name).
    Refused,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Join => "join",
            EventKind::Suspect => "suspect",
            EventKind::Down => "down",
            EventKind::Leave => "leave",
            EventKind::Update => "update",
            EventKind::Refused => "refused",
        }
    }
}

/// The table. `cluster` is the only cluster whose agents are adopted; it holds at most
/// [`max_members`] rows.
#[derive(Debug, Clone)]
pub struct MemberTable {
    cluster: String,
    /// The fingerprints of this controller's keyring; `None` without a key.
    keys: Option<BTreeSet<Fingerprint>>,
    members: BTreeMap<String, Member>,
    /// New members not adopted because alive and suspect ones filled the table.
    refused: u64,
    /// (id, endpoint) claims of a held id already logged, at most [`MAX_REFUSED_CLAIMS`].
    refused_claims: BTreeSet<(String, String)>,
    /// Agents of other clusters that answered or announced themselves: (cluster, node name),
    /// at most [`MAX_OTHER_CLUSTER_NODES`]. Never members; they tell an operator who typed
    /// no `--cluster` where the nodes went.
    others: BTreeSet<(String, String)>,
    /// Endpoints a probe connected to that did not answer `nodeinfo`, with when that was
    /// first and last found, at most [`MAX_SILENT_ENDPOINTS`]. Never members: a fan-out
    /// reports them as `no reply`, so a node frozen before it was ever seen is not hidden.
    silent: BTreeMap<String, Silent>,
    /// Whether an answer changed a member's facts (its `nodeinfo`, watcher count, sources)
    /// since [`Self::take_facts_changed`] last said.
    facts_changed: bool,
}

/// An endpoint found silent: first and last time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silent {
    pub since: Instant,
    pub last: Instant,
}

impl MemberTable {
    /// The table of a keyless controller.
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            keys: None,
            members: BTreeMap::new(),
            refused: 0,
            refused_claims: BTreeSet::new(),
            others: BTreeSet::new(),
            silent: BTreeMap::new(),
            facts_changed: false,
        }
    }

    /// The table of a controller holding a keyring of these fingerprints.
    pub fn keyed(cluster: &str, keys: impl IntoIterator<Item = Fingerprint>) -> Self {
        Self {
            keys: Some(keys.into_iter().collect()),
            ..Self::new(cluster)
        }
    }

    /// Why a node that announced `announced` cannot answer this controller, so is not to be
    /// dialled: `None` when it may be. A keyed controller accepts any key of its keyring (a
    /// rotation changes nodes' first keys one by one).
    pub fn lock_of(&self, announced: &Announced) -> Option<String> {
        match (&self.keys, announced) {
            (_, Announced::Unsaid) | (None, Announced::Keyless) => None,
            (Some(keys), Announced::Key(fp)) if keys.contains(fp) => None,
            (Some(_), Announced::Key(fp)) => Some(format!(
                "holds cluster key {fp}, not one of this controller's keyring"
            )),
            (Some(_), Announced::Keyless) => {
                Some("has no cluster key; this controller has one".into())
            }
            (None, Announced::Key(fp)) => Some(format!(
                "holds cluster key {fp}; this controller has none (key_file, --key-file, \
                 TROUPE_KEY_FILE)"
            )),
        }
    }

    /// A sighting at `endpoint` that [`Self::lock_of`] locked: listed (or refreshed) as a
    /// locked row, named `name` when it is a valid node name. A row of the same endpoint that
    /// answered stays as it is: its heartbeats decide about it.
    pub fn locked(
        &mut self,
        endpoint: &str,
        name: Option<&str>,
        source: Source,
        announced: &Announced,
        why: String,
        now: Instant,
    ) {
        let key = format!("locked@{endpoint}");
        if !self.members.contains_key(&key) && !self.make_room() {
            return;
        }
        // A Circus UDP reply names nothing: an mDNS record's name is kept.
        let name = name.filter(|n| troupe::config::names::check_name(n).is_ok());
        let fingerprint = match announced {
            Announced::Key(fp) => Some(fp.to_string()),
            _ => None,
        };
        let member = self.members.entry(key.clone()).or_insert_with(|| {
            unknown_member(
                key,
                locked_name(endpoint),
                endpoint,
                Kind::Troupe,
                MemberState::Locked,
                now,
            )
        });
        if let Some(name) = name {
            member.name = name.to_string();
        }
        member.sources.insert(source);
        member.fingerprint = fingerprint;
        member.locked = Some(why);
        // When it was last seen, for forgetting it.
        member.last_ok = now;
    }

    /// An agent of cluster `cluster`, not ours, called `name`, answered or announced itself.
    /// Kept only when both are valid names (they are shown to the operator).
    pub fn other_cluster(&mut self, cluster: &str, name: &str) {
        use troupe::config::names::check_name;
        if cluster == self.cluster || check_name(cluster).is_err() || check_name(name).is_err() {
            return;
        }
        if self.others.len() < MAX_OTHER_CLUSTER_NODES {
            self.others.insert((cluster.to_string(), name.to_string()));
        }
    }

    /// How many agents of each other cluster answered or announced themselves.
    pub fn other_clusters(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (cluster, _) in &self.others {
            *counts.entry(cluster.clone()).or_default() += 1;
        }
        counts
    }

    /// A probe at `endpoint` (found by `source`: a range, a seed, a sighting without a word
    /// on its key) was refused our key: listed as a locked row, unless a member that answers
    /// there is alive or suspect (its heartbeats decide about it).
    pub fn refused_key(&mut self, endpoint: &str, source: Source, now: Instant) {
        let answering = self.members.values().any(|m| {
            m.endpoint == endpoint && matches!(m.state, MemberState::Alive | MemberState::Suspect)
        });
        if answering {
            return;
        }
        let why = if self.keys.is_some() {
            "refused this controller's cluster key: it holds another key, or none"
        } else {
            // A keyless probe hears a refusal only from a server that asks for a key.
            "refused this controller, which has no cluster key: it holds one; use --key-file \
             or TROUPE_KEY_FILE with the cluster's key file"
        };
        self.locked(endpoint, None, source, &Announced::Unsaid, why.into(), now);
    }

    /// A probe connected to `endpoint` and got no answer to `nodeinfo`.
    pub fn silent(&mut self, endpoint: &str, now: Instant) {
        if let Some(silent) = self.silent.get_mut(endpoint) {
            silent.last = now;
        } else if self.silent.len() < MAX_SILENT_ENDPOINTS {
            let silent = Silent {
                since: now,
                last: now,
            };
            self.silent.insert(endpoint.to_string(), silent);
        }
    }

    /// Silent endpoints that no member row holds (a member's own heartbeats say more).
    pub fn silent_endpoints(&self) -> Vec<(String, Silent)> {
        self.silent
            .iter()
            .filter(|(endpoint, _)| self.members.values().all(|m| &m.endpoint != *endpoint))
            .map(|(endpoint, silent)| (endpoint.clone(), *silent))
            .collect()
    }

    /// How many new members were not adopted because the table was full, since it started.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Room for one new row: there is some, or the member down or left the longest gives
    /// its place. False (and the refusal counted) when alive and suspect members fill it.
    fn make_room(&mut self) -> bool {
        if self.members.len() < max_members() {
            return true;
        }
        let gone = self
            .members
            .values()
            .filter(|m| m.state.is_gone())
            .min_by_key(|m| m.since)
            .map(|m| m.key.clone());
        match gone {
            Some(key) => {
                self.members.remove(&key);
                true
            }
            None => {
                self.refused += 1;
                false
            }
        }
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn get(&self, key: &str) -> Option<&Member> {
        self.members.get(key)
    }

    /// A node answered at `endpoint` (a probe, a heartbeat, a confirmed registration or mDNS
    /// record). `source` is None for heartbeats.
    pub fn answered(
        &mut self,
        endpoint: &str,
        source: Option<Source>,
        facts: NodeFacts,
        now: Instant,
    ) -> Vec<MemberEvent> {
        self.silent.remove(endpoint);
        match facts {
            NodeFacts::Circus { watchers } => self.circus_answered(endpoint, source, watchers, now),
            NodeFacts::Troupe(info) => {
                if info.cluster != self.cluster {
                    self.other_cluster(&info.cluster, &info.name);
                    return Vec::new();
                }
                self.troupe_answered(endpoint, source, *info, now)
            }
        }
    }

    fn circus_answered(
        &mut self,
        endpoint: &str,
        source: Option<Source>,
        watchers: usize,
        now: Instant,
    ) -> Vec<MemberEvent> {
        let key = format!("circus@{endpoint}");
        let mut events = Vec::new();
        let known = self.members.contains_key(&key);
        if !known && !self.make_room() {
            return events;
        }
        let member = self.members.entry(key.clone()).or_insert_with(|| Member {
            watchers,
            ..unknown_member(
                key.clone(),
                circus_name(endpoint),
                endpoint,
                Kind::Circus,
                MemberState::Alive,
                now,
            )
        });
        let sources = member.sources.len();
        member.sources.extend(source);
        self.facts_changed |= member.watchers != watchers || member.sources.len() != sources;
        member.watchers = watchers;
        if known {
            // A circusd tells nothing of its process: a down one serves its probation.
            revive(member, now, false, &mut events);
        } else {
            push(
                &mut events,
                member,
                EventKind::Join,
                format!("at {endpoint}"),
            );
        }
        events
    }

    fn troupe_answered(
        &mut self,
        endpoint: &str,
        source: Option<Source>,
        mut info: NodeInfo,
        now: Instant,
    ) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        // Nearly every answer is a heartbeat of the row holding this id, alive or suspect at
        // this endpoint: then no other row is at stake (an endpoint has at most one alive or
        // suspect row, as whoever answers there displaces the others), and the table is not
        // scanned. Three scans per answer made heartbeats O(members^2) per second.
        let heartbeat = self.members.get(&info.id).is_some_and(|m| {
            m.endpoint == endpoint && matches!(m.state, MemberState::Alive | MemberState::Suspect)
        });
        // It answered: whatever locked it (a key since copied) is over. Locked rows are keyed
        // by their endpoint.
        let locked = format!("locked@{endpoint}");
        if self
            .members
            .get(&locked)
            .is_some_and(|m| m.state == MemberState::Locked)
        {
            self.members.remove(&locked);
        }
        // A keyless controller's connections are NULL: whatever the node says, it has no key.
        if self.keys.is_none() {
            info.fingerprint = None;
        }
        // Another id answering at an endpoint we knew for someone else: that one left it.
        let displaced: Vec<String> = if heartbeat {
            Vec::new()
        } else {
            self.members
                .values()
                .filter(|m| m.endpoint == endpoint && m.id.as_deref() != Some(&info.id))
                .map(|m| m.key.clone())
                .collect()
        };
        for key in displaced {
            if let Some(m) = self.members.get_mut(&key) {
                if matches!(m.state, MemberState::Alive | MemberState::Suspect) {
                    set_state(
                        m,
                        MemberState::Down,
                        now,
                        &mut events,
                        "another node answers at its address",
                    );
                }
            }
        }
        let rows: Vec<String> = if heartbeat {
            vec![info.id.clone()]
        } else {
            self.members
                .values()
                .filter(|m| m.id.as_deref() == Some(&info.id))
                .map(|m| m.key.clone())
                .collect()
        };
        // The same endpoint, or the same running process at another address (mDNS reports
        // one agent once per address): one row.
        let same = rows.iter().find(|k| {
            let m = &self.members[*k];
            m.endpoint == endpoint || m.info.as_ref().is_some_and(|i| same_process(i, &info))
        });
        if let Some(key) = same.cloned() {
            let m = self.members.get_mut(&key).expect("row listed above");
            if m.endpoint != endpoint && prefer(endpoint, &m.endpoint) {
                let detail = format!("address {} -> {}", m.endpoint, endpoint);
                m.endpoint = endpoint.to_string();
                push(&mut events, m, EventKind::Update, detail);
            }
            if m.name != info.name && m.state == MemberState::Alive {
                let detail = format!("renamed from {}", m.name);
                m.name = info.name.clone();
                push(&mut events, m, EventKind::Update, detail);
            }
            let restarted = m.info.as_ref().is_some_and(|old| !same_process(old, &info));
            self.facts_changed |= update_facts(m, source, info);
            revive(m, now, restarted, &mut events);
            return events;
        }
        // Known id, other address, other process: moved/restarted, or a copied id if the
        // holder is still answering.
        let live_holder = rows.iter().find(|k| {
            let m = &self.members[*k];
            m.state == MemberState::Alive && now.duration_since(m.last_ok) < DOWN_AFTER
        });
        match (rows.first().cloned(), live_holder.cloned()) {
            (_, Some(holder)) => {
                let holder = &self.members[&holder];
                let claim = (info.id.clone(), endpoint.to_string());
                if !self.refused_claims.contains(&claim) {
                    if self.refused_claims.len() >= MAX_REFUSED_CLAIMS {
                        self.refused_claims.clear();
                    }
                    let detail = format!(
                        "refused {endpoint} (named {}): id {} is held by {} at {}, alive; \
                         a copied id file? the holder keeps it",
                        info.name, info.id, holder.name, holder.endpoint
                    );
                    push(&mut events, holder, EventKind::Refused, detail);
                    self.refused_claims.insert(claim);
                }
            }
            (Some(key), None) => {
                let m = self.members.get_mut(&key).expect("row listed above");
                let detail = format!("address {} -> {}", m.endpoint, endpoint);
                let moved = m.endpoint != endpoint;
                m.endpoint = endpoint.to_string();
                m.name = info.name.clone();
                self.facts_changed |= update_facts(m, source, info);
                let was_alive = m.state == MemberState::Alive;
                // Not the same process (`same` above found none): moved or restarted.
                revive(m, now, true, &mut events);
                if moved && was_alive {
                    push(&mut events, m, EventKind::Update, detail);
                }
            }
            (None, None) => {
                if !self.make_room() {
                    return events;
                }
                let member = new_member(&info.id.clone(), endpoint, source, info, now);
                push(
                    &mut events,
                    &member,
                    EventKind::Join,
                    format!("at {endpoint}"),
                );
                self.members.insert(member.key.clone(), member);
            }
        }
        events
    }

    /// A heartbeat to `key` got no reply.
    pub fn missed(&mut self, key: &str, now: Instant) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        if let Some(m) = self.members.get_mut(key) {
            m.misses += 1;
            // A down member whose answers come and go is on a lossy link, not a healed one:
            // each broken run doubles the run it must give, as a relapse does.
            if m.state == MemberState::Down && m.answers > 0 {
                m.recover_after = (m.recover_after * 2).min(MAX_RECOVER_ANSWERS);
            }
            m.answers = 0;
            if m.misses >= SUSPECT_AFTER_MISSES && m.state == MemberState::Alive {
                let detail = format!("{} heartbeats missed", m.misses);
                set_state(m, MemberState::Suspect, now, &mut events, &detail);
            }
        }
        events.extend(self.tick(now));
        events
    }

    /// A clean goodbye (mDNS removal, `unregister_node`) for the member with this id, or at
    /// this endpoint.
    pub fn goodbye(&mut self, id_or_endpoint: &str, now: Instant) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        for m in self.members.values_mut() {
            let matches = m.id.as_deref() == Some(id_or_endpoint) || m.endpoint == id_or_endpoint;
            if matches && m.state != MemberState::Left {
                set_state(m, MemberState::Left, now, &mut events, "said goodbye");
            }
        }
        events
    }

    /// A member found by mDNS under `instance` (its node name) said goodbye.
    pub fn goodbye_by_name(&mut self, name: &str, now: Instant) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        self.members.retain(|_, m| {
            !(m.state == MemberState::Locked && m.name == name && m.sources.contains(&Source::Mdns))
        });
        for m in self.members.values_mut() {
            if m.name == name && m.sources.contains(&Source::Mdns) && m.state != MemberState::Left {
                set_state(m, MemberState::Left, now, &mut events, "mDNS goodbye");
            }
        }
        events
    }

    /// The controller itself did not run for `stalled` (an overloaded machine, a suspended
    /// process): its members could not be heard meanwhile, so that time does not count as
    /// their silence. Alive and suspect members' silence is pushed back by it; a member of a
    /// cluster that stopped answering is still down [`DOWN_AFTER`] of running time later.
    pub fn excuse(&mut self, stalled: Duration) {
        for m in self.members.values_mut() {
            if matches!(m.state, MemberState::Alive | MemberState::Suspect) {
                m.last_ok += stalled;
            }
        }
    }

    /// Whether an answer changed a member's facts since this was last asked (then cleared).
    pub fn take_facts_changed(&mut self) -> bool {
        std::mem::take(&mut self.facts_changed)
    }

    /// Time-driven transitions: down after [`DOWN_AFTER`] without an answer, forgetting
    /// after [`FORGET_AFTER`] (a locked row: that long after it was last seen, unless mDNS,
    /// whose goodbye or expiry removes it, still announces it).
    pub fn tick(&mut self, now: Instant) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        for m in self.members.values_mut() {
            let silent = now.duration_since(m.last_ok);
            if matches!(m.state, MemberState::Alive | MemberState::Suspect) && silent >= DOWN_AFTER
            {
                let detail = format!("no answer for {:.1}s", silent.as_secs_f64());
                set_state(m, MemberState::Down, now, &mut events, &detail);
            }
        }
        self.members.retain(|_, m| match m.state {
            // A down member that still answers now and then (serving its probation) is kept.
            MemberState::Down => now.duration_since(m.last_ok) < FORGET_AFTER,
            MemberState::Left => now.duration_since(m.since) < FORGET_AFTER,
            MemberState::Locked => {
                m.sources.contains(&Source::Mdns) || now.duration_since(m.last_ok) < FORGET_AFTER
            }
            MemberState::Alive | MemberState::Suspect => true,
        });
        self.silent
            .retain(|_, silent| now.duration_since(silent.last) < FORGET_AFTER);
        events
    }
}

/// Why new members are not adopted when the table is full, and what to do.
pub fn full_reason() -> String {
    format!(
        "the member table is full of alive and suspect members (max_members = {}: raise it \
         with `troupe serve --max-members N` or max_members in troupe.toml's [serve], each \
         member taking up to {} file descriptors)",
        max_members(),
        troupe::bounds::serve_files_per_member()
    )
}

/// Whether a new member would be refused: [`max_members`] rows, none down or left (one of
/// those would give its place).
pub fn is_full(members: &[Member]) -> bool {
    members.len() >= max_members() && members.iter().all(|m| !m.state.is_gone())
}

fn new_member(
    key: &str,
    endpoint: &str,
    source: Option<Source>,
    info: NodeInfo,
    now: Instant,
) -> Member {
    let name = info.name.clone();
    Member {
        id: Some(info.id.clone()),
        sources: source.into_iter().collect(),
        watchers: info.watchers.len(),
        fingerprint: info.fingerprint.clone(),
        info: Some(Arc::new(info)),
        ..unknown_member(
            key.to_string(),
            name,
            endpoint,
            Kind::Troupe,
            MemberState::Alive,
            now,
        )
    }
}

/// Takes an answer's facts; whether any differ from those held. The same `nodeinfo` as last
/// time (nearly every heartbeat) keeps the one already shared.
fn update_facts(m: &mut Member, source: Option<Source>, info: NodeInfo) -> bool {
    let sources = m.sources.len();
    m.sources.extend(source);
    let same_info = m.info.as_deref() == Some(&info);
    if !same_info {
        m.watchers = info.watchers.len();
        m.fingerprint = info.fingerprint.clone();
        m.info = Some(Arc::new(info));
    }
    !same_info || m.sources.len() != sources
}

/// Marks an answer: back to alive, with a join event when it had been away. A down member
/// answering from the same process (`restarted` false: a healed partition) comes back only
/// after [`Member::recover_after`] answers in a row, so a lossy link does not make it flap.
fn revive(m: &mut Member, now: Instant, restarted: bool, events: &mut Vec<MemberEvent>) {
    m.misses = 0;
    m.last_ok = now;
    m.answers = m.answers.saturating_add(1);
    if m.answers >= STABLE_AFTER_ANSWERS {
        m.on_probation = false;
    }
    let detail = match m.state {
        MemberState::Alive => return,
        MemberState::Down if !restarted && m.answers < m.recover_after => return,
        MemberState::Down if !restarted => format!(
            "at {} (was down; answered {} heartbeats in a row)",
            m.endpoint, m.answers
        ),
        state => format!("at {} (was {})", m.endpoint, state.as_str()),
    };
    if m.state == MemberState::Down {
        m.on_probation = true;
    }
    m.state = MemberState::Alive;
    m.since = now;
    push(events, m, EventKind::Join, detail);
}

/// Going down: a member that came back and falls again before it was trusted again relapsed,
/// and must answer twice as long in a row next time.
fn fall(m: &mut Member) {
    m.recover_after = if m.on_probation {
        (m.recover_after * 2).min(MAX_RECOVER_ANSWERS)
    } else {
        RECOVER_AFTER_ANSWERS
    };
    m.answers = 0;
}

fn set_state(
    m: &mut Member,
    state: MemberState,
    now: Instant,
    events: &mut Vec<MemberEvent>,
    detail: &str,
) {
    if state == MemberState::Down {
        fall(m);
    }
    m.state = state;
    m.since = now;
    let kind = match state {
        MemberState::Alive => EventKind::Join,
        MemberState::Suspect => EventKind::Suspect,
        MemberState::Down => EventKind::Down,
        MemberState::Left => EventKind::Leave,
        MemberState::Locked => EventKind::Update,
    };
    push(events, m, kind, detail.to_string());
}

fn push(events: &mut Vec<MemberEvent>, m: &Member, kind: EventKind, detail: String) {
    events.push(MemberEvent {
        name: m.name.clone(),
        key: m.key.clone(),
        kind,
        detail,
    });
}

/// One running agent seen at two addresses: same id, same start time, same host.
fn same_process(a: &NodeInfo, b: &NodeInfo) -> bool {
    a.id == b.id && a.started == b.started && a.hostname == b.hostname
}

/// Whether `new` is a better address than `current` for the same agent: IPv4 over IPv6,
/// and never an IPv6 link-local address over anything else.
fn prefer(new: &str, current: &str) -> bool {
    rank(new) > rank(current)
}

fn rank(endpoint: &str) -> u8 {
    let address = troupe::endpoint::Endpoint::parse(endpoint)
        .ok()
        .and_then(|e| e.host().parse::<std::net::IpAddr>().ok());
    match address {
        Some(std::net::IpAddr::V4(v4)) if v4.is_loopback() => 2,
        Some(std::net::IpAddr::V4(_)) => 3,
        Some(std::net::IpAddr::V6(v6)) if (v6.segments()[0] & 0xffc0) == 0xfe80 => 0,
        Some(std::net::IpAddr::V6(_)) => 1,
        None => 2,
    }
}

/// A locked sighting without a usable name is named after its endpoint.
fn locked_name(endpoint: &str) -> String {
    format!(
        "locked-{}",
        endpoint
            .trim_start_matches("tcp://")
            .replace(['.', ':', '[', ']'], "-")
    )
}

/// A stock circusd has no name: it is named after its endpoint, without the '.' and ':'
/// that would break `node.<name>.<event>` topics.
fn circus_name(endpoint: &str) -> String {
    format!(
        "circus-{}",
        endpoint
            .trim_start_matches("tcp://")
            .replace(['.', ':'], "-")
    )
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;

/// A member row first seen `now`: no answer counted yet, nothing learned of it.
fn unknown_member(
    key: String,
    name: String,
    endpoint: &str,
    kind: Kind,
    state: MemberState,
    now: Instant,
) -> Member {
    Member {
        key,
        name,
        id: None,
        endpoint: endpoint.to_string(),
        kind,
        state,
        sources: BTreeSet::new(),
        info: None,
        watchers: 0,
        misses: 0,
        answers: 0,
        recover_after: RECOVER_AFTER_ANSWERS,
        on_probation: false,
        last_ok: now,
        since: now,
        fingerprint: None,
        locked: None,
    }
}
