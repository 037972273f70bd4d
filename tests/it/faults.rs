//! The fault matrix (issue 5): every failure the loopback stand-in can inject into the token
//! endpoint, driven against the three consumers of a refresh, `tokenkeeper refresh`,
//! `tokenkeeper exec` and `tokenkeeper daemon`. For each fault the table says how it reaches
//! tokenkeeper, how it must be classified (transient: exit 69 once the retries are spent;
//! permanent: the login is dead, exit 77), the words the one-line message must hold, and how many
//! token requests a short retry budget allows. A few rows are answers that grant tokens whose
//! lifetime cannot be used as it stands (`expires_in` 0 or 1e30): saved after one request, the
//! absurd one capped, the daemon asking again only after a minimum wait. Every row runs in its
//! own sandbox (Claude Code's login, or Codex CLI's where the row says so), all rows at once;
//! each test collects every mismatch and fails once with the full report.
//!
//! `docs/faults.md` ("Fault matrix") holds the same table (as printed by
//! `fault_matrix_covers_every_fault_kind`, run with `--nocapture`): keep the two in sync by hand
//! whenever a row changes.
//!
//! Retry arithmetic (`backoff::RetryPolicy`: first wait 1 s, doubling, each wait between half and
//! all of its backoff, no attempt or wait ending past `retry_total`):
//! - `refresh`/`exec`, `retry_total = "3s"`: quick failures wait [0.5, 1) s then [1, 2) s, so a
//!   third attempt starts before 3 s unless both waits are near their maximum: 2 or 3 requests.
//!   `Retry-After: 1` makes the first wait exactly 1 s: still 2 or 3. A hang costs the full 1 s
//!   timeout per attempt: the second attempt ends at 2.5 s or later, leaving no room for a third:
//!   exactly 2.
//! - the daemon, `retry_total = "2s"`: quick failures, 2 (3 when both waits are short); with
//!   `Retry-After: 1` the second attempt starts at 1 s and its wait of at least 1 s reaches 2 s:
//!   exactly 2; a hang, 2 (1 when the first wait plus the 1 s timeout reaches 2 s).
//!   After the failed refresh the daemon cools down 30 s (`schedule::backoff`, first failure).

use crate::util::*;
use serde_json::Value;
use std::borrow::Cow;
use std::fs;
use std::ops::RangeInclusive;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};
use tokenkeeper_standin::Fault;

const UNAVAILABLE: i32 = 69;
const DEAD: i32 = 77;
/// The token request timeout every row runs with.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Longer than the request timeout: the client gives up first.
const HANG: Duration = Duration::from_secs(2);
const CLI_CONFIG: &str = "[claude]\nretry_total = \"3s\"\nrequest_timeout = \"1s\"\n";
const DAEMON_CONFIG: &str = "[claude]\nretry_total = \"2s\"\nrequest_timeout = \"1s\"\n";
/// The daemon's first cooldown after a failed refresh (`schedule::BACKOFF_MIN`).
const DAEMON_COOLDOWN_MS: i64 = 30_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Worth retrying; exit 69 once the retry budget is spent, the login left as it was.
    Transient,
    /// The refresh token was refused: exit 77 after one request, the login left as it was.
    Permanent,
    /// New tokens came, with a lifetime that cannot be used as it stands: the refresh token was
    /// spent, so they are saved (exit 0 after one request), with the expiry `lifetime_secs`
    /// after the request (an absurd one capped); the daemon then waits `daemon_wait_secs` at
    /// least before it asks again.
    Granted {
        lifetime_secs: i64,
        daemon_wait_secs: i64,
    },
}

struct Row {
    /// The fault as written in the test and in `docs/faults.md`.
    name: &'static str,
    fault: Fault,
    /// Whose login the row keeps: `claude` (the stand-in's default) or `codex` (OpenAI's).
    provider: &'static str,
    /// What tokenkeeper sees on the wire.
    reaches: &'static str,
    class: Class,
    /// Words the one-line message must hold (besides the credentials path).
    words: &'static [&'static str],
    /// Token requests `refresh` and `exec` make with `retry_total = "3s"`.
    cli_requests: RangeInclusive<u64>,
    /// Token requests the daemon makes with `retry_total = "2s"` before it cools down.
    daemon_requests: RangeInclusive<u64>,
}

