//! Reading a file we did not write with care: only a regular file, and only up to a size cap.
//! A FIFO at a credentials path would block a reader forever, `/dev/zero` would fill memory,
//! and a folder or a socket is never a login; each is refused with a reason a message can name.
//! The open never blocks (`O_NONBLOCK`), and what is read is checked on the opened file itself
//! (`fstat`), so a path swapped between a check and the open cannot slip a special file in.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// Why a file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing at the path.
    NotFound,
    /// Something that is not a regular file: "a folder", "a FIFO", "a device", "a socket".
    NotRegular(&'static str),
    /// Larger than the cap (in bytes).
    TooLarge(u64),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotFound => write!(f, "does not exist"),
            ReadError::NotRegular(what) => write!(f, "is {what}, not a regular file"),
            ReadError::TooLarge(cap) => write!(f, "is larger than {} MiB", cap >> 20),
            ReadError::Io(e) => write!(f, "{}", crate::error::io_reason(e)),
        }
    }
}

/// Reads the regular file at `path` (following links), at most `cap` bytes.
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_nonblocking(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ReadError::NotFound,
        _ if e.raw_os_error() == Some(libc::EISDIR) => ReadError::NotRegular("a folder"),
        _ => ReadError::Io(e),
    })?;
    read_open(file, cap)
}

/// [`read_regular`], but a link at `path` is refused rather than followed (`NotRegular`). (On
/// Unix a folder opened without following a link does this in the same `open`:
/// `storage/folder.rs`.)
#[cfg(not(unix))]
pub fn read_regular_here(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(ReadError::NotRegular("a symbolic link"));
    }
    read_regular(path, cap)
}

/// Reads an open file, at most `cap` bytes, if it is a regular file.
pub fn read_open(file: File, cap: u64) -> Result<Vec<u8>, ReadError> {
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind_of(&meta)));
    }
    if meta.len() > cap {
        return Err(ReadError::TooLarge(cap));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow between the fstat and the read: never take more than the cap.
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge(cap));
    }
    Ok(bytes)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).open(path)
}

#[cfg(unix)]
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        "a folder"
    } else {
        "a special file"
    }
}

/// Permission bits when the file is readable by group or others (Unix only).
#[cfg(unix)]
pub fn loose_mode(target: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(target)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
        .filter(|mode| mode & 0o077 != 0)
}

#[cfg(not(unix))]
pub fn loose_mode(_target: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_up_to_the_cap() {
        let (dir, path) = crate::testing::temp_path("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_regular(&path, 5).unwrap(), b"12345");
        assert!(matches!(
            read_regular(&path, 4),
            Err(ReadError::TooLarge(4))
        ));
        assert!(matches!(
            read_regular(&dir.path().join("none"), 5),
            Err(ReadError::NotFound)
        ));
        assert!(matches!(
            read_regular(dir.path(), 5),
            Err(ReadError::NotRegular("a folder"))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_regular(&fifo, 1 << 20),
            Err(ReadError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            read_regular(Path::new("/dev/zero"), 1 << 20),
            Err(ReadError::NotRegular("a device"))
        ));
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            read_regular(&link, 1 << 20),
            Err(ReadError::NotRegular("a device"))
        ));
    }
}
