//! Why a watcher stopped by itself: carried by `status` and `nodeinfo` beside Circus's state
//! (which stays `stopped`, so stock clients read it unchanged) and shown by every renderer
//! through its `Display`:
//! `flapping: 6 quick exits; last: exit 1 "member ... already bootstrapped"`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest piece of a process's last output line a reason keeps (bytes; cut at a character
/// boundary): enough to recognise an error message, small enough for every status reply.
pub const LAST_OUTPUT_MAX: usize = 200;

/// What made the watcher stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    /// More quick exits in a row than `max_retry` allows.
    Flapping,
    /// The program could not be started at all (not found, not executable).
    SpawnFailed,
    /// A hook the watcher needs failed.
    HookFailed,
    /// With `respawn = false`, its last process exited.
    Exited,
}

/// Why a watcher is stopped, when it stopped by itself. Absent when a command stopped it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopReason {
    pub cause: StopCause,
    /// Quick exits in a row (flapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quick_exits: Option<u32>,
    /// The last process's exit as Circus reports it: the status, or the negated signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<i32>,
    /// The last line the last process wrote to stderr, at most [`LAST_OUTPUT_MAX`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_output: Option<String>,
    /// The error itself: a spawn's (`cannot spawn etcd: No such file or directory (os error
    /// 2)`) or a hook's (`before_spawn hook failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StopReason {
    pub fn new(cause: StopCause) -> Self {
        Self {
            cause,
            quick_exits: None,
            last_exit: None,
            last_output: None,
            error: None,
        }
    }

    /// Keeps the last non-blank line of `output`, trimmed and cut to [`LAST_OUTPUT_MAX`].
    pub fn with_last_output(mut self, output: Option<&str>) -> Self {
        self.last_output = output.and_then(last_line);
        self
    }
}

/// The last non-blank line of `text`, trimmed, cut to [`LAST_OUTPUT_MAX`] bytes.
pub fn last_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let mut end = line.len().min(LAST_OUTPUT_MAX);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    Some(line[..end].to_string())
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.cause, self.quick_exits) {
            (StopCause::Flapping, Some(n)) => write!(f, "flapping: {n} quick exits")?,
            (StopCause::Flapping, None) => f.write_str("flapping")?,
            (StopCause::SpawnFailed, _) => f.write_str("spawn failed")?,
            (StopCause::HookFailed, _) => f.write_str("hook failed")?,
            (StopCause::Exited, _) => f.write_str("exited with respawn = false")?,
        }
        if let Some(error) = &self.error {
            write!(f, ": {error}")?;
        }
        if self.last_exit.is_some() || self.last_output.is_some() {
            f.write_str("; last:")?;
            match self.last_exit {
                Some(code) if code < 0 => write!(f, " signal {}", -code)?,
                Some(code) => write!(f, " exit {code}")?,
                None => {}
            }
            if let Some(output) = &self.last_output {
                write!(f, " {output:?}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reason_reads_as_the_issue_shows_it_and_round_trips() {
        let reason = StopReason {
            quick_exits: Some(6),
            last_exit: Some(1),
            ..StopReason::new(StopCause::Flapping)
        }
        .with_last_output(Some("starting\nmember abc already bootstrapped\n\n"));
        assert_eq!(
            reason.to_string(),
            r#"flapping: 6 quick exits; last: exit 1 "member abc already bootstrapped""#
        );
        let wire = json!(reason);
        assert_eq!(
            wire,
            json!({"cause": "flapping", "quick_exits": 6, "last_exit": 1,
                   "last_output": "member abc already bootstrapped"})
        );
        assert_eq!(serde_json::from_value::<StopReason>(wire).unwrap(), reason);
        let spawn = StopReason {
            error: Some("cannot spawn nope: No such file or directory (os error 2)".into()),
            ..StopReason::new(StopCause::SpawnFailed)
        };
        assert_eq!(
            spawn.to_string(),
            "spawn failed: cannot spawn nope: No such file or directory (os error 2)"
        );
        let killed = StopReason {
            last_exit: Some(-9),
            ..StopReason::new(StopCause::Exited)
        };
        assert_eq!(
            killed.to_string(),
            "exited with respawn = false; last: signal 9"
        );
    }

    #[test]
    fn the_last_output_is_bounded_at_a_character_boundary() {
        let long = "é".repeat(LAST_OUTPUT_MAX);
        let kept = last_line(&long).unwrap();
        assert!(kept.len() <= LAST_OUTPUT_MAX && kept.len() >= LAST_OUTPUT_MAX - 1);
        assert_eq!(last_line("  \n \n"), None);
    }
}
