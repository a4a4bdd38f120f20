//! What `troupe serve`'s control loop lets in: requests in flight, counted per peer address
//! and in all ([`troupe::bounds::SERVE_REQUESTS_IN_FLIGHT`] and `_PER_PEER`), and the rate of
//! `register_node`, a token bucket per peer address behind a global one
//! (`SERVE_REGISTER_*`). The loop owns the gate and asks it before it starts a request, so a
//! request past a bound is answered at once and everyone else is still served.

use std::collections::HashMap;
use std::net::IpAddr;
use tokio::time::Instant;
use troupe::bounds::{
    SERVE_REGISTER_BURST, SERVE_REGISTER_BURST_PER_PEER, SERVE_REGISTER_PER_SECOND,
    SERVE_REGISTER_PER_SECOND_PER_PEER, SERVE_REQUESTS_IN_FLIGHT,
    SERVE_REQUESTS_IN_FLIGHT_PER_PEER,
};
use troupe::protocol::CommandError;

/// Where a request came from: its TCP peer address, or None when ZeroMQ gave none.
pub type Peer = Option<IpAddr>;

/// Requests in flight and `register_node` buckets.
#[derive(Debug)]
pub struct Gate {
    running: usize,
    running_per_peer: HashMap<Peer, usize>,
    register: TokenBucket,
    register_per_peer: HashMap<Peer, TokenBucket>,
}

impl Gate {
    pub fn new(now: Instant) -> Gate {
        Gate {
            running: 0,
            running_per_peer: HashMap::new(),
            register: TokenBucket::full(SERVE_REGISTER_BURST, SERVE_REGISTER_PER_SECOND, now),
            register_per_peer: HashMap::new(),
        }
    }

    /// Lets a request of `command` from `peer` start, counting it in flight until
    /// [`Gate::finished`]; or says which bound it meets.
    pub fn admit(&mut self, command: &str, peer: Peer, now: Instant) -> Result<(), CommandError> {
        let from = peer.map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
        let of_peer = self.running_per_peer.get(&peer).copied().unwrap_or(0);
        if of_peer >= SERVE_REQUESTS_IN_FLIGHT_PER_PEER {
            return Err(bound(format!(
                "{of_peer} requests from {from} are in flight, the most one address may have \
                 (troupe::bounds::SERVE_REQUESTS_IN_FLIGHT_PER_PEER = \
                 {SERVE_REQUESTS_IN_FLIGHT_PER_PEER}); send it again once some are answered"
            )));
        }
        if self.running >= SERVE_REQUESTS_IN_FLIGHT {
            return Err(bound(format!(
                "{} requests are in flight, the most troupe serve handles at once \
                 (troupe::bounds::SERVE_REQUESTS_IN_FLIGHT = {SERVE_REQUESTS_IN_FLIGHT}); \
                 send it again shortly",
                self.running
            )));
        }
        if command == "register_node" {
            self.take_register_token(peer, &from, now)?;
        }
        self.running += 1;
        *self.running_per_peer.entry(peer).or_default() += 1;
        Ok(())
    }

    /// A request admitted from `peer` was answered.
    pub fn finished(&mut self, peer: Peer) {
        self.running = self.running.saturating_sub(1);
        if let Some(count) = self.running_per_peer.get_mut(&peer) {
            *count -= 1;
            if *count == 0 {
                self.running_per_peer.remove(&peer);
            }
        }
    }

    /// The global bucket first: a refused flood from many addresses adds no per-peer
    /// bucket. Buckets that have refilled are forgotten (a new one starts full anyway).
    fn take_register_token(
        &mut self,
        peer: Peer,
        from: &str,
        now: Instant,
    ) -> Result<(), CommandError> {
        if !self.register.take(now) {
            return Err(bound(format!(
                "too many register_node requests from all peers (troupe::bounds::\
                 SERVE_REGISTER_PER_SECOND = {SERVE_REGISTER_PER_SECOND}, burst \
                 SERVE_REGISTER_BURST = {SERVE_REGISTER_BURST}); an agent registers again by \
                 itself"
            )));
        }
        self.register_per_peer
            .retain(|_, bucket| !bucket.is_full(now));
        let bucket = self.register_per_peer.entry(peer).or_insert_with(|| {
            TokenBucket::full(
                SERVE_REGISTER_BURST_PER_PEER,
                SERVE_REGISTER_PER_SECOND_PER_PEER,
                now,
            )
        });
        if !bucket.take(now) {
            return Err(bound(format!(
                "too many register_node requests from {from} (troupe::bounds::\
                 SERVE_REGISTER_PER_SECOND_PER_PEER = {SERVE_REGISTER_PER_SECOND_PER_PEER}, \
                 burst SERVE_REGISTER_BURST_PER_PEER = {SERVE_REGISTER_BURST_PER_PEER}); an \
                 agent registers again by itself"
            )));
        }
        Ok(())
    }

