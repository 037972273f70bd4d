//! The pure half of access-only copies: what a `[[mirror]]` table or a `--mirror LOGIN=PATH`
//! flag asks for (owner, mode, a path or a folder pattern), and what one look at a copy decides
//! (write the owner's current token into it, leave it, or refuse it because it holds a login of
//! its own), and when a copy that cannot be written is worth another alert. No I/O here.

use crate::login::EpochMs;
use crate::provider::shape::Shape;
use serde_json::Value;

/// One copy (or one folder pattern of copies) of a login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorSpec {
    /// The name of the login it copies (`claude`, `codex`, `gemini`, a `[[login]]` name).
    pub login: String,
    /// The copy's path as written; it may be a pattern (`*`, `?`, `[...]`).
    pub path: String,
    pub owner: Option<OwnerSpec>,
    pub mode: u32,
    /// Where it was asked for, for messages: `config file PATH` or `--mirror`.
    pub from: String,
}

/// Whom a copy belongs to, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerSpec {
    /// `uid:gid`.
    Ids(u32, u32),
    /// A user name: that user and their primary group.
    User(String),
}

/// The default mode of a copy: the owner alone reads it, as every CLI keeps its own file.
pub const DEFAULT_MODE: u32 = 0o600;

/// `"user"` or `"uid:gid"`.
pub fn parse_owner(text: &str) -> Result<OwnerSpec, String> {
    let t = text.trim();
    let bad = || format!("owner \"{t}\" is neither a user name nor uid:gid (like 1001:1001)");
    if let Some((uid, gid)) = t.split_once(':') {
        return match (uid.parse(), gid.parse()) {
            (Ok(u), Ok(g)) => Ok(OwnerSpec::Ids(u, g)),
            _ => Err(bad()),
        };
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$');
    if t.is_empty() || !t.chars().all(name_char) {
        return Err(bad());
    }
    Ok(OwnerSpec::User(t.to_string()))
}

/// A mode written as a string of octal digits (`"0640"`, `"640"`, `"0o640"`).
pub fn parse_mode_text(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    let n = u32::from_str_radix(digits, 8).map_err(|_| {
        format!("mode \"{t}\" is not octal permission bits; write it like \"0640\"")
    })?;
    check_mode(i64::from(n))
}

/// A mode as a number (TOML's `0o640`): permission bits only, and the owner must be able to
/// read the copy.
pub fn check_mode(n: i64) -> Result<u32, String> {
    let bits = u32::try_from(n)
        .ok()
        .filter(|b| *b <= 0o777)
        .ok_or_else(|| {
            format!("mode {n} is not permission bits; write it in octal, like 0o640 or \"0640\"")
        })?;
    if bits & 0o400 == 0 {
        return Err(format!(
            "mode {bits:o} does not let the copy's owner read it; use 0600 or 0640"
        ));
    }
    if bits & 0o002 != 0 {
        return Err(format!(
            "mode {bits:o} lets every user write the copy; use 0600 or 0640"
        ));
    }
    Ok(bits)
}

/// `LOGIN=PATH` of `--mirror`.
pub fn parse_flag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((login, path)) if !login.trim().is_empty() && !path.trim().is_empty() => {
            Ok((login.trim().to_string(), path.to_string()))
        }
        _ => Err(format!(
            "--mirror {text}: write it as LOGIN=PATH, like claude=/srv/agents/a1/.claude/.credentials.json"
        )),
    }
}

/// Whether a path is a folder pattern rather than one file.
pub fn is_pattern(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// How a pattern is looked up: the folders it names, with the file name appended when the
/// last part is a plain name, so a copy is made in a matching folder that has none yet; a
/// pattern in the file name matches existing files only.
pub fn split_pattern(path: &str) -> (String, Option<String>) {
    match path.rsplit_once('/') {
        Some((folders, name)) if !name.is_empty() && !is_pattern(name) && is_pattern(folders) => {
            (folders.to_string(), Some(name.to_string()))
        }
        _ => (path.to_string(), None),
    }
}

/// What one look at a copy decides.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// It holds the owner's current login already.
    Same,
    /// Write this document (the copy's own with the owner's login in it, no refresh token).
    Write(Value),
    /// It holds a refresh token: a login of its own, never overwritten nor read from.
    OwnLogin,
}

/// The copy's document now (None when there is no file) against the owner's.
pub fn verdict(shape: &Shape, copy: Option<&Value>, owner: &Value) -> Verdict {
    if let Some(doc) = copy
        && !shape.refresh_token(doc).is_empty()
    {
        return Verdict::OwnLogin;
    }
    let projected = shape.project(copy, &shape.extract(owner));
    if copy == Some(&projected) {
        Verdict::Same
    } else {
        Verdict::Write(projected)
    }
}

