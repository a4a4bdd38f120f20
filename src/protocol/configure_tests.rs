//! The `configure` request: its shape, the peer-index assignment, and each bad field named.

use super::*;
use serde_json::json;

/// The id of peer `i`, as agents make them (a UUID).
fn id(i: usize) -> String {
    format!("00000000-0000-4000-8000-00000000000{i}")
}

fn props() -> Map<String, Value> {
    let peer = |i: usize, name: &str| {
        json!({"id": id(i), "name": name, "address": format!("127.0.0.{i}"),
               "index": i, "endpoints": {"control": format!("tcp://127.0.0.{i}:5555")}})
    };
    match json!({
        "cluster": {"name": "lab", "size": 3},
        "self": {"id": id(2), "name": "b", "address": "127.0.0.2", "index": 2},
        "peers": [peer(1, "a"), peer(2, "b"), peer(3, "c")],
        "restart": true,
        "waiting": true,
    }) {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// The properties read as a node reads them: sent in a frame, decoded at the node in one
/// typed pass when they read that way (`typed`), else through the tree.
fn at_node(props: &Map<String, Value>, typed: bool) -> Result<ConfigureRequest, FieldError> {
    let mut request =
        crate::protocol::Request::decode_at_node(&frame_of(props), usize::MAX).unwrap();
    assert_eq!(request.configure.is_some(), typed, "read in one pass");
    assert_eq!(request.properties.is_empty(), typed);
    ConfigureRequest::from_request(&mut request)
}

fn frame_of(props: &Map<String, Value>) -> Vec<u8> {
    crate::protocol::Request::new("configure", props.clone()).encode()
}

/// The error of `edit`ed properties, the same from their text at a node as from the tree.
fn field_error(edit: impl FnOnce(&mut Map<String, Value>)) -> FieldError {
    let mut p = props();
    edit(&mut p);
    let error = ConfigureRequest::from_properties(&p).unwrap_err();
    let typed = decode_frame(&String::from_utf8(frame_of(&p)).unwrap()).is_some();
    assert_eq!(at_node(&p, typed), Err(error.clone()), "read at a node");
    error
}

#[test]
fn a_good_request_parses_and_round_trips() {
    let request = ConfigureRequest::from_properties(&props()).unwrap();
    assert_eq!(request.peers.me.index, 2);
    assert_eq!(
        request.peers.peers[2].endpoints["control"],
        "tcp://127.0.0.3:5555"
    );
    assert!(request.restart);
    assert!(!request.dry_run);
    let again = ConfigureRequest::from_properties(&request.to_properties()).unwrap();
    assert_eq!(again, request);
    assert_eq!(at_node(&props(), true), Ok(request));
}

#[test]
fn null_flags_read_as_false_from_the_text_as_from_the_tree() {
    let mut p = props();
    p.insert("restart".into(), Value::Null);
    p.insert("dry_run".into(), Value::Null);
    let request = at_node(&p, false).unwrap();
    assert!(!request.restart && !request.dry_run);
    assert_eq!(Ok(request), ConfigureRequest::from_properties(&p));
}

#[test]
fn a_configure_without_properties_is_refused_at_a_node_as_anywhere() {
    for frame in [
        &br#"{"command":"configure","id":1}"#[..],
        br#"{"command":"configure","properties":null}"#,
    ] {
        let mut request = crate::protocol::Request::decode(frame, 1024).unwrap();
        let mut at_node = crate::protocol::Request::decode_at_node(frame, 1024).unwrap();
        let error = ConfigureRequest::from_request(&mut request).unwrap_err();
        assert_eq!(error.field, "cluster");
        assert_eq!(ConfigureRequest::from_request(&mut at_node), Err(error));
    }
}

#[test]
fn assign_sorts_by_name_and_numbers_from_one() {
    let peer = |name: &str| Peer {
        id: id(usize::from(name.as_bytes()[0] - b'a') + 1).into(),
        name: name.into(),
        address: format!("{name}.lan").into(),
        index: 0,
        endpoints: Default::default(),
    };
    let list = PeerList::assign("lab", vec![peer("c"), peer("a"), peer("b")], "c").unwrap();
    let order: Vec<(&str, usize)> = list
        .peers
        .iter()
        .map(|p| (p.name.as_str(), p.index))
        .collect();
    assert_eq!(order, [("a", 1), ("b", 2), ("c", 3)]);
    assert_eq!((list.me.name.as_str(), list.me.index), ("c", 3));
    assert_eq!(list.cluster.size, 3);
    list.check().unwrap();
    assert!(PeerList::assign("lab", vec![peer("a")], "z").is_none());
}

#[test]
fn each_bad_field_is_named() {
    type Edit = Box<dyn FnOnce(&mut Map<String, Value>)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "cluster",
            Box::new(|p| {
                p.remove("cluster");
            }),
        ),
        (
            "cluster",
            Box::new(|p| {
                p.insert("cluster".into(), json!({"name": "lab"}));
            }),
        ),
        (
            "cluster.size",
            Box::new(|p| {
                p["cluster"]["size"] = json!(4);
            }),
        ),
        (
            "cluster.name",
            Box::new(|p| {
                p["cluster"]["name"] = json!("");
            }),
        ),
        (
            "self",
            Box::new(|p| {
                p.insert("self".into(), json!("b"));
            }),
        ),
        (
            "self.name",
            Box::new(|p| {
                p["self"]["name"] = json!("z");
            }),
        ),
        (
            "self.index",
            Box::new(|p| {
                p["self"]["index"] = json!(3);
            }),
        ),
        (
            "peers",
            Box::new(|p| {
                p.insert("peers".into(), json!({}));
            }),
        ),
        (
            "peers[1]",
            Box::new(|p| {
                p["peers"][1]["index"] = json!("two");
            }),
        ),
        (
            "peers[2].index",
            Box::new(|p| {
                p["peers"][2]["index"] = json!(1);
            }),
        ),
        (
            "peers[1].name",
            Box::new(|p| {
                p["peers"][1]["name"] = json!("a");
            }),
        ),
        (
            "peers[0].address",
            Box::new(|p| {
                p["peers"][0]["address"] = json!("");
            }),
        ),
        (
            "restart",
            Box::new(|p| {
                p.insert("restart".into(), json!("yes please"));
            }),
        ),
        (
            "dry_run",
            Box::new(|p| {
                p.insert("dry_run".into(), json!(1));
            }),
        ),
    ];
    for (field, edit) in cases {
        let e = field_error(edit);
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().starts_with(&format!("'{field}': ")), "{e}");
    }
}

