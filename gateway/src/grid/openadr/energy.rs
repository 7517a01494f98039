//! The energy history reports are made from: the power sensor's monotonic energy counter
//! sampled against unix time, kept for a bounded span, read back as the joules between two
//! instants (interpolated between samples).

use std::collections::VecDeque;

use crate::power::EnergySource;

/// Samples closer than this to the previous one are not kept (the sensor runs at ~10 Hz; one
/// point a second bounds memory at a day's history in ~1.4 MB).
const MIN_SPACING_SECONDS: f64 = 1.0;

pub struct EnergyHistory {
    keep_seconds: f64,
    /// (unix seconds, cumulative joules), time-ordered.
    points: VecDeque<(f64, f64)>,
    /// Added to the counter after a sensor restart, so the series never steps down.
    offset_joules: f64,
    last_raw: Option<f64>,
    pub source: Option<EnergySource>,
}

/// Energy measured over a window, and how much of the window the history covered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measured {
    pub joules: f64,
    pub covered_seconds: f64,
}

impl EnergyHistory {
    pub fn new(keep_seconds: f64) -> EnergyHistory {
        EnergyHistory {
            keep_seconds,
            points: VecDeque::new(),
            offset_joules: 0.0,
            last_raw: None,
            source: None,
        }
    }

    /// Records the counter's reading at `unix`. A counter that went backwards (the sensor was
    /// restarted) continues from where it was.
    pub fn push(&mut self, unix: f64, counter_joules: f64, source: EnergySource) {
        if let Some(last) = self.last_raw {
            if counter_joules < last {
                self.offset_joules += last;
            }
        }
        self.last_raw = Some(counter_joules);
        self.source = Some(source);
        let value = counter_joules + self.offset_joules;
        let len = self.points.len();
        match self.points.back_mut() {
            Some(back) if unix <= back.0 => return,
            Some(back) if unix - back.0 < MIN_SPACING_SECONDS && len > 1 => {
                // Move the newest point forward instead of adding one: the series stays
                // exact at its ends, coarse only in between.
                *back = (unix, value);
            }
            _ => self.points.push_back((unix, value)),
        }
        while self
            .points
            .front()
            .is_some_and(|f| f.0 < unix - self.keep_seconds)
        {
            self.points.pop_front();
        }
    }

    /// Joules between `from` and `to`, over the part of the window the history covers;
    /// `None` if it covers none of it.
    pub fn between(&self, from: f64, to: f64) -> Option<Measured> {
        let first = self.points.front()?.0;
        let last = self.points.back()?.0;
        let (a, b) = (from.max(first), to.min(last));
        if b <= a {
            return None;
        }
        Some(Measured {
            joules: self.at(b) - self.at(a),
            covered_seconds: b - a,
        })
    }

    /// The counter at `t` (within the history), linearly interpolated.
    fn at(&self, t: f64) -> f64 {
        let i = self.points.partition_point(|p| p.0 <= t);
        match (i.checked_sub(1).map(|j| self.points[j]), self.points.get(i)) {
            (Some((t0, e0)), Some(&(t1, e1))) if t1 > t0 => e0 + (e1 - e0) * (t - t0) / (t1 - t0),
            (Some((_, e0)), _) => e0,
            (None, Some(&(_, e1))) => e1,
            (None, None) => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joules_between_two_instants_interpolate_and_clip_to_the_history() {
        let mut h = EnergyHistory::new(3600.0);
        assert_eq!(h.between(0.0, 10.0), None);
        // 100 W for 10 s, sampled every 2 s.
        for k in 0..=5 {
            h.push(100.0 + 2.0 * k as f64, 200.0 * k as f64, EnergySource::Twin);
        }
        let m = h.between(101.0, 107.0).unwrap();
        assert!((m.joules - 600.0).abs() < 1e-9, "{m:?}");
        assert_eq!(m.covered_seconds, 6.0);
        // A window that starts before the history: only the covered part is measured.
        let m = h.between(90.0, 110.0).unwrap();
        assert_eq!((m.joules, m.covered_seconds), (1000.0, 10.0));
        assert_eq!(h.between(111.0, 120.0), None);
    }

    #[test]
    fn a_counter_reset_does_not_lose_energy_and_old_points_expire() {
        let mut h = EnergyHistory::new(10.0);
        h.push(0.0, 500.0, EnergySource::Nvml);
        h.push(5.0, 1000.0, EnergySource::Nvml);
        h.push(8.0, 100.0, EnergySource::Nvml); // restarted sensor
        assert_eq!(h.between(0.0, 8.0).unwrap().joules, 600.0);
        h.push(12.0, 150.0, EnergySource::Nvml);
        h.push(20.0, 200.0, EnergySource::Nvml);
        // Points older than 10 s before the newest are gone: the history starts at 12 s.
        assert_eq!(h.between(0.0, 20.0).unwrap().covered_seconds, 8.0);
    }
}
