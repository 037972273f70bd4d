//! Claude Code's login in the macOS Keychain, reached through `security` as Claude reaches it.
//! A fake `security` (`tests/support/fake_security.rs`) placed first on PATH keeps items as files
//! and logs every argv, so each test also proves that no token was ever passed in argv. Found,
//! not found (44), locked (36), failed and silently dropped writes, a login too large for
//! `security -i`, `CLAUDE_CONFIG_DIR`'s service name, concurrency and the daemon.

use crate::util::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokenkeeper_standin::StandinConfig;

const SERVICE: &str = "Claude Code-credentials";
const ACCOUNT: &str = "tester";

/// The fake `security`, built once per test run (`cargo test --test it` alone does not build
/// examples; cargo holds no lock while tests run).
fn fake_security() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile_dir = Path::new(BIN).parent().expect("target folder");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--example", "fake_security"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // What cargo set for running the tests, which would make the build differ from the
        // one that built them (and rebuild dependencies back and forth).
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || name == "LD_LIBRARY_PATH"
                || name == "RUST_RECURSION_COUNT"
            {
                cargo.env_remove(name.as_ref());
            }
        }
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo");
        assert!(
            status.success(),
            "cargo build --example fake_security failed"
        );
        let path = profile_dir.join("examples/fake_security");
        assert!(
            path.exists(),
            "{} is missing: build it with `cargo build --example fake_security`",
            path.display()
        );
        path
    })
}

/// A sandbox whose `[claude]` store is the Keychain, played by the fake `security`.
struct Keychain {
    s: Sandbox,
    /// The fake's folder: items, knobs, argv log.
    dir: PathBuf,
    /// Holds only `security`, put first on PATH.
    bin: PathBuf,
}

impl Keychain {
    fn new() -> Keychain {
        Keychain::with(StandinConfig::default(), "")
    }

    /// `config` is more of the `[claude]` table.
    fn with(standin: StandinConfig, config: &str) -> Keychain {
        let s = Sandbox::with(standin);
        let dir = s.dir.path().join("keychain");
        let bin = s.dir.path().join("bin");
        fs::create_dir_all(dir.join("items")).unwrap();
        fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(fake_security(), bin.join("security")).unwrap();
        s.config(&format!("[claude]\nstore = \"keychain\"\n{config}"));
        Keychain { s, dir, bin }
    }

    fn item_path(&self, service: &str) -> PathBuf {
        self.dir.join("items").join(format!("{service}@{ACCOUNT}"))
    }

    fn put(&self, service: &str, text: &str) {
        fs::write(self.item_path(service), text).unwrap();
    }

    fn item(&self, service: &str) -> Option<String> {
        fs::read_to_string(self.item_path(service)).ok()
    }

