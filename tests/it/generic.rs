//! `[[login]]` tables: another tool's OAuth login in a JSON file of its own shape, described in
//! the config file. One login per expiry unit (ms, s, rfc3339, jwt), each in a file shaped its
//! own way (nested pointers, an array index, an escaped `/`, unknown keys, its own layout), run
//! through fresh, due, dead and malformed against the stand-in; the token request as configured
//! (form body, extra fields, headers, client secret); one request among many processes; status
//! next to Claude Code's login; exec by program name; the daemon; and bad tables refused.
//!
//! Every run here drops `TOKENKEEPER_TOKEN_URL`, so the request goes where the table's
//! `token_url` says.

use crate::util::*;
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};
use tokenkeeper_standin::{Fault, StandinConfig};

const HOUR_MS: i64 = 3_600_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    Ms,
    S,
    Rfc3339,
    Jwt,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::S => "s",
            Unit::Rfc3339 => "rfc3339",
            Unit::Jwt => "jwt",
        }
    }

    /// The pointers to the access token, the refresh token and the expiry in this tool's file.
    fn pointers(self) -> (&'static str, &'static str, Option<&'static str>) {
        match self {
            Unit::Ms => (
                "/auth/oauth/accessToken",
                "/auth/oauth/refreshToken",
                Some("/auth/oauth/expiresAt"),
            ),
            Unit::S => (
                "/profiles/0/creds/access",
                "/profiles/0/creds/refresh",
                Some("/profiles/0/creds/exp"),
            ),
            Unit::Rfc3339 => (
                "/oauth~1v2/access_token",
                "/oauth~1v2/refresh_token",
                Some("/oauth~1v2/expiry"),
            ),
            Unit::Jwt => ("/tokens/access_token", "/tokens/refresh_token", None),
        }
    }

    /// The tool's file holding these values, laid out the way the tool writes it: one line;
    /// four spaces and a final newline; two spaces; two spaces (Codex's own shape).
    fn file_text(self, access: &Value, refresh: &Value, expires_ms: i64) -> String {
        let (a, r) = (access.to_string(), refresh.to_string());
        match self {
            Unit::Ms => format!(
                r#"{{"version":3,"auth":{{"oauth":{{"accessToken":{a},"refreshToken":{r},"expiresAt":{expires_ms}}},"account":{{"email":"dev@example.test"}}}},"settings":{{"theme":"dark","zoom":1.50}}}}"#
            ),
            Unit::S => format!(
                "{{\n    \"profiles\": [\n        {{\n            \"name\": \"default\",\n            \"creds\": {{\n                \"access\": {a},\n                \"exp\": {},\n                \"refresh\": {r}\n            }}\n        }}\n    ],\n    \"updated_by\": \"mytool 2.0\"\n}}\n",
                expires_ms.div_euclid(1000)
            ),
            Unit::Rfc3339 => format!(
                "{{\n  \"oauth/v2\": {{\n    \"token_type\": \"Bearer\",\n    \"access_token\": {a},\n    \"refresh_token\": {r},\n    \"expiry\": \"{}\"\n  }},\n  \"machine\": \"ci-7\"\n}}",
                jiff::Timestamp::from_millisecond(expires_ms).unwrap()
            ),
            Unit::Jwt => format!(
                "{{\n  \"auth_mode\": \"chatgpt\",\n  \"OPENAI_API_KEY\": null,\n  \"tokens\": {{\n    \"id_token\": \"eyJhbGciOiJub25lIn0.e30.c2ln\",\n    \"access_token\": {a},\n    \"refresh_token\": {r},\n    \"account_id\": \"acct-1\"\n  }},\n  \"last_refresh\": \"2026-11-29T15:37:26.902700475Z\"\n}}"
            ),
        }
    }

    /// The expiry a document holds, in epoch ms, read the way the unit says.
    fn expiry_ms(self, doc: &Value) -> i64 {
        let (access, _, expires) = self.pointers();
        let v = expires.map(|p| doc.pointer(p).expect("expiry written").clone());
        match (self, v) {
            (Unit::Ms, Some(v)) => {
                assert!(v.is_i64(), "ms as an integer: {v}");
                v.as_i64().unwrap()
            }
            (Unit::S, Some(v)) => {
                assert!(v.is_i64() && v.as_i64().unwrap() < 10_000_000_000, "s: {v}");
                v.as_i64().unwrap() * 1000
            }
            (Unit::Rfc3339, Some(Value::String(t))) => {
                assert!(t.ends_with('Z'), "rfc3339 in UTC: {t}");
                t.parse::<jiff::Timestamp>().unwrap().as_millisecond()
            }
            (Unit::Jwt, None) => {
                let token = doc.pointer(access).and_then(Value::as_str).unwrap();
                tokenkeeper::oauth::jwt::expiry_ms(token).expect("a JWT with exp")
            }
            (unit, v) => panic!("{unit:?}: unexpected expiry {v:?}"),
        }
    }
}

