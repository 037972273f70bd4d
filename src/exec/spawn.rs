//! Starting the wrapped command on Linux without copying this process: `clone(CLONE_VM |
//! CLONE_VFORK)`, as `posix_spawn` starts one, but with the parent-death signal set in the child
//! before its `execve` (which `posix_spawn` has no way to ask for, and std's `Command` gets only
//! by forking a copy of the whole process). The child shares our memory and runs on a stack of
//! its own until the `execve`, while we wait; it only makes system calls on data made ready
//! before, and hands an error back through that shared memory.
//!
//! In the child, in order: every caught signal is set back to its default (no handler of ours
//! may run in our memory from there), SIGPIPE too (std ignores it in this process; a command
//! must not inherit that), the watched pipes go to stdout and stderr, the parent-death signal is
//! set (and the child ends at once if we are already gone), the signal mask is emptied as std
//! does, and the program is looked up on PATH and executed as `execvp` would.

use crate::exec::command::{ChildSpec, SpawnError};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

/// The child's stack, until its `execve`: what it runs needs a few KiB; pages it never touches
/// cost nothing.
const STACK: usize = 64 * 1024;

/// Where `execvp` looks when PATH is not set (musl's and glibc's default).
const DEFAULT_PATH: &[u8] = b"/usr/local/bin:/bin:/usr/bin";

