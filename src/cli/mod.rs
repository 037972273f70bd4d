//! The command line: clap types, shared set-up (logging, config, credentials path), exit codes.
//! One file per command.

pub mod arena;
mod daemon;
mod demo;
mod doctor;
mod exec;
#[cfg_attr(not(feature = "fleet"), path = "no_fleet.rs")]
mod fleet;
mod generate;
mod logging;
mod output;
mod refresh;
mod service;
mod signals;
mod status;
mod token;

use crate::config::{self, ConfigFile};
use crate::keeper::Keeper;
use crate::provider::{self, Provider};
use crate::storage::state::StateDir;
use crate::{Error, ErrorKind};
use clap::{Parser, Subcommand};
use fleet::StoreUrl;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Keeps the OAuth logins of AI coding CLIs fresh: one refresh at a time across every process,
/// rotated tokens never lost.
#[derive(Parser, Debug)]
#[command(name = "tokenkeeper", version = VERSION, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Which login: claude, codex, gemini, or the name of a [[login]] in the config file
    /// [default: claude; exec: the one of the command it runs; status and daemon: every login
    /// found]
    #[arg(long, global = true, value_name = "NAME")]
    pub provider: Option<String>,
    /// The credentials file [default: the provider's own, e.g. ~/.claude/.credentials.json,
    /// ~/.codex/auth.json, ~/.gemini/oauth_creds.json]
    #[arg(long, global = true, value_name = "PATH")]
    pub credentials: Option<PathBuf>,
    /// The provider's OAuth token endpoint (for tests and proxies).
    // hide_env_values: a URL may carry credentials (user:password@), so help never shows it.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "TOKENKEEPER_TOKEN_URL",
        hide_env_values = true
    )]
    token_url: Option<String>,
    /// Fleet mode: the PostgreSQL store that holds the login shared by many machines
    /// (postgres://user:password@host/db) [default: [store] url in the config file]
    // hide_env_values: the value may hold a password, so help never shows it.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "TOKENKEEPER_STORE",
        hide_env_values = true,
        hide = !cfg!(feature = "fleet")
    )]
    pub store: Option<StoreUrl>,
    /// Configuration file (TOML) [default: $XDG_CONFIG_HOME/tokenkeeper/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// A PEM file of CA certificates to trust besides the platform's roots, for the token
    /// endpoints, webhooks and the fleet's store (a proxy that inspects TLS) [default: ca_file
    /// in [tls] of the config file]
    #[arg(long, global = true, value_name = "PATH", env = "TOKENKEEPER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// More detail on stderr (-vv for even more). Never shows a token.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr, no summary on stdout.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the login's state; never refreshes, never writes.
    Status {
        /// One JSON object with a `logins` array.
        #[arg(long)]
        json: bool,
    },
    /// Check everything a login depends on (config, logins, environment, token endpoint, clock,
    /// service, Claude Code) and print one line per check with its fix; never refreshes, never
    /// writes. Exit 0 when nothing fails (warnings are shown), 1 when a check fails.
    Doctor {
        /// One JSON object with a `checks` array.
        #[arg(long)]
        json: bool,
    },
    /// Refresh the access token when less than the minimum lifetime is left.
    Refresh {
        /// Refresh even when the token is not due.
        #[arg(long)]
        force: bool,
        /// Refresh when less than this is left (e.g. 90s, 30m, 1h) [default: the provider's: 1h Claude Code, 1d Codex CLI, 15m Gemini CLI]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        min_ttl: Option<Duration>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run a command with a login good for at least --min-ttl; make its auth failures loud.
    Exec {
        /// The login must have at least this much left when the command starts [default: 30m]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        min_ttl: Option<Duration>,
        /// How the command gets the token: the shared credentials file, or only the access token
        /// in its environment (Claude Code: CLAUDE_CODE_OAUTH_TOKEN; Gemini CLI:
        /// GOOGLE_CLOUD_ACCESS_TOKEN; Codex CLI has no such variable), so it never sees the
        /// refresh token.
        #[arg(long, value_enum, default_value_t = exec::Inject::File)]
        inject: exec::Inject,
        /// After an auth failure, force a refresh and run the command again, at most N times.
        #[arg(long, value_name = "N", default_value_t = 0)]
        retry_auth: u32,
        /// The command and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Keep the login fresh for as long as it runs: refresh once per token lifetime, watch the
    /// file, back off on failures, alert when a human is needed.
    Daemon(daemon::DaemonArgs),
    /// Generate, install or remove the service definition that runs `tokenkeeper daemon`.
    Service(service::ServiceArgs),
    /// See tokenkeeper work for half a minute in a sandbox, with a stand-in OAuth server; never
    /// touches the real home folder or configuration.
    Demo(demo::DemoArgs),
    /// Fleet mode: make a fleet key, or push this machine's login into the shared store.
    #[command(hide = !cfg!(feature = "fleet"))]
    Fleet(fleet::FleetArgs),
    /// Print a valid access token on stdout (refreshing first when due), nothing else.
    Token {
        /// Refresh first when less than this is left [default: the provider's: 1h Claude Code, 1d Codex CLI, 15m Gemini CLI]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        min_ttl: Option<Duration>,
    },
    /// Print the completion script for a shell (e.g. to
    /// /usr/share/bash-completion/completions/tokenkeeper).
    Completions {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; e.g. `tokenkeeper man | man -l -`).
    Man {
        /// Write every page instead: tokenkeeper.1 and one per command (tokenkeeper-status.1,
        /// tokenkeeper-service-print.1, ...) into DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `--version`: the version and the commit it was built from (build.rs), e.g.
/// `0.1.0 (2613c18 2026-12-07)`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TOKENKEEPER_BUILD_COMMIT"),
    ")"
);

const EXIT_CODES: &str = "Exit codes: 0 ok, 2 usage, 69 token endpoint unavailable, 74 new tokens \
could not be saved (kept in a recovery file), 75 lock not obtained in time, 77 login dead, \
78 credentials or config missing, unreadable or malformed.";

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s)
}

