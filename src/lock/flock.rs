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
    let started = Instant::now();
    let mut announced = false;
    let mut pause = Duration::from_millis(5);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        if crate::lock::interrupt::stop_requested() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "stopped by a signal while waiting for a lock",
            ));
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        if !announced && started.elapsed() >= Duration::from_secs(1) {
            on_wait();
            announced = true;
        }
        thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(100));
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
