//! The bodies of the `cargo fuzz` targets for the core's parsers (fuzz/README.md), here so that
//! the fuzzers (nightly, fuzz/) and the corpus regression tests (stable, `cargo test`) run the
//! same code. Each body panics when a property beyond "no panic" fails: what a parser accepts
//! must survive being written back and read again.

use crate::config::controller::ControllerConfig;
use crate::config::{AgentConfig, ServiceOptions, WatcherConfig};
use crate::discovery::announce::{AnnounceRecord, CircusUdpAnswer};
use crate::discovery::parse_targets;
use crate::protocol::{ConfigureRequest, Request};
use std::path::{Path, PathBuf};

/// The largest control frame a target decodes: the agent's default limit.
const MAX_FRAME: usize = crate::config::DEFAULT_MAX_MESSAGE_SIZE as usize;

/// A control frame as the agent's ROUTER socket hands it over: a decoded request re-encodes
/// to a frame that decodes to the same request; a refused one says why. Decoded as a node
/// does, it is the same request or the same refusal, a `configure` read into the same request
/// (or refused the same way) as through the JSON tree. A `configure` request's properties read
/// back the same once written.
pub fn control_request(frame: &[u8]) {
    let (request, mut at_node) = match (
        Request::decode(frame, MAX_FRAME),
        Request::decode_at_node(frame, MAX_FRAME),
    ) {
        (Ok(request), Ok(at_node)) => (request, at_node),
        (Err(refused), Err(refused_at_node)) => {
            assert!(
                !refused.error.reason.is_empty(),
                "a refusal without a reason"
            );
            assert_eq!(refused, refused_at_node, "refused otherwise at a node");
            return;
        }
        (request, at_node) => panic!("decoded {request:?} but at a node {at_node:?}"),
    };
    type Decoder = fn(&[u8], usize) -> Result<Request, crate::protocol::RequestError>;
    let decoders: [(&Request, Decoder); 2] = [
        (&request, Request::decode),
        (&at_node, Request::decode_at_node),
    ];
    for (decoded, decode) in decoders {
        let again = decode(&decoded.encode(), usize::MAX)
            .unwrap_or_else(|e| panic!("{decoded:?} re-encoded does not decode: {e:?}"));
        assert_eq!(&again, decoded, "a request changed through encode/decode");
    }
    assert_eq!(
        (&at_node.command, &at_node.id, at_node.cast),
        (&request.command, &request.id, request.cast),
        "decoded otherwise at a node"
    );
    let _ = (request.brings_code(), request.changes_nothing());
    if request.command == "configure" {
        let from_tree = ConfigureRequest::from_properties(&request.properties);
        assert_eq!(
            ConfigureRequest::from_request(&mut at_node),
            from_tree,
            "a configure read otherwise at a node"
        );
        if let Ok(configure) = from_tree {
            let back = ConfigureRequest::from_properties(&configure.to_properties())
                .unwrap_or_else(|e| panic!("{configure:?} written back is refused: {e:?}"));
            assert_eq!(
                back, configure,
                "a configure request changed through its properties"
            );
        }
    }
}

/// A `troupe-agent.toml` and a `troupe.toml`: every problem names the file; an accepted
/// agent config has valid, case-insensitively unique watcher names whose service options
/// survive `get` and `set`.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    const FILE: &str = "fuzz.toml";
    match AgentConfig::parse(text, FILE) {
        Ok(config) => {
            let mut names = std::collections::BTreeSet::new();
            for watcher in &config.watchers {
                crate::config::check_watcher_name(&watcher.name)
                    .unwrap_or_else(|e| panic!("accepted watcher name {:?}: {e}", watcher.name));
                assert!(
                    names.insert(watcher.name.to_lowercase()),
                    "two watchers named {:?}",
                    watcher.name
                );
                service_options_round_trip(watcher);
            }
        }
        Err(error) => assert_problems_name(&error.to_string(), FILE),
    }
    if let Err(error) = ControllerConfig::parse(text, FILE) {
        assert_problems_name(&error.to_string(), FILE);
    }
}

fn assert_problems_name(rendered: &str, file: &str) {
    for line in rendered.lines().filter(|line| !line.starts_with(' ')) {
        // A problem's message may span lines (a TOML excerpt); each problem starts with it.
        if line.starts_with(&format!("{file}: ")) {
            return;
        }
    }
    panic!("no problem names {file}: {rendered:?}");
}

