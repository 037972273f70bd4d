//! `tokenkeeper status`: each login's state, expiry, end and last refresh; one login as a block,
//! several as one table. Reads only: never refreshes, never writes, takes no lock.

use super::Context;
use super::output::{self, rfc3339, when};
use crate::Error;
use crate::login::{Freshness, Login, now_ms};
use crate::storage::state::{Record, StateDir};
use serde_json::json;

/// What status found for one login (`doctor` reads `state` and `problem`).
pub(super) struct Report {
    pub(super) state: &'static str,
    login: Option<Login>,
    pub(super) problem: Option<String>,
    record: Option<Record>,
    recovery: Option<std::path::PathBuf>,
    /// (pid, next refresh) when a daemon keeps this login.
    daemon: Option<(u32, Option<i64>)>,
    /// The fleet's store, when this machine is part of one.
    store: Option<super::fleet::StoreReport>,
}

/// Exit 77 when a login is dead, else 78 when one is missing or malformed (or the only login
/// shown holds nothing to keep), else 0.
pub fn run(all: &[Context], json: bool) -> u8 {
    let now = now_ms();
    let reports: Vec<Report> = all.iter().map(|ctx| inspect(ctx, now)).collect();
    let states = || reports.iter().map(|r| r.state);
    let code = if states().any(|s| s == "dead") {
        77
    } else if states().any(|s| matches!(s, "missing" | "malformed" | "unreadable"))
        || states().all(|s| s == "not_kept")
    {
        78
    } else {
        0
    };
    if json {
        let logins: Vec<_> = all
            .iter()
            .zip(&reports)
            .map(|(ctx, r)| to_json(ctx, r, now))
            .collect();
        let config = all
            .first()
            .filter(|ctx| ctx.config_path.is_file())
            .map(|ctx| ctx.config_path.display().to_string());
        let mut value = json!({ "logins": logins, "config": config });
        let copies = copies(all);
        if !copies.is_empty() {
            value["copies"] = copies.iter().map(Copy::to_json).collect();
        }
        output::stdout(&format!("{value}\n"));
    } else {
        let mut text = match (all, &reports[..]) {
            ([ctx], [report]) => human(ctx, report, now),
            _ => table(all, &reports, now),
        };
        text += &copies_lines(&copies(all), now);
        output::stdout(&text);
    }
    code
}

/// An access-only copy the daemon keeps (`[[mirror]]`, `--mirror`), as `status` shows it.
struct Copy {
    login: String,
    path: std::path::PathBuf,
    /// When the access token the copy holds expires, or why it cannot be read.
    expires_at: Result<i64, String>,
    /// Why the daemon cannot write it, as it last said.
    problem: Option<String>,
}

impl Copy {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "login": self.login,
            "path": self.path,
            "access_token_expires_at": self.expires_at.as_ref().ok().and_then(|ms| rfc3339(*ms)),
            "unreadable": self.expires_at.as_ref().err(),
            "problem": self.problem,
        })
    }
}

/// The copies the daemon last said it keeps, each with the expiry it holds now (read from the
/// copy itself, as its consumer reads it).
fn copies(all: &[Context]) -> Vec<Copy> {
    let Some(record) = all.first().and_then(|c| c.state.read_copies()) else {
        return Vec::new();
    };
    record
        .copies
        .into_iter()
        .map(|c| {
            let ctx = all.iter().find(|x| x.file.owner().provider == c.login);
            let expires_at = match ctx {
                None => Err(format!("the login {} is not shown here", c.login)),
                Some(ctx) => {
                    let file = crate::storage::credentials_file::CredentialsFile::new(
                        &c.path,
                        ctx.file.owner(),
                    )
                    .with_keys(ctx.provider.doc_keys());
                    file.read()
                        .and_then(|snap| ctx.provider.parse(&file, &snap.doc))
                        .map(|login| login.expires_at)
                        .map_err(|e| e.to_string())
                }
            };
            Copy {
                login: c.login,
                path: c.path,
                expires_at,
                problem: c.problem,
            }
        })
        .collect()
}

fn copies_lines(copies: &[Copy], now: i64) -> String {
    if copies.is_empty() {
        return String::new();
    }
    let mut out = "copies (access token only, written by the daemon):\n".to_string();
    for c in copies {
        let held = match &c.expires_at {
            Ok(at) if *at > now => format!("access token expires {}", when(*at, now)),
            Ok(at) => format!("access token expired {}", when(*at, now)),
            Err(why) => format!("unreadable: {why}"),
        };
        out += &format!("  {}  {}  {held}\n", c.login, c.path.display());
        if let Some(problem) = &c.problem {
            out += &format!("    cannot be written: {problem}\n");
        }
    }
    out
}

