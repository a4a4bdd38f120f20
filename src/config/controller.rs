//! The controller's configuration, `troupe.toml`, validated like the agent's.

use super::value::{read_bool, read_duration, read_int, read_string, toml_to_json};
use super::{ConfigError, Problem};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONTROLLER_PORT: u16 = 5558;
pub const DEFAULT_CONTROLLER_STATS_PORT: u16 = 5559;
pub const DEFAULT_CONTROLLER_EVENTS_PORT: u16 = 5560;
/// Where `troupe serve --http` (without an address) serves the web dashboard: loopback only.
pub const DEFAULT_DASHBOARD_ADDRESS: &str = "127.0.0.1:5580";

/// A node not seen for a week leaves the roster: long enough that a node down since Friday
/// is still reported on Monday, short enough that a machine handed to another project
/// stops being reported without a `troupe nodes --forget`.
pub const DEFAULT_ROSTER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// `[serve]`: the long-running controller's sockets and behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeSettings {
    pub bind: String,
    pub control_port: u16,
    pub stats_port: u16,
    pub events_port: u16,
    pub auto_configure: bool,
    pub quiet_period: Duration,
    /// The web dashboard's address (`http = "127.0.0.1:5580"`, or `true` for
    /// [`DEFAULT_DASHBOARD_ADDRESS`]); None: no dashboard.
    pub http: Option<std::net::SocketAddr>,
    /// Where `/metrics` (Prometheus) is served on its own (`metrics = "127.0.0.1:9580"`),
    /// for a serve without the dashboard; the dashboard's port serves it too.
    pub metrics: Option<std::net::SocketAddr>,
    /// `max_members`: the member table's bound ([`crate::bounds::MAX_MEMBERS`] when None),
    /// for which serve makes sure at start that it may open the descriptors.
    pub max_members: Option<usize>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            bind: "0.0.0.0".into(),
            control_port: DEFAULT_CONTROLLER_PORT,
            stats_port: DEFAULT_CONTROLLER_STATS_PORT,
            events_port: DEFAULT_CONTROLLER_EVENTS_PORT,
            auto_configure: false,
            quiet_period: Duration::from_secs(2),
            http: None,
            metrics: None,
            max_members: None,
        }
    }
}

/// A whole `troupe.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    pub cluster: String,
    /// Probe ranges, as written (parsed by `discovery::range`).
    pub probe: Vec<String>,
    /// Control endpoints always probed.
    pub seeds: Vec<String>,
    pub mdns: bool,
    /// Per-node command timeout.
    pub timeout: Duration,
    /// How often ranges and seeds are probed again.
    pub probe_interval: Duration,
    /// How long the CLI's roster remembers a node it saw and reports it when it does not
    /// answer (`roster_ttl`, default [`DEFAULT_ROSTER_TTL`]).
    pub roster_ttl: Duration,
    pub state_dir: PathBuf,
    /// The cluster key file (`key_file`), unless `--key-file` or `TROUPE_KEY_FILE` names one.
    pub key_file: Option<PathBuf>,
    pub serve: ServeSettings,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            cluster: "default".into(),
            probe: Vec::new(),
            seeds: Vec::new(),
            mdns: true,
            timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(5),
            roster_ttl: DEFAULT_ROSTER_TTL,
            state_dir: super::default_state_dir(),
            key_file: None,
            serve: ServeSettings::default(),
        }
    }
}

impl ControllerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = super::read_file(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let table = super::parse_toml(text, file)?;
        let mut problems = Vec::new();
        let mut config = ControllerConfig::default();
        for (key, value) in &table {
            let json = toml_to_json(value);
            let result = if key == "serve" {
                match &json {
                    Value::Object(serve) => {
                        for (k, v) in serve {
                            if let Err(message) = read_serve(&mut config.serve, k, v) {
                                problems.push(Problem {
                                    key: format!("serve.{k}"),
                                    message,
                                });
                            }
                        }
                        Ok(())
                    }
                    _ => Err("expected a table".to_string()),
                }
            } else {
                read_top(&mut config, key, &json)
            };
            if let Err(message) = result {
                problems.push(Problem {
                    key: key.clone(),
                    message,
                });
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                file: file.to_string(),
                problems,
            })
        }
    }
}

