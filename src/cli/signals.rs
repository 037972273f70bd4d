//! SIGINT, SIGTERM, SIGHUP and SIGQUIT.
//!
//! - While `exec` runs a command, they are forwarded to it from the handler itself (unless the
//!   terminal sent them to the whole process group, which the command got already), and we go on
//!   waiting for it: [`forward_to_command`].
//! - While a refresh holds locks, a handler thread removes the lock directories we hold (they
//!   would outlive us), but first lets a refresh token already posted come back and be saved,
//!   since stopping then would lose the login; a second signal stops at once: `protect_refresh`,
//!   installed by the library only when a refresh takes locks.
//! - Otherwise (the fast path) nothing is installed and a signal does what it always does.
//!
//! Unix only. On Windows nothing is installed: Ctrl+C reaches the wrapped command directly
//! (every process of the console gets it) and ends tokenkeeper as it would end any program.

#[cfg(not(unix))]
pub fn prepare() {}

#[cfg(not(unix))]
pub fn prepare_daemon() {}

#[cfg(not(unix))]
pub fn forward_to_command() {}

#[cfg(unix)]
pub use unix::{forward_to_command, prepare, prepare_daemon};

#[cfg(unix)]
mod unix {
    use crate::lock::interrupt;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    use signal_hook::iterator::SignalsInfo;
    use signal_hook::iterator::exfiltrator::WithRawSiginfo;

    const SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

    /// Registers [`protect_refresh`] with the library, for the first refresh that takes locks.
    pub fn prepare() {
        interrupt::set_protector(protect_refresh);
    }

    /// For the daemon, whose loop handles SIGHUP (reload) and, between refreshes, SIGTERM/SIGINT
    /// (clean stop): the refresh-time handler acts only while a refresh is under way.
    pub fn prepare_daemon() {
        interrupt::set_protector(protect_daemon_refresh);
    }

    fn protect_refresh() {
        install_refresh_handler(false);
    }

    fn protect_daemon_refresh() {
        install_refresh_handler(true);
    }

    fn install_refresh_handler(daemon: bool) {
        let Ok(mut signals) = SignalsInfo::<WithRawSiginfo>::new(SIGNALS) else {
            return;
        };
        std::thread::spawn(move || {
            let mut stopping = false;
            for info in signals.forever() {
                if interrupt::take_consumed() {
                    continue; // forward_to_command's handler gave it to the command.
                }
                if daemon && (info.si_signo == SIGHUP || !interrupt::is_refreshing()) {
                    continue; // the daemon's loop has it.
                }
                // A daemon told to stop has done nothing wrong: exit 0, as its loop would.
                let code = if daemon { 0 } else { 128 + info.si_signo };
                if stopping {
                    crate::lock::dir_lock::release_all_held();
                    std::process::exit(code);
                }
                stopping = true;
                interrupt::request_stop();
                if interrupt::in_critical() {
                    const WHY: &str = "finishing the token request in flight so the new tokens are not lost; signal again to abort";
                    if daemon {
                        // A daemon told to stop is no error, and its log lines carry their time.
                        tracing::info!("{WHY}");
                    } else {
                        super::super::output::error_line(WHY);
                    }
                }
                std::thread::spawn(move || {
                    let _held = interrupt::wait_for_critical();
                    crate::lock::dir_lock::release_all_held();
                    std::process::exit(code);
                });
            }
        });
    }

    /// For `exec`, before anything else installs a handler: forward signals to the command, straight
    /// from the handler; with no command yet, leave them to the refresh-time handler if one is
    /// installed, else do what the signal does by default.
    pub fn forward_to_command() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(register_forwarding);
    }

    fn register_forwarding() {
        for sig in SIGNALS {
            // SAFETY: the action only touches atomics and calls kill(2) or re-raises the signal with
            // its default action, all async-signal-safe.
            let _ = unsafe {
                signal_hook_registry::register_sigaction(sig, move |info: &libc::siginfo_t| {
                    // si_code <= 0: sent by a process (kill, sigqueue, tkill); > 0: by the kernel.
                    if interrupt::forward_to_child(sig, info.si_code <= 0)
                        || interrupt::is_protected()
                    {
                        return;
                    }
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                })
            };
        }
    }
}
