//! Tests of `range`.

use super::*;
use std::time::{Duration, Instant};

fn v4(s: &str, port: u16) -> ProbeTarget {
    ProbeTarget::Addr(SocketAddr::new(s.parse().unwrap(), port))
}

fn v6(s: &str, port: u16) -> ProbeTarget {
    ProbeTarget::Addr(SocketAddr::new(s.parse::<Ipv6Addr>().unwrap().into(), port))
}

fn host(s: &str, port: u16) -> ProbeTarget {
    ProbeTarget::Host(s.to_string(), port)
}

fn parse(text: &str) -> ProbeTargets {
    parse_targets(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

fn parse_err(text: &str) -> RangeError {
    match parse_targets(text) {
        Ok(t) => panic!("{text:?} should not parse, got {t:?}"),
        Err(e) => e,
    }
}

/// Every single-item syntax: (input, first, last, len).
#[test]
fn expansions() {
    let p = DEFAULT_PROBE_PORT;
    let cases: Vec<(&str, ProbeTarget, ProbeTarget, u64)> = vec![
        // single addresses and hosts
        ("10.0.0.1", v4("10.0.0.1", p), v4("10.0.0.1", p), 1),
        ("  10.0.0.1\t", v4("10.0.0.1", p), v4("10.0.0.1", p), 1),
        ("0.0.0.0", v4("0.0.0.0", p), v4("0.0.0.0", p), 1),
        (
            "255.255.255.255",
            v4("255.255.255.255", p),
            v4("255.255.255.255", p),
            1,
        ),
        (
            "10.0.0.1:6000",
            v4("10.0.0.1", 6000),
            v4("10.0.0.1", 6000),
            1,
        ),
        (
            "10.0.0.1:65535",
            v4("10.0.0.1", 65535),
            v4("10.0.0.1", 65535),
            1,
        ),
        ("10.0.0.1:1", v4("10.0.0.1", 1), v4("10.0.0.1", 1), 1),
        ("localhost", host("localhost", p), host("localhost", p), 1),
        ("db1:6001", host("db1", 6001), host("db1", 6001), 1),
        (
            "agent-1.example.com",
            host("agent-1.example.com", p),
            host("agent-1.example.com", p),
            1,
        ),
        (
            "agent-1.example.com:7000",
            host("agent-1.example.com", 7000),
            host("agent-1.example.com", 7000),
            1,
        ),
        (
            "Node7.LAN.",
            host("Node7.LAN.", p),
            host("Node7.LAN.", p),
            1,
        ),
        // last-octet ranges
        (
            "192.168.0.1-32",
            v4("192.168.0.1", p),
            v4("192.168.0.32", p),
            32,
        ),
        (
            "192.168.0.0-255",
            v4("192.168.0.0", p),
            v4("192.168.0.255", p),
            256,
        ),
        ("10.0.0.7-7", v4("10.0.0.7", p), v4("10.0.0.7", p), 1),
        (
            "10.0.0.1-20:6000",
            v4("10.0.0.1", 6000),
            v4("10.0.0.20", 6000),
            20,
        ),
        // full ranges
        (
            "192.168.0.1-192.168.0.40",
            v4("192.168.0.1", p),
            v4("192.168.0.40", p),
            40,
        ),
        (
            "10.0.0.250-10.0.1.3",
            v4("10.0.0.250", p),
            v4("10.0.1.3", p),
            10,
        ),
        ("10.0.0.9-10.0.0.9", v4("10.0.0.9", p), v4("10.0.0.9", p), 1),
        (
            "10.0.0.1-10.0.0.20:6000",
            v4("10.0.0.1", 6000),
            v4("10.0.0.20", 6000),
            20,
        ),
        (
            "0.0.0.0-255.255.255.255",
            v4("0.0.0.0", p),
            v4("255.255.255.255", p),
            1 << 32,
        ),
        // CIDR: network and broadcast skipped for /30 and shorter
        ("10.1.2.0/24", v4("10.1.2.1", p), v4("10.1.2.254", p), 254),
        ("10.1.2.7/24", v4("10.1.2.1", p), v4("10.1.2.254", p), 254),
        (
            "10.0.0.0/28:6000",
            v4("10.0.0.1", 6000),
            v4("10.0.0.14", 6000),
            14,
        ),
        ("10.0.0.0/30", v4("10.0.0.1", p), v4("10.0.0.2", p), 2),
        ("10.0.0.4/31", v4("10.0.0.4", p), v4("10.0.0.5", p), 2),
        ("10.0.0.5/31", v4("10.0.0.4", p), v4("10.0.0.5", p), 2),
        ("10.0.0.5/32", v4("10.0.0.5", p), v4("10.0.0.5", p), 1),
        (
            "172.16.0.0/16",
            v4("172.16.0.1", p),
            v4("172.16.255.254", p),
            65_534,
        ),
        (
            "10.0.0.0/8",
            v4("10.0.0.1", p),
            v4("10.255.255.254", p),
            16_777_214,
        ),
        (
            "10.20.30.40/8",
            v4("10.0.0.1", p),
            v4("10.255.255.254", p),
            16_777_214,
        ),
        (
            "0.0.0.0/0",
            v4("0.0.0.1", p),
            v4("255.255.255.254", p),
            (1 << 32) - 2,
        ),
        (
            "1.2.3.4/0",
            v4("0.0.0.1", p),
            v4("255.255.255.254", p),
            (1 << 32) - 2,
        ),
        // IPv6
        ("[::1]:5555", v6("::1", 5555), v6("::1", 5555), 1),
        ("[::1]:6000", v6("::1", 6000), v6("::1", 6000), 1),
        ("[::1]", v6("::1", p), v6("::1", p), 1),
        ("::1", v6("::1", p), v6("::1", p), 1),
        ("fe80::1:2", v6("fe80::1:2", p), v6("fe80::1:2", p), 1),
        (
            "[2001:db8::7]:7000",
            v6("2001:db8::7", 7000),
            v6("2001:db8::7", 7000),
            1,
        ),
        (
            "[::ffff:10.0.0.1]:6000",
            v6("::ffff:10.0.0.1", 6000),
            v6("::ffff:10.0.0.1", 6000),
            1,
        ),
    ];
    for (input, first, last, len) in cases {
        let targets = parse(input);
        assert_eq!(targets.len(), len, "len of {input:?}");
        assert!(!targets.is_empty(), "{input:?} is empty");
        assert_eq!(targets.iter().next(), Some(first), "first of {input:?}");
        // nth skips in O(1), so this checks the end of a /0 too.
        let end = usize::try_from(len - 1).unwrap();
        assert_eq!(
            targets.iter().nth(end),
            Some(last.clone()),
            "last of {input:?}"
        );
        assert_eq!(
            targets.iter().nth(end + 1),
            None,
            "past the end of {input:?}"
        );
        // Walking small ones fully agrees.
        if len <= 70_000 {
            assert_eq!(
                targets.iter().last(),
                Some(last),
                "walked last of {input:?}"
            );
            assert_eq!(targets.iter().count() as u64, len, "count of {input:?}");
        }
    }
}

#[test]
fn exact_small_expansions() {
    let p = DEFAULT_PROBE_PORT;
    let cases: Vec<(&str, Vec<ProbeTarget>)> = vec![
        (
            "10.0.0.1-3",
            vec![v4("10.0.0.1", p), v4("10.0.0.2", p), v4("10.0.0.3", p)],
        ),
        (
            "10.0.0.255-10.0.1.1",
            vec![v4("10.0.0.255", p), v4("10.0.1.0", p), v4("10.0.1.1", p)],
        ),
        (
            "10.0.0.0/30:6000",
            vec![v4("10.0.0.1", 6000), v4("10.0.0.2", 6000)],
        ),
        ("10.0.0.3/31", vec![v4("10.0.0.2", p), v4("10.0.0.3", p)]),
        (
            "10.0.0.0/29",
            (1..=6).map(|n| v4(&format!("10.0.0.{n}"), p)).collect(),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            parse(input).iter().collect::<Vec<_>>(),
            expected,
            "{input:?}"
        );
    }
}

#[test]
fn lists_keep_order_and_duplicates() {
    let p = DEFAULT_PROBE_PORT;
    let cases: Vec<(&str, Vec<ProbeTarget>)> = vec![
        (
            "10.0.0.1-2, 10.0.0.9 ,db1:7000,[::1]",
            vec![
                v4("10.0.0.1", p),
                v4("10.0.0.2", p),
                v4("10.0.0.9", p),
                host("db1", 7000),
                v6("::1", p),
            ],
        ),
        (
            "10.0.0.1,10.0.0.1",
            vec![v4("10.0.0.1", p), v4("10.0.0.1", p)],
        ),
        (
            "10.0.0.0/31:6000 ,\t192.168.1.5-6",
            vec![
                v4("10.0.0.0", 6000),
                v4("10.0.0.1", 6000),
                v4("192.168.1.5", p),
                v4("192.168.1.6", p),
            ],
        ),
        (
            " [fe80::1]:6000 , localhost , 127.0.0.1:5556 ",
            vec![
                v6("fe80::1", 6000),
                host("localhost", p),
                v4("127.0.0.1", 5556),
            ],
        ),
    ];
    for (input, expected) in cases {
        let targets = parse(input);
        assert_eq!(targets.len(), expected.len() as u64, "{input:?}");
        assert_eq!(targets.iter().collect::<Vec<_>>(), expected, "{input:?}");
    }
}

/// Every refusal names its token in the message: (input, token, reason fragment).
#[test]
fn garbage_is_refused_naming_the_token() {
    let cases: &[(&str, &str, &str)] = &[
        // the brief's garbage
        ("abc-def", "abc-def", "\"abc\" is not an IPv4 address"),
        ("1.2.3", "1.2.3", "expected 4 dot-separated octets"),
        ("10.0.0.1-", "10.0.0.1-", "range has no end"),
        ("-5", "-5", "range has no start"),
        ("", "", "no targets given"),
        ("   ", "   ", "no targets given"),
        (",,", ",,", "item 1 of the list is empty"),
        // empty items
        ("10.0.0.1,", "10.0.0.1,", "item 2 of the list is empty"),
        (
            "10.0.0.1, ,10.0.0.2",
            "10.0.0.1, ,10.0.0.2",
            "item 2 of the list is empty",
        ),
        (",10.0.0.1", ",10.0.0.1", "item 1 of the list is empty"),
        // octets
        ("10.0.0.300", "10.0.0.300", "octet 300 is over 255"),
        (
            "10.0.0.1-10.0.0.256",
            "10.0.0.1-10.0.0.256",
            "octet 256 is over 255",
        ),
        (
            "10.0.0.99999999999",
            "10.0.0.99999999999",
            "octet 99999999999 is over 255",
        ),
        ("10.0.0.01", "10.0.0.01", "octet 01 has a leading zero"),
        ("10..0.1", "10..0.1", "empty octet"),
        ("1.2.3.4.5", "1.2.3.4.5", "expected 4 dot-separated octets"),
        ("5555", "5555", "expected 4 dot-separated octets"),
        ("1.2.3-4", "1.2.3-4", "expected 4 dot-separated octets"),
        // ranges
        ("10.0.0.1-256", "10.0.0.1-256", "range end 256 is over 255"),
        (
            "10.0.0.1-1000",
            "10.0.0.1-1000",
            "range end 1000 is over 255",
        ),
        (
            "10.0.0.20-5",
            "10.0.0.20-5",
            "start 10.0.0.20 is after end 10.0.0.5",
        ),
        (
            "10.0.0.20-10.0.0.5",
            "10.0.0.20-10.0.0.5",
            "start 10.0.0.20 is after end 10.0.0.5",
        ),
        (
            "10.0.1.0-10.0.0.255",
            "10.0.1.0-10.0.0.255",
            "start 10.0.1.0 is after end 10.0.0.255",
        ),
        (
            "10.0.0.1-20-30",
            "10.0.0.1-20-30",
            "range end \"20-30\" is neither",
        ),
        (
            "10.0.0.1-abc",
            "10.0.0.1-abc",
            "range end \"abc\" is neither",
        ),
        ("10.0.0.1 - 20", "10.0.0.1 - 20", "is not an IPv4 address"),
        ("agent-1", "agent-1", "must include its domain"),
        // CIDR
        ("10.0.0.0/33", "10.0.0.0/33", "prefix /33 is over 32"),
        (
            "10.0.0.0/99999999999",
            "10.0.0.0/99999999999",
            "prefix /99999999999 is over 32",
        ),
        ("10.0.0.0/", "10.0.0.0/", "missing prefix length"),
        ("/24", "/24", "missing address before '/'"),
        (
            "10.0.0.0/abc",
            "10.0.0.0/abc",
            "prefix \"abc\" is not a number",
        ),
        (
            "10.0.0.0/-8",
            "10.0.0.0/-8",
            "prefix \"-8\" is not a number",
        ),
        ("db1/24", "db1/24", "only IPv4 networks"),
        ("10.0.0/24", "10.0.0/24", "expected 4 dot-separated octets"),
        ("10.0.0.256/24", "10.0.0.256/24", "octet 256 is over 255"),
        // ports
        ("10.0.0.1:0", "10.0.0.1:0", "port 0 is not in 1-65535"),
        (
            "10.0.0.1:65536",
            "10.0.0.1:65536",
            "port 65536 is not in 1-65535",
        ),
        (
            "10.0.0.1:99999999999",
            "10.0.0.1:99999999999",
            "port 99999999999 is not in 1-65535",
        ),
        ("10.0.0.1-20:0", "10.0.0.1-20:0", "port 0 is not in 1-65535"),
        (
            "10.0.0.0/24:70000",
            "10.0.0.0/24:70000",
            "port 70000 is not in 1-65535",
        ),
        ("db1:0", "db1:0", "port 0 is not in 1-65535"),
        ("10.0.0.1:", "10.0.0.1:", "missing port after ':'"),
        (
            "10.0.0.1:abc",
            "10.0.0.1:abc",
            "port \"abc\" is not a number",
        ),
        ("10.0.0.1:-1", "10.0.0.1:-1", "port \"-1\" is not a number"),
        (":5555", ":5555", "missing address before ':'"),
        // IPv6
        ("[::1]:0", "[::1]:0", "port 0 is not in 1-65535"),
        ("[::1]:", "[::1]:", "missing port after ':'"),
        ("[::1", "[::1", "missing ']'"),
        ("[::1]x", "[::1]x", "unexpected \"x\" after ']'"),
        ("[]", "[]", "\"\" is not an IPv6 address"),
        (
            "[zz::1]:5555",
            "[zz::1]:5555",
            "\"zz::1\" is not an IPv6 address",
        ),
        (
            "[10.0.0.1]:5555",
            "[10.0.0.1]:5555",
            "brackets are only for IPv6",
        ),
        ("[::1]/64", "[::1]/64", "IPv6 ranges are not supported"),
        ("[::1/64]", "[::1/64]", "IPv6 ranges are not supported"),
        ("::1/64", "::1/64", "IPv6 ranges are not supported"),
        ("fe80::1%eth0", "fe80::1%eth0", "not an IPv6 address"),
        ("1:2:3", "1:2:3", "not an IPv6 address"),
        // hostnames
        (
            "host name",
            "host name",
            "is not an IPv4 address, IPv4 range or hostname",
        ),
        (
            "host_name",
            "host_name",
            "is not an IPv4 address, IPv4 range or hostname",
        ),
        (
            "a..b",
            "a..b",
            "is not an IPv4 address, IPv4 range or hostname",
        ),
        ("-host.lan", "-host.lan", "range has no start"),
        ("bad-.lan", "bad-.lan", "\"bad\" is not an IPv4 address"),
        // a bad item inside a list is named on its own
        (
            "10.0.0.1, 10.0.0.300 ,10.0.0.3",
            "10.0.0.300",
            "octet 300 is over 255",
        ),
        ("db1,abc-def", "abc-def", "\"abc\" is not an IPv4 address"),
    ];
    for &(input, token, reason) in cases {
        let err = parse_err(input);
        let msg = err.to_string();
        let quoted = format!("bad probe range {token:?}: ");
        assert!(
            msg.starts_with(&quoted),
            "{input:?}: {msg:?} should start with {quoted:?}"
        );
        assert!(
            msg.contains(reason),
            "{input:?}: {msg:?} should mention {reason:?}"
        );
    }
}

#[test]
fn error_variants() {
    let cases: Vec<(&str, RangeError)> = vec![
        (
            "10.0.0.300",
            RangeError::OctetTooLarge {
                token: "10.0.0.300".into(),
                octet: "300".into(),
            },
        ),
        (
            "10.0.0.20-5",
            RangeError::Reversed {
                token: "10.0.0.20-5".into(),
                start: Ipv4Addr::new(10, 0, 0, 20),
                end: Ipv4Addr::new(10, 0, 0, 5),
            },
        ),
        (
            "10.0.0.9-10.0.0.8:6000",
            RangeError::Reversed {
                token: "10.0.0.9-10.0.0.8:6000".into(),
                start: Ipv4Addr::new(10, 0, 0, 9),
                end: Ipv4Addr::new(10, 0, 0, 8),
            },
        ),
        (
            "10.0.0.1-300",
            RangeError::RangeEndTooLarge {
                token: "10.0.0.1-300".into(),
                end: "300".into(),
            },
        ),
        (
            "10.0.0.0/33",
            RangeError::PrefixTooLong {
                token: "10.0.0.0/33".into(),
                prefix: "33".into(),
            },
        ),
        (
            "[::1]:65536",
            RangeError::BadPort {
                token: "[::1]:65536".into(),
                port: "65536".into(),
            },
        ),
        ("", RangeError::Empty { text: "".into() }),
        (
            " , ",
            RangeError::EmptyItem {
                list: ",".into(),
                position: 1,
            },
        ),
        (
            "a,,b",
            RangeError::EmptyItem {
                list: "a,,b".into(),
                position: 2,
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_err(input), expected, "{input:?}");
    }
    assert_eq!(
        parse_err("10.0.0.300").to_string(),
        r#"bad probe range "10.0.0.300": octet 300 is over 255"#
    );
}

#[test]
fn host_bits_are_normalised_to_the_network() {
    for input in ["10.1.2.0/24", "10.1.2.7/24", "10.1.2.255/24"] {
        assert_eq!(parse(input), parse("10.1.2.1-254"), "{input:?}");
    }
    assert_eq!(
        parse("192.168.77.77/16"),
        parse("192.168.0.1-192.168.255.254")
    );
}

#[test]
fn network_and_broadcast_are_skipped_only_for_30_and_shorter() {
    // (input, contains network?, contains broadcast?)
    let cases = [
        ("10.0.0.0/24", "10.0.0.0", "10.0.0.255", false),
        ("10.0.0.0/30", "10.0.0.0", "10.0.0.3", false),
        ("10.0.0.0/31", "10.0.0.0", "10.0.0.1", true),
        ("10.0.0.0/32", "10.0.0.0", "10.0.0.0", true),
        // explicit ranges always include their ends
        ("10.0.0.0-255", "10.0.0.0", "10.0.0.255", true),
    ];
    for (input, network, broadcast, included) in cases {
        let all: Vec<_> = parse(input).iter().collect();
        let p = DEFAULT_PROBE_PORT;
        assert_eq!(all.contains(&v4(network, p)), included, "{input:?} network");
        assert_eq!(
            all.contains(&v4(broadcast, p)),
            included,
            "{input:?} broadcast"
        );
    }
}

#[test]
fn check_size_limit() {
    // (input, len, allowed without force)
    let cases: &[(&str, u64, bool)] = &[
        ("10.0.0.1", 1, true),
        ("10.0.0.0/16", 65_534, true),
        ("10.0.0.0-10.0.255.255", 65_536, true),
        ("10.0.0.0/17,10.0.128.0-10.0.255.255", 32_766 + 32_768, true),
        (
            "10.0.0.0-10.0.127.255,10.0.128.0-10.0.255.255",
            65_536,
            true,
        ),
        ("10.0.0.0-10.1.0.0", 65_537, false),
        ("10.0.0.0-10.0.255.255,db1", 65_537, false),
        ("10.0.0.0/15", 131_070, false),
        ("10.0.0.0/8", 16_777_214, false),
        ("0.0.0.0/0", 4_294_967_294, false),
    ];
    for &(input, len, allowed) in cases {
        let targets = parse(input);
        assert_eq!(targets.len(), len, "{input:?}");
        assert_eq!(targets.check_size(false).is_ok(), allowed, "{input:?}");
        assert_eq!(targets.check_size(true), Ok(()), "{input:?} forced");
    }

    let err = parse("10.0.0.0/15").check_size(false).unwrap_err();
    assert_eq!(
        err,
        RangeError::TooLarge {
            count: 131_070,
            limit: MAX_ADDRESSES_WITHOUT_FORCE,
            largest: "10.0.0.1-10.1.255.254:5555".into(),
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("131070 addresses"), "{msg}");
    assert!(msg.contains("65536"), "{msg}");
    assert!(msg.contains("--force"), "{msg}");
    assert!(msg.contains("\"10.0.0.1-10.1.255.254:5555\""), "{msg}");

    let err = parse("db1,10.0.0.0-10.1.0.0:6000")
        .check_size(false)
        .unwrap_err();
    assert!(err.to_string().contains("65538 addresses"), "{err}");
    assert!(
        err.to_string().contains("\"10.0.0.0-10.1.0.0:6000\""),
        "{err}"
    );
}

#[test]
fn huge_ranges_expand_lazily() {
    let p = DEFAULT_PROBE_PORT;
    let cases = [
        ("10.0.0.0/8", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        ("0.0.0.0/0", ["0.0.0.1", "0.0.0.2", "0.0.0.3"]),
        ("0.0.0.0-255.255.255.255", ["0.0.0.0", "0.0.0.1", "0.0.0.2"]),
    ];
    for (input, first_three) in cases {
        let start = Instant::now();
        let targets = parse(input);
        let got: Vec<_> = targets.iter().take(3).collect();
        let elapsed = start.elapsed();
        let expected: Vec<_> = first_three.iter().map(|a| v4(a, p)).collect();
        assert_eq!(got, expected, "{input:?}");
        // Eager expansion of a /8 takes seconds and hundreds of MB; a /0, far more.
        assert!(
            elapsed < Duration::from_millis(100),
            "{input:?} took {elapsed:?}"
        );
    }
    // Skipping ahead is cheap too.
    let t = parse("0.0.0.0/0");
    assert_eq!(t.iter().nth(4_000_000_000), Some(v4("238.107.40.1", p)));
    assert_eq!(t.iter().nth(4_294_967_293), Some(v4("255.255.255.254", p)));
    assert_eq!(t.iter().nth(4_294_967_294), None);
    assert_eq!(t.iter().size_hint(), (4_294_967_294, Some(4_294_967_294)));

    // nth and size_hint across items agree with a plain walk.
    let list = parse("10.0.0.1-3,db1,[::1],10.0.1.0/30:6000");
    let walked: Vec<_> = list.iter().collect();
    assert_eq!(walked.len(), 7);
    for n in 0..9 {
        assert_eq!(list.iter().nth(n), walked.get(n).cloned(), "nth({n})");
    }
    let mut it = list.iter();
    for left in (0..=7).rev() {
        assert_eq!(it.size_hint(), (left, Some(left)));
        it.next();
    }
    let mut it = list.iter();
    assert_eq!(it.nth(1), Some(walked[1].clone()));
    assert_eq!(it.nth(2), Some(walked[4].clone()));
    assert_eq!(it.collect::<Vec<_>>(), walked[5..].to_vec());
}

#[test]
fn display_round_trips() {
    let cases: &[(&str, &str)] = &[
        ("10.0.0.1", "10.0.0.1:5555"),
        ("10.0.0.1-20:6000", "10.0.0.1-10.0.0.20:6000"),
        ("10.1.2.7/24", "10.1.2.1-10.1.2.254:5555"),
        ("10.0.0.4/31", "10.0.0.4-10.0.0.5:5555"),
        ("10.0.0.5-5", "10.0.0.5:5555"),
        ("db1 , [::1]:7000, ::2", "db1:5555,[::1]:7000,[::2]:5555"),
        ("0.0.0.0/0", "0.0.0.1-255.255.255.254:5555"),
    ];
    for &(input, canonical) in cases {
        let targets = parse(input);
        assert_eq!(targets.to_string(), canonical, "{input:?}");
        assert_eq!(parse(canonical), targets, "{input:?} round trip");
        assert_eq!(
            canonical.parse::<ProbeTargets>(),
            Ok(targets),
            "{input:?} FromStr"
        );
    }
}

#[test]
fn probe_target_display() {
    let cases = [
        (v4("10.0.0.1", 5555), "10.0.0.1:5555"),
        (v6("::1", 6000), "[::1]:6000"),
        (host("agent-1.lan", 7000), "agent-1.lan:7000"),
    ];
    for (target, text) in cases {
        assert_eq!(target.to_string(), text);
    }
}

#[test]
fn append_and_default() {
    let mut all = ProbeTargets::default();
    assert!(all.is_empty());
    assert_eq!(all.len(), 0);
    assert_eq!(all.iter().next(), None);
    assert_eq!(all.check_size(false), Ok(()));
    all.append(parse("10.0.0.1-2"));
    all.append(parse("db1:6000"));
    assert_eq!(all, parse("10.0.0.1-2,db1:6000"));
    assert_eq!(all.len(), 3);
}

#[test]
fn contains_matches_address_and_port() {
    let targets = parse("10.0.0.1-20,[::1]:6000,db1");
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert!(targets.contains(addr("10.0.0.1:5555")));
    assert!(targets.contains(addr("10.0.0.20:5555")));
    assert!(!targets.contains(addr("10.0.0.21:5555")));
    assert!(!targets.contains(addr("10.0.0.5:5556")), "another port");
    assert!(targets.contains(addr("[::1]:6000")));
    assert!(!targets.contains(addr("[::1]:5555")));
    assert!(!ProbeTargets::default().contains(addr("10.0.0.1:5555")));
}

#[test]
fn this_host_items_are_loopback_and_this_network() {
    for (text, found) in [
        ("127.0.0.1", &["127.0.0.1:5555"][..]),
        (
            "126.255.255.250-127.0.0.1",
            &["126.255.255.250-127.0.0.1:5555"],
        ),
        (
            "127.255.255.255-128.0.0.5",
            &["127.255.255.255-128.0.0.5:5555"],
        ),
        ("0.0.0.0", &["0.0.0.0:5555"]),
        ("0.0.0.0/0", &["0.0.0.1-255.255.255.254:5555"]),
        ("[::1]:6000", &["[::1]:6000"]),
        ("::", &["[::]:5555"]),
        ("[::ffff:127.0.0.2]", &["[::ffff:127.0.0.2]:5555"]),
        (
            "10.0.0.0/8,1.0.0.0-126.255.255.255,128.0.0.1,::2,localhost",
            &[],
        ),
    ] {
        assert_eq!(parse(text).this_host_items(), found, "{text}");
    }
}

#[test]
fn this_host_addresses() {
    for ip in [
        "127.0.0.1",
        "127.9.8.7",
        "0.0.0.0",
        "0.1.2.3",
        "::1",
        "::",
        "::ffff:127.0.0.1",
    ] {
        assert!(is_this_host(ip.parse().unwrap()), "{ip}");
    }
    for ip in ["10.0.0.1", "128.0.0.1", "::2", "fe80::1", "::ffff:10.0.0.1"] {
        assert!(!is_this_host(ip.parse().unwrap()), "{ip}");
    }
}
