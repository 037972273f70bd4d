//! Noticing that a credentials file changed (a new `claude /login`, a refresh by Claude or by
//! `tokenkeeper exec`) without polling: inotify on the folders that hold the files (Linux), and,
//! as a cross-check that needs no events at all, a cheap stamp (inode, size, mtime) of each file
//! that the daemon compares whenever it wakes. Elsewhere there is no watcher, and the daemon
//! looks at the stamps every few seconds. Also the daemon's sleep: until a watched folder
//! changes, a signal arrives (a wake-up pipe), or the next planned action is due.

use std::fs;
use std::path::Path;
use std::time::Duration;

/// The read end of the daemon's wake-up pipe (a raw descriptor on Unix).
pub type WakeFd = i32;

/// What a file looked like: any rewrite (atomic rename included) changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Stamp {
    /// `None` when the file does not exist (or cannot be seen).
    #[cfg(unix)]
    pub fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    /// `None` when the file does not exist (or cannot be seen). Without inode numbers, the
    /// creation time stands in: an atomic rename brings a file created anew.
    #[cfg(not(unix))]
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = fs::metadata(path).ok()?;
        let ns = |t: std::io::Result<std::time::SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128)
        };
        Some(Stamp {
            dev: 0,
            ino: ns(m.created()) as u64,
            size: m.len(),
            mtime_ns: ns(m.modified()),
        })
    }
}

#[cfg(target_os = "linux")]
pub use inotify::Watcher;

/// No file-change events here: [`Watcher::new`] says so, and the daemon polls the stamps.
#[cfg(not(target_os = "linux"))]
pub struct Watcher;

#[cfg(not(target_os = "linux"))]
impl Watcher {
    pub fn new() -> std::io::Result<Watcher> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no file-change events on this platform",
        ))
    }

    pub fn watch_file(&mut self, _file: &Path) -> bool {
        false
    }
}

/// Sleeps until a watched folder changes, a signal arrives on `wake`, or `wait` passes
/// (forever if none).
#[cfg(unix)]
pub fn sleep_until_event(
    watcher: Option<&mut Watcher>,
    wake: Option<WakeFd>,
    wait: Option<Duration>,
) {
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(2);
    #[cfg(target_os = "linux")]
    if let Some(w) = watcher.as_ref() {
        fds.push(libc::pollfd {
            fd: w.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
    }
    if let Some(fd) = wake {
        fds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
    }
    let timeout = wait.map_or(-1, |w| {
        // Round up, so that we never wake a hair before the planned time and spin.
        i32::try_from(w.as_millis().saturating_add(1)).unwrap_or(i32::MAX)
    });
    // SAFETY: fds is a valid array of pollfd for its length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if let Some(w) = watcher {
        w.drain();
    }
    if let Some(fd) = wake {
        let mut buf = [0u8; 64];
        // SAFETY: draining our own non-blocking pipe into a local buffer.
        while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

/// Without poll(2) and a wake-up pipe: sleep in short steps, so that a stop request (a flag the
/// caller checks on waking) is seen within a quarter of a second.
#[cfg(not(unix))]
pub fn sleep_until_event(
    _watcher: Option<&mut Watcher>,
    _wake: Option<WakeFd>,
    wait: Option<Duration>,
) {
    let step = Duration::from_millis(250);
    std::thread::sleep(wait.map_or(step, |w| w.min(step)));
}

#[cfg(target_os = "linux")]
mod inotify {
    use crate::storage::atomic::folder_of;
    use std::collections::HashMap;
    use std::fs;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::path::{Path, PathBuf};

    /// inotify watches on the folders of the files we care about.
    pub struct Watcher {
        fd: OwnedFd,
        folders: HashMap<i32, PathBuf>,
    }

    const MASK: u32 = libc::IN_CLOSE_WRITE
        | libc::IN_MOVED_TO
        | libc::IN_MOVED_FROM
        | libc::IN_CREATE
        | libc::IN_DELETE
        | libc::IN_ATTRIB
        | libc::IN_DELETE_SELF
        | libc::IN_MOVE_SELF;

    impl Watcher {
        pub fn new() -> io::Result<Watcher> {
            // SAFETY: inotify_init1 takes flags and returns a new descriptor or -1.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Watcher {
                // SAFETY: a fresh descriptor we own.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                folders: HashMap::new(),
            })
        }

        /// Watches the folder holding `file` (and, for a symlink, the folder of its target).
        /// Returns false when no folder could be watched (it does not exist yet).
        pub fn watch_file(&mut self, file: &Path) -> bool {
            let mut folders = vec![folder_of(file)];
            if let Ok(target) = fs::canonicalize(file)
                && target != file
            {
                folders.push(folder_of(&target));
            }
            let mut any = false;
            for folder in folders {
                if self.folders.values().any(|f| *f == folder) {
                    any = true;
                    continue;
                }
                let Ok(c) = std::ffi::CString::new(folder.as_os_str().as_encoded_bytes()) else {
                    continue;
                };
                // SAFETY: a valid NUL-terminated path and our inotify descriptor.
                let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK) };
                if wd >= 0 {
                    self.folders.insert(wd, folder);
                    any = true;
                }
            }
            any
        }

        /// For `poll(2)`: readable when something happened in a watched folder.
        pub fn raw_fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }

        /// Reads every pending event; true if there were any. A removed folder drops its watch, so
        /// the caller should call [`Watcher::watch_file`] again when it wakes.
        pub fn drain(&mut self) -> bool {
            let mut buf = [0u8; 8192];
            let mut any = false;
            loop {
                // SAFETY: reading into a buffer of the given length from our descriptor.
                let n =
                    unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    return any;
                }
                any = true;
                let mut at = 0usize;
                let n = n as usize;
                let header = std::mem::size_of::<libc::inotify_event>();
                while at + header <= n {
                    // SAFETY: the kernel wrote whole events; read the header without alignment needs.
                    let ev: libc::inotify_event =
                        unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                    if ev.mask & libc::IN_IGNORED != 0 {
                        self.folders.remove(&ev.wd);
                    }
                    at += header + ev.len as usize;
                }
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn readable(w: &Watcher, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: w.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }

    #[test]
    fn an_atomic_rewrite_wakes_the_watcher_and_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.json");
        fs::write(&file, "{}").unwrap();
        let before = Stamp::of(&file);
        let mut w = Watcher::new().unwrap();
        assert!(w.watch_file(&file));
        assert!(!readable(&w, 50));
        crate::storage::atomic::write_atomic(&file, b"{\"a\":1}").unwrap();
        assert!(readable(&w, 2000));
        assert!(w.drain());
        assert!(!w.drain());
        assert_ne!(Stamp::of(&file), before);
        assert_eq!(Stamp::of(&dir.path().join("none")), None);
    }

    #[test]
    fn a_missing_folder_cannot_be_watched() {
        let mut w = Watcher::new().unwrap();
        assert!(!w.watch_file(Path::new("/nonexistent-tk/x/c.json")));
    }
}
