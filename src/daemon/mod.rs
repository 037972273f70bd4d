//! The watchdog: keeps every configured login fresh for weeks. For each login it plans one
//! refresh per token lifetime (the margin before expiry, cut to half the lifetime, plus jitter),
//! notices at once when the file changes under it and plans again from the new expiry, backs off
//! after transient failures (the cooldown survives a restart), stops at a dead login until a new
//! one appears, reminds the person when the login itself is about to end, and sends each alert
//! once. Refreshes go through the same protocol as `tokenkeeper refresh`.
//!
//! The loop sleeps in `poll(2)` on inotify and a wake-up pipe (signals), with a timeout to the
//! next planned action: idle, it uses no CPU between wake-ups. A login kept in the macOS
//! Keychain makes no file events, so it is looked at every 30 s as well.
//!
//! One loop ([`run`]) serves both modes through [`Source`]: [`Daemon`] keeps this machine's
//! files, `fleet::daemon::FleetDaemon` the fleet's store. What a look at a login means, and what
//! a refresh's result means, is decided once for both in [`plan`].

pub(crate) mod alert;
pub(crate) mod kept;

pub use kept::Kept;
pub(crate) mod metrics;
pub(crate) mod plan;
pub mod schedule;
pub(crate) mod sd_notify;
pub(crate) mod watch;

use crate::daemon::alert::{Alerter, Event};
use crate::daemon::kept::Settled;
use crate::daemon::watch::{Stamp, WakeFd, Watcher, sleep_until_event};
use crate::error::{Error, ErrorKind};
use crate::keeper::Keeper;
use crate::login::{EpochMs, Login, duration_ms, now_ms};
use crate::mirror::Copies;
use crate::refresh::Want;
use crate::refresh::{self, Action};
use crate::storage::credentials_file::CredentialsFile;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Options {
    /// Refresh when this much is left (cut to half the token's lifetime); None: each login's
    /// own minimum lifetime (`min_ttl`).
    pub refresh_before: Option<Duration>,
    /// Remind the person to log in again when the login ends within this.
    pub login_ending_within: Duration,
}

/// What the signal handlers ask of the loop (they set the flags and write to the pipe).
#[derive(Default)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
    /// Readable when a signal arrived (the read end of a self-pipe), drained by the loop.
    pub wake_fd: Option<WakeFd>,
}

/// The daemon of this machine's files.
pub struct Daemon {
    kept: Kept,
    /// Until the first pass is over: a login found dead then is logged and alerted again, even
    /// when an earlier run alerted it (the person may have missed it, or restarted to see).
    starting: bool,
}

/// Without inotify (or while a folder is missing), look at the files this often.
const FALLBACK_POLL: Duration = Duration::from_secs(5);
/// A login in the Keychain makes no file event when Claude Code (or a new `claude /login`)
/// changes it: look at it this often. Each look runs `security` once.
const KEYCHAIN_POLL: Duration = Duration::from_secs(30);
/// While runs hold leases on the token (`exec --inject env`), ask again this often.
const DEFERRED_RETRY: Duration = Duration::from_secs(30);

impl Daemon {
    /// The daemon of this machine's files, keeping `kept`'s logins.
    pub fn new(kept: Kept) -> Daemon {
        Daemon {
            kept,
            starting: true,
        }
    }
}

/// What the one loop ([`run`]) keeps fresh: this machine's files ([`Daemon`]) or the fleet's
/// store (`fleet::daemon::FleetDaemon`). Each looks at its logins and acts; the loop decides
/// when to look again.
pub trait Source {
    /// The logins it keeps, in order.
    fn logins(&self) -> Vec<&Keeper>;
    /// How many logins it keeps.
    fn count(&self) -> usize {
        self.logins().len()
    }
    /// Looks at login `i` and acts on it; returns when it plans to act next, if ever.
    fn tick_login(&mut self, i: usize, now: EpochMs) -> Option<EpochMs>;
    /// The files whose changes wake the loop.
    fn files(&self) -> Vec<&Path> {
        self.logins().into_iter().map(|k| k.file.path()).collect()
    }
    /// The longest the loop sleeps even with every file watched (a login that makes no file
    /// events, a store without notifications).
    fn look_every(&self, control: &Control) -> Option<Duration>;
    /// New options and logins (on SIGHUP), keeping what is known about each login.
    fn reconfigure(&mut self, options: Options, alerter: Alerter, logins: Vec<Keeper>);
    fn alerter(&self) -> &Alerter;

