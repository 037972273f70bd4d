//! One way to take the locks around a login, for every caller (the refresh, the fleet's copy of
//! a login, `fleet push`): our own lock, then the provider's refresh locks in order, then its
//! save lock of whatever kind. Every directory lock is noted in our own lock the moment it is
//! made, so a successor can remove it should we be killed, and every lock failure becomes an
//! [`Error`] here, in one place, so a busy, blocked or unwritable lock reads the same whichever
//! command met it.

use crate::error::Error;
use crate::lock::dir_lock::{DirLock, DirLockSpec, LockError, OwnerRecord};
use crate::lock::own_lock::{OwnLock, OwnLockError};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock a CLI writes its credentials under, which our writes take too.
#[derive(Clone, Debug)]
pub enum SaveLock {
    /// The CLI takes no lock: an atomic write is all the cooperation there is.
    None,
    /// A lock directory, as Claude Code's `.storage-write.lock`.
    Dir(DirLockSpec),
    /// `flock`s taken in this order, each on a file created if missing: the first waited for,
    /// the later ones polled (as Codex CLI does).
    Flocks(Vec<PathBuf>),
}

/// How a caller's lock failures read: how long it waited (said in messages), and the error for
/// a lock that cannot be made at all, which names the folder the caller needs to write in.
pub struct Waits<'a> {
    pub timeout: Duration,
    pub not_writable: &'a dyn Fn(PathBuf, io::Error) -> Error,
}

impl Waits<'_> {
    /// The error for a lock (`what`, at `path`) that could not be taken.
    pub fn error(&self, what: &'static str, path: PathBuf, e: LockError) -> Error {
        let waited = crate::duration::human(self.timeout);
        match e {
            LockError::Timeout { holder } => Error::LockTimeout {
                what,
                lock: path,
                waited,
                holder,
            },
            LockError::Blocked { why, fix } => Error::LockBlocked {
                what,
                lock: path,
                waited,
                why,
                fix,
            },
            LockError::Interrupted => Error::Interrupted { what, lock: path },
            // A `flock` reports its timeout and its signal as I/O errors of these kinds.
            LockError::Io(e) if e.kind() == io::ErrorKind::TimedOut => Error::LockTimeout {
                what,
                lock: path,
                waited,
                holder: String::new(),
            },
            LockError::Io(e) if e.kind() == io::ErrorKind::Interrupted => {
                Error::Interrupted { what, lock: path }
            }
            LockError::Io(source) => (self.not_writable)(path, source),
        }
    }

    /// Takes our own lock (the sidecar beside the credentials), waiting until `deadline`;
    /// `on_wait` runs once after a second of waiting.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub fn own(
        &self,
        sidecar: &Path,
        deadline: Instant,
        on_wait: &mut dyn FnMut(),
    ) -> Result<OwnLock, Error> {
        self.own_unless(sidecar, deadline, on_wait, &mut || false)?
            .ok_or_else(|| self.own_timeout(sidecar))
    }

    /// Our own lock, unless `settled` says (between looks at the busy lock) that its holder has
    /// already done what we wanted it for: then `Ok(None)`.
    pub fn own_unless(
        &self,
        sidecar: &Path,
        deadline: Instant,
        on_wait: &mut dyn FnMut(),
        settled: &mut dyn FnMut() -> bool,
    ) -> Result<Option<OwnLock>, Error> {
        OwnLock::acquire_unless(sidecar, deadline, on_wait, settled).map_err(|e| match e {
            OwnLockError::Timeout => self.own_timeout(sidecar),
            OwnLockError::Io(source) => (self.not_writable)(sidecar.to_path_buf(), source),
        })
    }

    fn own_timeout(&self, sidecar: &Path) -> Error {
        self.error(
            "tokenkeeper's lock",
            sidecar.to_path_buf(),
            LockError::Timeout {
                holder: String::new(),
            },
        )
    }

    /// Takes the provider's refresh locks in order, noting each in `own`, then writes the
    /// owner record the first one names (so its CLI can take over should we be killed). A lock
    /// marked best-effort that cannot be made at all is gone without.
    pub fn refresh_locks(
        &self,
        specs: &[DirLockSpec],
        deadline: Instant,
        own: &OwnLock,
    ) -> Result<RefreshLocks, Error> {
        let mut held = RefreshLocks(Vec::new());
        for spec in specs {
            match acquire_noted(spec, deadline, own) {
                Ok(lock) => held.0.push(lock),
                Err(LockError::Io(e)) if spec.best_effort => {
                    tracing::debug!(
                        "going on without {} ({}): {e}",
                        spec.what,
                        spec.path.display()
                    );
                }
                Err(e) => return Err(self.error(spec.what, spec.path.clone(), e)),
            }
        }
        write_owner_record(specs, &held.0);
        Ok(held)
    }

    /// [`save_lock`], its failure as an [`Error`].
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub fn save_lock(
        &self,
        lock: SaveLock,
        deadline: Instant,
        own: &OwnLock,
    ) -> Result<SaveHeld, Error> {
        save_lock(lock, deadline, own).map_err(|f| self.error(f.what, f.path, f.error))
    }
}

