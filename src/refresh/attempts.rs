//! The attempt loop both refreshes share (this machine's file, and the fleet's store under its
//! row lock): before each attempt the caller takes what the attempt needs and looks again; then
//! the refresh token is posted with a timeout capped by what is left of `retry_total`, the
//! answer is classified, and a transient failure is retried with the one backoff policy
//! (never sooner than the server's `Retry-After`) until that time is spent. What to do with new
//! tokens, a rejection or giving up is the caller's: that is where the two refreshes differ.

use crate::error::Error;
use crate::lock::interrupt;
use crate::oauth::endpoint::{Reply, TokenResponse};
use crate::refresh::Job;
use crate::secret::{Secret, scrub};
use crate::settings::Settings;
use crate::storage::state::RecoverySlot;
use std::thread;
use std::time::{Duration, Instant};

/// What the caller found before an attempt.
pub enum Ready<T> {
    /// Nothing to post: the refresh has come to this (adopted, not due, …).
    Done(T),
    /// Post this refresh token; `access` is scrubbed from the server's words with it.
    Post { refresh: Secret, access: Secret },
}

/// The server refused the refresh token: its code, and its words (secrets scrubbed).
pub struct Rejection {
    pub code: String,
    /// `code: description`, or the code alone.
    pub error: String,
}

impl Rejection {
    fn new(code: String, description: &str, secrets: &[&Secret]) -> Rejection {
        let description = scrub(description, secrets);
        let error = if description.is_empty() {
            code.clone()
        } else {
            format!("{code}: {description}")
        };
        Rejection { code, error }
    }

    /// The reason a login is dead, as every refresh says it.
    pub fn reason(&self) -> String {
        format!("the server rejected its refresh token ({})", self.error)
    }

    /// A refusal that blames the client settings we sent (a wrong client secret in this
    /// machine's config), not the login: the configuration error naming the fix. The login is
    /// left as it was, in the file and in the fleet's store alike: one machine's typo must not
    /// end a login that every other machine still refreshes.
    pub fn blames_client(&self, job: &Job<'_>) -> Option<Error> {
        (self.code == "invalid_client" && job.provider.invalid_client_is_config(job.settings))
            .then(|| Error::Config {
                path: job.settings.config_path.clone(),
                problem: format!(
                    "the token endpoint refused the OAuth client ({}); the login at {} was left as it was. Check client_id and client_secret for {}",
                    self.error,
                    job.file.path().display(),
                    job.file.owner().name
                ),
            })
    }
}

/// New tokens from the server.
pub struct Granted<'a> {
    /// The refresh token spent for them.
    pub posted: &'a Secret,
    pub tokens: TokenResponse,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// The recovery file, made ready before the post (when it could be).
    pub slot: Option<RecoverySlot>,
}

/// One refresh's side of the attempt loop.
pub trait Attempts {
    type Done;
    /// Before attempt number `attempts + 1`: take what it needs (locks), look again.
    fn ready(&mut self, attempts: u32) -> Result<Ready<Self::Done>, Error>;
    /// The key of the login's recovery file, made ready before each post.
    fn recovery_key(&self) -> &str;
    /// The server issued new tokens: save them (still inside the critical section), the
    /// recovery file first.
    fn tokens(&mut self, granted: Granted<'_>) -> Result<Self::Done, Error>;
    /// The server refused the refresh token.
    fn rejected(&mut self, rejection: Rejection, attempts: u32) -> Result<Self::Done, Error>;
    /// A transient failure: let go of what `ready` took before the pause.
    fn release(&mut self) {}
    /// Every retry failed (`reason` says why, scrubbed): note it where others will look (the
    /// fleet's store). The loop then reports the endpoint unavailable.
    fn gave_up(&mut self, _reason: &str, _retry_after: Option<Duration>) {}
    /// Said after "posting refresh token … to URL" in the debug log.
    fn holding(&self) -> &'static str {
        ""
    }
}

