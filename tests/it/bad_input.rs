//! Bad input: every broken, missing, unreadable or dangerous credentials file (and a bad flag or
//! config key) gets the right exit code and one clear line naming the path and the fix, leaves
//! the credentials folder exactly as it was, and never reaches the token endpoint.

use crate::util::*;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const HOUR_MS: i64 = 3_600_000;
const MISSING_OR_MALFORMED: i32 = 78;
const DEAD: i32 = 77;
const USAGE: i32 = 2;

/// One entry of the credentials folder, as far as anyone could notice a change to it.
#[derive(Debug, PartialEq)]
struct Entry {
    name: String,
    mode: u32,
    mtime: SystemTime,
    bytes: Option<Vec<u8>>,
    link: Option<PathBuf>,
}

/// The credentials folder's own mtime (a temp file created and renamed away still bumps it)
/// and every entry in it.
#[derive(Debug, PartialEq)]
struct FolderState {
    mtime: SystemTime,
    entries: Vec<Entry>,
}

fn folder(sandbox: &Sandbox) -> PathBuf {
    sandbox
        .creds()
        .parent()
        .expect("creds folder")
        .to_path_buf()
}

fn folder_state(sandbox: &Sandbox) -> FolderState {
    let dir = folder(sandbox);
    let mut entries: Vec<Entry> = fs::read_dir(&dir)
        .expect("read creds folder")
        .flatten()
        .map(|e| {
            let path = e.path();
            let meta = fs::symlink_metadata(&path).expect("stat entry");
            Entry {
                name: e.file_name().to_string_lossy().into_owned(),
                mode: meta.permissions().mode(),
                mtime: meta.modified().expect("mtime"),
                bytes: meta.is_file().then(|| fs::read(&path).ok()).flatten(),
                link: fs::read_link(&path).ok(),
            }
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mtime = fs::metadata(&dir)
        .and_then(|m| m.modified())
        .expect("folder mtime");
    FolderState { mtime, entries }
}

fn write_creds(sandbox: &Sandbox, text: &str) {
    fs::write(sandbox.creds(), text).expect("write creds");
    set_mode(&sandbox.creds(), 0o600);
}

/// A Claude-shaped login with real stand-in tokens, edited by `edit` before it is written.
fn write_edited_login(sandbox: &Sandbox, edit: impl Fn(String) -> String) {
    let login = sandbox.server.issue_login();
    let text = claude_json(
        &login.access_token,
        &login.refresh_token,
        now_ms() + 8 * HOUR_MS,
    );
    write_creds(sandbox, &edit(text));
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// Runs the binary (as `nobody` when asked and we are root) and checks that no token leaked.
fn run_as(sandbox: &Sandbox, args: &[&str], nobody: bool) -> Run {
    let mut cmd = sandbox.cmd(args);
    if nobody {
        as_nobody(&mut cmd);
    }
    let run = Run::from(cmd.output().expect("run tokenkeeper"));
    sandbox.assert_no_leak(&run, args.first() == Some(&"token"));
    run
}

fn assert_one_stderr_line(run: &Run, prefix: &str, needles: &[&str]) {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want exactly one stderr line: {run:?}");
    assert!(
        lines[0].starts_with(prefix),
        "stderr should start with {prefix:?}: {run:?}"
    );
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "stderr should name {needle:?}: {run:?}"
        );
    }
}

fn assert_untouched(sandbox: &Sandbox, before: &FolderState) {
    assert_eq!(
        &folder_state(sandbox),
        before,
        "the credentials folder changed"
    );
    assert!(
        lock_dirs(sandbox).is_empty(),
        "a lock was left: {:?}",
        lock_dirs(sandbox)
    );
    assert_eq!(
        sandbox.server.stats().token_requests,
        0,
        "a token request was made"
    );
}

/// `args` exits with `code`, prints nothing on stdout and one error line holding every needle,
/// changes nothing in the credentials folder and makes no token request.
fn assert_refused_as(sandbox: &Sandbox, args: &[&str], nobody: bool, code: i32, needles: &[&str]) {
    let before = folder_state(sandbox);
    let run = run_as(sandbox, args, nobody);
    assert_eq!(run.code, code, "{args:?}: {run:?}");
    assert!(run.stdout.is_empty(), "{args:?} printed on stdout: {run:?}");
    assert_one_stderr_line(&run, "tokenkeeper: error: ", needles);
    assert_untouched(sandbox, &before);
}

fn assert_refused(sandbox: &Sandbox, args: &[&str], code: i32, needles: &[&str]) {
    assert_refused_as(sandbox, args, false, code, needles);
}

/// `status` (human and JSON) reports `state` for the credentials path and exits with `code`,
/// changing nothing.
fn assert_status_as(sandbox: &Sandbox, nobody: bool, code: i32, state: &str, needles: &[&str]) {
    let before = folder_state(sandbox);
    let run = run_as(sandbox, &["status"], nobody);
    assert_eq!(run.code, code, "status: {run:?}");
    assert!(
        run.stdout.starts_with(&format!("claude: {state}")),
        "status: {run:?}"
    );
    assert!(
        run.stdout.contains(&path_text(&sandbox.creds())),
        "status: {run:?}"
    );
    for needle in needles {
        assert!(
            run.stdout.contains(needle),
            "status should name {needle:?}: {run:?}"
        );
    }
    let run = run_as(sandbox, &["status", "--json"], nobody);
    assert_eq!(run.code, code, "status --json: {run:?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("status --json parses");
    let login = &json["logins"][0];
    assert_eq!(login["state"], state, "{json}");
    assert_eq!(login["credentials"], path_text(&sandbox.creds()), "{json}");
    assert_untouched(sandbox, &before);
}

/// `refresh` and `token` fail with `code` and one line naming the path and every needle;
/// `status` reports `state` with the same code.
fn assert_every_command_refuses(sandbox: &Sandbox, code: i32, state: &str, needles: &[&str]) {
    let path = path_text(&sandbox.creds());
    let mut all = vec![path.as_str()];
    all.extend_from_slice(needles);
    for args in [&["refresh"][..], &["refresh", "--force"], &["token"]] {
        assert_refused(sandbox, args, code, &all);
    }
    assert_status_as(sandbox, false, code, state, needles);
}

#[test]
fn missing_file_is_reported_with_the_login_command() {
    let sandbox = Sandbox::new();
    assert_every_command_refuses(
        &sandbox,
        MISSING_OR_MALFORMED,
        "missing",
        &["claude /login"],
    );
    assert!(!sandbox.creds().exists(), "no file may be created");
}

#[test]
fn empty_file_is_malformed_and_left_untouched() {
    let sandbox = Sandbox::new();
    write_creds(&sandbox, "");
    assert_every_command_refuses(
        &sandbox,
        MISSING_OR_MALFORMED,
        "malformed",
        &["empty", "claude /login"],
    );
}

#[test]
fn invalid_json_is_malformed_naming_line_and_column() {
    let sandbox = Sandbox::new();
    write_creds(&sandbox, "{\n  \"claudeAiOauth\": ,\n}\n");
    assert_every_command_refuses(
        &sandbox,
        MISSING_OR_MALFORMED,
        "malformed",
        &["not valid JSON", "line 2, column 20", "claude /login"],
    );
}

#[test]
fn a_byte_order_mark_is_named_as_the_cause() {
    let sandbox = Sandbox::new();
    write_edited_login(&sandbox, |text| format!("\u{feff}{text}"));
    assert_every_command_refuses(
        &sandbox,
        MISSING_OR_MALFORMED,
        "malformed",
        &["byte-order mark", "claude /login"],
    );
}

#[test]
fn top_level_array_is_the_wrong_shape() {
    let sandbox = Sandbox::new();
    write_edited_login(&sandbox, |text| format!("[{text}]"));
    assert_every_command_refuses(
        &sandbox,
        MISSING_OR_MALFORMED,
        "malformed",
        &["not a JSON object", "claude /login"],
    );
}

#[test]
fn file_without_claude_ai_oauth_is_malformed() {
    let sandbox = Sandbox::new();
    write_creds(&sandbox, r#"{"mcpOAuth":{"server":{"accessToken":"x"}}}"#);
    assert_every_command_refuses(
        &sandbox,
        MISSING_OR_MALFORMED,
        "malformed",
        &["claudeAiOauth", "claude /login"],
    );
}

#[test]
fn access_token_that_is_not_a_string_is_malformed() {
    let sandbox = Sandbox::new();
    write_edited_login(&sandbox, |text| {
        let start = text.find("\"accessToken\":\"").expect("accessToken") + 14;
        let end = start + 1 + text[start + 1..].find('"').expect("end of token");
        format!("{}42{}", &text[..start], &text[end + 1..])
    });
    assert!(
        sandbox.read_creds().contains("\"accessToken\":42,"),
        "{}",
        sandbox.read_creds()
    );
    assert_every_command_refuses(
        &sandbox,
        MISSING_OR_MALFORMED,
        "malformed",
        &["accessToken", "not a string", "claude /login"],
    );
}

#[test]
fn scopes_without_user_inference_are_malformed() {
    let sandbox = Sandbox::new();
    write_edited_login(&sandbox, |text| text.replace("\"user:inference\",", ""));
    assert!(!sandbox.read_creds().contains("user:inference"));
    assert_every_command_refuses(
        &sandbox,
        MISSING_OR_MALFORMED,
        "malformed",
        &["user:inference", "claude /login"],
    );
}

#[test]
fn wiped_tokens_are_a_dead_login_and_left_untouched() {
    let sandbox = Sandbox::new();
    write_creds(&sandbox, &claude_json("", "", 0));
    assert_every_command_refuses(&sandbox, DEAD, "dead", &["dead", "claude /login"]);
}

#[test]
fn symlink_loop_is_malformed_and_both_links_survive() {
    let sandbox = Sandbox::new();
    let other = folder(&sandbox).join("other.json");
    symlink(&other, sandbox.creds()).expect("link creds -> other");
    symlink(sandbox.creds(), &other).expect("link other -> creds");
    assert_every_command_refuses(
        &sandbox,
        MISSING_OR_MALFORMED,
        "malformed",
        &["symlink loop"],
    );
}

#[test]
fn dangling_symlink_is_a_missing_login_and_its_target_is_not_created() {
    let sandbox = Sandbox::new();
    let gone = folder(&sandbox).join("gone.json");
    symlink(&gone, sandbox.creds()).expect("dangling link");
    assert_every_command_refuses(
        &sandbox,
        MISSING_OR_MALFORMED,
        "missing",
        &["claude /login"],
    );
    assert!(!gone.exists(), "the link's target must not be created");
}

#[test]
fn expired_login_in_a_folder_without_write_permission_is_refused_before_any_request() {
    let sandbox = Sandbox::new();
    sandbox.login(-HOUR_MS);
    give_to_nobody(sandbox.dir.path());
    set_mode(&folder(&sandbox), 0o555);
    let folder_text = path_text(&folder(&sandbox));
    for args in [&["refresh"][..], &["token"]] {
        assert_refused_as(
            &sandbox,
            args,
            true,
            MISSING_OR_MALFORMED,
            &[&folder_text, "writable"],
        );
    }
    set_mode(&folder(&sandbox), 0o755);
}

#[test]
fn fresh_login_in_a_folder_without_write_permission_needs_no_write() {
    let sandbox = Sandbox::new();
    sandbox.login(8 * HOUR_MS);
    give_to_nobody(sandbox.dir.path());
    set_mode(&folder(&sandbox), 0o555);
    let before = folder_state(&sandbox);
    let mut cmd = sandbox.cmd(&["refresh"]);
    as_nobody(&mut cmd);
    let run = Run::from(cmd.output().expect("run tokenkeeper"));
    sandbox.assert_no_leak(&run, false);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("not due"), "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    assert_untouched(&sandbox, &before);
    set_mode(&folder(&sandbox), 0o755);
}

#[test]
fn unreadable_file_is_refused_naming_its_permissions() {
    let sandbox = Sandbox::new();
    sandbox.login(-HOUR_MS);
    give_to_nobody(sandbox.dir.path());
    set_mode(&sandbox.creds(), 0o000);
    let path = path_text(&sandbox.creds());
    for args in [&["refresh"][..], &["refresh", "--force"], &["token"]] {
        assert_refused_as(
            &sandbox,
            args,
            true,
            MISSING_OR_MALFORMED,
            &[&path, "permissions"],
        );
    }
    assert_status_as(
        &sandbox,
        true,
        MISSING_OR_MALFORMED,
        "unreadable",
        &["permissions"],
    );
}

#[test]
fn group_or_world_readable_file_warns_once_naming_chmod_600_and_is_left_as_is() {
    for mode in [0o644, 0o640, 0o604] {
        let sandbox = Sandbox::new();
        let login = sandbox.login(8 * HOUR_MS);
        set_mode(&sandbox.creds(), mode);
        let path = path_text(&sandbox.creds());
        let fix = format!("chmod 600 {path}");
        for args in [&["refresh"][..], &["token"]] {
            let before = folder_state(&sandbox);
            let run = run_as(&sandbox, args, false);
            assert_eq!(run.code, 0, "mode {mode:o} {args:?}: {run:?}");
            assert_one_stderr_line(&run, "tokenkeeper: warning: ", &[&path, &fix]);
            assert_untouched(&sandbox, &before);
        }
        let run = run_as(&sandbox, &["token"], false);
        assert_eq!(run.stdout, format!("{}\n", login.access_token));
    }
}

#[test]
fn min_ttl_without_a_unit_is_a_usage_error() {
    let sandbox = Sandbox::new();
    sandbox.login(-HOUR_MS);
    for args in [
        &["refresh", "--min-ttl", "90"][..],
        &["token", "--min-ttl", "90"],
    ] {
        let before = folder_state(&sandbox);
        let run = run_as(&sandbox, args, false);
        assert_eq!(run.code, USAGE, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains("--min-ttl") && first.contains("90s"),
            "{run:?}"
        );
        assert_untouched(&sandbox, &before);
    }
}

#[test]
fn unknown_config_key_is_refused_naming_the_file_and_the_key() {
    let sandbox = Sandbox::new();
    sandbox.login(-HOUR_MS);
    let config = sandbox.config("[claude]\nmin_tll = \"2h\"\n");
    let config_text = path_text(&config);
    for args in [&["refresh"][..], &["token"], &["status"]] {
        assert_refused(
            &sandbox,
            args,
            MISSING_OR_MALFORMED,
            &[&config_text, "min_tll"],
        );
    }
    let named = sandbox.dir.path().join("elsewhere.toml");
    fs::write(&named, "[claude]\nretry_totl = \"5s\"\n").expect("write config");
    let named_text = path_text(&named);
    let args = ["--config", named_text.as_str(), "refresh"];
    assert_refused(
        &sandbox,
        &args,
        MISSING_OR_MALFORMED,
        &[&named_text, "retry_totl"],
    );
}

#[test]
fn help_never_shows_the_store_password_from_the_environment() {
    let s = Sandbox::new();
    let run = Run::from(
        s.cmd(&["--help"])
            .env(
                "TOKENKEEPER_STORE",
                "postgres://bot:hunter2@db.example/fleet",
            )
            .output()
            .expect("run tokenkeeper"),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("TOKENKEEPER_STORE"), "{}", run.stdout);
    assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
}

/// A mistyped provider is the command line's mistake (exit 2), with the nearest name; an option
/// of exec's mistyped before `--` is not a program to run.
#[test]
fn typos_on_the_command_line_are_usage_errors_with_a_suggestion() {
    let sandbox = Sandbox::new();
    sandbox.login(8 * 3_600_000);
    let run = sandbox.run(&["--provider", "claud", "status"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("did you mean 'claude'?"), "{run:?}");
    assert!(!run.stderr.contains("config file"), "{run:?}");
    let run = sandbox.run(&["exec", "--min-tll", "1h", "--", "true"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("'--min-tll'") && run.stderr.contains("before `--`"),
        "{run:?}"
    );
}

/// No `--help` of any command, at any depth, shows the value of a variable that may hold a
/// secret: the store's password, a webhook's secret path, a notify command's token, a token
/// URL's credentials. The variables' names stay, so people know they exist.
#[test]
fn no_help_shows_a_value_from_the_environment_that_may_hold_a_secret() {
    let s = Sandbox::new();
    let secrets = [
        (
            "TOKENKEEPER_STORE",
            "postgres://bot:pw-store-77@db.example/fleet",
        ),
        (
            "TOKENKEEPER_WEBHOOK",
            "https://discord.com/api/webhooks/1/pw-hook-77",
        ),
        (
            "TOKENKEEPER_NOTIFY_COMMAND",
            "curl -H 'Authorization: pw-notify-77' https://ntfy.example",
        ),
        (
            "TOKENKEEPER_TOKEN_URL",
            "https://user:pw-url-77@proxy.example/oauth/token",
        ),
    ];
    let help = |path: &[String]| {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let mut cmd = s.cmd(&args);
        for (k, v) in secrets {
            cmd.env(k, v);
        }
        let run = Run::from(cmd.output().expect("run tokenkeeper"));
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        run.stdout
    };
    let mut seen = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let text = help(&path);
        assert!(
            !text.contains("pw-"),
            "{path:?} --help shows a secret:\n{text}"
        );
        for sub in text
            .lines()
            .skip_while(|l| *l != "Commands:")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| *name != "help")
        {
            let mut deeper = path.clone();
            deeper.push(sub.to_string());
            todo.push(deeper);
        }
        seen.push((path, text));
    }
    let all: String = seen.iter().map(|(_, t)| t.as_str()).collect();
    for (name, _) in secrets {
        assert!(all.contains(name), "{name} is named somewhere");
    }
    for nested in [
        ["daemon"].as_slice(),
        &["service", "install"],
        &["fleet", "push"],
    ] {
        assert!(
            seen.iter().any(|(p, _)| p == nested),
            "{nested:?} not reached: {:?}",
            seen.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
    }
}
