//! `soak --kill-loop N`: the SIGKILL figure, measured one kill at a time.
//!
//! Each of N rounds starts one `tokenkeeper refresh --force` on a fresh login (tokens that live an
//! hour, so nothing else refreshes) against the stand-in answering after `--reply-delay-ms`, sends
//! it a SIGKILL at a random moment of its run, then runs `tokenkeeper refresh` (not forced: it
//! only restores a pending recovery file) and asks the stand-in whether the newest refresh token
//! it issued is the one in the credentials file. Where each kill landed is read from the
//! stand-in's record of the token request (when it arrived, when its reply was sent):
//!
//! - before the request: nothing was spent; a lost login here is a defect;
//! - in flight (request sent, reply not yet sent): the server rotates the login and its reply
//!   dies with the process; no client can prevent this loss;
//! - after the reply was sent: the client's own window, from the reply reaching its socket to
//!   the recovery file's bytes being written; what tokenkeeper can shrink.
//!
//! A lost login is replaced by a new one (as `claude /login` would) before the next round.

use crate::{path_str, presented, read_tokens, write_creds};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tokenkeeper_standin::StandinServer;

/// Tokens in the loop live this long: nothing but the forced refresh ever posts.
const LIFETIME_SECS: u64 = 3600;

pub struct Setup<'a> {
    pub tk: &'a Path,
    pub creds: &'a Path,
    /// tokenkeeper's state folder (its `recovery/` is looked at after each kill).
    pub state_dir: &'a Path,
    pub env: &'a [(String, String)],
    pub server: &'a StandinServer,
    /// Instead of a random moment of the run, each kill lands this long at most (at random)
    /// after the stand-in has sent its reply: the window after the reply, measured directly.
    pub aim_after_reply: Option<Duration>,
}

/// Where one kill landed, and whether the login survived it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Landed {
    /// The process had already exited.
    Missed,
    BeforeRequest,
    InFlight,
    /// This long after the reply was sent.
    AfterReply(Duration),
}

/// The pure reading of the stand-in's record: the kill instant against the arrival and answer
/// of the request that presented the login's refresh token (`None`: no such request).
pub fn landed(kill: Instant, request: Option<(Instant, Option<Instant>)>) -> Landed {
    match request {
        None => Landed::BeforeRequest,
        Some((_, None)) => Landed::InFlight,
        Some((_, Some(answered))) if kill < answered => Landed::InFlight,
        Some((_, Some(answered))) => Landed::AfterReply(kill - answered),
    }
}

#[derive(Default)]
struct Tally {
    kills: u64,
    lost: u64,
}

#[derive(Default)]
pub struct Report {
    rounds: u64,
    missed: u64,
    before: Tally,
    in_flight: Tally,
    after: Tally,
    /// How long after the reply each lost login's kill landed, and what the recovery folder
    /// held right after the kill.
    lost_after: Vec<(Duration, String)>,
    /// Every kill after the reply: how long after it, and whether the login was lost.
    after_reply: Vec<(Duration, bool)>,
    /// The longest a kill was aimed after the reply (`--aim-after-reply-us`).
    aimed: Option<Duration>,
    /// A little more than the median run of an unkilled `refresh --force`: the kills are spread
    /// over it.
    span: Duration,
    reply_delay: Duration,
    /// Rounds whose set-up failed (the login could not be read or written).
    errors: Vec<String>,
}

impl Report {
    /// A lost login where nothing had been spent is a defect; the other losses are the figure.
    pub fn pass(&self) -> bool {
        self.before.lost == 0 && self.errors.is_empty()
    }

