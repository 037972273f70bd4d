//! The fleet's refresh protocol: `src/refresh/` with the database's row lock in place of the file
//! lock.
//!
//! 1. Read this machine's file; usable for the minimum lifetime: stop (no connection at all).
//! 2. Read the store's row without locking it; fresh enough: write its access token into this
//!    machine's file and stop.
//! 3. Begin a transaction and take the row lock (`SELECT … FOR UPDATE`); re-read. Another
//!    machine refreshed meanwhile: adopt its login, no request.
//! 4. Prove the lock is still held, post the refresh token (retrying transient failures while
//!    holding the lock), and on success write the new tokens to a recovery file first, then as
//!    the next generation, announce it, commit.
//! 5. A commit that fails keeps the tokens in the recovery file; the next tokenkeeper on this
//!    machine writes them into the store, under the row lock, if the store still holds the
//!    refresh token that was spent.
//! 6. A rejection marks the login dead in the store, so no machine asks again with that token.
//!
//! A store that cannot be reached is never a reason to refresh without the row lock: the machine
//! keeps using the access token it has while it lasts.
//!
//! Every machine's file gets the login without its refresh token (`local.rs`), so the CLI there
//! can use the access token but never refresh, and cannot burn the fleet's refresh token.

use crate::error::{Error, FleetError};
use crate::fleet::Fleet;
use crate::fleet::database::{self, Database, Locked, Row};
use crate::fleet::local::project;
use crate::fleet::rollback;
use crate::lock::interrupt;
use crate::login::{EpochMs, now_ms};
use crate::oauth::endpoint::TokenResponse;
use crate::refresh::attempts::{self, Attempts, Granted, Ready, Rejection};
use crate::refresh::save::{Issued, keep_first, pending_recovery};
use crate::refresh::{Action, Job, Outcome, Want};
use std::thread;
use std::time::Duration;

/// How many spent refresh tokens a login remembers (by fingerprint).
const SPENT_KEPT: usize = 32;

pub use crate::fleet::login::{Payload, Shared, name_and_shape, state_key};

pub fn connect(fleet: &Fleet) -> Result<Database, Error> {
    Database::connect(
        fleet.url(),
        &fleet.shown,
        &fleet.machine,
        database::CONNECT_TIMEOUT,
    )
}

/// Opens a row with this machine's key, or says plainly why it cannot.
pub fn open(fleet: &Fleet, job: &Job<'_>, row: Row) -> Result<Shared, Error> {
    let config_error = |message: String| Error::Fleet(FleetError::Config(message));
    if row.key_id != fleet.key.id() {
        return Err(config_error(format!(
            "the login '{}' in the store {} was sealed with the fleet key {}, but this machine's key ({}) is {}: give this machine the fleet's key, or push a login sealed with this one with `tokenkeeper fleet push --force`",
            row.name,
            fleet.shown,
            row.key_id,
            fleet.key_source,
            fleet.key.id()
        )));
    }
    let tampered = || {
        config_error(format!(
            "the login '{}' in the store {} does not decrypt although it names this machine's key: the row was altered or copied from another login; push the login again with `tokenkeeper fleet push --force`",
            row.name, fleet.shown
        ))
    };
    let plain = fleet
        .key
        .open(&row.name, row.generation, &row.sealed)
        .ok_or_else(tampered)?;
    let payload: Payload = serde_json::from_slice(&plain).map_err(|_| tampered())?;
    let login = job.provider.parse(job.file, &payload.login)?;
    Ok(Shared {
        row,
        payload,
        login,
    })
}

/// Reads and opens the login's row (no lock), and refuses a row older than this machine has
/// seen ([`rollback::witness`]). No table or no row: an error that says to push.
pub fn fetch(store: &mut Database, fleet: &Fleet, job: &Job<'_>) -> Result<Shared, Error> {
    let shared = fetch_unchecked(store, fleet, job)?;
    rollback::witness(fleet, job, &shared)?;
    Ok(shared)
}

