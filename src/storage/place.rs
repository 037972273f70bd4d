//! Where a login is kept: its credentials file, or (Claude Code on macOS) the Keychain with the
//! file as fallback, as Claude Code itself does. Both places are a [`Place`], which hands out a
//! [`Snapshot`] and writes only under a [`WriteGuard`]; a `CredentialsFile` reads through them
//! in order and writes back to the one that held the login. Which places a login has is the
//! provider's fact (`provider::open_credentials`), made once per command from `[claude] store`
//! ([`Choice`]).

use crate::error::Error;
use serde_json::Value;
use std::io;

/// A parsed document, with what we noticed about the file it came from. The document holds the
/// tokens, so a debug print leaves it out.
#[derive(Clone)]
pub struct Snapshot {
    /// The document, or read from a file whose reader has keys
    /// ([`CredentialsFile::with_keys`](crate::storage::credentials_file::CredentialsFile::with_keys)), an object of just those top-level keys: what a write
    /// of it changes.
    pub doc: Value,
    /// Permission bits when the file is readable by group or others (worth a warning).
    pub loose_mode: Option<u32>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("doc", &crate::secret::REDACTED)
            .field("loose_mode", &self.loose_mode)
            .finish()
    }
}

/// Proof that the caller holds the lock under which writes to this file happen. Only the
/// provider module that knows which lock that is can make one.
pub struct WriteGuard<'a> {
    _held: std::marker::PhantomData<&'a ()>,
}

impl<'a> WriteGuard<'a> {
    pub fn new<T>(_held: &'a T) -> Self {
        WriteGuard {
            _held: std::marker::PhantomData,
        }
    }
}

/// One place a credentials document can live.
pub trait Place: Send + Sync + std::fmt::Debug {
    /// The document, or what stands in the way. An `Err` is final: no other place is tried.
    fn load(&self) -> Result<Held, Error>;
    /// Replaces the document; only under the lock the CLI writes under.
    fn save(&self, doc: &Value, guard: &WriteGuard<'_>) -> io::Result<()>;
    /// For messages: the path, or which Keychain item.
    fn describe(&self) -> String;
}

/// What a place held when asked.
#[derive(Debug)]
pub enum Held {
    Login(Snapshot),
    /// No login here: look in the next place.
    Nothing,
    /// The place cannot be read now (a locked Keychain). The next place may serve instead; if
    /// none holds a login, this is the error to report.
    Unreadable(Error),
}

/// `[claude] store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The Keychain on macOS for Claude Code's own file, the file everywhere else.
    Auto,
    File,
    Keychain,
}

impl Choice {
    pub fn parse(text: Option<&str>) -> Result<Choice, String> {
        match text {
            None | Some("auto") => Ok(Choice::Auto),
            Some("file") => Ok(Choice::File),
            Some("keychain") => Ok(Choice::Keychain),
            Some(other) => Err(format!(
                "[claude] store = \"{other}\" is not a store; use \"auto\", \"file\" or \"keychain\""
            )),
        }
    }
}

/// Whether the Keychain is read (first) for a login. `auto` follows Claude Code: the Keychain on
/// macOS, but only for the file Claude itself uses; a file named with `--credentials` or
/// `credentials =` is that file alone.
pub fn wants_keychain(choice: Choice, on_macos: bool, default_path: bool) -> bool {
    match choice {
        Choice::File => false,
        Choice::Keychain => true,
        Choice::Auto => on_macos && default_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_means_the_keychain_only_on_macos_for_claudes_own_file() {
        use Choice::*;
        for (choice, macos, default, wanted) in [
            (Auto, true, true, true),
            (Auto, true, false, false),
            (Auto, false, true, false),
            (File, true, true, false),
            (Keychain, false, false, true),
            (Keychain, true, false, true),
        ] {
            assert_eq!(
                wants_keychain(choice, macos, default),
                wanted,
                "{choice:?} macos={macos} default={default}"
            );
        }
        assert_eq!(Choice::parse(None), Ok(Auto));
        assert_eq!(Choice::parse(Some("keychain")), Ok(Keychain));
        let err = Choice::parse(Some("Keychain")).unwrap_err();
        assert!(err.contains("\"auto\", \"file\" or \"keychain\""), "{err}");
    }
}
