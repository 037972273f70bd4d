//! Claude Code's cross-process locks, taken exactly as Claude takes them: npm proper-lockfile's
//! directory locks. `mkdir` takes a lock, the holder touches its mtime while it holds it, a lock
//! whose mtime is older than its stale time may be removed and taken, `rmdir` releases it.
//!
//! We touch every 2 s (Claude's oldest release calls a lock stale after 10 s), remove only
//! directories we created (checked by inode and birth time, not by name), and take over from a
//! holder that provably died: its owner record names a process that is gone and the lock's mtime
//! has stood still for longer than a live holder would let it.

use crate::lock::interrupt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a lock's mtime must stand still, with its owner gone, before we take it over
/// (Claude's own rule: one and a half of its 5 s update interval).
pub const TAKEOVER_AFTER: Duration = Duration::from_millis(7500);
const POLL: Duration = Duration::from_millis(100);
/// Retries without a pause in a row (each after progress: a lock removed, a race lost) before
/// a pause all the same.
const QUICK_RETRIES: u32 = 20;

#[derive(Clone, Debug)]
pub struct DirLockSpec {
    pub path: PathBuf,
    /// A lock older than this is abandoned (proper-lockfile's `stale`).
    pub stale: Duration,
    /// Where the holder writes its [`OwnerRecord`], so waiters can tell a dead holder from a
    /// slow one.
    pub owner_record: Option<PathBuf>,
    /// A lock the same holder takes next, removed with this one on a takeover when the owner
    /// record says the dead holder made it (Claude's legacy lock).
    pub takeover_with: Option<PathBuf>,
    /// Go on without this lock when it cannot be made at all (not when it is busy), as Claude
    /// does for its legacy lock.
    pub best_effort: bool,
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
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        // Without inode numbers, the birth time alone tells our directory from another.
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        Ok(Identity { dev, ino, born_ns })
    }

    /// Birth time in epoch ms, computed as Claude computes it (`sec * 1000 + nsec / 1e6`).
    pub fn birth_ms(&self) -> Option<f64> {
        let ns = self.born_ns?;
        let (secs, nanos) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
        Some(secs as f64 * 1000.0 + nanos as f64 / 1e6)
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
    /// Something at the lock's path that no live process holds and that we cannot remove kept
    /// the lock from us until the deadline: `why` says what (after the path), `fix` the command
    /// that clears it.
    Blocked {
        why: String,
        fix: String,
    },
    /// A signal asked this process to stop while it waited.
    Interrupted,
    Io(io::Error),
}

impl LockError {
    /// One line for a message about the lock at `path`, `what` naming it.
    pub fn describe(&self, what: &str, path: &Path) -> String {
        match self {
            LockError::Timeout { holder } => {
                format!("{what} ({}) stayed busy{holder}", path.display())
            }
            LockError::Blocked { why, fix } => {
                format!("{what} is blocked: {} {why}; {fix}", path.display())
            }
            LockError::Interrupted => format!("stopped by a signal while waiting for {what}"),
            LockError::Io(e) => format!("{what} ({}): {e}", path.display()),
        }
    }
}

/// Why a lock's path is blocked, and the fix: (`why`, `fix`).
type Blockage = (String, String);

/// Removes an abandoned lock (a directory older than its stale time). Anything else at the path,
/// or a lock we may not remove, is a blockage a person must clear.
fn remove_abandoned(
    spec: &DirLockSpec,
    meta: &fs::Metadata,
    age: Duration,
) -> Result<(), Blockage> {
    if !meta.is_dir() {
        return Err(not_a_lock(spec, meta));
    }
    match fs::remove_dir(&spec.path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err((
            format!(
                "was abandoned {} ago but cannot be removed ({}{})",
                crate::duration::human(age),
                crate::error::io_reason(&e),
                owned_by_other(meta),
            ),
            format!(
                "if no process uses it, remove it with `rm -r {}`",
                spec.path.display()
            ),
        )),
    }
}

