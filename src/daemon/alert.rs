//! Alerts: telling a person that a login needs them, without ever holding up a refresh. An
//! [`Alerter`] hands each alert to one background thread (started on the first alert, so an
//! unused alerter costs nothing), which runs the notify command and posts to the webhook, in
//! order, with bounded timeouts and a few retries. Deciding *whether* to alert (one alert per
//! event and login, not one per retry) is the daemon's job. An alert never holds a token, and a
//! webhook URL is logged only as scheme and host, since Discord and Slack keep the secret in
//! its path.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What an alert is about. The spelling (`TOKENKEEPER_EVENT`, the webhook's `event`, the keys
/// of the daemon's `alerted` record) is [`Event::as_str`], and serde's is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    RefreshFailed,
    LoginDead,
    Recovered,
    LoginEnding,
    StoreUnreachable,
    /// The fleet's store holds an older generation than this machine has seen (a restore from
    /// a backup): its refresh token is spent, so nothing is posted until a new push.
    StoreRolledBack,
    /// The server handed out an access token that was already due (it expires within the
    /// refresh margin as it comes): refreshes of the login are spaced out until it stops.
    TokenAlreadyDue,
    /// An access-only copy of a login (`[[mirror]]`, `--mirror`) cannot be written (permissions,
    /// a full disk, a login of its own in its place): its consumer's token will expire.
    MirrorFailed,
    /// Sent on request (`tokenkeeper daemon --test-alert`), to see that alerts arrive.
    Test,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::RefreshFailed => "refresh_failed",
            Event::LoginDead => "login_dead",
            Event::Recovered => "recovered",
            Event::LoginEnding => "login_ending",
            Event::StoreUnreachable => "store_unreachable",
            Event::StoreRolledBack => "store_rolled_back",
            Event::TokenAlreadyDue => "token_already_due",
            Event::MirrorFailed => "mirror_failed",
            Event::Test => "test",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Alert {
    pub event: Event,
    pub provider: String,
    pub message: String,
    pub at: jiff::Timestamp,
}

impl Alert {
    /// The one line a chat shows: `tokenkeeper: login_dead (claude): <message>`.
    fn line(&self) -> String {
        let (event, provider, message) = (self.event.as_str(), &self.provider, &self.message);
        format!("tokenkeeper: {event} ({provider}): {message}")
    }
}

/// How long delivery may take; shortened in tests.
#[derive(Clone, Copy, Debug)]
struct Timing {
    command: Duration,
    attempt: Duration,
    /// Waits before the second and third webhook attempts.
    backoff: [Duration; 2],
    /// A longer `Retry-After` is not waited for: the alert is dropped.
    max_retry_after: Duration,
}

const TIMING: Timing = Timing {
    command: Duration::from_secs(30),
    attempt: Duration::from_secs(10),
    backoff: [Duration::from_secs(1), Duration::from_secs(2)],
    max_retry_after: Duration::from_secs(30),
};

pub struct Alerter {
    shared: Arc<Shared>,
    /// Set when the first alert starts the worker.
    queue: Mutex<Option<Sender<Alert>>>,
}

struct Shared {
    notify_command: Option<String>,
    webhook: Option<String>,
    /// How many redirects a webhook POST follows (`webhook_redirects`); 0 by default.
    webhook_redirects: u32,
    timing: Timing,
    /// Alerts queued, and alerts finished (delivered or given up), for [`Alerter::flush`].
    counts: Mutex<(u64, u64)>,
    changed: Condvar,
}

impl Alerter {
    /// Alerts through `notify_command` and `webhook` (those given); a webhook POST follows at
    /// most `webhook_redirects` redirects (see [`WEBHOOK_REDIRECTS_MAX`]).
    pub fn new(
        notify_command: Option<String>,
        webhook: Option<String>,
        webhook_redirects: u32,
    ) -> Alerter {
        Alerter::with_timing(notify_command, webhook, webhook_redirects, TIMING)
    }

