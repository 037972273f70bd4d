//! `tokenkeeper daemon`: the watchdog. Sets up what the library's loop needs (one instance per
//! state folder, alerts, metrics, systemd notifications, signals) and runs it until SIGTERM or
//! SIGINT; SIGHUP re-reads the configuration.

use super::{Cli, Context};
use crate::Error;
use crate::daemon::alert::{
    Alert, Alerter, Event, WEBHOOK_REDIRECTS_MAX, check_notify_command, check_webhook,
};
use crate::daemon::metrics::{self, Metrics};
use crate::daemon::sd_notify::Notifier;
use crate::daemon::{Control, Daemon, Kept, Options, Source};
use crate::keeper::Keeper;
use crate::mirror::Copies;
use crate::mirror::spec::{self, MirrorSpec};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct DaemonArgs {
    /// Refresh when this much is left; cut to half the token's lifetime [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub refresh_before: Option<Duration>,
    /// Remind to log in again when the login ends within this [default: 3d]
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub login_ending_within: Option<Duration>,
    /// Run this command (with sh -c) for every alert; TOKENKEEPER_EVENT, TOKENKEEPER_PROVIDER and
    /// TOKENKEEPER_MESSAGE tell what happened.
    #[arg(long, value_name = "CMD")]
    #[arg(env = "TOKENKEEPER_NOTIFY_COMMAND", hide_env_values = true)]
    pub notify_command: Option<String>,
    /// POST every alert as JSON to this URL (Discord and Slack incoming webhooks show it as is).
    #[arg(long, value_name = "URL")]
    #[arg(env = "TOKENKEEPER_WEBHOOK", hide_env_values = true)]
    pub webhook: Option<String>,
    /// Serve Prometheus metrics on /metrics at this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Keep an access-only copy of a login at PATH (no refresh token; written at start and right
    /// after every refresh), like claude=/srv/agents/a1/.claude/.credentials.json; PATH may be a
    /// folder pattern (`*`). Repeatable; adds to the config file's [[mirror]] tables.
    #[arg(long, value_name = "LOGIN=PATH")]
    pub mirror: Vec<String>,
    /// Send one `test` alert through the notify command and the webhook, say how each went, and
    /// exit (0 when every one worked).
    #[arg(long)]
    pub test_alert: bool,
}

/// The options after flags, then config, then defaults.
struct Resolved {
    state: crate::storage::state::StateDir,
    options: Options,
    alerter: Alerter,
    metrics: Option<SocketAddr>,
    logins: Vec<Keeper>,
    /// The copies to keep: the config file's [[mirror]] tables, then --mirror.
    mirrors: Vec<MirrorSpec>,
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    fleet: Option<Arc<crate::keeper::Fleet>>,
}

