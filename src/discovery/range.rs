//! The IP ranges an operator gives the controller to probe for agents.
//!
//! The same syntax is accepted wherever targets come from: `troupe.toml`, the
//! `TROUPE_PROBE` environment variable and `--probe` flags. A text is a
//! comma-separated list (whitespace around the commas is ignored, an empty item
//! is an error) of items, each one of:
//!
//! | item                       | expands to                                           |
//! |----------------------------|------------------------------------------------------|
//! | `192.168.0.7`              | that address                                         |
//! | `192.168.0.1-32`           | `192.168.0.1` to `192.168.0.32` (last-octet range)   |
//! | `192.168.0.1-192.168.1.40` | every address from the first to the second, inclusive |
//! | `10.1.2.0/24`              | the hosts of the network: `10.1.2.1` to `10.1.2.254` |
//! | `db1`, `agent-1.lan`       | a hostname, kept unresolved ([`ProbeTarget::Host`])  |
//! | `[::1]`, `::1`             | an IPv6 address                                      |
//!
//! Any IPv4 or hostname item may end in `:port` (`10.0.0.1-20:6000`,
//! `10.0.0.0/28:6000`, `db1:6000`); IPv6 addresses take a port only in the
//! bracketed form (`[::1]:6000`). Without a port, [`DEFAULT_PROBE_PORT`] (the
//! Circus control port) is used.
//!
//! Details worth knowing:
//!
//! - Ranges are inclusive and never swapped: `10.0.0.20-5` is an error.
//!   Explicit ranges include every address in them, `.0` and `.255` too.
//! - A CIDR block with host bits set (`10.1.2.7/24`) is accepted and normalised
//!   to its network (`10.1.2.0/24`). Blocks of /30 and shorter skip their
//!   network and broadcast addresses, which are not hosts; /31 (a point-to-point
//!   pair) and /32 include every address. `0.0.0.0/0` is therefore
//!   2³² − 2 addresses.
//! - IPv4 octets are decimal without leading zeros (`10.0.0.01` is refused, as
//!   some tools read it as octal).
//! - Tokens made only of digits and dots are IPv4 addresses, so `1.2.3` is an
//!   error rather than a hostname. Hostnames are RFC 1123 labels (letters,
//!   digits, `-`) separated by dots. Because `-` also makes ranges, a hostname
//!   containing `-` must contain a dot as well (`agent-1.lan`, not `agent-1`):
//!   a dotless `abc-def` is read as a malformed range.
//! - Bare IPv6 addresses take the default port: `::1:5555` is the address
//!   `::1:5555`, not `::1` port 5555. Write `[::1]:5555` for that. IPv6 ranges
//!   and zone ids are not supported.
//!
//! Parsing keeps ranges as ranges: [`ProbeTargets::iter`] expands them lazily,
//! so a /8 costs nothing until it is walked. Large expansions parse fine but
//! [`ProbeTargets::check_size`] refuses more than
//! [`MAX_ADDRESSES_WITHOUT_FORCE`] addresses unless forced (`--force`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::RangeInclusive;
use std::str::FromStr;

/// The port probed when an item has no `:port` suffix: the Circus control port.
pub const DEFAULT_PROBE_PORT: u16 = 5555;

/// Largest expansion allowed without force: a /16.
pub const MAX_ADDRESSES_WITHOUT_FORCE: u64 = 65_536;

/// One endpoint to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// An IPv4 or IPv6 literal with its port.
    Addr(SocketAddr),
    /// A hostname, not yet resolved, with its port.
    Host(String, u16),
}

impl fmt::Display for ProbeTarget {
    /// `10.0.0.1:5555`, `[::1]:5555`, `db1:5555`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeTarget::Addr(addr) => write!(f, "{addr}"),
            ProbeTarget::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// A parsed list, expanded lazily (a /8 must not allocate 16M entries up front).
///
/// Items keep the order they were written in; duplicates across items are not
/// removed. Its [`Display`](fmt::Display) is a canonical list that parses back
/// to an equal value (`10.0.0.1-10.0.0.20:5555,db1:5555`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeTargets {
    items: Vec<Item>,
}

