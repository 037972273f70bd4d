//! `tokenkeeper fleet push`: this machine's login (Claude Code's, Codex CLI's, Gemini CLI's or a
//! `[[login]]` table's, as `--provider` says) becomes the fleet's row of that name. It reads the login under the CLI's own
//! refresh locks, where it has any (so nothing refreshes it meanwhile), writes it as the next
//! generation under the row lock (creating the tables on first use), and leaves this machine's
//! file without its refresh token, like every other machine's.
//!
//! Every push writes a new push marker (the epoch, see [`rollback`](crate::fleet::rollback)), so
//! that machines accept it even when it lowers or restarts the generation.

use crate::error::{Error, FleetError};
use crate::fleet::Fleet;
use crate::fleet::database::Row;
use crate::fleet::local::project;
use crate::fleet::refresh::{
    Payload, Shared, connect, idle_timeout, name_and_shape, open, seal, state_key,
};
use crate::fleet::rollback;
use crate::lock::own_lock;
use crate::lock::take::Waits;
use crate::login::{Login, now_ms};
use crate::refresh::Job;
use crate::storage::state::FleetSeen;
use std::time::Instant;

/// What `fleet push` did.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub generation: i64,
    /// The generation it replaced, if the store held one.
    pub replaced: Option<i64>,
    /// The store held this very login already: nothing was written to it.
    pub already: bool,
}

/// Whether fleet mode can share the login `job` names at all (one with a copy shape), checked
/// before anything else: the error says which logins it can share.
pub fn pushable(job: &Job<'_>) -> Result<(), Error> {
    name_and_shape(job).map(|_| ())
}

