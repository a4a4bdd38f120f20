//! Which simulated agents are up: all at start, then leaving and joining at the plan's rates.
//! One owner (the [`Population`], driven by one loop) holds every agent's task.

use crate::args::Plan;
use crate::node::{self, Agent, Counters, Identity, Shape};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use troupe::cluster_key::Keyring;
use troupe::protocol::now_epoch;
use troupe::sockets::ServerContext;

/// How often churn is applied.
const CHURN_TICK: Duration = Duration::from_millis(100);
/// `--churn-after` of a swarm whose churn starts only at SIGUSR1.
pub const CHURN_ON_SIGNAL: Duration = Duration::MAX;
/// Agents whose sockets share one ZeroMQ context: libzmq allows 1023 sockets per context by
/// default (the zmq crate cannot change it), and an agent takes three, its ZAP handler one.
/// Each context adds an I/O thread, mostly idle.
const AGENTS_PER_CONTEXT: u32 = 320;

/// Joins and leaves owed at two rates, as time passes: a pure schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Churn {
    leave_rate: f64,
    join_rate: f64,
    leaves_owed: f64,
    joins_owed: f64,
}

impl Churn {
    pub fn new(leave_rate: f64, join_rate: f64) -> Churn {
        Churn {
            leave_rate,
            join_rate,
            leaves_owed: 0.0,
            joins_owed: 0.0,
        }
    }

    pub fn is_still(&self) -> bool {
        self.leave_rate == 0.0 && self.join_rate == 0.0
    }

    /// How many agents leave and how many join after `elapsed` more time; fractions carry over.
    pub fn due(&mut self, elapsed: Duration) -> (usize, usize) {
        let seconds = elapsed.as_secs_f64();
        self.leaves_owed += self.leave_rate * seconds;
        self.joins_owed += self.join_rate * seconds;
        let leaves = self.leaves_owed.floor();
        let joins = self.joins_owed.floor();
        self.leaves_owed -= leaves;
        self.joins_owed -= joins;
        (leaves as usize, joins as usize)
    }
}

/// Every simulated agent: the tasks of those up, the indexes of those that left.
pub struct Population {
    plan: Plan,
    shape: Arc<Shape>,
    /// Agent i listens in `servers[i / AGENTS_PER_CONTEXT]`.
    servers: Vec<ServerContext>,
    counters: Arc<Counters>,
    identities: Vec<Identity>,
    /// Running agents by index in this process's block (None: left).
    tasks: Vec<Option<JoinHandle<()>>>,
    up: Vec<u32>,
    left: Vec<u32>,
    joined: u64,
    departed: u64,
    /// Joins that found no agent left to rejoin, or whose ports were still closing.
    joins_missed: u64,
}

impl Population {
    /// Binds every agent and starts it, in contexts admitting holders of `keyring` (or, without
    /// one, everyone); the first failure to bind is the error. Needs the runtime (ZAP handlers).
    pub fn start(
        plan: Plan,
        shape: Shape,
        keyring: Option<&Keyring>,
        counters: Arc<Counters>,
    ) -> Result<Population, String> {
        let mine = plan.mine();
        let count = mine.len() as u32;
        let servers = (0..count.div_ceil(AGENTS_PER_CONTEXT))
            .map(|_| ServerContext::new(keyring))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot start ZeroMQ and its ZAP handler: {e}"))?;
        let identities: Vec<Identity> = mine
            .map(|i| Identity::new(&plan.name_prefix, &plan.cluster, i, plan.address(i)))
            .collect();
        let mut population = Population {
            tasks: (0..count).map(|_| None).collect(),
            up: Vec::with_capacity(count as usize),
            left: Vec::new(),
            plan,
            shape: Arc::new(shape),
            servers,
            counters,
            identities,
            joined: 0,
            departed: 0,
            joins_missed: 0,
        };
        for index in 0..count {
            population.launch(index).map_err(|e| {
                format!(
                    "{e} (is another swarm or agent there? choose other addresses with \
                     --first-address or another --port)"
                )
            })?;
        }
        Ok(population)
    }

    fn launch(&mut self, index: u32) -> Result<(), String> {
        let identity = self.identities[index as usize].clone();
        let server = &self.servers[(index / AGENTS_PER_CONTEXT) as usize];
        let bound = node::bind(server, &self.shape, &identity)?;
        let agent = Agent::new(self.shape.clone(), identity, self.counters.clone());
        self.tasks[index as usize] = Some(tokio::spawn(agent.run(bound)));
        self.up.push(index);
        Ok(())
    }