// Keep in sync by hand with the table in docs/faults.md ("# Fault matrix").
const ROWS: [Row; 18] = [
    Row {
        provider: "claude",
        name: "Status(500)",
        fault: Fault::Status(500),
        reaches: "HTTP 500 with a JSON `api_error`",
        class: Class::Transient,
        words: &["HTTP 500", "api_error"],
        cli_requests: 2..=3,
        daemon_requests: 2..=3,
    },
    Row {
        provider: "claude",
        name: "Status(502)",
        fault: Fault::Status(502),
        reaches: "HTTP 502 with nginx's HTML page",
        class: Class::Transient,
        words: &["HTTP 502", "HTML page"],
        cli_requests: 2..=3,
        daemon_requests: 2..=3,
    },
    Row {
        provider: "claude",
        name: "Status(503)",
        fault: Fault::Status(503),
        reaches: "HTTP 503 with a plain-text body",
        class: Class::Transient,
        words: &["HTTP 503"],
        cli_requests: 2..=3,
        daemon_requests: 2..=3,
    },
    Row {
        provider: "claude",
        name: "RateLimited { retry_after_secs: Some(1) }",
        fault: Fault::RateLimited {
            retry_after_secs: Some(1),
        },
        reaches: "HTTP 429 `rate_limit_error`, `Retry-After: 1`",
        class: Class::Transient,
        words: &["HTTP 429", "rate_limit_error"],
        cli_requests: 2..=3,
        daemon_requests: 2..=2,
    },
    Row {
        provider: "claude",
        name: "RateLimited { retry_after_secs: None }",
        fault: Fault::RateLimited {
            retry_after_secs: None,
        },
        reaches: "HTTP 429 `rate_limit_error`, no `Retry-After`",
        class: Class::Transient,
        words: &["HTTP 429", "rate_limit_error"],
        cli_requests: 2..=3,
        daemon_requests: 2..=3,
    },
    Row {
        provider: "claude",
        name: "Hang(2s)",
        fault: Fault::Hang(HANG),
        reaches: "request read, no answer for 2 s (timeout 1 s), then closed",
        class: Class::Transient,
        words: &["no answer before the timeout"],
        cli_requests: 2..=2,
        daemon_requests: 1..=2,
    },
    Row {
        provider: "claude",
        name: "Reset",
        fault: Fault::Reset,
        reaches: "request read, then a TCP reset",
        class: Class::Transient,
        words: &["network error", "connection reset"],
        cli_requests: 2..=3,
        daemon_requests: 2..=3,
    },
    Row {
        provider: "claude",
        name: "Close",
        fault: Fault::Close,
        reaches: "request read, then closed without a reply",
        class: Class::Transient,
        words: &["network error", "unexpected end of file"],
        cli_requests: 2..=3,
        daemon_requests: 2..=3,
    },
    Row {
        provider: "claude",
        name: "Html",
        fault: Fault::Html,
        reaches: "HTTP 200 with a captive portal's HTML page",
        class: Class::Transient,
        words: &["HTTP 200", "HTML page"],
        cli_requests: 2..=3,
        daemon_requests: 2..=3,
    },
    Row {
        provider: "claude",
        name: "InvalidRequest",
        fault: Fault::InvalidRequest,
        reaches: "HTTP 400 `invalid_request_error` (sent transiently by the real endpoint)",
        class: Class::Transient,
        words: &["HTTP 400", "invalid_request_error"],
        cli_requests: 2..=3,
        daemon_requests: 2..=3,
    },
    Row {
        provider: "claude",
        name: "Redirect(\"https://elsewhere.invalid/v1/oauth/token\")",
        fault: Fault::Redirect(Cow::Borrowed("https://elsewhere.invalid/v1/oauth/token")),
        reaches: "HTTP 302 to another host's token endpoint",
        class: Class::Transient,
        words: &[
            "HTTP 302",
            "https://elsewhere.invalid/v1/oauth/token",
            "not followed",
        ],
        cli_requests: 2..=3,
        daemon_requests: 2..=3,
    },
    Row {
        provider: "codex",
        name: "HtmlStatus(401), Codex CLI",
        fault: Fault::HtmlStatus(401),
        reaches: "HTTP 401 with a proxy's HTML page, to Codex CLI's login (only an OAuth error body proves it dead)",
        class: Class::Transient,
        words: &["HTTP 401", "HTML page"],
        cli_requests: 2..=3,
        daemon_requests: 2..=3,
    },
    Row {
        provider: "claude",
        name: "ExpiresIn(\"0\")",
        fault: Fault::ExpiresIn(Cow::Borrowed("0")),
        reaches: "HTTP 200 with new tokens and `expires_in: 0`",
        class: Class::Granted {
            lifetime_secs: 0,
            daemon_wait_secs: 60,
        },
        words: &[],
        cli_requests: 1..=1,
        daemon_requests: 1..=1,
    },
    Row {
        provider: "claude",
        name: "ExpiresIn(\"1e30\")",
        fault: Fault::ExpiresIn(Cow::Borrowed("1e30")),
        reaches: "HTTP 200 with new tokens and `expires_in: 1e30`",
        class: Class::Granted {
            lifetime_secs: 86_400,
            daemon_wait_secs: 22 * 3600,
        },
        words: &["longer than any real one"],
        cli_requests: 1..=1,
        daemon_requests: 1..=1,
    },
    Row {
        provider: "claude",
        name: "InvalidGrant",
        fault: Fault::InvalidGrant,
        reaches: "HTTP 400 `invalid_grant`: refresh token not found or invalid",
        class: Class::Permanent,
        words: &["invalid_grant", "Refresh token not found or invalid"],
        cli_requests: 1..=1,
        daemon_requests: 1..=1,
    },
    Row {
        provider: "claude",
        name: "InvalidGrantExpired",
        fault: Fault::InvalidGrantExpired,
        reaches: "HTTP 400 `invalid_grant`: refresh token expired",
        class: Class::Permanent,
        words: &["invalid_grant", "Refresh token expired"],
        cli_requests: 1..=1,
        daemon_requests: 1..=1,
    },
    Row {
        provider: "claude",
        name: "InvalidClient",
        fault: Fault::InvalidClient,
        reaches: "HTTP 401 `invalid_client`",
        class: Class::Permanent,
        words: &["invalid_client"],
        cli_requests: 1..=1,
        daemon_requests: 1..=1,
    },
    Row {
        provider: "claude",
        name: "UnauthorizedClient",
        fault: Fault::UnauthorizedClient,
        reaches: "HTTP 400 `unauthorized_client`",
        class: Class::Permanent,
        words: &["unauthorized_client"],
        cli_requests: 1..=1,
        daemon_requests: 1..=1,
    },
];

