//! A store put back to an older state (a restore from a backup, a failed-over replica that lags)
//! holds a login whose refresh token the fleet spent long ago: posting it gets the whole login
//! family revoked. The sealing does not catch it (the old row decrypts: it is a genuine row,
//! sealed under its own name and generation), so every machine remembers the newest version of
//! the login it has seen, in its state folder, and refuses to go back.
//!
//! A version is the pair (epoch, generation), compared in that order:
//!
//! - the **generation** goes up by one with every write of the row (refresh, restore, dead mark,
//!   push);
//! - the **epoch** is the push marker, sealed in the payload: every `fleet push` sets it to the
//!   push's time in epoch milliseconds, but at least one more than the store's epoch and than
//!   the pushing machine's own record; every other write keeps it.
//!
//! A push therefore always makes a newer version, even when it restarts or lowers the
//! generation (a table dropped and made again, a push over a rolled-back row), and machines
//! accept it; a restored old row carries its old epoch with an older generation, or an older
//! epoch (a backup from before the last push), and is a rollback. The machine that pushes
//! records its push as seen whatever it had seen before. Rows written by earlier versions have
//! epoch 0, so an upgrade changes nothing until the first push.
//!
//! On a rollback a machine makes no token request at all, keeps the access token in its own
//! file (it does not take the old row's), fails `exec`, `token` and `refresh` with a message
//! that names the fix, and its daemon sends one `store_rolled_back` alert. The fix is a fresh
//! login on one machine and `tokenkeeper fleet push --force` there.
//!
//! Only a machine that has seen the newer version can tell: one that has not (a new machine, a
//! wiped state folder, one without a daemon that was off meanwhile) accepts what the store
//! holds. Daemons see every generation as it is written (they are woken by each write).

use crate::error::{Error, FleetError};
use crate::fleet::Fleet;
use crate::fleet::login::{Shared, state_key};
use crate::login::EpochMs;
use crate::refresh::Job;
use crate::storage::state::FleetSeen;

/// The version of an opened row.
pub fn version(shared: &Shared) -> FleetSeen {
    FleetSeen {
        epoch: shared.payload.epoch,
        generation: shared.row.generation,
    }
}

/// Whether the store's version is older than the newest one this machine has seen.
pub fn is_rollback(seen: Option<FleetSeen>, store: FleetSeen) -> bool {
    seen.is_some_and(|s| (store.epoch, store.generation) < (s.epoch, s.generation))
}

/// The epoch of a new push: its time, but newer than the store's (`stored`, when the row could
/// be opened) and than what the pushing machine has seen, whatever the clocks say.
pub fn push_epoch(now: EpochMs, stored: Option<i64>, seen: Option<FleetSeen>) -> i64 {
    let after = |e: i64| e.saturating_add(1);
    now.max(stored.map_or(0, after))
        .max(seen.map_or(0, |s| after(s.epoch)))
}

/// Checks the opened row against what this machine has seen, and records it when it is newer.
/// A rollback is an error that says what happened and how to recover; nothing is recorded.
pub fn witness(fleet: &Fleet, job: &Job<'_>, shared: &Shared) -> Result<(), Error> {
    if check(fleet, job, shared)? {
        record(job, &state_key(fleet, &shared.row.name), &version(shared));
    }
    Ok(())
}

/// [`witness`] without recording: whether the row is newer than what this machine has seen (the
/// caller records it with [`record`]), or the rollback error. Reads only.
pub fn check(fleet: &Fleet, job: &Job<'_>, shared: &Shared) -> Result<bool, Error> {
    let seen = job
        .state
        .read_fleet_seen(&state_key(fleet, &shared.row.name));
    let now = version(shared);
    if is_rollback(seen, now) {
        return Err(rolled_back(fleet, shared, seen.unwrap_or_default()));
    }
    Ok(seen != Some(now))
}

/// Records a version this machine wrote itself (after a push: even one older than what it had
/// seen).
pub fn record(job: &Job<'_>, key: &str, version: &FleetSeen) {
    if let Err(e) = job.state.write_fleet_seen(key, version) {
        tracing::warn!(
            "could not record the generation seen in the store in {}: {e}; a store put back to an older state would go unnoticed",
            job.state.root().display()
        );
    }
}

