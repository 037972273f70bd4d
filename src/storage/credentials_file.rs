//! The credentials file on disk: read it without changing anything, and write it back atomically
//! (temp file 0600 in the same folder, fsync, rename, fsync the folder), following a symlinked
//! file to its target rather than replacing the link. The file is read through the lossless
//! JSON layer of [`json_doc`]: a read validates the whole file but builds a `serde_json::Value`
//! of only the top-level keys its provider reads (the "view", [`CredentialsFile::with_keys`]),
//! and a write edits the file's own bytes, so every byte of what was not changed stays as it was.

use crate::error::Error;
use crate::storage::atomic::{Perms, folder_of, remove_abandoned_temps, write_atomic_as};
use crate::storage::bounded::loose_mode;
use crate::storage::bounded::{self, ReadError};
#[cfg(unix)]
use crate::storage::folder::Folder;
use crate::storage::json_doc;
use crate::storage::keychain::Keychain;
use crate::storage::place::{self, Place};
pub use crate::storage::place::{Snapshot, WriteGuard};
use serde_json::Value;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// No credentials file of any CLI comes near this; a larger one is not a login (or is
/// `/dev/zero` behind a link).
pub const MAX_CREDENTIALS: u64 = 64 << 20;

/// Which CLI a file belongs to, for messages that name the fix.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    /// Short name, as in `--provider claude`.
    pub provider: &'static str,
    /// For people: "Claude Code".
    pub name: &'static str,
    /// How to log in again, as messages show it: a command in backticks ("`claude /login`"),
    /// or a phrase.
    pub relogin: &'static str,
}

/// A login's credentials: the file, and for Claude Code on macOS the Keychain item read before
/// it (see `storage/place.rs`). Locks, state and messages go by the file's path either way.
#[derive(Clone, Debug)]
pub struct CredentialsFile {
    file: FilePlace,
    keychain: Option<Keychain>,
}

/// The credentials file alone.
#[derive(Clone, Debug)]
pub struct FilePlace {
    path: PathBuf,
    owner: Owner,
    layout: Layout,
    /// The top-level keys a read puts in [`Snapshot::doc`] (and so the keys a write may
    /// change); None for the whole document.
    keys: Option<Arc<[String]>>,
    /// The written file's mode and owner (0600 and the old file's owner unless set).
    perms: Perms,
    /// Whether a link at the path (or a link for its folder) is followed to its target, as for
    /// a login's own file, or refused, as for a copy in a folder someone else controls.
    follow_links: bool,
}

/// How the CLI itself writes the file, which our writes copy when they write a file anew (no
/// file yet, or one that is not JSON). Over a JSON file, a write edits its bytes and new values
/// follow that file's own layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// One line, no trailing newline (Claude Code).
    #[default]
    Compact,
    /// Indented by two spaces, no trailing newline (Codex CLI, Gemini CLI).
    Pretty,
    /// As the file on disk is written: one line or indented (by the indent its first indented
    /// line uses), with or without a trailing newline; indented by two spaces when there is no
    /// file yet. For tools whose writer we do not know (`[[login]]` tables).
    AsFound,
}

/// How much of a credentials document a read checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// All of it is valid JSON: every read that may lead to a write (a refresh's, under its
    /// lock), and `status`.
    Whole,
    /// The login's members are valid and the rest is a balanced, complete document
    /// ([`json_doc::skim`]): a look that writes nothing (is the token fresh?), which on a large
    /// file would otherwise spend most of its time checking what it never reads.
    Login,
}

impl CredentialsFile {
    pub fn new(path: impl Into<PathBuf>, owner: Owner) -> Self {
        CredentialsFile {
            file: FilePlace::new(path, owner, Layout::Compact),
            keychain: None,
        }
    }

