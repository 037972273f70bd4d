//! What both daemon modes hold and do alike: the logins kept and the record of each (in the
//! state folder), the alerts, the metrics and the options; a look's plan, and what a refresh's
//! success or transient failure means for the record, the metrics, the log and the alerts. Each
//! mode keeps only what is its own (reading the file or the store, its words in alerts).

use crate::daemon::Options;
use crate::daemon::alert::{Alert, Alerter, Event};
use crate::daemon::metrics::Metrics;
use crate::daemon::plan;
use crate::daemon::watch::Stamp;
use crate::error::Error;
use crate::keeper::Keeper;
use crate::login::{EpochMs, Login, now_ms};
use crate::refresh::Outcome;
use crate::storage::state::{DaemonRecord, StateDir};
use std::time::Duration;

/// One login a daemon keeps, and what it knows of it.
pub(crate) struct Tracked {
    pub keeper: Keeper,
    /// Its key in the state folder, and the record kept there (the plan, failures, alerts sent).
    pub key: String,
    pub record: DaemonRecord,
    /// The file's stamp at the last look (the local daemon logs a read error once per change).
    pub stamp: Option<Option<Stamp>>,
    /// The last problem logged, so each is logged once (the fleet daemon).
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub problem: Option<String>,
}

/// What both daemon modes keep of their logins: each one's record and plan, and where alerts,
/// metrics and records go.
pub struct Kept {
    pub(crate) logins: Vec<Tracked>,
    pub(crate) state: StateDir,
    pub(crate) alerter: Alerter,
    pub(crate) metrics: Metrics,
    pub(crate) options: Options,
}

/// `ends 2026-12-10 14:02:05 UTC (in 2d 4h)`: when a login ends, for both daemons' reminder.
pub(crate) fn ends(end: EpochMs, now: EpochMs) -> String {
    format!(
        "ends {} ({})",
        crate::login::format_time(end),
        crate::duration::relative(end.saturating_sub(now))
    )
}

/// What the plan's verdict leaves to a source once the shared part is done: a time to look
/// again (or never), or a refresh to make now for a token wanted `lead` before its expiry.
pub(crate) enum Settled {
    Wake(Option<EpochMs>),
    RefreshNow(Duration),
}

impl Kept {
    /// Does what every source does with the plan's verdict for login `i`: a dead login is marked
    /// and kept so; a later look is recorded. A refresh is left to the source.
    pub(crate) fn settle(&mut self, i: usize, next: plan::Next) -> Settled {
        match next {
            plan::Next::Stop => {
                self.set_dead(i, true);
                self.save(i);
                Settled::Wake(None)
            }
            plan::Next::At(at) => {
                self.save(i);
                Settled::Wake(Some(at))
            }
            plan::Next::RefreshNow(lead) => Settled::RefreshNow(lead),
        }
    }

    /// The logins kept, in order.
    pub(crate) fn keepers(&self) -> Vec<&Keeper> {
        self.logins.iter().map(|t| &t.keeper).collect()
    }

    pub fn new(
        logins: Vec<Keeper>,
        state: StateDir,
        alerter: Alerter,
        metrics: Metrics,
        options: Options,
    ) -> Kept {
        let mut kept = Kept {
            logins: Vec::new(),
            state,
            alerter,
            metrics,
            options,
        };
        kept.set_logins(logins);
        kept
    }

    /// Replaces the logins (on start and on SIGHUP), keeping what is known about each (its
    /// record is read again from the state folder).
    pub(crate) fn set_logins(&mut self, logins: Vec<Keeper>) {
        self.logins = logins
            .into_iter()
            .map(|keeper| {
                let key = StateDir::key(keeper.file.owner().provider, keeper.file.path());
                let record = self.state.read_daemon(&key).unwrap_or_default();
                Tracked {
                    keeper,
                    key,
                    record,
                    stamp: None,
                    problem: None,
                }
            })
            .collect();
    }

    pub(crate) fn reconfigure(&mut self, options: Options, alerter: Alerter, logins: Vec<Keeper>) {
        self.options = options;
        self.alerter = alerter;
        self.set_logins(logins);
    }

