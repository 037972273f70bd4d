//! Gemini CLI: where its login lives (`<home>/.gemini/oauth_creds.json`), how google-auth-library's
//! credentials map to a [`Login`], the form-encoded refresh with the installed application's client
//! id and secret, and how a token response is written back. Facts (observed on Gemini CLI 0.61):
//! `docs/providers.md`, "Gemini CLI".
//!
//! Two things set Gemini apart. It rewrites its file in place (truncate, then write, no lock), so an
//! empty or cut-off file is a write in progress, never a logout ([`Facts::rewritten_in_place`]).
//! And its refresh needs the client secret that Gemini CLI carries in its own source: it comes from
//! `client_secret` in `[gemini]` of the config file, else from the installed Gemini CLI package
//! ([`find_client_secret`]), found once per process and never shown anywhere.

use crate::error::Error;
use crate::login::{EpochMs, Login};
use crate::oauth::endpoint::TokenResponse;
use crate::provider::shape::{Shape, Spent};
use crate::provider::{Body, Defaults, Facts, Provider, TokenRequest, epoch_ms_field, token_field};
use crate::secret::Secret;
use crate::settings::Settings;
use crate::storage::credentials_file::{CredentialsFile, Layout, Owner};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const OWNER: Owner = Owner {
    provider: "gemini",
    name: "Gemini CLI",
    relogin: "`gemini`",
};
/// Google's access tokens live an hour and Gemini refreshes by itself at 5 minutes left; 15 minutes
/// keeps it from ever needing to without refreshing more than every 45 minutes.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(15 * 60);
/// Gemini CLI's exit code for a fatal authentication error (`FatalAuthenticationError`).
pub const AUTH_FAILURE_EXIT_CODE: i32 = 41;
/// Node module folders to look in for Gemini CLI's client secret, instead of the usual ones
/// (separated as in `PATH`).
pub const NPM_ROOT_ENV: &str = "TOKENKEEPER_NPM_ROOT";
/// With this set to `true`, Gemini keeps its login encrypted or in the keychain, not in the file.
pub const ENCRYPTED_STORAGE_ENV: &str = "GEMINI_FORCE_ENCRYPTED_FILE_STORAGE";
/// Gemini's encrypted login file, beside `oauth_creds.json`.
pub const ENCRYPTED_FILE: &str = "gemini-credentials.json";
/// A token response without `expires_in` (Google's always has one): assume this much, less than
/// Google's hour, so that such a token is refreshed early rather than late.
const UNKNOWN_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// No answer is believed to live longer than this (Google's access tokens live 1 hour).
const LONGEST_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const SECRET_NAME: &str = "OAUTH_CLIENT_SECRET";
/// google-auth-library's fields of the login, which an access-only copy shares.
const LOGIN_KEYS: &[&str] = &[
    "access_token",
    "refresh_token",
    "expiry_date",
    "scope",
    "token_type",
    "id_token",
];
/// The top-level keys `parse` and `apply` read or write: the login's, and `type`.
const OTHER_DOC_KEYS: &[&str] = &["type"];
/// An access-only copy of a Gemini login: its fields without `refresh_token` (so that the
/// library never tries to refresh).
pub static COPY_SHAPE: Shape = Shape::new(LOGIN_KEYS, &["refresh_token"], Spent::Absent);
/// Bundles are large (tens of MB); anything larger than this is not Gemini CLI's.
const MAX_SOURCE_BYTES: u64 = 64 << 20;
const NPM_TIMEOUT: Duration = Duration::from_secs(10);

/// The token request as the CLI itself sends it; each overridable in the config file.
pub const DEFAULTS: Defaults = Defaults {
    token_url: "https://oauth2.googleapis.com/token",
    client_id: "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com",
    scope: "",
    user_agent: concat!("tokenkeeper/", env!("CARGO_PKG_VERSION")),
};

/// What Gemini CLI is, as data: a pretty-printed file it rewrites in place, and an exit code of
/// its own for a failed login.
pub const FACTS: Facts = Facts {
    layout: Layout::Pretty,
    rewritten_in_place: true,
    overriding_env: &[
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_CLOUD_ACCESS_TOKEN",
    ],
    auth_failure_exit_code: Some(AUTH_FAILURE_EXIT_CODE),
    home_env: &["GEMINI_CLI_HOME"],
    ..Facts::new(OWNER, DEFAULT_MIN_TTL, DEFAULTS)
};

