//! Any other tool's OAuth login kept in a JSON file, described by a `[[login]]` table of the
//! config file instead of by code: JSON pointers (RFC 6901) say where the tokens and the expiry
//! are, `expiry_unit` how the expiry is written (`ms` or `s` since the epoch, an RFC 3339 time,
//! or `jwt`: the access token's own `exp`), and the rest of the table what the token request
//! looks like (URL, client id and secret, JSON or form body, extra fields and headers).
//!
//! A table is checked once, when the config file is read ([`check_all`]): every mistake is one
//! `Error::Config` naming the file, the login and the key to fix, before anything is touched.
//! Nothing is known about the tool's own locks, so its file gets what every writer can count on:
//! our own lock around the refresh and an atomic write that keeps every other key, in order, and
//! the file's own layout (one line or indented, see [`Layout::AsFound`]). Since the tool may
//! rewrite its file in place, a cut-off file is read again before it counts as malformed.

use crate::error::Error;
use crate::login::{EpochMs, Login};
use crate::oauth::endpoint::TokenResponse;
use crate::provider::json_pointer::Pointer;
use crate::provider::login_table::LoginTable;
use crate::provider::shape::{Shape, Spent};
use crate::provider::{Body, Defaults, Facts, Provider, TokenRequest};
use crate::secret::Secret;
use crate::settings::Settings;
use crate::storage::credentials_file::{CredentialsFile, Layout, Owner};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Refresh when less than this is left, unless the table says `min_ttl`: above the 5 minutes at
/// which tools commonly refresh by themselves, well below the usual one-hour token.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(15 * 60);
/// A token response that says nothing of the new token's lifetime (no `expires_in`, not a JWT)
/// is taken to last this long, OAuth's most common lifetime.
const UNKNOWN_LIFETIME: Duration = Duration::from_secs(3600);
/// No answer is believed to live longer than this (an unknown provider's: generous, but a time that comes).
const LONGEST_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
const USER_AGENT: &str = concat!("tokenkeeper/", env!("CARGO_PKG_VERSION"));
/// Body fields tokenkeeper fills itself; `extra_fields` may not replace them.
const OWN_FIELDS: &[&str] = &[
    "grant_type",
    "refresh_token",
    "client_id",
    "client_secret",
    "scope",
];
/// Headers the token endpoint client sets itself, and the key that sets each otherwise.
const OWN_HEADERS: &[(&str, &str)] = &[
    ("content-type", "body"),
    ("content-length", "body"),
    ("user-agent", "user_agent"),
    ("accept", ""),
    ("host", "token_url"),
    ("connection", ""),
    ("transfer-encoding", ""),
];

/// How the expiry is written in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryUnit {
    /// Milliseconds since the epoch (JavaScript's `Date.now()`).
    Ms,
    /// Seconds since the epoch, integer or fractional.
    S,
    /// An RFC 3339 time such as `2026-11-29T15:37:26Z`; written back in UTC.
    Rfc3339,
    /// Not written at all: the access token is a JWT whose `exp` claim says.
    Jwt,
}

impl ExpiryUnit {
    fn parse(text: &str) -> Option<ExpiryUnit> {
        match text {
            "ms" => Some(ExpiryUnit::Ms),
            "s" => Some(ExpiryUnit::S),
            "rfc3339" => Some(ExpiryUnit::Rfc3339),
            "jwt" => Some(ExpiryUnit::Jwt),
            _ => None,
        }
    }
}

/// A `[[login]]` table, checked: the provider for one tool's login.
pub struct Generic {
    /// Its names and request defaults from the table; a file rewritten as found.
    facts: Facts,
    credentials: PathBuf,
    config_path: PathBuf,
    access_token: Field,
    refresh_token: Field,
    /// None with [`ExpiryUnit::Jwt`].
    expires_at: Option<Field>,
    unit: ExpiryUnit,
    form: bool,
    extra_fields: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    env: Option<String>,
    /// Its access-only copies (mirrors, fleet machines' files): the top-level keys its pointers
    /// go through, with "" at the refresh token's pointer.
    shape: Shape,
}

// By hand: extra fields and headers may carry secrets (an assertion, a Basic credential).
impl std::fmt::Debug for Generic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generic")
            .field("name", &self.facts.owner.provider)
            .field("credentials", &self.credentials)
            .field("unit", &self.unit)
            .finish_non_exhaustive()
    }
}

impl Generic {
    /// The provider a `[[login]]` table describes, or a config error naming the key to fix.
    /// Boxed as the CLI keeps every provider.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(table: &LoginTable, config_path: &Path) -> Result<Arc<dyn Provider>, Error> {
        Ok(Arc::new(Generic::build(table, config_path)?))
    }

    /// As [`Generic::new`], unboxed.
    pub fn build(table: &LoginTable, config_path: &Path) -> Result<Generic, Error> {
        check(table, config_path).map_err(|problem| Error::Config {
            path: config_path.to_path_buf(),
            problem: match table.name.as_str() {
                "" => format!("a [[login]] table {problem}"),
                name => format!("[[login]] \"{name}\": {problem}"),
            },
        })
    }

    fn relogin_hint(&self) -> String {
        format!(
            "Fix the file (or the pointers of [[login]] \"{}\" in {}), or log in again with {}.",
            self.facts.owner.provider,
            self.config_path.display(),
            self.facts.owner.relogin
        )
    }
}

