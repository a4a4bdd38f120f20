//! `troupe nodes`: who is there, as a table (the members come from
//! [`crate::cluster_link::ClusterLink::census`]: a running `troupe serve`, or discovered on the spot).

use crate::cluster_link::ClusterLink;
use crate::exit_code::Exit;
use crate::settings::NodeFlags;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// `troupe nodes [--wait 2s] [--json]`: discovers (listening up to `wait` for mDNS answers)
/// or asks a running serve, and prints the members.
pub async fn run(wait: Duration, json: bool, flags: NodeFlags) -> anyhow::Result<ExitCode> {
    let link = ClusterLink::connect_listening(&flags, wait).await?;
    print(&link, json).await?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the members `link` knows (a table, or JSON), and why there are none if so.
pub async fn print(link: &ClusterLink, json: bool) -> anyhow::Result<()> {
    let (nodes, search) = link.census().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
    } else {
        println!("{}", table(&nodes));
    }
    if nodes.is_empty() {
        let nobody = crate::nobody::why(&nodes, &search, None);
        eprintln!("troupe: {nobody}");
    }
    Ok(())
}

/// `troupe nodes --forget NODE`: drops NODE from the roster of this cluster and search.
pub fn forget(flags: &NodeFlags, name: &str) -> ExitCode {
    let settings = match flags.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("troupe: {}", troupe::logging::error_chain(e.as_ref()));
            return Exit::Usage.into();
        }
    };
    let search = crate::nobody::Search::of(&settings, Default::default());
    let path = crate::roster::path(
        &settings.config.state_dir,
        &settings.config.cluster,
        &search.sources,
    );
    let now = troupe::protocol::now_epoch();
    let (mut roster, warning) = crate::roster::Roster::load(&path, settings.config.roster_ttl, now);
    if let Some(warning) = warning {
        eprintln!("troupe: {warning}");
    }
    let Some(entry) = roster.forget(name) else {
        let known: Vec<&str> = roster.nodes.keys().map(String::as_str).collect();
        eprintln!(
            "troupe: {name} is not in the roster of cluster '{}' searched by {} ({}); nothing to forget",
            settings.config.cluster,
            search.describe(),
            if known.is_empty() {
                "it is empty".to_string()
            } else {
                format!("it holds {}", known.join(", "))
            }
        );
        return Exit::Usage.into();
    };
    if let Err(e) = roster.save(&path) {
        eprintln!("troupe: cannot write the roster {}: {e}", path.display());
        return Exit::Usage.into();
    }
    println!(
        "forgot {name} ({}, last seen {}): it is no longer reported when it does not answer",
        entry.endpoint.trim_start_matches("tcp://"),
        crate::absent::when(entry.last_seen, now)
    );
    ExitCode::SUCCESS
}

/// The human table: one row per member, KEY the fingerprint of its cluster key or `none`;
/// then why each locked row is locked.
pub fn table(nodes: &[Value]) -> String {
    let header = [
        "NAME", "ID", "ADDRESS", "STATE", "KEY", "SOURCE", "VERSION", "WATCHERS",
    ];
    let rows: Vec<[String; 8]> = nodes
        .iter()
        .map(|n| {
            let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| "-".into());
            let id = n["id"]
                .as_str()
                .map(|i| i.chars().take(8).collect())
                .unwrap_or_else(|| "-".into());
            let state = text(&n["state"]);
            let key = n["key_fingerprint"].as_str().unwrap_or("none").to_string();
            let source = n["source"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let version = match n["kind"].as_str() {
                Some("circus") => "circusd".to_string(),
                _ => text(&n["version"]),
            };
            [
                text(&n["name"]),
                id,
                text(&n["endpoint"])
                    .trim_start_matches("tcp://")
                    .to_string(),
                state,
                key,
                source,
                version,
                n["watchers"].to_string(),
            ]
        })
        .collect();
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    let mut out = crate::render::table(&header, &rows);
    for n in nodes {
        if let (Some(name), Some(why)) = (n["name"].as_str(), n["locked"].as_str()) {
            out.push_str(&format!("\n{name} is locked: it {why}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_shown_and_locked_rows_say_why() {
        let nodes = [
            json!({"name": "a", "id": "0123456789", "endpoint": "tcp://10.0.0.1:5555",
                   "state": "alive", "kind": "troupe", "key_fingerprint": "1a370741c810a9b4",
                   "source": ["mdns"], "version": "0.1.0", "watchers": 2}),
            json!({"name": "b", "id": null, "endpoint": "tcp://10.0.0.2:5555", "state": "locked",
                   "kind": "troupe", "key_fingerprint": null, "source": ["mdns"],
                   "locked": "has no cluster key; this controller has one", "watchers": 0}),
        ];
        let shown = table(&nodes);
        let lines: Vec<&str> = shown.lines().collect();
        let cells = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>()[3..5].join(" ");
        assert_eq!(cells(0), "STATE KEY", "{shown}");
        assert_eq!(cells(1), "alive 1a370741c810a9b4", "{shown}");
        assert_eq!(cells(2), "locked none", "{shown}");
        assert_eq!(
            lines[3],
            "b is locked: it has no cluster key; this controller has one"
        );
    }
}
