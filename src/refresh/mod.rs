//! The refresh protocol, the heart of tokenkeeper:
//!
//! 1. read the file without locking; not due and not forced: stop (no lock, no request, no write);
//! 2. take our own lock, then Claude Code's refresh locks as Claude takes them;
//! 3. re-read; if another process refreshed meanwhile, adopt its tokens and stop;
//! 4. post the refresh token; retry transient failures with backoff, releasing Claude's locks
//!    between attempts;
//! 5. save under Claude's storage lock, only if the file still holds the token we posted;
//! 6. if the save fails, keep trying briefly, then put the new tokens in a recovery file;
//! 7. on a rejection, adopt a rotation made meanwhile, else report the login dead, file untouched;
//! 8. record what happened in the state folder.
//!
//! Rooms: this file is the protocol; [`attempts`] the attempt loop of step 4, shared with the
//! fleet's refresh (which brings the row lock where this brings the file's locks); `save.rs`
//! steps 5 and 6.

pub(crate) mod attempts;
pub(crate) mod save;

use crate::error::Error;
use crate::lock::dir_lock::LockError;
use crate::lock::interrupt;
use crate::lock::lease;
use crate::lock::own_lock::{self, OwnLock};
use crate::lock::take::{RefreshLocks, Waits};
use crate::login::{EpochMs, Login, format_time, now_ms};
use crate::oauth::endpoint::TokenEndpoint;
use crate::provider::Provider;
use crate::settings::Settings;
use crate::storage::credentials_file::{Check, CredentialsFile, Snapshot};
use crate::storage::state::{Record, RefreshOutcome, StateDir};
use attempts::{Attempts, Granted, Ready, Rejection};
use save::{Issued, remove_temps_of_killed_writer, restore_recovery, save};
use serde_json::Value;
use std::io;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// Everything one refresh works with.
pub struct Job<'a> {
    pub provider: &'a dyn Provider,
    pub file: &'a CredentialsFile,
    pub settings: &'a Settings,
    pub endpoint: &'a TokenEndpoint,
    pub state: &'a StateDir,
}

/// What a caller asks of the login's access token: at least `min_ttl` left, and with `force` a
/// new one whatever is left (the one in hand was refused). The same for the file and the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub min_ttl: Duration,
    pub force: bool,
}

impl Want {
    /// An access token with at least `min_ttl` left.
    pub fn at_least(min_ttl: Duration) -> Want {
        Want {
            min_ttl,
            force: false,
        }
    }

    /// A new access token, whatever is left of the one in hand.
    pub fn new_token(min_ttl: Duration) -> Want {
        Want {
            min_ttl,
            force: true,
        }
    }

    /// `login` answers the want as it is: not forced, no recovery file waiting to be written
    /// over it, and not due.
    pub fn met_by(&self, login: &Login, pending_recovery: bool, now: EpochMs) -> bool {
        !self.force && !pending_recovery && !login.is_due(now, self.min_ttl)
    }

