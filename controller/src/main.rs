//! `troupe`: the controller CLI.

use clap::{Parser, Subcommand};
use serde_json::{Map, Value};
use std::process::ExitCode;
use std::time::Duration;
use troupe::client::{call, call_async, ClientError};
use troupe::discovery::parse_targets;
use troupe::protocol::Request;
use troupe_controller::command::{
    controller_answers, dispatch, report_locked, BroadcastFlags, ClusterLink, CLUSTER_SWEEP_TIMEOUT,
};
use troupe_controller::configure;
use troupe_controller::settings::{parse_duration, NodeFlags};
use troupe_controller::state::ControllerState;

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
struct Cli {
    /// Log filter: LEVEL or TARGET=LEVEL, comma-separated, e.g. info, debug. Env: TROUPE_LOG.
    #[arg(long, global = true, default_value = "warn", env = "TROUPE_LOG",
          value_parser = troupe::logging::parse_filter)]
    log_level: tracing_subscriber::filter::Targets,
    /// Cluster key file: every connection presents it and `serve` admits only its holders
    /// (overrides key_file in troupe.toml). Env: TROUPE_KEY_FILE.
    #[arg(long, global = true, env = "TROUPE_KEY_FILE", value_name = "FILE")]
    key_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    Serve {
        #[command(flatten)]
        flags: NodeFlags,
        /// Address to bind the controller's sockets on.
        #[arg(long)]
        bind: Option<String>,
        /// Control port (default 5558).
        #[arg(long)]
        port: Option<u16>,
        /// Events port (default 5560).
        #[arg(long)]
        events_port: Option<u16>,
        /// Stats port (default 5559): every member's stats, node-prefixed, for circus-top.
        #[arg(long)]
        stats_port: Option<u16>,
        /// Re-push `configure` when membership changes (debounced by --quiet-period).
        #[arg(long)]
        auto_configure: bool,
        /// Quiet time after the last membership change before an auto-configure push.
        #[arg(long, value_parser = parse_duration)]
        quiet_period: Option<Duration>,
        /// Serve the web dashboard on ADDR:PORT (default 127.0.0.1:5580). Beyond loopback
        /// only with a cluster key, whose token it then asks for (troupe dashboard-url).
        #[arg(long, value_name = "ADDR:PORT", num_args = 0..=1,
              default_missing_value = troupe::config::controller::DEFAULT_DASHBOARD_ADDRESS,
              value_parser = troupe::config::controller::parse_http_address)]
        http: Option<std::net::SocketAddr>,
        /// Serve Prometheus metrics at http://ADDR:PORT/metrics (the dashboard's port serves
        /// them too). Beyond loopback only with a cluster key; Prometheus then sends the
        /// dashboard token (troupe dashboard-url) as a Bearer token.
        #[arg(long, value_name = "ADDR:PORT",
              value_parser = troupe::config::controller::parse_http_address)]
        metrics: Option<std::net::SocketAddr>,
    },
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
    Stats(troupe_controller::stats::cli::StatsArgs),
    Logs(troupe_controller::logs::LogsArgs),
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
        kind: troupe_controller::docs::NameKind,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Write the man pages (troupe.1, troupe-SUBCOMMAND.1, troupe-agent.1) into DIR: what
    /// the package build runs.
    #[command(hide = true)]
    Man {
        dir: std::path::PathBuf,
    },
    #[command(external_subcommand)]
    Broadcast(Vec<String>),
}

/// `troupe` as completion scripts and man pages describe it: with the Circus commands.
fn documented_command() -> clap::Command {
    troupe_controller::docs::with_circus_commands(<Cli as clap::CommandFactory>::command())
}

