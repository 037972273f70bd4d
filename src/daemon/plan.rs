//! The daemon's decisions, for both its modes (this machine's files, the fleet's store), as pure
//! steps over a login's [`DaemonRecord`]: what a look at the login means (plan a new token, a
//! dead login, a new login after a dead one, the login ending soon, refresh now or wake later),
//! and what a refresh's result means (reset the failures, or cool down with backoff). Times and
//! randomness are arguments, so every rule is tested without a clock, a file or a store; the
//! daemons do the I/O, word the alerts and send them.

use crate::daemon::alert::Event;
use crate::daemon::schedule;
use crate::login::{EpochMs, duration_ms};
use crate::storage::state::DaemonRecord;
use std::time::Duration;

/// What the daemon sees of a login at one look.
#[derive(Clone, Debug)]
pub struct View {
    /// Fingerprint of the access token.
    pub access: String,
    /// Fingerprint of the refresh token (the caller's spelling of "none" when there is none).
    pub refresh: String,
    pub expires_at: EpochMs,
    pub login_expires_at: Option<EpochMs>,
    /// The login is dead: no refresh token, or one the server rejected.
    pub dead: bool,
    /// No refresh before this (the fleet's shared cool-down after a failure anywhere).
    pub not_before: Option<EpochMs>,
}

/// The daemon's options that decide the plan.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Refresh when this much is left (cut to half the token's lifetime).
    pub refresh_before: Duration,
    /// Remind the person when the login ends within this.
    pub login_ending_within: Duration,
}

/// What to do after a look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing until the login changes (it is dead).
    Stop,
    /// Look again at this time.
    At(EpochMs),
    /// Refresh now, for a token wanted `lead` before its expiry.
    RefreshNow(Duration),
}

/// A look's decisions: the alerts to send (in order) and what next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub alerts: Vec<Event>,
    pub next: Next,
}

/// One look at a login: updates its record and says what to send and what to do next.
/// `jitter` is a random number in [0, 1), used when a token is seen for the first time.
pub fn step(
    record: &mut DaemonRecord,
    view: &View,
    rules: &Rules,
    now: EpochMs,
    jitter: f64,
) -> Step {
    plan_token(record, view, rules.refresh_before, now, jitter);
    let mut alerts = Vec::new();
    // A dead login stays dead until another refresh token appears.
    if view.dead || record.dead_refresh.as_deref() == Some(view.refresh.as_str()) {
        if mark_dead(record, &view.refresh) {
            alerts.push(Event::LoginDead);
        }
        return Step {
            alerts,
            next: Next::Stop,
        };
    }
    if record.dead_refresh.take().is_some() {
        alerts.push(Event::Recovered);
    }
    let last_reminder = record.alerted.get(Event::LoginEnding.as_str()).copied();
    if schedule::login_ending_reminder_due(
        view.login_expires_at,
        now,
        rules.login_ending_within,
        last_reminder,
    ) {
        alerts.push(Event::LoginEnding);
    }
    let lead = lead(record);
    let mut at = schedule::refresh_at(view.expires_at, lead);
    // After a token that came already due, the next refresh waits (see schedule::min_interval).
    let spaced = record
        .refreshed_at
        .map(|last| last.saturating_add(duration_ms(schedule::min_interval(record.due_tokens))))
        .filter(|_| record.due_tokens > 0);
    for later in [
        view.not_before,
        record.cooldown_until.filter(|u| *u > now),
        spaced,
    ]
    .into_iter()
    .flatten()
    {
        at = at.max(later);
    }
    let next = if now < at {
        record.next_refresh_at = Some(at);
        Next::At(at)
    } else {
        Next::RefreshNow(lead)
    };
    Step { alerts, next }
}

/// How long before expiry the current token's plan refreshes it.
pub fn lead(record: &DaemonRecord) -> Duration {
    Duration::from_millis(u64::try_from(record.lead_ms.unwrap_or(0)).unwrap_or(0))
}

