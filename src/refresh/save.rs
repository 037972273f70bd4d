//! The local refresh's save: new tokens go to a recovery file first, then into the credentials
//! file under the CLI's own write lock, only if the file still holds the refresh token that was
//! spent; a save that keeps failing leaves them in the recovery file, and the next refresh
//! restores them before anything else. Also the clean-up after a writer that was killed.

use super::{Action, Job, Outcome, read_login, read_snapshot};
use crate::error::Error;
use crate::lock::interrupt;
use crate::lock::own_lock::OwnLock;
use crate::lock::take::{self, LockFailure};
use crate::login::{EpochMs, Login};
use crate::oauth::endpoint::TokenResponse;
use crate::secret::Secret;
use crate::storage::credentials_file::WriteGuard;
use crate::storage::state::{Recovery, RecoverySlot};
use serde_json::Value;
use std::io;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// A tokenkeeper killed while saving leaves its temp file; remove it under the lock every
/// writer of the file takes (the CLI's, else our own, which we hold), where no writer can be
/// using one.
pub(super) fn remove_temps_of_killed_writer(job: &Job<'_>, own: &OwnLock) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let lock = take::save_lock(job.provider.save_lock(job.file), deadline, own);
    if let (Ok(_lock), Ok(target)) = (lock, job.file.target()) {
        crate::storage::atomic::remove_abandoned_temps(&target);
    }
}

/// New tokens from the server: the refresh token spent for them, and when they came.
#[derive(Clone, Copy)]
pub(crate) struct Issued<'a> {
    pub posted: &'a Secret,
    pub tokens: &'a TokenResponse,
    pub received_at: EpochMs,
}

/// Writes `tokens` under Claude's storage lock if the file still holds `posted` (or was wiped);
/// keeps trying briefly, then falls back to a recovery file.
///
/// The recovery file is written first, before any lock is taken: until the credentials file
/// holds them, the new tokens exist only in this process, and a process killed in that moment
/// would lose the login (the next refresh would present the spent token and the server would
/// revoke everything). With the recovery file on disk, the next tokenkeeper restores them.
pub(super) fn save(
    job: &Job<'_>,
    own: &OwnLock,
    key: &str,
    issued: Issued<'_>,
    base: &Value,
    slot: Option<RecoverySlot>,
) -> Result<Action, Error> {
    let (recovery, early) = keep_first(job, key, issued, slot);
    let Issued { posted, .. } = issued;
    if let Err(e) = &early {
        tracing::debug!("could not write the recovery file first: {e}");
    }
    let mut last_error = io::Error::other("not tried");
    for pause_ms in [0u64, 100, 200, 400, 800, 1500] {
        thread::sleep(Duration::from_millis(pause_ms));
        if interrupt::stop_requested() && pause_ms > 0 {
            break;
        }
        match try_save(job, own, issued, base) {
            Ok(action) => {
                if action == Action::KeptOnDisk {
                    tracing::warn!(
                        "{} now holds a different login than the one we refreshed; kept what is on disk",
                        job.file.path().display()
                    );
                }
                job.state.remove_recovery(key);
                return Ok(action);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                // The lock wait already used its whole deadline, or a signal asked us to stop:
                // another round would only keep the signal waiting. The recovery file holds them.
                last_error = e;
                break;
            }
            Err(e) => {
                tracing::warn!(
                    "could not save the new tokens to {}: {e}; retrying",
                    job.file.path().display()
                );
                last_error = e;
            }
        }
    }
    match early.or_else(|_| job.state.save_recovery(key, &recovery)) {
        Ok(path) => Err(Error::SaveFailed {
            path: job.file.path().to_path_buf(),
            recovery: path,
            source: last_error,
        }),
        Err(recovery_error) => Err({
            // Nowhere to keep the new tokens: at least remember that the old refresh token is
            // spent, so that no later run presents it (the server would revoke the login).
            let spent = crate::storage::state::Spent {
                credentials: job.file.path().to_path_buf(),
                spent_refresh: posted.fingerprint(),
                at: crate::login::now_ms(),
            };
            match job.state.note_spent(key, &spent) {
                Some(path) => {
                    tracing::debug!("noted the spent refresh token in {}", path.display())
                }
                None => tracing::warn!("could not note anywhere that the refresh token is spent"),
            }
            Error::TokensLost {
                path: job.file.path().to_path_buf(),
                source: last_error,
                recovery_dir: job.state.root().join("recovery"),
                recovery_error,
                relogin: job.file.owner().relogin,
            }
        }),
    }
}