/// Exit codes: 0 ok, 1 a node failed or did not reply, 2 usage or config error.
fn main() -> ExitCode {
    // `troupe agent ...` runs a troupe-agent from this binary (what `troupe demo` starts),
    // with the agent's own arguments and logging.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "agent") {
        let mut agent_argv = vec![std::ffi::OsString::from("troupe agent")];
        agent_argv.extend(argv.into_iter().skip(2));
        return troupe_agent::cli::main_with_args(agent_argv);
    }
    let cli = Cli::parse();
    troupe::logging::init(cli.log_level);
    if let Some(path) = &cli.key_file {
        if let Err(e) = troupe_controller::settings::use_key_file(path) {
            eprintln!("troupe: {}", troupe::logging::error_chain(e.as_ref()));
            return ExitCode::from(2);
        }
    }
    match cli.command {
        Command::Completions { shell, agent } => {
            let command = if agent {
                troupe_agent::cli::command()
            } else {
                documented_command()
            };
            let script = troupe_controller::docs::completions(shell, command);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("troupe completions: writing the script: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CompleteNames { kind, flags } => run_async(async move {
            let endpoint = flags.controller_endpoint();
            for name in troupe_controller::docs::names(kind, &endpoint).await {
                println!("{name}");
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Man { dir } => {
            let commands = vec![documented_command(), troupe_agent::cli::command()];
            match troupe_controller::docs::write_man_pages(commands, &dir) {
                Ok(pages) => {
                    println!("{} man pages written to {}", pages.len(), dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "troupe man: writing the man pages into {}: {e}",
                        dir.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Command::Keygen { out } => troupe_controller::keygen::run(out.as_deref()),
        Command::Import { file } => troupe_controller::import::run(&file),
        Command::Broadcast(words) => {
            let Some((command, rest)) = words.split_first() else {
                return ExitCode::from(2);
            };
            let (parsed, theirs) = match BroadcastFlags::parse_words(rest) {
                Ok(parsed) => parsed,
                Err(e) => {
                    let _ = e.print();
                    // 0 for --help, 2 for a usage error.
                    return ExitCode::from(e.exit_code().clamp(0, 2) as u8);
                }
            };
            let options = parsed.options();
            let command = command.clone();
            run_async(async move {
                troupe_controller::command::run(&command, &theirs, &options, &parsed.flags).await
            })
        }
        Command::Configure {
            restart,
            dry_run,
            broadcast,
        } => run_async(async move {
            let link = ClusterLink::connect(&broadcast.flags).await?;
            let cluster = broadcast.flags.settings()?.config.cluster;
            let nodes = link.nodes().await;
            let options = broadcast.options();
            let mut replies =
                configure::push_on(&link, &nodes, &cluster, &options, restart, dry_run).await?;
            troupe_controller::absent::apply_alive_only(&mut replies, options.alive_only);
            if replies.is_empty() {
                report_locked(&nodes, &options);
                let nobody = link.nobody(options.node.as_deref()).await;
                return Ok(ExitCode::from(troupe_controller::nobody::report(&nobody)));
            }
            if options.json {
                println!("{}", serde_json::to_string_pretty(&replies)?);
            } else {
                println!("{}", configure::render_configure(&replies, dry_run));
            }
            report_locked(&nodes, &options);
            let ok = replies.values().all(troupe_controller::broadcast::reply_ok);
            Ok(ExitCode::from(if ok { 0 } else { 1 }))
        }),
        Command::Reset { watcher, broadcast } => run_async(async move {
            let options = broadcast.options();
            let link = ClusterLink::connect(&broadcast.flags).await?;
            let mut props = Map::new();
            props.insert("name".into(), Value::String(watcher));
            props.insert("waiting".into(), Value::Bool(true));
            let request = Request::new("reset", props);
            Ok(ExitCode::from(dispatch(&link, &request, &options).await?))
        }),
        Command::Reconfigure { reset, broadcast } => run_async(async move {
            let link = ClusterLink::connect(&broadcast.flags).await?;
            let cluster = broadcast.flags.settings()?.config.cluster;
            let options = broadcast.options();
            let code = configure::run_reconfigure(&link, &cluster, &options, reset).await?;
            report_locked(&link.nodes().await, &options);
            Ok(ExitCode::from(code))
        }),
        Command::Stats(args) => run_async(troupe_controller::stats::cli::run(args)),
        Command::Logs(args) => run_async(troupe_controller::logs::run(args)),
        Command::Top { flags } => run_async(troupe_controller::top::run(flags)),
        Command::Shell { flags } => match troupe_controller::shell::run(flags) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("troupe shell: {}", troupe::logging::error_chain(e.as_ref()));
                ExitCode::from(2)
            }
        },
        Command::Demo {
            agents,
            first_address,
        } => run_async(async move {
            troupe_controller::demo::run(agents, first_address).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Ctl {
            endpoint,
            command,
            properties,
            timeout,
        } => ctl(&endpoint, &command, properties.as_deref(), timeout),
        Command::Nodes {
            forget: Some(name),
            flags,
            ..
        } => forget(&flags, &name),
        Command::Nodes {
            wait,
            json,
            flags,
            forget: None,
        } => run_async(async move {
            let link = ClusterLink::connect_listening(&flags, wait).await?;
            let (nodes, search) = link.census().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                println!("{}", troupe_controller::nodes::table(&nodes));
            }
            if nodes.is_empty() {
                let nobody = troupe_controller::nobody::why(&nodes, &search, None);
                eprintln!("troupe: {nobody}");
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Serve {
            flags,
            bind,
            port,
            events_port,
            stats_port,
            auto_configure,
            quiet_period,
            http,
            metrics,
        } => run_async(async move {
            let mut settings = flags.settings()?;
            if let Some(bind) = bind {
                settings.config.serve.bind = bind;
            }
            if let Some(port) = port {
                settings.config.serve.control_port = port;
            }
            if let Some(port) = events_port {
                settings.config.serve.events_port = port;
            }
            if let Some(port) = stats_port {
                settings.config.serve.stats_port = port;
            }
            settings.config.serve.auto_configure |= auto_configure;
            if let Some(quiet) = quiet_period {
                settings.config.serve.quiet_period = quiet;
            }
            if http.is_some() {
                settings.config.serve.http = http;
            }
            if metrics.is_some() {
                settings.config.serve.metrics = metrics;
            }
            troupe_controller::serve::run(settings).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::DashboardUrl { http, flags } => {
            let settings = match flags.settings() {
                Ok(settings) => settings,
                Err(e) => {
                    eprintln!("troupe: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let address = http
                .or(settings.config.serve.http)
                .unwrap_or_else(troupe::config::controller::default_dashboard_address);
            println!("{}", troupe_controller::dashboard::access::url(address));
            if troupe::sockets::client_keys().is_none() {
                eprintln!(
                    "troupe: no cluster key (--key-file, TROUPE_KEY_FILE, key_file in \
                     troupe.toml): the URL has no token, and a keyless dashboard answers on \
                     loopback only"
                );
            }
            ExitCode::SUCCESS
        }
        Command::Cluster {
            range,
            count,
            flags,
        } => run_async(async move {
            let targets = parse_targets(&range)?;
            targets.check_size(flags.force)?;
            let settings = flags.settings()?;
            let state = ControllerState {
                probe: vec![range.clone()],
                expect: count,
            };
            state.save(&settings.config.state_dir)?;
            let mut properties = Map::new();
            properties.insert("range".into(), Value::String(range.clone()));
            let endpoint = flags.controller_endpoint();
            let swept = if controller_answers(&endpoint).await {
                let reply = call_async(
                    &zmq::Context::new(),
                    &endpoint,
                    Request::new("cluster", properties),
                    CLUSTER_SWEEP_TIMEOUT,
                )
                .await?;
                if reply["status"] != "ok" {
                    anyhow::bail!(
                        "cluster: {range} remembered, but the running controller did not sweep \
                         it: {}",
                        reply["reason"].as_str().unwrap_or("no reason given")
                    );
                }
                Some(reply["alive"].as_u64().unwrap_or_default())
            } else {
                None
            };
            let expecting = count
                .map(|c| format!(", expecting {c}"))
                .unwrap_or_default();
            match swept {
                Some(alive) => println!(
                    "cluster: {range} ({} addresses) remembered; the running controller swept it: \
                     {alive} nodes alive{expecting}",
                    targets.len()
                ),
                None => println!(
                    "cluster: {range} ({} addresses) remembered{expecting}; no controller runs: \
                     commands probe it when they discover",
                    targets.len()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// Runs a command on a fresh runtime; errors print and exit 2 (usage or config).
/// `troupe nodes --forget NODE`: drops NODE from the roster of this cluster and search.
fn forget(flags: &NodeFlags, name: &str) -> ExitCode {
    let settings = match flags.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("troupe: {}", troupe::logging::error_chain(e.as_ref()));
            return ExitCode::from(2);
        }
    };
    let search = troupe_controller::nobody::Search::of(&settings, Default::default());
    let path = troupe_controller::roster::path(
        &settings.config.state_dir,
        &settings.config.cluster,
        &search.sources,
    );
    let now = troupe::protocol::now_epoch();
    let (mut roster, warning) =
        troupe_controller::roster::Roster::load(&path, settings.config.roster_ttl, now);
    if let Some(warning) = warning {
        eprintln!("troupe: {warning}");
    }
    let Some(entry) = roster.forget(name) else {
        let known: Vec<&str> = roster.nodes.keys().map(String::as_str).collect();
        eprintln!(
            "troupe: {name} is not in the roster of cluster '{}' searched by {} ({}); nothing              to forget",
            settings.config.cluster,
            search.describe(),
            if known.is_empty() {
                "it is empty".to_string()
            } else {
                format!("it holds {}", known.join(", "))
            }
        );
        return ExitCode::from(1);
    };
    if let Err(e) = roster.save(&path) {
        eprintln!("troupe: cannot write the roster {}: {e}", path.display());
        return ExitCode::from(1);
    }
    println!(
        "forgot {name} ({}, last seen {}): it is no longer reported when it does not answer",
        entry.endpoint.trim_start_matches("tcp://"),
        troupe_controller::absent::when(entry.last_seen, now)
    );
    ExitCode::SUCCESS
}

fn run_async(work: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    // A connection per node: a broadcast or serve with a few hundred nodes needs more than 1024.
    troupe::limits::raise_open_files();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("troupe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("troupe: {}", troupe::logging::error_chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

fn ctl(endpoint: &str, command: &str, properties: Option<&str>, timeout: f64) -> ExitCode {
    let properties = match parse_properties(properties) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("troupe ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(timeout) = Duration::try_from_secs_f64(timeout) else {
        eprintln!("troupe ctl: --timeout must be a positive number of seconds");
        return ExitCode::from(2);
    };
    match call(endpoint, Request::new(command, properties), timeout) {
        Ok(reply) => {
            println!("{reply}");
            if reply.get("status") == Some(&Value::String("error".into())) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e @ ClientError::Connect { .. }) => {
            eprintln!("troupe ctl: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("troupe ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_properties(text: Option<&str>) -> Result<Map<String, Value>, String> {
    let Some(text) = text else {
        return Ok(Map::new());
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("properties must be a JSON object, got {other}")),
        Err(e) => Err(format!("properties are not valid JSON: {e}")),
    }
}
