//! Claude Code: where its login lives, how its JSON maps to a [`Login`], what its token request
//! looks like, how a token response is written back, and which of its locks we honour. Facts
//! (observed on Claude Code 2.1): `docs/providers.md`, "Claude Code".

use crate::error::Error;
use crate::lock::dir_lock::DirLockSpec;
use crate::login::{EpochMs, Login};
use crate::oauth::endpoint::TokenResponse;
use crate::provider::shape::{Shape, Spent};
use crate::provider::{
    Body, Defaults, Facts, Provider, SaveLock, TokenRequest, epoch_ms, epoch_ms_field, object_at,
    token_field,
};
use crate::secret::Secret;
use crate::settings::Settings;
use crate::storage::credentials_file::{CredentialsFile, Owner};
use crate::storage::keychain::{self, Keychain};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const OWNER: Owner = Owner {
    provider: "claude",
    name: "Claude Code",
    relogin: "`claude /login`",
};
/// Claude refreshes by itself at 5 minutes left; an hour keeps it from ever needing to.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(3600);
const REQUIRED_SCOPE: &str = "user:inference";
const KEY: &str = "claudeAiOauth";
/// Where the holder of `.oauth_refresh.lock` says who it is.
pub const OWNER_RECORD: &str = ".oauth_refresh.lock.owner";

/// `claudeAiOauth` holds the whole login (tokens, expiry, scopes, subscription); the rest of the
/// file (`mcpOAuth`, …) is the machine's own.
pub static COPY_SHAPE: Shape = Shape::new(&[KEY], &[KEY, "refreshToken"], Spent::Empty);

/// The Keychain service Claude Code files its login under when `CLAUDE_CONFIG_DIR` is not set.
pub const KEYCHAIN_SERVICE: &str = "Claude Code-credentials";

/// The Keychain service of Claude Code's login: [`KEYCHAIN_SERVICE`], plus `-` and 8 hex digits
/// of the SHA-256 of `$CLAUDE_CONFIG_DIR` (the string as given) when that is set.
pub fn keychain_service(config_dir: Option<&str>) -> String {
    match config_dir.filter(|d| !d.is_empty()) {
        None => KEYCHAIN_SERVICE.to_string(),
        Some(dir) => format!("{KEYCHAIN_SERVICE}-{}", crate::secret::fingerprint(dir)),
    }
}

/// Claude Code's Keychain item for this environment: the service from `CLAUDE_CONFIG_DIR`, the
/// account from `USER` (else the user database), `security` from `PATH`.
pub fn keychain_item(env: &dyn Fn(&str) -> Option<String>) -> Result<Keychain, String> {
    let account = keychain::user_name(env).ok_or_else(|| {
        "store = \"keychain\": USER is not set and the user database names no one for this \
         process; set USER to the account Claude Code uses"
            .to_string()
    })?;
    Ok(Keychain::new(
        keychain::find_program(env("PATH").as_deref()),
        keychain_service(env("CLAUDE_CONFIG_DIR").as_deref()),
        account,
    ))
}

/// The token request as the CLI itself sends it; each overridable in the config file.
pub const DEFAULTS: Defaults = Defaults {
    token_url: "https://platform.claude.com/v1/oauth/token",
    client_id: "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
    scope: "user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload user:plugins",
    user_agent: "axios/1.15.2",
};

/// What Claude Code is, as data.
pub const FACTS: Facts = Facts {
    home_env: &["CLAUDE_CONFIG_DIR", "CLAUDE_SECURESTORAGE_CONFIG_DIR"],
    overriding_env: &[
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "CLAUDE_CODE_OAUTH_TOKEN",
    ],
    keychain: Some(keychain_item),
    ..Facts::new(OWNER, DEFAULT_MIN_TTL, DEFAULTS)
};

/// Claude Code's rules, for the refresh protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct Claude;

impl Provider for Claude {
    fn facts(&self) -> &Facts {
        &FACTS
    }

    fn copy_shape(&self) -> Option<&Shape> {
        Some(&COPY_SHAPE)
    }

    fn default_path(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
        default_credentials_path(env)
    }

