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

    /// Whether `address` is one of the targets (hostnames are not resolved: they match
    /// nothing).
    pub fn contains(&self, address: SocketAddr) -> bool {
        self.items.iter().any(|item| match (item, address) {
            (Item::V4 { first, last, port }, SocketAddr::V4(v4)) => {
                *port == v4.port() && (*first..=*last).contains(&u32::from(*v4.ip()))
            }
            (Item::V6(target), SocketAddr::V6(v6)) => {
                target.ip() == v6.ip() && target.port() == v6.port()
            }
            _ => false,
        })
    }

    /// The items that reach this host itself ([`is_this_host`]), as written back.
    pub fn this_host_items(&self) -> Vec<String> {
        let v4_overlaps = |first: u32, last: u32, net: Ipv4Addr, bits: u32| {
            let low = u32::from(net);
            let high = low | (u32::MAX >> bits);
            first <= high && last >= low
        };
        self.items
            .iter()
            .filter(|item| match item {
                Item::V4 { first, last, .. } => {
                    v4_overlaps(*first, *last, Ipv4Addr::new(127, 0, 0, 0), 8)
                        || v4_overlaps(*first, *last, Ipv4Addr::UNSPECIFIED, 8)
                }
                Item::V6(addr) => is_this_host(IpAddr::V6(*addr.ip())),
                Item::Host(..) => false,
            })
            .map(ToString::to_string)
            .collect()
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

/// Whether connecting to `ip` reaches the connecting host itself whatever host it runs on:
/// loopback (127.0.0.0/8, `::1`), "this network" (0.0.0.0/8, whose 0.0.0.0 Linux connects
/// to locally) and `::`, also as IPv4-mapped IPv6 addresses. `troupe serve` adopts such an
/// address only when its operator named it.
pub fn is_this_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_this_host(IpAddr::V4(v4)),
            None => v6.is_loopback() || v6.is_unspecified(),
        },
    }
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
#[path = "range_tests.rs"]
mod tests;
