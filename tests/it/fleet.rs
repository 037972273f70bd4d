//! Fleet mode against a real PostgreSQL (`.ci/with-postgres` starts a throw-away cluster and
//! sets TOKENKEEPER_TEST_PG_URL; each test makes its own database): simulated machines, each
//! with its own home, state and config folders, sharing one login through the store and one
//! loopback OAuth stand-in.

use crate::util::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};
use tokenkeeper_standin::{Fault, IssuedLogin, StandinConfig, StandinServer};

const HOW_TO_RUN: &str = "the fleet tests need a PostgreSQL server they can create databases on: \
run them with `.ci/with-postgres cargo test` (it starts a throw-away cluster on a loopback port), \
or set TOKENKEEPER_TEST_PG_URL to a superuser URL such as postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own for one test, dropped afterwards.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

impl TestDb {
    fn new() -> TestDb {
        let admin = std::env::var("TOKENKEEPER_TEST_PG_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| panic!("{HOW_TO_RUN}"));
        let name = format!("tk_{:016x}", fastrand::u64(..));
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap_or_else(|e| {
            panic!("cannot connect to TOKENKEEPER_TEST_PG_URL ({e}); {HOW_TO_RUN}")
        });
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
        let url = format!("{base}/{name}");
        TestDb { admin, name, url }
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }

    /// Every column of every row, as text, the way `SELECT *` would show it.
    fn dump_rows(&self) -> String {
        let mut client = self.client();
        let rows = client
            .query(
                "SELECT t::text FROM tokenkeeper_logins t ORDER BY name",
                &[],
            )
            .expect("select every column");
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn generation(&self) -> i64 {
        let mut client = self.client();
        client
            .query_one(
                "SELECT generation FROM tokenkeeper_logins WHERE name = 'claude'",
                &[],
            )
            .expect("the row")
            .get(0)
    }

    fn row_text(&self, column: &str) -> Option<String> {
        let mut client = self.client();
        client
            .query_one(
                &format!("SELECT {column}::text FROM tokenkeeper_logins WHERE name = 'claude'"),
                &[],
            )
            .expect("the row")
            .get(0)
    }

    /// The machine whose tokenkeeper holds the row lock during a token request: its transaction
    /// sits idle after `SELECT 1`, the proof of the lock that comes right before a post.
    fn lock_holder(&self) -> Option<String> {
        let mut client = self.client();
        let rows = client
            .query(
                "SELECT application_name FROM pg_stat_activity \
                 WHERE datname = current_database() AND state = 'idle in transaction' \
                 AND query = 'SELECT 1' AND application_name LIKE 'tokenkeeper %'",
                &[],
            )
            .expect("pg_stat_activity");
        rows.first().map(|r| {
            r.get::<_, String>(0)
                .trim_start_matches("tokenkeeper ")
                .to_string()
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// One simulated machine: its own home, state and config folders, the shared store and server.
struct Machine {
    dir: tempfile::TempDir,
    name: String,
    key: String,
    store: String,
    token_url: String,
}

impl Machine {
    fn new(name: &str, store: &str, key: &str, server: &StandinServer) -> Machine {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("home")).expect("home");
        let m = Machine {
            dir,
            name: name.to_string(),
            key: key.to_string(),
            store: store.to_string(),
            token_url: server.token_url(),
        };
        m.config("");
        m
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn creds(&self) -> PathBuf {
        self.home().join(".claude/.credentials.json")
    }

    fn npm_root(&self) -> PathBuf {
        self.dir.path().join("npm/lib/node_modules")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state/tokenkeeper")
    }

    /// The config file: `[store]` with the store and this machine's name, plus `extra`.
    fn config(&self, extra: &str) {
        self.config_text(&format!(
            "[store]\nurl = \"{}\"\nmachine = \"{}\"\n{extra}",
            self.store, self.name
        ));
    }

    fn config_text(&self, text: &str) {
        let path = self.dir.path().join("config/tokenkeeper/config.toml");
        fs::create_dir_all(path.parent().expect("parent")).expect("config dir");
        fs::write(&path, text).expect("write config");
    }

    fn write_login(&self, login: &IssuedLogin, expires_in_ms: i64) {
        fs::create_dir_all(self.creds().parent().expect("parent")).expect("claude folder");
        let mut doc: serde_json::Value = serde_json::from_str(&claude_json(
            &login.access_token,
            &login.refresh_token,
            now_ms() + expires_in_ms,
        ))
        .expect("json");
        doc["mcpOAuth"] = serde_json::json!({"server": {"token": "mcp-of-this-machine"}});
        fs::write(self.creds(), doc.to_string()).expect("write creds");
        set_mode(&self.creds(), 0o600);
    }

    fn creds_json(&self) -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(self.creds()).expect("read creds"))
            .expect("creds parse")
    }

    fn access_token(&self) -> String {
        self.creds_json()["claudeAiOauth"]["accessToken"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_clear()
            .env("HOME", self.home())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("TOKENKEEPER_TOKEN_URL", &self.token_url)
            .env("TOKENKEEPER_STORE_KEY", &self.key)
            // Where Gemini CLI is installed, if anywhere: never the test machine's own.
            .env("TOKENKEEPER_NPM_ROOT", self.npm_root())
            .env("TZ", "UTC");
        c
    }

    fn run(&self, server: &StandinServer, args: &[&str]) -> Run {
        let out = self.cmd(args).output().expect("run tokenkeeper");
        let run = Run::from(out);
        self.assert_no_leak(server, &run, args.first() == Some(&"token"));
        run
    }

    fn assert_no_leak(&self, server: &StandinServer, run: &Run, stdout_may_hold_token: bool) {
        assert!(
            !run.stderr.contains(&self.key) && !run.stdout.contains(&self.key),
            "the fleet key leaked: {run:?}"
        );
        assert_no_token_leak(
            &server.all_issued_tokens(),
            &self.state_dir(),
            run,
            stdout_may_hold_token,
        );
    }

    fn daemon(&self, extra: &[&str]) -> Daemon {
        let mut args = vec!["daemon"];
        args.extend_from_slice(extra);
        let log = fs::File::create(self.daemon_log()).expect("daemon log");
        Daemon(Some(
            self.cmd(&args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn daemon"),
        ))
    }

    /// Where a daemon's stderr goes (read by `stop`, and shown when a test fails).
    fn daemon_log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// This machine's file holds no refresh token, and the rest of what it should.
    fn assert_projection(&self) {
        let v = self.creds_json();
        let login = &v["claudeAiOauth"];
        assert_eq!(
            login["refreshToken"], "",
            "{}: a refresh token on disk",
            self.name
        );
        assert!(login["accessToken"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(
            login["scopes"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x == "user:inference"))
        );
        assert_eq!(login["subscriptionType"], "max");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(self.creds())
            .expect("creds")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{}", self.name);
    }
}

/// A daemon that is killed if the test fails before stopping it.
struct Daemon(Option<Child>);

impl Daemon {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stop(server: &StandinServer, m: &Machine, mut daemon: Daemon) -> Run {
    let mut child = daemon.0.take().expect("a running daemon");
    terminate(&mut child);
    finished(server, m, child)
}

/// Stops every machine's daemon at once: all are sent SIGTERM before any is waited for, so no
/// daemon refreshes after another has stopped and leaves that machine holding a revoked token.
fn stop_all(server: &StandinServer, machines: &[Machine], daemons: Vec<Daemon>) -> Vec<Run> {
    let mut children: Vec<Child> = daemons
        .into_iter()
        .map(|mut d| d.0.take().expect("a running daemon"))
        .collect();
    for child in &children {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    for child in &mut children {
        terminate(child);
    }
    machines
        .iter()
        .zip(children)
        .map(|(m, child)| finished(server, m, child))
        .collect()
}

/// The run of a daemon that has exited, checked for leaked tokens.
fn finished(server: &StandinServer, m: &Machine, mut child: Child) -> Run {
    let status = child.wait().expect("wait");
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: fs::read_to_string(m.daemon_log()).unwrap_or_default(),
    };
    m.assert_no_leak(server, &run, false);
    run
}

/// A client like Claude Code on one machine, reading its own file ([`claude_like_call`]).
fn client_call(server: &StandinServer, m: &Machine) -> bool {
    claude_like_call(server, || m.access_token())
}

fn key() -> String {
    tokenkeeper::fleet::crypto::generate()
}

fn short_lived(secs: u64) -> StandinServer {
    StandinServer::start(StandinConfig {
        access_ttl_secs: secs,
        ..StandinConfig::default()
    })
    .expect("stand-in")
}

/// A fleet of `n` machines on one store; the first is logged in and has pushed its login.
fn fleet(
    n: usize,
    server: &StandinServer,
    db: &TestDb,
    expires_in_ms: i64,
) -> (Vec<Machine>, IssuedLogin) {
    let key = key();
    let machines: Vec<Machine> = (1..=n)
        .map(|i| Machine::new(&format!("m{i}"), &db.url, &key, server))
        .collect();
    let login = server.issue_login();
    machines[0].write_login(&login, expires_in_ms);
    let run = machines[0].run(server, &["fleet", "push"]);
    assert_eq!(run.code, 0, "{run:?}");
    (machines, login)
}

#[test]
fn push_puts_the_login_in_the_store_and_each_machine_gets_it_without_the_refresh_token() {
    let server = short_lived(3600);
    let db = TestDb::new();
    let (machines, login) = fleet(2, &server, &db, 7_200_000);
    let (a, b) = (&machines[0], &machines[1]);
    assert_eq!(db.generation(), 1);
    // The pushing machine keeps its other keys and loses its refresh token.
    a.assert_projection();
    assert_eq!(
        a.creds_json()["mcpOAuth"]["server"]["token"],
        "mcp-of-this-machine"
    );
    assert_eq!(a.access_token(), login.access_token);

    // A machine without any login gets a Claude-shaped file, 0600, in a folder it did not have.
    assert!(!b.creds().exists());
    let run = b.run(&server, &["token"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), login.access_token);
    b.assert_projection();
    assert_eq!(
        fs::read_to_string(b.creds()).unwrap(),
        format!(
            r#"{{"claudeAiOauth":{{"accessToken":"{}","refreshToken":"","expiresAt":{},"scopes":["user:inference","user:profile","user:sessions:claude_code"],"subscriptionType":"max","rateLimitTier":null}}}}"#,
            login.access_token,
            b.creds_json()["claudeAiOauth"]["expiresAt"]
        )
    );
    assert_eq!(server.stats().token_requests, 0, "no refresh was due");

    // Pushing again changes nothing; the status names the store, generation and pusher.
    let run = a.run(&server, &["fleet", "push"]);
    assert_eq!(
        run.code, 78,
        "a file without a refresh token has nothing to push: {run:?}"
    );
    assert!(run.stderr.contains("no refresh token"), "{run:?}");
    let run = b.run(&server, &["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("claude: fresh"), "{run:?}");
    assert!(run.stdout.contains("generation 1"), "{run:?}");
    assert!(run.stdout.contains("pushed by     m1"), "{run:?}");
    // This machine as the fleet knows it: its name (with its installation's id once a request
    // has made one; status itself creates nothing).
    assert!(run.stdout.contains("  machine       m2\n"), "{run:?}");
    let run = b.run(&server, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(v["logins"][0]["store"]["generation"], 1, "{run:?}");
    assert_eq!(v["logins"][0]["store"]["machine"], "m2", "{run:?}");
    assert_eq!(v["logins"][0]["state"], "fresh");
}

#[test]
fn a_fleet_machines_daemon_writes_its_access_only_copies_after_each_refresh_too() {
    let server = short_lived(4);
    let db = TestDb::new();
    let (machines, _) = fleet(2, &server, &db, 4000);
    let m = &machines[1];
    let copy = m.dir.path().join("agents/a1/.claude/.credentials.json");
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    fs::write(&copy, r#"{"mcpOAuth":{"agent":1}}"#).unwrap();
    let flag = format!("claude={}", copy.display());
    let daemon = m.daemon(&["--refresh-before", "2s", "--mirror", &flag]);
    wait_for(
        "two refreshes through the store",
        Duration::from_secs(15),
        || server.stats().token_requests >= 2,
    );
    wait_for(
        "the copy of the current token",
        Duration::from_secs(5),
        || {
            let doc: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(&copy).unwrap_or_default())
                    .unwrap_or_default();
            doc["claudeAiOauth"]["accessToken"] == m.access_token().as_str()
        },
    );
    let run = stop(&server, m, daemon);
    assert_eq!(run.code, 0, "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(&fs::read_to_string(&copy).unwrap()).unwrap();
    assert_eq!(doc["claudeAiOauth"]["refreshToken"], "");
    assert_eq!(doc["mcpOAuth"]["agent"], 1);
    let stats = server.stats();
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0)
    );
    assert!(run.stderr.contains("after its file was saved"), "{run:?}");
}

#[test]
fn token_on_a_machine_whose_copy_is_due_refreshes_under_the_row_lock_once() {
    let server = short_lived(3600);
    let db = TestDb::new();
    let (machines, _) = fleet(3, &server, &db, 60_000);
    // Every machine wants at least 10 minutes: the first refreshes, the others adopt.
    let handles: Vec<_> = machines
        .iter()
        .map(|m| {
            let out = m.cmd(&["token", "--min-ttl", "10m"]).output().expect("run");
            Run::from(out)
        })
        .collect();
    for (m, run) in machines.iter().zip(&handles) {
        assert_eq!(run.code, 0, "{}: {run:?}", m.name);
        assert_eq!(run.stdout.trim(), m.access_token(), "{}", m.name);
        m.assert_projection();
    }
    let stats = server.stats();
    assert_eq!(
        (stats.token_requests, stats.refreshes_ok),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(db.generation(), 2);
    assert_eq!(db.row_text("last_refresh_by").as_deref(), Some("m1"));
    assert!(server.is_live_access(&machines[2].access_token()));
    let run = machines[1].run(&server, &["status"]);
    assert!(run.stdout.contains("refreshed by  m1"), "{run:?}");
}

#[test]
fn five_machines_make_one_token_request_per_lifetime_and_every_client_keeps_working() {
    let server = short_lived(4);
    let db = TestDb::new();
    let (machines, _) = fleet(5, &server, &db, 4000);
    let daemons: Vec<Daemon> = machines
        .iter()
        .map(|m| m.daemon(&["--refresh-before", "2s"]))
        .collect();
    let stop_flag = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    thread::scope(|scope| {
        for m in &machines {
            let (stop_flag, failures, server) = (&stop_flag, &failures, &server);
            scope.spawn(move || {
                // Give each machine a moment to write its first copy.
                wait_for("the first copy", Duration::from_secs(10), || {
                    m.creds().exists()
                });
                let mut calls = 0;
                while !stop_flag.load(Ordering::SeqCst) {
                    calls += 1;
                    if !client_call(server, m) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{} call {calls}", m.name));
                    }
                    let v = m.creds_json();
                    assert_eq!(v["claudeAiOauth"]["refreshToken"], "", "{}", m.name);
                    let left = v["claudeAiOauth"]["expiresAt"].as_i64().unwrap() - now_ms();
                    assert!(left > 0, "{} held an expired token ({left} ms)", m.name);
                    sleep(Duration::from_millis(100));
                }
            });
        }
        sleep(Duration::from_secs(16));
        stop_flag.store(true, Ordering::SeqCst);
    });
    let elapsed = start.elapsed();
    // Stopped while the live token is not due for another half second (refreshed 2 s before
    // expiry), so no daemon is about to refresh as they stop.
    wait_for(
        "every machine to hold the store's live access token, not yet due",
        Duration::from_secs(8),
        || {
            let first = machines[0].access_token();
            let left = machines[0].creds_json()["claudeAiOauth"]["expiresAt"]
                .as_i64()
                .unwrap_or(0)
                - now_ms();
            left > 2500
                && server.is_live_access(&first)
                && machines.iter().all(|m| m.access_token() == first)
        },
    );
    let runs = stop_all(&server, &machines, daemons);
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "client calls failed: {failures:?}\n{:?}",
        runs[0]
    );
    let stats = server.stats();
    // Tokens live 4 s and are refreshed 2 s (plus up to 0.2 s) before expiry: one refresh every
    // ~2 s for the whole fleet, each token refreshed exactly once.
    let lifetimes = elapsed.as_secs_f64() / 2.0;
    eprintln!(
        "five machines, {:.1} s: {} token requests ({} ok) for ~{lifetimes:.1} token lifetimes, generation {}",
        elapsed.as_secs_f64(),
        stats.token_requests,
        stats.refreshes_ok,
        db.generation()
    );
    assert!((6..=10).contains(&stats.token_requests), "{stats:?}");
    assert_eq!(stats.refreshes_ok, stats.token_requests, "{stats:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0),
        "{stats:?}"
    );
    assert_eq!(db.generation(), 1 + stats.refreshes_ok as i64);
    for m in &machines {
        m.assert_projection();
    }
}

#[test]
fn killing_the_refreshing_daemon_mid_request_lets_another_take_over_with_no_token_reused() {
    let server = short_lived(3600);
    let db = TestDb::new();
    let (machines, _) = fleet(3, &server, &db, 3000);
    for m in &machines {
        // The others wait 5 + 2 s for a machine that posted and vanished (it might come back
        // with the new tokens) before they post that refresh token themselves. The store is
        // named on the command line this time.
        m.config_text(&format!(
            "[store]\nmachine = \"{}\"\ntakeover_after = \"2s\"\n[claude]\nrequest_timeout = \"5s\"\n",
            m.name
        ));
    }
    // The first token request hangs: whoever sends it holds the row lock, waiting.
    server.push_fault(Fault::Hang(Duration::from_secs(30)));
    let mut daemons: Vec<Option<Daemon>> = machines
        .iter()
        .map(|m| Some(m.daemon(&["--store", &db.url, "--refresh-before", "1h"])))
        .collect();
    wait_for("the first token request", Duration::from_secs(15), || {
        server.stats().token_requests == 1
    });
    let mut holder = None;
    wait_for("the lock holder", Duration::from_secs(5), || {
        holder = db.lock_holder();
        holder.is_some()
    });
    let holder = holder.unwrap();
    let i = machines
        .iter()
        .position(|m| m.name == holder)
        .expect("a machine");
    let killed = daemons[i].take().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(killed.pid() as i32, libc::SIGKILL) };
    drop(killed);
    // Its connection is gone, so the database frees the row: another machine refreshes.
    let start = Instant::now();
    while server.stats().refreshes_ok != 1 {
        if start.elapsed() > Duration::from_secs(30) {
            let logs: Vec<String> = machines
                .iter()
                .map(|m| {
                    format!(
                        "{}:\n{}",
                        m.name,
                        fs::read_to_string(m.daemon_log()).unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "no machine took over from {holder}: {:?}\n{}",
                server.stats(),
                logs.join("\n")
            );
        }
        sleep(Duration::from_millis(20));
    }
    wait_for("the new generation", Duration::from_secs(5), || {
        db.generation() == 2
    });
    let taker = db.row_text("last_refresh_by").unwrap();
    assert_ne!(taker, holder);
    for (m, d) in machines.iter().zip(daemons) {
        if let Some(d) = d {
            wait_for(
                "the new token on every live machine",
                Duration::from_secs(10),
                || server.is_live_access(&m.access_token()),
            );
            let run = stop(&server, m, d);
            assert_eq!(run.code, 0, "{run:?}");
            if m.name == taker {
                assert!(
                    run.stderr.contains("never wrote the result; taking over"),
                    "{run:?}"
                );
            }
            m.assert_projection();
        }
    }
    let stats = server.stats();
    assert_eq!(stats.token_requests, 2, "{stats:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0),
        "{stats:?}"
    );
    assert_eq!(db.generation(), 2);
}

#[test]
fn no_token_bytes_appear_in_a_dump_of_the_table() {
    let server = short_lived(3600);
    let db = TestDb::new();
    let (machines, _) = fleet(2, &server, &db, 60_000);
    let run = machines[1].run(&server, &["refresh", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(db.generation(), 2);
    let mut dumps = vec![db.dump_rows()];
    if let Ok(out) = Command::new("pg_dump")
        .arg("--data-only")
        .arg(&db.url)
        .output()
        && out.status.success()
    {
        dumps.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let tokens = server.all_issued_tokens();
    assert_eq!(tokens.len(), 4, "two logins' worth of tokens");
    for dump in &dumps {
        assert!(dump.contains("claude") && dump.contains("m2"), "{dump}");
        for token in &tokens {
            let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
            // No token, no part of one, in the clear or as bytea hex.
            for part in [&token[..24], &token[token.len() - 24..]] {
                assert!(!dump.contains(part), "token bytes in the dump:\n{dump}");
            }
            assert!(
                !dump.contains(&hex[..32]),
                "token bytes (hex) in the dump:\n{dump}"
            );
        }
        assert!(!dump.contains("sk-ant-"), "{dump}");
    }
}

#[test]
fn a_wrong_key_or_a_store_without_the_table_is_refused_with_a_clear_message() {
    let server = short_lived(3600);
    let db = TestDb::new();
    // No table yet: token, status and the daemon say to push first.
    let lone = Machine::new("m9", &db.url, &key(), &server);
    for args in [&["token"][..], &["daemon"][..]] {
        let run = lone.run(&server, args);
        assert_eq!(run.code, 78, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("has no tokenkeeper_logins table yet")
                && run.stderr.contains("tokenkeeper fleet push"),
            "{run:?}"
        );
        assert_eq!(
            run.stderr
                .trim()
                .lines()
                .last()
                .unwrap()
                .matches("error")
                .count(),
            1
        );
    }

    let (machines, _) = fleet(1, &server, &db, 7_200_000);
    let stranger = Machine::new("m2", &db.url, &key(), &server);
    let id = |k: &str| {
        tokenkeeper::fleet::crypto::Key::from_hex(k)
            .unwrap()
            .id()
            .to_string()
    };
    for args in [&["token"][..], &["daemon"][..], &["fleet", "push"][..]] {
        let run = stranger.run(&server, args);
        assert_eq!(run.code, 78, "{args:?}: {run:?}");
        if args[0] != "fleet" {
            assert!(
                run.stderr.contains(&id(&machines[0].key))
                    && run.stderr.contains(&id(&stranger.key)),
                "{run:?}"
            );
            assert!(run.stderr.contains("TOKENKEEPER_STORE_KEY"), "{run:?}");
        }
        assert!(!stranger.creds().exists() || args[0] == "fleet");
    }
    // A key file others can read is refused; no key at all is refused.
    let key_file = stranger.dir.path().join("fleet.key");
    fs::write(&key_file, format!("{}\n", machines[0].key)).unwrap();
    set_mode(&key_file, 0o644);
    stranger.config(&format!("key_file = \"{}\"\n", key_file.display()));
    let mut cmd = stranger.cmd(&["token"]);
    cmd.env_remove("TOKENKEEPER_STORE_KEY");
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("chmod 600") && run.stderr.contains("fleet.key"),
        "{run:?}"
    );
    assert!(
        !run.stderr.contains(&machines[0].key),
        "the key is never shown"
    );
    set_mode(&key_file, 0o600);
    let mut cmd = stranger.cmd(&["token"]);
    cmd.env_remove("TOKENKEEPER_STORE_KEY");
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 0, "with the fleet's key from the file: {run:?}");
    stranger.config("");
    let mut cmd = stranger.cmd(&["daemon"]);
    cmd.env_remove("TOKENKEEPER_STORE_KEY");
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("fleet keygen"), "{run:?}");
}

#[test]
fn push_refuses_to_replace_a_newer_login_unless_forced() {
    let server = short_lived(3600);
    let db = TestDb::new();
    let (machines, _) = fleet(2, &server, &db, 7_200_000);
    // An older login on another machine (expires sooner than the store's).
    let old = server.issue_login();
    machines[1].write_login(&old, 600_000);
    let before = fs::read_to_string(machines[1].creds()).unwrap();
    let run = machines[1].run(&server, &["fleet", "push"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("generation 1") && run.stderr.contains("--force"),
        "{run:?}"
    );
    assert_eq!(
        fs::read_to_string(machines[1].creds()).unwrap(),
        before,
        "nothing changed"
    );
    assert_eq!(db.generation(), 1);
    // The daemon leaves a login of the machine's own alone and says so.
    let run = machines[1].run(&server, &["token"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("login of its own"), "{run:?}");
    let run = machines[1].run(&server, &["fleet", "push", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(db.generation(), 2);
    machines[1].assert_projection();
    // The other machine wants two hours: the pushed login (10 minutes left) is refreshed once.
    let run = machines[0].run(&server, &["token", "--min-ttl", "2h"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), machines[0].access_token(), "{run:?}");
    assert!(server.is_live_access(&machines[0].access_token()));
    assert_eq!(server.stats().refreshes_ok, 1);
    assert_eq!(db.generation(), 3);
}

#[test]
fn tokens_issued_while_the_store_went_away_are_written_from_the_recovery_file_and_nobody_reuses_the_old_one()
 {
    let server = short_lived(3600);
    let db = TestDb::new();
    let parts = url_parts::parse(&db.url);
    let proxy = Proxy::start(parts.addr);
    let via_proxy = format!(
        "postgres://{}@127.0.0.1:{}/{}",
        parts.user, proxy.port, parts.db
    );
    let key = key();
    // x reaches the store through a link the test cuts; y reaches it directly.
    let x = Machine::new("x", &via_proxy, &key, &server);
    let y = Machine::new("y", &db.url, &key, &server);
    for m in [&x, &y] {
        m.config("takeover_after = \"60s\"\n[claude]\nrequest_timeout = \"5s\"\n");
    }
    let login = server.issue_login();
    x.write_login(&login, 3000);
    assert_eq!(x.run(&server, &["fleet", "push"]).code, 0);
    // The answer takes 1.5 s; the link goes down while it is on its way.
    server.push_fault(Fault::Delay(Duration::from_millis(1500)));
    let dx = x.daemon(&["--refresh-before", "1h"]);
    wait_for("x's token request", Duration::from_secs(10), || {
        server.stats().token_requests == 1
    });
    proxy.cut();
    let dy = y.daemon(&["--refresh-before", "1h"]);
    wait_for("x's recovery file", Duration::from_secs(10), || {
        !files_under(&x.state_dir().join("recovery")).is_empty()
    });
    // y may take the row lock now, but x's note says the refresh token was posted: y waits.
    sleep(Duration::from_secs(4));
    assert_eq!(
        server.stats().token_requests,
        1,
        "the spent refresh token was posted again"
    );
    assert_eq!(db.generation(), 1);
    proxy.restore();
    wait_for(
        "x to write its tokens into the store",
        Duration::from_secs(30),
        || db.generation() == 2,
    );
    assert_eq!(db.row_text("last_outcome").as_deref(), Some("restored"));
    for m in [&x, &y] {
        wait_for(
            "the new token on each machine",
            Duration::from_secs(10),
            || server.is_live_access(&m.access_token()),
        );
    }
    let (rx, ry) = (stop(&server, &x, dx), stop(&server, &y, dy));
    assert_eq!((rx.code, ry.code), (0, 0), "{rx:?}\n{ry:?}");
    assert!(
        ry.stderr.contains("has not written the new tokens"),
        "{ry:?}"
    );
    assert!(
        files_under(&x.state_dir().join("recovery")).is_empty(),
        "{rx:?}"
    );
    let stats = server.stats();
    assert_eq!(
        (stats.token_requests, stats.refreshes_ok),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0),
        "{stats:?}"
    );
    x.assert_projection();
    y.assert_projection();
}

/// A TCP forwarder between tokenkeeper and PostgreSQL that a test can cut (every connection
/// dropped, new ones refused) and restore: the database becoming unreachable, for real.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut all = conns2.lock().unwrap();
                all.push(client.try_clone().unwrap());
                all.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[test]
fn an_unreachable_store_keeps_the_local_token_alerts_once_and_recovers_by_itself() {
    let server = short_lived(3600);
    let db = TestDb::new();
    let url: url_parts::Parts = url_parts::parse(&db.url);
    let proxy = Proxy::start(url.addr);
    // A password in the URL (the test server trusts loopback, so it is not checked): it must
    // never be shown.
    let via_proxy = format!(
        "postgres://{}:pw-never-shown@127.0.0.1:{}/{}",
        url.user, proxy.port, url.db
    );
    let key = key();
    let a = Machine::new("m1", &via_proxy, &key, &server);
    let login = server.issue_login();
    a.write_login(&login, 6_000);
    assert_eq!(a.run(&server, &["fleet", "push"]).code, 0);
    let log = a.dir.path().join("alerts.log");
    let notify = format!(
        "printf '%s %s\\n' \"$TOKENKEEPER_EVENT\" \"$TOKENKEEPER_PROVIDER\" >> {}",
        log.display()
    );
    proxy.cut();
    let d = a.daemon(&["--refresh-before", "4s", "--notify-command", &notify]);
    wait_for(
        "the store_unreachable alert",
        Duration::from_secs(10),
        || {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("store_unreachable")
        },
    );
    // `token` keeps using the local access token while the store is away.
    let run = a.run(&server, &["token", "--min-ttl", "1h"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), login.access_token);
    assert!(
        run.stderr.contains("cannot connect to the fleet's store"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("pw-never-shown"), "{run:?}");
    let run = a.run(&server, &["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("claude: due") && run.stdout.contains("cannot connect"),
        "{run:?}"
    );
    // Past the planned refresh time: still no request without the row lock.
    sleep(Duration::from_secs(3));
    assert_eq!(
        server.stats().token_requests,
        0,
        "never a refresh outside the row lock"
    );
    assert_eq!(a.access_token(), login.access_token);
    proxy.restore();
    wait_for(
        "the refresh after recovery",
        Duration::from_secs(20),
        || server.stats().refreshes_ok == 1,
    );
    wait_for("the recovered alert", Duration::from_secs(10), || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("recovered")
    });
    wait_for("the new token on disk", Duration::from_secs(5), || {
        server.is_live_access(&a.access_token())
    });
    let run = stop(&server, &a, d);
    assert_eq!(run.code, 0, "{run:?}");
    let alerts = fs::read_to_string(&log).unwrap();
    assert_eq!(
        alerts, "store_unreachable claude\nrecovered claude\n",
        "{run:?}"
    );
    assert!(
        run.stderr.contains("store postgres://postgres@127.0.0.1:"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("pw-never-shown"), "{run:?}");
    a.assert_projection();
}

/// The parts of a test database URL (postgres://user@127.0.0.1:port/db) the proxy needs.
mod url_parts {
    pub struct Parts {
        pub user: String,
        pub addr: std::net::SocketAddr,
        pub db: String,
    }

    pub fn parse(url: &str) -> Parts {
        let rest = url.split_once("://").expect("scheme").1;
        let (user, rest) = rest.split_once('@').expect("user");
        let (hostport, db) = rest.split_once('/').expect("database");
        Parts {
            user: user.split(':').next().unwrap().to_string(),
            addr: hostport.parse().expect("host:port"),
            db: db.to_string(),
        }
    }
}

#[test]
fn a_store_asked_for_tls_is_reached_over_verified_tls() {
    let server = short_lived(3600);
    let db = TestDb::new();
    let ca = std::env::var("TOKENKEEPER_TEST_PG_CA").unwrap_or_else(|_| {
        panic!(
            "TOKENKEEPER_TEST_PG_CA is not set (a CA for the server's certificate); {HOW_TO_RUN}"
        )
    });
    let parts = url_parts::parse(&db.url);
    let tls_url = format!(
        "postgres://{}@localhost:{}/{}?sslmode=require",
        parts.user,
        parts.addr.port(),
        parts.db
    );
    let key = key();
    let m = Machine::new("m1", &tls_url, &key, &server);
    let login = server.issue_login();
    m.write_login(&login, 7_200_000);
    // The server's certificate is signed by a CA the system does not know: refused.
    let run = Run::from(m.cmd(&["fleet", "push"]).output().unwrap());
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr.contains("cannot connect to the fleet's store")
            && run.stderr.contains("certificate"),
        "{run:?}"
    );
    // With the CA known (SSL_CERT_FILE), the same URL works, over TLS.
    let with_ca = |args: &[&str]| {
        let mut c = m.cmd(args);
        c.env("SSL_CERT_FILE", &ca);
        c
    };
    let run = Run::from(with_ca(&["fleet", "push"]).output().unwrap());
    assert_eq!(run.code, 0, "{run:?}");
    // The CA added to the platform's roots instead (TOKENKEEPER_CA_FILE, as for the token
    // endpoint and webhooks): the store is read over the same URL; without it, it is not.
    let store_seen = |ca_file: Option<&str>| {
        let mut c = m.cmd(&["status", "--json"]);
        if let Some(ca) = ca_file {
            c.env("TOKENKEEPER_CA_FILE", ca);
        }
        let run = Run::from(c.output().unwrap());
        let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
        v["logins"][0]["store"].clone()
    };
    assert_eq!(store_seen(Some(&ca))["generation"], 1);
    let refused = store_seen(None);
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("certificate"),
        "{refused}"
    );
    let log = fs::File::create(m.daemon_log()).unwrap();
    let d = Daemon(Some(
        with_ca(&["daemon"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    let mut client = db.client();
    let mut ssl: Vec<bool> = Vec::new();
    wait_for("the daemon's connections", Duration::from_secs(10), || {
        ssl = client
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'tokenkeeper m1' AND a.datname = current_database()",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        ssl.len() >= 2
    });
    assert!(
        ssl.iter().all(|s| *s),
        "every connection encrypted: {ssl:?}"
    );
    let run = stop(&server, &m, d);
    assert_eq!(run.code, 0, "{run:?}");
    m.assert_projection();
}

#[test]
fn exec_on_a_fleet_machine_runs_claude_with_the_fleets_token_and_a_stale_copy_is_replaced_not_refreshed()
 {
    let server = short_lived(3600);
    let db = TestDb::new();
    let (machines, _) = fleet(2, &server, &db, 7_200_000);
    let (a, b) = (&machines[0], &machines[1]);
    let fake = fake_claude();
    let exec = |m: &Machine, args: &[&str]| {
        let mut full = vec!["exec"];
        full.extend_from_slice(args);
        full.push(fake.to_str().unwrap());
        full.extend_from_slice(&["-p", "hello"]);
        let mut c = m.cmd(&full);
        c.env("ANTHROPIC_BASE_URL", server.base_url());
        let run = Run::from(c.stdin(Stdio::null()).output().unwrap());
        m.assert_no_leak(&server, &run, false);
        run
    };
    // A machine without a login: exec gets it from the store, Claude uses it.
    let run = exec(b, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    b.assert_projection();
    assert_eq!(server.stats().token_requests, 0);
    // Another machine refreshes: b's copy is now revoked although it looks fresh.
    let run = a.run(&server, &["refresh", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.stats().refreshes_ok, 1);
    assert!(!server.is_live_access(&b.access_token()));
    let run = exec(b, &[]);
    assert_eq!(run.code, 77, "a revoked token fails loudly: {run:?}");
    // With --retry-auth, b takes the fleet's current token instead of refreshing again.
    let run = exec(b, &["--retry-auth", "1"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.stats().token_requests, 1, "no second refresh");
    assert_eq!(b.access_token(), a.access_token());
    assert!(server.is_live_access(&b.access_token()));
    b.assert_projection();
}

#[test]
fn a_rejected_refresh_token_is_posted_once_for_the_whole_fleet_and_a_new_push_revives_every_machine()
 {
    let server = short_lived(3600);
    let db = TestDb::new();
    let (machines, _) = fleet(3, &server, &db, 2000);
    server.set_default_fault(Some(Fault::InvalidGrant));
    let logs: Vec<PathBuf> = machines
        .iter()
        .map(|m| m.dir.path().join("alerts.log"))
        .collect();
    let daemons: Vec<Daemon> = machines
        .iter()
        .zip(&logs)
        .map(|(m, log)| {
            let notify = format!(
                "printf '%s %s\\n' \"$TOKENKEEPER_EVENT\" \"$TOKENKEEPER_PROVIDER\" >> {}",
                log.display()
            );
            m.daemon(&["--refresh-before", "1h", "--notify-command", &notify])
        })
        .collect();
    for log in &logs {
        wait_for(
            "every machine's login_dead alert",
            Duration::from_secs(15),
            || {
                fs::read_to_string(log)
                    .unwrap_or_default()
                    .contains("login_dead")
            },
        );
    }
    sleep(Duration::from_secs(1));
    assert_eq!(
        server.stats().token_requests,
        1,
        "the rejected token is never posted again"
    );
    assert_eq!(db.row_text("last_outcome").as_deref(), Some("dead"));
    let run = machines[2].run(&server, &["status"]);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stdout.contains("claude: dead") && run.stdout.contains("fleet push"),
        "{run:?}"
    );
    let run = machines[2].run(&server, &["token", "--min-ttl", "1h"]);
    assert_eq!(run.code, 77, "{run:?}");
    // A new login, pushed from one machine, revives the fleet.
    server.set_default_fault(None);
    let fresh = server.issue_login();
    machines[1].write_login(&fresh, 7_200_000);
    let run = machines[1].run(&server, &["fleet", "push"]);
    assert_eq!(run.code, 0, "{run:?}");
    for (m, log) in machines.iter().zip(&logs) {
        wait_for(
            "every machine's recovered alert",
            Duration::from_secs(10),
            || {
                fs::read_to_string(log)
                    .unwrap_or_default()
                    .contains("recovered")
            },
        );
        wait_for(
            "the new login on every machine",
            Duration::from_secs(10),
            || m.access_token() == fresh.access_token,
        );
    }
    for ((m, d), log) in machines.iter().zip(daemons).zip(&logs) {
        let run = stop(&server, m, d);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(
            fs::read_to_string(log).unwrap(),
            "login_dead claude\nrecovered claude\n",
            "{}: {run:?}",
            m.name
        );
        m.assert_projection();
    }
    assert_eq!(server.stats().token_requests, 1);
}

#[test]
fn a_store_put_back_from_a_backup_is_refused_without_a_token_request_until_a_new_push() {
    let server = short_lived(3600);
    let db = TestDb::new();
    let (machines, _) = fleet(2, &server, &db, 7_200_000);
    let (a, b) = (&machines[0], &machines[1]);
    // A backup of the store as it is now: generation 1.
    db.client()
        .batch_execute("CREATE TABLE backup AS SELECT * FROM tokenkeeper_logins")
        .expect("back the table up");
    // b refreshes: generation 2, and generation 1's refresh token is spent.
    let run = b.run(&server, &["refresh", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(db.generation(), 2);
    assert_eq!(server.stats().token_requests, 1);
    let b_token = b.access_token();
    let alerts = b.dir.path().join("alerts.log");
    let notify = format!(
        "printf '%s %s\\n' \"$TOKENKEEPER_EVENT\" \"$TOKENKEEPER_PROVIDER\" >> {}",
        alerts.display()
    );
    let daemon = b.daemon(&["--refresh-before", "10m", "--notify-command", &notify]);
    wait_for("the daemon to start", Duration::from_secs(10), || {
        fs::read_to_string(b.daemon_log())
            .unwrap_or_default()
            .contains("fleet daemon started")
    });
    // The store is restored from the backup (and someone's write wakes the daemons).
    db.client()
        .batch_execute(
            "DELETE FROM tokenkeeper_logins; \
             INSERT INTO tokenkeeper_logins SELECT * FROM backup; \
             SELECT pg_notify('tokenkeeper_logins', 'claude 1')",
        )
        .expect("restore the table");
    assert_eq!(db.generation(), 1);
    for args in [
        &["exec", "--min-ttl", "9h", "--", "true"][..],
        &["refresh", "--force"][..],
    ] {
        let run = b.run(&server, args);
        assert_ne!(run.code, 0, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("rolled back") && run.stderr.contains("fleet push --force"),
            "{args:?}: {run:?}"
        );
        assert_eq!(
            server.stats().token_requests,
            1,
            "{args:?}: the spent refresh token is never posted"
        );
    }
    wait_for(
        "the store_rolled_back alert",
        Duration::from_secs(10),
        || {
            fs::read_to_string(&alerts)
                .unwrap_or_default()
                .contains("store_rolled_back")
        },
    );
    // Woken again, the daemon does not alert again, nor take the old row's token.
    db.client()
        .batch_execute("SELECT pg_notify('tokenkeeper_logins', 'claude 1')")
        .expect("notify");
    sleep(Duration::from_secs(1));
    assert_eq!(b.access_token(), b_token, "b keeps its own access token");
    assert!(server.is_live_access(&b_token));
    assert_eq!(server.stats().token_requests, 1);
    // A fresh login pushed from one machine: generation 2 again, under a new push marker.
    let fresh = server.issue_login();
    a.write_login(&fresh, 7_200_000);
    let run = a.run(&server, &["fleet", "push", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(db.generation(), 2);
    let run = b.run(&server, &["exec", "--min-ttl", "9h", "--", "true"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.stats().token_requests, 2);
    // a's copy is merely stale now: it takes the fleet's token, no request.
    let run = a.run(&server, &["refresh", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(a.access_token(), b.access_token());
    assert_eq!(server.stats().token_requests, 2);
    let run = b.run(&server, &["refresh", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.stats().token_requests, 3);
    wait_for("the recovered alert", Duration::from_secs(10), || {
        fs::read_to_string(&alerts)
            .unwrap_or_default()
            .contains("recovered")
    });
    let run = stop(&server, b, daemon);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        fs::read_to_string(&alerts).unwrap(),
        "store_rolled_back claude\nrecovered claude\n",
        "{run:?}"
    );
    let stats = server.stats();
    assert_eq!(stats.refreshes_ok, 3, "{stats:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0),
        "{stats:?}"
    );
    for m in &machines {
        m.assert_projection();
    }
}

#[test]
fn a_note_left_by_a_killed_request_is_not_taken_for_its_own_by_a_machine_of_the_same_name() {
    let server = short_lived(3600);
    let db = TestDb::new();
    let key = key();
    // Two clones: the same host name, the same `[store] machine`.
    let a = Machine::new("twin", &db.url, &key, &server);
    let b = Machine::new("twin", &db.url, &key, &server);
    let login = server.issue_login();
    a.write_login(&login, 60_000);
    let run = a.run(&server, &["fleet", "push"]);
    assert_eq!(run.code, 0, "{run:?}");
    for m in [&a, &b] {
        m.config("takeover_after = \"1s\"\n[claude]\nrequest_timeout = \"3s\"\n");
    }
    // a posts the refresh token and is killed before the answer reaches the store.
    server.push_fault(Fault::Hang(Duration::from_secs(30)));
    let mut child = a
        .cmd(&["token", "--min-ttl", "10m"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a");
    wait_for("a's token request", Duration::from_secs(10), || {
        server.stats().token_requests == 1
    });
    let noted = Instant::now();
    let _ = child.kill();
    let _ = child.wait();
    // b, of the same name, finds a's note: not its own, so it does not post that token.
    let run = b.run(&server, &["token", "--min-ttl", "10m"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("twin (id ") && run.stderr.contains("posted the fleet's refresh token"),
        "{run:?}"
    );
    assert_eq!(server.stats().token_requests, 1, "b posted a's token");
    assert_eq!(db.generation(), 1);
    // Once request_timeout and takeover_after have passed, b takes over.
    if let Some(left) = Duration::from_millis(4500).checked_sub(noted.elapsed()) {
        sleep(left);
    }
    let run = b.run(&server, &["token", "--min-ttl", "10m"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("taking over"), "{run:?}");
    let stats = server.stats();
    assert_eq!(
        (stats.token_requests, stats.refreshes_ok),
        (2, 1),
        "{stats:?}"
    );
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0),
        "{stats:?}"
    );
    assert_eq!(db.generation(), 2);
    b.assert_projection();
}

#[test]
fn a_note_of_the_previous_version_is_nobodys_own_and_its_table_gains_the_machine_id() {
    let server = short_lived(3600);
    let db = TestDb::new();
    let (machines, _) = fleet(1, &server, &db, 60_000);
    let m1 = &machines[0];
    m1.config("takeover_after = \"1s\"\n[claude]\nrequest_timeout = \"2s\"\n");
    // The table as the previous version made it, with its note: m1 posted generation 1's token.
    db.client()
        .batch_execute(&format!(
            "DROP TABLE tokenkeeper_in_flight; \
             CREATE TABLE tokenkeeper_in_flight (name text PRIMARY KEY, generation bigint NOT NULL, \
             machine text NOT NULL, since bigint NOT NULL); \
             INSERT INTO tokenkeeper_in_flight VALUES ('claude', 1, 'm1', {})",
            now_ms()
        ))
        .expect("the previous version's table");
    let noted = Instant::now();
    let run = m1.run(&server, &["token", "--min-ttl", "10m"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("m1 posted the fleet's refresh token"),
        "{run:?}"
    );
    assert_eq!(server.stats().token_requests, 0);
    let ids: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'tokenkeeper_in_flight' AND column_name = 'machine_id'",
            &[],
        )
        .expect("columns")
        .get(0);
    assert_eq!(ids, 1, "the column was added");
    if let Some(left) = Duration::from_millis(3500).checked_sub(noted.elapsed()) {
        sleep(left);
    }
    let run = m1.run(&server, &["token", "--min-ttl", "10m"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(server.stats().token_requests, 1);
    assert_eq!(db.generation(), 2);
}

const DAY_SECS: u64 = 86_400;

/// Codex CLI's and Gemini CLI's logins in fleet mode, and a `[[login]]` table's (`Table`, the
/// same table in each machine's config): where each machine keeps one, a login as the CLI
/// writes it (with keys tokenkeeper does not know), and what a machine's copy holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cli {
    Codex,
    Gemini,
    Table,
}

/// The `[[login]]` table of [`Cli::Table`]: a tool keeping its login two levels down, beside
/// an account of the login's and settings of the machine's own.
const TABLE: &str = "mytool";

impl Cli {
    fn name(self) -> &'static str {
        match self {
            Cli::Codex => "codex",
            Cli::Gemini => "gemini",
            Cli::Table => TABLE,
        }
    }

    /// The stand-in playing this CLI's token endpoint, its access tokens living `ttl_secs`.
    fn server(self, ttl_secs: u64) -> StandinServer {
        let config = match self {
            Cli::Codex => StandinConfig::openai(),
            Cli::Gemini => StandinConfig::google(crate::gemini::SECRET),
            Cli::Table => StandinConfig::default(),
        };
        StandinServer::start(StandinConfig {
            access_ttl_secs: ttl_secs,
            ..config
        })
        .expect("stand-in")
    }

    /// What a machine needs beyond the login: for Gemini the client secret, `in_config` or
    /// else from an installed Gemini CLI.
    fn set_up(self, m: &Machine, in_config: bool) {
        if self == Cli::Table {
            m.config(&format!(
                "[[login]]\nname = \"{TABLE}\"\ncredentials = \"{}\"\naccess_token = \"/auth/oauth/access_token\"\nrefresh_token = \"/auth/oauth/refresh_token\"\nexpires_at = \"/auth/oauth/expires_at\"\nexpiry_unit = \"ms\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\n",
                self.file(m).display(),
                m.token_url,
                StandinConfig::default().client_id
            ));
        }
        if self != Cli::Gemini {
            return;
        }
        let secret = crate::gemini::SECRET;
        if in_config {
            m.config(&format!("[gemini]\nclient_secret = \"{secret}\"\n"));
        } else {
            crate::gemini::fake_install(
                &m.npm_root(),
                "@google/gemini-cli-core/dist/src/code_assist/oauth2.js",
                &format!("const OAUTH_CLIENT_SECRET = '{secret}';\n"),
            );
        }
    }

    fn file(self, m: &Machine) -> PathBuf {
        match self {
            Cli::Codex => m.home().join(".codex/auth.json"),
            Cli::Gemini => m.home().join(".gemini/oauth_creds.json"),
            Cli::Table => m.home().join(".mytool/auth.json"),
        }
    }

    /// A login of `server`'s as the CLI writes it, its access token expiring when the server
    /// says (Codex: the JWT's own `exp`).
    fn login_text(self, login: &IssuedLogin, ttl_secs: u64) -> String {
        match self {
            Cli::Codex => crate::codex::auth_text(&login.access_token, &login.refresh_token),
            Cli::Gemini => crate::gemini::gemini_json(
                &login.access_token,
                &login.refresh_token,
                now_ms() + ttl_secs as i64 * 1000,
            ),
            Cli::Table => format!(
                r#"{{"version":3,"auth":{{"oauth":{{"access_token":"{}","refresh_token":"{}","expires_at":{},"token_type":"Bearer"}},"account":{{"email":"dev@example.test"}}}},"settings":{{"theme":"dark","zoom":1.50}}}}"#,
                login.access_token,
                login.refresh_token,
                now_ms() + ttl_secs as i64 * 1000
            ),
        }
    }

    /// An old copy of the fleet's login with keys of this machine's own: an expired access
    /// token, no refresh token.
    fn stale_copy(self) -> String {
        match self {
            Cli::Codex => format!(
                r#"{{"auth_mode":"chatgpt","OPENAI_API_KEY":null,"tokens":{{"id_token":"{}","access_token":"{}","refresh_token":"","account_id":"{}","mine":true}},"last_refresh":"2026-01-01T00:00:00Z","this_machine":{{"n":1.50}}}}"#,
                crate::codex::id_jwt(),
                crate::codex::access_jwt(now_ms() - 60_000),
                crate::codex::ACCOUNT_ID
            ),
            Cli::Gemini => {
                r#"{"access_token":"ya29.stale","expiry_date":1,"token_type":"Bearer","this_machine":{"n":1.50}}"#.to_string()
            }
            Cli::Table => {
                r#"{"version":2,"auth":{"oauth":{"access_token":"stale","refresh_token":"","expires_at":1,"mine":true},"local":{"profile":"m3"}},"this_machine":{"n":1.50}}"#.to_string()
            }
        }
    }

    fn write(self, m: &Machine, text: &str) {
        let path = self.file(m);
        fs::create_dir_all(path.parent().expect("parent")).expect("the CLI's folder");
        fs::write(&path, text).expect("write the login");
        set_mode(&path, 0o600);
    }

    fn json(self, m: &Machine) -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(self.file(m)).expect("read the copy"))
            .expect("the copy parses")
    }

    /// The object the login's tokens are in.
    fn login(self, v: &serde_json::Value) -> &serde_json::Value {
        match self {
            Cli::Codex => &v["tokens"],
            Cli::Gemini => v,
            Cli::Table => &v["auth"]["oauth"],
        }
    }

    fn access_token(self, m: &Machine) -> String {
        let v = self.json(m);
        self.login(&v)["access_token"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// When the copy's access token expires, as the CLI judges it.
    fn expires_at(self, v: &serde_json::Value) -> i64 {
        match self {
            Cli::Codex => v["tokens"]["access_token"]
                .as_str()
                .and_then(tokenkeeper::oauth::jwt::expiry_ms)
                .unwrap_or(0),
            Cli::Gemini => v["expiry_date"].as_i64().unwrap_or(0),
            Cli::Table => v["auth"]["oauth"]["expires_at"].as_i64().unwrap_or(0),
        }
    }

    /// The keys of a document that are not the login's: what a copy must keep as it was.
    fn own_keys(self, v: &serde_json::Value) -> serde_json::Value {
        let (login, fields): (&[&str], &[&str]) = match self {
            Cli::Table => return table_own_keys(v),
            Cli::Codex => (
                &["tokens", "last_refresh"],
                &["id_token", "access_token", "refresh_token", "account_id"],
            ),
            Cli::Gemini => (
                &[
                    "access_token",
                    "refresh_token",
                    "expiry_date",
                    "scope",
                    "token_type",
                    "id_token",
                ],
                &[],
            ),
        };
        let mut own = serde_json::Map::new();
        for (k, value) in v.as_object().expect("an object") {
            if !login.contains(&k.as_str()) {
                own.insert(k.clone(), value.clone());
            }
        }
        if self == Cli::Codex
            && let Some(tokens) = v["tokens"].as_object()
        {
            for (k, value) in tokens {
                if !fields.contains(&k.as_str()) {
                    own.insert(format!("tokens.{k}"), value.clone());
                }
            }
        }
        serde_json::Value::Object(own)
    }

    /// The login's fields tokenkeeper does not know (inside Codex's `tokens`): shared with the
    /// login, so every machine's copy gets them.
    fn shared_fields(self, v: &serde_json::Value) -> serde_json::Value {
        let mut own = self.own_keys(v);
        own.as_object_mut()
            .expect("an object")
            .retain(|k, _| k.starts_with("tokens.") || k.starts_with("auth."));
        own
    }

    /// `m`'s copy is in the CLI's shape without a refresh token, holds `server`'s live access
    /// token, keeps the keys `own` it had, and is 0600.
    fn assert_copy(self, m: &Machine, server: &StandinServer, own: &serde_json::Value) {
        let v = self.json(m);
        let login = self.login(&v);
        match self {
            Cli::Codex => {
                assert_eq!(login["refresh_token"], "", "{}: {v}", m.name);
                assert!(
                    login["id_token"]
                        .as_str()
                        .and_then(tokenkeeper::oauth::jwt::claims)
                        .is_some(),
                    "{}: Codex reads no file without an id token: {v}",
                    m.name
                );
                assert_eq!(login["account_id"], crate::codex::ACCOUNT_ID, "{}", m.name);
                let last = v["last_refresh"].as_str().expect("last_refresh");
                assert!(
                    last.parse::<jiff::Timestamp>().is_ok(),
                    "{}: {last}",
                    m.name
                );
            }
            Cli::Gemini => {
                assert!(
                    v.get("refresh_token").is_none(),
                    "{}: a refresh token on disk: {v}",
                    m.name
                );
                assert_eq!(v["token_type"], "Bearer", "{}: {v}", m.name);
                assert!(v["scope"].as_str().is_some(), "{}: {v}", m.name);
            }
            Cli::Table => {
                assert_eq!(login["refresh_token"], "", "{}: {v}", m.name);
                assert_eq!(login["token_type"], "Bearer", "{}: {v}", m.name);
                assert_eq!(
                    v["auth"]["account"]["email"], "dev@example.test",
                    "{}: the login's account travels with it: {v}",
                    m.name
                );
            }
        }
        assert!(self.expires_at(&v) > now_ms(), "{}: {v}", m.name);
        assert!(
            server.is_live_access(login["access_token"].as_str().unwrap_or("")),
            "{}",
            m.name
        );
        assert_eq!(&self.own_keys(&v), own, "{}: its own keys", m.name);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(self.file(m))
            .expect("the copy")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{}", m.name);
    }
}

/// A `[[login]]` document's keys outside the login's tokens, by path: the top-level keys but
/// `auth`, and the keys inside `auth` and `auth.oauth` that are not the three the pointers
/// name (`auth.account` is the login's, pushed with it; the others are a machine's own).
fn table_own_keys(v: &serde_json::Value) -> serde_json::Value {
    let mut own = serde_json::Map::new();
    for (k, value) in v.as_object().expect("an object") {
        if k != "auth" {
            own.insert(k.clone(), value.clone());
        }
    }
    for (k, value) in v["auth"].as_object().into_iter().flatten() {
        if k != "oauth" {
            own.insert(format!("auth.{k}"), value.clone());
        }
    }
    let tokens = ["access_token", "refresh_token", "expires_at"];
    for (k, value) in v["auth"]["oauth"].as_object().into_iter().flatten() {
        if !tokens.contains(&k.as_str()) {
            own.insert(format!("auth.oauth.{k}"), value.clone());
        }
    }
    serde_json::Value::Object(own)
}

/// A fleet of `n` machines sharing `cli`'s login: the first logged in, with keys of its own (and
/// Gemini's client secret in its config, where the others have Gemini CLI installed), and
/// pushed; the third (when there is one) holding an old copy with keys of its own; the others
/// holding nothing. Returns the machines and the keys of their own each must keep.
fn fleet_of(
    cli: Cli,
    n: usize,
    server: &StandinServer,
    db: &TestDb,
    ttl_secs: u64,
) -> (Vec<Machine>, Vec<serde_json::Value>) {
    let key = key();
    let machines: Vec<Machine> = (1..=n)
        .map(|i| {
            let m = Machine::new(&format!("m{i}"), &db.url, &key, server);
            cli.set_up(&m, i == 1);
            m
        })
        .collect();
    let login = server.issue_login();
    cli.write(&machines[0], &cli.login_text(&login, ttl_secs));
    if n >= 3 {
        cli.write(&machines[2], &cli.stale_copy());
    }
    let pushed = cli.shared_fields(&cli.json(&machines[0]));
    let own: Vec<serde_json::Value> = machines
        .iter()
        .map(|m| {
            let mut own = match cli.file(m).exists() {
                true => cli.own_keys(&cli.json(m)),
                false => serde_json::json!({}),
            };
            own.as_object_mut()
                .expect("an object")
                .extend(pushed.as_object().expect("an object").clone());
            own
        })
        .collect();
    let run = machines[0].run(server, &["--provider", cli.name(), "fleet", "push"]);
    assert_eq!(run.code, 0, "{run:?}");
    (machines, own)
}

/// Three machines, each with a daemon, keep `cli`'s login with 6-second tokens for 18 seconds
/// while a client on each reads its copy and calls the API every 100 ms: one token request per
/// token lifetime for the whole fleet, none reused, every call served, and every copy in the
/// CLI's shape with no refresh token and the machine's own keys kept.
fn three_machines_keep_one_login(cli: Cli) {
    const TTL_SECS: u64 = 6;
    let server = cli.server(TTL_SECS);
    let db = TestDb::new();
    let (machines, own) = fleet_of(cli, 3, &server, &db, TTL_SECS);
    let daemons: Vec<Daemon> = machines
        .iter()
        .map(|m| m.daemon(&["--provider", cli.name(), "--refresh-before", "2s"]))
        .collect();
    let stop_flag = AtomicBool::new(false);
    let failures = Mutex::new(Vec::new());
    let start = Instant::now();
    thread::scope(|scope| {
        for m in &machines {
            let (stop_flag, failures, server) = (&stop_flag, &failures, &server);
            scope.spawn(move || {
                wait_for("the first copy", Duration::from_secs(10), || {
                    cli.file(m).exists() && cli.expires_at(&cli.json(m)) > now_ms()
                });
                let mut calls = 0;
                while !stop_flag.load(Ordering::SeqCst) {
                    calls += 1;
                    if !claude_like_call(server, || cli.access_token(m)) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{} call {calls}", m.name));
                    }
                    let v = cli.json(m);
                    let refresh = cli.login(&v)["refresh_token"].as_str().unwrap_or("");
                    assert_eq!(refresh, "", "{}: a refresh token on disk", m.name);
                    let left = cli.expires_at(&v) - now_ms();
                    assert!(left > 0, "{} held an expired token ({left} ms)", m.name);
                    sleep(Duration::from_millis(100));
                }
            });
        }
        sleep(Duration::from_secs(18));
        stop_flag.store(true, Ordering::SeqCst);
    });
    let elapsed = start.elapsed();
    // Stopped while the live token is not due for another half second (refreshed 2 s before
    // expiry), so no daemon is about to refresh as they stop.
    wait_for(
        "every machine to hold the store's live access token, not yet due",
        Duration::from_secs(8),
        || {
            let first = cli.access_token(&machines[0]);
            cli.expires_at(&cli.json(&machines[0])) - now_ms() > 2500
                && server.is_live_access(&first)
                && machines.iter().all(|m| cli.access_token(m) == first)
        },
    );
    let runs = stop_all(&server, &machines, daemons);
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
    }
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "client calls failed: {failures:?}\n{:?}",
        runs[0]
    );
    let stats = server.stats();
    let generation: i64 = db
        .client()
        .query_one(
            "SELECT generation FROM tokenkeeper_logins WHERE name = $1",
            &[&cli.name()],
        )
        .expect("the login's row")
        .get(0);
    // Tokens live 6 s and are refreshed 2 s (plus up to 0.2 s) before expiry, a Codex token's
    // `exp` cut to whole seconds: one refresh every 3–4 s for the whole fleet.
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "{} on three machines, {secs:.1} s: {} token requests ({} ok), generation {generation}",
        cli.name(),
        stats.token_requests,
        stats.refreshes_ok
    );
    let fewest = (secs / TTL_SECS as f64).floor() as u64;
    let most = (secs / 3.0).ceil() as u64 + 1;
    assert!(
        (fewest..=most).contains(&stats.token_requests),
        "{fewest}..={most}: {stats:?}"
    );
    assert_eq!(stats.refreshes_ok, stats.token_requests, "{stats:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0),
        "{stats:?}"
    );
    assert_eq!(generation, 1 + stats.refreshes_ok as i64);
    // Each request as the CLI itself posts it: Codex's JSON; Gemini's form with the client
    // secret, whether the refreshing machine had it in its config or from Gemini CLI.
    let token_requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(token_requests.len() as u64, stats.token_requests);
    for request in token_requests {
        match cli {
            Cli::Codex | Cli::Table => {
                let body: serde_json::Value =
                    serde_json::from_str(&request.body).expect("a JSON body");
                assert_eq!(body["grant_type"], "refresh_token", "{body}");
            }
            Cli::Gemini => assert!(
                request
                    .body
                    .contains(&format!("client_secret={}", crate::gemini::SECRET)),
                "a form with the client secret"
            ),
        }
    }
    for (m, own) in machines.iter().zip(&own) {
        cli.assert_copy(m, &server, own);
    }
    for m in [&machines[0], &machines[2]] {
        let text = fs::read_to_string(cli.file(m)).expect("the copy");
        assert!(
            text.contains("1.50"),
            "{}: a number of its own respelled",
            m.name
        );
    }
}

#[test]
fn three_machines_keep_one_codex_login_with_one_token_request_per_lifetime() {
    three_machines_keep_one_login(Cli::Codex);
}

#[test]
fn three_machines_keep_one_login_tables_login_with_one_token_request_per_lifetime() {
    three_machines_keep_one_login(Cli::Table);
}

#[test]
fn three_machines_keep_one_gemini_login_with_one_token_request_per_lifetime() {
    three_machines_keep_one_login(Cli::Gemini);
}

#[test]
fn a_codex_machine_writes_its_copy_under_codexs_flocks_in_codexs_order() {
    // Tokens that live longer than Codex's day of margin: nothing is due.
    let server = Cli::Codex.server(DAY_SECS * 10);
    let db = TestDb::new();
    let (machines, _) = fleet_of(Cli::Codex, 3, &server, &db, DAY_SECS * 10);
    let token = |m: &Machine| {
        m.cmd(&["--provider", "codex", "token"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn token")
    };
    let finish = |m: &Machine, child: Child| {
        let run = Run::from(child.wait_with_output().expect("token"));
        m.assert_no_leak(&server, &run, true);
        assert_eq!(run.code, 0, "{}: {run:?}", m.name);
        assert_eq!(run.stdout.trim(), Cli::Codex.access_token(m), "{}", m.name);
    };
    let folder = |m: &Machine| m.home().join(".codex");

    // Codex is saving on m2 (or stuck) under its home lock: the copy waits for it.
    let m2 = &machines[1];
    fs::create_dir_all(folder(m2)).expect("codex folder");
    let home_lock = crate::codex::open_lock(&folder(m2).join("auth.lock"));
    home_lock.lock().expect("flock auth.lock");
    let child = token(m2);
    sleep(Duration::from_millis(1500));
    assert!(
        !Cli::Codex.file(m2).exists(),
        "the copy waits for auth.lock"
    );
    assert!(
        !crate::codex::held_elsewhere(&folder(m2).join("auth.json.lock")),
        "Codex's order: auth.json.lock only after auth.lock"
    );
    drop(home_lock);
    finish(m2, child);

    // On m3, Codex holds the file's lock: the copy takes auth.lock, then waits for that one.
    let m3 = &machines[2];
    let before = fs::read_to_string(Cli::Codex.file(m3)).expect("m3's old copy");
    let file_lock = crate::codex::open_lock(&folder(m3).join("auth.json.lock"));
    file_lock.lock().expect("flock auth.json.lock");
    let child = token(m3);
    wait_for(
        "auth.lock, taken before auth.json.lock",
        Duration::from_secs(10),
        || crate::codex::held_elsewhere(&folder(m3).join("auth.lock")),
    );
    sleep(Duration::from_millis(500));
    assert_eq!(
        fs::read_to_string(Cli::Codex.file(m3)).expect("m3's copy"),
        before,
        "the copy waits for auth.json.lock"
    );
    drop(file_lock);
    finish(m3, child);
    for m in [m2, m3] {
        assert!(!crate::codex::held_elsewhere(&folder(m).join("auth.lock")));
        assert!(!crate::codex::held_elsewhere(
            &folder(m).join("auth.json.lock")
        ));
    }
    assert_eq!(server.stats().token_requests, 0, "no refresh was due");
}

#[test]
fn codex_and_gemini_logins_are_pushed_into_rows_of_their_own_beside_claudes() {
    let claude = short_lived(3600);
    let servers = [
        (Cli::Codex, Cli::Codex.server(DAY_SECS * 10)),
        (Cli::Gemini, Cli::Gemini.server(3600)),
    ];
    let db = TestDb::new();
    let key = key();
    let a = Machine::new("m1", &db.url, &key, &claude);
    let b = Machine::new("m2", &db.url, &key, &claude);
    Cli::Gemini.set_up(&a, true);
    Cli::Gemini.set_up(&b, false);
    let claude_login = claude.issue_login();
    a.write_login(&claude_login, 7_200_000);
    let logins: Vec<(Cli, &StandinServer, IssuedLogin, String)> = servers
        .iter()
        .map(|(cli, server)| {
            let login = server.issue_login();
            let text = cli.login_text(&login, DAY_SECS * 10);
            cli.write(&a, &text);
            (*cli, server, login, text)
        })
        .collect();
    let checked = |m: &Machine, args: &[&str], stdout_may_hold_token: bool| {
        let run = Run::from(m.cmd(args).output().expect("run tokenkeeper"));
        m.assert_no_leak(&claude, &run, stdout_may_hold_token);
        for (_, server) in &servers {
            m.assert_no_leak(server, &run, stdout_may_hold_token);
        }
        run
    };
    for provider in ["claude", "codex", "gemini"] {
        let run = checked(&a, &["--provider", provider, "fleet", "push"], false);
        assert_eq!(run.code, 0, "{provider}: {run:?}");
        assert!(run.stdout.starts_with("pushed: generation 1 "), "{run:?}");
    }
    let rows: Vec<(String, String, i64)> = db
        .client()
        .query(
            "SELECT name, provider, generation FROM tokenkeeper_logins ORDER BY name",
            &[],
        )
        .expect("the rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let row = |name: &str| (name.to_string(), name.to_string(), 1);
    assert_eq!(rows, [row("claude"), row("codex"), row("gemini")]);

    // The pushing machine's files lose their refresh token and nothing else.
    a.assert_projection();
    for (cli, _, login, text) in &logins {
        let now = fs::read_to_string(cli.file(&a)).expect("the pusher's file");
        match cli {
            Cli::Codex => assert_eq!(
                now,
                text.replace(
                    &format!("\"refresh_token\": \"{}\"", login.refresh_token),
                    "\"refresh_token\": \"\""
                ),
                "Codex's file, byte for byte"
            ),
            Cli::Table => unreachable!("only Codex's and Gemini's logins are pushed here"),
            Cli::Gemini => {
                let mut expected: serde_json::Value = serde_json::from_str(text).expect("json");
                expected
                    .as_object_mut()
                    .expect("an object")
                    .shift_remove("refresh_token");
                assert_eq!(cli.json(&a), expected);
                assert!(now.contains("1.50"), "{now}");
            }
        }
    }

    // Another machine gets each login's access token in its CLI's shape, Claude's included.
    for (cli, server, login, text) in &logins {
        let run = checked(&b, &["--provider", cli.name(), "token"], true);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(run.stdout.trim(), login.access_token, "{}", cli.name());
        let pushed = cli.shared_fields(&serde_json::from_str(text).expect("json"));
        cli.assert_copy(&b, server, &pushed);
        let run = checked(&b, &["--provider", cli.name(), "status", "--json"], false);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
        assert_eq!(v["logins"][0]["store"]["generation"], 1, "{run:?}");
        assert_eq!(v["logins"][0]["state"], "fresh", "{run:?}");
    }
    let run = checked(&b, &["token"], true);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), claude_login.access_token);
    b.assert_projection();
    for (_, server) in &servers {
        assert_eq!(server.stats().token_requests, 0, "no refresh was due");
    }
    assert_eq!(claude.stats().token_requests, 0, "no refresh was due");

    // A forced refresh on a machine whose Gemini CLI holds the client secret: the fleet's
    // request carries it.
    let gemini = &servers[1].1;
    let url = gemini.token_url();
    let run = checked(
        &b,
        &[
            "--provider",
            "gemini",
            "--token-url",
            &url,
            "refresh",
            "--force",
        ],
        false,
    );
    assert_eq!(run.code, 0, "{run:?}");
    let requests = gemini.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0]
            .body
            .contains(&format!("client_secret={}", crate::gemini::SECRET))
    );
    Cli::Gemini.assert_copy(&b, gemini, &serde_json::json!({}));

    // A copy has nothing to push.
    let run = checked(&b, &["--provider", "gemini", "fleet", "push"], false);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("no refresh token"), "{run:?}");
}

#[test]
fn a_wrong_gemini_client_secret_on_one_machine_is_its_own_config_error_not_the_fleets_dead_login() {
    let server = Cli::Gemini.server(3600);
    let db = TestDb::new();
    let (machines, _) = fleet_of(Cli::Gemini, 2, &server, &db, 3600);
    let (a, b) = (&machines[0], &machines[1]);
    b.config("[gemini]\nclient_secret = \"a-typo\"\n");
    let row = || -> (i64, Option<String>) {
        let r = db
            .client()
            .query_one(
                "SELECT generation, last_outcome FROM tokenkeeper_logins WHERE name = 'gemini'",
                &[],
            )
            .expect("the row");
        (r.get(0), r.get(1))
    };
    let run = b.run(&server, &["--provider", "gemini", "refresh", "--force"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("refused the OAuth client"), "{run:?}");
    assert!(!run.stderr.contains("a-typo"), "{run:?}");
    assert_eq!(server.stats().token_requests, 1);
    assert_eq!(
        row(),
        (1, Some("pushed".to_string())),
        "the login is left alone"
    );

    // The machine with the right secret refreshes the same login at once.
    let run = a.run(&server, &["--provider", "gemini", "refresh", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(row(), (2, Some("refreshed".to_string())));
    assert_eq!(server.stats().refreshes_ok, 1);
}

#[test]
fn a_login_tables_login_is_pushed_into_a_row_of_its_own_and_a_machine_without_the_table_is_told() {
    let server = Cli::Table.server(3600);
    let db = TestDb::new();
    let (machines, own) = fleet_of(Cli::Table, 2, &server, &db, 3600);
    let (a, b) = (&machines[0], &machines[1]);
    let row: (String, String, i64) = db
        .client()
        .query_one(
            "SELECT name, provider, generation FROM tokenkeeper_logins",
            &[],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .expect("one row");
    assert_eq!(row, (TABLE.to_string(), TABLE.to_string(), 1));
    // The pusher's file is now a copy: its refresh token emptied, every other byte kept.
    let text = fs::read_to_string(Cli::Table.file(a)).expect("the pusher's file");
    assert!(text.contains(r#""refresh_token":"""#), "{text}");
    assert!(
        text.contains(r#""settings":{"theme":"dark","zoom":1.50}"#),
        "{text}"
    );
    Cli::Table.assert_copy(a, &server, &own[0]);
    // Another machine with the same table gets the access token and its own copy.
    let run = Run::from(
        b.cmd(&["--provider", TABLE, "token"])
            .output()
            .expect("run"),
    );
    b.assert_no_leak(&server, &run, true);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), Cli::Table.access_token(a));
    Cli::Table.assert_copy(b, &server, &own[1]);
    assert_eq!(server.stats().token_requests, 0, "no refresh was due");

    // A machine whose config has no such table cannot name the login.
    let c = Machine::new("m3", &db.url, &key(), &server);
    let run = c.run(&server, &["--provider", TABLE, "token"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains(TABLE), "{run:?}");
    assert!(!Cli::Table.file(&c).exists());

    // A copy has nothing to push.
    let run = b.run(&server, &["--provider", TABLE, "fleet", "push"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("no refresh token"), "{run:?}");
}

#[test]
fn a_login_table_whose_file_is_an_array_at_the_top_is_refused_by_push_changing_nothing() {
    let server = short_lived(3600);
    let db = TestDb::new();
    let m = Machine::new("m1", &db.url, &key(), &server);
    let creds = m.home().join(".mytool/auth.json");
    m.config(&format!(
        "[[login]]\nname = \"{TABLE}\"\ncredentials = \"{}\"\naccess_token = \"/0/access\"\nrefresh_token = \"/0/refresh\"\nexpires_at = \"/0/expires\"\nexpiry_unit = \"ms\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\n",
        creds.display(),
        server.token_url(),
        StandinConfig::default().client_id
    ));
    let login = server.issue_login();
    let text = format!(
        r#"[{{"access":"{}","refresh":"{}","expires":{}}}]"#,
        login.access_token,
        login.refresh_token,
        now_ms() + 3_600_000
    );
    fs::create_dir_all(creds.parent().expect("parent")).expect("folder");
    fs::write(&creds, &text).expect("write");
    set_mode(&creds, 0o600);
    let run = m.run(&server, &["--provider", TABLE, "fleet", "push"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("not a JSON object"), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert_eq!(fs::read_to_string(&creds).expect("read"), text);
    let table: Option<String> = db
        .client()
        .query_one("SELECT to_regclass('tokenkeeper_logins')::text", &[])
        .expect("query")
        .get(0);
    assert_eq!(table, None, "nothing was written to the store");
}
