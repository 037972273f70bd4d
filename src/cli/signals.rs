//! SIGINT, SIGTERM, SIGHUP and SIGQUIT during a refresh: remove the lock directories we hold
//! (they would otherwise outlive us), but first let a refresh token already posted come back and
//! be saved, since stopping then would lose the login. A second signal stops at once.

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;
use tokenkeeper::interrupt;

pub fn install() {
    let Ok(mut signals) = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]) else {
        return;
    };
    std::thread::spawn(move || {
        let mut first = true;
        for sig in signals.forever() {
            let code = 128 + sig;
            if !first {
                interrupt::release_all_locks();
                std::process::exit(code);
            }
            first = false;
            if interrupt::in_critical() {
                super::output::error_line(
                    "finishing the token request in flight so the new tokens are not lost; signal again to abort",
                );
            }
            std::thread::spawn(move || {
                let _held = interrupt::wait_for_critical();
                interrupt::release_all_locks();
                std::process::exit(code);
            });
        }
    });
}
