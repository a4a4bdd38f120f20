use super::*;
use std::collections::BTreeMap;
use troupe::bounds::MAX_MEMBERS;
use troupe::cluster_key::Fingerprint;
use troupe::protocol::Endpoints;

fn info(id: &str, name: &str, started: f64) -> NodeFacts {
    NodeFacts::Troupe(Box::new(NodeInfo {
        id: id.into(),
        name: name.into(),
        cluster: "default".into(),
        version: "0.1.0".into(),
        hostname: format!("host-{name}"),
        addresses: vec![],
        endpoints: Endpoints {
            control: String::new(),
            pubsub: String::new(),
            stats: String::new(),
        },
        started,
        watchers: BTreeMap::new(),
        fingerprint: None,
    }))
}

fn kinds(events: &[MemberEvent]) -> Vec<(String, EventKind)> {
    events.iter().map(|e| (e.name.clone(), e.kind)).collect()
}

const A: &str = "tcp://10.0.0.1:5555";
const B: &str = "tcp://10.0.0.2:5555";

fn table_with_a(now: Instant) -> MemberTable {
    let mut table = MemberTable::new("default");
    let events = table.answered(A, Some(Source::Probe), info("id-a", "a", 1.0), now);
    assert_eq!(kinds(&events), [("a".into(), EventKind::Join)]);
    table
}

fn state(table: &MemberTable, key: &str) -> MemberState {
    table.get(key).expect("member").state
}

#[tokio::test(start_paused = true)]
async fn two_misses_make_suspect_and_silence_makes_down_within_three_seconds() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    assert!(table.missed("id-a", t0 + Duration::from_secs(1)).is_empty());
    let events = table.missed("id-a", t0 + Duration::from_secs(2));
    assert_eq!(kinds(&events), [("a".into(), EventKind::Suspect)]);
    assert!(table.tick(t0 + Duration::from_millis(2400)).is_empty());
    let events = table.tick(t0 + Duration::from_millis(2500));
    assert_eq!(kinds(&events), [("a".into(), EventKind::Down)]);
    assert_eq!(state(&table, "id-a"), MemberState::Down);
    // Further ticks say nothing more.
    assert!(table.tick(t0 + Duration::from_secs(5)).is_empty());
}

/// A stall of the controller itself (seen at 1000 members on a loaded machine: hundreds of
/// members down at one tick, none suspect before) is not the members' silence.
#[tokio::test(start_paused = true)]
async fn the_controllers_own_stall_does_not_count_as_silence() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    // Nothing heard from 0.5 s to 2.9 s: serve itself did not run.
    table.excuse(Duration::from_millis(2400));
    assert!(table.tick(t0 + Duration::from_millis(2900)).is_empty());
    assert_eq!(state(&table, "id-a"), MemberState::Alive);
    // Still silent once serve runs again: down DOWN_AFTER of running time after the answer.
    assert!(table.tick(t0 + Duration::from_millis(4800)).is_empty());
    let events = table.tick(t0 + Duration::from_millis(4900));
    assert_eq!(kinds(&events), [("a".into(), EventKind::Down)]);
}

#[tokio::test(start_paused = true)]
async fn an_answer_clears_misses_so_flapping_does_not_accumulate() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    for second in 1..20u64 {
        let now = t0 + Duration::from_secs(second);
        let events = if second % 2 == 0 {
            table.missed("id-a", now)
        } else {
            table.answered(A, None, info("id-a", "a", 1.0), now)
        };
        assert!(events.is_empty(), "second {second}: {events:?}");
    }
    assert_eq!(state(&table, "id-a"), MemberState::Alive);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_rejoins_without_a_duplicate() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    table.tick(t0 + Duration::from_secs(3));
    assert_eq!(state(&table, "id-a"), MemberState::Down);
    let events = table.answered(
        A,
        None,
        info("id-a", "a", 50.0),
        t0 + Duration::from_secs(4),
    );
    assert_eq!(kinds(&events), [("a".into(), EventKind::Join)]);
    assert_eq!(table.members().count(), 1);
    assert_eq!(state(&table, "id-a"), MemberState::Alive);
}

