//! What differs between the CLIs whose logins tokenkeeper keeps: where the login lives, how its
//! JSON maps to a [`Login`], what the token request looks like, which answers mean the login is
//! dead, how new tokens are written back, which of the CLI's own locks to honour, and how a run
//! of the CLI is handed a token. The refresh protocol (`src/refresh/`) is the same for all of them.
//!
//! Each provider is a module of its own (`claude`, `codex`, `gemini`, `generic`); this one holds
//! the trait they implement, the few types they share, and the registry: the one list of the
//! built-in providers by name, from which `--provider`, the config file's tables and the service
//! definition's variables are drawn. `shape` is the fleet's view of a credentials document.

pub mod claude;
pub mod codex;
pub mod gemini;
pub(crate) mod generic;
pub(crate) mod json_pointer;
pub(crate) mod login_table;
pub(crate) mod shape;

use crate::error::Error;
use crate::lock::dir_lock::DirLockSpec;
use crate::login::{EpochMs, Login};
use crate::oauth::endpoint::TokenResponse;
use crate::secret::Secret;
use crate::settings::Settings;
use crate::storage::credentials_file::{CredentialsFile, Layout, Owner};
use crate::storage::keychain::Keychain;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a provider is, as data: its names, its defaults, and the facts about its CLI that need
/// no code. A built-in provider's are a constant; a `[[login]]` table's are built from it.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    /// Names for messages and the state folder.
    pub owner: Owner,
    /// Refresh when less than this is left, unless configured otherwise.
    pub default_min_ttl: Duration,
    /// Defaults for the token request: URL, client id, scope, User-Agent.
    pub defaults: Defaults,
    /// Which error answers mean the login is dead (most: OAuth's own codes).
    pub rejection_rule: RejectionRule,
    /// How the CLI writes its file, which our writes copy.
    pub layout: Layout,
    /// The CLI rewrites the file in place without a lock, so an empty or cut-off file is a write
    /// in progress: read it again shortly, never take it for a logout.
    pub rewritten_in_place: bool,
    /// Variables that make the CLI ignore the stored login (`exec` warns when one is set).
    pub overriding_env: &'static [&'static str],
    /// The exit code by which the CLI says it could not authenticate, when it has one (Gemini
    /// CLI: 41); `exec` treats it as an auth failure even when the output says nothing.
    pub auth_failure_exit_code: Option<i32>,
    /// Variables that decide where the CLI keeps its login. A service manager starts the daemon
    /// without the installing shell's environment, so a service definition carries those that
    /// are set; otherwise the daemon would quietly watch the default folder instead.
    pub home_env: &'static [&'static str],
    /// Where the CLI keeps its login in the macOS Keychain, if it ever does: the item for an
    /// environment, or why it cannot be named. Only such a provider has a `store` setting.
    pub keychain: Option<KeychainItem>,
}

impl Facts {
    /// The facts most CLIs share, for `owner` and `defaults`: OAuth's rejection rule, a
    /// compact file rewritten atomically, no variables, no Keychain.
    pub const fn new(owner: Owner, default_min_ttl: Duration, defaults: Defaults) -> Facts {
        Facts {
            owner,
            default_min_ttl,
            defaults,
            rejection_rule: RejectionRule::OAuth,
            layout: Layout::Compact,
            rewritten_in_place: false,
            overriding_env: &[],
            auth_failure_exit_code: None,
            home_env: &[],
            keychain: None,
        }
    }
}

