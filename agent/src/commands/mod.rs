//! Command handlers: one function per Circus command (and troupe's own), grouped by concept.
//!
//! A handler returns the reply's fields; [`dispatch`] wraps them in Circus's envelope.

mod access;
mod configure;
mod inspect;
mod lifecycle;
mod logs;
mod manage;
mod options;
mod props;
mod reset;
mod signals;

pub use access::Caller;
pub use inspect::watch_addresses;
pub use manage::{apply_config, reload_key_file, stop_everything};

use crate::arbiter::ArbiterHandle;
use crate::events::EventSender;
use crate::sampler::Sampler;
use crate::watcher::WatcherHandle;
use props::Props;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use troupe::config::AgentSettings;
use troupe::protocol::{CommandError, Errno, Request};

/// Everything a command may touch. Cloned per request; all mutable state lives in actors.
#[derive(Clone)]
pub struct AgentContext {
    pub arbiter: ArbiterHandle,
    pub events: EventSender,
    pub sampler: Sampler,
    pub settings: Arc<AgentSettings>,
    pub node_id: String,
    /// Epoch seconds when the agent started.
    pub started: f64,
    /// The config file, re-read by `reloadconfig` and SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Set to true to make the agent stop its watchers and exit.
    pub shutdown: Arc<watch::Sender<bool>>,
    /// One `configure` or `reset` at a time: two controllers pushing at once would otherwise
    /// interleave their files, or wipe a data dir under a config being written.
    pub disk_changes: Arc<tokio::sync::Mutex<()>>,
    /// `ipc://<state_dir>/control.sock`, absolute: where the node's owner sends code-bearing
    /// commands.
    pub owner_endpoint: String,
    /// The keyring of the agent's listeners and connections, replaced when `reloadconfig`
    /// or SIGHUP finds a new one in the key file (rotation).
    pub server_keys: troupe::sockets::ServerKeys,
    /// The host's addresses for `nodeinfo`, kept fresh by a task ([`watch_addresses`]).
    pub addresses: watch::Receiver<Vec<String>>,
}

impl AgentContext {
    /// Waits for the turn to change files on disk (`configure`, `reset`), saying so in the log
    /// when another one holds it: a push that seems slow is queued, not lost.
    pub async fn disk_turn(&self, command: &str) -> tokio::sync::MutexGuard<'_, ()> {
        if let Ok(turn) = self.disk_changes.try_lock() {
            return turn;
        }
        tracing::info!("{command} waits for the configure or reset running before it");
        self.disk_changes.lock().await
    }
}

type Fields = Result<Map<String, Value>, CommandError>;

/// Runs one request and returns the reply fields.
pub async fn dispatch(ctx: &AgentContext, request: &mut Request, caller: Caller) -> Fields {
    let access = access::Access {
        allow_remote_exec: ctx.settings.allow_remote_exec,
        owner_endpoint: &ctx.owner_endpoint,
    };
    access::admit(request, caller, access)?;
    let props = Props(&request.properties);
    match request.command.as_str() {
        "add" => manage::add(ctx, props, caller).await,
        "rm" => manage::rm(ctx, props).await,
        "quit" => manage::quit(ctx, props).await,
        "reloadconfig" => manage::reloadconfig(ctx, props).await,
        "start" => lifecycle::start(ctx, props).await,
        "stop" => lifecycle::stop(ctx, props).await,
        "restart" => lifecycle::restart(ctx, props).await,
        "reload" => lifecycle::reload(ctx, props).await,
        "incr" => lifecycle::resize(ctx, props, 1, caller).await,
        "decr" => lifecycle::resize(ctx, props, -1, caller).await,
        "signal" => signals::signal(ctx, props).await,
        "kill" => signals::kill(ctx, props).await,
        "list" => inspect::list(ctx, props).await,
        "status" => inspect::status(ctx, props).await,
        "numprocesses" => inspect::numprocesses(ctx, props).await,
        "numwatchers" => inspect::numwatchers(ctx).await,
        "stats" => inspect::stats(ctx, props).await,
        "dstats" => inspect::dstats(ctx).await,
        "listsockets" => inspect::listsockets(),
        "nodeinfo" => inspect::nodeinfo(ctx).await,
        "configure" => configure::configure(ctx, request).await,
        "reset" => reset::reset(ctx, props).await,
        troupe::protocol::LOGS_COMMAND => logs::logs(ctx, request).await,
        troupe::protocol::LOG_FILES_COMMAND => logs::log_files(ctx, request).await,
        troupe::protocol::LOG_FILE_COMMAND => logs::log_file(ctx, request).await,
        "get" => options::get(ctx, props).await,
        "set" => options::set(ctx, props, caller).await,
        "options" => options::options(ctx, props).await,
        "globaloptions" => options::globaloptions(ctx, props),
        "listen" => Err(CommandError::message(
            "invalid message. use a pub/sub socket",
        )),
        "ipython" => Err(CommandError::command(
            "ipython is not supported by troupe-agent",
        )),
        other => Err(CommandError::new(
            Errno::UnknownCommand,
            format!("unknown command: '{other}'"),
        )),
    }
}

/// The watcher called `name` (case-insensitive), or Circus's "program X not found".
async fn watcher(ctx: &AgentContext, name: &str) -> Result<WatcherHandle, CommandError> {
    ctx.arbiter
        .get(name)
        .await?
        .ok_or_else(|| CommandError::message(format!("program {name} not found")))
}

/// Watchers matching `name` under `match` = simple | glob (default) | regex.
async fn matching(
    ctx: &AgentContext,
    props: Props<'_>,
) -> Result<Vec<WatcherHandle>, CommandError> {
    let name = props.required_str("name")?;
    let mode = props.opt_str("match")?.unwrap_or("glob");
    let all = ctx.arbiter.all().await?;
    let found: Vec<WatcherHandle> = match mode {
        "simple" => all
            .into_iter()
            .filter(|w| w.name.eq_ignore_ascii_case(name))
            .collect(),
        "glob" => {
            let pattern = glob::Pattern::new(&name.to_lowercase())
                .map_err(|e| CommandError::message(format!("invalid glob {name:?}: {e}")))?;
            all.into_iter()
                .filter(|w| pattern.matches(&w.name.to_lowercase()))
                .collect()
        }
        "regex" => {
            // Python's re.match: anchored at the start only, as circusd matches.
            let pattern = regex::RegexBuilder::new(&format!("^(?:{name})"))
                .case_insensitive(true)
                .build()
                .map_err(|e| CommandError::message(format!("invalid regex {name:?}: {e}")))?;
            all.into_iter()
                .filter(|w| pattern.is_match(&w.name))
                .collect()
        }
        other => {
            return Err(CommandError::message(format!(
                "'match' must be simple, glob or regex, got {other:?}"
            )))
        }
    };
    if found.is_empty() {
        return Err(CommandError::message(format!("program {name} not found")));
    }
    Ok(found)
}

/// Builds a reply-fields map from pairs.
fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