    /// `current` is another login than `first`, the one we set out to refresh, and not due:
    /// another process refreshed it, and its tokens are used (forced or not, the token that
    /// was refused is gone).
    pub fn adopts(&self, first: &Login, current: &Login, now: EpochMs) -> bool {
        current.access_token != first.access_token && !current.is_due(now, self.min_ttl)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// More than the minimum lifetime was left; nothing was done.
    NotDue,
    /// We refreshed and saved the new tokens.
    Refreshed,
    /// Another process refreshed while we waited; we use its tokens.
    Adopted,
    /// Tokens from an earlier failed save were written back from the recovery file.
    Restored,
    /// We refreshed, but the file meanwhile held another login, which we kept.
    KeptOnDisk,
    /// Due, but runs hold the current access token (`exec --inject env`) and it is not about to
    /// expire: not refreshed now.
    Deferred,
}

impl Action {
    /// What the state record calls a refresh that did this; None for one that was not needed or
    /// not done now (nothing to record).
    pub fn outcome(self) -> Option<RefreshOutcome> {
        match self {
            Action::NotDue | Action::Deferred => None,
            Action::Refreshed => Some(RefreshOutcome::Refreshed),
            Action::Adopted => Some(RefreshOutcome::Adopted),
            Action::Restored => Some(RefreshOutcome::Restored),
            Action::KeptOnDisk => Some(RefreshOutcome::KeptOnDisk),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::NotDue => "not_due",
            Action::Refreshed => "refreshed",
            Action::Adopted => "adopted",
            Action::Restored => "restored",
            Action::KeptOnDisk => "kept_on_disk",
            Action::Deferred => "deferred",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub action: Action,
    /// The login now on disk.
    pub login: Login,
    /// Requests made to the token endpoint.
    pub attempts: u32,
}

/// Refreshes the login in its file when less than `min_ttl` is left, or always when `force`.
/// Callers go through [`crate::keeper::Keeper`], which sends a fleet's login to its store.
/// `first` is the login as [`read_login`] returned it a moment ago, when the caller has just read
/// it (`exec` and `token` look at the token in hand first): it is not read a second time.
pub(crate) fn refresh_if_due(
    job: &Job<'_>,
    first: Option<Login>,
    want: Want,
) -> Result<Outcome, Error> {
    let key = StateDir::key(job.file.owner().provider, job.file.path());
    let first = match first {
        Some(login) => login,
        None => look_at_login(job)?,
    };
    if let Some(lost) = spent_already(job, &key, &first) {
        return Err(lost);
    }
    let pending_recovery = job.state.has_recovery(&key);
    if want.met_by(&first, pending_recovery, now_ms()) {
        return Ok(Outcome {
            action: Action::NotDue,
            login: first,
            attempts: 0,
        });
    }
    if !want.force
        && let Some(rejected) = known_rejection(job, &key, &first)
    {
        return Err(rejected);
    }
    provider_ready(job)?;
    job.file.check_owner()?;
    let result = locked_refresh(job, &key, &first, want);
    record(job, &key, &result);
    result
}

/// What the provider's token request needs beyond the login (Gemini CLI's client secret), found
/// before a refresh takes its locks, for the file and the fleet's store alike; its absence is a
/// configuration error that names the fix.
pub(crate) fn provider_ready(job: &Job<'_>) -> Result<(), Error> {
    job.provider
        .ready(job.settings)
        .map_err(|problem| Error::Config {
            path: job.settings.config_path.clone(),
            problem,
        })
}

/// Reads the credentials. For a CLI that rewrites its file in place without a lock, an empty or
/// unparseable file is a write in progress: it is read again a few times before it counts as
/// malformed (and a malformed file is never written over).
pub fn read_snapshot(provider: &dyn Provider, file: &CredentialsFile) -> Result<Snapshot, Error> {
    read_snapshot_checked(provider, file, Check::Whole)
}

/// [`read_snapshot`], checking as much of a file as `check` says.
pub fn read_snapshot_checked(
    provider: &dyn Provider,
    file: &CredentialsFile,
    check: Check,
) -> Result<Snapshot, Error> {
    let mut tries = 0;
    loop {
        match file.read_checked(check) {
            Err(Error::Malformed { .. }) if provider.facts().rewritten_in_place && tries < 20 => {
                if tries == 0 {
                    tracing::debug!(
                        "{} is empty or cut off, perhaps mid-write by {}; reading it again",
                        file.path().display(),
                        file.owner().name
                    );
                }
                tries += 1;
                thread::sleep(Duration::from_millis(25));
            }
            Err(Error::Missing { .. }) if let Some(better) = provider.when_missing(file) => {
                return Err(better);
            }
            other => return other,
        }
    }
}

/// Reads and parses the login, as it is now.
pub fn parse_current(provider: &dyn Provider, file: &CredentialsFile) -> Result<Login, Error> {
    let snap = read_snapshot(provider, file)?;
    provider.parse(file, &snap.doc)
}

/// Reads and parses the login; a login without a refresh token is dead.
pub fn read_login(job: &Job<'_>) -> Result<Login, Error> {
    read_login_unless(job, Check::Whole, |_| false)
}

/// [`read_login`] for a look that writes nothing (is it due? has another process refreshed?):
/// of a large file, only the login is checked ([`Check::Login`]).
pub fn look_at_login(job: &Job<'_>) -> Result<Login, Error> {
    read_login_unless(job, Check::Login, |_| false)
}

/// [`read_login`], checking as much of the file as `check` says, except that a login `keep`
/// accepts is returned as it is read (an access-only copy: no refresh token by design, and a
/// mode its owner chose).
pub fn read_login_unless(
    job: &Job<'_>,
    check: Check,
    keep: impl Fn(&Login) -> bool,
) -> Result<Login, Error> {
    let snap = read_snapshot_checked(job.provider, job.file, check)?;
    let login = job.provider.parse(job.file, &snap.doc)?;
    if keep(&login) {
        return Ok(login);
    }
    if let Some(mode) = snap.loose_mode {
        warn_loose_mode(job.file, mode);
    }
    if login.refresh_token.is_empty() {
        return Err(dead(
            job,
            "its tokens are empty (the login was ended or wiped)".into(),
        ));
    }
    Ok(login)
}

/// A credentials file other users can read is worth a warning (once), not a refusal.
pub fn warn_loose_mode(file: &CredentialsFile, mode: u32) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "{} is readable by other users (mode {mode:o}); fix it with `chmod 600 {}`",
            file.path().display(),
            file.path().display()
        );
    });
}