/// [`fetch`] without the rollback check: the caller makes it ([`rollback::witness`]).
pub fn fetch_unchecked(
    store: &mut Database,
    fleet: &Fleet,
    job: &Job<'_>,
) -> Result<Shared, Error> {
    let (name, _) = name_and_shape(job)?;
    match store.fetch(name)? {
        Some(row) => open(fleet, job, row),
        None => Err(database::no_login(&fleet.shown, Some(name))),
    }
}

/// For `exec`, `token` and `refresh`: makes sure this machine's file holds an access token good
/// for `min_ttl`, reading the store only when the local copy is due. `force` refreshes the
/// fleet's login, unless this machine's copy was merely stale (the fleet holds another token
/// already), in which case the fleet's token is taken instead. With the store unreachable, a
/// local access token that has not expired is used, with a warning; one that has is an error.
pub(crate) fn ensure_fresh(fleet: &Fleet, job: &Job<'_>, want: Want) -> Result<Outcome, Error> {
    let (name, _) = name_and_shape(job)?;
    let local = crate::refresh::parse_current(job.provider, job.file).ok();
    let key = state_key(fleet, name);
    if !want.force
        && !job.state.has_recovery(&key)
        && let Some(l) = local
            .as_ref()
            .filter(|l| l.is_usable_for(now_ms(), want.min_ttl))
    {
        return Ok(Outcome {
            action: Action::NotDue,
            login: l.clone(),
            attempts: 0,
        });
    }
    let stale_copy = |store: &mut Database| -> Result<Option<Outcome>, Error> {
        // Forced because the token this machine had failed: if the fleet has moved on since,
        // this machine's copy was merely stale; take the fleet's token, refresh nothing.
        let Some(ours) = local.as_ref().map(|l| &l.access_token) else {
            return Ok(None);
        };
        let shared = fetch(store, fleet, job)?;
        if *ours == shared.login.access_token || shared.login.remaining_ms(now_ms()) <= 0 {
            return Ok(None);
        }
        project(job, &shared, None)?;
        Ok(Some(Outcome {
            action: Action::Adopted,
            login: shared.login,
            attempts: 0,
        }))
    };
    let result = connect(fleet).and_then(|mut store| {
        if want.force
            && let Some(adopted) = stale_copy(&mut store)?
        {
            return Ok(adopted);
        }
        let synced = refresh_if_due(&mut store, fleet, job, want)?;
        let wrote = project(job, &synced.shared, None)?;
        Ok(Outcome {
            action: match synced.action {
                Action::NotDue if wrote => Action::Adopted,
                action => action,
            },
            login: synced.shared.login,
            attempts: synced.attempts,
        })
    });
    match (result, local) {
        (Err(Error::Fleet(message)), Some(login))
            if message.is_unreachable()
                && !login.access_token.is_empty()
                && login.remaining_ms(now_ms()) > 0 =>
        {
            tracing::warn!(
                "{message}; using the access token in {}, which expires {}",
                job.file.path().display(),
                crate::login::format_time(login.expires_at)
            );
            Ok(Outcome {
                action: Action::NotDue,
                login,
                attempts: 0,
            })
        }
        (other, _) => other,
    }
}

/// What the fleet's refresh came to: what was done, the store's login now, and the token
/// requests made. The caller writes it into this machine's file ([`project`]).
#[derive(Clone, Debug)]
pub struct Synced {
    pub action: Action,
    pub shared: Shared,
    pub attempts: u32,
}

impl Synced {
    fn new(action: Action, shared: Shared, attempts: u32) -> Synced {
        Synced {
            action,
            shared,
            attempts,
        }
    }
}

