//! Gemini CLI's login (`--provider gemini`) against the stand-in playing Google's token endpoint:
//! the states, the form-encoded refresh with the client secret (from the config, from an
//! installed Gemini CLI, or a clear error), what the file keeps, a file that Gemini is rewriting
//! in place, one request among many processes, the encrypted store, and `exec --inject env`.

use crate::util::*;
use serde_json::Value;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;
use tokenkeeper_standin::{Fault, IssuedLogin, StandinConfig};

pub const SECRET: &str = "standin-gemini-client-secret-7f3a";
const MIN_MS: i64 = 60_000;
const DEAD: i32 = 77;
const MISSING_OR_MALFORMED: i32 = 78;
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email openid";

/// A sandbox whose stand-in plays Google's endpoint, with `~/.gemini` made.
pub fn sandbox() -> Sandbox {
    with(StandinConfig::google(SECRET))
}

fn with(config: StandinConfig) -> Sandbox {
    let s = Sandbox::with(config);
    fs::create_dir_all(s.home().join(".gemini")).expect("gemini folder");
    fs::create_dir_all(no_npm(&s)).expect("empty npm root");
    s
}

/// An empty folder to search for Gemini CLI, so no real installation is ever found.
pub(crate) fn no_npm(s: &Sandbox) -> PathBuf {
    s.dir.path().join("no-npm")
}

pub fn creds(s: &Sandbox) -> PathBuf {
    s.home().join(".gemini/oauth_creds.json")
}

/// Gemini's own layout (`JSON.stringify(…, null, 2)`, no newline at the end), with one key
/// before the tokens and one after that tokenkeeper does not know.
pub fn gemini_json(access: &str, refresh: &str, expiry_date: i64) -> String {
    // By hand: a `json!` value would spell 1.50 as 1.5.
    format!(
        r#"{{
  "x_first": "kept",
  "access_token": "{access}",
  "refresh_token": "{refresh}",
  "scope": "{SCOPE}",
  "token_type": "Bearer",
  "id_token": "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln",
  "expiry_date": {expiry_date},
  "x_last": {{
    "n": 1.50,
    "list": [
      1,
      2
    ]
  }}
}}"#
    )
}

fn write_creds(s: &Sandbox, text: &str) {
    fs::write(creds(s), text).expect("write creds");
    set_mode(&creds(s), 0o600);
}

/// A fresh login from the stand-in, written as expiring `expires_in_ms` from now; returns the text.
pub fn write_login(s: &Sandbox, login: &IssuedLogin, expires_in_ms: i64) -> String {
    let text = gemini_json(
        &login.access_token,
        &login.refresh_token,
        now_ms() + expires_in_ms,
    );
    write_creds(s, &text);
    text
}

pub fn login(s: &Sandbox, expires_in_ms: i64) -> IssuedLogin {
    let login = s.server.issue_login();
    write_login(s, &login, expires_in_ms);
    login
}

fn read_creds(s: &Sandbox) -> String {
    fs::read_to_string(creds(s)).expect("read creds")
}

fn creds_json(s: &Sandbox) -> Value {
    serde_json::from_str(&read_creds(s)).expect("creds parse")
}

pub(crate) fn secret_config(s: &Sandbox) {
    s.config(&format!("[gemini]\nclient_secret = \"{SECRET}\"\n"));
}

/// `tokenkeeper --provider gemini ARGS…`, looking for Gemini CLI only in `npm_root`.
fn cmd_in(s: &Sandbox, npm_root: &Path, args: &[&str]) -> Command {
    let mut full = vec!["--provider", "gemini"];
    full.extend_from_slice(args);
    let mut c = s.cmd(&full);
    c.env("TOKENKEEPER_NPM_ROOT", npm_root);
    c
}

pub fn cmd(s: &Sandbox, args: &[&str]) -> Command {
    cmd_in(s, &no_npm(s), args)
}

