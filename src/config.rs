//! The configuration file (TOML) and the settings it resolves to. Precedence, highest first:
//! command-line flag, environment variable, config file, built-in default.
//!
//! ```toml
//! [claude]
//! credentials = "/home/me/.claude/.credentials.json"
//! token_url = "https://platform.claude.com/v1/oauth/token"
//! client_id = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
//! scope = "user:profile user:inference ..."
//! user_agent = "axios/1.15.2"
//! min_ttl = "1h"           # refresh when less than this is left
//! request_timeout = "30s"  # one request to the token endpoint
//! retry_total = "60s"      # all attempts of one refresh
//! lock_timeout = "60s"     # waiting for another process's lock
//! store = "auto"           # Claude Code only: auto (Keychain on macOS), file, or keychain
//!
//! [codex]                  # the same keys, for Codex CLI (~/.codex/auth.json)
//! [gemini]                 # the same keys and client_secret, for Gemini CLI
//!
//! [[login]]                # any other OAuth login kept in a JSON file
//! name = "mytool"
//! credentials = "/home/me/.mytool/auth.json"
//! access_token = "/tokens/access_token"    # JSON pointers into the file
//! refresh_token = "/tokens/refresh_token"
//! expires_at = "/tokens/expires_at"        # not needed with expiry_unit = "jwt"
//! expiry_unit = "ms"                       # ms, s, rfc3339, or jwt (the access token's exp)
//! token_url = "https://auth.example.com/oauth/token"
//! client_id = "…"
//! client_secret = "…"                      # optional
//! scope = "offline_access"                 # optional
//! body = "form"                            # json (default) or form
//! extra_fields = { audience = "api" }      # more fields of the request body
//! headers = { "X-Client" = "tokenkeeper" } # more request headers
//! login_command = "mytool login"           # optional: how to log in again, for messages
//! env = "MYTOOL_TOKEN"                     # optional: the variable `exec --inject env` sets
//! min_ttl = "15m"                          # default 15m
//!
//! [daemon]
//! refresh_before = "1h"         # refresh when this much is left (at most half the lifetime)
//! login_ending_within = "3d"    # daily reminder to log in again before the login ends
//! notify_command = "notify-send tokenkeeper \"$TOKENKEEPER_MESSAGE\""
//! webhook = "https://discord.com/api/webhooks/…"
//! metrics = "127.0.0.1:9464"
//! ```

use crate::error::Error;
use crate::oauth::backoff::RetryPolicy;
use crate::provider::Provider;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub claude: ProviderConfig,
    #[serde(default)]
    pub codex: ProviderConfig,
    #[serde(default)]
    pub gemini: ProviderConfig,
    /// `[[login]]` tables: other tools' OAuth logins in JSON files.
    #[serde(default)]
    pub login: Vec<LoginTable>,
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// `[store]`: the fleet's shared store (see `fleet/`).
    #[cfg(feature = "fleet")]
    #[serde(default)]
    pub store: crate::fleet::StoreConfig,
    /// `[store]` in a build without fleet mode: read only so that `load` can refuse it.
    #[cfg(not(feature = "fleet"))]
    #[serde(default)]
    store: Option<serde::de::IgnoredAny>,
}

impl ConfigFile {
    /// The `[claude]`, `[codex]` or `[gemini]` table.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        match name {
            "claude" => Some(&self.claude),
            "codex" => Some(&self.codex),
            "gemini" => Some(&self.gemini),
            _ => None,
        }
    }
}

/// One `[[login]]` table: any OAuth login kept in a JSON file (see `provider/generic.rs`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginTable {
    /// What `--provider` calls it, and how status and alerts name it.
    pub name: String,
    pub credentials: PathBuf,
    /// JSON pointers (RFC 6901) to the tokens and the expiry.
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: Option<String>,
    /// `ms`, `s`, `rfc3339` or `jwt`.
    pub expiry_unit: String,
    /// `json` (default) or `form`.
    pub body: Option<String>,
    #[serde(default)]
    pub extra_fields: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The command that logs in again, for messages.
    pub login_command: Option<String>,
    /// The variable that hands the tool only the access token (`exec --inject env`), if any.
    pub env: Option<String>,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    pub user_agent: Option<String>,
    pub min_ttl: Option<String>,
    pub request_timeout: Option<String>,
    pub retry_total: Option<String>,
    pub lock_timeout: Option<String>,
}