/// The fault's kind; exhaustive on purpose, so that a new kind in the stand-in fails to compile
/// here until it has a row (or is named as not a failure).
fn kind(fault: &Fault) -> Option<&'static str> {
    Some(match fault {
        Fault::Status(_) => "Status",
        Fault::RateLimited { .. } => "RateLimited",
        Fault::Hang(_) => "Hang",
        Fault::Reset => "Reset",
        Fault::Close => "Close",
        Fault::Html => "Html",
        Fault::InvalidGrant => "InvalidGrant",
        Fault::InvalidGrantExpired => "InvalidGrantExpired",
        Fault::InvalidClient => "InvalidClient",
        Fault::UnauthorizedClient => "UnauthorizedClient",
        Fault::InvalidRequest => "InvalidRequest",
        Fault::Redirect(_) => "Redirect",
        Fault::HtmlStatus(_) => "HtmlStatus",
        Fault::ExpiresIn(_) => "ExpiresIn",
        // A slow success, not a failure.
        Fault::Delay(_) => return None,
    })
}

const KINDS: [&str; 14] = [
    "Redirect",
    "HtmlStatus",
    "ExpiresIn",
    "Status",
    "RateLimited",
    "Hang",
    "Reset",
    "Close",
    "Html",
    "InvalidGrant",
    "InvalidGrantExpired",
    "InvalidClient",
    "UnauthorizedClient",
    "InvalidRequest",
];

fn human_secs(secs: i64) -> String {
    match secs {
        0 => "at once".into(),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn span(r: &RangeInclusive<u64>) -> String {
    let n = if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{}–{}", r.start(), r.end())
    };
    let s = if *r.end() == 1 { "" } else { "s" };
    format!("{n} request{s}")
}

/// The table as it stands in `docs/faults.md`.
fn markdown_table() -> String {
    let mut out = String::from(
        "| fault | how it reaches tokenkeeper | classified as | refresh/exec exit | daemon |\n\
         |---|---|---|---|---|\n",
    );
    for row in &ROWS {
        let words = row
            .words
            .iter()
            .map(|w| format!("“{w}”"))
            .collect::<Vec<_>>()
            .join(", ");
        let (class, exit, daemon) = match row.class {
            Class::Transient => (
                format!("transient: {words}"),
                format!("{UNAVAILABLE} after {}", span(&row.cli_requests)),
                format!(
                    "logs the failure after {}, cools down 30 s, keeps running",
                    span(&row.daemon_requests)
                ),
            ),
            Class::Permanent => (
                format!("permanent (login dead): {words}"),
                format!("{DEAD} after {}", span(&row.cli_requests)),
                format!(
                    "logs the login dead once after {}, asks no more, keeps running",
                    span(&row.daemon_requests)
                ),
            ),
            Class::Granted {
                lifetime_secs,
                daemon_wait_secs,
            } => (
                format!(
                    "granted: saved, expiring {} after the request{}",
                    human_secs(lifetime_secs),
                    if words.is_empty() {
                        String::new()
                    } else {
                        format!(", with a warning: {words}")
                    }
                ),
                format!("0 after {}", span(&row.cli_requests)),
                format!(
                    "saves it after {}, next request no sooner than {} later",
                    span(&row.daemon_requests),
                    human_secs(daemon_wait_secs)
                ),
            ),
        };
        out.push_str(&format!(
            "| `{}` | {} | {class} | {exit} | {daemon} |\n",
            row.name, row.reaches
        ));
    }
    out
}

#[test]
fn fault_matrix_covers_every_fault_kind() {
    let mut covered: Vec<&str> = ROWS.iter().filter_map(|r| kind(&r.fault)).collect();
    covered.sort_unstable();
    covered.dedup();
    let mut all = KINDS.to_vec();
    all.sort_unstable();
    assert_eq!(covered, all, "every failure kind of the stand-in has a row");
    for fault in [
        Fault::Status(503),
        Fault::Status(502),
        Fault::Status(500),
        Fault::RateLimited {
            retry_after_secs: Some(1),
        },
        Fault::RateLimited {
            retry_after_secs: None,
        },
        Fault::Hang(HANG),
    ] {
        assert!(
            ROWS.iter().any(|r| r.fault == fault),
            "{fault:?} has no row"
        );
    }
    assert!(HANG > REQUEST_TIMEOUT, "the hang must outlast the timeout");
    println!("{}", markdown_table());
}

// ---------------------------------------------------------------------------------------------
// Running rows.

/// Runs `check` for every row at once, each in its own sandbox, prints each row's time, token
/// requests and message, and fails once with every mismatch.
fn for_each_row(consumer: &str, check: fn(&Row) -> Problems) {
    let started = Instant::now();
    let results: Vec<(&Row, Duration, Problems)> = thread::scope(|scope| {
        let handles: Vec<_> = ROWS
            .iter()
            .map(|row| {
                let handle = scope.spawn(move || {
                    let t = Instant::now();
                    let problems = check(row);
                    (t.elapsed(), problems)
                });
                (row, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(row, handle)| match handle.join() {
                Ok((took, problems)) => (row, took, problems),
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into());
                    let mut p = Problems::default();
                    p.found.push(format!("panicked: {why}"));
                    (row, Duration::ZERO, p)
                }
            })
            .collect()
    });
    let mut report = String::new();
    for (row, took, problems) in &results {
        println!(
            "{consumer}: {:<42} {:>5.2} s  {}",
            row.name,
            took.as_secs_f64(),
            problems.note
        );
        for found in &problems.found {
            report.push_str(&format!("\n- {consumer} × {}: {found}", row.name));
        }
    }
    println!(
        "{consumer}: {} rows in {:.2} s",
        ROWS.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(report.is_empty(), "fault matrix mismatches:{report}");
}

/// Collects every mismatch instead of stopping at the first, and a note of what was seen.
#[derive(Default)]
struct Problems {
    found: Vec<String>,
    note: String,
}

impl Problems {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.found.push(what());
        }
    }
}

