//! The fleet key and what it seals. A login is kept in the store only as AES-256-GCM ciphertext
//! under a key the database never sees: 32 bytes written as 64 hex digits, given in
//! `TOKENKEEPER_STORE_KEY` or in a key file only its owner can read. Every write draws a fresh
//! random nonce, and the login's name and generation are bound in as associated data, so a row
//! copied onto another login, or an old row put back in place of a newer one, does not decrypt.
//!
//! The key never leaves this module except through [`generate`] (for `tokenkeeper fleet keygen`);
//! it is named by [`Key::id`], a short hash that tells two keys apart and reveals nothing.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The environment variable that holds the key (it wins over `[store] key_file`).
pub const KEY_ENV: &str = "TOKENKEEPER_STORE_KEY";
/// Bumped if the sealed format ever changes; part of the associated data.
const FORMAT: &[u8] = b"tokenkeeper-fleet-v1";
pub const NONCE_LEN: usize = 12;

/// The fleet's key. No `Display`; `Debug` shows only its id.
pub struct Key {
    cipher: Aes256Gcm,
    id: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// A login sealed for one row: the nonce and the ciphertext (with its tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl Key {
    /// Reads 64 hex digits (surrounding whitespace allowed). The error never repeats the text.
    pub fn from_hex(text: &str) -> Result<Key, String> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(format!(
                "is {} characters long; a fleet key is 64 hex digits (make one with `tokenkeeper fleet keygen`)",
                text.chars().count()
            ));
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).ok();
            bytes[i] = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    "holds characters other than hex digits; a fleet key is 64 hex digits (make one with `tokenkeeper fleet keygen`)".to_string()
                })?;
        }
        Ok(Key::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8; 32]) -> Key {
        let mut hash = Sha256::new();
        hash.update(b"tokenkeeper fleet key id\0");
        hash.update(bytes);
        let id = hash.finalize()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Key {
            cipher: Aes256Gcm::new(bytes.into()),
            id,
        }
    }

    /// Eight hex digits naming this key: stored beside each row so that a machine with another
    /// key is told so plainly, instead of "does not decrypt".
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` as generation `generation` of the login `name`, with a fresh nonce.
    pub fn seal(&self, name: &str, generation: i64, plaintext: &[u8]) -> Sealed {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(name, generation);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // Encryption fails only for inputs beyond 64 GiB.
            .unwrap_or_default();
        Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens what [`Key::seal`] sealed for the same name and generation; None if the key, the
    /// name, the generation, the nonce or a single byte differs.
    pub fn open(&self, name: &str, generation: i64, sealed: &Sealed) -> Option<Vec<u8>> {
        if sealed.nonce.len() != NONCE_LEN {
            return None;
        }
        let aad = associated_data(name, generation);
        self.cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .ok()
    }
}

fn associated_data(name: &str, generation: i64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(FORMAT.len() + name.len() + 10);
    aad.extend_from_slice(FORMAT);
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&generation.to_be_bytes());
    aad
}

/// A new random key, as 64 hex digits: the only place a key is ever shown.
pub fn generate() -> String {
    let key = Aes256Gcm::generate_key(&mut OsRng);
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the key came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(std::path::PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env => write!(f, "{KEY_ENV}"),
            KeySource::File(p) => write!(f, "the key file {}", p.display()),
        }
    }
}

/// The key from `TOKENKEEPER_STORE_KEY` (`env_value`), else from `key_file`, which must be
/// readable by its owner alone. The error is one line that names the source and the fix.
pub fn load(env_value: Option<&str>, key_file: Option<&Path>) -> Result<(Key, KeySource), String> {
    if let Some(text) = env_value.filter(|v| !v.trim().is_empty()) {
        return Key::from_hex(text)
            .map(|k| (k, KeySource::Env))
            .map_err(|why| format!("{KEY_ENV} {why}"));
    }
    let Some(path) = key_file else {
        return Err(format!(
            "fleet mode needs the fleet's key: set {KEY_ENV}, or name a key file with `key_file` in [store] (make a key with `tokenkeeper fleet keygen`; every machine uses the same one)"
        ));
    };
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the key file {shown} named by [store] key_file: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the key file {shown} is readable by other users (mode {mode:o}); tokenkeeper refuses to use it until you run `chmod 600 {shown}`"
            ));
        }
    }
    if !meta.is_file() {
        return Err(format!("the key file {shown} is not a file"));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the key file {shown}: {e}"))?;
    Key::from_hex(&text)
        .map(|k| (k, KeySource::File(path.to_path_buf())))
        .map_err(|why| format!("the key file {shown} {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_logins_open_only_for_their_name_generation_and_key() {
        let key = Key::from_hex(HEX).unwrap();
        let sealed = key.seal("claude", 7, b"secret login");
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert!(
            !sealed
                .ciphertext
                .windows(6)
                .any(|w| w == b"secret" || w == b"login")
        );
        assert_eq!(
            key.open("claude", 7, &sealed).as_deref(),
            Some(&b"secret login"[..])
        );
        assert_eq!(key.open("claude", 6, &sealed), None, "another generation");
        assert_eq!(key.open("codex", 7, &sealed), None, "another login");
        let other = Key::from_hex(&generate()).unwrap();
        assert_eq!(other.open("claude", 7, &sealed), None, "another key");
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert_eq!(key.open("claude", 7, &flipped), None, "a changed byte");
        let again = key.seal("claude", 7, b"secret login");
        assert_ne!(again.nonce, sealed.nonce, "a fresh nonce for every write");
    }

    #[test]
    fn keys_are_64_hex_digits_and_named_by_a_short_id() {
        let key = Key::from_hex(&format!("  {HEX}\n")).unwrap();
        assert_eq!(key.id().len(), 8);
        assert_eq!(key.id(), Key::from_hex(&HEX.to_uppercase()).unwrap().id());
        assert!(!format!("{key:?}").contains(HEX));
        assert_ne!(key.id(), Key::from_hex(&generate()).unwrap().id());
        let g = generate();
        assert_eq!(g.len(), 64);
        assert!(g.chars().all(|c| c.is_ascii_hexdigit()));
        let short = Key::from_hex("abcd").unwrap_err();
        assert!(
            short.contains("4 characters") && short.contains("keygen"),
            "{short}"
        );
        let bad = Key::from_hex(&"zz".repeat(32)).unwrap_err();
        assert!(bad.contains("hex") && !bad.contains("zz"), "{bad}");
    }

    #[test]
    fn the_key_comes_from_the_environment_or_a_private_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fleet.key");
        std::fs::write(&file, format!("{HEX}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(None, Some(&file)).unwrap_err();
        assert!(err.contains("chmod 600") && err.contains("644"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (key, source) = load(None, Some(&file)).unwrap();
        assert_eq!(source, KeySource::File(file.clone()));
        assert_eq!(key.id(), Key::from_hex(HEX).unwrap().id());
        let other = generate();
        let (from_env, source) = load(Some(&other), Some(&file)).unwrap();
        assert_eq!(source, KeySource::Env);
        assert_ne!(from_env.id(), key.id(), "the environment wins");
        let none = load(None, None).unwrap_err();
        assert!(
            none.contains(KEY_ENV) && none.contains("key_file"),
            "{none}"
        );
        let missing = load(None, Some(&dir.path().join("nope"))).unwrap_err();
        assert!(missing.contains("nope"), "{missing}");
        let bad_env = load(Some("123"), None).unwrap_err();
        assert!(bad_env.starts_with(KEY_ENV), "{bad_env}");
    }
}
