//! The CLI's roster: the nodes a one-shot command (no `troupe serve`) has seen, per cluster and
//! way of searching (a probe range, seeds, multicast: nodes found by one search are not
//! expected from another), with when each last answered, in
//! `<state_dir>/roster/<cluster>/<search>.json`. A node that answered
//! yesterday and is not found today is then reported as `down` ([`crate::absent`]) instead of
//! silently missing from the answer. A node not seen for `roster_ttl` (default a week, see
//! [`troupe::config::controller::DEFAULT_ROSTER_TTL`]) is dropped; `troupe nodes --forget
//! NODE` drops one at once.
//!
//! The file is local, but what it holds came from the network (names, ids and endpoints from
//! `nodeinfo` answers), so it is read as hostile: at most [`MAX_ROSTER_BYTES`], each entry
//! checked by [`troupe::config::names`], at most [`MAX_ROSTER_NODES`] entries (the ones seen
//! last). A file that cannot be read is a warning and a fresh roster, never a failure.
//! Written atomically (a temp file of this process, renamed), so two commands at once leave
//! one of their two rosters, whole.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use troupe::bounds::{MAX_ROSTER_BYTES, MAX_ROSTER_NODES};
use troupe::config::names::{check_name, check_node_id, check_tcp_endpoint};

/// One node as last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: Option<String>,
    pub endpoint: String,
    /// Seconds since the epoch.
    pub last_seen: f64,
}

/// The roster of one cluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Roster {
    pub nodes: BTreeMap<String, Entry>,
}

/// Where the roster of `cluster` (a checked name: a safe file name) searched by `sources`
/// ([`crate::nobody::Search::sources`]) lives.
pub fn path(state_dir: &Path, cluster: &str, sources: &[String]) -> PathBuf {
    let mut search: String = sources
        .join("+")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    if search.is_empty() {
        search.push_str("nothing");
    }
    state_dir
        .join("roster")
        .join(cluster)
        .join(format!("{search}.json"))
}

impl Roster {
    /// Reads the roster at `path`, keeping only valid entries seen within `ttl` of `now`.
    /// A missing file is an empty roster; an unreadable one is an empty roster and a warning.
    pub fn load(path: &Path, ttl: Duration, now: f64) -> (Roster, Option<String>) {
        let mut text = Vec::new();
        let read = std::fs::File::open(path)
            .and_then(|file| file.take(MAX_ROSTER_BYTES + 1).read_to_end(&mut text));
        let problem = match read {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Default::default(),
            Err(e) => e.to_string(),
            Ok(_) if text.len() as u64 > MAX_ROSTER_BYTES => {
                format!("it is longer than {MAX_ROSTER_BYTES} bytes")
            }
            Ok(_) => match serde_json::from_slice::<Roster>(&text) {
                Ok(mut roster) => {
                    let dropped = roster.keep_valid(ttl, now);
                    let warning = (dropped > 0).then(|| {
                        format!(
                            "{}: left out {dropped} invalid entries (names, ids and endpoints \
                             must follow troupe's rules)",
                            path.display()
                        )
                    });
                    return (roster, warning);
                }
                Err(e) => format!("it is not a roster: {e}"),
            },
        };
        let warning = format!(
            "cannot read the roster {} ({problem}); starting a new one: nodes seen before are \
             reported again once seen again (delete the file to silence this)",
            path.display()
        );
        (Roster::default(), Some(warning))
    }

    /// Drops invalid entries and those not seen within `ttl`, then the oldest past
    /// [`MAX_ROSTER_NODES`]; returns how many invalid ones were dropped.
    fn keep_valid(&mut self, ttl: Duration, now: f64) -> usize {
        let before = self.nodes.len();
        self.nodes.retain(|name, entry| {
            check_name(name).is_ok()
                && entry
                    .id
                    .as_deref()
                    .is_none_or(|id| check_node_id(id).is_ok())
                && check_tcp_endpoint(&entry.endpoint).is_ok()
                && entry.last_seen.is_finite()
        });
        let invalid = before - self.nodes.len();
        self.nodes
            .retain(|_, entry| now - entry.last_seen < ttl.as_secs_f64());
        self.bound();
        invalid
    }

