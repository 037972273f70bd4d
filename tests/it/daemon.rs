//! The daemon with tokens that live seconds: one refresh per token lifetime, clients that never
//! hold an expired token, faults that delay but never lose the login, alerts sent once, one
//! daemon per state folder, clean stops.

use crate::util::*;
use std::fs;
use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tokenkeeper_standin::{Fault, StandinConfig};

fn short_lived(secs: u64) -> Sandbox {
    Sandbox::with(StandinConfig {
        access_ttl_secs: secs,
        ..StandinConfig::default()
    })
}

/// A client like Claude Code reading the sandbox's file ([`claude_like_call`]).
fn client_call(s: &Sandbox) -> bool {
    claude_like_call(&s.server, || {
        s.creds_json()["claudeAiOauth"]["accessToken"]
            .as_str()
            .unwrap_or("")
            .to_string()
    })
}

#[test]
fn over_many_lifetimes_the_daemon_refreshes_once_per_token_and_clients_keep_working() {
    let s = short_lived(4);
    s.login(4000);
    let d = spawn_daemon(&s, &["--refresh-before", "2s"]);
    let start = Instant::now();
    let mut failures = 0;
    let mut calls = 0;
    while start.elapsed() < Duration::from_secs(14) {
        calls += 1;
        if !client_call(&s) {
            failures += 1;
        }
        let left = s.creds_json()["claudeAiOauth"]["expiresAt"]
            .as_i64()
            .unwrap()
            - now_ms();
        assert!(left > 0, "the file held an expired token ({left} ms)");
        sleep(Duration::from_millis(100));
    }
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        failures, 0,
        "{failures} of {calls} client calls failed: {run:?}"
    );
    let stats = s.server.stats();
    // Tokens live 4 s and are refreshed 2 s (plus up to 0.2 s) before expiry: one refresh every
    // ~2 s, each token refreshed exactly once.
    assert!((5..=9).contains(&stats.token_requests), "{stats:?} {run:?}");
    assert_eq!(stats.refreshes_ok, stats.token_requests, "{stats:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0)
    );
    assert!(lock_dirs(&s).is_empty());
    assert!(
        run.stderr.lines().all(|l| l.contains(" tokenkeeper: ")),
        "{run:?}"
    );
}

#[test]
fn a_new_login_written_under_it_is_noticed_at_once_and_planned_from() {
    let s = short_lived(3600);
    s.login(3_600_000);
    let d = spawn_daemon(&s, &["--refresh-before", "2s"]);
    sleep(Duration::from_millis(500));
    // A new login that expires in 3 s: the daemon must plan from it within moments.
    let fresh = s.server.issue_login();
    s.write_login(&fresh, 3000);
    wait_for(
        "the refresh of the new login",
        Duration::from_secs(5),
        || s.server.stats().token_requests == 1,
    );
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let v = s.creds_json();
    assert!(
        s.server
            .is_live_access(v["claudeAiOauth"]["accessToken"].as_str().unwrap())
    );
}

#[test]
fn transient_faults_delay_the_refresh_but_never_lose_the_login() {
    let s = short_lived(20);
    s.login(12_000);
    s.server.push_fault(Fault::Status(503));
    s.server.push_fault(Fault::RateLimited {
        retry_after_secs: Some(1),
    });
    s.server.push_fault(Fault::Hang(Duration::from_secs(3)));
    s.config("[claude]\nrequest_timeout = \"1s\"\n");
    let d = spawn_daemon(&s, &["--refresh-before", "10s"]);
    wait_for("a successful refresh", Duration::from_secs(20), || {
        s.server.stats().refreshes_ok == 1
    });
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let stats = s.server.stats();
    assert_eq!(stats.token_requests, 4, "{stats:?} {run:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0)
    );
    let v = s.creds_json();
    assert!(
        s.server
            .is_live_access(v["claudeAiOauth"]["accessToken"].as_str().unwrap())
    );
}