/// Checks every `[[login]]` table of a config file, and that no two share a name.
pub fn check_all(tables: &[LoginTable], config_path: &Path) -> Result<(), Error> {
    for (i, table) in tables.iter().enumerate() {
        Generic::build(table, config_path)?;
        if tables[..i].iter().any(|t| t.name == table.name) {
            return Err(Error::Config {
                path: config_path.to_path_buf(),
                problem: format!(
                    "two [[login]] tables are named \"{}\"; --provider needs each name once, rename one",
                    table.name
                ),
            });
        }
    }
    Ok(())
}

/// The checks of one table; the problem names the key and the fix.
fn check(t: &LoginTable, config_path: &Path) -> Result<Generic, String> {
    let name = t.name.as_str();
    if name.is_empty() {
        return Err("has an empty name; set name (what --provider calls the login)".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "name = \"{name}\" may hold only letters, digits, '-', '_' and '.'; rename it"
        ));
    }
    if crate::provider::names().any(|n| n == name) {
        return Err(format!(
            "name = \"{name}\" is a built-in provider; configure it in [{name}] or pick another name"
        ));
    }
    let path = &t.credentials;
    if path.as_os_str().is_empty() {
        return Err("credentials is empty; set it to the login's JSON file".into());
    }
    if path.starts_with("~") {
        return Err(format!(
            "credentials = \"{}\": tokenkeeper does not expand ~; write the full path",
            path.display()
        ));
    }
    if !path.is_absolute() {
        return Err(format!(
            "credentials = \"{}\" is relative; write the full path",
            path.display()
        ));
    }
    let access_token = Field::parse("access_token", &t.access_token)?;
    let refresh_token = Field::parse("refresh_token", &t.refresh_token)?;
    let unit = ExpiryUnit::parse(&t.expiry_unit).ok_or_else(|| {
        format!(
            "expiry_unit = \"{}\" is not one of ms, s, rfc3339, jwt; set the one the file uses",
            t.expiry_unit
        )
    })?;
    let expires_at = match (&t.expires_at, unit) {
        (None, ExpiryUnit::Jwt) => None,
        (Some(_), ExpiryUnit::Jwt) => {
            return Err(
                "expires_at is not read with expiry_unit = \"jwt\" (the access token's exp is); remove it"
                    .into(),
            );
        }
        (None, _) => {
            return Err(format!(
                "expires_at is missing; set the pointer to the expiry (expiry_unit = \"{}\"), or use expiry_unit = \"jwt\"",
                t.expiry_unit
            ));
        }
        (Some(p), _) => Some(Field::parse("expires_at", p)?),
    };
    let fields: Vec<&Field> = [
        Some(&access_token),
        Some(&refresh_token),
        expires_at.as_ref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (i, a) in fields.iter().enumerate() {
        for b in &fields[i + 1..] {
            if a.pointer.overlaps(&b.pointer) {
                return Err(format!(
                    "{} = \"{}\" and {} = \"{}\" overlap (writing one would overwrite the other); point them at separate places",
                    a.key,
                    a.text(),
                    b.key,
                    b.text()
                ));
            }
        }
    }
    let form = match t.body.as_deref() {
        None | Some("json") => false,
        Some("form") => true,
        Some(other) => {
            return Err(format!(
                "body = \"{other}\" is not json or form; set the encoding the token endpoint takes"
            ));
        }
    };
    check_url(&t.token_url)?;
    if t.client_id.is_empty() {
        return Err("client_id is empty; set the OAuth client id the tool uses".into());
    }
    if t.client_secret.as_ref().is_some_and(Secret::is_empty) {
        return Err("client_secret is empty; remove it or set the secret".into());
    }
    for key in t.extra_fields.keys() {
        if key.is_empty() {
            return Err("extra_fields has an empty field name; remove it".into());
        }
        if OWN_FIELDS.contains(&key.as_str()) {
            return Err(format!(
                "extra_fields.{key}: tokenkeeper sends {key} itself{}; remove it",
                match key.as_str() {
                    "client_id" | "client_secret" | "scope" => format!(" (set {key} instead)"),
                    _ => String::new(),
                }
            ));
        }
    }
    for (key, value) in &t.headers {
        check_header(key, value)?;
    }
    if let Some(agent) = &t.user_agent
        && ureq::http::HeaderValue::from_str(agent).is_err()
    {
        return Err("user_agent holds a character a header cannot; fix it".into());
    }
    if let Some(var) = &t.env
        && !is_env_name(var)
    {
        return Err(format!(
            "env = \"{var}\" is not a variable name (letters, digits and _, not starting with a digit); fix it"
        ));
    }
    if t.login_command.as_deref() == Some("") {
        return Err("login_command is empty; remove it or set the command that logs in".into());
    }
    for (key, value) in [
        ("min_ttl", &t.min_ttl),
        ("request_timeout", &t.request_timeout),
        ("retry_total", &t.retry_total),
        ("lock_timeout", &t.lock_timeout),
    ] {
        if let Some(text) = value {
            crate::duration::parse(text).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    let file_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let login_command = match &t.login_command {
        Some(command) => format!("`{command}`"),
        None => format!("the tool that owns {file_name}"),
    };
    let owner = Owner {
        provider: intern(name),
        name: intern(name),
        relogin: intern(&login_command),
    };
    let defaults = Defaults {
        token_url: intern(&t.token_url),
        client_id: intern(&t.client_id),
        scope: "",
        user_agent: USER_AGENT,
    };
    let keys = login_keys(&[
        Some(&access_token),
        Some(&refresh_token),
        expires_at.as_ref(),
    ]);
    let shape = Shape::owned(keys, refresh_token.pointer.tokens().to_vec(), Spent::Empty)
        .ok_or("has a pointer to the whole file; point each key at its value")?;
    Ok(Generic {
        shape,
        facts: Facts {
            layout: Layout::AsFound,
            rewritten_in_place: true,
            ..Facts::new(owner, DEFAULT_MIN_TTL, defaults)
        },
        credentials: path.clone(),
        config_path: config_path.to_path_buf(),
        access_token,
        refresh_token,
        expires_at,
        unit,
        form,
        extra_fields: t
            .extra_fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        headers: t
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        env: t.env.clone(),
    })
}

/// The first step of each pointer, each once, in the table's order (access token, refresh
/// token, expiry): the top-level keys of the document that make up the login.
fn login_keys(fields: &[Option<&Field>]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for field in fields.iter().flatten() {
        if let Some(first) = field.pointer.first_token()
            && !keys.iter().any(|k| k == first)
        {
            keys.push(first.to_string());
        }
    }
    keys
}

fn check_url(url: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "token_url = \"{url}\" is not an http(s) URL; set the token endpoint, like \"https://auth.example.com/oauth/token\""
        )
    };
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    if scheme_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn check_header(key: &str, value: &str) -> Result<(), String> {
    if ureq::http::HeaderName::from_bytes(key.as_bytes()).is_err() {
        return Err(format!("headers: \"{key}\" is not a header name; fix it"));
    }
    if let Some((_, instead)) = OWN_HEADERS
        .iter()
        .find(|(own, _)| own.eq_ignore_ascii_case(key))
    {
        let instead = if instead.is_empty() {
            String::new()
        } else {
            format!(" (set {instead} instead)")
        };
        return Err(format!(
            "headers.{key}: tokenkeeper sets this header itself{instead}; remove it"
        ));
    }
    // The value is not shown: it may be a credential.
    if ureq::http::HeaderValue::from_str(value).is_err() {
        return Err(format!(
            "headers.{key} holds a character a header cannot (a line break?); fix it"
        ));
    }
    Ok(())
}

fn is_env_name(var: &str) -> bool {
    var.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A string that lives as long as the process. [`Owner`] (like the errors built from it) holds
/// `&'static str`s, made for the built-in providers' constants; a `[[login]]` table's few names
/// are leaked instead, once per distinct string, so a daemon re-reading its config on every
/// SIGHUP does not leak again unless the table changed.
fn intern(text: &str) -> &'static str {
    static KEPT: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = kept.iter().find(|k| **k == text) {
        return found;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    kept.push(leaked);
    leaked
}

impl Provider for Generic {
    fn facts(&self) -> &Facts {
        &self.facts
    }

    /// With a client secret from the table, `invalid_client` blames the table, not the login.
    fn invalid_client_is_config(&self, settings: &Settings) -> bool {
        settings.client_secret.is_some()
    }

    fn default_path(&self, _env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
        Some(self.credentials.clone())
    }

    fn parse(&self, file: &CredentialsFile, doc: &Value) -> Result<Login, Error> {
        let malformed = |problem: String| file.malformed(&problem, &self.relogin_hint());
        let token = |p: &Field| -> Result<Secret, Error> {
            match p.find(doc).map_err(&malformed)? {
                Some(Value::String(s)) => Ok(Secret::new(s.clone())),
                None | Some(Value::Null) => Ok(Secret::default()),
                Some(other) => Err(malformed(format!(
                    "have {} at {} ({}), not a string",
                    kind(other),
                    p.text(),
                    p.key
                ))),
            }
        };
        let access_token = token(&self.access_token)?;
        let refresh_token = token(&self.refresh_token)?;
        let expires_at = match (&self.expires_at, self.unit) {
            (_, ExpiryUnit::Jwt) if access_token.is_empty() => 0,
            // An absurd exp is believed only up to the longest lifetime after the token's iat.
            (_, ExpiryUnit::Jwt) => crate::oauth::jwt::believed_expiry_ms(access_token.expose(), None, LONGEST_LIFETIME).ok_or_else(|| {
                malformed(format!(
                    "have an access token at {} that is not a JWT with an exp claim, which expiry_unit = \"jwt\" needs",
                    self.access_token.text()
                ))
            })?,
            (Some(p), unit) => match p.find(doc).map_err(&malformed)? {
                None | Some(Value::Null) => 0,
                Some(v) => read_expiry(v, unit).map_err(|why| {
                    malformed(format!("have an expiry at {} (expires_at) that {why}", p.text()))
                })?,
            },
            (None, _) => 0,
        };
        Ok(Login {
            access_token,
            refresh_token,
            expires_at,
            login_expires_at: None,
            scopes: None,
        })
    }

    /// The first step of each pointer (none is the root: [`Field::parse`] refuses that).
    fn doc_keys(&self) -> Option<Vec<String>> {
        Some(self.shape.keys().map(str::to_string).collect())
    }

    /// The top-level keys the pointers go through, with the refresh token's pointer holding ""
    /// in a copy: a tool that reads its file as these pointers say finds no refresh token there,
    /// as when the table's tool was logged out of it, and the file keeps the layout the tool
    /// knows (a key left out could be, to some tools, a file that is not theirs).
    fn copy_shape(&self) -> Option<&Shape> {
        Some(&self.shape)
    }

    fn token_request(&self, refresh_token: &Secret, settings: &Settings) -> TokenRequest {
        let mut fields: Vec<(String, String)> = vec![
            ("grant_type".into(), "refresh_token".into()),
            ("refresh_token".into(), refresh_token.expose().to_string()),
            ("client_id".into(), settings.client_id.clone()),
        ];
        if let Some(secret) = &settings.client_secret {
            fields.push(("client_secret".into(), secret.expose().to_string()));
        }
        if !settings.scope.is_empty() {
            fields.push(("scope".into(), settings.scope.clone()));
        }
        fields.extend(self.extra_fields.iter().cloned());
        let body = if self.form {
            Body::Form(fields)
        } else {
            Body::Json(Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ))
        };
        TokenRequest {
            body,
            headers: self.headers.clone(),
        }
    }

    /// Writes the access token, the refresh token when a new one came back, and the expiry in
    /// the file's unit (nothing for `jwt`), creating objects along a pointer where missing.
    fn apply(&self, doc: &mut Value, response: &TokenResponse, now: EpochMs) {
        self.access_token.set(
            doc,
            Value::String(response.access_token.expose().to_string()),
        );
        if let Some(refresh) = &response.refresh_token {
            self.refresh_token
                .set(doc, Value::String(refresh.expose().to_string()));
        }
        if let Some(p) = &self.expires_at {
            let at = response.expires_at(now, UNKNOWN_LIFETIME, LONGEST_LIFETIME);
            let was_fractional = matches!(p.find(doc), Ok(Some(Value::Number(n))) if n.is_f64());
            p.set(doc, write_expiry(at, self.unit, was_fractional));
        }
    }

    fn inject_env(&self, access_token: &Secret) -> Result<Vec<(String, String)>, String> {
        match &self.env {
            Some(var) => Ok(vec![(var.clone(), access_token.expose().to_string())]),
            None => Err(format!(
                "[[login]] \"{}\" names no variable for the access token (set env = \"VAR\" in its table)",
                self.facts.owner.provider
            )),
        }
    }
}

/// What a JSON value is, for messages (never the value itself: it may be a token).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The expiry in epoch milliseconds, or why the value cannot be one (ends a sentence that
/// begins "have an expiry at … that").
fn read_expiry(v: &Value, unit: ExpiryUnit) -> Result<EpochMs, String> {
    let per_unit: i64 = match unit {
        ExpiryUnit::Ms => 1,
        ExpiryUnit::S => 1000,
        ExpiryUnit::Rfc3339 => {
            let Value::String(text) = v else {
                return Err(format!(
                    "is {}, not an RFC 3339 time (expiry_unit = \"rfc3339\")",
                    kind(v)
                ));
            };
            return text
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_millisecond())
                .map_err(|_| {
                    "is not an RFC 3339 time like 2026-11-29T15:37:26Z (expiry_unit = \"rfc3339\")"
                        .to_string()
                });
        }
        ExpiryUnit::Jwt => return Err("is not read with expiry_unit = \"jwt\"".into()),
    };
    let unit_name = if per_unit == 1 { "ms" } else { "s" };
    let Value::Number(n) = v else {
        return Err(format!(
            "is {}, not a number (expiry_unit = \"{unit_name}\")",
            kind(v)
        ));
    };
    let out_of_range = || format!("is out of range (expiry_unit = \"{unit_name}\")");
    if let Some(i) = n.as_i64() {
        return i.checked_mul(per_unit).ok_or_else(out_of_range);
    }
    let ms = n.as_f64().map(|f| f * per_unit as f64);
    match ms {
        Some(ms) if ms.is_finite() && ms.abs() < 9.0e18 => Ok(ms.round() as i64),
        _ => Err(out_of_range()),
    }
}