/// Something other than a lock directory at a lock's path: no process holds it, and neither we
/// nor the CLI can take the lock until a person removes it.
fn not_a_lock(spec: &DirLockSpec, meta: &fs::Metadata) -> Blockage {
    let what = if meta.file_type().is_symlink() {
        "a symbolic link"
    } else if meta.is_file() {
        "a regular file"
    } else {
        "not a directory"
    };
    (
        format!("is {what}, not a lock directory{}", owned_by_other(meta)),
        format!("remove it with `rm {}`", spec.path.display()),
    )
}

#[cfg(unix)]
fn owned_by_other(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() == me {
        String::new()
    } else {
        format!(", owned by uid {}", meta.uid())
    }
}

#[cfg(not(unix))]
fn owned_by_other(_meta: &fs::Metadata) -> String {
    String::new()
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
        // Why the thing at the lock's path cannot be cleared away by us, once we know: said once
        // in the log and again in the final error, never in a loop.
        let mut blocked: Option<Blockage> = None;
        // Retries without a pause are allowed only after progress (a lock removed, a race lost);
        // a run of them ends in a pause all the same, so nothing can keep us spinning.
        let mut quick_retries = 0u32;
        remove_private_leftovers(&spec.path);
        loop {
            let mut retry_now = false;
            match make_noted(spec, on_taken) {
                Ok(identity) => return Self::hold(spec, identity).map_err(LockError::Io),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(LockError::Io(e)),
            }
            match fs::symlink_metadata(&spec.path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => retry_now = true,
                Err(e) => return Err(LockError::Io(e)),
                Ok(meta) => {
                    let mtime = meta.modified().map_err(LockError::Io)?;
                    let age = SystemTime::now()
                        .duration_since(mtime)
                        .unwrap_or(Duration::ZERO);
                    if age > spec.stale {
                        match remove_abandoned(spec, &meta, age) {
                            Ok(()) => {
                                tracing::info!(
                                    "removed {} ({}), abandoned {} ago",
                                    spec.path.display(),
                                    spec.what,
                                    crate::duration::human(age)
                                );
                                retry_now = true;
                            }
                            Err(blockage) => {
                                if blocked.is_none() {
                                    warn_blocked(spec, &blockage, deadline);
                                }
                                blocked = Some(blockage);
                            }
                        }
                    } else if !meta.is_dir() && blocked.is_none() {
                        let blockage = not_a_lock(spec, &meta);
                        warn_blocked(spec, &blockage, deadline);
                        blocked = Some(blockage);
                    }
                    if !retry_now {
                        match still {
                            Some((seen, _)) if seen == mtime => {}
                            _ => still = Some((mtime, Instant::now())),
                        }
                        let untouched = still.map_or(Duration::ZERO, |(_, since)| since.elapsed());
                        let owner = spec.owner_record.as_deref().and_then(OwnerRecord::read);
                        if let Some(owner) = &owner
                            && meta.is_dir()
                            && untouched >= TAKEOVER_AFTER
                            && take_over(spec, owner, mtime)
                        {
                            retry_now = true;
                        } else if blocked.is_none() {
                            // Held: said once, after a second of waiting, with the holder.
                            let holder = owner
                                .map_or_else(String::new, |o| format!(", held by pid {}", o.pid));
                            if !announced && started.elapsed() >= Duration::from_secs(1) {
                                on_wait(spec, &holder);
                                announced = true;
                            }
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(match blocked {
                    Some((why, fix)) => LockError::Blocked { why, fix },
                    None => LockError::Timeout {
                        holder: spec
                            .owner_record
                            .as_deref()
                            .and_then(OwnerRecord::read)
                            .map_or_else(String::new, |o| format!(", held by pid {}", o.pid)),
                    },
                });
            }
            // Told to stop: a free lock is still taken (a save in flight should finish), but
            // nothing is waited for.
            if interrupt::stop_requested() {
                return Err(LockError::Interrupted);
            }
            if retry_now && quick_retries < QUICK_RETRIES {
                quick_retries += 1;
                continue;
            }
            quick_retries = 0;
            thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    fn hold(spec: &DirLockSpec, identity: Identity) -> io::Result<DirLock> {
        register_dir(&spec.path, identity, spec.owner_record.as_deref());
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
        unregister_dir(&self.spec.path);
    }
}

/// Makes the lock directory so that it is noted (`on_taken`) before it exists under its name: it
/// is made under a private name beside it, noted, then renamed into place without replacing
/// anything (`RENAME_NOREPLACE`; the inode and birth time stay). A process killed at any moment
/// leaves either no lock or one its successor knows to remove, never a lock nobody can account for
/// until it goes stale (60 s of everyone waiting).
fn make_noted(
    spec: &DirLockSpec,
    on_taken: &mut dyn FnMut(&DirLockSpec, Identity),
) -> io::Result<Identity> {
    if fs::symlink_metadata(&spec.path).is_ok() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    let name = spec
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let private = spec.path.with_file_name(format!(
        ".{name}.tk{}.{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    fs::create_dir(&private)?;
    let identity = match Identity::of(&private) {
        Ok(id) => id,
        Err(e) => {
            let _ = fs::remove_dir(&private);
            return Err(e);
        }
    };
    let private_spec = DirLockSpec {
        path: private.clone(),
        owner_record: None,
        ..spec.clone()
    };
    on_taken(&private_spec, identity);
    on_taken(spec, identity);
    match rename_noreplace(&private, &spec.path) {
        Ok(()) => Ok(identity),
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL)
                || e.raw_os_error() == Some(libc::ENOSYS)
                || e.kind() == io::ErrorKind::Unsupported =>
        {
            // A file system without RENAME_NOREPLACE: plain mkdir, noted right after.
            let _ = fs::remove_dir(&private);
            fs::create_dir(&spec.path)?;
            let identity = Identity::of(&spec.path)?;
            on_taken(spec, identity);
            Ok(identity)
        }
        Err(e) => {
            let _ = fs::remove_dir(&private);
            Err(e)
        }
    }
}

/// Said once per wait: a person may clear the blockage while we wait.
fn warn_blocked(spec: &DirLockSpec, (why, fix): &Blockage, deadline: Instant) {
    tracing::warn!(
        "{} ({}) {why}; waiting up to {} for it to go away ({fix})",
        spec.path.display(),
        spec.what,
        crate::duration::human(deadline.saturating_duration_since(Instant::now()))
    );
}

/// A process killed between making its private directory and renaming it into place (see
/// [`make_noted`]) leaves it behind, empty, under `.<lock>.tk<pid>.<hex>`: remove those whose
/// process is gone. Nothing else matches the name, and a non-empty folder is never touched.
fn remove_private_leftovers(lock: &Path) {
    let (Some(dir), Some(name)) = (lock.parent(), lock.file_name()) else {
        return;
    };
    let prefix = format!(".{}.tk", name.to_string_lossy());
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_string_lossy()
            .strip_prefix(&prefix)
            .map(str::to_string)
        else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && pid.is_some_and(|pid| pid != std::process::id() && !pid_exists(pid)) {
            // remove_dir fails on a non-empty folder: only empty leftovers go.
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// Only Linux has `renameat2(RENAME_NOREPLACE)`; elsewhere the caller falls back to `mkdir`.
#[cfg(not(target_os = "linux"))]
fn rename_noreplace(_from: &Path, _to: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes a lock directory (and our owner record) if it is still the one we created. Also used
/// on a signal and to clean up after a tokenkeeper that was killed while holding locks.
pub fn release(path: &Path, identity: Identity, owner_record: Option<&Path>) -> bool {
    if Identity::of(path).ok() != Some(identity) {
        return false;
    }
    if let Some(record) = owner_record
        && OwnerRecord::read(record)
            .is_some_and(|o| o.pid == std::process::id() && o.names(&identity))
    {
        let _ = fs::remove_file(record);
    }
    fs::remove_dir(path).is_ok()
}

/// Claude's takeover: the lock is still the one the record names, untouched since we began
/// watching, its holder provably gone, and the companion lock either absent or the holder's own.
/// Then remove the companion, the lock and the record, and let the caller `mkdir` again.
fn take_over(spec: &DirLockSpec, owner: &OwnerRecord, watched_mtime: SystemTime) -> bool {
    let Ok(meta) = fs::symlink_metadata(&spec.path) else {
        return false;
    };
    let Ok(identity) = Identity::of(&spec.path) else {
        return false;
    };
    if meta.modified().ok() != Some(watched_mtime)
        || !owner.names(&identity)
        || !owner.holder_is_gone()
    {
        return false;
    }
    if let Some(companion) = &spec.takeover_with
        && let Ok(c) = Identity::of(companion)
    {
        let theirs = match (c.birth_ms(), owner.legacy_lock_birthtime_ms) {
            (Some(b), Some(recorded)) => same_ms(b, recorded),
            _ => false,
        };
        if !theirs {
            return false;
        }
        let _ = fs::remove_dir(companion);
    }
    if let Err(e) = fs::remove_dir(&spec.path) {
        // Not ours to clear (another user's, or not empty): the waiting loop says so once.
        tracing::debug!(
            "cannot take over {} from pid {}, which is gone: {e}",
            spec.path.display(),
            owner.pid
        );
        return false;
    }
    tracing::info!(
        "took over {} ({}) from pid {}, which is gone",
        spec.path.display(),
        spec.what,
        owner.pid
    );
    if let Some(record) = &spec.owner_record
        && OwnerRecord::read(record).as_ref() == Some(owner)
    {
        let _ = fs::remove_file(record);
    }
    true
}

fn touch(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.set_modified(SystemTime::now())
}

/// Claude Code's owner record (`.oauth_refresh.lock.owner`), in Claude's own format, so that
/// Claude can take over from a tokenkeeper that was killed, and we from a Claude that was. A
/// record counts only for the lock directory whose birth time it names, and only on the host and
/// in the pid namespace where it was written.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRecord {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_start: Option<String>,
    pub pid_domain: String,
    pub pid_space: String,
    pub lock_birthtime_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_lock_birthtime_ms: Option<f64>,
}

/// Records larger than this are not Claude's (it refuses them too).
const MAX_RECORD: u64 = 4096;

impl OwnerRecord {
    /// A record for process `pid` on this host, holding the lock born at `lock_birthtime_ms`.
    pub fn for_pid(
        pid: u32,
        lock_birthtime_ms: f64,
        legacy_lock_birthtime_ms: Option<f64>,
    ) -> Self {
        let (domain, space) = pid_namespace();
        OwnerRecord {
            pid,
            proc_start: process_start(pid).map(|s| s.to_string()),
            pid_domain: domain.clone(),
            pid_space: space.clone(),
            lock_birthtime_ms,
            legacy_lock_birthtime_ms,
        }
    }

    pub fn read(path: &Path) -> Option<OwnerRecord> {
        let meta = fs::symlink_metadata(path).ok()?;
        if !meta.is_file() || meta.len() > MAX_RECORD {
            return None;
        }
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    pub fn write(&self, path: &Path) -> io::Result<()> {
        let body = serde_json::to_vec(self).map_err(io::Error::other)?;
        crate::storage::atomic::remove_abandoned_temps(path);
        crate::storage::atomic::write_atomic(path, &body)
    }

    /// True only when the holder is provably gone, by Claude's rules: written in our pid
    /// namespace on this host, and its pid no longer exists, is a zombie, or now belongs to a
    /// process that started at another time. A /proc we cannot trust proves nothing.
    pub fn holder_is_gone(&self) -> bool {
        let (domain, space) = pid_namespace();
        if self.pid_domain != *domain || self.pid_space != *space || !pid_view_trusted() {
            return false;
        }
        if self.pid <= 1 || self.pid > i32::MAX as u32 {
            return false;
        }
        if !pid_exists(self.pid) || is_zombie(self.pid) {
            return true;
        }
        match (&self.proc_start, process_start(self.pid)) {
            (Some(recorded), Some(now)) => *recorded != now.to_string(),
            _ => false,
        }
    }

    /// Is this record about the lock directory with this identity?
    pub fn names(&self, lock: &Identity) -> bool {
        lock.birth_ms()
            .is_some_and(|b| same_ms(b, self.lock_birthtime_ms))
    }
}

fn same_ms(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-3
}

/// (`linux:<machine-id>:<pid ns>`, `<hostname>#<pid ns>`), as Claude computes them.
fn pid_namespace() -> &'static (String, String) {
    static NS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    NS.get_or_init(|| {
        let machine = fs::read_to_string("/etc/machine-id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let ns = fs::read_link("/proc/self/ns/pid")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let host = hostname();
        let space = if ns.is_empty() {
            host
        } else {
            format!("{host}#{ns}")
        };
        (format!("linux:{machine}:{ns}"), space)
    })
}

#[cfg(not(unix))]
fn hostname() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_default()
}

#[cfg(unix)]
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Claude trusts pids only where /proc/self is us and /proc shows a real process table.
fn pid_view_trusted() -> bool {
    let me = fs::read_link("/proc/self").ok();
    if me.as_deref() != Some(Path::new(&std::process::id().to_string())) {
        return false;
    }
    let numeric = fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .take(16)
                .count()
        })
        .unwrap_or(0);
    numeric >= 16
}

fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, Some("Z" | "X"))
}

/// Without a way to ask (Windows), every process is taken to exist: a dead holder's lock is
/// then taken only once stale, never over a live one.
#[cfg(not(unix))]
pub fn pid_exists(_pid: u32) -> bool {
    true
}

#[cfg(unix)]
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

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The lock directories this process holds, so that a signal handler about to exit can remove
/// them (a directory lock does not vanish with its process).
struct HeldDir {
    path: PathBuf,
    identity: Identity,
    owner_record: Option<PathBuf>,
}

static HELD: Mutex<Vec<HeldDir>> = Mutex::new(Vec::new());

fn held() -> MutexGuard<'static, Vec<HeldDir>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

fn register_dir(path: &Path, identity: Identity, owner_record: Option<&Path>) {
    held().push(HeldDir {
        path: path.to_path_buf(),
        identity,
        owner_record: owner_record.map(Path::to_path_buf),
    });
}

fn unregister_dir(path: &Path) {
    held().retain(|h| h.path != path);
}

/// Removes every lock directory this process holds. For a signal handler about to exit.
pub fn release_all_held() {
    for h in held().drain(..).rev() {
        release(&h.path, h.identity, h.owner_record.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, stale: Duration) -> DirLockSpec {
        DirLockSpec {
            path: dir.join(".oauth_refresh.lock"),
            stale,
            owner_record: Some(dir.join(".oauth_refresh.lock.owner")),
            takeover_with: None,
            best_effort: false,
            what: "test lock",
        }
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    fn take(s: &DirLockSpec, ms: u64) -> Result<DirLock, LockError> {
        DirLock::acquire(s, soon(ms), &mut |_, _| {}, &mut |_, _| {})
    }

    #[test]
    fn takes_and_releases_a_lock_and_our_owner_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), Duration::from_secs(60));
        let lock = take(&s, 100).unwrap();
        assert!(s.path.is_dir());
        let record = s.owner_record.as_ref().unwrap();
        if let Some(birth) = lock.identity().birth_ms() {
            OwnerRecord::for_pid(std::process::id(), birth, None)
                .write(record)
                .unwrap();
            let back = OwnerRecord::read(record).unwrap();
            assert!(back.names(&lock.identity()));
            assert!(!back.holder_is_gone());
        }
        drop(lock);
        assert!(!s.path.exists());
        assert!(!record.exists());
    }

    #[test]
    fn a_lock_is_noted_before_it_appears_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), Duration::from_secs(60));
        let mut noted = Vec::new();
        let lock = DirLock::acquire(&s, soon(100), &mut |_, _| {}, &mut |sp, id| {
            noted.push((sp.path.clone(), sp.path.exists(), id));
        })
        .unwrap();
        // The private name first (it exists), then the lock's own name (not there yet).
        assert_eq!(noted.len(), 2, "{noted:?}");
        assert!(noted[0].1 && !noted[1].1, "{noted:?}");
        assert_eq!(noted[1].0, s.path);
        assert_eq!(noted[1].2, lock.identity());
        assert!(
            !noted[0].0.exists(),
            "the private name is gone after the rename"
        );
        drop(lock);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn private_folders_left_by_killed_takers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), Duration::from_secs(60));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let left = dir
            .path()
            .join(format!("..oauth_refresh.lock.tk{gone}.0badf00d"));
        let alive = dir.path().join(format!(
            "..oauth_refresh.lock.tk{}.00000001",
            std::os::unix::process::parent_id()
        ));
        let full = dir
            .path()
            .join(format!("..oauth_refresh.lock.tk{gone}.00000002"));
        for d in [&left, &alive, &full] {
            fs::create_dir(d).unwrap();
        }
        fs::write(full.join("x"), "").unwrap();
        drop(take(&s, 100).unwrap());
        assert!(!left.exists(), "an empty leftover of a dead process goes");
        assert!(alive.exists(), "a live process's is kept");
        assert!(full.exists(), "a non-empty folder is never removed");
    }

    #[test]
    fn a_live_lock_times_out_and_a_stale_one_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), Duration::from_secs(60));
        fs::create_dir(&s.path).unwrap();
        assert!(matches!(take(&s, 300), Err(LockError::Timeout { .. })));
        assert!(s.path.exists(), "a live lock is never removed");
        let old = SystemTime::now() - Duration::from_secs(61);
        fs::File::open(&s.path).unwrap().set_modified(old).unwrap();
        drop(take(&s, 300).unwrap());
    }

    #[test]
    fn release_leaves_a_lock_that_someone_else_remade() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), Duration::from_secs(60));
        let lock = take(&s, 100).unwrap();
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
    fn a_holder_is_gone_only_when_provably_so() {
        let mine = OwnerRecord::for_pid(std::process::id(), 1.0, None);
        assert!(!mine.holder_is_gone());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(OwnerRecord::for_pid(pid, 1.0, None).holder_is_gone() || !pid_view_trusted());
        let mut reused = mine.clone();
        reused.proc_start = Some("1".into());
        assert!(reused.holder_is_gone() || !pid_view_trusted());
        let mut foreign = OwnerRecord::for_pid(pid, 1.0, None);
        foreign.pid_space = "elsewhere#pid:[1]".into();
        assert!(
            !foreign.holder_is_gone(),
            "another host's pid proves nothing"
        );
    }

    #[test]
    fn owner_record_uses_claudes_field_names() {
        let r = OwnerRecord::for_pid(42, 1732900000123.456, Some(5.5));
        let v: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        for key in [
            "pid",
            "pidDomain",
            "pidSpace",
            "lockBirthtimeMs",
            "legacyLockBirthtimeMs",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn birth_ms_follows_claudes_formula() {
        let id = Identity {
            dev: 0,
            ino: 0,
            born_ns: Some(1_732_900_000_123_456_789),
        };
        assert_eq!(id.birth_ms(), Some(1_732_900_000_000.0 * 1.0 + 123.456789));
    }
}
