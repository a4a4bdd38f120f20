//! Capture of watcher processes' output into files, with size rotation.

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

    /// Spawns a task that reads `stream` until EOF and hands every line to the writer, prefixed
    /// `<local time in time_format> [<pid>] | ` (Circus's format, e.g. `2026-11-22 23:14:34 [3822] | hi 1`).
    /// The returned JoinHandle completes only after all of this stream's lines were handed to the writer.
    pub fn capture<R: AsyncRead + Unpin + Send + 'static>(
        &self,
        pid: u32,
        stream: R,
    ) -> JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move { log.read_lines(pid, stream).await })
    }

    /// Resolves once everything handed to the writer before this call is written and flushed to the OS.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// The body of `capture`. A read error ends the capture like EOF (after a warning), since
    /// a pipe that failed once will not recover.
    async fn read_lines<R: AsyncRead + Unpin>(&self, pid: u32, stream: R) {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
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
            if line.last() != Some(&b'\n') {
                // A line cut at MAX_LINE whose newline comes right after the cut takes it
                // along, rather than leaving it to show up as an empty line.
                if line.len() == MAX_LINE && read.is_ok() {
                    if let Ok([b'\n', ..]) = reader.fill_buf().await {
                        reader.consume(1);
                    }
                }
                line.push(b'\n');
            }
            let record = self.record(pid, &line);
            if self.tx.send(Command::Record(record)).await.is_err() || read.is_err() {
                break;
            }
        }
    }

    /// `line` behind its `<time> [<pid>] | ` prefix.
    fn record(&self, pid: u32, line: &[u8]) -> Vec<u8> {
        let mut record = Vec::with_capacity(line.len() + 48);
        let time = chrono::Local::now().format_with_items(self.time_format.iter());
        // Writing into a Vec cannot fail, and the format was validated by `open`.
        let _ = write!(record, "{time} [{pid}] | ");
        record.extend_from_slice(line);
        record
    }
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
mod tests {
    use super::*;
    use chrono::Timelike as _;
    use std::time::Duration;
    use tokio::io::{duplex, AsyncWriteExt};
    use troupe::config::DEFAULT_TIME_FORMAT;

    fn config(file: &Path, max_bytes: u64, backup_count: u32) -> OutputConfig {
        OutputConfig {
            file: file.to_path_buf(),
            max_bytes,
            backup_count,
            time_format: DEFAULT_TIME_FORMAT.to_string(),
        }
    }

    /// Captures `data` as one stream of `pid`, waits until it was handed over, and flushes.
    async fn log_bytes(log: &OutputLog, pid: u32, data: &[u8]) {
        let (mut tx, rx) = duplex(4096);
        let handle = log.capture(pid, rx);
        tx.write_all(data).await.unwrap();
        drop(tx);
        handle.await.unwrap();
        log.flush().await;
    }

