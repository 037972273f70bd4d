//! Every lock tokenkeeper takes or honours: its own `flock` beside the credentials, Claude Code's
//! directory locks (taken as Claude takes them), `flock`s with a deadline (Codex's), the leases of
//! runs that hold an access token, and what a signal must release. Every wait has a deadline and
//! a pause, and ends early when the process is told to stop. [`take`] is how every caller takes
//! them, and where a lock failure becomes an error.

pub mod dir_lock;
pub(crate) mod flock;
pub(crate) mod interrupt;
pub(crate) mod lease;
pub(crate) mod lock_file;
pub(crate) mod own_lock;
pub(crate) mod take;