pub(super) fn inspect(ctx: &Context, now: i64) -> Report {
    let key = StateDir::key(ctx.file.owner().provider, ctx.file.path());
    let record = ctx.state.read_record(&key);
    let relogin = ctx.file.owner().relogin;
    let recovery = ctx.state.recovery_file(&key);
    let daemon = ctx.state.running_daemon().map(|pid| {
        let next = ctx.state.read_daemon(&key).and_then(|d| d.next_refresh_at);
        (pid, next)
    });
    let parsed = crate::refresh::read_snapshot(ctx.provider.as_ref(), &ctx.file).and_then(|snap| {
        let login = ctx.provider.parse(&ctx.file, &snap.doc)?;
        if let Some(mode) = snap.loose_mode {
            crate::refresh::warn_loose_mode(&ctx.file, mode);
        }
        Ok(login)
    });
    let store = ctx.inspect_store();
    let (state, login, problem) = match (&store, parsed) {
        (Some(store), parsed) => super::fleet::state(ctx, store, parsed, now),
        (None, Ok(login)) => {
            let rejected = record.as_ref().and_then(|r| r.rejected_refresh.as_deref());
            let state = if !login.refresh_token.is_empty()
                && (rejected == Some(login.refresh_token.fingerprint().as_str())
                    || crate::refresh::is_lost(&ctx.state, &key, &login))
            {
                "dead"
            } else {
                login.freshness(now, ctx.settings.min_ttl).as_str()
            };
            let lost = crate::refresh::is_lost(&ctx.state, &key, &login);
            let problem = if state == Freshness::Dead.as_str() && login.refresh_token.is_empty() {
                Some(format!(
                    "its tokens are empty (the login was ended or wiped); log in again with {relogin}"
                ))
            } else if lost {
                Some(format!(
                    "its refresh token was spent but the new tokens could not be saved anywhere (the login is lost); log in again with {relogin}"
                ))
            } else {
                None
            };
            (state, Some(login), problem)
        }
        (None, Err(e @ Error::Missing { .. })) => ("missing", None, Some(e.to_string())),
        // Unreadable counts as malformed: either way the file cannot be used as it is.
        // Nothing tokenkeeper can keep (an API key): shown, not counted as a failure.
        (None, Err(e @ Error::NothingToKeep { .. })) => ("not_kept", None, Some(e.to_string())),
        // There, but not ours to read right now: permissions, a locked Keychain.
        (None, Err(e @ (Error::Inaccessible { .. } | Error::Keychain { .. }))) => {
            ("unreadable", None, Some(e.to_string()))
        }
        (None, Err(e)) => ("malformed", None, Some(e.to_string())),
    };
    Report {
        state,
        login,
        problem,
        record,
        recovery,
        daemon,
        store,
    }
}

fn to_json(ctx: &Context, r: &Report, now: i64) -> serde_json::Value {
    let login = r.login.as_ref();
    let last_error = r
        .record
        .as_ref()
        .and_then(|rec| rec.error.clone())
        .or_else(|| r.problem.clone());
    let mut value = json!({
            "provider": ctx.file.owner().provider,
            "credentials": ctx.file.path(),
            "state": r.state,
            "access_expires_at": login.and_then(|l| rfc3339(l.expires_at)),
            "access_expires_in_s": login.map(|l| l.remaining_ms(now) / 1000),
            "login_expires_at": login.and_then(|l| l.login_expires_at).and_then(rfc3339),
            "last_refresh_at": r.record.as_ref().and_then(|rec| rfc3339(rec.last_refresh_at)),
            "last_outcome": r.record.as_ref().map(|rec| rec.outcome.as_str()),
            "last_error": last_error,
            "recovery_file": r.recovery,
            "daemon_pid": r.daemon.map(|(pid, _)| pid),
            "next_refresh_at": r.daemon.and_then(|(_, next)| next).and_then(rfc3339),
    });
    if let (Some(store), Some(obj)) = (&r.store, value.as_object_mut()) {
        obj.insert("store".into(), super::fleet::store_json(store));
    }
    value
}

/// The config file status read, or that there was none (then every setting is a default).
fn config_read(ctx: &Context) -> String {
    if ctx.config_path.is_file() {
        ctx.config_path.display().to_string()
    } else {
        format!(
            "none, defaults ({} does not exist)",
            ctx.config_path.display()
        )
    }
}

