//! Running a wrapped command: same stdin, environment (plus what we inject) and working folder;
//! its stdout and stderr either inherited (a terminal is attached) or passed through byte for
//! byte as they come, while an [`auth_failure::Detector`] watches them. Signals sent to us are
//! forwarded to it (see `interrupt::forward_to_child`), and it gets SIGTERM should we die first.

use crate::auth_failure::{AuthFailure, Detector};
use crate::interrupt;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

pub struct ChildSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Variables to set for the child (on top of our own environment).
    pub env: Vec<(String, String)>,
    /// Pass stdout (stderr) through a pipe and watch it, instead of inheriting it.
    pub watch_stdout: bool,
    pub watch_stderr: bool,
}

#[derive(Debug)]
pub enum SpawnError {
    /// No such command (exit 127).
    NotFound(io::Error),
    /// It exists but cannot be executed (exit 126).
    NotExecutable(io::Error),
}

#[derive(Debug)]
pub struct Finished {
    /// Its exit code, or 128+N when signal N ended it.
    pub code: i32,
    pub signal: Option<i32>,
    /// The last auth failure seen in its output.
    pub auth_failure: Option<AuthFailure>,
}

/// How long to keep passing output after the command exited, for a background grandchild that
/// still holds the pipe.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

pub fn run(spec: &ChildSpec) -> Result<Finished, SpawnError> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if spec.watch_stdout {
        cmd.stdout(Stdio::piped());
    }
    if spec.watch_stderr {
        cmd.stderr(Stdio::piped());
    }
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if libc::getppid() as u32 != parent {
                libc::_exit(143);
            }
            Ok(())
        });
    }
    interrupt::child_starting();
    let mut child = cmd.spawn().map_err(|e| {
        interrupt::child_gone();
        match e.kind() {
            io::ErrorKind::NotFound => SpawnError::NotFound(e),
            _ => SpawnError::NotExecutable(e),
        }
    })?;
    if let Some(sig) = interrupt::child_running(child.id()) {
        // SAFETY: plain kill(2) to the child we just started.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    }

    let (done_tx, done_rx) = mpsc::channel::<Option<AuthFailure>>();
    let mut pumps = 0;
    if let Some(out) = child.stdout.take() {
        pumps += 1;
        spawn_pump(out, io::stdout(), done_tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        pumps += 1;
        spawn_pump(err, io::stderr(), done_tx.clone());
    }
    drop(done_tx);

    let status = loop {
        match child.wait() {
            Ok(status) => break status,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break std::process::ExitStatus::from_raw(1 << 8),
        }
    };
    interrupt::child_gone();

    let mut auth_failure = None;
    for _ in 0..pumps {
        match done_rx.recv_timeout(DRAIN_AFTER_EXIT) {
            Ok(found) => auth_failure = auth_failure.or(found),
            Err(_) => break,
        }
    }
    let signal = status.signal();
    let code = status.code().or(signal.map(|s| 128 + s)).unwrap_or(1);
    Ok(Finished {
        code,
        signal,
        auth_failure,
    })
}

/// Copies one stream through as it comes (each chunk written and flushed at once), feeding the
/// detector. When our own output is gone (a closed pipe), stops reading, so the command sees a
/// closed pipe too, as it would without us.
fn spawn_pump(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    done: mpsc::Sender<Option<AuthFailure>>,
) {
    thread::spawn(move || {
        let mut detector = Detector::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                        break;
                    }
                    detector.feed(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        detector.finish();
        let _ = done.send(detector.found().cloned());
    });
}
