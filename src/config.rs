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
//! usable_floor = "5m"      # exec/token run with the token in hand when a refresh fails
//! store = "auto"           # Claude Code only: auto (Keychain on macOS), file, or keychain
//! allow_http = false       # a plain http:// token_url to another machine (https or loopback only
//!                          # otherwise: the refresh token must not cross a network in clear)
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
//! [[mirror]]               # an access-only copy of a login, written by the daemon
//! login = "claude"         # the name of a login (claude, codex, gemini)
//! path = "/srv/agents/*/.claude/.credentials.json"   # a file, or a folder pattern
//! owner = "1001:1001"      # optional: a user name or uid:gid (needs root)
//! mode = "0600"            # optional: default 0600
//! [tls]
//! ca_file = "/etc/ssl/corp-proxy-ca.pem"  # a CA trusted besides the platform's roots (PEM)
//!
//! [daemon]
//! refresh_before = "1h"         # refresh when this much is left (at most half the lifetime)
//! login_ending_within = "3d"    # daily reminder to log in again before the login ends
//! notify_command = "notify-send tokenkeeper \"$TOKENKEEPER_MESSAGE\""
//! webhook = "https://discord.com/api/webhooks/…"
//! webhook_redirects = 0         # redirects a webhook POST follows (default 0, at most 5)
//! metrics = "127.0.0.1:9464"
//! ```

use crate::error::Error;
use crate::mirror::spec::MirrorSpec;
use crate::oauth::backoff::RetryPolicy;
use crate::provider::Provider;
pub use crate::provider::login_table::LoginTable;
pub use crate::settings::Settings;
use crate::settings::{DEFAULT_USABLE_FLOOR, check_token_url};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole file. Its tables: one per built-in provider (which ones is the provider registry's,
/// [`crate::provider::names`]), `[[login]]`, `[daemon]` and `[store]`; any other key is an error.
#[derive(Debug, Default)]
pub struct ConfigFile {
    /// `[claude]`, `[codex]`, `[gemini]`: each built-in provider's table by its name, an empty
    /// one when the file has none.
    providers: BTreeMap<String, ProviderConfig>,
    /// `[[login]]` tables: other tools' OAuth logins in JSON files.
    pub login: Vec<LoginTable>,
    /// `[[mirror]]` tables: access-only copies of a login the daemon writes.
    pub mirror: Vec<MirrorTable>,
    pub daemon: DaemonConfig,
    /// `[tls]`: what every TLS connection trusts besides the platform's roots.
    pub tls: TlsConfig,
    /// `[store]`: the fleet's shared store (see `fleet/`).
    #[cfg(feature = "fleet")]
    pub store: crate::fleet::StoreConfig,
    /// `[store]` in a build without fleet mode: read only so that `load` can refuse it.
    #[cfg(not(feature = "fleet"))]
    store: Option<serde::de::IgnoredAny>,
}

impl ConfigFile {
    /// A built-in provider's table (`[claude]`, `[codex]`, `[gemini]`); None for a name the
    /// registry does not know.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        crate::provider::names()
            .find(|n| *n == name)
            .map(|n| self.providers.get(n).unwrap_or(&NO_TABLE))
    }
}

/// A provider's table when the file has none.
static NO_TABLE: ProviderConfig = ProviderConfig {
    credentials: None,
    token_url: None,
    client_id: None,
    client_secret: None,
    scope: None,
    store: None,
    user_agent: None,
    min_ttl: None,
    request_timeout: None,
    retry_total: None,
    lock_timeout: None,
    allow_http: None,
    usable_floor: None,
};

/// A top-level key of the file.
enum TopKey {
    Provider(&'static str),
    Login,
    Mirror,
    Daemon,
    Tls,
    Store,
}

impl<'de> Deserialize<'de> for TopKey {
    fn deserialize<D: serde::Deserializer<'de>>(input: D) -> Result<TopKey, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = TopKey;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("field identifier")
            }

            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<TopKey, E> {
                match key {
                    "login" => Ok(TopKey::Login),
                    "mirror" => Ok(TopKey::Mirror),
                    "daemon" => Ok(TopKey::Daemon),
                    "tls" => Ok(TopKey::Tls),
                    "store" => Ok(TopKey::Store),
                    _ => crate::provider::names()
                        .find(|n| *n == key)
                        .map(TopKey::Provider)
                        .ok_or_else(|| E::custom(unknown_key(key))),
                }
            }
        }
        input.deserialize_identifier(Visit)
    }
}

