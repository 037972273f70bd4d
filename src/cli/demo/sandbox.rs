//! The demo itself (Unix: it plays Claude Code with this binary, stops its children with
//! signals, and relies on PR_SET_PDEATHSIG on Linux).

use super::super::output;
use super::DemoArgs;
use crate::Error;
use crate::login::now_ms;
use crate::secret::fingerprint;
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tokenkeeper_standin::{API_PATH, Fault, IssuedLogin, StandinConfig, StandinServer};

const TOKEN_TTL_SECS: u64 = 6;
const REFRESH_BEFORE: &str = "3s";
/// Low, so that the client leaves refreshing to the daemon unless the token is about to expire.
const CLIENT_MIN_TTL: &str = "1s";
const CLIENT_EVERY: Duration = Duration::from_millis(1500);
const OUTAGE: Duration = Duration::from_secs(4);
/// The daemon refreshes at 3 s to 3.3 s left; a fault set at this much left meets its next try.
const FAULT_AT_LEFT: f64 = 3.6;
/// Set in the children's environment; `--probe` refuses to run without it.
const SANDBOX_VAR: &str = "TOKENKEEPER_DEMO_SANDBOX";
const TICK: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// The client: Claude Code's part, played by this binary under `tokenkeeper exec`.

/// Calls the stand-in API with the login's access token, prints what happened (the token named by
/// its fingerprint only), and exits like `claude -p`: 0, or 1 with Claude's own failure text on
/// stdout, which `tokenkeeper exec` recognises.
fn probe(base_url: &str) -> u8 {
    let Some(creds) = sandbox_credentials() else {
        output::error_line("--probe is for tokenkeeper demo's own client runs");
        return 2;
    };
    if !base_url.starts_with("http://127.0.0.1:") {
        output::error_line("--probe talks to the demo's loopback stand-in only");
        return 2;
    }
    let from_env = std::env::var("CLAUDE_CODE_OAUTH_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let stored = || stored_access_token(&creds);
    let Some(mut token) = from_env.clone().or_else(stored) else {
        output::stdout("Not logged in · Please run /login\n");
        return 1;
    };
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .proxy(None)
        .build()
        .new_agent();
    let url = format!("{}{API_PATH}", base_url.trim_end_matches('/'));
    let call = |token: &str| {
        agent
            .get(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .map(|r| r.status().as_u16())
    };
    let mut status = call(&token);
    // A refresh revokes the old access token a moment before the new one reaches the file; like
    // Claude Code, look at the file again before calling it a failure.
    if from_env.is_none() {
        for _ in 0..3 {
            if !matches!(status, Ok(401)) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
            match stored() {
                Some(newer) if newer != token => {
                    token = newer;
                    status = call(&token);
                }
                _ => {}
            }
        }
    }
    let (line, code) = match status {
        Ok(200) => (
            format!("API answered 200 (token {})", fingerprint(&token)),
            0,
        ),
        Ok(code @ (401 | 403)) => (
            format!("Failed to authenticate. API Error: {code} Invalid authentication credentials"),
            1,
        ),
        Ok(code) => (format!("API Error: {code}"), 1),
        Err(e) => (format!("API Error: Connection error ({e})"), 1),
    };
    output::stdout(&format!("{line}\n"));
    code
}

/// The credentials file, only when it lies in the sandbox the demo named.
fn sandbox_credentials() -> Option<PathBuf> {
    let sandbox = PathBuf::from(std::env::var_os(SANDBOX_VAR)?);
    let env = |k: &str| std::env::var(k).ok();
    let path = crate::provider::claude::default_credentials_path(&env)?;
    let inside = sandbox.is_absolute()
        && path.starts_with(&sandbox)
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    inside.then_some(path)
}

fn stored_access_token(path: &Path) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    doc["claudeAiOauth"]["accessToken"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// The sandbox.

struct Sandbox {
    dir: tempfile::TempDir,
    home: PathBuf,
    creds: PathBuf,
    state: PathBuf,
    claude: PathBuf,
    alerts: PathBuf,
}

impl Sandbox {
    fn create(exe: &Path) -> Result<Sandbox, Error> {
        let dir = tempfile::Builder::new()
            .prefix("tokenkeeper-demo-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "cannot create the demo's sandbox in",
                path: std::env::temp_dir(),
                source,
            })?;
        let root = dir.path().to_path_buf();
        let io_err = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { what, path, source }
        };
        let home = root.join("home");
        let claude_dir = home.join(".claude");
        for folder in [&claude_dir, &root.join("state"), &root.join("config")] {
            fs::create_dir_all(folder).map_err(io_err("cannot create", folder))?;
        }
        fs::set_permissions(&claude_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("cannot set the mode of", &claude_dir))?;
        // On macOS Claude Code's login is read from the Keychain first, and the Keychain is the
        // person's own, not the sandbox's: the sandbox's file alone.
        let config = root.join("config/tokenkeeper");
        fs::create_dir_all(&config).map_err(io_err("cannot create", &config))?;
        fs::write(config.join("config.toml"), "[claude]\nstore = \"file\"\n")
            .map_err(io_err("cannot write the config in", &config))?;
        // `claude` in the narration and in exec's messages: this binary, playing Claude Code.
        let bin = root.join("bin");
        fs::create_dir_all(&bin).map_err(io_err("cannot create", &bin))?;
        let claude = bin.join("claude");
        let claude = match std::os::unix::fs::symlink(exe, &claude) {
            Ok(()) => claude,
            Err(_) => exe.to_path_buf(),
        };
        Ok(Sandbox {
            creds: claude_dir.join(".credentials.json"),
            state: root.join("state"),
            alerts: root.join("alerts.log"),
            claude,
            home,
            dir,
        })
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a login the way `claude /login` leaves it: a whole new file, mode 0600, renamed
    /// into place so that no reader ever sees half of it.
    fn write_login(&self, login: &IssuedLogin) -> Result<(), Error> {
        let expires_at = now_ms() + i64::try_from(login.expires_in_secs * 1000).unwrap_or(0);
        let doc = serde_json::json!({
            "claudeAiOauth": {
                "accessToken": login.access_token,
                "refreshToken": login.refresh_token,
                "expiresAt": expires_at,
                "scopes": ["user:inference", "user:profile", "user:sessions:claude_code"],
                "subscriptionType": "max",
            }
        });
        let temp = self.creds.with_extension("json.demo-new");
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut f| f.write_all(doc.to_string().as_bytes()))
            .and_then(|()| fs::rename(&temp, &self.creds));
        written.map_err(|source| Error::Io {
            what: "cannot write the demo login to",
            path: self.creds.clone(),
            source,
        })
    }

    /// The stored access token's fingerprint and how long it has left, for the narration.
    fn token_facts(&self) -> Option<(String, f64)> {
        let doc: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&self.creds).ok()?).ok()?;
        let oauth = &doc["claudeAiOauth"];
        let token = oauth["accessToken"].as_str()?;
        let left = oauth["expiresAt"].as_i64()? - now_ms();
        Some((fingerprint(token), left as f64 / 1000.0))
    }

    /// The environment of every child: nothing of ours but PATH (and TZ, for clock times).
    fn child_env(&self, server: &StandinServer) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = vec![
            ("HOME".into(), self.home.clone().into()),
            ("XDG_STATE_HOME".into(), self.state.clone().into()),
            ("XDG_CONFIG_HOME".into(), self.root().join("config").into()),
            ("TOKENKEEPER_TOKEN_URL".into(), server.token_url().into()),
            (SANDBOX_VAR.into(), self.root().into()),
            (
                "PATH".into(),
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            ),
        ];
        if let Some(tz) = std::env::var_os("TZ") {
            env.push(("TZ".into(), tz));
        }
        env
    }

    /// Text written by the children into their state folder, for the secret scan.
    fn state_texts(&self) -> Vec<String> {
        let mut texts = Vec::new();
        let mut stack = vec![self.state.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    // Recovery files hold tokens by design; the demo never makes one.
                    if !path.ends_with("recovery") {
                        stack.push(path);
                    }
                } else if let Ok(text) = fs::read_to_string(&path) {
                    texts.push(text);
                }
            }
        }
        texts
    }
}

