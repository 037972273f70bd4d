//! `tokenkeeper doctor`: one line per check, exit 0 when nothing fails, and never a refresh, a
//! write or a token sent or shown.

use crate::util::*;
use std::fs;

fn checks(run: &Run) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("doctor --json parses");
    v["checks"].as_array().expect("a checks array").clone()
}

fn find<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
}

#[test]
fn a_healthy_login_passes_with_warnings_only_and_nothing_is_spent() {
    let s = Sandbox::new();
    let login = s.login(6 * 3_600_000);
    let before = s.read_creds();
    let run = s.run(&["doctor"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("ok    config"), "{run:?}");
    assert!(run.stdout.contains("none, defaults"), "{run:?}");
    assert!(run.stdout.contains("login claude"), "{run:?}");
    assert!(run.stdout.contains("endpoint claude"), "{run:?}");
    assert!(!run.stdout.contains("fail  "), "{run:?}");
    let quiet = s.run(&["doctor", "-q"]);
    assert_eq!(quiet.code, 0, "{quiet:?}");
    assert!(!quiet.stdout.contains("ok    "), "{quiet:?}");
    assert!(!quiet.stdout.contains("checks:"), "{quiet:?}");

    let run = s.run(&["doctor", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let checks = checks(&run);
    for c in &checks {
        assert!(
            ["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        assert!(c["detail"].is_string() && c.get("fix").is_some(), "{c}");
        assert_ne!(c["status"], "fail", "{c}");
    }
    assert_eq!(find(&checks, "login claude")["status"], "ok");
    assert_eq!(find(&checks, "endpoint claude")["status"], "ok");
    for name in [
        "config",
        "environment",
        "clock",
        "service",
        "daemon",
        "claude",
    ] {
        find(&checks, name);
    }

    // The endpoint was probed, with the dummy refresh token and never the real one.
    let requests = s.server.requests();
    let token_requests: Vec<_> = requests.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(token_requests.len(), 3, "one probe per run: {requests:?}");
    for r in &requests {
        assert!(!r.body.contains(&login.refresh_token), "{}", r.body);
        assert!(!r.body.contains(&login.access_token), "{}", r.body);
    }
    assert!(token_requests[0].body.contains("tokenkeeper-doctor-probe"));
    assert_eq!(s.server.stats().refreshes_ok, 0);
    // Nothing written: the login as it was, no state folder.
    assert_eq!(s.read_creds(), before);
    assert!(!s.state_dir().exists());
}

#[test]
fn a_dead_login_fails_with_the_command_that_logs_in_again() {
    let s = Sandbox::new();
    fs::write(s.creds(), claude_json("", "", now_ms() - 1)).unwrap();
    set_mode(&s.creds(), 0o600);
    let run = s.run(&["doctor"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("fail  login claude"), "{run:?}");
    assert!(run.stdout.contains("claude /login"), "{run:?}");
    let run = s.run(&["doctor", "--json"]);
    assert_ne!(run.code, 0, "{run:?}");
    let checks = checks(&run);
    let login = find(&checks, "login claude");
    assert_eq!(login["status"], "fail");
    assert!(login["fix"].as_str().unwrap().contains("claude /login"));
}

#[test]
fn a_missing_login_fails() {
    let s = Sandbox::new();
    let run = s.run(&["doctor", "--json"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert_eq!(find(&checks(&run), "login claude")["status"], "fail");
}

#[test]
fn an_overriding_variable_is_named_never_its_value() {
    let s = Sandbox::new();
    s.login(6 * 3_600_000);
    let value = "sk-ant-api03-doctor-secret-value";
    let out = s
        .cmd(&["doctor"])
        .env("ANTHROPIC_API_KEY", value)
        .output()
        .unwrap();
    let run = Run::from(out);
    s.assert_no_leak(&run, false);
    assert_eq!(run.code, 0, "a warning alone does not fail: {run:?}");
    assert!(
        run.stdout.contains("warn  env ANTHROPIC_API_KEY"),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains(value) && !run.stderr.contains(value),
        "{run:?}"
    );
}

#[test]
fn an_unreachable_endpoint_fails_naming_the_step() {
    let s = Sandbox::new();
    s.login(6 * 3_600_000);
    let out = s
        .cmd(&["doctor", "--json"])
        .env("TOKENKEEPER_TOKEN_URL", "https://127.0.0.1:9/")
        .output()
        .unwrap();
    let run = Run::from(out);
    s.assert_no_leak(&run, false);
    assert_ne!(run.code, 0, "{run:?}");
    let checks = checks(&run);
    let endpoint = find(&checks, "endpoint claude");
    assert_eq!(endpoint["status"], "fail", "{endpoint}");
    assert!(
        endpoint["detail"]
            .as_str()
            .unwrap()
            .contains("cannot connect to 127.0.0.1:9"),
        "{endpoint}"
    );
    assert!(endpoint["fix"].as_str().unwrap().contains("HTTPS_PROXY"));
    assert_eq!(find(&checks, "clock")["status"], "warn");
}

#[test]
fn a_broken_config_file_fails_with_its_error() {
    let s = Sandbox::new();
    s.login(6 * 3_600_000);
    let path = s.config("min_ttl = [\n");
    let run = s.run(&["doctor", "--json"]);
    assert_ne!(run.code, 0, "{run:?}");
    let checks = checks(&run);
    let config = find(&checks, "config");
    assert_eq!(config["status"], "fail");
    assert!(
        config["detail"]
            .as_str()
            .unwrap()
            .contains(&path.display().to_string()),
        "{config}"
    );
    assert_eq!(s.server.stats().token_requests, 0);
}

/// The service installed, then enabled; lingering off, then on; the daemon running, with the
/// logins it keeps: each says so in its own line, a warning with the fix until it holds.
#[test]
fn the_service_lingering_and_the_daemon_are_each_checked() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Stdio;
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let bin = s.dir.path().join("fakebin");
    fs::create_dir_all(&bin).unwrap();
    let loginctl = bin.join("loginctl");
    let linger = |on: &str| {
        fs::write(&loginctl, format!("#!/bin/sh\necho Linger={on}\n")).unwrap();
        fs::set_permissions(&loginctl, fs::Permissions::from_mode(0o755)).unwrap();
    };
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let doctor = || {
        let out = s
            .cmd(&["doctor", "--json"])
            .env("PATH", &path)
            .env("USER", "me")
            .output()
            .unwrap();
        let run = Run::from(out);
        s.assert_no_leak(&run, false);
        checks(&run)
    };
    let detail = |c: &serde_json::Value| c["detail"].as_str().unwrap_or("").to_string();

    linger("no");
    let before = doctor();
    let service = find(&before, "service");
    assert_eq!(service["status"], "warn", "{service}");
    assert!(detail(service).contains("not installed"), "{service}");
    assert!(
        service["fix"]
            .as_str()
            .unwrap()
            .contains("tokenkeeper service install"),
        "{service}"
    );
    let linger_off = find(&before, "linger");
    assert_eq!(linger_off["status"], "warn", "{linger_off}");
    assert!(
        linger_off["fix"]
            .as_str()
            .unwrap()
            .contains("loginctl enable-linger me"),
        "{linger_off}"
    );
    let daemon = find(&before, "daemon");
    assert_eq!(daemon["status"], "warn", "{daemon}");
    assert!(detail(daemon).contains("not running"), "{daemon}");

    let run = Run::from(
        s.cmd(&["service", "install", "--platform", "systemd"])
            .env("PATH", &path)
            .env("USER", "me")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let unit = s.dir.path().join("config/systemd/user/tokenkeeper.service");
    assert!(unit.exists(), "{run:?}");
    let installed = doctor();
    let service = find(&installed, "service");
    assert_eq!(service["status"], "ok", "{service}");
    assert!(
        detail(service).contains(&unit.display().to_string()),
        "{service}"
    );
    assert_eq!(find(&installed, "service enabled")["status"], "warn");

    // What `systemctl --user enable` makes, and lingering on.
    let wants = unit.with_file_name("default.target.wants");
    fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(&unit, wants.join("tokenkeeper.service")).unwrap();
    linger("yes");
    let mut d = s
        .cmd(&["daemon"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let record = s.state_dir().join("daemon/running.json");
    wait_for(
        "the daemon's record",
        std::time::Duration::from_secs(10),
        || record.exists(),
    );
    let after = doctor();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let _ = d.wait();
    assert_eq!(find(&after, "service enabled")["status"], "ok");
    assert_eq!(find(&after, "linger")["status"], "ok");
    let daemon = find(&after, "daemon");
    assert_eq!(daemon["status"], "ok", "{daemon}");
    assert!(
        detail(daemon).contains(&format!(
            "running (pid {}), keeping claude at {}",
            d.id(),
            s.creds().display()
        )),
        "{daemon}"
    );
}