/// Serde's own words for an unknown field, with the registry's provider names first.
fn unknown_key(key: &str) -> String {
    let known: Vec<String> = crate::provider::names()
        .chain(["login", "mirror", "daemon", "tls", "store"])
        .map(|k| format!("`{k}`"))
        .collect();
    format!(
        "unknown field `{key}`, expected one of {}",
        known.join(", ")
    )
}

impl<'de> Deserialize<'de> for ConfigFile {
    fn deserialize<D: serde::Deserializer<'de>>(input: D) -> Result<ConfigFile, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ConfigFile;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("struct ConfigFile")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ConfigFile, A::Error> {
                let mut cfg = ConfigFile::default();
                while let Some(key) = map.next_key::<TopKey>()? {
                    match key {
                        TopKey::Provider(name) => {
                            cfg.providers.insert(name.to_string(), map.next_value()?);
                        }
                        TopKey::Login => cfg.login = map.next_value()?,
                        TopKey::Mirror => cfg.mirror = map.next_value()?,
                        TopKey::Daemon => cfg.daemon = map.next_value()?,
                        TopKey::Tls => cfg.tls = map.next_value()?,
                        #[cfg(feature = "fleet")]
                        TopKey::Store => cfg.store = map.next_value()?,
                        #[cfg(not(feature = "fleet"))]
                        TopKey::Store => {
                            cfg.store = Some(map.next_value::<serde::de::IgnoredAny>()?)
                        }
                    }
                }
                Ok(cfg)
            }
        }
        input.deserialize_map(Visit)
    }
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
            allow_http: self.allow_http,
            usable_floor: self.usable_floor.clone(),
        }
    }
}

/// `[[mirror]]`: an access-only copy of a login (see `mirror/`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorTable {
    /// The name of the login it copies.
    pub login: String,
    /// The copy's path, or a folder pattern (`/srv/agents/*/.claude/.credentials.json`).
    pub path: String,
    /// A user name or `uid:gid`.
    pub owner: Option<String>,
    /// Octal permission bits: `0o640` or `"0640"`; default 0600.
    pub mode: Option<ModeValue>,
}

/// A mode as TOML writes it: a number (`0o640`) or a string of octal digits (`"0640"`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ModeValue {
    Bits(i64),
    Text(String),
}

