//! `tokenkeeper demo`: half a minute of tokenkeeper at work, in a sandbox, for a person who wants
//! to see it before pointing it at a real login.
//!
//! It makes a temporary folder with a throw-away Claude Code login, starts the loopback OAuth
//! stand-in (the tests' server, in this process) with tokens that live 6 s, and runs this same
//! binary as the daemon and as a client loop (`tokenkeeper exec -- claude`, where `claude` is this
//! binary again, playing Claude Code through the hidden `demo --probe`). Every child gets a
//! cleared environment whose HOME, XDG_STATE_HOME and XDG_CONFIG_HOME lie in the sandbox, so the
//! real home folder and configuration are never read or touched. Along the way the demo makes the
//! token endpoint fail for a few seconds, then rejects the login, then writes a new one, and
//! narrates what the daemon, the client and the alerts do. No token is ever printed: tokens are
//! named by fingerprint, and every line shown is checked against every token issued.
//!
//! The children run in their own process groups and get SIGTERM when the demo dies
//! (`PR_SET_PDEATHSIG`); Ctrl-C stops them in order and removes the sandbox.
//!
//! The stand-in comes from the `tokenkeeper-standin` crate, linked only with the `demo` feature
//! (on by default); a build without it keeps the command, which then says how to get the demo.

#[cfg(all(unix, feature = "demo"))]
mod sandbox;

use crate::Error;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// How long the demo runs, in seconds.
    #[arg(
        long,
        hide = true,
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(MIN_SECONDS..=3600)
    )]
    pub seconds: u64,
    /// For the demo's own client runs: act like Claude Code against the stand-in API at this
    /// loopback URL, with the sandbox's login.
    #[arg(long, hide = true, value_name = "URL")]
    pub probe: Option<String>,
}

/// Below this the events do not fit: each needs a few token lifetimes.
const MIN_SECONDS: u64 = 24;

#[cfg(all(unix, feature = "demo"))]
pub fn run(args: &DemoArgs, quiet: bool) -> Result<u8, Error> {
    sandbox::run(args, quiet)
}

#[cfg(not(feature = "demo"))]
pub fn run(_args: &DemoArgs, _quiet: bool) -> Result<u8, Error> {
    Err(Error::Usage(
        "this build of tokenkeeper has no demo; build it with the `demo` feature: cargo run --release --features demo -- demo".into(),
    ))
}

#[cfg(all(not(unix), feature = "demo"))]
pub fn run(_args: &DemoArgs, _quiet: bool) -> Result<u8, Error> {
    Err(Error::Usage(
        "the demo runs on Linux and macOS only; on Windows, try `tokenkeeper status`".into(),
    ))
}
