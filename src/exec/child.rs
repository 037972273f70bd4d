//! Running a wrapped command: same stdin, environment (plus what we inject) and working folder;
//! its stdout and stderr either inherited (a terminal is attached) or passed through byte for
//! byte as they come, while an [`crate::exec::auth_failure::Detector`] watches them. Signals sent to us are
//! forwarded to it (see `interrupt::forward_to_child`), and on Linux it gets SIGTERM should we
//! die first.
//!
//! On Linux the command is started without copying this process (`exec/spawn.rs`) and one
//! thread does it all with `poll(2)` on the pipes and a pidfd; elsewhere std starts it and a
//! thread per pipe passes the output while the main thread waits for the exit.

use crate::exec::auth_failure::{AuthFailure, Detector};
use crate::exec::command::{ChildSpec, SpawnError};
use crate::lock::interrupt;
use std::io::{self, Read, Write};
#[cfg(any(not(target_os = "linux"), test))]
use std::process::ExitStatus;
#[cfg(not(target_os = "linux"))]
use std::process::Stdio;
use std::time::Duration;

#[derive(Debug)]
pub struct Finished {
    /// Its exit code, or 128+N when signal N ended it.
    pub code: i32,
    /// The last auth failure seen in its output.
    pub auth_failure: Option<AuthFailure>,
}

/// How long to keep passing output after the command exited, for a background grandchild that
/// still holds the pipe.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// Runs the command to its end, passing its output through.
pub fn run(spec: &ChildSpec) -> Result<Finished, SpawnError> {
    interrupt::child_starting();
    let mut child = start(spec).inspect_err(|_| interrupt::child_gone())?;
    interrupt::child_running(child.id());
    let (status, auth_failure) = pump::pass_through(&mut child);
    interrupt::child_gone();

    #[cfg(unix)]
    let signal = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
    #[cfg(not(unix))]
    let signal: Option<i32> = None;
    let code = status
        .and_then(|s| s.code())
        .or(signal.map(|s| 128 + s))
        .unwrap_or(1);
    Ok(Finished { code, auth_failure })
}

/// Starts the command without copying this process (`exec/spawn.rs`).
#[cfg(target_os = "linux")]
fn start(spec: &ChildSpec) -> Result<crate::exec::spawn::Spawned, SpawnError> {
    crate::exec::spawn::spawn(spec)
}

/// Starts the command through std.
#[cfg(not(target_os = "linux"))]
fn start(spec: &ChildSpec) -> Result<std::process::Child, SpawnError> {
    let mut cmd = std::process::Command::new(&spec.program);
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
    die_with_parent(&mut cmd);
    cmd.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SpawnError::NotFound,
        _ => SpawnError::NotExecutable(e),
    })
}

/// The child gets SIGTERM when this process dies, however it dies (SIGKILL included), so it is
/// never left running on its own. Linux only (PDEATHSIG); elsewhere a no-op.
#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_cmd: &mut std::process::Command) {}

/// The child gets SIGTERM when this process dies, however it dies (SIGKILL included), so it is
/// never left running on its own. For a `Command` (the demo's helpers): the hook makes std fork
/// a copy of this process. `exec`'s own command is started without that copy (`exec/spawn.rs`).
#[cfg(all(target_os = "linux", feature = "demo"))]
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
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
}

/// One watched stream: the pipe from the command, where its bytes go, what they said.
struct Stream<R> {
    from: Option<R>,
    to: Box<dyn Write + Send>,
    detector: Detector,
}

impl<R: Read> Stream<R> {
    fn new(from: R, to: Box<dyn Write + Send>) -> Stream<R> {
        Stream {
            from: Some(from),
            to,
            detector: Detector::default(),
        }
    }

