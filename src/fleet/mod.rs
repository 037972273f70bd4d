//! Fleet mode: one login shared by many machines, its authoritative copy kept in a PostgreSQL
//! table. Refresh tokens are single-use, so machines that refresh on their own burn each other's
//! tokens; here the row lock (`SELECT … FOR UPDATE`) takes the place of the file lock, so that
//! exactly one refresh happens per token lifetime across the whole fleet, and every machine
//! writes the current access token (never the refresh token) into its own credentials file.
//!
//! - [`crypto`]: the fleet key; logins are stored only as AES-256-GCM ciphertext.
//! - [`database`]: the SQL: the table, reads, the row lock, writes, notifications.
//! - [`shape`]: which providers' logins the fleet shares (each provider names its own shape).
//! - [`refresh`]: the protocol: read, refresh under the row lock, write back what was missed.
//! - [`local`]: this machine's copy, without the refresh token.
//! - [`push`]: `tokenkeeper fleet push`.
//! - [`daemon`]: the watchdog of a fleet machine, woken by the store's notifications.
//! - [`rollback`]: each machine remembers the newest version of the login it has seen and
//!   refuses a store put back to an older one.
//!
//! Every installation has an identity of its own, [`machine_id`] (a random 128-bit id made once
//! in its state folder), beside its name: names repeat (cloned VMs and containers share host
//! names), so whatever must tell machines apart (the note of a token request under way) uses
//! the id, and messages show both, `host (id 1a2b3c4d)`.
//!
//! Nothing changes for a single machine: without a `[store]`, the local file is the store.

pub mod crypto;
pub(crate) mod daemon;
pub(crate) mod database;
pub(crate) mod local;
pub(crate) mod login;
pub(crate) mod push;
pub(crate) mod refresh;
pub(crate) mod rollback;
pub(crate) mod shape;

use crate::error::{Error, FleetError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The environment variable naming the store (the `--store` flag reads it too).
pub const STORE_ENV: &str = "TOKENKEEPER_STORE";

/// `[store]` in the config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user:password@host/db` (or libpq's `key=value` form).
    pub url: Option<DatabaseUrl>,
    /// A file holding the fleet key (64 hex digits), readable by its owner alone.
    pub key_file: Option<PathBuf>,
    /// How this machine is named in the store [default: its host name].
    pub machine: Option<String>,
    /// When a machine lost its connection (or died) with a token request out, how long the
    /// others wait for it to write the new tokens (from its recovery file) before they post
    /// that refresh token themselves [default: 2m, after the request timeout].
    pub takeover_after: Option<String>,
}

/// The resolved store of a fleet machine.
#[derive(Debug)]
pub struct Fleet {
    /// The URL as given: it may hold a password, so it is only used to connect; see `shown`.
    url: DatabaseUrl,
    /// The URL without its password, for messages.
    pub shown: String,
    pub key: crypto::Key,
    pub key_source: crypto::KeySource,
    pub machine: String,
    /// See [`StoreConfig::takeover_after`].
    pub takeover_after: std::time::Duration,
}

/// Default of `[store] takeover_after`.
pub const TAKEOVER_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

impl Fleet {
    /// The store named by the flag or environment (`url`), else by `[store] url`; None when
    /// neither names one (then the local file is the store). A store without a usable key is a
    /// configuration error: tokenkeeper refuses to start rather than fall back to refreshing
    /// on its own.
    pub fn resolve(
        url: Option<DatabaseUrl>,
        config: &StoreConfig,
        config_path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Fleet>, Error> {
        let Some(url) = url
            .filter(|u| !u.is_blank())
            .or_else(|| config.url.clone().filter(|u| !u.is_blank()))
        else {
            return Ok(None);
        };
        let shown = url.without_password();
        let key_file = config.key_file.as_ref().map(|p| {
            if p.is_relative() {
                crate::storage::atomic::folder_of(config_path).join(p)
            } else {
                p.clone()
            }
        });
        let env_key = env(crypto::KEY_ENV);
        let (key, key_source) = crypto::load(env_key.as_deref(), key_file.as_deref())
            .map_err(|why| Error::Fleet(FleetError::Config(format!("store {shown}: {why}"))))?;
        let takeover_after = match &config.takeover_after {
            None => TAKEOVER_AFTER,
            Some(text) => crate::duration::parse(text).map_err(|e| Error::Config {
                path: config_path.to_path_buf(),
                problem: format!("[store] takeover_after: {e}"),
            })?,
        };
        let machine = config
            .machine
            .clone()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(host_name);
        Ok(Some(Fleet {
            url,
            shown,
            key,
            key_source,
            machine,
            takeover_after,
        }))
    }

    /// The connection string, password included: only for connecting.
    pub fn url(&self) -> &str {
        self.url.expose()
    }
}

/// The fleet database's connection string as given (`--store`, `TOKENKEEPER_STORE`,
/// `[store] url`). It may hold a password, so `Display` and `Debug` show it as `****`; messages
/// use [`DatabaseUrl::without_password`], and only connecting sees the whole string.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }

    /// The whole string, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Empty or white space only: names no database.
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// The string for messages: without the password at all ([`redact`]).
    pub fn without_password(&self) -> String {
        redact(&self.0)
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> DatabaseUrl {
        DatabaseUrl(url)
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask(&self.0))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", mask(&self.0))
    }
}

/// This installation's identity: 32 hex digits, made once in the state folder (`machine-id`,
/// 0600) and kept. Where it cannot be written, a new one for this process alone, with a
/// warning: such a process never takes a note of a token request for its own.
pub fn machine_id(state: &crate::storage::state::StateDir) -> String {
    let fresh = || crypto::generate()[..32].to_string();
    state.machine_id(&fresh).unwrap_or_else(|e| {
        tracing::warn!(
            "could not keep this machine's id in {}: {e}; using one for this process only",
            state.root().display()
        );
        fresh()
    })
}

/// A machine as messages show it: `host (id 1a2b3c4d)`, or the name alone for a note written by
/// an earlier version (no id).
pub fn shown_machine(name: &str, id: &str) -> String {
    match id.get(..8) {
        Some(short) => format!("{name} (id {short})"),
        None => name.to_string(),
    }
}

/// This machine's host name, or "unknown".
#[cfg(unix)]
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "unknown".to_string(),
    }
}

