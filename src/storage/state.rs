//! tokenkeeper's own state folder (`$XDG_STATE_HOME/tokenkeeper`, else
//! `~/.local/state/tokenkeeper`, mode 0700): what the last refresh of each login did, and the
//! recovery files that hold new tokens that could not be written to their credentials file.
//! Records hold times, outcomes and fingerprints, never a token; only recovery files hold
//! tokens, mode 0600, and only until they are restored.

use crate::login::EpochMs;
use crate::oauth::endpoint::TokenResponse;
use crate::secret::Secret;
use crate::storage::atomic::{Prepared, write_atomic};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A recovery file ready for its tokens ([`StateDir::prepare_recovery`]).
pub struct RecoverySlot(Prepared);

impl RecoverySlot {
    /// Writes the recovery (serialized first, so the write is the first I/O) and puts it in
    /// place; returns where.
    pub fn write(self, recovery: &Recovery) -> io::Result<PathBuf> {
        let bytes = serde_json::to_vec_pretty(recovery).map_err(io::Error::other)?;
        let path = self.0.target().to_path_buf();
        self.0.commit(&bytes)?;
        Ok(path)
    }
}

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// The last refresh tokenkeeper did or tried for one login.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub credentials: PathBuf,
    /// Epoch ms.
    pub last_refresh_at: EpochMs,
    pub outcome: RefreshOutcome,
    /// One line, no token: why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Fingerprint of a refresh token the server rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_refresh: Option<String>,
}

/// What a refresh came to, as a [`Record`] keeps it. The spelling in the file is the one the
/// state files have always had (`kept_on_disk`, `save_failed`, …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshOutcome {
    /// New tokens, saved.
    #[default]
    Refreshed,
    /// Another process had refreshed; its tokens were taken.
    Adopted,
    /// Tokens from an earlier failed save were written back from the recovery file.
    Restored,
    /// Refreshed, but the file meanwhile held another login, which was kept.
    KeptOnDisk,
    /// The token endpoint did not answer usefully.
    Unavailable,
    /// The server rejected the refresh token.
    Dead,
    /// New tokens could not be written to the credentials file.
    SaveFailed,
    /// Another process held a lock for too long.
    LockTimeout,
    /// Anything else.
    Failed,
}

impl RefreshOutcome {
    /// What a failed refresh came to.
    pub fn of_error(error: &crate::error::Error) -> RefreshOutcome {
        use crate::error::Error;
        match error {
            Error::Dead { .. } => RefreshOutcome::Dead,
            Error::Unavailable { .. } => RefreshOutcome::Unavailable,
            Error::SaveFailed { .. } | Error::TokensLost { .. } => RefreshOutcome::SaveFailed,
            Error::LockTimeout { .. } => RefreshOutcome::LockTimeout,
            _ => RefreshOutcome::Failed,
        }
    }

    /// As the file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshOutcome::Refreshed => "refreshed",
            RefreshOutcome::Adopted => "adopted",
            RefreshOutcome::Restored => "restored",
            RefreshOutcome::KeptOnDisk => "kept_on_disk",
            RefreshOutcome::Unavailable => "unavailable",
            RefreshOutcome::Dead => "dead",
            RefreshOutcome::SaveFailed => "save_failed",
            RefreshOutcome::LockTimeout => "lock_timeout",
            RefreshOutcome::Failed => "failed",
        }
    }

    /// A new login on disk came of it (not a failure).
    pub fn is_success(self) -> bool {
        matches!(
            self,
            RefreshOutcome::Refreshed | RefreshOutcome::Adopted | RefreshOutcome::Restored
        )
    }
}