    pub fn print(&self) -> String {
        let mut out = String::new();
        let hits = self.before.kills + self.in_flight.kills + self.after.kills;
        let lost = self.before.lost + self.in_flight.lost + self.after.lost;
        let _ = writeln!(
            out,
            "\ntokenkeeper kill loop: {} SIGKILLs, each into one `tokenkeeper refresh --force` at a random moment of its first {:.1} ms; token endpoint answering after {} ms",
            self.rounds,
            self.span.as_secs_f64() * 1000.0,
            self.reply_delay.as_millis()
        );
        let _ = writeln!(
            out,
            "  kills of a live process      {hits} ({} more landed after the process had exited)",
            self.missed
        );
        let _ = writeln!(out, "  logins lost                  {lost}");
        let _ = writeln!(
            out,
            "    before the token request   {} kills, {} lost",
            self.before.kills, self.before.lost
        );
        let _ = writeln!(
            out,
            "    request in flight          {} kills, {} lost (the reply dies with the process: no client can prevent this)",
            self.in_flight.kills, self.in_flight.lost
        );
        let lost_ms: Vec<String> = self
            .lost_after
            .iter()
            .map(|(d, _)| format!("{:.2}", d.as_secs_f64() * 1000.0))
            .collect();
        let _ = writeln!(
            out,
            "    after the reply was sent   {} kills, {} lost{}",
            self.after.kills,
            self.after.lost,
            if lost_ms.is_empty() || lost_ms.len() > 10 {
                String::new()
            } else {
                format!(" (killed {} ms after the reply)", lost_ms.join(", "))
            }
        );
        for (d, held) in self.lost_after.iter().take(5) {
            let _ = writeln!(
                out,
                "      {:.2} ms after the reply; recovery folder then: {held}",
                d.as_secs_f64() * 1000.0
            );
        }
        if let Some(most) = self.aimed.filter(|_| !self.after_reply.is_empty()) {
            // Kills spread evenly over `most`: the share that lost the login, times `most`, is
            // how long after the reply a kill still loses it, on average.
            let lost = self.after_reply.iter().filter(|(_, l)| *l).count();
            let window = most.as_secs_f64() * lost as f64 / self.after_reply.len() as f64;
            let _ = writeln!(
                out,
                "  window after the reply: {:.0} us ({lost} of {} kills aimed 0-{} us after it lost the login); by how long after it:",
                window * 1e6,
                self.after_reply.len(),
                most.as_micros()
            );
            let buckets = 10u32;
            let width = (most / buckets).max(Duration::from_nanos(1));
            for b in 0..buckets {
                let (from, to) = (width * b, width * (b + 1));
                let here: Vec<bool> = self
                    .after_reply
                    .iter()
                    .filter(|(d, _)| *d >= from && (*d < to || b + 1 == buckets))
                    .map(|(_, lost)| *lost)
                    .collect();
                let _ = writeln!(
                    out,
                    "    {:>5}-{:<5} us  {:>4} kills, {:>3} lost",
                    from.as_micros(),
                    to.as_micros(),
                    here.len(),
                    here.iter().filter(|l| **l).count()
                );
            }
        }
        for e in self.errors.iter().take(5) {
            let _ = writeln!(out, "  error: {e}");
        }
        let _ = writeln!(out, "result: {}", if self.pass() { "PASS" } else { "FAIL" });
        out
    }
}

pub fn run(setup: &Setup, rounds: u64, reply_delay: Duration) -> Report {
    let mut report = Report {
        reply_delay,
        aimed: setup.aim_after_reply,
        ..Report::default()
    };
    let mut family = match new_login(setup) {
        Ok(f) => f,
        Err(e) => {
            report.errors.push(e);
            return report;
        }
    };
    // The span of an unkilled forced refresh (the median of nine), which the kills are spread
    // over, with a margin so that some land after the save.
    let mut spans = Vec::new();
    for _ in 0..9 {
        let started = Instant::now();
        if let Err(e) = tk(setup, &["refresh", "--force"]).and_then(|mut c| {
            c.wait()
                .map_err(|e| e.to_string())
                .and_then(|s| match s.code() {
                    Some(0) => Ok(()),
                    _ => Err(format!("refresh --force ended with {s}")),
                })
        }) {
            report.errors.push(e);
            return report;
        }
        spans.push(started.elapsed());
    }
    spans.sort();
    report.span = spans[spans.len() / 2] * 5 / 4;
    for _ in 0..rounds {
        report.rounds += 1;
        if let Err(e) = round(setup, &mut report, &mut family) {
            report.errors.push(e);
            if report.errors.len() > 5 {
                break;
            }
        }
    }
    report
}

