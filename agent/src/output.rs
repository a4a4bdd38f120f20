//! Capture of watcher processes' output: into the watcher's ring ([`crate::log_ring`]) and,
//! where the config names them, into files with size rotation.

use crate::log_ring::LogRingHandle;
use chrono::format::{Item, StrftimeItems};
use std::io::{self, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::fs::File;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use troupe::config::OutputConfig;
use troupe::protocol::LogStream;

/// Longest piece of a line written as one record: a process that never prints a newline
/// must not make the agent buffer without bound.
const MAX_LINE: usize = 64 * 1024;

/// Records queued for the writer before capturing tasks wait: a flood of output slows the
/// readers (and, through the full pipe, the process) instead of growing memory.
const QUEUE: usize = 1024;

/// Most records written between two flushes, so a steady flood still reaches the OS and a
/// replaced or deleted file is still noticed.
const BATCH: usize = 256;

/// What the capturing tasks and `flush` ask of the writer, served in order.
enum Command {
    /// One prefixed line, newline included, written in one piece so that lines of several
    /// streams sharing the file never interleave.
    Record(Vec<u8>),
    /// Answered once every earlier record is flushed to the OS.
    Flush(oneshot::Sender<()>),
}

/// One output file; clones share it. The file is owned by a single writer task, which
/// ends once every clone (including the ones running captures hold until their EOF) is
/// dropped and the queue is written.
#[derive(Clone)]
pub struct OutputLog {
    tx: mpsc::Sender<Command>,
    /// `time_format`, parsed once at `open` (so a bad format is reported there, not per line).
    time_format: Arc<[Item<'static>]>,
}

impl OutputLog {
    /// Creates parent dirs, opens the file for append, spawns the writer task (must be called inside a tokio runtime).
    ///
    /// Fails with `InvalidInput` if `time_format` is not a valid strftime format, and
    /// (rather than panicking) if there is no current tokio runtime.
    pub fn open(config: &OutputConfig) -> io::Result<OutputLog> {
        let time_format = StrftimeItems::new(&config.time_format)
            .parse_to_owned()
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid time_format {:?}: {e}", config.time_format),
                )
            })?;
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let out = open_file(&config.file, false)?;
        let writer = Writer {
            path: config.file.clone(),
            max_bytes: config.max_bytes,
            backup_count: config.backup_count,
            out: Some(out),
            failing: false,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        runtime.spawn(writer.run(rx));
        Ok(OutputLog {
            tx,
            time_format: time_format.into(),
        })
    }

    /// Resolves once everything handed to the writer before this call is written and flushed to the OS.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// Hands one line (newline included) to the writer; false once the writer is gone.
    async fn write(&self, pid: u32, line: &[u8]) -> bool {
        let record = self.record(pid, line);
        self.tx.send(Command::Record(record)).await.is_ok()
    }

    /// `line` behind its `<time> [<pid>] | ` prefix; as written with an empty `time_format`
    /// (Circus's FileStream without one).
    fn record(&self, pid: u32, line: &[u8]) -> Vec<u8> {
        if self.time_format.is_empty() {
            return line.to_vec();
        }
        let mut record = Vec::with_capacity(line.len() + 48);
        let time = chrono::Local::now().format_with_items(self.time_format.iter());
        // Writing into a Vec cannot fail, and the format was validated by `open`.
        let _ = write!(record, "{time} [{pid}] | ");
        record.extend_from_slice(line);
        record
    }
}

/// Where one output stream of one process goes.
pub struct Sinks {
    /// The file the config names for it, if any.
    pub file: Option<OutputLog>,
    /// The watcher's ring, and which stream this is.
    pub ring: Option<(LogRingHandle, LogStream)>,
    /// The agent's own stderr, where an uncaptured process writes: for a stderr read only
    /// for its last line (a stop reason quotes the error that made the process exit).
    pub agent_stderr: bool,
}

