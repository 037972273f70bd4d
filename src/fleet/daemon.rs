//! The watchdog of a fleet machine (`tokenkeeper daemon --store URL`). Every machine runs one;
//! each plans the refresh of the shared login from the store's expiry (the margin plus its own
//! jitter, so one machine is first), refreshes through [`fleet_refresh::refresh_if_due`] under the row
//! lock, and writes the store's access token into its own file whenever the store holds a newer
//! one. A machine that loses the race finds the new generation under the lock and makes no
//! request.
//!
//! A listener thread keeps a second connection `LISTEN`ing on the store's channel and wakes the
//! loop at every commit, so each machine's file gets a new access token within moments of the
//! refresh that revoked the old one. While the store cannot be reached, the machine keeps its
//! access token, sends one `store_unreachable` alert, tries again with backoff, and sends
//! `recovered` when it can reach the store again. A store put back to an older version of the
//! login than this machine has seen ([`rollback`](crate::fleet::rollback)) is neither refreshed
//! nor copied into the machine's file: one `store_rolled_back` alert, then `recovered` once a
//! new push appears.
//!
//! It is a [`Source`] of the daemon's one loop (`daemon::run`), and its decisions are the
//! daemon's (`daemon::plan`); what is its own is reading the store, the row-lock refresh, the
//! listener, and the store's troubles.

use crate::daemon::alert::{Alerter, Event};
use crate::daemon::kept::{self, Kept, Settled};
use crate::daemon::metrics::Metrics;
use crate::daemon::plan;
use crate::daemon::{Control, Options, Source};
use crate::error::{Error, ErrorKind, FleetError};
use crate::fleet::Fleet;
use crate::fleet::database::Database;
use crate::fleet::local;
use crate::fleet::refresh::{self as fleet_refresh, Shared};
use crate::fleet::rollback;
use crate::keeper::Keeper;
use crate::login::{EpochMs, duration_ms};
use crate::oauth::backoff::Backoff;
use crate::refresh::Want;
use crate::refresh::{Action, Job};
use crate::storage::state::StateDir;
use std::sync::Arc;
use std::time::Duration;

/// Without a listener (or inotify), look at the store this often.
const FALLBACK_POLL: Duration = Duration::from_secs(5);
/// After a problem a person must fix (no login in the store, a wrong key), look again this often.
const PROBLEM_RETRY: Duration = Duration::from_secs(60);
/// Waits while the store is unreachable: from this, doubling up to 5 min.
const UNREACHABLE_MIN: Duration = Duration::from_secs(2);
const UNREACHABLE: Backoff = Backoff {
    base: UNREACHABLE_MIN,
    cap: Duration::from_secs(5 * 60),
    floor: 0.75,
};
/// The listener's pauses between connections: no jitter, it is one connection per machine.
const LISTENER: Backoff = Backoff {
    base: UNREACHABLE_MIN,
    cap: Duration::from_secs(30),
    floor: 1.0,
};
/// Another machine holds the row lock for longer than we waited: look again soon.
const LOCK_BUSY_RETRY: Duration = Duration::from_secs(5);

/// The store's reachability, for the alert and the backoff.
#[derive(Default)]
struct Reach {
    failures: u32,
    alerted: bool,
}

pub struct FleetDaemon {
    fleet: Arc<Fleet>,
    kept: Kept,
    store: Option<Database>,
    reach: Reach,
    /// The providers whose store was found rolled back (and alerted once).
    rolled_back: std::collections::BTreeSet<&'static str>,
}

