//! Fleet mode in a build without the `fleet` feature: the names `fleet.rs` gives the rest of the
//! CLI, with no store behind them. `tokenkeeper fleet …` and `--store`/`TOKENKEEPER_STORE` say in
//! one line that this build has no fleet mode (exit 2), and a `[store]` table in the config file is
//! refused when it is read (exit 78), so that a fleet machine never refreshes on its own by
//! mistake. There is never a [`Fleet`], so every function that takes one is unreachable.

use super::output::Verdict;
use super::{Cli, Context};
use crate::Error;
use crate::login::Login;
use std::path::Path;
use std::sync::Arc;

pub use crate::keeper::{Fleet, StoreReport};

const NO_FLEET: &str = "this build of tokenkeeper has no fleet mode (`tokenkeeper fleet`, \
--store, TOKENKEEPER_STORE, [store]); build it with the `fleet` feature, which is on by default";

/// What `--store` holds: only ever refused in this build.
pub type StoreUrl = String;

/// `tokenkeeper fleet …`: whatever follows, the one line.
#[derive(clap::Args, Debug)]
pub struct FleetArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<std::ffi::OsString>,
}

pub fn run(_cli: &Cli, _args: &FleetArgs) -> Result<u8, Error> {
    Err(Error::Usage(NO_FLEET.into()))
}

/// No store; a store named by `--store` or `TOKENKEEPER_STORE` is a usage error. (`[store]` in
/// the config file was refused when the file was read.)
pub fn resolve(
    url: Option<String>,
    _cfg: &crate::config::ConfigFile,
    _config_path: &Path,
) -> Result<Option<Arc<Fleet>>, Error> {
    match url {
        Some(url) if !url.trim().is_empty() => Err(Error::Usage(NO_FLEET.into())),
        _ => Ok(None),
    }
}

pub fn state(_: &Context, store: &StoreReport, _: Result<Login, Error>, _: i64) -> Verdict {
    match *store {}
}

pub fn store_lines(store: &StoreReport, _now: i64) -> String {
    match *store {}
}

pub fn store_json(store: &StoreReport) -> serde_json::Value {
    match *store {}
}
