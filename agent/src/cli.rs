//! The agent's command line, shared by `troupe-agent` and the hidden `troupe agent` (which
//! lets `troupe demo` run agents from the one `troupe` binary).

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::filter::Targets;
use troupe::config::AgentConfig;

/// A Circus-compatible process supervisor: one per node, driven by `troupe` or `circusctl`.
#[derive(Parser, Debug)]
#[command(name = "troupe-agent", version, disable_version_flag = true)]
struct Args {
    /// Print the version (with --verbose: libzmq's CURVE support and the cluster key in use).
    #[arg(short = 'V', long)]
    version: bool,
    /// With --version: also libzmq's CURVE support and the cluster key's fingerprint.
    #[arg(long, requires = "version")]
    verbose: bool,
    /// Cluster key file (overrides [agent] key_file; default <state_dir>/cluster.key when
    /// present). Env: TROUPE_KEY_FILE.
    #[arg(long, env = "TROUPE_KEY_FILE", value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Config file (TOML). Without one the agent supervises nothing until told.
    #[arg(short, long, env = "TROUPE_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Node name (overrides [agent] name).
    #[arg(long)]
    name: Option<String>,
    /// Address to bind the sockets on (overrides [agent] bind).
    #[arg(long)]
    bind: Option<String>,
    /// Validate the config (this FILE, or --config), print every problem, and exit.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check: Option<Option<PathBuf>>,
    /// Log filter: LEVEL or TARGET=LEVEL, comma-separated, e.g. info, debug, info,troupe_agent=trace.
    #[arg(long, default_value = "info", env = "TROUPE_LOG", value_parser = troupe::logging::parse_filter)]
    log_level: Targets,
}

/// The agent's command line, for completion scripts and the man page.
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}

/// Parses `argv` (program name first) and runs the agent; returns the exit code.
pub fn main_with_args<I, T>(argv: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::parse_from(argv);
    if args.version {
        return print_version(&args);
    }
    if let Some(check) = &args.check {
        let path = check.clone().or_else(|| args.config.clone());
        let Some(path) = path else {
            eprintln!("troupe-agent: --check needs a FILE (or --config FILE)");
            return ExitCode::from(2);
        };
        return match AgentConfig::load(&path) {
            Ok(config) => {
                let warnings = config.warnings();
                for warning in &warnings {
                    eprintln!(
                        "{}: {}: warning: {}",
                        path.display(),
                        warning.key,
                        warning.message
                    );
                }
                println!(
                    "{}: ok ({} watcher{}, {} warning{})",
                    path.display(),
                    config.watchers.len(),
                    if config.watchers.len() == 1 { "" } else { "s" },
                    warnings.len(),
                    if warnings.len() == 1 { "" } else { "s" },
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        };
    }
    troupe::logging::init(args.log_level);
    let mut config = match &args.config {
        Some(path) => match AgentConfig::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => AgentConfig::default(),
    };
    if let Some(name) = args.name {
        if let Err(e) = troupe::config::names::check_name(&name) {
            eprintln!("troupe-agent: --name: {e}");
            return ExitCode::from(2);
        }
        config.agent.name = name;
    }
    if let Some(bind) = args.bind {
        config.agent.bind = bind;
    }
    if let Some(key_file) = args.key_file {
        config.agent.key_file = Some(key_file);
    }
    one_malloc_arena();
    // One thread, as circusd's event loop: every request is served without a hop between
    // threads (status p50 0.08-0.10 ms against 0.12 ms on the multi-threaded runtime), and a
    // 64-core node does not get 64 idle workers. Blocking work (sampling /proc, writing
    // configs, wiping data dirs, opening log files) goes to tokio's blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime");
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("troupe-agent: {}", troupe::logging::error_chain(e.as_ref()));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("troupe-agent: {}", troupe::logging::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// `--version`, and with `--verbose` what secures the sockets: whether libzmq was built with
/// CURVE, and the fingerprint of the cluster key the agent would use (never the key).
fn print_version(args: &Args) -> ExitCode {
    println!("troupe-agent {}", env!("CARGO_PKG_VERSION"));
    if !args.verbose {
        return ExitCode::SUCCESS;
    }
    let (major, minor, patch) = zmq::version();
    let curve = zmq::has("curve") == Some(true);
    println!(
        "libzmq {major}.{minor}.{patch}, CURVE: {}",
        if curve { "yes" } else { "no" }
    );
    let mut settings = match &args.config {
        Some(path) => match AgentConfig::load(path) {
            Ok(config) => config.agent,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => troupe::config::AgentSettings::default(),
    };
    if let Some(key_file) = &args.key_file {
        settings.key_file = Some(key_file.clone());
    }
    match settings.key_file_in_use() {
        None => println!("cluster key: none (the TCP sockets are open to anyone who reaches them)"),
        Some(path) => match troupe::cluster_key::Keyring::load(&path) {
            Ok(keyring) => println!(
                "cluster key: fingerprint {} ({} key{} in {})",
                keyring.fingerprint(),
                keyring.keys().len(),
                if keyring.keys().len() == 1 { "" } else { "s" },
                path.display()
            ),
            Err(e) => {
                eprintln!("troupe-agent: {e}");
                return ExitCode::from(2);
            }
        },
    }
    ExitCode::SUCCESS
}

/// glibc gives each thread that allocates an arena of its own (here ZeroMQ's I/O thread and
/// tokio's blocking threads), each with its own free lists and slack: about 130 KB of the
/// agent's resident memory for no gain, as these threads allocate little and rarely at once.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