/// The exit code for each kind of error; the same for every command.
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Unavailable => 69,
        ErrorKind::SaveFailed | ErrorKind::Io => 74,
        ErrorKind::LockTimeout => 75,
        ErrorKind::Dead => 77,
        ErrorKind::Credentials | ErrorKind::Config => 78,
        ErrorKind::Usage => 2,
    }
}

/// What every command works with, for one login, resolved from flags, environment and config.
/// The login itself, and how it is kept, is the library's [`Keeper`] (reached through `Deref`);
/// the rest is what only the command line needs.
pub struct Context {
    pub keeper: Keeper,
    pub quiet: bool,
    /// `min_ttl` as the config file sets it, if it does (`exec` has its own default).
    pub configured_min_ttl: Option<Duration>,
    /// The config file's path (for messages) and its `[daemon]` table.
    pub config_path: PathBuf,
    pub daemon_config: config::DaemonConfig,
    /// The `[[mirror]]` tables: access-only copies the daemon writes.
    pub mirrors: Vec<crate::mirror::spec::MirrorSpec>,
}

impl std::ops::Deref for Context {
    type Target = Keeper;

    fn deref(&self) -> &Keeper {
        &self.keeper
    }
}

/// The config file, read once, and what the environment says.
struct Loaded {
    cfg: ConfigFile,
    config_path: PathBuf,
    state: StateDir,
    fleet: Option<Arc<fleet::Fleet>>,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Reads the CA file the flag, the environment or `[tls]` names and makes every later TLS
/// connection trust it (see `crate::tls`); a file that is missing or holds no usable
/// certificate stops the command (exit 78), naming the file and where it was set.
fn trust_ca_file(cli: &Cli, cfg: &ConfigFile, config_path: &Path) -> Result<(), Error> {
    use crate::tls::{self, CaFile};
    let ca = match (&cli.ca_file, cfg.tls.ca_file(config_path)) {
        (Some(path), _) => Some(CaFile::read(path).map_err(|why| {
            Error::Setting(format!(
                "the CA file {} (from --ca-file or TOKENKEEPER_CA_FILE) {why}; or unset TOKENKEEPER_CA_FILE to trust only the platform's roots",
                path.display()
            ))
        })?),
        (None, Some(path)) => {
            Some(CaFile::read(&path).map_err(|why| Error::Config {
            path: config_path.to_path_buf(),
            problem: format!(
                "[tls] ca_file: the CA file {} {why}; or remove ca_file to trust only the platform's roots",
                path.display()
            ),
            })?)
        }
        (None, None) => None,
    };
    tls::trust(ca);
    Ok(())
}

impl Loaded {
    fn read(cli: &Cli) -> Result<Loaded, Error> {
        let (config_path, named) = match &cli.config {
            Some(p) => (p.clone(), true),
            None => (
                config::default_path(&env).unwrap_or_else(|| PathBuf::from("config.toml")),
                false,
            ),
        };
        let cfg: ConfigFile = config::load(&config_path, named)?;
        trust_ca_file(cli, &cfg, &config_path)?;
        let state = StateDir::locate(&env).ok_or_else(|| Error::Config {
            path: config_path.clone(),
            problem: "no state folder: neither XDG_STATE_HOME nor HOME is set".into(),
        })?;
        let fleet = fleet::resolve(cli.store.clone(), &cfg, &config_path)?;
        Ok(Loaded {
            cfg,
            config_path,
            state,
            fleet,
        })
    }