fn try_save(job: &Job<'_>, own: &OwnLock, issued: Issued<'_>, base: &Value) -> io::Result<Action> {
    let Issued {
        posted,
        tokens,
        received_at,
    } = issued;
    let deadline = Instant::now() + job.settings.lock_timeout.min(Duration::from_secs(20));
    let lock = take::save_lock(job.provider.save_lock(job.file), deadline, own)
        .map_err(LockFailure::into_io)?;
    let mut doc = match read_snapshot(job.provider, job.file) {
        Ok(snap) => snap.doc,
        Err(Error::Missing { .. }) => base.clone(),
        Err(e) => return Err(io::Error::other(e.to_string())),
    };
    let stored = job.provider.stored_refresh_token(&doc);
    if !(stored.is_empty() || stored == posted.expose()) {
        return Ok(Action::KeptOnDisk);
    }
    job.provider.apply(&mut doc, tokens, received_at);
    job.file.write(&doc, &WriteGuard::new(&lock))?;
    Ok(Action::Refreshed)
}

/// If an earlier save failed and the file still holds the refresh token that was spent, write
/// the tokens from the recovery file. A recovery made stale by a newer login is discarded.
pub(super) fn restore_recovery(
    job: &Job<'_>,
    own: &OwnLock,
    key: &str,
    current: &Login,
    base: &Value,
) -> Result<Option<Outcome>, Error> {
    let holder = job.file.path().display().to_string();
    let Some((path, recovery)) = pending_recovery(job, key, &current.refresh_token, &holder) else {
        return Ok(None);
    };
    let critical = interrupt::enter_critical();
    let action = save(
        job,
        own,
        key,
        Issued {
            posted: &current.refresh_token,
            tokens: &recovery.tokens(),
            received_at: recovery.received_at,
        },
        base,
        None,
    )?;
    drop(critical);
    job.state.remove_recovery(key);
    tracing::info!("restored the tokens saved in {}", path.display());
    let action = if action == Action::Refreshed {
        Action::Restored
    } else {
        action
    };
    Ok(Some(Outcome {
        action,
        login: read_login(job)?,
        attempts: 0,
    }))
}

/// Puts new tokens in the recovery file before anything else, for the file and the fleet's
/// store alike: until they are saved where they belong they exist only in this process, and a
/// process killed in that moment would lose the login. Returns the recovery (to write again
/// later) and where it went.
pub(crate) fn keep_first(
    job: &Job<'_>,
    key: &str,
    issued: Issued<'_>,
    slot: Option<RecoverySlot>,
) -> (Recovery, io::Result<PathBuf>) {
    let recovery = Recovery::new(
        job.file.path(),
        issued.posted,
        issued.tokens,
        issued.received_at,
    );
    let early = match slot {
        Some(slot) => slot.write(&recovery),
        None => job.state.save_recovery(key, &recovery),
    };
    (recovery, early)
}

/// Tokens an earlier refresh could not save, when the refresh token spent for them is still
/// `current` (so they are the login's next ones). A recovery made stale by a newer login (in
/// `holder`, named in the log) is discarded.
pub(crate) fn pending_recovery(
    job: &Job<'_>,
    key: &str,
    current: &Secret,
    holder: &str,
) -> Option<(PathBuf, Recovery)> {
    let (path, recovery) = job.state.read_recovery(key)?;
    if recovery.posted_refresh != current.fingerprint() {
        tracing::info!(
            "discarding recovery file {}: {holder} holds a newer login",
            path.display()
        );
        job.state.remove_recovery(key);
        return None;
    }
    Some((path, recovery))
}
