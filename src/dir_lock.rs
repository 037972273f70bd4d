//! Claude Code's cross-process locks, taken exactly as Claude takes them: npm proper-lockfile's
//! directory locks. `mkdir` takes a lock, the holder touches its mtime while it holds it, a lock
//! whose mtime is older than its stale time may be removed and taken, `rmdir` releases it.
//!
//! We touch every 2 s (Claude's oldest release calls a lock stale after 10 s), remove only
//! directories we created (checked by inode and birth time, not by name), and take over from a
//! holder that provably died: its owner record names a process that is gone and the lock's mtime
//! has stood still for longer than a live holder would let it.

use crate::interrupt;
use serde_json::json;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a lock's mtime must stand still, with its owner gone, before we take it over
/// (Claude's own rule: one and a half of its 5 s update interval).
pub const TAKEOVER_AFTER: Duration = Duration::from_millis(7500);
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct DirLockSpec {
    pub path: PathBuf,
    /// A lock older than this is abandoned (proper-lockfile's `stale`).
    pub stale: Duration,
    /// Where the holder writes its pid, so waiters can tell a dead holder from a slow one.
    pub owner_record: Option<PathBuf>,
    /// For messages: "Claude Code's refresh lock".
    pub what: &'static str,
}

/// Which directory we created: a lock removed and re-made by someone else has another identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    /// Birth time in ns, where the file system records one.
    pub born_ns: Option<i128>,
}

impl Identity {
    pub fn of(path: &Path) -> io::Result<Identity> {
        let meta = fs::symlink_metadata(path)?;
        let born_ns = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128);
        Ok(Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            born_ns,
        })
    }

    /// Only a birth time makes an identity safe to act on: inode numbers are reused at once.
    pub fn is_certain(&self) -> bool {
        self.born_ns.is_some()
    }
}

#[derive(Debug)]
pub enum LockError {
    /// Still held by another process at the deadline; `holder` describes it when known.
    Timeout {
        holder: String,
    },
    Io(io::Error),
}

/// A held directory lock. Dropping it stops the heartbeat and removes the directory (and our
/// owner record), but only if they are still ours.
#[derive(Debug)]
pub struct DirLock {
    spec: DirLockSpec,
    identity: Identity,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<thread::JoinHandle<()>>,
}

impl DirLock {
    /// Takes the lock, waiting until `deadline`. `on_wait` is called once, when the lock has been
    /// busy for a second, with a description of the holder.
    /// `on_taken` runs right after the directory is made, before anything else can fail, so
    /// the caller can note it for cleanup should this process be killed.
    pub fn acquire(
        spec: &DirLockSpec,
        deadline: Instant,
        on_wait: &mut dyn FnMut(&DirLockSpec, &str),
        on_taken: &mut dyn FnMut(&DirLockSpec, Identity),
    ) -> Result<DirLock, LockError> {
        let started = Instant::now();
        let mut announced = false;
        // (mtime we saw, when we first saw it): how long the holder has left it untouched.
        let mut still: Option<(SystemTime, Instant)> = None;
        loop {
            match fs::create_dir(&spec.path) {
                Ok(()) => return Self::hold(spec, on_taken).map_err(LockError::Io),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(LockError::Io(e)),
            }
            let mtime = match fs::symlink_metadata(&spec.path).and_then(|m| m.modified()) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(LockError::Io(e)),
            };
            let age = SystemTime::now()
                .duration_since(mtime)
                .unwrap_or(Duration::ZERO);
            if age > spec.stale {
                tracing::info!(
                    "removing {} ({}), abandoned {} ago",
                    spec.path.display(),
                    spec.what,
                    crate::duration::human(age)
                );
                let _ = fs::remove_dir(&spec.path);
                continue;
            }
            let owner = spec.owner_record.as_deref().and_then(OwnerRecord::read);
            match still {
                Some((seen, _)) if seen == mtime => {}
                _ => still = Some((mtime, Instant::now())),
            }
            let untouched = still.map_or(Duration::ZERO, |(_, since)| since.elapsed());
            if let Some(owner) = &owner
                && !owner.is_alive()
                && untouched >= TAKEOVER_AFTER
            {
                tracing::info!(
                    "taking over {} ({}) from pid {}, which is gone",
                    spec.path.display(),
                    spec.what,
                    owner.pid
                );
                let _ = fs::remove_dir(&spec.path);
                continue;
            }
            let holder = owner.map_or_else(String::new, |o| format!(", held by pid {}", o.pid));
            if Instant::now() >= deadline {
                return Err(LockError::Timeout { holder });
            }
            if !announced && started.elapsed() >= Duration::from_secs(1) {
                on_wait(spec, &holder);
                announced = true;
            }
            thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    fn hold(
        spec: &DirLockSpec,
        on_taken: &mut dyn FnMut(&DirLockSpec, Identity),
    ) -> io::Result<DirLock> {
        let identity = Identity::of(&spec.path)?;
        on_taken(spec, identity);
        interrupt::register_dir(&spec.path, identity, spec.owner_record.as_deref());
        if let Some(record) = &spec.owner_record
            && let Err(e) = OwnerRecord::mine().write(record)
        {
            tracing::debug!("could not write owner record {}: {e}", record.display());
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let path = spec.path.clone();
        let heartbeat = thread::Builder::new()
            .name("lock-heartbeat".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                    if let Err(e) = touch(&path) {
                        tracing::debug!("could not touch {}: {e}", path.display());
                    }
                }
            })?;
        Ok(DirLock {
            spec: spec.clone(),
            identity,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        })
    }

