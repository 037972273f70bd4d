//! `tokenkeeper service print|install|uninstall`: the definition that keeps `tokenkeeper
//! daemon` running under systemd, launchd or Task Scheduler, with the daemon options given
//! here. `print` shows it; `install` writes it and prints the one command that enables it;
//! `uninstall` removes it and prints the one that disables it. The commands are printed, never
//! run. Notes go to stderr so stdout is exactly the definition or the command.

use super::output;
use crate::Error;
use crate::service::{self, Installed, Removed, ServiceSpec};
use std::io;
use std::path::Path;

#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub action: ServiceAction,
    /// The service manager [default: systemd on Linux, launchd on macOS, windows on Windows]
    #[arg(long, global = true, value_enum)]
    pub platform: Option<Platform>,
    /// install: replace a different definition; uninstall: remove a systemd unit still enabled.
    #[arg(long, global = true)]
    pub force: bool,
    #[command(flatten)]
    pub daemon: DaemonOptions,
}

#[derive(clap::Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    /// Write the service definition to stdout.
    Print,
    /// Write it where the service manager looks and print the command that enables it.
    Install,
    /// Remove it and print the command that stops and disables the service.
    Uninstall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Platform {
    /// A systemd user service (Linux).
    Systemd,
    /// A launchd agent (macOS).
    Launchd,
    /// A Task Scheduler task that starts at logon (Windows).
    Windows,
}

impl From<Platform> for service::Platform {
    fn from(p: Platform) -> service::Platform {
        match p {
            Platform::Systemd => service::Platform::Systemd,
            Platform::Launchd => service::Platform::Launchd,
            Platform::Windows => service::Platform::Windows,
        }
    }
}

/// The `tokenkeeper daemon` options a service passes on. Adding one: a field here and a line
/// in [`DaemonOptions::to_args`].
#[derive(clap::Args, Debug, Default, Clone)]
pub struct DaemonOptions {
    /// For the daemon: refresh when less than this is left (e.g. 30m, 2h).
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration_text)]
    pub refresh_before: Option<String>,
    /// For the daemon: warn this long before the login itself ends (e.g. 72h).
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration_text)]
    pub login_ending_within: Option<String>,
    /// For the daemon: run CMD on alerts (kept out of the command line: systemd reads it from
    /// a 0600 environment file, launchd from the 0600 plist).
    #[arg(long, global = true, value_name = "CMD")]
    pub notify_command: Option<String>,
    /// For the daemon: POST alerts as JSON to URL (kept out of the command line like
    /// --notify-command).
    #[arg(long, global = true, value_name = "URL")]
    pub webhook: Option<String>,
    /// For the daemon: serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9464).
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// For the daemon: keep an access-only copy of a login at PATH (repeatable).
    #[arg(long, global = true, value_name = "LOGIN=PATH", value_parser = mirror_text)]
    pub mirror: Vec<String>,
}

/// `LOGIN=PATH` as `tokenkeeper daemon --mirror` takes it, checked now.
fn mirror_text(text: &str) -> Result<String, String> {
    crate::mirror::spec::parse_flag(text).map(|_| text.to_string())
}

impl DaemonOptions {
    /// The daemon's options as separate arguments, in a fixed order. The global `--config`
    /// and `--credentials` are made absolute: a service starts in another folder. The notify
    /// command and the webhook are not among them (see [`DaemonOptions::secrets`]).
    pub fn to_args(
        &self,
        config: Option<&Path>,
        credentials: Option<&Path>,
    ) -> Result<Vec<String>, Error> {
        let config = config.map(absolute_text).transpose()?;
        let credentials = credentials.map(absolute_text).transpose()?;
        let options = [
            ("--config", config.as_deref()),
            ("--credentials", credentials.as_deref()),
            ("--refresh-before", self.refresh_before.as_deref()),
            ("--login-ending-within", self.login_ending_within.as_deref()),
            ("--metrics", self.metrics.as_deref()),
        ];
        let mut args: Vec<String> = options
            .into_iter()
            .filter_map(|(flag, value)| Some([flag.to_string(), value?.to_string()]))
            .flatten()
            .collect();
        // Each copy's path made absolute, as --config's is (a pattern's folders included).
        for mirror in &self.mirror {
            let (login, path) = crate::mirror::spec::parse_flag(mirror).map_err(Error::Usage)?;
            let path = absolute_text(Path::new(&path))?;
            args.extend(["--mirror".to_string(), format!("{login}={path}")]);
        }
        Ok(args)
    }

