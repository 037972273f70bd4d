//! The errors tokenkeeper reports. Each says what went wrong, where (the file or the endpoint),
//! and the next step, on one line. Each has a kind, and the kind alone decides the exit code, so
//! every command fails the same way for the same cause. No variant ever holds a token.

use std::path::PathBuf;

/// What the caller should do about an error; the binary maps each kind to one exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The credentials file is missing, unreadable, malformed or cannot be written: fix the file.
    Credentials,
    /// The provider rejected the refresh token: log in again.
    Dead,
    /// The token endpoint did not answer usefully after every retry: try again later.
    Unavailable,
    /// Another process held a lock for longer than we would wait.
    LockTimeout,
    /// The server issued new tokens but they could not be written to the credentials file.
    SaveFailed,
    /// The configuration file is wrong.
    Config,
    /// Trouble with tokenkeeper's own state folder or another local resource.
    Io,
    /// The command line asks for something that cannot be done.
    Usage,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no {provider} login at {}; log in with {relogin} or point --credentials at the file", path.display())]
    Missing {
        provider: &'static str,
        relogin: &'static str,
        path: PathBuf,
    },

    #[error("credentials at {} {reason}; tokenkeeper changed nothing. {hint}", path.display())]
    NothingToKeep {
        path: PathBuf,
        reason: String,
        hint: String,
    },

    #[error("credentials at {} {problem}; tokenkeeper changed nothing. {hint}", path.display())]
    Malformed {
        path: PathBuf,
        problem: String,
        hint: String,
    },

    #[error("cannot {action} {}: {source}. {hint}", path.display())]
    Inaccessible {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
        hint: String,
    },

    #[error("the login at {} is dead: {reason}. Log in again with {relogin}.", path.display())]
    Dead {
        path: PathBuf,
        reason: String,
        relogin: &'static str,
    },

    #[error("the token endpoint {url} is unavailable: {reason} (after {attempts} attempt{s}); the login at {} was left as it was. Try again later.", path.display(), s = if *attempts == 1 { "" } else { "s" })]
    Unavailable {
        url: String,
        reason: String,
        attempts: u32,
        path: PathBuf,
        /// The server's last `Retry-After`, for a caller that will try again later.
        retry_after: Option<std::time::Duration>,
    },

    /// An access-only copy (an access token, no refresh token) whose access token has expired:
    /// only its owner can renew it, and tokenkeeper never refreshes through a copy.
    #[error("{} is an access-only copy of a {provider} login (its refresh token is empty), kept fresh by its owner: the tokenkeeper daemon that writes it (`--mirror` or `[[mirror]]` on the host, or fleet mode). {why}, so that daemon is down or cannot refresh: check it on the host with `tokenkeeper status`. tokenkeeper never refreshes a copy; for a login of this machine's own instead, log in with {relogin}.", path.display())]
    AccessOnlyCopy {
        path: PathBuf,
        provider: &'static str,
        relogin: &'static str,
        /// What became of its access token: expired when, or refused.
        why: String,
    },

    /// A copy (`[[mirror]]`, `--mirror`) the daemon will not write.
    #[error("mirror {}: {problem}; tokenkeeper changed nothing", path.display())]
    MirrorRefused { path: PathBuf, problem: String },

    #[error("gave up after {waited} waiting for {what} ({}){holder}; try again, or remove it if no process holds it", lock.display())]
    LockTimeout {
        what: &'static str,
        lock: PathBuf,
        waited: String,
        holder: String,
    },

    #[error("gave up after {waited} waiting for {what}: {} {why}; {fix}", lock.display())]
    LockBlocked {
        what: &'static str,
        lock: PathBuf,
        waited: String,
        why: String,
        fix: String,
    },

    /// `tokenkeeper daemon` while another daemon of this user runs.
    #[error("{}", daemon_running(*pid, keeps.as_deref(), stop, lock))]
    DaemonRunning {
        pid: Option<u32>,
        /// The logins it keeps, as its record names them (`claude at PATH`), when it wrote one.
        keeps: Option<Vec<String>>,
        /// The service manager's command that stops it.
        stop: String,
        lock: PathBuf,
    },

    /// A signal told this process to stop while it waited for a lock.
    #[error("stopped by a signal while waiting for {what} ({})", lock.display())]
    Interrupted { what: &'static str, lock: PathBuf },

    #[error("the server issued new tokens but {} could not be written ({source}); they are saved in {} (mode 0600). Make the folder writable and run `tokenkeeper refresh`, which restores them.", path.display(), recovery.display())]
    SaveFailed {
        path: PathBuf,
        recovery: PathBuf,
        source: std::io::Error,
    },

    #[error("the server issued new tokens but neither {} ({source}) nor the recovery folder {} ({recovery_error}) could be written; the login is lost. Log in again with {relogin}.", path.display(), recovery_dir.display())]
    TokensLost {
        path: PathBuf,
        source: std::io::Error,
        recovery_dir: PathBuf,
        recovery_error: std::io::Error,
        relogin: &'static str,
    },

    /// Claude Code's login in the macOS Keychain could not be read (locked, `security` missing
    /// or failing, not JSON). Never holds what `security` printed on stdout.
    #[error("{problem}. {hint}.")]
    Keychain { problem: String, hint: String },

    #[error("config file {}: {problem}", path.display())]
    Config { path: PathBuf, problem: String },

    #[error("{0}")]
    Usage(String),

    /// A setting given on the command line or in the environment that cannot work (a webhook
    /// URL without a scheme, a notify command whose program is missing): like a wrong config
    /// file, a restart cannot fix it.
    #[error("{0}")]
    Setting(String),

    /// A problem with the fleet's database (`[store]`); see [`FleetError`].
    #[error(transparent)]
    Fleet(#[from] FleetError),

    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Missing { .. }
            | Error::Malformed { .. }
            | Error::Inaccessible { .. }
            | Error::Keychain { .. } => ErrorKind::Credentials,
            Error::Dead { .. } | Error::AccessOnlyCopy { .. } => ErrorKind::Dead,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::LockTimeout { .. }
            | Error::LockBlocked { .. }
            | Error::Interrupted { .. }
            | Error::DaemonRunning { .. } => ErrorKind::LockTimeout,
            Error::SaveFailed { .. } | Error::TokensLost { .. } => ErrorKind::SaveFailed,
            Error::Config { .. } | Error::Setting(_) | Error::MirrorRefused { .. } => {
                ErrorKind::Config
            }
            Error::NothingToKeep { .. } => ErrorKind::Credentials,
            Error::Usage(_) => ErrorKind::Usage,
            Error::Fleet(e) => e.kind(),
            Error::Io { .. } => ErrorKind::Io,
        }
    }
}