    pub(crate) fn provider(&self, i: usize) -> &'static str {
        self.logins[i].keeper.file.owner().provider
    }

    /// The plan's rules for login `i`, under the daemon's options.
    pub(crate) fn rules(&self, i: usize) -> plan::Rules {
        plan::Rules {
            refresh_before: self
                .options
                .refresh_before
                .unwrap_or(self.logins[i].keeper.settings.min_ttl),
            login_ending_within: self.options.login_ending_within,
        }
    }

    /// One look at login `i` (see [`plan::step`]), under the daemon's options.
    pub(crate) fn step(&mut self, i: usize, view: &plan::View, now: EpochMs) -> plan::Step {
        let rules = self.rules(i);
        plan::step(
            &mut self.logins[i].record,
            view,
            &rules,
            now,
            fastrand::f64(),
        )
    }

    /// A refresh came to `outcome`: log it, count it under `label` (with the new expiry, so a
    /// scrape never sees one without the other), and end a run of failures, saying
    /// `works_again` if one was alerted. A new token already due is logged and alerted once.
    pub(crate) fn refreshed(
        &mut self,
        i: usize,
        outcome: &Outcome,
        label: &'static str,
        works_again: String,
        now: EpochMs,
    ) {
        let provider = self.provider(i);
        let what = outcome.action.as_str();
        tracing::info!(
            "{provider}: {}; access token expires {}",
            what.replace('_', " "),
            crate::login::format_time(outcome.login.expires_at)
        );
        let login = &outcome.login;
        self.metrics.update(provider, |m| {
            *m.refresh_total.entry(label).or_default() += 1;
            m.access_expiry = Some(login.expires_at / 1000);
            m.login_expiry = login.login_expires_at.map(|e| e / 1000);
        });
        let refresh_before = self.rules(i).refresh_before;
        let got = plan::refreshed(
            &mut self.logins[i].record,
            what,
            login.expires_at,
            refresh_before,
            now,
        );
        if got.recovered {
            self.alert(i, Event::Recovered, works_again, now);
        }
        if got.already_due {
            let left = login.expires_at.saturating_sub(now).max(0) / 1000;
            let message = format!(
                "the {} server handed out an access token that expires in {left} s, within the \
                 refresh margin of {}, so it is due as it comes: tokenkeeper refreshes {} at most \
                 once a minute (less often while this goes on); check the server's token \
                 lifetime, or set a shorter margin (refresh_before, or the login's min_ttl)",
                self.logins[i].keeper.file.owner().name,
                crate::duration::human(refresh_before),
                self.logins[i].keeper.file.path().display(),
            );
            tracing::warn!("{provider}: {message}");
            self.alert(i, Event::TokenAlreadyDue, message, now);
        }
        self.save(i);
    }

    /// A refresh failed for now: count it, cool down with backoff, log it, alert once. Returns
    /// when to try again.
    pub(crate) fn failed(&mut self, i: usize, e: &Error, now: EpochMs) -> EpochMs {
        let provider = self.provider(i);
        self.count(i, "failed");
        let retry_after = match e {
            Error::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        };
        let cooldown = plan::failed(
            &mut self.logins[i].record,
            e.to_string(),
            retry_after,
            now,
            fastrand::f64(),
        );
        tracing::warn!(
            "{provider}: {e} (failure {}; next try in {})",
            self.logins[i].record.failures,
            crate::duration::human(cooldown.wait)
        );
        if cooldown.alert {
            self.alert(i, Event::RefreshFailed, e.to_string(), now);
        }
        self.save(i);
        cooldown.until
    }

    /// Counts a refresh that came to `label` (`dead`, `failed`).
    pub(crate) fn count(&self, i: usize, label: &'static str) {
        self.metrics.update(self.provider(i), |m| {
            *m.refresh_total.entry(label).or_default() += 1
        });
    }

    pub(crate) fn set_dead(&self, i: usize, dead: bool) {
        self.metrics.update(self.provider(i), |m| m.dead = dead);
    }

    /// Says what the plan asked to announce: in the log (a dead login as an error, one ending
    /// soon as a warning), as an alert; a recovered login is no longer counted dead.
    pub(crate) fn announce(&mut self, i: usize, event: Event, message: String, now: EpochMs) {
        match event {
            Event::LoginDead => tracing::error!("{message}"),
            Event::LoginEnding => tracing::warn!("{message}"),
            Event::Recovered => self.set_dead(i, false),
            _ => {}
        }
        self.alert(i, event, message, now);
    }

    /// Notes the alert in the login's record (so it is sent once) and sends it.
    pub(crate) fn alert(&mut self, i: usize, event: Event, message: String, now: EpochMs) {
        let t = &mut self.logins[i];
        t.record.alerted.insert(event.as_str().to_string(), now);
        self.alerter.send(Alert {
            event,
            provider: t.keeper.file.owner().provider.to_string(),
            message,
            at: jiff::Timestamp::from_millisecond(now).unwrap_or_else(|_| jiff::Timestamp::now()),
        });
    }

    /// The login's expiry and end, for the metrics.
    pub(crate) fn show_expiry(&self, i: usize, login: &Login) {
        self.metrics.update(self.provider(i), |m| {
            m.access_expiry = Some(login.expires_at / 1000);
            m.login_expiry = login.login_expires_at.map(|e| e / 1000);
        });
    }

    /// Writes the login's record to the state folder, stamped with this process and the time.
    pub(crate) fn save(&mut self, i: usize) {
        let t = &mut self.logins[i];
        t.record.pid = std::process::id();
        t.record.updated_at = now_ms();
        if let Err(e) = self.state.write_daemon(&t.key, &t.record) {
            tracing::debug!("could not write daemon state: {e}");
        }
    }
}