fn human(ctx: &Context, r: &Report, now: i64) -> String {
    let mut out = String::new();
    let provider = ctx.file.owner().provider;
    match &r.login {
        Some(login) if !login.access_token.is_empty() || login.expires_at > 0 => {
            let verb = if login.expires_at > now {
                "expires"
            } else {
                "expired"
            };
            out += &format!(
                "{provider}: {}, access token {verb} {}\n",
                r.state,
                when(login.expires_at, now)
            );
        }
        _ => out += &format!("{provider}: {}\n", r.state),
    }
    if let Some(problem) = &r.problem {
        out += &format!("  problem       {problem}\n");
    }
    out += &format!("  credentials   {}\n", ctx.file.describe());
    out += &format!("  config        {}\n", config_read(ctx));
    if r.state == "expired" {
        out += "  renewal       the next `tokenkeeper refresh` or `tokenkeeper exec` renews it (its refresh token is still there)\n";
    }
    if let Some(store) = &r.store {
        out += &super::fleet::store_lines(store, now);
    }
    if let Some(end) = r.login.as_ref().and_then(|l| l.login_expires_at) {
        out += &format!("  login ends    {}\n", when(end, now));
    }
    match &r.record {
        Some(rec) => {
            out += &format!(
                "  last refresh  {}, {}\n",
                when(rec.last_refresh_at, now),
                rec.outcome.as_str().replace('_', " ")
            );
            if let Some(e) = &rec.error {
                out += &format!("  last error    {e}\n");
            }
        }
        None => out += "  last refresh  none by tokenkeeper\n",
    }
    match r.daemon {
        Some((pid, Some(next))) => {
            out += &format!(
                "  next refresh  {} by the daemon (pid {pid})\n",
                when(next, now)
            );
        }
        Some((pid, None)) => out += &format!("  daemon        pid {pid}, no refresh planned\n"),
        None => out += "  daemon        not running\n",
    }
    if let Some(path) = &r.recovery {
        out += &format!(
            "  recovery      new tokens wait in {}; `tokenkeeper refresh` writes them back\n",
            path.display()
        );
    }
    out
}

/// Several logins: one row each, then what needs saying about any of them.
fn table(all: &[Context], reports: &[Report], now: i64) -> String {
    let mut rows = vec![[
        "LOGIN".to_string(),
        "STATE".to_string(),
        "ACCESS TOKEN".to_string(),
        "LAST REFRESH".to_string(),
        "NEXT REFRESH".to_string(),
    ]];
    for (ctx, r) in all.iter().zip(reports) {
        let access = match &r.login {
            Some(l) if !l.access_token.is_empty() || l.expires_at > 0 => {
                let rel = crate::duration::relative(l.expires_at.saturating_sub(now));
                if l.expires_at > now {
                    format!("expires {rel}")
                } else {
                    format!("expired {rel}")
                }
            }
            _ => "-".to_string(),
        };
        let last = r.record.as_ref().map_or("none".to_string(), |rec| {
            format!(
                "{}, {}",
                crate::login::format_time(rec.last_refresh_at),
                rec.outcome.as_str().replace('_', " ")
            )
        });
        let next = match r.daemon {
            Some((pid, Some(next))) => format!(
                "{} (daemon {pid})",
                crate::duration::relative(next.saturating_sub(now))
            ),
            Some((pid, None)) => format!("none planned (daemon {pid})"),
            None => "no daemon".to_string(),
        };
        rows.push([
            ctx.file.owner().provider.to_string(),
            r.state.to_string(),
            access,
            last,
            next,
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 < row.len() {
                line += &format!("{cell:<w$}  ", w = widths[c]);
            } else {
                line += cell;
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out.push('\n');
    if let Some(ctx) = all.first() {
        out += &format!("config: {}\n", config_read(ctx));
    }
    for (ctx, r) in all.iter().zip(reports) {
        let name = ctx.file.owner().provider;
        out += &format!("{name}: {}\n", ctx.file.path().display());
        if r.state == "expired" {
            out += "  renewal   the next `tokenkeeper refresh` or `exec` renews it\n";
        }
        if let Some(problem) = &r.problem {
            out += &format!("  problem   {problem}\n");
        }
        if let Some(e) = r.record.as_ref().and_then(|rec| rec.error.as_ref()) {
            out += &format!("  last error  {e}\n");
        }
        if let Some(path) = &r.recovery {
            out += &format!(
                "  recovery  new tokens wait in {}; `tokenkeeper refresh --provider {name}` writes them back\n",
                path.display()
            );
        }
    }
    out
}