#[test]
fn a_dead_login_alerts_once_keeps_the_file_and_a_new_login_recovers() {
    let s = short_lived(3600);
    s.login(1000);
    let before = s.read_creds();
    let log = s.dir.path().join("alerts.log");
    let notify = format!(
        "printf '%s %s\\n' \"$TOKENKEEPER_EVENT\" \"$TOKENKEEPER_PROVIDER\" >> {}",
        log.display()
    );
    s.server.set_default_fault(Some(Fault::InvalidGrant));
    let d = spawn_daemon(&s, &["--refresh-before", "1h", "--notify-command", &notify]);
    wait_for("the login_dead alert", Duration::from_secs(10), || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("login_dead")
    });
    sleep(Duration::from_millis(1500));
    assert_eq!(s.read_creds(), before, "a dead login is never rewritten");
    assert_eq!(
        s.server.stats().token_requests,
        1,
        "no retries of a dead login"
    );

    s.server.set_default_fault(None);
    let fresh = s.server.issue_login();
    s.write_login(&fresh, 3_600_000 * 8);
    wait_for("the recovered alert", Duration::from_secs(10), || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("recovered")
    });
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let alerts = fs::read_to_string(&log).unwrap();
    assert_eq!(alerts, "login_dead claude\nrecovered claude\n", "{run:?}");
}

#[test]
fn a_second_daemon_refuses_to_start_naming_the_first() {
    let s = short_lived(3600);
    s.login(3_600_000 * 8);
    let first = spawn_daemon(&s, &[]);
    let record = s.state_dir().join("daemon").join("running.json");
    wait_for("the first daemon's lock", Duration::from_secs(5), || {
        s.state_dir().join("daemon.lock").exists() && record.exists()
    });
    sleep(Duration::from_millis(200));
    let second = s.run(&["daemon"]);
    assert_eq!(second.code, 75, "{second:?}");
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "{second:?}"
    );
    // Plainly: which daemon, for which logins, how to see it and how to stop it.
    for part in [
        format!(
            "a tokenkeeper daemon is already running (pid {})",
            first.id()
        ),
        format!("keeps claude at {} fresh", s.creds().display()),
        "`tokenkeeper status`".to_string(),
        "`systemctl --user stop tokenkeeper.service` if it runs as a service".to_string(),
        format!("`kill {}`", first.id()),
    ] {
        assert!(second.stderr.contains(&part), "{part:?} not in {second:?}");
    }
    s.assert_no_leak(&second, false);
    let status = s.run(&["status"]);
    assert!(
        status
            .stdout
            .contains(&format!("by the daemon (pid {})", first.id())),
        "{status:?}"
    );
    let run = stop_daemon(&s, first);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!record.exists(), "a stopped daemon forgets what it kept");
}

#[test]
fn sigterm_during_a_refresh_leaves_a_valid_file_and_no_lock() {
    let s = short_lived(3600);
    s.login(1000);
    s.server
        .push_fault(Fault::Delay(Duration::from_millis(1500)));
    let d = spawn_daemon(&s, &[]);
    wait_for("the request", Duration::from_secs(10), || {
        s.server.stats().token_requests == 1
    });
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let v = s.creds_json();
    assert!(
        s.server
            .is_live_access(v["claudeAiOauth"]["accessToken"].as_str().unwrap()),
        "{run:?}"
    );
    assert!(lock_dirs(&s).is_empty(), "{:?}", lock_dirs(&s));
}

/// A loopback webhook receiver: answers 204 and keeps each request body.
pub(crate) fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook/secret-path", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    (url, rx)
}

