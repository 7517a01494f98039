//! Counting how well a cap was kept: power samples are grouped into consecutive 1 s windows;
//! a window whose mean power exceeds the cap in force at its start counts as above the cap.

use std::time::{Duration, Instant};

use crate::grid::Compliance;

const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct ComplianceCounter {
    /// Start of the open window, the cap in force then, and the samples' sum and count.
    open: Option<(Instant, Option<f64>, f64, u32)>,
    counts: Compliance,
}

impl ComplianceCounter {
    /// Adds a sample taken at `at` while `cap_watts` was in force; returns the counts when a
    /// window closed with it.
    pub fn push(&mut self, at: Instant, watts: f64, cap_watts: Option<f64>) -> Option<Compliance> {
        let (start, cap, sum, n) = self.open.get_or_insert((at, cap_watts, 0.0, 0));
        if at.saturating_duration_since(*start) < WINDOW {
            *sum += watts;
            *n += 1;
            return None;
        }
        let (mean, window_cap) = (*sum / f64::from((*n).max(1)), *cap);
        self.open = Some((at, cap_watts, watts, 1));
        self.counts.window_seconds = WINDOW.as_secs_f64();
        if let Some(cap) = window_cap {
            self.counts.windows_capped += 1;
            if mean > cap {
                self.counts.windows_above_cap += 1;
                self.counts.seconds_above_cap += WINDOW.as_secs_f64();
            }
        }
        Some(self.counts.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_over_their_cap_are_counted() {
        let t0 = Instant::now();
        let mut c = ComplianceCounter::default();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Window 1 (cap 100): mean 110 → above. Window 2 (cap 100): mean 90. Window 3: no cap.
        for (ms, w, cap) in [(0, 100.0, Some(100.0)), (500, 120.0, Some(100.0))] {
            assert_eq!(c.push(at(ms), w, cap), None);
        }
        let first = c.push(at(1000), 90.0, Some(100.0)).unwrap();
        assert_eq!((first.windows_capped, first.windows_above_cap), (1, 1));
        c.push(at(1500), 90.0, Some(100.0));
        let second = c.push(at(2000), 500.0, None).unwrap();
        assert_eq!((second.windows_capped, second.windows_above_cap), (2, 1));
        let third = c.push(at(3000), 500.0, None).unwrap();
        assert_eq!((third.windows_capped, third.seconds_above_cap), (2, 1.0));
    }
}
