//! Hotline state machines: heartbeats at the channel's test interval (and at random
//! moments between), up / degraded / down, and FLASH acknowledgement deadlines.
//!
//! A hotline whose heartbeat fails is down at once; a late or slow one is degraded.

use serde::Serialize;

/// A heartbeat slower than this marks the line degraded.
pub const RTT_MS_DEGRADED: i64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LineState {
    /// No heartbeat yet.
    Unknown,
    Up,
    Degraded,
    Down,
}

impl LineState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
    /// For metrics: 1 up, 0.5 degraded, 0 down or unknown.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Up => 1.0,
            Self::Degraded => 0.5,
            Self::Unknown | Self::Down => 0.0,
        }
    }
}

/// One hotline channel seen from one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Monitor {
    pub interval_ms: i64,
    pub last_ok_ms: Option<i64>,
    pub last_rtt_ms: Option<i64>,
    pub last_failure_ms: Option<i64>,
    pub failure: Option<String>,
    pub next_due_ms: i64,
    /// Recent (time, rtt or none for a failure), bounded by `HISTORY_MAX`.
    pub history: Vec<(i64, Option<i64>)>,
}

pub const HISTORY_MAX: usize = 60;

impl Monitor {
    pub fn new(interval_ms: i64, now_ms: i64) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            last_ok_ms: None,
            last_rtt_ms: None,
            last_failure_ms: None,
            failure: None,
            next_due_ms: now_ms,
            history: Vec::new(),
        }
    }

    fn record(&mut self, at: i64, rtt: Option<i64>) {
        self.history.push((at, rtt));
        if self.history.len() > HISTORY_MAX {
            self.history.remove(0);
        }
    }

    /// Schedules the next heartbeat: the regular interval, or sooner at a random moment
    /// (`random` from the caller) so the line is tested when nobody expects it.
    fn schedule(&mut self, now_ms: i64, random: u64) {
        let interval = u64::try_from(self.interval_ms).unwrap_or(1).max(1);
        let offset = if random.is_multiple_of(4) {
            i64::try_from(random / 4 % interval).unwrap_or(0)
        } else {
            self.interval_ms
        };
        self.next_due_ms = now_ms.saturating_add(offset.max(1));
    }

    pub fn on_ok(&mut self, now_ms: i64, rtt_ms: i64, random: u64) {
        self.last_ok_ms = Some(now_ms);
        self.last_rtt_ms = Some(rtt_ms);
        self.failure = None;
        self.record(now_ms, Some(rtt_ms));
        self.schedule(now_ms, random);
    }

    pub fn on_failure(&mut self, now_ms: i64, why: String, random: u64) {
        self.last_failure_ms = Some(now_ms);
        self.failure = Some(why);
        self.record(now_ms, None);
        // Retry a failed line soon, not after a whole interval.
        let retry = (self.interval_ms / 10).clamp(1, 5_000);
        self.schedule(now_ms, random);
        self.next_due_ms = self.next_due_ms.min(now_ms + retry);
    }

    pub fn state(&self, now_ms: i64) -> LineState {
        match (self.last_ok_ms, self.last_failure_ms) {
            (_, Some(f)) if self.last_ok_ms.is_none_or(|ok| f >= ok) => LineState::Down,
            (None, _) => LineState::Unknown,
            (Some(ok), _) => {
                // Missing two intervals without any answer is down; one is degraded.
                let age = now_ms.saturating_sub(ok);
                if age > self.interval_ms.saturating_mul(2) {
                    LineState::Down
                } else if age > self.interval_ms.saturating_add(self.interval_ms / 2)
                    || self.last_rtt_ms.is_some_and(|r| r > RTT_MS_DEGRADED)
                {
                    LineState::Degraded
                } else {
                    LineState::Up
                }
            }
        }
    }

    pub fn due(&self, now_ms: i64) -> bool {
        now_ms >= self.next_due_ms
    }
}

/// Whether an unacknowledged FLASH message received at `received_ms` is past its
/// hotline's deadline at `now_ms`.
pub fn flash_overdue(received_ms: i64, deadline_ms: i64, acked: bool, now_ms: i64) -> bool {
    !acked && now_ms >= received_ms.saturating_add(deadline_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_is_down_at_once_and_recovery_is_up() {
        let mut m = Monitor::new(60_000, 0);
        assert_eq!(m.state(0), LineState::Unknown);
        m.on_ok(1_000, 20, 1);
        assert_eq!(m.state(1_000), LineState::Up);
        m.on_failure(2_000, "connection refused".into(), 1);
        assert_eq!(m.state(2_000), LineState::Down);
        assert!(m.next_due_ms <= 2_000 + 5_000);
        m.on_ok(3_000, 20, 1);
        assert_eq!(m.state(3_000), LineState::Up);
        assert_eq!(m.state(3_000 + 100_000), LineState::Degraded);
        assert_eq!(m.state(3_000 + 130_000), LineState::Down);
        m.on_ok(200_000, 5_000, 1);
        assert_eq!(m.state(200_000), LineState::Degraded);
    }

    #[test]
    fn flash_deadlines() {
        assert!(!flash_overdue(0, 300_000, false, 299_999));
        assert!(flash_overdue(0, 300_000, false, 300_000));
        assert!(!flash_overdue(0, 300_000, true, 900_000));
    }

    #[test]
    fn heartbeats_come_at_the_interval_or_sooner() {
        let mut m = Monitor::new(60_000, 0);
        for r in 0..100u64 {
            m.on_ok(1_000, 5, r.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!(m.next_due_ms > 1_000 && m.next_due_ms <= 61_000);
        }
        assert!(m.history.len() <= HISTORY_MAX);
    }
}