fn service_options_round_trip(watcher: &WatcherConfig) {
    let options = watcher.options_json();
    let mut copy = WatcherConfig::new(&watcher.name, &watcher.cmd);
    for key in ServiceOptions::KEYS {
        copy.apply(key, &options[key]).unwrap_or_else(|e| {
            panic!(
                "{key} = {} as `get` shows it is refused by `set`: {e}",
                options[key]
            )
        });
    }
    assert_eq!(
        copy.service, watcher.service,
        "service options changed through get/set"
    );
}

/// A probe list (`--probe`, `TROUPE_PROBE`, troupe.toml): an accepted list displays as a
/// list that parses back to the same targets, and its length is what it expands to.
pub fn probe_range(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(targets) = parse_targets(text) else {
        return;
    };
    let shown = targets.to_string();
    let again =
        parse_targets(&shown).unwrap_or_else(|e| panic!("{text:?} shown as {shown:?}: {e}"));
    assert_eq!(
        again, targets,
        "{text:?} shown as {shown:?} reads back differently"
    );
    if targets.len() <= 1024 {
        assert_eq!(targets.iter().count() as u64, targets.len(), "{text:?}");
    }
    let _ = (targets.check_size(false), targets.this_host_items());
}

/// An mDNS TXT record as RFC 6763 lays it out (length-prefixed `key=value` strings, the first
/// of a repeated key counting): an accepted record writes back to a TXT that reads the same.
pub fn mdns_txt(data: &[u8]) {
    let mut pairs: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let entry = &tail[..usize::from(len).min(tail.len())];
        rest = &tail[entry.len()..];
        match entry.iter().position(|&b| b == b'=') {
            Some(at) => pairs.push((&entry[..at], Some(&entry[at + 1..]))),
            None => pairs.push((entry, None)),
        }
    }
    let lookup = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == key.as_bytes())
            .and_then(|(_, value)| std::str::from_utf8((*value)?).ok())
    };
    let Ok(record) = AnnounceRecord::from_txt(lookup) else {
        return;
    };
    let txt = record.to_txt();
    let back = AnnounceRecord::from_txt(|key| txt.get(key).map(String::as_str))
        .unwrap_or_else(|e| panic!("{record:?} written as TXT is refused: {e}"));
    assert_eq!(back, record, "a record changed through its TXT");
}

/// A datagram answering Circus UDP discovery, from anyone on the segment: an accepted answer
/// names a valid endpoint and writes back to a datagram that reads the same.
pub fn circus_udp(datagram: &[u8]) {
    let Ok(answer) = CircusUdpAnswer::parse(datagram) else {
        return;
    };
    crate::config::names::check_tcp_endpoint(&answer.endpoint)
        .unwrap_or_else(|e| panic!("accepted endpoint {e}"));
    let back = CircusUdpAnswer::parse(answer.to_json().as_bytes())
        .unwrap_or_else(|e| panic!("{answer:?} written back is refused: {e}"));
    assert_eq!(back, answer, "an answer changed through its datagram");
}

/// The committed inputs of one fuzz target: `fuzz/corpus/<target>/` and the crash inputs
/// kept as regressions in `fuzz/regressions/<target>/`, each with its path.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            inputs.push((path, bytes));
        }
    }
    inputs.sort();
    inputs
}

/// Feeds every committed input of `target` to `body`, naming the input that fails; panics if
/// the target has no committed input at all (a corpus lost is a test that cannot fail).
pub fn replay(target: &str, body: fn(&[u8])) {
    let inputs = corpus(target);
    assert!(
        !inputs.is_empty(),
        "fuzz/corpus/{target}/ is empty or missing: run `bench/run fuzz` and commit the corpus"
    );
    for (path, bytes) in inputs {
        if std::panic::catch_unwind(|| body(&bytes)).is_err() {
            panic!("fuzz input {} fails (see the panic above)", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_request_corpus() {
        replay("control_request", control_request);
    }

    #[test]
    fn config_toml_corpus() {
        replay("config_toml", config_toml);
    }

    #[test]
    fn probe_range_corpus() {
        replay("probe_range", probe_range);
    }

    #[test]
    fn mdns_txt_corpus() {
        replay("mdns_txt", mdns_txt);
    }

    #[test]
    fn circus_udp_corpus() {
        replay("circus_udp", circus_udp);
    }
}
