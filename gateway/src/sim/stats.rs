//! What the simulation measures while it runs: latency histograms (TTFT, ITL, E2E in µs;
//! an hour of traffic has tens of millions of ITL samples), overall and per priority tier,
//! counters, and time bins of fleet energy, clock, queue sizes and output tokens (the time
//! series period, 1 s for the cap, and 100 ms for step responses and tracking).

use hdrhistogram::Histogram;

use crate::engine::Priority;

/// The fine bins' period: metrics on trailing 1 s averages evaluate them at 10 Hz.
pub const FINE_PERIOD_SECONDS: f64 = 0.1;

/// Latencies up to ~3 hours at 3 significant digits.
const MAX_MICROS: u64 = 10_000_000_000;

/// Sums over one bin of virtual time, all replicas together.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bin {
    pub energy_joules: f64,
    /// Σ clock × GPU-seconds, and the GPU-seconds, for a time-weighted mean clock.
    pub clock_mhz_seconds: f64,
    pub gpu_seconds: f64,
    /// Σ running (waiting) sequences × seconds.
    pub running_seconds: f64,
    pub waiting_seconds: f64,
    pub output_tokens: u64,
}

/// A span of one replica's virtual time at constant power, clock and queue sizes.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub start_seconds: f64,
    pub end_seconds: f64,
    /// Energy of all the replica's GPUs over the span.
    pub energy_joules: f64,
    pub gpus: u32,
    pub clock_mhz: u32,
    pub running: usize,
    pub waiting: usize,
}

/// Fixed-width bins of virtual time from 0.
#[derive(Clone, Debug)]
pub struct Bins {
    pub period_seconds: f64,
    pub bins: Vec<Bin>,
}

impl Bins {
    pub fn new(period_seconds: f64) -> Self {
        Self {
            period_seconds,
            bins: Vec::new(),
        }
    }

    fn bin(&mut self, index: usize) -> &mut Bin {
        if index >= self.bins.len() {
            self.bins.resize(index + 1, Bin::default());
        }
        &mut self.bins[index]
    }

    /// Spreads a span over the bins it overlaps, in proportion to the overlap.
    pub fn add_span(&mut self, s: &Span) {
        let length = s.end_seconds - s.start_seconds;
        if length <= 0.0 {
            return;
        }
        let p = self.period_seconds;
        let mut t = s.start_seconds;
        while t < s.end_seconds {
            let mut index = (t / p).floor() as usize;
            if (index + 1) as f64 * p <= t {
                index += 1; // t / p rounded down across a bin boundary
            }
            let bin_end = (index + 1) as f64 * p;
            let end = bin_end.min(s.end_seconds);
            let dt = end - t;
            let b = self.bin(index);
            b.energy_joules += s.energy_joules * dt / length;
            let gpu_dt = dt * f64::from(s.gpus);
            b.clock_mhz_seconds += f64::from(s.clock_mhz) * gpu_dt;
            b.gpu_seconds += gpu_dt;
            b.running_seconds += s.running as f64 * dt;
            b.waiting_seconds += s.waiting as f64 * dt;
            t = end;
        }
    }

    pub fn add_tokens(&mut self, at_seconds: f64, tokens: u64) {
        let index = (at_seconds / self.period_seconds).floor() as usize;
        self.bin(index).output_tokens += tokens;
    }
}

/// The priority tiers in index order (`tier_index`).
pub const TIERS: [Priority; 3] = [
    Priority::Interactive,
    Priority::Standard,
    Priority::Flexible,
];

pub fn tier_index(p: Priority) -> usize {
    match p {
        Priority::Interactive => 0,
        Priority::Standard => 1,
        Priority::Flexible => 2,
    }
}

pub fn tier_name(p: Priority) -> &'static str {
    match p {
        Priority::Interactive => "interactive",
        Priority::Standard => "standard",
        Priority::Flexible => "flexible",
    }
}

/// One priority tier's latencies.
pub struct TierStats {
    pub ttft: Histogram<u64>,
    pub itl: Histogram<u64>,
    pub completed: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("static histogram bounds are valid")
}

/// Everything recorded over a run.
pub struct Recorder {
    pub ttft: Histogram<u64>,
    pub itl: Histogram<u64>,
    pub e2e: Histogram<u64>,
    /// Per tier, indexed by `tier_index`.
    pub tiers: [TierStats; 3],
    pub arrived: u64,
    pub completed: u64,
    /// Deferred by the policy past their deadline and refused (503 in `serve`).
    pub refused: u64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    /// Bins of the time series period, and 1 s bins for the cap.
    pub series: Bins,
    pub seconds: Bins,
    /// `FINE_PERIOD_SECONDS` bins (energy and clock only are meaningful at this scale).
    pub fine: Bins,
}

impl Recorder {
    pub fn new(timeseries_period_seconds: f64) -> Self {
        let hist = histogram;
        let tier = || TierStats {
            ttft: histogram(),
            itl: histogram(),
            completed: 0,
        };
        Self {
            ttft: hist(),
            itl: hist(),
            e2e: hist(),
            tiers: [tier(), tier(), tier()],
            arrived: 0,
            completed: 0,
            refused: 0,
            prompt_tokens: 0,
            output_tokens: 0,
            series: Bins::new(timeseries_period_seconds),
            seconds: Bins::new(1.0),
            fine: Bins::new(FINE_PERIOD_SECONDS),
        }
    }

    pub fn span(&mut self, span: &Span) {
        self.series.add_span(span);
        self.seconds.add_span(span);
        self.fine.add_span(span);
    }

    /// Output tokens produced by a step that ended at `at_seconds`.
    pub fn tokens(&mut self, at_seconds: f64, tokens: u64) {
        self.output_tokens += tokens;
        self.series.add_tokens(at_seconds, tokens);
    }

    pub fn ttft(&mut self, seconds: f64, tier: Priority) {
        let us = micros(seconds);
        self.ttft.saturating_record(us);
        self.tiers[tier_index(tier)].ttft.saturating_record(us);
    }

    pub fn itl(&mut self, seconds: f64, tier: Priority) {
        let us = micros(seconds);
        self.itl.saturating_record(us);
        self.tiers[tier_index(tier)].itl.saturating_record(us);
    }

    pub fn e2e(&mut self, seconds: f64, tier: Priority) {
        self.e2e.saturating_record(micros(seconds));
        self.tiers[tier_index(tier)].completed += 1;
    }
}

fn micros(seconds: f64) -> u64 {
    (seconds * 1e6).round().max(1.0) as u64
}

/// A percentile in seconds (0 for an empty histogram).
pub fn percentile_seconds(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1e6
    }
}
