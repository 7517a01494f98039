//! Turns a raw hardware energy counter (NVML mJ, RAPL µJ) into the monotonic joules that
//! `DeviceSample::energy_joules` promises, whatever the counter does underneath.

use std::time::Instant;

/// What the raw counter did between two reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CounterStep {
    /// The first read: there is nothing to subtract yet, so no energy is counted.
    First,
    /// Moved forward by this many raw units.
    Advanced(u64),
    /// Passed its maximum and started again from zero (RAPL); the delta has been unwrapped.
    Wrapped(u64),
    /// Went backwards with no known range (a driver reload or a reset): the delta is unknown.
    Reset,
}

/// Accumulates a raw counter into monotonic joules. When the counter's delta is unknown (a
/// reset) the interval is filled with the caller's power × elapsed time instead of zero, so
/// the total neither jumps nor loses the interval.
#[derive(Clone, Debug)]
pub(crate) struct EnergyMeter {
    joules_per_unit: f64,
    /// The largest value the counter reaches before wrapping to zero; `None` if it never wraps
    /// (NVML's u64 mJ counter would take millions of years).
    wrap_range: Option<u64>,
    last_raw: Option<u64>,
    last_at: Option<Instant>,
    total_joules: f64,
}

impl EnergyMeter {
    pub(crate) fn new(joules_per_unit: f64, wrap_range: Option<u64>) -> Self {
        Self {
            joules_per_unit,
            wrap_range,
            last_raw: None,
            last_at: None,
            total_joules: 0.0,
        }
    }

    pub(crate) fn total_joules(&self) -> f64 {
        self.total_joules
    }

    /// Seconds since the previous update (0 on the first).
    pub(crate) fn elapsed_seconds(&self, at: Instant) -> f64 {
        self.last_at
            .map_or(0.0, |last| at.saturating_duration_since(last).as_secs_f64())
    }

    /// Feeds one raw read taken at `at`. `watts` is the power to assume over the interval if
    /// the counter reset.
    pub(crate) fn update(&mut self, raw: u64, at: Instant, watts: f64) -> CounterStep {
        let step = match (self.last_raw, self.wrap_range) {
            (None, _) => CounterStep::First,
            (Some(last), _) if raw >= last => CounterStep::Advanced(raw - last),
            // A wrap only makes sense from a value within the range.
            (Some(last), Some(range)) if last <= range => CounterStep::Wrapped(range - last + raw),
            (Some(_), _) => CounterStep::Reset,
        };
        let joules = match step {
            CounterStep::First => 0.0,
            CounterStep::Advanced(d) | CounterStep::Wrapped(d) => d as f64 * self.joules_per_unit,
            CounterStep::Reset => watts.max(0.0) * self.elapsed_seconds(at),
        };
        self.total_joules += joules;
        self.last_raw = Some(raw);
        self.last_at = Some(at);
        step
    }

    /// For devices without a counter: integrates `watts`, taken as the average over the interval
    /// since the previous call, over that interval.
    pub(crate) fn integrate(&mut self, at: Instant, watts: f64) {
        self.total_joules += watts.max(0.0) * self.elapsed_seconds(at);
        self.last_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[test]
    fn millijoules_accumulate_into_joules() {
        let t0 = Instant::now();
        let mut m = EnergyMeter::new(1e-3, None);
        assert_eq!(m.update(5_000_000, t0, 0.0), CounterStep::First);
        assert_eq!(m.total_joules(), 0.0);
        assert_eq!(
            m.update(5_700_000, secs(t0, 1.0), 0.0),
            CounterStep::Advanced(700_000)
        );
        assert!((m.total_joules() - 700.0).abs() < 1e-9);
    }

    #[test]
    fn a_wrap_is_unwrapped_with_the_range() {
        let t0 = Instant::now();
        let mut m = EnergyMeter::new(1e-6, Some(1_000_000));
        m.update(900_000, t0, 0.0);
        // 100_000 µJ up to the range, then 50_000 µJ after the wrap.
        assert_eq!(
            m.update(50_000, secs(t0, 1.0), 0.0),
            CounterStep::Wrapped(150_000)
        );
        assert!((m.total_joules() - 0.15).abs() < 1e-12);
    }

    #[test]
    fn a_reset_fills_the_gap_with_power_times_time_and_stays_monotonic() {
        let t0 = Instant::now();
        let mut m = EnergyMeter::new(1e-3, None);
        m.update(10_000_000, t0, 300.0);
        m.update(10_300_000, secs(t0, 1.0), 300.0);
        assert!((m.total_joules() - 300.0).abs() < 1e-9);
        // The driver restarted its counter: 2 s at 250 W are assumed, never a negative delta.
        assert_eq!(m.update(1_000, secs(t0, 3.0), 250.0), CounterStep::Reset);
        assert!((m.total_joules() - 800.0).abs() < 1e-9);
        // Counting resumes from the new base.
        m.update(201_000, secs(t0, 4.0), 200.0);
        assert!((m.total_joules() - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn a_value_above_the_range_going_backwards_is_a_reset_not_a_wrap() {
        let t0 = Instant::now();
        let mut m = EnergyMeter::new(1e-6, Some(1_000));
        m.update(5_000, t0, 1.0);
        assert_eq!(m.update(10, secs(t0, 2.0), 1.0), CounterStep::Reset);
        assert!((m.total_joules() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn integration_is_power_times_interval() {
        let t0 = Instant::now();
        let mut m = EnergyMeter::new(1.0, None);
        m.integrate(t0, 100.0);
        m.integrate(secs(t0, 0.5), 100.0);
        m.integrate(secs(t0, 2.5), 40.0);
        assert!((m.total_joules() - 130.0).abs() < 1e-9);
    }
}
