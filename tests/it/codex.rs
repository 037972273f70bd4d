//! Codex CLI's login (`--provider codex`) against the stand-in playing OpenAI's token endpoint
//! (JWT access tokens whose `exp` is the only expiry, rotating single-use refresh tokens, 401s
//! with error codes): fresh, due, expired, dead, missing and malformed logins; one request among
//! many processes; Codex's own `flock`s taken only around the save, in Codex's order; status,
//! exec and the daemon finding the login by themselves.

use crate::util::*;
use serde_json::{Value, json};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};
use tokenkeeper::oauth::jwt::unsigned;
use tokenkeeper_standin::{Fault, IssuedLogin, StandinConfig};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const USAGE: i32 = 2;
const DEAD: i32 = 77;
const MISSING_OR_MALFORMED: i32 = 78;
pub(crate) const ACCOUNT_ID: &str = "acct-7f3a9c";
const LAST_REFRESH: &str = "2026-11-29T15:37:26.902700475Z";

/// A sandbox whose stand-in plays OpenAI's endpoint, with an empty `~/.codex`.
pub(crate) fn sandbox() -> Sandbox {
    sandbox_with(StandinConfig::openai())
}

fn sandbox_with(config: StandinConfig) -> Sandbox {
    let s = Sandbox::with(config);
    fs::create_dir_all(s.home().join(".codex")).expect("codex folder");
    s
}

pub(crate) fn auth_path(s: &Sandbox) -> PathBuf {
    s.home().join(".codex/auth.json")
}

/// An access token as OpenAI issues them: a JWT whose `exp` says when it expires, issued now.
pub(crate) fn access_jwt(expires_at_ms: i64) -> String {
    unsigned(&json!({
        "exp": expires_at_ms / 1000,
        "iat": now_ms() / 1000,
        "https://api.openai.com/auth": {"chatgpt_account_id": ACCOUNT_ID},
    }))
}

pub(crate) fn id_jwt() -> String {
    unsigned(&json!({"email": "dev@example.test", "exp": now_ms() / 1000 + 3600}))
}

/// `auth.json` as Codex writes it (two-space indent, no trailing newline), with keys Codex does
/// not know about at the top and inside `tokens`.
pub(crate) fn auth_text(access: &str, refresh: &str) -> String {
    format!(
        r#"{{
  "auth_mode": "chatgpt",
  "OPENAI_API_KEY": null,
  "tokens": {{
    "id_token": "{id}",
    "access_token": "{access}",
    "refresh_token": "{refresh}",
    "account_id": "{ACCOUNT_ID}",
    "workspace_hint": "kept \u00e9"
  }},
  "last_refresh": "{LAST_REFRESH}",
  "agent_identity": {{
    "kept": 1.50,
    "big": 1e+21
  }}
}}"#,
        id = id_jwt(),
    )
}

fn write_file(path: &Path, text: &str) {
    fs::write(path, text).expect("write auth.json");
    set_mode(path, 0o600);
}

/// A login of the stand-in's, written with an access token expiring `expires_in_ms` from now;
/// returns the exact text written.
fn write_login(s: &Sandbox, login: &IssuedLogin, expires_in_ms: i64) -> String {
    let text = auth_text(&access_jwt(now_ms() + expires_in_ms), &login.refresh_token);
    write_file(&auth_path(s), &text);
    text
}

pub(crate) fn login(s: &Sandbox, expires_in_ms: i64) -> (IssuedLogin, String) {
    let login = s.server.issue_login();
    let text = write_login(s, &login, expires_in_ms);
    (login, text)
}

fn read_auth(s: &Sandbox) -> String {
    fs::read_to_string(auth_path(s)).expect("read auth.json")
}

fn auth_json(s: &Sandbox) -> Value {
    serde_json::from_str(&read_auth(s)).expect("auth.json parses")
}

fn tokens_in(text: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    ["id_token", "access_token", "refresh_token"]
        .iter()
        .filter_map(|k| v["tokens"][k].as_str())
        .filter(|t| t.len() > 8)
        .map(str::to_string)
        .collect()
}