/// One item of a list, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// IPv4 addresses `first..=last` (never empty: `first <= last`).
    V4 { first: u32, last: u32, port: u16 },
    /// One IPv6 address.
    V6(SocketAddrV6),
    /// One unresolved hostname.
    Host(String, u16),
}

impl Item {
    fn len(&self) -> u64 {
        match self {
            Item::V4 { first, last, .. } => u64::from(last - first) + 1,
            Item::V6(_) | Item::Host(..) => 1,
        }
    }

    fn targets(&self) -> ItemTargets {
        match self {
            Item::V4 { first, last, port } => ItemTargets::V4 {
                addrs: *first..=*last,
                port: *port,
            },
            Item::V6(addr) => ItemTargets::One(Some(ProbeTarget::Addr(SocketAddr::V6(*addr)))),
            Item::Host(host, port) => {
                ItemTargets::One(Some(ProbeTarget::Host(host.clone(), *port)))
            }
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::V4 { first, last, port } if first == last => {
                write!(f, "{}:{port}", Ipv4Addr::from(*first))
            }
            Item::V4 { first, last, port } => {
                write!(
                    f,
                    "{}-{}:{port}",
                    Ipv4Addr::from(*first),
                    Ipv4Addr::from(*last)
                )
            }
            Item::V6(addr) => write!(f, "{addr}"),
            Item::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// The expansion of one [`Item`], produced on demand.
enum ItemTargets {
    V4 {
        addrs: RangeInclusive<u32>,
        port: u16,
    },
    One(Option<ProbeTarget>),
}

impl ItemTargets {
    /// Targets not yet yielded.
    fn remaining(&self) -> u64 {
        match self {
            ItemTargets::V4 { addrs, .. } if addrs.is_empty() => 0,
            ItemTargets::V4 { addrs, .. } => u64::from(addrs.end() - addrs.start()) + 1,
            ItemTargets::One(target) => u64::from(target.is_some()),
        }
    }

    /// Skips `n` targets (O(1)) and yields the next.
    fn nth(&mut self, n: usize) -> Option<ProbeTarget> {
        match self {
            ItemTargets::V4 { addrs, port } => addrs.nth(n).map(|a| v4_target(a, *port)),
            ItemTargets::One(target) => {
                let first = target.take();
                if n == 0 {
                    first
                } else {
                    None
                }
            }
        }
    }
}

/// [`ProbeTargets::iter`]: walks items in order, expanding one at a time.
struct Iter<'a> {
    items: std::slice::Iter<'a, Item>,
    current: Option<ItemTargets>,
}

impl Iterator for Iter<'_> {
    type Item = ProbeTarget;

    fn next(&mut self) -> Option<ProbeTarget> {
        self.nth(0)
    }

    /// Skips whole items by their length, so `nth` on a /0 is instant.
    fn nth(&mut self, mut n: usize) -> Option<ProbeTarget> {
        loop {
            if let Some(current) = &mut self.current {
                match usize::try_from(current.remaining()) {
                    Ok(remaining) if remaining <= n => n -= remaining,
                    _ => return current.nth(n),
                }
            }
            self.current = Some(self.items.next()?.targets());
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let current = self.current.as_ref().map_or(0, ItemTargets::remaining);
        let total = self
            .items
            .as_slice()
            .iter()
            .fold(current, |total, item| total.saturating_add(item.len()));
        match usize::try_from(total) {
            Ok(n) => (n, Some(n)),
            Err(_) => (usize::MAX, None),
        }
    }
}

fn v4_target(addr: u32, port: u16) -> ProbeTarget {
    ProbeTarget::Addr(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(addr),
        port,
    )))
}

impl ProbeTargets {
    /// How many targets [`iter`](Self::iter) yields, without expanding anything.
    pub fn len(&self) -> u64 {
        self.items
            .iter()
            .fold(0u64, |total, item| total.saturating_add(item.len()))
    }

