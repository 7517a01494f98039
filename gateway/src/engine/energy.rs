//! Energy per engine step, and its split over the sequences of the step.
//!
//! The rule (documented for users in the README): a step's energy is shared in proportion to
//! the tokens each sequence ran in it — a prompt chunk of 100 tokens pays 100 shares, a decode
//! step pays 1. On this CPU engine a prompt token and a decode token cost about the same matmul
//! work per token, so equal weights are the honest choice; the shares always add up to the
//! step's energy exactly, so per-request energies add up to what was measured.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use gridserve_models::{SeqId, StepBatch};
use metrics::{counter, gauge, histogram};

use crate::metrics as m;
use crate::power::{EnergySource, PowerSensor};

/// Measures the energy of each step. `begin` runs right before a step, `end` right after.
pub trait StepMeter: Send {
    fn source(&self) -> EnergySource;
    fn begin(&mut self, batch: &StepBatch);
    /// Joules used since `begin`.
    fn end(&mut self, batch: &StepBatch) -> f64;
}

/// A meter over a sensor's monotonic energy counter: the step's energy is the counter's rise.
pub struct SensorMeter {
    sensor: Box<dyn PowerSensor>,
    started_joules: Option<f64>,
    warned: bool,
}

impl SensorMeter {
    pub fn new(sensor: Box<dyn PowerSensor>) -> Self {
        Self {
            sensor,
            started_joules: None,
            warned: false,
        }
    }

    fn read_joules(&mut self) -> Option<f64> {
        match self.sensor.sample() {
            Ok(s) => Some(s.total_energy_joules()),
            Err(e) => {
                if !self.warned {
                    tracing::warn!(
                        "energy sensor failed, steps will report 0 J until it recovers: {e}"
                    );
                    self.warned = true;
                }
                None
            }
        }
    }
}

impl StepMeter for SensorMeter {
    fn source(&self) -> EnergySource {
        self.sensor.source()
    }

    fn begin(&mut self, _batch: &StepBatch) {
        self.started_joules = self.read_joules();
    }

    fn end(&mut self, _batch: &StepBatch) -> f64 {
        let start = self.started_joules.take();
        match (start, self.read_joules()) {
            (Some(a), Some(b)) if b >= a => b - a,
            _ => 0.0,
        }
    }
}

/// The engine's energy books: the meter, each live sequence's running total, and a recent
/// window of generated tokens and joules for `gridserve_output_tokens_per_joule`.
pub struct EnergyBook {
    meter: Box<dyn StepMeter>,
    per_seq: HashMap<SeqId, f64>,
    window: VecDeque<(Instant, usize, f64)>,
    unexported_joules: f64,
}

/// How far back tokens per joule looks.
const WINDOW: Duration = Duration::from_secs(10);

impl EnergyBook {
    pub fn new(meter: Box<dyn StepMeter>) -> Self {
        Self {
            meter,
            per_seq: HashMap::new(),
            window: VecDeque::new(),
            unexported_joules: 0.0,
        }
    }

    pub fn source(&self) -> EnergySource {
        self.meter.source()
    }

    pub fn begin(&mut self, batch: &StepBatch) {
        self.meter.begin(batch);
    }

    /// Books the step: shares its energy out and updates the metrics.
    pub fn end(&mut self, batch: &StepBatch, generated_tokens: usize, now: Instant) {
        let joules = self.meter.end(batch);
        for (seq, share) in apportion(joules, batch) {
            *self.per_seq.entry(seq).or_default() += share;
        }
        let source = self.source().as_str();
        // Prometheus counters here take whole numbers: carry the fraction to the next step,
        // so the exported total lags the true one by under a joule and never drifts.
        self.unexported_joules += joules;
        let whole = self.unexported_joules.floor();
        counter!(m::ENERGY_TOTAL, "source" => source).increment(whole as u64);
        self.unexported_joules -= whole;
        self.window.push_back((now, generated_tokens, joules));
        while self
            .window
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > WINDOW)
        {
            self.window.pop_front();
        }
        let (tokens, window_joules) = self
            .window
            .iter()
            .fold((0usize, 0f64), |(n, j), w| (n + w.1, j + w.2));
        if window_joules > 0.0 {
            gauge!(m::OUTPUT_TOKENS_PER_JOULE, "source" => source)
                .set(tokens as f64 / window_joules);
        }
    }

    /// The sequence's energy so far.
    pub fn of(&self, seq: SeqId) -> f64 {
        self.per_seq.get(&seq).copied().unwrap_or(0.0)
    }

    /// Forgets a finished sequence, returning its total.
    pub fn close(&mut self, seq: SeqId) -> f64 {
        let total = self.per_seq.remove(&seq).unwrap_or(0.0);
        histogram!(m::REQUEST_ENERGY, "source" => self.source().as_str()).record(total);
        total
    }
}

/// Splits `joules` over the batch's sequences in proportion to their tokens.
pub fn apportion(joules: f64, batch: &StepBatch) -> Vec<(SeqId, f64)> {
    let tokens = batch.num_tokens();
    if tokens == 0 {
        return Vec::new();
    }
    batch
        .seqs
        .iter()
        .map(|s| (s.seq, joules * s.tokens.len() as f64 / tokens as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use gridserve_models::SeqStep;

    use super::*;
    use crate::power::{DeviceSample, PowerSample};
    use crate::GatewayError;

    fn batch(lens: &[usize]) -> StepBatch {
        let seqs = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| SeqStep {
                seq: i as u64,
                tokens: vec![1; n],
                start_pos: 0,
                block_table: vec![0],
                sample: true,
            })
            .collect();
        StepBatch { seqs }
    }

    #[test]
    fn shares_follow_tokens_and_add_up() {
        let shares = apportion(10.0, &batch(&[1, 1, 8]));
        assert_eq!(shares, vec![(0, 1.0), (1, 1.0), (2, 8.0)]);
        let total: f64 = apportion(0.37, &batch(&[3, 7, 1, 13]))
            .iter()
            .map(|(_, j)| j)
            .sum();
        assert!((total - 0.37).abs() < 1e-12);
    }

    /// Energy counter that rises by 2 J per sample, failing when asked to.
    struct Counter {
        joules: f64,
        fail: bool,
    }

    impl PowerSensor for Counter {
        fn source(&self) -> EnergySource {
            EnergySource::Estimate
        }
        fn sample(&mut self) -> Result<PowerSample, GatewayError> {
            if self.fail {
                return Err(GatewayError::PowerUnavailable("test".into()));
            }
            self.joules += 2.0;
            let device = DeviceSample {
                device: "cpu".into(),
                power_watts: 1.0,
                energy_joules: self.joules,
                sm_clock_mhz: None,
                power_limit_watts: None,
            };
            Ok(PowerSample {
                at: Instant::now(),
                source: EnergySource::Estimate,
                devices: vec![device],
            })
        }
    }

    #[test]
    fn sensor_meter_reports_the_counter_rise_and_zero_on_failure() {
        let mut meter = SensorMeter::new(Box::new(Counter {
            joules: 0.0,
            fail: false,
        }));
        let b = batch(&[1]);
        meter.begin(&b);
        assert_eq!(meter.end(&b), 2.0);
        let mut failing = SensorMeter::new(Box::new(Counter {
            joules: 0.0,
            fail: true,
        }));
        failing.begin(&b);
        assert_eq!(failing.end(&b), 0.0);
        assert_eq!(failing.source(), EnergySource::Estimate);
    }
}
