//! What a signal handler needs to stop cleanly (besides the lock directories this process holds,
//! which `dir_lock` keeps a list of: [`crate::lock::dir_lock::release_all_held`]): the critical
//! section between posting a refresh token and saving its replacement (once the
//! server has rotated the token, stopping before the save would throw the login away).
//! The handlers that read it are Unix signal handlers (`cli/signals.rs`); on Windows most of it
//! has no reader.
#![cfg_attr(not(unix), allow(dead_code))]

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};

static CRITICAL: Mutex<()> = Mutex::new(());

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

/// The wrapped command while `exec` runs one: 0 none, -1 about to start, else its pid. Read
/// from a signal handler, hence atomics only.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A signal that arrived while the command was starting, to deliver once it exists.
static PENDING: AtomicI32 = AtomicI32::new(0);

/// About to spawn the command: from now on signals are kept for it.
pub fn child_starting() {
    PENDING.store(0, Ordering::SeqCst);
    CHILD.store(-1, Ordering::SeqCst);
}

/// The command is running as `pid`: deliver a signal that arrived while it was starting.
pub fn child_running(pid: u32) {
    let pid = i32::try_from(pid).unwrap_or(0);
    CHILD.store(pid, Ordering::SeqCst);
    deliver_pending(pid);
}

pub fn child_gone() {
    CHILD.store(0, Ordering::SeqCst);
}

/// Signals the command has taken care of, so the refresh handler (which sees every signal too,
/// a moment later) leaves them alone.
static CONSUMED: AtomicU32 = AtomicU32::new(0);

/// For the refresh handler: was this signal already dealt with by forwarding it to the command?
pub fn take_consumed() -> bool {
    CONSUMED
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// For a signal handler (async-signal-safe: atomics and kill(2) only). Forwards `sig` to the
/// command, or keeps it for the command about to start; `sent_by_a_process` is false for
/// signals the terminal sends to its whole foreground group, which the command got already.
/// Returns false when there is no command.
pub fn forward_to_child(sig: i32, sent_by_a_process: bool) -> bool {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid != 0 {
        CONSUMED.fetch_add(1, Ordering::SeqCst);
    }
    match pid {
        0 => false,
        _ if !sent_by_a_process => true,
        -1 => {
            PENDING.store(sig, Ordering::SeqCst);
            // The command may have started meanwhile; whoever swaps the signal out delivers it.
            let pid = CHILD.load(Ordering::SeqCst);
            if pid > 0 {
                deliver_pending(pid);
            }
            true
        }
        pid => {
            send_signal(pid, sig);
            true
        }
    }
}

fn deliver_pending(pid: i32) {
    let sig = PENDING.swap(0, Ordering::SeqCst);
    if sig != 0 && pid > 0 {
        send_signal(pid, sig);
    }
}

/// kill(2) to the command we started; async-signal-safe.
#[cfg(unix)]
fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes a pid and a signal number and touches no memory of ours.
    unsafe { libc::kill(pid, sig) };
}

/// No signals to forward on Windows: Ctrl+C reaches every process of the console anyway.
#[cfg(not(unix))]
fn send_signal(_pid: i32, _sig: i32) {}

/// Set by the signal handler when this process has been told to stop: every lock wait gives up
/// at once instead of waiting out its deadline with the signal unanswered, and a save that cannot
/// take its lock leaves the new tokens in the recovery file.
static STOP: AtomicU32 = AtomicU32::new(0);

/// For a signal handler: ask every wait to end (async-signal-safe: one atomic store).
pub fn request_stop() {
    STOP.store(1, Ordering::SeqCst);
}

/// Has this process been told to stop?
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst) != 0
}

/// Set while a refresh holds (or waits for) locks: a daemon that is told to stop then cleans up
/// from its signal handler instead of waiting for the refresh to come back to its loop.
static REFRESHING: AtomicU32 = AtomicU32::new(0);

pub struct Refreshing(());

impl Drop for Refreshing {
    fn drop(&mut self) {
        REFRESHING.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn refreshing() -> Refreshing {
    REFRESHING.fetch_add(1, Ordering::SeqCst);
    Refreshing(())
}

pub fn is_refreshing() -> bool {
    REFRESHING.load(Ordering::SeqCst) > 0
}

/// Installed by the binary: sets up what a signal during a refresh must do (release our lock
/// directories, let a posted refresh finish). Called only when a refresh takes locks, so the fast
/// path pays nothing for it.
static PROTECTOR: OnceLock<fn()> = OnceLock::new();
static PROTECTED: Once = Once::new();

pub fn set_protector(install: fn()) {
    let _ = PROTECTOR.set(install);
}

/// Makes sure the protector is installed (once per process).
pub fn protect() {
    PROTECTED.call_once(|| {
        if let Some(install) = PROTECTOR.get() {
            install();
        }
    });
}

/// Whether [`protect`] has run: a signal handler that sees false may act as the default would.
pub fn is_protected() -> bool {
    PROTECTED.is_completed()
}
