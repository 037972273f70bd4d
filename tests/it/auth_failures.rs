//! `tokenkeeper exec` turning Gemini CLI's and Codex CLI's auth failures into one line and exit 77:
//! small scripts named `gemini` and `codex` print exactly what those CLIs print and exit as they
//! do; ordinary failures keep their own exit code.

use crate::util::*;
use crate::{codex, gemini};
use std::fs;
use std::path::PathBuf;

const DEAD: i32 = 77;
const HOUR_MS: i64 = 3_600_000;
const MANUAL: &str = "Error authenticating: FatalAuthenticationError: Manual authorization is required but the current session is non-interactive.";
const REFRESH_USED: &str = "ERROR: Your access token could not be refreshed because your refresh token was already used. Please log out and sign in again.";

/// An executable script called `name` in the sandbox that runs `body` with `sh`.
fn script(s: &Sandbox, name: &str, body: &str) -> String {
    let dir = s.dir.path().join("bin");
    fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    set_mode(&path, 0o755);
    path.to_string_lossy().into_owned()
}

fn own_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("tokenkeeper:"))
        .collect()
}

/// Runs `tokenkeeper exec -- PROGRAM` on a fresh Gemini login (the provider chosen by the
/// program's name); returns the run.
fn exec_gemini(s: &Sandbox, program: &str, extra: &[&str]) -> Run {
    let mut args = extra.to_vec();
    args.extend(["exec", "--", program, "-p", "hello"]);
    let out = s
        .cmd(&args)
        .env("TOKENKEEPER_NPM_ROOT", s.dir.path())
        .output()
        .unwrap();
    gemini::checked(s, out)
}

