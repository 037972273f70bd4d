//! Codex CLI: where its login lives (`$CODEX_HOME/auth.json`), how its JSON maps to a [`Login`]
//! (the expiry is the access token's JWT `exp`), what its token request looks like, how a token
//! response is written back (only the `tokens.*` that came back, and `last_refresh`), and which
//! of its locks we honour. Facts (observed on Codex CLI 0.171): `docs/providers.md`, "Codex CLI".
//!
//! Codex refreshes on its own when 5 minutes or less are left, posting *before* it takes its
//! locks; two refreshers presenting the same single-use refresh token get the login revoked. So
//! tokenkeeper keeps the token a day away from expiry (Codex never gets near its own window),
//! serializes its own refreshes with its own lock, and takes Codex's two `flock`s only around the
//! re-read-compare-write, as Codex does: held across the request they would stall every Codex run.

use crate::error::Error;
use crate::login::{EpochMs, Login};
use crate::oauth::endpoint::TokenResponse;
use crate::provider::shape::{Shape, Spent};
use crate::provider::{
    Body, Defaults, Facts, Provider, RejectionRule, SaveLock, TokenRequest, object_at,
};
use crate::secret::Secret;
use crate::settings::Settings;
use crate::storage::credentials_file::{CredentialsFile, Layout, Owner};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::Duration;

pub const OWNER: Owner = Owner {
    provider: "codex",
    name: "Codex CLI",
    relogin: "`codex login`",
};
/// Codex refreshes by itself at 5 minutes left; a day keeps it from ever needing to.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(86_400);
/// Without an `exp` in the access token, Codex refreshes once `last_refresh` is this old.
const LAST_REFRESH_MAX_AGE_MS: i64 = 8 * 86_400_000;
/// No access token is believed to live longer than this after it was issued (Codex's own rule
/// above says its tokens live about 8 days; this leaves a wide margin). An `exp` further out is
/// capped, so that the login is still refreshed.
const LONGEST_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
const TOKENS: &str = "tokens";
const LAST_REFRESH: &str = "last_refresh";
/// The top-level keys `parse` and `apply` read or write.
const DOC_KEYS: [&str; 4] = [TOKENS, LAST_REFRESH, "OPENAI_API_KEY", "auth_mode"];
/// An access-only copy of a Codex login: `tokens` and `last_refresh` (which keeps Codex from
/// refreshing by age), with `tokens.refresh_token` empty.
pub static COPY_SHAPE: Shape = Shape::new(
    &[TOKENS, LAST_REFRESH],
    &[TOKENS, "refresh_token"],
    Spent::Empty,
);
const RELOGIN: &str = "Log in again with `codex login`.";

/// The token request as the CLI itself sends it; each overridable in the config file.
pub const DEFAULTS: Defaults = Defaults {
    token_url: "https://auth.openai.com/oauth/token",
    client_id: "app_EMoamEEZ73f0CkXaXp7hrann",
    scope: "",
    // The start of Codex's own User-Agent (`codex_cli_rs/<version> (<os>; <arch>) <terminal>`).
    user_agent: "codex_cli_rs/0.171.0",
};

/// What Codex CLI is, as data: a pretty-printed file, and a 401 of any kind from the token
/// endpoint is a dead login.
pub const FACTS: Facts = Facts {
    rejection_rule: RejectionRule::OAuthOrAny401,
    layout: Layout::Pretty,
    overriding_env: &["CODEX_API_KEY"],
    home_env: &["CODEX_HOME"],
    ..Facts::new(OWNER, DEFAULT_MIN_TTL, DEFAULTS)
};

/// Codex CLI's rules, for the refresh protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct Codex;

impl Provider for Codex {
    fn facts(&self) -> &Facts {
        &FACTS
    }

    fn copy_shape(&self) -> Option<&Shape> {
        Some(&COPY_SHAPE)
    }

    fn default_path(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
        default_credentials_path(env)
    }

    fn when_missing(&self, file: &CredentialsFile) -> Option<Error> {
        let config = file.folder().join("config.toml");
        let text = std::fs::read_to_string(&config).ok()?;
        let problem = elsewhere(&text)?;
        Some(file.malformed(
            &format!(
                "are not there: {problem} ({} sets cli_auth_credentials_store), where tokenkeeper cannot keep it fresh",
                config.display()
            ),
            "Set cli_auth_credentials_store = \"file\" there and log in again with `codex login`.",
        ))
    }