/// Beyond the sandbox's own scan (the tokens the stand-in issued): no token that is or was in
/// auth.json (id tokens included) reached the output or the state folder.
fn assert_no_codex_leak(s: &Sandbox, run: &Run, before: &str) {
    s.assert_no_leak(run, false);
    let now = fs::read_to_string(auth_path(s)).unwrap_or_default();
    for token in tokens_in(before).into_iter().chain(tokens_in(&now)) {
        assert!(!run.stdout.contains(&token), "token on stdout: {run:?}");
        assert!(!run.stderr.contains(&token), "token on stderr: {run:?}");
        for file in files_under(&s.state_dir()) {
            let text = fs::read_to_string(&file).unwrap_or_default();
            assert!(!text.contains(&token), "token in {}", file.display());
        }
    }
}

/// Runs the binary with `args` and scans for leaks, id tokens included.
fn run(s: &Sandbox, args: &[&str]) -> Run {
    run_cmd(s, s.cmd(args))
}

fn run_cmd(s: &Sandbox, mut cmd: Command) -> Run {
    let before = fs::read_to_string(auth_path(s)).unwrap_or_default();
    let run = Run::from(cmd.stdin(Stdio::null()).output().expect("run tokenkeeper"));
    assert_no_codex_leak(s, &run, &before);
    run
}

fn spawn(s: &Sandbox, args: &[&str]) -> Child {
    s.cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn finish(s: &Sandbox, child: Child, before: &str) -> Run {
    let run = Run::from(child.wait_with_output().expect("wait"));
    assert_no_codex_leak(s, &run, before);
    run
}

fn one_stderr_line(run: &Run) -> &str {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want exactly one stderr line: {run:?}");
    lines[0]
}

/// The Codex folder's mtime and each entry's name, mode and bytes: anything anyone could notice.
type FolderState = (SystemTime, Vec<(String, u32, Option<Vec<u8>>)>);

fn folder_state(s: &Sandbox) -> FolderState {
    let dir = s.home().join(".codex");
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .expect("codex folder")
        .flatten()
        .map(|e| {
            let meta = fs::symlink_metadata(e.path()).expect("stat");
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.permissions().mode(),
                meta.is_file().then(|| fs::read(e.path()).ok()).flatten(),
            )
        })
        .collect();
    entries.sort();
    let mtime = fs::metadata(&dir)
        .and_then(|m| m.modified())
        .expect("mtime");
    (mtime, entries)
}

fn rfc3339_ms(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>()
        .expect("RFC 3339")
        .as_millisecond()
}

#[test]
fn a_fresh_codex_login_makes_no_request_takes_no_lock_and_writes_nothing() {
    let s = sandbox();
    login(&s, 5 * DAY_MS);
    let before = folder_state(&s);
    let r = run(&s, &["refresh", "--provider", "codex"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .starts_with("not due (refreshes when less than 1d is left)"),
        "the default minimum lifetime is a day: {r:?}"
    );
    assert_eq!(s.server.stats().token_requests, 0);
    assert_eq!(folder_state(&s), before, "no lock file, no write");
    assert!(!s.state_dir().exists(), "the fast path writes no state");
}

#[test]
fn a_due_codex_login_is_refreshed_keeping_account_id_unknown_keys_and_codex_layout() {
    let s = sandbox();
    // Two hours left: far from Codex's own 5 minutes, but under tokenkeeper's day.
    let (old, before) = login(&s, 2 * HOUR_MS);
    let started = now_ms();
    let r = run(&s, &["refresh", "--provider", "codex"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("refreshed"), "{r:?}");
    assert_eq!(s.server.stats().token_requests, 1);

    let after = auth_json(&s);
    let t = &after["tokens"];
    let (access, refresh, id) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
        t["id_token"].as_str().unwrap(),
    );
    assert!(s.server.is_live_access(access));
    assert_ne!(refresh, old.refresh_token, "the refresh token rotated");
    let old_id = tokens_in(&before)[0].clone();
    assert_ne!(id, old_id, "the id token that came back is saved");
    assert!(tokenkeeper::oauth::jwt::claims(id).is_some());
    let last_refresh = after["last_refresh"].as_str().unwrap();
    let fraction = last_refresh.split('.').nth(1).expect("fractional seconds");
    assert_eq!(fraction.len(), 10, "nine digits and Z: {last_refresh}");
    assert!(last_refresh.ends_with('Z'));
    let at = rfc3339_ms(last_refresh);
    assert!(
        at >= started - 1000 && at <= now_ms() + 1000,
        "{last_refresh}"
    );

    // Byte for byte: only the three tokens and last_refresh changed, in place; account_id,
    // auth_mode, OPENAI_API_KEY, unknown keys, string escapes and number spellings kept;
    // Codex's indentation, no trailing newline.
    let expected = before
        .replace(&tokens_in(&before)[1], access)
        .replace(&old.refresh_token, refresh)
        .replace(&old_id, id)
        .replace(LAST_REFRESH, last_refresh);
    assert_eq!(read_auth(&s), expected);
    let mode = fs::metadata(auth_path(&s)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let req = &s.server.requests()[0];
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("authorization"), None);
    assert_eq!(
        req.header("user-agent"),
        Some(tokenkeeper::provider::codex::DEFAULTS.user_agent)
    );
    let body: Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(body["client_id"], "app_EMoamEEZ73f0CkXaXp7hrann");
    assert_eq!(body["grant_type"], "refresh_token");
    assert_eq!(body["refresh_token"], old.refresh_token.as_str());
    assert!(body.get("scope").is_none(), "no scope is sent: {body}");

    let status = run(&s, &["status", "--provider", "codex", "--json"]);
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["logins"][0]["state"], "fresh", "{status:?}");
    assert_eq!(v["logins"][0]["last_outcome"], "refreshed");
}