    fn item_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.item(SERVICE).expect("item")).expect("item parses")
    }

    /// Writes an expired (or fresh) login from the stand-in into the default item.
    fn login(&self, expires_in_ms: i64) -> tokenkeeper_standin::IssuedLogin {
        let login = self.s.server.issue_login();
        self.put(
            SERVICE,
            &claude_json(
                &login.access_token,
                &login.refresh_token,
                now_ms() + expires_in_ms,
            ),
        );
        login
    }

    fn knob(&self, name: &str, on: bool) {
        let path = self.dir.join(name);
        if on {
            fs::write(path, "").unwrap();
        } else {
            let _ = fs::remove_file(path);
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.s.cmd(args);
        c.env(
            "PATH",
            format!(
                "{}:{}",
                self.bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("FAKE_SECURITY_DIR", &self.dir)
        .env("USER", ACCOUNT);
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        let run = Run::from(self.cmd(args).output().expect("run tokenkeeper"));
        self.check(&run, args.first() == Some(&"token"));
        run
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    }

    fn finish(&self, child: Child) -> Run {
        let run = Run::from(child.wait_with_output().expect("wait"));
        self.check(&run, false);
        run
    }

    /// No token in the output (but `token`'s stdout) or the state folder, and none in any argv
    /// `security` was given, neither as text nor as hex.
    fn check(&self, run: &Run, stdout_may_hold_token: bool) {
        self.s.assert_no_leak(run, stdout_may_hold_token);
        let argv = self.argv_log();
        for token in self.s.server.all_issued_tokens() {
            assert!(!argv.contains(&token), "a token reached security's argv");
            assert!(
                !argv.contains(&hex(token.as_bytes())),
                "a token reached security's argv as hex"
            );
            assert!(
                !run.stderr.contains(&hex(token.as_bytes())),
                "a token reached stderr as hex: {run:?}"
            );
        }
    }

    fn argv_log(&self) -> String {
        fs::read_to_string(self.dir.join("argv.log")).unwrap_or_default()
    }

    /// The argv of every `security` run so far.
    fn invocations(&self) -> Vec<Vec<String>> {
        self.argv_log()
            .lines()
            .map(|l| serde_json::from_str(l).expect("argv line"))
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn find_argv(service: &str) -> Vec<String> {
    ["find-generic-password", "-a", ACCOUNT, "-s", service, "-w"]
        .map(String::from)
        .to_vec()
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn a_login_in_the_keychain_is_refreshed_there_and_the_file_is_left_alone() {
    let k = Keychain::new();
    let login = k.s.server.issue_login();
    let before = format!(
        r#"{{"claudeAiOauth":{{"accessToken":"{}","refreshToken":"{}","expiresAt":{},"scopes":["user:inference","user:profile"],"subscriptionType":"max","rateLimitTier":null,"accountUuid":"u-1"}},"mcpOAuth":{{"srv":{{"n":1.50}}}}}}"#,
        login.access_token,
        login.refresh_token,
        now_ms() - 1000
    );
    k.put(SERVICE, &before);
    // An old copy in the file: Claude reads the Keychain first, so must we.
    let file = claude_json(
        "sk-ant-oat01-old",
        "sk-ant-ort01-old",
        now_ms() + 8 * 3_600_000,
    );
    fs::write(k.s.creds(), &file).unwrap();

    let status = k.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.starts_with("claude: expired"), "{status:?}");
    assert!(
        status.stdout.contains(&format!(
            "credentials   the login Keychain (service \"{SERVICE}\", account \"{ACCOUNT}\"), else {}",
            k.s.creds().display()
        )),
        "{status:?}"
    );

    let run = k.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("refreshed"), "{run:?}");
    assert_eq!(k.s.server.stats().token_requests, 1);
    let item = k.item_json();
    let oauth = &item["claudeAiOauth"];
    assert_ne!(oauth["refreshToken"], login.refresh_token.as_str());
    assert!(
        k.s.server
            .is_live_access(oauth["accessToken"].as_str().unwrap())
    );
    assert!(oauth["expiresAt"].as_i64().unwrap() > now_ms());
    assert_eq!(keys(&item), ["claudeAiOauth", "mcpOAuth"]);
    assert_eq!(
        keys(oauth),
        [
            "accessToken",
            "refreshToken",
            "expiresAt",
            "scopes",
            "subscriptionType",
            "rateLimitTier",
            "accountUuid"
        ]
    );
    assert!(
        k.item(SERVICE)
            .unwrap()
            .contains(r#""mcpOAuth":{"srv":{"n":1.50}}"#)
    );
    assert_eq!(k.s.read_creds(), file, "the file is left byte for byte");
    assert!(lock_dirs(&k.s).is_empty());

    let again = k.run(&["refresh"]);
    assert!(again.stdout.starts_with("not due"), "{again:?}");
    let token = k.run(&["token"]);
    assert_eq!(token.stdout.trim(), oauth["accessToken"].as_str().unwrap());
    assert_eq!(k.s.server.stats().token_requests, 1);

    // Only two shapes of argv, and the write went through `security -i`.
    let calls = k.invocations();
    assert!(calls.iter().any(|a| a == &["-i"]), "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|a| a == &["-i"] || *a == find_argv(SERVICE)),
        "{calls:?}"
    );
}

#[test]
fn without_an_item_the_file_is_used_and_written_as_claude_does() {
    let k = Keychain::new();
    let login = k.s.login(-1000);
    let run = k.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("refreshed"), "{run:?}");
    let v = k.s.creds_json();
    assert_ne!(
        v["claudeAiOauth"]["refreshToken"],
        login.refresh_token.as_str()
    );
    assert!(
        fs::read_dir(k.dir.join("items")).unwrap().next().is_none(),
        "no item was made"
    );
    let calls = k.invocations();
    assert!(!calls.is_empty() && calls.iter().all(|a| *a == find_argv(SERVICE)));
}

#[test]
fn a_locked_keychain_falls_back_to_the_file_and_says_so_once() {
    let k = Keychain::new();
    let in_keychain = k.login(8 * 3_600_000);
    let item_before = k.item(SERVICE).unwrap();
    k.s.login(-1000);
    k.knob("locked", true);
    let run = k.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("refreshed"), "{run:?}");
    let warnings = run.stderr.matches("the keychain is locked").count();
    assert_eq!(warnings, 1, "{run:?}");
    assert!(run.stderr.contains("security unlock-keychain"), "{run:?}");
    assert!(
        k.s.server.is_live_access(
            k.s.creds_json()["claudeAiOauth"]["accessToken"]
                .as_str()
                .unwrap()
        ),
        "the file got the new tokens"
    );
    assert_eq!(
        k.item(SERVICE).unwrap(),
        item_before,
        "the item is untouched"
    );
    assert!(k.s.server.is_live_access(&in_keychain.access_token));
}

#[test]
fn a_locked_keychain_without_a_file_is_a_clear_error_and_nothing_is_sent() {
    let k = Keychain::new();
    k.login(-1000);
    k.knob("locked", true);
    for args in [&["refresh"][..], &["status"], &["token"]] {
        let run = k.run(args);
        assert_eq!(run.code, 78, "{args:?}: {run:?}");
        let text = format!("{}{}", run.stdout, run.stderr);
        assert!(
            text.contains("the keychain is locked")
                && text.contains("security unlock-keychain")
                && text.contains(SERVICE),
            "{args:?}: {run:?}"
        );
    }
    assert_eq!(k.s.server.stats().token_requests, 0);
    assert!(!k.s.creds().exists(), "no file was made");
}

#[test]
fn a_failed_keychain_write_keeps_the_tokens_in_a_recovery_file_and_the_next_run_restores_them() {
    let k = Keychain::with(StandinConfig::default(), "");
    let login = k.login(-1000);
    let before = k.item(SERVICE).unwrap();
    k.knob("fail-writes", true);
    let run = k.run(&["refresh"]);
    assert_eq!(run.code, 74, "{run:?}");
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.contains("cannot write the login Keychain")
            && last.contains("security exited 1")
            && last.contains("recovery")
            && last.contains("tokenkeeper refresh"),
        "{run:?}"
    );
    assert!(
        !run.stderr.contains("passphrase"),
        "security's stderr is never quoted for a write: {run:?}"
    );
    assert_eq!(k.item(SERVICE).unwrap(), before, "the item is left whole");
    assert!(!k.s.creds().exists(), "no file was made instead");
    assert_eq!(files_under(&k.s.state_dir().join("recovery")).len(), 1);
    assert!(k.run(&["status"]).stdout.contains("recovery"));

    k.knob("fail-writes", false);
    let run = k.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("restored"), "{run:?}");
    let oauth = &k.item_json()["claudeAiOauth"];
    assert_ne!(oauth["refreshToken"], login.refresh_token.as_str());
    assert!(
        k.s.server
            .is_live_access(oauth["accessToken"].as_str().unwrap())
    );
    let stats = k.s.server.stats();
    assert_eq!(stats.token_requests, 1, "no second request was needed");
    assert_eq!(stats.reused_refresh_tokens, 0);
    assert!(files_under(&k.s.state_dir().join("recovery")).is_empty());
}