    /// True when there is nothing to probe. [`parse_targets`] never returns
    /// an empty list; [`Default`] does.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every target, item by item in the order written, expanded as it goes.
    /// Duplicates across items are not removed.
    pub fn iter(&self) -> impl Iterator<Item = ProbeTarget> + '_ {
        Iter {
            items: self.items.iter(),
            current: None,
        }
    }

    /// Refuses expansions larger than [`MAX_ADDRESSES_WITHOUT_FORCE`] unless `force`.
    ///
    /// The limit applies to the whole list; the error names its largest item.
    pub fn check_size(&self, force: bool) -> Result<(), RangeError> {
        let count = self.len();
        if force || count <= MAX_ADDRESSES_WITHOUT_FORCE {
            return Ok(());
        }
        let largest = self
            .items
            .iter()
            .max_by_key(|item| item.len())
            .map(ToString::to_string)
            .unwrap_or_default();
        Err(RangeError::TooLarge {
            count,
            limit: MAX_ADDRESSES_WITHOUT_FORCE,
            largest,
        })
    }

    /// Appends `other`'s items after this list's (for combining several
    /// `--probe` flags or config entries).
    pub fn append(&mut self, mut other: ProbeTargets) {
        self.items.append(&mut other.items);
    }
}

impl fmt::Display for ProbeTargets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

impl FromStr for ProbeTargets {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        parse_targets(text)
    }
}

/// Why a probe list was refused. Every message quotes the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The whole text is empty or blank.
    #[error("bad probe range {text:?}: no targets given")]
    Empty { text: String },
    /// A list with an empty item (`a,,b`, a trailing comma); `position` is 1-based.
    #[error("bad probe range {list:?}: item {position} of the list is empty")]
    EmptyItem { list: String, position: usize },
    /// An IPv4 octet above 255.
    #[error("bad probe range {token:?}: octet {octet} is over 255")]
    OctetTooLarge { token: String, octet: String },
    /// The end of a last-octet range (`10.0.0.1-300`) above 255.
    #[error("bad probe range {token:?}: range end {end} is over 255")]
    RangeEndTooLarge { token: String, end: String },
    /// A range whose start comes after its end; ranges are never swapped.
    #[error(
        "bad probe range {token:?}: start {start} is after end {end} (ranges are not swapped)"
    )]
    Reversed {
        token: String,
        start: Ipv4Addr,
        end: Ipv4Addr,
    },
    /// A CIDR prefix length above 32.
    #[error("bad probe range {token:?}: prefix /{prefix} is over 32")]
    PrefixTooLong { token: String, prefix: String },
    /// A numeric port of 0 or above 65535.
    #[error("bad probe range {token:?}: port {port} is not in 1-65535")]
    BadPort { token: String, port: String },
    /// Anything else that does not parse.
    #[error("bad probe range {token:?}: {reason}")]
    Malformed { token: String, reason: String },
    /// From [`ProbeTargets::check_size`]: the list expands past the limit.
    #[error(
        "probe ranges expand to {count} addresses, more than the {limit} allowed without \
         --force (largest item {largest:?}); pass --force to probe them all"
    )]
    TooLarge {
        count: u64,
        limit: u64,
        largest: String,
    },
}

/// Parses a probe list (see the [module docs](self) for the syntax).
pub fn parse_targets(text: &str) -> Result<ProbeTargets, RangeError> {
    let list = text.trim();
    if list.is_empty() {
        return Err(RangeError::Empty {
            text: text.to_string(),
        });
    }
    let mut items = Vec::new();
    for (i, raw) in list.split(',').enumerate() {
        let token = raw.trim();
        if token.is_empty() {
            return Err(RangeError::EmptyItem {
                list: list.to_string(),
                position: i + 1,
            });
        }
        items.push(parse_item(token)?);
    }
    Ok(ProbeTargets { items })
}