#[test]
fn an_expired_codex_login_is_refreshed_and_token_prints_the_new_access_token() {
    let s = sandbox();
    login(&s, -60_000);
    let r = run(&s, &["refresh", "--provider", "codex", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["action"], "refreshed");
    assert_eq!(v["provider"], "codex");
    // The stand-in's tokens live 10 days.
    let left = v["access_expires_in_s"].as_i64().unwrap();
    assert!((9 * 86_400..=10 * 86_400).contains(&left), "{v}");

    let out = s
        .cmd(&["token", "--provider", "codex"])
        .output()
        .expect("token");
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim_end();
    assert_eq!(token, auth_json(&s)["tokens"]["access_token"]);
    assert!(s.server.is_live_access(token));
    assert_eq!(s.server.stats().token_requests, 1);
}

#[test]
fn codex_home_moves_the_login_and_its_locks() {
    let s = sandbox();
    let elsewhere = s.dir.path().join("codex-home");
    fs::create_dir_all(&elsewhere).unwrap();
    let login = s.server.issue_login();
    let path = elsewhere.join("auth.json");
    write_file(
        &path,
        &auth_text(&access_jwt(now_ms() - 1000), &login.refresh_token),
    );
    let mut cmd = s.cmd(&["refresh", "--provider", "codex"]);
    cmd.env("CODEX_HOME", &elsewhere);
    let r = run_cmd(&s, cmd);
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        s.server
            .is_live_access(v["tokens"]["access_token"].as_str().unwrap())
    );
    assert!(elsewhere.join("auth.lock").exists(), "Codex's lock");
    assert!(elsewhere.join("auth.json.lock").exists(), "Codex's lock");
    assert_eq!(
        fs::read_dir(s.home().join(".codex")).unwrap().count(),
        0,
        "~/.codex is not used"
    );
}

/// Refreshes a dead login: exit 77, one line naming the reason and `codex login`, the file
/// exactly as it was.
fn assert_dead(s: &Sandbox, reason: &str) {
    let before = read_auth(s);
    let r = run(s, &["refresh", "--provider", "codex"]);
    assert_eq!(r.code, DEAD, "{reason}: {r:?}");
    let line = one_stderr_line(&r);
    assert!(
        line.contains(reason) && line.contains("codex login"),
        "{reason}: {r:?}"
    );
    assert!(line.contains(&auth_path(s).display().to_string()), "{r:?}");
    assert_eq!(read_auth(s), before, "{reason}: the file is left as it was");
    let status = run(s, &["status", "--provider", "codex", "--json"]);
    assert_eq!(status.code, DEAD, "{status:?}");
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["logins"][0]["state"], "dead");
}

