//! A folder someone else may control (an access-only copy's, whose consumer may own it), opened
//! once without following a link for it; the file in it is then read and atomically replaced
//! through that open folder, never through a path. Swapping the folder or the file for a link
//! at any moment cannot send a read or a write anywhere else: the link is refused, or replaced
//! as a name, never followed.

use crate::storage::atomic::{Perms, set_perms};
use crate::storage::bounded::{ReadError, read_open};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub struct Folder {
    fd: OwnedFd,
    path: PathBuf,
}

impl Folder {
    /// Opens `path` as a folder; a link in its place is refused (`ELOOP`, or `ENOTDIR`).
    pub fn open(path: &Path) -> io::Result<Folder> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(Folder {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Reads the regular file `name` in the folder, at most `cap` bytes; a link is refused.
    pub fn read(&self, name: &OsStr, cap: u64) -> Result<Vec<u8>, ReadError> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty()).map_err(|e| match e {
            rustix::io::Errno::NOENT => ReadError::NotFound,
            rustix::io::Errno::LOOP => ReadError::NotRegular("a symbolic link"),
            e => ReadError::Io(e.into()),
        })?;
        read_open(File::from(fd), cap)
    }

    /// Replaces `name` in the folder with `bytes`, as [`write_atomic_as`] does: a new temp file
    /// (0600, then `perms`), fsync, rename over the name (a link there is replaced, not
    /// followed), fsync of the folder.
    ///
    /// [`write_atomic_as`]: crate::storage::atomic::write_atomic_as
    pub fn write_atomic(&self, name: &OsStr, bytes: &[u8], perms: Perms) -> io::Result<()> {
        let shown = self.path.join(name);
        let old = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .filter(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
            })
            .map(|st| (st.st_uid, st.st_gid));
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let (tmp_name, fd) = loop {
            let mut tmp_name = name.to_os_string();
            tmp_name.push(format!(".tmp.{:08x}", fastrand::u32(..)));
            match rustix::fs::openat(&self.fd, &tmp_name, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => break (tmp_name, fd),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut tmp = File::from(fd);
        let written = (|| {
            set_perms(&tmp, perms, old, &shown)?;
            tmp.write_all(bytes)?;
            tmp.sync_all()?;
            rustix::fs::renameat(&self.fd, &tmp_name, &self.fd, name)?;
            rustix::fs::fsync(&self.fd)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp_name, AtFlags::empty());
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn reads_and_writes_go_through_the_open_folder_and_never_through_a_link() {
        let (dir, [real, other]) = crate::testing::temp_folders(["real", "other"]);
        fs::write(other.join("copy.json"), "precious").unwrap();
        let name = OsStr::new("copy.json");

        let folder = Folder::open(&real).unwrap();
        assert!(matches!(folder.read(name, 100), Err(ReadError::NotFound)));
        folder.write_atomic(name, b"{}", Perms::default()).unwrap();
        assert_eq!(folder.read(name, 100).unwrap(), b"{}");
        let mode = fs::metadata(real.join("copy.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // The folder swapped for a link after it was opened: the open folder is still the one
        // written, and the link's target is untouched.
        let moved = dir.path().join("moved");
        fs::rename(&real, &moved).unwrap();
        symlink(&other, &real).unwrap();
        folder
            .write_atomic(name, b"{\"a\":1}", Perms::default())
            .unwrap();
        assert_eq!(fs::read(moved.join("copy.json")).unwrap(), b"{\"a\":1}");
        assert_eq!(
            fs::read_to_string(other.join("copy.json")).unwrap(),
            "precious"
        );
        // A link for the folder is refused when it is opened.
        assert!(Folder::open(&real).is_err());

        // A link in the file's place is refused by a read and replaced (not followed) by a
        // write.
        let folder = Folder::open(&moved).unwrap();
        fs::remove_file(moved.join("copy.json")).unwrap();
        symlink(other.join("copy.json"), moved.join("copy.json")).unwrap();
        assert!(matches!(
            folder.read(name, 100),
            Err(ReadError::NotRegular(_))
        ));
        folder.write_atomic(name, b"{}", Perms::default()).unwrap();
        assert!(
            !fs::symlink_metadata(moved.join("copy.json"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::read_to_string(other.join("copy.json")).unwrap(),
            "precious"
        );
        assert!(matches!(folder.read(name, 1), Err(ReadError::TooLarge(1))));
        let names: Vec<_> = fs::read_dir(&moved)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["copy.json"], "no temp file left");
    }
}