    /// One pass over every login; returns the earliest time something is planned. `after`
    /// runs right after each login's look (the copies of it are written there).
    fn tick(&mut self, now: EpochMs, after: &mut After<'_>) -> Option<EpochMs> {
        let mut next = None;
        for i in 0..self.count() {
            let at = self.tick_login(i, now);
            next = next.into_iter().chain(at).min();
            let logins = self.logins();
            if i < logins.len() {
                after(i, &logins, self.alerter());
            }
        }
        next
    }
}

/// What runs after each look at login `i`: the source's logins and its alerter.
pub type After<'a> = dyn FnMut(usize, &[&Keeper], &Alerter) + 'a;

/// Runs until `control.stop` is set, writing `copies` right after each look at their login.
/// `on_wake` runs at every wake-up (watchdog pings); `reload` is called when `control.reload`
/// is set.
pub fn run(
    source: &mut dyn Source,
    copies: &mut Copies,
    control: &Control,
    ping_every: Option<Duration>,
    on_wake: &mut dyn FnMut(),
    reload: &mut dyn FnMut(&mut dyn Source, &mut Copies),
) {
    let mut watcher = Watcher::new()
        .map_err(|e| tracing::info!("{e}; looking at the files every 5 s instead"))
        .ok();
    loop {
        if control.stop.load(Ordering::SeqCst) {
            return;
        }
        if control.reload.swap(false, Ordering::SeqCst) {
            reload(source, copies);
        }
        let mut all_watched = watcher.is_some();
        if let Some(w) = watcher.as_mut() {
            for path in source.files() {
                all_watched &= w.watch_file(path);
            }
        }
        let mut after = |i: usize, logins: &[&Keeper], alerter: &Alerter| {
            copies.sync(i, logins[i], logins, alerter);
        };
        let next = source.tick(now_ms(), &mut after);
        on_wake();
        if control.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut wait = next.map(|at| {
            Duration::from_millis(u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0))
        });
        let at_least = [
            (!all_watched).then_some(FALLBACK_POLL),
            source.look_every(control),
            copies.look_every(),
            ping_every,
        ];
        for every in at_least.into_iter().flatten() {
            wait = Some(wait.map_or(every, |w| w.min(every)));
        }
        sleep_until_event(watcher.as_mut(), control.wake_fd, wait);
    }
}

impl Source for Daemon {
    fn logins(&self) -> Vec<&Keeper> {
        self.kept.keepers()
    }

    fn tick_login(&mut self, i: usize, now: EpochMs) -> Option<EpochMs> {
        let stamp = Stamp::of(self.kept.logins[i].keeper.file.path());
        let changed = self.kept.logins[i].stamp != Some(stamp);
        self.kept.logins[i].stamp = Some(stamp);

        let login = match self.read(i) {
            Ok(login) => login,
            Err(e) => {
                if changed {
                    tracing::warn!("{e}");
                }
                let t = &mut self.kept.logins[i];
                t.record.last_error = Some(e.to_string());
                t.record.next_refresh_at = None;
                self.kept.save(i);
                return None;
            }
        };
        self.kept.show_expiry(i, &login);
        let empty = login.refresh_token.is_empty();
        let view = plan::View {
            access: login.access_token.fingerprint(),
            refresh: if empty {
                String::new()
            } else {
                login.refresh_token.fingerprint()
            },
            expires_at: login.expires_at,
            login_expires_at: login.login_expires_at,
            dead: empty,
            not_before: None,
        };
        let step = self.kept.step(i, &view, now);
        if empty {
            self.kept.logins[i].record.last_error = Some(EMPTY.to_string());
        }
        let alerted_dead = step.alerts.contains(&Event::LoginDead);
        for event in step.alerts {
            self.announce(i, event, &login, now);
        }
        if step.next == plan::Next::Stop && self.starting && !alerted_dead {
            // Found dead by an earlier run: say so at start too.
            let t = &self.kept.logins[i];
            let why = t.record.last_error.as_deref().map_or(EMPTY, dead_reason);
            let message = dead_message(&t.keeper.file, why);
            tracing::error!("{message}");
            self.kept.alert(i, Event::LoginDead, message, now);
        }
        match self.kept.settle(i, step.next) {
            Settled::Wake(at) => at,
            Settled::RefreshNow(lead) => self.refresh(i, lead, now),
        }
    }

    fn look_every(&self, _control: &Control) -> Option<Duration> {
        self.kept
            .logins
            .iter()
            .any(|t| t.keeper.file.keychain().is_some())
            .then_some(KEYCHAIN_POLL)
    }

