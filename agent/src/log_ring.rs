//! The in-memory ring of a watcher's output lines, what `logs` reads whether or not the config
//! names output files.
//!
//! One actor task per watcher owns the ring; the capturing tasks hand it lines through a
//! bounded channel (a process printing faster than the agent keeps up waits on its full pipe,
//! it does not grow the agent's memory), and `logs` asks it through the same channel, so a
//! query sees every line handed over before it. The ring holds at most `log_ring_bytes` of
//! line text plus [`LINE_OVERHEAD`] per line; the oldest lines go first. Each new line is also
//! published as a `log.<watcher>.<pid>` event, but only while someone subscribes to `log.`
//! ([`crate::events::EventSender::publish_log`]), so nobody following costs nothing.

use crate::events::EventSender;
use std::collections::VecDeque;
use tokio::sync::{mpsc, oneshot};
use troupe::bounds::{LOGS_REPLY_BYTES, LOG_LINE_BYTES};
use troupe::protocol::{now_epoch, CommandError, LogLine, LogStream, LogsReply, LogsRequest};

/// What a kept line costs besides its text (the `LogLine` and the deque slot), counted
/// against the bound so that a flood of empty lines is bounded too.
pub const LINE_OVERHEAD: usize = std::mem::size_of::<LogLine>();

/// Lines queued for the ring before capturing tasks wait.
const QUEUE: usize = 1024;

enum RingMsg {
    Line {
        pid: u32,
        stream: LogStream,
        text: Vec<u8>,
        /// The line goes on in the next piece.
        cut: bool,
    },
    Query(LogsRequest, oneshot::Sender<LogsReply>),
    Resize(u64),
}

/// A cheap, cloneable reference to a watcher's ring actor; the actor ends with the last one.
#[derive(Clone)]
pub struct LogRingHandle {
    tx: mpsc::Sender<RingMsg>,
}

impl LogRingHandle {
    /// Starts the ring of watcher `watcher`, holding `bytes`; new lines are also offered to
    /// `events`.
    pub fn spawn(watcher: &str, bytes: u64, events: EventSender) -> LogRingHandle {
        let (tx, rx) = mpsc::channel(QUEUE);
        let actor = RingActor {
            watcher: watcher.to_string(),
            ring: Ring::new(bytes),
            events,
        };
        tokio::spawn(actor.run(rx));
        LogRingHandle { tx }
    }

    /// Keeps one piece of output (without its newline); false once the ring is gone. A piece
    /// longer than [`LOG_LINE_BYTES`] becomes several lines, each but the last marked `cut`.
    pub async fn push(&self, pid: u32, stream: LogStream, text: &[u8], cut: bool) -> bool {
        let mut pieces = text.chunks(LOG_LINE_BYTES).peekable();
        if text.is_empty() {
            return self.send_line(pid, stream, Vec::new(), cut).await;
        }
        while let Some(piece) = pieces.next() {
            let more = pieces.peek().is_some();
            if !self
                .send_line(pid, stream, piece.to_vec(), cut || more)
                .await
            {
                return false;
            }
        }
        true
    }

    async fn send_line(&self, pid: u32, stream: LogStream, text: Vec<u8>, cut: bool) -> bool {
        let line = RingMsg::Line {
            pid,
            stream,
            text,
            cut,
        };
        self.tx.send(line).await.is_ok()
    }