impl LoginTable {
    /// The request settings of this table, in the shape the built-in providers' tables have.
    pub fn request_config(&self) -> ProviderConfig {
        ProviderConfig {
            credentials: Some(self.credentials.clone()),
            token_url: Some(self.token_url.clone()),
            client_id: Some(self.client_id.clone()),
            client_secret: self.client_secret.clone(),
            scope: self.scope.clone(),
            store: None,
            user_agent: self.user_agent.clone(),
            min_ttl: self.min_ttl.clone(),
            request_timeout: self.request_timeout.clone(),
            retry_total: self.retry_total.clone(),
            lock_timeout: self.lock_timeout.clone(),
        }
    }
}

/// `[daemon]`: the watchdog's own settings (flags of `tokenkeeper daemon` win).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Refresh when this much is left (cut to half the token's lifetime); default 1h.
    pub refresh_before: Option<String>,
    /// Remind to log in again when the login ends within this; default 3d.
    pub login_ending_within: Option<String>,
    /// Run this (with `sh -c`) for every alert.
    pub notify_command: Option<String>,
    /// POST every alert as JSON here.
    pub webhook: Option<String>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    pub metrics: Option<String>,
}

impl DaemonConfig {
    pub fn duration(
        &self,
        config_path: &Path,
        key: &str,
        value: &Option<String>,
        default: Duration,
    ) -> Result<Duration, Error> {
        match value {
            None => Ok(default),
            Some(text) => crate::duration::parse(text).map_err(|e| Error::Config {
                path: config_path.to_path_buf(),
                problem: format!("[daemon] {key}: {e}"),
            }),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub credentials: Option<PathBuf>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    /// Claude Code only: `auto`, `file` or `keychain`.
    pub store: Option<String>,
    pub user_agent: Option<String>,
    pub min_ttl: Option<String>,
    pub request_timeout: Option<String>,
    pub retry_total: Option<String>,
    pub lock_timeout: Option<String>,
}

/// Everything a refresh needs to know besides the login itself.
#[derive(Clone, Debug)]
pub struct Settings {
    pub token_url: String,
    pub client_id: String,
    /// A `Secret`, so that no debug print of the settings can show it.
    pub client_secret: Option<crate::secret::Secret>,
    pub scope: String,
    pub user_agent: String,
    pub min_ttl: Duration,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub lock_timeout: Duration,
    /// The config file, for messages that say where to set something.
    pub config_path: PathBuf,
}

/// `$XDG_CONFIG_HOME/tokenkeeper/config.toml`, else (Windows)
/// `%APPDATA%\tokenkeeper\config.toml`, else `~/.config/tokenkeeper/config.toml`.
pub fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = set("XDG_CONFIG_HOME")
        .or_else(|| set("APPDATA").filter(|_| cfg!(windows)))
        .or_else(|| crate::provider::home(env).map(|h| h.join(".config")))?;
    Some(base.join("tokenkeeper").join("config.toml"))
}

/// Reads the config file. A path the user named must exist; the default path may not.
pub fn load(path: &Path, named_by_user: bool) -> Result<ConfigFile, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named_by_user => {
            return Ok(ConfigFile::default());
        }
        Err(e) => {
            return Err(Error::Config {
                path: path.to_path_buf(),
                problem: format!("cannot be read ({e}); fix the path given to --config"),
            });
        }
    };
    let cfg: ConfigFile = toml::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        problem: format!(
            "{}; fix the file (see README, \"Configuration\")",
            e.message().trim()
        ),
    })?;
    // A broken [[login]] table fails every command, as an unknown key does: the file is wrong.
    crate::provider::generic::check_all(&cfg.login, path)?;
    // A fleet machine's config in a build without fleet mode: refreshing on our own would burn
    // the fleet's tokens, so refuse rather than ignore the table.
    #[cfg(not(feature = "fleet"))]
    if cfg.store.is_some() {
        return Err(Error::Config {
            path: path.to_path_buf(),
            problem: "[store] is fleet mode, which this build of tokenkeeper does not have \
                (built without the `fleet` feature); remove [store] or use a build with fleet mode"
                .into(),
        });
    }
    Ok(cfg)
}