fn dead(job: &Job<'_>, reason: String) -> Error {
    Error::Dead {
        path: job.file.path().to_path_buf(),
        reason,
        relogin: job.file.owner().relogin,
    }
}

/// This very refresh token was spent on a refresh whose new tokens could be saved nowhere: the
/// login is lost; presenting the token again would get it revoked. Even `--force` does not ask.
fn spent_already(job: &Job<'_>, key: &str, login: &Login) -> Option<Error> {
    let spent = job.state.spent(key)?;
    (spent.spent_refresh == login.refresh_token.fingerprint()).then(|| {
        dead(
            job,
            format!(
                "its refresh token was spent at {} but the new tokens could not be saved anywhere, so the login is lost",
                format_time(spent.at)
            ),
        )
    })
}

/// Whether the login's refresh token was spent on a refresh whose tokens were lost (see
/// [`spent_already`]); for `status`.
pub fn is_lost(state: &StateDir, key: &str, login: &Login) -> bool {
    state
        .spent(key)
        .is_some_and(|s| s.spent_refresh == login.refresh_token.fingerprint())
}

/// The server already refused this very refresh token: say so without asking again.
fn known_rejection(job: &Job<'_>, key: &str, login: &Login) -> Option<Error> {
    let record = job.state.read_record(key)?;
    (record.rejected_refresh.as_deref() == Some(&login.refresh_token.fingerprint())).then(|| {
        dead(
            job,
            format!(
                "{} at {}; `tokenkeeper refresh --force` asks again",
                record
                    .error
                    .as_deref()
                    .unwrap_or("the server rejected its refresh token"),
                format_time(record.last_refresh_at),
            ),
        )
    })
}