    /// Per-peer buckets held (tests).
    #[cfg(test)]
    fn buckets(&self) -> usize {
        self.register_per_peer.len()
    }
}

fn bound(reason: String) -> CommandError {
    CommandError::new(troupe::protocol::Errno::CommandError, reason)
}

/// `capacity` tokens, refilled at `per_second`.
#[derive(Debug, Clone)]
struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn full(capacity: u32, per_second: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            capacity: f64::from(capacity),
            per_second: f64::from(per_second),
            tokens: f64::from(capacity),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
        self.at = now;
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        self.tokens + elapsed.as_secs_f64() * self.per_second >= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// How long a peer's register bucket takes to refill from empty.
    fn peer_refill() -> Duration {
        Duration::from_secs_f64(
            f64::from(SERVE_REGISTER_BURST_PER_PEER)
                / f64::from(SERVE_REGISTER_PER_SECOND_PER_PEER),
        )
    }

    fn peer(last: u8) -> Peer {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[tokio::test(start_paused = true)]
    async fn one_peer_cannot_take_every_slot_and_a_finished_request_frees_one() {
        let now = Instant::now();
        let mut gate = Gate::new(now);
        for _ in 0..SERVE_REQUESTS_IN_FLIGHT_PER_PEER {
            gate.admit("status", peer(1), now).unwrap();
        }
        let refused = gate.admit("status", peer(1), now).unwrap_err();
        assert!(
            refused.reason.contains("SERVE_REQUESTS_IN_FLIGHT_PER_PEER")
                && refused.reason.contains("10.0.0.1"),
            "{refused}"
        );
        gate.admit("nodelist", peer(2), now)
            .expect("another peer is served");
        gate.finished(peer(1));
        gate.admit("status", peer(1), now)
            .expect("a slot was freed");
    }

    #[tokio::test(start_paused = true)]
    async fn all_peers_together_meet_the_global_bound() {
        let now = Instant::now();
        let mut gate = Gate::new(now);
        let mut admitted = 0;
        for i in 0..=255u8 {
            while gate.admit("status", peer(i), now).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, SERVE_REQUESTS_IN_FLIGHT);
        let refused = gate
            .admit("status", Some("fd00::9".parse().unwrap()), now)
            .unwrap_err();
        assert!(
            refused.reason.contains("SERVE_REQUESTS_IN_FLIGHT ="),
            "{refused}"
        );
        gate.finished(peer(0));
        gate.admit("status", None, now).expect("a slot was freed");
    }

    #[tokio::test(start_paused = true)]
    async fn register_node_is_rate_limited_per_peer() {
        let start = Instant::now();
        let mut gate = Gate::new(start);
        let mut registered = 0;
        while gate.admit("register_node", peer(1), start).is_ok() {
            gate.finished(peer(1));
            registered += 1;
        }
        assert_eq!(registered, SERVE_REGISTER_BURST_PER_PEER);
        let refused = gate.admit("register_node", peer(1), start).unwrap_err();
        assert!(
            refused
                .reason
                .contains("SERVE_REGISTER_PER_SECOND_PER_PEER"),
            "{refused}"
        );
        // Other commands and other peers are not held up.
        gate.admit("nodelist", peer(1), start).unwrap();
        gate.admit("register_node", peer(2), start).unwrap();
        // The bucket refills at its rate.
        let later = start + Duration::from_secs(1);
        let mut again = 0;
        while gate.admit("register_node", peer(1), later).is_ok() {
            again += 1;
        }
        assert_eq!(again, SERVE_REGISTER_PER_SECOND_PER_PEER);
    }

    #[tokio::test(start_paused = true)]
    async fn register_node_is_rate_limited_globally_and_buckets_are_forgotten() {
        let start = Instant::now();
        let mut gate = Gate::new(start);
        let mut registered = 0u32;
        'peers: for a in 0..=255u8 {
            for b in 0..=255u8 {
                let from = Some(IpAddr::from([10, 1, a, b]));
                match gate.admit("register_node", from, start) {
                    Ok(()) => {
                        gate.finished(from);
                        registered += 1;
                    }
                    Err(refused) => {
                        assert!(refused.reason.contains("from all peers"), "{refused}");
                        break 'peers;
                    }
                }
            }
        }
        assert_eq!(registered, SERVE_REGISTER_BURST);
        assert!(gate.buckets() <= SERVE_REGISTER_BURST as usize);
        // Once refilled, per-peer buckets are dropped at the next registration.
        let later = start + peer_refill() + Duration::from_secs(2);
        gate.admit("register_node", peer(1), later).unwrap();
        assert_eq!(gate.buckets(), 1);
    }
}
