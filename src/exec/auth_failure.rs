//! Recognising a CLI's auth failure in its output, and the one line that explains it; a wrapper
//! that watches for these endings can tell a scheduler "log in again" instead of "something
//! failed". Pure: fed bytes, no I/O.
//!
//! - Claude Code in `-p` mode exits 1 with nothing on stderr and the message on stdout, as text,
//!   as one JSON result, or as stream-json events.
//! - Codex CLI (`codex exec`) exits 1 with `ERROR: <message>` on stderr; with `--json`, stdout
//!   carries `{"type":"error","message":…}` and `{"type":"turn.failed","error":{"message":…}}`.
//! - Gemini CLI (`gemini -p`) prints `Error authenticating: …` on stderr and exits 41 (its
//!   `FatalAuthenticationError`), or 1 when the API refused the token; [`by_exit_code`] covers a
//!   41 that comes without the line (its JSON error output spans several lines).
//!
//! Only the CLIs' own framing counts (a line that starts with `ERROR: ` or `Error
//! authenticating:`, a JSON event of the right type), never the words alone: a model's answer that
//! quotes them is not a failure.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The API refused the access token (401/403).
    Rejected,
    /// The CLI says the login is over and could not be refreshed.
    SessionExpired,
    /// The CLI says its refresh token was refused (Codex: already used, expired or revoked).
    RefreshFailed,
    /// The CLI found no usable login.
    NotLoggedIn,
    /// The command said nothing we recognise, but the credentials file shows the login ended
    /// (wiped) while it ran.
    LoginEnded,
    /// The command said nothing we recognise, but exited with the code its CLI keeps for
    /// authentication failures (Gemini CLI: 41).
    AuthExit(i32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthFailure {
    pub kind: FailureKind,
    /// HTTP status, when the output names one.
    pub status: Option<u16>,
    /// The API's error type (`authentication_error`), when known.
    pub error_type: Option<String>,
}

/// Lines longer than this are passed through but not inspected.
const MAX_LINE: usize = 1 << 20;

/// Watches a byte stream line by line. Feed it what passes through; ask it at the end.
#[derive(Default, Debug)]
pub struct Detector {
    partial: Vec<u8>,
    overflow: bool,
    found: Option<AuthFailure>,
}

impl Detector {
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.push(&bytes[..nl]);
            self.end_line();
            bytes = &bytes[nl + 1..];
        }
        self.push(bytes);
    }

    /// The stream ended: look at a last line without a newline.
    pub fn finish(&mut self) {
        self.end_line();
    }

    /// The last failure seen.
    pub fn found(&self) -> Option<&AuthFailure> {
        self.found.as_ref()
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.partial.len() + bytes.len() > MAX_LINE {
            self.overflow = true;
            self.partial.clear();
        } else if !self.overflow {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self) {
        if !self.overflow
            && let Some(f) = detect_line(&String::from_utf8_lossy(&self.partial))
        {
            self.found = Some(f);
        }
        self.partial.clear();
        self.overflow = false;
    }
}

/// One line of output: Claude's text endings, its JSON result, its stream-json retry events;
/// Codex's `ERROR:` lines and `--json` events; Gemini's `Error authenticating:` lines.
pub fn detect_line(line: &str) -> Option<AuthFailure> {
    let t = line.trim();
    if t.starts_with('{') {
        return serde_json::from_str::<Value>(t)
            .ok()
            .and_then(|v| detect_json(&v));
    }
    if let Some(message) = t.strip_prefix("ERROR: ") {
        return codex_message(message);
    }
    if let Some(message) = t.strip_prefix("Error authenticating:") {
        return Some(gemini_message(message));
    }
    let status = t
        .find("API Error: ")
        .and_then(|i| t[i + 11..].get(..3))
        .and_then(|s| s.parse().ok());
    if t.contains("OAuth session expired") {
        Some(failure(FailureKind::SessionExpired, status, None))
    } else if t.contains("Failed to authenticate") {
        Some(failure(FailureKind::Rejected, status, None))
    } else if t.contains("Please run /login") {
        Some(failure(FailureKind::NotLoggedIn, status, None))
    } else {
        None
    }
}

/// Codex CLI's own words for a login it cannot use (`codex-rs/login`), and the API's 401 as Codex
/// reports it (`unexpected status 401 Unauthorized: …`).
fn codex_message(message: &str) -> Option<AuthFailure> {
    let m = message.trim();
    if m.starts_with("Your access token could not be refreshed") {
        Some(failure(FailureKind::RefreshFailed, None, None))
    } else if m
        .strip_prefix("unexpected status 401")
        .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    {
        Some(failure(FailureKind::Rejected, Some(401), None))
    } else {
        None
    }
}

