//! The rules for the strings that name and locate a node: node and cluster names, node ids,
//! host names and addresses, control endpoints. The config file, the command line and every
//! `configure` peer list from the wire are checked by these same functions, so a string that
//! ends up in a rendered service config (etcd's `ETCD_INITIAL_CLUSTER`, zoo.cfg's `server.N`
//! lines, ...) has passed one rule, whatever its way in.

use std::net::IpAddr;

/// Longest node or cluster name: one DNS label.
pub const MAX_NAME_LEN: usize = 63;
/// Longest host name (RFC 1123, without a trailing dot).
pub const MAX_HOST_LEN: usize = 253;

/// A node or cluster name: 1 to 63 ASCII letters, digits, '-' and '_', starting with a letter
/// or digit. Names go into topics split on '.', and into service configs (etcd member names,
/// comments of every profile), where a quote, a separator or a newline would change the file.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: expected 1 to {MAX_NAME_LEN} ASCII letters, digits, \
             '-' or '_', starting with a letter or digit"
        ))
    }
}

/// A node id, as `troupe-agent` makes them: a UUID in its hyphenated form.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let hyphenated = id.len() == 36 && uuid::Uuid::try_parse(id).is_ok();
    if hyphenated {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a node id: expected a UUID such as 0b0e5a1c-5f3e-4d8a-9c1b-2f6e7d8a9b0c"
        ))
    }
}

/// A host: an IPv4 or IPv6 literal (without brackets) or an RFC 1123 host name.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() || is_host_name(host) {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not an IP address or a host name (RFC 1123: dot-separated labels of \
             letters, digits and '-')"
        ))
    }
}

/// RFC 1123 host name: labels of 1 to 63 letters, digits and '-', not starting or ending with
/// '-', at most 253 characters in all.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `tcp://HOST:PORT`: HOST as [`check_host`] wants it (an IPv6 literal in brackets), PORT from
/// 1 to 65535 ([`crate::endpoint::Endpoint::parse`]).
pub fn check_tcp_endpoint(endpoint: &str) -> Result<(), String> {
    crate::endpoint::Endpoint::split(endpoint).map(|_| ())
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
