//! When the daemon acts: the pure arithmetic of refresh times, backoff after failures and the
//! daily login-ending reminder. Times are epoch milliseconds and randomness is an argument, so
//! every rule is testable without a clock.

use crate::login::{EpochMs, duration_ms};
use crate::oauth::backoff::Backoff;
use std::time::Duration;

/// First wait after a transient failure; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(30);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);
const COOLDOWN: Backoff = Backoff {
    base: BACKOFF_MIN,
    cap: BACKOFF_MAX,
    floor: 0.5,
};
/// At most this much earlier than the margin, at random, so that many daemons sharing an endpoint
/// do not all ask in the same second.
pub const JITTER_MAX: Duration = Duration::from_secs(5 * 60);
/// The longest `Retry-After` honoured: a proxy's absurd value must not silence the daemon for
/// years (the cooldown is kept across restarts).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);
const DAY_MS: i64 = 86_400_000;
/// The least time between two refreshes of one login once a server has handed out a token that
/// was already due; it doubles with each such token in a row, up to [`BACKOFF_MAX`].
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// How long before expiry to refresh: the configured margin, cut to half the token's lifetime
/// when the margin is longer than that (a token that lives 2 h is refreshed after 1 h, not at once).
pub fn margin(refresh_before: Duration, lifetime: Option<Duration>) -> Duration {
    match lifetime {
        Some(life) if refresh_before > life / 2 => life / 2,
        _ => refresh_before,
    }
}

/// How long before expiry to act for one token: the margin plus up to a tenth of it (at most
/// [`JITTER_MAX`]) of jitter. `jitter` is a random number in [0, 1).
pub fn lead(margin: Duration, jitter: f64) -> Duration {
    let spread = (margin / 10).min(JITTER_MAX);
    margin.saturating_add(spread.mul_f64(jitter.clamp(0.0, 1.0)))
}

/// When to refresh a token expiring at `expires_at` with this `lead`.
pub fn refresh_at(expires_at: EpochMs, lead: Duration) -> EpochMs {
    expires_at.saturating_sub(duration_ms(lead))
}

/// The wait after `failures` consecutive transient failures (1-based): 30 s doubling to 30 min,
/// between half and all of that at random, never shorter than the server's `Retry-After`.
pub fn backoff(failures: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let wait = COOLDOWN.wait(failures, jitter).max(BACKOFF_MIN);
    retry_after.map_or(wait, |r| wait.max(r.min(RETRY_AFTER_MAX)))
}

/// The least time before the next refresh after `due_tokens` tokens in a row came already due
/// (1-based): 60 s, doubling up to [`BACKOFF_MAX`]; none while tokens come with a usable lifetime.
pub fn min_interval(due_tokens: u32) -> Duration {
    match due_tokens {
        0 => Duration::ZERO,
        n => MIN_INTERVAL
            .saturating_mul(1 << (n - 1).min(16))
            .min(BACKOFF_MAX),
    }
}

/// Was a token that lives `lifetime` already due when it came? When it lives no longer than the
/// refresh margin: by the margin it is due the moment it arrives, and only the half-lifetime rule
/// of [`margin`] keeps the plan from refreshing it at once, which for a token of a few seconds
/// still means a request every second or two. Such tokens space out the next refresh
/// ([`min_interval`]); a margin shorter than the lifetime, asked for on purpose, keeps the plain plan.
pub fn already_due(lifetime: Duration, refresh_before: Duration) -> bool {
    lifetime <= refresh_before
}

/// How many tokens in a row count toward [`min_interval`]'s doubling once one more comes already
/// due, after `before` of them. Only a token that would expire within the first wait anyway (less
/// than [`MIN_INTERVAL`] of lifetime) makes the wait grow: one that lives longer is usable, and a
/// wait that grew past its lifetime would leave it expired on disk.
pub fn due_tokens_after(before: u32, lifetime: Duration) -> u32 {
    if lifetime < MIN_INTERVAL {
        before.saturating_add(1)
    } else {
        1
    }
}