/// The top-level keys of troupe.toml (besides `[serve]`), for the "did you mean" hint.
const TOP_KEYS: [&str; 9] = [
    "cluster",
    "probe",
    "seeds",
    "mdns",
    "timeout",
    "probe_interval",
    "state_dir",
    "key_file",
    "serve",
];
/// The keys of `[serve]`.
const SERVE_KEYS: [&str; 9] = [
    "bind",
    "http",
    "metrics",
    "control_port",
    "stats_port",
    "events_port",
    "auto_configure",
    "quiet_period",
    "max_members",
];

fn read_top(config: &mut ControllerConfig, key: &str, value: &Value) -> Result<(), String> {
    let err = |e: super::value::ValueError| e.to_string();
    match key {
        "cluster" => {
            let cluster = read_string(value).map_err(err)?;
            super::names::check_name(&cluster)?;
            config.cluster = cluster;
        }
        "probe" => config.probe = read_list(value)?,
        "seeds" => config.seeds = read_list(value)?,
        "mdns" => config.mdns = read_bool(value).map_err(err)?,
        "timeout" => config.timeout = read_duration(value).map_err(err)?,
        "probe_interval" => config.probe_interval = read_duration(value).map_err(err)?,
        "roster_ttl" => config.roster_ttl = read_duration(value).map_err(err)?,
        "state_dir" => config.state_dir = read_string(value).map_err(err)?.into(),
        "key_file" => config.key_file = Some(read_string(value).map_err(err)?.into()),
        _ => return Err(super::suggest::unknown_key(key, TOP_KEYS)),
    }
    Ok(())
}

fn read_serve(serve: &mut ServeSettings, key: &str, value: &Value) -> Result<(), String> {
    let err = |e: super::value::ValueError| e.to_string();
    let port = |v: &Value| read_int(v, 0, 65535).map(|p| p as u16).map_err(err);
    match key {
        "bind" => serve.bind = read_string(value).map_err(err)?,
        "control_port" => serve.control_port = port(value)?,
        "stats_port" => serve.stats_port = port(value)?,
        "events_port" => serve.events_port = port(value)?,
        "auto_configure" => serve.auto_configure = read_bool(value).map_err(err)?,
        "quiet_period" => serve.quiet_period = read_duration(value).map_err(err)?,
        "http" => serve.http = read_http(value)?,
        "metrics" => serve.metrics = Some(parse_http_address(&read_string(value).map_err(err)?)?),
        "max_members" => {
            let bound = crate::bounds::MAX_MEMBERS_SETTING as i64;
            serve.max_members = Some(read_int(value, 1, bound).map_err(err)? as usize);
        }
        _ => return Err(super::suggest::unknown_key(key, SERVE_KEYS)),
    }
    Ok(())
}

/// `http = true` (the default address), `false`, or `"ADDR:PORT"`.
fn read_http(value: &Value) -> Result<Option<std::net::SocketAddr>, String> {
    match value {
        Value::Bool(false) => Ok(None),
        Value::Bool(true) => Ok(Some(default_dashboard_address())),
        Value::String(text) => parse_http_address(text).map(Some),
        other => Err(format!(
            "expected true, false or \"ADDRESS:PORT\", got {}",
            super::value::describe(other)
        )),
    }
}

/// [`DEFAULT_DASHBOARD_ADDRESS`] as an address.
pub fn default_dashboard_address() -> std::net::SocketAddr {
    DEFAULT_DASHBOARD_ADDRESS
        .parse()
        .expect("the default dashboard address parses")
}

