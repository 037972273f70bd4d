//! When to try the token endpoint again: exponential backoff with jitter, never sooner than the
//! server's `Retry-After`, at least a few attempts, all within a total time bound. Pure: the
//! caller supplies elapsed time and randomness.

use std::time::Duration;

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
    /// `jitter` is a random number in [0, 1): the wait is between half and all of the backoff.
    pub fn next(
        &self,
        attempt: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Next {
        let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        let backoff = self.base.saturating_mul(doubling).min(self.cap);
        let jittered = backoff.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
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