/// A sandbox with one `[[login]]` of a unit, its file not yet written.
struct Tool {
    s: Sandbox,
    unit: Unit,
    name: String,
    file: PathBuf,
    client_id: String,
}

impl Tool {
    fn new(unit: Unit) -> Tool {
        Tool::with(unit, "", None)
    }

    /// `extra` is more TOML for the table; `server` a stand-in of another shape.
    fn with(unit: Unit, extra: &str, server: Option<StandinConfig>) -> Tool {
        let config = server.unwrap_or_else(|| match unit {
            Unit::Jwt => StandinConfig::openai(),
            _ => StandinConfig::default(),
        });
        let client_id = config.client_id.clone();
        let s = Sandbox::with(config);
        let name = format!("tool-{}", unit.name());
        let file = s.home().join(format!(".{name}/auth.json"));
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        let tool = Tool {
            unit,
            file,
            client_id,
            name,
            s,
        };
        tool.s.config(&tool.table(extra));
        tool
    }

    fn table(&self, extra: &str) -> String {
        let (access, refresh, expires) = self.unit.pointers();
        let expires = expires.map_or(String::new(), |e| format!("expires_at = \"{e}\"\n"));
        format!(
            "[[login]]\nname = \"{}\"\ncredentials = \"{}\"\naccess_token = \"{access}\"\nrefresh_token = \"{refresh}\"\n{expires}expiry_unit = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\n{extra}",
            self.name,
            self.file.display(),
            self.unit.name(),
            self.s.server.token_url(),
            self.client_id,
        )
    }

    /// Writes the login; returns the exact text.
    fn write(&self, access: &str, refresh: &str, expires_ms: i64) -> String {
        let text = self
            .unit
            .file_text(&json!(access), &json!(refresh), expires_ms);
        fs::write(&self.file, &text).unwrap();
        set_mode(&self.file, 0o600);
        text
    }

    /// A login expiring in `in_ms`: for jwt, an access token whose `exp` says so (the stand-in
    /// only checks the refresh token).
    fn write_expiring(&self, refresh: &str, access: &str, in_ms: i64) -> String {
        let at = now_ms() + in_ms;
        match self.unit {
            Unit::Jwt => {
                let token =
                    tokenkeeper::oauth::jwt::unsigned(&json!({"exp": at / 1000, "sub": "u"}));
                self.write(&token, refresh, at)
            }
            _ => self.write(access, refresh, at),
        }
    }

    fn read(&self) -> String {
        fs::read_to_string(&self.file).unwrap()
    }

    fn doc(&self) -> Value {
        serde_json::from_str(&self.read()).unwrap()
    }

    fn tokens(&self) -> (String, String) {
        let (a, r, _) = self.unit.pointers();
        let doc = self.doc();
        let get = |p: &str| doc.pointer(p).and_then(Value::as_str).unwrap().to_string();
        (get(a), get(r))
    }

    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.s.cmd(args);
        c.env_remove("TOKENKEEPER_TOKEN_URL");
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        let run = Run::from(self.cmd(args).output().expect("run tokenkeeper"));
        self.s.assert_no_leak(&run, args.first() == Some(&"token"));
        run
    }

    fn requests(&self) -> u64 {
        self.s.server.stats().token_requests
    }
}