    /// The same file, written with `layout`.
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.file.layout = layout;
        self
    }

    /// The same file, read as a view of only these top-level keys (None: the whole document):
    /// every other key is validated but never decoded, and a write keeps it byte for byte.
    pub fn with_keys(mut self, keys: Option<Vec<String>>) -> Self {
        self.file.keys = keys.map(Arc::from);
        self
    }

    /// The same login, looked for in `keychain` first, as Claude Code does on macOS.
    pub fn with_keychain(mut self, keychain: Keychain) -> Self {
        self.keychain = Some(keychain);
        self
    }

    /// The same file, written with this mode and owner (an access-only copy for another user).
    pub fn with_perms(mut self, perms: Perms) -> Self {
        self.file.perms = perms;
        self
    }

    /// The same file, never read or written through a link: a link at its path, or for its
    /// folder, is refused. For a copy in a folder its consumer controls, who could otherwise
    /// point it at any file the writer can read or write.
    pub fn refusing_links(mut self) -> Self {
        self.file.follow_links = false;
        self
    }

    /// The Keychain item read before the file, if any. Changes to it make no file event.
    pub fn keychain(&self) -> Option<&Keychain> {
        self.keychain.as_ref()
    }

    /// The path as the user (or the CLI's default) names it.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The folder the path names: where the CLI keeps its locks, even when the file is a symlink
    /// (and when the login is in the Keychain).
    pub fn folder(&self) -> PathBuf {
        folder_of(&self.file.path)
    }

    pub fn owner(&self) -> Owner {
        self.file.owner
    }

    /// Where the login is looked for, for people: the path, or the Keychain item then the path.
    pub fn describe(&self) -> String {
        match &self.keychain {
            None => self.file.describe(),
            Some(k) => format!("{}, else {}", k.describe(), self.file.describe()),
        }
    }

    /// Whether there is a login to read (the file or the link exists, or the Keychain holds the
    /// item or cannot say).
    pub fn exists(&self) -> bool {
        self.file.exists()
            || self
                .keychain
                .as_ref()
                .is_some_and(|k| !matches!(k.load(), Ok(place::Held::Nothing)))
    }

    /// The file that holds the bytes: the path itself, or where its symlink chain ends.
    pub fn target(&self) -> Result<PathBuf, Error> {
        self.file.target()
    }

    /// Before a refresh token is spent: could we save its replacement and keep the file its
    /// owner's? Not when another user owns it and we are not root (see `storage::atomic::keep_owner`); better
    /// to say so now than to spend the token and leave the new one in a recovery file.
    pub fn check_owner(&self) -> Result<(), Error> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let Ok(target) = self.target() else {
                return Ok(());
            };
            let Ok(meta) = fs::metadata(&target) else {
                return Ok(());
            };
            let me = crate::storage::atomic::current_uid();
            if meta.uid() != me && me != 0 {
                return Err(Error::Inaccessible {
                    action: "keep the owner of",
                    path: target,
                    source: io::Error::from(io::ErrorKind::PermissionDenied),
                    hint: format!(
                        "it belongs to another user (uid {}); run tokenkeeper as that user, so the file stays theirs",
                        meta.uid()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Reads and parses the login; changes nothing. With a Keychain, as Claude Code does: the
    /// item when there is one, else the file; when the keychain is locked, the file if there is
    /// one.
    pub fn read(&self) -> Result<Snapshot, Error> {
        self.read_checked(Check::Whole)
    }

    /// [`CredentialsFile::read`], checking as much of a file as `check` says (a Keychain item
    /// is always checked whole: it is small).
    pub fn read_checked(&self, check: Check) -> Result<Snapshot, Error> {
        let Some(keychain) = &self.keychain else {
            return self.file.read_checked(check);
        };
        match keychain.load()? {
            place::Held::Login(snap) => Ok(snap),
            place::Held::Nothing => {
                tracing::debug!(
                    "no login in {}; reading {} as Claude Code does",
                    keychain.describe(),
                    self.file.describe()
                );
                self.file.read_checked(check)
            }
            place::Held::Unreadable(why) => match self.file.read_checked(check) {
                Err(Error::Missing { .. }) => Err(why),
                other => {
                    warn_locked(&why, &self.file);
                    other
                }
            },
        }
    }

    /// Writes `doc` where [`CredentialsFile::read`] finds the login now: the Keychain item when
    /// it holds one, else the file (also when the keychain is locked and the file exists). With
    /// neither, the Keychain, where Claude Code would write.
    pub fn write(&self, doc: &Value, guard: &WriteGuard<'_>) -> io::Result<()> {
        let Some(keychain) = &self.keychain else {
            return self.file.save(doc, guard);
        };
        match keychain.load() {
            Ok(place::Held::Login(held)) => keychain.save(&self.file.whole(held.doc, doc), guard),
            Ok(place::Held::Unreadable(why)) if !self.file.exists() => {
                Err(io::Error::other(why.to_string()))
            }
            Ok(place::Held::Unreadable(_)) => self.file.save(doc, guard),
            Ok(place::Held::Nothing) if self.file.exists() => self.file.save(doc, guard),
            Ok(place::Held::Nothing) => keychain.save(doc, guard),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }

    pub fn missing(&self) -> Error {
        self.file.missing()
    }

    pub fn malformed(&self, problem: &str, hint: &str) -> Error {
        self.file.malformed(problem, hint)
    }
}

/// Reading the file because the keychain is locked is worth saying, once per process: if the
/// login lives in the Keychain, the file may be an old copy.
fn warn_locked(why: &Error, file: &FilePlace) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "{why}; using {} instead, as Claude Code does. If your login is in the Keychain, unlock it first: the file may hold an old copy",
            file.describe()
        );
    });
}