/// What the daemon knows and plans for one login; kept so that a restarted daemon keeps its
/// cooldown, its alert history and its verdict on a dead login, and so that `status` can say
/// when the next refresh is due.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DaemonRecord {
    pub pid: u32,
    pub updated_at: EpochMs,
    /// Fingerprint of the access token the plan is for, when the daemon first saw it, and how
    /// long before its expiry to refresh it (margin plus jitter).
    pub token: Option<String>,
    pub seen_at: Option<EpochMs>,
    pub lead_ms: Option<i64>,
    pub next_refresh_at: Option<EpochMs>,
    /// Consecutive transient failures, and no attempt before `cooldown_until`.
    pub failures: u32,
    pub cooldown_until: Option<EpochMs>,
    /// Fingerprint of a refresh token found dead: no refresh until the file holds another.
    pub dead_refresh: Option<String>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    /// Last time each alert was sent for this login (deduplication).
    #[serde(default)]
    pub alerted: std::collections::BTreeMap<String, EpochMs>,
    /// When this daemon last got a new token for the login (refreshed or adopted).
    #[serde(default)]
    pub refreshed_at: Option<EpochMs>,
    /// Consecutive new tokens that were already due when they came (the server hands out
    /// tokens too short-lived to keep): refreshes are spaced out, more with each.
    #[serde(default)]
    pub due_tokens: u32,
    /// The refresh margin the current token's plan was made with (milliseconds): another one
    /// (a reloaded configuration) plans the token again.
    #[serde(default)]
    pub margin_ms: Option<i64>,
}

/// The access-only copies the daemon keeps (`[[mirror]]`, `--mirror`), for `status`: which, and
/// how each went. The copies' tokens are read from the copies themselves, never kept here.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CopiesRecord {
    pub pid: u32,
    pub copies: Vec<CopyRecord>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CopyRecord {
    /// The name of the login it copies.
    pub login: String,
    pub path: PathBuf,
    /// Why it cannot be written now.
    pub problem: Option<String>,
}

/// New tokens that could not reach their credentials file. The tokens are [`Secret`]s, so a
/// debug print shows none of them; the file holds them as plain strings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recovery {
    pub credentials: PathBuf,
    /// Fingerprint of the refresh token that was spent to get these.
    pub posted_refresh: String,
    pub received_at: EpochMs,
    #[serde(with = "crate::secret::exposed")]
    pub access_token: Secret,
    #[serde(default, with = "crate::secret::exposed::option")]
    pub refresh_token: Option<Secret>,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
    pub refresh_token_expires_in: Option<u64>,
    #[serde(default, with = "crate::secret::exposed::option")]
    pub id_token: Option<Secret>,
}

impl Recovery {
    pub fn new(credentials: &Path, posted: &Secret, t: &TokenResponse, at: EpochMs) -> Self {
        Recovery {
            credentials: credentials.to_path_buf(),
            posted_refresh: posted.fingerprint(),
            received_at: at,
            access_token: t.access_token.clone(),
            refresh_token: t.refresh_token.clone(),
            expires_in: t.expires_in,
            scope: t.scope.clone(),
            refresh_token_expires_in: t.refresh_token_expires_in,
            id_token: t.id_token.clone(),
        }
    }

    pub fn tokens(&self) -> TokenResponse {
        TokenResponse {
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
            expires_in: self.expires_in,
            scope: self.scope.clone(),
            refresh_token_expires_in: self.refresh_token_expires_in,
            id_token: self.id_token.clone(),
        }
    }
}

/// The newest version of a fleet login this machine has seen in its store: the push epoch and,
/// within it, the generation. Fleet mode refuses a store that goes back below it (a restore
/// from a backup). No token, nothing derived from one.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FleetSeen {
    /// The push marker: set by each `fleet push`, kept by every refresh.
    #[serde(default)]
    pub epoch: i64,
    pub generation: i64,
}

/// What the running daemon keeps, for a second `tokenkeeper daemon` to name: written atomically
/// beside `daemon.lock` by the daemon holding it, trusted only while that lock is held by the
/// pid it names. Paths and provider names, never a token.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunningDaemon {
    pub pid: u32,
    pub started_at: EpochMs,
    pub logins: Vec<KeptLogin>,
}

/// One login a running daemon keeps.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KeptLogin {
    pub provider: String,
    pub credentials: PathBuf,
}