// ---------------------------------------------------------------------------------------------
// Children.

/// Its own process group (a Ctrl-C at the terminal reaches the demo only, which then stops the
/// children in order) and SIGTERM should the demo die without doing so.
fn guarded(program: &Path, env: &[(OsString, OsString)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .process_group(0);
    crate::exec::child::die_with_parent(&mut cmd);
    cmd
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child, not yet waited for.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// Asks a child to stop, waits up to `grace`, then kills it.
fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    signal(child, libc::SIGKILL);
    child.wait().ok()
}

/// A child that is stopped when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        stop_child(&mut self.0, Duration::from_secs(3));
    }
}

enum Event {
    /// A line the daemon logged, after its timestamp and `tokenkeeper: `.
    Daemon(String),
    DaemonGone,
    Client(RunReport),
}

struct RunReport {
    number: u32,
    status: Option<ExitStatus>,
    took: Duration,
    stdout: String,
    stderr: String,
}

fn follow_daemon(stderr: impl Read + Send + 'static, tx: Sender<Event>) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let text = line
                .split_once("tokenkeeper: ")
                .map_or(line.as_str(), |(_, rest)| rest);
            if tx.send(Event::Daemon(text.to_string())).is_err() {
                return;
            }
        }
        let _ = tx.send(Event::DaemonGone);
    })
}