/// Fresh, due, dead and malformed for one unit.
fn lifecycle(unit: Unit) {
    let t = Tool::new(unit);
    let name = t.name.clone();
    let refresh = ["refresh", "--provider", &name];
    let login = t.s.server.issue_login();

    // Fresh: no request, not a byte written.
    let fresh = match unit {
        Unit::Jwt => t.write(&login.access_token, &login.refresh_token, 0),
        _ => t.write(
            &login.access_token,
            &login.refresh_token,
            now_ms() + 8 * HOUR_MS,
        ),
    };
    let run = t.run(&refresh);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("not due"), "{run:?}");
    assert_eq!((t.requests(), t.read()), (0, fresh.clone()));
    let run = t.run(&["status", "--json", "--provider", &name]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["logins"][0]["provider"], name.as_str(), "{run:?}");
    assert_eq!(v["logins"][0]["state"], "fresh", "{run:?}");

    // Due: one request; the new tokens and the expiry in the file's unit; every other byte kept.
    let before = t.write_expiring(&login.refresh_token, &login.access_token, 60_000);
    let run = t.run(&["status", "--provider", &name]);
    assert!(run.stdout.starts_with(&format!("{name}: due")), "{run:?}");
    let run = t.run(&refresh);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("refreshed"), "{run:?}");
    assert_eq!(t.requests(), 1);
    let (access, new_refresh) = t.s.server.current_tokens(login.family).unwrap();
    assert_eq!(t.tokens(), (access.clone(), new_refresh.clone()));
    assert_ne!(new_refresh, login.refresh_token);
    let lifetime_ms = login.expires_in_secs as i64 * 1000;
    let expires = unit.expiry_ms(&t.doc());
    assert!(
        (expires - (now_ms() + lifetime_ms)).abs() < 60_000,
        "{unit:?}: expiry {expires}"
    );
    let old: Value = serde_json::from_str(&before).unwrap();
    let (old_access, _, expiry_ptr) = unit.pointers();
    let mut expected = before
        .replace(old.pointer(old_access).unwrap().as_str().unwrap(), &access)
        .replace(&login.refresh_token, &new_refresh);
    if let Some(p) = expiry_ptr {
        let (was, now) = (old.pointer(p).unwrap(), t.doc().pointer(p).unwrap().clone());
        expected = expected.replacen(&was.to_string(), &now.to_string(), 1);
    }
    assert_eq!(
        t.read(),
        expected,
        "{unit:?}: only the token fields changed"
    );
    let request = &t.s.server.requests()[0];
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&request.body).unwrap();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["grant_type", "refresh_token", "client_id"]);
    assert_eq!(body["client_id"], t.client_id.as_str());
    assert!(
        request
            .header("user-agent")
            .unwrap()
            .starts_with("tokenkeeper/"),
        "{request:?}"
    );
    let run = t.run(&refresh);
    assert!(run.stdout.starts_with("not due"), "{run:?}");
    assert_eq!(t.requests(), 1);

    // Dead: the server rejects the refresh token (exit 77), the file is left as it was.
    let due = t.write_expiring(&new_refresh, &access, 60_000);
    t.s.server.push_fault(Fault::InvalidGrant);
    let run = t.run(&refresh);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(run.stderr.contains("is dead"), "{run:?}");
    assert!(run.stderr.contains("invalid_grant"), "{run:?}");
    assert!(
        run.stderr
            .contains("Log in again with the tool that owns auth.json."),
        "{run:?}"
    );
    assert_eq!((t.read(), t.requests()), (due, 2));
    // No refresh token but an access token: an access-only copy (a mirror's, a fleet
    // machine's), used while it lasts and never refreshed; once expired, exit 77 naming it.
    let copy = t.write_expiring("", &access, 60_000);
    let run = t.run(&refresh);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("not due"), "{run:?}");
    let expired = t.write_expiring("", &access, -1000);
    let run = t.run(&refresh);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(run.stderr.contains("access-only copy"), "{run:?}");
    assert_ne!(copy, expired);
    assert_eq!((t.read(), t.requests()), (expired, 2));
    // Dead: no tokens at all; no request.
    let wiped = t.write("", "", now_ms() + 60_000);
    let run = t.run(&refresh);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(run.stderr.contains("tokens are empty"), "{run:?}");
    assert_eq!((t.read(), t.requests()), (wiped, 2));

    // Malformed: the access token is a number (exit 78), named by its pointer; nothing written.
    let malformed = unit.file_text(&json!(12345), &json!(new_refresh), now_ms() - 1000);
    fs::write(&t.file, &malformed).unwrap();
    let run = t.run(&refresh);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "have a number at {old_access} (access_token), not a string"
        )),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&t.file.display().to_string()),
        "{run:?}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert_eq!((t.read(), t.requests()), (malformed, 2));
    let run = t.run(&["status", "--provider", &name]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stdout.starts_with(&format!("{name}: malformed")),
        "{run:?}"
    );
}

