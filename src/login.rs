//! A login in memory and the pure decisions about it: how long is left, is it due for a refresh,
//! is it usable at all. No I/O here, and the clock is an argument, so every rule is testable.

use crate::secret::Secret;
use std::time::Duration;

/// Milliseconds since the Unix epoch, the unit Claude Code stores.
pub type EpochMs = i64;

#[derive(Clone, Debug, PartialEq)]
pub struct Login {
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// When the access token expires.
    pub expires_at: EpochMs,
    /// When the login itself ends (`refreshTokenExpiresAt`), when the provider says.
    pub login_expires_at: Option<EpochMs>,
    pub scopes: Option<Vec<String>>,
}

/// What a login is good for right now, as `status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// More than the minimum lifetime left.
    Fresh,
    /// Still valid, but less than the minimum lifetime left.
    Due,
    /// Past expiry; the refresh token may still buy a new one.
    Expired,
    /// No refresh token: nothing can bring it back but a new login.
    Dead,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::Due => "due",
            Freshness::Expired => "expired",
            Freshness::Dead => "dead",
        }
    }
}

impl Login {
    /// Signed milliseconds until the access token expires (negative once past).
    pub fn remaining_ms(&self, now: EpochMs) -> i64 {
        self.expires_at.saturating_sub(now)
    }

    pub fn freshness(&self, now: EpochMs, min_ttl: Duration) -> Freshness {
        if self.refresh_token.is_empty() {
            return Freshness::Dead;
        }
        let left = self.remaining_ms(now);
        if left <= 0 || self.access_token.is_empty() {
            Freshness::Expired
        } else if left < duration_ms(min_ttl) {
            Freshness::Due
        } else {
            Freshness::Fresh
        }
    }

    /// A refresh is due when less than `min_ttl` is left (or the token is gone or expired).
    pub fn is_due(&self, now: EpochMs, min_ttl: Duration) -> bool {
        matches!(
            self.freshness(now, min_ttl),
            Freshness::Due | Freshness::Expired
        )
    }

    /// The access token can be used for at least `min_ttl` more.
    pub fn is_usable_for(&self, now: EpochMs, min_ttl: Duration) -> bool {
        !self.access_token.is_empty() && self.remaining_ms(now) >= duration_ms(min_ttl)
    }
}

/// Saturating conversion: durations from a config file can be absurdly large.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Current wall-clock time in epoch milliseconds.
pub fn now_ms() -> EpochMs {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    duration_ms(since)
}

/// The local time zone, found cheaply: `$TZ` by name, else `/etc/localtime` read directly
/// (jiff's own system lookup searches the whole zoneinfo tree for the zone's name, which costs
/// more than everything else a `status` does).
pub fn local_time_zone() -> jiff::tz::TimeZone {
    static TZ: std::sync::OnceLock<jiff::tz::TimeZone> = std::sync::OnceLock::new();
    TZ.get_or_init(|| {
        use jiff::tz::TimeZone;
        match std::env::var("TZ") {
            Ok(name) if !name.is_empty() => {
                let name = name.trim_start_matches(':');
                TimeZone::get(name).unwrap_or(TimeZone::UTC)
            }
            _ => std::fs::read("/etc/localtime")
                .ok()
                .and_then(|bytes| TimeZone::tzif("localtime", &bytes).ok())
                .unwrap_or(TimeZone::UTC),
        }
    })
    .clone()
}

/// `2026-11-29 14:02:05 UTC`-style local time for messages.
pub fn format_time(ms: EpochMs) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts
            .to_zoned(local_time_zone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        // Only a file or server that lies holds such a time: say so in words that fit a line.
        Err(_) if ms > 0 => "after the year 9999".to_string(),
        Err(_) => "before the year -9999".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(expires_at: EpochMs, refresh: &str) -> Login {
        Login {
            access_token: Secret::new("a"),
            refresh_token: Secret::new(refresh),
            expires_at,
            login_expires_at: None,
            scopes: None,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn freshness_follows_the_minimum_lifetime() {
        let now = 1_000_000_000_000;
        assert_eq!(
            login(now + 2 * 3_600_000, "r").freshness(now, HOUR),
            Freshness::Fresh
        );
        assert_eq!(
            login(now + 3_600_000, "r").freshness(now, HOUR),
            Freshness::Fresh
        );
        assert_eq!(
            login(now + 3_599_999, "r").freshness(now, HOUR),
            Freshness::Due
        );
        assert_eq!(login(now, "r").freshness(now, HOUR), Freshness::Expired);
        assert_eq!(
            login(now + 9_000_000, "").freshness(now, HOUR),
            Freshness::Dead
        );
        assert!(login(now + 60_000, "r").is_due(now, HOUR));
        assert!(!login(now + 2 * 3_600_000, "r").is_due(now, HOUR));
    }

    #[test]
    fn extreme_values_never_overflow() {
        for exp in [i64::MIN, i64::MAX, 0, -1] {
            for now in [i64::MIN, i64::MAX, 0] {
                let l = login(exp, "r");
                let _ = l.freshness(now, Duration::MAX);
                let _ = l.is_usable_for(now, Duration::MAX);
                let _ = l.remaining_ms(now);
            }
        }
        assert_eq!(duration_ms(Duration::MAX), i64::MAX);
    }
}