impl RunningDaemon {
    /// `claude at PATH, codex at PATH`, as messages name what the daemon keeps.
    pub fn keeps(&self) -> Vec<String> {
        self.logins
            .iter()
            .map(|l| format!("{} at {}", l.provider, l.credentials.display()))
            .collect()
    }
}

impl StateDir {
    /// `$XDG_STATE_HOME/tokenkeeper`, else (Windows) `%LOCALAPPDATA%\tokenkeeper`, else
    /// `$HOME/.local/state/tokenkeeper`.
    pub fn locate(env: &dyn Fn(&str) -> Option<String>) -> Option<StateDir> {
        let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let base = set("XDG_STATE_HOME")
            .or_else(|| set("LOCALAPPDATA").filter(|_| cfg!(windows)))
            .or_else(|| crate::provider::home(env).map(|h| h.join(".local").join("state")))?;
        Some(StateDir::at(base.join("tokenkeeper")))
    }

    pub fn at(root: PathBuf) -> StateDir {
        StateDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// One key per login: provider and a fingerprint of the credentials file's real path.
    pub fn key(provider: &str, credentials: &Path) -> String {
        let real = fs::canonicalize(credentials).unwrap_or_else(|_| credentials.to_path_buf());
        format!(
            "{provider}-{}",
            crate::secret::fingerprint(&real.to_string_lossy())
        )
    }

    /// Makes (or checks) the state folder and one of its subfolders, private to us. A folder
    /// made beforehand by another user, or a link in its place, is refused rather than used:
    /// whoever owns it could read the recovery files or swap what we write for links.
    fn ensure(&self, sub: &str) -> io::Result<PathBuf> {
        private_dir(&self.root)?;
        check_own_folder(&self.root)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = fs::symlink_metadata(&self.root)?;
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))?;
            }
        }
        let dir = self.root.join(sub);
        private_dir(&dir)?;
        check_own_folder(&dir)?;
        Ok(dir)
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.root.join("logins").join(format!("{key}.json"))
    }

    fn daemon_path(&self, key: &str) -> PathBuf {
        self.root.join("daemon").join(format!("{key}.json"))
    }

    /// The single-instance lock of the daemon (its pid inside).
    pub fn daemon_lock_path(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    /// What the daemon holding `daemon.lock` keeps (see [`RunningDaemon`]).
    fn running_daemon_path(&self) -> PathBuf {
        self.root.join("daemon").join("running.json")
    }

    /// Records what this daemon keeps; call only while holding the lock [`StateDir::lock_daemon`]
    /// gave.
    pub fn write_running_daemon(&self, record: &RunningDaemon) -> io::Result<()> {
        self.write_json("daemon", &self.running_daemon_path(), record)
    }

    /// What daemon `pid` (the holder of the lock) recorded, if it did: a record left by another
    /// pid (a daemon that was killed) is not its.
    pub fn read_running_daemon(&self, pid: u32) -> Option<RunningDaemon> {
        read_json::<RunningDaemon>(&self.running_daemon_path()).filter(|r| r.pid == pid)
    }

    /// Forgets this daemon's record as it stops (a killed one's stays, unread: see
    /// [`StateDir::read_running_daemon`]).
    pub fn remove_running_daemon(&self) {
        let path = self.running_daemon_path();
        if read_json::<RunningDaemon>(&path).is_some_and(|r| r.pid == std::process::id()) {
            let _ = fs::remove_file(path);
        }
    }

    pub fn read_daemon(&self, key: &str) -> Option<DaemonRecord> {
        read_json(&self.daemon_path(key))
    }

    pub fn write_daemon(&self, key: &str, record: &DaemonRecord) -> io::Result<()> {
        self.write_json("daemon", &self.daemon_path(key), record)
    }

    fn copies_path(&self) -> PathBuf {
        self.root.join("daemon").join("copies.json")
    }

    pub fn read_copies(&self) -> Option<CopiesRecord> {
        read_json(&self.copies_path())
    }

    pub fn write_copies(&self, record: &CopiesRecord) -> io::Result<()> {
        self.write_json("daemon", &self.copies_path(), record)
    }

    /// Writes one of our JSON records into the subfolder `sub`, atomically, pretty-printed.
    fn write_json<T: Serialize>(&self, sub: &str, path: &Path, value: &T) -> io::Result<()> {
        self.ensure(sub)?;
        let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        write_atomic(path, &bytes)
    }

    /// The pid of the daemon that holds the single-instance lock right now, if one does. Reads
    /// only: creates nothing.
    pub fn running_daemon(&self) -> Option<u32> {
        let file = crate::lock::lock_file::open_existing(&self.daemon_lock_path()).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(fs::TryLockError::WouldBlock) => fs::read_to_string(self.daemon_lock_path())
                .ok()
                .and_then(|t| t.trim().parse().ok()),
            Err(fs::TryLockError::Error(_)) => None,
        }
    }

    /// Takes the daemon's single-instance lock: `Err(Ok(pid))` when another daemon holds it
    /// (its pid, if it wrote one), `Err(Err(e))` when the lock file cannot be used at all.
    pub fn lock_daemon(&self) -> Result<fs::File, Result<Option<u32>, io::Error>> {
        self.ensure("daemon").map_err(Err)?;
        let path = self.daemon_lock_path();
        let file = crate::lock::lock_file::open_private(&path).map_err(Err)?;
        match file.try_lock() {
            Ok(()) => {
                let _ = file.set_len(0);
                let _ = (&file).write_all(std::process::id().to_string().as_bytes());
                Ok(file)
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = (&file).take(32).read_to_string(&mut pid);
                Err(Ok(pid.trim().parse().ok()))
            }
            Err(fs::TryLockError::Error(e)) => Err(Err(e)),
        }
    }

    fn fleet_seen_path(&self, key: &str) -> PathBuf {
        self.root.join("fleet").join(format!("{key}.json"))
    }

    /// What this machine has seen of a fleet login ([`FleetSeen`]), if anything.
    pub fn read_fleet_seen(&self, key: &str) -> Option<FleetSeen> {
        read_json(&self.fleet_seen_path(key))
    }

    pub fn write_fleet_seen(&self, key: &str, seen: &FleetSeen) -> io::Result<()> {
        self.write_json("fleet", &self.fleet_seen_path(key), seen)
    }

    /// This installation's id if it has one already; creates nothing (for `status`).
    pub fn existing_machine_id(&self) -> Option<String> {
        let bytes =
            crate::storage::bounded::read_regular(&self.root.join("machine-id"), 64).ok()?;
        let text = String::from_utf8(bytes).ok()?.trim().to_ascii_lowercase();
        (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())).then_some(text)
    }

    /// This installation's identity (`machine-id`, 0600): made once with `fresh` (32 hex
    /// digits), then read. Two processes making it at once agree: the file appears whole or
    /// not at all (a link from a temp file), and the loser reads the winner's.
    pub fn machine_id(&self, fresh: &dyn Fn() -> String) -> io::Result<String> {
        let path = self.root.join("machine-id");
        let valid = |t: &str| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit());
        let read = || -> Option<String> {
            let text = fs::read_to_string(&path).ok()?;
            let text = text.trim().to_ascii_lowercase();
            valid(&text).then_some(text)
        };
        if let Some(id) = read() {
            return Ok(id);
        }
        self.ensure("fleet")?;
        let id = fresh().trim().to_ascii_lowercase();
        if !valid(&id) {
            return Err(io::Error::other("a machine id is 32 hex digits"));
        }
        let temp = self
            .root
            .join(format!("machine-id.tmp.{}", std::process::id()));
        write_atomic(&temp, format!("{id}\n").as_bytes())?;
        let linked = fs::hard_link(&temp, &path);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => Ok(id),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read() {
                Some(id) => Ok(id),
                None => {
                    // Unreadable or damaged: replace it (nothing else refers to it).
                    write_atomic(&path, format!("{id}\n").as_bytes())?;
                    Ok(id)
                }
            },
            Err(e) => Err(e),
        }
    }

    fn recovery_path(&self, key: &str) -> PathBuf {
        self.root.join("recovery").join(format!("{key}.json"))
    }

    pub fn read_record(&self, key: &str) -> Option<Record> {
        read_json(&self.record_path(key))
    }

    pub fn write_record(&self, key: &str, record: &Record) -> io::Result<()> {
        self.remove_unusable_leftovers(key);
        self.write_json("logins", &self.record_path(key), record)
    }

    /// Saves tokens that could not reach their credentials file (0600) and returns the path.
    pub fn save_recovery(&self, key: &str, recovery: &Recovery) -> io::Result<PathBuf> {
        self.prepare_recovery(key)?.write(recovery)
    }

    /// The login's recovery file made ready before its token request (folders checked, temp
    /// file open), so that new tokens are on disk one `write` after the reply: a kill in
    /// between is what loses a login. Dropped unwritten, it leaves nothing.
    pub fn prepare_recovery(&self, key: &str) -> io::Result<RecoverySlot> {
        self.ensure("recovery")?;
        Ok(RecoverySlot(Prepared::new(&self.recovery_path(key))?))
    }

    /// Cheap check for the fast path: is there a recovery file waiting for this login?
    pub fn has_recovery(&self, key: &str) -> bool {
        self.recovery_file(key).is_some()
    }

    /// Where the recovery file waiting for this login is, if one is.
    pub fn recovery_file(&self, key: &str) -> Option<PathBuf> {
        self.read_recovery(key).map(|(path, _)| path)
    }

    /// The recovery file of this login, else the newest complete one that a writer killed
    /// between writing and renaming left under its temp name: the new tokens are in it all the
    /// same, and without it the login would be lost. Reads only.
    pub fn read_recovery(&self, key: &str) -> Option<(PathBuf, Recovery)> {
        self.recovery_candidates(key)
            .into_iter()
            .find_map(|path| Some((path.clone(), parse_recovery(&path)?)))
    }

    /// A temp file cut short by a kill holds nothing usable; once it is a minute old (no
    /// writer is still at it) it goes. Done whenever a refresh records its outcome.
    fn remove_unusable_leftovers(&self, key: &str) {
        let own = self.recovery_path(key);
        for path in self.recovery_candidates(key) {
            if path != own && is_abandoned(&path) && parse_recovery(&path).is_none() {
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// Removes the login's recovery file and every temp file a killed writer left for it.
    pub fn remove_recovery(&self, key: &str) {
        // Only temps that a killed writer left: a live writer holds the login's lock, as we do.
        for path in self.recovery_candidates(key) {
            let _ = fs::remove_file(path);
        }
    }

    /// The recovery file itself first, then its temp files, newest first. Reads the folder only
    /// when it exists, so a login that never needed one pays a single `stat`.
    fn recovery_candidates(&self, key: &str) -> Vec<PathBuf> {
        let path = self.recovery_path(key);
        let mut found = Vec::new();
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            found.push(path.clone());
        }
        let Some(dir) = path.parent() else {
            return found;
        };
        let prefix = format!("{key}.json.tmp.");
        let mut temps: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(fs::Metadata::is_file)?;
                Some((meta.modified().ok()?, e.path()))
            })
            .collect();
        temps.sort_by_key(|t| std::cmp::Reverse(t.0));
        found.extend(temps.into_iter().map(|(_, p)| p));
        found
    }
}