    fn reconfigure(&mut self, options: Options, alerter: Alerter, logins: Vec<Keeper>) {
        self.kept.reconfigure(options, alerter, logins);
    }

    fn alerter(&self) -> &Alerter {
        &self.kept.alerter
    }

    fn tick(&mut self, now: EpochMs, after: &mut After<'_>) -> Option<EpochMs> {
        let mut next = None;
        for i in 0..self.kept.logins.len() {
            let at = Daemon::tick_login(self, i, now);
            next = next.into_iter().chain(at).min();
            after(i, &self.kept.keepers(), &self.kept.alerter);
        }
        self.starting = false;
        next
    }
}

impl Daemon {
    /// Words and sends an alert the plan asked for.
    fn announce(&mut self, i: usize, event: Event, login: &Login, now: EpochMs) {
        let file = &self.kept.logins[i].keeper.file;
        let owner = file.owner();
        let message = match event {
            Event::LoginDead => dead_message(file, EMPTY),
            Event::Recovered => format!(
                "a new {} login appeared in {}; tokenkeeper keeps it fresh again",
                owner.name,
                file.path().display()
            ),
            Event::LoginEnding => format!(
                "the {} login at {} {}; log in again before then with `{}`",
                owner.name,
                file.path().display(),
                kept::ends(login.login_expires_at.unwrap_or(now), now),
                owner.relogin
            ),
            _ => return,
        };
        self.kept.announce(i, event, message, now);
    }

    fn read(&self, i: usize) -> Result<Login, Error> {
        let t = &self.kept.logins[i];
        refresh::parse_current(t.keeper.provider.as_ref(), &t.keeper.file)
    }

    fn refresh(&mut self, i: usize, lead: Duration, now: EpochMs) -> Option<EpochMs> {
        let result = self.kept.logins[i]
            .keeper
            .refresh_if_due(Want::at_least(lead + Duration::from_secs(1)));
        match result {
            Ok(outcome) if outcome.action == Action::Deferred => {
                tracing::info!(
                    "{}: deferred; access token expires {}",
                    self.kept.provider(i),
                    crate::login::format_time(outcome.login.expires_at)
                );
                Some(now.saturating_add(duration_ms(DEFERRED_RETRY)))
            }
            Ok(outcome) => {
                let label = if outcome.action == Action::Adopted {
                    "adopted"
                } else {
                    "refreshed"
                };
                let works_again = format!(
                    "refreshing {} works again",
                    self.kept.logins[i].keeper.file.path().display()
                );
                self.kept.refreshed(i, &outcome, label, works_again, now);
                // Plan the new token at once.
                Some(now)
            }
            Err(e) if e.kind() == ErrorKind::Dead => {
                self.kept.count(i, "dead");
                let fp = self
                    .read(i)
                    .map(|l| l.refresh_token.fingerprint())
                    .unwrap_or_default();
                // The reason alone: the alert says where the login is and what to do.
                let why = match &e {
                    Error::Dead { reason, .. } => reason.clone(),
                    _ => e.to_string(),
                };
                self.kept.logins[i].record.last_error = Some(e.to_string());
                self.kept.set_dead(i, true);
                if plan::mark_dead(&mut self.kept.logins[i].record, &fp) {
                    let message = dead_message(&self.kept.logins[i].keeper.file, &why);
                    tracing::error!("{message}");
                    self.kept.alert(i, Event::LoginDead, message, now);
                }
                self.kept.save(i);
                None
            }
            Err(e) if matches!(e.kind(), ErrorKind::Credentials | ErrorKind::Config) => {
                tracing::warn!("{e}");
                self.kept.logins[i].record.last_error = Some(e.to_string());
                self.kept.save(i);
                None
            }
            Err(e) => Some(self.kept.failed(i, &e, now)),
        }
    }
}

/// Why a login without tokens is dead.
const EMPTY: &str = "its tokens are empty (the login was ended or wiped)";

/// The alert for a dead login, `why` being the reason alone: what happened, then what to do.
fn dead_message(file: &CredentialsFile, why: &str) -> String {
    let why = why.trim_end_matches('.');
    format!(
        "the {} login at {} is dead: {why}. Log in again with {}, and tokenkeeper keeps the new login fresh.",
        file.owner().name,
        file.path().display(),
        file.owner().relogin
    )
}