#[test]
fn a_write_the_keychain_drops_silently_is_caught_by_reading_it_back() {
    let k = Keychain::new();
    k.login(-1000);
    let before = k.item(SERVICE).unwrap();
    k.knob("ignore-writes", true);
    let run = k.run(&["refresh"]);
    assert_eq!(run.code, 74, "{run:?}");
    assert!(
        run.stderr
            .contains("read back differs from what was written"),
        "{run:?}"
    );
    assert_eq!(k.item(SERVICE).unwrap(), before);
    assert_eq!(files_under(&k.s.state_dir().join("recovery")).len(), 1);
}

#[test]
fn a_login_too_large_for_security_i_is_refused_whole_never_cut_or_put_in_argv() {
    let k = Keychain::new();
    let login = k.s.server.issue_login();
    // Several MCP servers' logins make the document larger than `security -i` takes on a line.
    let mcp: serde_json::Map<String, serde_json::Value> = (0..8)
        .map(|i| {
            (
                format!("srv{i}"),
                serde_json::json!({"accessToken": "m".repeat(200)}),
            )
        })
        .collect();
    let mut doc: serde_json::Value = serde_json::from_str(&claude_json(
        &login.access_token,
        &login.refresh_token,
        now_ms() - 1000,
    ))
    .unwrap();
    doc["mcpOAuth"] = serde_json::Value::Object(mcp);
    let before = doc.to_string();
    k.put(SERVICE, &before);
    let run = k.run(&["refresh"]);
    assert_eq!(run.code, 74, "{run:?}");
    assert!(
        run.stderr
            .contains("too large to write through `security -i`"),
        "{run:?}"
    );
    assert_eq!(k.item(SERVICE).unwrap(), before, "never written cut off");
    assert!(
        !k.invocations().iter().any(|a| a == &["-i"]),
        "nothing was sent to security -i"
    );
    assert_eq!(files_under(&k.s.state_dir().join("recovery")).len(), 1);
}

