//! Stats topics: reading a node's `stat.<watcher>[.<pid>]` and a controller's
//! `stat.<node>:<watcher>[.<pid>]`, and writing the latter.
//!
//! circus-top splits a topic on `.` (3 parts: one process, 2 parts: an aggregate, anything
//! else is ignored), so the controller joins node and watcher with `:` and replaces any `.`
//! inside a name by `_` when it re-publishes.

/// Every stats topic starts with this; it is also the subscription prefix.
pub const PREFIX: &str = "stat.";
/// Between the node and the watcher in the controller's topics.
pub const NODE_SEPARATOR: char = ':';

/// What a topic is about, once the node is known.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Topic {
    /// The watcher, as the node spells it (Circus lower-cases it; `circus` is the agent).
    pub watcher: String,
    /// A process, or None for the watcher's aggregate.
    pub pid: Option<u32>,
}

/// A node's topic. The watcher keeps any dots (`stat.a.b.42` is process 42 of `a.b`), since
/// only a trailing number is a pid. Socket stats (`stat.sockets...`) carry no process
/// figures and are left out (None), as is anything not starting with `stat.`.
pub fn parse_node_topic(topic: &str) -> Option<Topic> {
    let rest = topic.strip_prefix(PREFIX)?;
    let topic = match rest.rsplit_once('.') {
        Some((watcher, pid)) if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
            Topic {
                watcher: watcher.to_string(),
                pid: Some(pid.parse().ok()?),
            }
        }
        _ => Topic {
            watcher: rest.to_string(),
            pid: None,
        },
    };
    let is_sockets = topic.watcher == "sockets" || topic.watcher.starts_with("sockets.");
    (!topic.watcher.is_empty() && !is_sockets).then_some(topic)
}

/// A controller's topic: `stat.first:dummy.2992` is (`first`, process 2992 of `dummy`).
/// The controller's own node totals (`stat.first`, no separator) give None: whoever reads
/// the stream recomputes them from the processes.
pub fn parse_cluster_topic(topic: &str) -> Option<(String, Topic)> {
    let rest = topic.strip_prefix(PREFIX)?;
    let (node, watcher) = rest.split_once(NODE_SEPARATOR)?;
    if node.is_empty() {
        return None;
    }
    let topic = parse_node_topic(&format!("{PREFIX}{watcher}"))?;
    Some((node.to_string(), topic))
}

/// `stat.<node>:<watcher>[.<pid>]`, the controller's re-published topic.
pub fn cluster_topic(node: &str, topic: &Topic) -> String {
    let mut out = format!(
        "{PREFIX}{}{NODE_SEPARATOR}{}",
        topic_safe(node),
        topic_safe(&topic.watcher)
    );
    if let Some(pid) = topic.pid {
        out.push_str(&format!(".{pid}"));
    }
    out
}

/// `stat.<node>`: a node's totals (an aggregate row in circus-top, named after the node).
pub fn node_total_topic(node: &str) -> String {
    format!("{PREFIX}{}", topic_safe(node))
}

/// A name as it may appear inside a topic: no `.` (circus-top's separator) and no `:`.
fn topic_safe(name: &str) -> String {
    name.replace(['.', NODE_SEPARATOR], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(watcher: &str, pid: Option<u32>) -> Topic {
        Topic {
            watcher: watcher.into(),
            pid,
        }
    }

    #[test]
    fn node_topics_are_processes_or_aggregates() {
        assert_eq!(
            parse_node_topic("stat.dummy.2992"),
            Some(topic("dummy", Some(2992)))
        );
        assert_eq!(parse_node_topic("stat.dummy"), Some(topic("dummy", None)));
        assert_eq!(
            parse_node_topic("stat.echo web.3822"),
            Some(topic("echo web", Some(3822)))
        );
        assert_eq!(
            parse_node_topic("stat.circus.17"),
            Some(topic("circus", Some(17)))
        );
        // Dots in a watcher name survive; only a trailing number is a pid.
        assert_eq!(
            parse_node_topic("stat.a.b.42"),
            Some(topic("a.b", Some(42)))
        );
        assert_eq!(parse_node_topic("stat.a.b"), Some(topic("a.b", None)));
        for ignored in [
            "stat.sockets",
            "stat.sockets.7",
            "stat.",
            "watcher.x.spawn",
            "",
        ] {
            assert_eq!(parse_node_topic(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn republished_topics_prefix_the_node_with_a_colon() {
        assert_eq!(
            cluster_topic("first", &topic("dummy", Some(2992))),
            "stat.first:dummy.2992"
        );
        assert_eq!(
            cluster_topic("first", &topic("dummy", None)),
            "stat.first:dummy"
        );
        assert_eq!(node_total_topic("first"), "stat.first");
        // circus-top splits on '.': names never add one.
        assert_eq!(
            cluster_topic("db1.lan", &topic("a.b", Some(3))),
            "stat.db1_lan:a_b.3"
        );
        assert_eq!(node_total_topic("db1.lan"), "stat.db1_lan");
        // What circus-top sees: 3 parts for a process, 2 for an aggregate.
        assert_eq!(
            cluster_topic("n", &topic("w", Some(1))).split('.').count(),
            3
        );
        assert_eq!(node_total_topic("n").split('.').count(), 2);
    }

    #[test]
    fn cluster_topics_read_back() {
        for (node, t) in [
            ("first", topic("dummy", Some(2992))),
            ("first", topic("dummy", None)),
            ("web-1", topic("circus", Some(5))),
        ] {
            assert_eq!(
                parse_cluster_topic(&cluster_topic(node, &t)),
                Some((node.to_string(), t))
            );
        }
        assert_eq!(parse_cluster_topic("stat.first"), None);
        assert_eq!(parse_cluster_topic("stat.:dummy"), None);
        assert_eq!(parse_cluster_topic("stat.first:sockets.3"), None);
    }
}