/// The reason in a dead login's error as recorded (`the login at … is dead: REASON. Log in
/// again with …`), for the alert at start; another text as it is.
fn dead_reason(recorded: &str) -> &str {
    recorded
        .split_once(" is dead: ")
        .map_or(recorded, |(_, rest)| {
            rest.rsplit_once(". Log in again with ")
                .map_or(rest, |(reason, _)| reason)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::metrics::Metrics;
    use crate::storage::state::StateDir;
    use std::time::Instant;

    /// A source whose one login is always due again in 20 ms.
    struct Fake {
        alerter: Alerter,
        ticks: Vec<EpochMs>,
        reconfigured: u32,
    }

    impl Source for Fake {
        fn logins(&self) -> Vec<&Keeper> {
            Vec::new()
        }

        fn count(&self) -> usize {
            1
        }

        fn tick_login(&mut self, _i: usize, now: EpochMs) -> Option<EpochMs> {
            self.ticks.push(now);
            Some(now + 20)
        }

        fn look_every(&self, _control: &Control) -> Option<Duration> {
            None
        }

        fn reconfigure(&mut self, _: Options, _: Alerter, _: Vec<Keeper>) {
            self.reconfigured += 1;
        }

        fn alerter(&self) -> &Alerter {
            &self.alerter
        }
    }

    #[test]
    fn the_loop_reloads_first_wakes_at_the_planned_time_and_stops_when_told() {
        let mut fake = Fake {
            alerter: Alerter::new(None, None, 0),
            ticks: Vec::new(),
            reconfigured: 0,
        };
        let control = Control::default();
        control.reload.store(true, Ordering::SeqCst);
        let stop = Arc::clone(&control.stop);
        let mut wakes = 0;
        let mut on_wake = || {
            wakes += 1;
            if wakes == 3 {
                stop.store(true, Ordering::SeqCst);
            }
        };
        let mut reloads = 0;
        let mut reload = |s: &mut dyn Source, _: &mut Copies| {
            reloads += 1;
            s.reconfigure(
                Options {
                    refresh_before: None,
                    login_ending_within: Duration::ZERO,
                },
                Alerter::new(None, None, 0),
                Vec::new(),
            );
        };
        let started = Instant::now();
        let state = tempfile::tempdir().unwrap();
        let mut copies = Copies::none(Metrics::new(), StateDir::at(state.path().into()));
        run(
            &mut fake,
            &mut copies,
            &control,
            None,
            &mut on_wake,
            &mut reload,
        );
        assert_eq!(reloads, 1);
        assert_eq!(fake.reconfigured, 1);
        assert_eq!(
            fake.ticks.len(),
            3,
            "one tick per wake, none after the stop"
        );
        assert!(
            fake.ticks.windows(2).all(|w| w[1] >= w[0] + 20),
            "woke before the planned time: {:?}",
            fake.ticks
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "slept past the planned time: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_dead_logins_alert_says_what_happened_then_what_to_do_once_each() {
        let recorded = "the login at /h/.claude/.credentials.json is dead: the server rejected \
                        the refresh token (invalid_grant). Log in again with `claude /login`.";
        let why = dead_reason(recorded);
        assert_eq!(why, "the server rejected the refresh token (invalid_grant)");
        assert_eq!(dead_reason(EMPTY), EMPTY);
        let file = CredentialsFile::new(
            "/h/.claude/.credentials.json",
            crate::provider::claude::OWNER,
        );
        let message = dead_message(&file, why);
        assert_eq!(message.matches("log in again").count(), 0, "{message}");
        assert_eq!(message.matches("Log in again").count(), 1, "{message}");
        assert_eq!(message.matches("is dead").count(), 1, "{message}");
        assert_eq!(message.matches("/h/.claude/.credentials.json").count(), 1);
    }

    #[test]
    fn a_source_ticks_every_login_and_plans_for_the_earliest() {
        struct Two(Vec<Option<EpochMs>>);
        impl Source for Two {
            fn logins(&self) -> Vec<&Keeper> {
                Vec::new()
            }
            fn count(&self) -> usize {
                self.0.len()
            }
            fn tick_login(&mut self, i: usize, _now: EpochMs) -> Option<EpochMs> {
                self.0[i]
            }
            fn look_every(&self, _control: &Control) -> Option<Duration> {
                None
            }
            fn reconfigure(&mut self, _: Options, _: Alerter, _: Vec<Keeper>) {}
            fn alerter(&self) -> &Alerter {
                unreachable!()
            }
        }
        let mut after = |_: usize, _: &[&Keeper], _: &Alerter| {};
        assert_eq!(
            Two(vec![Some(50), None, Some(30)]).tick(0, &mut after),
            Some(30)
        );
        assert_eq!(Two(vec![None, None]).tick(0, &mut after), None);
    }
}