#[tokio::test(start_paused = true)]
async fn goodbye_makes_left_at_once_and_an_answer_brings_it_back() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    let events = table.goodbye("id-a", t0);
    assert_eq!(kinds(&events), [("a".into(), EventKind::Leave)]);
    assert!(
        table.goodbye("id-a", t0).is_empty(),
        "a second goodbye is silent"
    );
    assert!(
        table.tick(t0 + Duration::from_secs(5)).is_empty(),
        "left is not later down"
    );
    let events = table.answered(
        A,
        Some(Source::Mdns),
        info("id-a", "a", 2.0),
        t0 + Duration::from_secs(6),
    );
    assert_eq!(kinds(&events), [("a".into(), EventKind::Join)]);
}

#[tokio::test(start_paused = true)]
async fn mdns_goodbye_by_instance_name_only_touches_mdns_members() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    assert!(
        table.goodbye_by_name("a", t0).is_empty(),
        "a was found by probing"
    );
    table.answered(A, Some(Source::Mdns), info("id-a", "a", 1.0), t0);
    assert_eq!(
        kinds(&table.goodbye_by_name("a", t0)),
        [("a".into(), EventKind::Leave)]
    );
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_moves_is_updated_not_duplicated() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    table.tick(t0 + Duration::from_secs(3));
    let events = table.answered(B, None, info("id-a", "a", 9.0), t0 + Duration::from_secs(4));
    assert_eq!(kinds(&events), [("a".into(), EventKind::Join)]);
    assert_eq!(table.members().count(), 1);
    assert_eq!(table.get("id-a").unwrap().endpoint, B);
}

#[tokio::test(start_paused = true)]
async fn one_agent_seen_at_two_addresses_is_one_member_preferring_ipv4() {
    let t0 = Instant::now();
    let mut table = MemberTable::new("default");
    let v6 = "tcp://[fe80::1]:5555";
    table.answered(v6, Some(Source::Mdns), info("id-a", "a", 1.0), t0);
    let events = table.answered(A, Some(Source::Mdns), info("id-a", "a", 1.0), t0);
    assert_eq!(kinds(&events), [("a".into(), EventKind::Update)]);
    assert_eq!(table.members().count(), 1);
    assert_eq!(table.get("id-a").unwrap().endpoint, A);
    // Seeing the link-local address again does not flip it back.
    assert!(table
        .answered(v6, Some(Source::Mdns), info("id-a", "a", 1.0), t0)
        .is_empty());
    assert_eq!(table.get("id-a").unwrap().endpoint, A);
}

/// A copied id file (or a cloned disk): the first holder keeps the id and stays the one
/// member; the other is refused, once per endpoint, naming both; it is adopted as the node
/// moved only after the holder is down.
#[tokio::test(start_paused = true)]
async fn a_copied_id_never_evicts_the_holder() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    let events = table.answered(B, Some(Source::Probe), info("id-a", "a2", 7.0), t0);
    assert_eq!(kinds(&events), [("a".into(), EventKind::Refused)]);
    assert!(
        events[0].detail.contains(A) && events[0].detail.contains(B),
        "{events:?}"
    );
    let again = table.answered(B, Some(Source::Mdns), info("id-a", "a2", 7.0), t0);
    assert_eq!(again, [], "logged once");
    let rows: Vec<&Member> = table.members().collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].endpoint.as_str(), rows[0].state),
        (A, MemberState::Alive)
    );
    // While the holder answers, the claimant never gets in, however often it answers.
    for second in 1..5 {
        let now = t0 + Duration::from_secs(second);
        table.answered(A, None, info("id-a", "a", 1.0), now);
        table.answered(B, None, info("id-a", "a2", 7.0), now);
        table.tick(now);
        assert_eq!(table.get("id-a").unwrap().endpoint, A);
        assert_eq!(table.members().count(), 1);
    }
    // The holder goes silent: down, then the other is the node moved.
    let later = t0 + Duration::from_secs(8);
    table.tick(later);
    assert_eq!(state(&table, "id-a"), MemberState::Down);
    table.answered(B, None, info("id-a", "a2", 7.0), later);
    let row = table.get("id-a").unwrap();
    assert_eq!((row.endpoint.as_str(), row.state), (B, MemberState::Alive));
}

