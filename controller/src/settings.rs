//! Effective controller settings: `troupe.toml`, then the environment, then flags.

use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use troupe::config::controller::ControllerConfig;
use troupe::discovery::{parse_targets, ProbeTargets};

/// Flags shared by every command that talks to nodes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeFlags {
    /// IP range to probe, e.g. 192.168.0.1-32, 10.0.0.0/24, host:port (repeatable).
    #[arg(long = "probe", value_name = "RANGE")]
    pub probe: Vec<String>,
    /// Probe ranges larger than a /16.
    #[arg(long)]
    pub force: bool,
    /// Turn off multicast discovery (mDNS and Circus UDP). Env: TROUPE_MDNS=off.
    #[arg(long)]
    pub no_mdns: bool,
    /// A running `troupe serve` to use instead of discovering on the spot.
    #[arg(long, env = "TROUPE_CONTROLLER", value_name = "ENDPOINT")]
    pub controller: Option<String>,
    /// Config file (default: troupe.toml here, then the user's config dir). Env: TROUPE_CONFIG.
    #[arg(long, env = "TROUPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Cluster name (only agents of this cluster are adopted).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Controller state dir (remembered `troupe cluster` ranges, the roster of nodes seen).
    /// Env: TROUPE_STATE_DIR.
    #[arg(long, env = "TROUPE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// What discovery and the commands use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: ControllerConfig,
    pub probe: ProbeTargets,
    pub seeds: ProbeTargets,
    pub multicast: bool,
    pub expect: Option<usize>,
}

/// Makes every connection of this process present the cluster key in `path`, unless a key
/// was installed already (`--key-file` and `TROUPE_KEY_FILE` are read first, in `main`).
pub fn use_key_file(path: &std::path::Path) -> anyhow::Result<()> {
    if troupe::sockets::client_keys().is_some() {
        return Ok(());
    }
    let keyring = troupe::cluster_key::Keyring::load(path)?;
    tracing::debug!(fingerprint = %keyring.fingerprint(), file = %path.display(), "cluster key");
    troupe::sockets::install_client_keyring(&keyring);
    let _ = KEY_FILE.set(path.to_path_buf());
    Ok(())
}

/// The key file [`use_key_file`] read, which `troupe serve` reads again on SIGHUP.
static KEY_FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The key file this process took its keyring from, if any.
pub fn key_file_in_use() -> Option<&'static std::path::Path> {
    KEY_FILE.get().map(|path| path.as_path())
}

impl NodeFlags {
    /// These flags, with what they leave unset taken from `session` (the flags `troupe shell`
    /// was started with, for a command typed in it).
    pub fn within(self, session: &NodeFlags) -> NodeFlags {
        NodeFlags {
            probe: match self.probe.is_empty() {
                true => session.probe.clone(),
                false => self.probe,
            },
            force: self.force || session.force,
            no_mdns: self.no_mdns || session.no_mdns,
            controller: self.controller.or_else(|| session.controller.clone()),
            config: self.config.or_else(|| session.config.clone()),
            cluster: self.cluster.or_else(|| session.cluster.clone()),
            state_dir: self.state_dir.or_else(|| session.state_dir.clone()),
        }
    }

    /// Reads the config file, the environment and the remembered state, then applies flags.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut config = match self.config_file() {
            Some(path) => ControllerConfig::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?,
            None => ControllerConfig::default(),
        };
        if let Some(cluster) = &self.cluster {
            troupe::config::names::check_name(cluster)
                .map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
            config.cluster = cluster.clone();
        }
        if let Some(dir) = &self.state_dir {
            config.state_dir = dir.clone();
        }
        if let Some(path) = &config.key_file {
            use_key_file(path)?;
        }
        let state = crate::state::ControllerState::load(&config.state_dir)?;
        let mut ranges: Vec<String> = config.probe.clone();
        ranges.extend(state.probe.iter().cloned());
        if let Ok(env) = std::env::var("TROUPE_PROBE") {
            ranges.extend(
                env.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
        ranges.extend(self.probe.iter().cloned());
        let mut probe = ProbeTargets::default();
        for range in &ranges {
            probe.append(parse_targets(range)?);
        }
        probe.check_size(self.force)?;
        let mut seeds = ProbeTargets::default();
        for seed in &config.seeds {
            let seed = seed.trim_start_matches("tcp://");
            seeds.append(parse_targets(seed).with_context(|| format!("seed {seed:?}"))?);
        }
        let env_off = std::env::var("TROUPE_MDNS").is_ok_and(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "off" | "0" | "false" | "no"
            )
        });
        let multicast = config.mdns && !self.no_mdns && !env_off;
        Ok(Settings {
            config,
            probe,
            seeds,
            multicast,
            expect: state.expect,
        })
    }

    fn config_file(&self) -> Option<PathBuf> {
        if let Some(path) = &self.config {
            return Some(path.clone());
        }
        let here = PathBuf::from("troupe.toml");
        if here.exists() {
            return Some(here);
        }
        let user = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?
            .join("troupe/troupe.toml");
        user.exists().then_some(user)
    }

    /// The controller endpoint to try first.
    pub fn controller_endpoint(&self) -> String {
        self.controller.clone().unwrap_or_else(|| {
            format!(
                "tcp://127.0.0.1:{}",
                troupe::config::controller::DEFAULT_CONTROLLER_PORT
            )
        })
    }
}

/// Parses "2s", "500ms" or plain seconds for `--wait`/`--timeout`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    troupe::config::value::read_duration(&serde_json::Value::String(text.to_string()))
        .map_err(|e| e.to_string())
}