/// The error (and alert text) of a rollback: no token in it, the fix in it.
pub fn rolled_back(fleet: &Fleet, shared: &Shared, seen: FleetSeen) -> Error {
    let now = version(shared);
    let what = if now.epoch < seen.epoch {
        "a login pushed before the latest push this machine has seen".to_string()
    } else {
        format!(
            "generation {}, older than generation {} this machine has seen",
            now.generation, seen.generation
        )
    };
    Error::Fleet(FleetError::RolledBack(format!(
        "the store {} was rolled back: the login '{}' there is {what} (restored from a backup?). Its refresh token was spent already and posting it would get the login revoked, so tokenkeeper makes no token request; this machine keeps its own access token while it lasts. To recover, log in again on one machine and run `tokenkeeper fleet push --force` there",
        fleet.shown, shared.row.name
    )))
}

/// Whether an error is [`rolled_back`]'s.
pub fn is_rolled_back(e: &Error) -> bool {
    matches!(e, Error::Fleet(FleetError::RolledBack(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(epoch: i64, generation: i64) -> FleetSeen {
        FleetSeen { epoch, generation }
    }

    #[test]
    fn an_older_generation_of_the_same_push_is_a_rollback() {
        assert!(
            !is_rollback(None, v(0, 1)),
            "nothing seen: nothing to compare"
        );
        assert!(!is_rollback(Some(v(5, 7)), v(5, 7)), "the same");
        assert!(!is_rollback(Some(v(5, 7)), v(5, 8)), "newer");
        assert!(is_rollback(Some(v(5, 7)), v(5, 6)), "put back");
        assert!(
            is_rollback(Some(v(0, 7)), v(0, 3)),
            "rows of earlier versions"
        );
    }

    #[test]
    fn a_newer_push_may_lower_or_restart_the_generation_but_an_older_one_may_not_come_back() {
        assert!(!is_rollback(Some(v(5, 40)), v(9, 1)), "a table made anew");
        assert!(
            !is_rollback(Some(v(5, 40)), v(9, 4)),
            "a push over a restore"
        );
        assert!(
            !is_rollback(Some(v(0, 40)), v(9, 1)),
            "the first push after an upgrade"
        );
        assert!(
            is_rollback(Some(v(9, 1)), v(5, 40)),
            "a backup from before the push"
        );
        assert!(
            is_rollback(Some(v(9, 1)), v(0, 40)),
            "a backup from before the upgrade"
        );
    }

    #[test]
    fn a_push_is_newer_than_the_store_and_what_the_pusher_saw_whatever_the_clock() {
        assert_eq!(push_epoch(1_000, None, None), 1_000);
        assert_eq!(push_epoch(1_000, Some(0), Some(v(0, 9))), 1_000);
        assert_eq!(
            push_epoch(1_000, Some(5_000), None),
            5_001,
            "a clock behind"
        );
        assert_eq!(push_epoch(1_000, Some(5_000), Some(v(7_000, 2))), 7_001);
        assert_eq!(push_epoch(1_000, None, Some(v(i64::MAX, 2))), i64::MAX);
        for (stored, seen) in [(Some(5_000), Some(v(7_000, 2))), (None, Some(v(3, 9)))] {
            let pushed = v(push_epoch(1_000, stored, seen), 1);
            assert!(!is_rollback(seen, pushed));
        }
    }

    #[test]
    fn the_rollback_error_names_the_fix_and_holds_no_token() {
        let key = crate::fleet::crypto::generate();
        let env = |k: &str| (k == crate::fleet::crypto::KEY_ENV).then(|| key.clone());
        let fleet = Fleet::resolve(
            Some(crate::fleet::DatabaseUrl::new("postgres://bot:s3cret@db/x")),
            &crate::fleet::StoreConfig::default(),
            std::path::Path::new("/c/config.toml"),
            &env,
        )
        .unwrap()
        .unwrap();
        let shared = crate::fleet::refresh::tests::shared("sk-ant-ort01-r", 10, &[], None);
        let e = rolled_back(&fleet, &shared, v(0, 9));
        let text = e.to_string();
        assert!(is_rolled_back(&e), "{text}");
        assert!(
            text.contains("generation 4, older than generation 9")
                && text.contains("`tokenkeeper fleet push --force`")
                && !text.contains("sk-ant-")
                && !text.contains("s3cret"),
            "{text}"
        );
        let other = Error::Fleet(FleetError::Config("the store has no table".into()));
        assert!(!is_rolled_back(&other));
    }
}