#[test]
fn gemini_exit_41_with_its_line_gives_one_clear_line_and_exit_77() {
    let s = gemini::sandbox();
    gemini::login(&s, 50 * 60_000);
    let program = script(&s, "gemini", &format!("echo '{MANUAL}' >&2\nexit 41"));
    let r = exec_gemini(&s, &program, &[]);
    assert_eq!(r.code, DEAD, "{r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "gemini's line, then ours: {r:?}");
    assert_eq!(lines[0], MANUAL);
    let own = own_lines(&r.stderr);
    assert_eq!(own.len(), 1, "{r:?}");
    assert!(
        own[0].starts_with(&format!(
            "tokenkeeper: gemini found no usable login (FatalAuthenticationError). The login at {} expires at",
            gemini::creds(&s).display()
        )),
        "{r:?}"
    );
    assert!(own[0].ends_with("log in again with `gemini`."), "{r:?}");
    assert_eq!(s.server.stats().token_requests, 0);
}

/// The failure line names the expiry as an unambiguous time (year, seconds, zone), the same
/// spelling `refresh` and `status` use.
#[test]
fn the_failure_line_names_the_expiry_with_its_year() {
    let s = gemini::sandbox();
    gemini::login(&s, 50 * 60_000);
    let program = script(&s, "gemini", &format!("echo '{MANUAL}' >&2\nexit 41"));
    let r = exec_gemini(&s, &program, &[]);
    let own = own_lines(&r.stderr);
    let at = own[0]
        .split(" expires at ")
        .nth(1)
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default();
    let parsed = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S UTC", at);
    assert!(parsed.is_ok(), "not a full time: {at:?} in {r:?}");
}

#[test]
fn gemini_exit_41_without_a_line_is_an_auth_failure_too() {
    let s = gemini::sandbox();
    gemini::login(&s, 50 * 60_000);
    let program = script(&s, "gemini", "echo '{\"error\": {' >&2\nexit 41");
    let r = exec_gemini(&s, &program, &[]);
    assert_eq!(r.code, DEAD, "{r:?}");
    let own = own_lines(&r.stderr);
    assert_eq!(own.len(), 1, "{r:?}");
    assert!(
        own[0].starts_with(
            "tokenkeeper: gemini exited with 41, its code for failing to authenticate."
        ),
        "{r:?}"
    );
}

#[test]
fn gemini_refused_by_the_api_exits_1_and_is_still_an_auth_failure() {
    let s = gemini::sandbox();
    gemini::login(&s, 50 * 60_000);
    let line = "Error authenticating: [API Error: Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.]";
    let program = script(&s, "gemini", &format!("echo '{line}' >&2\nexit 1"));
    let r = exec_gemini(&s, &program, &[]);
    assert_eq!(r.code, DEAD, "{r:?}");
    let own = own_lines(&r.stderr);
    assert_eq!(own.len(), 1, "{r:?}");
    assert!(
        own[0].starts_with("tokenkeeper: gemini failed to authenticate (401)."),
        "{r:?}"
    );
}

#[test]
fn ordinary_failures_keep_their_exit_code() {
    let s = gemini::sandbox();
    gemini::login(&s, 50 * 60_000);
    // Gemini failing for another reason, while its output mentions the words.
    let program = script(
        &s,
        "gemini",
        "echo 'The log says: Error authenticating: Manual authorization is required'\necho 'Error: quota exceeded' >&2\nexit 1",
    );
    let r = exec_gemini(&s, &program, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(own_lines(&r.stderr).is_empty(), "{r:?}");

    // 41 means nothing for Claude Code.
    let c = Sandbox::new();
    c.login(8 * HOUR_MS);
    let r = c.run(&["exec", "--", "sh", "-c", "exit 41"]);
    assert_eq!(r.code, 41, "{r:?}");
    assert!(own_lines(&r.stderr).is_empty(), "{r:?}");
}

#[test]
fn codex_error_line_gives_one_clear_line_and_exit_77() {
    let s = codex::sandbox();
    codex::login(&s, 5 * 24 * HOUR_MS);
    let program = script(
        &s,
        "codex",
        &format!("echo '{REFRESH_USED}' >&2\necho '{REFRESH_USED}' >&2\nexit 1"),
    );
    let r = s.run(&["exec", "--", &program, "exec", "hello"]);
    assert_eq!(r.code, DEAD, "{r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "codex's two lines, then ours: {r:?}");
    let own = own_lines(&r.stderr);
    assert_eq!(own.len(), 1, "{r:?}");
    let auth = s.home().join(".codex/auth.json");
    assert!(
        own[0].starts_with(&format!(
            "tokenkeeper: codex says its login could not be refreshed. The login at {} expires at",
            auth.display()
        )),
        "{r:?}"
    );
    assert!(
        own[0].contains("the server refused the refresh token the command used"),
        "{r:?}"
    );
    assert!(
        own[0].ends_with("log in again with `codex login`."),
        "{r:?}"
    );

    let json = script(
        &s,
        "codex",
        r#"echo '{"type":"thread.started","thread_id":"t-1"}'
echo '{"type":"turn.started"}'
echo '{"type":"error","message":"unexpected status 401 Unauthorized: Missing bearer or basic authentication in header"}'
echo '{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized: Missing bearer or basic authentication in header"}}'
exit 1"#,
    );
    let r = s.run(&["exec", "--", &json, "exec", "--json", "hello"]);
    assert_eq!(r.code, DEAD, "{r:?}");
    assert_eq!(
        r.stdout.lines().count(),
        4,
        "codex's events pass through: {r:?}"
    );
    let own = own_lines(&r.stderr);
    assert_eq!(own.len(), 1, "{r:?}");
    assert!(
        own[0].starts_with("tokenkeeper: codex failed to authenticate (401)."),
        "{r:?}"
    );

    let other = script(
        &s,
        "codex",
        "echo 'ERROR: unexpected status 500 Internal Server Error' >&2\nexit 1",
    );
    let r = s.run(&["exec", "--", &other, "exec", "hello"]);
    assert_eq!(r.code, 1, "not an auth failure: {r:?}");
    assert!(own_lines(&r.stderr).is_empty(), "{r:?}");
    assert_eq!(s.server.stats().token_requests, 0);
}
