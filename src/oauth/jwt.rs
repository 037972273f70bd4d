//! Reading the claims of a JSON Web Token without verifying it: tokenkeeper only needs to know
//! when a token expires (`exp`), and the provider checks the signature anyway.

use crate::login::EpochMs;
use crate::oauth::lifetime::believed_expiry;
use base64::Engine;
use serde_json::Value;
use std::time::Duration;

/// The payload (second part) of a JWT as JSON, or None when `token` is not a JWT.
pub fn claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.is_object().then_some(value)
}

/// The `exp` claim (seconds since the epoch) in milliseconds, or None when there is none.
pub fn expiry_ms(token: &str) -> Option<EpochMs> {
    time_claim_ms(&claims(token)?, "exp")
}

/// The `exp` claim as [`expiry_ms`] reads it, never later than `longest` after the token was
/// issued ([`believed_expiry`]): counted from the latest of its `iat` and `nbf` claims and
/// `issued` (a time the file keeps beside the token, such as Codex's `last_refresh`), so that an
/// old `last_refresh` left beside a new token never makes a real lifetime look too long. With
/// none of them there is no time to count from, and the claim is kept as it is.
pub fn believed_expiry_ms(
    token: &str,
    issued: Option<EpochMs>,
    longest: Duration,
) -> Option<EpochMs> {
    let claims = claims(token)?;
    let exp = time_claim_ms(&claims, "exp")?;
    let since = [
        time_claim_ms(&claims, "iat"),
        time_claim_ms(&claims, "nbf"),
        issued,
    ]
    .into_iter()
    .flatten()
    .max();
    Some(since.map_or(exp, |since| {
        believed_expiry(exp, since, longest, "the access token's exp claim says")
    }))
}

/// A time claim (seconds since the epoch, an integer or a finite number) in milliseconds.
fn time_claim_ms(claims: &Value, name: &str) -> Option<EpochMs> {
    let value = claims.get(name)?;
    let secs = value
        .as_i64()
        .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))?;
    Some(secs.saturating_mul(1000))
}

/// A JWT with the given claims and a dummy signature, for tests.
pub fn unsigned(claims: &Value) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        engine.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        engine.encode(claims.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_exp_and_refuses_what_is_not_a_jwt() {
        let token = unsigned(&json!({"exp": 1_795_970_810, "sub": "x"}));
        assert_eq!(expiry_ms(&token), Some(1_795_970_810_000));
        assert_eq!(expiry_ms(&unsigned(&json!({"sub": "x"}))), None);
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "x.!!!.y",
            "sk-ant-oat01-abc",
            "a.bm90IGpzb24.c",
        ] {
            assert_eq!(claims(bad), None, "{bad}");
        }
        assert_eq!(
            expiry_ms(&unsigned(&json!({"exp": i64::MAX}))),
            Some(i64::MAX)
        );
    }

    #[test]
    fn an_exp_past_the_longest_lifetime_is_capped_from_when_the_token_was_issued() {
        const DAY: Duration = Duration::from_secs(86_400);
        let iat = 1_800_000_000;
        let token = |claims: Value| unsigned(&claims);
        // A real lifetime is kept.
        let real = token(json!({"exp": iat + 3600, "iat": iat}));
        assert_eq!(
            believed_expiry_ms(&real, None, DAY),
            Some((iat + 3600) * 1000)
        );
        // The year 9999, and a u64::MAX-ish exp: a day from iat.
        for exp in [json!(253_402_300_799_i64), json!(u64::MAX), json!(1e30)] {
            let absurd = token(json!({"exp": exp, "iat": iat}));
            assert_eq!(
                believed_expiry_ms(&absurd, None, DAY),
                Some((iat + 86_400) * 1000),
                "{exp}"
            );
        }
        // Counted from the latest time known: nbf, iat, or the time the file keeps beside it.
        let nbf = token(json!({"exp": 253_402_300_799_i64, "nbf": iat + 60, "iat": iat}));
        assert_eq!(
            believed_expiry_ms(&nbf, None, DAY),
            Some((iat + 60 + 86_400) * 1000)
        );
        let stale = token(json!({"exp": iat + 3600, "iat": iat}));
        assert_eq!(
            believed_expiry_ms(&stale, Some((iat - 300 * 86_400) * 1000), DAY),
            Some((iat + 3600) * 1000),
            "an old time in the file does not cap a real lifetime"
        );
        let bare = token(json!({"exp": 253_402_300_799_i64}));
        assert_eq!(
            believed_expiry_ms(&bare, Some(iat * 1000), DAY),
            Some((iat + 86_400) * 1000)
        );
        // Nothing to count from: the claim as it is; no exp: None.
        assert_eq!(
            believed_expiry_ms(&bare, None, DAY),
            Some(253_402_300_799_000)
        );
        assert_eq!(
            believed_expiry_ms(&token(json!({"iat": iat})), None, DAY),
            None
        );
        assert_eq!(believed_expiry_ms("opaque", Some(0), DAY), None);
    }
}