#[test]
fn a_reused_refresh_token_is_dead() {
    let s = sandbox();
    let (old, _) = login(&s, -1000);
    // Another copy of the login (on another machine, say) refreshed with it first.
    let endpoint = tokenkeeper::oauth::endpoint::TokenEndpoint::new(&s.server.token_url(), "other");
    let request = tokenkeeper::provider::TokenRequest {
        body: tokenkeeper::provider::Body::Json(tokenkeeper::provider::codex::token_request(
            &tokenkeeper::secret::Secret::new(old.refresh_token.clone()),
            tokenkeeper::provider::codex::DEFAULTS.client_id,
            "",
        )),
        headers: Vec::new(),
    };
    let reply = endpoint.post(
        &request,
        tokenkeeper::provider::RejectionRule::OAuthOrAny401,
        Duration::from_secs(5),
    );
    assert!(matches!(
        reply,
        tokenkeeper::oauth::endpoint::Reply::Tokens(_)
    ));
    assert_dead(&s, "refresh_token_reused");
    assert_eq!(s.server.stats().reused_refresh_tokens, 1);
    let again = run(&s, &["refresh", "--provider", "codex"]);
    assert_eq!(again.code, DEAD, "{again:?}");
    assert_eq!(
        s.server.stats().token_requests,
        2,
        "a refused token is not sent again"
    );
}

#[test]
fn an_invalidated_refresh_token_is_dead() {
    let s = sandbox();
    let never_issued = format!("rt_{}", "n".repeat(86));
    write_file(
        &auth_path(&s),
        &auth_text(&access_jwt(now_ms() - 1000), &never_issued),
    );
    assert_dead(&s, "refresh_token_invalidated");
}

#[test]
fn invalid_grant_is_dead_but_another_400_or_a_401_without_an_oauth_error_is_retried() {
    let s = sandbox();
    login(&s, -1000);
    s.server.push_fault(Fault::InvalidGrant);
    assert_dead(&s, "invalid_grant");
    assert_eq!(
        s.server.stats().token_requests,
        1,
        "invalid_grant: no retry"
    );
    // A 401 whose body is not the endpoint's OAuth error (a proxy's page, plain text) proves
    // nothing about the login: retried, and the login lives on.
    for (fault, what) in [
        (Fault::InvalidRequest, "a 400 without invalid_grant"),
        (Fault::Status(401), "a plain-text 401"),
    ] {
        let s = sandbox();
        login(&s, -1000);
        s.server.push_fault(fault);
        let r = run(&s, &["refresh", "--provider", "codex"]);
        assert_eq!(r.code, 0, "{what} is transient: {r:?}");
        assert!(r.stderr.contains("retrying in"), "{r:?}");
        assert_eq!(s.server.stats().token_requests, 2);
        let again = run(&s, &["refresh", "--provider", "codex", "--force"]);
        assert_eq!(again.code, 0, "{what}: the login still works: {again:?}");
    }
}

