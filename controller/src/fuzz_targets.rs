//! The body of the `stats_topic` fuzz target (fuzz/), shared with its corpus regression test.

use crate::stats::topic::{cluster_topic, parse_cluster_topic, parse_node_topic};

/// A stats topic as a node (or a controller) publishes it: a topic read as a node's is
/// re-published as a controller's topic that reads back to the same node and topic, with the
/// shape circus-top expects (3 parts for a process, 2 for an aggregate).
pub fn stats_topic(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_cluster_topic(text);
    let Some(topic) = parse_node_topic(text) else {
        return;
    };
    const NODE: &str = "node-1";
    let published = cluster_topic(NODE, &topic);
    let parts = if topic.pid.is_some() { 3 } else { 2 };
    assert_eq!(
        published.split('.').count(),
        parts,
        "{text:?} re-published as {published:?}"
    );
    let (node, back) = parse_cluster_topic(&published)
        .unwrap_or_else(|| panic!("{text:?} re-published as {published:?} is not read back"));
    assert_eq!(node, NODE);
    assert_eq!(
        back.pid, topic.pid,
        "{text:?} re-published as {published:?}"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn stats_topic_corpus() {
        troupe::fuzz_targets::replay("stats_topic", super::stats_topic);
    }
}
