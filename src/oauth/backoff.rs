//! When to try again: one exponential backoff with jitter ([`Backoff`]) for everything that
//! waits after a failure (the token endpoint within one refresh, the daemon's cool-down after a
//! failed refresh, the fleet's store while it cannot be reached), and [`RetryPolicy`], the
//! token endpoint's: never sooner than the server's `Retry-After`, at least a few attempts, all
//! within a total time bound. Pure: the caller supplies elapsed time and randomness.

use std::time::Duration;

/// Waits that double from `base` up to `cap`, each drawn at random between `floor` of the full
/// wait and all of it (so that many processes failing together do not retry together).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// The least share of the full wait, in [0, 1].
    pub floor: f64,
}

impl Backoff {
    /// The wait after failure number `failures` (1-based); `jitter` is a random number in
    /// [0, 1).
    pub fn wait(&self, failures: u32, jitter: f64) -> Duration {
        let doubling = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
        let full = self.base.saturating_mul(doubling).min(self.cap);
        full.mul_f64(self.floor + (1.0 - self.floor) * jitter.clamp(0.0, 1.0))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// No attempt starts, and no wait ends, later than this after the first attempt.
    pub total: Duration,
    /// First wait; each later wait doubles, up to `cap`.
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            total: Duration::from_secs(60),
            base: Duration::from_secs(1),
            cap: Duration::from_secs(16),
        }
    }
}

/// What to do after failed attempt number `attempt` (1-based).
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    RetryAfter(Duration),
    /// The time bound is spent (or the server asks us to wait past it).
    GiveUp,
}

impl RetryPolicy {
    /// The waits between attempts, before `Retry-After` and the total bound.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.base,
            cap: self.cap,
            floor: 0.5,
        }
    }

    /// `jitter` is a random number in [0, 1): the wait is between half and all of the backoff.
    pub fn next(
        &self,
        attempt: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Next {
        let jittered = self.backoff().wait(attempt, jitter);
        let wait = retry_after.map_or(jittered, |r| r.max(jittered));
        match elapsed.checked_add(wait) {
            Some(end) if end < self.total => Next::RetryAfter(wait),
            _ => Next::GiveUp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_doubles_to_its_cap_within_its_jitter() {
        let b = Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(300),
            floor: 0.75,
        };
        assert_eq!(b.wait(1, 0.0), Duration::from_millis(1500));
        assert_eq!(b.wait(2, 1.0), Duration::from_secs(4));
        assert_eq!(b.wait(40, 1.0), Duration::from_secs(300));
        assert_eq!(b.wait(u32::MAX, 0.0), Duration::from_secs(225));
        let fixed = Backoff { floor: 1.0, ..b };
        assert_eq!(fixed.wait(3, 0.3), Duration::from_secs(8));
    }

    #[test]
    fn at_least_five_attempts_fit_in_the_default_bound() {
        let p = RetryPolicy::default();
        let mut elapsed = Duration::ZERO;
        let mut attempts = 1;
        // Worst case: every attempt fails at once and every jitter is at its largest.
        while let Next::RetryAfter(wait) = p.next(attempts, elapsed, None, 0.999) {
            elapsed += wait;
            attempts += 1;
        }
        assert!(attempts >= 5, "{attempts} attempts");
        assert!(elapsed < p.total);
    }

    #[test]
    fn retry_after_is_honoured_and_can_end_the_retries() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.next(1, Duration::ZERO, Some(Duration::from_secs(7)), 0.0),
            Next::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            p.next(
                1,
                Duration::from_secs(30),
                Some(Duration::from_secs(3600)),
                0.0
            ),
            Next::GiveUp
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_never_overflows() {
        let p = RetryPolicy::default();
        let wait = |a| match p.next(a, Duration::ZERO, None, 0.999) {
            Next::RetryAfter(w) => w,
            Next::GiveUp => Duration::MAX,
        };
        assert!(wait(2) > wait(1));
        assert!(wait(100) <= p.cap);
        assert_eq!(
            p.next(u32::MAX, Duration::MAX, Some(Duration::MAX), 1.0),
            Next::GiveUp
        );
    }
}