    /// Reads the login out of a credentials document. A wiped login (empty tokens) parses to a
    /// [`Login`] with empty tokens, which [`Login::freshness`] calls dead.
    fn parse(&self, file: &CredentialsFile, doc: &Value) -> Result<Login, Error> {
        let relogin = "Log in again with `claude /login`.";
        let Some(root) = doc.as_object() else {
            return Err(file.malformed("are not a JSON object", relogin));
        };
        let Some(oauth) = root.get(KEY) else {
            return Err(file.malformed(
                "hold no Claude Code login (no \"claudeAiOauth\" key)",
                relogin,
            ));
        };
        let Some(oauth) = oauth.as_object() else {
            return Err(file.malformed("have a \"claudeAiOauth\" that is not an object", relogin));
        };
        let token = |key: &str| token_field(file, oauth, key, key, relogin);
        let access_token = token("accessToken")?;
        let refresh_token = token("refreshToken")?;
        let expires_at = epoch_ms_field(file, oauth, "expiresAt", relogin)?;
        let login_expires_at = oauth.get("refreshTokenExpiresAt").and_then(epoch_ms);
        let scopes = match oauth.get("scopes") {
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        let wiped = access_token.is_empty() && refresh_token.is_empty();
        if let Some(scopes) = &scopes
            && !wiped
            && !scopes.iter().any(|s| s == REQUIRED_SCOPE)
        {
            return Err(file.malformed(
                "hold a login without the user:inference scope, which Claude Code will not use",
                relogin,
            ));
        }
        Ok(Login {
            access_token,
            refresh_token,
            expires_at,
            login_expires_at,
            scopes,
        })
    }

    fn doc_keys(&self) -> Option<Vec<String>> {
        Some(vec![KEY.to_string()])
    }

    fn token_request(&self, refresh_token: &Secret, settings: &Settings) -> TokenRequest {
        let body = token_request(refresh_token, &settings.client_id, &settings.scope);
        Body::Json(body).into()
    }

    /// Writes a token response into the document: accessToken, refreshToken (kept when the response
    /// has none), expiresAt, scopes (when the response names them), refreshTokenExpiresAt (only ever
    /// earlier). Every other key keeps its value and its place.
    fn apply(&self, doc: &mut Value, response: &TokenResponse, now: EpochMs) {
        let Some(root) = doc.as_object_mut() else {
            return;
        };
        let oauth = object_at(root, KEY);
        oauth.insert("accessToken".into(), json!(response.access_token.expose()));
        if let Some(refresh) = &response.refresh_token {
            oauth.insert("refreshToken".into(), json!(refresh.expose()));
        }
        oauth.insert(
            "expiresAt".into(),
            json!(response.expires_at(now, UNKNOWN_LIFETIME, LONGEST_LIFETIME)),
        );
        if let Some(scope) = response.scope.as_deref().filter(|s| !s.trim().is_empty()) {
            let scopes: Vec<&str> = scope.split_whitespace().collect();
            oauth.insert("scopes".into(), json!(scopes));
        }
        // Like Claude: kept only where the login already has one, and never moved later.
        if let Some(secs) = response.refresh_token_expires_in
            && let Some(kept) = oauth.get("refreshTokenExpiresAt").and_then(epoch_ms)
        {
            let offered = now.saturating_add(secs_to_ms(secs));
            if offered < kept {
                oauth.insert("refreshTokenExpiresAt".into(), json!(offered));
            }
        }
    }

    fn refresh_locks(&self, file: &CredentialsFile) -> Vec<DirLockSpec> {
        refresh_locks(&file.folder())
    }

    fn save_lock(&self, file: &CredentialsFile) -> SaveLock {
        SaveLock::Dir(storage_write_lock(&file.folder()))
    }

    fn inject_env(&self, access_token: &Secret) -> Result<Vec<(String, String)>, String> {
        Ok(vec![(
            "CLAUDE_CODE_OAUTH_TOKEN".to_string(),
            access_token.expose().to_string(),
        )])
    }
}

/// A token response without `expires_in` (Claude's always has one): assume this much.
const UNKNOWN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// No answer is believed to live longer than this (Claude's access tokens live 8 hours).
const LONGEST_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// `$CLAUDE_SECURESTORAGE_CONFIG_DIR` (when set; set but empty means `~/.claude`, as in Claude),
/// else `$CLAUDE_CONFIG_DIR`, else `~/.claude`, plus `.credentials.json`. `env` reads a variable
/// (the real environment, or a test's).
pub fn default_credentials_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    let home_claude = || crate::provider::home(env).map(|h| h.join(".claude"));
    let folder = match env("CLAUDE_SECURESTORAGE_CONFIG_DIR") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        Some(_) => home_claude(),
        None => set("CLAUDE_CONFIG_DIR")
            .map(PathBuf::from)
            .or_else(home_claude),
    }?;
    Some(folder.join(".credentials.json"))
}