fn locked_refresh(job: &Job<'_>, key: &str, first: &Login, want: Want) -> Result<Outcome, Error> {
    interrupt::protect();
    let _refreshing = interrupt::refreshing();
    let folder = job.file.folder();
    let sidecar = own_lock::sidecar_path(&folder);
    let lock_deadline = Instant::now() + job.settings.lock_timeout;
    let not_writable = |path, source| not_writable(job, path, source);
    let waits = waits(job, &not_writable);
    // While another tokenkeeper holds the lock, look at the file between looks at the lock: once
    // it holds a login that process refreshed, use it, without queueing for the lock (and then
    // for Claude's locks) only to find the same thing under them.
    let mut refreshed_meanwhile = None;
    let own = waits.own_unless(
        &sidecar,
        lock_deadline,
        &mut || {
            tracing::info!(
                "waiting for another tokenkeeper that is refreshing {}",
                job.file.path().display()
            );
        },
        &mut || {
            refreshed_meanwhile = refreshed_elsewhere(job, key, first, want);
            refreshed_meanwhile.is_some()
        },
    )?;
    let own = match (own, refreshed_meanwhile) {
        (Some(own), _) => own,
        (None, Some(login)) => {
            tracing::info!(
                "another process refreshed {}; using its tokens",
                job.file.path().display()
            );
            return Ok(Outcome {
                action: Action::Adopted,
                login,
                attempts: 0,
            });
        }
        // The wait ends without the lock only once the login was found refreshed.
        (None, None) => {
            return Err(Error::LockTimeout {
                what: "tokenkeeper's lock",
                lock: sidecar,
                waited: crate::duration::human(job.settings.lock_timeout),
                holder: String::new(),
            });
        }
    };

    if own.predecessor_killed {
        remove_temps_of_killed_writer(job, &own);
    }
    let mut round = Round {
        job,
        own: &own,
        waits: &waits,
        key,
        first,
        want,
        held: None,
    };
    attempts::run(job, &mut round)
}

/// Read without any lock: the file now holds another login than the one we set out to refresh,
/// with enough life left, and no recovery file waits to be written over it. Writes are atomic
/// renames, so what is read is whole; taking the locks to read it again would change nothing.
fn refreshed_elsewhere(job: &Job<'_>, key: &str, first: &Login, want: Want) -> Option<Login> {
    let current = look_at_login(job).ok()?;
    let fresh = want.adopts(first, &current, now_ms());
    (fresh && !job.state.has_recovery(key)).then_some(current)
}

/// One local refresh's side of the attempt loop: before each attempt, the leases, Claude's
/// refresh locks and a fresh look at the file; new tokens are saved into the file.
struct Round<'r, 'j> {
    job: &'r Job<'j>,
    own: &'r OwnLock,
    waits: &'r Waits<'r>,
    key: &'r str,
    first: &'r Login,
    want: Want,
    /// What the attempt in flight holds, and the login it posts from.
    held: Option<Attempt>,
}

struct Attempt {
    current: Login,
    base: Value,
    // Dropped in this order: the CLI's locks, then the lease guard.
    _cli_locks: RefreshLocks,
    _lease_guard: Option<lease::Exclusive>,
}

impl Attempts for Round<'_, '_> {
    type Done = Outcome;

    fn ready(&mut self, attempts: u32) -> Result<Ready<Outcome>, Error> {
        let job = self.job;
        let lease_guard = match hold_off_leases(job, self.waits, self.first, self.want)? {
            LeaseGate::Clear(guard) => Some(guard),
            LeaseGate::Override => None,
            LeaseGate::Settled(action, login) => {
                return Ok(Ready::Done(Outcome {
                    action,
                    login,
                    attempts,
                }));
            }
        };
        let cli_locks = self.waits.refresh_locks(
            &job.provider.refresh_locks(job.file),
            Instant::now() + job.settings.lock_timeout,
            self.own,
        )?;
        let snap = read_snapshot(job.provider, job.file)?;
        let current = job.provider.parse(job.file, &snap.doc)?;

        if let Some(done) = restore_recovery(job, self.own, self.key, &current, &snap.doc)? {
            return Ok(Ready::Done(done));
        }
        let now = now_ms();
        if self.want.adopts(self.first, &current, now) {
            tracing::info!(
                "another process refreshed {}; using its tokens",
                job.file.path().display()
            );
            return Ok(Ready::Done(Outcome {
                action: Action::Adopted,
                login: current,
                attempts,
            }));
        }
        if current.refresh_token.is_empty() {
            return Err(dead(job, "its tokens were wiped while we waited".into()));
        }
        if self.want.met_by(&current, false, now) {
            return Ok(Ready::Done(Outcome {
                action: Action::NotDue,
                login: current,
                attempts,
            }));
        }
        let post = Ready::Post {
            refresh: current.refresh_token.clone(),
            access: current.access_token.clone(),
        };
        self.held = Some(Attempt {
            current,
            base: snap.doc,
            _cli_locks: cli_locks,
            _lease_guard: lease_guard,
        });
        Ok(post)
    }

