//! The `troupe` command line: every command and its flags (clap), parsed by `main.rs` and,
//! line by line, by `troupe shell`. Each command is run by the module named in its variant.

use crate::command::BroadcastFlags;
use crate::exit_code::Exit;
use crate::settings::{parse_duration, NodeFlags, Settings};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

/// Drive a cluster of troupe agents (and stock circusd nodes).
///
/// Any Circus command (status, start, stop, restart, reload, incr, decr, numprocesses, list,
/// signal, kill, get, set, options, add, rm, quit, ...) runs on every node:
/// `troupe status`, `troupe stop web --node 'db-*' --waiting`, `troupe incr web 2 --json`.
/// Exit codes: 0 all ok, 1 some node failed or timed out, 2 usage error (or a question not
/// answered yes), 3 no node reached.
///
/// `quit` stops agents and needs `--node`; commands that stop agents or wipe data on more
/// than one node ask first on a terminal (`--yes` for scripts).
#[derive(Parser, Debug)]
#[command(name = "troupe", version, allow_external_subcommands = true)]
pub struct Cli {
    /// Log filter: LEVEL or TARGET=LEVEL, comma-separated, e.g. info, debug. Env: TROUPE_LOG.
    #[arg(long, global = true, default_value = "warn", env = "TROUPE_LOG",
          value_parser = troupe::logging::parse_filter)]
    pub log_level: tracing_subscriber::filter::Targets,
    /// Cluster key file: every connection presents it and `serve` admits only its holders
    /// (overrides key_file in troupe.toml). Env: TROUPE_KEY_FILE.
    #[arg(long, global = true, env = "TROUPE_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Every `troupe` command: the one table that the CLI and `troupe shell` parse with.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the cluster's nodes: from a running `troupe serve`, or discovered on the spot.
    Nodes {
        /// How long to listen for mDNS answers (when no controller runs); probing is
        /// complete after one sweep.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        wait: Duration,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Remove NODE from the roster of nodes seen (kept without `troupe serve`, in the
        /// state dir), so it is no longer reported when it does not answer.
        #[arg(long, value_name = "NODE")]
        forget: Option<String>,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Run the controller: continuous discovery and membership, control socket 5558,
    /// stats 5559, events 5560.
    Serve(ServeArgs),
    /// Print the web dashboard's URL, with the access token derived from the cluster key
    /// (a secret: whoever opens it may start, stop and reset watchers).
    DashboardUrl {
        /// The dashboard's address (default: [serve] http of troupe.toml, else 127.0.0.1:5580).
        #[arg(long, value_name = "ADDR:PORT",
              value_parser = troupe::config::controller::parse_http_address)]
        http: Option<std::net::SocketAddr>,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Remember a probe range (and how many nodes to expect), e.g. `troupe cluster 192.168.0.1-32 32`.
    Cluster {
        range: String,
        count: Option<usize>,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Zero-setup first run: N agents on 127.0.0.2.. with sample watchers, discovery, a
    /// broadcast and stats; Ctrl-C stops everything. Sends no multicast.
    Demo {
        /// How many agents.
        #[arg(long, default_value_t = 3)]
        agents: u8,
        /// Address of the first agent (the others follow).
        #[arg(long, default_value = "127.0.0.2")]
        first_address: std::net::Ipv4Addr,
    },
    /// Push the peer list to every node (or --node ...) so each renders its service config.
    Configure {
        /// Restart watchers whose rendered files changed.
        #[arg(long)]
        restart: bool,
        /// Render and show, write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        broadcast: BroadcastFlags,
    },
    /// Stop WATCHER, wipe its data_dir contents, run its reset_hook, start it again.
    Reset {
        /// Watcher name or glob.
        watcher: String,
        #[command(flatten)]
        broadcast: BroadcastFlags,
    },
    /// The whole cycle: stop all -> (reset) -> configure -> start.
    Reconfigure {
        /// Also wipe every watcher's data_dir, for a clean repeat.
        #[arg(long)]
        reset: bool,
        #[command(flatten)]
        broadcast: BroadcastFlags,
    },
    /// CPU and memory of every process on every node: one snapshot (from a running
    /// `troupe serve`, else asked of each node), or with --since the history serve keeps.
    Stats(crate::stats_command::StatsArgs),
    Logs(crate::logs::LogsArgs),
    /// Live view of the whole cluster (q quits, c/m/a sort, / filters).
    Top {
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Interactive console: the same commands, with history and completion.
    Shell {
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Make a new cluster key: written to FILE (mode 0600, never over an existing file) or
    /// printed; its fingerprint is printed either way. Copy the file to every node.
    Keygen {
        /// Where to write the key (e.g. /var/lib/troupe/cluster.key).
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Print the troupe-agent.toml equivalent to a Circus ini (troupe-agent also runs the ini
    /// as it is: --config circus.ini).
    Import {
        /// The Circus ini (its include / include_dir files are read too).
        file: std::path::PathBuf,
    },
    /// Send one raw request to one control endpoint and print the JSON reply.
    Ctl {
        /// Control endpoint, e.g. tcp://127.0.0.1:5555.
        endpoint: String,
        /// Command name (status, list, start, nodeinfo, ...).
        command: String,
        /// Properties as a JSON object, e.g. '{"name": "web", "waiting": true}'.
        properties: Option<String>,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Print a shell completion script: commands and flags of troupe (or of troupe-agent,
    /// with --agent). Bash: `troupe completions bash > /etc/bash_completion.d/troupe`; zsh: a
    /// file `_troupe` in a directory of $fpath; fish: ~/.config/fish/completions/troupe.fish.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
        /// The script for troupe-agent instead of troupe.
        #[arg(long)]
        agent: bool,
    },
    /// Print the node or watcher names a running `troupe serve` sees, one per line: what the
    /// bash completion script asks (nothing without a serve).
    #[command(hide = true)]
    CompleteNames {
        kind: crate::docs::NameKind,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Write the man pages (troupe.1, troupe-SUBCOMMAND.1, troupe-agent.1) into DIR: what
    /// the package build runs.
    #[command(hide = true)]
    Man {
        dir: std::path::PathBuf,
    },
    /// Any Circus command (status, incr, stop, ...) with its arguments and troupe's flags:
    /// [`crate::command::run_words`] sends it to the nodes.
    #[command(external_subcommand)]
    Circus(Vec<String>),
}

/// `troupe` as completion scripts and man pages describe it: with the Circus commands.
pub fn documented_command() -> clap::Command {
    crate::docs::with_circus_commands(<Cli as clap::CommandFactory>::command())
}

/// `troupe serve`'s flags: each overrides its troupe.toml setting.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub flags: NodeFlags,
    /// Address to bind the controller's sockets on.
    #[arg(long)]
    pub bind: Option<String>,
    /// Control port (default 5558).
    #[arg(long)]
    pub port: Option<u16>,
    /// Events port (default 5560).
    #[arg(long)]
    pub events_port: Option<u16>,
    /// Stats port (default 5559): every member's stats, node-prefixed, for circus-top.
    #[arg(long)]
    pub stats_port: Option<u16>,
    /// Re-push `configure` when membership changes (debounced by --quiet-period).
    #[arg(long)]
    pub auto_configure: bool,
    /// Quiet time after the last membership change before an auto-configure push.
    #[arg(long, value_parser = parse_duration)]
    pub quiet_period: Option<Duration>,
    /// Serve the web dashboard on ADDR:PORT (default 127.0.0.1:5580). Beyond loopback
    /// only with a cluster key, whose token it then asks for (troupe dashboard-url).
    #[arg(long, value_name = "ADDR:PORT", num_args = 0..=1,
          default_missing_value = troupe::config::controller::DEFAULT_DASHBOARD_ADDRESS,
          value_parser = troupe::config::controller::parse_http_address)]
    pub http: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (the dashboard's port serves
    /// them too). Beyond loopback only with a cluster key; Prometheus then sends the
    /// dashboard token (troupe dashboard-url) as a Bearer token.
    #[arg(long, value_name = "ADDR:PORT",
          value_parser = troupe::config::controller::parse_http_address)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Most members the member table holds (default 1024); each takes up to 8 file
    /// descriptors, which serve checks it may open at start.
    #[arg(long, value_name = "N")]
    pub max_members: Option<usize>,
}

impl ServeArgs {
    /// The settings (troupe.toml, env, node flags) with these flags applied.
    pub fn settings(self) -> anyhow::Result<Settings> {
        let mut settings = self.flags.settings()?;
        let serve = &mut settings.config.serve;
        if let Some(bind) = self.bind {
            serve.bind = bind;
        }
        if let Some(port) = self.port {
            serve.control_port = port;
        }
        if let Some(port) = self.events_port {
            serve.events_port = port;
        }
        if let Some(port) = self.stats_port {
            serve.stats_port = port;
        }
        serve.auto_configure |= self.auto_configure;
        if let Some(quiet) = self.quiet_period {
            serve.quiet_period = quiet;
        }
        if self.http.is_some() {
            serve.http = self.http;
        }
        if self.metrics.is_some() {
            serve.metrics = self.metrics;
        }
        if self.max_members.is_some() {
            serve.max_members = self.max_members;
        }
        Ok(settings)
    }
}

/// Runs a command on a fresh runtime; an error is printed and exits as [`Exit::of_error`] says.
pub fn run_async(work: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    // A connection per node: a broadcast or serve with a few hundred nodes needs more than 1024.
    troupe::limits::raise_open_files();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("troupe: cannot start the runtime: {e}");
            return Exit::Usage.into();
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("troupe: {}", troupe::logging::error_chain(e.as_ref()));
            Exit::of_error(&e).into()
        }
    }
}
