//! What a receiver should be told about a check now, from its status alone: the failing spell
//! it is in (`failingSinceUnix`) against what the receiver was last told (`alerts`). Because
//! both live in the status, any replica that becomes leader decides the same.

use crate::api::{AlertRecord, HealthCheckStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notice {
    /// The check became failing.
    Firing,
    /// Still failing, `repeat` after the last notification.
    Reminder,
    /// The check passes again.
    Resolved,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::Firing => "firing",
            Notice::Reminder => "reminder",
            Notice::Resolved => "resolved",
        }
    }

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
}

/// The notice due for a check with this status, given what the receiver was last told; the
/// second value is the failing spell it is about.
pub fn due(
    status: &HealthCheckStatus,
    told: Option<&AlertRecord>,
    policy: Policy,
    now_unix: i64,
) -> Option<(Notice, i64)> {
    match (status.failing_since(), told) {
        (Some(since), Some(t)) if t.firing && t.since_unix == since => {
            let repeat = policy.repeat_secs?;
            (now_unix - t.sent_unix >= repeat).then_some((Notice::Reminder, since))
        }
        (Some(since), _) => Some((Notice::Firing, since)),
        (None, Some(t)) if t.firing && policy.send_resolved => {
            Some((Notice::Resolved, t.since_unix))
        }
        (None, _) => None,
    }
}

/// The record to keep once `notice` about `since` reached `receiver`.
pub fn record(receiver: &str, notice: Notice, since: i64, now_unix: i64) -> AlertRecord {
    AlertRecord {
        receiver: receiver.to_string(),
        since_unix: since,
        firing: notice.is_firing(),
        sent_unix: now_unix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: Policy = Policy {
        send_resolved: true,
        repeat_secs: None,
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
    fn a_spell_is_told_once_then_its_end_once() {
        let r = "hook";
        // Became failing at 100: told.
        assert_eq!(
            due(&failing(100), None, NOTIFY, 100),
            Some((Notice::Firing, 100))
        );
        let told = record(r, Notice::Firing, 100, 101);
        // Still the same spell: nothing, however often asked.
        assert_eq!(due(&failing(100), Some(&told), NOTIFY, 5000), None);
        // Passing again: the end of spell 100, once.
        assert_eq!(
            due(&passing(), Some(&told), NOTIFY, 200),
            Some((Notice::Resolved, 100))
        );
        let told = record(r, Notice::Resolved, 100, 201);
        assert_eq!(due(&passing(), Some(&told), NOTIFY, 300), None);
        // A new spell is a new notice.
        assert_eq!(
            due(&failing(400), Some(&told), NOTIFY, 400),
            Some((Notice::Firing, 400))
        );
    }

    #[test]
    fn a_spell_missed_while_recovering_is_still_told() {
        // Told of spell 100; it ended and spell 300 began before the end could be told (a
        // provider down): the new spell is what matters now.
        let told = record("hook", Notice::Firing, 100, 101);
        assert_eq!(
            due(&failing(300), Some(&told), NOTIFY, 300),
            Some((Notice::Firing, 300))
        );
    }

    #[test]
    fn without_send_resolved_recovery_is_quiet_and_the_next_spell_still_fires() {
        let quiet = Policy {
            send_resolved: false,
            repeat_secs: None,
        };
        let told = record("hook", Notice::Firing, 100, 101);
        assert_eq!(due(&passing(), Some(&told), quiet, 200), None);
        assert_eq!(
            due(&failing(300), Some(&told), quiet, 300),
            Some((Notice::Firing, 300))
        );
    }

    #[test]
    fn reminders_come_every_repeat_while_failing() {
        let remind = Policy {
            send_resolved: true,
            repeat_secs: Some(3600),
        };
        let told = record("hook", Notice::Firing, 100, 100);
        assert_eq!(due(&failing(100), Some(&told), remind, 3699), None);
        assert_eq!(
            due(&failing(100), Some(&told), remind, 3700),
            Some((Notice::Reminder, 100))
        );
        let told = record("hook", Notice::Reminder, 100, 3700);
        assert!(told.firing);
        assert_eq!(due(&failing(100), Some(&told), remind, 7299), None);
    }

    #[test]
    fn a_status_from_before_failing_since_uses_the_last_failure() {
        let old = HealthCheckStatus {
            ok: false,
            last_failure_unix: 50,
            ..Default::default()
        };
        assert_eq!(due(&old, None, NOTIFY, 60), Some((Notice::Firing, 50)));
    }

    #[test]
    fn a_passing_check_never_told_anything_stays_quiet() {
        assert_eq!(due(&passing(), None, NOTIFY, 1), None);
    }
}
