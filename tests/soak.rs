//! Soak: crash/respawn cycles of a watcher whose process exits at once, respawned without
//! backoff and never declared flapping (`backoff_max = 0`, `max_retry = -1`, as an operator
//! would set a watcher that must always come back). The agent must end with no zombie and the
//! fds it started with. `bench/run soak` runs the same loop longer on the release agent and
//! prints cycles/s, fds and RSS as it goes (RSS is the bench's, not asserted here).

use crate::support::{proc_status_kib, wait_for, zombie_children, Agent};
use serde_json::json;
use std::time::{Duration, Instant};

const CRASHER: &str =
    "[watcher.crasher]\ncmd = \"true\"\nautostart = false\nbackoff_max = 0\nmax_retry = -1\n";

/// An agent running the crasher, and a subscription to its reaps.
struct Soak {
    agent: Agent,
    reaps: zmq::Socket,
    _context: zmq::Context,
}

/// What the agent holds at one point of the soak.
#[derive(Debug, Clone, Copy)]
struct Sample {
    cycles: u64,
    elapsed: Duration,
    fds: usize,
    rss_kib: u64,
    zombies: usize,
}

impl Soak {
    fn start() -> Soak {
        let agent = Agent::start(CRASHER);
        let context = zmq::Context::new();
        let reaps = context.socket(zmq::SUB).unwrap();
        reaps.connect(&agent.pubsub_endpoint()).unwrap();
        reaps.set_subscribe(b"watcher.crasher.reap").unwrap();
        reaps.set_rcvtimeo(10_000).unwrap();
        Soak {
            agent,
            reaps,
            _context: context,
        }
    }

    fn command(&self, command: &str) {
        let reply = self
            .agent
            .call(command, json!({"name": "crasher", "waiting": true}));
        assert_eq!(reply["status"], "ok", "{command}: {reply}");
    }

    /// Waits for `count` more reaps.
    fn cycles(&self, count: u64) {
        for done in 0..count {
            self.reaps.recv_multipart(0).unwrap_or_else(|e| {
                panic!("no reap after {done} of {count}: {e}\n{}", self.agent.log())
            });
        }
    }

    fn sample(&self, cycles: u64, started: Instant) -> Sample {
        let pid = self.agent.pid();
        Sample {
            cycles,
            elapsed: started.elapsed(),
            fds: fd_count(pid),
            rss_kib: proc_status_kib(pid, "VmRSS"),
            zombies: zombie_children(pid).len(),
        }
    }

    /// The agent's fds with the crasher stopped, once its connections from `call` settled:
    /// the same count three times in a row 50 ms apart.
    fn settled_fds(&self) -> usize {
        let pid = self.agent.pid();
        let mut last = (fd_count(pid), 0);
        wait_for(
            "the agent's fd count to settle",
            Duration::from_secs(5),
            || {
                let now = fd_count(pid);
                last = if now == last.0 {
                    (now, last.1 + 1)
                } else {
                    (now, 0)
                };
                std::thread::sleep(Duration::from_millis(50));
                last.1 >= 3
            },
        );
        last.0
    }

    /// Runs `cycles` cycles after a warm-up, calling `report` every `every` cycles; returns
    /// the fds (crasher stopped) before and after, and the samples.
    fn run(
        &self,
        cycles: u64,
        every: u64,
        mut report: impl FnMut(&Sample),
    ) -> (usize, usize, Vec<Sample>) {
        // A warm-up first: the agent's first spawns allocate what it keeps (log files, the
        // reaper's buffers), which is not a leak.
        self.command("start");
        self.cycles(100);
        self.command("stop");
        let fds_before = self.settled_fds();
        let started = Instant::now();
        let mut samples = vec![self.sample(0, started)];
        report(&samples[0]);
        self.command("start");
        let mut done = 0;
        while done < cycles {
            let step = every.min(cycles - done);
            self.cycles(step);
            done += step;
            let sample = self.sample(done, started);
            report(&sample);
            samples.push(sample);
        }
        self.command("stop");
        let fds_after = self.settled_fds();
        (fds_before, fds_after, samples)
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

#[test]
fn a_thousand_crash_cycles_leave_no_zombie_and_no_fd_behind() {
    let soak = Soak::start();
    let (fds_before, fds_after, samples) = soak.run(1000, 100, |_| {});
    for sample in &samples {
        // One process at most: its exit may be read before the agent reaped it, never more.
        assert!(sample.zombies <= 1, "{sample:?}\n{}", soak.agent.log());
    }
    assert_eq!(
        zombie_children(soak.agent.pid()),
        Vec::<u32>::new(),
        "zombies after the watcher stopped"
    );
    assert_eq!(
        fds_after, fds_before,
        "the agent's fds after 1000 cycles (crasher stopped both times)\n{:?}",
        samples
    );
}

/// `bench/run soak [CYCLES]`: `TROUPE_SOAK_CYCLES` cycles (10 000 by default) on the agent in
/// `TROUPE_BIN_DIR`, a line every 1000 cycles; fails if RSS grew by more than 10 %.
#[test]
#[ignore = "a benchmark: bench/run soak"]
fn soak_bench() {
    let cycles = std::env::var("TROUPE_SOAK_CYCLES")
        .map(|n| n.parse().expect("TROUPE_SOAK_CYCLES: a number of cycles"))
        .unwrap_or(10_000);
    let soak = Soak::start();
    println!(
        "{:>8} {:>9} {:>10} {:>5} {:>9} {:>7}",
        "cycles", "seconds", "cycles/s", "fds", "RSS KiB", "zombies"
    );
    let mut last: Option<Sample> = None;
    let (fds_before, fds_after, samples) = soak.run(cycles, 1000, |sample| {
        let rate = last.map_or(0.0, |last| {
            (sample.cycles - last.cycles) as f64 / (sample.elapsed - last.elapsed).as_secs_f64()
        });
        println!(
            "{:>8} {:>9.1} {:>10.0} {:>5} {:>9} {:>7}",
            sample.cycles,
            sample.elapsed.as_secs_f64(),
            rate,
            sample.fds,
            sample.rss_kib,
            sample.zombies
        );
        last = Some(*sample);
    });
    let (first, end) = (samples[0], samples[samples.len() - 1]);
    let growth = (end.rss_kib as f64 / first.rss_kib as f64 - 1.0) * 100.0;
    println!(
        "{cycles} cycles in {:.1} s ({:.0} cycles/s); fds with the watcher stopped {fds_before} \
         -> {fds_after}; RSS {} -> {} KiB ({growth:+.1} %); zombies at the end: {}",
        end.elapsed.as_secs_f64(),
        cycles as f64 / end.elapsed.as_secs_f64(),
        first.rss_kib,
        end.rss_kib,
        zombie_children(soak.agent.pid()).len()
    );
    assert_eq!(fds_after, fds_before, "fds leaked");
    assert!(growth <= 10.0, "RSS grew by {growth:.1} %");
}
