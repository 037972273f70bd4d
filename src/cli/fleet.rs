//! `tokenkeeper fleet keygen|push`, the daemon's wake-up from the store's listener, and what
//! `status` says of a fleet login. Whether a command goes through the shared store (`--store`,
//! `TOKENKEEPER_STORE` or `[store] url`) or the local file is the library's `Keeper`'s choice.
//!
//! A build without the `fleet` feature uses `no_fleet.rs` in its place: the same names, which
//! there say that this build has no fleet mode.

use super::output::Verdict;
use super::{Cli, Context, output};
use crate::fleet::crypto;
use crate::login::Login;
use crate::{Error, ErrorKind};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::fleet::Fleet;

/// What `--store` holds: a URL whose password never prints.
pub type StoreUrl = crate::fleet::DatabaseUrl;

/// The store named by `--store` or `TOKENKEEPER_STORE` (`url`), else by `[store] url`; None when
/// neither names one (then the local file is the store).
pub fn resolve(
    url: Option<StoreUrl>,
    cfg: &crate::config::ConfigFile,
    config_path: &Path,
) -> Result<Option<Arc<Fleet>>, Error> {
    Ok(Fleet::resolve(url, &cfg.store, config_path, &super::env)?.map(Arc::new))
}

#[derive(clap::Args, Debug)]
pub struct FleetArgs {
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(clap::Subcommand, Debug)]
enum FleetCommand {
    /// Print a new fleet key (64 hex digits); every machine of the fleet needs the same one.
    Keygen {
        /// Write it to this file (created with mode 0600) instead of printing it.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Make this machine's current login the fleet's (e.g. right after `claude /login`; with
    /// --provider codex or gemini, that CLI's); this machine's file then keeps the login without
    /// its refresh token, like every other one's.
    Push {
        /// Replace the store's login even when it is newer than this machine's.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cli: &Cli, args: &FleetArgs) -> Result<u8, Error> {
    match &args.command {
        FleetCommand::Keygen { out } => keygen(out.as_deref()),
        FleetCommand::Push { force } => push(cli, *force),
    }
}

fn keygen(out: Option<&Path>) -> Result<u8, Error> {
    let key = crypto::generate();
    let Some(path) = out else {
        output::stdout(&format!("{key}\n"));
        return Ok(0);
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| Error::Io {
        what: "cannot create the key file (it must not exist yet)",
        path: path.to_path_buf(),
        source,
    })?;
    file.write_all(format!("{key}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::Io {
            what: "cannot write the key file",
            path: path.to_path_buf(),
            source,
        })?;
    output::stderr_line(&format!(
        "wrote a new fleet key to {} (mode 0600); copy it to every machine and name it with `key_file` in [store]",
        path.display()
    ));
    Ok(0)
}

fn push(cli: &Cli, force: bool) -> Result<u8, Error> {
    let ctx = Context::resolve(cli, None)?;
    crate::fleet::push::pushable(&ctx.job())?;
    let Some(fleet) = ctx.fleet.as_ref() else {
        return Err(Error::Usage(
            "fleet push needs a store: pass --store URL, set TOKENKEEPER_STORE, or set url in [store]".into(),
        ));
    };
    let pushed = crate::fleet::push::push(fleet, &ctx.job(), force)?;
    if !ctx.quiet {
        let what = if pushed.already {
            format!(
                "the store already holds this login (generation {})",
                pushed.generation
            )
        } else {
            match pushed.replaced {
                Some(old) => format!(
                    "pushed: generation {} replaces generation {old}",
                    pushed.generation
                ),
                None => format!("pushed: generation {}", pushed.generation),
            }
        };
        output::stdout(&format!(
            "{what} in {}; {} now holds the login without its refresh token\n",
            fleet.shown,
            ctx.file.path().display()
        ));
    }
    Ok(0)
}

/// What wakes the daemon's loop from the store's listener: a byte down the loop's self-pipe.
#[cfg(unix)]
pub fn waker(ends: &[std::os::unix::net::UnixStream; 2]) -> Box<dyn Fn() + Send> {
    match ends[1].try_clone() {
        Ok(pipe) => Box::new(move || {
            let _ = (&pipe).write(&[1]);
        }),
        Err(_) => Box::new(|| {}),
    }
}

/// Without a self-pipe the loop looks at the store every few seconds anyway.
#[cfg(not(unix))]
pub fn waker(_ends: &()) -> Box<dyn Fn() + Send> {
    Box::new(|| {})
}

pub use crate::keeper::StoreReport;

/// `status`'s verdict on a fleet login: the store's login decides (this machine's file holds no
/// refresh token by design); with the store unreachable, this machine's access token does.
pub fn state(ctx: &Context, store: &StoreReport, local: Result<Login, Error>, now: i64) -> Verdict {
    match (&store.shared, local) {
        (Ok(shared), _) if shared.is_dead() => (
            "dead",
            Some(shared.login.clone()),
            Some(format!(
                "{}; log in again with {} on one machine and run `tokenkeeper fleet push` there",
                shared
                    .row
                    .last_error
                    .as_deref()
                    .unwrap_or("the server rejected its refresh token"),
                ctx.file.owner().relogin
            )),
        ),
        (Ok(shared), _) => (
            shared.login.freshness(now, ctx.settings.min_ttl).as_str(),
            Some(shared.login.clone()),
            None,
        ),
        (Err(e), Ok(local)) if !local.access_token.is_empty() => {
            let state = if local.remaining_ms(now) <= 0 {
                "expired"
            } else if local.is_usable_for(now, ctx.settings.min_ttl) {
                "fresh"
            } else {
                "due"
            };
            (state, Some(local), Some(e.to_string()))
        }
        (Err(e), _) => {
            let state = match e.kind() {
                ErrorKind::Config => "malformed",
                _ => "missing",
            };
            (state, None, Some(e.to_string()))
        }
    }
}

/// `status`'s lines about the store.
pub fn store_lines(store: &StoreReport, now: i64) -> String {
    let mut out = format!("  machine       {}\n", store.machine);
    out += &format!("  store         {}", store.store);
    if let Ok(shared) = &store.shared {
        let row = &shared.row;
        out += &format!(", generation {}", row.generation);
        out += "\n";
        match (&row.last_refresh_by, row.last_refresh_at) {
            (Some(by), Some(at)) => {
                out += &format!("  refreshed by  {by}, {}\n", output::when(at, now));
            }
            _ => {
                out += &format!(
                    "  pushed by     {}, {}\n",
                    row.updated_by,
                    output::when(row.updated_at, now)
                );
            }
        }
    } else {
        out += ", unreachable or unusable (see problem)\n";
    }
    out
}

/// `status --json`'s `store` object.
pub fn store_json(store: &StoreReport) -> serde_json::Value {
    match &store.shared {
        Ok(shared) => {
            let row = &shared.row;
            serde_json::json!({
                "url": store.store,
                "machine": store.machine,
                "generation": row.generation,
                "updated_by": row.updated_by,
                "updated_at": output::rfc3339(row.updated_at),
                "last_refresh_by": row.last_refresh_by,
                "last_refresh_at": row.last_refresh_at.and_then(output::rfc3339),
                "last_outcome": row.last_outcome,
                "error": serde_json::Value::Null,
            })
        }
        Err(e) => serde_json::json!({
            "url": store.store,
            "machine": store.machine,
            "error": e.to_string(),
        }),
    }
}