/// One provider's rules: its [`Facts`], and the code that reads, requests and writes its login.
/// Implementations are pure (no I/O) except where a method says otherwise.
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// What the provider is, as data.
    fn facts(&self) -> &Facts;

    /// Where the CLI keeps its login when nothing else is configured; `env` reads a variable
    /// (the real environment, or a test's). None when the environment names no home.
    fn default_path(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf>;

    /// Anything a refresh needs that the settings do not give, found now (may read files), or
    /// what to do about it. Called before a refresh takes its locks; never on the fast path.
    fn ready(&self, _settings: &Settings) -> Result<(), String> {
        Ok(())
    }

    /// When the credentials file is missing: a better error than "no login", if the CLI keeps
    /// its login somewhere tokenkeeper cannot use (an encrypted store, say).
    fn when_missing(&self, _file: &CredentialsFile) -> Option<Error> {
        None
    }

    /// Reads the login out of a parsed credentials document. A wiped login (empty tokens) parses
    /// to a [`Login`] with empty tokens, which [`Login::freshness`] calls dead.
    fn parse(&self, file: &CredentialsFile, doc: &Value) -> Result<Login, Error>;

    /// Which part of the credentials document is the login, and how an access-only copy of it
    /// (a fleet machine's file, a mirror) is made: the keys it shares, the refresh token it
    /// leaves out. Fleet mode and mirrors keep the logins of every provider that names one (each
    /// built-in provider, and every `[[login]]` table, from its pointers). Its keys are among
    /// [`Provider::doc_keys`], so that a read sees all of the login. A method rather than a field
    /// of [`Facts`]: a table's shape is owned, and a built-in provider's `Facts` stay a constant.
    fn copy_shape(&self) -> Option<&shape::Shape> {
        None
    }

    /// The top-level keys of the credentials document that [`Provider::parse`], [`Provider::apply`]
    /// and the copy shape look at, or None for the whole document. A read builds a `Value` of
    /// these alone (the rest of the file is checked but never decoded, and a write keeps it byte
    /// for byte), so a key left out here is invisible to the provider.
    fn doc_keys(&self) -> Option<Vec<String>> {
        None
    }

    /// The refresh token a document holds, or "" when it holds none (or is not this provider's):
    /// by default, the string where the copy shape says the refresh token is.
    fn stored_refresh_token<'a>(&self, doc: &'a Value) -> &'a str {
        self.copy_shape()
            .map_or("", |shape| shape.refresh_token(doc))
    }

    /// The refresh request for `refresh_token`.
    fn token_request(&self, refresh_token: &Secret, settings: &Settings) -> TokenRequest;

    /// Whether `invalid_client` blames the client settings we send (a client secret from the
    /// config or an installed CLI) rather than the login: then it is a configuration error, and
    /// the login is not marked dead.
    fn invalid_client_is_config(&self, _settings: &Settings) -> bool {
        false
    }

    /// Writes a token response into the document, changing only the token fields; every other
    /// key keeps its value and its place.
    fn apply(&self, doc: &mut Value, response: &TokenResponse, now: EpochMs);

    /// The CLI's own locks that a refresh holds across the token request, in the CLI's order.
    fn refresh_locks(&self, _file: &CredentialsFile) -> Vec<DirLockSpec> {
        Vec::new()
    }

    /// The CLI's own lock(s) that a write of the credentials happens under.
    fn save_lock(&self, _file: &CredentialsFile) -> SaveLock {
        SaveLock::None
    }

    /// The environment that hands a run of the CLI only the access token
    /// (`exec --inject env`), or why the CLI cannot take one that way.
    fn inject_env(&self, access_token: &Secret) -> Result<Vec<(String, String)>, String>;
}

/// The Keychain item a provider keeps its login in, for an environment (`USER`, `PATH`, the
/// CLI's own folder variables).
pub type KeychainItem = fn(&dyn Fn(&str) -> Option<String>) -> Result<Keychain, String>;

pub use crate::settings::Defaults;

// The request and the rule for its answers are the token endpoint's wire types (`oauth/`);
// each provider fills them in.
pub use crate::oauth::request::{Body, RejectionRule, TokenRequest};

pub use crate::lock::take::SaveLock;

/// The registry: every built-in provider by its `--provider` name (which is also its config
/// table and its [`Owner::provider`]), in the order `status` lists them. A new provider is one
/// more line here.
const REGISTRY: &[(&str, MakeProvider)] = &[
    ("claude", || Arc::new(claude::Claude)),
    ("codex", || Arc::new(codex::Codex)),
    ("gemini", || Arc::new(gemini::Gemini::default())),
];

type MakeProvider = fn() -> Arc<dyn Provider>;

/// The provider a command works on when neither `--provider` nor the program `exec` runs names
/// one, and whose absence `status` reports when no login is found at all.
pub const DEFAULT: &str = "claude";

/// The built-in providers' names, in the order `status` lists them.
pub fn names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|(name, _)| *name)
}

/// Every built-in provider, in the order `status` lists them.
pub fn all() -> impl Iterator<Item = Arc<dyn Provider>> {
    REGISTRY.iter().map(|(_, make)| make())
}

