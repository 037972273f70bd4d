//! `tokenkeeper doctor`: everything a person would otherwise check by hand, one line per check
//! with its fix. Reads only: never refreshes, never sends or spends a refresh token (the
//! endpoint probe carries a fixed dummy one), writes nothing, prints no token.

use super::{Cli, Context, Loaded, output, status};
use crate::Error;
use crate::oauth::endpoint::{self, Probe};
use crate::service::{self, Platform};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the endpoint probe and each program run (`claude --version`, `loginctl`) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Clock skew above which expiry times are off enough to say so, and to fail.
const SKEW_WARN_S: i64 = 60;
const SKEW_FAIL_S: i64 = 300;
/// The first Claude Code version that takes `.oauth_refresh.lock` before it refreshes.
const CLAUDE_LOCKING: (u64, u64, u64) = (2, 1, 218);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

pub struct Check {
    name: String,
    status: Status,
    detail: String,
    fix: Option<String>,
}

fn check(name: &str, status: Status, detail: String, fix: Option<String>) -> Check {
    Check {
        name: name.to_string(),
        status,
        detail,
        fix,
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Exit 0 when no check fails (warnings are shown, and do not fail), else 1.
pub fn run(cli: &Cli, json: bool) -> Result<u8, Error> {
    let mut checks = Vec::new();
    let loaded = Loaded::read(cli);
    let contexts = match &loaded {
        Ok(loaded) => {
            checks.push(config_check(loaded));
            checks.push(tls_check());
            let all = if cli.provider.is_some() || cli.credentials.is_some() {
                let name = cli.provider.as_deref().unwrap_or(crate::provider::DEFAULT);
                loaded
                    .context(cli, name, cli.credentials.as_deref(), None)
                    .map(|c| vec![c])
            } else {
                loaded.all(cli)
            };
            match all {
                Ok(all) => Some(all),
                // A login named on the command line that does not exist: a usage error.
                Err(e @ Error::Usage(_)) => return Err(e),
                Err(e) => {
                    checks.push(check(
                        "logins",
                        Status::Fail,
                        e.to_string(),
                        Some("fix the setting the message names".into()),
                    ));
                    None
                }
            }
        }
        Err(e) => {
            checks.push(check(
                "config",
                Status::Fail,
                e.to_string(),
                Some("fix the config file (see docs/configuration.md)".into()),
            ));
            checks.push(check(
                "logins",
                Status::Warn,
                "not checked: the config file decides which logins there are".into(),
                Some("fix the config file first".into()),
            ));
            None
        }
    };
    let contexts = contexts.unwrap_or_default();
    let now = crate::login::now_ms();
    for ctx in &contexts {
        checks.push(login_check(ctx, now));
    }
    checks.extend(env_checks(&contexts));
    checks.extend(endpoint_checks(&contexts));
    let state = loaded.as_ref().ok().map(|l| &l.state);
    checks.extend(service_checks(state));
    checks.push(claude_check());
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if json {
        let list: Vec<_> = checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "status": c.status.as_str(),
                    "detail": c.detail,
                    "fix": c.fix,
                })
            })
            .collect();
        output::stdout(&format!("{}\n", json!({ "checks": list })));
    } else {
        output::stdout(&human(&checks, cli.quiet));
    }
    Ok(u8::from(failed))
}

/// One line per check, its fix under it, then the counts; `quiet`: only the checks that are not
/// `ok`, no counts.
fn human(checks: &[Check], quiet: bool) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks.iter().filter(|c| !quiet || c.status != Status::Ok) {
        out += &format!(
            "{:<4}  {:<width$}  {}\n",
            c.status.as_str(),
            c.name,
            c.detail
        );
        if let (Some(fix), true) = (&c.fix, c.status != Status::Ok) {
            out += &format!("      {:<width$}  fix: {fix}\n", "");
        }
    }
    if quiet {
        return out;
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    out += &format!(
        "\n{} checks: {} ok, {} warn, {} fail\n",
        checks.len(),
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail)
    );
    out
}

fn config_check(loaded: &Loaded) -> Check {
    let path = &loaded.config_path;
    let detail = if path.is_file() {
        format!("{} (valid)", path.display())
    } else {
        format!("none, defaults (no {})", path.display())
    };
    check("config", Status::Ok, detail, None)
}