/// Runs `tokenkeeper exec -- claude demo --probe URL` every [`CLIENT_EVERY`] until stopped.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    running: Arc<Mutex<Option<Child>>>,
    thread: Option<JoinHandle<()>>,
}

impl ClientLoop {
    fn start(mut make: impl FnMut() -> Command + Send + 'static, tx: Sender<Event>) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let running: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
        let (stop_t, running_t) = (Arc::clone(&stop), Arc::clone(&running));
        let thread = thread::spawn(move || {
            let mut number = 0;
            while !stop_t.load(Ordering::SeqCst) {
                number += 1;
                let started = Instant::now();
                let report = match run_once(&mut make, &running_t, number) {
                    Ok(report) => report,
                    Err(e) => RunReport {
                        number,
                        status: None,
                        took: started.elapsed(),
                        stdout: String::new(),
                        stderr: format!("tokenkeeper: error: could not start the client: {e}"),
                    },
                };
                if tx.send(Event::Client(report)).is_err() {
                    return;
                }
                let next = started + CLIENT_EVERY;
                while Instant::now() < next && !stop_t.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(20));
                }
            }
        });
        ClientLoop {
            stop,
            running,
            thread: Some(thread),
        }
    }

    /// Lets a run in progress finish (up to `grace`), then stops it, and ends the loop.
    fn stop(&mut self, grace: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + grace;
        while !thread.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if !thread.is_finished() {
            let mut slot = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(child) = slot.as_mut() {
                stop_child(child, Duration::from_secs(3));
            }
        }
        let _ = thread.join();
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

fn run_once(
    make: &mut impl FnMut() -> Command,
    running: &Mutex<Option<Child>>,
    number: u32,
) -> io::Result<RunReport> {
    let started = Instant::now();
    let mut child = make()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let readers = [
        child.stdout.take().map(read_all),
        child.stderr.take().map(read_all),
    ];
    *running.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
    // Polled rather than waited for, so that `stop` can signal it without racing the reaping.
    let status = loop {
        let mut slot = running.lock().unwrap_or_else(PoisonError::into_inner);
        let done = match slot.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(Some(status)),
            Some(Ok(None)) => None,
            Some(Err(_)) | None => Some(None),
        };
        if let Some(status) = done {
            *slot = None;
            break status;
        }
        drop(slot);
        thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let [stdout, stderr] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
    Ok(RunReport {
        number,
        status,
        took,
        stdout,
        stderr,
    })
}

fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

// ---------------------------------------------------------------------------------------------
// The show.

#[derive(Default)]
struct Tally {
    daemon_refreshes: u32,
    daemon_retries: u32,
    retries_since_refresh: u32,
    runs_ok: u32,
    runs_waited: u32,
    runs_failed_dead: u32,
    runs_failed_other: u32,
    alerts: Vec<String>,
    /// Everything shown or logged, for the secret scan.
    seen: Vec<String>,
    unexpected: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Normal,
    Outage,
    /// The endpoint answers again; waiting for the daemon to get a refresh through.
    AfterOutage,
    /// The endpoint rejects the login; waiting for the daemon to call it dead and the client to
    /// fail with 77.
    Rejecting,
    Renewed,
}

struct Demo {
    // Fields drop in this order: the client loop, the daemon, the server, then the sandbox.
    client: Option<ClientLoop>,
    daemon: Option<Kid>,
    daemon_reader: Option<JoinHandle<()>>,
    server: StandinServer,
    sandbox: Sandbox,
    events: Receiver<Event>,
    interrupted: Arc<AtomicBool>,
    start: Instant,
    total: Duration,
    quiet: bool,
    tally: Tally,
    stage: Stage,
    outage_started: Option<Instant>,
    rejected_at: Option<Instant>,
    refreshed_since_outage: bool,
    dead_alerted: bool,
    daemon_said_stopping: bool,
    /// When the client first failed because the login was dead.
    client_failed_dead: Option<Instant>,
    alerts_read: usize,
    notify_command: String,
}

impl Demo {
    fn start(total: Duration, quiet: bool) -> Result<Demo, Error> {
        let start = Instant::now();
        let exe = std::env::current_exe().map_err(|source| Error::Io {
            what: "cannot find this program's own path for",
            path: PathBuf::from("tokenkeeper demo"),
            source,
        })?;
        let interrupted = Arc::new(AtomicBool::new(false));
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let _ = signal_hook::flag::register(sig, Arc::clone(&interrupted));
        }
        let sandbox = Sandbox::create(&exe)?;
        let server = StandinServer::start(StandinConfig {
            access_ttl_secs: TOKEN_TTL_SECS,
            ..StandinConfig::default()
        })
        .map_err(|source| Error::Io {
            what: "cannot start the stand-in OAuth server on",
            path: PathBuf::from("127.0.0.1"),
            source,
        })?;
        let login = server.issue_login();
        sandbox.write_login(&login)?;
        let notify_command = format!(
            r#"printf '%s %s\n' "$TOKENKEEPER_EVENT" "$TOKENKEEPER_MESSAGE" >> {}"#,
            crate::service::shell_quote(&sandbox.alerts)
        );
        let (tx, events) = mpsc::channel();
        let mut demo = Demo {
            sandbox,
            server,
            daemon: None,
            daemon_reader: None,
            client: None,
            events,
            interrupted,
            start,
            total,
            quiet,
            tally: Tally::default(),
            stage: Stage::Normal,
            outage_started: None,
            rejected_at: None,
            refreshed_since_outage: false,
            dead_alerted: false,
            daemon_said_stopping: false,
            client_failed_dead: None,
            alerts_read: 0,
            notify_command,
        };
        demo.introduce();

        let env = demo.sandbox.child_env(&demo.server);
        let mut daemon = guarded(&exe, &env)
            .args(["daemon", "--refresh-before", REFRESH_BEFORE])
            .arg("--notify-command")
            .arg(&demo.notify_command)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Io {
                what: "cannot start the daemon",
                path: exe.clone(),
                source,
            })?;
        let stderr = daemon.stderr.take();
        demo.daemon = Some(Kid(daemon));
        demo.daemon_reader = stderr.map(|s| follow_daemon(s, tx.clone()));

        let claude = demo.sandbox.claude.clone();
        let api = demo.server.base_url();
        demo.client = Some(ClientLoop::start(
            move || {
                let mut cmd = guarded(&exe, &env);
                cmd.args(["exec", "--min-ttl", CLIENT_MIN_TTL, "--"])
                    .arg(&claude)
                    .args(["demo", "--probe", &api]);
                cmd
            },
            tx,
        ));
        Ok(demo)
    }

    fn introduce(&mut self) {
        let root = self.sandbox.root().display().to_string();
        self.say(
            "demo",
            &format!(
                "tokenkeeper at work for {}s, in a sandbox, against a stand-in for Claude's OAuth server",
                self.total.as_secs()
            ),
        );
        self.say_raw(
            "demo",
            &format!(
                "sandbox {root}: the HOME of every process below (shown as ~); your real home folder and configuration are never read or touched"
            ),
        );
        let url = self.server.base_url();
        self.say(
            "demo",
            &format!(
                "stand-in token endpoint and API on {url}, in this process; its access tokens live {TOKEN_TTL_SECS}s (Claude's live 8h)"
            ),
        );
        if let Some((fp, left)) = self.sandbox.token_facts() {
            self.say(
                "demo",
                &format!(
                    "a throw-away Claude Code login in ~/.claude/.credentials.json: token {fp}, expires in {left:.1}s"
                ),
            );
        }
        self.say(
            "demo",
            &format!(
                "starting `tokenkeeper daemon --refresh-before {REFRESH_BEFORE} --notify-command \"$NOTIFY\"`"
            ),
        );
        let notify = self.notify_command.clone();
        self.say(
            "demo",
            &format!("  with NOTIFY={notify} (the demo shows each alert it appends)"),
        );
        self.say(
            "demo",
            &format!(
                "and a client every {:.1}s: `tokenkeeper exec --min-ttl {CLIENT_MIN_TTL} -- claude` (here `claude` is this program playing Claude Code: it calls the API with the stored token)",
                CLIENT_EVERY.as_secs_f64()
            ),
        );
        let (outage, reject) = self.schedule();
        self.say(
            "demo",
            &format!(
                "coming up: at about {:.0}s the token endpoint fails for {}s; at about {:.0}s it rejects the login; then a new login appears",
                outage.as_secs_f64(),
                OUTAGE.as_secs(),
                reject.as_secs_f64()
            ),
        );
    }

    /// When the outage starts and when the login gets rejected: the outage after a refresh or
    /// two, the rejection once the daemon has had time to get through the outage (its retries
    /// back off up to 8 s), and room after it for the login to die, the client to fail, a new
    /// login to appear and be refreshed.
    fn schedule(&self) -> (Duration, Duration) {
        let t = self.total.as_secs_f64();
        let outage = (t / 3.0).min(t - 20.0).max(4.0);
        let reject = (t * 2.0 / 3.0).min(t - 12.0).max(outage + 8.0);
        (
            Duration::from_secs_f64(outage),
            Duration::from_secs_f64(reject),
        )
    }

    fn run(mut self) -> Result<u8, Error> {
        let (outage_at, reject_at) = self.schedule();
        let mut daemon_gone = false;
        loop {
            if self.interrupted.load(Ordering::SeqCst) {
                break;
            }
            let now = self.start.elapsed();
            if now >= self.total {
                break;
            }
            self.advance(now, outage_at, reject_at)?;
            match self.events.recv_timeout(TICK) {
                Ok(Event::DaemonGone) => {
                    daemon_gone = true;
                    self.daemon_exited_early();
                    break;
                }
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => thread::sleep(TICK),
            }
            self.read_alerts();
        }
        let interrupted = self.interrupted.load(Ordering::SeqCst);
        if interrupted {
            self.say("demo", "interrupted: stopping the client and the daemon");
        } else if !daemon_gone {
            self.say("demo", "time is up: stopping the client and the daemon");
        }
        self.finish(daemon_gone);
        let mut report = self.summary();
        let quiet = self.quiet;
        let root = self.sandbox.root().to_path_buf();
        let mut unexpected = std::mem::take(&mut self.tally.unexpected);
        // The server stops and the sandbox goes (the children are gone already).
        drop(self);
        if root.exists() {
            unexpected.push(format!("could not remove the sandbox {}", root.display()));
        } else {
            report.push(format!(
                "  sandbox               {} removed; nothing was written anywhere else",
                root.display()
            ));
        }
        if quiet {
            for problem in &unexpected {
                output::error_line(&format!("demo: {problem}"));
            }
        } else {
            report.extend(unexpected.iter().map(|p| format!("  unexpected: {p}")));
            output::stdout(&format!("\n{}\n", report.join("\n")));
        }
        Ok(if interrupted {
            130
        } else if unexpected.is_empty() {
            0
        } else {
            1
        })
    }

    /// The scripted events, each when its time has come.
    fn advance(
        &mut self,
        now: Duration,
        outage_at: Duration,
        reject_at: Duration,
    ) -> Result<(), Error> {
        // Each fault starts just before the daemon's next refresh (due at 3 s to 3.3 s left), so
        // that it meets the fault at once and the token runs out while it is still on.
        let about_to_refresh = |demo: &Demo| {
            demo.sandbox
                .token_facts()
                .is_some_and(|(_, left)| left <= FAULT_AT_LEFT)
        };
        let a_while = Duration::from_secs(4);
        match self.stage {
            Stage::Normal
                if now >= outage_at && (about_to_refresh(self) || now >= outage_at + a_while) =>
            {
                self.server.set_default_fault(Some(Fault::Status(503)));
                self.stage = Stage::Outage;
                self.outage_started = Some(Instant::now());
                self.say(
                    "demo",
                    &format!(
                        "outage: the token endpoint now answers 503 to every request, for {}s",
                        OUTAGE.as_secs()
                    ),
                );
            }
            Stage::Outage if self.outage_started.is_some_and(|t| t.elapsed() >= OUTAGE) => {
                self.server.set_default_fault(None);
                self.stage = Stage::AfterOutage;
                self.say("demo", "the token endpoint works again");
            }
            Stage::AfterOutage
                if now >= reject_at
                    && ((self.refreshed_since_outage && about_to_refresh(self))
                        || now >= reject_at + a_while) =>
            {
                self.server.set_default_fault(Some(Fault::InvalidGrant));
                self.stage = Stage::Rejecting;
                self.rejected_at = Some(Instant::now());
                self.say(
                    "demo",
                    "the server now rejects this login's refresh token (invalid_grant), as after a revoked session: only a new login can help",
                );
            }
            Stage::Rejecting => {
                let since = self.rejected_at.map_or(Duration::ZERO, |t| t.elapsed());
                // A moment after both the alert and the client's failure have been shown.
                let shown = self
                    .client_failed_dead
                    .is_some_and(|t| self.dead_alerted && t.elapsed() >= Duration::from_secs(1));
                let latest = self.total.saturating_sub(Duration::from_secs(4));
                if shown || since >= Duration::from_secs(9) || now >= latest {
                    self.server.set_default_fault(None);
                    let login = self.server.issue_login();
                    self.sandbox.write_login(&login)?;
                    self.stage = Stage::Renewed;
                    self.say(
                        "demo",
                        &format!(
                            "a new login appears in ~/.claude/.credentials.json, as `claude /login` would write it (token {})",
                            fingerprint(&login.access_token)
                        ),
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Daemon(line) => self.daemon_line(&line),
            Event::Client(report) => self.client_run(&report),
            Event::DaemonGone => {}
        }
    }

    fn daemon_line(&mut self, line: &str) {
        self.tally.seen.push(line.to_string());
        let (level, text) = if let Some(t) = line.strip_prefix("error: ") {
            ("error: ", t)
        } else if let Some(t) = line.strip_prefix("warning: ") {
            ("warning: ", t)
        } else {
            ("", line)
        };
        let facts = self.sandbox.token_facts();
        let said = if let Some(rest) = text.strip_prefix("daemon started (pid ") {
            let pid = rest.split(')').next().unwrap_or("?");
            format!(
                "started (pid {pid}); it will refresh each token when less than {REFRESH_BEFORE} is left"
            )
        } else if text == "daemon stopping" {
            self.daemon_said_stopping = true;
            "stopped cleanly on SIGTERM".to_string()
        } else if text.starts_with("claude: refreshed;") {
            self.tally.daemon_refreshes += 1;
            if self.stage == Stage::AfterOutage {
                self.refreshed_since_outage = true;
            }
            let after = match std::mem::take(&mut self.tally.retries_since_refresh) {
                0 => String::new(),
                1 => " after 1 failed attempt".to_string(),
                n => format!(" after {n} failed attempts"),
            };
            match facts {
                Some((fp, left)) => {
                    format!("refreshed the token{after}: now {fp}, expires in {left:.1}s")
                }
                None => format!("refreshed the token{after}"),
            }
        } else if text.starts_with("claude: adopted;") {
            match facts {
                Some((fp, _)) => format!("another process had refreshed; adopted its token {fp}"),
                None => "another process had refreshed; adopted its token".to_string(),
            }
        } else if let Some(rest) = text.strip_prefix("token endpoint: ") {
            self.tally.daemon_retries += 1;
            self.tally.retries_since_refresh += 1;
            let rest = rest.replace("retrying in 0s", "retrying in under a second");
            match facts {
                Some((_, left)) if self.tally.retries_since_refresh == 1 => format!(
                    "token request failed: {rest}; the current token still works for {:.1}s",
                    left.max(0.0)
                ),
                _ => format!("still failing: {rest}"),
            }
        } else if level == "error: " && text.contains(" is dead (") {
            let why = text
                .split_once("rejected its refresh token (")
                .and_then(|(_, rest)| rest.split_once(')'))
                .map_or("", |(why, _)| why);
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            format!(
                "the server rejected the refresh token{why}: login dead. It stops refreshing, leaves the file as it is and sends a login_dead alert"
            )
        } else if level == "warning: " && text.contains("next try in") {
            format!("gave up for now: {text}")
        } else if text.starts_with("waiting for another tokenkeeper") {
            "waits: another tokenkeeper is refreshing".to_string()
        } else {
            format!("{level}{text}")
        };
        self.say("daemon", &said);
    }

    fn client_run(&mut self, r: &RunReport) {
        self.tally.seen.push(r.stdout.clone());
        self.tally.seen.push(r.stderr.clone());
        let code = r.status.and_then(|s| s.code());
        let n = r.number;
        let last_note = |text: &str| {
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string()
        };
        if code == Some(0) {
            self.tally.runs_ok += 1;
            let answer = r
                .stdout
                .lines()
                .find(|l| l.starts_with("API answered"))
                .unwrap_or("ok");
            let adopted = r.stderr.contains("using its tokens");
            // A wait under a second is not announced on stderr; the run's length tells.
            let waited = r.stderr.contains("waiting for another tokenkeeper")
                || (adopted && r.took >= Duration::from_millis(300));
            let extra = match (waited, adopted) {
                (true, true) => format!(
                    "; tokenkeeper exec found the token about to expire, waited {:.1}s for the daemon's refresh and adopted the new token",
                    r.took.as_secs_f64()
                ),
                (true, false) => {
                    format!(" after waiting {:.1}s for a refresh", r.took.as_secs_f64())
                }
                (false, true) => "; it adopted a token another process had just refreshed".into(),
                (false, false) => String::new(),
            };
            if waited {
                self.tally.runs_waited += 1;
            }
            self.say("client", &format!("run {n} ok: {answer}{extra}"));
            return;
        }
        let detail = {
            let err = last_note(&r.stderr);
            if err.is_empty() {
                last_note(&r.stdout)
            } else {
                err
            }
        };
        let dead_stage = matches!(self.stage, Stage::Rejecting)
            || (self.stage == Stage::Renewed
                && code == Some(77)
                && self.client_failed_dead.is_none());
        match code {
            Some(77) if dead_stage => {
                self.tally.runs_failed_dead += 1;
                self.client_failed_dead.get_or_insert_with(Instant::now);
                let why = if detail.starts_with("tokenkeeper: error:") {
                    "the login is dead, so tokenkeeper did not start claude"
                } else {
                    "claude failed to authenticate"
                };
                self.say("client", &format!("run {n} exit 77 ({why}): {detail}"));
            }
            _ => {
                self.tally.runs_failed_other += 1;
                let how = match (code, r.status) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(s)) => format!("ended by {s}"),
                    (None, None) => "did not run".to_string(),
                };
                self.tally
                    .unexpected
                    .push(format!("client run {n} failed ({how})"));
                self.say("client", &format!("run {n} {how}: {detail}"));
            }
        }
    }

    fn read_alerts(&mut self) {
        let Ok(text) = fs::read_to_string(&self.sandbox.alerts) else {
            return;
        };
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete <= self.alerts_read {
            return;
        }
        let fresh = text[self.alerts_read..complete].to_string();
        self.alerts_read = complete;
        for line in fresh.lines() {
            self.tally.seen.push(line.to_string());
            let (event, message) = line.split_once(' ').unwrap_or((line, ""));
            self.tally.alerts.push(event.to_string());
            if event == "login_dead" {
                self.dead_alerted = true;
            }
            self.say(
                "alert",
                &format!("{event} sent through the notify command: \"{message}\""),
            );
        }
    }

    fn daemon_exited_early(&mut self) {
        let status = self
            .daemon
            .as_mut()
            .and_then(|k| stop_child(&mut k.0, Duration::from_secs(1)));
        let how = status.map_or_else(|| "ended".to_string(), |s| s.to_string());
        self.tally
            .unexpected
            .push(format!("the daemon stopped early ({how})"));
        self.say("daemon", &format!("stopped early ({how}); ending the demo"));
    }

    /// Stops the client loop, then the daemon, and narrates what they said on the way out.
    fn finish(&mut self, daemon_gone: bool) {
        if let Some(mut client) = self.client.take() {
            client.stop(Duration::from_secs(5));
        }
        let mut daemon_status = None;
        if let Some(mut kid) = self.daemon.take() {
            daemon_status = stop_child(&mut kid.0, Duration::from_secs(12));
        }
        if let Some(reader) = self.daemon_reader.take() {
            // Its last lines; a notify command still holding the pipe is not waited for long.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !reader.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        while let Ok(event) = self.events.try_recv() {
            self.handle(event);
        }
        self.read_alerts();
        if !daemon_gone && !self.daemon_said_stopping && daemon_status.is_some_and(|s| s.success())
        {
            self.say("daemon", "stopped on SIGTERM");
        }
        if !daemon_gone && !daemon_status.is_some_and(|s| s.success()) {
            let how = daemon_status.map_or_else(|| "unknown".to_string(), |s| s.to_string());
            self.tally
                .unexpected
                .push(format!("the daemon did not stop cleanly ({how})"));
        }
    }

    /// The summary's lines; also runs the final checks (secrets, reused tokens).
    fn summary(&mut self) -> Vec<String> {
        let stats = self.server.stats();
        let tokens = self.server.all_issued_tokens();
        let mut texts = std::mem::take(&mut self.tally.seen);
        texts.extend(self.sandbox.state_texts());
        let leaks = tokens
            .iter()
            .filter(|t| texts.iter().any(|text| text.contains(t.as_str())))
            .count();
        if leaks > 0 {
            self.tally
                .unexpected
                .push(format!("{leaks} tokens appeared in output or state"));
        }
        if stats.reused_refresh_tokens > 0 || stats.revoked_families > 0 {
            self.tally
                .unexpected
                .push("a refresh token was used twice".to_string());
        }
        let t = &self.tally;
        let client_refreshes = stats
            .refreshes_ok
            .saturating_sub(u64::from(t.daemon_refreshes));
        let runs = t.runs_ok + t.runs_failed_dead + t.runs_failed_other;
        let alerts = if t.alerts.is_empty() {
            "none".to_string()
        } else {
            t.alerts.join(", ")
        };
        let elapsed = self.start.elapsed().as_secs_f64();
        vec![
            format!("summary after {elapsed:.1}s"),
            format!(
                "  token requests        {} ({} refreshed, {} met a fault the demo injected)",
                stats.token_requests, stats.refreshes_ok, stats.faults_served
            ),
            format!(
                "  refreshes             {} by the daemon (after {} retries in all), {} by the client's tokenkeeper exec",
                t.daemon_refreshes, t.daemon_retries, client_refreshes
            ),
            format!(
                "  client runs           {runs}: {} ok ({} of them waited for a refresh), {} exit 77 while the login was dead, {} other failures",
                t.runs_ok, t.runs_waited, t.runs_failed_dead, t.runs_failed_other
            ),
            format!("  alerts sent           {} ({alerts})", t.alerts.len()),
            format!(
                "  reused refresh tokens {}; logins revoked for reuse {}",
                stats.reused_refresh_tokens, stats.revoked_families
            ),
            format!(
                "  tokens in any output  {leaks} (of the {} tokens issued, checked against every line above and the state folder)",
                tokens.len()
            ),
        ]
    }

    /// One narrated line: `[ 4.2s] daemon  refreshed …`, with the sandbox's paths shortened.
    fn say(&mut self, who: &str, text: &str) {
        let home = self.sandbox.home.display().to_string();
        let root = self.sandbox.root().display().to_string();
        let text = text.replace(&home, "~").replace(&root, "<sandbox>");
        self.say_raw(who, &text);
    }

    fn say_raw(&mut self, who: &str, text: &str) {
        self.tally.seen.push(text.to_string());
        if self.quiet {
            return;
        }
        let at = self.start.elapsed().as_secs_f64();
        output::stdout(&format!("[{at:>4.1}s] {who:<6} {text}\n"));
    }
}

pub fn run(args: &DemoArgs, quiet: bool) -> Result<u8, Error> {
    match &args.probe {
        Some(url) => Ok(probe(url)),
        None => Demo::start(Duration::from_secs(args.seconds), quiet)?.run(),
    }
}
