//! Writing results: stdout for what the command produces, stderr for the one error line. A
//! closed pipe (`tokenkeeper status | head -1`) is not an error worth a panic.

use crate::duration;
use crate::login::EpochMs;
use std::io::Write;

pub fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

pub fn error_line(message: &str) {
    stderr_line(&format!("tokenkeeper: error: {message}"));
}

pub fn stderr_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `2026-11-29T22:02:05Z` for JSON: cut to the second, as the times for people are, so that
/// both say the same second.
pub fn rfc3339(ms: EpochMs) -> Option<String> {
    jiff::Timestamp::from_second(ms.div_euclid(1000))
        .ok()
        .map(|t| t.to_string())
}

/// `2026-11-29 22:02:05 UTC (in 6h 12m)` for people.
pub fn when(ms: EpochMs, now: EpochMs) -> String {
    format!(
        "{} ({})",
        crate::login::format_time(ms),
        duration::relative(ms.saturating_sub(now))
    )
}

/// A login to use now, and why it could not be refreshed if it was not: said once on stderr
/// (the run goes on with the token in hand, which still has a usable lifetime).
pub fn usable(
    (outcome, failure): (crate::refresh::Outcome, Option<crate::Error>),
) -> crate::refresh::Outcome {
    if let Some(e) = failure {
        let now = crate::login::now_ms();
        tracing::warn!(
            "{e}; going on with the current access token, which expires {}",
            when(outcome.login.expires_at, now)
        );
    }
    outcome
}

/// What `status` makes of a login: its state, the login when one was read, and the problem to
/// show.
pub type Verdict = (&'static str, Option<crate::login::Login>, Option<String>);
