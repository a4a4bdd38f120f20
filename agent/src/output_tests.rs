//! Tests of `output`.

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

/// [`capture`] into `log` alone.
fn file_only<R: AsyncRead + Unpin + Send + 'static>(
    log: &OutputLog,
    pid: u32,
    stream: R,
) -> JoinHandle<Option<String>> {
    let sinks = Sinks {
        file: Some(log.clone()),
        ring: None,
        agent_stderr: false,
    };
    capture(pid, stream, sinks)
}

/// Captures `data` as one stream of `pid`, waits until it was handed over, and flushes.
async fn log_bytes(log: &OutputLog, pid: u32, data: &[u8]) {
    let (mut tx, rx) = duplex(4096);
    let handle = file_only(log, pid, rx);
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

    // Empty: the line as written, as Circus's FileStream without a time_format.
    cfg.time_format = String::new();
    let log = OutputLog::open(&cfg).unwrap();
    log_bytes(&log, 7, b"bare\n").await;
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("T{year} [7] | x\nbare\n")
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
        handles.push(file_only(&log, 100 + s, rx));
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
    file_only(&log, 1, rx).await.unwrap();
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
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU)
        .unwrap_or_else(|e| panic!("cannot make the FIFO {}: {e}", fifo.display()));
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
    file_only(&log, 1, rx).await.unwrap();

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
    let handle = file_only(&log, 5, rx);
    tx.write_all(b"one\ntwo").await.unwrap();
    // The capture has read what was written (its first line is on disk) and still runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        log.flush().await;
        if bodies(&file) == ["one"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first line never came"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let out = file_only(&log, pid, child.stdout.take().unwrap());
    let err = file_only(&log, pid, child.stderr.take().unwrap());
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
    assert!(
        full.exists(),
        "/dev/full is missing: this test needs its writes that always fail (ENOSPC)"
    );
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
    let handle = file_only(&log, 1, rx);
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

#[tokio::test]
async fn a_line_goes_to_the_file_and_to_the_ring_with_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.log");
    let log = OutputLog::open(&config(&file, 0, 0)).unwrap();
    let ring = LogRingHandle::spawn("w", 1 << 20, crate::events::EventSender::disconnected());
    let (mut tx, rx) = duplex(4096);
    let sinks = Sinks {
        file: Some(log.clone()),
        ring: Some((ring.clone(), LogStream::Stderr)),
        agent_stderr: false,
    };
    let handle = capture(9, rx, sinks);
    let mut long = vec![b'z'; MAX_LINE + 3];
    long.push(b'\n');
    tx.write_all(b"first\n").await.unwrap();
    tx.write_all(&long).await.unwrap();
    drop(tx);
    handle.await.unwrap();
    log.flush().await;
    assert_eq!(bodies(&file)[0], "first");
    let reply = ring
        .query(troupe::protocol::LogsRequest::new("w"))
        .await
        .unwrap();
    let lines: Vec<(u32, LogStream, usize, bool)> = reply
        .lines
        .iter()
        .map(|l| (l.pid, l.stream, l.line.len(), l.cut))
        .collect();
    let piece = troupe::bounds::LOG_LINE_BYTES;
    let mut expected = vec![(9, LogStream::Stderr, 5, false)];
    expected.extend((0..MAX_LINE / piece).map(|_| (9, LogStream::Stderr, piece, true)));
    expected.push((9, LogStream::Stderr, 3, false));
    assert_eq!(lines, expected);
}
