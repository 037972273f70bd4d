//! JSON that the CLIs' own parsers (Node's `JSON.parse`, Python's `json`) accept is a login
//! tokenkeeper keeps, and a refresh changes the token fields alone: every other byte of the file
//! (nesting of any depth, lone surrogate escapes, bytes that are not UTF-8, number spellings,
//! string escapes, whitespace) stays exactly as it was.

use crate::util::*;
use std::fs;

const HOUR_MS: i64 = 3_600_000;

/// Unknown keys that serde_json's own parser refused or rewrote, in the order given; `@` stands
/// for a byte that is not UTF-8.
fn unknown_keys(depth: usize) -> String {
    format!(
        r#""deep":{open}1{close},"lone":"\ud800 and \udc00","raw":"a@b","nums":[1E5,1.50,-0,1e400,1e+21,0.1e-7],"esc":"\u00e9\/\"","spaced" : {{ "k" :  [ 1 , 2 ] }}"#,
        open = "[".repeat(depth),
        close = "]".repeat(depth),
    )
}

fn bytes(text: &str) -> Vec<u8> {
    text.bytes()
        .map(|c| if c == b'@' { 0xff } else { c })
        .collect()
}

fn claude_file(access: &str, refresh: &str, expires_at: i64, depth: usize) -> Vec<u8> {
    let login = claude_json(access, refresh, expires_at);
    // `{"claudeAiOauth":{…}}` with the unknown keys before and after it.
    let inner = &login[1..login.len() - 1];
    bytes(&format!(
        "{{\"before\":{unknown},{inner},\"after\":{unknown}}}\n",
        unknown = format!("{{{}}}", unknown_keys(depth))
    ))
}

fn replace(haystack: &[u8], from: &str, to: &str) -> Vec<u8> {
    let (from, to) = (from.as_bytes(), to.as_bytes());
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn refresh_keeps_every_byte_of_json_other_parsers_accept() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    let expires_at = now_ms() - 1000;
    let before = claude_file(&login.access_token, &login.refresh_token, expires_at, 300);
    fs::write(s.creds(), &before).unwrap();
    set_mode(&s.creds(), 0o600);

    let run = s.run(&["status"]);
    assert!(!run.stderr.contains("not valid JSON"), "{run:?}");
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("refreshed"), "{run:?}");

    let after = fs::read(s.creds()).unwrap();
    let text = String::from_utf8_lossy(&after);
    let field = |name: &str| {
        let at = text.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
        let end = text[at..].find([',', '}']).unwrap() + at;
        text[at..end].trim_matches('"').to_string()
    };
    let (access, refresh, expires) = (
        field("accessToken"),
        field("refreshToken"),
        field("expiresAt"),
    );
    assert!(s.server.is_live_access(&access));
    assert_ne!(refresh, login.refresh_token);
    let scopes = |t: &str| {
        let from = t.find("\"scopes\":").unwrap();
        let to = t.find(",\"subscriptionType\"").unwrap();
        t[from..to].to_string()
    };
    let expected = replace(
        &replace(
            &replace(
                &replace(&before, &login.access_token, &access),
                &login.refresh_token,
                &refresh,
            ),
            &format!("\"expiresAt\":{expires_at}"),
            &format!("\"expiresAt\":{expires}"),
        ),
        &scopes(&String::from_utf8_lossy(&before)),
        &scopes(&text),
    );
    assert!(after == expected, "only the token fields changed:\n{text}");
}

#[test]
fn a_fresh_login_beside_deep_nesting_is_not_due_and_the_file_is_untouched() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    let before = claude_file(
        &login.access_token,
        &login.refresh_token,
        now_ms() + 8 * HOUR_MS,
        2000,
    );
    fs::write(s.creds(), &before).unwrap();
    set_mode(&s.creds(), 0o600);
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("not due"), "{run:?}");
    assert_eq!(fs::read(s.creds()).unwrap(), before);
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn nesting_past_the_cap_is_refused_with_a_clear_message() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    let before = claude_file(
        &login.access_token,
        &login.refresh_token,
        now_ms() - 1000,
        20_000,
    );
    fs::write(s.creds(), &before).unwrap();
    set_mode(&s.creds(), 0o600);
    let run = s.run(&["refresh"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("nest deeper than 10000 levels (line 1, column"),
        "{run:?}"
    );
    assert_eq!(
        fs::read(s.creds()).unwrap(),
        before,
        "a refused file is left alone"
    );
}