/// Runs the attempts until one settles the refresh.
pub fn run<A: Attempts>(job: &Job<'_>, a: &mut A) -> Result<A::Done, Error> {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        let (refresh, access) = match a.ready(attempts)? {
            Ready::Done(done) => return Ok(done),
            Ready::Post { refresh, access } => (refresh, access),
        };
        attempts += 1;
        let timeout = attempt_timeout(job.settings, started.elapsed());
        // Made ready now, so that the reply's tokens are on disk one write after it arrives.
        let slot = job
            .state
            .prepare_recovery(a.recovery_key())
            .inspect_err(|e| tracing::debug!("could not make the recovery file ready: {e}"))
            .ok();
        let critical = interrupt::enter_critical();
        let request = job.provider.token_request(&refresh, job.settings);
        tracing::debug!(
            "posting refresh token {} to {}{} (attempt {attempts})",
            refresh.fingerprint(),
            job.endpoint.url(),
            a.holding()
        );
        match job
            .endpoint
            .post(&request, job.provider.facts().rejection_rule, timeout)
        {
            Reply::Tokens(tokens) => {
                let done = a.tokens(Granted {
                    posted: &refresh,
                    tokens,
                    attempts,
                    slot,
                });
                drop(critical);
                return done;
            }
            Reply::Rejected { code, description } => {
                drop(critical);
                let rejection = Rejection::new(code, &description, &[&refresh, &access]);
                return a.rejected(rejection, attempts);
            }
            Reply::Transient {
                reason,
                retry_after,
            } => {
                drop(critical);
                a.release();
                let reason = scrub(&reason, &[&refresh, &access]);
                if !wait_before_retry(job, attempts, started, retry_after, &reason) {
                    a.gave_up(&reason, retry_after);
                    return Err(Error::Unavailable {
                        url: job.endpoint.url().to_string(),
                        reason,
                        attempts,
                        path: job.file.path().to_path_buf(),
                        retry_after,
                    });
                }
            }
        }
    }
}

/// One attempt's timeout: the request timeout, cut to what is left of the time for retries
/// (at least a second, so the last attempt can still be answered).
pub fn attempt_timeout(settings: &Settings, elapsed: Duration) -> Duration {
    let remaining = settings.retry.total.saturating_sub(elapsed);
    settings
        .request_timeout
        .min(remaining)
        .max(Duration::from_secs(1))
}

/// After a transient failure: sleeps until the next attempt (backoff, or the server's
/// Retry-After) and returns true, or returns false when the refresh's time for retries is spent.
fn wait_before_retry(
    job: &Job<'_>,
    attempts: u32,
    started: Instant,
    retry_after: Option<Duration>,
    reason: &str,
) -> bool {
    match job
        .settings
        .retry
        .next(attempts, started.elapsed(), retry_after, fastrand::f64())
    {
        crate::oauth::backoff::Next::RetryAfter(wait) => {
            tracing::info!(
                "token endpoint: {reason}; retrying in {} (attempt {attempts})",
                crate::duration::human(wait)
            );
            thread::sleep(wait);
            true
        }
        crate::oauth::backoff::Next::GiveUp => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_reads_the_same_for_every_refresh_and_never_holds_a_token() {
        let token = Secret::new("rt-very-secret-value");
        let r = Rejection::new(
            "invalid_grant".into(),
            "token rt-very-secret-value was revoked",
            &[&token],
        );
        assert_eq!(r.code, "invalid_grant");
        assert!(!r.error.contains("rt-very-secret-value"), "{}", r.error);
        assert!(
            r.reason()
                .starts_with("the server rejected its refresh token (invalid_grant: token "),
            "{}",
            r.reason()
        );
        let bare = Rejection::new("invalid_grant".into(), "", &[&token]);
        assert_eq!(
            bare.reason(),
            "the server rejected its refresh token (invalid_grant)"
        );
    }
}