fn parse_recovery(path: &Path) -> Option<Recovery> {
    read_json(path)
}

/// One of our JSON records, if it is there and reads; capped like every file we read.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = crate::storage::bounded::read_regular(path, MAX_RECORD).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A temp file untouched for a minute: its writer is gone.
fn is_abandoned(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(60))
}

/// A record (or a recovery file, a handful of tokens) is a few hundred bytes.
const MAX_RECORD: u64 = 1 << 20;

/// A refresh token spent on a refresh whose new tokens could be saved nowhere: the login is
/// lost, and presenting that token again would only get the whole login revoked. Kept wherever
/// it can be (the state folder, else the runtime folder, else a private folder in the temp
/// folder), by fingerprint only.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Spent {
    pub credentials: PathBuf,
    /// Fingerprint of the refresh token that was spent.
    pub spent_refresh: String,
    pub at: EpochMs,
}

impl StateDir {
    /// Notes a spent refresh token of a lost login wherever it can be written; where it landed.
    pub fn note_spent(&self, key: &str, spent: &Spent) -> Option<PathBuf> {
        let bytes = serde_json::to_vec_pretty(spent).ok()?;
        self.spent_places(key).into_iter().find_map(|path| {
            let dir = path.parent()?;
            private_dir(dir).ok()?;
            check_own_folder(dir).ok()?;
            write_atomic(&path, &bytes).ok()?;
            Some(path)
        })
    }