/// Gemini CLI's rules, for the refresh protocol. Holds the client secret once found.
#[derive(Debug, Default)]
pub struct Gemini {
    found_secret: OnceLock<Secret>,
}

impl Provider for Gemini {
    fn facts(&self) -> &Facts {
        &FACTS
    }

    fn copy_shape(&self) -> Option<&Shape> {
        Some(&COPY_SHAPE)
    }

    /// A wrong client secret (a typo in the config, an odd install) is not a dead login.
    fn invalid_client_is_config(&self, _settings: &Settings) -> bool {
        true
    }

    fn default_path(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
        default_credentials_path(env)
    }

    /// The client secret: the config's, else one found before, else looked for in the installed
    /// Gemini CLI (and remembered for the rest of the process).
    fn ready(&self, settings: &Settings) -> Result<(), String> {
        if configured_secret(settings).is_some() || self.found_secret.get().is_some() {
            return Ok(());
        }
        let env = |k: &str| std::env::var(k).ok();
        let (roots, overridden) = search_roots(&env);
        let found = find_client_secret(&roots).or_else(|| {
            // The last resort costs a process start (and npm takes a while), so only here.
            (!overridden)
                .then(npm_global_root)
                .flatten()
                .and_then(|root| find_client_secret(&[root]))
        });
        match found {
            Some((secret, source)) => {
                tracing::debug!(
                    "using Gemini CLI's client secret {} from {}",
                    secret.fingerprint(),
                    source.display()
                );
                let _ = self.found_secret.set(secret);
                Ok(())
            }
            None => Err(secret_not_found(&settings.config_path, overridden)),
        }
    }

    fn when_missing(&self, file: &CredentialsFile) -> Option<Error> {
        let flag = std::env::var(ENCRYPTED_STORAGE_ENV).ok();
        let encrypted = file.folder().join(ENCRYPTED_FILE);
        let encrypted = encrypted.exists().then_some(encrypted);
        encrypted_store(file, flag.as_deref(), encrypted.as_deref())
    }

    /// Reads the login out of google-auth-library's credentials. `expiry_date` is epoch milliseconds;
    /// without one the token counts as expired. Empty (or null) tokens parse to a [`Login`] with empty
    /// tokens, which [`Login::freshness`] calls dead.
    fn parse(&self, file: &CredentialsFile, doc: &Value) -> Result<Login, Error> {
        let relogin = "Log in again with `gemini`.";
        let Some(root) = doc.as_object() else {
            return Err(file.malformed("are not a JSON object", relogin));
        };
        if root.get("type").and_then(Value::as_str) == Some("external_account_authorized_user") {
            return Err(file.malformed(
                "hold an external-account (workforce identity) login, which tokenkeeper does not refresh",
                "Leave its refresh to Gemini CLI, or log in with Google in `gemini`.",
            ));
        }
        if !root.contains_key("refresh_token") && !root.contains_key("access_token") {
            return Err(file.malformed(
                "hold no Gemini CLI login (no \"access_token\" or \"refresh_token\" key)",
                relogin,
            ));
        }
        let token = |key: &str| token_field(file, root, key, key, relogin);
        let access_token = token("access_token")?;
        let refresh_token = token("refresh_token")?;
        let expires_at = epoch_ms_field(file, root, "expiry_date", relogin)?;
        let scopes = root
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| s.split_whitespace().map(str::to_string).collect());
        Ok(Login {
            access_token,
            refresh_token,
            expires_at,
            login_expires_at: None,
            scopes,
        })
    }

    fn doc_keys(&self) -> Option<Vec<String>> {
        Some(
            OTHER_DOC_KEYS
                .iter()
                .chain(LOGIN_KEYS)
                .map(|k| k.to_string())
                .collect(),
        )
    }

    fn token_request(&self, refresh_token: &Secret, settings: &Settings) -> TokenRequest {
        let secret = configured_secret(settings).or_else(|| self.found_secret.get().cloned());
        Body::Form(token_request(
            refresh_token,
            &settings.client_id,
            secret.as_ref(),
            &settings.scope,
        ))
        .into()
    }

    /// Writes a token response into the document: `access_token`, `expiry_date` (always, in ms),
    /// `refresh_token` only when a new one came back (Google usually sends none), `scope` and
    /// `id_token` when they came back. Every other key keeps its value and its place.
    fn apply(&self, doc: &mut Value, response: &TokenResponse, now: EpochMs) {
        let Some(root) = doc.as_object_mut() else {
            return;
        };
        root.insert("access_token".into(), json!(response.access_token.expose()));
        if let Some(refresh) = &response.refresh_token {
            root.insert("refresh_token".into(), json!(refresh.expose()));
        }
        if let Some(scope) = response.scope.as_deref().filter(|s| !s.trim().is_empty()) {
            root.insert("scope".into(), json!(scope));
        }
        if let Some(id_token) = &response.id_token {
            root.insert("id_token".into(), json!(id_token.expose()));
        }
        root.insert(
            "expiry_date".into(),
            json!(response.expires_at(now, UNKNOWN_LIFETIME, LONGEST_LIFETIME)),
        );
    }

    fn inject_env(&self, access_token: &Secret) -> Result<Vec<(String, String)>, String> {
        Ok(vec![
            ("GOOGLE_GENAI_USE_GCA".to_string(), "true".to_string()),
            (
                "GOOGLE_CLOUD_ACCESS_TOKEN".to_string(),
                access_token.expose().to_string(),
            ),
        ])
    }
}

