//! `troupe cluster RANGE [COUNT]`, on the command line and in `troupe shell`: the range (and
//! how many nodes to expect) is remembered in the state dir, where later commands' discovery
//! reads it, and swept now when something can: a running `troupe serve`, or the shell's own
//! discovery.

use crate::cluster_link::{controller_answers, ClusterLink, CLUSTER_SWEEP_TIMEOUT};
use crate::settings::NodeFlags;
use crate::state::ControllerState;
use serde_json::{json, Map};
use troupe::client::call_async;
use troupe::discovery::parse_targets;
use troupe::protocol::Request;

/// Remembers `range` (and `count`), sweeps it through `link` (or, without one, through a
/// running controller if one answers), and prints what was done.
pub async fn run(
    range: &str,
    count: Option<usize>,
    flags: &NodeFlags,
    link: Option<&ClusterLink>,
) -> anyhow::Result<()> {
    let targets = parse_targets(range)?;
    targets.check_size(flags.force)?;
    let settings = flags.settings()?;
    let addresses = targets.len();
    ControllerState {
        probe: vec![range.to_string()],
        expect: count,
    }
    .save(&settings.config.state_dir)?;
    let controller = match link {
        Some(ClusterLink::Controller(endpoint)) => Some(endpoint.clone()),
        Some(ClusterLink::Local { .. }) => None,
        // serve's own link (its dashboard) sweeps through serve itself.
        Some(ClusterLink::Kept { .. }) => anyhow::bail!("cluster: serve sweeps its own ranges"),
        None => {
            let endpoint = flags.controller_endpoint();
            controller_answers(&endpoint).await.then_some(endpoint)
        }
    };
    let expecting = count
        .map(|c| format!(", expecting {c}"))
        .unwrap_or_default();
    if let Some(endpoint) = controller {
        let alive = sweep_by_controller(&endpoint, range).await?;
        println!(
            "cluster: {range} ({addresses} addresses) remembered; the running controller swept \
             it: {alive} nodes alive{expecting}"
        );
    } else if let Some(link @ ClusterLink::Local { discovery, .. }) = link {
        let mut operator = settings.probe.clone();
        operator.append(targets);
        let ranges = crate::discovery::Ranges {
            operator,
            requested: Default::default(),
        };
        discovery.sweep_ranges(ranges).await;
        let nodes = link.nodes().await;
        let alive = nodes.iter().filter(|n| n["state"] == "alive").count();
        println!(
            "cluster: {range} ({addresses} addresses) remembered; swept it: {alive} nodes \
             alive{expecting}"
        );
    } else {
        println!(
            "cluster: {range} ({addresses} addresses) remembered{expecting}; no controller \
             runs: commands probe it when they discover"
        );
    }
    Ok(())
}

/// Asks the controller at `endpoint` to sweep `range`; how many nodes are alive after it.
async fn sweep_by_controller(endpoint: &str, range: &str) -> anyhow::Result<u64> {
    let mut properties = Map::new();
    properties.insert("range".into(), json!(range));
    let request = Request::new("cluster", properties);
    let zmq = zmq::Context::new();
    let reply = call_async(&zmq, endpoint, request, CLUSTER_SWEEP_TIMEOUT).await?;
    if reply["status"] != "ok" {
        anyhow::bail!(
            "cluster: {range} remembered, but the running controller did not sweep it: {}",
            reply["reason"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(reply["alive"].as_u64().unwrap_or_default())
}
