//! The refresh protocol against a strict server: rotation, the fast path, one refresh among many
//! processes, Claude Code's locks, retries, rejection, interruption and failed saves.

use crate::util::*;
use std::fs;
use std::process::{Child, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};
use tokenkeeper::lock::dir_lock::{Identity, OwnerRecord};
use tokenkeeper_standin::Fault;

const HOUR_MS: i64 = 3_600_000;

fn spawn(sandbox: &Sandbox, args: &[&str]) -> Child {
    sandbox
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn finish(sandbox: &Sandbox, child: Child) -> Run {
    let run = Run::from(child.wait_with_output().expect("wait"));
    sandbox.assert_no_leak(&run, false);
    run
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, sig) };
}

#[test]
fn refresh_rotates_tokens_and_keeps_every_other_byte() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    let before = format!(
        r#"{{"first":{{"n":1.50,"e":"\u00e9"}},"claudeAiOauth":{{"accessToken":"{}","refreshToken":"{}","expiresAt":{},"scopes":{scopes},"subscriptionType":"max","rateLimitTier":null,"accountUuid":"u-1"}},"mcpOAuth":{{"srv":{{"accessToken":"other"}}}},"zzz":[1,2,3]}}"#,
        login.access_token,
        login.refresh_token,
        now_ms() - 1000,
        scopes = serde_json::json!(
            tokenkeeper::provider::claude::DEFAULTS
                .scope
                .split(' ')
                .collect::<Vec<_>>()
        ),
    );
    fs::write(s.creds(), &before).unwrap();
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("refreshed: access token expires"),
        "{run:?}"
    );

    let after = s.creds_json();
    let o = &after["claudeAiOauth"];
    let (access, refresh) = (
        o["accessToken"].as_str().unwrap(),
        o["refreshToken"].as_str().unwrap(),
    );
    assert!(s.server.is_live_access(access));
    assert_ne!(refresh, login.refresh_token);
    let expires = o["expiresAt"].as_i64().unwrap();
    assert!((expires - (now_ms() + 8 * HOUR_MS)).abs() < 60_000);
    let expected = before
        .replace(&login.access_token, access)
        .replace(&login.refresh_token, refresh)
        .replace(
            &format!("\"expiresAt\":{}", before_expiry(&before)),
            &format!("\"expiresAt\":{expires}"),
        );
    assert_eq!(s.read_creds(), expected);
    assert_eq!(s.server.stats().token_requests, 1);

    let req = &s.server.requests()[0];
    assert_eq!(req.header("user-agent"), Some("axios/1.15.2"));
    let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(body["grant_type"], "refresh_token");
    assert_eq!(body["client_id"], "9d1c250a-e61b-44d9-88ed-5944d1962f5e");
    assert!(body["scope"].as_str().unwrap().contains("user:inference"));
}

fn before_expiry(text: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["claudeAiOauth"]["expiresAt"].as_i64().unwrap()
}

#[test]
fn fast_path_makes_no_request_and_writes_nothing() {
    let s = Sandbox::new();
    s.login(5 * HOUR_MS);
    let mtime = fs::metadata(s.creds()).unwrap().modified().unwrap();
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("not due"), "{run:?}");
    assert_eq!(s.server.stats().token_requests, 0);
    assert_eq!(fs::metadata(s.creds()).unwrap().modified().unwrap(), mtime);
    assert!(!s.state_dir().exists(), "the fast path writes no state");
    assert_eq!(
        fs::read_dir(s.home().join(".claude")).unwrap().count(),
        1,
        "no lock files"
    );
}