/// `client_secret` from `[gemini]`, when set and not empty.
fn configured_secret(settings: &Settings) -> Option<Secret> {
    settings.client_secret.clone().filter(|s| !s.is_empty())
}

/// `$GEMINI_CLI_HOME/.gemini/oauth_creds.json`, else the same under the user's home.
pub fn default_credentials_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let home =
        crate::provider::env_path(env, "GEMINI_CLI_HOME").or_else(|| crate::provider::home(env))?;
    Some(home.join(".gemini").join("oauth_creds.json"))
}

/// When the file is missing because Gemini keeps its login encrypted or in the keychain: the error
/// that says so. `flag` is `$GEMINI_FORCE_ENCRYPTED_FILE_STORAGE`; `encrypted` the encrypted file
/// beside the credentials, when it exists.
pub fn encrypted_store(
    file: &CredentialsFile,
    flag: Option<&str>,
    encrypted: Option<&Path>,
) -> Option<Error> {
    let forced = flag == Some("true");
    let where_ = match (encrypted, forced) {
        (Some(path), _) => format!("in the encrypted file {}", path.display()),
        (None, true) => "in the system keychain".to_string(),
        (None, false) => return None,
    };
    let why = if forced {
        format!(" ({ENCRYPTED_STORAGE_ENV}=true)")
    } else {
        String::new()
    };
    Some(file.malformed(
        &format!(
            "are missing: Gemini CLI keeps this login {where_}{why}, which tokenkeeper does not support"
        ),
        &format!(
            "To use tokenkeeper, unset {ENCRYPTED_STORAGE_ENV} and log in again with `gemini`, which keeps the login in {}.",
            file.path().display()
        ),
    ))
}

/// The form google-auth-library posts: refresh token, client id, client secret, grant type (and
/// a scope only when one is configured; Gemini sends none).
pub fn token_request(
    refresh_token: &Secret,
    client_id: &str,
    client_secret: Option<&Secret>,
    scope: &str,
) -> Vec<(String, String)> {
    let mut form = vec![
        (
            "refresh_token".to_string(),
            refresh_token.expose().to_string(),
        ),
        ("client_id".to_string(), client_id.to_string()),
    ];
    if let Some(secret) = client_secret {
        form.push(("client_secret".to_string(), secret.expose().to_string()));
    }
    form.push(("grant_type".to_string(), "refresh_token".to_string()));
    if !scope.trim().is_empty() {
        form.push(("scope".to_string(), scope.to_string()));
    }
    form
}

