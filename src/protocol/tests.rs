//! Golden shapes of the wire format, pinned against what Circus 0.19 sends (CIRCUS.md).

use super::*;
use serde_json::{json, Value};

/// Replaces the volatile `time` with 0 so shapes compare exactly.
fn without_time(mut v: Value) -> Value {
    if let Some(t) = v.get_mut("time") {
        assert!(
            t.as_f64().is_some_and(|t| t > 1.7e9),
            "time is an epoch float: {t}"
        );
        *t = json!(0);
    }
    v
}

#[test]
fn ok_reply_has_circus_shape_and_echoes_the_id() {
    let mut fields = Map::new();
    fields.insert("watchers".into(), json!(["echo web", "sleeper"]));
    let reply = without_time(ok_reply(fields, &json!("abc123")));
    assert_eq!(
        reply,
        json!({"status": "ok", "time": 0, "watchers": ["echo web", "sleeper"], "id": "abc123"})
    );
}

#[test]
fn status_of_one_watcher_replaces_ok_as_circus_does() {
    let mut fields = Map::new();
    fields.insert("status".into(), json!("active"));
    let reply = without_time(ok_reply(fields, &json!("3")));
    assert_eq!(reply, json!({"status": "active", "time": 0, "id": "3"}));
}

#[test]
fn error_reply_has_circus_shape() {
    let error = CommandError::new(Errno::UnknownCommand, "unknown command: 'nope'");
    let reply = without_time(error_reply(&error, &json!("e1")));
    assert_eq!(
        reply,
        json!({"status": "error", "reason": "unknown command: 'nope'", "tb": null,
               "time": 0, "errno": 2, "id": "e1"})
    );
}

#[test]
fn errno_numbers_match_circus() {
    let numbers = [
        (Errno::NotSpecified, 0),
        (Errno::InvalidJson, 1),
        (Errno::UnknownCommand, 2),
        (Errno::MessageError, 3),
        (Errno::OsError, 4),
        (Errno::CommandError, 5),
        (Errno::BadMsgDataError, 6),
    ];
    for (errno, n) in numbers {
        assert_eq!(errno as i64, n);
    }
}

#[test]
fn requests_decode_like_circusd() {
    let frame = br#"  {"command":"LIST","properties":{"name":"x"},"id":"7"}  "#;
    let request = Request::decode(frame, 1024).unwrap();
    assert_eq!(request.command, "list");
    assert_eq!(request.properties["name"], "x");
    assert_eq!(request.id, json!("7"));
    assert!(!request.cast);

    let cast = Request::decode(br#"{"command":"list","msg_type":"cast"}"#, 1024).unwrap();
    assert!(cast.cast);
    assert!(cast.properties.is_empty());
    assert_eq!(cast.id, Value::Null);
}

#[test]
fn bad_frames_are_named() {
    let cases: [(&[u8], Errno, &str, Value); 8] = [
        (b"not json", Errno::InvalidJson, "json invalid", Value::Null),
        (
            b"[1,2]",
            Errno::InvalidJson,
            "expected an object, got a list",
            Value::Null,
        ),
        (b"", Errno::InvalidJson, "json invalid", Value::Null),
        (
            b"\xff\xfe",
            Errno::InvalidJson,
            "not valid UTF-8",
            Value::Null,
        ),
        (
            br#"{"id":"a"}"#,
            Errno::MessageError,
            "'command' is missing",
            json!("a"),
        ),
        (
            br#"{"command":5,"id":"b"}"#,
            Errno::MessageError,
            "'command' must be a string",
            json!("b"),
        ),
        (
            br#"{"command":"list","properties":[],"id":"c"}"#,
            Errno::MessageError,
            "'properties' must be an object",
            json!("c"),
        ),
        (
            &[b' '; 2000],
            Errno::MessageError,
            "exceeds the limit of 1024 bytes",
            Value::Null,
        ),
    ];
    for (frame, errno, reason, id) in cases {
        let err = Request::decode(frame, 1024).unwrap_err();
        assert_eq!(
            err.error.errno,
            errno,
            "{:?}",
            String::from_utf8_lossy(frame)
        );
        assert!(
            err.error.reason.contains(reason),
            "{} !~ {reason}",
            err.error.reason
        );
        assert_eq!(err.id, id);
    }
}

#[test]
fn only_a_configure_at_a_node_is_read_into_its_type() {
    let frame = br#"{"command":"Configure","id":3,"properties": {"cluster" : {"name":"x","size":1},
        "self":{"id":"0b0e5a1c-5f3e-4d8a-9c1b-2f6e7d8a9b0c","name":"a","address":"10.0.0.1","index":1},
        "peers":[]}}"#;
    let at_node = Request::decode_at_node(frame, 1024).unwrap();
    assert_eq!(
        (at_node.command.as_str(), &at_node.id),
        ("configure", &json!(3))
    );
    assert!(at_node.properties.is_empty());
    let typed = at_node.configure.as_ref().unwrap();
    assert_eq!(typed.peers.cluster.name, "x");
    assert_eq!(
        Request::decode_at_node(&at_node.encode(), 1024).unwrap(),
        at_node
    );

    let elsewhere = Request::decode(frame, 1024).unwrap();
    assert!(elsewhere.configure.is_none());
    assert_eq!(elsewhere.properties["cluster"]["name"], "x");
    let list = Request::decode_at_node(br#"{"command":"list","properties":{"name":"x"}}"#, 1024);
    assert_eq!(list.unwrap().properties["name"], "x");
    // Not of the types (a null flag): decoded as anywhere, read from the tree later.
    let null_flag = br#"{"command":"configure","properties":{"restart":null},"id":"c"}"#;
    let at_node = Request::decode_at_node(null_flag, 1024).unwrap();
    assert_eq!(at_node, Request::decode(null_flag, 1024).unwrap());
    let bad = br#"{"command":"configure","properties":[1],"id":"c"}"#;
    let refused = Request::decode_at_node(bad, 1024).unwrap_err();
    assert!(refused
        .error
        .reason
        .contains("'properties' must be an object, got a list"));
    assert_eq!(refused, Request::decode(bad, 1024).unwrap_err());
}