/// The expiry as the file writes it: whole milliseconds, seconds (with a fraction when the file
/// had one), or an RFC 3339 time in UTC.
fn write_expiry(at: EpochMs, unit: ExpiryUnit, fractional_seconds: bool) -> Value {
    match unit {
        ExpiryUnit::Ms | ExpiryUnit::Jwt => Value::from(at),
        ExpiryUnit::S if fractional_seconds => serde_json::Number::from_f64(at as f64 / 1000.0)
            .map_or_else(|| Value::from(at.div_euclid(1000)), Value::Number),
        ExpiryUnit::S => Value::from(at.div_euclid(1000)),
        ExpiryUnit::Rfc3339 => {
            let t = jiff::Timestamp::from_millisecond(at).unwrap_or(if at < 0 {
                jiff::Timestamp::MIN
            } else {
                jiff::Timestamp::MAX
            });
            Value::String(t.to_string())
        }
    }
}

/// A pointer a table key sets: where one value lives in the tool's file.
#[derive(Clone, Debug, PartialEq)]
struct Field {
    /// The table key, for messages.
    key: &'static str,
    pointer: Pointer,
}

impl Field {
    fn parse(key: &'static str, text: &str) -> Result<Field, String> {
        let pointer = Pointer::parse(text).map_err(|why| format!("{key} = \"{text}\" {why}"))?;
        if pointer.is_root() {
            return Err(format!(
                "{key} = \"\" points at the whole file; point it at the value, like \"/{key}\""
            ));
        }
        Ok(Field { key, pointer })
    }