    /// The spent refresh token noted for this login, if any (reads only).
    pub fn spent(&self, key: &str) -> Option<Spent> {
        self.spent_places(key).into_iter().find_map(|path| {
            check_own_folder(path.parent()?).ok()?;
            read_json(&path)
        })
    }

    /// Where a lost login's spent token is noted, in the order tried.
    fn spent_places(&self, key: &str) -> Vec<PathBuf> {
        let name = format!("{key}.json");
        let mut places = vec![self.root.join("lost").join(&name)];
        if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            places.push(PathBuf::from(runtime).join("tokenkeeper-lost").join(&name));
        }
        #[cfg(unix)]
        let private = format!("tokenkeeper-{}", crate::storage::atomic::current_uid());
        #[cfg(not(unix))]
        let private = "tokenkeeper".to_string();
        places.push(std::env::temp_dir().join(private).join("lost").join(&name));
        places
    }
}

/// A real folder (not a link) owned by us.
fn check_own_folder(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    let refuse = |why: String| {
        let message = format!(
            "the state folder {} {why}; tokenkeeper does not use it. Remove it (tokenkeeper makes it anew, private to you) or set XDG_STATE_HOME",
            dir.display()
        );
        // Most callers carry on without their record; say it once, whatever they do.
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| tracing::warn!("{message}"));
        Err(io::Error::new(io::ErrorKind::PermissionDenied, message))
    };
    if meta.file_type().is_symlink() {
        return refuse("is a symbolic link".into());
    }
    if !meta.is_dir() {
        return refuse("is not a folder".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != crate::storage::atomic::current_uid() {
            return refuse(format!("belongs to another user (uid {})", meta.uid()));
        }
    }
    Ok(())
}

