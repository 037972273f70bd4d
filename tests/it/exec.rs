//! `tokenkeeper exec`: a fresh login before the command starts, only the access token under
//! `--inject env` and a lease that holds refreshes off, auth failures turned into one line and
//! exit 77, output passed through byte for byte and as it comes, signals forwarded, exit codes
//! passed through. Real child processes: `fake_claude` plays Claude Code against the stand-in's
//! API, `sh` and `sleep` play everything else.

use crate::util::*;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};
use tokenkeeper_standin::Fault;

const HOUR_MS: i64 = 3_600_000;
const DEAD: i32 = 77;
const UNAVAILABLE: i32 = 69;
const FORMATS: [&[&str]; 3] = [
    &[],
    &["--output-format", "json"],
    &["--output-format", "stream-json"],
];

fn fake() -> String {
    fake_claude().to_string_lossy().into_owned()
}

/// `tokenkeeper exec ARGS…` in the sandbox, with the fake Claude pointed at the stand-in's API.
fn exec_cmd(s: &Sandbox, args: &[&str]) -> Command {
    let mut full = vec!["exec"];
    full.extend_from_slice(args);
    let mut c = s.cmd(&full);
    c.env("ANTHROPIC_BASE_URL", s.server.base_url());
    c
}

/// The same environment as `exec_cmd`, without tokenkeeper in between.
fn direct_cmd(s: &Sandbox, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args)
        .env_clear()
        .env("HOME", s.home())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TZ", "UTC")
        .env("ANTHROPIC_BASE_URL", s.server.base_url());
    c
}

fn output(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run")
}

fn checked(s: &Sandbox, out: Output) -> Run {
    let run = Run::from(out);
    s.assert_no_leak(&run, false);
    run
}

fn run_exec(s: &Sandbox, args: &[&str]) -> Run {
    checked(s, output(exec_cmd(s, args)))
}

fn spawn(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn finish(s: &Sandbox, child: Child) -> Run {
    checked(s, child.wait_with_output().expect("wait"))
}

/// Lines tokenkeeper itself wrote to stderr.
fn own_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("tokenkeeper:"))
        .collect()
}

fn access_in_file(s: &Sandbox) -> String {
    s.creds_json()["claudeAiOauth"]["accessToken"]
        .as_str()
        .expect("access token")
        .to_string()
}

/// [`wait_for_every`], looking every 10 ms.
fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    wait_for_every(what, limit, Duration::from_millis(10), cond);
}

/// Waits for the child to exit, killing it (and failing) after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pid {} still running after {limit:?}", child.id());
        }
        sleep(Duration::from_millis(10));
    }
}

fn read_all(from: Option<impl Read>) -> String {
    let mut text = String::new();
    if let Some(mut r) = from {
        r.read_to_string(&mut text).expect("read output");
    }
    text
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) to a process this test started.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Waits for a child script to write its pid (`echo $$ > FILE`).
fn read_pid(file: &Path) -> i32 {
    let mut pid = None;
    wait_for("the child's pid file", Duration::from_secs(30), || {
        pid = fs::read_to_string(file)
            .ok()
            .filter(|t| t.ends_with('\n'))
            .and_then(|t| t.trim().parse().ok());
        pid.is_some()
    });
    pid.expect("pid")
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).expect("report")).expect("report json")
}

#[test]
fn an_expired_login_is_refreshed_before_the_child_starts_and_its_first_request_succeeds() {
    let s = Sandbox::new();
    let login = s.login(-1000);
    let report_file = s.dir.path().join("report.json");
    let mut c = exec_cmd(&s, &["--", &fake()]);
    c.env("FAKE_CLAUDE_REPORT", &report_file);
    let run = checked(&s, output(c));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "Hello from the stand-in\n", "{run:?}");
    let stats = s.server.stats();
    assert_eq!((stats.api_ok, stats.api_unauthorized), (1, 0), "{stats:?}");
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    let access = access_in_file(&s);
    assert_ne!(access, login.access_token);
    assert!(s.server.is_live_access(&access));
    let seen = report(&report_file);
    assert_eq!(
        seen["stored_token"],
        tokenkeeper::secret::fingerprint(&access),
        "the child found the refreshed token in the file"
    );
    assert!(seen["env_token"].is_null(), "--inject file is the default");
}