#[test]
fn a_login_in_epoch_milliseconds_is_kept_fresh() {
    lifecycle(Unit::Ms);
}

#[test]
fn a_login_in_epoch_seconds_is_kept_fresh() {
    lifecycle(Unit::S);
}

#[test]
fn a_login_with_an_rfc3339_expiry_is_kept_fresh() {
    lifecycle(Unit::Rfc3339);
}

#[test]
fn a_login_whose_expiry_is_the_jwt_exp_is_kept_fresh() {
    lifecycle(Unit::Jwt);
}

#[test]
fn a_form_body_carries_the_extra_fields_scope_and_headers() {
    let t = Tool::with(
        Unit::Ms,
        "body = \"form\"\nscope = \"offline_access api\"\nuser_agent = \"mytool/2.0\"\nextra_fields = { audience = \"api://tk\", resource = \"x&y=z\" }\nheaders = { \"X-Tool\" = \"tk-test\", Authorization = \"Basic dGs6dGs=\" }\n",
        None,
    );
    let login = t.s.server.issue_login();
    t.write(&login.access_token, &login.refresh_token, now_ms() - 1000);
    let run = t.run(&["refresh", "--provider", &t.name]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(t.requests(), 1);
    let request = &t.s.server.requests()[0];
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(request.header("x-tool"), Some("tk-test"));
    assert_eq!(request.header("authorization"), Some("Basic dGs6dGs="));
    assert_eq!(request.header("user-agent"), Some("mytool/2.0"));
    let expected = format!(
        "grant_type=refresh_token&refresh_token={}&client_id={}&scope=offline_access+api&audience=api%3A%2F%2Ftk&resource=x%26y%3Dz",
        login.refresh_token, t.client_id
    );
    assert_eq!(request.body, expected);
    // The stand-in took the form: the rotated tokens are on disk.
    let (access, refresh) = t.s.server.current_tokens(login.family).unwrap();
    assert_eq!(t.tokens(), (access, refresh));
}

#[test]
fn the_client_secret_is_sent_when_the_table_has_one() {
    let secret = "tk-client-secret-5b1f";
    let server = StandinConfig {
        client_secret: Some(secret.to_string()),
        ..StandinConfig::default()
    };
    let t = Tool::with(Unit::S, "", Some(server));
    let login = t.s.server.issue_login();
    let due = t.write(&login.access_token, &login.refresh_token, now_ms() - 1000);
    // Without it the server refuses the client: a dead login, and nothing written.
    let run = t.run(&["refresh", "--provider", &t.name]);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(run.stderr.contains("invalid_client"), "{run:?}");
    assert_eq!(t.read(), due);

    t.s.config(&t.table(&format!("client_secret = \"{secret}\"\n")));
    let run = t.run(&["refresh", "--force", "--provider", &t.name]);
    assert_eq!(run.code, 0, "{run:?}");
    let body: Value = serde_json::from_str(&t.s.server.requests()[1].body).unwrap();
    assert_eq!(body["client_secret"], secret);
    let (access, refresh) = t.s.server.current_tokens(login.family).unwrap();
    assert_eq!(t.tokens(), (access, refresh));
    let status = t.run(&["status", "--json", "-vv", "--provider", &t.name]);
    for out in [&run.stdout, &run.stderr, &status.stdout, &status.stderr] {
        assert!(!out.contains(secret), "client secret shown: {out}");
    }
    for file in files_under(&t.s.state_dir()) {
        assert!(
            !fs::read_to_string(&file)
                .unwrap_or_default()
                .contains(secret)
        );
    }
}

#[test]
fn ten_concurrent_refreshes_make_one_request() {
    let t = Tool::new(Unit::Rfc3339);
    let login = t.s.server.issue_login();
    t.write(&login.access_token, &login.refresh_token, now_ms() - 1000);
    let children: Vec<Child> = (0..10)
        .map(|_| {
            t.cmd(&["refresh", "--provider", &t.name])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| Run::from(c.wait_with_output().unwrap()))
        .collect();
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
        t.s.assert_no_leak(run, false);
    }
    let stats = t.s.server.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0)
    );
    let refreshed = runs.iter().filter(|r| r.stdout.starts_with("refreshed"));
    assert_eq!(refreshed.count(), 1);
    let (access, _) = t.tokens();
    assert!(t.s.server.is_live_access(&access));
}