    fn text(&self) -> &str {
        self.pointer.as_str()
    }

    /// The value, None when absent; what is in the way, as the end of a "have …" sentence.
    fn find<'a>(&self, doc: &'a Value) -> Result<Option<&'a Value>, String> {
        self.pointer.find(doc).map_err(|blocked| {
            let at = if blocked.at.is_empty() {
                "the top".to_string()
            } else {
                blocked.at
            };
            format!(
                "have {} at {at}, which cannot hold {} ({})",
                kind(blocked.value),
                self.text(),
                self.key
            )
        })
    }

    fn set(&self, doc: &mut Value, value: Value) {
        self.pointer.set(doc, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONFIG: &str = "/etc/tk/config.toml";

    fn table(unit: &str) -> LoginTable {
        LoginTable {
            name: "mytool".into(),
            credentials: "/h/.mytool/auth.json".into(),
            access_token: "/tokens/access".into(),
            refresh_token: "/tokens/refresh".into(),
            expires_at: (unit != "jwt").then(|| "/tokens/expires".to_string()),
            expiry_unit: unit.into(),
            token_url: "https://auth.example.test/oauth/token".into(),
            client_id: "client-1".into(),
            ..LoginTable::default()
        }
    }

    fn build(t: &LoginTable) -> Generic {
        Generic::build(t, Path::new(CONFIG)).unwrap()
    }

    fn problem(t: &LoginTable) -> String {
        let err = Generic::build(t, Path::new(CONFIG)).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("config file {CONFIG}: ")),
            "{text}"
        );
        text
    }

    fn file() -> CredentialsFile {
        CredentialsFile::new("/h/.mytool/auth.json", build(&table("ms")).facts().owner)
    }

    fn response(expires_in: Option<u64>, refresh: Option<&str>) -> TokenResponse {
        TokenResponse {
            access_token: Secret::new("new-access"),
            refresh_token: refresh.map(Secret::new),
            expires_in,
            scope: None,
            refresh_token_expires_in: None,
            id_token: None,
        }
    }

    fn settings(secret: Option<&str>, scope: &str) -> Settings {
        Settings {
            token_url: "https://auth.example.test/oauth/token".into(),
            client_id: "client-1".into(),
            client_secret: secret.map(crate::secret::Secret::new),
            scope: scope.into(),
            user_agent: USER_AGENT.into(),
            min_ttl: DEFAULT_MIN_TTL,
            request_timeout: Duration::from_secs(30),
            retry: Default::default(),
            lock_timeout: Duration::from_secs(60),
            usable_floor: Duration::from_secs(300),
            config_path: CONFIG.into(),
        }
    }

    #[test]
    fn a_good_table_builds_with_its_owner_and_defaults() {
        let g = build(&table("ms"));
        let owner = g.facts().owner;
        assert_eq!(owner.provider, "mytool");
        assert_eq!(owner.name, "mytool");
        assert_eq!(owner.relogin, "the tool that owns auth.json");
        let mut t = table("jwt");
        t.login_command = Some("mytool auth login".into());
        assert_eq!(build(&t).facts().owner.relogin, "`mytool auth login`");
        assert_eq!(g.facts().default_min_ttl, DEFAULT_MIN_TTL);
        assert_eq!(
            g.default_path(&|_| None),
            Some(PathBuf::from("/h/.mytool/auth.json"))
        );
        assert_eq!(
            g.facts().defaults.token_url,
            "https://auth.example.test/oauth/token"
        );
        assert_eq!(g.facts().defaults.client_id, "client-1");
        assert_eq!(g.facts().layout, Layout::AsFound);
        assert!(g.facts().rewritten_in_place);
        assert!(matches!(
            g.save_lock(&file()),
            crate::provider::SaveLock::None
        ));
        assert!(g.refresh_locks(&file()).is_empty());
        assert_eq!(
            intern("mytool").as_ptr(),
            owner.provider.as_ptr(),
            "leaked once"
        );
    }

    #[test]
    fn every_bad_key_is_named_with_its_fix() {
        type Edit = fn(&mut LoginTable);
        #[rustfmt::skip]
        let cases: &[(Edit, &str)] = &[
            (|t| t.name = String::new(), "a [[login]] table has an empty name; set name"),
            (|t| t.name = "my tool".into(), "name = \"my tool\" may hold only letters"),
            (|t| t.name = "claude".into(), "name = \"claude\" is a built-in provider; configure it in [claude]"),
            (|t| t.name = "codex".into(), "is a built-in provider"),
            (|t| t.name = "gemini".into(), "is a built-in provider"),
            (|t| t.credentials = PathBuf::new(), "credentials is empty"),
            (|t| t.credentials = "~/.mytool/auth.json".into(), "does not expand ~; write the full path"),
            (|t| t.credentials = "auth.json".into(), "credentials = \"auth.json\" is relative"),
            (|t| t.access_token = "tokens/access".into(), "access_token = \"tokens/access\" is not a JSON pointer; write it with a leading /, like \"/tokens/access\""),
            (|t| t.refresh_token = String::new(), "refresh_token = \"\" points at the whole file"),
            (|t| t.refresh_token = "/a~2b".into(), "refresh_token = \"/a~2b\" has a ~ that is not ~0"),
            (|t| t.expires_at = Some("/x~".into()), "expires_at = \"/x~\" has a ~"),
            (|t| t.expiry_unit = "min".into(), "expiry_unit = \"min\" is not one of ms, s, rfc3339, jwt"),
            (|t| t.expires_at = None, "expires_at is missing; set the pointer to the expiry (expiry_unit = \"ms\"), or use expiry_unit = \"jwt\""),
            (|t| t.expiry_unit = "jwt".into(), "expires_at is not read with expiry_unit = \"jwt\""),
            (|t| t.refresh_token = "/tokens/access".into(), "access_token = \"/tokens/access\" and refresh_token = \"/tokens/access\" overlap"),
            (|t| t.expires_at = Some("/tokens".into()), "access_token = \"/tokens/access\" and expires_at = \"/tokens\" overlap"),
            (|t| t.body = Some("xml".into()), "body = \"xml\" is not json or form"),
            (|t| t.token_url = "auth.example.test/token".into(), "token_url = \"auth.example.test/token\" is not an http(s) URL"),
            (|t| t.token_url = "ftp://auth.example.test/token".into(), "is not an http(s) URL"),
            (|t| t.token_url = "https://".into(), "is not an http(s) URL"),
            (|t| t.token_url = "https://a b/".into(), "is not an http(s) URL"),
            (|t| t.client_id = String::new(), "client_id is empty"),
            (|t| t.client_secret = Some(Secret::default()), "client_secret is empty; remove it or set the secret"),
            (|t| t.user_agent = Some("a\nb".into()), "user_agent holds a character"),
            (|t| t.env = Some("1TOKEN".into()), "env = \"1TOKEN\" is not a variable name"),
            (|t| t.env = Some("MY-TOKEN".into()), "is not a variable name"),
            (|t| t.login_command = Some(String::new()), "login_command is empty"),
            (|t| t.min_ttl = Some("soon".into()), "min_ttl: 'soon' is not a duration"),
            (|t| t.request_timeout = Some("30".into()), "request_timeout: '30' has no unit"),
            (|t| t.retry_total = Some(String::new()), "retry_total: empty duration"),
            (|t| t.lock_timeout = Some("1y".into()), "lock_timeout:"),
        ];
        for (edit, needle) in cases {
            let mut t = table("ms");
            edit(&mut t);
            let text = problem(&t);
            assert!(text.contains(needle), "want {needle:?} in: {text}");
            if !t.name.is_empty() {
                assert!(
                    text.contains(&format!("[[login]] \"{}\": ", t.name)),
                    "{text}"
                );
            }
        }
        // A field (`extra_fields`) or a header (`headers`) of the request, and what is said.
        let fields = [
            (
                false,
                "refresh_token",
                "x",
                "extra_fields.refresh_token: tokenkeeper sends refresh_token itself; remove it",
            ),
            (
                false,
                "client_secret",
                "x",
                "extra_fields.client_secret: tokenkeeper sends client_secret itself (set client_secret instead)",
            ),
            (false, "", "x", "extra_fields has an empty field name"),
            (
                true,
                "Content-Type",
                "text/plain",
                "headers.Content-Type: tokenkeeper sets this header itself (set body instead)",
            ),
            (true, "user-agent", "x", "(set user_agent instead)"),
            (
                true,
                "Bad Name",
                "x",
                "headers: \"Bad Name\" is not a header name",
            ),
            (
                true,
                "X-Key",
                "a\r\nb",
                "headers.X-Key holds a character a header cannot",
            ),
        ];
        for (header, name, value, needle) in fields {
            let mut t = table("ms");
            let into = if header {
                &mut t.headers
            } else {
                &mut t.extra_fields
            };
            into.insert(name.into(), value.into());
            let text = problem(&t);
            assert!(text.contains(needle), "want {needle:?} in: {text}");
            assert!(
                text.contains(&format!("[[login]] \"{}\": ", t.name)),
                "{text}"
            );
        }
    }

    #[test]
    fn secrets_in_a_table_never_reach_a_message_or_debug() {
        let mut t = table("ms");
        t.headers
            .insert("Authorization".into(), "Basic c2VjcmV0\r\n".into());
        let text = problem(&t);
        assert!(!text.contains("c2VjcmV0"), "{text}");
        let mut t = table("ms");
        t.client_secret = Some(Secret::new("shh-secret"));
        t.extra_fields
            .insert("assertion".into(), "shh-assert".into());
        t.headers.insert("X-Api-Key".into(), "shh-header".into());
        let shown = format!("{:?}", build(&t));
        assert!(!shown.contains("shh"), "{shown}");
    }

    #[test]
    fn check_all_refuses_a_name_used_twice() {
        let path = Path::new(CONFIG);
        let mut other = table("s");
        other.credentials = "/h/other.json".into();
        assert!(check_all(&[table("ms"), other.clone()], path).is_err());
        other.name = "other".into();
        assert!(check_all(&[table("ms"), other], path).is_ok());
        let mut bad = table("ms");
        bad.expiry_unit = "hours".into();
        let err = check_all(&[table("ms"), bad], path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expiry_unit = \"hours\""), "{err}");
        let err = check_all(&[table("ms"), table("s")], path).unwrap_err();
        assert!(
            err.to_string()
                .contains("two [[login]] tables are named \"mytool\""),
            "{err}"
        );
    }

    #[test]
    fn a_value_in_the_way_is_named_by_its_pointer() {
        let field = Field::parse("access_token", "/list/1/t").unwrap();
        let blocked = field.find(&json!({"list": "text"})).unwrap_err();
        assert_eq!(
            blocked,
            "have a string at /list, which cannot hold /list/1/t (access_token)"
        );
        let top = field.find(&json!(3)).unwrap_err();
        assert_eq!(
            top,
            "have a number at the top, which cannot hold /list/1/t (access_token)"
        );
        assert_eq!(
            field.find(&json!({"list": [{}, {"t": "x"}]})),
            Ok(Some(&json!("x")))
        );
    }

    #[test]
    fn parses_each_unit() {
        let now_s = 1_795_970_810i64;
        let at = |unit: &str, v: Value| {
            let g = build(&table(unit));
            let doc = json!({"tokens": {"access": "a", "refresh": "r", "expires": v}});
            g.parse(&file(), &doc).map(|l| l.expires_at)
        };
        assert_eq!(
            at("ms", json!(now_s * 1000 + 328)).unwrap(),
            now_s * 1000 + 328
        );
        assert_eq!(at("ms", json!(1.5e12)).unwrap(), 1_500_000_000_000);
        assert_eq!(at("s", json!(now_s)).unwrap(), now_s * 1000);
        assert_eq!(at("s", json!(1795970810.5)).unwrap(), now_s * 1000 + 500);
        assert_eq!(
            at("rfc3339", json!("2026-11-29T15:37:26.902700475Z")).unwrap(),
            1_795_966_646_902
        );
        assert_eq!(
            at("rfc3339", json!("2026-11-29T16:37:26+01:00")).unwrap(),
            1_795_966_646_000
        );
        assert_eq!(at("ms", Value::Null).unwrap(), 0, "no expiry: expired");
        let jwt = crate::oauth::jwt::unsigned(&json!({"exp": now_s}));
        let g = build(&table("jwt"));
        let doc = json!({"tokens": {"access": jwt, "refresh": "r"}});
        assert_eq!(g.parse(&file(), &doc).unwrap().expires_at, now_s * 1000);
        // An exp in the year 9999 is believed up to 90 days after the token's iat.
        let absurd =
            crate::oauth::jwt::unsigned(&json!({"exp": 253_402_300_799_i64, "iat": now_s}));
        let doc = json!({"tokens": {"access": absurd, "refresh": "r"}});
        assert_eq!(
            g.parse(&file(), &doc).unwrap().expires_at,
            (now_s + 90 * 86_400) * 1000
        );
        let wiped = json!({"tokens": {"access": "", "refresh": ""}});
        let login = g.parse(&file(), &wiped).unwrap();
        assert!(login.refresh_token.is_empty() && login.expires_at == 0);
    }

    #[test]
    fn malformed_files_name_the_pointer_and_never_the_token() {
        let cases: &[(&str, Value, &str)] = &[
            (
                "ms",
                json!({"tokens": {"access": 5, "refresh": "r"}}),
                "have a number at /tokens/access (access_token), not a string",
            ),
            (
                "ms",
                json!({"tokens": {"access": "a", "refresh": ["r"]}}),
                "have an array at /tokens/refresh (refresh_token), not a string",
            ),
            (
                "ms",
                json!({"tokens": "sekrit-token"}),
                "have a string at /tokens, which cannot hold /tokens/access (access_token)",
            ),
            (
                "ms",
                json!(["sekrit-token"]),
                "have an array at the top, which cannot hold /tokens/access",
            ),
            (
                "ms",
                json!({"tokens": {"access": "a", "refresh": "r", "expires": "soon"}}),
                "have an expiry at /tokens/expires (expires_at) that is a string, not a number (expiry_unit = \"ms\")",
            ),
            (
                "s",
                json!({"tokens": {"access": "a", "refresh": "r", "expires": 1e300}}),
                "that is out of range (expiry_unit = \"s\")",
            ),
            (
                "s",
                json!({"tokens": {"access": "a", "refresh": "r", "expires": i64::MAX}}),
                "that is out of range (expiry_unit = \"s\")",
            ),
            (
                "ms",
                json!({"tokens": {"access": "a", "refresh": "r", "expires": u64::MAX}}),
                "that is out of range (expiry_unit = \"ms\")",
            ),
            (
                "rfc3339",
                json!({"tokens": {"access": "a", "refresh": "r", "expires": 17}}),
                "that is a number, not an RFC 3339 time",
            ),
            (
                "rfc3339",
                json!({"tokens": {"access": "a", "refresh": "r", "expires": "2026-11-29 15:37"}}),
                "that is not an RFC 3339 time",
            ),
            (
                "jwt",
                json!({"tokens": {"access": "sekrit-token", "refresh": "r"}}),
                "have an access token at /tokens/access that is not a JWT with an exp claim",
            ),
        ];
        for (unit, doc, needle) in cases {
            let err = build(&table(unit)).parse(&file(), doc).unwrap_err();
            assert!(matches!(err, Error::Malformed { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains(needle), "want {needle:?} in: {text}");
            assert!(!text.contains("sekrit"), "{text}");
            assert!(
                text.contains("[[login]] \"mytool\" in /etc/tk/config.toml"),
                "{text}"
            );
            assert!(
                text.contains("log in again with the tool that owns auth.json."),
                "{text}"
            );
        }
    }

    #[test]
    fn a_missing_or_empty_refresh_token_parses_as_a_dead_login() {
        let g = build(&table("ms"));
        for doc in [
            json!({}),
            json!({"tokens": {"access": "a", "refresh": ""}}),
            json!({"tokens": null}),
        ] {
            let login = g.parse(&file(), &doc).unwrap();
            assert!(login.refresh_token.is_empty(), "{doc}");
            assert_eq!(
                login.freshness(0, DEFAULT_MIN_TTL),
                crate::login::Freshness::Dead
            );
        }
        assert_eq!(
            g.stored_refresh_token(&json!({"tokens": {"refresh": "r"}})),
            "r"
        );
        assert_eq!(g.stored_refresh_token(&json!({"tokens": "x"})), "");
        assert_eq!(
            g.stored_refresh_token(&json!({"tokens": {"refresh": 3}})),
            ""
        );
    }

    #[test]
    fn token_requests_carry_every_configured_field() {
        let mut t = table("ms");
        t.extra_fields.insert("audience".into(), "api".into());
        t.headers.insert("X-Client".into(), "tk".into());
        let g = build(&t);
        let request = g.token_request(&Secret::new("r1"), &settings(None, ""));
        let Body::Json(body) = &request.body else {
            panic!("json body");
        };
        assert_eq!(
            body.to_string(),
            r#"{"grant_type":"refresh_token","refresh_token":"r1","client_id":"client-1","audience":"api"}"#
        );
        assert_eq!(
            request.headers,
            [("X-Client".to_string(), "tk".to_string())]
        );

        t.body = Some("form".into());
        let g = build(&t);
        let request = g.token_request(&Secret::new("r 1"), &settings(Some("s/1"), "a b"));
        let (kind, bytes) = request.body.encode();
        assert_eq!(kind, "application/x-www-form-urlencoded");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "grant_type=refresh_token&refresh_token=r+1&client_id=client-1&client_secret=s%2F1&scope=a+b&audience=api"
        );
    }

    #[test]
    fn apply_writes_each_unit_and_keeps_everything_else_in_place() {
        let now = 1_795_970_810_328;
        let written = |unit: &str, before: &str, resp: &TokenResponse| {
            let mut doc: Value = serde_json::from_str(before).unwrap();
            build(&table(unit)).apply(&mut doc, resp, now);
            serde_json::to_string(&doc).unwrap()
        };
        let resp = response(Some(3600), Some("new-refresh"));
        let before = r#"{"z":1,"tokens":{"id":"keep","access":"a","expires":1,"refresh":"r","x":[1.50]},"after":null}"#;
        assert_eq!(
            written("ms", before, &resp),
            r#"{"z":1,"tokens":{"id":"keep","access":"new-access","expires":1795974410328,"refresh":"new-refresh","x":[1.50]},"after":null}"#
        );
        assert_eq!(
            written("s", before, &resp),
            before
                .replace("\"a\"", "\"new-access\"")
                .replace("\"expires\":1,", "\"expires\":1795974410,")
                .replace("\"r\"", "\"new-refresh\"")
        );
        let fractional = before.replace("\"expires\":1,", "\"expires\":1.5,");
        assert!(written("s", &fractional, &resp).contains("\"expires\":1795974410.328,"));
        assert!(
            written("rfc3339", before, &resp).contains("\"expires\":\"2026-11-29T17:46:50.328Z\","),
            "{}",
            written("rfc3339", before, &resp)
        );
        let jwt_before = r#"{"tokens":{"access":"a","refresh":"r","k":true}}"#;
        assert_eq!(
            written("jwt", jwt_before, &resp),
            r#"{"tokens":{"access":"new-access","refresh":"new-refresh","k":true}}"#
        );
        let kept = written("ms", before, &response(None, None));
        assert!(
            kept.contains("\"refresh\":\"r\""),
            "no new refresh token: old one kept"
        );
        assert!(
            kept.contains("\"expires\":1795974410328"),
            "unknown lifetime: 1 h"
        );
        // A lifetime no token has is capped at the longest one believed (90 days), so that the
        // time stored is one that comes.
        let huge = written("rfc3339", before, &response(Some(u64::MAX), None));
        assert!(
            huge.contains("\"expires\":\"2027-02-27T16:46:50.328Z\""),
            "{huge}"
        );
    }

    #[test]
    fn apply_creates_the_objects_a_pointer_needs() {
        let mut t = table("ms");
        t.access_token = "/auth/oauth/access".into();
        t.refresh_token = "/auth/oauth/refresh".into();
        t.expires_at = Some("/meta/expires_at".into());
        let g = build(&t);
        let mut doc = json!({"keep": 1, "auth": null});
        g.apply(&mut doc, &response(Some(60), Some("r2")), 1000);
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"keep":1,"auth":{"oauth":{"access":"new-access","refresh":"r2"}},"meta":{"expires_at":61000}}"#
        );
        let mut changed = json!({"auth": "in the way"});
        g.apply(&mut changed, &response(Some(60), Some("r2")), 1000);
        assert_eq!(
            changed["auth"]["oauth"]["refresh"], "r2",
            "the new token is never dropped"
        );
    }

    #[test]
    fn inject_env_needs_a_variable_named_in_the_table() {
        let why = build(&table("ms"))
            .inject_env(&Secret::new("a"))
            .unwrap_err();
        assert!(why.contains("set env = \"VAR\""), "{why}");
        let mut t = table("ms");
        t.env = Some("MYTOOL_TOKEN".into());
        assert_eq!(
            build(&t).inject_env(&Secret::new("a")).unwrap(),
            [("MYTOOL_TOKEN".to_string(), "a".to_string())]
        );
    }
}