#[test]
fn a_login_with_non_ascii_text_round_trips_through_securitys_hex_output() {
    let k = Keychain::new();
    let login = k.s.server.issue_login();
    let before = format!(
        r#"{{"claudeAiOauth":{{"accessToken":"{}","refreshToken":"{}","expiresAt":{},"scopes":["user:inference"]}},"note":"café ☕"}}"#,
        login.access_token,
        login.refresh_token,
        now_ms() - 1000
    );
    k.put(SERVICE, &before);
    let run = k.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    let item = k.item(SERVICE).unwrap();
    assert!(item.ends_with(r#","note":"café ☕"}"#), "{item}");
    assert_ne!(
        k.item_json()["claudeAiOauth"]["refreshToken"],
        login.refresh_token.as_str()
    );
}

#[test]
fn claude_config_dir_names_another_item_and_folder() {
    let k = Keychain::new();
    let config_dir = k.s.dir.path().join("claude-config");
    fs::create_dir_all(&config_dir).unwrap();
    let config_str = config_dir.to_str().unwrap().to_string();
    let digest: String = Sha256::digest(config_str.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let service = format!("{SERVICE}-{}", &digest[..8]);
    // The default item holds another login, which must not be touched.
    let other = k.login(-1000);
    let other_text = k.item(SERVICE).unwrap();
    let login = k.s.server.issue_login();
    k.put(
        &service,
        &claude_json(&login.access_token, &login.refresh_token, now_ms() - 1000),
    );
    let out = k
        .cmd(&["refresh"])
        .env("CLAUDE_CONFIG_DIR", &config_dir)
        .output()
        .unwrap();
    let run = Run::from(out);
    k.check(&run, false);
    assert_eq!(run.code, 0, "{run:?}");
    let item: serde_json::Value = serde_json::from_str(&k.item(&service).unwrap()).unwrap();
    assert_ne!(
        item["claudeAiOauth"]["refreshToken"],
        login.refresh_token.as_str()
    );
    assert_eq!(k.item(SERVICE).unwrap(), other_text);
    assert!(k.s.server.is_live_access(&other.access_token));
    assert!(
        k.invocations()
            .iter()
            .all(|a| a == &["-i"] || *a == find_argv(&service))
    );
    assert!(
        config_dir.join(".tokenkeeper.lock").exists(),
        "locks live in CLAUDE_CONFIG_DIR"
    );
}

#[test]
fn concurrent_refreshes_through_the_keychain_make_one_token_request() {
    let k = Keychain::new();
    k.login(-1000);
    let children: Vec<Child> = (0..20).map(|_| k.spawn(&["refresh"])).collect();
    let runs: Vec<Run> = children.into_iter().map(|c| k.finish(c)).collect();
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
    }
    let stats = k.s.server.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0)
    );
    let refreshed = runs
        .iter()
        .filter(|r| r.stdout.starts_with("refreshed"))
        .count();
    assert_eq!(refreshed, 1);
    assert!(
        k.s.server.is_live_access(
            k.item_json()["claudeAiOauth"]["accessToken"]
                .as_str()
                .unwrap()
        )
    );
    assert!(!k.s.creds().exists());
    assert!(lock_dirs(&k.s).is_empty());
}