fn fp(hex: &str) -> Fingerprint {
    Fingerprint::parse(hex).unwrap()
}

const OURS: &str = "00000000000000aa";
const ROTATING: &str = "00000000000000bb";
const THEIRS: &str = "00000000000000cc";

#[test]
fn sightings_are_dialled_only_when_their_key_can_answer() {
    let keyed = MemberTable::keyed("default", [fp(OURS), fp(ROTATING)]);
    let keyless = MemberTable::new("default");
    let cases = [
        (&keyed, Announced::Key(fp(OURS)), None),
        (&keyed, Announced::Key(fp(ROTATING)), None),
        (&keyed, Announced::Key(fp(THEIRS)), Some(THEIRS)),
        (&keyed, Announced::Keyless, Some("has no cluster key")),
        (&keyed, Announced::Unsaid, None),
        (&keyless, Announced::Keyless, None),
        (&keyless, Announced::Unsaid, None),
        (
            &keyless,
            Announced::Key(fp(THEIRS)),
            Some("this controller has none"),
        ),
    ];
    for (table, announced, lock) in cases {
        let why = table.lock_of(&announced);
        match lock {
            None => assert_eq!(why, None, "{announced:?}"),
            Some(text) => assert!(
                why.as_deref().is_some_and(|w| w.contains(text)),
                "{announced:?}: {why:?}"
            ),
        }
    }
}

/// A locked row is listed, never alive, refreshed rather than duplicated, gone with its mDNS
/// goodbye or when its node answers after all; an id it might claim matters to nobody.
#[tokio::test(start_paused = true)]
async fn locked_rows_are_listed_apart_from_members() {
    let t0 = Instant::now();
    let mut table = MemberTable::keyed("default", [fp(OURS)]);
    let theirs = Announced::Key(fp(THEIRS));
    for _ in 0..2 {
        table.locked(A, Some("x"), Source::Mdns, &theirs, "why".into(), t0);
    }
    table.locked(
        B,
        Some("bad name!"),
        Source::CircusUdp,
        &Announced::Keyless,
        "no".into(),
        t0,
    );
    let rows: Vec<&Member> = table.members().collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows
        .iter()
        .all(|m| m.state == MemberState::Locked && m.id.is_none()));
    let a = table.get(&format!("locked@{A}")).unwrap();
    assert_eq!(
        (a.name.as_str(), a.fingerprint.as_deref()),
        ("x", Some(THEIRS))
    );
    assert_eq!(
        table.get(&format!("locked@{B}")).unwrap().name,
        "locked-10-0-0-2-5555"
    );
    // A UDP-only row is forgotten when no longer seen; an mDNS one by its goodbye.
    table.tick(t0 + FORGET_AFTER);
    assert_eq!(table.members().count(), 1);
    table.goodbye_by_name("x", t0 + FORGET_AFTER);
    assert_eq!(table.members().count(), 0);
    // Locked, then it answers (its key was fixed): a member, and the locked row is gone.
    table.locked(A, Some("x"), Source::Mdns, &theirs, "why".into(), t0);
    let mut answer = info("id-a", "a", 1.0);
    if let NodeFacts::Troupe(node) = &mut answer {
        node.fingerprint = Some(OURS.into());
    }
    table.answered(A, Some(Source::Mdns), answer, t0);
    let rows: Vec<&Member> = table.members().collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].state, MemberState::Alive);
    assert_eq!(rows[0].fingerprint.as_deref(), Some(OURS));
}

