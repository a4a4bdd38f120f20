//! Each rule against good values and against the metacharacters an attacker would send.

use super::*;

/// What a hostile peer puts in a string to break out of a config line or a shell word.
const HOSTILE: [&str; 12] = [
    "x;touch${IFS}/tmp/p;",
    "$(id)",
    "`id`",
    "a\"b",
    "a'b",
    "a\nb",
    "a\\b",
    "a=b",
    "a#b",
    "a b",
    "a\rb",
    "a\0b",
];

#[test]
fn names_are_dns_label_like() {
    for good in ["node-a", "a", "Node_1", "0", "n".repeat(63).as_str()] {
        assert_eq!(check_name(good), Ok(()), "{good:?}");
    }
    for bad in ["", "-a", "_a", "a.b", "a:b", "é", "n".repeat(64).as_str()] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
    for bad in HOSTILE {
        let e = check_name(bad).unwrap_err();
        assert!(e.contains(&format!("{bad:?}")), "the value is named: {e}");
    }
}

#[test]
fn node_ids_are_hyphenated_uuids() {
    assert_eq!(
        check_node_id("0b0e5a1c-5f3e-4d8a-9c1b-2f6e7d8a9b0c"),
        Ok(())
    );
    assert_eq!(
        check_node_id("0B0E5A1C-5F3E-4D8A-9C1B-2F6E7D8A9B0C"),
        Ok(())
    );
    for bad in [
        "",
        "id-a",
        "0b0e5a1c5f3e4d8a9c1b2f6e7d8a9b0c",
        "{0b0e5a1c-5f3e-4d8a-9c1b-2f6e7d8a9b0c}",
        "urn:uuid:0b0e5a1c-5f3e-4d8a-9c1b-2f6e7d8a9b0c",
        "0b0e5a1c-5f3e-4d8a-9c1b-2f6e7d8a9b0c\n",
    ] {
        assert!(check_node_id(bad).is_err(), "{bad:?}");
    }
    for bad in HOSTILE {
        assert!(check_node_id(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn hosts_are_ip_literals_or_rfc1123_names() {
    for good in [
        "10.0.0.1",
        "2001:db8::4",
        "::1",
        "localhost",
        "db-1.lab.example",
        "a",
        "1a.example",
    ] {
        assert_eq!(check_host(good), Ok(()), "{good:?}");
    }
    for bad in [
        "",
        "[::1]",
        "-a.example",
        "a-.example",
        "a..b",
        "a.example.",
        "fe80::1%eth0",
        "a_b.example",
        format!("{}.example", "a".repeat(64)).as_str(),
        ["a"; 128].join(".").as_str(),
    ] {
        assert!(check_host(bad).is_err(), "{bad:?}");
    }
    for bad in HOSTILE {
        assert!(check_host(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn endpoints_are_tcp_host_port() {
    for good in [
        "tcp://10.0.0.1:5555",
        "tcp://[2001:db8::4]:5555",
        "tcp://node-a.lab:1",
        "tcp://h:65535",
    ] {
        assert_eq!(check_tcp_endpoint(good), Ok(()), "{good:?}");
    }
    for bad in [
        "10.0.0.1:5555",
        "ipc:///tmp/x",
        "tcp://10.0.0.1",
        "tcp://10.0.0.1:0",
        "tcp://10.0.0.1:65536",
        "tcp://10.0.0.1:+80",
        "tcp://2001:db8::4:5555",
        "tcp://[10.0.0.1]:5555",
        "tcp://:5555",
        "tcp://10.0.0.1:5555\nx",
        "tcp://a;b:5555",
        "tcp://$(id):5555",
    ] {
        assert!(check_tcp_endpoint(bad).is_err(), "{bad:?}");
    }
}