    pub fn path(&self) -> &Path {
        &self.spec.path
    }

    pub fn identity(&self) -> Identity {
        self.identity
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        release(
            &self.spec.path,
            self.identity,
            self.spec.owner_record.as_deref(),
        );
        interrupt::unregister_dir(&self.spec.path);
    }
}

/// Removes a lock directory (and our owner record) if it is still the one we created. Also used
/// on a signal and to clean up after a tokenkeeper that was killed while holding locks.
pub fn release(path: &Path, identity: Identity, owner_record: Option<&Path>) -> bool {
    if Identity::of(path).ok() != Some(identity) {
        return false;
    }
    if let Some(record) = owner_record
        && OwnerRecord::read(record).is_some_and(|o| o.pid == std::process::id())
    {
        let _ = fs::remove_file(record);
    }
    fs::remove_dir(path).is_ok()
}

fn touch(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.set_modified(SystemTime::now())
}

/// The holder's pid and start time, so a waiter can prove the holder is gone even if the pid has
/// been reused.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerRecord {
    pub pid: u32,
    pub start: Option<u64>,
}

impl OwnerRecord {
    pub fn mine() -> OwnerRecord {
        let pid = std::process::id();
        OwnerRecord {
            pid,
            start: process_start(pid),
        }
    }

    pub fn read(path: &Path) -> Option<OwnerRecord> {
        let v: serde_json::Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        Some(OwnerRecord {
            pid: u32::try_from(v.get("pid")?.as_u64()?).ok()?,
            start: v.get("startTime").and_then(serde_json::Value::as_u64),
        })
    }

    pub fn write(&self, path: &Path) -> io::Result<()> {
        let body = json!({ "pid": self.pid, "startTime": self.start });
        crate::credentials_file::remove_abandoned_temps(path);
        crate::credentials_file::write_atomic(path, body.to_string().as_bytes())
    }

    /// False only when the process is provably gone: no such pid, or a pid reused by a process
    /// that started at another time.
    pub fn is_alive(&self) -> bool {
        if !pid_exists(self.pid) {
            return false;
        }
        match (self.start, process_start(self.pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => true,
        }
    }
}

pub fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), where /proc
/// exists.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, stale: Duration) -> DirLockSpec {
        DirLockSpec {
            path: dir.join(".oauth_refresh.lock"),
            stale,
            owner_record: Some(dir.join(".oauth_refresh.lock.owner")),
            what: "test lock",
        }
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn takes_and_releases_a_lock_with_owner_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), Duration::from_secs(60));
        let lock = DirLock::acquire(&s, soon(100), &mut |_, _| {}, &mut |_, _| {}).unwrap();
        assert!(s.path.is_dir());
        let owner = OwnerRecord::read(s.owner_record.as_ref().unwrap()).unwrap();
        assert_eq!(owner.pid, std::process::id());
        assert!(owner.is_alive());
        drop(lock);
        assert!(!s.path.exists());
        assert!(!s.owner_record.as_ref().unwrap().exists());
    }

    #[test]
    fn a_live_lock_times_out_and_a_stale_one_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), Duration::from_secs(60));
        fs::create_dir(&s.path).unwrap();
        assert!(matches!(
            DirLock::acquire(&s, soon(300), &mut |_, _| {}, &mut |_, _| {}),
            Err(LockError::Timeout { .. })
        ));
        assert!(s.path.exists(), "a live lock is never removed");
        let old = SystemTime::now() - Duration::from_secs(61);
        fs::File::open(&s.path).unwrap().set_modified(old).unwrap();
        let lock = DirLock::acquire(&s, soon(300), &mut |_, _| {}, &mut |_, _| {}).unwrap();
        drop(lock);
    }

    #[test]
    fn release_leaves_a_lock_that_someone_else_remade() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), Duration::from_secs(60));
        let lock = DirLock::acquire(&s, soon(100), &mut |_, _| {}, &mut |_, _| {}).unwrap();
        let mine = lock.identity();
        std::mem::forget(lock);
        fs::remove_dir(&s.path).unwrap();
        fs::create_dir(&s.path).unwrap();
        if mine.is_certain() {
            assert!(!release(&s.path, mine, None));
            assert!(s.path.exists());
        }
    }

    #[test]
    fn dead_pids_are_recognised() {
        assert!(OwnerRecord::mine().is_alive());
        let gone = OwnerRecord {
            pid: 0x3fff_fff0,
            start: None,
        };
        assert!(!gone.is_alive());
        let reused = OwnerRecord {
            pid: std::process::id(),
            start: Some(process_start(std::process::id()).unwrap() + 1),
        };
        assert!(!reused.is_alive());
    }
}