    /// Keeps the [`MAX_ROSTER_NODES`] seen last.
    fn bound(&mut self) {
        if self.nodes.len() <= MAX_ROSTER_NODES {
            return;
        }
        let mut seen: Vec<f64> = self.nodes.values().map(|e| e.last_seen).collect();
        seen.sort_by(|a, b| b.total_cmp(a));
        let cutoff = seen[MAX_ROSTER_NODES - 1];
        self.nodes.retain(|_, e| e.last_seen >= cutoff);
        while self.nodes.len() > MAX_ROSTER_NODES {
            let oldest = self
                .nodes
                .iter()
                .min_by(|a, b| a.1.last_seen.total_cmp(&b.1.last_seen))
                .map(|(name, _)| name.clone());
            oldest.map(|name| self.nodes.remove(&name));
        }
    }

    /// Records the alive troupe members of `nodes` (member JSON objects) as seen at `now`.
    /// A node renamed keeps its id: the entry under its old name goes.
    pub fn record(&mut self, nodes: &[Value], now: f64) {
        for n in nodes
            .iter()
            .filter(|n| n["state"] == "alive" && n["kind"] == "troupe")
        {
            let (Some(name), Some(endpoint)) = (n["name"].as_str(), n["endpoint"].as_str()) else {
                continue;
            };
            let id = n["id"].as_str().map(str::to_string);
            if check_name(name).is_err() || check_tcp_endpoint(endpoint).is_err() {
                continue;
            }
            if let Some(id) = &id {
                self.nodes
                    .retain(|other, e| other == name || e.id.as_ref() != Some(id));
            }
            let entry = Entry {
                id,
                endpoint: endpoint.to_string(),
                last_seen: now,
            };
            self.nodes.insert(name.to_string(), entry);
        }
        self.bound();
    }

    /// Forgets `name`; whether it was there.
    pub fn forget(&mut self, name: &str) -> Option<Entry> {
        self.nodes.remove(name)
    }