/// What went wrong in fleet mode. Each message names the database (never its password) and the
/// fix; the variant alone decides the kind, and whether the machine carries on with the access
/// token it has ([`FleetError::is_unreachable`]).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The database could not be reached at all: keep the local access token, try again later.
    #[error("{0}")]
    Unreachable(String),
    /// The server issued new tokens but the database could not be written; they wait in the
    /// recovery file. The database is the trouble, so callers treat it as unreachable.
    #[error("{0}")]
    NotWritten(String),
    /// `[store]`, the fleet key, the database's permissions, or a login missing from it.
    #[error("{0}")]
    Config(String),
    /// The fleet's login is dead: a person logs in again and pushes.
    #[error("{0}")]
    Dead(String),
    /// The store holds an older login than this machine has seen (restored from a backup):
    /// its refresh token is spent; a person logs in again and pushes with `--force`.
    #[error("{0}")]
    RolledBack(String),
    /// Another machine holds the row (or its refresh) for now: try again later.
    #[error("{0}")]
    RowLocked(String),
    /// This machine's credentials file stands in the way (it holds a login of its own).
    #[error("{0}")]
    LocalFile(String),
    /// `fleet push` refuses what it was asked to do.
    #[error("{0}")]
    Refused(String),
    /// Any other answer of the database.
    #[error("{0}")]
    Database(String),
}

impl FleetError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            FleetError::Unreachable(_) => ErrorKind::Unavailable,
            FleetError::NotWritten(_) => ErrorKind::SaveFailed,
            FleetError::Config(_) | FleetError::RolledBack(_) => ErrorKind::Config,
            FleetError::Dead(_) => ErrorKind::Dead,
            FleetError::RowLocked(_) => ErrorKind::LockTimeout,
            FleetError::LocalFile(_) => ErrorKind::Credentials,
            FleetError::Refused(_) => ErrorKind::Usage,
            FleetError::Database(_) => ErrorKind::Io,
        }
    }

    /// The database is out of reach (or could not take a write): the machine keeps using the
    /// access token it has, and tries again soon.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, FleetError::Unreachable(_) | FleetError::NotWritten(_))
    }
}

/// An I/O error as a person reads it: the system's words without the "(os error N)" suffix.
/// A second daemon's refusal: which daemon runs, what it keeps, how to see it and how to stop it.
fn daemon_running(
    pid: Option<u32>,
    keeps: Option<&[String]>,
    stop: &str,
    lock: &std::path::Path,
) -> String {
    let who = pid.map_or_else(String::new, |p| format!(" (pid {p})"));
    let what = match keeps {
        Some([]) => " and keeps no login yet".to_string(),
        Some(logins) => format!(" and keeps {} fresh", logins.join(", ")),
        None => String::new(),
    };
    let kill = pid.map_or_else(String::new, |p| format!(", else with `kill {p}`"));
    format!(
        "a tokenkeeper daemon is already running{who}{what}. See its status with `tokenkeeper status`; \
         stop it with `{stop}` if it runs as a service{kill} (its lock is {})",
        lock.display()
    )
}

pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_error_s_variant_decides_its_kind_and_whether_to_carry_on() {
        let e = |f: fn(String) -> FleetError| Error::Fleet(f("why".into()));
        for (error, kind, unreachable) in [
            (e(FleetError::Unreachable), ErrorKind::Unavailable, true),
            (e(FleetError::NotWritten), ErrorKind::SaveFailed, true),
            (e(FleetError::Config), ErrorKind::Config, false),
            (e(FleetError::RolledBack), ErrorKind::Config, false),
            (e(FleetError::Dead), ErrorKind::Dead, false),
            (e(FleetError::RowLocked), ErrorKind::LockTimeout, false),
            (e(FleetError::LocalFile), ErrorKind::Credentials, false),
            (e(FleetError::Refused), ErrorKind::Usage, false),
            (e(FleetError::Database), ErrorKind::Io, false),
        ] {
            assert_eq!(error.kind(), kind, "{error:?}");
            assert_eq!(
                matches!(&error, Error::Fleet(f) if f.is_unreachable()),
                unreachable,
                "{error:?}"
            );
            assert_eq!(error.to_string(), "why");
        }
    }
}