impl FleetDaemon {
    /// Runs `f` with the store (connected first, when it is not) and login `i`'s job; `Err` is
    /// a failure to connect, `Ok` what `f` returned.
    fn on_store<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Database, &Fleet, &Job<'_>) -> Result<T, Error>,
    ) -> Result<Result<T, Error>, Error> {
        let fleet = Arc::clone(&self.fleet);
        let store = connected(&mut self.store, &fleet)?;
        let job = self.kept.logins[i].keeper.job();
        Ok(f(store, &fleet, &job))
    }

    fn new(fleet: Arc<Fleet>, kept: Kept) -> FleetDaemon {
        FleetDaemon {
            fleet,
            kept,
            store: None,
            reach: Reach::default(),
            rolled_back: std::collections::BTreeSet::new(),
        }
    }

    /// The daemon of a fleet machine, checked and listening: with no login the fleet can share,
    /// or a store that answers but cannot give this machine its login (no login there, a
    /// wrong key), it refuses to start; an unreachable store is not a reason to refuse (the
    /// machine keeps its token meanwhile).
    pub fn start(
        fleet: Arc<Fleet>,
        logins: Vec<Keeper>,
        state: StateDir,
        alerter: Alerter,
        metrics: Metrics,
        options: Options,
        wake: Box<dyn Fn() + Send>,
    ) -> Result<FleetDaemon, Error> {
        let logins = shared_only(logins);
        if logins.is_empty() {
            return Err(Error::Fleet(FleetError::Config(format!(
                "the daemon has no login to keep in the store {}; pass --provider with one of {}",
                fleet.shown,
                crate::fleet::shape::shared_names()
            ))));
        }
        // A rolled-back store is no reason to refuse either: the daemon alerts and waits for a
        // new push.
        if let Some(crate::keeper::StoreReport { shared: Err(e), .. }) = logins[0].inspect_store()
            && !matches!(&e, Error::Fleet(f) if f.is_unreachable())
            && !rollback::is_rolled_back(&e)
        {
            return Err(e);
        }
        FleetDaemon::listen(Arc::clone(&fleet), wake);
        tracing::info!(
            "fleet daemon started (pid {}) as {}, store {}, keeping {}",
            std::process::id(),
            crate::fleet::shown_machine(
                &format!("'{}'", fleet.machine),
                &crate::fleet::machine_id(&state)
            ),
            fleet.shown,
            logins
                .iter()
                .map(|l| l.file.path().display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let kept = Kept::new(logins, state, alerter, metrics, options);
        Ok(FleetDaemon::new(fleet, kept))
    }

    /// Starts the listener thread: it calls `wake` (which wakes the loop: a byte down its
    /// self-pipe) at every notification on the store's channel, and after every (re)connection,
    /// so the loop looks at the store again.
    pub fn listen(fleet: Arc<Fleet>, wake: Box<dyn Fn() + Send>) {
        let spawned = std::thread::Builder::new()
            .name("fleet-listener".into())
            .spawn(move || {
                let mut failures = 0u32;
                loop {
                    if let Ok(mut store) = fleet_refresh::connect(&fleet).and_then(|mut s| {
                        s.listen()?;
                        Ok(s)
                    }) {
                        failures = 0;
                        wake();
                        while store.wait_for_notification() {
                            wake();
                        }
                        wake();
                    }
                    failures = failures.saturating_add(1);
                    std::thread::sleep(LISTENER.wait(failures, 0.0));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("could not start the store's listener ({e}); looking every 5 s");
        }
    }
}

impl Source for FleetDaemon {
    fn logins(&self) -> Vec<&Keeper> {
        self.kept.keepers()
    }

    fn tick_login(&mut self, i: usize, now: EpochMs) -> Option<EpochMs> {
        let fetched = self.on_store(i, |store, fleet, job| {
            fleet_refresh::fetch_unchecked(store, fleet, job).map(|shared| {
                let checked = rollback::check(fleet, job, &shared);
                (shared, checked)
            })
        });
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(e) => return self.trouble(i, e, now),
        };
        let (shared, newer) = match fetched {
            Ok((_, Err(e))) => {
                self.reachable(now);
                return self.rolled_back(i, &e, now);
            }
            Ok((s, Ok(newer))) => (s, newer),
            Err(e) => return self.trouble(i, e, now),
        };
        self.reachable(now);
        self.rollback_over(i, &shared, now);
        {
            let t = &self.kept.logins[i];
            match local::project(&t.keeper.job(), &shared, None) {
                Ok(true) => tracing::info!(
                    "{}: wrote generation {}'s access token into {}",
                    t.keeper.file.owner().provider,
                    shared.row.generation,
                    t.keeper.file.path().display()
                ),
                Ok(false) => {}
                Err(e) => self.problem(i, &e),
            }
            // Recorded after the file is written: the new access token first.
            if newer {
                let key = fleet_refresh::state_key(&self.fleet, &shared.row.name);
                let job = self.kept.logins[i].keeper.job();
                rollback::record(&job, &key, &rollback::version(&shared));
            }
        }
        self.kept.show_expiry(i, &shared.login);
        let view = plan::View {
            access: shared.login.access_token.fingerprint(),
            refresh: shared.login.refresh_token.fingerprint(),
            expires_at: shared.login.expires_at,
            login_expires_at: shared.login.login_expires_at,
            dead: shared.is_dead(),
            // A failure anywhere in the fleet cools everyone down.
            not_before: shared.row.retry_at.filter(|_| shared.row.failures > 0),
        };
        let step = self.kept.step(i, &view, now);
        for event in step.alerts {
            self.announce(i, event, &shared, now);
        }
        match self.kept.settle(i, step.next) {
            Settled::Wake(at) => at,
            Settled::RefreshNow(lead) => self.refresh(i, lead, now),
        }
    }

    /// Without the listener's wake-ups, look at the store every few seconds.
    fn look_every(&self, control: &Control) -> Option<Duration> {
        control.wake_fd.is_none().then_some(FALLBACK_POLL)
    }

    fn reconfigure(&mut self, options: Options, alerter: Alerter, logins: Vec<Keeper>) {
        self.kept.reconfigure(options, alerter, shared_only(logins));
    }

    fn alerter(&self) -> &Alerter {
        &self.kept.alerter
    }
}

/// The logins the fleet can share (every one with a copy shape: each built-in provider's and
/// each `[[login]]` table's); any other is left out with a warning.
pub fn shared_only(logins: Vec<Keeper>) -> Vec<Keeper> {
    logins
        .into_iter()
        .filter(|l| {
            let shared = crate::fleet::shape::of(l.provider.as_ref()).is_some();
            if !shared {
                tracing::warn!(
                    "{} is not kept by this fleet daemon: it has no access-only form (fleet mode keeps {})",
                    l.file.path().display(),
                    crate::fleet::shape::shared_names()
                );
            }
            shared
        })
        .collect()
}

impl FleetDaemon {
    /// Words and sends an alert the plan asked for.
    fn announce(&mut self, i: usize, event: Event, shared: &Shared, now: EpochMs) {
        let owner = self.kept.logins[i].keeper.file.owner();
        let message = match event {
            Event::LoginDead => {
                let why = shared.row.last_error.as_deref();
                let message = format!(
                    "the fleet's {} login in {} is dead ({}); log in again with {} on one machine and run `tokenkeeper fleet push` there; every machine resumes when the new login appears",
                    owner.name,
                    self.fleet.shown,
                    why.unwrap_or("the server rejected its refresh token"),
                    owner.relogin
                );
                self.kept.logins[i].record.last_error = Some(message.clone());
                message
            }
            Event::Recovered => format!(
                "a new {} login was pushed to {} (generation {}); the fleet keeps it fresh again",
                owner.name, self.fleet.shown, shared.row.generation
            ),
            Event::LoginEnding => format!(
                "the fleet's {} login {}; log in again before then with {} on one machine and run `tokenkeeper fleet push` there",
                owner.name,
                kept::ends(shared.login.login_expires_at.unwrap_or(now), now),
                owner.relogin
            ),
            _ => return,
        };
        self.kept.announce(i, event, message, now);
    }

    fn refresh(&mut self, i: usize, lead: Duration, now: EpochMs) -> Option<EpochMs> {
        let lead = lead + Duration::from_secs(1);
        let result = match self.on_store(i, |store, fleet, job| {
            fleet_refresh::refresh_if_due(store, fleet, job, Want::at_least(lead))
        }) {
            Ok(result) => result,
            Err(e) => return self.trouble(i, e, now),
        };
        let provider = self.kept.logins[i].keeper.file.owner().provider;
        match result {
            Ok(synced) => {
                let t = &self.kept.logins[i];
                match local::project(&t.keeper.job(), &synced.shared, None) {
                    Ok(_) => {}
                    Err(e) => self.problem(i, &e),
                }
                let outcome = crate::refresh::Outcome {
                    action: synced.action,
                    login: synced.shared.login,
                    attempts: synced.attempts,
                };
                let label = match outcome.action {
                    Action::Refreshed | Action::Restored => "refreshed",
                    _ => "adopted",
                };
                let works_again = format!(
                    "refreshing the fleet's {} login works again",
                    self.kept.logins[i].keeper.file.owner().name
                );
                self.kept.refreshed(i, &outcome, label, works_again, now);
                Some(now)
            }
            Err(e) if e.kind() == ErrorKind::LockTimeout => {
                let text = e.to_string();
                let t = &mut self.kept.logins[i];
                if t.problem.as_deref() != Some(text.as_str()) {
                    tracing::info!("{provider}: {text}; looking again every few seconds");
                    t.problem = Some(text);
                }
                Some(now.saturating_add(duration_ms(LOCK_BUSY_RETRY)))
            }
            Err(e @ Error::Fleet(_)) if e.kind() != ErrorKind::Dead => self.trouble(i, e, now),
            Err(e) if e.kind() == ErrorKind::Dead => {
                self.kept.count(i, "dead");
                tracing::error!("{e}");
                // The next pass reads the dead mark from the store and alerts once.
                Some(now)
            }
            Err(e) => Some(self.kept.failed(i, &e, now)),
        }
    }

    /// The store holds an older version of the login than this machine has seen: no refresh,
    /// this machine's file left as it is, one alert; look again later (or at the next write).
    fn rolled_back(&mut self, i: usize, e: &Error, now: EpochMs) -> Option<EpochMs> {
        self.problem(i, e);
        let provider = self.kept.logins[i].keeper.file.owner().provider;
        if self.rolled_back.insert(provider) {
            self.kept
                .alert(i, Event::StoreRolledBack, e.to_string(), now);
        }
        self.kept.save(i);
        Some(now.saturating_add(duration_ms(PROBLEM_RETRY)))
    }

    /// The store holds a login this machine accepts again after a rollback (a new push).
    fn rollback_over(&mut self, i: usize, shared: &Shared, now: EpochMs) {
        let owner = self.kept.logins[i].keeper.file.owner();
        if self.rolled_back.remove(owner.provider) {
            let message = format!(
                "a new {} login was pushed to {} (generation {}) after the store was rolled back; the fleet keeps it fresh again",
                owner.name, self.fleet.shown, shared.row.generation
            );
            tracing::info!("{message}");
            let t = &mut self.kept.logins[i];
            t.problem = None;
            t.record.last_error = None;
            self.kept.alert(i, Event::Recovered, message, now);
        }
    }

    /// A problem with the store: unreachable (keep the local token, alert once, back off), or
    /// one a person must fix (log it once, look again later).
    fn trouble(&mut self, i: usize, e: Error, now: EpochMs) -> Option<EpochMs> {
        let unreachable = matches!(&e, Error::Fleet(f) if f.is_unreachable());
        if !unreachable {
            self.problem(i, &e);
            self.kept.save(i);
            return Some(now.saturating_add(duration_ms(PROBLEM_RETRY)));
        }
        self.store = None;
        self.reach.failures = self.reach.failures.saturating_add(1);
        let wait = UNREACHABLE.wait(self.reach.failures, fastrand::f64());
        let local = crate::refresh::parse_current(
            self.kept.logins[i].keeper.provider.as_ref(),
            &self.kept.logins[i].keeper.file,
        )
        .ok();
        let left = match local.filter(|l| !l.access_token.is_empty()) {
            Some(l) if l.expires_at > now => format!(
                "this machine keeps using its access token, which expires {}",
                crate::login::format_time(l.expires_at)
            ),
            _ => "this machine has no valid access token meanwhile".to_string(),
        };
        if self.reach.failures == 1 {
            tracing::warn!("{e}; {left}");
        } else {
            tracing::debug!("{e}");
        }
        self.kept.logins[i].record.last_error = Some(e.to_string());
        if !self.reach.alerted {
            self.reach.alerted = true;
            let message = format!(
                "cannot reach the fleet's store {}; {left}; tokenkeeper keeps trying",
                self.fleet.shown
            );
            self.kept.alert(i, Event::StoreUnreachable, message, now);
        }
        self.kept.save(i);
        Some(now.saturating_add(duration_ms(wait)))
    }

    fn reachable(&mut self, now: EpochMs) {
        let was = std::mem::take(&mut self.reach);
        if was.failures > 0 {
            tracing::info!("the fleet's store {} is reachable again", self.fleet.shown);
        }
        if was.alerted && !self.kept.logins.is_empty() {
            let message = format!("the fleet's store {} is reachable again", self.fleet.shown);
            self.kept.alert(0, Event::Recovered, message, now);
        }
    }

    fn problem(&mut self, i: usize, e: &Error) {
        let text = e.to_string();
        let t = &mut self.kept.logins[i];
        if t.problem.as_deref() != Some(text.as_str()) {
            tracing::error!("{text}");
            t.problem = Some(text.clone());
        }
        t.record.last_error = Some(text);
        t.record.next_refresh_at = None;
    }
}

/// The daemon's connection, made again when it has broken.
fn connected<'a>(slot: &'a mut Option<Database>, fleet: &Fleet) -> Result<&'a mut Database, Error> {
    if !slot.as_ref().is_some_and(Database::is_usable) {
        *slot = None;
    }
    match slot {
        Some(store) => Ok(store),
        None => Ok(slot.insert(fleet_refresh::connect(fleet)?)),
    }
}