impl Place for FilePlace {
    fn load(&self) -> Result<place::Held, Error> {
        match self.read() {
            Ok(snap) => Ok(place::Held::Login(snap)),
            Err(Error::Missing { .. }) => Ok(place::Held::Nothing),
            Err(e) => Err(e),
        }
    }

    fn save(&self, doc: &Value, guard: &WriteGuard<'_>) -> io::Result<()> {
        self.write(doc, guard)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

impl FilePlace {
    pub fn new(path: impl Into<PathBuf>, owner: Owner, layout: Layout) -> Self {
        FilePlace {
            path: path.into(),
            owner,
            layout,
            keys: None,
            perms: Perms::default(),
            follow_links: true,
        }
    }

    /// A whole document (`held`) with a view of this file's keys (`view`) written into it.
    fn whole(&self, held: Value, view: &Value) -> Value {
        let (Some(keys), Value::Object(mut map), Value::Object(from)) = (&self.keys, held, view)
        else {
            return view.clone();
        };
        for key in keys.iter() {
            match from.get(key) {
                Some(v) => {
                    map.insert(key.clone(), v.clone());
                }
                None => {
                    map.shift_remove(key);
                }
            }
        }
        Value::Object(map)
    }

    /// The path as the user (or the CLI's default) names it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether there is a login to read (the file, or the link, exists).
    pub fn exists(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok()
    }

    /// The file that holds the bytes: the path itself, or where its symlink chain ends.
    pub fn target(&self) -> Result<PathBuf, Error> {
        if !self.follow_links {
            return self.here();
        }
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.file_type().is_symlink() => match fs::canonicalize(&self.path) {
                Ok(t) => Ok(t),
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(self.malformed(
                    "lead into a symlink loop",
                    "Point the link at the real credentials file.",
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.missing()),
                Err(e) => Err(self.inaccessible("resolve the symlink", e)),
            },
            _ => Ok(self.path.clone()),
        }
    }

    /// The path itself, when neither it nor its folder is a link.
    fn here(&self) -> Result<PathBuf, Error> {
        let folder = folder_of(&self.path);
        for (path, what) in [(&folder, "their folder is"), (&self.path, "they are")] {
            if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(self.malformed(
                    &format!(
                        "{what} a symbolic link ({}), which tokenkeeper does not follow here",
                        path.display()
                    ),
                    "Replace the link with the real folder or file.",
                ));
            }
        }
        Ok(self.path.clone())
    }

    /// Reads the regular file at `target`, through a link only when links are followed (else
    /// through its folder opened without following one: see [`Folder`]).
    fn read_bytes(&self, target: &Path) -> Result<Vec<u8>, ReadError> {
        if self.follow_links {
            return bounded::read_regular(target, MAX_CREDENTIALS);
        }
        #[cfg(unix)]
        {
            let (folder, name) = self.in_folder().map_err(ReadError::Io)?;
            folder.read(name, MAX_CREDENTIALS)
        }
        #[cfg(not(unix))]
        bounded::read_regular_here(target, MAX_CREDENTIALS)
    }

    /// The file's folder, opened without following a link for it, and the file's name in it.
    #[cfg(unix)]
    fn in_folder(&self) -> io::Result<(Folder, &std::ffi::OsStr)> {
        let name = self
            .path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
        let folder = Folder::open(&folder_of(&self.path)).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR) => io::Error::new(
                e.kind(),
                format!(
                    "the folder of {} is a symbolic link, which tokenkeeper does not follow here",
                    self.path.display()
                ),
            ),
            _ => e,
        })?;
        Ok((folder, name))
    }

    /// Reads and parses the file; changes nothing.
    pub fn read(&self) -> Result<Snapshot, Error> {
        self.read_checked(Check::Whole)
    }

    /// [`FilePlace::read`], checking as much of the document as `check` says.
    pub fn read_checked(&self, check: Check) -> Result<Snapshot, Error> {
        let target = self.target()?;
        let bytes = match self.read_bytes(&target) {
            Ok(b) => b,
            Err(ReadError::NotFound) => return Err(self.missing()),
            Err(ReadError::NotRegular(what)) => {
                return Err(self.malformed(
                    &format!("are {what}, not a file"),
                    "Remove it, then log in again.",
                ));
            }
            Err(ReadError::TooLarge(_)) => {
                return Err(self.malformed(
                    &format!(
                        "are larger than {} MiB, more than any login",
                        MAX_CREDENTIALS >> 20
                    ),
                    "Check that the path names the credentials file.",
                ));
            }
            Err(ReadError::Io(e)) => return Err(self.inaccessible("read", e)),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(self.malformed(
                "are empty",
                &format!("Log in again with {}.", self.owner.relogin),
            ));
        }
        if bytes.starts_with(b"\xEF\xBB\xBF") {
            return Err(self.malformed(
                "start with a byte-order mark (BOM), which JSON does not allow",
                &format!(
                    "Save the file as UTF-8 without a BOM, or log in again with {}.",
                    self.owner.relogin
                ),
            ));
        }
        let scanned = match check {
            Check::Whole => json_doc::scan(&bytes),
            Check::Login => json_doc::skim(&bytes, self.keys.as_deref()),
        };
        let scanned = scanned.map_err(|e| {
            let what = match e.too_deep {
                Some(limit) => format!("nest deeper than {limit} levels"),
                None => "are not valid JSON".to_string(),
            };
            self.malformed(
                &format!("{what} (line {}, column {})", e.line, e.column),
                &format!("Fix the file or log in again with {}.", self.owner.relogin),
            )
        })?;
        let doc = scanned.view(&bytes, self.keys.as_deref()).map_err(|e| {
            self.malformed(
                &format!(
                    "nest deeper than {} levels inside the login (line {}, column {})",
                    json_doc::MAX_VIEW_DEPTH,
                    e.line,
                    e.column
                ),
                &format!("Fix the file or log in again with {}.", self.owner.relogin),
            )
        })?;
        let loose_mode = loose_mode(&target);
        Ok(Snapshot { doc, loose_mode })
    }

    /// Writes `doc` (a [`Snapshot::doc`] as read, changed) atomically, mode 0600, to the
    /// symlink's target. Over a file that is valid JSON, by editing its bytes: what `doc` leaves
    /// unchanged keeps every byte, and new values follow the file's own layout (one line, or its
    /// indent). Otherwise the whole file is written anew in this file's layout.
    pub fn write(&self, doc: &Value, _guard: &WriteGuard<'_>) -> io::Result<()> {
        let target = self.target().map_err(|e| io::Error::other(e.to_string()))?;
        #[cfg(unix)]
        if !self.follow_links {
            // One open folder for the read and the write: no link can come between them.
            let (folder, name) = self.in_folder()?;
            let old = folder.read(name, MAX_CREDENTIALS).ok();
            let bytes = self.bytes_for(doc, old.as_deref())?;
            return folder.write_atomic(name, &bytes, self.perms);
        }
        let old = self.read_bytes(&target).ok();
        let bytes = self.bytes_for(doc, old.as_deref())?;
        remove_abandoned_temps(&target);
        write_atomic_as(&target, &bytes, self.perms)
    }

    /// The bytes that hold `doc`: over `old` bytes that are valid JSON, those bytes edited
    /// (what `doc` leaves unchanged keeps every byte, new values follow the file's layout);
    /// otherwise the whole document in this file's layout.
    fn bytes_for(&self, doc: &Value, old: Option<&[u8]>) -> io::Result<Vec<u8>> {
        if let Some(old) = old.filter(|b| json_doc::validate(b).is_ok()) {
            let style = json_doc::Style {
                indent: FileLayout::of(old).indent,
            };
            return Ok(json_doc::rewrite(old, doc, self.keys.as_deref(), &style));
        }
        match self.layout {
            Layout::Compact => serde_json::to_vec(doc),
            Layout::Pretty => serde_json::to_vec_pretty(doc),
            Layout::AsFound => old
                .map_or_else(FileLayout::no_file, FileLayout::of)
                .encode(doc),
        }
        .map_err(io::Error::other)
    }

    pub fn missing(&self) -> Error {
        Error::Missing {
            provider: self.owner.name,
            relogin: self.owner.relogin,
            path: self.path.clone(),
        }
    }

    pub fn malformed(&self, problem: &str, hint: &str) -> Error {
        Error::Malformed {
            path: self.path.clone(),
            problem: problem.to_string(),
            hint: hint.to_string(),
        }
    }

    fn inaccessible(&self, action: &'static str, source: io::Error) -> Error {
        Error::Inaccessible {
            action,
            path: self.path.clone(),
            hint: format!(
                "Fix its owner and permissions: it should be yours, mode 0600 (`chmod 600 {}`)",
                self.path.display()
            ),
            source,
        }
    }
}