/// Which roots TLS connections trust: the platform's alone, or with the CA file in use.
fn tls_check() -> Check {
    let detail = match crate::tls::ca_file() {
        Some(ca) => format!(
            "CA file {} ({} certificate{}) trusted besides the platform's roots",
            ca.path().display(),
            ca.len(),
            if ca.len() == 1 { "" } else { "s" }
        ),
        None => "the platform's roots (no CA file; a proxy that inspects TLS needs TOKENKEEPER_CA_FILE or [tls] ca_file)".into(),
    };
    check("tls", Status::Ok, detail, None)
}

/// What `status` computes, as one check: fresh, due = ok; expired, nothing to keep = warn;
/// dead, missing, malformed, unreadable = fail with the command that logs in again.
fn login_check(ctx: &Context, now: i64) -> Check {
    let owner = ctx.file.owner();
    let report = status::inspect(ctx, now);
    let name = format!("login {}", owner.provider);
    let path = ctx.file.path().display();
    let problem = report.problem.clone();
    match report.state {
        "fresh" | "due" => check(
            &name,
            Status::Ok,
            format!("{} ({path})", report.state),
            None,
        ),
        "expired" => check(
            &name,
            Status::Warn,
            format!("the access token expired ({path}); the next refresh renews it"),
            Some(format!(
                "`tokenkeeper refresh --provider {}`, or keep the daemon running",
                owner.provider
            )),
        ),
        "not_kept" => check(
            &name,
            Status::Warn,
            problem.unwrap_or_else(|| format!("nothing to keep in {path}")),
            None,
        ),
        state => check(
            &name,
            Status::Fail,
            problem.unwrap_or_else(|| format!("{state} ({path})")),
            Some(if state == "missing" {
                format!("log in with {}", owner.relogin)
            } else {
                format!("log in again with {}", owner.relogin)
            }),
        ),
    }
}

/// A variable that makes a CLI ignore its stored login: named, never its value.
fn env_checks(contexts: &[Context]) -> Vec<Check> {
    let mut names: BTreeSet<(&'static str, &'static str)> = BTreeSet::new();
    let providers: Vec<_> = if contexts.is_empty() {
        crate::provider::all().collect()
    } else {
        contexts.iter().map(|c| c.provider.clone()).collect()
    };
    for p in &providers {
        for var in p.facts().overriding_env {
            if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
                names.insert((var, p.facts().owner.name));
            }
        }
    }
    if names.is_empty() {
        return vec![check(
            "environment",
            Status::Ok,
            "no variable overrides a stored login".into(),
            None,
        )];
    }
    names
        .into_iter()
        .map(|(var, cli)| {
            check(
                &format!("env {var}"),
                Status::Warn,
                format!("{var} is set: {cli} uses it instead of the login tokenkeeper keeps"),
                Some(format!(
                    "unset {var} (and remove it from the shell profile) unless that is meant"
                )),
            )
        })
        .collect()
}

/// One probe per token endpoint, then the clock against the first `Date` header answered.
fn endpoint_checks(contexts: &[Context]) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut seen = BTreeSet::new();
    let mut date = None;
    let mut reached = false;
    for ctx in contexts {
        let url = &ctx.settings.token_url;
        if !seen.insert(url.clone()) {
            continue;
        }
        let host = endpoint::host_of(url);
        let name = format!("endpoint {}", ctx.file.owner().provider);
        match ctx.endpoint.probe(
            &|dummy| ctx.provider.token_request(dummy, &ctx.settings),
            PROBE_TIMEOUT,
        ) {
            Ok(Probe { status, date: d }) => {
                reached = true;
                if date.is_none() {
                    date = d;
                }
                checks.push(probe_check(&name, &host, status));
            }
            Err(reason) => {
                let (detail, fix) = match reason.split_once("; ") {
                    Some((d, f)) => (d.to_string(), f.to_string()),
                    None => (
                        reason,
                        "check the network; if it needs a proxy, set HTTPS_PROXY".into(),
                    ),
                };
                checks.push(check(&name, Status::Fail, detail, Some(fix)));
            }
        }
    }
    if contexts.is_empty() {
        return checks;
    }
    checks.push(clock_check(
        date.as_deref(),
        reached,
        jiff::Timestamp::now(),
    ));
    checks
}