#[test]
fn a_webhook_gets_the_alert_as_json_that_chat_services_show() {
    let s = short_lived(3600);
    s.login(1000);
    s.server.set_default_fault(Some(Fault::InvalidClient));
    let (url, bodies) = webhook_receiver();
    let d = spawn_daemon(&s, &["--webhook", &url]);
    let body = bodies
        .recv_timeout(Duration::from_secs(15))
        .expect("webhook call");
    let run = stop_daemon(&s, d);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(v["event"], "login_dead");
    assert_eq!(v["provider"], "claude");
    assert!(v["message"].as_str().unwrap().contains("claude /login"));
    assert!(v["at"].as_str().unwrap().ends_with('Z'));
    assert!(v["content"].as_str().unwrap().contains("login_dead"));
    assert_eq!(v["content"], v["text"]);
    assert!(
        !run.stderr.contains("secret-path"),
        "the webhook path is a secret: {run:?}"
    );
    for token in s.server.all_issued_tokens() {
        assert!(!body.contains(&token));
    }
}

/// A loopback webhook that answers every request with a 302 to `location`; returns its URL and
/// how many requests it has had.
fn redirecting_webhook(
    location: String,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hook/first-secret",
        listener.local_addr().unwrap()
    );
    let asked = std::sync::Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            count.fetch_add(1, Ordering::SeqCst);
            let reply = format!(
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = reader.get_mut().write_all(reply.as_bytes());
        }
    });
    (url, asked)
}

#[test]
fn a_webhook_that_redirects_is_not_followed_and_the_failure_names_where_it_pointed() {
    use std::sync::atomic::Ordering;
    let s = short_lived(3600);
    s.login(1000);
    s.server.set_default_fault(Some(Fault::InvalidGrant));
    let (target, bodies) = webhook_receiver();
    let target = target.replace("/hook/secret-path", "/hook/second-secret");
    let (url, asked) = redirecting_webhook(target.clone());
    let d = spawn_daemon(&s, &["--webhook", &url]);
    wait_for("the webhook's answer", Duration::from_secs(10), || {
        asked.load(Ordering::SeqCst) > 0
    });
    sleep(Duration::from_millis(500));
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(asked.load(Ordering::SeqCst), 1, "a redirect is not retried");
    assert!(
        bodies.recv_timeout(Duration::from_millis(200)).is_err(),
        "the Location was asked"
    );
    // The failure names the site the Location points at, never its path or the webhook's.
    let site = target.trim_end_matches("/hook/second-secret");
    let why = format!("HTTP 302 redirect to {site}, not followed");
    assert!(run.stderr.contains(&why), "{why:?} not in {run:?}");
    assert!(run.stderr.contains("webhook_redirects"), "{run:?}");
    for secret in ["first-secret", "second-secret"] {
        assert!(!run.stderr.contains(secret), "{secret}: {run:?}");
        assert!(!run.stdout.contains(secret), "{secret}: {run:?}");
    }
    s.assert_no_leak(&run, false);
}