/// How an existing file is laid out, as far as [`Layout::AsFound`] copies it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileLayout {
    /// The indent of one level, or None for a file on one line.
    indent: Option<Vec<u8>>,
    trailing_newline: bool,
}

impl FileLayout {
    /// No file yet: indented by two spaces, no trailing newline.
    fn no_file() -> FileLayout {
        FileLayout {
            indent: Some(b"  ".to_vec()),
            trailing_newline: false,
        }
    }

    /// A document that spans lines is indented: one level is the leading blanks of its first
    /// indented line (two spaces if none is). Only the layout is copied, not every byte: spacing
    /// after `:` or `,` on one line, CRLF line ends and mixed indents come back as serde_json
    /// writes them.
    fn of(bytes: &[u8]) -> FileLayout {
        let body = bytes.trim_ascii_end();
        let trailing_newline = bytes[body.len()..].contains(&b'\n');
        if !body.contains(&b'\n') {
            return FileLayout {
                indent: None,
                trailing_newline,
            };
        }
        let indent = body
            .split(|b| *b == b'\n')
            .skip(1)
            .map(|line| {
                let blanks = line
                    .iter()
                    .take_while(|b| matches!(b, b' ' | b'\t'))
                    .count();
                &line[..blanks]
            })
            .find(|blanks| !blanks.is_empty())
            .unwrap_or(b"  ");
        FileLayout {
            indent: Some(indent.to_vec()),
            trailing_newline,
        }
    }