/// The node module folders to look in for Gemini CLI, and whether `$TOKENKEEPER_NPM_ROOT` chose
/// them (then they are the only ones). Otherwise: where the `gemini` on `PATH` really lives, the
/// npm prefix, and the usual global install folders of npm, nvm, pnpm, Volta, Homebrew and Windows.
pub fn search_roots(env: &dyn Fn(&str) -> Option<String>) -> (Vec<PathBuf>, bool) {
    if let Some(list) = env(NPM_ROOT_ENV).filter(|v| !v.trim().is_empty()) {
        return (std::env::split_paths(&list).collect(), true);
    }
    let set = |k: &str| crate::provider::env_path(env, k);
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(path) = env("PATH") {
        for dir in std::env::split_paths(&path) {
            // npm on Windows puts `gemini.cmd` in its prefix, beside `node_modules`.
            if dir.join("gemini.cmd").is_file() {
                roots.push(dir.join("node_modules"));
            }
            let program = dir.join("gemini");
            if !program.is_file() {
                continue;
            }
            if let Some(root) = std::fs::canonicalize(&program)
                .ok()
                .as_deref()
                .and_then(package_root)
            {
                roots.push(root);
            }
            if let Some(prefix) = dir.parent() {
                roots.push(prefix.join("lib/node_modules"));
            }
        }
    }
    for prefix in [set("NPM_CONFIG_PREFIX"), set("npm_config_prefix")]
        .into_iter()
        .flatten()
    {
        roots.push(prefix.join("lib/node_modules"));
        roots.push(prefix.join("node_modules"));
    }
    let home = crate::provider::home(env);
    if let Some(home) = &home {
        roots.push(home.join(".npm-global/lib/node_modules"));
        roots.push(home.join(".volta/tools/image/packages/@google/gemini-cli/lib/node_modules"));
    }
    let nvm = set("NVM_DIR").or_else(|| home.as_ref().map(|h| h.join(".nvm")));
    if let Some(nvm) = nvm {
        roots.extend(subfolders(&nvm.join("versions/node"), "lib/node_modules"));
    }
    let pnpm = set("PNPM_HOME").or_else(|| home.as_ref().map(|h| h.join(".local/share/pnpm")));
    if let Some(pnpm) = pnpm {
        roots.extend(subfolders(&pnpm.join("global"), "node_modules"));
    }
    for fixed in [
        "/usr/local/lib/node_modules",
        "/usr/lib/node_modules",
        "/opt/homebrew/lib/node_modules",
        "/opt/homebrew/opt/gemini-cli/libexec/lib/node_modules",
        "/usr/local/opt/gemini-cli/libexec/lib/node_modules",
        "/home/linuxbrew/.linuxbrew/opt/gemini-cli/libexec/lib/node_modules",
    ] {
        roots.push(PathBuf::from(fixed));
    }
    if let Some(appdata) = set("APPDATA") {
        roots.push(appdata.join("npm").join("node_modules"));
    }
    let mut seen = std::collections::HashSet::new();
    roots.retain(|r| seen.insert(r.clone()));
    (roots, false)
}

/// `<dir>/*/<tail>` for every subfolder of `dir`, newest-named last.
fn subfolders(dir: &Path, tail: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(tail))
        .collect();
    found.sort();
    found
}

/// The `node_modules` folder that holds the `@google/gemini-cli` package a file belongs to.
fn package_root(file: &Path) -> Option<PathBuf> {
    file.ancestors().find_map(|dir| {
        let parent = dir.parent()?;
        (dir.file_name()? == "gemini-cli" && parent.file_name()? == "@google")
            .then(|| parent.parent().map(Path::to_path_buf))
            .flatten()
    })
}