fn resolve(cli: &Cli, args: &DaemonArgs) -> Result<Resolved, Error> {
    let all = Context::resolve_all(cli)?;
    let fleet = all[0].fleet.clone();
    let (config_path, daemon_config, state) = (
        all[0].config_path.clone(),
        all[0].daemon_config.clone(),
        all[0].state.clone(),
    );
    let mut mirrors = all[0].mirrors.clone();
    for flag in &args.mirror {
        let (login, path) = spec::parse_flag(flag).map_err(Error::Usage)?;
        mirrors.push(MirrorSpec {
            login,
            path,
            owner: None,
            mode: spec::DEFAULT_MODE,
            from: "--mirror".into(),
        });
    }
    let logins = keepable(all)?;
    let (path, d) = (&config_path, &daemon_config);
    // Unset: each login's own minimum lifetime (1 h for Claude Code, 1 day for Codex CLI, …).
    let refresh_before = match args.refresh_before {
        Some(v) => Some(v),
        None => d
            .refresh_before
            .as_ref()
            .map(|_| d.duration(path, "refresh_before", &d.refresh_before, Duration::ZERO))
            .transpose()?,
    };
    let login_ending_within = match args.login_ending_within {
        Some(v) => v,
        None => d.duration(
            path,
            "login_ending_within",
            &d.login_ending_within,
            Duration::from_secs(3 * 86_400),
        )?,
    };
    // Blame what gave the address: the flag (a usage error) or the config file.
    let metrics = match (&args.metrics, &d.metrics) {
        (Some(text), _) => Some(
            parse_metrics_addr(text)
                .map_err(|problem| Error::Usage(format!("--metrics: {problem}")))?,
        ),
        (None, Some(text)) => Some(parse_metrics_addr(text).map_err(|problem| Error::Config {
            path: path.clone(),
            problem: format!("[daemon] metrics: {problem}"),
        })?),
        (None, None) => None,
    };
    // Checked now, not at the first alert, which may come weeks later.
    let path_env = std::env::var_os("PATH");
    let notify_command = match (&args.notify_command, &d.notify_command) {
        (Some(cmd), _) => {
            check_notify_command(cmd, path_env.as_deref()).map_err(|why| {
                Error::Setting(format!(
                    "--notify-command (or TOKENKEEPER_NOTIFY_COMMAND): {why}"
                ))
            })?;
            Some(cmd.clone())
        }
        (None, Some(cmd)) => {
            check_notify_command(cmd, path_env.as_deref()).map_err(|why| Error::Config {
                path: path.clone(),
                problem: format!("[daemon] notify_command: {why}"),
            })?;
            Some(cmd.clone())
        }
        (None, None) => None,
    };
    let webhook = match (&args.webhook, &d.webhook) {
        (Some(url), _) => {
            check_webhook(url).map_err(|why| {
                Error::Setting(format!("--webhook (or TOKENKEEPER_WEBHOOK): {why}"))
            })?;
            Some(url.clone())
        }
        (None, Some(url)) => {
            check_webhook(url).map_err(|why| Error::Config {
                path: path.clone(),
                problem: format!("[daemon] webhook: {why}"),
            })?;
            Some(url.clone())
        }
        (None, None) => None,
    };
    let webhook_redirects = match d.webhook_redirects {
        Some(n) if n > WEBHOOK_REDIRECTS_MAX => {
            return Err(Error::Config {
                path: path.clone(),
                problem: format!(
                    "[daemon] webhook_redirects: {n} is more than {WEBHOOK_REDIRECTS_MAX}; a webhook that needs more has a wrong URL, so set the URL it ends at"
                ),
            });
        }
        n => n.unwrap_or(0),
    };
    let alerter = Alerter::new(notify_command, webhook, webhook_redirects);
    Ok(Resolved {
        fleet,
        state,
        options: Options {
            refresh_before,
            login_ending_within,
        },
        alerter,
        metrics,
        logins,
        mirrors,
    })
}

/// The logins to keep, without those that hold nothing to keep (a Codex API key), each left
/// out with a line in the log; when that leaves none, the reason is the error.
fn keepable(all: Vec<Context>) -> Result<Vec<Keeper>, Error> {
    let mut logins = Vec::new();
    let mut nothing = None;
    for c in all {
        match crate::refresh::parse_current(c.provider.as_ref(), &c.file) {
            Err(e @ Error::NothingToKeep { .. }) => {
                tracing::info!("not keeping {}: {e}", c.file.path().display());
                nothing = Some(e);
            }
            _ => logins.push(c.keeper),
        }
    }
    match nothing {
        Some(e) if logins.is_empty() => Err(e),
        _ => Ok(logins),
    }
}

/// SIGTERM and SIGINT ask the loop to stop, SIGHUP to re-read the configuration; each also
/// writes to a wake-up pipe the loop sleeps on. Returns the loop's controls and the pipe's two
/// ends, to keep while the loop runs.
#[cfg(unix)]
fn wire_signals(
    state: &crate::storage::state::StateDir,
) -> Result<(Control, [std::os::unix::net::UnixStream; 2]), Error> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use std::os::fd::AsRawFd;
    let (wake_read, wake_write) =
        std::os::unix::net::UnixStream::pair().map_err(|source| Error::Io {
            what: "cannot create a wake-up pipe in",
            path: state.root().to_path_buf(),
            source,
        })?;
    let _ = wake_read.set_nonblocking(true);
    let _ = wake_write.set_nonblocking(true);
    let control = Control {
        wake_fd: Some(wake_read.as_raw_fd()),
        ..Control::default()
    };
    for (sig, flag) in [
        (SIGTERM, &control.stop),
        (SIGINT, &control.stop),
        (SIGHUP, &control.reload),
    ] {
        let _ = signal_hook::flag::register(sig, Arc::clone(flag));
        if let Ok(w) = wake_write.try_clone() {
            let _ = signal_hook::low_level::pipe::register(sig, w);
        }
    }
    Ok((control, [wake_read, wake_write]))
}

