//! `troupe reset`'s guard for clustered services: wiping fewer than all members of an etcd or
//! ZooKeeper cluster leaves a member that cannot rejoin the running ones (etcd refuses a
//! member whose data is gone, "member ... already bootstrapped", and the watcher flaps to a
//! stop), so such a reset is warned about and asked (`--yes` forces it), naming the operation
//! that fits.

use crate::cluster_link::ClusterLink;
use std::collections::BTreeMap;
use troupe::config::Profile;

/// The profiles whose members keep cluster state in their data: a wiped one cannot rejoin.
fn member_cannot_rejoin_after_wipe(profile: Profile) -> bool {
    matches!(profile, Profile::Etcd | Profile::Zookeeper)
}

/// How to replace one member of `profile`'s service instead.
fn one_member_operation(profile: Profile) -> &'static str {
    match profile {
        Profile::Zookeeper => {
            "remove it from the ensemble (zkCli.sh reconfig -remove ID), reset it, then add it \
             back (reconfig -add)"
        }
        _ => {
            "remove it from the cluster (etcdctl member remove ID), reset it, then add it back \
             (etcdctl member add NAME --peer-urls=...) with cluster_state = \"existing\""
        }
    }
}

/// The warning for a reset of watchers matching `pattern` on `targets`: None unless some
/// profiled service has members on other alive nodes too.
pub async fn partial_member_warning(
    link: &ClusterLink,
    pattern: &str,
    targets: &[String],
) -> Option<String> {
    let options = crate::watchers::options_of(link, None, Some(pattern), &["profile"]).await;
    // (watcher, profile) -> the nodes running it.
    let mut members: BTreeMap<(String, Profile), Vec<String>> = BTreeMap::new();
    for (node, watchers) in options {
        for (watcher, options) in watchers {
            let Some(profile) = options["profile"].as_str().and_then(Profile::parse) else {
                continue;
            };
            if member_cannot_rejoin_after_wipe(profile) {
                members
                    .entry((watcher, profile))
                    .or_default()
                    .push(node.clone());
            }
        }
    }
    let warnings: Vec<String> = members
        .into_iter()
        .filter_map(|((watcher, profile), nodes)| partial(&watcher, profile, &nodes, targets))
        .collect();
    (!warnings.is_empty()).then(|| warnings.join("\n"))
}

/// The warning for one profiled watcher run on `members`, of which `targets` are reset.
fn partial(
    watcher: &str,
    profile: Profile,
    members: &[String],
    targets: &[String],
) -> Option<String> {
    let wiped: Vec<&String> = members.iter().filter(|m| targets.contains(m)).collect();
    let kept: Vec<&String> = members.iter().filter(|m| !targets.contains(m)).collect();
    if wiped.is_empty() || kept.is_empty() {
        return None;
    }
    let list = |nodes: &[&String]| {
        nodes
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "'{watcher}' ({} profile) has cluster members on {}; resetting only {} wipes members that cannot rejoin \
         the running ones ({} keep the cluster's state), so they would flap to a stop. To start \
         the whole cluster afresh: troupe reconfigure --reset. To replace one member: {}.",
        profile.name(),
        members.join(", "),
        list(&wiped),
        list(&kept),
        one_member_operation(profile)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_a_reset_of_some_but_not_all_members_is_warned_about() {
        let members = names(&["node-1", "node-2", "node-3"]);
        let warned = partial("etcd", Profile::Etcd, &members, &names(&["node-1"])).unwrap();
        assert!(
            warned.starts_with(
                "'etcd' (etcd profile) has cluster members on node-1, node-2, node-3; \
                 resetting only node-1 wipes"
            ),
            "{warned}"
        );
        assert!(warned.contains("troupe reconfigure --reset"), "{warned}");
        assert!(warned.contains("etcdctl member remove"), "{warned}");
        assert_eq!(partial("etcd", Profile::Etcd, &members, &members), None);
        assert_eq!(
            partial("etcd", Profile::Etcd, &members, &names(&["other"])),
            None
        );
        let zk = partial("zk", Profile::Zookeeper, &members, &names(&["node-2"])).unwrap();
        assert!(zk.contains("reconfig -remove"), "{zk}");
    }
}