    /// Writes the roster to `path` atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)
    }

    /// The roster's nodes that none of `nodes` (member JSON objects, whatever their state)
    /// is, by id or name, as member JSON objects of state `down` and source `roster`. One
    /// whose endpoint is a silent row's (see [`crate::membership::silent_json`]) takes that
    /// row's place as `no reply`: the frozen node, named.
    pub fn missing(&self, nodes: &mut Vec<Value>) {
        for (name, entry) in &self.nodes {
            let present = nodes.iter().any(|n| {
                n["name"] == name.as_str()
                    || (entry.id.is_some() && n["id"].as_str() == entry.id.as_deref())
            });
            if present {
                continue;
            }
            let silent = nodes.iter().position(|n| {
                n["state"] == crate::membership::NO_REPLY && n["endpoint"] == entry.endpoint
            });
            let mut row = json!({
                "name": name,
                "id": entry.id,
                "kind": "troupe",
                "state": "down",
                "endpoint": entry.endpoint,
                "endpoints": {"control": entry.endpoint},
                "source": ["roster"],
                "version": null,
                "watchers": 0,
                "last_seen": entry.last_seen,
                "key_fingerprint": null,
                "locked": null,
            });
            if let Some(index) = silent {
                let silent = nodes.remove(index);
                row["state"] = json!(crate::membership::NO_REPLY);
                row["silent_since"] = silent["silent_since"].clone();
            }
            nodes.push(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "00000000-0000-4000-8000-00000000000a";

    fn alive(name: &str, id: &str, endpoint: &str) -> Value {
        json!({"name": name, "id": id, "kind": "troupe", "state": "alive", "endpoint": endpoint})
    }

    #[test]
    fn a_node_seen_before_and_not_now_is_down_and_a_silent_address_names_it() {
        let mut roster = Roster::default();
        roster.record(
            &[
                alive("a", ID, "tcp://10.0.0.1:5555"),
                alive(
                    "b",
                    "00000000-0000-4000-8000-00000000000b",
                    "tcp://10.0.0.2:5555",
                ),
                alive(
                    "c",
                    "00000000-0000-4000-8000-00000000000c",
                    "tcp://10.0.0.3:5555",
                ),
            ],
            1000.0,
        );
        let mut now = vec![
            alive("a", ID, "tcp://10.0.0.1:5555"),
            json!({"name": "10.0.0.3:5555", "state": "no reply", "endpoint": "tcp://10.0.0.3:5555",
                   "silent_since": 1990.0}),
        ];
        roster.missing(&mut now);
        let states: Vec<(&str, &str)> = now
            .iter()
            .map(|n| (n["name"].as_str().unwrap(), n["state"].as_str().unwrap()))
            .collect();
        assert_eq!(states, [("a", "alive"), ("b", "down"), ("c", "no reply")]);
        assert_eq!(now[1]["last_seen"], 1000.0);
        assert_eq!(now[2]["silent_since"], 1990.0);
        // Renamed, same id: one entry.
        roster.record(&[alive("a2", ID, "tcp://10.0.0.1:5555")], 2000.0);
        assert_eq!(roster.nodes.keys().collect::<Vec<_>>(), ["a2", "b", "c"]);
        assert!(roster.forget("b").is_some());
        assert!(roster.forget("b").is_none());
    }

    #[test]
    fn the_file_is_bounded_checked_expired_and_a_corrupt_one_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), "lab", &["probing 10.0.0.1-3".to_string()]);
        assert!(
            file.ends_with("roster/lab/probing_10.0.0.1-3.json"),
            "{file:?}"
        );
        let ttl = Duration::from_secs(100);
        assert_eq!(Roster::load(&file, ttl, 0.0), (Roster::default(), None));
        let mut roster = Roster::default();
        roster.record(&[alive("a", ID, "tcp://10.0.0.1:5555")], 1000.0);
        roster.save(&file).unwrap();
        assert_eq!(Roster::load(&file, ttl, 1050.0), (roster.clone(), None));
        // Past the TTL: gone, without a word.
        assert_eq!(Roster::load(&file, ttl, 1100.0), (Roster::default(), None));
        let hostile = r#"{"nodes": {"a b;rm": {"id": null, "endpoint": "tcp://10.0.0.1:5555", "last_seen": 1000},
            "ok": {"id": "not-a-uuid", "endpoint": "tcp://10.0.0.1:5555", "last_seen": 1000},
            "fine": {"id": null, "endpoint": "tcp://10.0.0.1:5555", "last_seen": 1000}}}"#;
        std::fs::write(&file, hostile).unwrap();
        let (read, warning) = Roster::load(&file, ttl, 1050.0);
        assert_eq!(read.nodes.keys().collect::<Vec<_>>(), ["fine"]);
        assert!(warning.unwrap().contains("left out 2 invalid entries"));
        for corrupt in [
            &b"{"[..],
            &[0xff, 0xfe],
            &vec![b' '; MAX_ROSTER_BYTES as usize + 1],
        ] {
            std::fs::write(&file, corrupt).unwrap();
            let (read, warning) = Roster::load(&file, ttl, 1050.0);
            assert_eq!(read, Roster::default());
            let warning = warning.unwrap();
            assert!(warning.starts_with("cannot read the roster"), "{warning}");
            assert!(warning.contains("starting a new one"), "{warning}");
        }
        let many: Vec<Value> = (0..MAX_ROSTER_NODES + 5)
            .map(|i| {
                json!({"name": format!("n{i}"), "id": null, "kind": "troupe", "state": "alive",
                       "endpoint": "tcp://10.0.0.1:5555"})
            })
            .collect();
        let mut big = Roster::default();
        for (i, node) in many.iter().enumerate() {
            big.record(std::slice::from_ref(node), i as f64);
        }
        assert_eq!(big.nodes.len(), MAX_ROSTER_NODES);
        assert!(!big.nodes.contains_key("n0"));
    }
}