/// The fleet's refresh: reads the row; when less than `min_ttl` is left (or `force`), refreshes
/// under the row lock.
pub fn refresh_if_due(
    store: &mut Database,
    fleet: &Fleet,
    job: &Job<'_>,
    want: Want,
) -> Result<Synced, Error> {
    let (name, _) = name_and_shape(job)?;
    let first = fetch(store, fleet, job)?;
    let pending_recovery = job.state.has_recovery(&state_key(fleet, name));
    if want.met_by(&first.login, pending_recovery, now_ms()) {
        return Ok(Synced::new(Action::NotDue, first, 0));
    }
    if !want.force && !pending_recovery && first.is_dead() {
        return Err(dead(fleet, job, &first, None));
    }
    // Before the row lock: looking for a client secret must not hold up the whole fleet.
    crate::refresh::provider_ready(job)?;
    locked_refresh(store, fleet, job, want, first.row.generation)
}

fn dead(fleet: &Fleet, job: &Job<'_>, shared: &Shared, reason: Option<&str>) -> Error {
    let reason = reason
        .map(str::to_string)
        .or_else(|| shared.row.last_error.clone())
        .unwrap_or_else(|| "the server rejected its refresh token".into());
    let owner = job.file.owner();
    Error::Fleet(FleetError::Dead(format!(
        "the fleet's {} login '{}' in {} is dead: {reason}. Log in again with {} on one machine, then run `tokenkeeper fleet push` there",
        owner.name, shared.row.name, fleet.shown, owner.relogin
    )))
}

/// How long the database lets our transaction sit idle while a token request is out: longer
/// than one request plus the longest wait between attempts, so the lock is never lost while we
/// work, yet a frozen process does not hold the whole fleet for ever.
pub(crate) fn idle_timeout(job: &Job<'_>) -> Duration {
    job.settings.request_timeout + job.settings.retry.total + Duration::from_secs(30)
}

fn locked_refresh(
    store: &mut Database,
    fleet: &Fleet,
    job: &Job<'_>,
    want: Want,
    first_generation: i64,
) -> Result<Synced, Error> {
    let (name, _) = name_and_shape(job)?;
    let key = state_key(fleet, name);
    interrupt::protect();
    let _refreshing = interrupt::refreshing();
    store.ensure_in_flight_id()?;
    let mut tx = store.begin(job.settings.lock_timeout, idle_timeout(job))?;
    let Some(row) = tx.lock(name)? else {
        return Err(database::no_login(&fleet.shown, Some(name)));
    };
    let current = open(fleet, job, row)?;
    // A row put back from a backup: its refresh token is spent. Nothing is posted or written.
    rollback::witness(fleet, job, &current)?;

    if let Some(restored) = restore_recovery(&mut tx, fleet, job, &key, &current)? {
        tx.commit()?;
        rollback::record(job, &key, &rollback::version(&restored));
        job.state.remove_recovery(&key);
        tracing::info!("wrote the tokens kept in this machine's recovery file into the store");
        return Ok(Synced::new(Action::Restored, restored, 0));
    }
    let now = now_ms();
    let due = current.login.is_due(now, want.min_ttl);
    if current.row.generation != first_generation && !due {
        drop(tx);
        tracing::info!(
            "{} refreshed the fleet's login meanwhile; using its tokens",
            current.row.updated_by
        );
        return Ok(Synced::new(Action::Adopted, current, 0));
    }
    if !want.force && !due {
        drop(tx);
        return Ok(Synced::new(Action::NotDue, current, 0));
    }
    if current.login.refresh_token.is_empty() {
        return Err(dead(
            fleet,
            job,
            &current,
            Some("the store holds no refresh token"),
        ));
    }
    if !want.force && current.is_dead() {
        return Err(dead(fleet, job, &current, None));
    }
    let patience = job.settings.request_timeout + fleet.takeover_after;
    let machine_id = crate::fleet::machine_id(job.state);
    // Our own note is one we can account for: our id on it, and the answer in our recovery
    // file (which restore_recovery would have written, so in practice we wait like the others).
    let holds_answer = job
        .state
        .read_recovery(&key)
        .is_some_and(|(_, r)| r.posted_refresh == current.login.refresh_token.fingerprint());
    let ours = Ours {
        machine_id: &machine_id,
        holds_answer,
    };
    if let Some(note) = tx.in_flight(name)?
        && let Some(until) = unfinished_request(&note, current.row.generation, &ours, patience)
    {
        let who = crate::fleet::shown_machine(&note.machine, &note.machine_id);
        if now < until {
            return Err(Error::Fleet(FleetError::RowLocked(format!(
                "{who} posted the fleet's refresh token (generation {}) at {} and has not written the new tokens; they may be in its recovery file, so no other machine posts that token before {} ([store] takeover_after); try again then",
                note.generation,
                crate::login::format_time(note.since),
                crate::login::format_time(until)
            ))));
        }
        tracing::warn!(
            "{who} posted the fleet's refresh token at {} and never wrote the result; taking over",
            crate::login::format_time(note.since)
        );
    }
    // The note of our request goes on a second connection, committed before the request.
    let noter = connect(fleet)?;
    let mut round = Round {
        fleet,
        job,
        key: &key,
        name,
        current: &current,
        tx: Some(tx),
        noter,
        machine_id,
    };
    attempts::run(job, &mut round)
}

