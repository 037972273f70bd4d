//! Leases: a run started with `exec --inject env` holds the access token it was handed, and a
//! refresh revokes that token at once. So such a run holds a shared `flock` on
//! `<folder>/.tokenkeeper-lease.lock` for its lifetime, and a refresh holds the same lock
//! exclusively from its decision to refresh until the new tokens are saved: a run never starts
//! with a token that is about to be replaced, and no refresh happens under a running lease
//! unless the token would expire anyway.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Below this much life left, a refresh goes ahead despite leases: the token would expire under
/// the runs anyway (Claude Code's own refresh margin).
pub const OVERRIDE_BELOW: Duration = Duration::from_secs(300);

pub fn lease_path(folder: &Path) -> PathBuf {
    folder.join(".tokenkeeper-lease.lock")
}

fn open(folder: &Path) -> io::Result<File> {
    crate::lock::lock_file::open_private(&lease_path(folder))
}

/// A shared lease, held by a run for its lifetime. Dropped (or the process gone), it is released.
#[derive(Debug)]
pub struct Lease(#[allow(dead_code)] File);

/// Takes a shared lease, waiting (until `deadline`) for a refresh in progress to finish.
pub fn take_shared(folder: &Path, deadline: Instant) -> io::Result<Option<Lease>> {
    let file = open(folder)?;
    loop {
        match file.try_lock_shared() {
            Ok(()) => return Ok(Some(Lease(file))),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Held by a refresh: no lease can start until it is dropped.
#[derive(Debug)]
pub struct Exclusive(#[allow(dead_code)] File);

/// `Ok(None)` when runs hold leases right now.
pub fn try_exclusive(folder: &Path) -> io::Result<Option<Exclusive>> {
    let file = open(folder)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Exclusive(file))),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_share_and_exclude_refreshes() {
        let dir = tempfile::tempdir().unwrap();
        let soon = || Instant::now() + Duration::from_millis(100);
        let a = take_shared(dir.path(), soon()).unwrap().unwrap();
        let b = take_shared(dir.path(), soon()).unwrap().unwrap();
        assert!(try_exclusive(dir.path()).unwrap().is_none());
        drop((a, b));
        let excl = try_exclusive(dir.path()).unwrap().unwrap();
        assert!(take_shared(dir.path(), soon()).unwrap().is_none());
        drop(excl);
        assert!(take_shared(dir.path(), soon()).unwrap().is_some());
    }
}
