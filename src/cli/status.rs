//! `tokenkeeper status`: the login's state, expiry, end and last refresh. Reads only: never
//! refreshes, never writes, takes no lock.

use super::Context;
use super::output::{self, rfc3339, when};
use serde_json::json;
use tokenkeeper::login::{Freshness, Login, now_ms};
use tokenkeeper::state::{Record, StateDir};
use tokenkeeper::{Error, claude};

/// What status found for one login.
struct Report {
    state: &'static str,
    login: Option<Login>,
    problem: Option<String>,
    record: Option<Record>,
    recovery: Option<std::path::PathBuf>,
    /// (pid, next refresh) when a daemon keeps this login.
    daemon: Option<(u32, Option<i64>)>,
}

pub fn run(ctx: &Context, json: bool) -> u8 {
    let now = now_ms();
    let report = inspect(ctx, now);
    let code = match report.state {
        "dead" => 77,
        "missing" | "malformed" => 78,
        _ => 0,
    };
    if json {
        output::stdout(&format!("{}\n", to_json(ctx, &report, now)));
    } else {
        output::stdout(&human(ctx, &report, now));
    }
    code
}

fn inspect(ctx: &Context, now: i64) -> Report {
    let key = StateDir::key(ctx.file.owner().provider, ctx.file.path());
    let record = ctx.state.read_record(&key);
    let recovery = ctx.state.recovery_file(&key);
    let daemon = ctx.state.running_daemon().map(|pid| {
        let next = ctx.state.read_daemon(&key).and_then(|d| d.next_refresh_at);
        (pid, next)
    });
    let parsed = ctx.file.read().and_then(|snap| {
        let login = claude::parse(&ctx.file, &snap.doc)?;
        if let Some(mode) = snap.loose_mode {
            tokenkeeper::refresh::warn_loose_mode(&ctx.file, mode);
        }
        Ok(login)
    });
    let (state, login, problem) = match parsed {
        Ok(login) => {
            let rejected = record.as_ref().and_then(|r| r.rejected_refresh.as_deref());
            let state = if !login.refresh_token.is_empty()
                && rejected == Some(login.refresh_token.fingerprint().as_str())
            {
                "dead"
            } else {
                login.freshness(now, ctx.settings.min_ttl).as_str()
            };
            let problem = (state == Freshness::Dead.as_str() && login.refresh_token.is_empty())
                .then(|| "its tokens are empty (the login was ended or wiped); log in again with `claude /login`".to_string());
            (state, Some(login), problem)
        }
        Err(e @ Error::Missing { .. }) => ("missing", None, Some(e.to_string())),
        // Unreadable counts as malformed: either way the file cannot be used as it is.
        Err(e) => ("malformed", None, Some(e.to_string())),
    };
    Report {
        state,
        login,
        problem,
        record,
        recovery,
        daemon,
    }
}

fn to_json(ctx: &Context, r: &Report, now: i64) -> serde_json::Value {
    let login = r.login.as_ref();
    let last_error = r
        .record
        .as_ref()
        .and_then(|rec| rec.error.clone())
        .or_else(|| r.problem.clone());
    json!({
        "logins": [{
            "provider": ctx.file.owner().provider,
            "credentials": ctx.file.path(),
            "state": r.state,
            "access_expires_at": login.and_then(|l| rfc3339(l.expires_at)),
            "access_expires_in_s": login.map(|l| l.remaining_ms(now) / 1000),
            "login_expires_at": login.and_then(|l| l.login_expires_at).and_then(rfc3339),
            "last_refresh_at": r.record.as_ref().and_then(|rec| rfc3339(rec.last_refresh_at)),
            "last_outcome": r.record.as_ref().map(|rec| rec.outcome.clone()),
            "last_error": last_error,
            "recovery_file": r.recovery,
            "daemon_pid": r.daemon.map(|(pid, _)| pid),
            "next_refresh_at": r.daemon.and_then(|(_, next)| next).and_then(rfc3339),
        }]
    })
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
    out += &format!("  credentials   {}\n", ctx.file.path().display());
    if let Some(end) = r.login.as_ref().and_then(|l| l.login_expires_at) {
        out += &format!("  login ends    {}\n", when(end, now));
    }
    match &r.record {
        Some(rec) => {
            out += &format!(
                "  last refresh  {}, {}\n",
                when(rec.last_refresh_at, now),
                rec.outcome.replace('_', " ")
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