/// While a copy cannot be written, alert again this often.
pub const ALERT_EVERY: i64 = 3_600_000;

/// Whether a failing copy is worth an alert now: at the first failure of a run, then once an
/// hour while it lasts.
pub fn alert_due(last_alert: Option<EpochMs>, now: EpochMs) -> bool {
    last_alert.is_none_or(|at| now.saturating_sub(at) >= ALERT_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::claude::COPY_SHAPE as CLAUDE;
    use crate::provider::gemini::COPY_SHAPE as GEMINI;

    use crate::testing::json as doc;

    #[test]
    fn owners_modes_and_flags_read_as_people_write_them() {
        assert_eq!(parse_owner("1001:1002"), Ok(OwnerSpec::Ids(1001, 1002)));
        assert_eq!(
            parse_owner(" agent1 "),
            Ok(OwnerSpec::User("agent1".into()))
        );
        for bad in ["", "1001:", "a:b", "two words", "x/y"] {
            assert!(parse_owner(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mode_text("0640"), Ok(0o640));
        assert_eq!(parse_mode_text("600"), Ok(0o600));
        assert_eq!(parse_mode_text("0o600"), Ok(0o600));
        assert_eq!(check_mode(0o640), Ok(0o640));
        for bad in [600, -1, 0o1600, 0o200, 0o602] {
            assert!(check_mode(bad).is_err(), "{bad:o}");
        }
        assert!(parse_mode_text("rw").is_err());
        assert_eq!(
            parse_flag("claude=/a/b=c.json"),
            Ok(("claude".into(), "/a/b=c.json".into()))
        );
        for bad in ["claude", "=/a", "claude="] {
            assert!(parse_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pattern_in_the_folders_keeps_the_file_name_to_make() {
        assert!(!is_pattern("/srv/a1/.claude/.credentials.json"));
        assert_eq!(
            split_pattern("/srv/agents/*/.claude/.credentials.json"),
            (
                "/srv/agents/*/.claude".into(),
                Some(".credentials.json".into())
            )
        );
        assert_eq!(
            split_pattern("/srv/agents/a1/.claude/*.json"),
            ("/srv/agents/a1/.claude/*.json".into(), None)
        );
    }

    #[test]
    fn a_copy_gets_the_owners_login_without_its_refresh_token_and_keeps_the_rest() {
        let owner = doc(
            r#"{"claudeAiOauth":{"accessToken":"A2","refreshToken":"R2","expiresAt":9},"mcpOAuth":{"owner":1}}"#,
        );
        let copy = doc(
            r#"{"mcpOAuth":{"agent":2},"claudeAiOauth":{"accessToken":"A1","refreshToken":"","expiresAt":5}}"#,
        );
        let Verdict::Write(written) = verdict(&CLAUDE, Some(&copy), &owner) else {
            panic!("a stale copy is written")
        };
        assert_eq!(
            serde_json::to_string(&written).unwrap(),
            r#"{"mcpOAuth":{"agent":2},"claudeAiOauth":{"accessToken":"A2","refreshToken":"","expiresAt":9}}"#
        );
        assert_eq!(verdict(&CLAUDE, Some(&written), &owner), Verdict::Same);
        let Verdict::Write(made) = verdict(&CLAUDE, None, &owner) else {
            panic!("a missing copy is made")
        };
        assert_eq!(CLAUDE.refresh_token(&made), "");
    }

    #[test]
    fn a_copy_holding_a_refresh_token_is_a_login_of_its_own() {
        let owner = doc(r#"{"access_token":"A","refresh_token":"R","expiry_date":9}"#);
        let own = doc(r#"{"access_token":"X","refresh_token":"mine","expiry_date":1}"#);
        assert_eq!(verdict(&GEMINI, Some(&own), &owner), Verdict::OwnLogin);
        let Verdict::Write(copy) = verdict(&GEMINI, None, &owner) else {
            panic!("made")
        };
        assert!(copy.get("refresh_token").is_none(), "{copy}");
    }

    #[test]
    fn a_failing_copy_is_alerted_at_once_then_hourly() {
        assert!(alert_due(None, 0));
        assert!(!alert_due(Some(1_000), 1_000 + ALERT_EVERY - 1));
        assert!(alert_due(Some(1_000), 1_000 + ALERT_EVERY));
    }
}
