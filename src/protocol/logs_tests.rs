//! Tests of `logs`: every field of a hostile request gets an error naming it.

use super::*;
use serde_json::json;

fn props(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

#[test]
fn a_full_request_round_trips_and_defaults_fill_the_rest() {
    let request = LogsRequest {
        name: "web".into(),
        pid: Some(42),
        stream: StreamSelection::Stderr,
        lines: 10,
        since: Some(1_700_000_000.5),
        offset: Some(7),
    };
    let decoded = LogsRequest::from_properties(&request.to_properties()).unwrap();
    assert_eq!(decoded, request);
    let minimal = LogsRequest::from_properties(&props(json!({"name": "web"}))).unwrap();
    assert_eq!(minimal, LogsRequest::new("web"));
    assert_eq!(minimal.lines, DEFAULT_LOGS_LINES);
}

#[test]
fn hostile_logs_requests_name_the_field_and_the_value() {
    let cases = [
        (json!({}), "name", "is missing"),
        (json!({"name": 3}), "name", "got a number"),
        (json!({"name": ""}), "name", "1 to 256 bytes"),
        (json!({"name": "a\nb"}), "name", "control"),
        (
            json!({"name": "w", "stream": "stdin"}),
            "stream",
            "\"stdin\"",
        ),
        (
            json!({"name": "w", "stream": ["stdout"]}),
            "stream",
            "got a list",
        ),
        (
            json!({"name": "w", "lines": 1_000_000_000u64}),
            "lines",
            "1000000000",
        ),
        (json!({"name": "w", "lines": -1}), "lines", "got -1"),
        (json!({"name": "w", "lines": "10"}), "lines", "got a string"),
        (json!({"name": "w", "pid": 0}), "pid", "from 1"),
        (json!({"name": "w", "pid": 1u64 << 40}), "pid", "4294967295"),
        (
            json!({"name": "w", "since": "5m"}),
            "since",
            "epoch seconds",
        ),
        (json!({"name": "w", "since": -3.0}), "since", "not a time"),
        (json!({"name": "w", "offset": 1.5}), "offset", "1.5"),
    ];
    for (request, field, says) in cases {
        let error = LogsRequest::from_properties(&props(request.clone())).unwrap_err();
        assert_eq!(error.field, field, "{request}: {error}");
        assert!(error.to_string().contains(says), "{request}: {error}");
    }
    let long = "w".repeat(300);
    let error = LogsRequest::from_properties(&props(json!({ "name": long }))).unwrap_err();
    assert!(error.to_string().len() < 300, "the echo is cut: {error}");
}

#[test]
fn hostile_log_file_requests_are_refused_by_field() {
    let cases = [
        (json!({"name": "w"}), "stream"),
        (json!({"name": "w", "stream": "both"}), "stream"),
        (
            json!({"name": "w", "stream": "stdout", "length": 0}),
            "length",
        ),
        (
            json!({"name": "w", "stream": "stdout", "length": 1u64 << 30}),
            "length",
        ),
        (
            json!({"name": "w", "stream": "stdout", "backup": -1}),
            "backup",
        ),
        (
            json!({"name": "w", "stream": "stdout", "offset": "0"}),
            "offset",
        ),
    ];
    for (request, field) in cases {
        let error = LogFileRequest::from_properties(&props(request.clone())).unwrap_err();
        assert_eq!(error.field, field, "{request}: {error}");
    }
    let ok = LogFileRequest::from_properties(&props(json!({"name": "w", "stream": "stderr"})));
    assert_eq!(ok.unwrap().length, crate::bounds::LOG_FILE_CHUNK_BYTES);
}

#[test]
fn topics_and_which_subscriptions_follow_logs() {
    assert_eq!(log_topic("My Web", 12), "log.my_web.12");
    assert!(log_topic("web", 3).starts_with(&log_topic_prefix("web")));
    for follows in [&b"log."[..], b"log.web.", b"log", b"l", b"log.web.12"] {
        assert!(subscription_follows_logs(follows), "{follows:?}");
    }
    for not in [&b""[..], b"watcher.", b"stat.", b"logs", b"log_"] {
        assert!(!subscription_follows_logs(not), "{not:?}");
    }
}

#[test]
fn the_log_commands_change_nothing_and_are_not_circus_reads() {
    for command in [LOGS_COMMAND, LOG_FILES_COMMAND, LOG_FILE_COMMAND] {
        assert!(crate::protocol::Request::new(command, Map::new()).changes_nothing());
        assert!(!crate::protocol::CIRCUS_READ_COMMANDS.contains(&command));
    }
}
