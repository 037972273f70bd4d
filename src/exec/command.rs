//! What `exec` runs, as the spawn sees it: the program, its arguments, the variables set on top
//! of ours, which streams are watched; and why it could not be started.

use std::ffi::OsString;
use std::io;

pub struct ChildSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Variables to set for the child (on top of our own environment).
    pub env: Vec<(String, String)>,
    /// Pass stdout (stderr) through a pipe and watch it, instead of inheriting it.
    pub watch_stdout: bool,
    pub watch_stderr: bool,
}

#[derive(Debug)]
pub enum SpawnError {
    /// No such command (exit 127).
    NotFound,
    /// It exists but cannot be executed (exit 126).
    NotExecutable(io::Error),
}
