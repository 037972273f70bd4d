//! What a signal handler needs to stop cleanly: the lock directories this process holds (so they
//! can be removed on SIGINT or SIGTERM, since a directory lock does not vanish with its process)
//! and the critical section between posting a refresh token and saving its replacement (once the
//! server has rotated the token, stopping before the save would throw the login away).

use crate::dir_lock::{self, Identity};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

struct HeldDir {
    path: PathBuf,
    identity: Identity,
    owner_record: Option<PathBuf>,
}

static HELD: Mutex<Vec<HeldDir>> = Mutex::new(Vec::new());
static CRITICAL: Mutex<()> = Mutex::new(());

fn held() -> MutexGuard<'static, Vec<HeldDir>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn register_dir(path: &Path, identity: Identity, owner_record: Option<&Path>) {
    held().push(HeldDir {
        path: path.to_path_buf(),
        identity,
        owner_record: owner_record.map(Path::to_path_buf),
    });
}

pub(crate) fn unregister_dir(path: &Path) {
    held().retain(|h| h.path != path);
}

/// Removes every lock directory this process holds. For a signal handler about to exit.
pub fn release_all_locks() {
    for h in held().drain(..).rev() {
        dir_lock::release(&h.path, h.identity, h.owner_record.as_deref());
    }
}

/// Held from just before a refresh token is posted until its replacement is saved.
pub struct Critical(#[allow(dead_code)] MutexGuard<'static, ()>);

pub fn enter_critical() -> Critical {
    Critical(CRITICAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// True while a refresh token is in flight or its replacement is being saved.
pub fn in_critical() -> bool {
    matches!(
        CRITICAL.try_lock(),
        Err(std::sync::TryLockError::WouldBlock)
    )
}

/// Blocks until no refresh is in flight, then keeps new ones from starting: for a handler that
/// is about to exit. The returned guard must be held until the process exits.
pub fn wait_for_critical() -> Critical {
    enter_critical()
}

/// The wrapped command's pid while it runs: signals then go to it instead of stopping us.
static CHILD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub fn set_child(pid: Option<u32>) {
    CHILD.store(pid.unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
}

pub fn child() -> Option<u32> {
    match CHILD.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        pid => Some(pid),
    }
}