#[test]
fn inject_env_hands_over_only_the_access_token() {
    let s = Sandbox::new();
    s.login(-1000);
    let report_file = s.dir.path().join("report.json");
    let mut c = exec_cmd(&s, &["--inject", "env", "--", &fake()]);
    c.env("FAKE_CLAUDE_REPORT", &report_file);
    let run = checked(&s, output(c));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "Hello from the stand-in\n", "{run:?}");
    let access = access_in_file(&s);
    assert_eq!(
        report(&report_file)["env_token"],
        tokenkeeper::secret::fingerprint(&access),
        "CLAUDE_CODE_OAUTH_TOKEN holds the (refreshed) access token in the file"
    );
    let stats = s.server.stats();
    assert_eq!((stats.api_ok, stats.api_unauthorized), (1, 0), "{stats:?}");
    assert_eq!(stats.token_requests, 1, "{stats:?}");

    // The whole environment the command gets.
    let run = Run::from(output(exec_cmd(&s, &["--inject", "env", "--", "env"])));
    s.assert_no_leak(&run, true);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l == format!("CLAUDE_CODE_OAUTH_TOKEN={access}")),
        "no CLAUDE_CODE_OAUTH_TOKEN in the child's environment"
    );
    let refresh_now = s.creds_json()["claudeAiOauth"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    let mut refresh_tokens: Vec<String> = s
        .server
        .all_issued_tokens()
        .into_iter()
        .filter(|t| t.starts_with("sk-ant-ort01-"))
        .collect();
    refresh_tokens.push(refresh_now);
    for t in &refresh_tokens {
        assert!(
            !run.stdout.contains(t.as_str()),
            "a refresh token reached the child's environment"
        );
    }
    assert!(!run.stdout.contains("refreshToken"));
    assert!(!run.stdout.to_lowercase().contains("ort01"));
}

#[test]
fn a_forced_refresh_waits_while_an_env_lease_is_held_and_the_token_is_not_near_expiry() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let report_file = s.dir.path().join("report.json");
    let mut c = exec_cmd(&s, &["--inject", "env", "--", &fake()]);
    c.env("FAKE_CLAUDE_SLEEP_MS", "2000")
        .env("FAKE_CLAUDE_REPORT", &report_file);
    let mut exec = spawn(c);
    // The child is running, so the lease is held.
    wait_for("the child to start", Duration::from_secs(30), || {
        report_file.exists()
    });
    sleep(Duration::from_millis(300));
    let mut refresh = spawn(s.cmd(&["refresh", "--force"]));

    let start = Instant::now();
    let (mut exec_done, mut refresh_done) = (None, None);
    while exec_done.is_none() || refresh_done.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "exec or refresh did not finish"
        );
        if exec_done.is_none() && exec.try_wait().unwrap().is_some() {
            exec_done = Some(Instant::now());
        }
        if refresh_done.is_none() && refresh.try_wait().unwrap().is_some() {
            refresh_done = Some(Instant::now());
        }
        sleep(Duration::from_millis(10));
    }
    let exec_run = finish(&s, exec);
    let refresh_run = finish(&s, refresh);
    assert_eq!(exec_run.code, 0, "{exec_run:?}");
    assert_eq!(exec_run.stdout, "Hello from the stand-in\n", "{exec_run:?}");
    assert_eq!(refresh_run.code, 0, "{refresh_run:?}");
    assert!(
        refresh_run.stderr.contains("waiting for runs"),
        "{refresh_run:?}"
    );
    assert!(
        refresh_run.stdout.starts_with("refreshed"),
        "{refresh_run:?}"
    );
    assert!(
        refresh_done >= exec_done,
        "the refresh finished before the run holding the lease"
    );
    let stats = s.server.stats();
    assert_eq!((stats.api_ok, stats.api_unauthorized), (1, 0), "{stats:?}");
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    let requests = s.server.requests();
    let api = requests
        .iter()
        .find(|r| r.path.starts_with("/v1/messages"))
        .expect("API request");
    let token = requests
        .iter()
        .find(|r| r.path.starts_with("/v1/oauth/token"))
        .expect("token request");
    assert!(
        token.received > api.received,
        "the token was refreshed before the run used it"
    );
}

