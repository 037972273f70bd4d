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
    #[error("a tokenkeeper daemon is already running{} and keeps the logins fresh; see them with `tokenkeeper status`, or stop it first ({}; its lock is {})", pid.map_or_else(String::new, |p| format!(" (pid {p})")), pid.map_or_else(|| "`systemctl --user stop tokenkeeper` if it runs as a service".to_string(), |p| format!("`systemctl --user stop tokenkeeper` if it runs as a service, else `kill {p}`")), lock.display())]
    DaemonRunning { pid: Option<u32>, lock: PathBuf },

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

    /// A problem with the fleet's shared store (`[store]`): the message names the store (never
    /// its password) and the fix; `unreachable` when the database could not be reached at all.
    #[error("{message}")]
    Store {
        kind: ErrorKind,
        message: String,
        unreachable: bool,
    },

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
            Error::Dead { .. } => ErrorKind::Dead,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::LockTimeout { .. }
            | Error::LockBlocked { .. }
            | Error::Interrupted { .. }
            | Error::DaemonRunning { .. } => ErrorKind::LockTimeout,
            Error::SaveFailed { .. } | Error::TokensLost { .. } => ErrorKind::SaveFailed,
            Error::Config { .. } => ErrorKind::Config,
            Error::NothingToKeep { .. } => ErrorKind::Credentials,
            Error::Usage(_) => ErrorKind::Usage,
            Error::Store { kind, .. } => *kind,
            Error::Io { .. } => ErrorKind::Io,
        }
    }
}

/// An I/O error as a person reads it: the system's words without the "(os error N)" suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}