/// The credentials file as it was: bytes, inode (not replaced) and mtime (not rewritten).
#[derive(Debug, PartialEq)]
struct FileState {
    text: String,
    inode: u64,
    mtime_ns: i64,
}

fn file_state(path: &Path) -> FileState {
    let meta = fs::metadata(path).expect("credentials metadata");
    FileState {
        text: fs::read_to_string(path).expect("read credentials"),
        inode: meta.ino(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    }
}

/// A sandbox with an expired login of the row's provider and the row's fault on every token
/// request; `config`'s `[claude]` table is the provider's.
fn faulted_sandbox(row: &Row, config: &str) -> Sandbox {
    let s = match row.provider {
        "codex" => {
            let s = crate::codex::sandbox();
            crate::codex::login(&s, -1000);
            s.config(&config.replace("[claude]", "[codex]"));
            s
        }
        _ => {
            let s = Sandbox::new();
            s.login(-1000);
            s.config(config);
            s
        }
    };
    s.server.set_default_fault(Some(row.fault.clone()));
    s
}

/// The row's credentials file.
fn creds(row: &Row, s: &Sandbox) -> std::path::PathBuf {
    match row.provider {
        "codex" => crate::codex::auth_path(s),
        _ => s.creds(),
    }
}

/// `command` for the row's provider: `--provider codex` after the subcommand when not Claude's.
fn command<'a>(row: &Row, command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![command[0]];
    if row.provider != "claude" {
        args.extend(["--provider", row.provider]);
    }
    args.extend(&command[1..]);
    args
}

/// "(after N attempt(s))" in an unavailable message.
fn attempts_in(line: &str) -> Option<u64> {
    let rest = &line[line.find("(after ")? + "(after ".len()..];
    rest.split(' ').next()?.parse().ok()
}