/// Starts `exec --inject env` with a child that holds its lease until `release` exists.
fn hold_lease(s: &Sandbox, extra: &[&str]) -> (Child, std::path::PathBuf) {
    let started = s.dir.path().join("started");
    let release = s.dir.path().join("release");
    let mut args = vec!["--inject", "env"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--",
        "sh",
        "-c",
        r#"touch "$STARTED"; while [ ! -e "$RELEASE" ]; do sleep 0.05; done"#,
    ]);
    let mut c = exec_cmd(s, &args);
    c.env("STARTED", &started).env("RELEASE", &release);
    let child = spawn(c);
    wait_for("the child to start", Duration::from_secs(30), || {
        started.exists()
    });
    (child, release)
}

#[test]
fn an_unforced_refresh_during_a_lease_is_deferred() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let before = s.read_creds();
    let (mut exec, release) = hold_lease(&s, &[]);
    let mut refresh = spawn(s.cmd(&["refresh", "--min-ttl", "10h"]));
    wait_exit(&mut refresh, Duration::from_secs(30));
    assert!(
        exec.try_wait().unwrap().is_none(),
        "the run ended before the refresh decided"
    );
    let refresh_run = finish(&s, refresh);
    fs::write(&release, "").unwrap();
    let exec_run = finish(&s, exec);
    assert_eq!(refresh_run.code, 0, "{refresh_run:?}");
    assert!(
        refresh_run.stdout.starts_with("not refreshed yet"),
        "{refresh_run:?}"
    );
    assert_eq!(exec_run.code, 0, "{exec_run:?}");
    assert_eq!(s.server.stats().token_requests, 0);
    assert_eq!(s.read_creds(), before);
}

#[test]
fn a_refresh_goes_ahead_despite_a_lease_when_the_token_expires_within_five_minutes() {
    let s = Sandbox::new();
    let login = s.login(4 * 60_000);
    // The run itself is content with 4 minutes.
    let (mut exec, release) = hold_lease(&s, &["--min-ttl", "1m"]);
    let mut refresh = spawn(s.cmd(&["refresh"]));
    wait_exit(&mut refresh, Duration::from_secs(30));
    let still_running = exec.try_wait().unwrap().is_none();
    let refresh_run = finish(&s, refresh);
    fs::write(&release, "").unwrap();
    let exec_run = finish(&s, exec);
    assert!(still_running, "the refresh waited for the run");
    assert_eq!(refresh_run.code, 0, "{refresh_run:?}");
    assert!(
        refresh_run.stdout.starts_with("refreshed"),
        "{refresh_run:?}"
    );
    assert!(
        own_lines(&refresh_run.stderr)
            .iter()
            .any(|l| l.starts_with("tokenkeeper: warning:") && l.contains("refreshing although")),
        "{refresh_run:?}"
    );
    assert_eq!(exec_run.code, 0, "{exec_run:?}");
    assert_eq!(s.server.stats().token_requests, 1);
    assert_ne!(access_in_file(&s), login.access_token);
}

/// A login the API refuses: its family was revoked behind tokenkeeper's back.
fn rejected_login(s: &Sandbox) {
    let login = s.login(8 * HOUR_MS);
    assert!(s.server.revoke_family_of(&login.refresh_token));
}

