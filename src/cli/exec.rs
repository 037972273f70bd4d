//! `tokenkeeper exec -- COMMAND`: make sure the login has at least `--min-ttl` left, run the
//! command (with the token in its environment under `--inject env`, holding a lease so no
//! refresh revokes it mid-run), pass its output through while watching for auth failures, and
//! turn such a failure into one line on stderr and exit 77.

use super::Context;
use super::output;
use crate::exec::auth_failure::{self, AuthFailure, FailureKind, LoginFacts};
use crate::exec::child;
use crate::exec::command::{ChildSpec, SpawnError};
use crate::lock::lease;
use crate::login::Login;
use crate::refresh::Want;
use crate::storage::state::StateDir;
use crate::{Error, ErrorKind};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Inject {
    /// The command reads the shared credentials file, as it does on its own.
    File,
    /// The command gets only the access token, in its environment (Claude Code:
    /// CLAUDE_CODE_OAUTH_TOKEN; Gemini CLI: GOOGLE_CLOUD_ACCESS_TOKEN).
    Env,
}

pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(30 * 60);

/// The shell's codes for a command that cannot be run: not found, found but not executable.
const COMMAND_NOT_FOUND: u8 = 127;
const COMMAND_NOT_EXECUTABLE: u8 = 126;

/// A command that starts with `-` is an option of ours mistyped or placed after the first
/// argument (`exec --min-tll 1h -- claude`): a usage error, not a program to look for on PATH.
pub fn check_command(command: &[OsString]) -> Result<(), Error> {
    match command.first().map(|c| c.to_string_lossy()) {
        Some(first) if first.starts_with('-') => Err(Error::Usage(format!(
            "exec has no option '{first}'; its options (--min-ttl, --inject, --retry-auth) go before `--`, the command after it: tokenkeeper exec --min-ttl 1h -- claude -p hi"
        ))),
        _ => Ok(()),
    }
}

pub fn run(
    ctx: &Context,
    min_ttl: Duration,
    inject: Inject,
    retry_auth: u32,
    command: &[OsString],
) -> Result<u8, Error> {
    let Some((program, args)) = command.split_first() else {
        return Ok(super::exit_code(ErrorKind::Usage));
    };
    let name = Path::new(program)
        .file_name()
        .map_or_else(|| program.to_string_lossy(), |n| n.to_string_lossy())
        .into_owned();
    let set: Vec<&str> = ctx
        .provider
        .facts()
        .overriding_env
        .iter()
        .copied()
        .filter(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
        .collect();
    if !set.is_empty() {
        tracing::warn!(
            "{} set in the environment; {} uses it instead of the stored login",
            if set.len() == 1 {
                format!("{} is", set[0])
            } else {
                format!("{} are", set.join(", "))
            },
            ctx.file.owner().name
        );
    }
    if inject == Inject::Env
        && let Err(why) = ctx.provider.inject_env(&Default::default())
    {
        return Err(Error::Usage(format!(
            "--inject env cannot hand {} a token: {why}; use --inject file",
            ctx.file.owner().name
        )));
    }

    let mut force = false;
    let mut retries_left = retry_auth;
    loop {
        let (login, lease) = prepare(ctx, force, min_ttl, inject)?;
        let env = match inject {
            Inject::Env => ctx
                .provider
                .inject_env(&login.access_token)
                .unwrap_or_default(),
            Inject::File => Vec::new(),
        };
        let spec = ChildSpec {
            program: program.clone(),
            args: args.to_vec(),
            env,
            watch_stdout: !std::io::stdout().is_terminal(),
            watch_stderr: !std::io::stderr().is_terminal(),
        };
        let finished = match child::run(&spec) {
            Ok(f) => f,
            Err(SpawnError::NotFound) => {
                output::error_line(&format!("command not found: {}", program.to_string_lossy()));
                return Ok(COMMAND_NOT_FOUND);
            }
            Err(SpawnError::NotExecutable(e)) => {
                output::error_line(&format!(
                    "cannot execute {}: {e}",
                    program.to_string_lossy()
                ));
                return Ok(COMMAND_NOT_EXECUTABLE);
            }
        };
        drop(lease);
        let code = u8::try_from(finished.code).unwrap_or(1);
        if finished.code == 0 {
            return Ok(0);
        }
        let current = ctx.read_login().ok();
        let failure = finished
            .auth_failure
            .or_else(|| {
                auth_failure::by_exit_code(
                    finished.code,
                    ctx.provider.facts().auth_failure_exit_code,
                )
            })
            .or_else(|| {
                current.is_none().then_some(AuthFailure {
                    kind: FailureKind::LoginEnded,
                    status: None,
                    error_type: None,
                })
            });
        let Some(failure) = failure else {
            return Ok(code);
        };
        if retries_left > 0 {
            retries_left -= 1;
            // Force a refresh only if the token the command had is still the one on disk: if
            // another process rotated it meanwhile, the command just needs the new one, and a
            // forced refresh would revoke it under every other run.
            let rotated = current
                .as_ref()
                .is_some_and(|c| c.access_token != login.access_token);
            let what = if rotated {
                "using the login's new token"
            } else {
                "refreshing the login"
            };
            tracing::warn!(
                "{name} failed to authenticate; {what} and running it again ({} of {retry_auth})",
                retry_auth - retries_left
            );
            force = !rotated;
            continue;
        }
        output::stderr_line(&format!(
            "tokenkeeper: {}",
            explain(ctx, &name, &failure, current.as_ref())
        ));
        // Still refused after every retry: the login is as good as dead to this command.
        return Ok(super::exit_code(ErrorKind::Dead));
    }
}

/// Refreshes when due; under `--inject env`, also takes a lease on the token the command gets,
/// making sure no refresh slipped in between.
fn prepare(
    ctx: &Context,
    mut force: bool,
    min_ttl: Duration,
    inject: Inject,
) -> Result<(Login, Option<lease::Lease>), Error> {
    loop {
        // A forced refresh follows an auth failure of the token in hand: no going on with it.
        let outcome = if force {
            ctx.refresh_if_due(Want::new_token(min_ttl))?
        } else {
            output::usable(ctx.login_for_use(min_ttl)?)
        };
        force = false;
        if inject == Inject::File {
            return Ok((outcome.login, None));
        }
        let folder = ctx.file.folder();
        let deadline = Instant::now() + ctx.settings.lock_timeout;
        let taken = lease::take_shared(&folder, deadline).map_err(|source| Error::Io {
            what: "cannot take a lease in",
            path: lease::lease_path(&folder),
            source,
        })?;
        let Some(lease) = taken else {
            return Err(Error::LockTimeout {
                what: "a refresh in progress",
                lock: lease::lease_path(&folder),
                waited: crate::duration::human(ctx.settings.lock_timeout),
                holder: String::new(),
            });
        };
        let leased = ctx.read_login()?;
        if leased.access_token == outcome.login.access_token {
            return Ok((leased, Some(lease)));
        }
    }
}

fn explain(ctx: &Context, name: &str, failure: &AuthFailure, login: Option<&Login>) -> String {
    let key = StateDir::key(ctx.file.owner().provider, ctx.file.path());
    let refreshed_at = ctx
        .state
        .read_record(&key)
        .filter(|r| r.outcome.is_success())
        .map(|r| crate::login::format_time(r.last_refresh_at));
    let path = ctx.file.path().display().to_string();
    let facts = LoginFacts {
        path: &path,
        expires_at: login.map(|l| crate::login::format_time(l.expires_at)),
        refreshed_at,
        relogin: ctx.file.owner().relogin,
    };
    auth_failure::explain(name, failure, &facts)
}