#[test]
fn status_lists_the_login_next_to_claude_codes() {
    let t = Tool::new(Unit::S);
    t.s.login(8 * HOUR_MS);
    let login = t.s.server.issue_login();
    t.write(
        &login.access_token,
        &login.refresh_token,
        now_ms() + 30 * 60_000,
    );
    let run = t.run(&["status", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let logins: Vec<(&str, &str, &str)> = v["logins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["provider"].as_str().unwrap(),
                l["state"].as_str().unwrap(),
                l["credentials"].as_str().unwrap(),
            )
        })
        .collect();
    let file = t.file.display().to_string();
    let claude = t.s.creds().display().to_string();
    assert_eq!(
        logins,
        [
            ("claude", "fresh", claude.as_str()),
            ("tool-s", "fresh", file.as_str())
        ]
    );
    // With its own min_ttl, 30 minutes left is due.
    t.s.config(&t.table("min_ttl = \"1h\"\n"));
    let run = t.run(&["status"]);
    assert!(run.stdout.starts_with("LOGIN"), "{run:?}");
    let row = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("claude ").contains("fresh"), "{run:?}");
    assert!(row("tool-s ").contains("due"), "{run:?}");
    assert!(run.stdout.contains(&format!("tool-s: {file}")), "{run:?}");
    assert_eq!(t.requests(), 0);
}

#[test]
fn exec_picks_the_login_by_the_program_name_and_hands_it_the_token() {
    let t = Tool::with(Unit::Ms, "env = \"TOOL_TOKEN\"\n", None);
    let login = t.s.server.issue_login();
    t.write(&login.access_token, &login.refresh_token, now_ms() + 60_000);
    // A stand-in for the tool, named as the login: it finds its token in the file it is given.
    let bin = t.s.dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let program = bin.join(&t.name);
    fs::write(
        &program,
        "#!/bin/sh\ngrep -q \"\\\"$TOOL_TOKEN\\\"\" \"$1\" && echo \"the token is the file's\"\n",
    )
    .unwrap();
    set_mode(&program, 0o755);
    let file = t.file.display().to_string();
    let program = program.display().to_string();
    let run = t.run(&["exec", "--inject", "env", "--", &program, &file]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "the token is the file's\n", "{run:?}");
    assert_eq!(t.requests(), 1, "refreshed first: 1 minute left");
    let (access, _) = t.s.server.current_tokens(login.family).unwrap();
    assert_eq!(t.tokens().0, access);

    t.s.config(&t.table(""));
    let run = t.run(&["exec", "--inject", "env", "--", &program, &file]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("set env = \"VAR\""), "{run:?}");
}

