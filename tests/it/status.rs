//! `tokenkeeper status`: states, fields, exit codes, and that it never writes.

use crate::util::*;
use std::fs;

#[test]
fn status_reports_a_fresh_login_in_text_and_json() {
    let s = Sandbox::new();
    s.login(6 * 3_600_000 + 12 * 60_000 + 30_000);
    let run = s.run(&["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("claude: fresh, access token expires"),
        "{run:?}"
    );
    assert!(run.stdout.contains("(in 6h 12m)"), "{run:?}");
    assert!(run.stdout.contains(&s.creds().display().to_string()));

    let run = s.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let l = &v["logins"][0];
    assert_eq!(l["provider"], "claude");
    assert_eq!(l["state"], "fresh");
    assert_eq!(l["credentials"], s.creds().display().to_string());
    let secs = l["access_expires_in_s"].as_i64().unwrap();
    assert!((22_300..=22_350).contains(&secs), "{secs}");
    assert!(l["access_expires_at"].as_str().unwrap().ends_with('Z'));
    for key in ["login_expires_at", "last_refresh_at", "last_error"] {
        assert!(l.get(key).is_some(), "{key} missing");
    }
}

#[test]
fn status_names_due_expired_and_missing_and_never_writes() {
    let s = Sandbox::new();
    let state = |s: &Sandbox| {
        let run = s.run(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        (
            v["logins"][0]["state"].as_str().unwrap().to_string(),
            run.code,
        )
    };
    assert_eq!(state(&s), ("missing".into(), 78));
    s.login(30 * 60_000);
    assert_eq!(state(&s), ("due".into(), 0));
    s.login(-60_000);
    let mtime = fs::metadata(s.creds()).unwrap().modified().unwrap();
    assert_eq!(state(&s), ("expired".into(), 0));
    assert_eq!(fs::metadata(s.creds()).unwrap().modified().unwrap(), mtime);
    assert_eq!(s.server.stats().token_requests, 0);
    assert!(!s.state_dir().exists());
}

#[test]
fn status_shows_the_last_refresh_and_the_login_end() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    let end = now_ms() + 20 * 86_400_000;
    let text = claude_json(&login.access_token, &login.refresh_token, now_ms() - 1).replace(
        "\"subscriptionType\"",
        &format!("\"refreshTokenExpiresAt\":{end},\"subscriptionType\""),
    );
    fs::write(s.creds(), text).unwrap();
    assert_eq!(s.run(&["refresh"]).code, 0);
    let run = s.run(&["status"]);
    assert!(run.stdout.contains("login ends"), "{run:?}");
    assert!(
        run.stdout.contains("(in 19d 23h)") || run.stdout.contains("(in 20d)"),
        "{run:?}"
    );
    assert!(run.stdout.contains("refreshed"), "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&s.run(&["status", "--json"]).stdout).unwrap();
    assert!(v["logins"][0]["last_refresh_at"].is_string());
    assert!(v["logins"][0]["login_expires_at"].is_string());
    assert_eq!(v["logins"][0]["last_error"], serde_json::Value::Null);
}

/// `status` says which config file it read (or that there was none), and that an expired login
/// will be renewed by the next refresh or exec.
#[test]
fn status_names_the_config_file_and_how_an_expired_login_is_renewed() {
    let s = Sandbox::new();
    s.login(-60_000);
    let run = s.run(&["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("  config        none, defaults ("),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("the next `tokenkeeper refresh` or `tokenkeeper exec` renews it"),
        "{run:?}"
    );
    let config = s.config("[claude]\nmin_ttl = \"1h\"\n");
    let run = s.run(&["status"]);
    assert!(
        run.stdout
            .contains(&format!("  config        {}\n", config.display())),
        "{run:?}"
    );
    let run = s.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["config"], config.display().to_string(), "{run:?}");
}

/// One unambiguous time for people (year, seconds, UTC) in `status` and `refresh`, and the same
/// second as their JSON's `access_expires_at`.
#[test]
fn human_and_json_times_agree_to_the_second() {
    let s = Sandbox::new();
    // Not on a whole second, so that rounding one way in one place and another elsewhere shows.
    s.login(6 * 3_600_000 + 987);
    let human_time = |text: &str| {
        let at = text
            .split(" expires ")
            .nth(1)
            .and_then(|rest| rest.split(" (").next())
            .unwrap_or_else(|| panic!("no expiry in {text:?}"));
        jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S UTC", at)
            .unwrap_or_else(|e| panic!("{at:?} is not YYYY-MM-DD HH:MM:SS UTC: {e}"))
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
    };
    let json_time = |text: &str, pointer: &str| {
        let v: serde_json::Value = serde_json::from_str(text).expect("json");
        v.pointer(pointer)
            .and_then(|t| t.as_str())
            .unwrap_or_else(|| panic!("no {pointer} in {text}"))
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    let expiry_s = s.creds_json()["claudeAiOauth"]["expiresAt"]
        .as_i64()
        .unwrap()
        / 1000;
    for (human, json, pointer) in [
        (
            s.run(&["status"]),
            s.run(&["status", "--json"]),
            "/logins/0/access_expires_at",
        ),
        (
            s.run(&["refresh"]),
            s.run(&["refresh", "--json"]),
            "/access_expires_at",
        ),
    ] {
        assert_eq!(human.code, 0, "{human:?}");
        let h = human_time(&human.stdout);
        let j = json_time(&json.stdout, pointer);
        assert_eq!(h, j, "{human:?} {json:?}");
        assert_eq!(h.as_second(), expiry_s, "{human:?}");
    }
}