    fn encode(&self, doc: &Value) -> serde_json::Result<Vec<u8>> {
        let mut out = match &self.indent {
            None => serde_json::to_vec(doc)?,
            Some(indent) => {
                let mut out = Vec::new();
                let formatter = serde_json::ser::PrettyFormatter::with_indent(indent);
                let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
                serde::Serialize::serialize(doc, &mut ser)?;
                out
            }
        };
        if self.trailing_newline {
            out.push(b'\n');
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const OWNER: Owner = Owner {
        provider: "claude",
        name: "Claude Code",
        relogin: "`claude /login`",
    };

    #[test]
    fn write_keeps_numbers_and_order_and_sets_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let text = r#"{"z":1.50,"a":{"y":1e+21,"b":[1,2]},"m":"\u00e9"}"#;
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let file = CredentialsFile::new(&path, OWNER);
        let snap = file.read().unwrap();
        assert_eq!(snap.loose_mode, Some(0o644));
        file.write(&snap.doc, &WriteGuard::new(&())).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            text,
            "an unchanged document is written back byte for byte, escapes too"
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn as_found_keeps_one_line_or_the_indent_and_the_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let file = CredentialsFile::new(&path, OWNER).with_layout(Layout::AsFound);
        let doc = serde_json::json!({"a": {"b": [1, 2]}, "c": "d"});
        let guard = WriteGuard::new(&());
        file.write(&doc, &guard).unwrap();
        let new = "{\n  \"a\": {\n    \"b\": [\n      1,\n      2\n    ]\n  },\n  \"c\": \"d\"\n}";
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            new,
            "no file yet: two spaces"
        );
        for (before, after) in [
            ("{\"x\":1}", r#"{"a":{"b":[1,2]},"c":"d"}"#.to_string()),
            (
                "{\"x\":1}\n",
                "{\"a\":{\"b\":[1,2]},\"c\":\"d\"}\n".to_string(),
            ),
            ("{\n    \"x\": 1\n}\n", new.replace("  ", "    ") + "\n"),
            ("{\n\t\"x\": 1\n}", new.replace("  ", "\t")),
            ("{\n\"x\": 1\n}", new.to_string()),
        ] {
            fs::write(&path, before).unwrap();
            file.write(&doc, &guard).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), after, "{before:?}");
        }
    }

    #[test]
    fn write_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("link.json");
        fs::write(&real, "{}").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let file = CredentialsFile::new(&link, OWNER);
        file.write(&serde_json::json!({"k":1}), &WriteGuard::new(&()))
            .unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&real).unwrap(), r#"{"k":1}"#);
    }

    #[test]
    fn read_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let file = CredentialsFile::new(&path, OWNER);
        assert!(matches!(file.read(), Err(Error::Missing { .. })));
        fs::write(&path, "").unwrap();
        assert!(file.read().unwrap_err().to_string().contains("are empty"));
        fs::write(&path, "{\n  \"a\": ,}").unwrap();
        let msg = file.read().unwrap_err().to_string();
        assert!(msg.contains("line 2"), "{msg}");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::os::unix::fs::symlink(&a, &b).unwrap();
        std::os::unix::fs::symlink(&b, &a).unwrap();
        let looped = CredentialsFile::new(&a, OWNER);
        assert!(
            looped
                .read()
                .unwrap_err()
                .to_string()
                .contains("symlink loop")
        );
    }
}