    fn with_timing(
        notify_command: Option<String>,
        webhook: Option<String>,
        webhook_redirects: u32,
        t: Timing,
    ) -> Alerter {
        let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        let shared = Shared {
            notify_command: non_empty(notify_command),
            webhook: non_empty(webhook),
            webhook_redirects: webhook_redirects.min(WEBHOOK_REDIRECTS_MAX),
            timing: t,
            counts: Mutex::default(),
            changed: Condvar::new(),
        };
        Alerter {
            shared: Arc::new(shared),
            queue: Mutex::new(None),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.shared.notify_command.is_some() || self.shared.webhook.is_some()
    }

    /// Returns at once; delivery happens on a background thread.
    pub fn send(&self, alert: Alert) {
        if !self.is_configured() {
            return;
        }
        let event = alert.event.as_str();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.is_none() {
            let (tx, rx) = channel();
            let shared = self.shared.clone();
            let started = std::thread::Builder::new()
                .name("tokenkeeper-alerts".into())
                .spawn(move || shared.deliver_all(rx));
            if let Err(e) = started {
                tracing::warn!("could not start the alert thread ({e}); {event} alert dropped");
                return;
            }
            *queue = Some(tx);
        }
        // Counted before queueing, so the worker never finishes an alert not yet counted.
        self.shared.count(|c| c.0 += 1);
        if queue.as_ref().is_some_and(|q| q.send(alert).is_err()) {
            self.shared.count(|c| c.1 += 1);
            tracing::warn!("the alert thread has stopped; {event} alert dropped");
        }
    }

    /// Delivers `alert` now, on this thread, through the notify command and then the webhook
    /// (those configured), and says how each went: a name for it (never the webhook's path) and
    /// why it failed. For `tokenkeeper daemon --test-alert`.
    pub fn deliver_now(&self, alert: &Alert) -> Vec<(String, Result<(), String>)> {
        let s = &self.shared;
        let mut results = Vec::new();
        if let Some(cmd) = &s.notify_command {
            let result = run_notify_command(cmd, alert, s.timing.command);
            results.push(("the notify command".to_string(), result));
        }
        if let Some(url) = &s.webhook {
            let result = post_webhook(&webhook_agent(), url, s.webhook_redirects, alert, &s.timing);
            results.push((format!("the webhook at {}", site_of(url)), result));
        }
        results
    }

    /// Waits until every alert sent so far is delivered or given up (bounded by `timeout`); for
    /// shutdown and tests. False when the time ran out first.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let shared = &self.shared;
        let mut counts = shared.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let target = counts.0;
        while counts.1 < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let woken = shared.changed.wait_timeout(counts, left);
            counts = woken.unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

impl Shared {
    fn count(&self, f: impl FnOnce(&mut (u64, u64))) {
        f(&mut self.counts.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_all();
    }

    /// The worker: ends when the [`Alerter`] is dropped and the queue is drained.
    fn deliver_all(&self, queue: Receiver<Alert>) {
        let agent = self.webhook.as_ref().map(|_| webhook_agent());
        for alert in queue {
            if let Some(cmd) = &self.notify_command {
                let _ = run_notify_command(cmd, &alert, self.timing.command);
            }
            if let (Some(url), Some(agent)) = (&self.webhook, &agent) {
                let _ = post_webhook(agent, url, self.webhook_redirects, &alert, &self.timing);
            }
            self.count(|c| c.1 += 1);
        }
    }
}

/// `sh -c CMD`, or `cmd /C CMD` on Windows.
fn shell(cmd: &str) -> Command {
    let (shell, flag) = if cfg!(windows) {
        ("cmd", "/C")
    } else {
        ("sh", "-c")
    };
    let mut command = Command::new(shell);
    command.arg(flag).arg(cmd);
    command
}

/// Kills the notify command and everything it started (its process group on Unix).
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    // SAFETY: kill(2) with a negative pid signals the child's own process group.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL)
    };
    #[cfg(not(unix))]
    let _ = child.kill();
}

/// Runs the notify command for `alert`; logs and returns how it went.
fn run_notify_command(cmd: &str, alert: &Alert, limit: Duration) -> Result<(), String> {
    let event = alert.event.as_str();
    let mut command = shell(cmd);
    command.stdin(Stdio::null());
    // Only our four variables: none inherited from whoever started the daemon.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TOKENKEEPER_") {
            command.env_remove(name);
        }
    }
    let no_nul = |s: &str| s.replace('\0', " ");
    command
        .env("TOKENKEEPER_EVENT", event)
        .env("TOKENKEEPER_PROVIDER", no_nul(&alert.provider))
        .env("TOKENKEEPER_MESSAGE", no_nul(&alert.message))
        .env("TOKENKEEPER_AT", alert.at.to_string());
    // Its own process group, so a timeout kills what `sh` started too.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("could not start the notify command for the {event} alert: {e}");
            return Err(format!("could not start: {e}"));
        }
    };
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&mut child);
                let _ = child.wait();
                break Err(format!(
                    "did not finish within {}s and was killed",
                    limit.as_secs()
                ));
            }
            Ok(None) => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) => break Err(format!("could not be waited for: {e}")),
        }
    };
    match status {
        Ok(s) if s.success() => {
            tracing::debug!("notify command ran for the {event} alert");
            Ok(())
        }
        Ok(s) => {
            tracing::warn!("the notify command for the {event} alert failed ({s})");
            Err(format!("failed ({s})"))
        }
        Err(why) => {
            tracing::warn!("the notify command for the {event} alert {why}");
            Err(why)
        }
    }
}

