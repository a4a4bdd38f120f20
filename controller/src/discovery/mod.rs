//! The discovery sources, all feeding one membership: mDNS browsing, range probing, static
//! seeds and Circus UDP discovery (agents that register themselves arrive through the
//! controller's control socket instead). [`crate::admission`] decides which of the endpoints they
//! name may be adopted.

pub mod circus_udp;
pub mod mdns;

use crate::admission::Admission;
use crate::membership::{MemberState, MembershipHandle, MembershipMsg, Source};
use crate::probe::{sweep, ProbeLimits, Probed};
use crate::settings::Settings;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use troupe::discovery::ProbeTargets;

/// How long a Circus UDP query waits for answers.
const UDP_WAIT: Duration = Duration::from_millis(700);

/// Where to look.
#[derive(Debug, Clone)]
pub struct Sources {
    pub cluster: String,
    /// mDNS browsing and Circus UDP discovery (both multicast).
    pub multicast: bool,
    pub probe: ProbeTargets,
    pub seeds: ProbeTargets,
    pub probe_interval: Duration,
    pub limits: ProbeLimits,
    /// What may be adopted from sightings and requested ranges.
    pub admission: Admission,
}

impl Sources {
    /// Where the settings say to look; every endpoint found is adopted ([`Admission::Open`]:
    /// what a one-shot command wants; `troupe serve` narrows it).
    pub fn of(settings: &Settings) -> Sources {
        Sources {
            cluster: settings.config.cluster.clone(),
            multicast: settings.multicast,
            probe: settings.probe.clone(),
            seeds: settings.seeds.clone(),
            probe_interval: settings.config.probe_interval,
            limits: Default::default(),
            admission: Admission::Open,
        }
    }
}

/// The ranges swept at each interval.
#[derive(Debug, Clone, Default)]
pub struct Ranges {
    /// Given by the operator: whatever answers there is adopted.
    pub operator: ProbeTargets,
    /// Asked for by a client of `troupe serve` (`cluster`): swept within [`Admission`].
    pub requested: ProbeTargets,
}

/// Running discovery; stops when dropped or on [`Discovery::stop`].
pub struct Discovery {
    daemon: Option<mdns_sd::ServiceDaemon>,
    tasks: Vec<JoinHandle<()>>,
    /// The probed ranges, with a generation number bumped on every change.
    ranges: tokio::sync::watch::Sender<(u64, Ranges)>,
    /// The generation of the ranges of the last finished sweep.
    sweeps: tokio::sync::watch::Receiver<Option<u64>>,
}

impl Discovery {
    /// Starts the membership actor and every configured source.
    pub fn start(sources: Sources) -> anyhow::Result<(MembershipHandle, Discovery)> {
        let (verify_tx, verify_rx) = mpsc::unbounded_channel();
        let verify = sources.multicast.then_some(verify_tx);
        let membership =
            MembershipHandle::spawn(&sources.cluster, verify, sources.admission.clone());
        let daemon = if sources.multicast {
            Some(mdns::start(
                membership.clone(),
                sources.cluster.clone(),
                verify_rx,
            )?)
        } else {
            None
        };
        let operator = Ranges {
            operator: sources.probe.clone(),
            requested: ProbeTargets::default(),
        };
        let (ranges, ranges_rx) = tokio::sync::watch::channel((0, operator));
        let (sweeps_tx, sweeps) = tokio::sync::watch::channel(None);
        let tasks = vec![tokio::spawn(probe_loop(
            membership.clone(),
            sources,
            ranges_rx,
            sweeps_tx,
        ))];
        Ok((
            membership,
            Discovery {
                daemon,
                tasks,
                ranges,
                sweeps,
            },
        ))
    }

    /// Resolves once the first sweep of ranges and seeds is in the member list.
    pub async fn first_sweep(&self) {
        let mut sweeps = self.sweeps.clone();
        let _ = sweeps.wait_for(Option::is_some).await;
    }

