//! The member table as a pure state machine: observations and time in, member events out.
//!
//! Rows are keyed by node id (troupe agents) or by endpoint (stock circusd, which has no id).
//! The actor in [`super::actor`] does the I/O and feeds results here, so every rule below is
//! unit-tested with paused time and no sockets.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;
use troupe::bounds::MAX_MEMBERS;
use troupe::protocol::NodeInfo;

/// Consecutive missed heartbeats that make an alive member suspect.
pub const SUSPECT_AFTER_MISSES: u32 = 2;
/// No successful heartbeat for this long makes a member down.
pub const DOWN_AFTER: Duration = Duration::from_millis(2500);
/// Down or left members are forgotten after this long.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Left => "left",
        }
    }
}

/// What a node told us when it answered.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeFacts {
    Troupe(Box<NodeInfo>),
    /// A stock circusd: it answers Circus commands but not `nodeinfo`.
    Circus {
        watchers: usize,
    },
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
    pub info: Option<NodeInfo>,
    pub watchers: usize,
    pub misses: u32,
    pub last_ok: Instant,
    /// When `state` last changed.
    pub since: Instant,
    /// Another agent claims the same id.
    pub conflict: bool,
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
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Join => "join",
            EventKind::Suspect => "suspect",
            EventKind::Down => "down",
            EventKind::Leave => "leave",
            EventKind::Update => "update",
        }
    }
}

/// The table. `cluster` is the only cluster whose agents are adopted; it holds at most
/// [`MAX_MEMBERS`] rows.
#[derive(Debug, Clone)]
pub struct MemberTable {
    cluster: String,
    members: BTreeMap<String, Member>,
    /// New members not adopted because alive and suspect ones filled the table.
    refused: u64,
}