/// A token seen for the first time gets its plan: lifetime from when we first saw it, the
/// margin cut to half of that, jitter drawn once (so each machine, and each restart, keeps one).
/// A token already planned is planned again, from when it was first seen, when the margin has
/// changed since (a reloaded configuration takes effect for the current token too).
fn plan_token(
    record: &mut DaemonRecord,
    view: &View,
    refresh_before: Duration,
    now: EpochMs,
    jitter: f64,
) {
    let margin_ms = duration_ms(refresh_before);
    let same_token = record.token.as_deref() == Some(view.access.as_str());
    if same_token && record.lead_ms.is_some() && record.margin_ms.is_none_or(|m| m == margin_ms) {
        record.margin_ms = Some(margin_ms);
        return;
    }
    let seen_at = match record.seen_at {
        Some(seen) if same_token => seen,
        _ => now,
    };
    let lifetime = u64::try_from(view.expires_at.saturating_sub(seen_at))
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    let margin = schedule::margin(refresh_before, lifetime);
    let lead = schedule::lead(margin, jitter);
    record.token = Some(view.access.clone());
    record.seen_at = Some(seen_at);
    record.lead_ms = Some(duration_ms(lead));
    record.margin_ms = Some(margin_ms);
}

/// Marks the login dead for this refresh token; true when it was not already, so the alert is
/// sent once.
pub fn mark_dead(record: &mut DaemonRecord, refresh: &str) -> bool {
    let already = record.dead_refresh.as_deref() == Some(refresh);
    record.dead_refresh = Some(refresh.to_string());
    record.next_refresh_at = None;
    record.cooldown_until = None;
    record.failures = 0;
    record.last_outcome = Some("dead".into());
    record.alerted.remove(Event::RefreshFailed.as_str());
    !already
}

/// What a new token means: alerts to send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// A failure was alerted: say it works again.
    pub recovered: bool,
    /// The new token was already due (the first in a run of them): say the server hands out
    /// tokens too short-lived to keep, and that refreshes are spaced out meanwhile.
    pub already_due: bool,
}

/// A refresh succeeded (or adopted another's) at `now`, bringing a token that expires at
/// `expires_at`: the failures are over. A token already due when it came (see
/// [`schedule::already_due`]) spaces out the next refresh, more with each in a row, so a server
/// that hands out such tokens is not asked again and again.
pub fn refreshed(
    record: &mut DaemonRecord,
    outcome: &str,
    expires_at: EpochMs,
    refresh_before: Duration,
    now: EpochMs,
) -> Refreshed {
    let was_failing = record.failures > 0;
    record.failures = 0;
    record.cooldown_until = None;
    record.last_outcome = Some(outcome.to_string());
    record.last_error = None;
    record.refreshed_at = Some(now);
    let lifetime =
        Duration::from_millis(u64::try_from(expires_at.saturating_sub(now)).unwrap_or(0));
    let due = schedule::already_due(lifetime, refresh_before);
    let key = Event::TokenAlreadyDue.as_str();
    let already_due = if due {
        record.due_tokens = schedule::due_tokens_after(record.due_tokens, lifetime);
        !record.alerted.contains_key(key)
    } else {
        record.due_tokens = 0;
        record.alerted.remove(key);
        false
    };
    Refreshed {
        recovered: was_failing
            && record
                .alerted
                .remove(Event::RefreshFailed.as_str())
                .is_some(),
        already_due,
    }
}

/// A refresh that failed for now: when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cooldown {
    pub until: EpochMs,
    pub wait: Duration,
    /// The first failure since the last alert: send one.
    pub alert: bool,
}