/// A built-in provider by its `--provider` name.
pub fn builtin(name: &str) -> Option<Arc<dyn Provider>> {
    REGISTRY
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, make)| make())
}

/// The variables every built-in provider's login depends on ([`Facts::home_env`]), each once,
/// in registry order.
pub fn home_env() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for provider in all() {
        for name in provider.facts().home_env {
            if !out.contains(name) {
                out.push(name);
            }
        }
    }
    out
}

/// A token under `key` of a JSON object: a string, or empty when absent or null (a wiped login).
/// Anything else is malformed; `shown` is how the message names the key, `relogin` the fix.
pub fn token_field(
    file: &CredentialsFile,
    object: &serde_json::Map<String, Value>,
    key: &str,
    shown: &str,
    relogin: &str,
) -> Result<Secret, Error> {
    match object.get(key) {
        Some(Value::String(s)) => Ok(Secret::new(s.clone())),
        Some(Value::Null) | None => Ok(Secret::default()),
        Some(_) => {
            Err(file.malformed(&format!("have a \"{shown}\" that is not a string"), relogin))
        }
    }
}

/// Epoch milliseconds under `key`: a number (0, already expired, when absent or null); a number
/// out of range or anything else is malformed.
pub fn epoch_ms_field(
    file: &CredentialsFile,
    object: &serde_json::Map<String, Value>,
    key: &str,
    relogin: &str,
) -> Result<EpochMs, Error> {
    match object.get(key) {
        Some(v) if v.is_number() => epoch_ms(v)
            .ok_or_else(|| file.malformed(&format!("have an \"{key}\" out of range"), relogin)),
        None | Some(Value::Null) => Ok(0),
        Some(_) => Err(file.malformed(&format!("have an \"{key}\" that is not a number"), relogin)),
    }
}

/// The object at `key` of `root`, made empty first when it is missing or not an object, for a
/// write of new tokens into it; every other key of it keeps its value and place.
pub fn object_at<'a>(
    root: &'a mut serde_json::Map<String, Value>,
    key: &str,
) -> &'a mut serde_json::Map<String, Value> {
    let slot = root
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(serde_json::Map::new());
    }
    match slot {
        Value::Object(object) => object,
        _ => unreachable!("made an object above"),
    }
}

/// A JSON number as epoch milliseconds: an integer, or a float rounded (None when out of range).
pub fn epoch_ms(v: &Value) -> Option<EpochMs> {
    v.as_i64().or_else(|| {
        let f = v.as_f64()?;
        (f.is_finite() && f.abs() < 9.0e18).then(|| f.round() as i64)
    })
}

