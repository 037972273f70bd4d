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

/// The wrapped command, while `exec` runs one: signals then go to it instead of stopping us.
/// `Starting` covers the moment between deciding to spawn and knowing the pid, so that a
/// signal arriving then is delivered as soon as the command exists, not lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildSlot {
    None,
    Starting { pending: Option<i32> },
    Running(u32),
}

static CHILD: Mutex<ChildSlot> = Mutex::new(ChildSlot::None);

fn child_slot() -> MutexGuard<'static, ChildSlot> {
    CHILD.lock().unwrap_or_else(|e| e.into_inner())
}

/// About to spawn the command: from now on signals are kept for it.
pub fn child_starting() {
    *child_slot() = ChildSlot::Starting { pending: None };
}

/// The command is running as `pid`; returns a signal that arrived while it was starting.
pub fn child_running(pid: u32) -> Option<i32> {
    let mut slot = child_slot();
    let pending = match *slot {
        ChildSlot::Starting { pending } => pending,
        _ => None,
    };
    *slot = ChildSlot::Running(pid);
    pending
}

pub fn child_gone() {
    *child_slot() = ChildSlot::None;
}

/// For the signal handler: forward `sig` to the command if there is one (or keep it for the
/// command about to start). Returns false when no command is running, so the caller handles it.
pub fn forward_to_child(sig: i32, sent_by_a_process: bool) -> bool {
    let mut slot = child_slot();
    match *slot {
        ChildSlot::None => false,
        ChildSlot::Starting { .. } if !sent_by_a_process => true,
        ChildSlot::Starting { .. } => {
            *slot = ChildSlot::Starting { pending: Some(sig) };
            true
        }
        ChildSlot::Running(pid) => {
            if sent_by_a_process {
                // SAFETY: plain kill(2) to the child we started.
                unsafe { libc::kill(pid as libc::pid_t, sig) };
            }
            true
        }
    }
}