/// Spawns a task that reads `stream` until EOF and hands every line to the sinks: to the file
/// prefixed `<local time in time_format> [<pid>] | ` (Circus's format, e.g.
/// `2026-11-22 23:14:34 [3822] | hi 1`), to the ring as a line with time, pid and stream.
/// The returned JoinHandle completes only after all of this stream's lines were handed over,
/// with the stream's last non-blank line (for a stop reason).
pub fn capture<R: AsyncRead + Unpin + Send + 'static>(
    pid: u32,
    stream: R,
    sinks: Sinks,
) -> JoinHandle<Option<String>> {
    tokio::spawn(read_lines(pid, stream, sinks))
}

/// The body of `capture`. A read error ends the capture like EOF (after a warning), since a
/// pipe that failed once will not recover; so does every sink going away.
async fn read_lines<R: AsyncRead + Unpin>(pid: u32, stream: R, sinks: Sinks) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut last = None;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await;
        if let Err(e) = &read {
            tracing::warn!(pid, "reading process output failed: {e}");
        }
        if line.is_empty() {
            break;
        }
        let mut cut = false;
        if line.last() != Some(&b'\n') {
            // A line cut at MAX_LINE whose newline comes right after the cut takes it
            // along, rather than leaving it to show up as an empty line.
            cut = line.len() == MAX_LINE;
            if cut && read.is_ok() {
                if let Ok([b'\n', ..]) = reader.fill_buf().await {
                    reader.consume(1);
                    cut = false;
                }
            }
            line.push(b'\n');
        }
        let start = &line[..line.len().min(troupe::protocol::LAST_OUTPUT_MAX * 2)];
        if let Some(kept) = troupe::protocol::last_line(&String::from_utf8_lossy(start)) {
            last = Some(kept);
        }
        let mut kept = false;
        if let Some(file) = &sinks.file {
            kept |= file.write(pid, &line).await;
        }
        if let Some((ring, stream)) = &sinks.ring {
            kept |= ring.push(pid, *stream, &line[..line.len() - 1], cut).await;
        }
        if sinks.agent_stderr {
            kept |= tokio::io::stderr().write_all(&line).await.is_ok();
        }
        if !kept || read.is_err() {
            break;
        }
    }
    last
}

/// The writer task's state: the only owner of the file.
struct Writer {
    path: PathBuf,
    max_bytes: u64,
    backup_count: u32,
    /// `None` after an error: the next record reopens the file.
    out: Option<Open>,
    /// Set when a problem was reported and cleared by the next successful flush, so a lasting
    /// failure (disk full) warns once rather than once per line.
    failing: bool,
}

/// The file as currently open.
struct Open {
    file: BufWriter<File>,
    /// Bytes in the file, counting those still buffered.
    size: u64,
    /// (device, inode) of the open file, to notice when the path no longer leads to it.
    id: (u64, u64),
}

impl Writer {
    /// Serves commands in batches: what is already queued is written, then flushed once, so a
    /// burst costs one flush while a lone line is visible at once.
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.recv().await {
            self.check_path().await;
            let mut waiting = Vec::new();
            let mut next = Some(first);
            let mut count = 0;
            while let Some(command) = next {
                match command {
                    Command::Record(record) => self.write(&record).await,
                    Command::Flush(done) => waiting.push(done),
                }
                count += 1;
                next = if count < BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            self.flush().await;
            for done in waiting {
                let _ = done.send(());
            }
        }
    }

    /// Drops the open file if the path was deleted or replaced (e.g. by logrotate), so that
    /// output goes to a file one can see rather than to an unlinked inode.
    async fn check_path(&mut self) {
        let Some(out) = &self.out else { return };
        match tokio::fs::metadata(&self.path).await {
            Ok(meta) if (meta.dev(), meta.ino()) == out.id => {}
            Ok(_) => self.out = None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.out = None,
            // Cannot tell (e.g. permissions changed): keep writing where we are.
            Err(_) => {}
        }
    }

