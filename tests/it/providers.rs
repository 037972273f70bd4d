//! Every provider at once: one daemon and one `status` keep Claude Code's, Codex CLI's and Gemini
//! CLI's logins, each against its own stand-in (Anthropic's, OpenAI's and Google's flavour).

use crate::util::*;
use serde_json::{Value, json};
use std::fs;
use std::process::{Child, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};
use tokenkeeper_standin::{StandinConfig, StandinServer};

const GOOGLE_SECRET: &str = "standin-gemini-client-secret";
const LIFETIME_SECS: u64 = 4;

struct Three {
    /// Claude's stand-in is the sandbox's own.
    s: Sandbox,
    openai: StandinServer,
    google: StandinServer,
}

impl Three {
    fn new() -> Three {
        let s = Sandbox::with(StandinConfig {
            access_ttl_secs: LIFETIME_SECS,
            ..StandinConfig::default()
        });
        let openai = StandinServer::start(StandinConfig {
            access_ttl_secs: LIFETIME_SECS,
            ..StandinConfig::openai()
        })
        .unwrap();
        let google = StandinServer::start(StandinConfig {
            access_ttl_secs: LIFETIME_SECS,
            ..StandinConfig::google(GOOGLE_SECRET)
        })
        .unwrap();
        // Each provider's own endpoint, from the config file (the sandbox's TOKENKEEPER_TOKEN_URL
        // would send all three to Claude's stand-in, so every run drops it).
        s.config(&format!(
            "[claude]\ntoken_url = \"{}\"\n[codex]\ntoken_url = \"{}\"\n[gemini]\ntoken_url = \"{}\"\nclient_secret = \"{GOOGLE_SECRET}\"\n",
            s.server.token_url(),
            openai.token_url(),
            google.token_url()
        ));
        let t = Three { s, openai, google };
        t.write_logins();
        t
    }

    fn write_logins(&self) {
        let home = self.s.home();
        let claude = self.s.server.issue_login();
        self.s.write_login(&claude, LIFETIME_SECS as i64 * 1000);

        let codex = self.openai.issue_login();
        let id_token = tokenkeeper::oauth::jwt::unsigned(&json!({"exp": 4_000_000_000u64}));
        let auth = json!({
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": null,
            "tokens": {
                "id_token": id_token,
                "access_token": codex.access_token,
                "refresh_token": codex.refresh_token,
                "account_id": "acct-three",
            },
            "last_refresh": "2026-11-29T00:00:00Z",
            "kept": {"by": "codex"},
        });
        write_private(&home.join(".codex/auth.json"), &auth);

        let gemini = self.google.issue_login();
        let creds = json!({
            "access_token": gemini.access_token,
            "refresh_token": gemini.refresh_token,
            "scope": "openid",
            "token_type": "Bearer",
            "expiry_date": now_ms() + LIFETIME_SECS as i64 * 1000,
            "kept": {"by": "gemini"},
        });
        write_private(&home.join(".gemini/oauth_creds.json"), &creds);
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = self.s.cmd(args);
        cmd.env_remove("TOKENKEEPER_TOKEN_URL");
        let run = Run::from(cmd.output().expect("run tokenkeeper"));
        self.assert_no_leak(&run.stdout);
        self.assert_no_leak(&run.stderr);
        run
    }

    fn daemon(&self) -> Child {
        let mut cmd = self.s.cmd(&["daemon", "--refresh-before", "2s"]);
        cmd.env_remove("TOKENKEEPER_TOKEN_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("spawn daemon")
    }

    fn tokens(&self) -> Vec<String> {
        let mut all = self.s.server.all_issued_tokens();
        all.extend(self.openai.all_issued_tokens());
        all.extend(self.google.all_issued_tokens());
        all
    }

    fn assert_no_leak(&self, text: &str) {
        for token in self.tokens() {
            assert!(!text.contains(&token), "a token leaked: {text}");
        }
    }

    fn read(&self, rel: &str) -> Value {
        serde_json::from_str(&fs::read_to_string(self.s.home().join(rel)).unwrap()).unwrap()
    }
}

fn write_private(path: &std::path::Path, doc: &Value) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, serde_json::to_string_pretty(doc).unwrap()).unwrap();
    set_mode(path, 0o600);
}

