//! The heartbeat round trips, as a histogram of fixed buckets (what `/metrics` exposes as
//! `troupe_heartbeat_round_trip_seconds`). The membership actor owns it and publishes a copy
//! with its view; a bucket count is a `u64`, so it never grows with the members.

use std::time::Duration;

/// Upper bounds of the buckets, in seconds: loopback answers in well under a millisecond, a
/// LAN in a few, and a heartbeat is given up after 500 ms (`HEARTBEAT_TIMEOUT`), so nothing
/// is observed beyond it.
pub const BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Observations so far: per bucket (not cumulative), their count and their sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundTrips {
    in_bucket: [u64; BUCKETS.len()],
    /// Beyond the last bucket (only `+Inf` holds them).
    beyond: u64,
    pub count: u64,
    pub sum_seconds: f64,
}

impl RoundTrips {
    pub fn observe(&mut self, round_trip: Duration) {
        let seconds = round_trip.as_secs_f64();
        match BUCKETS.iter().position(|upper| seconds <= *upper) {
            Some(at) => self.in_bucket[at] += 1,
            None => self.beyond += 1,
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }

    /// `(upper bound, observations in that bucket only)`, ending with `+Inf` for those
    /// beyond the last bound: what prometheus-client's encoder takes (it writes them
    /// cumulated, as the exposition format wants).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .copied()
            .zip(self.in_bucket)
            .chain([(f64::INFINITY, self.beyond)])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_trip_falls_in_the_first_bucket_that_holds_it() {
        let mut trips = RoundTrips::default();
        for ms in [0.2, 0.5, 0.7, 30.0, 2000.0] {
            trips.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        let buckets = trips.buckets();
        assert_eq!(buckets[0], (0.0005, 2));
        assert_eq!(buckets[1], (0.001, 1));
        assert_eq!(buckets[6], (0.05, 1));
        assert_eq!(buckets[BUCKETS.len() - 1], (1.0, 0));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(buckets.iter().map(|(_, n)| n).sum::<u64>(), 5);
        assert_eq!(trips.count, 5);
        assert!((trips.sum_seconds - 2.0314).abs() < 1e-9);
    }
}