/// The refresh request body, in Claude's own shape.
pub fn token_request(refresh_token: &Secret, client_id: &str, scope: &str) -> Value {
    json!({
        "grant_type": "refresh_token",
        "refresh_token": refresh_token.expose(),
        "client_id": client_id,
        "scope": scope,
    })
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
}

/// Claude's refresh locks, in the order Claude takes them: `<folder>/.oauth_refresh.lock`, then
/// the legacy `<realpath(folder)>.lock` that older releases used alone.
pub fn refresh_locks(folder: &Path) -> Vec<DirLockSpec> {
    let real = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
    let mut legacy = real.into_os_string();
    legacy.push(".lock");
    vec![
        DirLockSpec {
            path: folder.join(".oauth_refresh.lock"),
            stale: Duration::from_secs(60),
            owner_record: Some(folder.join(OWNER_RECORD)),
            takeover_with: Some(legacy.clone().into()),
            best_effort: false,
            what: "Claude Code's refresh lock",
        },
        DirLockSpec {
            path: PathBuf::from(legacy),
            stale: Duration::from_secs(60),
            owner_record: None,
            takeover_with: None,
            best_effort: true,
            what: "Claude Code's legacy refresh lock",
        },
    ]
}

/// The lock Claude writes the credentials under.
pub fn storage_write_lock(folder: &Path) -> DirLockSpec {
    DirLockSpec {
        path: folder.join(".storage-write.lock"),
        stale: Duration::from_secs(15),
        owner_record: None,
        takeover_with: None,
        best_effort: false,
        what: "Claude Code's storage lock",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::env;

    #[test]
    fn the_keychain_service_gets_a_suffix_only_for_a_claude_config_dir() {
        assert_eq!(keychain_service(None), "Claude Code-credentials");
        assert_eq!(keychain_service(Some("")), "Claude Code-credentials");
        // printf '%s' /tmp/claude-config | sha256sum: 19aa18c8…
        assert_eq!(
            keychain_service(Some("/tmp/claude-config")),
            "Claude Code-credentials-19aa18c8"
        );
        // The string as given: a trailing slash is another folder name, another item.
        assert_ne!(
            keychain_service(Some("/tmp/claude-config/")),
            keychain_service(Some("/tmp/claude-config"))
        );
    }

    #[test]
    fn the_keychain_account_comes_from_user_else_the_user_database() {
        let with_user = env(&[
            ("USER", "alice"),
            ("CLAUDE_CONFIG_DIR", "/tmp/claude-config"),
        ]);
        let k = keychain_item(&with_user).unwrap();
        assert_eq!(
            (k.account(), k.service()),
            ("alice", "Claude Code-credentials-19aa18c8")
        );
        assert_eq!(
            k.program(),
            Path::new(crate::storage::keychain::DEFAULT_PROGRAM)
        );
        let k = keychain_item(&|_| None).unwrap();
        assert!(!k.account().is_empty());
    }

    fn file() -> CredentialsFile {
        CredentialsFile::new("/x/.credentials.json", OWNER)
    }

    fn response() -> TokenResponse {
        TokenResponse {
            access_token: Secret::new("new-access"),
            refresh_token: Some(Secret::new("new-refresh")),
            expires_in: Some(28800),
            scope: None,
            refresh_token_expires_in: None,
            id_token: None,
        }
    }

    #[test]
    fn parses_a_login_and_refuses_bad_shapes() {
        let doc: Value = serde_json::from_str(
            r#"{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1795993258619,"scopes":["user:inference"],"refreshTokenExpiresAt":1798000000000}}"#,
        )
        .unwrap();
        let login = Claude.parse(&file(), &doc).unwrap();
        assert_eq!(login.expires_at, 1795993258619);
        assert_eq!(login.login_expires_at, Some(1798000000000));
        for (bad, needle) in [
            ("[]", "not a JSON object"),
            ("{}", "no Claude Code login"),
            (r#"{"claudeAiOauth":3}"#, "not an object"),
            (r#"{"claudeAiOauth":{"accessToken":1}}"#, "accessToken"),
            (
                r#"{"claudeAiOauth":{"accessToken":"a","expiresAt":"x"}}"#,
                "expiresAt",
            ),
            (
                r#"{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","scopes":["user:profile"]}}"#,
                "user:inference",
            ),
        ] {
            let doc: Value = serde_json::from_str(bad).unwrap();
            let err = Claude.parse(&file(), &doc).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let wiped: Value = serde_json::from_str(
            r#"{"claudeAiOauth":{"accessToken":"","refreshToken":"","expiresAt":0,"scopes":[]}}"#,
        )
        .unwrap();
        assert!(
            Claude
                .parse(&file(), &wiped)
                .unwrap()
                .refresh_token
                .is_empty()
        );
    }

    #[test]
    fn apply_changes_only_token_fields_in_place() {
        let text = r#"{"before":1,"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1,"scopes":["user:inference"],"subscriptionType":"max","rateLimitTier":null},"mcpOAuth":{"x":{"y":2.50}}}"#;
        let mut doc: Value = serde_json::from_str(text).unwrap();
        Claude.apply(&mut doc, &response(), 1000);
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"before":1,"claudeAiOauth":{"accessToken":"new-access","refreshToken":"new-refresh","expiresAt":28801000,"scopes":["user:inference"],"subscriptionType":"max","rateLimitTier":null},"mcpOAuth":{"x":{"y":2.50}}}"#
        );
    }

    #[test]
    fn an_absurd_lifetime_is_stored_as_a_day() {
        let mut doc: Value =
            serde_json::from_str(r#"{"claudeAiOauth":{"accessToken":"a","refreshToken":"r"}}"#)
                .unwrap();
        let mut resp = response();
        resp.expires_in = Some(u64::MAX);
        Claude.apply(&mut doc, &resp, 1000);
        assert_eq!(doc["claudeAiOauth"]["expiresAt"], 1000 + 86_400_000);
    }

    #[test]
    fn apply_keeps_old_refresh_token_and_only_shortens_login_end() {
        let mut doc: Value = serde_json::from_str(
            r#"{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1,"refreshTokenExpiresAt":5000}}"#,
        )
        .unwrap();
        let mut resp = response();
        resp.refresh_token = None;
        resp.refresh_token_expires_in = Some(3600);
        resp.scope = Some("user:inference user:profile".into());
        Claude.apply(&mut doc, &resp, 1000);
        let o = &doc["claudeAiOauth"];
        assert_eq!(o["refreshToken"], "r");
        assert_eq!(o["refreshTokenExpiresAt"], 5000, "never moved later");
        let mut sooner = resp.clone();
        sooner.refresh_token_expires_in = Some(1);
        let mut moved = doc.clone();
        Claude.apply(&mut moved, &sooner, 0);
        assert_eq!(
            moved["claudeAiOauth"]["refreshTokenExpiresAt"], 1000,
            "moved earlier"
        );
        let mut without: Value =
            serde_json::from_str(r#"{"claudeAiOauth":{"accessToken":"a"}}"#).unwrap();
        Claude.apply(&mut without, &sooner, 0);
        assert!(
            without["claudeAiOauth"]
                .get("refreshTokenExpiresAt")
                .is_none(),
            "never added"
        );
        assert_eq!(o["scopes"], json!(["user:inference", "user:profile"]));
        resp.expires_in = Some(u64::MAX);
        Claude.apply(&mut doc, &resp, i64::MAX - 5);
        assert_eq!(doc["claudeAiOauth"]["expiresAt"], i64::MAX);
    }
}
