//! Plays `claude -p` for tokenkeeper's tests: takes its token from `CLAUDE_CODE_OAUTH_TOKEN` or
//! the stored login, calls the API stand-in at `$ANTHROPIC_BASE_URL/v1/messages`, and prints
//! what Claude Code prints (text, `--output-format json` or `stream-json`), exiting 1 with
//! nothing on stderr when authentication fails, as Claude does.
//!
//! Test knobs: `FAKE_CLAUDE_SLEEP_MS` (wait before answering), `FAKE_CLAUDE_STREAM_DELAY_MS`
//! (pause after the first stream-json line), `FAKE_CLAUDE_REPORT` (a file to write which token
//! variables it saw: names and fingerprints only).

use std::io::Write;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let format = args
        .iter()
        .position(|a| a == "--output-format")
        .and_then(|i| args.get(i + 1))
        .map_or("text", String::as_str)
        .to_string();
    let env_ms = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    let from_env = std::env::var("CLAUDE_CODE_OAUTH_TOKEN").ok();
    let token = from_env
        .clone()
        .or_else(stored_access_token)
        .unwrap_or_default();
    if let Ok(report) = std::env::var("FAKE_CLAUDE_REPORT") {
        let seen = serde_json::json!({
            "env_token": from_env.as_deref().map(tokenkeeper::secret::fingerprint),
            "stored_token": stored_access_token().as_deref().map(tokenkeeper::secret::fingerprint),
        });
        let _ = std::fs::write(report, seen.to_string());
    }
    if let Some(d) = env_ms("FAKE_CLAUDE_SLEEP_MS") {
        std::thread::sleep(d);
    }
    if token.is_empty() {
        say(&format, "Not logged in · Please run /login", None);
        std::process::exit(1);
    }
    let base = std::env::var("ANTHROPIC_BASE_URL").unwrap_or_default();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let status = agent
        .get(format!("{base}/v1/messages"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(599);
    let mut out = std::io::stdout().lock();
    match (status, format.as_str()) {
        (200, "json") => {
            let _ = writeln!(
                out,
                r#"{{"type":"result","subtype":"success","is_error":false,"result":"Hello from the stand-in","session_id":"s-1"}}"#
            );
        }
        (200, "stream-json") => {
            let _ = writeln!(
                out,
                r#"{{"type":"system","subtype":"init","session_id":"s-1"}}"#
            );
            let _ = out.flush();
            if let Some(d) = env_ms("FAKE_CLAUDE_STREAM_DELAY_MS") {
                std::thread::sleep(d);
            }
            let _ = writeln!(
                out,
                r#"{{"type":"assistant","message":{{"content":[{{"type":"text","text":"Hello"}}]}}}}"#
            );
            let _ = writeln!(
                out,
                r#"{{"type":"result","subtype":"success","is_error":false,"result":"Hello","session_id":"s-1"}}"#
            );
        }
        (200, _) => {
            let _ = writeln!(out, "Hello from the stand-in");
        }
        (code, _) => {
            drop(out);
            let text = format!(
                "Failed to authenticate. API Error: {code} Invalid authentication credentials"
            );
            say(&format, &text, Some(code));
            std::process::exit(1);
        }
    }
}

/// Prints a failure the way Claude Code does in each output format: on stdout only.
fn say(format: &str, text: &str, status: Option<u16>) {
    let mut out = std::io::stdout().lock();
    let status_json = status.map_or("null".to_string(), |s| s.to_string());
    let result = serde_json::to_string(text).unwrap_or_default();
    let _ = match format {
        "json" => writeln!(
            out,
            r#"{{"type":"result","subtype":"success","is_error":true,"api_error_status":{status_json},"api_error_type":"authentication_error","duration_ms":12,"result":{result},"session_id":"s-1"}}"#
        ),
        "stream-json" => writeln!(
            out,
            "{{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s-1\"}}\n{}\n{}",
            format_args!(
                r#"{{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"error_status":{status_json},"error":"authentication_failed"}}"#
            ),
            format_args!(
                r#"{{"type":"result","subtype":"success","is_error":true,"api_error_status":{status_json},"api_error_type":"authentication_error","result":{result},"session_id":"s-1"}}"#
            ),
        ),
        _ => writeln!(out, "{text}"),
    };
}

fn stored_access_token() -> Option<String> {
    let folder = std::env::var("CLAUDE_CONFIG_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|h| std::path::Path::new(&h).join(".claude"))
        })?;
    let text = std::fs::read_to_string(folder.join(".credentials.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["claudeAiOauth"]["accessToken"]
        .as_str()
        .map(str::to_string)
}
