//! tokenkeeper keeps the OAuth logins of AI coding CLIs fresh: it refreshes an access token before
//! it expires, lets exactly one refresh happen at a time across every process that shares the
//! login, and writes the rotated tokens back without ever losing them.
//!
//! The library decides and does the work; it never prints and never exits. The binary
//! (`src/main.rs` and `src/cli/`) turns its results into output and exit codes.

pub mod alert;
pub mod auth_failure;
pub mod backoff;
pub mod child;
pub mod claude;
pub mod codex;
pub mod config;
pub mod credentials_file;
pub mod daemon;
pub mod dir_lock;
pub mod duration;
pub mod endpoint;
pub mod error;
pub mod fleet;
pub mod flock;
pub mod gemini;
pub mod generic;
pub mod interrupt;
pub mod json_pointer;
pub mod jwt;
pub mod keychain;
pub mod lease;
pub mod login;
pub mod metrics;
pub mod own_lock;
pub mod provider;
pub mod refresh;
pub mod schedule;
pub mod secret;
pub mod service;
pub mod standin;
pub mod state;
pub mod store;
pub mod systemd;
pub mod watch;

pub use error::{Error, ErrorKind};
