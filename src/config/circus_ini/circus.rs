//! `[circus]`: circusd's endpoints become the agent's address and ports; troupe's own
//! `[agent]` keys may be set there too (circusd does not read them).

use super::parse::Section;
use super::substitute::{circus_vars, Environ};
use super::Report;
use crate::config::{suggest, AgentSettings, Problem, AGENT_KEYS};
use crate::endpoint::Endpoint;

/// circusd's options troupe has no use for, reported once as ignored.
const IGNORED: [&str; 16] = [
    "check_delay",
    "endpoint_owner",
    "statsd",
    "umask",
    "warmup_delay",
    "httpd",
    "httpd_host",
    "httpd_port",
    "debug",
    "debug_gc",
    "pidfile",
    "loglevel",
    "logoutput",
    "loggerconfig",
    "fqdn_prefix",
    "stream_backend",
];

/// The options of `[circus]` that troupe reads.
const READ: [&str; 6] = [
    "endpoint",
    "pubsub_endpoint",
    "stats_endpoint",
    "multicast_endpoint",
    "include",
    "include_dir",
];

/// Where circusd's multicast discovery listens, which troupe's agent answers on too.
const CIRCUS_MULTICAST: &str = "udp://237.219.251.97:12027";

/// Reads `[circus]` into `settings`. Without it, circusd's defaults: every socket on
/// 127.0.0.1, ports 5555 to 5557.
pub(super) fn read(
    section: Option<&Section>,
    env: &Environ,
    settings: &mut AgentSettings,
    report: &mut Report,
) {
    settings.bind = "127.0.0.1".into();
    let Some(section) = section else {
        return;
    };
    let mut ignored = Vec::new();
    let mut bind: Option<(String, &str)> = None;
    for entry in &section.entries {
        let value = circus_vars(&entry.value, env);
        let key = entry.key.as_str();
        let result: Result<(), String> = match key {
            "endpoint" | "pubsub_endpoint" | "stats_endpoint" => {
                tcp_endpoint(&value).and_then(|(host, port)| {
                    match &bind {
                        Some((first, first_key)) if *first != host => {
                            return Err(format!(
                                "troupe binds its three sockets on one address: {first_key} has \
                                 {first}, this has {host}; use one address for all three"
                            ))
                        }
                        _ => bind = Some((host, key)),
                    }
                    match key {
                        "endpoint" => settings.control_port = port,
                        "pubsub_endpoint" => settings.pubsub_port = port,
                        _ => settings.stats_port = port,
                    }
                    Ok(())
                })
            }
            "multicast_endpoint" if value != CIRCUS_MULTICAST => {
                ignored.push(key);
                Ok(())
            }
            _ if READ.contains(&key) => Ok(()),
            _ if IGNORED.contains(&key) => {
                ignored.push(key);
                Ok(())
            }
            _ if AGENT_KEYS.contains(&key) => {
                let mut problems = Vec::new();
                let mut one = toml::Table::new();
                one.insert(key.to_string(), toml::Value::String(value));
                crate::config::read_agent(settings, &one, &mut problems);
                match problems.into_iter().next() {
                    Some(Problem { message, .. }) => Err(message),
                    None => Ok(()),
                }
            }
            _ => Err(suggest::unknown_key(
                key,
                READ.iter().chain(&IGNORED).chain(&AGENT_KEYS).copied(),
            )),
        };
        if let Err(message) = result {
            report.problem(&entry.origin, "circus", Some(key), message);
        }
    }
    if let Some((host, _)) = bind {
        settings.bind = host;
    }
    if !ignored.is_empty() {
        let key = report.at(&section.origin, "circus", None);
        report.ignored.push(Problem {
            key,
            message: format!(
                "ignored, as troupe has no use for them: {} (nothing to do: `troupe import` \
                 writes a troupe-agent.toml without them)",
                ignored.join(", ")
            ),
        });
    }
}

/// `tcp://HOST:PORT` (HOST `*` is every address) as the address and port troupe binds.
fn tcp_endpoint(value: &str) -> Result<(String, u16), String> {
    let expected = || {
        format!(
            "expected tcp://HOST:PORT, got {value:?} (troupe serves Circus clients over TCP; \
             its owner-only ipc socket is <state_dir>/control.sock)"
        )
    };
    // `*` (every address) is Circus's word for what troupe binds as 0.0.0.0.
    let bindable = value.replacen("tcp://*:", "tcp://0.0.0.0:", 1);
    let endpoint = Endpoint::parse(&bindable).map_err(|_| expected())?;
    Ok((endpoint.host().to_string(), endpoint.port()))
}