    /// Resolves once the first discovery is done: the first sweep of ranges and seeds, then
    /// with multicast `listen` more for mDNS answers (less once `expect` members are alive).
    pub async fn first_discovery(
        &self,
        membership: &MembershipHandle,
        listen: Duration,
        expect: Option<usize>,
    ) {
        self.first_sweep().await;
        if self.daemon.is_some() {
            membership
                .wait_until(listen, |m| {
                    expect.is_some_and(|n| {
                        m.iter().filter(|m| m.state == MemberState::Alive).count() >= n
                    })
                })
                .await;
        }
        membership.sync().await;
    }

    /// Replaces the probed ranges (`troupe cluster`) and resolves once they have been swept
    /// (at once, not at the next interval) and what answered is in the member list.
    pub async fn sweep_ranges(&self, ranges: Ranges) {
        let mut generation = 0;
        self.ranges.send_modify(|(current, old)| {
            *current += 1;
            generation = *current;
            *old = ranges;
        });
        let mut sweeps = self.sweeps.clone();
        let _ = sweeps.wait_for(|swept| *swept >= Some(generation)).await;
    }

    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(daemon) = self.daemon.take() {
            let _ = daemon.shutdown();
        }
    }
}

/// Sweeps the ranges and seeds (and asks over Circus UDP) at once, then every interval.
async fn probe_loop(
    membership: MembershipHandle,
    sources: Sources,
    mut ranges_rx: tokio::sync::watch::Receiver<(u64, Ranges)>,
    sweeps: tokio::sync::watch::Sender<Option<u64>>,
) {
    let zmq = troupe::sockets::member_context();
    let every = sources.probe_interval.max(Duration::from_millis(500));
    loop {
        let (generation, probe) = ranges_rx.borrow_and_update().clone();
        let nothing_to_sweep = probe.operator.is_empty() && probe.requested.is_empty();
        if nothing_to_sweep && sources.seeds.is_empty() && !sources.multicast {
            sweeps.send_replace(Some(generation));
            if ranges_rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let open = Admission::Open;
        let probed = membership.heartbeated_endpoints(Source::Probe);
        let seeded = membership.heartbeated_endpoints(Source::Seed);
        let operator = sweep(&zmq, &probe.operator, sources.limits, &open, &probed);
        let requested = sweep(
            &zmq,
            &probe.requested,
            sources.limits,
            &sources.admission,
            &probed,
        );
        let ranges = async {
            let (mut operator, requested) = tokio::join!(operator, requested);
            operator.extend(requested);
            operator
        };
        let seeds = sweep(&zmq, &sources.seeds, sources.limits, &open, &seeded);
        let udp = async {
            if sources.multicast {
                circus_udp::query(UDP_WAIT).await.unwrap_or_default()
            } else {
                Default::default()
            }
        };
        let (ranges, seeds, udp) = tokio::join!(ranges, seeds, udp);
        for (found, source) in [(ranges, Source::Probe), (seeds, Source::Seed)] {
            for (endpoint, probed) in found {
                let msg = match probed {
                    Probed::Node(facts) => MembershipMsg::Answered {
                        endpoint,
                        source,
                        facts,
                    },
                    Probed::Refused => MembershipMsg::Refused { endpoint, source },
                    Probed::Silent => MembershipMsg::Silent { endpoint },
                    Probed::Nothing => continue,
                };
                membership.send(msg).await;
            }
        }
        for (endpoint, announced) in udp {
            membership
                .send(MembershipMsg::Seen {
                    endpoint,
                    source: Source::CircusUdp,
                    announced,
                    name: None,
                })
                .await;
        }
        // A finished sweep means its answers are in the member list.
        membership.sync().await;
        sweeps.send_replace(Some(generation));
        // Next sweep after the interval, or at once when the ranges change.
        let _ = tokio::time::timeout(every, ranges_rx.changed()).await;
    }
}