impl MemberTable {
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            members: BTreeMap::new(),
            refused: 0,
        }
    }

    /// How many new members were not adopted because the table was full, since it started.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Room for one new row: there is some, or the member down or left the longest gives
    /// its place. False (and the refusal counted) when alive and suspect members fill it.
    fn make_room(&mut self) -> bool {
        if self.members.len() < MAX_MEMBERS {
            return true;
        }
        let gone = self
            .members
            .values()
            .filter(|m| matches!(m.state, MemberState::Down | MemberState::Left))
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
        match facts {
            NodeFacts::Circus { watchers } => self.circus_answered(endpoint, source, watchers, now),
            NodeFacts::Troupe(info) => {
                if info.cluster != self.cluster {
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
        if !self.members.contains_key(&key) && !self.make_room() {
            return events;
        }
        let member = self.members.entry(key.clone()).or_insert_with(|| Member {
            key: key.clone(),
            name: circus_name(endpoint),
            id: None,
            endpoint: endpoint.to_string(),
            kind: Kind::Circus,
            state: MemberState::Down,
            sources: BTreeSet::new(),
            info: None,
            watchers,
            misses: 0,
            last_ok: now,
            since: now,
            conflict: false,
        });
        member.sources.extend(source);
        member.watchers = watchers;
        revive(member, now, &mut events);
        events
    }

    fn troupe_answered(
        &mut self,
        endpoint: &str,
        source: Option<Source>,
        info: NodeInfo,
        now: Instant,
    ) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        // Another id answering at an endpoint we knew for someone else: that one left it.
        let displaced: Vec<String> = self
            .members
            .values()
            .filter(|m| m.endpoint == endpoint && m.id.as_deref() != Some(&info.id))
            .map(|m| m.key.clone())
            .collect();
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
        let rows: Vec<String> = self
            .members
            .values()
            .filter(|m| m.id.as_deref() == Some(&info.id))
            .map(|m| m.key.clone())
            .collect();
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
            update_facts(m, source, info);
            revive(m, now, &mut events);
            return events;
        }
        // Known id, other address, other process: moved/restarted, or a clash if the old one
        // is still answering.
        let live_other = rows.iter().find(|k| {
            let m = &self.members[*k];
            m.state == MemberState::Alive && now.duration_since(m.last_ok) < DOWN_AFTER
        });
        match (rows.first().cloned(), live_other.cloned()) {
            (_, Some(other)) => {
                let key = format!("{}@{endpoint}", info.id);
                if !self.make_room() {
                    return events;
                }
                if let Some(m) = self.members.get_mut(&other) {
                    m.conflict = true;
                }
                let mut member = new_member(&key, endpoint, source, info, now);
                member.conflict = true;
                let detail = format!(
                    "id {} is also claimed by {}",
                    member.id.as_deref().unwrap_or(""),
                    self.members[&other].endpoint
                );
                push(&mut events, &member, EventKind::Join, detail);
                self.members.insert(key, member);
            }
            (Some(key), None) => {
                let m = self.members.get_mut(&key).expect("row listed above");
                let detail = format!("address {} -> {}", m.endpoint, endpoint);
                let moved = m.endpoint != endpoint;
                m.endpoint = endpoint.to_string();
                m.name = info.name.clone();
                update_facts(m, source, info);
                let was_alive = m.state == MemberState::Alive;
                revive(m, now, &mut events);
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
        for m in self.members.values_mut() {
            if m.name == name && m.sources.contains(&Source::Mdns) && m.state != MemberState::Left {
                set_state(m, MemberState::Left, now, &mut events, "mDNS goodbye");
            }
        }
        events
    }

    /// Time-driven transitions: down after [`DOWN_AFTER`] without an answer, forgetting
    /// after [`FORGET_AFTER`], and the end of an id clash once one side is gone.
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
        self.members.retain(|_, m| {
            !(matches!(m.state, MemberState::Down | MemberState::Left)
                && now.duration_since(m.since) >= FORGET_AFTER)
        });
        self.resolve_clashes();
        events
    }

    /// An id clash ends when at most one of its rows is alive: the dead duplicates go.
    fn resolve_clashes(&mut self) {
        let ids: BTreeSet<String> = self
            .members
            .values()
            .filter(|m| m.conflict)
            .filter_map(|m| m.id.clone())
            .collect();
        for id in ids {
            let alive: Vec<String> = self
                .members
                .values()
                .filter(|m| m.id.as_deref() == Some(&id) && m.state == MemberState::Alive)
                .map(|m| m.key.clone())
                .collect();
            if alive.len() > 1 {
                continue;
            }
            let keep = alive.first().cloned().unwrap_or_else(|| id.clone());
            self.members.retain(|k, m| {
                m.id.as_deref() != Some(&id) || *k == keep || m.state == MemberState::Alive
            });
            let rows: Vec<String> = self
                .members
                .values()
                .filter(|m| m.id.as_deref() == Some(&id))
                .map(|m| m.key.clone())
                .collect();
            for key in rows {
                if let Some(mut m) = self.members.remove(&key) {
                    m.conflict = false;
                    m.key = id.clone();
                    self.members.insert(id.clone(), m);
                }
            }
        }
    }
}

/// Whether a new member would be refused: [`MAX_MEMBERS`] rows, none down or left (one of
/// those would give its place).
pub fn is_full(members: &[Member]) -> bool {
    members.len() >= MAX_MEMBERS
        && members
            .iter()
            .all(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
}

fn new_member(
    key: &str,
    endpoint: &str,
    source: Option<Source>,
    info: NodeInfo,
    now: Instant,
) -> Member {
    Member {
        key: key.to_string(),
        name: info.name.clone(),
        id: Some(info.id.clone()),
        endpoint: endpoint.to_string(),
        kind: Kind::Troupe,
        state: MemberState::Alive,
        sources: source.into_iter().collect(),
        watchers: info.watchers.len(),
        info: Some(info),
        misses: 0,
        last_ok: now,
        since: now,
        conflict: false,
    }
}

fn update_facts(m: &mut Member, source: Option<Source>, info: NodeInfo) {
    m.sources.extend(source);
    m.watchers = info.watchers.len();
    m.info = Some(info);
}

/// Marks an answer: back to alive, with a join event when it had been away.
fn revive(m: &mut Member, now: Instant, events: &mut Vec<MemberEvent>) {
    m.misses = 0;
    m.last_ok = now;
    if m.state != MemberState::Alive {
        let detail = format!("at {} (was {})", m.endpoint, m.state.as_str());
        m.state = MemberState::Alive;
        m.since = now;
        push(events, m, EventKind::Join, detail);
    }
}

fn set_state(
    m: &mut Member,
    state: MemberState,
    now: Instant,
    events: &mut Vec<MemberEvent>,
    detail: &str,
) {
    m.state = state;
    m.since = now;
    let kind = match state {
        MemberState::Alive => EventKind::Join,
        MemberState::Suspect => EventKind::Suspect,
        MemberState::Down => EventKind::Down,
        MemberState::Left => EventKind::Leave,
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
    let host = endpoint
        .trim_start_matches("tcp://")
        .rsplit_once(':')
        .map_or(endpoint, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) if v4.is_loopback() => 2,
        Ok(std::net::IpAddr::V4(_)) => 3,
        Ok(std::net::IpAddr::V6(v6)) if (v6.segments()[0] & 0xffc0) == 0xfe80 => 0,
        Ok(std::net::IpAddr::V6(_)) => 1,
        Err(_) => 2,
    }
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