    /// Reads the login out of an `auth.json` document. The access token's JWT `exp` is its expiry
    /// (believed up to [`LONGEST_LIFETIME`] after the token was issued); without one,
    /// `last_refresh` plus 8 days (when Codex would refresh), else already expired.
    /// A wiped refresh token parses to a [`Login`] with an empty refresh token, which
    /// [`Login::freshness`] calls dead.
    fn parse(&self, file: &CredentialsFile, doc: &Value) -> Result<Login, Error> {
        let Some(root) = doc.as_object() else {
            return Err(file.malformed("are not a JSON object", RELOGIN));
        };
        let tokens = match root.get(TOKENS) {
            Some(Value::Object(tokens)) => tokens,
            None | Some(Value::Null) => return Err(no_tokens(file, root)),
            Some(_) => {
                return Err(file.malformed("have a \"tokens\" that is not an object", RELOGIN));
            }
        };
        let token = |key: &str| {
            crate::provider::token_field(file, tokens, key, &format!("tokens.{key}"), RELOGIN)
        };
        let access_token = token("access_token")?;
        let refresh_token = token("refresh_token")?;
        let id_token = token("id_token")?;
        let last_refresh = match root.get(LAST_REFRESH) {
            Some(Value::String(s)) => Some(
                s.parse::<jiff::Timestamp>()
                    .map_err(|_| {
                        file.malformed(
                            "have a \"last_refresh\" that is not an RFC 3339 time, so Codex CLI will not load them",
                            RELOGIN,
                        )
                    })?
                    .as_millisecond(),
            ),
            Some(Value::Null) | None => None,
            Some(_) => {
                return Err(file.malformed(
                    "have a \"last_refresh\" that is not a string, so Codex CLI will not load them",
                    RELOGIN,
                ));
            }
        };
        // Codex refuses the whole file when the id token does not decode; a wiped login is dead
        // whatever its id token, so that is said first.
        if !refresh_token.is_empty() && crate::oauth::jwt::claims(id_token.expose()).is_none() {
            return Err(file.malformed(
                "have a \"tokens.id_token\" that is not a JWT, so Codex CLI will not load them",
                RELOGIN,
            ));
        }
        Ok(Login {
            expires_at: expiry(&access_token, last_refresh),
            access_token,
            refresh_token,
            login_expires_at: None,
            scopes: None,
        })
    }

    fn doc_keys(&self) -> Option<Vec<String>> {
        Some(DOC_KEYS.iter().map(|k| k.to_string()).collect())
    }

    fn token_request(&self, refresh_token: &Secret, settings: &Settings) -> TokenRequest {
        let body = token_request(refresh_token, &settings.client_id, &settings.scope);
        Body::Json(body).into()
    }

    /// Writes a token response into the document: the `tokens.access_token`, `tokens.refresh_token`
    /// and `tokens.id_token` that came back (a token the response lacks is kept), and `last_refresh`
    /// = `now`. `account_id`, `auth_mode`, `OPENAI_API_KEY` and every other key keep their value and
    /// their place.
    fn apply(&self, doc: &mut Value, response: &TokenResponse, now: EpochMs) {
        let Some(root) = doc.as_object_mut() else {
            return;
        };
        let tokens = object_at(root, TOKENS);
        if let Some(id) = &response.id_token {
            tokens.insert("id_token".into(), json!(id.expose()));
        }
        tokens.insert("access_token".into(), json!(response.access_token.expose()));
        if let Some(refresh) = &response.refresh_token {
            tokens.insert("refresh_token".into(), json!(refresh.expose()));
        }
        root.insert(LAST_REFRESH.into(), json!(rfc3339_nanos(now)));
    }

    /// Codex's order: `auth.lock` in its home (waited for), then `<auth.json>.lock` beside the
    /// file the path resolves to (polled). Resolving the symlink reads the file system.
    fn save_lock(&self, file: &CredentialsFile) -> SaveLock {
        let target = file.target().unwrap_or_else(|_| file.path().to_path_buf());
        let mut beside = target.into_os_string();
        beside.push(".lock");
        SaveLock::Flocks(vec![file.folder().join("auth.lock"), PathBuf::from(beside)])
    }