fn malformed(token: &str, reason: impl Into<String>) -> RangeError {
    RangeError::Malformed {
        token: token.to_string(),
        reason: reason.into(),
    }
}

/// One trimmed, non-empty list item.
fn parse_item(token: &str) -> Result<Item, RangeError> {
    if token.starts_with('[') {
        return parse_bracketed_v6(token);
    }
    let (body, port) = match token.matches(':').count() {
        0 => (token, DEFAULT_PROBE_PORT),
        1 => match token.split_once(':') {
            Some((body, port)) => (body, parse_port(token, port)?),
            None => (token, DEFAULT_PROBE_PORT),
        },
        _ => return parse_bare_v6(token),
    };
    if body.is_empty() {
        return Err(malformed(token, "missing address before ':'"));
    }
    if let Some((addr, prefix)) = body.split_once('/') {
        return parse_cidr(token, addr, prefix, port);
    }
    if let Some((start, end)) = body.split_once('-') {
        if is_ipv4_shaped(start) {
            return parse_range(token, start, end, port);
        }
        if body.contains('.') && is_hostname(body) {
            return Ok(Item::Host(body.to_string(), port));
        }
        if start.is_empty() {
            return Err(malformed(token, "range has no start"));
        }
        return Err(malformed(
            token,
            format!(
                "{start:?} is not an IPv4 address (a hostname containing '-' must include \
                 its domain, e.g. {body}.example.com)"
            ),
        ));
    }
    if is_ipv4_shaped(body) {
        let addr = parse_ipv4(token, body)?;
        return Ok(Item::V4 {
            first: addr,
            last: addr,
            port,
        });
    }
    if is_hostname(body) {
        return Ok(Item::Host(body.to_string(), port));
    }
    Err(malformed(
        token,
        format!("{body:?} is not an IPv4 address, IPv4 range or hostname"),
    ))
}

/// `[v6]` or `[v6]:port`.
fn parse_bracketed_v6(token: &str) -> Result<Item, RangeError> {
    let Some((inner, rest)) = token[1..].split_once(']') else {
        return Err(malformed(token, "missing ']' after IPv6 address"));
    };
    let port = if rest.is_empty() {
        DEFAULT_PROBE_PORT
    } else if let Some(port) = rest.strip_prefix(':') {
        parse_port(token, port)?
    } else if rest.starts_with('/') || rest.starts_with('-') {
        return Err(malformed(token, "IPv6 ranges are not supported"));
    } else {
        return Err(malformed(token, format!("unexpected {rest:?} after ']'")));
    };
    match inner.parse::<IpAddr>() {
        Ok(IpAddr::V6(addr)) => Ok(Item::V6(SocketAddrV6::new(addr, port, 0, 0))),
        Ok(IpAddr::V4(_)) => Err(malformed(
            token,
            "brackets are only for IPv6 addresses (write an IPv4 address as addr:port)",
        )),
        Err(_) if inner.contains('/') || inner.contains('-') => {
            Err(malformed(token, "IPv6 ranges are not supported"))
        }
        Err(_) => Err(malformed(
            token,
            format!("{inner:?} is not an IPv6 address"),
        )),
    }
}

/// An unbracketed token with two or more colons: an IPv6 address, default port.
fn parse_bare_v6(token: &str) -> Result<Item, RangeError> {
    match token.parse::<Ipv6Addr>() {
        Ok(addr) => Ok(Item::V6(SocketAddrV6::new(addr, DEFAULT_PROBE_PORT, 0, 0))),
        Err(_) if token.contains('/') || token.contains('-') => {
            Err(malformed(token, "IPv6 ranges are not supported"))
        }
        Err(_) => Err(malformed(
            token,
            "not an IPv6 address (write an IPv6 address with a port as [addr]:port)",
        )),
    }
}

