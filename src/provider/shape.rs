//! The shape of a login inside a provider's credentials document, for fleet mode: which part of
//! the file is the login the fleet shares, and how a machine's own file is made from the shared
//! copy: the login's keys are copied in with the refresh token left empty (so the CLI on that
//! machine never refreshes, and can never burn the fleet's refresh token), and every other key of
//! the file stays as it was, in order. Each provider says its shape
//! ([`Provider::fleet_shape`](crate::provider::Provider::fleet_shape)); this is pure JSON work.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Top-level keys of the credentials document that make up the login.
    keys: &'static [&'static str],
    /// Where the refresh token is, inside the first of `keys`.
    refresh_key: &'static str,
}

impl Shape {
    /// A login made of the top-level `keys` (at least one), whose refresh token is under
    /// `refresh_key` in the first of them.
    pub const fn new(keys: &'static [&'static str], refresh_key: &'static str) -> Shape {
        assert!(!keys.is_empty(), "a login has at least one key");
        Shape { keys, refresh_key }
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

    /// This machine's file made from the shared login: `local` (or an empty document) with each
    /// login key's fields overwritten by the shared ones (fields only the local copy has are
    /// kept, in place) and the refresh token emptied. Every other key keeps its value and place.
    pub fn project(&self, local: Option<&Value>, shared: &Value) -> Value {
        let mut doc = match local {
            Some(Value::Object(m)) => Value::Object(m.clone()),
            _ => Value::Object(Map::new()),
        };
        let Some(root) = doc.as_object_mut() else {
            return doc;
        };
        for key in self.keys {
            let Some(Value::Object(from)) = shared.get(*key) else {
                continue;
            };
            let slot = root
                .entry((*key).to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(into) = slot {
                for (k, v) in from {
                    into.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(Value::Object(login)) = root.get_mut(self.keys[0]) {
            login.insert(self.refresh_key.to_string(), Value::String(String::new()));
        }
        doc
    }

    /// The refresh token a local document holds ("" when none).
    pub fn local_refresh_token<'a>(&self, doc: &'a Value) -> &'a str {
        doc.get(self.keys[0])
            .and_then(|l| l.get(self.refresh_key))
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::claude::FLEET_SHAPE as CLAUDE;

    fn doc(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
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
        assert_eq!(CLAUDE.local_refresh_token(&local), "r");
        assert_eq!(CLAUDE.local_refresh_token(&doc("{}")), "");
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
}