/// Ctrl+C (and SIGTERM where the C runtime raises it) ask the loop to stop; it looks at least
/// every quarter of a second. No reload signal: restart the service to re-read the configuration.
#[cfg(not(unix))]
fn wire_signals(_state: &crate::storage::state::StateDir) -> Result<(Control, ()), Error> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let control = Control::default();
    for sig in [SIGTERM, SIGINT] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&control.stop));
    }
    Ok((control, ()))
}

/// `127.0.0.1:9464`, or `:9464` / `9464` for loopback. Another address is allowed (the person
/// asked for it) but logged, since metrics name the logins this machine keeps.
fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let full = if t.chars().all(|c| c.is_ascii_digit()) {
        format!("127.0.0.1:{t}")
    } else if let Some(port) = t.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else {
        t.to_string()
    };
    if let Ok(addr) = full.parse() {
        return Ok(addr);
    }
    // A host name (`localhost:9464`): resolved once, loopback first.
    use std::net::ToSocketAddrs;
    let bad = || format!("metrics address '{t}' is not HOST:PORT; write it like 127.0.0.1:9464");
    let found: Vec<SocketAddr> = full.to_socket_addrs().map_err(|_| bad())?.collect();
    found
        .iter()
        .find(|a| a.ip().is_loopback())
        .or_else(|| found.first())
        .copied()
        .ok_or_else(bad)
}

pub fn run(cli: &Cli, args: &DaemonArgs) -> Result<u8, Error> {
    let resolved = resolve(cli, args)?;
    if args.test_alert {
        return Ok(test_alert(&resolved));
    }
    let state = resolved.state;
    let state_for_exit = state.clone();
    let _instance = match state.lock_daemon() {
        Ok(file) => file,
        Err(Ok(pid)) => {
            let keeps = pid
                .and_then(|pid| state.read_running_daemon(pid))
                .map(|r| r.keeps());
            return Err(Error::DaemonRunning {
                pid,
                keeps,
                stop: crate::service::Platform::native().stop_command(),
                lock: state.daemon_lock_path(),
            });
        }
        Err(Err(source)) => {
            return Err(Error::Io {
                what: "cannot use the daemon's lock file",
                path: state.daemon_lock_path(),
                source,
            });
        }
    };

    note_running(&state, &resolved.logins);
    let (control, _wake) = wire_signals(&state)?;
    let state_for_copies = state.clone();

    let metrics = Metrics::new();
    let _server = match resolved.metrics {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                tracing::warn!("serving metrics on {addr}, which is not a loopback address");
            }
            let server = metrics::serve(addr, metrics.clone()).map_err(|source| Error::Io {
                what: "cannot serve metrics on",
                path: addr.to_string().into(),
                source,
            })?;
            tracing::info!("metrics on http://{}/metrics", server.local_addr());
            Some(server)
        }
        None => None,
    };

    let notifier = Notifier::from_env();
    let mut reload = || {
        resolve(cli, args).map(|r| {
            if r.metrics != resolved.metrics {
                tracing::warn!("a new metrics address takes effect at the next start");
            }
            note_running(&r.state, &r.logins);
            (r.options, r.alerter, r.logins, r.mirrors)
        })
    };
    #[cfg(feature = "fleet")]
    if let Some(fleet) = resolved.fleet.clone() {
        let mut daemon = crate::fleet::daemon::FleetDaemon::start(
            fleet,
            resolved.logins,
            state,
            resolved.alerter,
            metrics.clone(),
            resolved.options,
            super::fleet::waker(&_wake),
        )?;
        let mut copies = bind_copies(&daemon, resolved.mirrors, &metrics, &state_for_copies)?;
        let done = serve(&mut daemon, &mut copies, &control, &notifier, &mut reload);
        state_for_exit.remove_running_daemon();
        return done;
    }
    let paths: Vec<String> = resolved
        .logins
        .iter()
        .map(|l| l.file.path().display().to_string())
        .collect();
    tracing::info!(
        "daemon started (pid {}), keeping {} fresh",
        std::process::id(),
        paths.join(", ")
    );
    let kept = Kept::new(
        resolved.logins,
        state,
        resolved.alerter,
        metrics.clone(),
        resolved.options,
    );
    let mut daemon = Daemon::new(kept);
    let mut copies = bind_copies(&daemon, resolved.mirrors, &metrics, &state_for_copies)?;
    let done = serve(&mut daemon, &mut copies, &control, &notifier, &mut reload);
    state_for_exit.remove_running_daemon();
    done
}