/// `addr/prefix`, host bits cleared; /30 and shorter lose network and broadcast.
fn parse_cidr(token: &str, addr: &str, prefix: &str, port: u16) -> Result<Item, RangeError> {
    if addr.is_empty() {
        return Err(malformed(token, "missing address before '/'"));
    }
    if !is_ipv4_shaped(addr) {
        return Err(malformed(
            token,
            format!("{addr:?} is not an IPv4 address (only IPv4 networks can be probed)"),
        ));
    }
    let base = parse_ipv4(token, addr)?;
    if prefix.is_empty() {
        return Err(malformed(token, "missing prefix length after '/'"));
    }
    if !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(
            token,
            format!("prefix {prefix:?} is not a number"),
        ));
    }
    let bits = match prefix.parse::<u32>() {
        Ok(bits) if bits <= 32 => bits,
        _ => {
            return Err(RangeError::PrefixTooLong {
                token: token.to_string(),
                prefix: prefix.to_string(),
            })
        }
    };
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    let network = base & mask;
    let broadcast = network | !mask;
    let (first, last) = if bits >= 31 {
        (network, broadcast)
    } else {
        (network + 1, broadcast - 1)
    };
    Ok(Item::V4 { first, last, port })
}

/// `start-end` (full) or `start-octet` (last octet); `start` is IPv4-shaped.
fn parse_range(token: &str, start: &str, end: &str, port: u16) -> Result<Item, RangeError> {
    let first = parse_ipv4(token, start)?;
    if end.is_empty() {
        return Err(malformed(token, "range has no end"));
    }
    let last = if end.bytes().all(|b| b.is_ascii_digit()) {
        let octet = match parse_octet(token, end) {
            Err(RangeError::OctetTooLarge { .. }) => {
                return Err(RangeError::RangeEndTooLarge {
                    token: token.to_string(),
                    end: end.to_string(),
                })
            }
            other => other?,
        };
        (first & !0xff) | u32::from(octet)
    } else if is_ipv4_shaped(end) {
        parse_ipv4(token, end)?
    } else {
        return Err(malformed(
            token,
            format!("range end {end:?} is neither an IPv4 address nor a last octet"),
        ));
    };
    if first > last {
        return Err(RangeError::Reversed {
            token: token.to_string(),
            start: Ipv4Addr::from(first),
            end: Ipv4Addr::from(last),
        });
    }
    Ok(Item::V4 { first, last, port })
}

/// Digits and dots only (and not empty): meant as an IPv4 address, never a hostname.
fn is_ipv4_shaped(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Strict dotted-quad: four decimal octets, no leading zeros.
fn parse_ipv4(token: &str, s: &str) -> Result<u32, RangeError> {
    let parts: Vec<&str> = s.split('.').collect();
    let [a, b, c, d] = parts.as_slice() else {
        return Err(malformed(
            token,
            format!("{s:?} is not an IPv4 address (expected 4 dot-separated octets)"),
        ));
    };
    let mut octets = [0u8; 4];
    for (octet, part) in octets.iter_mut().zip([a, b, c, d]) {
        *octet = parse_octet(token, part)?;
    }
    Ok(u32::from(Ipv4Addr::from(octets)))
}

fn parse_octet(token: &str, part: &str) -> Result<u8, RangeError> {
    if part.is_empty() {
        return Err(malformed(token, "empty octet"));
    }
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(token, format!("octet {part:?} is not a number")));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(malformed(token, format!("octet {part} has a leading zero")));
    }
    part.parse::<u8>().map_err(|_| RangeError::OctetTooLarge {
        token: token.to_string(),
        octet: part.to_string(),
    })
}

fn parse_port(token: &str, port: &str) -> Result<u16, RangeError> {
    if port.is_empty() {
        return Err(malformed(token, "missing port after ':'"));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(token, format!("port {port:?} is not a number")));
    }
    match port.parse::<u16>() {
        Ok(n) if n != 0 => Ok(n),
        _ => Err(RangeError::BadPort {
            token: token.to_string(),
            port: port.to_string(),
        }),
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner `-`.
fn is_hostname(s: &str) -> bool {
    let name = s.strip_suffix('.').unwrap_or(s);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
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
}