/// This machine's name, or "unknown".
#[cfg(not(unix))]
pub fn host_name() -> String {
    std::env::var("COMPUTERNAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// A connection string without its password: `postgres://bot:secret@db/x` becomes
/// `postgres://bot@db/x`; `host=db password=secret` becomes `host=db`; a `password=` query
/// parameter goes too.
pub fn redact(url: &str) -> String {
    hide_password(url.trim(), Hide::Drop)
}

/// A connection string with its password as `****`: `postgres://bot:secret@db/x` becomes
/// `postgres://bot:****@db/x`; `password=secret` (libpq's form, or a query parameter)
/// `password=****`.
fn mask(url: &str) -> String {
    hide_password(url, Hide::Mask)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hide {
    /// Shown as `****` (what a debug print of the URL shows).
    Mask,
    /// Left out (what messages show).
    Drop,
}

/// The one reading of a connection string's parts (URL or libpq key=value form) that both
/// [`mask`] and [`redact`] hide the password in.
fn hide_password(url: &str, how: Hide) -> String {
    let hide = |part: &str| -> Option<String> {
        let is_password = part.len() >= 9 && part[..9].eq_ignore_ascii_case("password=");
        match (is_password, how) {
            (false, _) => Some(part.to_string()),
            (true, Hide::Mask) => Some(format!("{}****", &part[..9])),
            (true, Hide::Drop) => None,
        }
    };
    let pairs = |parts: Vec<&str>, sep: &str| -> String {
        parts
            .into_iter()
            .filter_map(hide)
            .collect::<Vec<_>>()
            .join(sep)
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        let parts = match how {
            Hide::Mask => url.split(' ').collect(),
            Hide::Drop => url.split_whitespace().collect(),
        };
        return pairs(parts, " ");
    };
    let (authority_and_path, query) = rest
        .split_once('?')
        .map_or((rest, None), |(a, q)| (a, Some(q)));
    let (authority, path) = authority_and_path
        .find('/')
        .map_or((authority_and_path, ""), |i| authority_and_path.split_at(i));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo
                .split_once(':')
                .map_or((userinfo, None), |(u, p)| (u, Some(p)));
            match how {
                Hide::Mask if password.is_some() => format!("{user}:****@{host}"),
                Hide::Drop if user.is_empty() => host.to_string(),
                _ => format!("{user}@{host}"),
            }
        }
        None => authority.to_string(),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(q) = query {
        let q = pairs(q.split('&').collect(), "&");
        if how == Hide::Mask || !q.is_empty() {
            out.push('?');
            out.push_str(&q);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        for (url, shown) in [
            (
                "postgres://bot:s3cret@db.example:5432/fleet",
                "postgres://bot@db.example:5432/fleet",
            ),
            ("postgresql://:pw@db/x", "postgresql://db/x"),
            ("postgres://db/x", "postgres://db/x"),
            (
                "postgres://u@db/x?sslmode=require&password=pw",
                "postgres://u@db/x?sslmode=require",
            ),
            ("postgres://u:p@db", "postgres://u@db"),
            (
                "host=db user=bot password=s3cret dbname=x",
                "host=db user=bot dbname=x",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn a_database_url_shows_its_password_as_stars() {
        for (url, masked) in [
            (
                "postgres://bot:s3cret@db.example:5432/fleet",
                "postgres://bot:****@db.example:5432/fleet",
            ),
            ("postgresql://:s3cret@db/x", "postgresql://:****@db/x"),
            ("postgres://db/x", "postgres://db/x"),
            ("postgres://bot@db/x", "postgres://bot@db/x"),
            (
                "postgres://u@db/x?sslmode=require&Password=s3cret",
                "postgres://u@db/x?sslmode=require&Password=****",
            ),
            (
                "host=db user=bot password=s3cret dbname=x",
                "host=db user=bot password=**** dbname=x",
            ),
        ] {
            let url = DatabaseUrl::new(url);
            assert_eq!(url.to_string(), masked);
            assert_eq!(format!("{url:?}"), format!("DatabaseUrl({masked:?})"));
        }
        let url = DatabaseUrl::new("postgres://bot:s3cret@db/x");
        assert_eq!(url.without_password(), "postgres://bot@db/x");
        assert_eq!(url.expose(), "postgres://bot:s3cret@db/x");
        let config: StoreConfig = toml::from_str("url = \"postgres://bot:s3cret@db/x\"").unwrap();
        assert_eq!(config.url.as_ref(), Some(&url));
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_fleet_and_its_payload_debug_print_no_secret() {
        let key = crypto::generate();
        let env = |k: &str| (k == crypto::KEY_ENV).then(|| key.clone());
        let fleet = Fleet::resolve(
            Some(DatabaseUrl::new("postgres://bot:s3cret@db/x")),
            &StoreConfig::default(),
            Path::new("/c/config.toml"),
            &env,
        )
        .unwrap()
        .unwrap();
        let shown = format!("{fleet:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("****"),
            "{shown}"
        );
        let payload = refresh::Payload {
            login: serde_json::json!({"claudeAiOauth": {"accessToken": "sk-ant-oat01-a", "refreshToken": "sk-ant-ort01-r"}}),
            spent: vec!["0a1b2c3d".into()],
            rejected: None,
            epoch: 0,
        };
        let shown = format!("{payload:?}");
        assert!(!shown.contains("sk-ant-"), "{shown}");
        assert!(shown.contains("0a1b2c3d"), "{shown}");
    }

    #[test]
    fn no_store_means_the_local_file_and_a_store_needs_its_key() {
        let cfg = StoreConfig::default();
        let none = |_: &str| None;
        let path = Path::new("/c/config.toml");
        assert!(Fleet::resolve(None, &cfg, path, &none).unwrap().is_none());
        let flag = |url: &str| Some(DatabaseUrl::new(url));
        let err = Fleet::resolve(flag("postgres://u:pw@db/x"), &cfg, path, &none)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("postgres://u@db/x") && !err.contains("pw") && err.contains("keygen"),
            "{err}"
        );
        let key = crypto::generate();
        let env = |k: &str| (k == crypto::KEY_ENV).then(|| key.clone());
        let cfg = StoreConfig {
            url: Some(DatabaseUrl::new("postgres://db/x")),
            machine: Some("build-3".into()),
            ..StoreConfig::default()
        };
        let fleet = Fleet::resolve(None, &cfg, path, &env).unwrap().unwrap();
        assert_eq!(fleet.machine, "build-3");
        assert_eq!(fleet.url(), "postgres://db/x");
        let wins = Fleet::resolve(flag("postgres://other/y"), &cfg, path, &env)
            .unwrap()
            .unwrap();
        assert_eq!(wins.shown, "postgres://other/y", "the flag wins");
    }
}
