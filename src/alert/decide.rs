//! What a receiver should be told about a check now, from its status alone: the failing spell
//! it is in (`failingSinceUnix`) against what the receiver was last told (`alerts`). Because
//! both live in the status, any replica that becomes leader decides the same.

use crate::api::{AlertRecord, HealthCheckStatus};

#[cfg(test)]
use crate::api::Flap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notice {
    /// The check became failing.
    Firing,
    /// Still failing, `repeat` after the last notification.
    Reminder,
    /// The check passes again (or no longer concerns the receiver: deleted, suspended, its
    /// notifications turned off).
    Resolved,
    /// The check changes state too often: this is the one notice until it is stable.
    Flapping,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::Firing => "firing",
            Notice::Reminder => "reminder",
            Notice::Resolved => "resolved",
            Notice::Flapping => "flapping",
        }
    }

    /// Whether the receiver is left with an open alert.
    pub fn is_firing(self) -> bool {
        self != Notice::Resolved
    }
}

/// How a route notifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub send_resolved: bool,
    /// Seconds between reminders; None for none.
    pub repeat_secs: Option<i64>,
    /// A degraded spell (passing, failing only warnings) is news too.
    pub degraded: bool,
}

/// Why a check's failure tells the receiver nothing new just now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hold {
    #[default]
    None,
    /// Its failure is not news for this route (a check it depends on is failing, or the cause
    /// is one the route does not take): no firing, no reminder; what was told stands, and a
    /// recovery is still told.
    Quiet,
    /// A maintenance window: nothing is sent; at its end the state is told as it is then.
    Maintenance,
}

/// Everything but the status that decides a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    pub now_unix: i64,
    /// The check changes too often (by the route's `Flap`).
    pub flapping: bool,
    pub hold: Hold,
    /// The check no longer concerns the receiver (deleted, suspended, opted out): what was
    /// told is resolved.
    pub departed: bool,
}

impl Situation {
    pub fn at(now_unix: i64) -> Self {
        Situation {
            now_unix,
            flapping: false,
            hold: Hold::None,
            departed: false,
        }
    }
}

/// The notice due for a check with this status, given what the receiver was last told; the
/// second value is the failing spell it is about (for a flapping notice while passing, the
/// time of the last change).
pub fn due(
    status: &HealthCheckStatus,
    told: Option<&AlertRecord>,
    policy: Policy,
    s: Situation,
) -> Option<(Notice, i64)> {
    if s.hold == Hold::Maintenance {
        return None;
    }
    let open = told.filter(|t| t.firing);
    if s.departed {
        return open
            .filter(|_| policy.send_resolved)
            .map(|t| (Notice::Resolved, t.since_unix));
    }
    if s.flapping {
        if open.is_some_and(|t| t.flapping) || s.hold == Hold::Quiet {
            return None;
        }
        let since = status
            .alert_spell(policy.degraded)
            .map(|(s, _)| s)
            .or(status.transitions.first().map(|t| t.at_unix))
            .unwrap_or(s.now_unix);
        return Some((Notice::Flapping, since));
    }
    if let Some(t) = open.filter(|t| t.flapping) {
        // Stable again: the state as it is now, once.
        return match status.alert_spell(policy.degraded).map(|(s, _)| s) {
            Some(since) if s.hold == Hold::None => Some((Notice::Firing, since)),
            Some(_) => None,
            None => policy
                .send_resolved
                .then_some((Notice::Resolved, t.since_unix)),
        };
    }
    match (status.alert_spell(policy.degraded).map(|(s, _)| s), told) {
        (Some(since), Some(t)) if t.firing && t.since_unix == since => {
            if s.hold != Hold::None {
                return None;
            }
            let repeat = policy.repeat_secs?;
            (s.now_unix - t.sent_unix >= repeat).then_some((Notice::Reminder, since))
        }
        (Some(_), _) if s.hold != Hold::None => None,
        (Some(since), _) => Some((Notice::Firing, since)),
        (None, Some(t)) if t.firing && policy.send_resolved => {
            Some((Notice::Resolved, t.since_unix))
        }
        (None, _) => None,
    }
}