#[test]
fn min_ttl_and_force_decide_when_to_refresh() {
    let s = Sandbox::new();
    s.login(2 * HOUR_MS);
    assert!(
        s.run(&["refresh", "--min-ttl", "1h"])
            .stdout
            .starts_with("not due")
    );
    let run = s.run(&["refresh", "--min-ttl", "3h", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(v["action"], "refreshed", "{run:?}");
    assert_eq!(v["token_requests"], 1);
    let run = s.run(&["refresh", "--force"]);
    assert!(run.stdout.starts_with("refreshed"), "{run:?}");
    assert_eq!(s.server.stats().token_requests, 2);
    assert_eq!(s.server.stats().revoked_families, 0);
}

#[test]
fn fifty_concurrent_refreshes_make_exactly_one_token_request() {
    let s = Sandbox::new();
    s.login(-1000);
    let children: Vec<Child> = (0..50).map(|_| spawn(&s, &["refresh"])).collect();
    let runs: Vec<Run> = children.into_iter().map(|c| finish(&s, c)).collect();
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
    }
    let stats = s.server.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(stats.revoked_families, 0);
    assert_eq!(stats.reused_refresh_tokens, 0);
    let refreshed = runs
        .iter()
        .filter(|r| r.stdout.starts_with("refreshed"))
        .count();
    let others = runs
        .iter()
        .filter(|r| r.stdout.starts_with("adopted") || r.stdout.starts_with("not due"))
        .count();
    assert_eq!((refreshed, others), (1, 49));
    let access = s.creds_json()["claudeAiOauth"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(s.server.is_live_access(&access));
    assert!(lock_dirs(&s).is_empty(), "{:?}", lock_dirs(&s));
}

/// A storm at expiry with Claude Code itself in it: tokenkeeper's refreshes and Claude-like
/// sessions that refresh by Claude's own lock rules, all at once, against an endpoint that
/// answers in 200 ms. Whoever goes first refreshes; everyone else adopts: one token request, no
/// refresh token presented twice, and every process ends with the login in hand.
#[test]
fn a_storm_with_claude_code_in_it_makes_exactly_one_token_request() {
    let s = Sandbox::new();
    s.login(-1000);
    s.server
        .set_default_fault(Some(Fault::Delay(Duration::from_millis(200))));
    let mut claudes: Vec<Child> = (0..3)
        .map(|_| {
            std::process::Command::new(claude_like())
                .args(["--credentials", s.creds().to_str().unwrap()])
                .args(["--token-url", &s.server.token_url()])
                .args(["--api-url", &s.server.api_url()])
                .arg("--once")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("claude_like")
        })
        .collect();
    let children: Vec<Child> = (0..30).map(|_| spawn(&s, &["refresh"])).collect();
    let runs: Vec<Run> = children.into_iter().map(|c| finish(&s, c)).collect();
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
    }
    for claude in claudes.drain(..) {
        let out = Run::from(claude.wait_with_output().unwrap());
        assert_eq!(out.code, 0, "a Claude-like session failed: {out:?}");
    }
    let stats = s.server.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(stats.reused_refresh_tokens, 0, "{stats:?}");
    assert_eq!(stats.revoked_families, 0, "{stats:?}");
    let access = s.creds_json()["claudeAiOauth"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(s.server.is_live_access(&access));
    assert!(lock_dirs(&s).is_empty(), "{:?}", lock_dirs(&s));
}

#[test]
fn waits_for_claude_code_holding_its_refresh_lock_then_adopts_its_tokens() {
    let s = Sandbox::new();
    let login = s.login(-1000);
    let lock = s.home().join(".claude/.oauth_refresh.lock");
    fs::create_dir(&lock).unwrap();
    let child = spawn(&s, &["refresh"]);
    sleep(Duration::from_millis(1500));
    // Claude refreshes on its own while holding the lock, touching it as it goes.
    fs::File::open(&lock)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let endpoint =
        tokenkeeper::oauth::endpoint::TokenEndpoint::new(&s.server.token_url(), "claude-cli/2.1");
    let request = tokenkeeper::provider::TokenRequest {
        body: tokenkeeper::provider::Body::Json(tokenkeeper::provider::claude::token_request(
            &tokenkeeper::secret::Secret::new(login.refresh_token.clone()),
            tokenkeeper::provider::claude::DEFAULTS.client_id,
            tokenkeeper::provider::claude::DEFAULTS.scope,
        )),
        headers: Vec::new(),
    };
    let tokenkeeper::oauth::endpoint::Reply::Tokens(t) = endpoint.post(
        &request,
        tokenkeeper::provider::RejectionRule::OAuth,
        Duration::from_secs(5),
    ) else {
        panic!("Claude's own refresh failed")
    };
    let new_text = claude_json(
        t.access_token.expose(),
        t.refresh_token.as_ref().unwrap().expose(),
        now_ms() + 8 * HOUR_MS,
    );
    fs::write(s.creds(), &new_text).unwrap();
    fs::remove_dir(&lock).unwrap();

    let run = finish(&s, child);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("waiting for Claude Code's refresh lock"),
        "{run:?}"
    );
    assert!(run.stdout.starts_with("adopted"), "{run:?}");
    assert_eq!(
        s.server.stats().token_requests,
        1,
        "only Claude's own request"
    );
    assert_eq!(s.read_creds(), new_text);
}

#[test]
fn a_claude_lock_whose_owner_died_is_taken_over() {
    let s = Sandbox::new();
    s.login(-1000);
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    // Claude took both of its locks, wrote its owner record, and was killed.
    let lock = s.home().join(".claude/.oauth_refresh.lock");
    let legacy = s.home().join(".claude.lock");
    fs::create_dir(&lock).unwrap();
    fs::create_dir(&legacy).unwrap();
    let birth = |p: &std::path::Path| Identity::of(p).unwrap().birth_ms();
    let Some(lock_birth) = birth(&lock) else {
        eprintln!("no birth times on this file system; Claude never takes over here either");
        return;
    };
    OwnerRecord::for_pid(dead_pid, lock_birth, birth(&legacy))
        .write(&s.home().join(".claude/.oauth_refresh.lock.owner"))
        .unwrap();
    let start = Instant::now();
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("which is gone"), "{run:?}");
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(lock_dirs(&s).is_empty(), "{:?}", lock_dirs(&s));
    assert!(!s.home().join(".claude/.oauth_refresh.lock.owner").exists());
}

