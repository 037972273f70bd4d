//! Bytes → `serde_json::from_slice` → `Claude.parse`; when a login parses, `Claude.apply` a
//! fixed token response, re-serialize, and check that the result parses again to exactly the new
//! tokens while every other key keeps its value and its place.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::time::Duration;
use tokenkeeper::oauth::endpoint::TokenResponse;
use tokenkeeper::provider::Provider;
use tokenkeeper::provider::claude::{self, Claude};
use tokenkeeper::secret::Secret;
use tokenkeeper::storage::credentials_file::CredentialsFile;

const NOW: i64 = 1_800_000_000_000;
const EXPIRES_IN: u64 = 28_800;
const LOGIN_LIFE: u64 = 30 * 86_400;
const TOKEN_FIELDS: [&str; 5] = [
    "accessToken",
    "refreshToken",
    "expiresAt",
    "scopes",
    "refreshTokenExpiresAt",
];

fuzz_target!(|data: &[u8]| {
    let Ok(mut doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let file = CredentialsFile::new("/fuzz/.credentials.json", claude::OWNER);
    let Ok(login) = Claude.parse(&file, &doc) else {
        return;
    };
    for now in [i64::MIN, -1, 0, NOW, i64::MAX] {
        for ttl in [Duration::ZERO, Duration::from_secs(3600), Duration::MAX] {
            let _ = login.freshness(now, ttl);
            let _ = login.is_due(now, ttl);
            let _ = login.is_usable_for(now, ttl);
        }
        let _ = login.remaining_ms(now);
    }
    assert_eq!(
        Claude.stored_refresh_token(&doc),
        login.refresh_token.expose()
    );

    let before = doc.clone();
    let response = TokenResponse {
        access_token: Secret::new("fuzz-access-\u{e9}\"\n"),
        refresh_token: Some(Secret::new("fuzz-refresh")),
        expires_in: Some(EXPIRES_IN),
        scope: Some("user:inference  user:profile".into()),
        refresh_token_expires_in: Some(LOGIN_LIFE),
        id_token: None,
    };
    Claude.apply(&mut doc, &response, NOW);

    let bytes = serde_json::to_vec(&doc).expect("an applied document serializes");
    let again: Value = serde_json::from_slice(&bytes).expect("an applied document parses again");
    assert_eq!(
        serde_json::to_vec(&again).unwrap(),
        bytes,
        "serialization is a fixed point"
    );
    let after = Claude
        .parse(&file, &again)
        .expect("an applied document holds a login");
    assert_eq!(after.access_token, response.access_token);
    assert_eq!(after.refresh_token.expose(), "fuzz-refresh");
    assert_eq!(after.expires_at, NOW + EXPIRES_IN as i64 * 1000);
    assert_eq!(
        after.scopes,
        Some(vec!["user:inference".into(), "user:profile".into()])
    );
    let offered = NOW + LOGIN_LIFE as i64 * 1000;
    assert_eq!(
        after.login_expires_at,
        login.login_expires_at.map(|kept| kept.min(offered)),
        "the login's end is kept where it was, or moved earlier"
    );

    // Everything else is untouched, in its place.
    let (old, new) = (before.as_object().unwrap(), again.as_object().unwrap());
    assert!(old.keys().eq(new.keys()), "top-level keys keep their order");
    for (k, v) in old {
        if k != "claudeAiOauth" {
            assert_eq!(&new[k], v, "top-level {k:?} unchanged");
        }
    }
    let (old, new) = (
        old["claudeAiOauth"].as_object().unwrap(),
        new["claudeAiOauth"].as_object().unwrap(),
    );
    let kept: Vec<&String> = new.keys().filter(|k| old.contains_key(*k)).collect();
    assert!(old.keys().eq(kept), "login keys keep their order");
    for (k, v) in old {
        if !TOKEN_FIELDS.contains(&k.as_str()) {
            assert_eq!(&new[k], v, "claudeAiOauth.{k:?} unchanged");
        }
    }
    if login.login_expires_at.is_none() {
        assert_eq!(
            new.get("refreshTokenExpiresAt"),
            old.get("refreshTokenExpiresAt")
        );
    }
});
