//! A whole HTTP answer → `endpoint::classify`, under each rejection rule. Input layout: status (2 bytes, little-endian),
//! the length of the `Retry-After` value (1 byte; 255 = no header), that value, then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenkeeper::oauth::endpoint::{Reply, classify, parse_retry_after};
use tokenkeeper::provider::RejectionRule;

const PERMANENT: [&str; 3] = ["invalid_grant", "invalid_client", "unauthorized_client"];

fn one_clean_line(s: &str, max_chars: usize) {
    assert!(
        !s.chars().any(char::is_control),
        "control character in {s:?}"
    );
    assert!(s.chars().count() <= max_chars, "too long: {s:?}");
}

fuzz_target!(|data: &[u8]| {
    let [lo, hi, n, rest @ ..] = data else {
        return;
    };
    let status = u16::from_le_bytes([*lo, *hi]);
    let (retry_after, body) = if *n == 255 {
        (None, rest)
    } else {
        let n = usize::from(*n).min(rest.len());
        (Some(String::from_utf8_lossy(&rest[..n])), &rest[n..])
    };
    for rule in [RejectionRule::OAuth, RejectionRule::OAuthOrAny401] {
        let reply = classify(status, retry_after.as_deref(), body, rule);
        match reply {
            Reply::Tokens(t) => {
                assert!((200..300).contains(&status));
                assert!(!t.access_token.is_empty());
                assert!(t.refresh_token.as_ref().is_none_or(|r| !r.is_empty()));
            }
            Reply::Rejected { code, description } => {
                assert!(matches!(status, 400 | 401 | 403));
                assert!(
                    PERMANENT.contains(&code.as_str())
                        || (rule == RejectionRule::OAuthOrAny401 && status == 401),
                    "{code}"
                );
                one_clean_line(&description, 200);
            }
            Reply::Transient {
                reason,
                retry_after: wait,
            } => {
                // "HTTP <status> (<code>: <description>)": each part cleaned and at most 200 chars.
                one_clean_line(&reason, 420);
                assert!(reason.starts_with(&format!("HTTP {status} ")), "{reason:?}");
                // Seconds parse the same every time; a date is measured against the clock.
                if let Some(ra) = &retry_after
                    && ra.trim().parse::<u64>().is_ok()
                {
                    assert_eq!(wait, parse_retry_after(ra));
                }
                if retry_after.is_none() {
                    assert_eq!(wait, None);
                }
            }
        }
    }
});