/// The fleet's side of the attempt loop: every attempt proves the row lock is still held and
/// notes the request in flight; new tokens become the next generation.
struct Round<'r, 'j, 's> {
    fleet: &'r Fleet,
    job: &'r Job<'j>,
    key: &'r str,
    name: &'static str,
    current: &'r Shared,
    /// The row lock; None once committed.
    tx: Option<Locked<'s>>,
    noter: Database,
    /// This installation's id, for the note of our request.
    machine_id: String,
}

impl Round<'_, '_, '_> {
    /// Clears the note of our request, writes `row` over the generation we hold, commits.
    fn write_and_commit(&mut self, row: &Row) -> Result<(), Error> {
        let (name, generation) = (self.name, self.current.row.generation);
        let mut tx = self.tx.take().ok_or_else(let_go)?;
        tx.clear_in_flight(name)
            .and_then(|()| tx.write(row, Some(generation)))
            .and_then(|()| tx.commit())
    }
}

/// The row lock was committed already (never happens: each attempt that commits ends the loop).
fn let_go() -> Error {
    Error::Fleet(FleetError::RowLocked(
        "the store's row lock was already let go".into(),
    ))
}

impl Attempts for Round<'_, '_, '_> {
    type Done = Synced;

    fn ready(&mut self, _attempts: u32) -> Result<Ready<Synced>, Error> {
        // Never post without the lock: the database may have ended an idle transaction.
        self.tx.as_mut().ok_or_else(let_go)?.still_held()?;
        let (name, generation) = (self.name, self.current.row.generation);
        self.noter.note_in_flight(
            name,
            generation,
            &self.fleet.machine,
            &self.machine_id,
            now_ms(),
        )?;
        Ok(Ready::Post {
            refresh: self.current.login.refresh_token.clone(),
            access: self.current.login.access_token.clone(),
        })
    }

    fn recovery_key(&self) -> &str {
        self.key
    }

    fn tokens(&mut self, granted: Granted<'_>) -> Result<Synced, Error> {
        let (fleet, job, key) = (self.fleet, self.job, self.key);
        let received_at = now_ms();
        let issued = Issued {
            posted: granted.posted,
            tokens: &granted.tokens,
            received_at,
        };
        let (tokens, attempts, slot) = (&granted.tokens, granted.attempts, granted.slot);
        if let (_, Err(e)) = keep_first(job, key, issued, slot) {
            tracing::warn!("could not write the recovery file first: {e}");
        }
        // Every machine's copy holds a revoked access token until the store has the new one:
        // how long that took is worth a line.
        let kept_first = now_ms() - received_at;
        let next = next_generation(fleet, job, self.current, tokens, received_at, "refreshed")?;
        if let Err(e) = self.write_and_commit(&next.row) {
            save_again(fleet, job, key, e)?;
        }
        let committed = now_ms() - received_at;
        rollback::record(job, key, &rollback::version(&next));
        job.state.remove_recovery(key);
        tracing::info!(
            "refreshed the fleet's login: generation {}, access token expires {} (in the store {committed} ms after the answer, the recovery file after {kept_first} ms)",
            next.row.generation,
            crate::login::format_time(next.login.expires_at)
        );
        Ok(Synced::new(Action::Refreshed, next, attempts))
    }

    fn rejected(&mut self, rejection: Rejection, _attempts: u32) -> Result<Synced, Error> {
        if let Some(config) = rejection.blames_client(self.job) {
            // Nothing was spent: the row is let go as it was, and the note of our request goes,
            // so that the next machine posts the same refresh token without waiting.
            if let Some(mut tx) = self.tx.take()
                && let Err(e) = tx.clear_in_flight(self.name).and_then(|()| tx.commit())
            {
                tracing::debug!("could not clear the note of our request in the store: {e}");
            }
            return Err(config);
        }
        let (fleet, current) = (self.fleet, self.current);
        let reason = rejection.reason();
        let mut marked = current.clone();
        marked.payload.rejected = Some(current.login.refresh_token.fingerprint());
        let mut row = seal(
            fleet,
            &marked.row,
            &marked.payload,
            current.row.generation + 1,
        );
        row.updated_at = now_ms();
        row.updated_by = fleet.machine.clone();
        row.last_outcome = Some("dead".into());
        row.last_error = Some(reason.clone());
        match self.write_and_commit(&row) {
            Ok(()) => rollback::record(
                self.job,
                self.key,
                &crate::storage::state::FleetSeen {
                    epoch: marked.payload.epoch,
                    generation: row.generation,
                },
            ),
            Err(e) => tracing::warn!("could not mark the login dead in the store: {e}"),
        }
        Err(dead(fleet, self.job, current, Some(&reason)))
    }

    fn gave_up(&mut self, reason: &str, retry_after: Option<Duration>) {
        let name = self.name;
        let failures = self.current.row.failures.saturating_add(1);
        let wait = crate::daemon::schedule::backoff(
            u32::try_from(failures).unwrap_or(1),
            retry_after,
            fastrand::f64(),
        );
        let retry_at = now_ms().saturating_add(crate::login::duration_ms(wait));
        if let Some(mut tx) = self.tx.take()
            && let Err(e) = tx
                .clear_in_flight(name)
                .and_then(|()| {
                    tx.note_failure(name, "unavailable", reason, failures, Some(retry_at))
                })
                .and_then(|()| tx.commit())
        {
            tracing::debug!("could not record the failure in the store: {e}");
        }
    }

    fn holding(&self) -> &'static str {
        " under the store's row lock"
    }
}