/// `tokenkeeper fleet push`: this machine's login becomes the fleet's (creating the table on
/// first use). Refuses to replace a newer login (one whose access token expires later) unless
/// `force`. Afterwards this machine's file holds the login without its refresh token, like
/// every other machine's.
pub fn push(fleet: &Fleet, job: &Job<'_>, force: bool) -> Result<Pushed, Error> {
    let (name, shape) = name_and_shape(job)?;
    let folder = job.file.folder();
    let sidecar = own_lock::sidecar_path(&folder);
    let deadline = Instant::now() + job.settings.lock_timeout;
    // Hold our lock and the CLI's refresh locks (Claude Code's; Codex CLI and Gemini CLI have
    // none), so that nothing of ours or Claude's refreshes the login between our reading it and
    // emptying its refresh token here.
    let not_writable = |path: std::path::PathBuf, source| Error::Inaccessible {
        action: if path == sidecar {
            "create a lock in the credentials folder at"
        } else {
            "take the lock"
        },
        path,
        source,
        hint: "make the folder writable by you".into(),
    };
    let waits = Waits {
        timeout: job.settings.lock_timeout,
        not_writable: &not_writable,
    };
    let own = waits.own(&sidecar, deadline, &mut || {})?;
    let held = waits.refresh_locks(&job.provider.refresh_locks(job.file), deadline, &own)?;
    let snap = crate::refresh::read_snapshot(job.provider, job.file)?;
    let login = job.provider.parse(job.file, &snap.doc)?;
    // The login is shared as top-level keys of the document; a `[[login]]` table may point into
    // a document whose top level is an array, which has none: pushing it would store nothing and
    // leave this machine's file emptied.
    if !snap.doc.is_object() {
        return Err(Error::Fleet(FleetError::Config(format!(
            "{} is not a JSON object at its top level, so fleet mode cannot take the login out of it (a login is shared as top-level keys); nothing was pushed or changed",
            job.file.path().display()
        ))));
    }
    if login.refresh_token.is_empty() {
        return Err(Error::Fleet(FleetError::LocalFile(format!(
            "{} holds no refresh token (it is a fleet machine's copy, or the login was ended), so there is nothing to push; log in with {} first",
            job.file.path().display(),
            job.file.owner().relogin
        ))));
    }
    let mut store = connect(fleet)?;
    store.create_table()?;
    let mut tx = store.begin(job.settings.lock_timeout, idle_timeout(job))?;
    let existing = tx.lock(name)?;
    let now = now_ms();
    let replaced = existing.as_ref().map(|r| r.generation);
    let mut stored_epoch = None;
    if let Some(row) = &existing {
        match open(fleet, job, row.clone()) {
            Ok(current) => {
                stored_epoch = Some(current.payload.epoch);
                let verdict = push_verdict(&current, &login, force);
                if verdict == PushVerdict::AlreadyThere {
                    drop(tx);
                    project(job, &current, Some(&own))?;
                    return Ok(Pushed {
                        generation: row.generation,
                        replaced,
                        already: true,
                    });
                }
                if verdict == PushVerdict::Refuse {
                    return Err(Error::Fleet(FleetError::Refused(format!(
                        "the store {} holds generation {} of '{name}' (written by {} at {}), newer than the login in {} (its access token expires later); nothing was changed. Pass --force to replace it",
                        fleet.shown,
                        row.generation,
                        row.updated_by,
                        crate::login::format_time(row.updated_at),
                        job.file.path().display()
                    ))));
                }
            }
            Err(e) if !force => return Err(e),
            Err(_) => {}
        }
    }
    // A new push marker: this push is newer than anything the store or this machine has seen,
    // even where it lowers or restarts the generation (see `rollback`).
    let key = state_key(fleet, name);
    let epoch = rollback::push_epoch(now, stored_epoch, job.state.read_fleet_seen(&key));
    let payload = Payload {
        login: shape.extract(&snap.doc),
        spent: Vec::new(),
        rejected: None,
        epoch,
    };
    let generation = replaced.map_or(1, |g| g + 1);
    let base = Row {
        name: name.to_string(),
        generation,
        provider: job.file.owner().provider.to_string(),
        key_id: String::new(),
        sealed: crate::fleet::crypto::Sealed {
            nonce: Vec::new(),
            ciphertext: Vec::new(),
        },
        expires_at: login.expires_at,
        updated_at: now,
        updated_by: fleet.machine.clone(),
        last_refresh_at: None,
        last_refresh_by: None,
        last_outcome: Some("pushed".into()),
        last_error: None,
        failures: 0,
        retry_at: None,
    };
    let row = seal(fleet, &base, &payload, generation);
    tx.write(&row, replaced)?;
    tx.commit()?;
    rollback::record(job, &key, &FleetSeen { epoch, generation });
    let shared = Shared {
        row,
        payload,
        login,
    };
    // Still under the CLI's refresh locks, and under its write lock (Codex CLI's `flock`s) while
    // writing: from now on this machine's file has no refresh token.
    project(job, &shared, Some(&own))?;
    drop(held);
    Ok(Pushed {
        generation,
        replaced,
        already: false,
    })
}

/// What `fleet push` does with a store that holds a login already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushVerdict {
    /// The store holds this very login: nothing to write.
    AlreadyThere,
    Replace,
    /// The store's login is newer (its access token expires no sooner) and alive.
    Refuse,
}

pub fn push_verdict(stored: &Shared, local: &Login, force: bool) -> PushVerdict {
    if stored.login.refresh_token == local.refresh_token {
        PushVerdict::AlreadyThere
    } else if !force && !stored.is_dead() && stored.login.expires_at >= local.expires_at {
        PushVerdict::Refuse
    } else {
        PushVerdict::Replace
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::refresh::tests::{login, shared};

    #[test]
    fn push_replaces_only_an_older_or_dead_login_unless_forced() {
        let stored = shared("r", 1000, &[], None);
        // (refresh token, expiry, --force): what a push of that login does.
        for (refresh, expires, force, verdict) in [
            ("r", 5, false, PushVerdict::AlreadyThere),
            ("n", 2000, false, PushVerdict::Replace),
            ("n", 1000, false, PushVerdict::Refuse),
            ("n", 10, false, PushVerdict::Refuse),
            ("n", 10, true, PushVerdict::Replace),
        ] {
            assert_eq!(
                push_verdict(&stored, &login(refresh, expires), force),
                verdict,
                "{refresh} {expires} {force}"
            );
        }
        let dead = shared("r", 1000, &[], Some("r"));
        assert!(dead.is_dead());
        assert_eq!(
            push_verdict(&dead, &login("n", 10), false),
            PushVerdict::Replace
        );
    }
}
