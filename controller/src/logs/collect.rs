//! `troupe logs --collect DIR [WATCHER...]`: what every node keeps of its watchers' output,
//! copied to `DIR/<node>/<watcher>.<stream>.log` (a rotated file `.1`, `.2`, ... after it),
//! with `DIR/manifest.json` listing node, watcher, stream, size, SHA-256 and time span of each.
//!
//! A stream whose config names a file is copied from the files (`log_files`, then `log_file`
//! in chunks of [`LOG_FILE_CHUNK_BYTES`]); a stream without one from the watcher's ring
//! (`logs`, read forward). Safe to run again: a file copy remembers which file it came from
//! (its device and inode, in `DIR/<node>/.collect-state.json`, written before any byte), so
//! an interrupted or repeated collect appends only what is new, and starts a copy afresh
//! when the node's file is another one (rotated, replaced) or shorter. The manifest holds no
//! time of the collect itself: collecting twice what did not change gives the same manifest.
//!
//! Node and watcher names come from the network: only names that pass
//! [`troupe::config::names::check_name`] become paths, others are skipped with a warning.

use super::LogCluster;
use crate::broadcast::BroadcastOptions;
use crate::broadcast::{select, Target};
use crate::exit_code::{EXIT_NODE_FAILED, EXIT_NOTHING_MATCHED};
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use troupe::bounds::{LOGS_MAX_LINES, LOG_FILE_CHUNK_BYTES};
use troupe::config::names::check_name;
use troupe::protocol::{
    LogFileInfo, LogFileReply, LogFileRequest, LogFilesReply, LogFilesRequest, LogStream,
    LogsReply, LogsRequest, Request, StreamSelection, LOGS_COMMAND, LOG_FILES_COMMAND,
    LOG_FILE_COMMAND,
};

/// The manifest's file name in DIR.
pub const MANIFEST: &str = "manifest.json";
/// Where a node's directory remembers the source of each copy.
const STATE: &str = ".collect-state.json";

/// One collected file, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub node: String,
    pub watcher: String,
    pub stream: LogStream,
    /// `file` (copied from the node's output file) or `ring` (the in-memory lines).
    pub source: String,
    /// 0 for the current file, n for its backup `.n`.
    pub backup: u32,
    /// Relative to DIR.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    /// Epoch seconds of the first and last line when known (a ring's lines carry their
    /// times; of a file, the last is its modification time).
    pub first: Option<f64>,
    pub last: Option<f64>,
}

/// `DIR/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<ManifestEntry>,
}

/// What was collected of one node, and what of it failed (per watcher: the others go on).
struct NodeCollect {
    copies: Vec<Copied>,
    problems: Vec<String>,
}

/// What one copy did, for the summary.
struct Copied {
    entry: ManifestEntry,
    /// The byte the copy went on from, when it resumed an earlier one.
    resumed_at: Option<u64>,
}