fn round(setup: &Setup, report: &mut Report, family: &mut u64) -> Result<(), String> {
    let (_, before) = read_tokens(setup.creds).ok_or("cannot read the login")?;
    let mut child = tk(setup, &["refresh", "--force"])?;
    let (kill, status) = match setup.aim_after_reply {
        None => {
            thread::sleep(Duration::from_nanos(fastrand::u64(
                0..=report.span.as_nanos() as u64,
            )));
            let exited = child.try_wait().map_err(|e| e.to_string())?.is_some();
            let kill = Instant::now();
            if !exited {
                let _ = child.kill();
            }
            (kill, child.wait().map_err(|e| e.to_string())?)
        }
        Some(most) => {
            let pid = child.id() as i32;
            let after = Duration::from_nanos(fastrand::u64(0..=most.as_nanos() as u64));
            let sent = Arc::new(Mutex::new(None));
            let noted = Arc::clone(&sent);
            setup
                .server
                .after_token_reply(Some(Box::new(move |answered: Instant| {
                    let at = answered + after;
                    while Instant::now() < at {
                        std::hint::spin_loop();
                    }
                    let now = Instant::now();
                    // SAFETY: the pid is our child's, not yet waited for (so not reused).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    *noted.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                })));
            let status = child.wait().map_err(|e| e.to_string());
            setup.server.after_token_reply(None);
            let kill = sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(Instant::now);
            (kill, status?)
        }
    };
    let killed = std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL);
    // A request the process had written before it died is still read and served: give the
    // stand-in time to accept it, then wait for its reply to be sent.
    thread::sleep(Duration::from_millis(20));
    let deadline = Instant::now() + Duration::from_secs(5);
    let presented = loop {
        let presented = presented(setup.server, &before).pop();
        let served = presented.is_none_or(|(_, answered)| answered.is_some());
        if served || Instant::now() >= deadline {
            break presented;
        }
        thread::sleep(Duration::from_millis(2));
    };
    let where_ = if killed {
        landed(kill, presented)
    } else {
        Landed::Missed
    };
    let held = recovery_listing(&setup.state_dir.join("recovery"));
    // What a later run sees: a plain refresh restores a pending recovery file (the login is
    // not due, so it posts nothing).
    let mut settle = tk(setup, &["refresh"])?;
    let settled = settle.wait().map_err(|e| e.to_string())?;
    let (_, now) = read_tokens(setup.creds).ok_or("cannot read the login after the round")?;
    let newest = setup
        .server
        .current_tokens(*family)
        .map(|(_, refresh)| refresh)
        .unwrap_or_default();
    let lost = now != newest;
    let tally = match where_ {
        Landed::Missed => {
            report.missed += 1;
            None
        }
        Landed::BeforeRequest => Some(&mut report.before),
        Landed::InFlight => Some(&mut report.in_flight),
        Landed::AfterReply(d) => {
            report.after_reply.push((d, lost));
            if lost {
                report.lost_after.push((d, held));
            }
            Some(&mut report.after)
        }
    };
    match tally {
        Some(t) => {
            t.kills += 1;
            t.lost += u64::from(lost);
        }
        None if lost => {
            report
                .errors
                .push("a refresh that was not killed lost the login".into());
        }
        None => {}
    }
    if lost {
        *family = new_login(setup)?;
    } else if settled.code() != Some(0) {
        return Err(format!("the refresh after a kill ended with {settled}"));
    }
    Ok(())
}

/// The files in the recovery folder, with their sizes ("empty" when none).
fn recovery_listing(dir: &Path) -> String {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            format!("{} ({size} bytes)", e.file_name().to_string_lossy())
        })
        .collect();
    files.sort();
    if files.is_empty() {
        "empty".into()
    } else {
        files.join(", ")
    }
}

/// A new login, as `claude /login` would write it; its family at the stand-in.
fn new_login(setup: &Setup) -> Result<u64, String> {
    let login = setup.server.issue_login();
    write_creds(
        setup.creds,
        &login.access_token,
        &login.refresh_token,
        LIFETIME_SECS,
    )
    .map_err(|e| format!("cannot write a new login to {}: {e}", path_str(setup.creds)))?;
    Ok(login.family)
}

fn tk(setup: &Setup, args: &[&str]) -> Result<std::process::Child, String> {
    Command::new(setup.tk)
        .args(args)
        .env_clear()
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", setup.tk.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_is_placed_against_the_request_and_its_reply() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(landed(ms(5), None), Landed::BeforeRequest);
        assert_eq!(landed(ms(5), Some((ms(3), None))), Landed::InFlight);
        assert_eq!(landed(ms(5), Some((ms(3), Some(ms(9))))), Landed::InFlight);
        assert_eq!(
            landed(ms(12), Some((ms(3), Some(ms(9))))),
            Landed::AfterReply(Duration::from_millis(3))
        );
    }
}