/// macOS has a real `/usr/bin/security`, which this test must not reach.
#[cfg(not(target_os = "macos"))]
#[test]
fn without_a_security_program_the_error_says_what_to_do() {
    let k = Keychain::new();
    k.login(-1000);
    let empty = k.s.dir.path().join("empty-bin");
    fs::create_dir_all(&empty).unwrap();
    let out = k.cmd(&["refresh"]).env("PATH", &empty).output().unwrap();
    let run = Run::from(out);
    k.check(&run, false);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("cannot run /usr/bin/security")
            && run.stderr.contains("store = \"file\""),
        "{run:?}"
    );
    assert_eq!(k.s.server.stats().token_requests, 0);
}

/// [`wait_for_every`], looking every 50 ms.
fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    wait_for_every(what, limit, Duration::from_millis(50), cond);
}

fn stop(k: &Keychain, child: Child) -> Run {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let run = k.finish(child);
    assert_eq!(run.code, 0, "{run:?}");
    run
}

#[test]
fn the_daemon_keeps_a_keychain_login_fresh_and_writes_it_back_there() {
    let k = Keychain::with(
        StandinConfig {
            access_ttl_secs: 4,
            ..StandinConfig::default()
        },
        "",
    );
    let first = k.login(4000);
    let d = k.spawn(&["daemon", "--refresh-before", "2s"]);
    let token = || {
        k.item_json()["claudeAiOauth"]["accessToken"]
            .as_str()
            .unwrap()
            .to_string()
    };
    wait_for("two refreshes", Duration::from_secs(15), || {
        k.s.server.stats().refreshes_ok >= 2
    });
    let run = stop(&k, d);
    assert_ne!(token(), first.access_token);
    assert!(k.s.server.is_live_access(&token()), "{run:?}");
    assert!(!k.s.creds().exists(), "the file was never written");
    let stats = k.s.server.stats();
    assert_eq!(
        (stats.reused_refresh_tokens, stats.revoked_families),
        (0, 0)
    );
}

#[test]
fn the_daemon_notices_a_new_keychain_login_without_any_file_event() {
    let k = Keychain::new();
    let events = k.s.dir.path().join("events");
    k.s.config(&format!(
        "[claude]\nstore = \"keychain\"\n[daemon]\nnotify_command = \"echo $TOKENKEEPER_EVENT >> {}\"\n",
        events.display()
    ));
    // A wiped login: dead until someone logs in again.
    k.put(SERVICE, &claude_json("", "", 0));
    let d = k.spawn(&["daemon"]);
    let seen = || fs::read_to_string(&events).unwrap_or_default();
    wait_for("the login_dead alert", Duration::from_secs(10), || {
        seen().contains("login_dead")
    });
    let started = Instant::now();
    let login = k.login(8 * 3_600_000);
    // Nothing changes in ~/.claude: only the daemon's look at the Keychain can see this.
    wait_for("the recovered alert", Duration::from_secs(40), || {
        seen().contains("recovered")
    });
    let run = stop(&k, d);
    assert!(started.elapsed() <= Duration::from_secs(35), "{run:?}");
    assert!(k.s.server.is_live_access(&login.access_token));
    assert!(!k.s.creds().exists());
}