pub async fn run(
    cluster: &impl LogCluster,
    options: &BroadcastOptions,
    dir: &Path,
    watchers: &[String],
) -> anyhow::Result<ExitCode> {
    for watcher in watchers {
        if let Err(e) = check_name(watcher) {
            eprintln!("troupe logs --collect: watcher {e}; name watchers as the nodes do");
            return Ok(ExitCode::from(crate::exit_code::EXIT_USAGE));
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let nodes = alive_nodes(cluster, options).await?;
    if nodes.is_empty() {
        eprintln!("troupe logs --collect: no node matched; is the cluster up (troupe nodes)?");
        return Ok(ExitCode::from(EXIT_NOTHING_MATCHED));
    }
    let work = nodes
        .iter()
        .map(|node| collect_node(cluster, options, dir, node, watchers));
    let results = futures::future::join_all(work).await;
    let mut entries = Vec::new();
    let mut failed = false;
    for (node, result) in nodes.iter().zip(results) {
        match result {
            Ok(NodeCollect { copies, problems }) => {
                for problem in problems {
                    failed = true;
                    eprintln!("troupe logs --collect: {node}: {problem}; run it again to resume");
                }
                for copy in copies {
                    let resumed = copy
                        .resumed_at
                        .map(|at| format!(" (resumed at byte {at})"))
                        .unwrap_or_default();
                    println!("{}  {} bytes{resumed}", copy.entry.path, copy.entry.bytes);
                    entries.push(copy.entry);
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("troupe logs --collect: {node}: {e:#}; run it again to resume");
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest { files: entries };
    write_atomically(
        &dir.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    println!(
        "{} files from {} nodes in {} (manifest: {})",
        manifest.files.len(),
        nodes.len(),
        dir.display(),
        dir.join(MANIFEST).display()
    );
    Ok(ExitCode::from(if failed { EXIT_NODE_FAILED } else { 0 }))
}

/// The selected alive members' names that can be directory names.
async fn alive_nodes(
    cluster: &impl LogCluster,
    options: &BroadcastOptions,
) -> anyhow::Result<Vec<String>> {
    let mut alive = Vec::new();
    for member in cluster.members().await {
        if member["state"] != "alive" {
            continue;
        }
        let Some(name) = member["name"].as_str() else {
            continue;
        };
        if let Err(e) = check_name(name) {
            eprintln!("troupe logs --collect: skipping a node: {e}");
            continue;
        }
        alive.push(Target {
            name: name.to_string(),
            endpoint: String::new(),
        });
    }
    let mut names: Vec<String> = select(alive, options.node.as_deref())
        .map_err(|e| anyhow::anyhow!(e))?
        .into_iter()
        .map(|t| t.name)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Sends one request to `node` alone; its reply fields, or its reason as an error.
async fn ask(
    cluster: &impl LogCluster,
    options: &BroadcastOptions,
    node: &str,
    command: &str,
    properties: serde_json::Map<String, Value>,
) -> anyhow::Result<Value> {
    let one = BroadcastOptions {
        node: Some(node.to_string()),
        ..options.clone()
    };
    let mut replies = cluster
        .send(&Request::new(command, properties), &one)
        .await?;
    let reply = replies
        .remove(node)
        .ok_or_else(|| anyhow::anyhow!("did not answer {command} (did it leave?)"))?;
    if reply["status"] != "ok" {
        anyhow::bail!(
            "{command}: {}",
            reply["reason"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(reply)
}

async fn collect_node(
    cluster: &impl LogCluster,
    options: &BroadcastOptions,
    dir: &Path,
    node: &str,
    watchers: &[String],
) -> anyhow::Result<NodeCollect> {
    let watchers = if watchers.is_empty() {
        let reply = ask(cluster, options, node, "list", Default::default()).await?;
        let mut names = Vec::new();
        for name in reply["watchers"].as_array().into_iter().flatten() {
            match name.as_str().map(|n| (n, check_name(n))) {
                Some((n, Ok(()))) => names.push(n.to_string()),
                Some((_, Err(e))) => {
                    eprintln!("troupe logs --collect: {node}: skipping watcher {e}")
                }
                None => {}
            }
        }
        names
    } else {
        watchers.to_vec()
    };
    let node_dir = dir.join(node);
    std::fs::create_dir_all(&node_dir)
        .with_context(|| format!("creating {}", node_dir.display()))?;
    let mut state = CollectState::load(&node_dir);
    let mut copies = Vec::new();
    let mut problems = Vec::new();
    for watcher in &watchers {
        let copied = collect_watcher(cluster, options, &node_dir, node, watcher, &mut state);
        match copied.await {
            Ok(mut more) => copies.append(&mut more),
            Err(e) => problems.push(format!("{watcher}: {e:#}")),
        }
    }
    Ok(NodeCollect { copies, problems })
}

/// Every file and ring stream of one watcher of `node`.
async fn collect_watcher(
    cluster: &impl LogCluster,
    options: &BroadcastOptions,
    node_dir: &Path,
    node: &str,
    watcher: &str,
    state: &mut CollectState,
) -> anyhow::Result<Vec<Copied>> {
    let files = LogFilesRequest {
        name: watcher.to_string(),
    };
    let reply = ask(
        cluster,
        options,
        node,
        LOG_FILES_COMMAND,
        files.to_properties(),
    )
    .await?;
    let listing: LogFilesReply =
        serde_json::from_value(reply).context("log_files: not a log_files reply")?;
    let mut copies = Vec::new();
    for file in &listing.files {
        copies.push(copy_file(cluster, options, node_dir, node, watcher, file, state).await?);
    }
    for stream in LogStream::ALL {
        if !listing.configured.contains(&stream) {
            copies.push(copy_ring(cluster, options, node_dir, node, watcher, stream).await?);
        }
    }
    Ok(copies)
}

/// `<watcher>.<stream>.log`, then `.<backup>` for a rotated file.
fn local_name(watcher: &str, stream: LogStream, backup: u32) -> String {
    match backup {
        0 => format!("{watcher}.{}.log", stream.as_str()),
        n => format!("{watcher}.{}.log.{n}", stream.as_str()),
    }
}

async fn copy_file(
    cluster: &impl LogCluster,
    options: &BroadcastOptions,
    node_dir: &Path,
    node: &str,
    watcher: &str,
    file: &LogFileInfo,
    state: &mut CollectState,
) -> anyhow::Result<Copied> {
    let name = local_name(watcher, file.stream, file.backup);
    let path = node_dir.join(&name);
    let have = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let same_source = state.sources.get(&name) == Some(&file.id);
    let mut offset = if same_source && have <= file.size {
        have
    } else {
        0
    };
    let resumed_at = (offset > 0 && offset < file.size).then_some(offset);
    state.sources.insert(name.clone(), file.id.clone());
    state.save(node_dir)?;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    out.set_len(offset)?;
    std::io::Seek::seek(&mut out, std::io::SeekFrom::Start(offset))?;
    let mut modified = file.modified;
    while offset < file.size {
        let request = LogFileRequest {
            name: watcher.to_string(),
            stream: file.stream,
            backup: file.backup,
            offset,
            length: LOG_FILE_CHUNK_BYTES.min(file.size - offset),
        };
        let reply = ask(
            cluster,
            options,
            node,
            LOG_FILE_COMMAND,
            request.to_properties(),
        )
        .await?;
        let chunk: LogFileReply = serde_json::from_value(reply)
            .with_context(|| format!("log_file of {watcher}: not a log_file reply"))?;
        if chunk.file.id != file.id {
            anyhow::bail!("{} was rotated or replaced while it was copied", file.path);
        }
        let bytes = chunk.bytes()?;
        if bytes.is_empty() {
            break;
        }
        out.write_all(&bytes)?;
        offset += bytes.len() as u64;
        modified = chunk.file.modified;
    }
    out.sync_all()?;
    drop(out);
    Ok(Copied {
        entry: entry(
            node,
            watcher,
            file.stream,
            "file",
            file.backup,
            &path,
            None,
            Some(modified),
        )?,
        resumed_at,
    })
}

/// The ring's lines of `stream`, rewritten whole: `<time> [<pid>] | <line>` as the agent
/// writes files, the time in UTC to the microsecond.
async fn copy_ring(
    cluster: &impl LogCluster,
    options: &BroadcastOptions,
    node_dir: &Path,
    node: &str,
    watcher: &str,
    stream: LogStream,
) -> anyhow::Result<Copied> {
    let mut text = Vec::new();
    let (mut first, mut last) = (None, None);
    let mut offset = 0;
    loop {
        let request = LogsRequest {
            stream: match stream {
                LogStream::Stdout => StreamSelection::Stdout,
                LogStream::Stderr => StreamSelection::Stderr,
            },
            lines: LOGS_MAX_LINES,
            offset: Some(offset),
            ..LogsRequest::new(watcher)
        };
        let reply = ask(
            cluster,
            options,
            node,
            LOGS_COMMAND,
            request.to_properties(),
        )
        .await?;
        let reply: LogsReply = serde_json::from_value(reply)
            .with_context(|| format!("logs of {watcher}: not a logs reply"))?;
        if reply.lines.is_empty() || reply.offset <= offset {
            break;
        }
        for line in &reply.lines {
            first.get_or_insert(line.time);
            last = Some(line.time);
            let time = chrono::DateTime::from_timestamp_micros((line.time * 1e6) as i64)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ");
            let end = if line.cut { "" } else { "\n" };
            let _ = write!(text, "{time} [{}] | {}{end}", line.pid, line.line);
        }
        offset = reply.offset;
    }
    let path = node_dir.join(local_name(watcher, stream, 0));
    write_atomically(&path, &text)?;
    Ok(Copied {
        entry: entry(node, watcher, stream, "ring", 0, &path, first, last)?,
        resumed_at: None,
    })
}

#[allow(clippy::too_many_arguments)]
fn entry(
    node: &str,
    watcher: &str,
    stream: LogStream,
    source: &str,
    backup: u32,
    path: &Path,
    first: Option<f64>,
    last: Option<f64>,
) -> anyhow::Result<ManifestEntry> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sha256 = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(ManifestEntry {
        node: node.to_string(),
        watcher: watcher.to_string(),
        stream,
        source: source.to_string(),
        backup,
        path: format!("{node}/{name}"),
        bytes: bytes.len() as u64,
        sha256,
        first,
        last,
    })
}

/// Which node file each local copy came from (local name -> device:inode).
#[derive(Debug, Default, Serialize, Deserialize)]
struct CollectState {
    sources: BTreeMap<String, String>,
}

impl CollectState {
    /// The state in `node_dir`; a missing or unreadable one means nothing is known (every
    /// copy starts afresh).
    fn load(node_dir: &Path) -> CollectState {
        std::fs::read(node_dir.join(STATE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn save(&self, node_dir: &Path) -> anyhow::Result<()> {
        write_atomically(&node_dir.join(STATE), &serde_json::to_vec_pretty(self)?)
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, so an
/// interrupted write never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut temporary = PathBuf::from(path);
    temporary.as_mut_os_string().push(".partial");
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}
