//! tokenkeeper keeps the OAuth logins of AI coding CLIs fresh: it refreshes an access token before
//! it expires, lets exactly one refresh happen at a time across every process that shares the
//! login, and writes the rotated tokens back without ever losing them.
//!
//! The library decides and does the work; it never prints and never exits. The binary
//! (`src/main.rs` and `src/cli/`) turns its results into output and exit codes.
//!
//! Folders by concern:
//! - [`provider`]: what differs between CLIs (Claude Code, Codex, Gemini, `[[login]]`): paths,
//!   document layout, requests, locks, rejections.
//! - [`storage`]: the credentials file, the Keychain, the state folder.
//! - [`lock`]: our own lock, Claude's directory locks, `flock`s, leases, signals, and one way
//!   to take them.
//! - [`oauth`]: the token endpoint, answer classification, the one backoff policy, JWTs.
//! - [`refresh`]: the numbered refresh protocol, its attempt loop (shared with the fleet's)
//!   and its save.
//! - [`daemon`]: the watchdog: one loop for both modes, its decisions as a pure plan, its
//!   schedule, alerts, metrics, file watching, sd_notify.
//! - [`exec`]: the wrapped command and its auth failures.
//! - [`service`]: the definitions that run the daemon (systemd, launchd, Windows).
//! - [`fleet`]: many machines sharing one login through PostgreSQL (feature `fleet`, on by
//!   default).
//! - [`keeper`]: one login and how it is kept (its file or the fleet's store), the entry point
//!   for every command and both daemon modes.
//! - leaves: [`login`] (a login and when it is due), [`settings`] (what a refresh is done
//!   with), [`config`] (the file), [`duration`], [`error`], [`secret`].

#[doc(hidden)]
pub mod cli;
pub(crate) mod config;
pub mod daemon;
pub mod duration;
pub(crate) mod error;
pub mod exec;
#[cfg(feature = "fleet")]
pub mod fleet;
pub(crate) mod keeper;
pub mod lock;
pub mod login;
pub(crate) mod mirror;
pub mod oauth;
pub mod provider;
pub(crate) mod refresh;
pub mod secret;
pub(crate) mod service;
pub(crate) mod settings;
pub mod storage;
#[cfg(test)]
mod testing;
pub(crate) mod tls;

pub use error::{Error, ErrorKind, FleetError};
