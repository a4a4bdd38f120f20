//! `configure`: renders each watcher's profile and templates against the peer list sent by
//! the controller, then writes the files atomically.
//!
//! Rendering ([`render_all`]) is pure: config and peer list in, texts out, every file of every
//! watcher rendered before anything is written, so one bad template leaves the disk untouched.
//! Writing ([`write`]) stages every file next to its destination first and renames only when
//! all are staged.

mod context;
pub mod escape;
#[cfg(test)]
mod java_properties;
mod profiles;
pub mod write;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use troupe::config::WatcherConfig;
use troupe::protocol::PeerList;

pub use context::knobs_for;

/// A user template larger than this is refused before it is read whole.
pub const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// What rendering needs besides the watchers and the peer list.
#[derive(Debug, Clone, Default)]
pub struct RenderInputs {
    /// The agent's state dir: profile files default to `<state_dir>/<watcher>`.
    pub state_dir: PathBuf,
    /// The directory of the agent's config file: relative template sources start there.
    pub config_dir: Option<PathBuf>,
    /// The agent's environment; the watcher's `env` is laid over it for `env`.
    pub env: BTreeMap<String, String>,
}

/// One rendered file, not yet written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub watcher: String,
    /// The template it came from (a source path, or `profile:NAME/FILE.j2`).
    pub template: String,
    pub path: PathBuf,
    pub text: String,
    /// Mode the template asks for; None keeps the existing file's.
    pub mode: Option<u32>,
}

/// Why a template could not be rendered or written: which, where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("watcher '{watcher}': template {template}{}: {cause}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct TemplateError {
    pub watcher: String,
    pub template: String,
    pub line: Option<usize>,
    pub cause: String,
}

/// Where a watcher's profile files go: `profile_dir`, else its working_dir, else
/// `<state_dir>/<watcher>`.
pub fn profile_dir(watcher: &WatcherConfig, state_dir: &Path) -> PathBuf {
    watcher
        .service
        .profile_dir
        .clone()
        .or_else(|| watcher.working_dir.clone())
        .unwrap_or_else(|| state_dir.join(&watcher.name))
}

/// The env file `watcher`'s profile writes for its service (etcd's `etcd.env`): what the
/// watcher's processes read when it sets no `env_file` of its own.
pub fn profile_env_file(watcher: &WatcherConfig, state_dir: &Path) -> Option<PathBuf> {
    let name = profiles::env_file(watcher.service.profile?)?;
    Some(profile_dir(watcher, state_dir).join(name))
}

/// Renders every file of every watcher that declares a profile or templates, in watcher
/// order. Fails on the first error, having written nothing.
pub fn render_all(
    watchers: &[WatcherConfig],
    peers: &Arc<PeerList>,
    inputs: &RenderInputs,
) -> Result<Vec<RenderedFile>, TemplateError> {
    let env = environment();
    let mut files: Vec<RenderedFile> = Vec::new();
    let mut owners: HashMap<PathBuf, (String, String)> = HashMap::new();
    for watcher in watchers.iter().filter(|w| w.service.renders()) {
        for file in render_watcher(&env, watcher, peers, inputs)? {
            if let Some((other_watcher, other_template)) = owners.get(&file.path) {
                return Err(TemplateError {
                    watcher: file.watcher,
                    template: file.template,
                    line: None,
                    cause: format!(
                        "dest {} is also written by template {other_template} of watcher '{other_watcher}'",
                        file.path.display()
                    ),
                });
            }
            owners.insert(
                file.path.clone(),
                (file.watcher.clone(), file.template.clone()),
            );
            files.push(file);
        }
    }
    Ok(files)
}

/// The template environment: an undefined variable is an error (never an empty string),
/// block tags eat their own line, a file keeps its final newline, nothing is escaped but
/// what a format filter ([`escape`]) is applied to. A user
/// template is named by its path, so `{% include "common.j2" %}` (or import, extends) reads
/// `common.j2` beside it; an absolute name is read as is.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    escape::register(&mut env);
    env.set_path_join_callback(|name, parent| match Path::new(parent).parent() {
        Some(dir) if !Path::new(name).is_absolute() => dir.join(name).display().to_string().into(),
        _ => name.into(),
    });
    env.set_loader(|name| {
        let path = Path::new(name);
        if !path.exists() {
            return Ok(None);
        }
        read_source(path)
            .map(Some)
            .map_err(|cause| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, cause))
    });
    env
}

fn render_watcher(
    env: &Environment<'static>,
    watcher: &WatcherConfig,
    peers: &Arc<PeerList>,
    inputs: &RenderInputs,
) -> Result<Vec<RenderedFile>, TemplateError> {
    let dir = profile_dir(watcher, &inputs.state_dir);
    let service = &watcher.service;
    let defaults = service
        .profile
        .map(|p| profiles::defaults(p, &dir, &service.data_dirs, &peers.cluster))
        .unwrap_or_default();
    let ctx = context::build(watcher, peers, &dir, &defaults, &inputs.env);
    let fail = |template: &str, line: Option<usize>, cause: String| TemplateError {
        watcher: watcher.name.clone(),
        template: template.to_string(),
        line,
        cause,
    };
    // `name` is what errors call it; `path` what includes start from.
    let render = |name: &str, path: &str, source: &str| {
        env.render_named_str(path, source, &ctx)
            .map_err(|e| fail(name, e.line(), describe(&e)))
    };
    let mut files = Vec::new();
    if let Some(profile) = service.profile {
        let own = knobs_for(
            &peers.me.name,
            Some(profile),
            &defaults,
            &service.profile_options,
        );
        for file in profiles::files(profile, &own, &dir) {
            files.push(RenderedFile {
                watcher: watcher.name.clone(),
                text: render(&file.template, &file.template, file.source)?,
                template: file.template,
                path: file.dest,
                mode: None,
            });
        }
    }
    for template in &service.templates {
        let name = template.source.display().to_string();
        let source = resolve_source(watcher, &template.source, inputs)
            .map_err(|cause| fail(&name, None, cause))?;
        let text = read_source(&source).map_err(|cause| fail(&name, None, cause))?;
        files.push(RenderedFile {
            watcher: watcher.name.clone(),
            text: render(&name, &source.display().to_string(), &text)?,
            template: name,
            path: dir.join(&template.dest),
            mode: template.mode,
        });
    }
    Ok(files)
}

/// minijinja's error without its "(in template:line)" suffix, which the caller reports.
fn describe(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    }
}

/// A relative source is taken from the config file's directory, else the working_dir.
fn resolve_source(
    watcher: &WatcherConfig,
    source: &Path,
    inputs: &RenderInputs,
) -> Result<PathBuf, String> {
    if source.is_absolute() {
        return Ok(source.to_path_buf());
    }
    inputs
        .config_dir
        .as_ref()
        .or(watcher.working_dir.as_ref())
        .map(|base| base.join(source))
        .ok_or_else(|| {
            "a relative source needs a config file or a working_dir to start from".to_string()
        })
}

fn read_source(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read source {shown}: {e}"))?
        .len();
    if size > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "source {shown} is {size} bytes, over the limit of {MAX_TEMPLATE_BYTES}"
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read source {shown}: {e}"))
}

#[cfg(test)]
mod tests;