#[test]
fn webhook_redirects_in_the_config_lets_a_webhook_post_follow_to_its_target() {
    use std::sync::atomic::Ordering;
    let s = short_lived(3600);
    s.login(8 * 3_600_000);
    let (target, bodies) = webhook_receiver();
    let (url, asked) = redirecting_webhook(target);
    s.config(&format!(
        "[daemon]\nwebhook = \"{url}\"\nwebhook_redirects = 1\n"
    ));
    let run = run_briefly(&s, &["daemon", "--test-alert"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("the webhook at http://127.0.0.1:"),
        "{run:?}"
    );
    assert!(run.stdout.contains("sent"), "{run:?}");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    // The alert itself reached the target, posted again, not a GET without it.
    let body = bodies
        .recv_timeout(Duration::from_secs(5))
        .expect("the target's webhook call");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(v["event"], "test");
    s.assert_no_leak(&run, false);

    // More than the cap is a wrong URL, said at start.
    s.config(&format!(
        "[daemon]\nwebhook = \"{url}\"\nwebhook_redirects = 6\n"
    ));
    let run = run_briefly(&s, &["daemon", "--test-alert"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr
            .contains("[daemon] webhook_redirects: 6 is more than 5"),
        "{run:?}"
    );
}

#[test]
fn metrics_show_expiry_refreshes_and_dead_logins() {
    let s = short_lived(3600);
    s.login(1000);
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap().to_string();
    drop(probe);
    let d = spawn_daemon(&s, &["--metrics", &addr]);
    wait_for("a refresh", Duration::from_secs(10), || {
        s.server.stats().refreshes_ok == 1
    });
    let get = || {
        ureq::get(&format!("http://{addr}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    };
    wait_for("the refresh in the metrics", Duration::from_secs(5), || {
        get().contains(r#"tokenkeeper_refresh_total{provider="claude",result="refreshed"} 1"#)
    });
    let text = get();
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let expiry = s.creds_json()["claudeAiOauth"]["expiresAt"]
        .as_i64()
        .unwrap()
        / 1000;
    assert!(
        text.contains(&format!(
            r#"tokenkeeper_access_token_expiry_timestamp_seconds{{provider="claude"}} {expiry}"#
        )),
        "{text}"
    );
    assert!(
        text.contains(r#"tokenkeeper_login_dead{provider="claude"} 0"#),
        "{text}"
    );
}

#[test]
fn a_login_about_to_end_is_reminded_once() {
    let s = short_lived(3600);
    let login = s.server.issue_login();
    let end = now_ms() + 2 * 86_400_000;
    let text = claude_json(
        &login.access_token,
        &login.refresh_token,
        now_ms() + 8 * 3_600_000,
    )
    .replace(
        "\"subscriptionType\"",
        &format!("\"refreshTokenExpiresAt\":{end},\"subscriptionType\""),
    );
    fs::write(s.creds(), text).unwrap();
    set_mode(&s.creds(), 0o600);
    let log = s.dir.path().join("alerts.log");
    let notify = format!(
        "echo \"$TOKENKEEPER_EVENT: $TOKENKEEPER_MESSAGE\" >> {}",
        log.display()
    );
    let d = spawn_daemon(&s, &["--notify-command", &notify]);
    wait_for("the reminder", Duration::from_secs(10), || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("login_ending")
    });
    // Touch the file: the daemon looks again, but a reminder is due only once a day.
    s.write_login(&login, 8 * 3_600_000);
    fs::write(
        s.creds(),
        fs::read_to_string(s.creds()).unwrap().replace(
            "\"subscriptionType\"",
            &format!("\"refreshTokenExpiresAt\":{end},\"subscriptionType\""),
        ),
    )
    .unwrap();
    sleep(Duration::from_millis(800));
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let alerts = fs::read_to_string(&log).unwrap();
    assert_eq!(alerts.lines().count(), 1, "{alerts}");
    assert!(alerts.contains("log in again before"), "{alerts}");
}

#[test]
fn the_cooldown_after_failures_survives_a_restart() {
    let s = short_lived(3600);
    s.login(1000);
    s.config("[claude]\nretry_total = \"1s\"\nrequest_timeout = \"1s\"\n");
    s.server.set_default_fault(Some(Fault::Status(503)));
    let d = spawn_daemon(&s, &[]);
    wait_for("a failed attempt", Duration::from_secs(10), || {
        fs::read_dir(s.state_dir().join("daemon"))
            .map(|d| {
                d.flatten().any(|e| {
                    fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .contains("\"failures\": 1")
                })
            })
            .unwrap_or(false)
    });
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let requests = s.server.stats().token_requests;
    s.server.set_default_fault(None);
    let d = spawn_daemon(&s, &[]);
    sleep(Duration::from_millis(1500));
    let run = stop_daemon(&s, d);
    assert_eq!(
        s.server.stats().token_requests,
        requests,
        "asked again inside the cooldown: {run:?}"
    );
    let status = s.run(&["status"]);
    assert!(status.stdout.contains("last error"), "{status:?}");
}

#[test]
fn sighup_rereads_the_configuration_and_keeps_running() {
    let s = short_lived(3600);
    s.login(8 * 3_600_000);
    let (old, new) = (s.dir.path().join("old.log"), s.dir.path().join("new.log"));
    let notify = |log: &std::path::Path| {
        format!(
            "[daemon]\nnotify_command = \"echo $TOKENKEEPER_EVENT >> {}\"\n",
            log.display()
        )
    };
    s.config(&notify(&old));
    let d = spawn_daemon(&s, &[]);
    sleep(Duration::from_millis(500));
    s.config(&notify(&new));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.id() as i32, libc::SIGHUP) };
    sleep(Duration::from_millis(500));
    // The login is wiped (as Claude does after a rejection): the alert uses the new command.
    fs::write(s.creds(), claude_json("", "", 0)).unwrap();
    wait_for("the alert", Duration::from_secs(10), || new.exists());
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("configuration re-read"), "{run:?}");
    assert_eq!(fs::read_to_string(&new).unwrap(), "login_dead\n");
    assert!(!old.exists());
}

#[test]
fn a_server_handing_out_tokens_already_due_is_not_hammered_and_is_alerted_once() {
    // `expires_in: 0`: every new token expires as it comes.
    let s = short_lived(0);
    s.login(1000);
    let log = s.dir.path().join("alerts.log");
    let notify = format!("echo \"$TOKENKEEPER_EVENT\" >> {}", log.display());
    let d = spawn_daemon(&s, &["--notify-command", &notify]);
    wait_for(
        "the token_already_due alert",
        Duration::from_secs(10),
        || {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("token_already_due")
        },
    );
    sleep(Duration::from_secs(5));
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let stats = s.server.stats();
    assert!((1..=3).contains(&stats.token_requests), "{stats:?} {run:?}");
    assert_eq!(fs::read_to_string(&log).unwrap(), "token_already_due\n");
    assert!(run.stderr.contains("expires in 0 s"), "{run:?}");
}

#[test]
fn tokens_of_three_seconds_against_the_default_margin_are_refreshed_a_minute_apart() {
    // `expires_in: 3` and Claude Code's margin of an hour: each token is due as it comes. Half
    // its life would be a request every 1.5 s; the daemon waits a minute instead, and says so once.
    let s = short_lived(3);
    s.login(3000);
    let log = s.dir.path().join("alerts.log");
    let notify = format!("echo \"$TOKENKEEPER_EVENT\" >> {}", log.display());
    let d = spawn_daemon(&s, &["--notify-command", &notify]);
    sleep(Duration::from_secs(10));
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let stats = s.server.stats();
    assert!((1..=2).contains(&stats.token_requests), "{stats:?} {run:?}");
    assert_eq!(stats.refreshes_ok, stats.token_requests, "{stats:?}");
    assert_eq!(fs::read_to_string(&log).unwrap(), "token_already_due\n");
    assert!(
        run.stderr.contains("within the refresh margin of 1h"),
        "{run:?}"
    );
    s.assert_no_leak(&run, false);
}

#[test]
fn the_notify_command_can_come_from_the_environment_a_service_sets() {
    let s = short_lived(3600);
    s.login(1000);
    s.server.set_default_fault(Some(Fault::InvalidGrant));
    let log = s.dir.path().join("alerts.log");
    let notify = format!("echo \"$TOKENKEEPER_EVENT\" >> {}", log.display());
    let d = s
        .cmd(&["daemon"])
        .env("TOKENKEEPER_NOTIFY_COMMAND", &notify)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    wait_for("the login_dead alert", Duration::from_secs(10), || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("login_dead")
    });
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
}

/// Runs to completion, or fails the test after 10 s (a daemon that started would run on).
fn run_briefly(s: &Sandbox, args: &[&str]) -> Run {
    let mut child = s
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokenkeeper");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let run = Run::from(child.wait_with_output().expect("output"));
            panic!("still running after 10 s: {run:?}");
        }
        sleep(Duration::from_millis(20));
    }
    Run::from(child.wait_with_output().expect("output"))
}