/// Checks that no token and not the client secret reached the output.
pub fn checked(s: &Sandbox, out: std::process::Output) -> Run {
    let run = Run::from(out);
    s.assert_no_leak(&run, false);
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(SECRET), "client secret leaked: {run:?}");
    }
    if let Some(id) = fs::read_to_string(creds(s))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["id_token"].as_str().map(str::to_string))
    {
        assert!(!run.stderr.contains(&id) && !run.stdout.contains(&id));
    }
    run
}

pub fn run(s: &Sandbox, args: &[&str]) -> Run {
    checked(s, cmd(s, args).output().expect("run tokenkeeper"))
}

/// The creds folder's entries, by name.
fn entries(s: &Sandbox) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(s.home().join(".gemini"))
        .expect("read folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn form_escape(s: &str) -> String {
    s.replace('/', "%2F")
}

#[test]
fn refresh_posts_a_form_with_the_client_secret_and_keeps_every_other_key() {
    let s = sandbox();
    secret_config(&s);
    let login = login(&s, -1000);
    let before = creds_json(&s);
    let r = run(&s, &["refresh"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with("refreshed: access token expires"),
        "{r:?}"
    );

    let req = &s.server.requests()[0];
    assert!(
        req.header("content-type")
            .unwrap()
            .starts_with("application/x-www-form-urlencoded"),
        "{req:?}"
    );
    assert_eq!(
        req.body,
        format!(
            "refresh_token={}&client_id={}&client_secret={SECRET}&grant_type=refresh_token",
            form_escape(&login.refresh_token),
            tokenkeeper::provider::gemini::DEFAULTS.client_id
        ),
        "no scope is sent"
    );

    let text = read_creds(&s);
    let after: Value = serde_json::from_str(&text).unwrap();
    let access = after["access_token"].as_str().unwrap();
    assert!(access.starts_with("ya29.") && s.server.is_live_access(access));
    assert_eq!(
        after["refresh_token"], login.refresh_token,
        "none came back: the old one is kept"
    );
    let expiry = after["expiry_date"].as_i64().unwrap();
    assert!(
        (expiry - (now_ms() + 3599 * 1000)).abs() < MIN_MS,
        "expiry_date in milliseconds: {expiry}"
    );
    // The keys keep their order; the unknown ones and token_type keep their values; scope and
    // id_token are the ones that came back.
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&after), keys(&before));
    for key in ["x_first", "token_type", "x_last"] {
        assert_eq!(after[key], before[key], "{key}");
    }
    assert_eq!(
        after["scope"],
        "https://www.googleapis.com/auth/cloud-platform openid"
    );
    assert_ne!(after["id_token"], before["id_token"]);
    assert!(
        text.contains("\n  \"x_last\": {\n    \"n\": 1.50,"),
        "{text}"
    );
    assert!(
        !text.ends_with('\n'),
        "Gemini's layout: no newline at the end"
    );

    let status = run(&s, &["status", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["logins"][0]["provider"], "gemini");
    assert_eq!(v["logins"][0]["state"], "fresh");
}

#[test]
fn a_fresh_login_is_left_alone_and_a_due_one_refreshed_at_15_minutes() {
    let s = sandbox();
    secret_config(&s);
    login(&s, 20 * MIN_MS);
    let mtime = fs::metadata(creds(&s)).unwrap().modified().unwrap();
    let r = run(&s, &["refresh"]);
    assert!(
        r.stdout
            .starts_with("not due (refreshes when less than 15m"),
        "{r:?}"
    );
    assert_eq!(s.server.stats().token_requests, 0);
    assert_eq!(fs::metadata(creds(&s)).unwrap().modified().unwrap(), mtime);
    assert_eq!(entries(&s), ["oauth_creds.json"], "no lock, no temp file");
    assert!(!s.state_dir().exists(), "the fast path writes no state");

    login(&s, 10 * MIN_MS);
    let r = run(&s, &["refresh", "--json"]);
    let v: Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["action"], "refreshed", "{r:?}");
    assert_eq!(s.server.stats().token_requests, 1);
}