    /// Moves what is ready through: written and flushed at once, then fed to the detector.
    /// When our own output is gone (a closed pipe), stops reading, so the command sees a closed
    /// pipe too, as it would without us.
    fn pass(&mut self, buf: &mut [u8]) {
        let Some(from) = self.from.as_mut() else {
            return;
        };
        match from.read(buf) {
            Ok(0) => self.from = None,
            Ok(n) => {
                if self
                    .to
                    .write_all(&buf[..n])
                    .and_then(|()| self.to.flush())
                    .is_err()
                {
                    self.from = None;
                }
                self.detector.feed(&buf[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(_) => self.from = None,
        }
    }

    fn finish(&mut self) -> Option<AuthFailure> {
        self.detector.finish();
        self.detector.found().cloned()
    }
}

#[cfg(any(not(target_os = "linux"), test))]
fn wait(child: &mut std::process::Child) -> Option<ExitStatus> {
    loop {
        match child.wait() {
            Ok(status) => return Some(status),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

#[cfg(target_os = "linux")]
use pump_poll as pump;
#[cfg(not(target_os = "linux"))]
use pump_threads as pump;

#[cfg(target_os = "linux")]
mod pump_poll {
    use super::{DRAIN_AFTER_EXIT, Stream};
    use crate::exec::auth_failure::AuthFailure;
    use crate::exec::spawn::Spawned;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::process::{Child, ExitStatus};
    use std::time::Instant;

    /// A running command as this pump sees it: started by our own spawn, or (in tests) by std.
    pub trait Running {
        fn id(&self) -> u32;
        /// Its stdout and stderr pipes, when they are watched (once).
        fn take_pipes(&mut self) -> (Option<File>, Option<File>);
        /// Waits for its end (through interruptions by signals, as both ways of starting do).
        fn wait(&mut self) -> io::Result<ExitStatus>;
    }

    impl Running for Spawned {
        fn id(&self) -> u32 {
            Spawned::id(self)
        }
        fn take_pipes(&mut self) -> (Option<File>, Option<File>) {
            (self.stdout.take(), self.stderr.take())
        }
        fn wait(&mut self) -> io::Result<ExitStatus> {
            Spawned::wait(self)
        }
    }

    impl Running for Child {
        fn id(&self) -> u32 {
            Child::id(self)
        }
        fn take_pipes(&mut self) -> (Option<File>, Option<File>) {
            (
                self.stdout.take().map(|p| File::from(OwnedFd::from(p))),
                self.stderr.take().map(|p| File::from(OwnedFd::from(p))),
            )
        }
        fn wait(&mut self) -> io::Result<ExitStatus> {
            Child::wait(self)
        }
    }

    /// Passes output through until the command has exited and its pipes are closed (or, when
    /// a background process keeps them open, for a few seconds more). One thread, `poll(2)` on
    /// the pipes and on a pidfd for the exit: no helper threads to start on every run.
    pub fn pass_through(child: &mut impl Running) -> (Option<ExitStatus>, Option<AuthFailure>) {
        let mut streams: Vec<Stream<File>> = Vec::new();
        let (out, err) = child.take_pipes();
        if let Some(out) = out {
            streams.push(Stream::new(out, Box::new(io::stdout())));
        }
        if let Some(err) = err {
            streams.push(Stream::new(err, Box::new(io::stderr())));
        }
        let status = pump_until_exit(child, &mut streams);
        let failure = streams.iter_mut().filter_map(|s| s.finish()).next_back();
        (status, failure)
    }

    fn pump_until_exit(
        child: &mut impl Running,
        streams: &mut [Stream<File>],
    ) -> Option<ExitStatus> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        // SAFETY: a non-negative result is a descriptor we now own.
        let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
        let mut status: Option<Option<ExitStatus>> = None;
        let mut drain_until: Option<Instant> = None;
        // Made at the first byte to pass: a quiet command never needs it.
        let mut buf = Vec::new();
        loop {
            let open: Vec<usize> = (0..streams.len())
                .filter(|&i| streams[i].from.is_some())
                .collect();
            let watch_exit = status.is_none() && pidfd.is_some();
            if open.is_empty() && !watch_exit {
                break;
            }
            let mut fds: Vec<libc::pollfd> = open
                .iter()
                .filter_map(|&i| streams[i].from.as_ref())
                .map(|f| libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            if let (true, Some(p)) = (watch_exit, &pidfd) {
                fds.push(libc::pollfd {
                    fd: p.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let timeout = drain_until.map_or(-1, |d| {
                i32::try_from(d.saturating_duration_since(Instant::now()).as_millis())
                    .unwrap_or(i32::MAX)
            });
            // SAFETY: fds is a valid array of pollfd for its length.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if ready < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            for (slot, &i) in open.iter().enumerate() {
                let revents = fds[slot].revents;
                if revents & libc::POLLIN != 0 {
                    if buf.is_empty() {
                        buf = vec![0u8; 64 * 1024];
                    }
                    streams[i].pass(&mut buf);
                } else if revents != 0 {
                    // Closed (or broken) with nothing left to read: the end of the stream.
                    streams[i].from = None;
                }
            }
            if watch_exit && fds.last().is_some_and(|p| p.revents != 0) {
                status = Some(child.wait().ok());
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
            if drain_until.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        status.unwrap_or_else(|| child.wait().ok())
    }
}

/// Also built for tests on Linux, so the fallback is exercised here too.
#[cfg(any(not(target_os = "linux"), test))]
mod pump_threads {
    use super::{DRAIN_AFTER_EXIT, Stream, wait};
    use crate::exec::auth_failure::AuthFailure;
    use std::io::{self, Read};
    use std::process::{Child, ExitStatus};
    use std::sync::mpsc;
    use std::thread;
    use std::time::Instant;

    /// A thread per watched pipe passes its bytes through and reports what the detector found;
    /// after the exit, output is passed for a few seconds more, for a background process that
    /// still holds a pipe.
    pub fn pass_through(child: &mut Child) -> (Option<ExitStatus>, Option<AuthFailure>) {
        let (tx, rx) = mpsc::channel();
        let mut started = 0;
        let mut spawn = |from: Box<dyn Read + Send>, to: Box<dyn io::Write + Send>| {
            let tx = tx.clone();
            started += 1;
            thread::spawn(move || {
                let mut stream = Stream::new(from, to);
                let mut buf = vec![0u8; 64 * 1024];
                while stream.from.is_some() {
                    stream.pass(&mut buf);
                }
                let _ = tx.send(stream.finish());
            });
        };
        if let Some(out) = child.stdout.take() {
            spawn(Box::new(out), Box::new(io::stdout()));
        }
        if let Some(err) = child.stderr.take() {
            spawn(Box::new(err), Box::new(io::stderr()));
        }
        let status = wait(child);
        let until = Instant::now() + DRAIN_AFTER_EXIT;
        let mut failure = None;
        for _ in 0..started {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(found) => failure = found.or(failure),
                Err(_) => break,
            }
        }
        (status, failure)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// Both ways of passing output see the exit code and an auth failure in either stream.
    #[test]
    fn both_pumps_report_the_exit_and_an_auth_failure() {
        let script = "echo working; echo 'Failed to authenticate. API Error: 401 Invalid authentication credentials' >&2; exit 3";
        type Pump = fn(&mut std::process::Child) -> (Option<ExitStatus>, Option<AuthFailure>);
        let pumps: [(&str, Pump); 2] = [
            ("poll", pump::pass_through),
            ("threads", pump_threads::pass_through),
        ];
        for (name, pass_through) in pumps {
            let mut child = Command::new("sh")
                .args(["-c", script])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let (status, failure) = pass_through(&mut child);
            assert_eq!(status.and_then(|s| s.code()), Some(3), "{name}");
            assert!(failure.is_some(), "{name}: the 401 line was not seen");
        }
    }
}