fn assert_loud_auth_failure(s: &Sandbox, run: &Run, command: &str) {
    assert_eq!(run.code, DEAD, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {run:?}");
    assert_eq!(own_lines(&run.stderr).len(), 1, "{run:?}");
    let line = lines[0];
    assert!(
        line.starts_with(&format!(
            "tokenkeeper: {command} failed to authenticate (401"
        )),
        "{run:?}"
    );
    assert!(line.contains(&s.creds().display().to_string()), "{run:?}");
    assert!(line.contains("tokenkeeper refresh --force"), "{run:?}");
    assert!(line.contains("claude /login"), "{run:?}");
}

#[test]
fn each_auth_failure_form_gives_the_stderr_line_and_exit_77() {
    let s = Sandbox::new();
    rejected_login(&s);
    for format in FORMATS {
        let plain = output(direct_cmd(&s, &fake(), format));
        assert_eq!(plain.status.code(), Some(1), "{format:?}");
        let program = fake();
        let mut args = vec!["--", program.as_str()];
        args.extend_from_slice(format);
        let out = output(exec_cmd(&s, &args));
        assert_eq!(
            out.stdout, plain.stdout,
            "{format:?}: the child's stdout is passed through unchanged"
        );
        let run = checked(&s, out);
        assert_loud_auth_failure(&s, &run, "fake_claude");
    }
    let stats = s.server.stats();
    assert_eq!(stats.api_ok, 0, "{stats:?}");
    assert_eq!(stats.api_unauthorized, 6, "{stats:?}");
    assert_eq!(stats.token_requests, 0, "{stats:?}");
}

#[test]
fn an_unknown_access_token_is_an_auth_failure_too() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    s.write_unknown_access_token(&login);
    let run = run_exec(&s, &["--", &fake(), "--output-format", "json"]);
    assert_loud_auth_failure(&s, &run, "fake_claude");
    assert!(run.stderr.contains("(401 authentication_error)"), "{run:?}");
}

#[test]
fn an_auth_failure_on_stderr_counts_too() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let script = "echo 'Failed to authenticate. API Error: 401 x' >&2; exit 1";
    let run = run_exec(&s, &["--", "sh", "-c", script]);
    assert_eq!(run.code, DEAD, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "the child's line, then ours: {run:?}");
    assert_eq!(lines[0], "Failed to authenticate. API Error: 401 x");
    assert!(
        lines[1].starts_with("tokenkeeper: sh failed to authenticate (401)"),
        "{run:?}"
    );
}

#[test]
fn a_login_wiped_while_the_command_ran_gives_77() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let wiped = r#"{"claudeAiOauth":{"accessToken":"","refreshToken":"","expiresAt":0}}"#;
    let mut c = exec_cmd(
        &s,
        &[
            "--",
            "sh",
            "-c",
            r#"printf '%s' "$WIPED" > "$HOME/.claude/.credentials.json"; exit 1"#,
        ],
    );
    c.env("WIPED", wiped);
    let run = checked(&s, output(c));
    assert_eq!(s.read_creds(), wiped, "the child wiped the login");
    assert_eq!(run.code, DEAD, "{run:?}");
    let own = own_lines(&run.stderr);
    assert_eq!(own.len(), 1, "{run:?}");
    assert!(own[0].contains("has been ended"), "{run:?}");
    assert!(own[0].contains(&s.creds().display().to_string()), "{run:?}");
}

#[test]
fn output_is_identical_byte_for_byte_with_and_without_the_wrapper() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    for format in FORMATS {
        let plain = output(direct_cmd(&s, &fake(), format));
        assert_eq!(plain.status.code(), Some(0), "{format:?}");
        let program = fake();
        let mut args = vec!["--", program.as_str()];
        args.extend_from_slice(format);
        let wrapped = output(exec_cmd(&s, &args));
        assert_eq!(wrapped.status.code(), Some(0), "{format:?}");
        assert!(!plain.stdout.is_empty());
        assert_eq!(wrapped.stdout, plain.stdout, "{format:?}");
        assert_eq!(wrapped.stderr, plain.stderr, "{format:?}");
        checked(&s, wrapped);
    }

    let script = r#"printf 'a\0b\377c'; printf err >&2"#;
    let plain = output(direct_cmd(&s, "sh", &["-c", script]));
    assert_eq!(plain.stdout, b"a\0b\xffc", "the shell's printf");
    let wrapped = output(exec_cmd(&s, &["--", "sh", "-c", script]));
    assert_eq!(wrapped.status.code(), Some(0));
    assert_eq!(wrapped.stdout, plain.stdout);
    assert_eq!(wrapped.stderr, b"err");
    assert_eq!(wrapped.stderr, plain.stderr);
    checked(&s, wrapped);
}