#[test]
fn a_webhook_or_notify_command_that_cannot_work_stops_the_daemon_at_start() {
    let s = short_lived(3600);
    s.login(8 * 3_600_000);
    let run = run_briefly(
        &s,
        &[
            "daemon",
            "--webhook",
            "discord.com/api/webhooks/1/secret-path",
        ],
    );
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("https://"), "{run:?}");
    assert!(!run.stderr.contains("secret-path"), "{run:?}");
    let run = run_briefly(
        &s,
        &[
            "daemon",
            "--notify-command",
            "no-such-notifier --key s3cret",
        ],
    );
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("no-such-notifier"), "{run:?}");
    assert!(!run.stderr.contains("s3cret"), "{run:?}");
    s.config("[daemon]\nwebhook = \"ftp://hooks.example/secret-path\"\n");
    let run = run_briefly(&s, &["daemon"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("[daemon] webhook"), "{run:?}");
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn a_test_alert_goes_through_each_way_and_says_how_it_went() {
    let s = short_lived(3600);
    s.login(8 * 3_600_000);
    let log = s.dir.path().join("alerts.log");
    let notify = format!("echo \"$TOKENKEEPER_EVENT\" >> {}", log.display());
    let (url, bodies) = webhook_receiver();
    let run = run_briefly(
        &s,
        &[
            "daemon",
            "--test-alert",
            "--notify-command",
            &notify,
            "--webhook",
            &url,
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("the notify command: sent"), "{run:?}");
    assert!(
        run.stdout.contains("the webhook at http://127.0.0.1:"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("secret-path"), "{run:?}");
    assert_eq!(fs::read_to_string(&log).unwrap(), "test\n");
    let body = bodies
        .recv_timeout(Duration::from_secs(5))
        .expect("webhook call");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "test");
    assert_eq!(s.server.stats().token_requests, 0, "no refresh");

    let run = run_briefly(
        &s,
        &["daemon", "--test-alert", "--notify-command", "exit 3"],
    );
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("the notify command: failed"), "{run:?}");
}

#[test]
fn a_daemon_started_on_a_dead_login_says_so_and_alerts() {
    let s = short_lived(3600);
    s.login(1000);
    let log = s.dir.path().join("alerts.log");
    let notify = format!("echo \"$TOKENKEEPER_EVENT\" >> {}", log.display());
    s.server.set_default_fault(Some(Fault::InvalidGrant));
    let d = spawn_daemon(&s, &["--notify-command", &notify]);
    wait_for("the login_dead alert", Duration::from_secs(10), || {
        fs::read_to_string(&log).unwrap_or_default() == "login_dead\n"
    });
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    let first = run.stderr.lines().find(|l| l.contains("is dead")).unwrap();
    assert_eq!(first.matches("og in again").count(), 1, "{first}");
    // Started again on the same dead login: not asked again, but said at once.
    let d = spawn_daemon(&s, &["--notify-command", &notify]);
    wait_for(
        "the login_dead alert at start",
        Duration::from_secs(10),
        || fs::read_to_string(&log).unwrap_or_default() == "login_dead\nlogin_dead\n",
    );
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(s.server.stats().token_requests, 1, "{run:?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("is dead"))
        .expect(&run.stderr);
    assert!(line.contains("invalid_grant"), "{line}");
    assert_eq!(line.matches("og in again").count(), 1, "{line}");
}

#[test]
fn a_new_margin_read_on_sighup_applies_to_the_current_token() {
    let s = short_lived(3600);
    s.login(30_000);
    s.config("[daemon]\nrefresh_before = \"2s\"\n");
    let d = spawn_daemon(&s, &[]);
    sleep(Duration::from_millis(500));
    // 20 s, cut to half the 30 s the token had when first seen: due 15 s after the start.
    s.config("[daemon]\nrefresh_before = \"20s\"\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.id() as i32, libc::SIGHUP) };
    wait_for(
        "the refresh under the new margin",
        Duration::from_secs(20),
        || s.server.stats().token_requests == 1,
    );
    let run = stop_daemon(&s, d);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("configuration re-read"), "{run:?}");
}