/// The checks shared by `refresh` and `exec`: exit code, one error line that ends stderr with the
/// expected words and the path, the file as it was, the retry count, nothing left behind.
fn check_cli_run(row: &Row, s: &Sandbox, before: &FileState, run: &Run, p: &mut Problems) {
    let requests = s.server.stats().token_requests;
    let (code, requests_ok) = match row.class {
        Class::Transient => (UNAVAILABLE, row.cli_requests.contains(&requests)),
        Class::Permanent => (DEAD, row.cli_requests.contains(&requests)),
        Class::Granted { .. } => unreachable!("checked by check_granted_cli_run"),
    };
    p.check(run.code == code, || {
        format!("exit {} instead of {code}: {run:?}", run.code)
    });
    p.check(requests_ok, || {
        format!(
            "{requests} token requests, expected {:?}: {run:?}",
            row.cli_requests
        )
    });
    p.check(run.stdout.is_empty(), || {
        format!("stdout not empty: {run:?}")
    });
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("tokenkeeper: error:"))
        .collect();
    p.check(errors.len() == 1, || {
        format!("{} error lines instead of 1: {run:?}", errors.len())
    });
    let last = run.stderr.lines().last().unwrap_or("");
    p.note = format!("exit {}, {requests} req: {last}", run.code);
    p.check(last.starts_with("tokenkeeper: error: "), || {
        format!("the last line of stderr is not the error line: {run:?}")
    });
    let path = creds(row, s).display().to_string();
    p.check(last.contains(&path), || {
        format!("the error line does not name {path}: {last}")
    });
    for word in row.words {
        p.check(last.contains(word), || {
            format!("the error line lacks “{word}”: {last}")
        });
    }
    match row.class {
        Class::Transient => {
            p.check(
                last.contains("is unavailable") && last.contains("was left as it was"),
                || format!("not an unavailable message: {last}"),
            );
            p.check(attempts_in(last) == Some(requests), || {
                format!("the message counts other attempts than the server's {requests}: {last}")
            });
            let retries = run
                .stderr
                .lines()
                .filter(|l| l.contains("retrying in"))
                .count() as u64;
            p.check(retries + 1 == requests, || {
                format!("{retries} retry notes for {requests} requests: {run:?}")
            });
        }
        Class::Permanent => {
            p.check(
                last.contains("is dead") && last.contains("claude /login"),
                || format!("not a dead-login message: {last}"),
            );
            p.check(run.stderr.lines().count() == 1, || {
                format!("more than the one line: {run:?}")
            });
        }
        Class::Granted { .. } => {}
    }
    let after = file_state(&creds(row, s));
    p.check(after == *before, || {
        format!("the credentials file changed: {before:?} → {after:?}")
    });
    let locks = lock_dirs(s);
    p.check(locks.is_empty(), || format!("locks left behind: {locks:?}"));
    let stats = s.server.stats();
    p.check(
        stats.refreshes_ok == 0 && stats.revoked_families == 0,
        || format!("tokens moved at the server: {stats:?}"),
    );
    check_gaps(row, s, p);
}

/// The least time between the starts of attempt `n` and `n + 1` (1-based): the backoff's
/// smallest wait (half of 1 s doubled per attempt), never less than the server's `Retry-After`,
/// after the whole request timeout when the server hangs.
fn least_gap(row: &Row, n: u32) -> Duration {
    let backoff = Duration::from_millis(500) * 2u32.pow(n - 1);
    let wait = match row.fault {
        Fault::RateLimited {
            retry_after_secs: Some(secs),
        } => backoff.max(Duration::from_secs(secs)),
        _ => backoff,
    };
    match row.fault {
        // The timeout starts before the request reaches the server: allow a little.
        Fault::Hang(_) => wait + REQUEST_TIMEOUT - Duration::from_millis(50),
        _ => wait,
    }
}

/// Retries wait out the backoff and the server's `Retry-After`.
fn check_gaps(row: &Row, s: &Sandbox, p: &mut Problems) {
    let arrivals: Vec<Instant> = s
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == tokenkeeper_standin::TOKEN_PATH)
        .map(|r| r.received)
        .collect();
    for (n, pair) in (1u32..).zip(arrivals.windows(2)) {
        let gap = pair[1] - pair[0];
        let least = least_gap(row, n);
        p.check(gap >= least, || {
            format!(
                "attempt {} came {gap:?} after attempt {n}, sooner than {least:?}",
                n + 1
            )
        });
    }
}

fn run_timed(s: &Sandbox, mut cmd: std::process::Command) -> (Run, Duration) {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().expect("run tokenkeeper");
    let took = start.elapsed();
    let run = Run::from(out);
    s.assert_no_leak(&run, false);
    (run, took)
}

/// Upper bound on one refresh/exec run: the retry budget, one request timeout past it, and
/// slack for a loaded machine.
const CLI_RUN_LIMIT: Duration = Duration::from_secs(3 + 1 + 3);