    /// The provider called `name`: a built-in one, or a `[[login]]` table.
    fn provider(&self, name: &str) -> Result<(Arc<dyn Provider>, config::ProviderConfig), Error> {
        if let (Some(p), Some(table)) = (provider::builtin(name), self.cfg.provider(name)) {
            return Ok((p, table.clone()));
        }
        if let Some(table) = self.cfg.login.iter().find(|l| l.name == name) {
            let generic = crate::provider::generic::Generic::new(table, &self.config_path)?;
            return Ok((generic, table.request_config()));
        }
        let mut known: Vec<&str> = provider::names().collect();
        known.extend(self.cfg.login.iter().map(|l| l.name.as_str()));
        // The name came from the command line (or TOKENKEEPER_PROVIDER): a usage error, with the
        // nearest name when one is close (as clap does for subcommands).
        let nearest = known
            .iter()
            .map(|k| (strsim::jaro_winkler(name, k), *k))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| format!("did you mean '{k}'? "))
            .unwrap_or_default();
        Err(Error::Usage(format!(
            "there is no login called '{name}'; {nearest}--provider takes one of: {}",
            known.join(", ")
        )))
    }

    fn context(
        &self,
        cli: &Cli,
        name: &str,
        credentials: Option<&Path>,
        min_ttl: Option<Duration>,
    ) -> Result<Context, Error> {
        let (provider, table) = self.provider(name)?;
        let settings = table.settings(
            provider.as_ref(),
            &self.config_path,
            cli.token_url.clone(),
            min_ttl,
        )?;
        let path = credentials
            .map(Path::to_path_buf)
            .or_else(|| table.credentials.clone())
            .or_else(|| provider.default_path(&env))
            .ok_or_else(|| Error::Config {
                path: self.config_path.clone(),
                problem: "no credentials path: HOME is not set; pass --credentials PATH".into(),
            })?;
        let file = crate::provider::open_credentials(
            provider.as_ref(),
            path,
            table.store.as_deref(),
            &env,
        )
        .map_err(|problem| Error::Config {
            path: self.config_path.clone(),
            problem,
        })?;
        Ok(Context {
            keeper: Keeper::new(
                provider,
                file,
                settings,
                self.state.clone(),
                self.fleet.clone(),
            ),
            quiet: cli.quiet,
            configured_min_ttl: table
                .min_ttl
                .as_deref()
                .and_then(|t| crate::duration::parse(t).ok()),
            config_path: self.config_path.clone(),
            daemon_config: self.cfg.daemon.clone(),
            mirrors: self.cfg.mirrors(&self.config_path)?,
        })
    }

    /// Every login to show or keep: the built-in providers' files that exist, and every
    /// `[[login]]`. When none is found, Claude Code's (so that its absence is reported).
    fn all(&self, cli: &Cli) -> Result<Vec<Context>, Error> {
        let mut found = Vec::new();
        for name in provider::names() {
            let ctx = self.context(cli, name, None, None)?;
            if ctx.file.exists() {
                found.push(ctx);
            }
        }
        for table in &self.cfg.login {
            found.push(self.context(cli, &table.name, None, None)?);
        }
        if found.is_empty() {
            found.push(self.context(cli, provider::DEFAULT, None, None)?);
        }
        Ok(found)
    }
}