/// Gemini CLI's client secret from the first of `roots` that holds it: in
/// `@google/gemini-cli-core/dist/src/code_assist/oauth2.js` (also nested under
/// `@google/gemini-cli/node_modules`), or in a bundled `@google/gemini-cli/bundle/*.js`. Returns
/// the file it came from too.
pub fn find_client_secret(roots: &[PathBuf]) -> Option<(Secret, PathBuf)> {
    let core = "@google/gemini-cli-core/dist/src/code_assist/oauth2.js";
    roots.iter().find_map(|root| {
        let cli = root.join("@google/gemini-cli");
        let mut files = vec![root.join(core), cli.join("node_modules").join(core)];
        let mut bundled: Vec<PathBuf> = std::fs::read_dir(cli.join("bundle"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "js"))
            .collect();
        bundled.sort();
        files.extend(bundled);
        files.into_iter().find_map(|file| {
            let meta = std::fs::metadata(&file).ok()?;
            if !meta.is_file() || meta.len() > MAX_SOURCE_BYTES {
                return None;
            }
            let bytes = std::fs::read(&file).ok()?;
            let secret = secret_in_source(&String::from_utf8_lossy(&bytes))?.to_string();
            Some((Secret::new(secret), file))
        })
    })
}

/// The string assigned to `OAUTH_CLIENT_SECRET` (or a bundler's renamed `OAUTH_CLIENT_SECRET2`)
/// in JavaScript source: `const OAUTH_CLIENT_SECRET = 'GOCSPX-…';`. Uses elsewhere (`clientSecret:
/// OAUTH_CLIENT_SECRET`) and other names ending the same way are passed over.
pub fn secret_in_source(text: &str) -> Option<&str> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    let mut from = 0;
    while let Some(at) = text[from..].find(SECRET_NAME) {
        let start = from + at;
        from = start + SECRET_NAME.len();
        if text[..start].chars().next_back().is_some_and(ident) {
            continue;
        }
        let rest = text[from..].trim_start_matches(|c: char| c.is_ascii_digit());
        if rest.starts_with(ident) {
            continue;
        }
        let Some(value) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        if value.starts_with(['=', '>']) {
            continue;
        }
        let value = value.trim_start();
        let Some(quote) = value
            .chars()
            .next()
            .filter(|c| matches!(c, '\'' | '"' | '`'))
        else {
            continue;
        };
        let body = &value[1..];
        let Some(end) = body.find(quote) else {
            continue;
        };
        let secret = &body[..end];
        if !secret.is_empty()
            && secret.len() <= 200
            && secret.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        {
            return Some(secret);
        }
    }
    None
}

