//! Respawn decisions as pure functions: how long to wait, and when a watcher is flapping.

use std::time::Duration;

/// The first retry after a quick death waits this long; each further one doubles it.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// Tracks quick deaths in a row for one watcher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RespawnPolicy {
    quick_failures: u32,
}

/// What to do after a process died or failed to spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespawnDecision {
    /// Respawn after this delay (zero = at once).
    After(Duration),
    /// Too many quick deaths in a row: stop the watcher.
    GiveUp { quick_failures: u32 },
}

impl RespawnPolicy {
    /// Records a death after `uptime` (None = the spawn itself failed) and decides.
    pub fn on_death(
        &mut self,
        uptime: Option<Duration>,
        min_uptime: Duration,
        max_retry: i64,
        backoff_max: Duration,
    ) -> RespawnDecision {
        match uptime {
            Some(up) if up >= min_uptime => self.quick_failures = 0,
            _ => self.quick_failures = self.quick_failures.saturating_add(1),
        }
        if max_retry >= 0 && i64::from(self.quick_failures) > max_retry {
            return RespawnDecision::GiveUp {
                quick_failures: self.quick_failures,
            };
        }
        RespawnDecision::After(delay(self.quick_failures, backoff_max))
    }

    /// Whether the last death was quick: the next spawn is a retry.
    pub fn retrying(&self) -> bool {
        self.quick_failures > 0
    }

    /// A fresh start (start, restart, reload) forgets earlier failures.
    pub fn reset(&mut self) {
        self.quick_failures = 0;
    }
}

/// Capped exponential backoff: 0 after a healthy run, then 100ms, 200ms, ... up to `max`.
pub fn delay(quick_failures: u32, max: Duration) -> Duration {
    if quick_failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(quick_failures - 1).unwrap_or(u32::MAX);
    BACKOFF_BASE.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RespawnDecision::*;

    const MIN_UP: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(10);

    #[test]
    fn backoff_doubles_and_caps() {
        let table = [
            (0, 0),
            (1, 100),
            (2, 200),
            (3, 400),
            (7, 6400),
            (8, 10_000),
            (40, 10_000),
        ];
        for (failures, ms) in table {
            assert_eq!(
                delay(failures, MAX),
                Duration::from_millis(ms),
                "{failures}"
            );
        }
    }

    #[test]
    fn a_healthy_run_respawns_at_once_and_resets_the_count() {
        let mut policy = RespawnPolicy::default();
        assert_eq!(
            policy.on_death(Some(Duration::ZERO), MIN_UP, 5, MAX),
            After(Duration::from_millis(100))
        );
        assert_eq!(
            policy.on_death(Some(Duration::from_secs(5)), MIN_UP, 5, MAX),
            After(Duration::ZERO)
        );
        assert_eq!(
            policy.on_death(None, MIN_UP, 5, MAX),
            After(Duration::from_millis(100))
        );
    }

    #[test]
    fn gives_up_after_max_retry_quick_deaths() {
        let mut policy = RespawnPolicy::default();
        for _ in 0..3 {
            assert!(matches!(policy.on_death(None, MIN_UP, 3, MAX), After(_)));
        }
        assert_eq!(
            policy.on_death(None, MIN_UP, 3, MAX),
            GiveUp { quick_failures: 4 }
        );
    }

    #[test]
    fn max_retry_minus_one_never_gives_up() {
        let mut policy = RespawnPolicy::default();
        for _ in 0..1000 {
            assert!(matches!(policy.on_death(None, MIN_UP, -1, MAX), After(_)));
        }
    }

    #[test]
    fn max_retry_zero_gives_up_on_the_first_quick_death() {
        let mut policy = RespawnPolicy::default();
        assert_eq!(
            policy.on_death(Some(Duration::from_millis(10)), MIN_UP, 0, MAX),
            GiveUp { quick_failures: 1 }
        );
    }

    #[test]
    fn reset_forgets_failures() {
        let mut policy = RespawnPolicy::default();
        policy.on_death(None, MIN_UP, 5, MAX);
        policy.on_death(None, MIN_UP, 5, MAX);
        policy.reset();
        assert_eq!(
            policy.on_death(None, MIN_UP, 5, MAX),
            After(Duration::from_millis(100))
        );
    }
}