#[test]
fn status_tells_fresh_due_expired_dead_missing_and_malformed_apart() {
    let s = sandbox();
    let state = |s: &Sandbox| {
        let r = run(s, &["status", "--json"]);
        let v: Value = serde_json::from_str(&r.stdout).expect("json");
        (
            v["logins"][0]["state"].as_str().unwrap().to_string(),
            r.code,
        )
    };
    let issued = s.server.issue_login();
    for (expires_in, want) in [
        (50 * MIN_MS, "fresh"),
        (10 * MIN_MS, "due"),
        (-MIN_MS, "expired"),
    ] {
        write_login(&s, &issued, expires_in);
        assert_eq!(state(&s), (want.to_string(), 0));
    }
    write_creds(
        &s,
        &gemini_json(&issued.access_token, "", now_ms() + 50 * MIN_MS),
    );
    assert_eq!(state(&s), ("dead".to_string(), DEAD));
    write_creds(
        &s,
        "{\n  \"access_token\": \"ya29.x\",\n  \"refresh_token\": \"1//x\",\n  \"expiry_date\": \"tomorrow\"\n}",
    );
    assert_eq!(state(&s), ("malformed".to_string(), MISSING_OR_MALFORMED));
    fs::remove_file(creds(&s)).unwrap();
    assert_eq!(state(&s), ("missing".to_string(), MISSING_OR_MALFORMED));
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn a_wiped_login_is_dead_without_a_request() {
    let s = sandbox();
    secret_config(&s);
    let text = gemini_json("", "", 0);
    write_creds(&s, &text);
    let r = run(&s, &["refresh"]);
    assert_eq!(r.code, DEAD, "{r:?}");
    assert!(
        r.stderr.contains("its tokens are empty") && r.stderr.contains("`gemini`"),
        "{r:?}"
    );
    assert_eq!(read_creds(&s), text);
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn invalid_grant_is_a_dead_login_and_the_file_is_left_as_it_was() {
    let s = sandbox();
    secret_config(&s);
    let issued = s.server.issue_login();
    // A refresh token Google no longer knows.
    let text = gemini_json(
        &issued.access_token,
        "1//revoked-elsewhere",
        now_ms() - 1000,
    );
    write_creds(&s, &text);
    let r = run(&s, &["refresh"]);
    assert_eq!(r.code, DEAD, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(
        r.stderr
            .contains("invalid_grant: Token has been expired or revoked.")
            && r.stderr.contains("Log in again with `gemini`")
            && r.stderr.contains(&creds(&s).display().to_string()),
        "{r:?}"
    );
    assert_eq!(read_creds(&s), text);
    let again = run(&s, &["refresh"]);
    assert_eq!(again.code, DEAD);
    assert_eq!(
        s.server.stats().token_requests,
        1,
        "a refused token is not sent again"
    );

    // The same for a 400 invalid_grant injected on a known token.
    write_login(&s, &issued, -1000);
    s.server.push_fault(Fault::InvalidGrant);
    let before = read_creds(&s);
    assert_eq!(run(&s, &["refresh"]).code, DEAD);
    assert_eq!(read_creds(&s), before);
}

#[test]
fn missing_and_malformed_files_exit_78_and_change_nothing() {
    let s = sandbox();
    secret_config(&s);
    let r = run(&s, &["refresh"]);
    assert_eq!(r.code, MISSING_OR_MALFORMED, "{r:?}");
    assert!(
        r.stderr.contains("no Gemini CLI login at") && r.stderr.contains("`gemini`"),
        "{r:?}"
    );
    for (text, needle) in [
        ("[1, 2]", "not a JSON object"),
        ("{\n  \"installed\": {}\n}", "no Gemini CLI login"),
        (
            "{\n  \"access_token\": \"ya29.x\",\n  \"refresh_token\": 7\n}",
            "\"refresh_token\" that is not a string",
        ),
        ("{\n  \"access_token\": \"ya29.x\",", "not valid JSON"),
        ("", "are empty"),
    ] {
        write_creds(&s, text);
        let r = run(&s, &["refresh"]);
        assert_eq!(r.code, MISSING_OR_MALFORMED, "{text}: {r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
        assert!(r.stderr.contains(needle), "{text}: {r:?}");
        assert!(r.stderr.contains("tokenkeeper changed nothing"), "{r:?}");
        assert_eq!(read_creds(&s), text);
        assert_eq!(entries(&s), ["oauth_creds.json"]);
    }
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn a_new_refresh_token_is_saved_when_one_comes_back() {
    let s = with(StandinConfig {
        omit_refresh_token: false,
        ..StandinConfig::google(SECRET)
    });
    secret_config(&s);
    let issued = login(&s, -1000);
    let r = run(&s, &["refresh"]);
    assert_eq!(r.code, 0, "{r:?}");
    let after = creds_json(&s);
    let (access, refresh) = s.server.current_tokens(issued.family).unwrap();
    assert_eq!(after["refresh_token"], refresh.as_str());
    assert_ne!(refresh, issued.refresh_token);
    assert_eq!(after["access_token"], access.as_str());
    let again = run(&s, &["refresh", "--force"]);
    assert_eq!(again.code, 0, "the saved token is the live one: {again:?}");
    assert_eq!(s.server.stats().reused_refresh_tokens, 0);
}

/// Writes a fake Gemini CLI installation under `root` whose source holds `source`.
pub(crate) fn fake_install(root: &Path, relative: &str, source: &str) {
    let file = root.join(relative);
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(file, source).unwrap();
}

#[test]
fn the_client_secret_comes_from_an_installed_gemini_cli_when_the_config_has_none() {
    for relative in [
        "@google/gemini-cli-core/dist/src/code_assist/oauth2.js",
        "@google/gemini-cli/node_modules/@google/gemini-cli-core/dist/src/code_assist/oauth2.js",
        "@google/gemini-cli/bundle/chunk-QX2KJ5.js",
    ] {
        let s = sandbox();
        let npm = s.dir.path().join("npm/lib/node_modules");
        fake_install(
            &npm,
            relative,
            &format!(
                "const OAUTH_CLIENT_ID = '{}';\n// Installed app: not a secret.\nconst OAUTH_CLIENT_SECRET = '{SECRET}';\nconst x = {{ clientSecret: OAUTH_CLIENT_SECRET }};\n",
                tokenkeeper::provider::gemini::DEFAULTS.client_id
            ),
        );
        login(&s, -1000);
        let empty = no_npm(&s);
        let roots = std::env::join_paths([&empty, &npm]).unwrap();
        let out = cmd_in(&s, Path::new(&roots), &["-vv", "refresh"])
            .output()
            .unwrap();
        let r = checked(&s, out);
        assert_eq!(r.code, 0, "{relative}: {r:?}");
        assert!(
            r.stderr.contains("using Gemini CLI's client secret")
                && r.stderr.contains(&npm.display().to_string()),
            "{r:?}"
        );
        assert!(
            s.server.requests()[0]
                .body
                .contains(&format!("client_secret={SECRET}"))
        );
    }
}

#[test]
fn without_a_client_secret_anywhere_the_error_says_how_to_set_it_and_nothing_is_sent() {
    let s = sandbox();
    let text = write_login(&s, &s.server.issue_login(), -1000);
    let r = run(&s, &["refresh"]);
    assert_eq!(r.code, MISSING_OR_MALFORMED, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    let config = s.dir.path().join("config/tokenkeeper/config.toml");
    for needle in [
        "[gemini] sets no client_secret",
        "npm install -g @google/gemini-cli",
        "TOKENKEEPER_NPM_ROOT",
        &format!(
            "add client_secret = \"…\" under [gemini] in {}",
            config.display()
        ),
    ] {
        assert!(r.stderr.contains(needle), "{needle}: {r:?}");
    }
    assert_eq!(s.server.stats().token_requests, 0);
    assert_eq!(read_creds(&s), text);
    assert_eq!(
        entries(&s),
        ["oauth_creds.json"],
        "not even a lock was taken"
    );

    // A fresh login needs no secret: the fast path never looks for one.
    login(&s, 50 * MIN_MS);
    assert_eq!(run(&s, &["refresh"]).code, 0);
}

/// Blocks until some process opens `path` (inotify), at most 20 s.
fn wait_for_open(inotify: i32) {
    let mut fds = [libc::pollfd {
        fd: inotify,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 20_000) };
    assert_eq!(ready, 1, "nobody opened the credentials file");
}

fn watch_opens(path: &Path) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain inotify calls on a descriptor we own and close in the caller.
    unsafe {
        let fd = libc::inotify_init1(libc::IN_CLOEXEC);
        assert!(fd >= 0);
        assert!(libc::inotify_add_watch(fd, name.as_ptr(), libc::IN_OPEN) >= 0);
        fd
    }
}

/// Plays Gemini saving its file: truncate, write `first` bytes of `text`, then, once tokenkeeper
/// has opened the file (and found it empty or cut off), pause and write the rest. Returns
/// tokenkeeper's run.
fn refresh_while_gemini_rewrites(s: &Sandbox, text: &str, first: usize) -> Run {
    let path = creds(s);
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all(&text.as_bytes()[..first]).unwrap();
    let inotify = watch_opens(&path);
    let child = cmd(s, &["-vv", "refresh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_open(inotify);
    // SAFETY: closing the descriptor watch_opens made.
    unsafe { libc::close(inotify) };
    thread::sleep(Duration::from_millis(150));
    file.write_all(&text.as_bytes()[first..]).unwrap();
    drop(file);
    checked(s, child.wait_with_output().unwrap())
}

#[test]
fn an_empty_file_mid_rewrite_is_read_again_not_taken_for_a_logout() {
    let s = sandbox();
    secret_config(&s);
    let issued = s.server.issue_login();
    let text = write_login(&s, &issued, -1000);
    let r = refresh_while_gemini_rewrites(&s, &text, 0);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("is empty or cut off"),
        "the empty file was seen: {r:?}"
    );
    assert!(r.stdout.starts_with("refreshed"), "{r:?}");
    let after = creds_json(&s);
    assert!(
        s.server
            .is_live_access(after["access_token"].as_str().unwrap())
    );
    assert_eq!(after["refresh_token"], issued.refresh_token.as_str());
    assert_eq!(s.server.stats().token_requests, 1);
}

#[test]
fn a_cut_off_file_mid_rewrite_is_read_again_and_never_written_over() {
    let s = sandbox();
    secret_config(&s);
    let issued = s.server.issue_login();
    let text = write_login(&s, &issued, -1000);
    let r = refresh_while_gemini_rewrites(&s, &text, text.len() / 2);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("is empty or cut off"),
        "the half file was seen: {r:?}"
    );
    let after = creds_json(&s);
    assert_eq!(after["x_first"], "kept", "written from the whole file");
    assert_eq!(after["x_last"]["n"].to_string(), "1.50");
    assert!(
        s.server
            .is_live_access(after["access_token"].as_str().unwrap())
    );
}

#[test]
fn a_file_left_cut_off_is_malformed_not_dead_and_left_alone() {
    let s = sandbox();
    secret_config(&s);
    let text = write_login(&s, &s.server.issue_login(), -1000);
    let half = &text[..text.len() / 2];
    write_creds(&s, half);
    for args in [&["refresh"][..], &["status"], &["exec", "--", "true"]] {
        let r = run(&s, args);
        assert_eq!(r.code, MISSING_OR_MALFORMED, "{args:?}: {r:?}");
        assert!(
            !r.stdout.contains("dead") && !r.stderr.contains("dead"),
            "{r:?}"
        );
        assert_eq!(read_creds(&s), half);
    }
    assert_eq!(entries(&s), ["oauth_creds.json"]);
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn twenty_concurrent_refreshes_make_one_request() {
    let s = sandbox();
    secret_config(&s);
    login(&s, -1000);
    let children: Vec<Child> = (0..20)
        .map(|_| {
            cmd(&s, &["refresh"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let r = checked(&s, child.wait_with_output().unwrap());
        assert_eq!(r.code, 0, "{r:?}");
    }
    assert_eq!(s.server.stats().token_requests, 1);
    assert!(
        s.server
            .is_live_access(creds_json(&s)["access_token"].as_str().unwrap())
    );
}

#[test]
fn an_encrypted_or_keychain_login_is_reported_as_not_supported() {
    let s = sandbox();
    secret_config(&s);
    let forced = checked(
        &s,
        cmd(&s, &["refresh"])
            .env("GEMINI_FORCE_ENCRYPTED_FILE_STORAGE", "true")
            .output()
            .unwrap(),
    );
    assert_eq!(forced.code, MISSING_OR_MALFORMED, "{forced:?}");
    assert_eq!(forced.stderr.lines().count(), 1, "{forced:?}");
    assert!(
        forced.stderr.contains("system keychain")
            && forced.stderr.contains("does not support")
            && forced
                .stderr
                .contains("unset GEMINI_FORCE_ENCRYPTED_FILE_STORAGE"),
        "{forced:?}"
    );
    fs::write(s.home().join(".gemini/gemini-credentials.json"), "opaque").unwrap();
    let r = run(&s, &["status"]);
    assert_eq!(r.code, MISSING_OR_MALFORMED, "{r:?}");
    assert!(
        r.stdout.contains("gemini-credentials.json") && r.stdout.contains("does not support"),
        "{r:?}"
    );
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn exec_inject_env_hands_gemini_the_access_token_only() {
    let s = sandbox();
    login(&s, 50 * MIN_MS);
    let seen = s.dir.path().join("seen-token");
    let script =
        r#"printf %s "$GOOGLE_CLOUD_ACCESS_TOKEN" > "$SEEN"; echo "gca=$GOOGLE_GENAI_USE_GCA""#;
    for (inject, gca, gets_token) in [("env", "gca=true", true), ("file", "gca=", false)] {
        let out = cmd(&s, &["exec", "--inject", inject, "--", "sh", "-c", script])
            .env("SEEN", &seen)
            .output()
            .unwrap();
        let r = checked(&s, out);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.stdout.trim(), gca, "{r:?}");
        let token = fs::read_to_string(&seen).unwrap();
        if gets_token {
            assert!(token == creds_json(&s)["access_token"].as_str().unwrap());
        } else {
            assert!(token.is_empty());
        }
    }
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn a_wrong_client_secret_is_a_config_error_not_a_dead_login() {
    let s = sandbox();
    s.config("[gemini]\nclient_secret = \"not-the-secret\"\n");
    login(&s, -1000);
    let before = read_creds(&s);
    let r = run(&s, &["refresh"]);
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stderr.contains("refused the OAuth client"), "{r:?}");
    assert!(r.stderr.contains("client_secret"), "{r:?}");
    assert!(!r.stderr.contains("not-the-secret"), "{r:?}");
    assert_eq!(read_creds(&s), before, "the file was left as it was");
    // Not remembered as dead: with the secret fixed, a plain refresh goes ahead.
    secret_config(&s);
    let r = run(&s, &["refresh"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(s.server.stats().refreshes_ok, 1);
}