#[test]
fn while_refreshing_we_leave_an_owner_record_claude_can_read() {
    let s = Sandbox::new();
    s.login(-1000);
    s.server
        .push_fault(Fault::Delay(Duration::from_millis(800)));
    let child = spawn(&s, &["refresh"]);
    let record = s.home().join(".claude/.oauth_refresh.lock.owner");
    wait_for("the request", Duration::from_secs(10), || {
        s.server.stats().token_requests == 1
    });
    let lock = s.home().join(".claude/.oauth_refresh.lock");
    if let Some(birth) = Identity::of(&lock).unwrap().birth_ms() {
        let owner = OwnerRecord::read(&record).expect("owner record");
        assert_eq!(owner.pid, child.id());
        assert_eq!(owner.lock_birthtime_ms, birth);
        assert!(owner.legacy_lock_birthtime_ms.is_some());
        assert!(!owner.holder_is_gone());
        let text = fs::read_to_string(&record).unwrap();
        assert!(
            text.starts_with(r#"{"pid":"#) && text.contains(r#""pidDomain":"linux:"#),
            "{text}"
        );
    }
    let run = finish(&s, child);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!record.exists(), "removed on release");
}

#[test]
fn a_live_lock_held_too_long_exits_75_and_changes_nothing() {
    let s = Sandbox::new();
    s.login(-1000);
    s.config("[claude]\nlock_timeout = \"2s\"\n");
    let before = s.read_creds();
    let lock = s.home().join(".claude/.oauth_refresh.lock");
    fs::create_dir(&lock).unwrap();
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 75, "{run:?}");
    assert!(run.stderr.contains(".oauth_refresh.lock"), "{run:?}");
    assert!(lock.exists(), "a live lock is never removed");
    assert_eq!(s.read_creds(), before);
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn transient_failures_are_retried_until_one_succeeds() {
    let s = Sandbox::new();
    s.login(-1000);
    s.server.push_fault(Fault::Status(503));
    s.server.push_fault(Fault::RateLimited {
        retry_after_secs: Some(1),
    });
    s.server.push_fault(Fault::Reset);
    s.server.push_fault(Fault::Html);
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("refreshed"), "{run:?}");
    assert!(run.stderr.contains("retrying in"), "{run:?}");
    assert_eq!(s.server.stats().token_requests, 5);
    assert_eq!(s.server.stats().revoked_families, 0);
}

