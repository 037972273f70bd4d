//! tokenkeeper's own lock: an exclusive `flock` on a sidecar file beside the credentials, so that
//! exactly one tokenkeeper process refreshes a login at a time. The kernel drops it when its
//! holder dies, however it dies. While held, the sidecar also records which of Claude's lock
//! directories the holder has taken, so the next holder can remove those a killed holder left.

use crate::lock::dir_lock::{self, Identity};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug)]
pub struct OwnLock {
    file: File,
    path: PathBuf,
    held: std::sync::Mutex<Vec<(PathBuf, Identity, Option<PathBuf>)>>,
    /// The previous holder was killed while holding lock directories.
    pub predecessor_killed: bool,
}

#[derive(Debug)]
pub enum OwnLockError {
    Timeout,
    Io(io::Error),
}

#[derive(Serialize, Deserialize, Default)]
struct HeldRecord {
    pid: u32,
    dirs: Vec<(PathBuf, Identity, Option<PathBuf>)>,
}

/// The sidecar for a credentials folder.
pub fn sidecar_path(folder: &Path) -> PathBuf {
    folder.join(".tokenkeeper.lock")
}

impl OwnLock {
    /// Takes the lock, waiting until `deadline`; `on_wait` is called once after a second.
    #[cfg(test)]
    pub fn acquire(
        path: &Path,
        deadline: Instant,
        on_wait: &mut dyn FnMut(),
    ) -> Result<OwnLock, OwnLockError> {
        Self::acquire_unless(path, deadline, on_wait, &mut || false)?.ok_or(OwnLockError::Timeout)
    }

    /// Takes the lock, waiting until `deadline` (`on_wait` is called once after a second); but
    /// while another process holds the lock, `settled` is asked between looks whether that
    /// process has already done what we wanted the lock for (a refresh): then `Ok(None)`, and we
    /// never queue behind the others for nothing.
    pub fn acquire_unless(
        path: &Path,
        deadline: Instant,
        on_wait: &mut dyn FnMut(),
        settled: &mut dyn FnMut() -> bool,
    ) -> Result<Option<OwnLock>, OwnLockError> {
        use crate::lock::flock::{Waited, lock_unless};
        let file = crate::lock::lock_file::open_private(path).map_err(OwnLockError::Io)?;
        match lock_unless(&file, deadline, on_wait, settled).map_err(OwnLockError::Io)? {
            Waited::Locked => {}
            Waited::Settled => return Ok(None),
            Waited::TimedOut => return Err(OwnLockError::Timeout),
        }
        let mut lock = OwnLock {
            file,
            path: path.to_path_buf(),
            held: std::sync::Mutex::new(Vec::new()),
            predecessor_killed: false,
        };
        lock.predecessor_killed = lock.reap_left_behind();
        Ok(Some(lock))
    }

    /// Notes a lock directory just taken, so a successor can remove it if we are killed.
    pub fn note_taken(&self, path: &Path, identity: Identity, owner_record: Option<&Path>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(p, _, _)| p != path);
        held.push((
            path.to_path_buf(),
            identity,
            owner_record.map(Path::to_path_buf),
        ));
        let record = HeldRecord {
            pid: std::process::id(),
            dirs: held.clone(),
        };
        if let Err(e) = self.rewrite(&serde_json::to_vec(&record).unwrap_or_default()) {
            tracing::debug!("could not note held locks in {}: {e}", self.path.display());
        }
    }

    pub fn clear_held(&self) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let _ = self.rewrite(b"");
    }

    /// Writes the record over the old one, then cuts the file to its length: a kill in between
    /// leaves the whole new record (its first line) followed by old bytes, never nothing.
    fn rewrite(&self, bytes: &[u8]) -> io::Result<()> {
        let mut f = &self.file;
        f.seek(io::SeekFrom::Start(0))?;
        let mut line = bytes.to_vec();
        if !line.is_empty() {
            line.push(b'\n');
        }
        f.write_all(&line)?;
        f.set_len(line.len() as u64)
    }

    /// A previous holder that died holding Claude's lock directories left them behind; they are
    /// still exactly the directories it made (same inode and birth time), so remove them now
    /// rather than make everyone wait for them to go stale.
    fn reap_left_behind(&self) -> bool {
        let mut text = Vec::new();
        let mut f = &self.file;
        if f.seek(io::SeekFrom::Start(0)).is_err() || f.read_to_end(&mut text).is_err() {
            return false;
        }
        if text.is_empty() {
            return false;
        }
        let first_line = text.split(|&b| b == b'\n').next().unwrap_or_default();
        if let Ok(record) = serde_json::from_slice::<HeldRecord>(first_line) {
            for (path, identity, owner) in record.dirs.iter().rev() {
                if identity.is_certain() && Identity::of(path).ok() == Some(*identity) {
                    tracing::info!(
                        "removing {} left behind by tokenkeeper pid {}, which was killed",
                        path.display(),
                        record.pid
                    );
                    if let Some(owner) = owner
                        && dir_lock::OwnerRecord::read(owner).is_some_and(|o| o.pid == record.pid)
                    {
                        let _ = fs::remove_file(owner);
                    }
                    let _ = fs::remove_dir(path);
                }
            }
        }
        self.clear_held();
        true
    }
}

impl Drop for OwnLock {
    /// Every lock directory is released by now (they are dropped first); forget them.
    fn drop(&mut self) {
        self.clear_held();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = sidecar_path(dir.path());
        let soon = || Instant::now() + std::time::Duration::from_millis(200);
        let first = OwnLock::acquire(&path, soon(), &mut || {}).unwrap();
        assert!(matches!(
            OwnLock::acquire(&path, soon(), &mut || {}),
            Err(OwnLockError::Timeout)
        ));
        drop(first);
        OwnLock::acquire(&path, soon(), &mut || {}).unwrap();
    }
}