impl Context {
    /// The login the flags name (`--provider`, default Claude Code).
    fn resolve(cli: &Cli, min_ttl: Option<Duration>) -> Result<Context, Error> {
        let name = cli.provider.as_deref().unwrap_or(provider::DEFAULT);
        Loaded::read(cli)?.context(cli, name, cli.credentials.as_deref(), min_ttl)
    }

    /// The login `--provider` names, else the one of the program `exec` runs (`codex` runs
    /// Codex CLI's login, `mytool` the [[login]] named so), else Claude Code's.
    fn resolve_for_program(cli: &Cli, program: &std::ffi::OsStr) -> Result<Context, Error> {
        let loaded = Loaded::read(cli)?;
        let name = match &cli.provider {
            Some(name) => name.clone(),
            None => {
                let base = Path::new(program)
                    .file_stem()
                    .map(|n| n.to_string_lossy().to_lowercase())
                    .unwrap_or_default();
                let mut logins = loaded.cfg.login.iter().map(|l| l.name.as_str());
                provider::names()
                    .find(|p| *p == base)
                    .or_else(|| logins.find(|p| *p == base))
                    .unwrap_or(provider::DEFAULT)
                    .to_string()
            }
        };
        loaded.context(cli, &name, cli.credentials.as_deref(), None)
    }

    /// Every login (`status` and `daemon` without `--provider` or `--credentials`), else the
    /// one the flags name.
    fn resolve_all(cli: &Cli) -> Result<Vec<Context>, Error> {
        if cli.provider.is_some() || cli.credentials.is_some() {
            return Ok(vec![Context::resolve(cli, None)?]);
        }
        Loaded::read(cli)?.all(cli)
    }
}

/// `Cli::try_parse()`, without tearing clap's tree of every command and option down again: the
/// process is short-lived, and freeing that tree is a tenth of a `refresh` of a fresh login.
fn parse() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut matches| {
            let cli = Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command));
            std::mem::forget(matches);
            cli
        });
    std::mem::forget(command);
    parsed
}

pub fn run() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // `--help` and `--version` are not errors; anything else clap refuses is misuse.
            return ExitCode::from(if e.use_stderr() {
                exit_code(ErrorKind::Usage)
            } else {
                0
            });
        }
    };
    let is_daemon = matches!(cli.command, Command::Daemon(_));
    logging::init(cli.verbose, cli.quiet, is_daemon);
    if is_daemon {
        signals::prepare_daemon();
    } else {
        signals::prepare();
    }
    let result = match &cli.command {
        Command::Status { json } => Context::resolve_all(&cli).map(|all| status::run(&all, *json)),
        Command::Doctor { json } => doctor::run(&cli, *json),
        Command::Refresh {
            force,
            min_ttl,
            json,
        } => Context::resolve(&cli, *min_ttl).and_then(|ctx| refresh::run(&ctx, *force, *json)),
        Command::Token { min_ttl } => {
            Context::resolve(&cli, *min_ttl).and_then(|ctx| token::run(&ctx))
        }
        Command::Daemon(args) => daemon::run(&cli, args),
        Command::Demo(args) => demo::run(args, cli.quiet),
        Command::Fleet(args) => fleet::run(&cli, args),
        Command::Completions { shell } => generate::completions(*shell),
        Command::Man { dir } => generate::man(dir.as_deref()),
        Command::Service(args) => {
            service::run(args, cli.config.as_deref(), cli.credentials.as_deref())
        }
        Command::Exec {
            min_ttl,
            inject,
            retry_auth,
            command,
        } => exec::check_command(command)
            .and_then(|()| Context::resolve_for_program(&cli, &command[0]))
            .and_then(|ctx| {
                // Before any refresh: the forwarder must come first among the signal actions, so a
                // signal it hands to the command is marked as such before the refresh-time handler
                // (registered later, run after it) can see it.
                signals::forward_to_command();
                // Flag, then the config's own `min_ttl` when it sets one, then exec's default.
                let min_ttl = min_ttl
                    .or(ctx.configured_min_ttl)
                    .unwrap_or(exec::DEFAULT_MIN_TTL);
                exec::run(&ctx, min_ttl, *inject, *retry_auth, command)
            }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            output::error_line(&e.to_string());
            ExitCode::from(exit_code(e.kind()))
        }
    }
}
