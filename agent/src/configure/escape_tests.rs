//! Each filter against hostile values, read back by (a model of) its format's real reader:
//! the agent's own env file parser and `/bin/sh` for env files, a model of
//! `java.util.Properties.load` for the Java formats.

use super::*;
use crate::configure::java_properties::java_properties_load;
use std::collections::BTreeMap;

/// Values meant to end a line, open a quote, start a comment or a command.
const HOSTILE: [&str; 16] = [
    "x;touch${IFS}/tmp/p;",
    "$(touch /tmp/p)",
    "`touch /tmp/p`",
    "a\"b'c",
    "end\nINJECTED=1",
    "cr\rINJECTED=1",
    "back\\slash\\",
    "k=v",
    "host:port",
    "#not a comment",
    "!not a comment",
    " leading and trailing ",
    "\ttab",
    "ünïcødé ✓ 𝄞",
    "a\\\nb",
    "=:# !",
];

#[test]
fn the_properties_reader_model_reads_what_java_documents() {
    let text = "# c\n! c\n  a = 1\nb:2\nc 3\nd=x\\\n   y\ne=\\u00e9\\n\\ \nf\n";
    let map = java_properties_load(text);
    let expected: BTreeMap<String, String> = [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("d", "xy"),
        ("e", "é\n "),
        ("f", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(map, expected);
}

#[test]
fn properties_values_read_back_exactly_and_stay_on_their_line() {
    for value in HOSTILE {
        // A piece between literal text, as templates write `{{ host }}:{{ port }}`.
        let text = format!(
            "# {}\nkey={}:tail\nnext=1\n",
            properties(value),
            properties(value)
        );
        let map = java_properties_load(&text);
        assert_eq!(map.len(), 2, "{value:?} added or removed a key:\n{text}");
        assert_eq!(map["key"], format!("{value}:tail"), "{text}");
        assert_eq!(map["next"], "1");
        assert!(
            text.is_ascii(),
            "the file is read as ISO-8859-1: only ASCII is written"
        );
    }
}

#[test]
fn properties_leaves_plain_values_alone() {
    for plain in ["10.0.0.11", "cql", "/srv/troupe/data", "node-b", "9042"] {
        assert_eq!(properties(plain), plain);
    }
}

#[test]
fn zoo_cfg_refuses_what_zookeeper_splits_server_values_on() {
    assert_eq!(zoo_cfg("/srv/zk data").unwrap(), "/srv/zk\\ data");
    for value in ["a;2181", "10.0.0.1|10.0.0.2"] {
        let e = zoo_cfg(value).unwrap_err().to_string();
        assert!(e.contains("zoo.cfg"), "{e}");
    }
}

#[test]
fn neo4j_conf_refuses_a_command_expansion() {
    assert_eq!(neo4j_conf("10.0.0.12").unwrap(), "10.0.0.12");
    assert_eq!(neo4j_conf("a$b").unwrap(), "a$b");
    for value in ["$(id)", "  $(touch /tmp/p)  ", "x$(y)"] {
        let e = neo4j_conf(value).unwrap_err().to_string();
        assert!(e.contains("command"), "{e}");
    }
}

#[test]
fn env_file_values_read_back_exactly_by_the_agent_and_by_sh() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let mut values: Vec<String> = HOSTILE
        .iter()
        .filter(|v| !v.contains(['\n', '\r']))
        .map(|v| v.to_string())
        .collect();
    values.push(format!(
        "$(touch {m});`touch {m}`;touch {m}",
        m = marker.display()
    ));
    for value in values {
        let escaped = env_file(&value).unwrap();
        let text = format!("# {escaped}\nKEY={escaped}:tail\nNEXT=1\n");
        let parsed = crate::watcher::env_file::parse(&text);
        let read: Vec<(&str, &str)> = parsed
            .iter()
            .map(|(_, k, v)| (k.as_str(), v.as_str()))
            .collect();
        let expected = format!("{value}:tail");
        assert_eq!(read, [("KEY", expected.as_str()), ("NEXT", "1")], "{text}");

        let file = dir.path().join("test.env");
        std::fs::write(&file, &text).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", ". \"$1\" && printf '%s' \"$KEY\"", "sh"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "sh failed on {text:?}: {out:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected, "{text}");
        assert!(!marker.exists(), "sh ran a command from {text:?}");
    }
}

#[test]
fn env_file_refuses_what_it_cannot_write() {
    for value in ["a\nB=1", "a\rb", "a\0b"] {
        let e = env_file(value).unwrap_err().to_string();
        assert!(e.contains("env file"), "{e}");
    }
    for plain in [
        "node-b",
        "http://10.0.0.11:2380",
        "troupe-lab",
        "/srv/etcd/data",
    ] {
        assert_eq!(env_file(plain).unwrap(), plain);
    }
}

#[test]
fn every_value_of_every_built_in_profile_goes_through_its_format_filter() {
    let sources = [
        (include_str!("profiles/etcd.env.j2"), "env_file"),
        (include_str!("profiles/zoo.cfg.j2"), "zoo_cfg"),
        (include_str!("profiles/neo4j.conf.j2"), "neo4j_conf"),
        (
            include_str!("profiles/janusgraph.properties.j2"),
            "properties",
        ),
        (include_str!("profiles/titan.properties.j2"), "properties"),
    ];
    for (source, filter) in sources {
        let mut rest = source;
        let mut count = 0;
        while let Some(start) = rest.find("{{") {
            let end = rest[start..].find("}}").unwrap() + start;
            let expression = rest[start + 2..end].trim();
            assert!(
                expression.ends_with(&format!("| {filter}")),
                "{{{{ {expression} }}}} is written without the {filter} filter"
            );
            count += 1;
            rest = &rest[end + 2..];
        }
        assert!(count > 3, "{filter}: no values found");
    }
}
