//! logs, log_files, log_file: a watcher's output, from its ring and from the files its config
//! names. They read only what the watcher's own config designates, never a path a client
//! gives.

use super::{watcher, AgentContext, Fields};
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use troupe::config::WatcherConfig;
use troupe::protocol::{
    CommandError, FieldError, LogFileInfo, LogFileReply, LogFileRequest, LogFilesReply,
    LogFilesRequest, LogStream, LogsRequest, Request,
};

pub async fn logs(ctx: &AgentContext, request: &Request) -> Fields {
    let request = LogsRequest::from_properties(&request.properties).map_err(invalid("logs"))?;
    let handle = watcher(ctx, &request.name).await?;
    reply_fields(&handle.ring.query(request).await?)
}

pub async fn log_files(ctx: &AgentContext, request: &Request) -> Fields {
    let request =
        LogFilesRequest::from_properties(&request.properties).map_err(invalid("log_files"))?;
    let config = watcher(ctx, &request.name).await?.view().config;
    let configured = LogStream::ALL
        .into_iter()
        .filter(|&stream| file_of(&config, stream, 0).is_some())
        .collect();
    let files = tokio::task::spawn_blocking(move || existing_files(&config))
        .await
        .map_err(|e| CommandError::os(format!("log_files: {e}")))?;
    reply_fields(&LogFilesReply { configured, files })
}

pub async fn log_file(ctx: &AgentContext, request: &Request) -> Fields {
    let request =
        LogFileRequest::from_properties(&request.properties).map_err(invalid("log_file"))?;
    let config = watcher(ctx, &request.name).await?.view().config;
    let Some(path) = file_of(&config, request.stream, request.backup) else {
        return Err(CommandError::message(format!(
            "log_file: watcher '{}' has no {} file{}: see log_files for those it has",
            config.name,
            request.stream.as_str(),
            match request.backup {
                0 => String::new(),
                n => format!(" backup .{n}"),
            }
        )));
    };
    let reply = tokio::task::spawn_blocking(move || read_chunk(&path, &request))
        .await
        .map_err(|e| CommandError::os(format!("log_file: {e}")))??;
    reply_fields(&reply)
}

/// The path of `stream`'s file (`backup` 0) or of its backup `.<backup>`, if the config names
/// a file and keeps that many backups.
fn file_of(config: &WatcherConfig, stream: LogStream, backup: u32) -> Option<PathBuf> {
    let output = match stream {
        LogStream::Stdout => config.stdout.as_ref(),
        LogStream::Stderr => config.stderr.as_ref(),
    }?;
    match backup {
        0 => Some(output.file.clone()),
        n if n <= output.backup_count => {
            let mut name = output.file.as_os_str().to_owned();
            name.push(format!(".{n}"));
            Some(name.into())
        }
        _ => None,
    }
}

/// The watcher's output files that exist, current first, then backups from `.1`. A file
/// both streams share is listed once, under stdout.
fn existing_files(config: &WatcherConfig) -> Vec<LogFileInfo> {
    let shared = matches!((&config.stdout, &config.stderr), (Some(o), Some(e)) if o.file == e.file);
    let mut files = Vec::new();
    for stream in LogStream::ALL {
        if shared && stream == LogStream::Stderr {
            continue;
        }
        let mut backup = 0;
        while let Some(path) = file_of(config, stream, backup) {
            if let Ok(meta) = std::fs::metadata(&path) {
                files.push(info(stream, backup, &path, &meta));
            }
            backup += 1;
        }
    }
    files
}

fn info(stream: LogStream, backup: u32, path: &Path, meta: &std::fs::Metadata) -> LogFileInfo {
    LogFileInfo {
        stream,
        backup,
        path: path.display().to_string(),
        size: meta.len(),
        id: format!("{}:{}", meta.dev(), meta.ino()),
        modified: meta.mtime() as f64 + f64::from(meta.mtime_nsec() as u32) / 1e9,
    }
}

/// Reads up to `request.length` bytes from `request.offset` (fewer at the end of the file).
fn read_chunk(path: &Path, request: &LogFileRequest) -> Result<LogFileReply, CommandError> {
    let fail = |e: std::io::Error| {
        CommandError::os(format!("log_file: cannot read {}: {e}", path.display()))
    };
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(CommandError::command(format!(
            "log_file: {} is not a regular file",
            path.display()
        )));
    }
    file.seek(SeekFrom::Start(request.offset)).map_err(fail)?;
    let mut bytes = Vec::new();
    file.take(request.length)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    Ok(LogFileReply::new(
        info(request.stream, request.backup, path, &meta),
        request.offset,
        &bytes,
    ))
}

fn invalid(command: &'static str) -> impl Fn(FieldError) -> CommandError {
    move |e| CommandError::message(format!("{command}: {e}"))
}

fn reply_fields(reply: &impl Serialize) -> Fields {
    match serde_json::to_value(reply) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Ok(Map::new()),
    }
}
