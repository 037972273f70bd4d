//! Where a login is kept: its credentials file, or (Claude Code on macOS) the Keychain with the
//! file as fallback, as Claude Code itself does. Both places are a [`Place`]; a
//! [`CredentialsFile`] reads through them in order and writes back to the one that held the
//! login. The choice is made once per command, here, from the provider (whether its CLI uses the
//! Keychain at all, [`Provider::keychain`]) and its config table.

use crate::config::ProviderConfig;
use crate::error::Error;
use crate::provider::Provider;
use crate::storage::credentials_file::{CredentialsFile, Snapshot, WriteGuard};
use serde_json::Value;
use std::io;
use std::path::PathBuf;

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

/// The store for `provider`'s login at `path`; an error names the config key to fix.
pub fn open(
    provider: &dyn Provider,
    path: PathBuf,
    table: &ProviderConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CredentialsFile, String> {
    let keychain = provider.keychain();
    if let Some(store) = &table.store
        && keychain.is_none()
    {
        let with_store: Vec<String> = crate::provider::all()
            .filter(|p| p.keychain().is_some())
            .map(|p| format!("[{}]", p.owner().provider))
            .collect();
        return Err(format!(
            "store = \"{store}\": only {} has a store setting; remove it",
            with_store.join(", ")
        ));
    }
    let choice = Choice::parse(table.store.as_deref())?;
    let default_path = provider.default_path(env).as_deref() == Some(path.as_path());
    let file = CredentialsFile::new(path, provider.owner())
        .with_layout(provider.layout())
        .with_keys(provider.doc_keys());
    if let Some(item) = keychain
        && wants_keychain(choice, cfg!(target_os = "macos"), default_path)
    {
        return Ok(file.with_keychain(item(env)?));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::claude::Claude;

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

    #[test]
    fn open_gives_claude_the_keychain_it_asks_for() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/me".to_string()),
            "USER" => Some("me".to_string()),
            _ => None,
        };
        let path = PathBuf::from("/home/me/.claude/.credentials.json");
        let table = |store: &str| ProviderConfig {
            store: Some(store.to_string()),
            ..ProviderConfig::default()
        };
        let file = open(&Claude, path.clone(), &table("keychain"), &env).unwrap();
        let keychain = file.keychain().expect("keychain");
        assert_eq!(
            keychain.service(),
            crate::provider::claude::KEYCHAIN_SERVICE
        );
        assert_eq!(keychain.account(), "me");
        assert_eq!(file.path(), path, "locks and state stay with the file");
        assert!(
            open(&Claude, path.clone(), &table("file"), &env)
                .unwrap()
                .keychain()
                .is_none()
        );
        let auto = open(&Claude, path.clone(), &ProviderConfig::default(), &env).unwrap();
        assert_eq!(auto.keychain().is_some(), cfg!(target_os = "macos"));
        let err = open(&Claude, path, &table("vault"), &env).unwrap_err();
        assert!(err.contains("\"vault\""), "{err}");
    }
}