/// The record to keep once `notice` about `since` reached `receiver`.
pub fn record(
    receiver: &str,
    notice: Notice,
    since: i64,
    degraded: bool,
    now_unix: i64,
) -> AlertRecord {
    AlertRecord {
        receiver: receiver.to_string(),
        since_unix: since,
        firing: notice.is_firing(),
        sent_unix: now_unix,
        flapping: notice == Notice::Flapping,
        degraded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: Policy = Policy {
        send_resolved: true,
        repeat_secs: None,
        degraded: false,
    };

    fn failing(since: i64) -> HealthCheckStatus {
        HealthCheckStatus {
            ok: false,
            failing_since_unix: Some(since),
            ..Default::default()
        }
    }

    fn passing() -> HealthCheckStatus {
        HealthCheckStatus {
            ok: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_degraded_spell_is_news_only_to_routes_that_take_it() {
        let degraded = HealthCheckStatus {
            ok: true,
            standing: Some(crate::api::Standing::Degraded),
            degraded_since_unix: Some(100),
            ..Default::default()
        };
        assert_eq!(due(&degraded, None, NOTIFY, Situation::at(100)), None);
        let takes = Policy {
            degraded: true,
            ..NOTIFY
        };
        assert_eq!(
            due(&degraded, None, takes, Situation::at(100)),
            Some((Notice::Firing, 100))
        );
        let told = record("hook", Notice::Firing, 100, true, 101);
        assert_eq!(due(&degraded, Some(&told), takes, Situation::at(900)), None);
        // Degraded then failing: a new spell, told as such.
        assert_eq!(
            due(&failing(300), Some(&told), takes, Situation::at(300)),
            Some((Notice::Firing, 300))
        );
        // Clean again: the degraded spell is resolved.
        assert_eq!(
            due(&passing(), Some(&told), takes, Situation::at(400)),
            Some((Notice::Resolved, 100))
        );
    }

    #[test]
    fn a_spell_is_told_once_then_its_end_once() {
        let r = "hook";
        // Became failing at 100: told.
        assert_eq!(
            due(&failing(100), None, NOTIFY, Situation::at(100)),
            Some((Notice::Firing, 100))
        );
        let told = record(r, Notice::Firing, 100, false, 101);
        // Still the same spell: nothing, however often asked.
        assert_eq!(
            due(&failing(100), Some(&told), NOTIFY, Situation::at(5000)),
            None
        );
        // Passing again: the end of spell 100, once.
        assert_eq!(
            due(&passing(), Some(&told), NOTIFY, Situation::at(200)),
            Some((Notice::Resolved, 100))
        );
        let told = record(r, Notice::Resolved, 100, false, 201);
        assert_eq!(
            due(&passing(), Some(&told), NOTIFY, Situation::at(300)),
            None
        );
        // A new spell is a new notice.
        assert_eq!(
            due(&failing(400), Some(&told), NOTIFY, Situation::at(400)),
            Some((Notice::Firing, 400))
        );
    }

    #[test]
    fn a_spell_missed_while_recovering_is_still_told() {
        // Told of spell 100; it ended and spell 300 began before the end could be told (a
        // provider down): the new spell is what matters now.
        let told = record("hook", Notice::Firing, 100, false, 101);
        assert_eq!(
            due(&failing(300), Some(&told), NOTIFY, Situation::at(300)),
            Some((Notice::Firing, 300))
        );
    }

    #[test]
    fn without_send_resolved_recovery_is_quiet_and_the_next_spell_still_fires() {
        let quiet = Policy {
            send_resolved: false,
            repeat_secs: None,
            degraded: false,
        };
        let told = record("hook", Notice::Firing, 100, false, 101);
        assert_eq!(
            due(&passing(), Some(&told), quiet, Situation::at(200)),
            None
        );
        assert_eq!(
            due(&failing(300), Some(&told), quiet, Situation::at(300)),
            Some((Notice::Firing, 300))
        );
    }

    #[test]
    fn reminders_come_every_repeat_while_failing() {
        let remind = Policy {
            send_resolved: true,
            repeat_secs: Some(3600),
            degraded: false,
        };
        let told = record("hook", Notice::Firing, 100, false, 100);
        assert_eq!(
            due(&failing(100), Some(&told), remind, Situation::at(3699)),
            None
        );
        assert_eq!(
            due(&failing(100), Some(&told), remind, Situation::at(3700)),
            Some((Notice::Reminder, 100))
        );
        let told = record("hook", Notice::Reminder, 100, false, 3700);
        assert!(told.firing);
        assert_eq!(
            due(&failing(100), Some(&told), remind, Situation::at(7299)),
            None
        );
    }

    #[test]
    fn a_status_from_before_failing_since_uses_the_last_failure() {
        let old = HealthCheckStatus {
            ok: false,
            last_failure_unix: 50,
            ..Default::default()
        };
        assert_eq!(
            due(&old, None, NOTIFY, Situation::at(60)),
            Some((Notice::Firing, 50))
        );
    }

    #[test]
    fn a_passing_check_never_told_anything_stays_quiet() {
        assert_eq!(due(&passing(), None, NOTIFY, Situation::at(1)), None);
    }

    /// Runs a check through `verdicts` (one a second from t=1) and then `stable` more seconds
    /// of its last verdict, scanning each second as the notifier does; the notices sent.
    fn simulate(verdicts: &[bool], stable: i64, policy: Policy) -> Vec<(i64, Notice)> {
        let mut st = passing();
        let mut told: Option<AlertRecord> = None;
        let mut sent = Vec::new();
        let last = *verdicts.last().unwrap();
        let all = verdicts
            .iter()
            .copied()
            .chain(std::iter::repeat_n(last, stable as usize));
        for (i, ok) in all.enumerate() {
            let t = i as i64 + 1;
            st.ok = ok;
            st.track_failing_since(t);
            let s = Situation {
                flapping: st.flapping(t, Flap::DEFAULT),
                ..Situation::at(t)
            };
            if let Some((n, since)) = due(&st, told.as_ref(), policy, s) {
                sent.push((t, n));
                told = Some(record("hook", n, since, false, t));
            }
        }
        sent
    }

    #[test]
    fn a_check_that_alternates_says_it_is_flapping_once_then_its_state_once_stable() {
        // 45 runs in 45 s, failing and passing by turns, then failing for good.
        let verdicts: Vec<bool> = (0..45).map(|i| i % 2 == 1).collect();
        let sent = simulate(&verdicts, 900, NOTIFY);
        let kinds: Vec<Notice> = sent.iter().map(|(_, n)| *n).collect();
        use Notice::*;
        assert_eq!(
            kinds,
            [Firing, Resolved, Firing, Resolved, Flapping, Firing]
        );
        assert!(sent.len() <= 6);
        // Stable: the last change (t=45) has left the 10-minute window, less the four
        // before it.
        let (t, _) = sent[5];
        assert!((600..=650).contains(&t), "{t}");
        // Ending on a pass: the flapping alert is resolved once stable.
        let verdicts: Vec<bool> = (0..46).map(|i| i % 2 == 1).collect();
        let kinds: Vec<Notice> = simulate(&verdicts, 900, NOTIFY)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(
            kinds,
            [Firing, Resolved, Firing, Resolved, Flapping, Resolved]
        );
    }

    #[test]
    fn flap_detection_can_be_turned_off_and_slow_changes_never_flap() {
        let mut st = passing();
        for t in 1..=10 {
            st.ok = t % 2 == 0;
            st.track_failing_since(t * 1000);
        }
        assert!(!st.flapping(10_000, Flap::DEFAULT), "one change per 1000 s");
        assert!(st.flapping(
            10_000,
            Flap {
                window_secs: 5000,
                changes: 5
            }
        ));
        assert!(!st.flapping(
            10_000,
            Flap {
                window_secs: 5000,
                changes: 0
            }
        ));
    }

    #[test]
    fn a_quiet_hold_keeps_failures_back_and_lets_recoveries_through() {
        let quiet = Situation {
            hold: Hold::Quiet,
            ..Situation::at(200)
        };
        assert_eq!(due(&failing(100), None, NOTIFY, quiet), None);
        let told = record("hook", Notice::Firing, 100, false, 101);
        let remind = Policy {
            send_resolved: true,
            repeat_secs: Some(60),
            degraded: false,
        };
        assert_eq!(due(&failing(100), Some(&told), remind, quiet), None);
        assert_eq!(
            due(&passing(), Some(&told), NOTIFY, quiet),
            Some((Notice::Resolved, 100))
        );
        // Released: the failure still there is told.
        assert_eq!(
            due(&failing(100), None, NOTIFY, Situation::at(300)),
            Some((Notice::Firing, 100))
        );
    }

    #[test]
    fn maintenance_holds_everything_and_its_end_tells_the_state_then() {
        let held = Situation {
            hold: Hold::Maintenance,
            ..Situation::at(200)
        };
        let told = record("hook", Notice::Firing, 100, false, 101);
        assert_eq!(due(&failing(150), None, NOTIFY, held), None);
        assert_eq!(due(&passing(), Some(&told), NOTIFY, held), None);
        // After: a failure that began and ended inside the window is not told at all.
        assert_eq!(due(&passing(), None, NOTIFY, Situation::at(300)), None);
        assert_eq!(
            due(&failing(150), None, NOTIFY, Situation::at(300)),
            Some((Notice::Firing, 150))
        );
    }

    #[test]
    fn a_departed_check_resolves_what_was_told_and_nothing_else() {
        let gone = Situation {
            departed: true,
            ..Situation::at(500)
        };
        let told = record("hook", Notice::Firing, 100, false, 101);
        assert_eq!(
            due(&failing(100), Some(&told), NOTIFY, gone),
            Some((Notice::Resolved, 100))
        );
        let resolved = record("hook", Notice::Resolved, 100, false, 501);
        assert_eq!(due(&failing(100), Some(&resolved), NOTIFY, gone), None);
        assert_eq!(due(&failing(100), None, NOTIFY, gone), None);
    }
}