/// The checks of a granted row's `refresh` or `exec` (`asked_at`: when it started): exit 0 after
/// one request, no error, the row's words in a warning, and the file rewritten with the server's
/// new tokens expiring the row's lifetime after the request, capped when absurd.
fn check_granted_cli_run(row: &Row, s: &Sandbox, asked_at: i64, run: &Run, p: &mut Problems) {
    let Class::Granted { lifetime_secs, .. } = row.class else {
        unreachable!("a granted row")
    };
    let requests = s.server.stats().token_requests;
    let last = run.stderr.lines().last().unwrap_or("");
    p.note = format!("exit {}, {requests} req: {last}", run.code);
    p.check(run.code == 0, || {
        format!("exit {} instead of 0: {run:?}", run.code)
    });
    p.check(row.cli_requests.contains(&requests), || {
        format!(
            "{requests} token requests, expected {:?}: {run:?}",
            row.cli_requests
        )
    });
    p.check(!run.stderr.contains("tokenkeeper: error:"), || {
        format!("an error line: {run:?}")
    });
    for word in row.words {
        p.check(run.stderr.contains(word), || {
            format!("stderr lacks “{word}”: {run:?}")
        });
    }
    let doc = s.creds_json();
    let oauth = &doc["claudeAiOauth"];
    p.check(
        s.server
            .is_live_access(oauth["accessToken"].as_str().unwrap_or("")),
        || "the file does not hold the new tokens".into(),
    );
    let expires_at = oauth["expiresAt"].as_i64().unwrap_or(i64::MAX);
    let (least, most) = (
        asked_at + lifetime_secs * 1000 - 1000,
        now_ms() + lifetime_secs * 1000 + 1000,
    );
    p.check((least..=most).contains(&expires_at), || {
        format!("expiresAt {expires_at} is not in {least}..={most}")
    });
    let stats = s.server.stats();
    p.check(
        stats.refreshes_ok == 1 && stats.revoked_families == 0 && stats.reused_refresh_tokens == 0,
        || format!("not exactly one clean grant at the server: {stats:?}"),
    );
    let locks = lock_dirs(s);
    p.check(locks.is_empty(), || format!("locks left behind: {locks:?}"));
}

fn refresh_row(row: &Row) -> Problems {
    let mut p = Problems::default();
    let s = faulted_sandbox(row, CLI_CONFIG);
    let before = file_state(&creds(row, &s));
    let asked_at = now_ms();
    let (run, took) = run_timed(&s, s.cmd(&command(row, &["refresh"])));
    if let Class::Granted { .. } = row.class {
        check_granted_cli_run(row, &s, asked_at, &run, &mut p);
        p.check(run.stdout.starts_with("refreshed"), || {
            format!("stdout does not say refreshed: {run:?}")
        });
        p.check(took < CLI_RUN_LIMIT, || format!("took {took:?}"));
        return p;
    }
    check_cli_run(row, &s, &before, &run, &mut p);
    p.check(took < CLI_RUN_LIMIT, || format!("took {took:?}"));

    // The next run: a rejected refresh token is not sent again; after a transient failure the
    // login is intact and, with the fault gone, refreshes.
    let requests = s.server.stats().token_requests;
    match row.class {
        Class::Permanent => {
            let again = s.run(&["refresh"]);
            p.check(again.code == DEAD, || {
                format!("a second refresh of a dead login: {again:?}")
            });
            p.check(s.server.stats().token_requests == requests, || {
                format!("the rejected refresh token was sent again: {again:?}")
            });
            let line = again.stderr.lines().next().unwrap_or("");
            p.check(again.stderr.lines().count() == 1, || {
                format!("a second refresh of a dead login is not one line: {again:?}")
            });
            for word in row.words {
                p.check(line.contains(word), || {
                    format!("the second refresh's line lacks “{word}”: {line}")
                });
            }
            p.check(file_state(&s.creds()) == before, || {
                "the second refresh changed the file".into()
            });
        }
        Class::Transient => {
            s.server.set_default_fault(None);
            let again = s.run(&command(row, &["refresh"]));
            p.check(
                again.code == 0 && again.stdout.starts_with("refreshed"),
                || format!("with the fault gone, the refresh failed: {again:?}"),
            );
            p.check(s.server.stats().token_requests == requests + 1, || {
                format!("with the fault gone, not exactly one more request: {again:?}")
            });
        }
        Class::Granted { .. } => unreachable!("returned above"),
    }
    p
}

fn exec_row(row: &Row) -> Problems {
    let mut p = Problems::default();
    let s = faulted_sandbox(row, CLI_CONFIG);
    let marker = s.dir.path().join("started");
    let before = file_state(&creds(row, &s));
    let asked_at = now_ms();
    let mut cmd = s.cmd(&command(
        row,
        &["exec", "--", "sh", "-c", r#"touch "$MARKER""#],
    ));
    cmd.env("MARKER", &marker);
    let (run, took) = run_timed(&s, cmd);
    if let Class::Granted { .. } = row.class {
        check_granted_cli_run(row, &s, asked_at, &run, &mut p);
        p.check(marker.exists(), || {
            format!("the command was not started: {run:?}")
        });
        p.check(took < CLI_RUN_LIMIT, || format!("took {took:?}"));
        return p;
    }
    check_cli_run(row, &s, &before, &run, &mut p);
    p.check(!marker.exists(), || {
        format!("the command was started: {run:?}")
    });
    p.check(took < CLI_RUN_LIMIT, || format!("took {took:?}"));
    p
}

#[test]
fn faults_against_refresh() {
    for_each_row("refresh", refresh_row);
}

#[test]
fn faults_against_exec() {
    for_each_row("exec", exec_row);
}

// ---------------------------------------------------------------------------------------------
// The daemon.

fn daemon_records(s: &Sandbox) -> Vec<Value> {
    let dir = s.state_dir().join("daemon");
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| serde_json::from_str(&fs::read_to_string(p).ok()?).ok())
        .collect()
}

