//! The command line, and the checks that turn it into a [`Plan`]: every problem is named
//! with the flag and value, before anything is bound.

use clap::Parser;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// Most simulated agents one swarm runs: the addresses of one /16 (each agent takes three
/// listening sockets and about eleven descriptors).
pub const MAX_AGENTS: u32 = 65_536;
/// Most joins or leaves a second.
pub const MAX_RATE: f64 = 10_000.0;
/// Most watchers, and processes per watcher, of one simulated agent.
pub const MAX_WATCHERS: u32 = 64;
pub const MAX_PROCESSES: u32 = 256;

/// troupe-swarm: simulated troupe agents for one controller to find, heartbeat and follow.
///
/// Simulated agent i listens on FIRST-ADDRESS + i (loopback addresses only), at --port
/// (control: `nodeinfo`, `status`, `list`, `numwatchers`, `numprocesses`, `stats`, `dstats`),
/// --port + 1 (events; nothing is published) and --port + 2 (the stats stream: every
/// --stats-interval, a sample per process, an aggregate per watcher and the agent's own, as a
/// troupe-agent publishes). A controller finds them by probing the range printed at start.
///
/// Agents leave (their sockets close, as a killed agent's do) and join again (the same node
/// restarted: same name, id and address, a new start time) at --leave-rate and --join-rate a
/// second. Standard output gets one JSON object a line: `ready`, then every `leave` and `join`
/// (name, address, epoch time), `churn_started`/`churn_stopped`, and a `tally` every
/// --report-every.
#[derive(Debug, Parser)]
#[command(name = "troupe-swarm", version)]
pub struct Args {
    /// How many simulated agents (and addresses): all start at once.
    #[arg(long)]
    pub agents: u32,
    /// The first agent's address; the others follow it (127.1.0.1, 127.1.0.2, ...).
    #[arg(long, default_value = "127.1.0.1")]
    pub first_address: Ipv4Addr,
    /// Every agent's control port; events on the next port, stats on the one after.
    #[arg(long, default_value_t = 5555)]
    pub port: u16,
    /// The cluster the agents belong to.
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Agent names are PREFIX-00001, PREFIX-00002, ...
    #[arg(long, default_value = "sim")]
    pub name_prefix: String,
    /// Watchers of each agent.
    #[arg(long, default_value_t = 1)]
    pub watchers: u32,
    /// Processes of each watcher (in the stats stream and `stats`).
    #[arg(long, default_value_t = 2)]
    pub processes: u32,
    /// How often each agent publishes its stats (agents start at random phases).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub stats_interval: Duration,
    /// Agents that leave a second (random ones among those up).
    #[arg(long, default_value_t = 0.0)]
    pub leave_rate: f64,
    /// Agents that join again a second (random ones among those that left).
    #[arg(long, default_value_t = 0.0)]
    pub join_rate: f64,
    /// Both --leave-rate and --join-rate: the population stays about the same.
    #[arg(long, conflicts_with_all = ["leave_rate", "join_rate"])]
    pub churn: Option<f64>,
    /// Churn starts this long after all agents are up (serve finds them first), or, with
    /// `signal`, at the first SIGUSR1. SIGUSR1 stops churn that runs and starts it again.
    #[arg(long, default_value = "0s", value_parser = parse_churn_after)]
    pub churn_after: Duration,
    /// A cluster key file (`troupe keygen`): every agent's sockets are CURVE servers with it,
    /// as a keyed troupe-agent's are.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// How often a `tally` line is printed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub report_every: Duration,
    /// Run only part I of M of the agents (a contiguous block), at 1/M of the rates: what a
    /// swarm whose agents need more descriptors than one process may hold starts its
    /// processes with.
    #[arg(long, hide = true, value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Log filter (stderr): LEVEL or TARGET=LEVEL, comma-separated.
    #[arg(long, default_value = "warn", value_parser = troupe::logging::parse_filter)]
    pub log_level: tracing_subscriber::filter::Targets,
}

/// Part `index` (from 0) of `count` of a swarm's agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

fn parse_shard(text: &str) -> Result<Shard, String> {
    let parsed = text
        .split_once('/')
        .and_then(|(i, m)| Some((i.parse().ok()?, m.parse().ok()?)));
    match parsed {
        Some((index, count)) if index < count => Ok(Shard { index, count }),
        _ => Err(format!("expected I/M with I < M, got {text:?}")),
    }
}

