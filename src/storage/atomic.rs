//! Writing a file so that no reader and no crash ever sees half of it: a temp file in the same
//! folder, fsync, rename over the target (a symlink's target, never the link), fsync of the
//! folder; mode 0600; the old file's owner kept. Also the clean-up of temp files a killed writer
//! left. A leaf: it knows nothing of logins, locks or providers, so every room can use it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The folder holding `path` ("." for a bare file name).
pub fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes `<target>.tmp.*` files: a writer killed between creating its temp file and renaming
/// it leaves one behind. Call only while holding the lock all writers of `target` take, so that
/// no temp file can be in use.
pub fn remove_abandoned_temps(target: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let prefix = format!("{}.tmp.", name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix)
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            tracing::debug!("removing abandoned temp file {}", entry.path().display());
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Who a written file belongs to and its permission bits: by default 0600 and the old file's
/// owner (see `keep_owner`); an access-only copy for another user (`[[mirror]]`) names both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    pub mode: u32,
    /// (uid, gid) to give the file; None keeps the old file's owner.
    pub owner: Option<(u32, u32)>,
}

impl Default for Perms {
    fn default() -> Perms {
        Perms {
            mode: 0o600,
            owner: None,
        }
    }
}

/// Temp file 0600 beside `target`, fsync, rename over it, fsync the folder. A crash at any
/// moment leaves either the old or the new file whole, never a mix.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_as(target, bytes, Perms::default())
}

/// [`write_atomic`] with the file's mode and owner set on the temp file before it is renamed,
/// so the file never exists with other ones (the mode is set with `fchmod`, which the umask
/// does not narrow).
pub fn write_atomic_as(target: &Path, bytes: &[u8], perms: Perms) -> io::Result<()> {
    Prepared::with_perms(target, perms)?.commit(bytes)
}

/// The first half of [`write_atomic`], done before the bytes are known: the temp file made
/// (0600, the target's owner) and open, so that writing them later is one `write`. Dropped
/// without [`commit`](Prepared::commit), the temp file is removed.
pub struct Prepared {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl Prepared {
    pub fn new(target: &Path) -> io::Result<Prepared> {
        Prepared::with_perms(target, Perms::default())
    }

    /// The temp file with `perms`' mode and owner (see [`write_atomic_as`]).
    pub fn with_perms(target: &Path, perms: Perms) -> io::Result<Prepared> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!("{name}.tmp.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
        let tmp = builder.tempfile_in(folder_of(target))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let old = fs::metadata(target).ok().map(|m| (m.uid(), m.gid()));
            set_perms(tmp.as_file(), perms, old, target)?;
        }
        #[cfg(not(unix))]
        match perms.owner {
            None => keep_owner(target, tmp.as_file())?,
            Some(owner) => give_to(tmp.as_file(), owner)?,
        }
        Ok(Prepared {
            tmp,
            target: target.to_path_buf(),
        })
    }

    /// The file this will replace.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes `bytes`, fsyncs, renames over the target, fsyncs the folder.
    pub fn commit(mut self, bytes: &[u8]) -> io::Result<()> {
        self.tmp.write_all(bytes)?;
        self.tmp.as_file().sync_all()?;
        let dir = folder_of(&self.target);
        persist(self.tmp, &self.target)?;
        #[cfg(unix)]
        fs::File::open(dir)?.sync_all()?;
        #[cfg(not(unix))]
        let _ = dir;
        Ok(())
    }
}

/// The new file keeps the old one's owner: root keeping another user's login writes it as that
/// user's; anyone else cannot give a file away, and replacing another user's file with one of
/// their own would take the login from its owner, so that is refused.
#[cfg(unix)]
pub(crate) fn keep_owner_of(
    old: Option<(u32, u32)>,
    target: &Path,
    tmp: &fs::File,
) -> io::Result<()> {
    let Some((uid, gid)) = old else {
        return Ok(());
    };
    let me = current_uid();
    if uid == me {
        return Ok(());
    }
    if me == 0 {
        return std::os::unix::fs::fchown(tmp, Some(uid), Some(gid));
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} belongs to another user (uid {uid}); run tokenkeeper as that user, so the file stays theirs",
            target.display(),
        ),
    ))
}