/// A keyless controller's members are keyless, whatever their `nodeinfo` claims.
#[tokio::test(start_paused = true)]
async fn a_keyless_controller_shows_no_key_for_its_members() {
    let mut table = MemberTable::new("default");
    let mut answer = info("id-a", "a", 1.0);
    if let NodeFacts::Troupe(node) = &mut answer {
        node.fingerprint = Some(OURS.into());
    }
    table.answered(A, None, answer, Instant::now());
    assert_eq!(table.get("id-a").unwrap().fingerprint, None);
}

#[tokio::test(start_paused = true)]
async fn a_different_agent_at_a_known_address_displaces_the_old_one() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    let events = table.answered(A, None, info("id-new", "n", 1.0), t0);
    assert_eq!(
        kinds(&events),
        [("a".into(), EventKind::Down), ("n".into(), EventKind::Join)]
    );
}

#[tokio::test(start_paused = true)]
async fn other_clusters_are_not_adopted() {
    let mut table = MemberTable::new("lab");
    assert!(table
        .answered(
            A,
            Some(Source::Probe),
            info("id-a", "a", 1.0),
            Instant::now()
        )
        .is_empty());
    assert_eq!(table.members().count(), 0);
    assert_eq!(table.other_clusters(), [("default".to_string(), 1)].into());
}

#[tokio::test(start_paused = true)]
async fn other_clusters_are_counted_by_node_and_only_with_valid_names() {
    let mut table = MemberTable::new("lab");
    for (cluster, name) in [
        ("default", "a"),
        ("default", "a"),
        ("default", "b"),
        ("prod", "a"),
        ("lab", "c"),
        ("bad\u{1b}[2J", "d"),
        ("default", "e\nf"),
    ] {
        table.other_cluster(cluster, name);
    }
    assert_eq!(
        table.other_clusters(),
        [("default".to_string(), 2), ("prod".to_string(), 1)].into()
    );
}

#[tokio::test(start_paused = true)]
async fn circus_nodes_are_members_keyed_by_endpoint() {
    let t0 = Instant::now();
    let mut table = MemberTable::new("default");
    let events = table.answered(
        A,
        Some(Source::CircusUdp),
        NodeFacts::Circus { watchers: 3 },
        t0,
    );
    assert_eq!(
        kinds(&events),
        [("circus-10-0-0-1-5555".into(), EventKind::Join)]
    );
    let m = table.get(&format!("circus@{A}")).unwrap();
    assert_eq!((m.kind, m.watchers), (Kind::Circus, 3));
    table.missed(&m.key.clone(), t0 + Duration::from_secs(1));
    table.tick(t0 + Duration::from_secs(3));
    assert_eq!(state(&table, &format!("circus@{A}")), MemberState::Down);
}

#[tokio::test(start_paused = true)]
async fn forgotten_after_the_grace_period() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    table.tick(t0 + Duration::from_secs(3));
    table.tick(t0 + Duration::from_secs(3) + FORGET_AFTER);
    assert_eq!(table.members().count(), 0);
}

#[tokio::test(start_paused = true)]
async fn sources_accumulate() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    table.answered(A, Some(Source::Mdns), info("id-a", "a", 1.0), t0);
    table.answered(A, None, info("id-a", "a", 1.0), t0);
    let sources: Vec<Source> = table.get("id-a").unwrap().sources.iter().copied().collect();
    assert_eq!(sources, [Source::Mdns, Source::Probe]);
}

