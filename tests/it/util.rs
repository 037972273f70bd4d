//! Test support: a sandbox home with a Claude Code login, the loopback OAuth stand-in, and a
//! way to run the real binary and check that no token leaks from it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use tokenkeeper_standin::{IssuedLogin, StandinConfig, StandinServer};

pub const BIN: &str = env!("CARGO_BIN_EXE_tokenkeeper");

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub server: StandinServer,
}

pub fn now_ms() -> i64 {
    tokenkeeper::login::now_ms()
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox::with(StandinConfig::default())
    }

    pub fn with(config: StandinConfig) -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("home/.claude")).expect("claude folder");
        let server = StandinServer::start(config).expect("stand-in server");
        Sandbox { dir, server }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn creds(&self) -> PathBuf {
        self.home().join(".claude/.credentials.json")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state/tokenkeeper")
    }

    /// Writes a Claude-shaped login for `login`, expiring `expires_in_ms` from now; returns the
    /// exact text written.
    pub fn write_login(&self, login: &IssuedLogin, expires_in_ms: i64) -> String {
        let text = claude_json(
            &login.access_token,
            &login.refresh_token,
            now_ms() + expires_in_ms,
        );
        fs::write(self.creds(), &text).expect("write creds");
        set_mode(&self.creds(), 0o600);
        text
    }

    /// A fresh login from the stand-in, written as expiring in `expires_in_ms`.
    pub fn login(&self, expires_in_ms: i64) -> IssuedLogin {
        let login = self.server.issue_login();
        self.write_login(&login, expires_in_ms);
        login
    }

    /// A login with the family's real refresh token but an access token the API does not know,
    /// expiring in 8 h: the next API call fails with 401 although the file looks fresh.
    pub fn write_unknown_access_token(&self, login: &IssuedLogin) {
        let bogus = format!("sk-ant-oat01-{}", "x".repeat(86));
        let text = claude_json(&bogus, &login.refresh_token, now_ms() + 8 * 3_600_000);
        fs::write(self.creds(), text).expect("write creds");
        set_mode(&self.creds(), 0o600);
    }

    pub fn read_creds(&self) -> String {
        fs::read_to_string(self.creds()).expect("read creds")
    }

    pub fn creds_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.read_creds()).expect("creds parse")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_clear()
            .env("HOME", self.home())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("TOKENKEEPER_TOKEN_URL", self.server.token_url())
            .env("TZ", "UTC");
        c
    }

    /// Runs the binary to completion and checks that no token reached its output, its state
    /// folder or anywhere else but the credentials file (and a recovery file).
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cmd(args).output().expect("run tokenkeeper");
        let run = Run::from(out);
        self.assert_no_leak(&run, args.first() == Some(&"token"));
        run
    }

    pub fn assert_no_leak(&self, run: &Run, stdout_may_hold_token: bool) {
        assert_no_token_leak(
            &self.server.all_issued_tokens(),
            &self.state_dir(),
            run,
            stdout_may_hold_token,
        );
    }

    /// Writes a config file and returns its path.
    pub fn config(&self, toml: &str) -> PathBuf {
        let path = self.dir.path().join("config/tokenkeeper/config.toml");
        fs::create_dir_all(path.parent().expect("parent")).expect("config dir");
        fs::write(&path, toml).expect("write config");
        path
    }
}

/// Waits until `cond` holds, looking every 20 ms; fails the test after `limit`.
pub fn wait_for(what: &str, limit: std::time::Duration, cond: impl FnMut() -> bool) {
    wait_for_every(what, limit, std::time::Duration::from_millis(20), cond);
}