    /// The options that may hold a secret (a webhook's path, a token in a notify command), as
    /// the variables the daemon reads them from: a command line is visible to every local
    /// user in `ps`.
    pub fn secrets(&self) -> Vec<(String, String)> {
        [
            (service::NOTIFY_COMMAND_ENV, &self.notify_command),
            (service::WEBHOOK_ENV, &self.webhook),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_string(), value.clone()?)))
        .collect()
    }
}

pub fn run(
    args: &ServiceArgs,
    config: Option<&Path>,
    credentials: Option<&Path>,
) -> Result<u8, Error> {
    let env = |k: &str| std::env::var(k).ok();
    let platform = args
        .platform
        .map_or_else(service::Platform::native, service::Platform::from);
    match args.action {
        ServiceAction::Print => {
            let text = definition(args, platform, config, credentials, &env)?;
            output::stdout(&text);
        }
        ServiceAction::Install => {
            let path = platform.install_path(&env)?;
            let text = definition(args, platform, config, credentials, &env)?;
            let installed = service::install(&path, &text, args.force)?;
            let secrets = args.daemon.secrets();
            if platform == service::Platform::Systemd && !secrets.is_empty() {
                let env_file = service::env_file_path(&env)?;
                let replace = args.force || installed != Installed::Unchanged;
                service::install(&env_file, &service::env_file_text(&secrets)?, replace)?;
                tracing::info!(
                    "wrote the notify command and webhook to {} (mode 0600), which the unit reads",
                    env_file.display()
                );
            }
            match installed {
                Installed::Written => {
                    tracing::info!("wrote {}; enable it with:", path.display());
                }
                Installed::Unchanged => tracing::info!(
                    "{} is already installed, unchanged; enable it (if not yet) with:",
                    path.display()
                ),
                Installed::Replaced => tracing::info!(
                    "replaced the different definition in {}; a running service keeps the old \
                     one until `{}`. To enable it:",
                    path.display(),
                    platform.reload_command(&path)
                ),
            }
            output::stdout(&format!("{}\n", platform.enable_command(&path)));
            if platform == service::Platform::Systemd {
                warn_without_linger();
            }
        }
        ServiceAction::Uninstall => {
            let path = platform.install_path(&env)?;
            let removed = service::uninstall(platform, &path, args.force)?;
            if platform == service::Platform::Systemd
                && let Ok(env_file) = service::env_file_path(&env)
                && env_file.exists()
            {
                std::fs::remove_file(&env_file).map_err(|source| Error::Io {
                    what: "cannot remove the service's environment file",
                    path: env_file.clone(),
                    source,
                })?;
                tracing::info!("removed {}", env_file.display());
            }
            match removed {
                Removed::Removed => tracing::info!(
                    "removed {}; if the service still runs, stop and disable it with:",
                    path.display()
                ),
                Removed::Absent => tracing::info!(
                    "{} does not exist, nothing to remove; if the service still runs, stop and \
                     disable it with:",
                    path.display()
                ),
            }
            output::stdout(&format!("{}\n", platform.disable_command()));
        }
    }
    Ok(0)
}

/// The definition for this binary with the given options.
fn definition(
    args: &ServiceArgs,
    platform: service::Platform,
    config: Option<&Path>,
    credentials: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::Io {
        what: "cannot locate this binary",
        path: "tokenkeeper".into(),
        source: e,
    })?;
    let binary = service::installed_binary(&exe, env).map_err(|e| Error::Io {
        what: "cannot resolve this binary's path",
        path: exe.clone(),
        source: e,
    })?;
    if service::is_build_output(&binary) {
        tracing::warn!(
            "{} is a build output; install it first with `cargo install --path .` so the service \
             does not run a binary the next build replaces",
            binary.display()
        );
    }
    let program = text(&binary)?;
    let options = args.daemon.to_args(config, credentials)?;
    let mut spec = ServiceSpec::new(program, options, env);
    spec.secrets = args.daemon.secrets();
    if !spec.secrets.is_empty() {
        match platform {
            service::Platform::Systemd => {
                spec.env_file = Some(text(&service::env_file_path(env)?)?);
                service::env_file_text(&spec.secrets)?;
            }
            service::Platform::Launchd => {}
            service::Platform::Windows => {
                return Err(Error::Usage(
                    "a Windows task's command line is visible to every local user, so it cannot \
                     carry --webhook or --notify-command: put them in the config file's [daemon] \
                     table (webhook = \"...\", notify_command = \"...\") instead"
                        .into(),
                ));
            }
        }
    }
    Ok(platform.render(&spec))
}

fn absolute_text(path: &Path) -> Result<String, Error> {
    let absolute = std::path::absolute(path).map_err(|e| Error::Io {
        what: "cannot make absolute",
        path: path.to_path_buf(),
        source: e,
    })?;
    text(&absolute)
}

