//! Logging setup both binaries share: a `target=level` filter and stderr output.
//!
//! The filter is tracing-subscriber's `Targets` (`LEVEL` or `TARGET=LEVEL`, comma-separated):
//! what `--log-level` needs, parsed strictly so a typo is a usage error rather than a silent
//! fallback to the default, and without EnvFilter's span and field filters (and the regex
//! engine they pull into every binary).

use std::sync::atomic::{AtomicU64, Ordering};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// A warning said while its cause lasts (a process short of descriptors, a controller that
/// says it was), at most once a minute: the log or the terminal is told, not flooded.
pub struct OnceAMinute {
    /// Unix seconds of the last time it was due; 0 before the first.
    said_at: AtomicU64,
}

impl OnceAMinute {
    pub const fn new() -> Self {
        OnceAMinute {
            said_at: AtomicU64::new(0),
        }
    }

    /// Whether to say it now: the first time, and once a minute has passed since the last.
    pub fn due(&self) -> bool {
        self.due_at(crate::protocol::now_epoch() as u64)
    }

    fn due_at(&self, now: u64) -> bool {
        let said = self.said_at.load(Ordering::Relaxed);
        (said == 0 || now.saturating_sub(said) >= 60)
            && self
                .said_at
                .compare_exchange(said, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl Default for OnceAMinute {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses a log filter such as `info`, `debug` or `warn,troupe_agent=trace`, for clap.
pub fn parse_filter(text: &str) -> Result<Targets, String> {
    text.parse::<Targets>().map_err(|e| {
        format!(
            "{e}; expected LEVEL or TARGET=LEVEL, comma-separated (e.g. info,troupe_agent=debug)"
        )
    })
}

/// Logs to stderr through `filter`, in colour only on a terminal, and without timestamps
/// when stderr is the journal, which stamps every line itself.
pub fn init(filter: Targets) {
    let journal = stderr_is_journal();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(filter);
    if journal {
        registry.with(layer.without_time()).init();
    } else {
        registry.with(layer).init();
    }
}

/// Whether stderr is the journal: systemd sets JOURNAL_STREAM to the `device:inode` of the
/// stream it connected, which stays set when stderr is redirected elsewhere, hence the
/// comparison (as sd_journal_stream_fd(3) recommends).
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    journal_stream_matches(&stream.to_string_lossy(), stderr.st_dev, stderr.st_ino)
}

/// Whether JOURNAL_STREAM's `device:inode` (decimal) names this device and inode.
fn journal_stream_matches(stream: &str, device: u64, inode: u64) -> bool {
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    dev.parse() == Ok(device) && ino.parse() == Ok(inode)
}

/// An error and its causes, `: `-separated as anyhow's `{:#}` prints them, without a cause
/// its error already quotes: tmq's "Zmq error: Address already in use" has the zmq error as
/// its source too, and `{:#}` printed "Address already in use: Address already in use".
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause = Some(error);
    while let Some(error) = cause {
        let text = error.to_string();
        if !out.ends_with(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cause = error.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn levels_and_targets_parse() {
        let filter = parse_filter("warn,troupe_agent=trace").unwrap();
        assert!(filter.would_enable("troupe_agent::watcher", &Level::TRACE));
        assert!(filter.would_enable("zmq", &Level::WARN));
        assert!(!filter.would_enable("zmq", &Level::INFO));
        let filter = parse_filter("debug").unwrap();
        assert!(filter.would_enable("anything", &Level::DEBUG));
        assert!(!filter.would_enable("anything", &Level::TRACE));
    }

    #[test]
    fn journal_stream_is_matched_on_device_and_inode() {
        assert!(journal_stream_matches("25:31337", 25, 31337));
        assert!(!journal_stream_matches("25:31337", 25, 31338));
        assert!(!journal_stream_matches("26:31337", 25, 31337));
        assert!(!journal_stream_matches("25", 25, 31337));
        assert!(!journal_stream_matches("", 0, 0));
        assert!(!journal_stream_matches("x:y", 0, 0));
    }

    #[test]
    fn a_bad_filter_is_an_error_naming_the_format() {
        let e = parse_filter("troupe_agent=loud").unwrap_err();
        assert!(e.contains("TARGET=LEVEL"), "{e}");
    }

    #[test]
    fn a_cause_the_error_already_quotes_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("binding tcp://127.0.0.1:5555")]
        struct Binding(#[source] tmq::TmqError);
        let error = Binding(zmq::Error::EADDRINUSE.into());
        assert_eq!(
            error_chain(&error),
            "binding tcp://127.0.0.1:5555: Zmq error: Address already in use"
        );
    }

    #[test]
    fn a_warning_is_due_the_first_time_and_then_once_a_minute() {
        let warning = OnceAMinute::new();
        assert!(warning.due_at(1000));
        assert!(!warning.due_at(1000));
        assert!(!warning.due_at(1059));
        assert!(warning.due_at(1060));
        assert!(!warning.due_at(1061));
    }
}
