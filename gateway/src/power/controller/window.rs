//! Recent power readings: the controller's feedback signal is the mean of the sensor's
//! (instant) power over a short trailing window, and a reading's age tells whether the
//! sensor is still alive.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct PowerWindow {
    readings: VecDeque<(Instant, f64)>,
}

/// Readings older than this are dropped whatever window is asked for.
const KEEP: Duration = Duration::from_secs(5);

impl PowerWindow {
    /// Records a reading; repeated or out-of-order timestamps and non-finite watts are ignored.
    pub fn push(&mut self, at: Instant, watts: f64) {
        if !watts.is_finite() || self.readings.back().is_some_and(|(last, _)| at <= *last) {
            return;
        }
        self.readings.push_back((at, watts));
        while self
            .readings
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > KEEP)
        {
            self.readings.pop_front();
        }
    }

    /// Mean of the readings within `window` of the newest one (None before the first).
    pub fn mean_watts(&self, window: Duration) -> Option<f64> {
        let &(newest, _) = self.readings.back()?;
        let recent = self
            .readings
            .iter()
            .rev()
            .take_while(|(t, _)| newest.duration_since(*t) <= window);
        let (n, sum) = recent.fold((0u32, 0.0), |(n, s), (_, w)| (n + 1, s + w));
        Some(sum / f64::from(n))
    }

    pub fn newest(&self) -> Option<Instant> {
        self.readings.back().map(|r| r.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_covers_the_window_and_ignores_stale_or_bad_readings() {
        let t0 = Instant::now();
        let mut w = PowerWindow::default();
        assert_eq!(w.mean_watts(Duration::from_secs(1)), None);
        for i in 0..10u32 {
            w.push(
                t0 + Duration::from_millis(u64::from(100 * i)),
                f64::from(100 * i),
            );
        }
        w.push(t0 + Duration::from_millis(850), 5000.0); // out of order: ignored
        w.push(t0 + Duration::from_millis(950), f64::NAN); // not a number: ignored
        assert_eq!(w.mean_watts(Duration::from_millis(200)), Some(800.0));
        assert_eq!(w.mean_watts(Duration::from_millis(50)), Some(900.0));
        assert_eq!(w.newest(), Some(t0 + Duration::from_millis(900)));
    }
}