    fn inject_env(&self, _access_token: &Secret) -> Result<Vec<(String, String)>, String> {
        Err(
            "Codex CLI has no environment variable that takes a ChatGPT access token \
             (CODEX_API_KEY takes an API key, not a login)"
                .to_string(),
        )
    }
}

/// `$CODEX_HOME/auth.json` when `CODEX_HOME` is set and not empty, else `~/.codex/auth.json`.
pub fn default_credentials_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let folder = crate::provider::env_path(env, "CODEX_HOME")
        .or_else(|| crate::provider::home(env).map(|h| h.join(".codex")))?;
    Some(folder.join("auth.json"))
}

/// Where Codex's `config.toml` says the login is kept instead of `auth.json`, if it says so.
fn elsewhere(config_toml: &str) -> Option<&'static str> {
    let table: toml::Table = toml::from_str(config_toml).ok()?;
    match table.get("cli_auth_credentials_store")?.as_str()? {
        "keyring" => Some("Codex CLI keeps its login in the OS keyring"),
        "auto" => Some("Codex CLI keeps its login in the OS keyring when there is one"),
        "ephemeral" => Some("Codex CLI keeps its login in memory only"),
        _ => None,
    }
}

/// When the access token expires, as Codex judges it, with an `exp` never believed more than
/// [`LONGEST_LIFETIME`] after the token was issued (its `iat`, or the `last_refresh` written with
/// it, whichever is later).
fn expiry(access_token: &Secret, last_refresh: Option<EpochMs>) -> EpochMs {
    crate::oauth::jwt::believed_expiry_ms(access_token.expose(), last_refresh, LONGEST_LIFETIME)
        .or_else(|| last_refresh.map(|t| t.saturating_add(LAST_REFRESH_MAX_AGE_MS)))
        .unwrap_or(0)
}

/// A file without `tokens`: an API-key login (nothing to refresh), or no login at all.
fn no_tokens(file: &CredentialsFile, root: &Map<String, Value>) -> Error {
    let api_key = root
        .get("OPENAI_API_KEY")
        .and_then(Value::as_str)
        .is_some_and(|k| !k.is_empty());
    let mode = root.get("auth_mode").and_then(Value::as_str);
    if api_key || matches!(mode, Some("apikey" | "api_key")) {
        return Error::NothingToKeep {
            path: file.path().to_path_buf(),
            reason: "hold an API-key login (OPENAI_API_KEY, no \"tokens\"): an API key does not expire, so there is nothing to keep fresh".into(),
            hint: "tokenkeeper keeps ChatGPT logins: sign in with `codex login` to use one, or leave Codex CLI out (--provider).".into(),
        };
    }
    file.malformed("hold no Codex CLI login (no \"tokens\")", RELOGIN)
}

/// The refresh request body, in Codex's own shape (a scope only when one is configured).
pub fn token_request(refresh_token: &Secret, client_id: &str, scope: &str) -> Value {
    let mut body = json!({
        "client_id": client_id,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token.expose(),
        // What Codex sends when it refreshes ahead of expiry, which is all tokenkeeper does.
        "refresh_reason": "proactive_expiry",
    });
    if !scope.is_empty() {
        body["scope"] = json!(scope);
    }
    body
}

