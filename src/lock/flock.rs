//! Waiting for an exclusive file lock (`flock` on Unix, `LockFileEx` on Windows, through std)
//! with a deadline: std offers only "wait forever" and "try once".

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Locks `file` exclusively, trying until `deadline`; `on_wait` is called once after a second of
/// waiting. `Ok(false)` when the deadline passed first; an `Interrupted` error when a signal told
/// this process to stop.
pub fn lock_until(file: &File, deadline: Instant, on_wait: &mut dyn FnMut()) -> io::Result<bool> {
    Ok(matches!(
        lock_unless(file, deadline, on_wait, &mut || false)?,
        Waited::Locked
    ))
}

/// How a wait for a lock ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    Locked,
    /// `settled` said there is nothing left to wait for.
    Settled,
    TimedOut,
}

/// First and longest pause between two looks at a busy lock. A holder typically keeps it for
/// one token request (a few hundred ms); a waiter that slept 100 ms at a time would add a good
/// part of that to every wait, so the pause stays short. A look costs one system call (and
/// `settled`'s check).
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const LONGEST_PAUSE: Duration = Duration::from_millis(20);

/// As [`lock_until`], but between looks at the lock asks `settled` whether the wait is still
/// needed (another process has done the work the lock is for): then it stops without the lock.
pub fn lock_unless(
    file: &File,
    deadline: Instant,
    on_wait: &mut dyn FnMut(),
    settled: &mut dyn FnMut() -> bool,
) -> io::Result<Waited> {
    let started = Instant::now();
    let mut announced = false;
    let mut pause = FIRST_PAUSE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Waited::Locked),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        if crate::lock::interrupt::stop_requested() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "stopped by a signal while waiting for a lock",
            ));
        }
        if settled() {
            return Ok(Waited::Settled);
        }
        if Instant::now() >= deadline {
            return Ok(Waited::TimedOut);
        }
        if !announced && started.elapsed() >= Duration::from_secs(1) {
            on_wait();
            announced = true;
        }
        thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Opens (creating it, mode 0600, when missing) and locks the file at `path`; a `TimedOut`
/// error when another process holds it past `deadline`.
pub fn open_locked(path: &Path, deadline: Instant) -> io::Result<File> {
    let file = crate::lock::lock_file::open_private(path)?;
    if lock_until(&file, deadline, &mut || {
        tracing::info!("waiting for the lock {}", path.display());
    })? {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{} is held by another process", path.display()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_ends_without_the_lock_once_settled() {
        let (_dir, path) = crate::testing::temp_path("l");
        let _held = open_locked(&path, Instant::now()).unwrap();
        let other = crate::lock::lock_file::open_private(&path).unwrap();
        let mut looks = 0;
        let waited = lock_unless(
            &other,
            Instant::now() + Duration::from_secs(10),
            &mut || {},
            &mut || {
                looks += 1;
                looks == 3
            },
        )
        .unwrap();
        assert_eq!(waited, Waited::Settled);
        assert_eq!(looks, 3);
    }

    #[test]
    fn waits_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let first = open_locked(&path, Instant::now()).unwrap();
        let soon = Instant::now() + Duration::from_millis(50);
        let err = open_locked(&path, soon).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(first);
        assert!(open_locked(&path, Instant::now()).is_ok());
    }
}