/// What follows Gemini CLI's `Error authenticating:`. Every such line is an auth failure; the
/// words say which.
fn gemini_message(message: &str) -> AuthFailure {
    if message.contains("Request had invalid authentication credentials") {
        failure(FailureKind::Rejected, Some(401), None)
    } else if message.contains("Manual authorization is required") {
        failure(
            FailureKind::NotLoggedIn,
            None,
            Some("FatalAuthenticationError".into()),
        )
    } else {
        failure(FailureKind::Rejected, None, None)
    }
}

/// A command that said nothing we recognised but exited with `code`: an auth failure when that
/// is the code its CLI keeps for one (`auth_exit`, from the provider).
pub fn by_exit_code(code: i32, auth_exit: Option<i32>) -> Option<AuthFailure> {
    (auth_exit == Some(code)).then(|| failure(FailureKind::AuthExit(code), None, None))
}

fn detect_json(v: &Value) -> Option<AuthFailure> {
    // Codex's `--json` events: the message is what its `ERROR:` line would say.
    match v.get("type").and_then(Value::as_str) {
        Some("error") => {
            return v
                .get("message")
                .and_then(Value::as_str)
                .and_then(codex_message);
        }
        Some("turn.failed") => {
            return v
                .get("error")
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .and_then(codex_message);
        }
        _ => {}
    }
    let status = v
        .get("api_error_status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    let error_type = v
        .get("api_error_type")
        .and_then(Value::as_str)
        .map(one_word)
        .filter(|w| !w.is_empty());
    if v.get("is_error") == Some(&Value::Bool(true)) && matches!(status, Some(401 | 403)) {
        let text = v.get("result").and_then(Value::as_str).unwrap_or("");
        let kind = if text.contains("OAuth session expired") {
            FailureKind::SessionExpired
        } else {
            FailureKind::Rejected
        };
        return Some(failure(kind, status, error_type));
    }
    if v.get("error").and_then(Value::as_str) == Some("authentication_failed") {
        let status = v
            .get("error_status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok());
        return Some(failure(
            FailureKind::Rejected,
            status,
            Some("authentication_failed".into()),
        ));
    }
    None
}

/// Output is the command's, not ours: what of it goes into our one line must be one short word.
fn one_word(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect()
}

fn failure(kind: FailureKind, status: Option<u16>, error_type: Option<String>) -> AuthFailure {
    AuthFailure {
        kind,
        status,
        error_type,
    }
}

/// What the wrapper knows about the login when it explains a failure.
pub struct LoginFacts<'a> {
    pub path: &'a str,
    /// `None` when the file shows the login wiped or gone.
    pub expires_at: Option<String>,
    pub refreshed_at: Option<String>,
    /// How to log in again, as shown: a command in backticks, or a phrase.
    pub relogin: &'a str,
}

/// The one line for stderr, naming the cause and the fix.
pub fn explain(command: &str, f: &AuthFailure, login: &LoginFacts<'_>) -> String {
    let what = match f.kind {
        FailureKind::Rejected => "failed to authenticate".to_string(),
        FailureKind::SessionExpired => "says its OAuth session expired".to_string(),
        FailureKind::RefreshFailed => "says its login could not be refreshed".to_string(),
        FailureKind::NotLoggedIn => "found no usable login".to_string(),
        FailureKind::AuthExit(code) => {
            format!("exited with {code}, its code for failing to authenticate")
        }
        FailureKind::LoginEnded => {
            return format!(
                "{command} failed, and the login at {} has been ended while it ran (its tokens are empty); log in again with {}.",
                login.path, login.relogin
            );
        }
    };
    let detail = match (f.status, &f.error_type) {
        (Some(s), Some(t)) => format!(" ({s} {t})"),
        (Some(s), None) => format!(" ({s})"),
        (None, Some(t)) => format!(" ({t})"),
        (None, None) => String::new(),
    };
    let fix = format!(
        "Run `tokenkeeper refresh --force` or log in again with {}.",
        login.relogin
    );
    let refused = if f.kind == FailureKind::RefreshFailed {
        "the server refused the refresh token the command used"
    } else {
        "the server rejected the access token anyway"
    };
    let state = match (&login.expires_at, &login.refreshed_at) {
        (None, _) => {
            return format!(
                "{command} {what}{detail}. The login at {} has been ended (its tokens are empty); log in again with {}.",
                login.path, login.relogin
            );
        }
        (Some(exp), Some(at)) => format!(
            "The login at {} was refreshed at {at} and expires at {exp}; {refused}.",
            login.path
        ),
        (Some(exp), None) => format!("The login at {} expires at {exp}; {refused}.", login.path),
    };
    format!("{command} {what}{detail}. {state} {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(text: &str) -> Option<AuthFailure> {
        let mut d = Detector::default();
        // Fed in awkward pieces, as a pipe delivers them.
        for chunk in text.as_bytes().chunks(7) {
            d.feed(chunk);
        }
        d.finish();
        d.found().cloned()
    }

    #[test]
    fn claude_text_endings() {
        let f = seen("Failed to authenticate. API Error: 401 Invalid authentication credentials\n")
            .unwrap();
        assert_eq!((f.kind, f.status), (FailureKind::Rejected, Some(401)));
        let f = seen("Failed to authenticate: OAuth session expired and could not be refreshed")
            .unwrap();
        assert_eq!(f.kind, FailureKind::SessionExpired);
        let f = seen("Not logged in · Please run /login\n").unwrap();
        assert_eq!(f.kind, FailureKind::NotLoggedIn);
        assert!(seen("all good\nhere is your answer\n").is_none());
    }

    #[test]
    fn claude_json_result() {
        let line = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":401,"api_error_type":"authentication_error","result":"Failed to authenticate. API Error: 401"}"#;
        let f = seen(line).unwrap();
        assert_eq!(f.status, Some(401));
        assert_eq!(f.error_type.as_deref(), Some("authentication_error"));
        let ok =
            r#"{"type":"result","is_error":false,"result":"Please run /login is what I'd say"}"#;
        assert!(
            seen(ok).is_none(),
            "a model's words inside JSON are not a failure"
        );
        let other = r#"{"type":"result","is_error":true,"api_error_status":529}"#;
        assert!(seen(other).is_none());
    }

    #[test]
    fn claude_stream_json_retry_event() {
        let lines = concat!(
            r#"{"type":"system","subtype":"init"}"#,
            "\n",
            r#"{"type":"system","subtype":"api_retry","error":"authentication_failed","error_status":401}"#,
            "\n",
        );
        assert_eq!(
            seen(lines).unwrap().error_type.as_deref(),
            Some("authentication_failed")
        );
    }

    #[test]
    fn explains_in_one_line_with_the_fix() {
        let f = seen("Failed to authenticate. API Error: 401 x").unwrap();
        let facts = LoginFacts {
            path: "/h/.claude/.credentials.json",
            expires_at: Some("22:02".into()),
            refreshed_at: Some("14:02".into()),
            relogin: "`claude /login`",
        };
        let line = explain("claude", &f, &facts);
        assert!(!line.contains('\n'));
        assert!(line.starts_with("claude failed to authenticate (401). The login at /h/.claude/.credentials.json was refreshed at 14:02 and expires at 22:02"));
        assert!(line.ends_with("`claude /login`."));
        let wiped = LoginFacts {
            expires_at: None,
            ..facts
        };
        assert!(explain("claude", &f, &wiped).contains("has been ended"));
    }

    #[test]
    fn the_explanation_stays_one_line_whatever_the_output_says() {
        let line =
            r#"{"is_error":true,"api_error_status":401,"api_error_type":"auth\nerror \u001b[31m"}"#;
        let f = seen(line).unwrap();
        assert_eq!(f.error_type.as_deref(), Some("autherror31m"));
        let facts = LoginFacts {
            path: "/p",
            expires_at: Some("22:02".into()),
            refreshed_at: None,
            relogin: "`claude /login`",
        };
        assert!(!explain("claude", &f, &facts).contains('\n'));
    }

    #[test]
    fn endless_lines_are_skipped_not_buffered() {
        let mut d = Detector::default();
        d.feed(&vec![b'x'; MAX_LINE + 10]);
        d.feed(b"Failed to authenticate\n");
        assert!(d.found().is_none());
        d.feed(b"Failed to authenticate\n");
        assert!(d.found().is_some());
    }

    #[test]
    fn codex_error_lines() {
        let used = "ERROR: Your access token could not be refreshed because your refresh token was already used. Please log out and sign in again.\n";
        let f = seen(&used.repeat(2)).unwrap();
        assert_eq!((f.kind, f.status), (FailureKind::RefreshFailed, None));
        for reason in ["has expired", "was revoked"] {
            let line = format!(
                "ERROR: Your access token could not be refreshed because your refresh token {reason}. Please log out and sign in again."
            );
            assert_eq!(seen(&line).unwrap().kind, FailureKind::RefreshFailed);
        }
        let f = seen("ERROR: unexpected status 401 Unauthorized: {\"detail\":\"Unauthorized\"}\n")
            .unwrap();
        assert_eq!((f.kind, f.status), (FailureKind::Rejected, Some(401)));
    }

    #[test]
    fn codex_json_events() {
        let lines = concat!(
            r#"{"type":"thread.started","thread_id":"t-1"}"#,
            "\n",
            r#"{"type":"turn.started"}"#,
            "\n",
            r#"{"type":"error","message":"Your access token could not be refreshed because your refresh token was already used. Please log out and sign in again."}"#,
            "\n",
            r#"{"type":"turn.failed","error":{"message":"Your access token could not be refreshed because your refresh token was already used. Please log out and sign in again."}}"#,
            "\n",
        );
        assert_eq!(seen(lines).unwrap().kind, FailureKind::RefreshFailed);
        let turn = r#"{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized: Missing bearer"}}"#;
        assert_eq!(seen(turn).unwrap().status, Some(401));
    }

    #[test]
    fn gemini_error_authenticating_lines() {
        let manual = "Error authenticating: FatalAuthenticationError: Manual authorization is required but the current session is non-interactive.\n";
        let f = seen(manual).unwrap();
        assert_eq!(f.kind, FailureKind::NotLoggedIn);
        assert_eq!(f.error_type.as_deref(), Some("FatalAuthenticationError"));
        let api = "Error authenticating: [API Error: Request had invalid authentication credentials. Expected OAuth 2 access token]";
        let f = seen(api).unwrap();
        assert_eq!((f.kind, f.status), (FailureKind::Rejected, Some(401)));
        let other = seen("Error authenticating: Error: invalid_grant").unwrap();
        assert_eq!(other.kind, FailureKind::Rejected);
    }

    #[test]
    fn words_alone_in_ordinary_output_are_not_a_failure() {
        for ordinary in [
            // A model (or a log) quoting the CLIs' words.
            "Your access token could not be refreshed because your refresh token was already used.",
            "I saw ERROR: unexpected status 401 Unauthorized in the logs.",
            "The docs say: Error authenticating: Manual authorization is required",
            "Request had invalid authentication credentials",
            // Codex errors that are not about the login.
            "ERROR: unexpected status 500 Internal Server Error: oops",
            "ERROR: unexpected status 4010",
            "ERROR: stream disconnected before completion",
            "ERROR: could not read /tmp/x: Your access token could not be refreshed",
            r#"{"type":"error","message":"Reconnecting... 2/5 (stream disconnected)"}"#,
            r#"{"type":"turn.failed","error":{"message":"unexpected status 503 Service Unavailable"}}"#,
            r#"{"type":"turn.failed","error":"unexpected status 401 Unauthorized"}"#,
            // The same words inside a model's message.
            r#"{"type":"item.completed","item":{"type":"agent_message","text":"ERROR: unexpected status 401 Unauthorized"}}"#,
            r#"{"type":"item.completed","item":{"type":"agent_message","text":"Error authenticating: Manual authorization is required"}}"#,
        ] {
            assert!(seen(ordinary).is_none(), "{ordinary}");
        }
    }

    #[test]
    fn an_auth_exit_code_counts_only_for_the_cli_that_has_one() {
        assert_eq!(
            by_exit_code(41, Some(41)).unwrap().kind,
            FailureKind::AuthExit(41)
        );
        assert!(by_exit_code(1, Some(41)).is_none());
        assert!(by_exit_code(41, None).is_none(), "Claude has no such code");
        let facts = LoginFacts {
            path: "/h/.gemini/oauth_creds.json",
            expires_at: Some("22:02".into()),
            refreshed_at: None,
            relogin: "`gemini`",
        };
        let line = explain("gemini", &by_exit_code(41, Some(41)).unwrap(), &facts);
        assert!(
            line.starts_with("gemini exited with 41, its code for failing to authenticate. The login at /h/.gemini/oauth_creds.json"),
            "{line}"
        );
        assert!(line.ends_with("`gemini`."), "{line}");
        let refresh = seen(
            "ERROR: Your access token could not be refreshed. Please log out and sign in again.",
        )
        .unwrap();
        let line = explain("codex", &refresh, &facts);
        assert!(
            line.contains("says its login could not be refreshed"),
            "{line}"
        );
        assert!(line.contains("refused the refresh token"), "{line}");
        assert!(!line.contains('\n'));
    }
}