/// `2026-11-29T15:37:26.902000000Z`: UTC with nine fractional digits, as Codex writes it.
pub fn rfc3339_nanos(ms: EpochMs) -> String {
    let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    format!("{ts:.9}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::jwt::unsigned;

    fn file() -> CredentialsFile {
        CredentialsFile::new("/h/.codex/auth.json", OWNER).with_layout(Layout::Pretty)
    }

    fn jwt_exp(exp_secs: i64) -> String {
        unsigned(&json!({"exp": exp_secs, "sub": "x"}))
    }

    fn doc(access: &str, refresh: &str, last_refresh: &str) -> Value {
        json!({
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": null,
            "tokens": {
                "id_token": unsigned(&json!({"email": "dev@example.test"})),
                "access_token": access,
                "refresh_token": refresh,
                "account_id": "acct-1"
            },
            "last_refresh": last_refresh
        })
    }

    #[test]
    fn expiry_is_the_access_tokens_exp() {
        let login = Codex
            .parse(
                &file(),
                &doc(
                    &jwt_exp(1_795_970_810),
                    "rt_1",
                    "2026-11-29T15:37:26.902700475Z",
                ),
            )
            .unwrap();
        assert_eq!(login.expires_at, 1_795_970_810_000);
        assert_eq!(login.refresh_token.expose(), "rt_1");
        assert_eq!(login.login_expires_at, None);
    }

    #[test]
    fn without_exp_the_expiry_is_last_refresh_plus_eight_days() {
        let last = "2026-11-29T15:37:26.902700475Z";
        let last_ms = last.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        for access in [unsigned(&json!({"sub": "x"})), "opaque".to_string()] {
            let login = Codex.parse(&file(), &doc(&access, "rt_1", last)).unwrap();
            assert_eq!(login.expires_at, last_ms + 8 * 86_400_000, "{access}");
        }
        let mut without = doc("opaque", "rt_1", last);
        without.as_object_mut().unwrap().remove("last_refresh");
        assert_eq!(Codex.parse(&file(), &without).unwrap().expires_at, 0);
        without["last_refresh"] = Value::Null;
        assert_eq!(Codex.parse(&file(), &without).unwrap().expires_at, 0);
    }

    #[test]
    fn a_wiped_refresh_token_is_dead_whatever_else_the_file_holds() {
        for refresh in [json!(""), Value::Null] {
            let mut d = doc(&jwt_exp(2_000_000_000), "x", "2026-11-29T15:37:26Z");
            d["tokens"]["refresh_token"] = refresh;
            d["tokens"]["id_token"] = json!("");
            let login = Codex.parse(&file(), &d).unwrap();
            assert!(login.refresh_token.is_empty());
            assert_eq!(
                login.freshness(0, DEFAULT_MIN_TTL),
                crate::login::Freshness::Dead
            );
        }
    }

    #[test]
    fn bad_shapes_are_malformed_and_name_the_fix() {
        let good = doc(&jwt_exp(2_000_000_000), "rt_1", "2026-11-29T15:37:26Z");
        let edit = |f: &dyn Fn(&mut Value)| {
            let mut d = good.clone();
            f(&mut d);
            d
        };
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "not a JSON object"),
            (json!({}), "no Codex CLI login"),
            (
                edit(&|d| d["tokens"] = json!("x")),
                "\"tokens\" that is not an object",
            ),
            (
                edit(&|d| d["tokens"]["access_token"] = json!(1)),
                "tokens.access_token",
            ),
            (
                edit(&|d| d["tokens"]["refresh_token"] = json!({})),
                "tokens.refresh_token",
            ),
            (
                edit(&|d| d["tokens"]["id_token"] = json!("not-a-jwt")),
                "id_token\" that is not a JWT",
            ),
            (
                edit(&|d| {
                    d["tokens"].as_object_mut().unwrap().remove("id_token");
                }),
                "id_token\" that is not a JWT",
            ),
            (
                edit(&|d| d["last_refresh"] = json!("yesterday")),
                "last_refresh",
            ),
            (edit(&|d| d["last_refresh"] = json!(17)), "last_refresh"),
        ];
        for (bad, needle) in cases {
            let err = Codex.parse(&file(), &bad).unwrap_err();
            assert!(matches!(err, Error::Malformed { .. }), "{bad}");
            let msg = err.to_string();
            assert!(msg.contains(needle), "{bad}: {msg}");
            assert!(msg.contains("codex login"), "{bad}: {msg}");
            assert!(msg.contains("/h/.codex/auth.json"), "{msg}");
        }
    }

    #[test]
    fn an_api_key_login_has_nothing_to_keep_fresh() {
        for d in [
            json!({"OPENAI_API_KEY": "sk-proj-abc"}),
            json!({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-proj-abc", "tokens": null}),
            json!({"auth_mode": "apikey"}),
        ] {
            let msg = Codex.parse(&file(), &d).unwrap_err().to_string();
            assert!(msg.contains("API-key login"), "{msg}");
            assert!(msg.contains("nothing to keep fresh"), "{msg}");
            assert!(!msg.contains("sk-proj-abc"), "the key never appears: {msg}");
        }
    }

    fn response(refresh: Option<&str>, id: Option<&str>) -> TokenResponse {
        TokenResponse {
            access_token: Secret::new("new-access"),
            refresh_token: refresh.map(Secret::new),
            expires_in: None,
            scope: None,
            refresh_token_expires_in: None,
            id_token: id.map(Secret::new),
        }
    }

    #[test]
    fn apply_changes_only_what_came_back_and_last_refresh_in_place() {
        let text = r#"{"auth_mode":"chatgpt","OPENAI_API_KEY":null,"tokens":{"id_token":"i","access_token":"a","refresh_token":"r","account_id":"acct-1","later":2.50},"last_refresh":"2026-01-01T00:00:00Z","zzz":{"n":1e+21}}"#;
        let mut d: Value = serde_json::from_str(text).unwrap();
        Codex.apply(
            &mut d,
            &response(Some("new-refresh"), Some("new-id")),
            1_795_970_810_902,
        );
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"auth_mode":"chatgpt","OPENAI_API_KEY":null,"tokens":{"id_token":"new-id","access_token":"new-access","refresh_token":"new-refresh","account_id":"acct-1","later":2.50},"last_refresh":"2026-11-29T16:46:50.902000000Z","zzz":{"n":1e+21}}"#
        );

        let mut kept: Value = serde_json::from_str(text).unwrap();
        Codex.apply(&mut kept, &response(None, None), 0);
        assert_eq!(kept["tokens"]["refresh_token"], "r", "kept when not sent");
        assert_eq!(kept["tokens"]["id_token"], "i", "kept when not sent");
        assert_eq!(kept["tokens"]["account_id"], "acct-1");
        assert_eq!(kept["last_refresh"], "1970-01-01T00:00:00.000000000Z");

        let mut without: Value = serde_json::from_str(r#"{"OPENAI_API_KEY":null}"#).unwrap();
        Codex.apply(&mut without, &response(Some("r2"), None), 0);
        assert_eq!(
            serde_json::to_string(&without).unwrap(),
            r#"{"OPENAI_API_KEY":null,"tokens":{"access_token":"new-access","refresh_token":"r2"},"last_refresh":"1970-01-01T00:00:00.000000000Z"}"#
        );
    }

    #[test]
    fn a_login_written_by_apply_parses_back_with_the_new_expiry() {
        let mut d = doc("old", "rt_1", "2026-01-01T00:00:00Z");
        let mut r = response(Some("rt_2"), Some(&unsigned(&json!({"email": "e"}))));
        // Written 10 days before the token's exp (an expiry further from last_refresh than the
        // longest lifetime would be capped).
        let now = 1_900_000_000_000 - 10 * 86_400_000;
        r.access_token = Secret::new(jwt_exp(1_900_000_000));
        Codex.apply(&mut d, &r, now);
        let login = Codex.parse(&file(), &d).unwrap();
        assert_eq!(login.expires_at, 1_900_000_000_000);
        assert_eq!(Codex.stored_refresh_token(&d), "rt_2");
        // An opaque access token: Codex's 8-day rule, from the last_refresh just written.
        r.access_token = Secret::new("opaque");
        Codex.apply(&mut d, &r, now);
        assert_eq!(
            Codex.parse(&file(), &d).unwrap().expires_at,
            now + 8 * 86_400_000
        );
    }

    #[test]
    fn extreme_times_saturate() {
        for (ms, year) in [(i64::MAX, "9999-"), (i64::MIN, "-009999-")] {
            let text = rfc3339_nanos(ms);
            assert!(text.starts_with(year), "{text}");
            assert!(text.parse::<jiff::Timestamp>().is_ok(), "{text}");
        }
        let mut d = doc("opaque", "rt_1", "9999-06-30T23:59:59Z");
        assert!(Codex.parse(&file(), &d).unwrap().expires_at > 0);
        // An absurd exp is believed only up to the longest lifetime after `last_refresh`.
        d["tokens"]["access_token"] = json!(unsigned(&json!({"exp": i64::MAX})));
        let last = jiff::Timestamp::from_second(253_386_403_199)
            .unwrap()
            .as_millisecond();
        assert_eq!(
            Codex.parse(&file(), &d).unwrap().expires_at,
            last + 30 * 86_400_000
        );
    }

    #[test]
    fn an_exp_past_the_longest_lifetime_is_capped_from_when_the_token_was_issued() {
        // The year 9999 and a u64::MAX-ish exp, with last_refresh written beside the token.
        let last_ms = "2026-11-29T15:37:26Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        for exp in [json!(253_402_300_799_i64), json!(u64::MAX)] {
            let access = unsigned(&json!({"exp": exp}));
            let login = Codex
                .parse(&file(), &doc(&access, "rt_1", "2026-11-29T15:37:26Z"))
                .unwrap();
            assert_eq!(login.expires_at, last_ms + 30 * 86_400_000, "{exp}");
            // The token's own iat, when later (an old last_refresh beside a new token), is what
            // the lifetime is counted from.
            let iat = last_ms / 1000 + 86_400;
            let access = unsigned(&json!({"exp": exp, "iat": iat}));
            let login = Codex
                .parse(&file(), &doc(&access, "rt_1", "2026-11-29T15:37:26Z"))
                .unwrap();
            assert_eq!(login.expires_at, iat * 1000 + 30 * 86_400_000, "{exp}");
        }
        // A real lifetime is the token's own.
        let real = unsigned(&json!({"exp": last_ms / 1000 + 10 * 86_400}));
        let login = Codex
            .parse(&file(), &doc(&real, "rt_1", "2026-11-29T15:37:26Z"))
            .unwrap();
        assert_eq!(login.expires_at, last_ms + 10 * 86_400_000);
    }

    #[test]
    fn the_request_is_codexs_json_with_a_scope_only_when_configured() {
        let body = token_request(&Secret::new("rt_1"), DEFAULTS.client_id, "");
        assert_eq!(
            body.to_string(),
            r#"{"client_id":"app_EMoamEEZ73f0CkXaXp7hrann","grant_type":"refresh_token","refresh_token":"rt_1","refresh_reason":"proactive_expiry"}"#
        );
        let body = token_request(&Secret::new("rt_1"), DEFAULTS.client_id, "openid");
        assert_eq!(body["scope"], "openid");
    }

    #[cfg(unix)]
    #[test]
    fn save_locks_are_codexs_in_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join(".codex");
        let vault = dir.path().join("vault");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&vault).unwrap();
        std::fs::write(vault.join("codex.json"), "{}").unwrap();
        std::os::unix::fs::symlink(vault.join("codex.json"), home.join("auth.json")).unwrap();
        let f = CredentialsFile::new(home.join("auth.json"), OWNER);
        let SaveLock::Flocks(paths) = Codex.save_lock(&f) else {
            panic!("flocks")
        };
        let real_vault = std::fs::canonicalize(&vault).unwrap();
        assert_eq!(
            paths,
            vec![home.join("auth.lock"), real_vault.join("codex.json.lock")]
        );
        assert!(
            Codex.refresh_locks(&f).is_empty(),
            "none across the request"
        );
    }

    #[test]
    fn no_env_injection_and_codex_api_key_overrides() {
        let why = Codex.inject_env(&Secret::new("a")).unwrap_err();
        assert!(why.contains("no environment variable"), "{why}");
        assert_eq!(Codex.facts().overriding_env, &["CODEX_API_KEY"]);
    }

    #[test]
    fn a_login_kept_outside_auth_json_is_named() {
        assert!(elsewhere("cli_auth_credentials_store = \"keyring\"\n").is_some());
        assert!(elsewhere("model = \"o3\"\ncli_auth_credentials_store = \"auto\"\n").is_some());
        assert!(elsewhere("cli_auth_credentials_store = \"file\"\n").is_none());
        assert!(elsewhere("[x]\ncli_auth_credentials_store = \"keyring\"\n").is_none());
        assert!(elsewhere("not toml").is_none());
        let dir = tempfile::tempdir().unwrap();
        let f = CredentialsFile::new(dir.path().join("auth.json"), OWNER);
        assert!(Codex.when_missing(&f).is_none());
        std::fs::write(
            dir.path().join("config.toml"),
            "cli_auth_credentials_store = \"keyring\"\n",
        )
        .unwrap();
        let msg = Codex.when_missing(&f).unwrap().to_string();
        assert!(
            msg.contains("OS keyring") && msg.contains("cli_auth_credentials_store = \"file\""),
            "{msg}"
        );
    }
}
