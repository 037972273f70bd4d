//! Opening the fixed-name files our locks live in (`.tokenkeeper.lock`,
//! `.tokenkeeper-lease.lock`, Codex's lock files, the daemon's `daemon.lock`). Their names are
//! known to every local user, so a folder another user can write may hold a trap at that name:
//! a symbolic link to a file of ours (which we would then truncate or write), a dangling link
//! (which we would create for them), a FIFO, or a file of theirs whose lock they control. So the
//! open never follows a link, the result must be a regular file, and it must be ours.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Opens (creating it, mode 0600, when missing) the lock file at `path` for reading and writing,
/// refusing a link, anything but a regular file, and a file owned by another user; the error
/// says which and how to clear it.
pub fn open_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| refused_link(path, e))?;
    check_ours(path, &file.metadata()?)?;
    Ok(file)
}

/// Opens an existing lock file for reading only, with the same refusals; creates nothing.
pub fn open_existing(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| refused_link(path, e))?;
    check_ours(path, &file.metadata()?)?;
    Ok(file)
}

/// `O_NOFOLLOW` on a link fails with ELOOP: say what it is.
fn refused_link(path: &Path, e: io::Error) -> io::Error {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a symbolic link, which a lock file never is; remove it with `rm {}`",
                path.display(),
                path.display()
            ),
        );
    }
    let _ = path;
    e
}

fn check_ours(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file; remove it with `rm -r {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = crate::storage::atomic::current_uid();
        if meta.uid() != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to another user (uid {}), who could hold or change our lock; if that is not intended, remove it with `rm {}`",
                    path.display(),
                    meta.uid(),
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_file_and_reopens_it() {
        let (_dir, path) = crate::testing::temp_path(".tokenkeeper.lock");
        drop(open_private(&path).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(open_private(&path).unwrap());
        drop(open_existing(&path).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn links_and_folders_are_refused_and_their_targets_untouched() {
        let (dir, victim) = crate::testing::temp_file("victim", "precious");
        let link = dir.path().join(".tokenkeeper.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = open_private(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");

        let dangling = dir.path().join(".tokenkeeper-lease.lock");
        let target = dir.path().join("made-for-them");
        std::os::unix::fs::symlink(&target, &dangling).unwrap();
        assert!(open_private(&dangling).is_err());
        assert!(
            !target.exists(),
            "a dangling link's target is never created"
        );

        let folder = dir.path().join("daemon.lock");
        std::fs::create_dir(&folder).unwrap();
        assert!(open_private(&folder).is_err());
    }
}