/// The most redirects `webhook_redirects` may allow: enough for http to https and a moved
/// host, too few for a loop to matter.
pub const WEBHOOK_REDIRECTS_MAX: u32 = 5;

/// The webhook's client. It follows no redirect itself: `post_webhook` does, when configured,
/// posting the alert again to the new place (a client's own following would turn the POST of
/// a 301 or 302 into a GET without the alert, and not follow a 307 or 308 at all).
fn webhook_agent() -> ureq::Agent {
    crate::oauth::endpoint::client_config()
        .max_redirects(0)
        .user_agent(concat!("tokenkeeper/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

fn webhook_body(alert: &Alert) -> String {
    let line = alert.line();
    serde_json::json!({
        "event": alert.event,
        "provider": alert.provider,
        "message": alert.message,
        "at": alert.at.to_string(),
        "content": line,
        "text": line,
    })
    .to_string()
}

/// Posts `alert` to the webhook, retrying what may pass, following at most `redirects`
/// redirects; logs and returns how it went (never the URL's path, nor a Location's).
fn post_webhook(
    agent: &ureq::Agent,
    url: &str,
    redirects: u32,
    alert: &Alert,
    timing: &Timing,
) -> Result<(), String> {
    let (event, site) = (alert.event.as_str(), site_of(url));
    let body = webhook_body(alert);
    let mut target = url.to_string();
    let mut followed = 0;
    let mut attempt = 0;
    loop {
        let result = agent
            .post(&target)
            .config()
            .timeout_global(Some(timing.attempt))
            .build()
            .header("Content-Type", "application/json")
            .send(body.as_bytes());
        let (why, retry_after) = match result {
            Ok(r) if r.status().is_success() => {
                tracing::debug!("the webhook at {site} took the {event} alert");
                return Ok(());
            }
            Ok(r) if r.status().is_redirection() => {
                let status = r.status().as_u16();
                let location = r.headers().get("location").and_then(|v| v.to_str().ok());
                match redirect_target(&target, location) {
                    Ok(next) if followed < redirects => {
                        tracing::debug!(
                            "the webhook at {site}: HTTP {status} to {}; following it",
                            site_of(&next)
                        );
                        followed += 1;
                        target = next;
                        continue;
                    }
                    Ok(next) => {
                        let why = format!(
                            "HTTP {status} redirect to {}, not followed: webhook_redirects = {redirects} in [daemon] allows {}",
                            site_of(&next),
                            if redirects == 0 {
                                "none".to_string()
                            } else {
                                format!("{redirects}")
                            }
                        );
                        return give_up(&site, event, &why);
                    }
                    Err(why) => {
                        return give_up(&site, event, &format!("HTTP {status} redirect {why}"));
                    }
                }
            }
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok());
                (
                    format!("HTTP {}", r.status().as_u16()),
                    retry_after.and_then(seconds),
                )
            }
            Ok(r) => return give_up(&site, event, &format!("HTTP {}", r.status().as_u16())),
            Err(ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl) => {
                return give_up(&site, event, "not a usable URL");
            }
            Err(e) => (network_failure(&e, url), None),
        };
        let Some(backoff) = timing.backoff.get(attempt) else {
            tracing::warn!("the webhook at {site} failed 3 times ({why}); {event} alert dropped");
            return Err(format!("failed 3 times ({why})"));
        };
        attempt += 1;
        if retry_after.is_some_and(|r| r > timing.max_retry_after) {
            tracing::warn!(
                "the webhook at {site} asks to wait long ({why}); {event} alert dropped"
            );
            return Err(format!("asks to wait long ({why})"));
        }
        tracing::debug!("the webhook at {site}: {why}; trying the {event} alert again");
        std::thread::sleep(retry_after.map_or(*backoff, |r| r.max(*backoff)));
    }
}

/// Where a redirect from `from` points: an absolute `http(s)://` Location, or a path on the same
/// site; never from `https://` down to `http://`. The error says why not, naming no path.
fn redirect_target(from: &str, location: Option<&str>) -> Result<String, String> {
    let Some(location) = location.map(str::trim).filter(|l| !l.is_empty()) else {
        return Err("without a Location".into());
    };
    let next = if location.starts_with('/') && !location.starts_with("//") {
        let site = from
            .split_once("://")
            .map(|(scheme, rest)| {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
                format!("{scheme}://{authority}")
            })
            .unwrap_or_default();
        format!("{site}{location}")
    } else {
        location.to_string()
    };
    check_webhook(&next).map_err(|_| {
        format!(
            "to a Location that is not an http(s) URL ({}), not followed",
            site_of(&next)
        )
    })?;
    let scheme = |u: &str| u.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if scheme(from).as_deref() == Some("https") && scheme(&next).as_deref() == Some("http") {
        return Err(format!(
            "from https down to {}, not followed",
            site_of(&next)
        ));
    }
    Ok(next)
}

/// An answer or error that retrying cannot fix.
fn give_up(site: &str, event: &str, why: &str) -> Result<(), String> {
    tracing::warn!(
        "the webhook at {site} refused the {event} alert ({why}); check the webhook URL"
    );
    Err(format!("refused it ({why}); check the webhook URL"))
}

/// Checks a webhook URL before the daemon relies on it: `http://` or `https://` and a host. The
/// reason never quotes the URL (its path is a secret).
pub fn check_webhook(url: &str) -> Result<(), String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(
            "the webhook URL has no scheme; write it in full, starting with https://".into(),
        );
    };
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "the webhook URL's scheme is {scheme:?}; it must be https:// (or http://)"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    if name.is_empty() || url.contains(char::is_whitespace) {
        return Err(format!(
            "the webhook URL ({scheme}://…) names no host, or holds a space; check it"
        ));
    }
    Ok(())
}