#[test]
fn a_stream_json_line_reaches_the_consumer_before_the_child_exits() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let mut c = exec_cmd(&s, &["--", &fake(), "--output-format", "stream-json"]);
    c.env("FAKE_CLAUDE_STREAM_DELAY_MS", "3000");
    let start = Instant::now();
    let mut child = spawn(c);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).expect("first line");
    let first_at = start.elapsed();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first line came only when the run ended"
    );
    assert_eq!(
        first,
        "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s-1\"}\n"
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let done_at = start.elapsed();
    let stderr = read_all(child.stderr.take());
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        done_at >= first_at + Duration::from_secs(2),
        "first line at {first_at:?}, run done at {done_at:?}"
    );
    assert!(rest.ends_with("\"result\":\"Hello\",\"session_id\":\"s-1\"}\n"));
    let run = Run {
        code: 0,
        stdout: first + &rest,
        stderr,
    };
    s.assert_no_leak(&run, false);
}

/// Runs `exec -- sh -c 'echo $$ > PIDFILE; exec REST'`, sends `sig` to tokenkeeper once the child
/// runs, and returns tokenkeeper's exit code after checking that the child is gone with it.
fn signalled(s: &Sandbox, sig: i32, rest: &str) -> Run {
    let pid_file = s.dir.path().join(format!("child-{sig}.pid"));
    let script = format!(r#"echo $$ > "$PIDFILE"; {rest}"#);
    let mut c = exec_cmd(s, &["--", "sh", "-c", &script]);
    c.env("PIDFILE", &pid_file);
    let mut tk = spawn(c);
    let child_pid = read_pid(&pid_file);
    assert!(process_exists(child_pid));
    sleep(Duration::from_millis(200));
    signal(tk.id(), sig);
    let status = wait_exit(&mut tk, Duration::from_secs(20));
    let gone = !process_exists(child_pid);
    if !gone {
        signal(child_pid as u32, libc::SIGKILL);
    }
    assert!(gone, "the child (pid {child_pid}) outlived tokenkeeper");
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: read_all(tk.stdout.take()),
        stderr: read_all(tk.stderr.take()),
    };
    s.assert_no_leak(&run, false);
    run
}

#[test]
fn sigterm_to_tokenkeeper_reaches_the_child_and_the_exit_status_reflects_it() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let run = signalled(&s, libc::SIGTERM, "exec sleep 30");
    assert_eq!(run.code, 128 + libc::SIGTERM, "{run:?}");
    let run = signalled(&s, libc::SIGINT, "exec sleep 30");
    assert_eq!(run.code, 128 + libc::SIGINT, "{run:?}");
}

#[test]
fn a_child_that_handles_sigterm_reports_its_own_status() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let run = signalled(
        &s,
        libc::SIGTERM,
        r#"trap 'echo caught; exit 0' TERM; while :; do sleep 0.05; done"#,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "caught\n", "{run:?}");
}