/// The temp file's owner and mode as `perms` asks (see [`write_atomic_as`]); `old` is the
/// owner of the file it replaces, if any.
#[cfg(unix)]
pub(crate) fn set_perms(
    tmp: &fs::File,
    perms: Perms,
    old: Option<(u32, u32)>,
    target: &Path,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match perms.owner {
        None => keep_owner_of(old, target, tmp)?,
        Some(owner) => give_to(tmp, owner)?,
    }
    tmp.set_permissions(fs::Permissions::from_mode(perms.mode))
}

/// Gives the new file to `(uid, gid)`: root can give it to anyone, another user only to
/// themselves (and a group of theirs).
#[cfg(unix)]
fn give_to(tmp: &fs::File, (uid, gid): (u32, u32)) -> io::Result<()> {
    std::os::unix::fs::fchown(tmp, Some(uid), Some(gid)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot give the file to uid {uid}, gid {gid} ({e}); run tokenkeeper as root to write files for another user"),
        )
    })
}

#[cfg(not(unix))]
fn give_to(_tmp: &fs::File, _owner: (u32, u32)) -> io::Result<()> {
    Ok(())
}

#[cfg(not(unix))]
fn keep_owner(_target: &Path, _tmp: &fs::File) -> io::Result<()> {
    Ok(())
}

/// Renames the temp file over `target`. On Windows a reader holding the file open without
/// delete sharing makes the rename fail for a moment: try again for up to a second.
fn persist(mut tmp: tempfile::NamedTempFile, target: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match tmp.persist(target) {
            Ok(_) => return Ok(()),
            Err(e) if cfg!(windows) && tries < 20 && sharing_violation(&e.error) => {
                tries += 1;
                tmp = e.file;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e.error),
        }
    }
}

/// ERROR_ACCESS_DENIED (5) or ERROR_SHARING_VIOLATION (32), which Windows gives while another
/// process has the file open.
fn sharing_violation(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(5 | 32)) || e.kind() == io::ErrorKind::PermissionDenied
}

/// The effective user id.
#[cfg(unix)]
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_prepared_file_is_a_temp_until_committed_and_nothing_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("login.json");
        fs::write(&target, "old").unwrap();

        let dropped = Prepared::new(&target).unwrap();
        assert_eq!(
            names(dir.path()).len(),
            2,
            "the temp file beside the target"
        );
        drop(dropped);
        assert_eq!(names(dir.path()), ["login.json"]);

        let ready = Prepared::new(&target).unwrap();
        assert_eq!(ready.target(), target);
        assert_eq!(fs::read_to_string(&target).unwrap(), "old");
        ready.commit(b"new").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(names(dir.path()), ["login.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_written_file_takes_the_mode_and_owner_asked_for() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.json");
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let me = fs::metadata(dir.path()).unwrap();
        let perms = Perms {
            mode: 0o640,
            owner: Some((me.uid(), me.gid())),
        };
        write_atomic_as(&path, b"{\"a\":1}", perms).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!((meta.uid(), meta.gid()), (me.uid(), me.gid()));
        assert_eq!(fs::read(&path).unwrap(), b"{\"a\":1}");
        if current_uid() != 0 {
            let err = write_atomic_as(
                &path,
                b"{}",
                Perms {
                    mode: 0o600,
                    owner: Some((0, 0)),
                },
            )
            .unwrap_err();
            assert!(err.to_string().contains("uid 0"), "{err}");
            assert_eq!(fs::read(&path).unwrap(), b"{\"a\":1}", "the old file stays");
        }
    }
}