/// Polls the daemon's state until `done` holds for its one login's record.
fn wait_record(s: &Sandbox, limit: Duration, done: impl Fn(&Value) -> bool) -> Option<Value> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(record) = daemon_records(s).into_iter().find(|r| done(r)) {
            return Some(record);
        }
        sleep(Duration::from_millis(20));
    }
    None
}

fn stop(s: &Sandbox, mut child: Child) -> Run {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            break;
        }
        sleep(Duration::from_millis(20));
    }
    let run = Run::from(child.wait_with_output().expect("daemon output"));
    s.assert_no_leak(&run, false);
    run
}

/// A granted row's daemon, once its record says refreshed: one request, the new tokens saved,
/// the row's words logged, and the next refresh no sooner than the row's wait.
fn check_granted_daemon(row: &Row, s: &Sandbox, record: &Value, child: Child, p: &mut Problems) {
    let Class::Granted {
        daemon_wait_secs, ..
    } = row.class
    else {
        unreachable!("a granted row")
    };
    let requests = s.server.stats().token_requests;
    p.check(row.daemon_requests.contains(&requests), || {
        format!(
            "{requests} token requests, expected {:?}",
            row.daemon_requests
        )
    });
    let access = s.creds_json()["claudeAiOauth"]["accessToken"]
        .as_str()
        .unwrap_or("")
        .to_string();
    p.check(s.server.is_live_access(&access), || {
        "the file does not hold the new tokens".into()
    });
    let refreshed_at = record["refreshed_at"].as_i64().unwrap_or(0);
    let next = record["next_refresh_at"].as_i64().unwrap_or(0);
    p.check(next >= refreshed_at + daemon_wait_secs * 1000, || {
        format!("the next refresh comes sooner than {daemon_wait_secs} s: {record}")
    });
    let run = stop(s, child);
    p.note = format!(
        "{requests} req: next refresh {} s later",
        (next - refreshed_at) / 1000
    );
    p.check(run.code == 0, || {
        format!("exit {} after SIGTERM: {run:?}", run.code)
    });
    p.check(
        !run.stderr.contains("is dead") && !run.stderr.contains("(failure "),
        || format!("a failure logged: {run:?}"),
    );
    for word in row.words {
        p.check(run.stderr.contains(word), || {
            format!("the log lacks “{word}”: {run:?}")
        });
    }
    let locks = lock_dirs(s);
    p.check(locks.is_empty(), || format!("locks left behind: {locks:?}"));
}

