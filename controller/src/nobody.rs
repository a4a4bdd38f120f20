//! Why a command reached no node, said in one place: every command that found nobody to send
//! to (a broadcast, `configure`, `reset`, `reconfigure`) exits [`EXIT_NOTHING_MATCHED`] with
//! one of these messages, and `troupe nodes` prints the same one under an empty table.
//!
//! "No node matched" alone sent a new user looking in the wrong place: the nodes were there but
//! of another cluster, or nothing was searched at all (multicast off and no range). So the
//! message says which of the four cases it is, and what to type next.

use crate::exit_code::EXIT_NOTHING_MATCHED;
use crate::settings::Settings;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// How discovery searches, and what it saw besides members.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Search {
    /// The cluster whose agents are adopted.
    pub cluster: String,
    /// How nodes are looked for, in words; empty when nothing is searched at all.
    pub sources: Vec<String>,
    /// Agents of other clusters that answered or announced themselves, by cluster.
    #[serde(default)]
    pub other_clusters: BTreeMap<String, usize>,
}

impl Search {
    /// What `settings` search; `other_clusters` from the membership that ran it.
    pub fn of(settings: &Settings, other_clusters: BTreeMap<String, usize>) -> Search {
        let mut sources = Vec::new();
        if settings.multicast {
            sources.push("mDNS and Circus UDP multicast".to_string());
        }
        if !settings.probe.is_empty() {
            sources.push(format!("probing {}", settings.probe));
        }
        if !settings.seeds.is_empty() {
            sources.push(format!("seeds {}", settings.seeds));
        }
        Search {
            cluster: settings.config.cluster.clone(),
            sources,
            other_clusters,
        }
    }

    /// "mDNS and Circus UDP multicast, probing 10.0.0.1-3", or "nothing (...)".
    pub fn describe(&self) -> String {
        if self.sources.is_empty() {
            "nothing (multicast discovery is off and no probe range or seed is set)".into()
        } else {
            self.sources.join(", ")
        }
    }
}

/// The four reasons a command reached no node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nobody {
    /// Nodes were found, and `--node` removed them all.
    Unmatched {
        selection: String,
        found: Vec<String>,
    },
    /// No node of our cluster, but agents of others answered.
    OtherClusters {
        cluster: String,
        others: BTreeMap<String, usize>,
    },
    /// Multicast off, no range, no seed: nothing was looked for.
    NothingSearched,
    /// Searched, and nothing of any cluster answered.
    NoneFound { cluster: String, searched: String },
}

/// Why nothing was reached, from the members (`nodes`, as [`crate::membership::member_json`]
/// makes them), the search, and the `--node` selection.
pub fn why(nodes: &[Value], search: &Search, selection: Option<&str>) -> Nobody {
    let found: Vec<String> = nodes
        .iter()
        .filter(|n| n["state"] == "alive")
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .collect();
    match selection {
        Some(selection) if !found.is_empty() => Nobody::Unmatched {
            selection: selection.to_string(),
            found,
        },
        _ if !search.other_clusters.is_empty() => Nobody::OtherClusters {
            cluster: search.cluster.clone(),
            others: search.other_clusters.clone(),
        },
        _ if search.sources.is_empty() => Nobody::NothingSearched,
        _ => Nobody::NoneFound {
            cluster: search.cluster.clone(),
            searched: search.describe(),
        },
    }
}

/// At most this many names in a message; the rest are counted.
const NAMES_SHOWN: usize = 8;

impl fmt::Display for Nobody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Nobody::Unmatched { selection, found } => {
                let mut names = found[..found.len().min(NAMES_SHOWN)].join(", ");
                if found.len() > NAMES_SHOWN {
                    names.push_str(&format!(" and {} more", found.len() - NAMES_SHOWN));
                }
                write!(
                    f,
                    "no node matched --node {selection} ({} found: {names}); `troupe nodes` \
                     lists them",
                    plural(found.len(), "node")
                )
            }
            Nobody::OtherClusters { cluster, others } => {
                let counts: Vec<String> = others
                    .iter()
                    .map(|(name, n)| format!("{} of cluster '{name}'", plural(*n, "agent")))
                    .collect();
                let first = others.keys().next().map(String::as_str).unwrap_or_default();
                write!(
                    f,
                    "no node of cluster '{cluster}' answered, but {} answered; add --cluster \
                     {first} or set cluster = \"{first}\" in troupe.toml",
                    counts.join(" and ")
                )
            }
            Nobody::NothingSearched => f.write_str(
                "nothing was searched: multicast discovery is off (--no-mdns, TROUPE_MDNS=off \
                 or mdns = false in troupe.toml) and no probe range or seed is set; add --probe \
                 RANGE (e.g. --probe 192.168.0.1-32), set probe or seeds in troupe.toml, or run \
                 `troupe cluster RANGE`",
            ),
            Nobody::NoneFound { cluster, searched } => write!(
                f,
                "no node of cluster '{cluster}' answered (searched: {searched}); check that \
                 the agents run and this host reaches them, or name them with --probe RANGE"
            ),
        }
    }
}

/// Prints why on stderr and returns the exit code for it.
pub fn report(nobody: &Nobody) -> u8 {
    eprintln!("troupe: {nobody}");
    EXIT_NOTHING_MATCHED
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn search(sources: &[&str], others: &[(&str, usize)]) -> Search {
        Search {
            cluster: "default".into(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            other_clusters: others.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn each_case_says_what_happened_and_what_to_type() {
        let alive = [
            json!({"name": "a", "state": "alive"}),
            json!({"name": "b", "state": "down"}),
        ];
        let mdns = search(&["mDNS and Circus UDP multicast"], &[]);
        let unmatched = why(&alive, &mdns, Some("x")).to_string();
        assert_eq!(
            unmatched,
            "no node matched --node x (1 node found: a); `troupe nodes` lists them"
        );
        let lab = search(&["mDNS and Circus UDP multicast"], &[("lab", 3)]);
        assert_eq!(
            why(&[], &lab, Some("x")).to_string(),
            "no node of cluster 'default' answered, but 3 agents of cluster 'lab' answered; \
             add --cluster lab or set cluster = \"lab\" in troupe.toml"
        );
        let nothing = why(&[], &search(&[], &[]), None).to_string();
        assert!(nothing.starts_with("nothing was searched"), "{nothing}");
        assert!(nothing.contains("--probe RANGE"), "{nothing}");
        let none = why(&alive[1..], &mdns, None).to_string();
        assert!(
            none.starts_with("no node of cluster 'default' answered (searched: mDNS"),
            "{none}"
        );
    }
}