/// The next generation of a login after a token response: the provider applies the response to
/// the shared document, exactly as it would to its own file.
fn next_generation(
    fleet: &Fleet,
    job: &Job<'_>,
    current: &Shared,
    tokens: &TokenResponse,
    received_at: EpochMs,
    outcome: &str,
) -> Result<Shared, Error> {
    let mut payload = current.payload.clone();
    job.provider.apply(&mut payload.login, tokens, received_at);
    let spent = current.login.refresh_token.fingerprint();
    payload.spent.retain(|fp| *fp != spent);
    payload.spent.push(spent);
    if payload.spent.len() > SPENT_KEPT {
        let cut = payload.spent.len() - SPENT_KEPT;
        payload.spent.drain(..cut);
    }
    payload.rejected = None;
    let login = job.provider.parse(job.file, &payload.login)?;
    let mut row = seal(fleet, &current.row, &payload, current.row.generation + 1);
    row.expires_at = login.expires_at;
    row.updated_at = received_at;
    row.updated_by = fleet.machine.clone();
    row.last_refresh_at = Some(received_at);
    row.last_refresh_by = Some(fleet.machine.clone());
    row.last_outcome = Some(outcome.into());
    row.last_error = None;
    row.failures = 0;
    row.retry_at = None;
    Ok(Shared {
        row,
        payload,
        login,
    })
}

