//! A token held in memory. It has no `Display`, its `Debug` prints `REDACTED`, and the only way
//! to see it is the explicit [`Secret::expose`], so a token cannot slip into a log line or an
//! error message by accident. [`Secret::fingerprint`] names a token without revealing it.

use sha2::{Digest, Sha256};

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The token itself: call only where it goes to the token endpoint, to a child process that
    /// needs it, to the credentials file, or to the stdout of `tokenkeeper token`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// First 8 hex digits of the SHA-256 of the token: enough to tell two tokens apart in a
    /// log or a state file, useless for guessing the token.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }
}

pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a debug print shows in place of a token, or of a document that holds tokens.
pub const REDACTED: Redacted = Redacted;

/// Prints `REDACTED` (without quotes) in a `Debug` field.
#[derive(Clone, Copy)]
pub struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("REDACTED")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        REDACTED.fmt(f)
    }
}

/// Serde for the few files that must hold a token itself (recovery files). A field opts in with
/// `#[serde(with = "crate::secret::exposed")]` (or `exposed::option`); [`Secret`] itself is
/// neither `Serialize` nor `Deserialize`, so no record can take a token by accident. On disk a
/// token is its plain string, as before.
pub mod exposed {
    use super::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(secret: &Secret, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(secret.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Secret, D::Error> {
        String::deserialize(input).map(Secret::new)
    }

    /// The same for an optional token (`null` when absent).
    pub mod option {
        use super::Secret;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            secret: &Option<Secret>,
            out: S,
        ) -> Result<S::Ok, S::Error> {
            match secret {
                Some(s) => out.serialize_some(s.expose()),
                None => out.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            input: D,
        ) -> Result<Option<Secret>, D::Error> {
            Option::<String>::deserialize(input).map(|o| o.map(Secret::new))
        }
    }
}

/// Replaces every occurrence of any of `secrets` in `text` by its fingerprint, for text that
/// comes from outside (a server's error description) and might echo a token back.
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() && out.contains(s.expose()) {
            out = out.replace(s.expose(), &format!("<token {}>", s.fingerprint()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let s = Secret::new("sk-ant-ort01-abcdef");
        assert_eq!(format!("{s:?}"), "REDACTED");
        assert_eq!(format!("{:?}", Some(s)), "Some(REDACTED)");
    }

    #[test]
    fn fingerprint_is_short_stable_and_distinct() {
        let a = Secret::new("token-a");
        assert_eq!(a.fingerprint().len(), 8);
        assert_eq!(a.fingerprint(), Secret::new("token-a").fingerprint());
        assert_ne!(a.fingerprint(), Secret::new("token-b").fingerprint());
    }

    #[test]
    fn scrub_replaces_echoed_tokens() {
        let s = Secret::new("sk-ant-ort01-xyz");
        let out = scrub("bad token sk-ant-ort01-xyz here", &[&s]);
        assert!(!out.contains("sk-ant-ort01-xyz"));
        assert!(out.contains(&s.fingerprint()));
    }
}