fn daemon_row(row: &Row) -> Problems {
    let mut p = Problems::default();
    let s = faulted_sandbox(row, DAEMON_CONFIG);
    let before = file_state(&creds(row, &s));
    let path = creds(row, &s).display().to_string();
    let spawned_at = now_ms();
    let mut child = s
        .cmd(&command(row, &["daemon"]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    let settled = |r: &Value| match row.class {
        Class::Transient => r["failures"].as_u64().is_some_and(|f| f > 0),
        Class::Permanent => r["last_outcome"] == "dead",
        // The daemon records the refresh first and its plan for the next one a moment later.
        Class::Granted { .. } => r["last_outcome"] == "refreshed" && r["next_refresh_at"].is_i64(),
    };
    let record = wait_record(&s, Duration::from_secs(15), settled);
    let settled_at = now_ms();
    // A moment more: nothing else may happen (no further request, no exit).
    sleep(Duration::from_millis(500));
    let requests = s.server.stats().token_requests;
    let running = child.try_wait().expect("try_wait").is_none();
    p.check(running, || "the daemon exited".into());
    if let Class::Granted { .. } = row.class {
        match &record {
            Some(record) => check_granted_daemon(row, &s, record, child, &mut p),
            None => {
                let run = stop(&s, child);
                p.found.push(format!("never refreshed: {run:?}"));
            }
        }
        return p;
    }
    let after = file_state(&creds(row, &s));
    p.check(after == before, || {
        format!("the credentials file changed: {before:?} → {after:?}")
    });
    p.check(row.daemon_requests.contains(&requests), || {
        format!(
            "{requests} token requests, expected {:?}",
            row.daemon_requests
        )
    });
    check_gaps(row, &s, &mut p);

    let Some(record) = record else {
        let run = stop(&s, child);
        p.found.push(format!(
            "the daemon's state never showed the outcome: {:?}; {run:?}",
            daemon_records(&s)
        ));
        return p;
    };
    let last_error = record["last_error"].as_str().unwrap_or("");
    for word in row.words {
        p.check(last_error.contains(word), || {
            format!("the state's last_error lacks “{word}”: {record}")
        });
    }
    match row.class {
        Class::Transient => {
            p.check(record["failures"] == 1, || {
                format!("failures is not 1: {record}")
            });
            p.check(record["last_outcome"] == "failed", || {
                format!("last_outcome is not failed: {record}")
            });
            let until = record["cooldown_until"].as_i64().unwrap_or(0);
            p.check(
                (spawned_at + DAEMON_COOLDOWN_MS..=settled_at + DAEMON_COOLDOWN_MS)
                    .contains(&until),
                || {
                    format!(
                        "cooldown_until {until} is not 30 s after the attempt ({spawned_at}..{settled_at}): {record}"
                    )
                },
            );
            p.check(
                record["next_refresh_at"] == record["cooldown_until"],
                || format!("the next refresh is not at the end of the cooldown: {record}"),
            );
            p.check(record["dead_refresh"].is_null(), || {
                format!("a transient failure marked the login dead: {record}")
            });
            // The login was not lost: with the fault gone, the next attempt succeeds.
            s.server.set_default_fault(None);
            let run = s.run(&command(row, &["refresh"]));
            p.check(run.code == 0 && run.stdout.starts_with("refreshed"), || {
                format!("a refresh after the fault went away failed: {run:?}")
            });
        }
        Class::Permanent => {
            p.check(
                record["dead_refresh"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                || format!("the login is not marked dead: {record}"),
            );
            p.check(record["failures"] == 0, || {
                format!("a dead login counted as a transient failure: {record}")
            });
            p.check(record["cooldown_until"].is_null(), || {
                format!("a dead login has a cooldown: {record}")
            });
        }
        Class::Granted { .. } => unreachable!("returned above"),
    }

    let run = stop(&s, child);
    p.check(run.code == 0, || {
        format!("exit {} after SIGTERM: {run:?}", run.code)
    });
    p.check(
        run.stderr.lines().all(|l| l.contains(" tokenkeeper: ")),
        || format!("a log line without timestamp and name: {run:?}"),
    );
    let dead_lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("is dead"))
        .collect();
    let failure_lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("(failure "))
        .collect();
    let (lines, other) = match row.class {
        Class::Transient => (&failure_lines, &dead_lines),
        Class::Permanent => (&dead_lines, &failure_lines),
        Class::Granted { .. } => unreachable!("returned above"),
    };
    p.check(lines.len() == 1 && other.is_empty(), || {
        format!("expected one {:?} line and no other: {run:?}", row.class)
    });
    p.note = format!(
        "{requests} req: {}",
        lines
            .first()
            .map_or("", |l| l.split_once(" tokenkeeper: ").map_or(l, |(_, m)| m))
    );
    if let Some(line) = lines.first() {
        p.check(line.contains(&path), || {
            format!("the line does not name {path}: {line}")
        });
        for word in row.words {
            p.check(line.contains(word), || {
                format!("the line lacks “{word}”: {line}")
            });
        }
        match row.class {
            Class::Transient => {
                p.check(
                    line.contains("tokenkeeper: warning: ")
                        && line.contains("(failure 1; next try in 30s)"),
                    || format!("not a first-failure warning with a 30 s cooldown: {line}"),
                );
                p.check(attempts_in(line) == Some(requests), || {
                    format!("the line counts other attempts than the server's {requests}: {line}")
                });
            }
            Class::Permanent => {
                p.check(
                    line.contains("tokenkeeper: error: ") && line.contains("claude /login"),
                    || format!("not a dead-login error: {line}"),
                );
            }
            Class::Granted { .. } => unreachable!("returned above"),
        }
    }
    let locks = lock_dirs(&s);
    p.check(locks.is_empty(), || format!("locks left behind: {locks:?}"));
    p
}

#[test]
fn faults_against_the_daemon() {
    for_each_row("daemon", daemon_row);
}

/// A token endpoint that redirects to another host (issue 11): the other host is never asked,
/// so its answer can never be written over the login, and the failure names where it pointed.
#[test]
fn a_redirect_from_the_token_endpoint_is_never_followed() {
    let s = Sandbox::new();
    s.login(-1000);
    s.config(CLI_CONFIG);
    let elsewhere = tokenkeeper_standin::StandinServer::start(Default::default()).unwrap();
    let target = elsewhere.token_url();
    for command in [&["refresh"][..], &["exec", "--", "true"]] {
        s.server
            .set_default_fault(Some(Fault::Redirect(Cow::Owned(target.clone()))));
        let before = file_state(&s.creds());
        let run = s.run(command);
        assert_eq!(run.code, UNAVAILABLE, "{run:?}");
        let last = run.stderr.lines().last().unwrap_or("");
        assert!(last.contains("HTTP 302"), "{last}");
        assert!(last.contains(&target), "{last}");
        assert_eq!(
            elsewhere.stats().token_requests,
            0,
            "the redirect was followed: {run:?}"
        );
        assert_eq!(elsewhere.requests().len(), 0);
        assert_eq!(file_state(&s.creds()), before, "the login was changed");
        s.assert_no_leak(&run, false);
    }
}
