//! Reading the claims of a JSON Web Token without verifying it: tokenkeeper only needs to know
//! when a token expires (`exp`), and the provider checks the signature anyway.

use crate::login::EpochMs;
use base64::Engine;
use serde_json::Value;

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
    let exp = claims(token)?.get("exp")?.clone();
    let secs = exp
        .as_i64()
        .or_else(|| exp.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))?;
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
}
