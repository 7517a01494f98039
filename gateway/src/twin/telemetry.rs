//! Power history and NVML-like telemetry in virtual time: trailing-window power averages (for
//! `power_usage` and for the firmware) and an energy counter that only updates every period.

use std::collections::VecDeque;

/// A span of virtual time at constant power.
#[derive(Clone, Copy, Debug)]
struct Segment {
    start_seconds: f64,
    end_seconds: f64,
    watts: f64,
}

/// Power drawn over virtual time, kept for the longest window anyone averages over.
#[derive(Clone, Debug)]
pub struct PowerHistory {
    segments: VecDeque<Segment>,
    keep_seconds: f64,
    /// Exact ∫P dt since start.
    total_joules: f64,
    /// NVML-like counter: the exact integral, sampled at each multiple of the period.
    counter_joules: f64,
    counter_period_seconds: f64,
    next_counter_update_seconds: f64,
}

impl PowerHistory {
    /// `keep_seconds` must cover the longest window queried; `counter_period_seconds` is how
    /// often the reported energy counter moves (NVML: ≈ 100 ms).
    pub fn new(keep_seconds: f64, counter_period_seconds: f64) -> Self {
        Self {
            segments: VecDeque::new(),
            keep_seconds,
            total_joules: 0.0,
            counter_joules: 0.0,
            counter_period_seconds,
            next_counter_update_seconds: counter_period_seconds,
        }
    }

    /// Appends `[start, end)` at `watts`; segments must be pushed in time order.
    pub fn push(&mut self, start_seconds: f64, end_seconds: f64, watts: f64) {
        if end_seconds <= start_seconds {
            return;
        }
        // Every counter boundary inside this segment latches the integral at that boundary.
        while self.next_counter_update_seconds <= end_seconds {
            let into = (self.next_counter_update_seconds - start_seconds).max(0.0);
            self.counter_joules = self.total_joules + watts * into;
            self.next_counter_update_seconds += self.counter_period_seconds;
        }
        self.total_joules += watts * (end_seconds - start_seconds);
        self.segments.push_back(Segment {
            start_seconds,
            end_seconds,
            watts,
        });
        while let Some(first) = self.segments.front() {
            if first.end_seconds < end_seconds - self.keep_seconds {
                self.segments.pop_front();
            } else {
                break;
            }
        }
    }

    /// Mean power over `[now − window, now]`; before `window` has elapsed, over `[0, now]`.
    pub fn average_watts(&self, now_seconds: f64, window_seconds: f64) -> f64 {
        let from = (now_seconds - window_seconds).max(0.0);
        let span = now_seconds - from;
        if span <= 0.0 {
            return self.segments.back().map_or(0.0, |s| s.watts);
        }
        // Newest first, stopping at the window's start: the firmware asks every period.
        let joules: f64 = self
            .segments
            .iter()
            .rev()
            .take_while(|s| s.end_seconds > from)
            .map(|s| {
                let overlap = s.end_seconds.min(now_seconds) - s.start_seconds.max(from);
                s.watts * overlap.max(0.0)
            })
            .sum();
        joules / span
    }

    /// Exact energy since start, joules.
    pub fn total_joules(&self) -> f64 {
        self.total_joules
    }

    /// The energy counter as NVML would report it (lags the exact value by < one period).
    pub fn counter_joules(&self) -> f64 {
        self.counter_joules
    }
}