/// Waits until `cond` holds, looking every `every`; fails the test after `limit`.
pub fn wait_for_every(
    what: &str,
    limit: std::time::Duration,
    every: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

/// No token in `tokens` appears in the run's stderr, its stdout (unless it may hold one: the
/// stdout of `token`), or any file of the state folder but the recovery files.
pub fn assert_no_token_leak(
    tokens: &[String],
    state_dir: &Path,
    run: &Run,
    stdout_may_hold_token: bool,
) {
    for token in tokens {
        assert!(
            !run.stderr.contains(token),
            "token leaked to stderr: {}",
            run.stderr
        );
        if !stdout_may_hold_token {
            assert!(
                !run.stdout.contains(token),
                "token leaked to stdout: {}",
                run.stdout
            );
        }
        for file in files_under(state_dir) {
            if file.parent().is_some_and(|p| p.ends_with("recovery")) {
                continue;
            }
            let text = fs::read_to_string(&file).unwrap_or_default();
            assert!(!text.contains(token), "token leaked to {}", file.display());
        }
    }
}

/// A client like Claude Code: calls the stand-in's API with the access token `read` gives; after
/// a 401 it reads the token again for a moment (a refresh revokes the old token a few
/// milliseconds before the new one is written; Claude then waits on the refresh lock and adopts),
/// up to three times 100 ms apart, before counting a failure.
pub fn claude_like_call(server: &StandinServer, read: impl Fn() -> String) -> bool {
    let api = server.api_url();
    let call = |token: &str| {
        ureq::get(&api)
            .header("Authorization", &format!("Bearer {token}"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    (0..4).any(|attempt| {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        call(&read()) == 200
    })
}

pub fn claude_json(access: &str, refresh: &str, expires_at: i64) -> String {
    format!(
        r#"{{"claudeAiOauth":{{"accessToken":"{access}","refreshToken":"{refresh}","expiresAt":{expires_at},"scopes":["user:inference","user:profile","user:sessions:claude_code"],"subscriptionType":"max","rateLimitTier":null}}}}"#
    )
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Lock directories (Claude's) present in the sandbox's home.
pub fn lock_dirs(sandbox: &Sandbox) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in [sandbox.home().join(".claude"), sandbox.home()] {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && p.to_string_lossy().ends_with(".lock") {
                found.push(p);
            }
        }
    }
    found
}

/// Are we root? Root ignores file permissions, so permission tests run the binary as nobody.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub const NOBODY: u32 = 65534;

/// Hands the sandbox to `nobody` so a child run with `as_nobody` is bound by permissions.
pub fn give_to_nobody(path: &Path) {
    let _ = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(path)
        .status();
    let mut p = path.to_path_buf();
    while let Some(parent) = p.parent() {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = fs::metadata(parent) {
            let mode = m.permissions().mode();
            if mode & 0o001 == 0 {
                let _ = fs::set_permissions(parent, fs::Permissions::from_mode(mode | 0o001));
            }
        }
        p = parent.to_path_buf();
    }
}

pub fn as_nobody(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    if is_root() {
        cmd.uid(NOBODY).gid(NOBODY);
    }
}

/// The test program that plays Claude Code (`tests/support/fake_claude.rs`), which `cargo test`
/// builds next to the binary.
pub fn fake_claude() -> PathBuf {
    let path = Path::new(BIN)
        .parent()
        .expect("target folder")
        .join("examples/fake_claude");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --examples` (a plain `cargo test` does)",
        path.display()
    );
    path
}

/// The test program that plays an interactive Claude Code by Claude's lock rules
/// (`tests/support/claude_like.rs`), built next to the binary as `fake_claude` is.
pub fn claude_like() -> PathBuf {
    let path = Path::new(BIN)
        .parent()
        .expect("target folder")
        .join("examples/claude_like");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --examples` (a plain `cargo test` does)",
        path.display()
    );
    path
}

/// Runs `cmd` to completion, but kills it and fails the test when it runs past `limit`: for
/// checks that a command ends on its own (a deadline, not a speed target).
pub fn run_within(cmd: &mut Command, limit: std::time::Duration) -> Run {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokenkeeper");
    let start = std::time::Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let run = Run::from(child.wait_with_output().expect("wait"));
            panic!("still running after {limit:?}: {run:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Run::from(child.wait_with_output().expect("wait"))
}

/// Runs the binary with `args` alone: no sandbox, for commands that read no login.
pub fn run_bin(args: &[&str]) -> Run {
    Run::from(
        Command::new(BIN)
            .args(args)
            .output()
            .expect("run tokenkeeper"),
    )
}

/// True when `program` runs (`program --version` starts), for tests that use a tool the
/// machine may lack.
pub fn have_program(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `tokenkeeper daemon EXTRA…` in the sandbox, its output captured.
pub fn spawn_daemon(s: &Sandbox, extra: &[&str]) -> Child {
    let mut args = vec!["daemon"];
    args.extend_from_slice(extra);
    s.cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon")
}

/// SIGTERM to `child`, then waits until it has ended (not reaped), failing the test after 20 s.
pub fn terminate(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "daemon did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Stops a daemon [`spawn_daemon`] started; its run, checked for leaked tokens.
pub fn stop_daemon(s: &Sandbox, mut child: Child) -> Run {
    terminate(&mut child);
    let run = Run::from(child.wait_with_output().expect("output"));
    s.assert_no_leak(&run, false);
    run
}

/// `refresh` run as nobody on a sandbox given to nobody, its token request held for a second
/// and the credentials folder made read-only once the request is in (so the new tokens cannot
/// be saved there); returns the running refresh and that folder (0555 until set back).
pub fn refresh_losing_the_folder_mid_request(s: &Sandbox) -> (Child, PathBuf) {
    give_to_nobody(s.dir.path());
    s.server.push_fault(tokenkeeper_standin::Fault::Delay(
        std::time::Duration::from_millis(1000),
    ));
    let folder = s.home().join(".claude");
    let mut cmd = s.cmd(&["refresh"]);
    as_nobody(&mut cmd);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn refresh");
    wait_for("the request", std::time::Duration::from_secs(10), || {
        s.server.stats().token_requests == 1
    });
    set_mode(&folder, 0o555);
    (child, folder)
}