#[test]
fn the_daemon_keeps_a_login_table_fresh() {
    let server = StandinConfig {
        access_ttl_secs: 4,
        ..StandinConfig::default()
    };
    let t = Tool::with(Unit::Rfc3339, "", Some(server));
    let login = t.s.server.issue_login();
    let first = t.write(&login.access_token, &login.refresh_token, now_ms() + 4000);
    // Tokens of 4 s against the table's default margin of 15 min would be due as they come (and
    // refreshed a minute apart): the margin these seconds-long tokens are kept with is stated.
    let child = t
        .cmd(&["daemon", "--refresh-before", "2s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while t.s.server.stats().refreshes_ok < 2 && start.elapsed() < Duration::from_secs(20) {
        sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let run = Run::from(child.wait_with_output().unwrap());
    t.s.assert_no_leak(&run, false);
    let stats = t.s.server.stats();
    assert!(stats.refreshes_ok >= 2, "{stats:?} {run:?}");
    assert_eq!(stats.reused_refresh_tokens, 0);
    assert!(
        run.stderr.contains(&t.file.display().to_string()),
        "{run:?}"
    );
    let (access, refresh) = t.s.server.current_tokens(login.family).unwrap();
    assert_eq!(t.tokens(), (access, refresh));
    let doc = t.doc();
    assert_eq!(doc["machine"], "ci-7");
    assert_eq!(doc["oauth/v2"]["token_type"], "Bearer");
    assert_ne!(t.read(), first);
}

/// Runs to completion, or fails the test after 10 s (a daemon that started would run on).
fn run_briefly(t: &Tool, args: &[&str]) -> Run {
    let mut child = t
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{args:?} still running after 10 s");
        }
        sleep(Duration::from_millis(20));
    }
    let run = Run::from(child.wait_with_output().unwrap());
    t.s.assert_no_leak(&run, false);
    run
}

/// One entry of a folder as anyone could notice a change to it.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut all: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap_or_default(),
                meta.modified().unwrap(),
            )
        })
        .collect();
    all.sort();
    all
}

#[test]
fn bad_tables_are_refused_with_exit_78_and_change_nothing() {
    let t = Tool::new(Unit::Ms);
    t.s.login(-1000);
    let login = t.s.server.issue_login();
    t.write(&login.access_token, &login.refresh_token, now_ms() - 1000);
    let good = t.table("");
    let config_path = t.s.dir.path().join("config/tokenkeeper/config.toml");
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("expiry_unit = \"ms\"", "expiry_unit = \"minutes\""),
            "[[login]] \"tool-ms\": expiry_unit = \"minutes\" is not one of ms, s, rfc3339, jwt",
        ),
        (
            good.replace("expires_at = \"/auth/oauth/expiresAt\"\n", ""),
            "[[login]] \"tool-ms\": expires_at is missing",
        ),
        (
            good.replace("\"/auth/oauth/accessToken\"", "\"auth.oauth.accessToken\""),
            "access_token = \"auth.oauth.accessToken\" is not a JSON pointer",
        ),
        (
            format!("{good}body = \"multipart\"\n"),
            "body = \"multipart\" is not json or form",
        ),
        (
            good.replace(&t.s.server.token_url(), "localhost:1/token"),
            "token_url = \"localhost:1/token\" is not an http(s) URL",
        ),
        (
            good.replace("name = \"tool-ms\"", "name = \"claude\""),
            "[[login]] \"claude\": name = \"claude\" is a built-in provider",
        ),
        (
            format!("{good}\n{good}"),
            "two [[login]] tables are named \"tool-ms\"",
        ),
        (
            format!("{good}headers = {{ \"Content-Type\" = \"text/plain\" }}\n"),
            "headers.Content-Type: tokenkeeper sets this header itself",
        ),
        (format!("{good}expiry = \"ms\"\n"), "unknown field `expiry`"),
        (
            good.replace(&t.file.display().to_string(), "~/.tool-ms/auth.json"),
            "tokenkeeper does not expand ~",
        ),
    ];
    let creds_folder = t.file.parent().unwrap().to_path_buf();
    let claude_folder = t.s.creds().parent().unwrap().to_path_buf();
    let before = (snapshot(&creds_folder), snapshot(&claude_folder));
    for (toml, needle) in &cases {
        t.s.config(toml);
        for args in [
            &["status"][..],
            &["refresh", "--provider", "tool-ms"],
            &["refresh"],
            &["daemon"],
        ] {
            let run = run_briefly(&t, args);
            assert_eq!(run.code, 78, "{args:?} {needle}: {run:?}");
            assert!(
                run.stderr.contains(needle),
                "{args:?} want {needle:?}: {run:?}"
            );
            assert!(
                run.stderr.starts_with(&format!(
                    "tokenkeeper: error: config file {}: ",
                    config_path.display()
                )),
                "{run:?}"
            );
            assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
            assert_eq!(run.stdout, "", "{run:?}");
        }
    }
    assert_eq!((snapshot(&creds_folder), snapshot(&claude_folder)), before);
    assert_eq!(t.requests(), 0);
    assert!(!t.s.state_dir().exists());
}