/// `npm root -g`, given at most [`NPM_TIMEOUT`]; None when npm is missing, fails or dawdles.
fn npm_global_root() -> Option<PathBuf> {
    let mut child = Command::new("npm")
        .args(["root", "-g"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + NPM_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    let root = out.lines().next()?.trim();
    (!root.is_empty()).then(|| PathBuf::from(root))
}

/// What to do when no client secret was found.
fn secret_not_found(config_path: &Path, overridden: bool) -> String {
    let looked = if overridden {
        format!("in the folders {NPM_ROOT_ENV} names")
    } else {
        "in the global npm root and the usual install folders".to_string()
    };
    format!(
        "[gemini] sets no client_secret, and no installed Gemini CLI (@google/gemini-cli) was found {looked} to read it from; \
         install Gemini CLI (`npm install -g @google/gemini-cli`), or point {NPM_ROOT_ENV} at the node_modules folder that holds it, \
         or add client_secret = \"…\" under [gemini] in {} (the OAUTH_CLIENT_SECRET of Gemini CLI's code_assist/oauth2.js); tokenkeeper changed nothing",
        config_path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::env as env_of;
    use std::fs;

    fn file() -> CredentialsFile {
        CredentialsFile::new("/h/.gemini/oauth_creds.json", OWNER)
    }

    fn response() -> TokenResponse {
        TokenResponse {
            access_token: Secret::new("ya29.new"),
            refresh_token: None,
            expires_in: Some(3599),
            scope: None,
            refresh_token_expires_in: None,
            id_token: None,
        }
    }

    fn settings(secret: Option<&str>) -> Settings {
        crate::config::ProviderConfig {
            client_secret: secret.map(Secret::new),
            ..Default::default()
        }
        .settings(&Gemini::default(), Path::new("/c/config.toml"), None, None)
        .unwrap()
    }

    #[test]
    fn parses_expiry_in_milliseconds_and_refuses_bad_shapes() {
        let doc: Value = serde_json::from_str(
            r#"{"access_token":"ya29.a","refresh_token":"1//r","scope":"openid https://www.googleapis.com/auth/cloud-platform","token_type":"Bearer","id_token":"x.y.z","expiry_date":1795970810328}"#,
        )
        .unwrap();
        let login = Gemini::default().parse(&file(), &doc).unwrap();
        assert_eq!(login.expires_at, 1795970810328);
        assert_eq!(login.refresh_token.expose(), "1//r");
        assert_eq!(login.scopes.as_ref().map(Vec::len), Some(2));
        let no_expiry: Value =
            serde_json::from_str(r#"{"access_token":"a","refresh_token":"r"}"#).unwrap();
        assert_eq!(
            Gemini::default()
                .parse(&file(), &no_expiry)
                .unwrap()
                .expires_at,
            0
        );
        for (bad, needle) in [
            ("[]", "not a JSON object"),
            ("{}", "no Gemini CLI login"),
            (r#"{"claudeAiOauth":{}}"#, "no Gemini CLI login"),
            (r#"{"access_token":1,"refresh_token":"r"}"#, "access_token"),
            (
                r#"{"access_token":"a","refresh_token":["r"]}"#,
                "refresh_token",
            ),
            (
                r#"{"access_token":"a","refresh_token":"r","expiry_date":"soon"}"#,
                "expiry_date",
            ),
            (
                r#"{"type":"external_account_authorized_user","refresh_token":"r"}"#,
                "external-account",
            ),
        ] {
            let doc: Value = serde_json::from_str(bad).unwrap();
            let err = Gemini::default()
                .parse(&file(), &doc)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(err.contains("oauth_creds.json"), "{err}");
        }
    }

    #[test]
    fn an_empty_or_wiped_refresh_token_is_a_dead_login() {
        for wiped in [
            r#"{"access_token":"ya29.a","refresh_token":"","expiry_date":1}"#,
            r#"{"access_token":"ya29.a","refresh_token":null,"expiry_date":1}"#,
            r#"{"access_token":"ya29.a","expiry_date":1}"#,
        ] {
            let doc: Value = serde_json::from_str(wiped).unwrap();
            let login = Gemini::default().parse(&file(), &doc).unwrap();
            assert_eq!(
                login.freshness(0, DEFAULT_MIN_TTL),
                crate::login::Freshness::Dead,
                "{wiped}"
            );
        }
    }

    #[test]
    fn token_request_is_a_form_with_the_client_secret_and_no_scope() {
        let gemini = Gemini::default();
        let request = gemini.token_request(&Secret::new("1//r t"), &settings(Some("s3cret")));
        let (kind, bytes) = request.body.encode();
        assert_eq!(kind, "application/x-www-form-urlencoded");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                "refresh_token=1%2F%2Fr+t&client_id={}&client_secret=s3cret&grant_type=refresh_token",
                DEFAULTS.client_id
            )
        );
        let mut scoped = settings(Some("s"));
        scoped.scope = "openid".into();
        let Body::Form(form) = gemini.token_request(&Secret::new("r"), &scoped).body else {
            panic!("not a form")
        };
        assert_eq!(form.last().unwrap(), &("scope".into(), "openid".into()));
    }

    #[test]
    fn ready_needs_no_search_when_the_config_has_the_secret() {
        let gemini = Gemini::default();
        assert!(gemini.ready(&settings(Some("from-config"))).is_ok());
        assert!(gemini.found_secret.get().is_none(), "nothing searched");
        let with_found = Gemini::default();
        let _ = with_found.found_secret.set(Secret::new("found"));
        assert!(with_found.ready(&settings(None)).is_ok());
        let Body::Form(form) = with_found
            .token_request(&Secret::new("r"), &settings(None))
            .body
        else {
            panic!("not a form")
        };
        assert!(form.contains(&("client_secret".into(), "found".into())));
        let Body::Form(form) = with_found
            .token_request(&Secret::new("r"), &settings(Some("configured")))
            .body
        else {
            panic!("not a form")
        };
        assert!(
            form.contains(&("client_secret".into(), "configured".into())),
            "the config wins"
        );
    }

    #[test]
    fn the_not_found_message_says_how_to_set_it_and_holds_no_secret() {
        let msg = secret_not_found(Path::new("/c/config.toml"), false);
        assert!(msg.contains("client_secret = "), "{msg}");
        assert!(msg.contains("[gemini] in /c/config.toml"), "{msg}");
        assert!(msg.contains("npm install -g @google/gemini-cli"), "{msg}");
        assert!(!msg.contains("GOCSPX"), "{msg}");
        assert!(!msg.contains('\n'));
        assert!(secret_not_found(Path::new("/c"), true).contains(NPM_ROOT_ENV));
    }

    #[test]
    fn apply_writes_token_fields_and_keeps_the_rest_in_place() {
        let text = r#"{"access_token":"ya29.old","refresh_token":"1//r","scope":"s","token_type":"Bearer","id_token":"old.id.t","expiry_date":1,"extra":{"n":1.50}}"#;
        let mut doc: Value = serde_json::from_str(text).unwrap();
        Gemini::default().apply(&mut doc, &response(), 1000);
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"access_token":"ya29.new","refresh_token":"1//r","scope":"s","token_type":"Bearer","id_token":"old.id.t","expiry_date":3600000,"extra":{"n":1.50}}"#
        );
        let mut resp = response();
        resp.refresh_token = Some(Secret::new("1//rotated"));
        resp.scope = Some("openid".into());
        resp.id_token = Some(Secret::new("new.id.t"));
        Gemini::default().apply(&mut doc, &resp, 0);
        assert_eq!(doc["refresh_token"], "1//rotated");
        assert_eq!(doc["scope"], "openid");
        assert_eq!(doc["id_token"], "new.id.t");
        assert_eq!(doc["expiry_date"], 3_599_000);
        let mut bare: Value = serde_json::from_str(r#"{"refresh_token":"r"}"#).unwrap();
        let mut no_lifetime = response();
        no_lifetime.expires_in = None;
        Gemini::default().apply(&mut bare, &no_lifetime, 0);
        assert_eq!(bare["expiry_date"], 30 * 60 * 1000, "always written");
        resp.expires_in = Some(u64::MAX);
        Gemini::default().apply(&mut doc, &resp, i64::MAX - 5);
        assert_eq!(doc["expiry_date"], i64::MAX);
    }

    #[test]
    fn encrypted_storage_is_reported_as_unsupported() {
        assert!(encrypted_store(&file(), None, None).is_none());
        assert!(encrypted_store(&file(), Some("false"), None).is_none());
        let keychain = encrypted_store(&file(), Some("true"), None).unwrap();
        assert_eq!(keychain.kind(), crate::ErrorKind::Credentials);
        let msg = keychain.to_string();
        assert!(
            msg.contains("keychain") && msg.contains("does not support"),
            "{msg}"
        );
        assert!(msg.contains(ENCRYPTED_STORAGE_ENV), "{msg}");
        let enc = Path::new("/h/.gemini/gemini-credentials.json");
        let msg = encrypted_store(&file(), None, Some(enc))
            .unwrap()
            .to_string();
        assert!(msg.contains("gemini-credentials.json"), "{msg}");
    }

    #[test]
    fn finds_the_secret_assigned_in_source_and_nothing_else() {
        for (text, want) in [
            (
                "const OAUTH_CLIENT_SECRET = 'GOCSPX-abc_1';",
                Some("GOCSPX-abc_1"),
            ),
            (
                "var OAUTH_CLIENT_SECRET2=\"GOCSPX-x\",y=1",
                Some("GOCSPX-x"),
            ),
            (
                "clientSecret: OAUTH_CLIENT_SECRET,\n}\nconst OAUTH_CLIENT_SECRET = `s`;",
                Some("s"),
            ),
            ("const MY_OAUTH_CLIENT_SECRET = 'no';", None),
            ("const OAUTH_CLIENT_SECRET_ENV = 'no';", None),
            ("if (OAUTH_CLIENT_SECRET == 'no') {}", None),
            ("const OAUTH_CLIENT_SECRET = process.env.X;", None),
            ("const OAUTH_CLIENT_SECRET = 'has space';", None),
            ("const OAUTH_CLIENT_SECRET = '", None),
            ("OAUTH_CLIENT_SECRET", None),
            ("", None),
        ] {
            assert_eq!(secret_in_source(text), want, "{text}");
        }
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn finds_the_secret_in_core_nested_core_or_a_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let core = "@google/gemini-cli-core/dist/src/code_assist/oauth2.js";
        let (a, b, c, empty) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
            dir.path().join("empty"),
        );
        write(&a.join(core), "const OAUTH_CLIENT_SECRET = 'from-core';");
        write(
            &b.join("@google/gemini-cli/node_modules").join(core),
            "const OAUTH_CLIENT_SECRET = 'from-nested';",
        );
        write(&c.join("@google/gemini-cli/bundle/chunk-A.js"), "nothing");
        write(
            &c.join("@google/gemini-cli/bundle/chunk-B.js"),
            "x;var OAUTH_CLIENT_SECRET = \"from-bundle\";",
        );
        write(
            &c.join("@google/gemini-cli/bundle/notes.txt"),
            "OAUTH_CLIENT_SECRET = 'no'",
        );
        fs::create_dir_all(&empty).unwrap();
        for (roots, want) in [
            (vec![a.clone()], "from-core"),
            (vec![b.clone()], "from-nested"),
            (vec![c.clone()], "from-bundle"),
            (
                vec![empty.clone(), dir.path().join("none"), c.clone(), a],
                "from-bundle",
            ),
        ] {
            let (secret, from) = find_client_secret(&roots).unwrap();
            assert_eq!(secret.expose(), want);
            assert!(from.starts_with(dir.path()));
        }
        assert!(find_client_secret(&[empty]).is_none());
        assert!(find_client_secret(&[]).is_none());
    }

    #[cfg(unix)]
    #[test]
    fn search_roots_follow_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        let list = std::env::join_paths([&one, &two]).unwrap();
        let env = env_of(&[(NPM_ROOT_ENV, &list.to_string_lossy()), ("HOME", "/h")]);
        assert_eq!(search_roots(&env), (vec![one, two], true));

        // The `gemini` on PATH is a symlink into its package: its node_modules comes first.
        let modules = dir.path().join("prefix/lib/node_modules");
        let entry = modules.join("@google/gemini-cli/dist/index.js");
        write(&entry, "#!/usr/bin/env node");
        let bin = dir.path().join("prefix/bin");
        fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(&entry, bin.join("gemini")).unwrap();
        fs::create_dir_all(dir.path().join("nvm/versions/node/v22.1.0")).unwrap();
        let env = env_of(&[
            ("HOME", "/h"),
            ("PATH", &format!("/nonexistent:{}", bin.display())),
            ("NVM_DIR", &dir.path().join("nvm").display().to_string()),
            ("NPM_CONFIG_PREFIX", "/p"),
            ("APPDATA", "/w"),
        ]);
        let (roots, overridden) = search_roots(&env);
        assert!(!overridden);
        assert_eq!(roots[0], fs::canonicalize(&modules).unwrap());
        for want in [
            PathBuf::from("/p/lib/node_modules"),
            PathBuf::from("/h/.npm-global/lib/node_modules"),
            dir.path()
                .join("nvm/versions/node/v22.1.0/lib/node_modules"),
            PathBuf::from("/usr/local/lib/node_modules"),
            PathBuf::from("/usr/lib/node_modules"),
            PathBuf::from("/opt/homebrew/lib/node_modules"),
            PathBuf::from("/w/npm/node_modules"),
        ] {
            assert!(roots.contains(&want), "{want:?} not in {roots:?}");
        }
        let mut unique = roots.clone();
        unique.dedup();
        assert_eq!(unique.len(), roots.len());
    }

    #[test]
    fn gemini_hands_a_run_the_token_and_knows_its_exit_code() {
        let env = Gemini::default()
            .inject_env(&Secret::new("ya29.t"))
            .unwrap();
        assert_eq!(
            env,
            vec![
                ("GOOGLE_GENAI_USE_GCA".to_string(), "true".to_string()),
                (
                    "GOOGLE_CLOUD_ACCESS_TOKEN".to_string(),
                    "ya29.t".to_string()
                )
            ]
        );
        assert_eq!(Gemini::default().facts().auth_failure_exit_code, Some(41));
        assert!(Gemini::default().facts().rewritten_in_place);
        assert_eq!(Gemini::default().facts().layout, Layout::Pretty);
    }
}
