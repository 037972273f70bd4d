//! How long a new access token is believed to live. A server (or a token's own `exp` claim) may
//! claim any lifetime; one longer than the provider has ever issued, with a margin, is capped, so
//! that the expiry kept is a time that comes. Every source of an expiry goes through
//! [`believed_expiry`]: a token response's `expires_in`, and a JWT's `exp` read from a token
//! response or from a credentials file (Codex CLI, `[[login]]` tables with `expiry_unit = "jwt"`).

use crate::login::{EpochMs, duration_ms};
use std::time::Duration;

/// The expiry to keep for a token claimed to expire at `claimed`, issued (or received) at
/// `since`: never later than `since + longest`, the provider's longest real lifetime with a
/// margin. A claim of more (`expires_in` of 1e30, an `exp` in the year 9999) would otherwise be
/// kept as a time that never comes, and the login never refreshed again. `whose` names the claim
/// in the warning, which is logged once per process (a daemon reads the same token many times).
pub fn believed_expiry(
    claimed: EpochMs,
    since: EpochMs,
    longest: Duration,
    whose: &str,
) -> EpochMs {
    let cap = since.saturating_add(duration_ms(longest));
    if claimed <= cap {
        return claimed;
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let claimed_life = u64::try_from(claimed.saturating_sub(since)).unwrap_or(u64::MAX);
        tracing::warn!(
            "{whose} the access token lives {}, longer than any real one; taking {} instead",
            crate::duration::human(Duration::from_millis(claimed_life)),
            crate::duration::human(longest)
        );
    });
    cap
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_lifetime_past_the_longest_is_capped_from_when_the_token_came() {
        let since = 1_800_000_000_000;
        assert_eq!(
            believed_expiry(since + 3_600_000, since, DAY, "x"),
            since + 3_600_000
        );
        assert_eq!(
            believed_expiry(since + 86_400_000, since, DAY, "x"),
            since + 86_400_000
        );
        assert_eq!(
            believed_expiry(since + 86_400_001, since, DAY, "x"),
            since + 86_400_000
        );
        assert_eq!(
            believed_expiry(i64::MAX, since, DAY, "x"),
            since + 86_400_000
        );
        // An expiry in the past is kept as it is: that is for the refresh to deal with.
        assert_eq!(believed_expiry(0, since, DAY, "x"), 0);
        assert_eq!(
            believed_expiry(i64::MAX, i64::MAX, Duration::MAX, "x"),
            i64::MAX
        );
    }
}