    /// Applies churn until the process is told to stop, printing a tally every
    /// `report_every`.
    pub async fn run(mut self, mut stop: impl std::future::Future<Output = ()> + Unpin) {
        let (leave_rate, join_rate) = self.plan.rates();
        let mut churn = Churn::new(leave_rate, join_rate);
        let mut churning = false;
        // None: at SIGUSR1 only.
        let mut churn_from = tokio::time::Instant::now().checked_add(self.plan.churn_after);
        let mut toggles =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                .expect("a SIGUSR1 handler");
        let mut tick = tokio::time::interval(CHURN_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut report = tokio::time::interval(self.plan.report_every);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = &mut stop => break,
                now = tick.tick(), if !churn.is_still() => {
                    let elapsed = now - last;
                    last = now;
                    if churn_from.is_some_and(|from| now >= from) && !churning {
                        churn_from = None;
                        churning = true;
                        self.event_toggle(churning);
                    }
                    if churning {
                        let (leaves, joins) = churn.due(elapsed);
                        self.churn(leaves, joins);
                    }
                }
                _ = toggles.recv() => {
                    churning = !churning;
                    self.event_toggle(churning);
                }
                _ = report.tick() => self.tally(),
            }
        }
        self.tally();
        for task in self.tasks.iter().flatten() {
            task.abort();
        }
    }

    fn churn(&mut self, leaves: usize, joins: usize) {
        for _ in 0..leaves {
            if self.up.is_empty() {
                break;
            }
            let index = self.up.swap_remove(fastrand::usize(..self.up.len()));
            if let Some(task) = self.tasks[index as usize].take() {
                task.abort();
            }
            self.left.push(index);
            self.departed += 1;
            self.event("leave", index);
        }
        for _ in 0..joins {
            if self.left.is_empty() {
                self.joins_missed += 1;
                continue;
            }
            let at = fastrand::usize(..self.left.len());
            let index = self.left[at];
            match self.launch(index) {
                Ok(()) => {
                    self.left.swap_remove(at);
                    self.joined += 1;
                    self.event("join", index);
                }
                // Its old listeners close in ZeroMQ's I/O thread: another agent joins instead,
                // or this one later.
                Err(e) => {
                    tracing::debug!("join postponed: {e}");
                    self.joins_missed += 1;
                }
            }
        }
    }

    fn event(&self, kind: &str, index: u32) {
        let identity = &self.identities[index as usize];
        println!(
            "{}",
            json!({"event": kind, "name": identity.name, "address": identity.address.to_string(),
                   "time": now_epoch()})
        );
    }

    fn event_toggle(&self, churning: bool) {
        let kind = if churning {
            "churn_started"
        } else {
            "churn_stopped"
        };
        println!("{}", json!({"event": kind, "time": now_epoch()}));
    }

    fn tally(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        println!(
            "{}",
            json!({
                "event": "tally", "time": now_epoch(), "up": self.up.len(), "left": self.left.len(),
                "joined": self.joined, "departed": self.departed, "joins_missed": self.joins_missed,
                "requests": self.counters.requests.load(Relaxed),
                "samples": self.counters.samples.load(Relaxed),
            })
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_owes_whole_agents_and_carries_fractions() {
        let mut churn = Churn::new(2.5, 0.5);
        let tick = Duration::from_millis(100);
        let (mut leaves, mut joins) = (0, 0);
        let mut first_leave_tick = None;
        for n in 1..=40 {
            let (l, j) = churn.due(tick);
            if l > 0 && first_leave_tick.is_none() {
                first_leave_tick = Some(n);
            }
            leaves += l;
            joins += j;
        }
        assert_eq!((leaves, joins), (10, 2), "4 s at 2.5 and 0.5 a second");
        assert_eq!(first_leave_tick, Some(4), "the first leave after 0.4 s");
        assert!(Churn::new(0.0, 0.0).is_still());
        assert!(!Churn::new(0.0, 1.0).is_still());
    }

    #[test]
    fn a_long_pause_pays_everything_owed_at_once() {
        let mut churn = Churn::new(100.0, 0.0);
        assert_eq!(churn.due(Duration::from_secs(3)), (300, 0));
        assert_eq!(churn.due(Duration::ZERO), (0, 0));
    }
}