    fn tokens(&mut self, granted: Granted<'_>) -> Result<Outcome, Error> {
        let job = self.job;
        let Granted {
            posted,
            tokens,
            attempts,
            slot,
        } = granted;
        // `ready` always holds the attempt it posted for; the file's document as it was then is
        // what a missing file is written from.
        let none = Value::Null;
        let base = self.held.as_ref().map_or(&none, |h| &h.base);
        let received_at = now_ms();
        let issued = Issued {
            posted,
            tokens: &tokens,
            received_at,
        };
        let action = save(job, self.own, self.key, issued, base, slot)?;
        let login = read_login(job)?;
        Ok(Outcome {
            action,
            login,
            attempts,
        })
    }

    fn recovery_key(&self) -> &str {
        self.key
    }

    fn rejected(&mut self, rejection: Rejection, attempts: u32) -> Result<Outcome, Error> {
        let job = self.job;
        let after = parse_current(job.provider, job.file)?;
        let posted = self.held.as_ref().map(|h| &h.current.refresh_token);
        if !after.refresh_token.is_empty() && Some(&after.refresh_token) != posted {
            tracing::info!(
                "the server refused our refresh token, but another process has rotated it; using its tokens"
            );
            return Ok(Outcome {
                action: Action::Adopted,
                login: after,
                attempts,
            });
        }
        if let Some(config) = rejection.blames_client(job) {
            return Err(config);
        }
        Err(dead(job, rejection.reason()))
    }

    fn release(&mut self) {
        self.held = None;
        self.own.clear_held();
    }
}

enum LeaseGate {
    /// No run holds the token; the guard keeps new runs from starting until we are done.
    Clear(lease::Exclusive),
    /// Runs hold the token, but it is about to expire under them anyway.
    Override,
    /// Nothing to do now: adopted another process's refresh, or deferred for the runs.
    Settled(Action, Login),
}