/// `base` with `payload` sealed as `generation` under this machine's key.
pub(crate) fn seal(fleet: &Fleet, base: &Row, payload: &Payload, generation: i64) -> Row {
    let plain = serde_json::to_vec(payload).unwrap_or_default();
    Row {
        generation,
        key_id: fleet.key.id().to_string(),
        sealed: fleet.key.seal(&base.name, generation, &plain),
        ..base.clone()
    }
}

/// The commit failed after the server issued new tokens (the database went away at that
/// moment). They are in the recovery file; try for a few seconds on a new connection to write
/// them under the row lock, if the store still holds the refresh token we spent.
fn save_again(fleet: &Fleet, job: &Job<'_>, key: &str, first_error: Error) -> Result<(), Error> {
    tracing::warn!("{first_error}; trying again to save the new tokens");
    let mut last = first_error.to_string();
    for pause_ms in [100u64, 400, 1000, 1500] {
        thread::sleep(Duration::from_millis(pause_ms));
        let attempt = connect(fleet).and_then(|mut store| {
            let (name, _) = name_and_shape(job)?;
            let mut tx = store.begin(job.settings.lock_timeout, idle_timeout(job))?;
            let Some(row) = tx.lock(name)? else {
                return Err(database::no_login(&fleet.shown, Some(name)));
            };
            let current = open(fleet, job, row)?;
            rollback::witness(fleet, job, &current)?;
            match restore_recovery(&mut tx, fleet, job, key, &current)? {
                Some(restored) => {
                    tx.commit()?;
                    rollback::record(job, key, &rollback::version(&restored));
                    Ok(())
                }
                None => Ok(()),
            }
        });
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    let recovery = job
        .state
        .recovery_file(key)
        .map_or_else(|| "nowhere".to_string(), |p| p.display().to_string());
    Err(Error::Fleet(FleetError::NotWritten(format!(
        "the server issued new tokens but the store {} could not be written ({last}); they are kept in {recovery} (mode 0600), and the next tokenkeeper on this machine writes them into the store as soon as it can reach it",
        fleet.shown
    ))))
}

/// If this machine holds tokens that never reached the store and the store still holds the
/// refresh token spent for them, writes them as the next generation (the caller commits).
/// Tokens made stale by a newer login are discarded.
fn restore_recovery(
    tx: &mut Locked<'_>,
    fleet: &Fleet,
    job: &Job<'_>,
    key: &str,
    current: &Shared,
) -> Result<Option<Shared>, Error> {
    let Some((_, recovery)) = pending_recovery(job, key, &current.login.refresh_token, "the store")
    else {
        return Ok(None);
    };
    let next = next_generation(
        fleet,
        job,
        current,
        &recovery.tokens(),
        recovery.received_at,
        "restored",
    )?;
    tx.clear_in_flight(&current.row.name)?;
    tx.write(&next.row, Some(current.row.generation))?;
    Ok(Some(next))
}

/// What makes a note of a token request this machine's own.
pub struct Ours<'a> {
    /// This installation's id ([`crate::fleet::machine_id`]).
    pub machine_id: &'a str,
    /// This machine holds the answer to the request in its recovery file (the tokens it got for
    /// the refresh token the store holds).
    pub holds_answer: bool,
}