impl ProviderConfig {
    /// Resolves a provider's settings: this table over the provider's defaults; `token_url` and
    /// `min_ttl` are the flag or environment values, if any.
    pub fn settings(
        &self,
        provider: &dyn Provider,
        config_path: &Path,
        token_url: Option<String>,
        min_ttl: Option<Duration>,
    ) -> Result<Settings, Error> {
        let defaults = provider.defaults();
        let duration = |key: &str, value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => crate::duration::parse(text).map_err(|e| Error::Config {
                path: config_path.to_path_buf(),
                problem: format!("{key}: {e}"),
            }),
        };
        let pick = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
        let retry_total = duration("retry_total", &self.retry_total, Duration::from_secs(60))?;
        Ok(Settings {
            token_url: token_url.unwrap_or_else(|| pick(&self.token_url, defaults.token_url)),
            client_id: pick(&self.client_id, defaults.client_id),
            client_secret: self.client_secret.clone().map(crate::secret::Secret::new),
            scope: pick(&self.scope, defaults.scope),
            user_agent: pick(&self.user_agent, defaults.user_agent),
            min_ttl: match min_ttl {
                Some(m) => m,
                None => duration("min_ttl", &self.min_ttl, provider.default_min_ttl())?,
            },
            request_timeout: duration(
                "request_timeout",
                &self.request_timeout,
                Duration::from_secs(30),
            )?,
            retry: RetryPolicy {
                total: retry_total,
                ..RetryPolicy::default()
            },
            lock_timeout: duration("lock_timeout", &self.lock_timeout, Duration::from_secs(60))?,
            config_path: config_path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::claude::{self, Claude};

    #[test]
    fn reads_settings_and_names_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[claude]\nmin_ttl = \"2h\"\nuser_agent = \"x/1\"\n").unwrap();
        let cfg = load(&path, true).unwrap();
        let s = cfg.claude.settings(&Claude, &path, None, None).unwrap();
        assert_eq!(s.min_ttl, Duration::from_secs(7200));
        assert_eq!(s.user_agent, "x/1");
        assert_eq!(s.token_url, claude::DEFAULT_TOKEN_URL);

        std::fs::write(&path, "[claude]\nmin_tll = \"2h\"\n").unwrap();
        let err = load(&path, true).unwrap_err().to_string();
        assert!(
            err.contains("min_tll") && err.contains("config.toml"),
            "{err}"
        );

        std::fs::write(&path, "[claude]\nmin_ttl = \"soon\"\n").unwrap();
        let cfg = load(&path, true).unwrap();
        let err = cfg
            .claude
            .settings(&Claude, &path, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_ttl"), "{err}");

        assert!(load(&dir.path().join("none.toml"), false).is_ok());
        assert!(load(&dir.path().join("none.toml"), true).is_err());
    }

    #[test]
    fn a_store_table_is_fleet_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[store]\nurl = \"postgres://db/x\"\n").unwrap();
        let loaded = load(&path, true);
        #[cfg(feature = "fleet")]
        assert_eq!(
            loaded.unwrap().store.url.as_deref(),
            Some("postgres://db/x")
        );
        #[cfg(not(feature = "fleet"))]
        {
            let err = loaded.unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config);
            let text = err.to_string();
            assert!(
                text.contains("[store]")
                    && text.contains("fleet")
                    && text.contains("config.toml")
                    && !text.contains('\n'),
                "{text}"
            );
        }
    }
}