/// A checked command line.
#[derive(Debug, Clone)]
pub struct Plan {
    pub agents: u32,
    pub first_address: Ipv4Addr,
    pub port: u16,
    pub cluster: String,
    pub name_prefix: String,
    pub watchers: u32,
    pub processes: u32,
    pub stats_interval: Duration,
    pub leave_rate: f64,
    pub join_rate: f64,
    pub churn_after: Duration,
    pub key_file: Option<PathBuf>,
    pub report_every: Duration,
    pub shard: Option<Shard>,
}

impl Plan {
    /// Checks every flag and returns all problems at once.
    pub fn from_args(args: &Args) -> Result<Plan, Vec<String>> {
        let mut problems = Vec::new();
        if args.agents == 0 || args.agents > MAX_AGENTS {
            problems.push(format!(
                "--agents: expected 1 to {MAX_AGENTS}, got {}",
                args.agents
            ));
        }
        let first = u32::from(args.first_address);
        if !args.first_address.is_loopback() {
            problems.push(format!(
                "--first-address: expected a loopback address (127.0.0.0/8): the swarm binds \
                 nothing else; got {}",
                args.first_address
            ));
        } else if let Some(last) = first.checked_add(args.agents.saturating_sub(1)) {
            if !Ipv4Addr::from(last).is_loopback() {
                problems.push(format!(
                    "--first-address {} with --agents {}: the last agent would be at {}, \
                     outside 127.0.0.0/8; start lower",
                    args.first_address,
                    args.agents,
                    Ipv4Addr::from(last)
                ));
            }
        }
        if args.port == 0 || args.port > u16::MAX - 2 {
            problems.push(format!(
                "--port: expected 1 to {} (the events and stats ports follow it), got {}",
                u16::MAX - 2,
                args.port
            ));
        }
        if let Err(e) = troupe::config::names::check_name(&args.cluster) {
            problems.push(format!("--cluster: {e}"));
        }
        let sample_name = format!("{}-{:05}", args.name_prefix, args.agents.max(1));
        if let Err(e) = troupe::config::names::check_name(&sample_name) {
            problems.push(format!(
                "--name-prefix {:?}: agent names such as {sample_name:?} are refused: {e}",
                args.name_prefix
            ));
        }
        if args.watchers == 0 || args.watchers > MAX_WATCHERS {
            problems.push(format!(
                "--watchers: expected 1 to {MAX_WATCHERS}, got {}",
                args.watchers
            ));
        }
        if args.processes > MAX_PROCESSES {
            problems.push(format!(
                "--processes: expected 0 to {MAX_PROCESSES}, got {}",
                args.processes
            ));
        }
        if args.stats_interval < Duration::from_millis(100) {
            problems.push(format!(
                "--stats-interval: expected at least 100ms, got {}",
                humantime::format_duration(args.stats_interval)
            ));
        }
        if args.report_every < Duration::from_millis(100) {
            problems.push(format!(
                "--report-every: expected at least 100ms, got {}",
                humantime::format_duration(args.report_every)
            ));
        }
        let (leave_rate, join_rate) = match args.churn {
            Some(churn) => (check_rate("--churn", churn, &mut problems), churn),
            None => (
                check_rate("--leave-rate", args.leave_rate, &mut problems),
                check_rate("--join-rate", args.join_rate, &mut problems),
            ),
        };
        if let Some(path) = &args.key_file {
            if !path.is_file() {
                problems.push(format!(
                    "--key-file {}: no such file (make one with `troupe keygen`)",
                    path.display()
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Plan {
            agents: args.agents,
            first_address: args.first_address,
            port: args.port,
            cluster: args.cluster.clone(),
            name_prefix: args.name_prefix.clone(),
            watchers: args.watchers,
            processes: args.processes,
            stats_interval: args.stats_interval,
            leave_rate,
            join_rate,
            churn_after: args.churn_after,
            key_file: args.key_file.clone(),
            report_every: args.report_every,
            shard: args.shard,
        })
    }

    /// The indexes of the agents this process runs: all, or its shard's block.
    pub fn mine(&self) -> std::ops::Range<u32> {
        let Some(shard) = self.shard else {
            return 0..self.agents;
        };
        let per = self.agents.div_ceil(shard.count);
        let start = (shard.index * per).min(self.agents);
        start..(start + per).min(self.agents)
    }

    /// The leave and join rates of this process.
    pub fn rates(&self) -> (f64, f64) {
        let share = self.shard.map_or(1.0, |s| f64::from(s.count));
        (self.leave_rate / share, self.join_rate / share)
    }

    /// Agent `index`'s address.
    pub fn address(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.first_address) + index)
    }

    /// The range a controller probes to find every agent (`--probe`).
    pub fn probe_range(&self) -> String {
        let last = self.address(self.agents - 1);
        if self.port == troupe::discovery::range::DEFAULT_PROBE_PORT {
            format!("{}-{last}", self.first_address)
        } else {
            format!("{}-{last}:{}", self.first_address, self.port)
        }
    }
}

/// A duration, or `signal` ([`crate::population::CHURN_ON_SIGNAL`]).
fn parse_churn_after(text: &str) -> Result<Duration, String> {
    if text == "signal" {
        return Ok(crate::population::CHURN_ON_SIGNAL);
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; expected a duration such as 30s, or `signal`"))
}

/// The rate itself when it is a number of joins or leaves a second we can keep.
fn check_rate(flag: &str, rate: f64, problems: &mut Vec<String>) -> f64 {
    if !(rate.is_finite() && (0.0..=MAX_RATE).contains(&rate)) {
        problems.push(format!(
            "{flag}: expected 0 to {MAX_RATE} a second, got {rate}"
        ));
    }
    rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(extra: &[&str]) -> Result<Plan, Vec<String>> {
        let mut argv = vec!["troupe-swarm"];
        argv.extend_from_slice(extra);
        Plan::from_args(&Args::try_parse_from(argv).expect("parses"))
    }

    #[test]
    fn a_plain_swarm_is_accepted_with_its_probe_range() {
        let plan = plan(&["--agents", "300"]).unwrap();
        assert_eq!(plan.probe_range(), "127.1.0.1-127.1.1.44");
        assert_eq!(plan.address(255), Ipv4Addr::new(127, 1, 1, 0));
        let other_port = super::tests::plan(&["--agents", "2", "--port", "6000"]).unwrap();
        assert_eq!(other_port.probe_range(), "127.1.0.1-127.1.0.2:6000");
    }

    #[test]
    fn shards_split_the_agents_in_blocks_and_share_the_rates() {
        let whole = plan(&["--agents", "10", "--churn", "3"]).unwrap();
        assert_eq!(whole.mine(), 0..10);
        let shard = |i: u32| {
            let text = format!("{i}/3");
            plan(&["--agents", "10", "--churn", "3", "--shard", &text]).unwrap()
        };
        let blocks: Vec<_> = (0..3).map(|i| shard(i).mine()).collect();
        assert_eq!(blocks, [0..4, 4..8, 8..10]);
        assert_eq!(shard(1).rates(), (1.0, 1.0));
        assert!(parse_shard("3/3").is_err() && parse_shard("x").is_err());
        assert_eq!(parse_shard("1/4"), Ok(Shard { index: 1, count: 4 }));
    }

    #[test]
    fn churn_sets_both_rates() {
        let plan = plan(&["--agents", "10", "--churn", "2.5"]).unwrap();
        assert_eq!((plan.leave_rate, plan.join_rate), (2.5, 2.5));
    }

    #[test]
    fn every_bad_flag_is_named_at_once() {
        let problems = plan(&[
            "--agents",
            "0",
            "--first-address",
            "10.0.0.1",
            "--port",
            "65535",
            "--cluster",
            "no spaces",
            "--watchers",
            "0",
            "--processes",
            "100000",
            "--stats-interval",
            "1ms",
            "--leave-rate=-1",
            "--join-rate",
            "NaN",
            "--key-file",
            "/nonexistent/key",
        ])
        .unwrap_err();
        for flag in [
            "--agents",
            "--first-address",
            "--port",
            "--cluster",
            "--watchers",
            "--processes",
            "--stats-interval",
            "--leave-rate",
            "--join-rate",
            "--key-file",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(flag)),
                "{flag} not named in {problems:#?}"
            );
        }
    }

    #[test]
    fn agents_past_the_end_of_loopback_are_refused() {
        let problems = plan(&["--agents", "3", "--first-address", "127.255.255.254"]).unwrap_err();
        assert!(problems[0].contains("outside 127.0.0.0/8"), "{problems:?}");
    }

    #[test]
    fn churn_conflicts_with_the_separate_rates() {
        let parsed = Args::try_parse_from([
            "troupe-swarm",
            "--agents",
            "1",
            "--churn",
            "1",
            "--join-rate",
            "1",
        ]);
        assert!(parsed.is_err());
    }
}
