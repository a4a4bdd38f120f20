//! Logging setup both binaries share: a `target=level` filter and stderr output.
//!
//! The filter is tracing-subscriber's `Targets` (`LEVEL` or `TARGET=LEVEL`, comma-separated):
//! what `--log-level` needs, parsed strictly so a typo is a usage error rather than a silent
//! fallback to the default, and without EnvFilter's span and field filters (and the regex
//! engine they pull into every binary).

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Parses a log filter such as `info`, `debug` or `warn,troupe_agent=trace`, for clap.
pub fn parse_filter(text: &str) -> Result<Targets, String> {
    text.parse::<Targets>().map_err(|e| {
        format!(
            "{e}; expected LEVEL or TARGET=LEVEL, comma-separated (e.g. info,troupe_agent=debug)"
        )
    })
}

/// Logs to stderr through `filter`, in colour only on a terminal.
pub fn init(filter: Targets) {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
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
    fn a_bad_filter_is_an_error_naming_the_format() {
        let e = parse_filter("troupe_agent=loud").unwrap_err();
        assert!(e.contains("TARGET=LEVEL"), "{e}");
    }
}
