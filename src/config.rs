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
//!
//! [daemon]
//! refresh_before = "1h"         # refresh when this much is left (at most half the lifetime)
//! login_ending_within = "3d"    # daily reminder to log in again before the login ends
//! notify_command = "notify-send tokenkeeper \"$TOKENKEEPER_MESSAGE\""
//! webhook = "https://discord.com/api/webhooks/…"
//! metrics = "127.0.0.1:9464"
//! ```

use crate::backoff::RetryPolicy;
use crate::claude;
use crate::error::Error;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub claude: ProviderConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
}

/// `[daemon]`: the watchdog's own settings (flags of `tokenkeeper daemon` win).
#[derive(Debug, Default, Deserialize)]
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub credentials: Option<PathBuf>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
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
    pub scope: String,
    pub user_agent: String,
    pub min_ttl: Duration,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub lock_timeout: Duration,
}

/// `$XDG_CONFIG_HOME/tokenkeeper/config.toml`, else `~/.config/tokenkeeper/config.toml`.
pub fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = set("XDG_CONFIG_HOME").or_else(|| set("HOME").map(|h| h.join(".config")))?;
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
    toml::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        problem: format!(
            "{}; fix the file (see README, \"Configuration\")",
            e.message().trim()
        ),
    })
}

impl ProviderConfig {
    /// Resolves the Claude Code settings; `token_url` is the flag or environment value, if any.
    pub fn claude_settings(
        &self,
        config_path: &Path,
        token_url: Option<String>,
        min_ttl: Option<Duration>,
    ) -> Result<Settings, Error> {
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
            token_url: token_url
                .unwrap_or_else(|| pick(&self.token_url, claude::DEFAULT_TOKEN_URL)),
            client_id: pick(&self.client_id, claude::DEFAULT_CLIENT_ID),
            scope: pick(&self.scope, claude::DEFAULT_SCOPE),
            user_agent: pick(&self.user_agent, claude::DEFAULT_USER_AGENT),
            min_ttl: match min_ttl {
                Some(m) => m,
                None => duration("min_ttl", &self.min_ttl, claude::DEFAULT_MIN_TTL)?,
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_settings_and_names_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[claude]\nmin_ttl = \"2h\"\nuser_agent = \"x/1\"\n").unwrap();
        let cfg = load(&path, true).unwrap();
        let s = cfg.claude.claude_settings(&path, None, None).unwrap();
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
            .claude_settings(&path, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_ttl"), "{err}");

        assert!(load(&dir.path().join("none.toml"), false).is_ok());
        assert!(load(&dir.path().join("none.toml"), true).is_err());
    }
}