/// When a note says a machine posted `generation`'s refresh token and never wrote the result:
/// the time until which no machine may post that token (the request's timeout and
/// `[store] takeover_after` after the note). None when the note is for another generation, or
/// is provably this machine's own: our id on it (never the name alone: names repeat across
/// cloned machines; a note of an earlier version has no id and is nobody's) and the answer in
/// our recovery file.
pub fn unfinished_request(
    note: &database::InFlight,
    generation: i64,
    ours: &Ours<'_>,
    patience: Duration,
) -> Option<EpochMs> {
    let own =
        !note.machine_id.is_empty() && note.machine_id == ours.machine_id && ours.holds_answer;
    (note.generation == generation && !own).then(|| {
        note.since
            .saturating_add(crate::login::duration_ms(patience))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fleet::crypto::Sealed;
    use crate::login::Login;
    use crate::secret::Secret;
    use crate::secret::fingerprint;
    use serde_json::Value;

    pub(crate) fn login(refresh: &str, expires_at: EpochMs) -> Login {
        Login {
            access_token: Secret::new(format!("a-{refresh}")),
            refresh_token: Secret::new(refresh),
            expires_at,
            login_expires_at: None,
            scopes: None,
        }
    }

    pub(crate) fn shared(
        refresh: &str,
        expires_at: EpochMs,
        spent: &[&str],
        rejected: Option<&str>,
    ) -> Shared {
        Shared {
            row: Row {
                name: "claude".into(),
                generation: 4,
                provider: "claude".into(),
                key_id: "k".into(),
                sealed: Sealed {
                    nonce: Vec::new(),
                    ciphertext: Vec::new(),
                },
                expires_at,
                updated_at: 0,
                updated_by: "m1".into(),
                last_refresh_at: None,
                last_refresh_by: None,
                last_outcome: None,
                last_error: None,
                failures: 0,
                retry_at: None,
            },
            payload: Payload {
                login: Value::Null,
                spent: spent.iter().map(|t| fingerprint(t)).collect(),
                rejected: rejected.map(fingerprint),
                epoch: 0,
            },
            login: login(refresh, expires_at),
        }
    }

    #[test]
    fn only_another_machines_note_on_this_generation_holds_the_others_back() {
        let id1 = "1a2b3c4d".repeat(4);
        let note = database::InFlight {
            generation: 7,
            machine: "m1".into(),
            machine_id: id1.clone(),
            since: 1_000,
        };
        let patience = Duration::from_secs(150);
        let other = Ours {
            machine_id: "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
            holds_answer: false,
        };
        let me = Ours {
            machine_id: &id1,
            holds_answer: true,
        };
        assert_eq!(
            unfinished_request(&note, 7, &other, patience),
            Some(151_000)
        );
        assert_eq!(
            unfinished_request(&note, 8, &other, patience),
            None,
            "old note"
        );
        assert_eq!(unfinished_request(&note, 7, &me, patience), None, "our own");
        let far = database::InFlight {
            since: i64::MAX - 5,
            ..note.clone()
        };
        assert_eq!(
            unfinished_request(&far, 7, &other, patience),
            Some(i64::MAX)
        );
    }

    #[test]
    fn a_note_is_ours_only_with_our_id_and_the_answer_in_our_recovery_file() {
        let id = "1a2b3c4d".repeat(4);
        let patience = Duration::from_secs(150);
        let note = |machine_id: &str| database::InFlight {
            generation: 7,
            machine: "twin".into(),
            machine_id: machine_id.into(),
            since: 1_000,
        };
        let holds = |holds_answer| Ours {
            machine_id: &id,
            holds_answer,
        };
        // The same name on a clone of this machine: another id.
        let clone = note("0".repeat(32).as_str());
        assert_eq!(
            unfinished_request(&clone, 7, &holds(true), patience),
            Some(151_000)
        );
        // Our id, but no answer here: the request may have been answered (and the token spent).
        assert_eq!(
            unfinished_request(&note(&id), 7, &holds(false), patience),
            Some(151_000)
        );
        // A note of an earlier version (no id) is nobody's.
        assert_eq!(
            unfinished_request(&note(""), 7, &holds(true), patience),
            Some(151_000)
        );
        assert_eq!(
            unfinished_request(
                &note(""),
                7,
                &Ours {
                    machine_id: "",
                    holds_answer: true
                },
                patience
            ),
            Some(151_000)
        );
        assert_eq!(
            unfinished_request(&note(&id), 7, &holds(true), patience),
            None
        );
    }
}
