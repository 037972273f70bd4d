//! The shape of a login inside a provider's credentials document, for its access-only copies (a
//! fleet machine's own file, a `[[mirror]]`): which part of the file is the login, and how a copy
//! is made from it: the login's keys are copied in with the refresh token left empty (so the CLI
//! reading the copy never refreshes, and can never burn the owner's refresh token), and every
//! other key of the file stays as it was, in order. Each provider says its shape
//! ([`Provider::copy_shape`](crate::provider::Provider::copy_shape)); this is pure JSON work.
//!
//! A built-in provider's shape is a `static` of string literals, made at compile time; a
//! `[[login]]` table's is built from its JSON pointers when the config file is read. So a list of
//! keys or a path is [`Steps`]: borrowed for the one, owned for the other, of any depth, walked
//! by the same code.

use crate::provider::json_pointer::array_index;
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Top-level keys of the credentials document that make up the login. An object is merged
    /// key by key (at every depth) into the copy's; any other value replaces the copy's.
    keys: Steps,
    /// The path to the refresh token from the document's root: a key of an object or an index
    /// of an array at each step (as a JSON pointer's reference tokens).
    refresh: Steps,
    /// What a copy holds in place of the refresh token.
    spent: Spent,
}

/// A list of names: top-level keys, or the steps of a path. Written in the code for a built-in
/// provider, read from the config file for a `[[login]]` table.
#[derive(Clone, Debug)]
pub enum Steps {
    Static(&'static [&'static str]),
    Owned(Vec<String>),
}

impl Steps {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (fixed, owned): (&[&str], &[String]) = match self {
            Steps::Static(s) => (s, &[]),
            Steps::Owned(v) => (&[], v),
        };
        fixed
            .iter()
            .copied()
            .chain(owned.iter().map(String::as_str))
    }

    fn len(&self) -> usize {
        match self {
            Steps::Static(s) => s.len(),
            Steps::Owned(v) => v.len(),
        }
    }
}

// By the names, not by where they came from: a table's shape may equal a constant's.
impl PartialEq for Steps {
    fn eq(&self, other: &Steps) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Steps {}

/// How an access-only copy of a login says it has no refresh token, as its CLI reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spent {
    /// The place is there, holding "" (Claude Code's `refreshToken`, Codex CLI's
    /// `refresh_token`, a `[[login]]` table's `refresh_token` pointer).
    Empty,
    /// The key is left out (google-auth-library's `refresh_token`); an array's element, which
    /// cannot be left out without moving the others, holds null.
    Absent,
}

impl Shape {
    /// A login made of the top-level `keys` (at least one), whose refresh token is at the path
    /// `refresh` (at least one step, the first among `keys`), and which a copy holds as `spent`.
    pub const fn new(
        keys: &'static [&'static str],
        refresh: &'static [&'static str],
        spent: Spent,
    ) -> Shape {
        assert!(!keys.is_empty(), "a login has at least one key");
        assert!(!refresh.is_empty(), "the refresh token is inside the login");
        Shape {
            keys: Steps::Static(keys),
            refresh: Steps::Static(refresh),
            spent,
        }
    }

    /// As [`Shape::new`], from names known only at run time (a `[[login]]` table's pointers);
    /// None when there is no key or no path, or the path does not start at one of the keys.
    pub fn owned(keys: Vec<String>, refresh: Vec<String>, spent: Spent) -> Option<Shape> {
        let starts_in_login = refresh.first().is_some_and(|first| keys.contains(first));
        starts_in_login.then_some(Shape {
            keys: Steps::Owned(keys),
            refresh: Steps::Owned(refresh),
            spent,
        })
    }

    /// The top-level keys of the login.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter()
    }

    /// The shared part of a local document: its login keys, nothing else.
    pub fn extract(&self, doc: &Value) -> Value {
        let mut out = Map::new();
        for key in self.keys() {
            if let Some(v) = doc.get(key) {
                out.insert(key.to_string(), v.clone());
            }
        }
        Value::Object(out)
    }

    /// An access-only copy made from the shared login: `local` (or an empty document) with each
    /// login key overwritten by the shared one (an object key by key, at every depth, so that
    /// keys only the local copy has are kept, in place) and the refresh token spent. Every other
    /// key keeps its value and place.
    pub fn project(&self, local: Option<&Value>, shared: &Value) -> Value {
        let mut doc = match local {
            Some(Value::Object(m)) => Value::Object(m.clone()),
            _ => Value::Object(Map::new()),
        };
        let Some(root) = doc.as_object_mut() else {
            return doc;
        };
        for key in self.keys() {
            if let Some(value) = shared.get(key) {
                merge(root, key, value);
            }
        }
        self.spend(&mut doc);
        doc
    }

    /// Puts [`Spent`] where the refresh token is, when the objects (or arrays) on the way are
    /// there; a login without them holds no refresh token to spend.
    fn spend(&self, doc: &mut Value) {
        let last = self.refresh.len() - 1;
        let mut here = doc;
        for (i, step) in self.refresh.iter().enumerate() {
            if i == last {
                match (here, self.spent) {
                    (Value::Object(holder), Spent::Empty) => {
                        holder.insert(step.to_string(), Value::String(String::new()));
                    }
                    (Value::Object(holder), Spent::Absent) => {
                        holder.shift_remove(step);
                    }
                    (Value::Array(items), spent) => {
                        if let Some(slot) = array_index(step).and_then(|at| items.get_mut(at)) {
                            *slot = match spent {
                                Spent::Empty => Value::String(String::new()),
                                Spent::Absent => Value::Null,
                            };
                        }
                    }
                    _ => {}
                }
                return;
            }
            let next = match here {
                Value::Object(map) => map.get_mut(step),
                Value::Array(items) => array_index(step).and_then(|at| items.get_mut(at)),
                _ => None,
            };
            match next {
                Some(v) => here = v,
                None => return,
            }
        }
    }

    /// The refresh token a local document holds ("" when none).
    pub fn refresh_token<'a>(&self, doc: &'a Value) -> &'a str {
        let mut here = Some(doc);
        for step in self.refresh.iter() {
            here = match here {
                Some(Value::Object(map)) => map.get(step),
                Some(Value::Array(items)) => array_index(step).and_then(|at| items.get(at)),
                _ => None,
            };
        }
        here.and_then(Value::as_str).unwrap_or("")
    }
}