fn probe_check(name: &str, host: &str, status: u16) -> Check {
    match status {
        300..=399 => check(
            name,
            Status::Warn,
            format!("{host} answered with a redirect (HTTP {status}), which tokenkeeper never follows"),
            Some("if the endpoint moved, set `token_url`; else a proxy or captive portal is in the way".into()),
        ),
        500.. => check(
            name,
            Status::Warn,
            format!("{host} is reachable but answered HTTP {status} (a server-side failure)"),
            Some("try again later".into()),
        ),
        _ => check(
            name,
            Status::Ok,
            format!("{host} reachable (HTTP {status} to a dummy refresh token)"),
            None,
        ),
    }
}

fn clock_check(date: Option<&str>, reached: bool, now: jiff::Timestamp) -> Check {
    let skew = date.and_then(|d| endpoint::clock_skew_secs(d, now));
    let Some(skew) = skew else {
        let why = if reached {
            "the token endpoint sent no usable Date header"
        } else {
            "the token endpoint could not be reached"
        };
        return check("clock", Status::Warn, format!("not checked: {why}"), None);
    };
    let way = if skew > 0 { "ahead of" } else { "behind" };
    let detail = format!("{}s {way} the token endpoint's clock", skew.abs());
    let fix = Some("turn on time sync (e.g. `timedatectl set-ntp true`)".to_string());
    match skew.abs() {
        s if s > SKEW_FAIL_S => check("clock", Status::Fail, detail, fix),
        s if s > SKEW_WARN_S => check("clock", Status::Warn, detail, fix),
        _ => check("clock", Status::Ok, detail, None),
    }
}

fn service_checks(state: Option<&crate::storage::state::StateDir>) -> Vec<Check> {
    let mut checks = Vec::new();
    let platform = Platform::native();
    match platform.install_path(&env) {
        Ok(path) if path.exists() => {
            checks.push(check(
                "service",
                Status::Ok,
                format!("installed at {}", path.display()),
                None,
            ));
            if platform == Platform::Systemd {
                checks.push(enabled_check(&path));
            }
        }
        Ok(path) => checks.push(check(
            "service",
            Status::Warn,
            format!("not installed ({} is absent)", path.display()),
            Some(format!(
                "`tokenkeeper service install`, then `{}`",
                platform.enable_command(&path)
            )),
        )),
        Err(e) => checks.push(check("service", Status::Warn, e.to_string(), None)),
    }
    if platform == Platform::Systemd {
        checks.push(linger_check());
    }
    checks.push(match state.and_then(|s| Some((s, s.running_daemon()?))) {
        Some((state, pid)) => {
            let keeps = state
                .read_running_daemon(pid)
                .map(|r| format!(", keeping {}", r.keeps().join(", ")))
                .unwrap_or_default();
            check(
                "daemon",
                Status::Ok,
                format!("running (pid {pid}){keeps}"),
                None,
            )
        }
        None => check(
            "daemon",
            Status::Warn,
            "not running: nothing refreshes the logins ahead of time".into(),
            Some("start the service, or run `tokenkeeper daemon`".into()),
        ),
    });
    if platform != Platform::Systemd {
        checks.push(check(
            "service enabled",
            Status::Warn,
            "not checked on this platform".into(),
            None,
        ));
    }
    checks
}

fn enabled_check(unit: &Path) -> Check {
    match service::systemd_enablement(unit) {
        Some(link) => check(
            "service enabled",
            Status::Ok,
            format!("enabled ({})", link.display()),
            None,
        ),
        None => check(
            "service enabled",
            Status::Warn,
            "installed but not enabled: it does not start at login".into(),
            Some(format!(
                "`systemctl --user enable --now {}`",
                service::SYSTEMD_UNIT
            )),
        ),
    }
}

/// Whether systemd keeps `user`'s services running while they are logged out (`loginctl`'s
/// `Linger`); None when it cannot be asked.
pub(super) fn lingering(user: &str) -> Option<bool> {
    match run_program("loginctl", &["show-user", user, "--property=Linger"])
        .ok()?
        .trim()
    {
        "Linger=yes" => Some(true),
        "Linger=no" => Some(false),
        _ => None,
    }
}

