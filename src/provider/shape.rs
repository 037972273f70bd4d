//! The shape of a login inside a provider's credentials document, for fleet mode: which part of
//! the file is the login the fleet shares, and how a machine's own file is made from the shared
//! copy: the login's keys are copied in with the refresh token left empty (so the CLI on that
//! machine never refreshes, and can never burn the fleet's refresh token), and every other key of
//! the file stays as it was, in order. Each provider says its shape
//! ([`Facts::copy_shape`](crate::provider::Facts::copy_shape)); this is pure JSON work.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Top-level keys of the credentials document that make up the login. An object is merged
    /// field by field into the copy's; any other value replaces the copy's.
    keys: &'static [&'static str],
    /// The path to the refresh token: a top-level key and, for a nested one, the key inside it.
    refresh: (&'static str, Option<&'static str>),
    /// What a copy holds in place of the refresh token.
    spent: Spent,
}

/// How an access-only copy of a login says it has no refresh token, as its CLI reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spent {
    /// The key is there, holding "" (Claude Code's `refreshToken`, Codex CLI's `refresh_token`).
    Empty,
    /// The key is left out (google-auth-library's `refresh_token`).
    Absent,
}

impl Shape {
    /// A login made of the top-level `keys` (at least one), whose refresh token is `refresh`:
    /// `"key"` at the top level or `"key.inner"` one level down, and which a copy holds as
    /// `spent`.
    pub const fn new(keys: &'static [&'static str], refresh: &'static str, spent: Spent) -> Shape {
        assert!(!keys.is_empty(), "a login has at least one key");
        Shape {
            keys,
            refresh: split_path(refresh),
            spent,
        }
    }

    /// The top-level keys of the login.
    pub fn keys(&self) -> &'static [&'static str] {
        self.keys
    }

    /// The shared part of a local document: its login keys, nothing else.
    pub fn extract(&self, doc: &Value) -> Value {
        let mut out = Map::new();
        for key in self.keys {
            if let Some(v) = doc.get(*key) {
                out.insert((*key).to_string(), v.clone());
            }
        }
        Value::Object(out)
    }

    /// An access-only copy made from the shared login: `local` (or an empty document) with each
    /// login key overwritten by the shared one (an object field by field, so that fields only the
    /// local copy has are kept, in place) and the refresh token spent. Every other key keeps its
    /// value and place.
    pub fn project(&self, local: Option<&Value>, shared: &Value) -> Value {
        let mut doc = match local {
            Some(Value::Object(m)) => Value::Object(m.clone()),
            _ => Value::Object(Map::new()),
        };
        let Some(root) = doc.as_object_mut() else {
            return doc;
        };
        for key in self.keys {
            let Some(value) = shared.get(*key) else {
                continue;
            };
            let Value::Object(from) = value else {
                root.insert((*key).to_string(), value.clone());
                continue;
            };
            let into = crate::provider::object_at(root, key);
            for (k, v) in from {
                into.insert(k.clone(), v.clone());
            }
        }
        let holder = match self.refresh {
            (key, None) => Some((root, key)),
            (outer, Some(inner)) => match root.get_mut(outer) {
                Some(Value::Object(login)) => Some((login, inner)),
                _ => None,
            },
        };
        if let Some((holder, key)) = holder {
            match self.spent {
                Spent::Empty => {
                    holder.insert(key.to_string(), Value::String(String::new()));
                }
                Spent::Absent => {
                    holder.shift_remove(key);
                }
            }
        }
        doc
    }

    /// The refresh token a local document holds ("" when none).
    pub fn refresh_token<'a>(&self, doc: &'a Value) -> &'a str {
        let found = match self.refresh {
            (key, None) => doc.get(key),
            (outer, Some(inner)) => doc.get(outer).and_then(|l| l.get(inner)),
        };
        found.and_then(Value::as_str).unwrap_or("")
    }
}

/// `"a.b"` as `("a", Some("b"))`, `"a"` as `("a", None)`.
const fn split_path(path: &'static str) -> (&'static str, Option<&'static str>) {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'.' {
            let (outer, rest) = path.split_at(i);
            let (_, inner) = rest.split_at(1);
            return (outer, Some(inner));
        }
        i += 1;
    }
    (path, None)
}

#[cfg(test)]
mod tests {
    use crate::provider::claude::COPY_SHAPE as CLAUDE;
    use crate::provider::codex::COPY_SHAPE as CODEX;
    use crate::provider::gemini::COPY_SHAPE as GEMINI;

    use crate::testing::json as doc;