/// Creates the folder (and its parents) readable by its owner alone (mode 0700 on Unix; on
/// Windows, the profile folder's own access rules apply).
fn private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_recoveries_round_trip_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().join("tokenkeeper"));
        let key = StateDir::key("claude", Path::new("/nowhere/.credentials.json"));
        assert!(state.read_record(&key).is_none());
        let record = Record {
            credentials: "/nowhere/.credentials.json".into(),
            last_refresh_at: 5,
            outcome: RefreshOutcome::Refreshed,
            ..Record::default()
        };
        state.write_record(&key, &record).unwrap();
        assert_eq!(state.read_record(&key), Some(record));
        let mode = fs::metadata(state.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let (tokens, path) = saved_recovery(&state, &key);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(state.has_recovery(&key));
        let (_, back) = state.read_recovery(&key).unwrap();
        assert_eq!(back.tokens(), tokens);
        state.remove_recovery(&key);
        assert!(!state.has_recovery(&key));
    }

    /// New tokens ("a", "r") spent for "old", saved as the login's recovery; and where.
    fn saved_recovery(state: &StateDir, key: &str) -> (TokenResponse, PathBuf) {
        let tokens = TokenResponse {
            access_token: Secret::new("a"),
            refresh_token: Some(Secret::new("r")),
            expires_in: Some(60),
            id_token: None,
            scope: None,
            refresh_token_expires_in: None,
        };
        let rec = Recovery::new(Path::new("/c"), &Secret::new("old"), &tokens, 7);
        let path = state.save_recovery(key, &rec).unwrap();
        (tokens, path)
    }

    #[test]
    fn a_recovery_left_under_its_temp_name_by_a_killed_writer_is_read_then_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().join("tokenkeeper"));
        let key = StateDir::key("claude", Path::new("/c"));
        let (tokens, path) = saved_recovery(&state, &key);
        // Killed after writing its temp file, before the rename: the tokens are only there.
        let temp = path.with_file_name(format!("{key}.json.tmp.Ab12Cd"));
        fs::rename(&path, &temp).unwrap();
        // And a temp file another kill cut short, a while ago.
        let cut = path.with_file_name(format!("{key}.json.tmp.Zz99Yy"));
        fs::write(&cut, "{\"credentials\":\"/c\",\"posted_re").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        fs::File::open(&cut).unwrap().set_modified(old).unwrap();

        assert!(state.has_recovery(&key));
        let (found, back) = state.read_recovery(&key).unwrap();
        assert_eq!(found, temp);
        assert_eq!(back.tokens(), tokens);
        state.remove_recovery(&key);
        assert!(!state.has_recovery(&key));
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 0);
        // Alone, the cut one counts for nothing and is removed once its writer is surely gone.
        fs::write(&cut, "{").unwrap();
        assert!(!state.has_recovery(&key));
        let record = Record::default();
        state.write_record(&key, &record).unwrap();
        assert!(cut.exists(), "a fresh one may still be being written");
        fs::File::open(&cut).unwrap().set_modified(old).unwrap();
        assert!(!state.has_recovery(&key));
        assert!(cut.exists(), "reading removes nothing");
        state.write_record(&key, &record).unwrap();
        assert!(!cut.exists(), "the unusable leftover is removed");
    }

    fn recovery() -> Recovery {
        let tokens = TokenResponse {
            access_token: Secret::new("sk-ant-oat01-access"),
            refresh_token: Some(Secret::new("sk-ant-ort01-refresh")),
            expires_in: Some(60),
            id_token: Some(Secret::new("eyJ.id.token")),
            scope: Some("user:inference".into()),
            refresh_token_expires_in: None,
        };
        Recovery::new(Path::new("/c"), &Secret::new("old"), &tokens, 7)
    }

    #[test]
    fn a_recovery_debug_print_holds_no_token() {
        let shown = format!("{:?}", recovery());
        for token in [
            "sk-ant-oat01-access",
            "sk-ant-ort01-refresh",
            "eyJ.id.token",
        ] {
            assert!(!shown.contains(token), "{shown}");
        }
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn recovery_files_keep_their_format() {
        // As the previous version wrote it (tokens as plain strings), and without `id_token`
        // (older still): both read, and a new file is written the same way.
        let old = r#"{"credentials":"/c","posted_refresh":"0a1b2c3d","received_at":7,"access_token":"sk-ant-oat01-access","refresh_token":"sk-ant-ort01-refresh","expires_in":60,"scope":"user:inference","refresh_token_expires_in":null,"id_token":"eyJ.id.token"}"#;
        let read: Recovery = serde_json::from_str(old).unwrap();
        assert_eq!(read.tokens(), recovery().tokens());
        assert_eq!(read.posted_refresh, "0a1b2c3d");
        let mut written = serde_json::to_value(recovery()).unwrap();
        written["posted_refresh"] = "0a1b2c3d".into();
        assert_eq!(
            written,
            serde_json::from_str::<serde_json::Value>(old).unwrap()
        );

        let oldest = r#"{"credentials":"/c","posted_refresh":"x","received_at":7,"access_token":"a","refresh_token":null,"expires_in":null,"scope":null,"refresh_token_expires_in":null}"#;
        let read: Recovery = serde_json::from_str(oldest).unwrap();
        assert_eq!(read.access_token.expose(), "a");
        assert!(read.refresh_token.is_none() && read.id_token.is_none());
    }

    #[test]
    fn the_running_daemons_record_is_read_only_for_the_pid_holding_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().join("state"));
        let me = std::process::id();
        let record = RunningDaemon {
            pid: me,
            started_at: 1,
            logins: vec![KeptLogin {
                provider: "claude".into(),
                credentials: PathBuf::from("/home/u/.claude/.credentials.json"),
            }],
        };
        state.write_running_daemon(&record).unwrap();
        assert_eq!(state.read_running_daemon(me), Some(record.clone()));
        // A record left by a killed daemon names a pid other than the lock's holder.
        assert_eq!(state.read_running_daemon(me + 1), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = state.running_daemon_path();
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        state.remove_running_daemon();
        assert_eq!(state.read_running_daemon(me), None);
    }

    #[test]
    fn the_machine_id_is_made_once_private_and_then_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().join("tk"));
        let id = state
            .machine_id(&|| "0123456789abcdef0123456789ABCDEF".into())
            .unwrap();
        assert_eq!(id, "0123456789abcdef0123456789abcdef");
        let path = dir.path().join("tk/machine-id");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = state.machine_id(&|| "f".repeat(32)).unwrap();
        assert_eq!(again, id, "made once, then read");
        fs::write(&path, "garbage").unwrap();
        assert_eq!(
            state.machine_id(&|| "e".repeat(32)).unwrap(),
            "e".repeat(32)
        );
        assert!(
            state.machine_id(&|| "short".into()).is_ok(),
            "a good one is there"
        );
    }

    #[test]
    fn what_a_fleet_machine_has_seen_round_trips_and_reads_without_an_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().join("tk"));
        assert_eq!(state.read_fleet_seen("fleet-claude-x"), None);
        let seen = FleetSeen {
            epoch: 5,
            generation: 9,
        };
        state.write_fleet_seen("fleet-claude-x", &seen).unwrap();
        assert_eq!(state.read_fleet_seen("fleet-claude-x"), Some(seen));
        let old: FleetSeen = serde_json::from_str(r#"{"generation": 3}"#).unwrap();
        assert_eq!(
            old,
            FleetSeen {
                epoch: 0,
                generation: 3
            }
        );
    }

    #[test]
    fn records_written_by_the_previous_version_still_read() {
        let old = r#"{
  "credentials": "/home/me/.claude/.credentials.json",
  "last_refresh_at": 1700000000000,
  "outcome": "kept_on_disk"
}"#;
        let record: Record = serde_json::from_str(old).unwrap();
        assert_eq!(record.outcome, RefreshOutcome::KeptOnDisk);
        assert_eq!(serde_json::to_string_pretty(&record).unwrap(), old);

        let failed = r#"{"credentials":"/c","last_refresh_at":5,"outcome":"dead","error":"invalid_grant","rejected_refresh":"0a1b2c3d"}"#;
        let record: Record = serde_json::from_str(failed).unwrap();
        assert_eq!(record.outcome, RefreshOutcome::Dead);
        assert_eq!(serde_json::to_string(&record).unwrap(), failed);
    }

    #[test]
    fn every_outcome_is_spelled_as_before() {
        use RefreshOutcome::*;
        for (outcome, text) in [
            (Refreshed, "refreshed"),
            (Adopted, "adopted"),
            (Restored, "restored"),
            (KeptOnDisk, "kept_on_disk"),
            (Unavailable, "unavailable"),
            (Dead, "dead"),
            (SaveFailed, "save_failed"),
            (LockTimeout, "lock_timeout"),
            (Failed, "failed"),
        ] {
            assert_eq!(outcome.as_str(), text);
            assert_eq!(serde_json::to_value(outcome).unwrap(), text);
            assert_eq!(
                serde_json::from_value::<RefreshOutcome>(text.into()).unwrap(),
                outcome
            );
        }
    }
}