/// What a hostile peer sends to break out of a config line or a shell word.
const HOSTILE: [&str; 8] = [
    "x;touch${IFS}/tmp/p;",
    "$(touch /tmp/p)",
    "`touch /tmp/p`",
    "a\"b",
    "a'b",
    "a\nb=c",
    "a\\b",
    "a#b:c",
];

#[test]
fn every_peer_string_with_metacharacters_is_refused_naming_field_and_value() {
    type Set = fn(&mut Map<String, Value>, &str);
    let fields: [(&str, Set); 10] = [
        ("cluster.name", |p, v| p["cluster"]["name"] = json!(v)),
        ("self.id", |p, v| p["self"]["id"] = json!(v)),
        ("self.name", |p, v| p["self"]["name"] = json!(v)),
        ("self.address", |p, v| p["self"]["address"] = json!(v)),
        ("peers[1].id", |p, v| p["peers"][1]["id"] = json!(v)),
        ("peers[1].name", |p, v| p["peers"][1]["name"] = json!(v)),
        ("peers[1].address", |p, v| {
            p["peers"][1]["address"] = json!(v)
        }),
        ("peers[1].endpoints.control", |p, v| {
            p["peers"][1]["endpoints"]["control"] = json!(format!("tcp://{v}:5555"))
        }),
        ("peers[1].endpoints.control", |p, v| {
            p["peers"][1]["endpoints"]["control"] = json!(format!("tcp://127.0.0.2:{v}"))
        }),
        ("peers[1].endpoints", |p, v| {
            p["peers"][1]["endpoints"][v] = json!("tcp://127.0.0.2:5555")
        }),
    ];
    for (field, set) in fields {
        for value in HOSTILE {
            let e = field_error(|p| set(p, value));
            assert_eq!(e.field, field, "{value:?}: {e}");
            let quoted = format!("{value:?}");
            assert!(
                e.message.contains(quoted.trim_matches('"')),
                "the value is named: {e}"
            );
        }
    }
}

#[test]
fn a_frame_made_once_for_all_decodes_to_what_assign_makes_for_each_node() {
    let peer = |i: usize, name: &str| Peer {
        id: id(i).into(),
        name: name.into(),
        address: format!("10.0.0.{i}").into(),
        index: 0,
        endpoints: [("control".into(), format!("tcp://10.0.0.{i}:5555").into())].into(),
    };
    let peers = vec![peer(3, "c"), peer(1, "a"), peer(2, "b")];
    let frames = ConfigureFrames::new("lab", peers.clone(), true, false);
    for me in ["a", "b", "c"] {
        let id = json!(format!("id-{me}"));
        let frame = frames.frame(me, &id).unwrap();
        let request = crate::protocol::Request::decode(&frame, usize::MAX).unwrap();
        assert_eq!(request.command, "configure");
        assert_eq!(request.id, id);
        let got = ConfigureRequest::from_properties(&request.properties).unwrap();
        let expected = ConfigureRequest {
            peers: PeerList::assign("lab", peers.clone(), me).unwrap(),
            restart: true,
            dry_run: false,
        };
        assert_eq!(got, expected, "{me}");
    }
    assert_eq!(frames.frame("d", &json!("x")), None);
}