#[test]
fn an_endpoint_that_stays_down_exits_69_and_leaves_the_file() {
    let s = Sandbox::new();
    s.login(-1000);
    s.config("[claude]\nretry_total = \"3s\"\nrequest_timeout = \"1s\"\n");
    let before = s.read_creds();
    s.server.set_default_fault(Some(Fault::Status(502)));
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 69, "{run:?}");
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("tokenkeeper: error: the token endpoint"),
        "{run:?}"
    );
    assert!(last.contains("HTTP 502"), "{run:?}");
    assert!(s.server.stats().token_requests >= 2);
    assert_eq!(s.read_creds(), before);

    s.server
        .set_default_fault(Some(Fault::Hang(Duration::from_secs(5))));
    let start = Instant::now();
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(run.stderr.contains("timeout"), "{run:?}");
    assert!(start.elapsed() < Duration::from_secs(6));
    assert_eq!(s.read_creds(), before);
}

#[test]
fn a_rejected_refresh_token_is_dead_and_the_file_is_left_as_it_was() {
    let s = Sandbox::new();
    s.login(-1000);
    let before = s.read_creds();
    s.server.push_fault(Fault::InvalidGrant);
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 77, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.contains("invalid_grant") && run.stderr.contains("claude /login"),
        "{run:?}"
    );
    assert_eq!(s.read_creds(), before);

    let status = s.run(&["status", "--json"]);
    assert_eq!(status.code, 77, "{status:?}");
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["logins"][0]["state"], "dead");
    assert!(
        v["logins"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid_grant")
    );

    let again = s.run(&["refresh"]);
    assert_eq!(again.code, 77, "{again:?}");
    assert_eq!(
        s.server.stats().token_requests,
        1,
        "a known-dead token is not sent again"
    );
    let forced = s.run(&["refresh", "--force"]);
    assert_eq!(forced.code, 0, "the server only refused once: {forced:?}");
}

#[test]
fn token_prints_a_live_access_token_and_nothing_else() {
    let s = Sandbox::new();
    s.login(-1000);
    let run = s.run(&["token"]);
    assert_eq!(run.code, 0, "{run:?}");
    let token = run.stdout.strip_suffix('\n').unwrap();
    assert!(s.server.is_live_access(token), "{run:?}");
    assert!(!token.contains('\n'));
    let again = s.run(&["token"]);
    assert_eq!(again.stdout, run.stdout);
    assert_eq!(s.server.stats().token_requests, 1);
}

#[test]
fn a_symlinked_credentials_file_is_written_through_to_its_target() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    let real_dir = s.dir.path().join("vault");
    fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("claude.json");
    fs::write(
        &real,
        claude_json(&login.access_token, &login.refresh_token, now_ms() - 1),
    )
    .unwrap();
    std::os::unix::fs::symlink(&real, s.creds()).unwrap();
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        fs::symlink_metadata(s.creds())
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&real).unwrap()).unwrap();
    assert!(
        s.server
            .is_live_access(v["claudeAiOauth"]["accessToken"].as_str().unwrap())
    );
}

#[test]
fn sigterm_during_a_request_in_flight_still_saves_the_new_tokens() {
    let s = Sandbox::new();
    let login = s.login(-1000);
    s.server
        .push_fault(Fault::Delay(Duration::from_millis(1500)));
    let child = spawn(&s, &["refresh"]);
    wait_for("the request", Duration::from_secs(10), || {
        s.server.stats().token_requests == 1
    });
    signal(&child, libc::SIGTERM);
    let run = finish(&s, child);
    assert_eq!(run.code, 128 + libc::SIGTERM, "{run:?}");
    assert!(
        run.stderr.contains("finishing the token request in flight"),
        "{run:?}"
    );
    let v = s.creds_json();
    assert_ne!(
        v["claudeAiOauth"]["refreshToken"],
        login.refresh_token.as_str()
    );
    assert!(
        s.server
            .is_live_access(v["claudeAiOauth"]["accessToken"].as_str().unwrap())
    );
    assert!(lock_dirs(&s).is_empty(), "{:?}", lock_dirs(&s));
}

