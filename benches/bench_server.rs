//! The loopback OAuth stand-in as a process, for `scripts/bench`: prints its token URL, then
//! answers commands on stdin, one per line: `login PATH SECONDS` writes a Claude-style login
//! expiring in SECONDS (negative: already expired) to PATH; `delay MS` makes every token request
//! take MS milliseconds (the real endpoint's round trip; 0: none); `stats` prints the server's
//! counters as one JSON line; `quit` (or end of input) stops it.

use std::io::{BufRead, Write};
use tokenkeeper_standin::{Fault, StandinConfig, StandinServer};

fn main() {
    let server = match StandinServer::start(StandinConfig::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench_server: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", server.token_url());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["login", path, secs] => {
                let secs: i64 = secs.parse().unwrap_or(-1);
                let login = server.issue_login();
                let expires = tokenkeeper::login::now_ms() + secs * 1000;
                let text = format!(
                    r#"{{"claudeAiOauth":{{"accessToken":"{}","refreshToken":"{}","expiresAt":{expires},"scopes":["user:inference","user:profile"],"subscriptionType":"max"}}}}"#,
                    login.access_token, login.refresh_token
                );
                let ok = std::fs::write(path, text).is_ok();
                let _ = writeln!(out, "{}", if ok { "ok" } else { "error" });
            }
            ["delay", ms] => {
                let ok = ms.parse::<u64>().map(|ms| {
                    let delay = std::time::Duration::from_millis(ms);
                    server.set_default_fault((ms > 0).then_some(Fault::Delay(delay)));
                });
                let _ = writeln!(out, "{}", if ok.is_ok() { "ok" } else { "error" });
            }
            ["stats"] => {
                let s = server.stats();
                let _ = writeln!(
                    out,
                    r#"{{"token_requests":{},"refreshes_ok":{},"reused_refresh_tokens":{},"revoked_families":{}}}"#,
                    s.token_requests, s.refreshes_ok, s.reused_refresh_tokens, s.revoked_families
                );
            }
            ["quit"] => break,
            _ => {
                let _ = writeln!(out, "error");
            }
        }
        let _ = out.flush();
    }
}