#[test]
fn request_round_trips() {
    let mut request = Request::new("Status", Map::new());
    request.id = json!("x");
    let decoded = Request::decode(&request.encode(), 1024).unwrap();
    assert_eq!(decoded, request);
}

#[test]
fn events_use_circus_topics_and_payloads() {
    assert_eq!(
        event_topic("Echo Web", &Event::Start),
        "watcher.echo_web.start"
    );
    let reap = Event::Reap {
        pid: 42,
        exit_code: Some(-15),
    };
    assert_eq!(event_topic("sleeper", &reap), "watcher.sleeper.reap");
    let payload = without_time(reap.payload());
    assert_eq!(
        payload,
        json!({"process_pid": 42, "time": 0, "exit_code": -15})
    );
    let spawn = without_time(Event::Spawn { pid: 7 }.payload());
    assert_eq!(spawn, json!({"process_pid": 7, "time": 0}));
    let failure = without_time(
        Event::HookFailure {
            hook: "before_start".into(),
            error: "exit status: 1".into(),
        }
        .payload(),
    );
    assert_eq!(
        failure,
        json!({"name": "before_start", "time": 0, "error": "exit status: 1"})
    );
    let stop = without_time(Event::Stop { reason: None }.payload());
    assert_eq!(stop, json!({"time": 0}));
}

#[test]
fn memory_is_formatted_like_psutil() {
    assert_eq!(format_mem(512), "512B");
    assert_eq!(format_mem(1024), "1.00K");
    assert_eq!(format_mem(1_530_000), "1.46M");
    assert_eq!(format_mem(32_610_000), "31.10M");
    assert_eq!(format_mem(3 << 30), "3.00G");
}

#[test]
fn cpu_time_is_minutes_seconds_centis() {
    assert_eq!(format_cpu_time(0.0), "0:00.00");
    assert_eq!(format_cpu_time(0.1), "0:00.10");
    assert_eq!(format_cpu_time(65.25), "1:05.25");
    assert_eq!(format_cpu_time(3600.0), "60:00.00");
}

#[test]
fn process_info_serialises_with_circus_field_names() {
    let info = ProcessInfo {
        pid: 3823,
        mem_info1: "1.46M".into(),
        mem_info2: "2.44M".into(),
        cpu: 0.0,
        mem: round_mem_percent(0.00612),
        ctime: "0:00.00".into(),
        username: "root".into(),
        nice: 0,
        create_time: 1795389274.05,
        age: 13.6,
        cmdline: "sleep".into(),
        children: Some(vec![]),
        started: Some(1795389274.28),
        wid: Some(1),
    };
    assert_eq!(
        serde_json::to_value(&info).unwrap(),
        json!({"pid": 3823, "mem_info1": "1.46M", "mem_info2": "2.44M", "cpu": 0.0, "mem": 0.006,
               "ctime": "0:00.00", "username": "root", "nice": 0, "create_time": 1795389274.05,
               "age": 13.6, "cmdline": "sleep", "children": [], "started": 1795389274.28, "wid": 1})
    );
}

#[test]
fn serve_read_commands_may_be_sent_again_and_its_other_commands_may_not() {
    for command in [
        "nodelist",
        "stats_snapshot",
        "stats_history",
        "status",
        "nodeinfo",
    ] {
        assert!(
            Request::new(command, Map::new()).changes_nothing(),
            "{command}"
        );
    }
    for command in [
        "cluster",
        "register_node",
        "unregister_node",
        "configure",
        "reset",
        "stop",
    ] {
        assert!(
            !Request::new(command, Map::new()).changes_nothing(),
            "{command}"
        );
    }
}