#[test]
fn an_access_token_whose_exp_never_comes_is_kept_as_expiring_within_the_longest_lifetime() {
    // The server hands out JWTs whose exp is u64::MAX seconds (and says nothing else of their
    // lifetime): believed, the login would never be refreshed again.
    let s = sandbox_with(StandinConfig {
        access_ttl_secs: u64::MAX,
        ..StandinConfig::openai()
    });
    login(&s, -1000);
    let asked_at = now_ms();
    let r = run(&s, &["refresh", "--provider", "codex"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(s.server.stats().token_requests, 1);
    let stored = auth_json(&s)["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(s.server.is_live_access(&stored), "the new token is saved");
    assert!(
        r.stderr
            .contains("longer than any real one; taking 30d instead"),
        "{r:?}"
    );
    // Shown as expiring 30 days after it came, not in the year 292277026596.
    let status = run(&s, &["status", "--provider", "codex", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let v: Value = serde_json::from_str(&status.stdout).expect("json");
    let l = &v["logins"][0];
    assert_eq!(l["state"], "fresh", "{status:?}");
    let secs = l["access_expires_in_s"].as_i64().unwrap();
    let month = 30 * 86_400;
    let waited = (now_ms() - asked_at) / 1000 + 2;
    assert!(
        (month - waited..=month).contains(&secs),
        "{secs} s left: {status:?}"
    );
    assert!(
        l["access_expires_at"].as_str().unwrap().starts_with("20"),
        "{status:?}"
    );
    // The same capped expiry in the text form; the next refresh is not due for weeks.
    let text = run(&s, &["status", "--provider", "codex"]);
    assert!(
        text.stdout.contains("(in 29d 23h)") || text.stdout.contains("(in 30d)"),
        "{text:?}"
    );
    let again = run(&s, &["refresh", "--provider", "codex"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(s.server.stats().token_requests, 1, "not due: {again:?}");
}

#[test]
fn a_wiped_refresh_token_is_dead_without_a_request() {
    let s = sandbox();
    let text = auth_text(&access_jwt(now_ms() + 5 * DAY_MS), "");
    write_file(&auth_path(&s), &text);
    let before = folder_state(&s);
    let r = run(&s, &["refresh", "--provider", "codex", "--force"]);
    assert_eq!(r.code, DEAD, "{r:?}");
    assert!(
        one_stderr_line(&r).contains("empty") && r.stderr.contains("codex login"),
        "{r:?}"
    );
    assert_eq!(s.server.stats().token_requests, 0);
    assert_eq!(folder_state(&s), before);
    let status = run(&s, &["status", "--provider", "codex"]);
    assert_eq!(status.code, DEAD, "{status:?}");
    assert!(status.stdout.starts_with("codex: dead"), "{status:?}");
}

#[test]
fn a_missing_codex_login_names_codex_login_and_creates_nothing() {
    let s = sandbox();
    let path = auth_path(&s).display().to_string();
    for args in [
        &["refresh", "--provider", "codex"][..],
        &["token", "--provider", "codex"],
    ] {
        let r = run(&s, args);
        assert_eq!(r.code, MISSING_OR_MALFORMED, "{args:?}: {r:?}");
        let line = one_stderr_line(&r);
        assert!(
            line.contains(&format!("no Codex CLI login at {path}"))
                && line.contains("`codex login`"),
            "{r:?}"
        );
    }
    let status = run(&s, &["status", "--provider", "codex"]);
    assert_eq!(status.code, MISSING_OR_MALFORMED, "{status:?}");
    assert!(status.stdout.starts_with("codex: missing"), "{status:?}");
    assert_eq!(fs::read_dir(s.home().join(".codex")).unwrap().count(), 0);
    assert!(!s.state_dir().exists());

    // Codex told to keep its login in the keyring: say so rather than "log in".
    fs::write(
        s.home().join(".codex/config.toml"),
        "model = \"o3\"\ncli_auth_credentials_store = \"keyring\"\n",
    )
    .unwrap();
    let r = run(&s, &["refresh", "--provider", "codex"]);
    assert_eq!(r.code, MISSING_OR_MALFORMED, "{r:?}");
    let line = one_stderr_line(&r);
    assert!(
        line.contains("OS keyring") && line.contains("cli_auth_credentials_store = \"file\""),
        "{r:?}"
    );
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn malformed_codex_logins_are_refused_with_the_fix_and_left_untouched() {
    let s = sandbox();
    let login = s.server.issue_login();
    let good = auth_text(&access_jwt(now_ms() - 1000), &login.refresh_token);
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(&good).unwrap();
        f(&mut v);
        serde_json::to_string_pretty(&v).unwrap()
    };
    let cases: Vec<(String, &[&str])> = vec![
        (
            "{\n  \"tokens\": {".to_string(),
            &["not valid JSON (line 2", "codex login"],
        ),
        ("[]".to_string(), &["not a JSON object", "codex login"]),
        (
            edit(&|v| v["tokens"] = json!("x")),
            &["\"tokens\" that is not an object", "codex login"],
        ),
        (
            edit(&|v| v["tokens"]["refresh_token"] = json!(7)),
            &["tokens.refresh_token", "codex login"],
        ),
        (
            edit(&|v| v["tokens"]["id_token"] = json!("opaque")),
            &["not a JWT", "Codex CLI will not load", "codex login"],
        ),
        (
            edit(&|v| v["last_refresh"] = json!("last tuesday")),
            &["last_refresh", "codex login"],
        ),
        (
            r#"{
  "auth_mode": "apikey",
  "OPENAI_API_KEY": "sk-proj-not-a-real-key"
}"#
            .to_string(),
            &["API-key login", "nothing to keep fresh", "codex login"],
        ),
    ];
    let path = auth_path(&s).display().to_string();
    for (text, needles) in cases {
        write_file(&auth_path(&s), &text);
        let before = folder_state(&s);
        for args in [
            &["refresh", "--provider", "codex"][..],
            &["refresh", "--provider", "codex", "--force"],
        ] {
            let r = run(&s, args);
            assert_eq!(r.code, MISSING_OR_MALFORMED, "{text}: {r:?}");
            let line = one_stderr_line(&r);
            assert!(line.contains(&path), "{r:?}");
            for needle in needles {
                assert!(line.contains(needle), "{text}: want {needle:?}: {r:?}");
            }
            assert!(!line.contains("sk-proj"), "{r:?}");
            assert!(r.stdout.is_empty(), "{r:?}");
        }
        let status = run(&s, &["status", "--provider", "codex", "--json"]);
        assert_eq!(status.code, MISSING_OR_MALFORMED, "{status:?}");
        let v: Value = serde_json::from_str(&status.stdout).unwrap();
        let want = if text.contains("apikey") || text.contains("sk-proj") {
            "not_kept"
        } else {
            "malformed"
        };
        assert_eq!(v["logins"][0]["state"], want, "{text}");
        assert_eq!(folder_state(&s), before, "{text}: the folder changed");
    }
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn twenty_concurrent_codex_refreshes_at_expiry_make_one_request() {
    let s = sandbox();
    let (_, before) = login(&s, -1000);
    let children: Vec<Child> = (0..20)
        .map(|_| spawn(&s, &["refresh", "--provider", "codex"]))
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| finish(&s, c, &before))
        .collect();
    for r in &runs {
        assert_eq!(r.code, 0, "{r:?}");
    }
    let stats = s.server.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0)
    );
    let refreshed = runs
        .iter()
        .filter(|r| r.stdout.starts_with("refreshed"))
        .count();
    let others = runs
        .iter()
        .filter(|r| r.stdout.starts_with("adopted") || r.stdout.starts_with("not due"))
        .count();
    assert_eq!((refreshed, others), (1, 19));
    let v = auth_json(&s);
    assert!(
        s.server
            .is_live_access(v["tokens"]["access_token"].as_str().unwrap())
    );
    assert_eq!(v["tokens"]["account_id"], ACCOUNT_ID);
}

pub(crate) fn open_lock(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open lock file")
}

/// Whether another process holds an exclusive `flock` on `path` (checked by trying for it).
pub(crate) fn held_elsewhere(path: &Path) -> bool {
    let file = open_lock(path);
    match file.try_lock() {
        Ok(()) => {
            file.unlock().expect("unlock");
            false
        }
        Err(fs::TryLockError::WouldBlock) => true,
        Err(fs::TryLockError::Error(e)) => panic!("flock {}: {e}", path.display()),
    }
}

#[test]
fn codex_holding_auth_lock_delays_only_the_save_not_the_request() {
    let s = sandbox();
    let (old, before) = login(&s, -1000);
    let folder = s.home().join(".codex");
    // Codex is saving (or stuck) under its home lock.
    let codex_lock = open_lock(&folder.join("auth.lock"));
    codex_lock.lock().expect("flock auth.lock");
    let child = spawn(&s, &["refresh", "--provider", "codex"]);
    wait_for(
        "the token request, made without Codex's lock",
        Duration::from_secs(10),
        || s.server.stats().token_requests == 1,
    );
    sleep(Duration::from_millis(700));
    assert_eq!(read_auth(&s), before, "the save waits for auth.lock");
    assert!(
        !held_elsewhere(&folder.join("auth.json.lock")),
        "Codex's order: auth.json.lock only after auth.lock"
    );
    let released = Instant::now();
    drop(codex_lock);
    let r = finish(&s, child, &before);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("refreshed"), "{r:?}");
    let requests = s.server.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].received < released,
        "the request went out while Codex held its lock"
    );
    let v = auth_json(&s);
    assert_ne!(v["tokens"]["refresh_token"], old.refresh_token.as_str());
    assert!(
        s.server
            .is_live_access(v["tokens"]["access_token"].as_str().unwrap())
    );
    assert!(!held_elsewhere(&folder.join("auth.lock")), "released");
    assert!(!held_elsewhere(&folder.join("auth.json.lock")), "released");
}

#[test]
fn codex_holding_auth_json_lock_is_waited_for_while_auth_lock_is_held() {
    let s = sandbox();
    let (_, before) = login(&s, -1000);
    let folder = s.home().join(".codex");
    let file_lock = open_lock(&folder.join("auth.json.lock"));
    file_lock.lock().expect("flock auth.json.lock");
    let child = spawn(&s, &["refresh", "--provider", "codex"]);
    wait_for("the token request", Duration::from_secs(10), || {
        s.server.stats().token_requests == 1
    });
    wait_for(
        "auth.lock, taken before auth.json.lock",
        Duration::from_secs(5),
        || held_elsewhere(&folder.join("auth.lock")),
    );
    sleep(Duration::from_millis(500));
    assert_eq!(read_auth(&s), before, "the save waits for auth.json.lock");
    drop(file_lock);
    let r = finish(&s, child, &before);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("refreshed"), "{r:?}");
    assert_eq!(s.server.stats().token_requests, 1);
}