/// The refresh locks of one round. Dropping them releases them in the reverse of the order they
/// were taken.
#[derive(Debug)]
pub struct RefreshLocks(Vec<DirLock>);

impl Drop for RefreshLocks {
    fn drop(&mut self) {
        while let Some(lock) = self.0.pop() {
            drop(lock);
        }
    }
}

/// The CLI's write lock, held while we write.
#[derive(Debug)]
pub enum SaveHeld {
    Nothing,
    Dir(#[allow(dead_code)] DirLock),
    Flocks(#[allow(dead_code)] Vec<File>),
}

/// A save lock that could not be taken: which, where, and why.
#[derive(Debug)]
pub struct LockFailure {
    pub what: &'static str,
    pub path: PathBuf,
    pub error: LockError,
}

impl LockFailure {
    /// As an I/O error, for a save that retries on some kinds: `TimedOut` when the wait used its
    /// whole deadline, `Interrupted` when a signal asked us to stop.
    pub fn into_io(self) -> io::Error {
        match self.error {
            LockError::Io(e) => e,
            e @ LockError::Interrupted => io::Error::new(
                io::ErrorKind::Interrupted,
                e.describe(self.what, &self.path),
            ),
            e @ (LockError::Timeout { .. } | LockError::Blocked { .. }) => {
                io::Error::new(io::ErrorKind::TimedOut, e.describe(self.what, &self.path))
            }
        }
    }
}

/// Takes the lock the CLI writes its credentials under, whatever its kind. For `flock`s
/// (Codex), the first is waited for until `deadline`; the later ones are polled for at most
/// 5 s, as Codex does.
pub fn save_lock(
    lock: SaveLock,
    deadline: Instant,
    own: &OwnLock,
) -> Result<SaveHeld, LockFailure> {
    match lock {
        SaveLock::None => Ok(SaveHeld::Nothing),
        SaveLock::Dir(spec) => acquire_noted(&spec, deadline, own)
            .map(SaveHeld::Dir)
            .map_err(|error| LockFailure {
                what: spec.what,
                path: spec.path.clone(),
                error,
            }),
        SaveLock::Flocks(paths) => {
            let mut held = Vec::with_capacity(paths.len());
            for (i, path) in paths.iter().enumerate() {
                let until = if i == 0 {
                    deadline
                } else {
                    deadline.min(Instant::now() + Duration::from_secs(5))
                };
                let file =
                    crate::lock::flock::open_locked(path, until).map_err(|e| LockFailure {
                        what: "the CLI's write lock",
                        path: path.clone(),
                        error: LockError::Io(e),
                    })?;
                held.push(file);
            }
            Ok(SaveHeld::Flocks(held))
        }
    }
}

/// Takes one of Claude's lock directories, saying so when it is busy, and notes it in our own
/// lock at once so that a successor can remove it should we be killed while holding it.
fn acquire_noted(
    spec: &DirLockSpec,
    deadline: Instant,
    own: &OwnLock,
) -> Result<DirLock, LockError> {
    DirLock::acquire(
        spec,
        deadline,
        &mut |spec, holder| {
            tracing::info!(
                "waiting for {} ({}){holder}",
                spec.what,
                spec.path.display()
            );
        },
        &mut |spec, identity| own.note_taken(&spec.path, identity, spec.owner_record.as_deref()),
    )
}

fn write_owner_record(specs: &[DirLockSpec], held: &[DirLock]) {
    let Some((spec, lock)) = specs.first().zip(held.first()) else {
        return;
    };
    let (Some(record), Some(birth)) = (&spec.owner_record, lock.identity().birth_ms()) else {
        return;
    };
    let companion = spec.takeover_with.as_deref().and_then(|c| {
        held.iter()
            .find(|l| l.path() == c)
            .and_then(|l| l.identity().birth_ms())
    });
    let owner = OwnerRecord::for_pid(std::process::id(), birth, companion);
    if let Err(e) = owner.write(record) {
        tracing::debug!("could not write owner record {}: {e}", record.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::own_lock::sidecar_path;

    fn not_writable(path: PathBuf, source: io::Error) -> Error {
        Error::Inaccessible {
            action: "create a lock at",
            path,
            source,
            hint: String::new(),
        }
    }

    /// Waits that give up after 50 ms.
    fn quick(not_writable: &dyn Fn(PathBuf, io::Error) -> Error) -> Waits<'_> {
        Waits {
            timeout: Duration::from_millis(50),
            not_writable,
        }
    }

    #[test]
    fn a_busy_flock_save_lock_is_a_lock_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let own = OwnLock::acquire(&sidecar_path(dir.path()), Instant::now(), &mut || {}).unwrap();
        let path = dir.path().join("auth.lock");
        let _other = crate::lock::flock::open_locked(&path, Instant::now()).unwrap();
        let w = quick(&not_writable);
        let soon = Instant::now() + Duration::from_millis(50);
        let err = w
            .save_lock(SaveLock::Flocks(vec![path.clone()]), soon, &own)
            .unwrap_err();
        assert!(
            matches!(&err, Error::LockTimeout { lock, .. } if *lock == path),
            "{err:?}"
        );
        let failure = save_lock(SaveLock::Flocks(vec![path]), soon, &own).unwrap_err();
        assert_eq!(failure.into_io().kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_busy_own_lock_is_a_lock_timeout_naming_the_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = sidecar_path(dir.path());
        let _first = OwnLock::acquire(&sidecar, Instant::now(), &mut || {}).unwrap();
        let w = quick(&not_writable);
        let soon = Instant::now() + Duration::from_millis(50);
        let err = w.own(&sidecar, soon, &mut || {}).unwrap_err();
        assert!(
            matches!(&err, Error::LockTimeout { what: "tokenkeeper's lock", lock, .. } if *lock == sidecar),
            "{err:?}"
        );
    }

    #[test]
    fn refresh_locks_are_noted_and_released_in_reverse() {
        let dir = tempfile::tempdir().unwrap();
        let own = OwnLock::acquire(&sidecar_path(dir.path()), Instant::now(), &mut || {}).unwrap();
        let spec = |name: &str| DirLockSpec {
            path: dir.path().join(name),
            stale: Duration::from_secs(10),
            owner_record: None,
            takeover_with: None,
            best_effort: false,
            what: "a lock",
        };
        let w = quick(&not_writable);
        let soon = Instant::now() + Duration::from_millis(50);
        let held = w
            .refresh_locks(&[spec("a.lock"), spec("b.lock")], soon, &own)
            .unwrap();
        assert!(dir.path().join("a.lock").is_dir() && dir.path().join("b.lock").is_dir());
        let noted = std::fs::read_to_string(sidecar_path(dir.path())).unwrap();
        assert!(
            noted.contains("a.lock") && noted.contains("b.lock"),
            "{noted}"
        );
        drop(held);
        assert!(!dir.path().join("a.lock").exists() && !dir.path().join("b.lock").exists());
    }
}