#[test]
fn exit_codes_pass_through() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    for code in [0, 1, 3] {
        let run = run_exec(&s, &["--", "sh", "-c", &format!("exit {code}")]);
        assert_eq!(run.code, code, "{run:?}");
        assert_eq!(run.stderr, "", "{run:?}");
    }
    // Auth-failure words from a command that then succeeds change nothing.
    let run = run_exec(
        &s,
        &["--", "sh", "-c", "echo 'Failed to authenticate'; exit 0"],
    );
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:?}");
    let run = run_exec(&s, &["--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(run.code, 128 + 9, "{run:?}");

    let run = run_exec(&s, &["--", "no-such-command-tk", "arg"]);
    assert_eq!(run.code, 127, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains("no-such-command-tk"), "{run:?}");
    assert!(run.stderr.contains("not found"), "{run:?}");

    let script = s.dir.path().join("not-executable.sh");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    set_mode(&script, 0o644);
    let script = script.to_str().unwrap();
    let run = run_exec(&s, &["--", script]);
    assert_eq!(run.code, 126, "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains(script), "{run:?}");
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn a_login_that_cannot_be_made_fresh_stops_the_run_before_it_starts() {
    let s = Sandbox::new();
    s.login(-1000);
    let marker = s.dir.path().join("started");
    let exec_marked = |s: &Sandbox| {
        let mut c = exec_cmd(s, &["--", "sh", "-c", r#"touch "$MARKER""#]);
        c.env("MARKER", &marker);
        checked(s, output(c))
    };

    s.server.push_fault(Fault::InvalidGrant);
    let run = exec_marked(&s);
    assert_eq!(run.code, DEAD, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.starts_with("tokenkeeper: error:"), "{run:?}");
    assert!(
        run.stderr.contains(&s.creds().display().to_string()),
        "{run:?}"
    );
    assert!(!marker.exists(), "the command was started");
    assert_eq!(s.server.stats().token_requests, 1);

    // The endpoint is down.
    let s = Sandbox::new();
    s.login(-1000);
    s.config("[claude]\nretry_total = \"2s\"\n");
    s.server.set_default_fault(Some(Fault::Status(503)));
    let run = exec_marked(&s);
    assert_eq!(run.code, UNAVAILABLE, "{run:?}");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("tokenkeeper: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{run:?}");
    assert_eq!(run.stderr.lines().last(), Some(errors[0]), "{run:?}");
    assert!(!marker.exists(), "the command was started");
    assert!(s.server.stats().token_requests >= 1);
}

#[test]
fn warns_once_when_a_token_variable_is_already_set_and_changes_nothing() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let before = s.read_creds();
    for var in [
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "CLAUDE_CODE_OAUTH_TOKEN",
    ] {
        let mut c = exec_cmd(&s, &["--", "sh", "-c", &format!(r#"printf %s "${var}""#)]);
        c.env(var, "users-own-value");
        let run = checked(&s, output(c));
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(run.stdout, "users-own-value", "{var}: {run:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}: {run:?}");
        assert!(lines[0].starts_with("tokenkeeper: warning:"), "{run:?}");
        assert!(lines[0].contains(var), "{run:?}");
    }
    // Two at once: still one line.
    let mut c = exec_cmd(&s, &["--", "true"]);
    c.env("ANTHROPIC_API_KEY", "k")
        .env("CLAUDE_CODE_OAUTH_TOKEN", "t");
    let run = checked(&s, output(c));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.contains("ANTHROPIC_API_KEY") && run.stderr.contains("CLAUDE_CODE_OAUTH_TOKEN"),
        "{run:?}"
    );
    assert_eq!(s.read_creds(), before);
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn retry_auth_forces_one_refresh_and_runs_the_command_again() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    // The API does not know this access token; the refresh token is the family's real one.
    s.write_unknown_access_token(&login);
    let run = run_exec(&s, &["--retry-auth", "1", "--", &fake()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with("Failed to authenticate"),
        "the first run's output is passed through: {run:?}"
    );
    assert!(run.stdout.ends_with("Hello from the stand-in\n"), "{run:?}");
    let own = own_lines(&run.stderr);
    assert_eq!(own.len(), 1, "{run:?}");
    assert!(own[0].contains("running it again"), "{run:?}");
    let stats = s.server.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!((stats.api_ok, stats.api_unauthorized), (1, 1), "{stats:?}");
    assert!(s.server.is_live_access(&access_in_file(&s)));
}

#[test]
fn retry_auth_gives_up_after_n_runs_with_the_stderr_line() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    // Every refresh works, but the API refuses every token of this login.
    s.write_login(&login, 8 * HOUR_MS);
    let script = r#"echo "Failed to authenticate. API Error: 401 Invalid authentication credentials"; exit 1"#;
    let run = run_exec(&s, &["--retry-auth", "2", "--", "sh", "-c", script]);
    assert_eq!(run.code, DEAD, "{run:?}");
    assert_eq!(run.stdout.lines().count(), 3, "three runs: {run:?}");
    let own = own_lines(&run.stderr);
    assert_eq!(own.len(), 3, "two retries and the final line: {run:?}");
    assert!(own[0].contains("(1 of 2)"), "{run:?}");
    assert!(own[1].contains("(2 of 2)"), "{run:?}");
    assert!(
        own[2].starts_with("tokenkeeper: sh failed to authenticate (401"),
        "{run:?}"
    );
    assert_eq!(s.server.stats().token_requests, 2);
}

#[test]
fn sighup_and_sigquit_are_forwarded_too() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    for sig in [libc::SIGHUP, libc::SIGQUIT] {
        let run = signalled(&s, sig, "ulimit -c 0; exec sleep 30");
        assert_eq!(run.code, 128 + sig, "signal {sig}: {run:?}");
    }
}

/// Alive and not a zombie waiting for a parent that never reaps it.
fn running(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|t| {
        !t.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn a_killed_tokenkeeper_takes_its_child_with_it() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let pid_file = s.dir.path().join("child.pid");
    let mut c = exec_cmd(
        &s,
        &["--", "sh", "-c", r#"echo $$ > "$PIDFILE"; exec sleep 30"#],
    );
    c.env("PIDFILE", &pid_file);
    let mut tk = spawn(c);
    let child_pid = read_pid(&pid_file);
    signal(tk.id(), libc::SIGKILL);
    tk.wait().unwrap();
    let start = Instant::now();
    while running(child_pid) && start.elapsed() < Duration::from_secs(10) {
        sleep(Duration::from_millis(20));
    }
    let orphaned = running(child_pid);
    if orphaned {
        signal(child_pid as u32, libc::SIGKILL);
    }
    assert!(!orphaned, "the child outlived a killed tokenkeeper");
}

/// The anonymous memory tokenkeeper holds while its command runs (what starting the command
/// copied), in KiB, as the command reads it from /proc: with a small file, then with the same
/// login padded to 1 MiB with a key tokenkeeper never reads.
#[cfg(target_os = "linux")]
fn memory_while_the_command_runs(s: &Sandbox, padded: bool) -> u64 {
    let login = s.login(8 * HOUR_MS);
    if padded {
        let mut doc = s.creds_json();
        let projects: Vec<serde_json::Value> = (0..22_000)
            .map(|i| serde_json::json!({"path": format!("/home/me/src/project-{i}"), "trusted": true}))
            .collect();
        doc["projects"] = serde_json::Value::Array(projects);
        let text = serde_json::to_string(&doc).unwrap();
        assert!(text.len() >= 1 << 20, "the padding is {} bytes", text.len());
        fs::write(s.creds(), text).unwrap();
    }
    let run = run_exec(
        s,
        &["--", "sh", "-c", "grep '^RssAnon:' /proc/$PPID/status"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(s.read_creds().contains(&login.refresh_token));
    run.stdout
        .split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no RssAnon in {run:?}"))
}

/// A large credentials file is read once and let go before the command starts, so the process
/// that starts the command (a copy of tokenkeeper until it runs the command) holds none of it.
#[cfg(target_os = "linux")]
#[test]
fn a_large_credentials_file_is_let_go_before_the_command_starts() {
    let small = memory_while_the_command_runs(&Sandbox::new(), false);
    let large = memory_while_the_command_runs(&Sandbox::new(), true);
    assert!(
        large < small + 256,
        "tokenkeeper held {large} KiB with the large file, {small} KiB with the small one"
    );
}

#[test]
fn the_child_gets_the_same_stdin_environment_and_working_directory() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let work = s.dir.path().join("work");
    fs::create_dir(&work).unwrap();
    let mut c = exec_cmd(
        &s,
        &["--", "sh", "-c", r#"cat; pwd -P; printf '%s\n' "$MY_VAR""#],
    );
    c.current_dir(&work)
        .env("MY_VAR", "my value")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"from stdin\n").unwrap();
    }
    let run = finish(&s, child);
    assert_eq!(run.code, 0, "{run:?}");
    let cwd = work.canonicalize().unwrap();
    assert_eq!(
        run.stdout,
        format!("from stdin\n{}\nmy value\n", cwd.display()),
        "{run:?}"
    );
}

#[test]
fn with_a_terminal_attached_the_child_inherits_it() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills in two new descriptors, which we then own.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty");
    use std::os::fd::FromRawFd;
    // SAFETY: both descriptors are ours alone.
    let (master, slave) = unsafe { (fs::File::from_raw_fd(master), fs::File::from_raw_fd(slave)) };
    let mut c = exec_cmd(&s, &["--", "sh", "-c", "[ -t 1 ] && [ -t 2 ]"]);
    c.stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let mut child = c.spawn().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    drop(c);
    drop(master);
    assert_eq!(
        status.code(),
        Some(0),
        "the child's stdout and stderr are the terminal itself"
    );
}

#[test]
fn a_consumer_that_stops_reading_ends_the_command_as_without_the_wrapper() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let first_line_then_close = |c: Command| {
        let mut child = spawn(c);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "y\n");
        drop(out);
        wait_exit(&mut child, Duration::from_secs(30))
    };
    use std::os::unix::process::ExitStatusExt;
    let plain = first_line_then_close(direct_cmd(&s, "yes", &[]));
    assert_eq!(plain.signal(), Some(libc::SIGPIPE));
    let wrapped = first_line_then_close(exec_cmd(&s, &["--", "yes"]));
    assert_eq!(wrapped.code(), Some(128 + libc::SIGPIPE));
}

#[test]
fn after_a_refresh_before_the_run_signals_still_belong_to_the_child() {
    // The pre-flight refresh installs the refresh-time signal handling; once the command runs,
    // a signal must still go to the command alone, and its own exit status must stand.
    let s = Sandbox::new();
    s.login(-1000);
    let run = signalled(
        &s,
        libc::SIGTERM,
        r#"trap 'echo caught; exit 0' TERM; while :; do sleep 0.05; done"#,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "caught\n", "{run:?}");
    assert_eq!(s.server.stats().token_requests, 1);
}

#[test]
fn retry_auth_uses_a_token_rotated_during_the_run_without_forcing_another_refresh() {
    let s = Sandbox::new();
    s.login(8 * HOUR_MS);
    let marker = s.dir.path().join("first-run-done");
    // First run: another process rotates the login while the command runs (the command's token
    // is revoked), and the command fails to authenticate. Second run: it works.
    let script = format!(
        r#"if [ -e "{m}" ]; then echo ok; exit 0; fi
touch "{m}"; "{bin}" refresh --force >/dev/null 2>&1
echo 'Failed to authenticate. API Error: 401 Invalid authentication credentials'; exit 1"#,
        m = marker.display(),
        bin = BIN
    );
    let run = run_exec(&s, &["--retry-auth", "1", "--", "sh", "-c", &script]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("using the login's new token"),
        "{run:?}"
    );
    assert_eq!(
        s.server.stats().token_requests,
        1,
        "only the other process's refresh: no forced refresh on top"
    );
}

/// With 20 minutes left and the endpoint down, the run goes on with the token in hand (a warning
/// says why, once) instead of failing a run that could succeed; below the usable floor it fails
/// as before.
#[test]
fn a_usable_token_in_hand_runs_the_command_when_the_refresh_cannot_be_done() {
    let s = Sandbox::new();
    s.login(20 * 60_000);
    s.config("[claude]\nretry_total = \"3s\"\nrequest_timeout = \"1s\"\n");
    s.server
        .set_default_fault(Some(tokenkeeper_standin::Fault::Status(503)));
    for args in [&["exec", "--", "true"][..], &["token"]] {
        let run = s.run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        let warnings: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.contains("going on with the current access token"))
            .collect();
        assert_eq!(warnings.len(), 1, "{args:?}: {run:?}");
        assert!(warnings[0].contains("HTTP 503"), "{run:?}");
    }
    assert!(s.server.stats().token_requests >= 2);
    s.login(2 * 60_000);
    let run = s.run(&["exec", "--", "true"]);
    assert_eq!(
        run.code, 69,
        "below the floor the refresh is needed: {run:?}"
    );
}

/// With the default retry budget (60 s), a run holding a usable token tries the refresh for
/// `exec`'s short budget only (10 s), then goes on with the token in hand: a failing endpoint
/// delays the command by seconds, not a minute.
#[test]
fn a_usable_token_in_hand_waits_only_the_short_default_budget_for_a_failing_refresh() {
    let s = Sandbox::new();
    s.login(20 * 60_000);
    s.server
        .set_default_fault(Some(tokenkeeper_standin::Fault::Status(503)));
    let started = std::time::Instant::now();
    let run = run_within(&mut s.cmd(&["exec", "--", "true"]), Duration::from_secs(50));
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("going on with the current access token"),
        "{run:?}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the run waited {took:?}, the whole 60 s budget rather than exec's 10 s"
    );
    assert!(s.server.stats().token_requests >= 2);
}