/// A started command: its pid and the read ends of the pipes it writes to.
#[derive(Debug)]
pub struct Spawned {
    pid: libc::pid_t,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

impl Spawned {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the command to end (through interruptions by signals).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child; `status` is a valid place for its status.
            if unsafe { libc::waitpid(self.pid, &mut status, 0) } >= 0 {
                return Ok(ExitStatus::from_raw(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Everything the child needs, made before it starts: it must not allocate.
struct Prepared {
    /// Each place to try, in order (the program itself when it names a path).
    candidates: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// Write ends to put on stdout and stderr, or -1.
    stdout: libc::c_int,
    stderr: libc::c_int,
    parent: libc::pid_t,
    /// Set by the child when no `execve` worked: the error that says why.
    errno: AtomicI32,
}

/// Starts `spec`'s command, its stdout (stderr) through a pipe when it is watched.
pub fn spawn(spec: &ChildSpec) -> Result<Spawned, SpawnError> {
    let setup = |e: io::Error| SpawnError::NotExecutable(e);
    let args: Vec<CString> = std::iter::once(&spec.program)
        .chain(&spec.args)
        .map(|a| c_string(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(setup)?;
    let env = environment(spec);
    let vars: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut pair = k.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(v.as_bytes());
            c_string(&pair)
        })
        .collect::<Result<_, _>>()
        .map_err(setup)?;
    let path = env
        .iter()
        .find(|(k, _)| k.as_bytes() == b"PATH")
        .map(|(_, v)| v.as_bytes());
    let candidates = candidates(spec.program.as_bytes(), path)
        .into_iter()
        .map(|c| c_string(&c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(setup)?;
    let stdout = spec.watch_stdout.then(pipe).transpose().map_err(setup)?;
    let stderr = spec.watch_stderr.then(pipe).transpose().map_err(setup)?;
    let null_ended = |all: &[CString]| {
        all.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let prepared = Prepared {
        candidates,
        argv: null_ended(&args),
        envp: null_ended(&vars),
        stdout: stdout.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
        stderr: stderr.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
        parent: std::process::id() as libc::pid_t,
        errno: AtomicI32::new(0),
    };
    let mut stack: Vec<u8> = Vec::with_capacity(STACK);
    // The stack grows down from its 16-byte-aligned top.
    let top = (stack.as_mut_ptr() as usize + STACK) & !15;

    // SAFETY: sigset_t is plain data, filled by sigfillset.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` and `before` are valid sigsets. With every signal blocked no handler of ours
    // can run in the child, which shares our memory, before it sets them back to the default.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
    }
    // SAFETY: `child` only makes system calls on `prepared`, which outlives it (CLONE_VFORK:
    // we go on only once it has executed its command or ended), on a stack of its own; the
    // flags give it our memory and make it our child, reported by SIGCHLD like any other.
    let pid = unsafe {
        libc::clone(
            child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&prepared as *const Prepared).cast_mut().cast(),
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: puts back the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(SpawnError::NotExecutable(clone_error));
    }
    let mut spawned = Spawned {
        pid,
        stdout: stdout.map(|(r, _)| File::from(r)),
        stderr: stderr.map(|(r, _)| File::from(r)),
    };
    match prepared.errno.load(Ordering::SeqCst) {
        0 => Ok(spawned),
        errno => {
            // It ended without running anything: reap it.
            let _ = spawned.wait();
            Err(match errno {
                libc::ENOENT | libc::ENOTDIR => SpawnError::NotFound,
                _ => SpawnError::NotExecutable(io::Error::from_raw_os_error(errno)),
            })
        }
    }
}

/// Runs in the child, on its own stack and in our memory: system calls only, on `Prepared`.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Prepared` that `spawn` keeps alive until we exec or exit.
    let p = unsafe { &*(arg as *const Prepared) };
    // SAFETY: system calls on valid arguments; see the module doc for the order.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        for signal in 1..=libc::SIGRTMAX() {
            if libc::sigaction(signal, std::ptr::null(), &mut action) == 0
                && action.sa_sigaction != libc::SIG_DFL
                && (action.sa_sigaction != libc::SIG_IGN || signal == libc::SIGPIPE)
            {
                action.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
        for (from, to) in [(p.stdout, 1), (p.stderr, 2)] {
            if from >= 0 && libc::dup2(from, to) < 0 {
                return fail(p, *libc::__errno_location());
            }
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        if libc::getppid() != p.parent {
            libc::_exit(143);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // As execvp: a place that does not hold the program is passed over; one that holds it
        // but may not be run is remembered, and said if no other place runs it.
        let mut error = libc::ENOENT;
        let mut denied = false;
        for path in &p.candidates {
            libc::execve(path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
            match *libc::__errno_location() {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => denied = true,
                other => {
                    error = other;
                    break;
                }
            }
        }
        if denied && error == libc::ENOENT {
            error = libc::EACCES;
        }
        fail(p, error)
    }
}

/// Hands `errno` back to `spawn` and ends the child.
fn fail(p: &Prepared, errno: libc::c_int) -> libc::c_int {
    p.errno.store(errno, Ordering::SeqCst);
    // SAFETY: ends this child at once, without running anything of the parent's.
    unsafe { libc::_exit(127) }
}

/// Our environment with the spec's variables set over it.
fn environment(spec: &ChildSpec) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !spec.env.iter().any(|(set, _)| OsStr::new(set) == k))
        .collect();
    env.extend(
        spec.env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env
}

/// Where `execvp` would look for `program`: itself when it holds a `/`, else in each folder of
/// `path` (an empty entry is the current folder).
fn candidates(program: &[u8], path: Option<&[u8]>) -> Vec<Vec<u8>> {
    if program.contains(&b'/') {
        return vec![program.to_vec()];
    }
    if program.is_empty() {
        return Vec::new();
    }
    path.unwrap_or(DEFAULT_PATH)
        .split(|c| *c == b':')
        .map(|dir| {
            let mut full = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            full.push(b'/');
            full.extend_from_slice(program);
            full
        })
        .collect()
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument or variable holds a NUL byte",
        )
    })
}

/// A pipe, both ends closed on exec (the child's copy of the write end is made by dup2).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors that only we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_looked_for_as_execvp_looks() {
        let got = |program: &str, path: Option<&str>| {
            candidates(program.as_bytes(), path.map(str::as_bytes))
                .into_iter()
                .map(|c| String::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(got("./run.sh", Some("/bin")), ["./run.sh"]);
        assert_eq!(got("/usr/bin/env", None), ["/usr/bin/env"]);
        assert_eq!(
            got("claude", Some("/a::/b")),
            ["/a/claude", "./claude", "/b/claude"]
        );
        assert_eq!(
            got("claude", None),
            ["/usr/local/bin/claude", "/bin/claude", "/usr/bin/claude"]
        );
        assert!(got("", Some("/bin")).is_empty());
    }

    fn spec(program: &str, args: &[&str], env: &[(&str, &str)], watch: bool) -> ChildSpec {
        ChildSpec {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            watch_stdout: watch,
            watch_stderr: watch,
        }
    }

    #[test]
    fn a_command_runs_with_its_arguments_our_variables_and_its_own_and_says_its_exit() {
        use std::io::Read;
        let mut run = spawn(&spec(
            "sh",
            &[
                "-c",
                r#"echo "$1 $TK_SPAWN_TEST" ; echo oops >&2; exit 7"#,
                "sh",
                "one two",
            ],
            &[("TK_SPAWN_TEST", "set")],
            true,
        ))
        .unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        run.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(out, "one two set\n");
        assert_eq!(err, "oops\n");
        assert_eq!(run.wait().unwrap().code(), Some(7));
    }

    #[test]
    fn a_missing_or_unrunnable_program_is_said() {
        assert!(matches!(
            spawn(&spec("tokenkeeper-no-such-command", &[], &[], false)),
            Err(SpawnError::NotFound)
        ));
        assert!(matches!(
            spawn(&spec("/nonexistent/dir/x", &[], &[], false)),
            Err(SpawnError::NotFound)
        ));
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("not-executable");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        match spawn(&spec(script.to_str().unwrap(), &[], &[], false)) {
            Err(SpawnError::NotExecutable(e)) => {
                assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_gets_the_default_signal_dispositions_and_an_empty_mask() {
        use std::io::Read;
        // SIGPIPE is ignored in this process (std does it); the command must not inherit that.
        let mut run = spawn(&spec(
            "sh",
            &["-c", "grep -E '^(SigIgn|SigBlk)' /proc/self/status"],
            &[],
            true,
        ))
        .unwrap();
        let mut out = String::new();
        run.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        run.wait().unwrap();
        for line in out.lines() {
            let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
            let sigpipe = 1u64 << (libc::SIGPIPE - 1);
            assert_eq!(mask & sigpipe, 0, "{line}");
            if line.starts_with("SigBlk") {
                assert_eq!(mask, 0, "{line}");
            }
        }
    }
}