/// The copies to keep, tied to the source's logins and looked at once: a copy that can never
/// be one is refused before anything is written.
fn bind_copies(
    source: &dyn Source,
    mirrors: Vec<MirrorSpec>,
    metrics: &Metrics,
    state: &crate::storage::state::StateDir,
) -> Result<Copies, Error> {
    let copies = Copies::bind(mirrors, &source.logins(), metrics.clone(), state.clone())?;
    Ok(copies)
}

/// Records which logins this daemon keeps, for a second `tokenkeeper daemon` to name (see
/// `RunningDaemon`); a failure only costs that message its list.
fn note_running(state: &crate::storage::state::StateDir, logins: &[Keeper]) {
    use crate::storage::state::{KeptLogin, RunningDaemon};
    let record = RunningDaemon {
        pid: std::process::id(),
        started_at: crate::login::now_ms(),
        logins: logins
            .iter()
            .map(|k| KeptLogin {
                provider: k.file.owner().provider.to_string(),
                credentials: k.file.path().to_path_buf(),
            })
            .collect(),
    };
    if let Err(e) = state.write_running_daemon(&record) {
        tracing::debug!(
            "could not record the kept logins in {}: {e}",
            state.root().display()
        );
    }
}

/// `--test-alert`: one `test` alert through each configured way, now; prints how each went.
/// 0 when all worked, 1 when one failed, 78 when none is configured.
fn test_alert(resolved: &Resolved) -> u8 {
    let provider = resolved
        .logins
        .first()
        .map_or("tokenkeeper", |l| l.file.owner().provider);
    let alert = Alert {
        event: Event::Test,
        provider: provider.to_string(),
        message: "a test alert from tokenkeeper: alerts reach you this way".into(),
        at: jiff::Timestamp::now(),
    };
    let results = resolved.alerter.deliver_now(&alert);
    if results.is_empty() {
        super::output::stdout(
            "no alert is configured: set --notify-command or --webhook (or [daemon] notify_command, webhook)\n",
        );
        return 78;
    }
    let mut failed = false;
    for (what, result) in results {
        let line = match result {
            Ok(()) => format!("{what}: sent\n"),
            Err(why) => {
                failed = true;
                format!("{what}: {why}\n")
            }
        };
        super::output::stdout(&line);
    }
    u8::from(failed)
}

/// Runs either daemon's loop until a signal stops it, telling systemd (when it asked) that the
/// daemon is ready, alive, reloading and stopping; SIGHUP re-reads the configuration.
type Reloaded = (Options, Alerter, Vec<Keeper>, Vec<MirrorSpec>);

fn serve(
    daemon: &mut dyn Source,
    copies: &mut Copies,
    control: &Control,
    notifier: &Notifier,
    reload: &mut dyn FnMut() -> Result<Reloaded, Error>,
) -> Result<u8, Error> {
    notifier.ready();
    let mut on_wake = || notifier.ping();
    let mut on_reload = |d: &mut dyn Source, copies: &mut Copies| {
        notifier.reloading();
        match reload() {
            Ok((options, alerter, logins, mirrors)) => {
                tracing::info!("configuration re-read");
                d.reconfigure(options, alerter, logins);
                if let Err(e) = copies.rebind(mirrors, &d.logins()) {
                    tracing::error!("copies not changed, keeping the old ones: {e}");
                }
            }
            Err(e) => tracing::error!("configuration not re-read, keeping the old one: {e}"),
        }
        notifier.ready();
    };
    crate::daemon::run(
        daemon,
        copies,
        control,
        notifier.ping_every(),
        &mut on_wake,
        &mut on_reload,
    );
    notifier.stopping();
    tracing::info!("daemon stopping");
    daemon.alerter().flush(Duration::from_secs(10));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_metrics_addr;

    #[test]
    fn metrics_addresses_read_like_people_write_them() {
        for (text, want) in [
            ("9464", "127.0.0.1:9464"),
            (":9464", "127.0.0.1:9464"),
            ("127.0.0.1:9464", "127.0.0.1:9464"),
            ("[::1]:9464", "[::1]:9464"),
        ] {
            assert_eq!(parse_metrics_addr(text).unwrap().to_string(), want);
        }
        let local = parse_metrics_addr("localhost:0").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 0, "{local}");
        for bad in ["", "nine", "localhost", "999999"] {
            assert!(parse_metrics_addr(bad).is_err(), "{bad}");
        }
    }
}
