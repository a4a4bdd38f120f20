//! Tests of `log_ring`: the bound, and what `logs` reads.

use super::*;
use troupe::protocol::StreamSelection;

fn line(pid: u32, stream: LogStream, text: &str, time: f64) -> LogLine {
    LogLine {
        time,
        pid,
        stream,
        line: text.to_string(),
        seq: 0,
        cut: false,
    }
}

fn texts(reply: &LogsReply) -> Vec<&str> {
    reply.lines.iter().map(|l| l.line.as_str()).collect()
}

#[test]
fn the_bound_holds_and_the_oldest_lines_go_first() {
    let bound = 10 * (LINE_OVERHEAD + 100);
    let mut ring = Ring::new(bound as u64);
    for n in 0..1000 {
        ring.push(line(
            1,
            LogStream::Stdout,
            &format!("{n:0100}"),
            f64::from(n),
        ));
        assert!(ring.bytes() <= bound, "{} > {bound}", ring.bytes());
    }
    let reply = ring.query(&LogsRequest {
        lines: 1000,
        ..LogsRequest::new("w")
    });
    assert_eq!(reply.lines.len(), 10);
    assert_eq!(reply.lines[0].seq, 990);
    assert_eq!(reply.offset, 1000);
    ring.resize(0);
    assert_eq!(ring.lines.len(), 1, "the newest line stays");
}

#[test]
fn tail_filters_by_pid_stream_and_time() {
    let mut ring = Ring::new(1 << 20);
    ring.push(line(1, LogStream::Stdout, "a", 1.0));
    ring.push(line(2, LogStream::Stderr, "b", 2.0));
    ring.push(line(1, LogStream::Stderr, "c", 3.0));
    ring.push(line(1, LogStream::Stdout, "d", 4.0));
    let ask = |f: fn(&mut LogsRequest)| {
        let mut request = LogsRequest::new("w");
        f(&mut request);
        texts(&ring.query(&request))
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(ask(|_| {}), ["a", "b", "c", "d"]);
    assert_eq!(ask(|r| r.lines = 2), ["c", "d"]);
    assert_eq!(ask(|r| r.pid = Some(1)), ["a", "c", "d"]);
    assert_eq!(ask(|r| r.stream = StreamSelection::Stderr), ["b", "c"]);
    assert_eq!(ask(|r| r.since = Some(2.5)), ["c", "d"]);
    assert_eq!(ask(|r| r.lines = 0), Vec::<String>::new());
}

#[test]
fn reading_forward_from_an_offset_pages_through_everything() {
    let mut ring = Ring::new(1 << 20);
    for n in 0..25 {
        ring.push(line(1, LogStream::Stdout, &n.to_string(), 0.0));
    }
    let mut offset = 0;
    let mut seen = Vec::new();
    loop {
        let reply = ring.query(&LogsRequest {
            lines: 10,
            offset: Some(offset),
            ..LogsRequest::new("w")
        });
        if reply.lines.is_empty() {
            break;
        }
        seen.extend(reply.lines.iter().map(|l| l.seq));
        offset = reply.offset;
    }
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
}

#[test]
fn a_reply_stays_within_its_byte_bound() {
    let mut ring = Ring::new(1 << 30);
    let long = "x".repeat(LOG_LINE_BYTES);
    for _ in 0..(2 * LOGS_REPLY_BYTES / LOG_LINE_BYTES) {
        ring.push(line(1, LogStream::Stdout, &long, 0.0));
    }
    let reply = ring.query(&LogsRequest {
        lines: troupe::bounds::LOGS_MAX_LINES,
        ..LogsRequest::new("w")
    });
    let text: usize = reply.lines.iter().map(|l| l.line.len()).sum();
    assert!(text <= LOGS_REPLY_BYTES, "{text}");
    assert!(reply.more);
}

#[tokio::test]
async fn a_long_piece_is_cut_into_marked_lines() {
    let ring = LogRingHandle::spawn("w", 1 << 20, EventSender::disconnected());
    let text = vec![b'y'; 2 * LOG_LINE_BYTES + 5];
    assert!(ring.push(7, LogStream::Stderr, &text, false).await);
    let reply = ring.query(LogsRequest::new("w")).await.unwrap();
    let shape: Vec<(usize, bool)> = reply.lines.iter().map(|l| (l.line.len(), l.cut)).collect();
    assert_eq!(
        shape,
        [(LOG_LINE_BYTES, true), (LOG_LINE_BYTES, true), (5, false)]
    );
}