    #[test]
    fn a_read_of_each_providers_file_sees_every_key_of_its_copy() {
        for provider in crate::provider::all() {
            let Some(shape) = provider.facts().copy_shape else {
                continue;
            };
            let Some(read) = provider.doc_keys() else {
                continue;
            };
            for key in shape.keys() {
                assert!(
                    read.iter().any(|k| k == key),
                    "{}: \"{key}\" is in the copy but not in what a read sees",
                    provider.facts().owner.provider
                );
            }
        }
    }

    #[test]
    fn extract_takes_the_login_alone() {
        let local = doc(
            r#"{"mcpOAuth":{"x":1},"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":5}}"#,
        );
        assert_eq!(
            serde_json::to_string(&CLAUDE.extract(&local)).unwrap(),
            r#"{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":5}}"#
        );
        assert_eq!(CLAUDE.refresh_token(&local), "r");
        assert_eq!(CLAUDE.refresh_token(&doc("{}")), "");
    }

    #[test]
    fn project_keeps_every_other_key_in_place_and_empties_the_refresh_token() {
        let local = doc(
            r#"{"before":1,"claudeAiOauth":{"accessToken":"old","refreshToken":"","expiresAt":1,"mine":true},"mcpOAuth":{"y":2.50}}"#,
        );
        let shared = doc(
            r#"{"claudeAiOauth":{"accessToken":"new","refreshToken":"R","expiresAt":9,"scopes":["user:inference"]}}"#,
        );
        assert_eq!(
            serde_json::to_string(&CLAUDE.project(Some(&local), &shared)).unwrap(),
            r#"{"before":1,"claudeAiOauth":{"accessToken":"new","refreshToken":"","expiresAt":9,"mine":true,"scopes":["user:inference"]},"mcpOAuth":{"y":2.50}}"#
        );
    }

    #[test]
    fn project_makes_a_claude_shaped_file_where_there_is_none() {
        let shared = doc(
            r#"{"claudeAiOauth":{"accessToken":"new","refreshToken":"R","expiresAt":9,"scopes":["user:inference"],"subscriptionType":"max"}}"#,
        );
        for local in [None, Some(doc("[]")), Some(doc(r#"{"claudeAiOauth":3}"#))] {
            assert_eq!(
                serde_json::to_string(&CLAUDE.project(local.as_ref(), &shared)).unwrap(),
                r#"{"claudeAiOauth":{"accessToken":"new","refreshToken":"","expiresAt":9,"scopes":["user:inference"],"subscriptionType":"max"}}"#
            );
        }
    }

    #[test]
    fn a_codex_copy_keeps_tokens_fields_and_takes_last_refresh() {
        let local = doc(
            r#"{"OPENAI_API_KEY":null,"tokens":{"id_token":"old-id","access_token":"old","refresh_token":"","account_id":"acct","mine":1},"last_refresh":"2026-01-01T00:00:00Z"}"#,
        );
        let owner = doc(
            r#"{"OPENAI_API_KEY":null,"tokens":{"id_token":"id","access_token":"new","refresh_token":"R","account_id":"acct"},"last_refresh":"2026-12-07T04:00:00Z","other":true}"#,
        );
        let shared = CODEX.extract(&owner);
        assert_eq!(CODEX.refresh_token(&owner), "R");
        assert_eq!(
            serde_json::to_string(&CODEX.project(Some(&local), &shared)).unwrap(),
            r#"{"OPENAI_API_KEY":null,"tokens":{"id_token":"id","access_token":"new","refresh_token":"","account_id":"acct","mine":1},"last_refresh":"2026-12-07T04:00:00Z"}"#
        );
        assert_eq!(
            serde_json::to_string(&CODEX.project(None, &shared)).unwrap(),
            r#"{"tokens":{"id_token":"id","access_token":"new","refresh_token":"","account_id":"acct"},"last_refresh":"2026-12-07T04:00:00Z"}"#
        );
    }

    #[test]
    fn a_gemini_copy_has_no_refresh_token_key() {
        let owner = doc(
            r#"{"access_token":"new","refresh_token":"R","scope":"s","token_type":"Bearer","id_token":"i","expiry_date":9}"#,
        );
        let shared = GEMINI.extract(&owner);
        assert_eq!(GEMINI.refresh_token(&owner), "R");
        let local = doc(r#"{"refresh_token":"stale","access_token":"old","extra":[1]}"#);
        let copy = GEMINI.project(Some(&local), &shared);
        assert_eq!(
            serde_json::to_string(&copy).unwrap(),
            r#"{"access_token":"new","extra":[1],"expiry_date":9,"scope":"s","token_type":"Bearer","id_token":"i"}"#
        );
        assert_eq!(GEMINI.refresh_token(&copy), "");
    }
}