#[test]
fn sigint_while_waiting_for_a_lock_exits_and_releases_what_it_holds() {
    let s = Sandbox::new();
    s.login(-1000);
    let storage = s.home().join(".claude/.storage-write.lock");
    let legacy = s.home().join(".claude.lock");
    fs::create_dir(&legacy).unwrap();
    let child = spawn(&s, &["refresh"]);
    let ours = s.home().join(".claude/.oauth_refresh.lock");
    wait_for("the first lock", Duration::from_secs(10), || ours.exists());
    signal(&child, libc::SIGINT);
    let run = finish(&s, child);
    assert_eq!(run.code, 130, "{run:?}");
    assert!(!ours.exists(), "our lock is released on SIGINT");
    assert!(legacy.exists(), "the lock we did not take is left alone");
    assert!(!storage.exists());
}

#[test]
fn sigkill_at_random_moments_never_corrupts_the_file_or_leaves_a_lock() {
    let s = Sandbox::new();
    for round in 0..12u64 {
        s.login(-1000);
        if round % 2 == 0 {
            s.server
                .push_fault(Fault::Delay(Duration::from_millis(fastrand::u64(0..200))));
        }
        let child = spawn(&s, &["refresh"]);
        sleep(Duration::from_millis(fastrand::u64(0..120)));
        signal(&child, libc::SIGKILL);
        let _ = child.wait_with_output();
        let text = s.read_creds();
        serde_json::from_str::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("round {round}: unparseable file ({e}): {text}"));
        let start = Instant::now();
        let run = s.run(&["refresh", "--force"]);
        // 77 only when the kill landed after the server rotated and before the save.
        assert!(run.code == 0 || run.code == 77, "round {round}: {run:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "round {round}: waited on a stale lock: {run:?}"
        );
        assert!(
            lock_dirs(&s).is_empty(),
            "round {round}: {:?}",
            lock_dirs(&s)
        );
        let leftovers: Vec<_> = fs::read_dir(s.home().join(".claude"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(
            leftovers.is_empty(),
            "round {round}: temp files left: {:?} {run:?}",
            leftovers.iter().map(|e| e.file_name()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_failed_save_keeps_the_tokens_in_a_recovery_file_and_the_next_run_restores_them() {
    let s = Sandbox::new();
    let login = s.login(-1000);
    let before = s.read_creds();
    let (child, folder) = refresh_losing_the_folder_mid_request(&s);
    let run = finish(&s, child);
    set_mode(&folder, 0o755);
    if !is_root() && unsafe { libc::geteuid() } == 0 {
        return;
    }
    assert_eq!(run.code, 74, "{run:?}");
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.contains("recovery") && last.contains("tokenkeeper refresh"),
        "{run:?}"
    );
    assert_eq!(s.read_creds(), before, "the file is left whole");
    let recovery = files_under(&s.state_dir().join("recovery"));
    assert_eq!(recovery.len(), 1);
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&recovery[0]).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let status = s.run(&["status"]);
    assert!(status.stdout.contains("recovery"), "{status:?}");

    let mut cmd = s.cmd(&["refresh"]);
    as_nobody(&mut cmd);
    let run = Run::from(cmd.output().unwrap());
    s.assert_no_leak(&run, false);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("restored"), "{run:?}");
    let v = s.creds_json();
    assert_ne!(
        v["claudeAiOauth"]["refreshToken"],
        login.refresh_token.as_str()
    );
    assert!(
        s.server
            .is_live_access(v["claudeAiOauth"]["accessToken"].as_str().unwrap())
    );
    assert_eq!(
        s.server.stats().token_requests,
        1,
        "no second request was needed"
    );
    assert!(files_under(&s.state_dir().join("recovery")).is_empty());
}

#[test]
fn a_loose_credentials_file_is_warned_about_once_and_saved_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::new();
    s.login(-1000);
    set_mode(&s.creds(), 0o644);
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    let warnings = run
        .stderr
        .lines()
        .filter(|l| l.contains("chmod 600"))
        .count();
    assert_eq!(warnings, 1, "{run:?}");
    let mode = fs::metadata(s.creds()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