/// Checks a notify command before the daemon relies on it: not blank, and its program found
/// (a path that exists, a name on `path`, or a shell builtin). Only the program is named in the
/// reason, never the rest (it may hold a secret).
pub fn check_notify_command(cmd: &str, path: Option<&std::ffi::OsStr>) -> Result<(), String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let Some(program) = words
        .iter()
        .find(|w| !w.contains('=') || w.starts_with(['=', '\'', '"']))
        .map(|w| w.trim_matches(['\'', '"']))
    else {
        return if words.is_empty() {
            Err("the notify command is empty".into())
        } else {
            Ok(()) // Only assignments: the shell accepts it.
        };
    };
    // Shell syntax and builtins: the shell decides.
    const SHELL: &[&str] = &[
        "!", ".", ":", "[", "[[", "{", "(", "alias", "break", "case", "cd", "command", "continue",
        "echo", "eval", "exec", "exit", "export", "false", "for", "getopts", "hash", "if", "kill",
        "local", "printf", "pwd", "read", "readonly", "return", "set", "shift", "source", "test",
        "times", "trap", "true", "type", "ulimit", "umask", "unset", "until", "wait", "while",
    ];
    if program.is_empty()
        || SHELL.contains(&program)
        || program.starts_with(['(', '{', '$', '`', '~'])
    {
        return Ok(());
    }
    if program.contains(['/', '\\']) {
        return if Path::new(program).exists() {
            Ok(())
        } else {
            Err(format!(
                "the notify command's program {program} does not exist"
            ))
        };
    }
    let found = path.is_some_and(|p| {
        std::env::split_paths(p).any(|dir| {
            let candidate = dir.join(program);
            candidate.is_file() || (cfg!(windows) && candidate.with_extension("exe").is_file())
        })
    });
    if found {
        Ok(())
    } else {
        Err(format!(
            "the notify command's program {program} is not on PATH; name it by its full path"
        ))
    }
}

