//! SIGINT, SIGTERM, SIGHUP and SIGQUIT. While `exec` runs a command, they are forwarded to it
//! (unless the terminal sent them to the whole process group, which the command got already)
//! and we wait for it to exit. Otherwise, during a refresh, we remove the lock directories we
//! hold (they would outlive us), but first let a refresh token already posted come back and be
//! saved, since stopping then would lose the login. A second signal stops at once.

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithRawSiginfo;
use tokenkeeper::interrupt;

pub fn install() {
    let Ok(mut signals) = SignalsInfo::<WithRawSiginfo>::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
    else {
        return;
    };
    std::thread::spawn(move || {
        let mut stopping = false;
        for info in signals.forever() {
            let sig = info.si_signo;
            // si_code <= 0: sent by a process (kill, sigqueue, tkill); > 0: by the kernel, as
            // the terminal does to its whole foreground process group, the command included.
            if interrupt::forward_to_child(sig, info.si_code <= 0) {
                continue;
            }
            let code = 128 + sig;
            if stopping {
                interrupt::release_all_locks();
                std::process::exit(code);
            }
            stopping = true;
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