/// A service definition is text: a path that is not UTF-8 cannot be written into one.
fn text(path: &Path) -> Result<String, Error> {
    path.to_str().map(str::to_string).ok_or_else(|| Error::Io {
        what: "cannot name in a service definition",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, "the path is not valid UTF-8"),
    })
}

/// Checks a duration now, so a typo fails here and not at every start of the service; the
/// daemon gets the text as written.
fn duration_text(s: &str) -> Result<String, String> {
    crate::duration::parse(s).map(|_| s.to_string())
}

/// A systemd user service stops when its user logs out and starts only at their next login,
/// unless lingering is on: on a headless machine that is most of the time. Said when it is off.
fn warn_without_linger() {
    let Some(user) = std::env::var("USER").ok().filter(|u| !u.is_empty()) else {
        return;
    };
    if super::doctor::lingering(&user) == Some(false) {
        tracing::warn!(
            "lingering is off for {user}: systemd stops the service when you log out and starts it again only at your next login; to keep it running (a headless machine, a server): loginctl enable-linger {user}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(clap::Subcommand, Debug)]
    enum TestCommand {
        Service(ServiceArgs),
    }

    fn parse(args: &[&str]) -> Result<ServiceArgs, clap::Error> {
        let argv = ["tokenkeeper", "service"].iter().chain(args);
        TestCli::try_parse_from(argv).map(|cli| match cli.command {
            TestCommand::Service(s) => s,
        })
    }

    #[test]
    fn options_go_after_the_action_or_before_it() {
        let after = parse(&[
            "print",
            "--platform",
            "launchd",
            "--refresh-before",
            "2h",
            "--force",
        ])
        .unwrap();
        assert_eq!(after.action, ServiceAction::Print);
        assert_eq!(after.platform, Some(Platform::Launchd));
        assert_eq!(after.daemon.refresh_before.as_deref(), Some("2h"));
        assert!(after.force);
        let before = parse(&["--webhook", "https://h.example/x", "install"]).unwrap();
        assert_eq!(before.action, ServiceAction::Install);
        assert_eq!(
            before.daemon.webhook.as_deref(),
            Some("https://h.example/x")
        );
    }

    #[test]
    fn copies_go_to_the_daemon_with_absolute_paths() {
        let args = parse(&[
            "print",
            "--mirror",
            "claude=/srv/agents/*/.claude/.credentials.json",
            "--mirror",
            "codex=rel/auth.json",
        ])
        .unwrap();
        let argv = args.daemon.to_args(None, None).unwrap();
        let here = std::env::current_dir().unwrap().join("rel/auth.json");
        assert_eq!(
            argv,
            [
                "--mirror",
                "claude=/srv/agents/*/.claude/.credentials.json",
                "--mirror",
                &format!("codex={}", here.display())
            ]
        );
        assert!(parse(&["print", "--mirror", "claude"]).is_err());
    }

    #[test]
    fn a_bad_duration_is_refused_at_once() {
        let err = parse(&["print", "--refresh-before", "90"]).unwrap_err();
        assert!(err.to_string().contains("no unit"), "{err}");
    }

    #[test]
    fn daemon_options_become_arguments_in_a_fixed_order() {
        let options = DaemonOptions {
            refresh_before: Some("2h".into()),
            login_ending_within: Some("72h".into()),
            notify_command: Some("notify-send tk".into()),
            webhook: Some("https://h.example/x".into()),
            metrics: Some("127.0.0.1:9464".into()),
            mirror: Vec::new(),
        };
        let args = options
            .to_args(Some(Path::new("/etc/tk.toml")), Some(Path::new("/c.json")))
            .unwrap();
        assert_eq!(
            args,
            [
                "--config",
                "/etc/tk.toml",
                "--credentials",
                "/c.json",
                "--refresh-before",
                "2h",
                "--login-ending-within",
                "72h",
                "--metrics",
                "127.0.0.1:9464",
            ]
        );
        assert_eq!(
            options.secrets(),
            [
                ("TOKENKEEPER_NOTIFY_COMMAND".into(), "notify-send tk".into()),
                ("TOKENKEEPER_WEBHOOK".into(), "https://h.example/x".into()),
            ]
        );
        assert!(
            DaemonOptions::default()
                .to_args(None, None)
                .unwrap()
                .is_empty()
        );
        assert!(DaemonOptions::default().secrets().is_empty());
    }

    #[test]
    fn relative_paths_are_made_absolute() {
        let args = DaemonOptions::default()
            .to_args(Some(Path::new("tk.toml")), None)
            .unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(args, ["--config", cwd.join("tk.toml").to_str().unwrap()]);
    }
}