#[test]
fn status_shows_codex_by_name_and_among_every_login() {
    let s = sandbox();
    login(&s, 5 * DAY_MS);
    let r = run(&s, &["status", "--provider", "codex"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with("codex: fresh, access token expires"),
        "{r:?}"
    );
    assert!(
        r.stdout.contains(&auth_path(&s).display().to_string()),
        "{r:?}"
    );

    // Only a Codex login on the machine: status finds it without being told.
    let r = run(&s, &["status"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("codex: fresh"), "{r:?}");

    // With Claude Code's too: one row each.
    let claude = s.server.issue_login();
    s.write_login(&claude, 8 * HOUR_MS);
    let r = run(&s, &["status", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let providers: Vec<&str> = v["logins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["claude", "codex"], "{v}");
    assert_eq!(v["logins"][1]["state"], "fresh");
    let r = run(&s, &["status"]);
    let rows: Vec<&str> = r.stdout.lines().collect();
    assert!(rows[0].starts_with("LOGIN"), "{r:?}");
    assert!(
        rows.iter()
            .any(|l| l.starts_with("codex") && l.contains("fresh")),
        "{r:?}"
    );
    assert!(rows.iter().any(|l| l.starts_with("claude")), "{r:?}");

    // An API-key Codex login beside a good Claude one: shown as not kept, and not a failure;
    // the daemon leaves it out.
    write_file(
        &auth_path(&s),
        r#"{"auth_mode":"apikey","OPENAI_API_KEY":"sk-proj-abc","tokens":null}"#,
    );
    let r = run(&s, &["status", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["logins"][1]["state"], "not_kept", "{v}");
    assert!(!r.stdout.contains("sk-proj"), "{r:?}");
}

/// A directory holding a program called `codex` that copies the auth.json it sees at start to
/// `$CODEX_SEEN` and says it ran.
fn fake_codex(s: &Sandbox) -> PathBuf {
    let bin = s.dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let program = bin.join("codex");
    fs::write(
        &program,
        "#!/bin/sh\ncp \"${CODEX_HOME:-$HOME/.codex}/auth.json\" \"$CODEX_SEEN\"\necho \"codex ran: $*\"\n",
    )
    .unwrap();
    set_mode(&program, 0o755);
    bin
}

fn with_fake_codex(s: &Sandbox, bin: &Path, args: &[&str]) -> Command {
    let mut cmd = s.cmd(args);
    cmd.env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )
    .env("CODEX_SEEN", s.dir.path().join("seen.json"));
    cmd
}

#[test]
fn exec_codex_picks_the_codex_login_without_being_told() {
    let s = sandbox();
    let (old, _) = login(&s, -1000);
    // No Claude Code login at all: were Claude's picked, exec would stop with 78.
    let bin = fake_codex(&s);
    let r = run_cmd(
        &s,
        with_fake_codex(&s, &bin, &["exec", "--", "codex", "exec", "hello"]),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "codex ran: exec hello\n");
    assert_eq!(s.server.stats().token_requests, 1);
    let seen: Value =
        serde_json::from_str(&fs::read_to_string(s.dir.path().join("seen.json")).unwrap()).unwrap();
    let access = seen["tokens"]["access_token"].as_str().unwrap();
    assert!(
        s.server.is_live_access(access),
        "codex started with the new token"
    );
    assert_ne!(seen["tokens"]["refresh_token"], old.refresh_token.as_str());
    assert_eq!(seen["tokens"]["account_id"], ACCOUNT_ID);

    // CODEX_API_KEY makes Codex ignore the login: one warning, nothing changed.
    let before = read_auth(&s);
    let mut cmd = with_fake_codex(&s, &bin, &["exec", "--", "codex", "exec", "again"]);
    cmd.env("CODEX_API_KEY", "sk-proj-test");
    let r = run_cmd(&s, cmd);
    assert_eq!(r.code, 0, "{r:?}");
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("CODEX_API_KEY is set") && l.contains("Codex CLI uses it"))
        .collect();
    assert_eq!(warnings.len(), 1, "{r:?}");
    assert_eq!(read_auth(&s), before);
    assert_eq!(s.server.stats().token_requests, 1);
}

#[test]
fn exec_inject_env_refuses_for_codex_with_one_clear_line() {
    let s = sandbox();
    login(&s, -1000);
    let before = folder_state(&s);
    let marker = s.dir.path().join("ran");
    let marker_text = marker.display().to_string();
    let bin = fake_codex(&s);
    for args in [
        &[
            "exec",
            "--provider",
            "codex",
            "--inject",
            "env",
            "--",
            "touch",
            marker_text.as_str(),
        ][..],
        &["exec", "--inject", "env", "--", "codex", "exec", "hi"],
    ] {
        let r = run_cmd(&s, with_fake_codex(&s, &bin, args));
        assert_eq!(r.code, USAGE, "{args:?}: {r:?}");
        let line = one_stderr_line(&r);
        assert!(
            line.contains("--inject env cannot hand Codex CLI a token")
                && line.contains("no environment variable")
                && line.contains("use --inject file"),
            "{r:?}"
        );
        assert!(r.stdout.is_empty(), "the command never ran: {r:?}");
    }
    assert!(!marker.exists(), "the command never ran");
    assert!(!s.dir.path().join("seen.json").exists());
    assert_eq!(s.server.stats().token_requests, 0);
    assert_eq!(folder_state(&s), before);
}

#[test]
fn the_daemon_keeps_a_codex_login_fresh_over_many_short_lifetimes() {
    let s = sandbox_with(StandinConfig {
        access_ttl_secs: 4,
        ..StandinConfig::openai()
    });
    let login = s.server.issue_login();
    // The stand-in's own access token: a JWT that expires in 4 s.
    let before = auth_text(&login.access_token, &login.refresh_token);
    write_file(&auth_path(&s), &before);
    let child = spawn(&s, &["daemon", "--refresh-before", "2s"]);
    let start = Instant::now();
    let mut checks = 0;
    while start.elapsed() < Duration::from_secs(12) {
        let v = auth_json(&s);
        let access = v["tokens"]["access_token"].as_str().unwrap().to_string();
        let exp = tokenkeeper::oauth::jwt::expiry_ms(&access).expect("a JWT with exp");
        assert!(
            exp > now_ms(),
            "the file held an expired token ({} ms)",
            exp - now_ms()
        );
        assert_eq!(v["tokens"]["account_id"], ACCOUNT_ID);
        checks += 1;
        sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let r = finish(&s, child, &before);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&auth_path(&s).display().to_string()),
        "the daemon found the Codex login by itself: {r:?}"
    );
    let stats = s.server.stats();
    // Tokens live 3–4 s (exp is whole seconds) and are refreshed ~2 s before: one refresh
    // every ~2 s, each token exactly once.
    assert!(
        (4..=9).contains(&stats.token_requests),
        "{stats:?} after {checks} checks: {r:?}"
    );
    assert_eq!(stats.refreshes_ok, stats.token_requests, "{stats:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0)
    );
    let v = auth_json(&s);
    assert!(
        s.server
            .is_live_access(v["tokens"]["access_token"].as_str().unwrap())
    );
}