/// Is a "log in again before …" reminder due? Within `warn_within` of the login's end, at most
/// once a day.
pub fn login_ending_reminder_due(
    login_expires_at: Option<EpochMs>,
    now: EpochMs,
    warn_within: Duration,
    last_reminder: Option<EpochMs>,
) -> bool {
    let Some(end) = login_expires_at else {
        return false;
    };
    if end.saturating_sub(now) > duration_ms(warn_within) {
        return false;
    }
    last_reminder.is_none_or(|last| now.saturating_sub(last) >= DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_margin_is_cut_to_half_the_lifetime() {
        assert_eq!(margin(HOUR, Some(8 * HOUR)), HOUR);
        assert_eq!(margin(HOUR, Some(HOUR)), HOUR / 2);
        assert_eq!(margin(HOUR, None), HOUR);
        assert_eq!(
            margin(Duration::from_secs(2), Some(Duration::from_secs(6))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn refresh_comes_before_the_margin_with_bounded_jitter() {
        let expires = 10 * 3_600_000;
        assert_eq!(refresh_at(expires, lead(HOUR, 0.0)), 9 * 3_600_000);
        let earliest = refresh_at(expires, lead(HOUR, 0.999));
        assert!((9 * 3_600_000 - 360_000..9 * 3_600_000).contains(&earliest));
        assert!(
            lead(Duration::from_secs(8 * 3600), 0.999)
                <= Duration::from_secs(8 * 3600) + JITTER_MAX
        );
        assert_eq!(refresh_at(i64::MIN, Duration::MAX), i64::MIN);
    }

    #[test]
    fn backoff_doubles_from_30s_to_30min_and_honours_retry_after() {
        assert_eq!(
            backoff(1, None, 0.999).as_secs(),
            29.max(BACKOFF_MIN.as_secs())
        );
        assert_eq!(backoff(2, None, 0.9999).as_secs(), 59);
        assert!(backoff(40, None, 0.9999) <= BACKOFF_MAX);
        assert!(backoff(40, None, 0.0) >= BACKOFF_MAX / 2);
        assert_eq!(
            backoff(1, Some(Duration::from_secs(600)), 0.0),
            Duration::from_secs(600)
        );
        assert_eq!(backoff(u32::MAX, Some(Duration::MAX), 1.0), RETRY_AFTER_MAX);
        assert_eq!(lead(Duration::MAX, 0.5), Duration::MAX);
    }

    #[test]
    fn refreshes_of_a_token_already_due_are_spaced_from_a_minute_to_half_an_hour() {
        assert_eq!(min_interval(0), Duration::ZERO);
        assert_eq!(min_interval(1), MIN_INTERVAL);
        assert_eq!(min_interval(2), 2 * MIN_INTERVAL);
        assert_eq!(min_interval(6), BACKOFF_MAX);
        assert_eq!(min_interval(u32::MAX), BACKOFF_MAX);
        assert!(already_due(Duration::ZERO, HOUR));
        assert!(already_due(Duration::from_millis(1999), HOUR));
        // A few seconds against an hour's margin: due as it comes, though the half-lifetime rule
        // would refresh it every second or two.
        assert!(already_due(Duration::from_secs(2), HOUR));
        assert!(already_due(Duration::from_secs(3), HOUR));
        assert!(already_due(HOUR, HOUR));
        assert!(!already_due(HOUR + Duration::from_millis(1), HOUR));
        assert!(!already_due(8 * HOUR, HOUR));
        // A token that could be used does not make the wait grow past the first minute.
        assert_eq!(due_tokens_after(0, Duration::from_secs(3)), 1);
        assert_eq!(due_tokens_after(3, Duration::from_secs(3)), 4);
        assert_eq!(due_tokens_after(u32::MAX, Duration::ZERO), u32::MAX);
        assert_eq!(due_tokens_after(3, MIN_INTERVAL), 1);
        assert_eq!(due_tokens_after(3, HOUR), 1);
        // A margin shorter still, asked for on purpose: a token that outlives it is not due.
        assert!(!already_due(
            Duration::from_secs(1),
            Duration::from_millis(500)
        ));
    }

    #[test]
    fn login_ending_reminds_once_a_day_within_the_window() {
        let days = |n: i64| n * DAY_MS;
        let within = Duration::from_secs(3 * 86_400);
        assert!(!login_ending_reminder_due(None, 0, within, None));
        assert!(!login_ending_reminder_due(Some(days(5)), 0, within, None));
        assert!(login_ending_reminder_due(Some(days(2)), 0, within, None));
        assert!(!login_ending_reminder_due(
            Some(days(2)),
            days(1) - 1,
            within,
            Some(0)
        ));
        assert!(login_ending_reminder_due(
            Some(days(2)),
            days(1),
            within,
            Some(0)
        ));
    }
}