#[test]
fn gemini_keeps_its_indent_and_every_unknown_byte() {
    let s = crate::gemini::sandbox();
    s.config(&format!(
        "[gemini]\nclient_secret = \"{}\"\n",
        crate::gemini::SECRET
    ));
    let login = s.server.issue_login();
    let expiry = now_ms() - 1000;
    let text = crate::gemini::gemini_json(&login.access_token, &login.refresh_token, expiry);
    // Unknown keys, indented as Gemini CLI writes, with what serde_json refused or rewrote.
    let before = bytes(&text.replacen(
        "{\n",
        &format!(
            "{{\n  \"x_odd\": {{\n    {}\n  }},\n",
            unknown_keys(200).replace(",\"", ",\n    \"")
        ),
        1,
    ));
    let path = crate::gemini::creds(&s);
    fs::write(&path, &before).unwrap();
    set_mode(&path, 0o600);
    let run = crate::gemini::checked(&s, crate::gemini::cmd(&s, &["refresh"]).output().unwrap());
    assert_eq!(run.code, 0, "{run:?}");
    let after = fs::read(&path).unwrap();
    let value = |key: &str| {
        let text = String::from_utf8_lossy(&after);
        let at = text.find(&format!("\"{key}\": ")).unwrap() + key.len() + 4;
        let end = text[at..].find([',', '\n']).unwrap() + at;
        text[at..end].trim_matches('"').to_string()
    };
    let access = value("access_token");
    assert!(s.server.is_live_access(&access));
    let old_scope_and_id = |b: &[u8]| {
        let t = String::from_utf8_lossy(b).into_owned();
        let from = t.find("  \"scope\"").unwrap();
        let to = t.find("  \"expiry_date\"").unwrap();
        t[from..to].to_string()
    };
    let expected = replace(
        &replace(
            &replace(&before, &login.access_token, &access),
            &format!("\"expiry_date\": {expiry}"),
            &format!("\"expiry_date\": {}", value("expiry_date")),
        ),
        &old_scope_and_id(&before),
        &old_scope_and_id(&after),
    );
    assert_eq!(
        String::from_utf8_lossy(&after),
        String::from_utf8_lossy(&expected)
    );
    assert!(after == expected, "only the token fields changed");
}

/// A look that writes nothing (`refresh` of a fresh login, `token`, `exec`) checks the login's
/// members and that the document is whole, and skips the rest; a refresh checks every byte
/// before it spends the refresh token, and `status` (a diagnosis) does too.
#[test]
fn a_look_checks_the_login_alone_and_a_refresh_checks_the_whole_file_before_any_request() {
    let s = Sandbox::new();
    let login = s.server.issue_login();
    let good = claude_json(
        &login.access_token,
        &login.refresh_token,
        now_ms() + 8 * HOUR_MS,
    );
    // Not JSON in a member no reader of the login reads: a leading zero, a cut-off literal.
    let before = format!(
        "{},\"projects\":[01,tru,{{\"k\":\"]\"}}]}}",
        &good[..good.len() - 1]
    );
    fs::write(s.creds(), &before).unwrap();
    set_mode(&s.creds(), 0o600);

    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("not due"), "{run:?}");
    let run = s.run(&["token"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), login.access_token);
    let run = s.run(&["exec", "--", "true"]);
    assert_eq!(run.code, 0, "{run:?}");

    for args in [&["status"][..], &["refresh", "--force"]] {
        let run = s.run(args);
        assert_eq!(run.code, 78, "{args:?}: {run:?}");
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(
            said.contains("not valid JSON (line 1, column"),
            "{args:?}: {run:?}"
        );
    }
    assert_eq!(s.server.stats().token_requests, 0);
    assert_eq!(fs::read_to_string(s.creds()).unwrap(), before);
}