/// `Retry-After` in seconds (chat services send whole or fractional seconds; an HTTP date falls
/// back to our own backoff).
fn seconds(value: &str) -> Option<Duration> {
    Duration::try_from_secs_f64(value.trim().parse().ok()?).ok()
}

/// The failing step and its fix as the token endpoint's failures say them (name lookup,
/// connection, TLS handshake), naming the host only. Never the error's own text otherwise: some
/// ureq errors quote the URL, whose path is a secret.
fn network_failure(e: &ureq::Error, url: &str) -> String {
    match e {
        ureq::Error::Timeout(_)
        | ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Tls(_)
        | ureq::Error::Io(_) => {
            crate::oauth::endpoint::describe_transport(e, &crate::oauth::endpoint::host_of(url))
        }
        _ => "request failed".into(),
    }
}

/// `https://discord.com` from a webhook URL: the path, query and any user info are secrets.
/// A server's Location may hold escapes: they are shown escaped.
fn site_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable URL>".into();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    crate::oauth::endpoint::clean(&format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    const FAST: Timing = Timing {
        command: Duration::from_secs(5),
        attempt: Duration::from_secs(5),
        backoff: [Duration::from_millis(10), Duration::from_millis(20)],
        max_retry_after: Duration::from_secs(1),
    };
    const MESSAGE: &str = "log in again with `claude /login`";

    #[test]
    fn each_event_is_spelled_the_same_everywhere() {
        for (event, text) in [
            (Event::RefreshFailed, "refresh_failed"),
            (Event::LoginDead, "login_dead"),
            (Event::Recovered, "recovered"),
            (Event::LoginEnding, "login_ending"),
            (Event::StoreUnreachable, "store_unreachable"),
            (Event::StoreRolledBack, "store_rolled_back"),
            (Event::TokenAlreadyDue, "token_already_due"),
            (Event::Test, "test"),
        ] {
            assert_eq!(event.as_str(), text);
            assert_eq!(serde_json::to_value(event).unwrap(), text);
            assert_eq!(serde_json::from_value::<Event>(text.into()).unwrap(), event);
        }
    }

    fn alert(event: Event) -> Alert {
        let at = "2025-01-02T03:04:05Z".parse().unwrap();
        let (provider, message) = ("claude".into(), MESSAGE.into());
        Alert {
            event,
            provider,
            message,
            at,
        }
    }

    /// A webhook that answers each request with the next of `replies` ("500 X", or a status
    /// line and headers), then closes; joining it gives the JSON bodies it got.
    fn receiver(replies: &[&str]) -> (String, std::thread::JoinHandle<Vec<serde_json::Value>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook/s3cr3t", listener.local_addr().unwrap());
        let replies: Vec<String> = replies.iter().map(|r| r.to_string()).collect();
        let server = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for reply in replies {
                let mut conn = BufReader::new(listener.accept().unwrap().0);
                let mut head = String::new();
                while !head.ends_with("\r\n\r\n") {
                    conn.read_line(&mut head).unwrap();
                }
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "));
                let length = length.unwrap().parse().unwrap();
                let mut body = vec![0; length];
                conn.read_exact(&mut body).unwrap();
                bodies.push(serde_json::from_slice(&body).unwrap());
                let answer = format!("HTTP/1.1 {reply}\r\nContent-Length: 0\r\n\r\n");
                conn.get_mut().write_all(answer.as_bytes()).unwrap();
            }
            bodies
        });
        (url, server)
    }

    #[test]
    fn notify_command_gets_exactly_four_variables() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let cmd = format!("env | grep ^TOKENKEEPER_ | sort > '{}'", out.display());
        let alerter = Alerter::with_timing(Some(cmd), None, 0, FAST);
        assert!(alerter.is_configured());
        alerter.send(alert(Event::LoginDead));
        assert!(alerter.flush(Duration::from_secs(10)));
        let written = std::fs::read_to_string(out).unwrap();
        let expected = format!(
            "TOKENKEEPER_AT=2025-01-02T03:04:05Z\nTOKENKEEPER_EVENT=login_dead\n\
             TOKENKEEPER_MESSAGE={MESSAGE}\nTOKENKEEPER_PROVIDER=claude\n"
        );
        assert_eq!(written, expected);
    }

    #[test]
    fn a_notify_command_that_overruns_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let cmd = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let timing = Timing {
            command: Duration::from_millis(300),
            ..FAST
        };
        let alerter = Alerter::with_timing(Some(cmd), None, 0, timing);
        alerter.send(alert(Event::LoginDead));
        assert!(alerter.flush(Duration::from_secs(5)));
        let pid = std::fs::read_to_string(pid_file).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        // Gone, or a zombie waiting for a reaper: either way no longer running.
        let stopped = || std::fs::read_to_string(&stat).map_or(true, |s| s.contains(") Z "));
        let deadline = Instant::now() + Duration::from_secs(2);
        while !stopped() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(stopped(), "the background sleep survived");
    }

    #[test]
    fn webhook_gets_all_six_fields() {
        let (url, server) = receiver(&["204 No Content"]);
        let alerter = Alerter::with_timing(None, Some(url), 0, FAST);
        alerter.send(alert(Event::Recovered));
        assert!(alerter.flush(Duration::from_secs(10)));
        let line = format!("tokenkeeper: recovered (claude): {MESSAGE}");
        let expected = serde_json::json!({"event": "recovered", "provider": "claude",
            "message": MESSAGE, "at": "2025-01-02T03:04:05Z", "content": line, "text": line});
        assert_eq!(server.join().unwrap(), [expected]);
    }

    #[test]
    fn webhook_retries_server_errors_until_one_succeeds() {
        let (url, server) = receiver(&["500 X", "500 X", "200 OK"]);
        let alerter = Alerter::with_timing(None, Some(url), 0, FAST);
        alerter.send(alert(Event::RefreshFailed));
        assert!(alerter.flush(Duration::from_secs(10)));
        assert_eq!(server.join().unwrap().len(), 3);
    }

    #[test]
    fn webhook_gives_up_on_a_client_error_or_a_long_retry_after() {
        let (url, server) = receiver(&[
            "404 X",
            "429 X\r\nRetry-After: 0.3",
            "200 OK",
            "429 X\r\nRetry-After: 60",
            "200 OK",
        ]);
        let alerter = Alerter::with_timing(None, Some(url), 0, FAST);
        let start = Instant::now();
        for event in [
            Event::LoginEnding,
            Event::RefreshFailed,
            Event::LoginDead,
            Event::Recovered,
        ] {
            alerter.send(alert(event));
        }
        assert!(alerter.flush(Duration::from_secs(10)));
        assert!(start.elapsed() >= Duration::from_millis(300));
        let bodies = server.join().unwrap();
        let sent = [
            "login_ending",
            "refresh_failed",
            "refresh_failed",
            "login_dead",
            "recovered",
        ];
        let got: Vec<_> = bodies
            .iter()
            .map(|b| b["event"].as_str().unwrap())
            .collect();
        assert_eq!(got, sent);
    }

    #[test]
    fn send_never_waits_for_a_hanging_webhook() {
        // Bound but never accepted: the kernel completes the connection, nobody answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let alerter = Alerter::new(None, Some(url), 0);
        let start = Instant::now();
        alerter.send(alert(Event::LoginDead));
        alerter.send(alert(Event::Recovered));
        let took = start.elapsed();
        assert!(took < Duration::from_millis(100), "{took:?}");
        assert!(!alerter.flush(Duration::from_millis(200)));
    }

    #[test]
    fn an_unconfigured_alerter_starts_nothing() {
        let alerter = Alerter::new(None, Some("  ".into()), 0);
        assert!(!alerter.is_configured());
        alerter.send(alert(Event::LoginDead));
        assert!(alerter.flush(Duration::ZERO));
        assert!(alerter.queue.lock().unwrap().is_none());
    }

    #[test]
    fn a_webhook_url_needs_a_scheme_and_a_host() {
        for good in [
            "https://discord.com/api/webhooks/1/s3cr3t",
            "HTTP://127.0.0.1:9/x",
            "https://[::1]:8080/x",
            "https://u:p@hooks.example",
        ] {
            assert_eq!(check_webhook(good), Ok(()), "{good}");
        }
        for bad in [
            "discord.com/api/webhooks/1/s3cr3t",
            "ftp://hooks.example/s3cr3t",
            "https:///s3cr3t",
            "https://:80/s3cr3t",
            "https://hooks.example/a s3cr3t",
        ] {
            let why = check_webhook(bad).unwrap_err();
            assert!(!why.contains("s3cr3t"), "{why}");
        }
    }

    #[test]
    fn a_notify_command_needs_a_program_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("notify-me");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths([dir.path()]).unwrap();
        let path = Some(path.as_os_str());
        for good in [
            "notify-me --token s3cr3t",
            "A=1 notify-me",
            "echo hi >> /tmp/x",
            "printf '%s' \"$TOKENKEEPER_EVENT\"",
            "'notify-me' x",
            "exit 3",
        ] {
            assert_eq!(check_notify_command(good, path), Ok(()), "{good}");
        }
        let full = format!("{} x", tool.display());
        assert_eq!(check_notify_command(&full, None), Ok(()));
        assert!(check_notify_command("  ", path).is_err());
        let why = check_notify_command("notify-you --token s3cr3t", path).unwrap_err();
        assert!(
            why.contains("notify-you") && !why.contains("s3cr3t"),
            "{why}"
        );
        assert!(check_notify_command("/no/such/tool", path).is_err());
    }

    #[test]
    fn only_scheme_and_host_of_a_webhook_are_shown() {
        let url = "https://user:pw@discord.com/api/webhooks/123/s3cr3t?wait=true";
        assert_eq!(site_of(url), "https://discord.com");
        assert_eq!(site_of("http://127.0.0.1:9/x"), "http://127.0.0.1:9");
        assert_eq!(
            site_of("hooks.slack.com/services/T/B/X"),
            "<unparsable URL>"
        );
        assert_eq!(seconds("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(seconds("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(
            site_of("https://evil.example\u{1b}[2J/x"),
            "https://evil.example\\u{1b}[2J"
        );
    }

    #[test]
    fn a_redirect_goes_to_an_http_url_or_a_path_on_the_same_site_never_down_to_http() {
        let from = "http://127.0.0.1:9/hook/s3cr3t";
        assert_eq!(
            redirect_target(from, Some("https://hooks.example/new")),
            Ok("https://hooks.example/new".into())
        );
        assert_eq!(
            redirect_target(from, Some("/moved/s3cr3t")),
            Ok("http://127.0.0.1:9/moved/s3cr3t".into())
        );
        for (location, why) in [
            (None, "without a Location"),
            (Some(" "), "without a Location"),
            (
                Some("ftp://files.example/x"),
                "not an http(s) URL (ftp://files.example)",
            ),
            (Some("moved"), "not an http(s) URL"),
        ] {
            let err = redirect_target(from, location).unwrap_err();
            assert!(err.contains(why), "{location:?}: {err}");
        }
        let err =
            redirect_target("https://hooks.example/a", Some("http://hooks.example/a")).unwrap_err();
        assert!(
            err.contains("from https down to http://hooks.example"),
            "{err}"
        );
        assert!(!err.contains("/a"), "{err}");
    }
}