/// A member per endpoint, `n` of them, all alive at `now`.
fn fill(table: &mut MemberTable, n: usize, now: Instant) {
    for i in 0..n {
        let endpoint = format!("tcp://10.1.{}.{}:5555", i / 250, i % 250 + 1);
        let id = format!("id-{i}");
        table.answered(&endpoint, Some(Source::Probe), info(&id, &id, 1.0), now);
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_table_refuses_new_members_and_keeps_answering_the_old() {
    let t0 = Instant::now();
    let mut table = MemberTable::new("default");
    fill(&mut table, MAX_MEMBERS, t0);
    assert_eq!(table.members().count(), MAX_MEMBERS);
    assert_eq!(table.refused(), 0);

    let events = table.answered(B, Some(Source::Registered), info("id-new", "new", 1.0), t0);
    assert!(events.is_empty(), "{events:?}");
    assert!(table.get("id-new").is_none());
    let circus = table.circus_answered("tcp://10.9.9.9:5555", Some(Source::Probe), 1, t0);
    assert!(circus.is_empty(), "{circus:?}");
    assert_eq!(table.members().count(), MAX_MEMBERS);
    assert_eq!(table.refused(), 2);

    // Members already in the table are still heard.
    let later = t0 + Duration::from_secs(1);
    let endpoint = "tcp://10.1.0.1:5555";
    let events = table.answered(endpoint, None, info("id-0", "id-0", 1.0), later);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(table.get("id-0").expect("kept").last_ok, later);
}

#[tokio::test(start_paused = true)]
async fn a_new_member_takes_the_place_of_the_one_down_the_longest() {
    let t0 = Instant::now();
    let mut table = MemberTable::new("default");
    fill(&mut table, MAX_MEMBERS, t0);
    // Everyone but id-0 and id-1 keeps answering; those two go down, id-1 first.
    let quiet = |table: &mut MemberTable, silent: &[&str], at: Instant| {
        for i in 0..MAX_MEMBERS {
            let id = format!("id-{i}");
            if !silent.contains(&id.as_str()) {
                let endpoint = format!("tcp://10.1.{}.{}:5555", i / 250, i % 250 + 1);
                table.answered(&endpoint, None, info(&id, &id, 1.0), at);
            }
        }
        table.tick(at);
    };
    quiet(&mut table, &["id-1"], t0 + Duration::from_secs(2));
    quiet(&mut table, &["id-0", "id-1"], t0 + Duration::from_secs(3));
    quiet(&mut table, &["id-0", "id-1"], t0 + Duration::from_secs(5));
    assert_eq!(state(&table, "id-1"), MemberState::Down);
    assert_eq!(state(&table, "id-0"), MemberState::Down);

    let now = t0 + Duration::from_secs(6);
    let events = table.answered(B, Some(Source::Registered), info("id-new", "new", 1.0), now);
    assert_eq!(kinds(&events), [("new".into(), EventKind::Join)]);
    assert!(
        table.get("id-1").is_none(),
        "the longest down gave its place"
    );
    assert_eq!(state(&table, "id-0"), MemberState::Down);
    assert_eq!(table.members().count(), MAX_MEMBERS);
    assert_eq!(table.refused(), 0);
}

/// The same process (started 1.0) answering again at `at` seconds after `t0`.
fn answer(table: &mut MemberTable, t0: Instant, at: f64) -> Vec<MemberEvent> {
    let now = t0 + Duration::from_secs_f64(at);
    let mut events = table.answered(A, None, info("id-a", "a", 1.0), now);
    events.extend(table.tick(now));
    events
}

fn miss(table: &mut MemberTable, t0: Instant, at: f64) -> Vec<MemberEvent> {
    table.missed("id-a", t0 + Duration::from_secs_f64(at))
}

/// Cut off at once: suspect, then down; the heartbeats of the down member (one a second)
/// are then answered or not as `pattern` says ('1' answered, '0' missed).
fn cut_then(table: &mut MemberTable, t0: Instant, pattern: &str) -> Vec<(String, EventKind)> {
    let mut events = miss(table, t0, 1.0);
    events.extend(miss(table, t0, 1.5));
    events.extend(table.tick(t0 + Duration::from_secs(3)));
    for (i, bit) in pattern.chars().enumerate() {
        let at = 4.0 + i as f64;
        events.extend(match bit {
            '1' => answer(table, t0, at),
            _ => miss(table, t0, at),
        });
    }
    kinds(&events)
}

/// The events of a cut that a member does not come back from: suspect, then down, once.
fn assert_suspect_then_down(events: &[(String, EventKind)]) {
    assert_eq!(
        events,
        [
            ("a".into(), EventKind::Suspect),
            ("a".into(), EventKind::Down)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_healed_partition_comes_back_after_five_answers_in_a_row_not_one() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    // Cut: no answer at all.
    let events = cut_then(&mut table, t0, "0000000000");
    assert_suspect_then_down(&events);
    assert_eq!(
        table.get("id-a").unwrap().recover_after,
        RECOVER_AFTER_ANSWERS
    );
    // Healed: the fifth answer in a row brings it back, once.
    let mut events = Vec::new();
    for second in 0..4 {
        events.extend(answer(&mut table, t0, 30.0 + second as f64));
    }
    assert!(events.is_empty(), "{events:?}");
    let events = answer(&mut table, t0, 34.0);
    assert_eq!(kinds(&events), [("a".into(), EventKind::Join)]);
    assert!(
        events[0].detail.contains("5 heartbeats in a row"),
        "{events:?}"
    );
    assert_eq!(state(&table, "id-a"), MemberState::Alive);
}

#[tokio::test(start_paused = true)]
async fn a_down_member_whose_answers_come_and_go_must_answer_longer_runs() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    // A lossy link after the cut: runs of one and two answers. The first broken run asks for
    // 10, then 20, then 24 in a row: never back on this link.
    let events = cut_then(&mut table, t0, "11011010011010110110");
    assert_suspect_then_down(&events);
    assert_eq!(
        table.get("id-a").unwrap().recover_after,
        MAX_RECOVER_ANSWERS
    );
    // Healed: back once it answered that long in a row, not at the third answer.
    let mut events = Vec::new();
    for second in 0..MAX_RECOVER_ANSWERS - 1 {
        events.extend(answer(&mut table, t0, 30.0 + second as f64));
    }
    assert!(events.is_empty(), "{events:?}");
    let events = answer(&mut table, t0, 30.0 + MAX_RECOVER_ANSWERS as f64);
    assert_eq!(kinds(&events), [("a".into(), EventKind::Join)]);
    // A run of two, broken, then five: the five are not enough (10 are needed).
    let mut table = table_with_a(t0);
    let events = cut_then(&mut table, t0, "11011111");
    assert_eq!(state(&table, "id-a"), MemberState::Down, "{events:?}");
    assert_eq!(table.get("id-a").unwrap().recover_after, 10);
}

#[tokio::test(start_paused = true)]
async fn a_single_lost_heartbeat_changes_nothing_and_two_only_make_suspect() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    // Lost, and its immediate retry answered.
    for second in 1..30 {
        let at = second as f64;
        let mut events = miss(&mut table, t0, at);
        events.extend(answer(&mut table, t0, at + 0.5));
        assert!(events.is_empty(), "second {second}: {events:?}");
    }
    // Lost twice: suspect (still in every peer list), not down.
    let mut events = miss(&mut table, t0, 30.0);
    events.extend(miss(&mut table, t0, 30.5));
    events.extend(table.tick(t0 + Duration::from_secs_f64(31.0)));
    assert_eq!(kinds(&events), [("a".into(), EventKind::Suspect)]);
    // A suspect member that answers is alive at once: it never left the peer list.
    let events = answer(&mut table, t0, 31.0);
    assert_eq!(kinds(&events), [("a".into(), EventKind::Join)]);
}

#[tokio::test(start_paused = true)]
async fn a_member_that_relapses_must_answer_twice_as_long_until_it_stays() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    let joins = |events: &[(String, EventKind)]| {
        events.iter().filter(|(_, k)| *k == EventKind::Join).count()
    };
    let run = |answers: u32| "1".repeat(answers as usize);
    assert_eq!(
        joins(&cut_then(&mut table, t0, &run(RECOVER_AFTER_ANSWERS))),
        1
    );
    assert_eq!(
        table.get("id-a").unwrap().recover_after,
        RECOVER_AFTER_ANSWERS
    );
    // Falls again 30 s later: a relapse, twice the answers needed.
    let t1 = t0 + Duration::from_secs(30);
    let twice = 2 * RECOVER_AFTER_ANSWERS;
    let events = cut_then(&mut table, t1, &run(twice - 1));
    assert_eq!(joins(&events), 0, "{events:?}");
    assert_eq!(table.get("id-a").unwrap().recover_after, twice);
    let last = 4.0 + (twice - 1) as f64;
    assert_eq!(joins(&kinds(&answer(&mut table, t1, last))), 1);
    // Doubling stops at the bound.
    for round in 0..5u64 {
        let t = t1 + Duration::from_secs(40 * (round + 1));
        let needed = table.get("id-a").unwrap().recover_after;
        let all = "1".repeat(MAX_RECOVER_ANSWERS as usize);
        cut_then(&mut table, t, &all);
        let now = table.get("id-a").unwrap().recover_after;
        assert_eq!(now, (needed * 2).min(MAX_RECOVER_ANSWERS));
        assert_eq!(state(&table, "id-a"), MemberState::Alive);
    }
    // Answering a minute in a row, then cut: trusted again, RECOVER_AFTER_ANSWERS answers.
    let t2 = t1 + Duration::from_secs(500);
    let all = "1".repeat(MAX_RECOVER_ANSWERS as usize + STABLE_AFTER_ANSWERS as usize);
    assert_eq!(
        joins(&cut_then(&mut table, t1 + Duration::from_secs(300), &all)),
        1
    );
    assert_eq!(
        joins(&cut_then(&mut table, t2, &run(RECOVER_AFTER_ANSWERS))),
        1
    );
    assert_eq!(
        table.get("id-a").unwrap().recover_after,
        RECOVER_AFTER_ANSWERS
    );
}

#[tokio::test(start_paused = true)]
async fn thirty_percent_loss_after_a_cut_never_flaps_alive_and_down() {
    let t0 = Instant::now();
    let mut table = table_with_a(t0);
    // 30 % of heartbeats lost, from a fixed linear congruential sequence.
    let mut seed: u64 = 14;
    let mut lossy = |seconds: usize| -> String {
        (0..seconds)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if (seed >> 33) % 100 < 30 {
                    '0'
                } else {
                    '1'
                }
            })
            .collect()
    };
    let events = cut_then(&mut table, t0, &lossy(600));
    let downs = events.iter().filter(|(_, k)| *k == EventKind::Down).count();
    // Down for the cut. Its first answers may be a run long enough (a heartbeat is lost 30 %
    // of the time here, more often answered than through a real lossy link); after that each
    // broken run and each fall doubles the answers needed, and it settles down.
    assert!(downs <= 2, "{downs} times down: {events:?}");
    assert_eq!(state(&table, "id-a"), MemberState::Down, "{events:?}");
    assert_eq!(
        table.get("id-a").unwrap().recover_after,
        MAX_RECOVER_ANSWERS
    );
    // Settled: ten more minutes of the same loss, not one transition.
    let mut events = Vec::new();
    let t1 = t0 + Duration::from_secs(605);
    for (i, bit) in lossy(600).chars().enumerate() {
        events.extend(match bit {
            '1' => answer(&mut table, t1, i as f64),
            _ => miss(&mut table, t1, i as f64),
        });
    }
    assert!(events.is_empty(), "{events:?}");
}