/// Without lingering, systemd stops the user's services at logout.
fn linger_check() -> Check {
    let Some(user) = env("USER").filter(|u| !u.is_empty()) else {
        return check(
            "linger",
            Status::Warn,
            "not checked: USER is not set".into(),
            None,
        );
    };
    match lingering(&user) {
        Some(true) => check(
            "linger",
            Status::Ok,
            format!("on for {user}: the service runs while logged out"),
            None,
        ),
        Some(false) => check(
            "linger",
            Status::Warn,
            format!("off for {user}: systemd stops the service at logout"),
            Some(format!("`loginctl enable-linger {user}`")),
        ),
        None => check(
            "linger",
            Status::Warn,
            "not checked: `loginctl` is not available or gave no answer".into(),
            Some(format!(
                "if systemd runs the service, `loginctl enable-linger {user}`"
            )),
        ),
    }
}

/// Claude Code's version, and whether it takes the refresh lock tokenkeeper coordinates with.
fn claude_check() -> Check {
    let out = match run_program("claude", &["--version"]) {
        Ok(out) => out,
        Err(why) => {
            return check(
                "claude",
                Status::Warn,
                format!("Claude Code not checked: {why}"),
                Some("install Claude Code, or ignore this if it is not used here".into()),
            );
        }
    };
    match parse_version(&out) {
        Some(v) if v >= CLAUDE_LOCKING => check(
            "claude",
            Status::Ok,
            format!("Claude Code {}.{}.{} takes the refresh lock", v.0, v.1, v.2),
            None,
        ),
        Some(v) => check(
            "claude",
            Status::Warn,
            format!(
                "Claude Code {}.{}.{} does not take the refresh lock: tokenkeeper cannot coordinate with its refreshes",
                v.0, v.1, v.2
            ),
            Some("upgrade Claude Code (2.1.218 or later): `claude update`".into()),
        ),
        None => check(
            "claude",
            Status::Warn,
            format!(
                "cannot read a version from `claude --version` ({})",
                endpoint::printable(out.trim())
            ),
            None,
        ),
    }
}

/// The first `x.y.z` in a version line such as `2.1.218 (Claude Code)`.
fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == 'v')
        .find_map(|word| {
            let mut parts = word.split('.');
            let v = (
                parts.next()?.parse().ok()?,
                parts.next()?.parse().ok()?,
                parts.next()?.split('-').next()?.parse().ok()?,
            );
            Some(v)
        })
}

/// Runs `program` found on PATH, its stdout (at most a few kilobytes) if it exits with 0 within
/// [`PROGRAM_TIMEOUT`]; else why not.
fn run_program(program: &str, args: &[&str]) -> Result<String, String> {
    use std::io::Read;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("`{program}` is not on PATH"),
            _ => format!("`{program}` cannot be started ({})", e.kind()),
        })?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < PROGRAM_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{program}` gave no answer within {}s",
                    PROGRAM_TIMEOUT.as_secs()
                ));
            }
        }
    };
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = stdout.take(4096).read_to_string(&mut out);
    }
    if status.success() {
        Ok(out)
    } else {
        Err(format!("`{program}` failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_versions_are_read_and_compared() {
        assert_eq!(parse_version("2.1.218 (Claude Code)\n"), Some((2, 1, 218)));
        assert_eq!(parse_version("v1.0.3"), Some((1, 0, 3)));
        assert_eq!(parse_version("Claude Code"), None);
        assert!(parse_version("2.1.217 (Claude Code)").unwrap() < CLAUDE_LOCKING);
        assert!(parse_version("2.2.0 (Claude Code)").unwrap() >= CLAUDE_LOCKING);
    }

    #[test]
    fn clock_skew_warns_above_a_minute_and_fails_above_five() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let at = |s: i64| jiff::Timestamp::from_second(784_111_777 + s).unwrap();
        assert_eq!(clock_check(Some(date), true, at(3)).status, Status::Ok);
        assert_eq!(clock_check(Some(date), true, at(-90)).status, Status::Warn);
        let fail = clock_check(Some(date), true, at(400));
        assert_eq!(fail.status, Status::Fail);
        assert!(fail.detail.contains("400s ahead"), "{}", fail.detail);
        assert_eq!(clock_check(None, true, at(0)).status, Status::Warn);
    }
}
