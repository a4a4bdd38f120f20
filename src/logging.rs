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
}