/// Writes `value` under `key` of `into`: an object into an object key by key (recursively, so
/// that keys only `into` has stay, in place), anything else over what was there.
fn merge(into: &mut Map<String, Value>, key: &str, value: &Value) {
    match (value, into.get_mut(key)) {
        (Value::Object(from), Some(Value::Object(to))) => {
            for (k, v) in from {
                merge(to, k, v);
            }
        }
        _ => {
            into.insert(key.to_string(), value.clone());
        }
    }
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
            let Some(shape) = provider.copy_shape() else {
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

    #[test]
    fn an_owned_shape_of_any_depth_empties_the_refresh_token_where_its_path_says() {
        use super::{Shape, Spent};
        let steps = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let deep = Shape::owned(
            steps(&["auth", "meta"]),
            steps(&["auth", "oauth", "refresh"]),
            Spent::Empty,
        )
        .unwrap();
        let owner = doc(
            r#"{"v":1,"auth":{"oauth":{"access":"new","refresh":"R"},"account":{"id":7}},"meta":{"exp":9}}"#,
        );
        assert_eq!(deep.refresh_token(&owner), "R");
        let local = doc(
            r#"{"auth":{"oauth":{"access":"old","refresh":"","mine":true},"local":2},"settings":[1.50]}"#,
        );
        assert_eq!(
            serde_json::to_string(&deep.project(Some(&local), &deep.extract(&owner))).unwrap(),
            r#"{"auth":{"oauth":{"access":"new","refresh":"","mine":true},"local":2,"account":{"id":7}},"settings":[1.50],"meta":{"exp":9}}"#,
            "keys only the copy has are kept at every depth"
        );
        let in_array = Shape::owned(steps(&["p"]), steps(&["p", "0", "r"]), Spent::Empty).unwrap();
        let owner = doc(r#"{"p":[{"a":"x","r":"R"}]}"#);
        assert_eq!(in_array.refresh_token(&owner), "R");
        assert_eq!(
            serde_json::to_string(&in_array.project(None, &in_array.extract(&owner))).unwrap(),
            r#"{"p":[{"a":"x","r":""}]}"#
        );
        let last_in_array = Shape::owned(steps(&["r"]), steps(&["r", "1"]), Spent::Absent).unwrap();
        assert_eq!(
            serde_json::to_string(&last_in_array.project(None, &doc(r#"{"r":["a","R"]}"#)))
                .unwrap(),
            r#"{"r":["a",null]}"#,
            "an element is nulled, not removed"
        );
        assert!(Shape::owned(steps(&["a"]), steps(&["b", "r"]), Spent::Empty).is_none());
        assert!(Shape::owned(steps(&["a"]), Vec::new(), Spent::Empty).is_none());
        assert_eq!(
            Shape::owned(
                steps(&["claudeAiOauth"]),
                steps(&["claudeAiOauth", "refreshToken"]),
                Spent::Empty
            )
            .as_ref(),
            Some(&CLAUDE),
            "a shape is its names, wherever they came from"
        );
    }
}