/// The dashboard's `ADDRESS:PORT` (an IP address: a name could resolve to anything).
pub fn parse_http_address(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("expected ADDRESS:PORT with an IP address, e.g. {DEFAULT_DASHBOARD_ADDRESS}, got {text:?}")
    })
}

fn read_list(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| read_string(i).map_err(|e| e.to_string()))
            .collect(),
        _ => Err(format!(
            "expected a list of strings, got {}",
            super::value::describe(value)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_a_full_file() {
        let config = ControllerConfig::parse("", "troupe.toml").unwrap();
        assert_eq!(config.serve.control_port, 5558);
        assert!(config.mdns);
        let text = "cluster = \"lab\"\nprobe = [\"10.0.0.1-32\"]\nseeds = [\"tcp://10.0.0.7:5555\"]\nmdns = false\ntimeout = \"2s\"\nroster_ttl = \"2d\"\n[serve]\nbind = \"127.0.0.1\"\nauto_configure = true\nquiet_period = 3\nhttp = true\nmax_members = 3000\n";
        let config = ControllerConfig::parse(text, "troupe.toml").unwrap();
        assert_eq!(config.cluster, "lab");
        assert_eq!(config.probe, ["10.0.0.1-32"]);
        assert!(!config.mdns);
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.roster_ttl, Duration::from_secs(2 * 24 * 3600));
        assert_eq!(config.serve.bind, "127.0.0.1");
        assert_eq!(config.serve.quiet_period, Duration::from_secs(3));
        assert_eq!(config.serve.max_members, Some(3000));
        assert_eq!(config.serve.http, Some(default_dashboard_address()));
        let config =
            ControllerConfig::parse("[serve]\nhttp = \"10.0.0.1:80\"\n", "troupe.toml").unwrap();
        assert_eq!(config.serve.http, Some("10.0.0.1:80".parse().unwrap()));
        let err = ControllerConfig::parse("[serve]\nhttp = \"lab:80\"\n", "troupe.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("serve.http: expected ADDRESS:PORT"), "{err}");
        let config =
            ControllerConfig::parse("[serve]\nmetrics = \"127.0.0.1:9580\"\n", "troupe.toml")
                .unwrap();
        assert_eq!(
            config.serve.metrics,
            Some("127.0.0.1:9580".parse().unwrap())
        );
        let err = ControllerConfig::parse("[serve]\nmetrics = \"lab:9580\"\n", "troupe.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("serve.metrics: expected ADDRESS:PORT"),
            "{err}"
        );
    }

    #[test]
    fn problems_are_reported_together() {
        let err = ControllerConfig::parse(
            "mdns = \"maybe\"\nbogus = 1\n[serve]\ncontrol_port = -1\n",
            "troupe.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("troupe.toml: mdns: expected a boolean, got \"maybe\""),
            "{err}"
        );
        assert!(
            err.contains("troupe.toml: bogus: unknown key `bogus`"),
            "{err}"
        );
        assert!(
            err.contains(
                "troupe.toml: serve.control_port: expected an integer from 0 to 65535, got -1"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_mistyped_key_is_told_the_nearest_known_one_and_every_suggestion_is_a_key() {
        let err = ControllerConfig::parse("clustr = \"lab\"\n[serve]\nquiet_perod = 2\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.toml: clustr: unknown key `clustr`; did you mean `cluster`?"),
            "{err}"
        );
        assert!(err.contains("did you mean `quiet_period`?"), "{err}");
        for key in TOP_KEYS.into_iter().filter(|k| *k != "serve") {
            let err = ControllerConfig::parse(&format!("{key} = {{}}\n"), "t.toml").unwrap_err();
            assert!(!err.to_string().contains("unknown key"), "{key}: {err}");
        }
        for key in SERVE_KEYS {
            let err =
                ControllerConfig::parse(&format!("[serve]\n{key} = {{}}\n"), "t.toml").unwrap_err();
            assert!(!err.to_string().contains("unknown key"), "{key}: {err}");
        }
    }
}
