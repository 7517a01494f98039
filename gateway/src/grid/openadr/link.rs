//! The VTN link as a small state machine of unix seconds (sans-IO): up, degraded (failing but
//! within the grace period), down (the safe limit applies); when to poll next, with
//! exponential backoff after failures so an unreachable VTN is never hammered.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// No poll has succeeded yet, and the grace period has not run out.
    Connecting,
    /// The last poll succeeded.
    Up,
    /// Polls are failing, but the last success is within the grace period.
    Degraded,
    /// No successful poll for longer than the grace period.
    Down,
}

#[derive(Clone, Debug)]
pub struct Link {
    poll_seconds: f64,
    max_backoff_seconds: f64,
    grace_seconds: f64,
    /// When the VEN started; the grace period runs from here until the first success.
    started_at: f64,
    last_success: Option<f64>,
    consecutive_failures: u32,
}

impl Link {
    pub fn new(now: f64, poll_seconds: f64, max_backoff_seconds: f64, grace_seconds: f64) -> Link {
        Link {
            poll_seconds,
            max_backoff_seconds,
            grace_seconds,
            started_at: now,
            last_success: None,
            consecutive_failures: 0,
        }
    }

    pub fn success(&mut self, now: f64) {
        self.last_success = Some(now);
        self.consecutive_failures = 0;
    }

    pub fn failure(&mut self) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub fn last_success(&self) -> Option<f64> {
        self.last_success
    }

    /// When the link counts as down if nothing succeeds before then.
    pub fn down_at(&self) -> f64 {
        self.last_success.unwrap_or(self.started_at) + self.grace_seconds
    }

    pub fn state(&self, now: f64) -> LinkState {
        match (self.consecutive_failures, self.last_success) {
            (0, Some(_)) => LinkState::Up,
            _ if now >= self.down_at() => LinkState::Down,
            (_, None) => LinkState::Connecting,
            _ => LinkState::Degraded,
        }
    }

    /// Seconds until the next poll: the poll interval while healthy; after n failures the
    /// interval doubled n − 1 times up to the cap, scaled by `jitter` in [0, 1] onto
    /// [50 %, 100 %] so many VENs that lost the same VTN do not return in lockstep.
    pub fn next_delay(&self, jitter: f64) -> f64 {
        if self.consecutive_failures == 0 {
            return self.poll_seconds;
        }
        let doublings = (self.consecutive_failures - 1).min(20);
        let backoff =
            (self.poll_seconds * f64::from(1u32 << doublings)).min(self.max_backoff_seconds);
        backoff * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_degraded_down_and_back() {
        let mut link = Link::new(100.0, 1.0, 8.0, 5.0);
        assert_eq!(link.state(100.0), LinkState::Connecting);
        assert_eq!(
            link.state(105.0),
            LinkState::Down,
            "never reached it within the grace"
        );
        link.success(106.0);
        assert_eq!(link.state(106.0), LinkState::Up);
        link.failure();
        assert_eq!(link.state(110.9), LinkState::Degraded);
        assert_eq!(link.state(111.0), LinkState::Down);
        link.success(112.0);
        assert_eq!(link.state(112.0), LinkState::Up);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_jitter_only_shortens() {
        let mut link = Link::new(0.0, 1.0, 8.0, 60.0);
        assert_eq!(link.next_delay(1.0), 1.0);
        let mut full = vec![];
        for _ in 0..6 {
            link.failure();
            full.push(link.next_delay(1.0));
        }
        assert_eq!(full, vec![1.0, 2.0, 4.0, 8.0, 8.0, 8.0]);
        assert_eq!(link.next_delay(0.0), 4.0);
        for _ in 0..100 {
            link.failure();
        }
        assert!(link.next_delay(0.5) <= 8.0 && link.next_delay(0.5) > 0.0);
        link.success(1.0);
        assert_eq!(link.next_delay(0.3), 1.0);
    }
}