    /// The lines of `path` with their `<time> [<pid>] | ` prefixes removed.
    fn bodies(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|line| {
                let (_, body) = line.split_once("] | ").expect(line);
                body.to_string()
            })
            .collect()
    }

    #[tokio::test]
    async fn prefix_has_local_time_and_pid() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deep/er/out.log");
        let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
        let before = chrono::Local::now().naive_local();
        log_bytes(&log, 3822, b"hi 1\n").await;
        let after = chrono::Local::now().naive_local();

        let text = std::fs::read_to_string(&file).unwrap();
        let (time, rest) = text.split_at(19);
        assert_eq!(rest, " [3822] | hi 1\n");
        let time = chrono::NaiveDateTime::parse_from_str(time, DEFAULT_TIME_FORMAT).unwrap();
        assert!(
            time >= before.with_nanosecond(0).unwrap() && time <= after,
            "{text}"
        );
    }

    #[tokio::test]
    async fn custom_time_format_and_invalid_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        let mut cfg = config(&file, 0, 0);
        cfg.time_format = "T%Y".to_string();
        let log = OutputLog::open(&cfg).unwrap();
        log_bytes(&log, 7, b"x\n").await;
        let year = chrono::Local::now().format("%Y").to_string();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("T{year} [7] | x\n")
        );

        cfg.time_format = "%Y %Q".to_string();
        let err = OutputLog::open(&cfg).err().expect("bad format accepted");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn open_outside_runtime_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        assert!(OutputLog::open(&config(&file, 0, 0)).is_err());
    }

    #[tokio::test]
    async fn interleaved_streams_keep_lines_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
        let mut handles = Vec::new();
        let mut feeders = Vec::new();
        for s in 0..4u32 {
            let (mut tx, rx) = duplex(64);
            handles.push(log.capture(100 + s, rx));
            feeders.push(tokio::spawn(async move {
                let mut data = Vec::new();
                for i in 0..300 {
                    writeln!(data, "stream {s} line {i} {}", "y".repeat(i % 50)).unwrap();
                }
                // Odd-sized writes, so lines arrive cut at arbitrary places.
                for chunk in data.chunks(7 + s as usize * 13) {
                    tx.write_all(chunk).await.unwrap();
                    tokio::task::yield_now().await;
                }
            }));
        }
        for f in feeders {
            f.await.unwrap();
        }
        for h in handles {
            h.await.unwrap();
        }
        log.flush().await;

        let text = std::fs::read_to_string(&file).unwrap();
        let mut next = [0usize; 4];
        let mut pids_seen = std::collections::HashSet::new();
        for line in text.lines() {
            let (prefix, body) = line.split_once(" | ").unwrap();
            let words: Vec<&str> = body.split(' ').collect();
            let s: usize = words[1].parse().unwrap();
            let i: usize = words[3].parse().unwrap();
            assert!(prefix.ends_with(&format!("[{}]", 100 + s)), "{line}");
            assert_eq!(i, next[s], "{line}");
            assert_eq!(body, format!("stream {s} line {i} {}", "y".repeat(i % 50)));
            next[s] += 1;
            pids_seen.insert(s);
        }
        assert_eq!(next, [300; 4]);
        assert_eq!(pids_seen.len(), 4);
    }

    #[tokio::test]
    async fn partial_last_line_gets_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
        log_bytes(&log, 1, b"a\n\nb").await;
        assert_eq!(bodies(&file), ["a", "", "b"]);
    }

    #[tokio::test]
    async fn long_lines_are_split_in_64k_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
        let mut data = vec![b'x'; 2 * MAX_LINE + 10];
        data.push(b'\n');
        // Exactly MAX_LINE: one piece, and its newline does not make an empty line.
        data.extend(vec![b'z'; MAX_LINE]);
        data.extend_from_slice(b"\nend\n");
        log_bytes(&log, 1, &data).await;

        let lines = bodies(&file);
        let lens: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, 10, MAX_LINE, 3]);
        assert!(lines[..3].iter().all(|l| l.bytes().all(|b| b == b'x')));
        assert!(lines[3].bytes().all(|b| b == b'z'));
        assert_eq!(lines[4], "end");
    }

    #[tokio::test]
    async fn non_utf8_bytes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
        log_bytes(&log, 9, b"\xff\xfeok\x00\n").await;
        let bytes = std::fs::read(&file).unwrap();
        assert!(bytes.ends_with(b" [9] | \xff\xfeok\x00\n"), "{bytes:?}");
    }

    #[tokio::test]
    async fn rotation_keeps_backup_count_files_within_max_bytes() {
        for count in [2, 4] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("out.log");
            let max = 300;
            let log = OutputLog::open(&config(&file, max, count)).unwrap();
            let mut data = Vec::new();
            for i in 0..200 {
                writeln!(data, "line {i:03}").unwrap();
            }
            log_bytes(&log, 1, &data).await;

            // Oldest to newest: file.<count> .. file.1, file.
            let mut files: Vec<PathBuf> = (1..=count).rev().map(|n| backup(&file, n)).collect();
            files.push(file.clone());
            for path in &files {
                let len = std::fs::metadata(path).unwrap().len();
                assert!(len > 0 && len <= max, "{}: {len}", path.display());
            }
            assert!(!backup(&file, count + 1).exists());
            // They hold the last lines, in order and without gaps.
            let kept: Vec<String> = files.iter().flat_map(|p| bodies(p)).collect();
            let expected: Vec<String> = (200 - kept.len()..200)
                .map(|i| format!("line {i:03}"))
                .collect();
            assert_eq!(kept, expected);
            assert!(kept.len() > 7 * count as usize, "{}", kept.len());
        }
    }

    #[tokio::test]
    async fn rotation_counts_the_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        std::fs::write(&file, "old content\n".repeat(10)).unwrap();
        let log = OutputLog::open(&config(&file, 130, 3)).unwrap();
        log_bytes(&log, 1, b"new\n").await;
        assert_eq!(
            std::fs::read_to_string(backup(&file, 1)).unwrap(),
            "old content\n".repeat(10)
        );
        assert_eq!(bodies(&file), ["new"]);
    }

    #[tokio::test]
    async fn backup_count_zero_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        let max = 300;
        let log = OutputLog::open(&config(&file, max, 0)).unwrap();
        let mut data = Vec::new();
        for i in 0..200 {
            writeln!(data, "line {i:03}").unwrap();
        }
        log_bytes(&log, 1, &data).await;

        let len = std::fs::metadata(&file).unwrap().len();
        assert!(len > 0 && len <= max, "{len}");
        assert!(!backup(&file, 1).exists());
        let lines = bodies(&file);
        assert_eq!(lines.last().unwrap(), "line 199");
        assert!(!lines.contains(&"line 000".to_string()));
    }

    #[tokio::test]
    async fn flush_makes_everything_handed_over_visible() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
        let mut data = Vec::new();
        for i in 0..3000 {
            writeln!(data, "line {i} {}", "f".repeat(80)).unwrap();
        }
        let (mut tx, rx) = duplex(data.len());
        tx.write_all(&data).await.unwrap();
        drop(tx);
        log.capture(1, rx).await.unwrap();
        log.flush().await;
        let lines = bodies(&file);
        assert_eq!(lines.len(), 3000);
        assert!(lines[2999].starts_with("line 2999 f"));
    }

    /// The file is a FIFO nobody reads yet, so the writer is stuck on a full pipe: `flush`
    /// must wait until the reader has taken everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_waits_until_the_os_has_everything() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|status| status.success()) {
            return;
        }
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || {
                let mut pipe = std::fs::File::open(fifo).unwrap();
                wait.recv().unwrap();
                let mut text = String::new();
                io::Read::read_to_string(&mut pipe, &mut text).unwrap();
                text
            }
        });
        // Opening a FIFO for writing waits for the reader above.
        let log = OutputLog::open(&config(&fifo, 0, 0)).unwrap();
        let mut data = Vec::new();
        for i in 0..500 {
            writeln!(data, "line {i} {}", "p".repeat(1000)).unwrap();
        }
        let (mut tx, rx) = duplex(data.len());
        tx.write_all(&data).await.unwrap();
        drop(tx);
        log.capture(1, rx).await.unwrap();

        let early = tokio::time::timeout(Duration::from_millis(300), log.flush()).await;
        assert!(early.is_err(), "flush resolved before the data was written");
        go.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), log.flush())
            .await
            .expect("flush did not resolve once the data could be written");
        drop(log);
        let text = reader.join().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 500);
        for (i, line) in lines.iter().enumerate() {
            assert!(line.ends_with(&format!("] | line {i} {}", "p".repeat(1000))));
        }
    }

    #[tokio::test]
    async fn capture_completes_at_eof() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
        let (mut tx, rx) = duplex(64);
        let handle = log.capture(5, rx);
        tx.write_all(b"one\ntwo").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!handle.is_finished());
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("capture did not end at EOF")
            .unwrap();
        log.flush().await;
        assert_eq!(bodies(&file), ["one", "two"]);
    }

    #[tokio::test]
    async fn captures_a_child_process_pipes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "echo out; echo err >&2; printf tail"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let out = log.capture(pid, child.stdout.take().unwrap());
        let err = log.capture(pid, child.stderr.take().unwrap());
        child.wait().await.unwrap();
        out.await.unwrap();
        err.await.unwrap();
        log.flush().await;
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines = bodies(&file);
        lines.sort();
        assert_eq!(lines, ["err", "out", "tail"]);
        assert_eq!(text.matches(&format!(" [{pid}] | ")).count(), 3);
    }

    #[tokio::test]
    async fn reopens_a_deleted_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("logs/out.log");
        let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
        log_bytes(&log, 1, b"before\n").await;
        std::fs::remove_dir_all(dir.path().join("logs")).unwrap();
        log_bytes(&log, 1, b"after\n").await;
        assert_eq!(bodies(&file), ["after"]);
    }

    #[tokio::test]
    async fn survives_a_file_it_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
        log_bytes(&log, 1, b"first\n").await;
        // A directory in its place: reopening fails, and the line is dropped.
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        log_bytes(&log, 1, b"lost\n").await;
        std::fs::remove_dir(&file).unwrap();
        log_bytes(&log, 1, b"back\n").await;
        assert_eq!(bodies(&file), ["back"]);
    }

    #[tokio::test]
    async fn write_errors_do_not_stop_the_writer() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        let log = OutputLog::open(&config(full, 0, 0)).unwrap();
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(5), log_bytes(&log, 1, b"x\n"))
                .await
                .expect("writer stuck after a write error");
        }
        assert!(!log.tx.is_closed());
    }

    #[tokio::test]
    async fn queued_lines_are_written_after_the_last_clone_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
        let (mut tx, rx) = duplex(1 << 16);
        for i in 0..500 {
            tx.write_all(format!("line {i}\n").as_bytes())
                .await
                .unwrap();
        }
        drop(tx);
        let handle = log.capture(1, rx);
        drop(log);
        handle.await.unwrap();
        // The writer writes the queue, then ends and closes the file.
        let open_fds = |file: &Path| {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| target == file)
                .count()
        };
        let file = file.canonicalize().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while open_fds(&file) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "writer did not end");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let lines = bodies(&file);
        assert_eq!(lines.len(), 500);
        assert_eq!(lines[499], "line 499");
    }
}