#[test]
fn status_shows_the_three_logins_in_one_table() {
    let t = Three::new();
    let run = t.run(&["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows: Vec<&str> = run.stdout.lines().collect();
    assert!(rows[0].starts_with("LOGIN"), "{run:?}");
    for name in ["claude", "codex", "gemini"] {
        assert!(
            rows.iter()
                .any(|r| r.starts_with(name) && r.contains("expires in")),
            "{name}: {run:?}"
        );
    }
    let v: Value = serde_json::from_str(&t.run(&["status", "--json"]).stdout).unwrap();
    let names: Vec<&str> = v["logins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["provider"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["claude", "codex", "gemini"]);
}

#[test]
fn one_daemon_keeps_all_three_fresh_each_at_its_own_endpoint() {
    let t = Three::new();
    let d = t.daemon();
    // Tokens live 4 s and are refreshed at 2 s left (minus jitter): in 9 s, each login is
    // refreshed a few times, each at its own server, with no refresh token ever reused.
    let start = Instant::now();
    let mut expired_seen = Vec::new();
    while start.elapsed() < Duration::from_secs(9) {
        let now = now_ms();
        let claude = t.read(".claude/.credentials.json")["claudeAiOauth"]["expiresAt"]
            .as_i64()
            .unwrap();
        let gemini = t.read(".gemini/oauth_creds.json")["expiry_date"]
            .as_i64()
            .unwrap();
        let codex_access = t.read(".codex/auth.json")["tokens"]["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let codex = tokenkeeper::oauth::jwt::expiry_ms(&codex_access).unwrap();
        for (name, at) in [("claude", claude), ("codex", codex), ("gemini", gemini)] {
            if at <= now {
                expired_seen.push(name);
            }
        }
        sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let out = d.wait_with_output().expect("daemon output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    t.assert_no_leak(&stderr);
    assert!(
        expired_seen.is_empty(),
        "a file held an expired token: {expired_seen:?}\n{stderr}"
    );

    for (name, server) in [
        ("claude", &t.s.server),
        ("codex", &t.openai),
        ("gemini", &t.google),
    ] {
        let stats = server.stats();
        assert!(stats.refreshes_ok >= 2, "{name}: {stats:?}\n{stderr}");
        assert_eq!(stats.reused_refresh_tokens, 0, "{name}: {stats:?}");
        assert_eq!(stats.revoked_families, 0, "{name}: {stats:?}");
    }
    // Each file holds its server's current tokens and kept what tokenkeeper does not know.
    let codex = t.read(".codex/auth.json");
    assert_eq!(
        Some(codex["tokens"]["access_token"].as_str().unwrap()),
        t.openai.current_tokens(0).map(|c| c.0).as_deref()
    );
    assert_eq!(codex["tokens"]["account_id"], "acct-three");
    assert_eq!(codex["kept"]["by"], "codex");
    let gemini = t.read(".gemini/oauth_creds.json");
    assert_eq!(
        Some(gemini["access_token"].as_str().unwrap()),
        t.google.current_tokens(0).map(|c| c.0).as_deref()
    );
    assert_eq!(gemini["kept"]["by"], "gemini");
    assert_eq!(
        Some(
            t.read(".claude/.credentials.json")["claudeAiOauth"]["accessToken"]
                .as_str()
                .unwrap()
        ),
        t.s.server.current_tokens(0).map(|c| c.0).as_deref()
    );
    for token in t.tokens() {
        for file in files_under(&t.s.state_dir()) {
            let text = fs::read_to_string(&file).unwrap_or_default();
            assert!(!text.contains(&token), "token in {}", file.display());
        }
    }
}