    /// The lines `request` asks for.
    pub async fn query(&self, request: LogsRequest) -> Result<LogsReply, CommandError> {
        let (reply, answer) = oneshot::channel();
        let gone = || CommandError::command(format!("watcher '{}' was removed", request.name));
        self.tx
            .send(RingMsg::Query(request.clone(), reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    /// Changes the bound (`set log_ring_bytes`); lines past it go at once.
    pub async fn resize(&self, bytes: u64) {
        let _ = self.tx.send(RingMsg::Resize(bytes)).await;
    }
}

struct RingActor {
    watcher: String,
    ring: Ring,
    events: EventSender,
}

impl RingActor {
    async fn run(mut self, mut rx: mpsc::Receiver<RingMsg>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                RingMsg::Line {
                    pid,
                    stream,
                    text,
                    cut,
                } => {
                    let line = LogLine {
                        time: now_epoch(),
                        pid,
                        stream,
                        line: String::from_utf8_lossy(&text).into_owned(),
                        seq: 0,
                        cut,
                    };
                    let line = self.ring.push(line);
                    self.events.publish_log(&self.watcher, line);
                }
                RingMsg::Query(request, reply) => {
                    let _ = reply.send(self.ring.query(&request));
                }
                RingMsg::Resize(bytes) => self.ring.resize(bytes),
            }
        }
    }
}

/// The lines themselves, oldest first, and what they cost: a pure structure.
#[derive(Debug)]
pub struct Ring {
    lines: VecDeque<LogLine>,
    /// Text plus [`LINE_OVERHEAD`] per line, of the lines kept.
    bytes: usize,
    bound: usize,
    /// The `seq` of the next line.
    next_seq: u64,
}

impl Ring {
    pub fn new(bound: u64) -> Ring {
        Ring {
            lines: VecDeque::new(),
            bytes: 0,
            bound: usize::try_from(bound).unwrap_or(usize::MAX),
            next_seq: 0,
        }
    }

    /// Bytes held, as counted against the bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Numbers `line`, keeps it and drops the oldest lines past the bound; returns it
    /// numbered. The newest line is always kept, so the ring holds at most its bound or one
    /// line (of at most [`LOG_LINE_BYTES`]).
    pub fn push(&mut self, mut line: LogLine) -> &LogLine {
        line.seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += cost(&line);
        self.lines.push_back(line);
        self.trim();
        &self.lines[self.lines.len() - 1]
    }

    pub fn resize(&mut self, bound: u64) {
        self.bound = usize::try_from(bound).unwrap_or(usize::MAX);
        self.trim();
    }

    fn trim(&mut self) {
        while self.bytes > self.bound && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= cost(&old);
            }
        }
    }

    /// Without `offset`: the last `lines` matching lines. With it: the first `lines` matching
    /// lines from that `seq` on, to read forward. Either way at most [`LOGS_REPLY_BYTES`] of
    /// text, oldest first.
    pub fn query(&self, request: &LogsRequest) -> LogsReply {
        let matches = |line: &&LogLine| {
            request.pid.is_none_or(|pid| line.pid == pid)
                && request.stream.includes(line.stream)
                && request.since.is_none_or(|since| line.time >= since)
                && request.offset.is_none_or(|offset| line.seq >= offset)
        };
        let wanted = usize::try_from(request.lines).unwrap_or(usize::MAX);
        let (picked, offset, more) = match request.offset {
            Some(offset) => {
                let dropped = self.lines.front().is_some_and(|first| first.seq > offset);
                let (picked, full) = pick(self.lines.iter().filter(matches), wanted);
                let offset = match picked.last() {
                    Some(last) if full || picked.len() >= wanted => last.seq + 1,
                    _ => self.next_seq,
                };
                (picked, offset, full || dropped)
            }
            None => {
                let (mut picked, full) = pick(self.lines.iter().rev().filter(matches), wanted);
                picked.reverse();
                (picked, self.next_seq, full)
            }
        };
        LogsReply {
            lines: picked,
            offset,
            more,
        }
    }
}

/// Up to `wanted` lines in the order given, within [`LOGS_REPLY_BYTES`] of text (at least one
/// line); whether the byte bound stopped it.
fn pick<'a>(lines: impl Iterator<Item = &'a LogLine>, wanted: usize) -> (Vec<LogLine>, bool) {
    let mut picked = Vec::new();
    let mut text = 0;
    for line in lines.take(wanted) {
        text += line.line.len();
        if text > LOGS_REPLY_BYTES && !picked.is_empty() {
            return (picked, true);
        }
        picked.push(line.clone());
    }
    (picked, false)
}

fn cost(line: &LogLine) -> usize {
    line.line.len() + LINE_OVERHEAD
}

#[cfg(test)]
#[path = "log_ring_tests.rs"]
mod tests;
