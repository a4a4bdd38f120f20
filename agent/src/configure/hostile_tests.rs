//! Profiles against what they must never write as is: hostile peer strings (refused on
//! arrival, rendered here anyway) and knobs full of metacharacters, read back by each format's
//! reader.

use super::*;

/// Values that end a line, open a quote, start a comment or a command in one format or
/// another: what `configure` refuses on arrival, rendered here anyway (the renderer does not
/// rely on that check).
const HOSTILE: [&str; 11] = [
    "x;touch${IFS}/tmp/p;",
    "$(touch /tmp/p)",
    "`touch /tmp/p`",
    "a\"b'c",
    "end\nINJECTED=1",
    "back\\slash\\",
    "k=v:w",
    "#c !d",
    " padded ",
    "a|b",
    "ünï ✓",
];

/// The keys of a rendered file, as its service reads it.
pub(super) fn keys_read(profile: Profile, text: &str) -> Vec<(String, String)> {
    match profile {
        Profile::Etcd => crate::watcher::env_file::parse(text)
            .into_iter()
            .map(|(_, k, v)| (k, v))
            .collect(),
        _ => super::java_properties::java_properties_load(text)
            .into_iter()
            .collect(),
    }
}

/// Every peer string (cluster name, node-b's name, every address) set to `value`.
fn peer_list_with(value: &str) -> PeerList {
    let mut list = peer_list();
    list.cluster.name = value.to_string();
    list.me.name = value.into();
    list.me.address = value.into();
    for peer in &mut list.peers {
        peer.address = value.into();
    }
    list.peers[1].name = value.into();
    list
}

#[test]
fn hostile_peer_strings_never_change_the_lines_of_a_profile() {
    for profile in [
        Profile::Etcd,
        Profile::Zookeeper,
        Profile::Neo4j,
        Profile::Janusgraph,
        Profile::Titan,
    ] {
        let golden = render_one(profile_watcher(profile)).unwrap();
        let golden_keys: Vec<String> = keys_read(profile, &golden[0].text)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for value in HOSTILE {
            let rendered = render_all(
                &[profile_watcher(profile)],
                &peer_list_with(value).into(),
                &inputs(Path::new("/var/lib/troupe")),
            );
            let files = match rendered {
                Ok(files) => files,
                // A format that cannot hold the value refuses it: nothing is written.
                Err(e) => {
                    assert!(e.cause.contains("cannot be written"), "{profile:?}: {e}");
                    continue;
                }
            };
            let read = keys_read(profile, &files[0].text);
            let keys: Vec<&String> = read.iter().map(|(k, _)| k).collect();
            assert_eq!(
                keys,
                golden_keys.iter().collect::<Vec<_>>(),
                "{profile:?} with {value:?}:\n{}",
                files[0].text
            );
            let expected: &[(&str, String)] = &match profile {
                Profile::Etcd => [("ETCD_NAME", value.to_string())],
                Profile::Zookeeper => [("clientPortAddress", value.to_string())],
                Profile::Neo4j => [("server.default_advertised_address", value.to_string())],
                Profile::Janusgraph | Profile::Titan => {
                    [("storage.hostname", [value; 3].join(","))]
                }
            };
            for (key, want) in expected {
                let got = read.iter().find(|(k, _)| k == key).map(|(_, v)| v);
                assert_eq!(got, Some(want), "{profile:?} {key} with {value:?}");
            }
        }
    }
}

/// Knob values full of metacharacters (each one a valid knob: paths absolute, text
/// non-empty), rendered against `golden/<profile>/hostile/`: the escaping as the file shows it.
#[test]
fn knobs_with_metacharacters_render_escaped() {
    let path = "/srv/da ta/#1=x:y!\\z $(id) `id`";
    let text = "a b;c=d:e#f!g'h\"i$(j)`k`\\l";
    let knobs = |profile: Profile| match profile {
        Profile::Etcd => json!({"data_dir": path, "token": text}),
        Profile::Zookeeper => json!({"data_dir": path}),
        Profile::Neo4j => {
            json!({"data_dir": "/srv/da ta/#1=x:y!\\z", "listen_address": "a b=c:d#e!f'g\"h"})
        }
        Profile::Janusgraph | Profile::Titan => {
            json!({"backend": text, "keyspace": text, "datacenter": text})
        }
    };
    for profile in Profile::ALL {
        let mut w = profile_watcher(profile);
        w.apply("profile_options", &knobs(profile)).unwrap();
        w.check().unwrap();
        let files = render_one(w).unwrap();
        let file = &files[0];
        assert_golden(profile, "hostile", file);
        let read = keys_read(profile, &file.text);
        let value_of = |key: &str| read.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        match profile {
            Profile::Etcd => {
                assert_eq!(value_of("ETCD_DATA_DIR"), Some(path));
                assert_eq!(value_of("ETCD_INITIAL_CLUSTER_TOKEN"), Some(text));
            }
            Profile::Zookeeper => assert_eq!(value_of("dataDir"), Some(path)),
            Profile::Neo4j => {
                assert_eq!(
                    value_of("server.directories.data"),
                    Some("/srv/da ta/#1=x:y!\\z")
                );
                assert_eq!(
                    value_of("server.default_listen_address"),
                    Some("a b=c:d#e!f'g\"h")
                );
            }
            Profile::Janusgraph | Profile::Titan => {
                assert_eq!(value_of("storage.backend"), Some(text))
            }
        }
    }
}

#[test]
fn a_command_expansion_in_a_neo4j_knob_is_refused() {
    let mut w = profile_watcher(Profile::Neo4j);
    w.apply(
        "profile_options",
        &json!({"listen_address": "$(touch /tmp/p)"}),
    )
    .unwrap();
    let e = render_one(w).unwrap_err();
    assert!(e.cause.contains("runs a $(...) value as a command"), "{e}");
}