/// Waits out runs that hold the current access token (`exec --inject env`): a refresh would
/// revoke it under them. Unforced refreshes are deferred instead of waiting; a token about to
/// expire is refreshed regardless, and the log says so.
fn hold_off_leases(
    job: &Job<'_>,
    waits: &Waits<'_>,
    first: &Login,
    want: Want,
) -> Result<LeaseGate, Error> {
    let folder = job.file.folder();
    let deadline = Instant::now() + job.settings.lock_timeout;
    let mut announced = false;
    loop {
        match lease::try_exclusive(&folder) {
            Ok(Some(guard)) => return Ok(LeaseGate::Clear(guard)),
            Ok(None) => {}
            Err(e) => return Err((waits.not_writable)(lease::lease_path(&folder), e)),
        }
        let current = look_at_login(job)?;
        let now = now_ms();
        if want.adopts(first, &current, now) {
            return Ok(LeaseGate::Settled(Action::Adopted, current));
        }
        let left = Duration::from_millis(u64::try_from(current.remaining_ms(now)).unwrap_or(0));
        if left < lease::OVERRIDE_BELOW {
            tracing::warn!(
                "refreshing although runs started with `tokenkeeper exec --inject env` hold the current access token: it expires in {} anyway",
                crate::duration::human(left)
            );
            return Ok(LeaseGate::Override);
        }
        if !want.force {
            tracing::info!(
                "not refreshing yet: runs started with `tokenkeeper exec --inject env` hold the current access token, which has {} left",
                crate::duration::human(left)
            );
            return Ok(LeaseGate::Settled(Action::Deferred, current));
        }
        if Instant::now() >= deadline {
            return Err(waits.error(
                "runs holding the current access token (tokenkeeper exec --inject env)",
                lease::lease_path(&folder),
                LockError::Timeout {
                    holder: String::new(),
                },
            ));
        }
        if !announced {
            tracing::info!(
                "waiting for runs started with `tokenkeeper exec --inject env` to finish: a refresh would revoke their access token"
            );
            announced = true;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// How this refresh's lock failures read.
fn waits<'a>(job: &Job<'_>, not_writable: &'a dyn Fn(PathBuf, io::Error) -> Error) -> Waits<'a> {
    Waits {
        timeout: job.settings.lock_timeout,
        not_writable,
    }
}

fn not_writable(job: &Job<'_>, path: PathBuf, source: io::Error) -> Error {
    Error::Inaccessible {
        action: "create a lock in the credentials folder at",
        path,
        source,
        hint: format!(
            "tokenkeeper needs to write in {} to refresh {}; make the folder writable by you",
            job.file.folder().display(),
            job.file.path().display()
        ),
    }
}

fn record(job: &Job<'_>, key: &str, result: &Result<Outcome, Error>) {
    let (outcome, error, rejected_refresh) = match result {
        Ok(o) => match o.action.outcome() {
            Some(outcome) => (outcome, None, None),
            None => return,
        },
        Err(e) => {
            let outcome = RefreshOutcome::of_error(e);
            let rejected = match e {
                Error::Dead { .. } => job
                    .file
                    .read()
                    .ok()
                    .and_then(|s| job.provider.parse(job.file, &s.doc).ok())
                    .filter(|l| !l.refresh_token.is_empty())
                    .map(|l| l.refresh_token.fingerprint()),
                _ => None,
            };
            // For a dead login, the reason alone: the path and the fix are said where it is shown.
            let error = match e {
                Error::Dead { reason, .. } => reason.clone(),
                _ => e.to_string(),
            };
            (outcome, Some(error), rejected)
        }
    };
    let record = Record {
        credentials: job.file.path().to_path_buf(),
        last_refresh_at: now_ms(),
        outcome,
        error,
        rejected_refresh,
    };
    if let Err(e) = job.state.write_record(key, &record) {
        tracing::debug!(
            "could not write state in {}: {e}",
            job.state.root().display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn login(access: &str, expires_at: EpochMs) -> Login {
        Login {
            access_token: Secret::new(access),
            refresh_token: Secret::new("r"),
            expires_at,
            login_expires_at: None,
            scopes: None,
        }
    }

    #[test]
    fn a_want_is_met_by_a_login_that_is_not_due_unless_forced_or_a_recovery_waits() {
        let hour = Duration::from_secs(3600);
        let now = 1_000_000_000;
        let fresh = login("a", now + 2 * 3_600_000);
        let due = login("a", now + 1_800_000);
        assert!(Want::at_least(hour).met_by(&fresh, false, now));
        assert!(!Want::at_least(hour).met_by(&due, false, now));
        assert!(!Want::at_least(hour).met_by(&fresh, true, now));
        assert!(!Want::new_token(hour).met_by(&fresh, false, now));
    }

    #[test]
    fn another_login_that_is_not_due_is_adopted_even_when_forced() {
        let hour = Duration::from_secs(3600);
        let now = 1_000_000_000;
        let first = login("a", now - 1);
        let theirs = login("b", now + 2 * 3_600_000);
        for want in [Want::at_least(hour), Want::new_token(hour)] {
            assert!(want.adopts(&first, &theirs, now));
            assert!(!want.adopts(&first, &first, now), "the same login");
            assert!(
                !want.adopts(&first, &login("b", now + 60_000), now),
                "due itself"
            );
        }
    }
}