/// `$NAME` when set and not empty.
pub fn env_path(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<PathBuf> {
    env(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The user's home folder: `$HOME`, else (on Windows) `$USERPROFILE`.
pub fn home(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env_path(env, "HOME").or_else(|| env_path(env, "USERPROFILE"))
}

/// Where `provider`'s login at `path` is kept: its file, or (a provider with a Keychain item,
/// as `store` in its config table chooses) the Keychain first; an error names the key to fix.
pub fn open_credentials(
    provider: &dyn Provider,
    path: PathBuf,
    store: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CredentialsFile, String> {
    use crate::storage::place::{Choice, wants_keychain};
    let keychain = provider.facts().keychain;
    if let Some(store) = store
        && keychain.is_none()
    {
        let with_store: Vec<String> = all()
            .filter(|p| p.facts().keychain.is_some())
            .map(|p| format!("[{}]", p.facts().owner.provider))
            .collect();
        return Err(format!(
            "store = \"{store}\": only {} has a store setting; remove it",
            with_store.join(", ")
        ));
    }
    let choice = Choice::parse(store)?;
    let default_path = provider.default_path(env).as_deref() == Some(path.as_path());
    let file = CredentialsFile::new(path, provider.facts().owner)
        .with_layout(provider.facts().layout)
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
    use std::path::PathBuf;

    /// Each CLI's own variables, as it reads them: set but empty is as if unset, except
    /// Claude's secure-storage folder, whose empty value means `~/.claude`.
    #[test]
    fn each_provider_finds_its_file_where_its_cli_does() {
        // The provider, its environment (`NAME=value …`), the file it reads ("" for none).
        #[rustfmt::skip]
        let rows = [
            ("claude", "HOME=/h",                                  "/h/.claude/.credentials.json"),
            ("claude", "HOME=/h CLAUDE_CONFIG_DIR=/c",             "/c/.credentials.json"),
            ("claude", "HOME=/h CLAUDE_CONFIG_DIR=",               "/h/.claude/.credentials.json"),
            ("claude", "HOME=/h CLAUDE_CONFIG_DIR=/c CLAUDE_SECURESTORAGE_CONFIG_DIR=/s",
                                                                   "/s/.credentials.json"),
            ("claude", "HOME=/h CLAUDE_CONFIG_DIR=/c CLAUDE_SECURESTORAGE_CONFIG_DIR=",
                                                                   "/h/.claude/.credentials.json"),
            ("codex",  "HOME=/h",                                  "/h/.codex/auth.json"),
            ("codex",  "HOME=/h CODEX_HOME=/c",                    "/c/auth.json"),
            ("codex",  "HOME=/h CODEX_HOME=",                      "/h/.codex/auth.json"),
            ("codex",  "USERPROFILE=/u",                           "/u/.codex/auth.json"),
            ("codex",  "",                                         ""),
            ("gemini", "HOME=/h",                                  "/h/.gemini/oauth_creds.json"),
            ("gemini", "HOME=/h GEMINI_CLI_HOME=/g",               "/g/.gemini/oauth_creds.json"),
            ("gemini", "HOME=/h GEMINI_CLI_HOME=",                 "/h/.gemini/oauth_creds.json"),
            ("gemini", "",                                         ""),
        ];
        for (name, vars, want) in rows {
            let pairs: Vec<(&str, &str)> = vars
                .split_whitespace()
                .map(|pair| pair.split_once('=').expect("NAME=value"))
                .collect();
            let provider = builtin(name).expect("a built-in provider");
            assert_eq!(
                provider.default_path(&crate::testing::env(&pairs)),
                (!want.is_empty()).then(|| PathBuf::from(want)),
                "{name} with {vars}"
            );
        }
    }

    #[test]
    fn open_gives_claude_the_keychain_it_asks_for() {
        let env = crate::testing::env(&[("HOME", "/home/me"), ("USER", "me")]);
        let path = PathBuf::from("/home/me/.claude/.credentials.json");
        let table = |store: &'static str| Some(store);
        let file = open_credentials(&Claude, path.clone(), table("keychain"), &env).unwrap();
        let keychain = file.keychain().expect("keychain");
        assert_eq!(
            keychain.service(),
            crate::provider::claude::KEYCHAIN_SERVICE
        );
        assert_eq!(keychain.account(), "me");
        assert_eq!(file.path(), path, "locks and state stay with the file");
        assert!(
            open_credentials(&Claude, path.clone(), table("file"), &env)
                .unwrap()
                .keychain()
                .is_none()
        );
        let auto = open_credentials(&Claude, path.clone(), None, &env).unwrap();
        assert_eq!(auto.keychain().is_some(), cfg!(target_os = "macos"));
        let err = open_credentials(&Claude, path, table("vault"), &env).unwrap_err();
        assert!(err.contains("\"vault\""), "{err}");
    }

    #[test]
    fn the_registry_names_each_provider_as_it_names_itself() {
        assert_eq!(names().collect::<Vec<_>>(), ["claude", "codex", "gemini"]);
        for name in names() {
            assert_eq!(builtin(name).map(|p| p.facts().owner.provider), Some(name));
        }
        assert!(builtin("mytool").is_none());
        assert!(builtin(DEFAULT).is_some());
        assert_eq!(
            home_env(),
            [
                "CLAUDE_CONFIG_DIR",
                "CLAUDE_SECURESTORAGE_CONFIG_DIR",
                "CODEX_HOME",
                "GEMINI_CLI_HOME"
            ]
        );
    }

    #[test]
    fn form_bodies_are_escaped() {
        let body = Body::Form(vec![
            ("refresh_token".into(), "1//a b+c/=&".into()),
            ("grant_type".into(), "refresh_token".into()),
        ]);
        let (kind, bytes) = body.encode();
        assert_eq!(kind, "application/x-www-form-urlencoded");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "refresh_token=1%2F%2Fa+b%2Bc%2F%3D%26&grant_type=refresh_token"
        );
    }
}