impl ConfigFile {
    /// The `[[mirror]]` tables as copies to keep; a bad owner or mode names its table.
    pub fn mirrors(&self, config_path: &Path) -> Result<Vec<MirrorSpec>, Error> {
        self.mirror
            .iter()
            .enumerate()
            .map(|(n, t)| {
                let bad = |problem: String| Error::Config {
                    path: config_path.to_path_buf(),
                    problem: format!("[[mirror]] number {} ({}): {problem}", n + 1, t.path),
                };
                let owner = t
                    .owner
                    .as_deref()
                    .map(crate::mirror::spec::parse_owner)
                    .transpose()
                    .map_err(bad)?;
                let mode = match &t.mode {
                    None => crate::mirror::spec::DEFAULT_MODE,
                    Some(ModeValue::Bits(n)) => crate::mirror::spec::check_mode(*n).map_err(bad)?,
                    Some(ModeValue::Text(text)) => {
                        crate::mirror::spec::parse_mode_text(text).map_err(bad)?
                    }
                };
                if t.path.trim().is_empty() || t.login.trim().is_empty() {
                    return Err(bad("`login` and `path` must not be empty".into()));
                }
                Ok(MirrorSpec {
                    login: t.login.clone(),
                    path: t.path.clone(),
                    owner,
                    mode,
                    from: format!("config file {}", config_path.display()),
                })
            })
            .collect()
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
    /// How many redirects a webhook POST follows, posting the alert again to each new place;
    /// default 0 (a redirect is a failure naming where it pointed), at most 5.
    pub webhook_redirects: Option<u32>,
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

/// `[tls]`: trust for every TLS connection (token endpoints, webhooks, the fleet's store).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of CA certificates trusted besides the platform's roots (a corporate proxy's
    /// CA); relative to the config file's folder; `--ca-file` and `TOKENKEEPER_CA_FILE` win.
    pub ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// `ca_file`, a relative path taken from the config file's folder (as `key_file` is).
    pub fn ca_file(&self, config_path: &Path) -> Option<PathBuf> {
        self.ca_file
            .as_ref()
            .map(|p| crate::storage::atomic::folder_of(config_path).join(p))
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub credentials: Option<PathBuf>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    /// A [`Secret`](crate::secret::Secret), so that no debug print of the config shows it.
    #[serde(default, with = "crate::secret::exposed::option")]
    pub client_secret: Option<crate::secret::Secret>,
    pub scope: Option<String>,
    /// Claude Code only: `auto`, `file` or `keychain`.
    pub store: Option<String>,
    pub user_agent: Option<String>,
    pub min_ttl: Option<String>,
    pub request_timeout: Option<String>,
    pub retry_total: Option<String>,
    pub lock_timeout: Option<String>,
    /// Send the refresh token over plain `http://` to a host that is not this machine.
    pub allow_http: Option<bool>,
    /// `exec` and `token` go on with the access token in hand, when a refresh cannot be done,
    /// as long as it has at least this much left.
    pub usable_floor: Option<String>,
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

/// The config file can name a command the daemon runs and where refresh tokens are sent: a file
/// other users can write lets them choose both. Said, not refused (a shared config may be meant).
fn warn_if_others_can_write(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 {
            tracing::warn!(
                "config file {} can be written by every user (mode {:o}), and it names commands to run and where tokens go; fix it with `chmod go-w {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        } else if meta.uid() != crate::storage::atomic::current_uid() && meta.uid() != 0 {
            tracing::warn!(
                "config file {} belongs to another user (uid {}), who can change the commands it runs and where tokens go",
                path.display(),
                meta.uid()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// `line 3, `min_ttl`: ` for an error at `span`: the line and the key (or table header) there,
/// never the value, which may be a secret.
fn where_in(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span.filter(|s| s.start <= text.len()) else {
        return String::new();
    };
    let line_no = text[..span.start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    let key = if line.starts_with('[') {
        line.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        line.split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let key: String = key.chars().filter(|c| !c.is_control()).take(80).collect();
    if key.is_empty() {
        format!("line {line_no}: ")
    } else {
        format!("line {line_no}, `{key}`: ")
    }
}

/// serde quotes the offending value in a type error (`invalid type: integer `3600``); for a key
/// that may hold a secret, the quoted parts are left out.
fn hide_values_of_secrets(at: &str, message: &str) -> String {
    let sensitive = [
        "secret",
        "password",
        "token",
        "url",
        "headers",
        "extra_fields",
        "key",
    ];
    if !sensitive.iter().any(|k| at.contains(k)) {
        return message.to_string();
    }
    message
        .split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { "…" } else { part })
        .collect::<Vec<_>>()
        .join("`")
}

/// A config file is a few lines; a larger one is not ours.
const MAX_CONFIG: u64 = 1 << 20;

/// Reads the config file. A path the user named must exist; the default path may not.
pub fn load(path: &Path, named_by_user: bool) -> Result<ConfigFile, Error> {
    use crate::storage::bounded::{ReadError, read_regular};
    let cannot = |why: String| Error::Config {
        path: path.to_path_buf(),
        problem: format!("cannot be read ({why}); fix the path given to --config"),
    };
    let bytes = match read_regular(path, MAX_CONFIG) {
        Ok(b) => b,
        Err(ReadError::NotFound) if !named_by_user => return Ok(ConfigFile::default()),
        Err(e) => return Err(cannot(e.to_string())),
    };
    let text = String::from_utf8(bytes).map_err(|_| cannot("not UTF-8 text".into()))?;
    warn_if_others_can_write(path);
    let cfg: ConfigFile = toml::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        problem: {
            let at = where_in(&text, e.span());
            format!(
                "{at}{}; fix the file (see docs/configuration.md)",
                hide_values_of_secrets(&at, e.message().trim())
            )
        },
    })?;
    // A broken [[login]] table fails every command, as an unknown key does: the file is wrong.
    crate::provider::generic::check_all(&cfg.login, path)?;
    cfg.mirrors(path)?;
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
        let defaults = provider.facts().defaults;
        let duration = |key: &str, value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => crate::duration::parse(text).map_err(|e| Error::Config {
                path: config_path.to_path_buf(),
                problem: format!("{key}: {e}"),
            }),
        };
        let pick = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
        let retry_total = duration("retry_total", &self.retry_total, Duration::from_secs(60))?;
        let from_flag = token_url.is_some();
        let token_url = token_url.unwrap_or_else(|| pick(&self.token_url, defaults.token_url));
        check_token_url(&token_url, self.allow_http.unwrap_or(false)).map_err(|problem| {
            let origin = if from_flag {
                " (from --token-url or TOKENKEEPER_TOKEN_URL)"
            } else {
                ""
            };
            Error::Config {
                path: config_path.to_path_buf(),
                problem: format!("the token URL{origin} {problem}"),
            }
        })?;
        Ok(Settings {
            token_url,
            client_id: pick(&self.client_id, defaults.client_id),
            client_secret: self.client_secret.clone(),
            scope: pick(&self.scope, defaults.scope),
            user_agent: pick(&self.user_agent, defaults.user_agent),
            min_ttl: match min_ttl {
                Some(m) => m,
                None => duration("min_ttl", &self.min_ttl, provider.facts().default_min_ttl)?,
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
            usable_floor: duration("usable_floor", &self.usable_floor, DEFAULT_USABLE_FLOOR)?,
            config_path: config_path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::claude::{self, Claude};

    #[test]
    fn a_type_error_names_the_line_and_the_key_but_never_the_value() {
        let (_dir, path) = crate::testing::temp_path("config.toml");
        std::fs::write(
            &path,
            "[claude]\nmin_ttl = \"1h\"\nrequest_timeout = 3600\n",
        )
        .unwrap();
        let text = load(&path, true).unwrap_err().to_string();
        assert!(
            text.contains(
                "line 3, `request_timeout`: invalid type: integer `3600`, expected a string"
            ),
            "{text}"
        );
        std::fs::write(&path, "[gemini]\nclient_secret = 12345678\n").unwrap();
        let text = load(&path, true).unwrap_err().to_string();
        assert!(text.contains("line 2, `client_secret`"), "{text}");
        assert!(
            !text.contains("12345678"),
            "the value is never shown: {text}"
        );
    }

    #[test]
    fn reads_settings_and_names_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[claude]\nmin_ttl = \"2h\"\nuser_agent = \"x/1\"\n").unwrap();
        let cfg = load(&path, true).unwrap();
        let s = cfg
            .provider("claude")
            .unwrap()
            .settings(&Claude, &path, None, None)
            .unwrap();
        assert_eq!(s.min_ttl, Duration::from_secs(7200));
        assert_eq!(s.user_agent, "x/1");
        assert_eq!(s.token_url, claude::DEFAULTS.token_url);

        std::fs::write(&path, "[claude]\nmin_tll = \"2h\"\n").unwrap();
        let err = load(&path, true).unwrap_err().to_string();
        assert!(
            err.contains("min_tll") && err.contains("config.toml"),
            "{err}"
        );

        std::fs::write(&path, "[claude]\nmin_ttl = \"soon\"\n").unwrap();
        let cfg = load(&path, true).unwrap();
        let err = cfg
            .provider("claude")
            .unwrap()
            .settings(&Claude, &path, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_ttl"), "{err}");

        assert!(load(&dir.path().join("none.toml"), false).is_ok());
        assert!(load(&dir.path().join("none.toml"), true).is_err());
    }

    #[test]
    fn every_table_of_the_documented_file_reads_as_before() {
        let doc = include_str!("config.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .skip_while(|l| *l != "//! ```toml")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| l.strip_prefix("//! ").unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let cfg: ConfigFile = toml::from_str(&doc).unwrap();
        let claude = cfg.provider("claude").unwrap();
        assert_eq!(claude.store.as_deref(), Some("auto"));
        assert_eq!(claude.min_ttl.as_deref(), Some("1h"));
        assert_eq!(
            claude.credentials.as_deref(),
            Some(Path::new("/home/me/.claude/.credentials.json"))
        );
        assert!(cfg.provider("codex").unwrap().token_url.is_none());
        assert!(cfg.provider("gemini").unwrap().client_secret.is_none());
        assert!(
            cfg.provider("mytool").is_none(),
            "a [[login]] is not a table"
        );
        assert_eq!(cfg.login.len(), 1);
        assert_eq!(cfg.login[0].name, "mytool");
        assert_eq!(cfg.daemon.metrics.as_deref(), Some("127.0.0.1:9464"));
        let mirrors = cfg.mirrors(Path::new("/c.toml")).unwrap();
        assert_eq!(mirrors.len(), 1);
        assert_eq!(mirrors[0].login, "claude");
        assert_eq!(mirrors[0].path, "/srv/agents/*/.claude/.credentials.json");
        assert_eq!(
            mirrors[0].owner,
            Some(crate::mirror::spec::OwnerSpec::Ids(1001, 1001))
        );
        assert_eq!(mirrors[0].mode, 0o600);

        let empty: ConfigFile = toml::from_str("").unwrap();
        for name in crate::provider::names() {
            assert!(empty.provider(name).unwrap().token_url.is_none(), "{name}");
        }
    }

    #[test]
    fn an_unknown_table_is_named_with_every_table_there_is() {
        let err = toml::from_str::<ConfigFile>("[claud]\nmin_ttl = \"1h\"\n").unwrap_err();
        assert_eq!(
            err.message(),
            "unknown field `claud`, expected one of `claude`, `codex`, `gemini`, `login`, `mirror`, `daemon`, `tls`, `store`"
        );
        let err = toml::from_str::<ConfigFile>("claude = 3\n").unwrap_err();
        assert_eq!(
            err.message(),
            "invalid type: integer `3`, expected struct ProviderConfig"
        );
        let err = toml::from_str::<ConfigFile>("[codex]\nmin_ttl = 5\n").unwrap_err();
        assert_eq!(
            err.message(),
            "invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn a_debug_print_of_the_config_holds_no_secret_of_it() {
        let cfg: ConfigFile = toml::from_str(
            "[gemini]\nclient_secret = \"shh-gemini\"\n[[login]]\nname = \"t\"\ncredentials = \"/c\"\naccess_token = \"/a\"\nrefresh_token = \"/r\"\nexpiry_unit = \"jwt\"\ntoken_url = \"https://a.example/t\"\nclient_id = \"c\"\nclient_secret = \"shh-login\"\nheaders = { \"X-Api-Key\" = \"shh-header\" }\nextra_fields = { assertion = \"shh-field\" }\n",
        )
        .unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("shh-"), "{shown}");
        assert!(
            shown.contains("X-Api-Key") && shown.contains("assertion"),
            "{shown}"
        );
        let secret = cfg.provider("gemini").unwrap().client_secret.as_ref();
        assert_eq!(secret.map(|s| s.expose()), Some("shh-gemini"));
        assert_eq!(
            cfg.login[0].client_secret.as_ref().map(|s| s.expose()),
            Some("shh-login")
        );
    }

    #[test]
    fn a_mirror_table_names_its_bad_key_line_and_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[[mirror]]\nlogin = \"claude\"\npath = \"/a/c.json\"\nmode = 0o640\n[[mirror]]\nlogin = \"codex\"\npath = \"/b/auth.json\"\nmode = \"0606\"\n",
        )
        .unwrap();
        let text = load(&path, true).unwrap_err().to_string();
        assert!(
            text.contains("config.toml")
                && text.contains("[[mirror]] number 2 (/b/auth.json)")
                && text.contains("every user"),
            "{text}"
        );
        std::fs::write(&path, "[[mirror]]\nlogin = \"claude\"\npath = \"/a/c.json\"\nmode = 0o640\nowner = \"agent\"\n").unwrap();
        let cfg = load(&path, true).unwrap();
        let m = &cfg.mirrors(&path).unwrap()[0];
        assert_eq!(
            (m.mode, m.owner.clone()),
            (
                0o640,
                Some(crate::mirror::spec::OwnerSpec::User("agent".into()))
            )
        );
        std::fs::write(
            &path,
            "[[mirror]]\nlogin = \"claude\"\npaht = \"/a/c.json\"\n",
        )
        .unwrap();
        let text = load(&path, true).unwrap_err().to_string();
        assert!(
            text.contains("line 3, `paht`") && text.contains("unknown field"),
            "{text}"
        );
    }

    #[test]
    fn a_store_table_is_fleet_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[store]\nurl = \"postgres://db/x\"\n").unwrap();
        let loaded = load(&path, true);
        #[cfg(feature = "fleet")]
        assert_eq!(
            loaded.unwrap().store.url.as_ref().map(|u| u.expose()),
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