    /// Writes one record, reopening the file if an error or `check_path` dropped it, and
    /// rotating first if the record would take the file past `max_bytes`.
    async fn write(&mut self, record: &[u8]) {
        let out = match self.out.take() {
            Some(out) => out,
            None => match reopen(&self.path, false).await {
                Ok(out) => out,
                Err(e) => return self.report("cannot open output file", &e),
            },
        };
        let mut out = if self.max_bytes > 0
            && out.size > 0
            && out.size + record.len() as u64 > self.max_bytes
        {
            match self.rotate(out).await {
                Some(out) => out,
                None => return,
            }
        } else {
            out
        };
        match out.file.write_all(record).await {
            Ok(()) => {
                out.size += record.len() as u64;
                self.out = Some(out);
            }
            Err(e) => self.report("cannot write output file", &e),
        }
    }

    /// Closes `out`, shifts the backups (or truncates without backups) and opens the fresh file.
    /// If the backups cannot be shifted it goes on appending, and retries only after another
    /// `max_bytes`, so a lasting failure does not warn on every line.
    async fn rotate(&mut self, mut out: Open) -> Option<Open> {
        if let Err(e) = out.file.flush().await {
            self.report("cannot write output file", &e);
        }
        drop(out);
        let shifted = match self.backup_count {
            0 => Ok(()),
            n => shift_backups(&self.path, n).await,
        };
        if let Err(e) = &shifted {
            self.report("cannot rotate output file", e);
        }
        let truncate = self.backup_count == 0;
        match reopen(&self.path, truncate).await {
            Ok(mut out) => {
                if shifted.is_err() {
                    out.size = 0;
                }
                Some(out)
            }
            Err(e) => {
                self.report("cannot open output file", &e);
                None
            }
        }
    }

    /// Hands the buffered bytes to the OS; on failure the file is dropped, for the next
    /// record to reopen.
    async fn flush(&mut self) {
        let Some(out) = &mut self.out else { return };
        match out.file.flush().await {
            Ok(()) => {
                if self.failing {
                    tracing::info!(file = %self.path.display(), "writing output file again");
                    self.failing = false;
                }
            }
            Err(e) => {
                self.out = None;
                self.report("cannot write output file", &e);
            }
        }
    }

    /// Warns about an I/O problem unless one is already being reported.
    fn report(&mut self, what: &str, error: &io::Error) {
        if !self.failing {
            tracing::warn!(file = %self.path.display(), "{what}: {error}");
            self.failing = true;
        }
    }
}

/// Opens `path` for append (creating it and its directories), emptied if `truncate`.
/// Blocking; the writer runs it through `reopen`.
fn open_file(path: &Path, truncate: bool) -> io::Result<Open> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Append mode even when truncating (std refuses append with truncate, hence set_len),
    // so that writers sharing the file never overwrite each other.
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    if truncate {
        file.set_len(0)?;
    }
    let meta = file.metadata()?;
    Ok(Open {
        file: BufWriter::with_capacity(MAX_LINE, File::from_std(file)),
        size: meta.len(),
        id: (meta.dev(), meta.ino()),
    })
}

/// `open_file` on tokio's blocking pool, as `tokio::fs` does.
async fn reopen(path: &Path, truncate: bool) -> io::Result<Open> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || open_file(&path, truncate))
        .await
        .map_err(io::Error::other)?
}

/// `path.<n>`.
fn backup(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    name.into()
}

/// Like Python's RotatingFileHandler: drops `path.<count>`, moves `path.<i>` to `path.<i+1>`,
/// then `path` to `path.1`. Missing files are skipped.
async fn shift_backups(path: &Path, count: u32) -> io::Result<()> {
    let missing_ok = |result: io::Result<()>| match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    missing_ok(tokio::fs::remove_file(backup(path, count)).await)?;
    for i in (1..count).rev() {
        missing_ok(tokio::fs::rename(backup(path, i), backup(path, i + 1)).await)?;
    }
    missing_ok(tokio::fs::rename(path, backup(path, 1)).await)
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
