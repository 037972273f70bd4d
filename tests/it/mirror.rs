//! Access-only copies of a login on one machine (`[[mirror]]`, `--mirror`): ten agents each
//! reading its own copy while one daemon refreshes, copies that are never a source, folder
//! patterns, each provider's shape, owner and mode, the alert for a copy that cannot be
//! written, `status`, and `exec` run against a copy.

use crate::util::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::Duration;
use tokenkeeper_standin::StandinConfig;

/// An agent's config folder with a copy that holds keys of its own (and an old token).
fn agent(s: &Sandbox, name: &str) -> PathBuf {
    let folder = s.dir.path().join("agents").join(name).join(".claude");
    fs::create_dir_all(&folder).unwrap();
    folder.join(".credentials.json")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Reads a copy as its consumer does, failing the test if it ever holds a refresh token.
fn copy_access(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let oauth = &doc["claudeAiOauth"];
    if oauth.is_null() {
        return String::new();
    }
    assert_eq!(
        oauth["refreshToken"].as_str(),
        Some(""),
        "a copy held a refresh token"
    );
    oauth["accessToken"].as_str().unwrap_or("").to_string()
}

/// The lag figures the daemon logged, first copy and last: `wrote N copies A-B ms after its
/// file was saved`.
fn lags(stderr: &str) -> Vec<(u64, u64)> {
    stderr
        .lines()
        .filter_map(|l| {
            l.split_once(" ms after its file was saved")?
                .0
                .rsplit(' ')
                .next()
        })
        .filter_map(|range| {
            let (a, b) = range.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

#[test]
fn ten_copies_keep_ten_agents_working_on_one_refresh_per_token() {
    let s = Sandbox::with(StandinConfig {
        access_ttl_secs: 6,
        ..StandinConfig::default()
    });
    s.login(6000);
    s.server.set_api_delay(Duration::from_millis(100));
    let copies: Vec<PathBuf> = (0..10).map(|i| agent(&s, &format!("a{i}"))).collect();
    for (i, path) in copies.iter().enumerate() {
        // Each agent's file holds keys of its own, one inside the login's object.
        let text = format!(
            r#"{{"mcpOAuth":{{"agent":{i},"n":1.50}},"claudeAiOauth":{{"accessToken":"","refreshToken":"","expiresAt":0,"agentNote":"a{i}"}}}}"#
        );
        fs::write(path, text).unwrap();
    }
    let pattern = format!(
        "{}/agents/*/.claude/.credentials.json",
        s.dir.path().display()
    );
    s.config(&format!(
        "[[mirror]]\nlogin = \"claude\"\npath = \"{pattern}\"\n"
    ));
    let d = spawn_daemon(&s, &["--refresh-before", "3s"]);
    wait_for("ten copies", Duration::from_secs(10), || {
        copies.iter().all(|p| !copy_access(p).is_empty())
    });

    let stop_clients = Arc::new(AtomicBool::new(false));
    let server = Arc::new(&s.server);
    let results: Vec<(u32, u32)> = std::thread::scope(|scope| {
        let handles: Vec<_> = copies
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let (stop, server) = (Arc::clone(&stop_clients), Arc::clone(&server));
                scope.spawn(move || {
                    let (mut calls, mut failures) = (0, 0);
                    while !stop.load(Ordering::SeqCst) {
                        calls += 1;
                        if !claude_like_call(&server, || copy_access(path)) {
                            failures += 1;
                        }
                        sleep(Duration::from_millis(200 + 20 * i as u64));
                    }
                    (calls, failures)
                })
            })
            .collect();
        sleep(Duration::from_secs(20));
        stop_clients.store(true, Ordering::SeqCst);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let (calls, failures): (u32, u32) = results
        .iter()
        .fold((0, 0), |(c, f), (c2, f2)| (c + c2, f + f2));
    assert_eq!(
        failures, 0,
        "{failures} of {calls} agent calls failed: {run:?}"
    );
    let stats = s.server.stats();
    // 6 s tokens refreshed 3 s (plus jitter) before expiry for 20 s: one request per token.
    assert!((5..=9).contains(&stats.token_requests), "{stats:?} {run:?}");
    assert_eq!(stats.refreshes_ok, stats.token_requests, "{stats:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0)
    );
    // The client retries a 401 (up to 3 times, 100 ms apart, reading its copy again each time,
    // as Claude Code does), which would hide a copy that lags: so every call must have got its
    // one 200, and a 401 can only be a call that was in flight (or read its copy) in the moment
    // between a refresh and the copy's write, at most one per agent per refresh.
    assert_eq!(stats.api_ok, u64::from(calls), "{stats:?}");
    assert!(
        stats.api_unauthorized <= 10 * stats.token_requests,
        "{} refused calls for {} refreshes: {stats:?}",
        stats.api_unauthorized,
        stats.token_requests
    );
    let owner = s.creds_json();
    for (i, path) in copies.iter().enumerate() {
        let copy = json(path);
        assert_eq!(copy["mcpOAuth"]["agent"], i);
        assert_eq!(copy["claudeAiOauth"]["agentNote"], format!("a{i}"));
        assert_eq!(copy["claudeAiOauth"]["refreshToken"], "");
        assert_eq!(
            copy["claudeAiOauth"]["accessToken"],
            owner["claudeAiOauth"]["accessToken"]
        );
        assert_eq!(
            copy["claudeAiOauth"]["scopes"],
            owner["claudeAiOauth"]["scopes"]
        );
        let text = fs::read_to_string(path).unwrap();
        assert!(text.contains(r#""n":1.50"#), "kept byte for byte: {text}");
    }
    let lags = lags(&run.stderr);
    assert!(!lags.is_empty(), "{run:?}");
    // The figure, not a target: how long after the owner's save the first and the last of the
    // ten copies were in place, at each save.
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let first = median(lags.iter().map(|l| l.0).collect());
    let last = median(lags.iter().map(|l| l.1).collect());
    eprintln!(
        "copy lag after each of {} saves (ms, min/median/max): first copy {first:?}, last of 10 copies {last:?}; {calls} agent calls, 0 failed, {} API answers 401 (each retried with the copy read again), {} token requests",
        lags.len(),
        stats.api_unauthorized,
        stats.token_requests
    );
}

#[test]
fn a_copy_that_is_the_logins_own_file_or_holds_a_login_of_its_own_is_refused() {
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let own = s.read_creds();
    let link = s.dir.path().join("link.json");
    std::os::unix::fs::symlink(s.creds(), &link).unwrap();
    let theirs = agent(&s, "b1");
    let other = s.server.issue_login();
    let their_text = claude_json(&other.access_token, &other.refresh_token, now_ms() + 60_000);
    fs::write(&theirs, &their_text).unwrap();
    for (path, words) in [
        (s.creds(), "own file"),
        (link.clone(), "own file"),
        (theirs.clone(), "refresh token of its own"),
    ] {
        let flag = format!("claude={}", path.display());
        let run = s.run(&["daemon", "--mirror", &flag]);
        assert_eq!(run.code, 78, "{run:?}");
        let line = run.stderr.lines().last().unwrap_or_default();
        assert!(
            line.contains(&path.display().to_string()) && line.contains(words),
            "{run:?}"
        );
        assert_eq!(s.read_creds(), own);
        assert_eq!(fs::read_to_string(&theirs).unwrap(), their_text);
    }
    // The same refusal from the config file, for a pattern that takes in the owner's file.
    s.config(&format!(
        "[[mirror]]\nlogin = \"claude\"\npath = \"{}/*/.credentials.json\"\n",
        s.home().display()
    ));
    let run = s.run(&["daemon"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains(&s.creds().display().to_string()),
        "{run:?}"
    );
    assert_eq!(s.read_creds(), own);
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn a_folder_pattern_gives_a_new_agent_its_copy() {
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let first = agent(&s, "a1");
    let pattern = format!(
        "{}/agents/*/.claude/.credentials.json",
        s.dir.path().display()
    );
    let d = spawn_daemon(&s, &["--mirror", &format!("claude={pattern}")]);
    wait_for("the first copy", Duration::from_secs(10), || {
        !copy_access(&first).is_empty()
    });
    // A folder without the config folder inside is not a match, and gets nothing.
    fs::create_dir_all(s.dir.path().join("agents/a2")).unwrap();
    let second = agent(&s, "a3");
    wait_for("the new agent's copy", Duration::from_secs(10), || {
        !copy_access(&second).is_empty()
    });
    assert!(!s.dir.path().join("agents/a2/.claude").exists());
    // A new folder whose file holds a login of its own is never written.
    let own = agent(&s, "a4");
    let other = s.server.issue_login();
    let own_text = claude_json(&other.access_token, &other.refresh_token, now_ms() + 60_000);
    fs::write(&own, &own_text).unwrap();
    let third = agent(&s, "a5");
    wait_for("the copy after it", Duration::from_secs(10), || {
        !copy_access(&third).is_empty()
    });
    let run = stop_daemon(&s, d);
    assert_eq!(fs::read_to_string(&own).unwrap(), own_text);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(&own.display().to_string())
                && l.contains("refresh token of its own")),
        "{run:?}"
    );
    assert_eq!(
        copy_access(&second),
        s.creds_json()["claudeAiOauth"]["accessToken"]
    );
    assert!(run.stderr.contains("a new copy at"), "{run:?}");
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn codex_and_gemini_copies_take_their_providers_shapes() {
    // Codex: tokens.refresh_token empty, last_refresh the owner's, the copy's other keys kept.
    let s = crate::codex::sandbox();
    let access = crate::codex::access_jwt(now_ms() + 5 * 86_400_000);
    let owner_text = crate::codex::auth_text(&access, "rt_owner");
    fs::write(crate::codex::auth_path(&s), &owner_text).unwrap();
    set_mode(&crate::codex::auth_path(&s), 0o600);
    let copy = s.dir.path().join("agent/.codex/auth.json");
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    fs::write(&copy, "{\n  \"mine\": true\n}").unwrap();
    let d = spawn_daemon(
        &s,
        &[
            "--provider",
            "codex",
            "--mirror",
            &format!("codex={}", copy.display()),
        ],
    );
    wait_for("the codex copy", Duration::from_secs(10), || {
        json(&copy)["tokens"]["access_token"] == access.as_str()
    });
    stop_daemon(&s, d);
    let (c, o) = (json(&copy), json(&crate::codex::auth_path(&s)));
    assert_eq!(c["tokens"]["refresh_token"], "");
    assert_eq!(c["last_refresh"], o["last_refresh"]);
    assert_eq!(c["tokens"]["account_id"], o["tokens"]["account_id"]);
    assert_eq!(c["mine"], true);
    assert!(
        fs::read_to_string(&copy)
            .unwrap()
            .contains("\n  \"tokens\": {\n")
    );
    assert_eq!(
        fs::read_to_string(crate::codex::auth_path(&s)).unwrap(),
        owner_text
    );

    // Gemini: no refresh_token key at all.
    let s = crate::gemini::sandbox();
    crate::gemini::secret_config(&s);
    fs::create_dir_all(crate::gemini::no_npm(&s)).unwrap();
    let owner_text = crate::gemini::gemini_json("ya29.owner", "1//owner", now_ms() + 3_000_000);
    fs::write(crate::gemini::creds(&s), &owner_text).unwrap();
    set_mode(&crate::gemini::creds(&s), 0o600);
    let copy = s.dir.path().join("agent/.gemini/oauth_creds.json");
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let d = s
        .cmd(&[
            "--provider",
            "gemini",
            "daemon",
            "--mirror",
            &format!("gemini={}", copy.display()),
        ])
        .env("TOKENKEEPER_NPM_ROOT", crate::gemini::no_npm(&s))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the gemini copy", Duration::from_secs(10), || copy.exists());
    stop_daemon(&s, d);
    let c = json(&copy);
    assert_eq!(c["access_token"], "ya29.owner");
    assert!(c.get("refresh_token").is_none(), "{c}");
    assert_eq!(
        c["expiry_date"],
        json(&crate::gemini::creds(&s))["expiry_date"]
    );
    assert_eq!(
        fs::read_to_string(crate::gemini::creds(&s)).unwrap(),
        owner_text
    );
}

#[test]
fn a_copy_gets_the_owner_and_mode_asked_for() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let copy = agent(&s, "a1");
    // Root gives the copy to another user; anyone else can only name themselves.
    let (uid, gid) = if is_root() {
        (NOBODY, NOBODY)
    } else {
        let me = fs::metadata(s.dir.path()).unwrap();
        (me.uid(), me.gid())
    };
    s.config(&format!(
        "[[mirror]]\nlogin = \"claude\"\npath = \"{}\"\nowner = \"{uid}:{gid}\"\nmode = 0o640\n",
        copy.display()
    ));
    let d = spawn_daemon(&s, &[]);
    wait_for("the copy", Duration::from_secs(10), || copy.exists());
    stop_daemon(&s, d);
    let meta = fs::metadata(&copy).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    assert_eq!(
        copy_access(&copy),
        s.creds_json()["claudeAiOauth"]["accessToken"]
    );
    assert_eq!(
        fs::metadata(s.creds()).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A mode that lets everyone write the copy is refused with the file and the table named.
    s.config(&format!(
        "[[mirror]]\nlogin = \"claude\"\npath = \"{}\"\nmode = \"0666\"\n",
        copy.display()
    ));
    let run = s.run(&["daemon"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("config.toml") && run.stderr.contains("[[mirror]] number 1"),
        "{run:?}"
    );
}

#[test]
fn a_copy_that_cannot_be_written_is_alerted_by_name_once_then_recovered() {
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let copy = agent(&s, "a1");
    let folder = copy.parent().unwrap().to_path_buf();
    let log = s.dir.path().join("alerts.log");
    let notify = format!(
        "echo \"$TOKENKEEPER_EVENT: $TOKENKEEPER_MESSAGE\" >> {}",
        log.display()
    );
    let flag = format!("claude={}", copy.display());
    let d = spawn_daemon(&s, &["--mirror", &flag, "--notify-command", &notify]);
    wait_for("the copy", Duration::from_secs(10), || copy.exists());
    // The folder goes away (root ignores permission bits, so a file takes its place rather
    // than a chmod): each change to the owner's file wakes the daemon, which cannot write.
    fs::remove_dir_all(&folder).unwrap();
    fs::write(&folder, "not a folder").unwrap();
    let alerts = || fs::read_to_string(&log).unwrap_or_default();
    for _ in 0..3 {
        let text = s.read_creds();
        fs::write(s.creds(), text).unwrap();
        sleep(Duration::from_millis(300));
    }
    wait_for("the mirror_failed alert", Duration::from_secs(10), || {
        alerts().contains("mirror_failed")
    });
    // Put back: the next look writes it and says so.
    fs::remove_file(&folder).unwrap();
    fs::create_dir_all(&folder).unwrap();
    let text = s.read_creds();
    fs::write(s.creds(), text).unwrap();
    wait_for("the copy again", Duration::from_secs(10), || copy.exists());
    wait_for("the recovered alert", Duration::from_secs(10), || {
        alerts().contains("recovered")
    });
    let run = stop_daemon(&s, d);
    let text = alerts();
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mirror_failed"))
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "alerted once for the run of failures: {text}"
    );
    assert!(failed[0].contains(&copy.display().to_string()), "{text}");
    assert!(!text.contains("sk-ant-"), "{text}");
    assert!(run.stderr.contains("cannot be written"), "{run:?}");
}

/// A consumer controls its copy's folder: a link put where the copy is, or in place of the
/// folder, would have the daemon read another file (and copy its keys where the consumer reads
/// them) or write over it. Neither is ever followed: the target stays as it was, byte for
/// byte, the link stays a link, and the copy is alerted by name.
#[test]
fn a_link_in_place_of_a_copy_or_its_folder_is_never_followed() {
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    // Another login of the same user, and a JSON settings file: what a link could point at.
    let other = s.dir.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let decoy = other.join(".credentials.json");
    let decoy_text = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-decoy","refreshToken":"sk-ant-ort01-decoy-refresh","expiresAt":1},"mine":1}"#;
    fs::write(&decoy, decoy_text).unwrap();
    let settings = other.join("settings.json");
    fs::write(&settings, r#"{"hooks":{}}"#).unwrap();

    // At start: a link where the copy goes is refused, and nothing is written anywhere.
    let linked = agent(&s, "a1");
    std::os::unix::fs::symlink(&settings, &linked).unwrap();
    let flag = format!("claude={}", linked.display());
    let run = run_within(
        &mut s.cmd(&["daemon", "--mirror", &flag]),
        Duration::from_secs(20),
    );
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("symbolic link"), "{run:?}");
    assert_eq!(fs::read_to_string(&settings).unwrap(), r#"{"hooks":{}}"#);
    assert!(
        fs::symlink_metadata(&linked)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Later: a copy (then its folder) swapped for a link while the daemon runs.
    let copy = agent(&s, "a2");
    let folder = copy.parent().unwrap().to_path_buf();
    let log = s.dir.path().join("alerts.log");
    let notify = format!(
        "echo \"$TOKENKEEPER_EVENT: $TOKENKEEPER_MESSAGE\" >> {}",
        log.display()
    );
    let flag = format!("claude={}", copy.display());
    let d = spawn_daemon(&s, &["--mirror", &flag, "--notify-command", &notify]);
    wait_for("the copy", Duration::from_secs(10), || copy.exists());
    let alerts = || fs::read_to_string(&log).unwrap_or_default();
    let nudge = || {
        let text = s.read_creds();
        fs::write(s.creds(), text).unwrap();
        sleep(Duration::from_millis(300));
    };
    fs::remove_file(&copy).unwrap();
    std::os::unix::fs::symlink(&decoy, &copy).unwrap();
    nudge();
    wait_for("the mirror_failed alert", Duration::from_secs(10), || {
        alerts().contains("mirror_failed")
    });
    assert_eq!(fs::read_to_string(&decoy).unwrap(), decoy_text);
    assert!(
        fs::symlink_metadata(&copy)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // The folder itself a link to the other login's folder.
    fs::remove_dir_all(&folder).unwrap();
    std::os::unix::fs::symlink(&other, &folder).unwrap();
    for _ in 0..3 {
        nudge();
    }
    let run = stop_daemon(&s, d);
    assert_eq!(fs::read_to_string(&decoy).unwrap(), decoy_text);
    assert_eq!(fs::read_to_string(&settings).unwrap(), r#"{"hooks":{}}"#);
    let text = alerts();
    assert!(text.contains(&copy.display().to_string()), "{text}");
    assert!(!text.contains("sk-ant-"), "{text}");
    assert!(
        !run.stdout.contains("decoy") && !run.stderr.contains("decoy"),
        "{run:?}"
    );
}

#[test]
fn status_lists_each_copy_with_the_expiry_it_holds() {
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let (a1, a2) = (agent(&s, "a1"), agent(&s, "a2"));
    let d = spawn_daemon(
        &s,
        &[
            "--mirror",
            &format!("claude={}", a1.display()),
            "--mirror",
            &format!("claude={}", a2.display()),
        ],
    );
    // The daemon tells `status` which copies it keeps once it has looked at them all.
    wait_for("both copies listed", Duration::from_secs(10), || {
        a1.exists()
            && a2.exists()
            && s.run(&["status"])
                .stdout
                .contains(&a2.display().to_string())
    });
    let run = s.run(&["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    let expiry = s.creds_json()["claudeAiOauth"]["expiresAt"]
        .as_i64()
        .unwrap();
    let when = tokenkeeper::login::format_time(expiry);
    for copy in [&a1, &a2] {
        let line = run
            .stdout
            .lines()
            .find(|l| l.contains(&copy.display().to_string()))
            .unwrap_or_else(|| panic!("{} not listed: {run:?}", copy.display()));
        assert!(
            line.contains(&format!("access token expires {when}")),
            "{line}"
        );
    }
    assert!(run.stdout.contains("copies (access token only"), "{run:?}");
    let run = s.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let copies = v["copies"].as_array().expect("copies");
    assert_eq!(copies.len(), 2, "{v}");
    assert!(
        copies
            .iter()
            .all(|c| c["access_token_expires_at"].is_string()),
        "{v}"
    );
    stop_daemon(&s, d);
}

#[test]
fn exec_on_a_copy_uses_its_token_and_says_who_keeps_it_once_it_expires() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    // The sandbox's own file is a copy: an access token, no refresh token.
    let fresh = claude_json(&login.access_token, "", now_ms() + 3_600_000);
    fs::write(s.creds(), &fresh).unwrap();
    let run = s.run(&["exec", "--", "true"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(s.read_creds(), fresh);

    let expired = claude_json(&login.access_token, "", now_ms() - 1000);
    fs::write(s.creds(), &expired).unwrap();
    let run = s.run(&["exec", "--", "true"]);
    assert_eq!(run.code, 77, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(
        lines[0].contains("access-only copy")
            && lines[0].contains("kept fresh by its owner")
            && lines[0].contains(&s.creds().display().to_string()),
        "{run:?}"
    );
    assert_eq!(s.read_creds(), expired);
    assert_eq!(s.server.stats().token_requests, 0, "never a refresh");
}

#[test]
fn sighup_reads_the_copies_again_and_a_bad_table_keeps_the_old_ones() {
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let (a1, a2) = (agent(&s, "a1"), agent(&s, "a2"));
    let table = |path: &Path| {
        format!(
            "[[mirror]]\nlogin = \"claude\"\npath = \"{}\"\n",
            path.display()
        )
    };
    s.config(&table(&a1));
    let d = spawn_daemon(&s, &[]);
    wait_for("the first copy", Duration::from_secs(10), || a1.exists());
    let hup = || {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(d.id() as i32, libc::SIGHUP) };
    };
    // A table naming a login the daemon does not keep: the old copies stay.
    s.config(&format!(
        "{}{}",
        table(&a1),
        "[[mirror]]\nlogin = \"mytool\"\npath = \"/x.json\"\n"
    ));
    hup();
    sleep(Duration::from_millis(500));
    // Still kept: a change to the owner's file wakes the daemon, which writes it again.
    fs::remove_file(&a1).unwrap();
    let text = s.read_creds();
    fs::write(s.creds(), text).unwrap();
    wait_for(
        "the old copy written again",
        Duration::from_secs(10),
        || a1.exists(),
    );
    s.config(&format!("{}{}", table(&a1), table(&a2)));
    hup();
    wait_for(
        "the copy the new table adds",
        Duration::from_secs(10),
        || a2.exists() && a1.exists(),
    );
    let run = stop_daemon(&s, d);
    assert!(
        run.stderr.contains("copies not changed") && run.stderr.contains("mytool"),
        "{run:?}"
    );
    assert_eq!(
        copy_access(&a2),
        s.creds_json()["claudeAiOauth"]["accessToken"]
    );
}

#[test]
fn a_copy_whose_token_is_refused_is_never_refreshed_on_retry() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    let copy = claude_json(&login.access_token, "", now_ms() + 3_600_000);
    fs::write(s.creds(), &copy).unwrap();
    let script = r#"echo "Failed to authenticate. API Error: 401 Invalid authentication credentials"; exit 1"#;
    let run = s.run(&["exec", "--retry-auth", "1", "--", "sh", "-c", script]);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stderr.contains("access-only copy") && run.stderr.contains("was refused"),
        "{run:?}"
    );
    assert_eq!(s.read_creds(), copy);
    assert_eq!(s.server.stats().token_requests, 0, "never a refresh");
}

/// The `[[login]]` table of the tests below: a tool keeping its login two levels down, beside an
/// account of the login's and settings of the machine's own; `path` is its file.
fn login_table(s: &Sandbox, path: &Path) -> String {
    format!(
        "[[login]]\nname = \"mytool\"\ncredentials = \"{}\"\naccess_token = \"/auth/oauth/access_token\"\nrefresh_token = \"/auth/oauth/refresh_token\"\nexpires_at = \"/auth/oauth/expires_at\"\nexpiry_unit = \"ms\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\n",
        path.display(),
        s.server.token_url(),
        StandinConfig::default().client_id
    )
}

/// The tool's file for a login, as the tool writes it.
fn table_login_text(access: &str, refresh: &str, expires_at: i64) -> String {
    format!(
        r#"{{"version":3,"auth":{{"oauth":{{"access_token":"{access}","refresh_token":"{refresh}","expires_at":{expires_at}}},"account":{{"email":"dev@example.test"}}}},"settings":{{"zoom":1.50}}}}"#
    )
}

#[test]
fn a_login_tables_copies_are_written_after_each_refresh_without_its_refresh_token() {
    let s = Sandbox::with(StandinConfig {
        access_ttl_secs: 4,
        ..StandinConfig::default()
    });
    let owner = s.home().join(".mytool/auth.json");
    fs::create_dir_all(owner.parent().unwrap()).unwrap();
    let login = s.server.issue_login();
    fs::write(
        &owner,
        table_login_text(&login.access_token, &login.refresh_token, now_ms() + 4000),
    )
    .unwrap();
    set_mode(&owner, 0o600);
    // Two agents, each with keys of its own beside and inside the login; one has no file yet.
    let copies: Vec<PathBuf> = (0..2)
        .map(|i| {
            let folder = s.dir.path().join(format!("agents/a{i}/.mytool"));
            fs::create_dir_all(&folder).unwrap();
            folder.join("auth.json")
        })
        .collect();
    fs::write(
        &copies[0],
        r#"{"auth":{"oauth":{"access_token":"","refresh_token":"","expires_at":0,"mine":true},"local":{"n":1.50}},"agent":"a0"}"#,
    )
    .unwrap();
    let pattern = format!("{}/agents/*/.mytool/auth.json", s.dir.path().display());
    s.config(&format!(
        "{}[[mirror]]\nlogin = \"mytool\"\npath = \"{pattern}\"\n",
        login_table(&s, &owner)
    ));
    let d = spawn_daemon(&s, &["--provider", "mytool", "--refresh-before", "2s"]);
    let access = |path: &Path| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(path).unwrap_or_default()).unwrap_or_default();
        let oauth = &v["auth"]["oauth"];
        if !oauth.is_null() {
            assert_eq!(
                oauth["refresh_token"].as_str(),
                Some(""),
                "a copy held a refresh token"
            );
        }
        oauth["access_token"].as_str().unwrap_or("").to_string()
    };
    // Every token the owner holds reaches both copies, over three refreshes.
    let mut seen = Vec::new();
    wait_for("three refreshes copied", Duration::from_secs(20), || {
        let now = json(&owner)["auth"]["oauth"]["access_token"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if copies.iter().all(|c| access(c) == now) && !seen.contains(&now) {
            seen.push(now);
        }
        seen.len() >= 4
    });
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let stats = s.server.stats();
    assert!(stats.token_requests >= 3, "{stats:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0)
    );
    let o = json(&owner);
    assert!(
        s.server
            .is_live_access(o["auth"]["oauth"]["access_token"].as_str().unwrap())
    );
    assert_ne!(
        o["auth"]["oauth"]["refresh_token"], "",
        "the owner keeps it"
    );
    for c in &copies {
        let v = json(c);
        assert_eq!(
            v["auth"]["oauth"]["access_token"],
            o["auth"]["oauth"]["access_token"]
        );
        assert_eq!(
            v["auth"]["oauth"]["expires_at"],
            o["auth"]["oauth"]["expires_at"]
        );
        assert_eq!(v["auth"]["oauth"]["refresh_token"], "");
        assert_eq!(v["auth"]["account"]["email"], "dev@example.test");
    }
    let first = fs::read_to_string(&copies[0]).unwrap();
    let v = json(&copies[0]);
    assert_eq!(v["auth"]["oauth"]["mine"], true, "{first}");
    assert_eq!(v["agent"], "a0", "{first}");
    assert!(first.contains(r#""local":{"n":1.50}"#), "{first}");
    // Where there was none, a copy is the login alone: not the owner's settings.
    let made = json(&copies[1]);
    assert_eq!(
        made.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["auth"],
        "{made}"
    );
    assert!(lags(&run.stderr).len() >= 3, "{run:?}");
}

#[test]
fn removing_an_agents_folder_drops_its_copy_quietly() {
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let (a1, a2) = (agent(&s, "a1"), agent(&s, "a2"));
    let log = s.dir.path().join("alerts.log");
    let notify = format!(
        "echo \"$TOKENKEEPER_EVENT: $TOKENKEEPER_MESSAGE\" >> {}",
        log.display()
    );
    let pattern = format!(
        "{}/agents/*/.claude/.credentials.json",
        s.dir.path().display()
    );
    let d = spawn_daemon(
        &s,
        &[
            "--mirror",
            &format!("claude={pattern}"),
            "--notify-command",
            &notify,
        ],
    );
    let listed = |path: &Path| {
        let run = s.run(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
        v["copies"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["path"].as_str() == Some(&path.display().to_string()))
    };
    wait_for("both copies listed", Duration::from_secs(10), || {
        listed(&a1) && listed(&a2)
    });
    // The agent goes away, folder and all; the owner's file changes a few times meanwhile.
    fs::remove_dir_all(s.dir.path().join("agents/a2")).unwrap();
    for _ in 0..3 {
        let text = s.read_creds();
        fs::write(s.creds(), text).unwrap();
        sleep(Duration::from_millis(300));
    }
    wait_for("the gone copy dropped", Duration::from_secs(10), || {
        !listed(&a2)
    });
    // Another pattern look or two: still gone, and nothing complains about it.
    sleep(Duration::from_millis(2500));
    assert!(!listed(&a2) && listed(&a1));
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let gone = a2.display().to_string();
    let complaints: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(&gone) && !l.contains("a new copy at"))
        .collect();
    assert!(complaints.is_empty(), "{complaints:?}");
    assert!(!run.stderr.contains("cannot be written"), "{run:?}");
    assert_eq!(fs::read_to_string(&log).unwrap_or_default(), "");
    assert!(!s.dir.path().join("agents/a2").exists(), "never made again");
    assert_eq!(
        copy_access(&a1),
        s.creds_json()["claudeAiOauth"]["accessToken"]
    );
}

#[test]
fn metrics_show_each_copys_age_and_no_token() {
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let copy = agent(&s, "a1");
    let log = s.dir.path().join("daemon.log");
    let mut d = s
        .cmd(&[
            "daemon",
            "--metrics",
            "127.0.0.1:0",
            "--mirror",
            &format!("claude={}", copy.display()),
        ])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The port the daemon was given, from its log line `metrics on http://ADDR/metrics`.
    let mut url = String::new();
    wait_for("the metrics address", Duration::from_secs(10), || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = text.split("metrics on ").nth(1) {
            url = at.split_whitespace().next().unwrap_or("").to_string();
        }
        !url.is_empty()
    });
    let get = || {
        ureq::get(&url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    };
    let name = format!(
        r#"tokenkeeper_copy_age_seconds{{provider="claude",path="{}"}} "#,
        copy.display()
    );
    let mut text = String::new();
    wait_for("the copy's age", Duration::from_secs(10), || {
        text = get();
        text.contains(&name)
    });
    let age: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&name))
        .and_then(|v| v.trim().parse().ok())
        .expect("a number");
    assert!((0.0..60.0).contains(&age), "{text}");
    let expiry = s.creds_json()["claudeAiOauth"]["expiresAt"]
        .as_i64()
        .unwrap()
        / 1000;
    assert!(
        text.contains(&format!(
            r#"tokenkeeper_copy_access_token_expiry_timestamp_seconds{{provider="claude",path="{}"}} {expiry}"#,
            copy.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"tokenkeeper_copy_failing{{provider="claude",path="{}"}} 0"#,
            copy.display()
        )),
        "{text}"
    );
    for token in s.server.all_issued_tokens() {
        assert!(!text.contains(&token), "a token in the metrics");
    }
    terminate(&mut d);
    d.wait().unwrap();
    let run = Run {
        code: 0,
        stdout: text,
        stderr: fs::read_to_string(&log).unwrap(),
    };
    s.assert_no_leak(&run, false);
}

#[test]
fn a_login_table_whose_file_is_an_array_at_the_top_gets_no_copy_and_says_why() {
    let s = Sandbox::new();
    let owner = s.home().join(".mytool/auth.json");
    fs::create_dir_all(owner.parent().unwrap()).unwrap();
    let login = s.server.issue_login();
    let text = format!(
        r#"[{{"access":"{}","refresh":"{}","expires":{}}}]"#,
        login.access_token,
        login.refresh_token,
        now_ms() + 3_600_000
    );
    fs::write(&owner, &text).unwrap();
    set_mode(&owner, 0o600);
    let copy = s.dir.path().join("agents/a1/.mytool/auth.json");
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    s.config(&format!(
        "[[login]]\nname = \"mytool\"\ncredentials = \"{}\"\naccess_token = \"/0/access\"\nrefresh_token = \"/0/refresh\"\nexpires_at = \"/0/expires\"\nexpiry_unit = \"ms\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\n[[mirror]]\nlogin = \"mytool\"\npath = \"{}\"\n",
        owner.display(),
        s.server.token_url(),
        StandinConfig::default().client_id,
        copy.display()
    ));
    let d = spawn_daemon(&s, &["--provider", "mytool"]);
    wait_for("the copies' record", Duration::from_secs(10), || {
        s.run(&["--provider", "mytool", "status"])
            .stdout
            .contains("not a JSON object")
    });
    let run = stop_daemon(&s, d);
    assert!(!copy.exists(), "no copy made of no keys");
    assert_eq!(fs::read_to_string(&owner).unwrap(), text);
    assert!(
        run.stderr.contains(&copy.display().to_string())
            && run.stderr.contains("not a JSON object"),
        "{run:?}"
    );
    assert_eq!(s.server.stats().token_requests, 0);
}