/// A refresh failed for now (`error` said how): one more failure, and a cool-down that backs
/// off, never shorter than the server's `Retry-After`.
pub fn failed(
    record: &mut DaemonRecord,
    error: String,
    retry_after: Option<Duration>,
    now: EpochMs,
    jitter: f64,
) -> Cooldown {
    record.failures = record.failures.saturating_add(1);
    let wait = schedule::backoff(record.failures, retry_after, jitter);
    let until = now.saturating_add(duration_ms(wait));
    record.cooldown_until = Some(until);
    record.next_refresh_at = Some(until);
    record.last_outcome = Some("failed".into());
    record.last_error = Some(error);
    Cooldown {
        until,
        wait,
        alert: !record.alerted.contains_key(Event::RefreshFailed.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const HOUR_D: Duration = Duration::from_secs(3600);

    fn rules() -> Rules {
        Rules {
            refresh_before: Duration::from_secs(3600),
            login_ending_within: Duration::from_secs(3 * 86_400),
        }
    }

    /// [`view`] of a login whose access token is `access`.
    fn holding(access: &str, expires_at: EpochMs) -> View {
        View {
            access: access.into(),
            ..view(expires_at)
        }
    }

    fn view(expires_at: EpochMs) -> View {
        View {
            access: "a1".into(),
            refresh: "r1".into(),
            expires_at,
            login_expires_at: None,
            dead: false,
            not_before: None,
        }
    }

    /// Sends the alerts as a daemon would: noting each in the record.
    fn sent(record: &mut DaemonRecord, step: &Step, now: EpochMs) {
        for event in &step.alerts {
            record.alerted.insert(event.as_str().to_string(), now);
        }
    }

    #[test]
    fn a_token_not_yet_due_wakes_the_daemon_at_its_margin() {
        let mut r = DaemonRecord::default();
        let s = step(&mut r, &view(8 * HOUR), &rules(), 0, 0.0);
        assert_eq!(s.next, Next::At(7 * HOUR));
        assert_eq!(r.next_refresh_at, Some(7 * HOUR));
        assert!(s.alerts.is_empty());
        // The plan is kept: later looks do not draw new jitter.
        let again = step(&mut r, &view(8 * HOUR), &rules(), HOUR, 0.999);
        assert_eq!(again.next, Next::At(7 * HOUR));
    }

    #[test]
    fn a_token_within_its_margin_is_refreshed_now() {
        let mut r = DaemonRecord::default();
        step(&mut r, &view(8 * HOUR), &rules(), 0, 0.0);
        let s = step(&mut r, &view(8 * HOUR), &rules(), 7 * HOUR, 0.0);
        assert_eq!(s.next, Next::RefreshNow(Duration::from_secs(3600)));
        // A short-lived token's margin is cut to half its lifetime.
        let mut short = DaemonRecord::default();
        let s = step(&mut short, &view(HOUR), &rules(), 0, 0.0);
        assert_eq!(s.next, Next::At(30 * MIN));
    }

    #[test]
    fn a_failure_cools_down_with_backoff_and_alerts_once() {
        let mut r = DaemonRecord::default();
        step(&mut r, &view(HOUR), &rules(), 0, 0.0);
        let first = failed(&mut r, "down".into(), None, 40 * MIN, 0.0);
        assert!(first.alert);
        assert_eq!(first.until, 40 * MIN + 30_000);
        r.alerted
            .insert(Event::RefreshFailed.as_str().into(), 40 * MIN);
        let s = step(&mut r, &view(HOUR), &rules(), 40 * MIN + 1, 0.0);
        assert_eq!(
            s.next,
            Next::At(first.until),
            "no attempt while cooling down"
        );
        let second = failed(&mut r, "down".into(), None, first.until, 0.999);
        assert!(!second.alert, "one alert for a run of failures");
        assert!(second.wait > first.wait, "{second:?} after {first:?}");
        assert_eq!(r.failures, 2);
        let honoured = failed(
            &mut r,
            "busy".into(),
            Some(Duration::from_secs(600)),
            0,
            0.0,
        );
        assert!(honoured.wait >= Duration::from_secs(600));
        // Success ends the run, and says so because a failure was alerted.
        let ok = |r: &mut DaemonRecord| refreshed(r, "refreshed", 9 * HOUR, HOUR_D, HOUR);
        assert!(ok(&mut r).recovered);
        assert_eq!((r.failures, r.cooldown_until), (0, None));
        assert!(!ok(&mut r).recovered, "said once");
    }

    #[test]
    fn a_server_handing_out_tokens_already_due_is_asked_at_most_once_a_minute_then_less() {
        let mut r = DaemonRecord::default();
        // The first look refreshes an expiring token at once.
        let s = step(&mut r, &holding("a0", 0), &rules(), 0, 0.0);
        assert_eq!(s.next, Next::RefreshNow(HOUR_D));
        // The server hands out a token that expires as it comes (`expires_in: 0`).
        let got = refreshed(&mut r, "refreshed", 10, HOUR_D, 10);
        assert_eq!(
            got,
            Refreshed {
                recovered: false,
                already_due: true
            }
        );
        r.alerted.insert(Event::TokenAlreadyDue.as_str().into(), 10);
        // Not asked again for a minute, though the token is past due.
        let s = step(&mut r, &holding("a1", 10), &rules(), 20, 0.0);
        assert_eq!(s.next, Next::At(10 + MIN));
        assert_eq!(
            step(&mut r, &holding("a1", 10), &rules(), 10 + MIN, 0.0).next,
            Next::RefreshNow(HOUR_D)
        );
        // Again a token already due: alerted once only, and the wait doubles.
        let again = refreshed(&mut r, "refreshed", 10 + MIN, HOUR_D, 10 + MIN);
        assert!(!again.already_due, "one alert for a run of them");
        let s = step(&mut r, &holding("a2", 10 + MIN), &rules(), 10 + MIN, 0.0);
        assert_eq!(s.next, Next::At(10 + 3 * MIN));
        // A token that lives: back to the plain plan, and a later run alerts again.
        let fine = refreshed(&mut r, "refreshed", 8 * HOUR, HOUR_D, 10 + 3 * MIN);
        assert_eq!(fine, Refreshed::default());
        assert_eq!(r.due_tokens, 0);
        let s = step(
            &mut r,
            &holding("a3", 8 * HOUR),
            &rules(),
            10 + 3 * MIN,
            0.0,
        );
        assert_eq!(s.next, Next::At(7 * HOUR));
        assert!(refreshed(&mut r, "refreshed", 8 * HOUR, HOUR_D, 8 * HOUR).already_due);
    }

    #[test]
    fn a_token_of_a_few_seconds_within_the_margin_waits_a_minute_not_half_its_life() {
        let mut r = DaemonRecord::default();
        // `expires_in: 3` against the hour's margin: due as it comes, alerted once.
        let got = refreshed(&mut r, "refreshed", 3_000, HOUR_D, 0);
        assert!(got.already_due);
        r.alerted.insert(Event::TokenAlreadyDue.as_str().into(), 0);
        // Half its life would be 1.5 s; the next refresh waits a minute instead.
        let s = step(&mut r, &holding("a1", 3_000), &rules(), 10, 0.0);
        assert_eq!(s.next, Next::At(MIN));
        assert!(!refreshed(&mut r, "refreshed", MIN + 3_000, HOUR_D, MIN).already_due);
        let s = step(&mut r, &holding("a2", MIN + 3_000), &rules(), MIN + 10, 0.0);
        assert_eq!(s.next, Next::At(3 * MIN));
    }

    #[test]
    fn a_usable_token_within_the_margin_is_spaced_a_minute_and_never_left_to_expire() {
        let mut r = DaemonRecord::default();
        // Tokens of 10 min against a 15 min margin, many in a row: each is refreshed at half its
        // life, as planned; the wait does not double past the token's expiry.
        let margin = Rules {
            refresh_before: Duration::from_secs(15 * 60),
            ..rules()
        };
        let mut now = 0;
        for (i, access) in ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]
            .iter()
            .enumerate()
        {
            let got = refreshed(
                &mut r,
                "refreshed",
                now + 10 * MIN,
                margin.refresh_before,
                now,
            );
            assert_eq!(got.already_due, i == 0, "alerted once, at {i}");
            r.alerted.insert(Event::TokenAlreadyDue.as_str().into(), 0);
            let s = step(&mut r, &holding(access, now + 10 * MIN), &margin, now, 0.0);
            assert_eq!(s.next, Next::At(now + 5 * MIN), "token {i}");
            now += 5 * MIN;
        }
        assert_eq!(r.due_tokens, 1);
    }

    #[test]
    fn a_margin_asked_for_on_purpose_is_not_a_token_already_due() {
        let mut r = DaemonRecord::default();
        let got = refreshed(&mut r, "refreshed", 1000, Duration::from_millis(500), 0);
        assert_eq!(got, Refreshed::default());
        assert_eq!(r.due_tokens, 0);
    }

    #[test]
    fn a_new_margin_replans_the_current_token_from_when_it_was_first_seen() {
        let mut r = DaemonRecord::default();
        assert_eq!(
            step(&mut r, &view(8 * HOUR), &rules(), 0, 0.0).next,
            Next::At(7 * HOUR)
        );
        let longer = Rules {
            refresh_before: Duration::from_secs(3 * 3600),
            ..rules()
        };
        // Reloaded an hour later: the same token, refreshed 3 h before its expiry now.
        let s = step(&mut r, &view(8 * HOUR), &longer, HOUR, 0.0);
        assert_eq!(s.next, Next::At(5 * HOUR));
        assert_eq!(r.seen_at, Some(0));
        // Cut to half the lifetime as seen first, not what is left.
        let huge = Rules {
            refresh_before: Duration::from_secs(24 * 3600),
            ..rules()
        };
        assert_eq!(
            step(&mut r, &view(8 * HOUR), &huge, 2 * HOUR, 0.0).next,
            Next::At(4 * HOUR)
        );
    }

    #[test]
    fn the_fleets_cool_down_holds_every_machine_back() {
        let mut r = DaemonRecord::default();
        let v = View {
            not_before: Some(2 * HOUR),
            ..view(HOUR)
        };
        assert_eq!(step(&mut r, &v, &rules(), 0, 0.0).next, Next::At(2 * HOUR));
    }

    #[test]
    fn a_dead_login_alerts_once_and_is_not_asked_again_until_a_new_login_appears() {
        let mut r = DaemonRecord {
            failures: 3,
            ..DaemonRecord::default()
        };
        r.alerted.insert(Event::RefreshFailed.as_str().into(), 0);
        let dead = View {
            dead: true,
            ..view(HOUR)
        };
        let s = step(&mut r, &dead, &rules(), 0, 0.0);
        assert_eq!(
            s,
            Step {
                alerts: vec![Event::LoginDead],
                next: Next::Stop
            }
        );
        assert_eq!(r.dead_refresh.as_deref(), Some("r1"));
        assert_eq!((r.failures, r.next_refresh_at), (0, None));
        assert!(!r.alerted.contains_key(Event::RefreshFailed.as_str()));
        sent(&mut r, &s, 0);
        // The same refresh token, even no longer marked as rejected: still dead, no alert.
        let s = step(&mut r, &view(HOUR), &rules(), MIN, 0.0);
        assert_eq!(s.alerts, vec![]);
        assert_eq!(s.next, Next::Stop);
        // A new login: recovered, and planned again.
        let new = View {
            access: "a2".into(),
            refresh: "r2".into(),
            ..view(8 * HOUR)
        };
        let s = step(&mut r, &new, &rules(), 2 * MIN, 0.0);
        assert_eq!(s.alerts, vec![Event::Recovered]);
        assert_eq!(s.next, Next::At(7 * HOUR));
        assert_eq!(r.dead_refresh, None);
    }

    #[test]
    fn the_login_ending_is_reminded_once_a_day() {
        let day = 24 * HOUR;
        let mut r = DaemonRecord::default();
        let ending = View {
            login_expires_at: Some(2 * day),
            ..view(8 * HOUR)
        };
        let s = step(&mut r, &ending, &rules(), 0, 0.0);
        assert_eq!(s.alerts, vec![Event::LoginEnding]);
        sent(&mut r, &s, 0);
        assert_eq!(step(&mut r, &ending, &rules(), HOUR, 0.0).alerts, vec![]);
        assert_eq!(
            step(&mut r, &ending, &rules(), day, 0.0).alerts,
            vec![Event::LoginEnding]
        );
        let far = View {
            login_expires_at: Some(30 * day),
            ..view(8 * HOUR)
        };
        assert_eq!(
            step(&mut DaemonRecord::default(), &far, &rules(), 0, 0.0).alerts,
            vec![]
        );
    }
}
