//! How a run answered its envelope, from the 100 ms power series:
//! - step-down response: for every decrease of the cap, the time from the moment the new cap is
//!   in force (a step, or the end of a ramp) until the trailing 1 s average power is at or
//!   under it, evaluated every 100 ms;
//! - tracking (for regulation signals): the Pearson correlation of the 1 s average power with
//!   the 1 s average cap, and the delay — the lag of power behind the cap (0–10 s in 100 ms
//!   steps) that maximizes it, as PJM scores regulation.

use serde::Serialize;

use super::envelope::{Decrease, Envelope};

/// Windows of this many seconds: "the 1 s average".
pub const WINDOW_SECONDS: f64 = 1.0;
/// Longest delay searched for the tracking correlation.
pub const MAX_DELAY_SECONDS: f64 = 10.0;

/// One decrease of the cap and how long the trailing 1 s average took to get under it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StepResponse {
    pub at_seconds: f64,
    pub cap_watts: f64,
    /// Seconds until the trailing average was at or under the cap; when it never was before
    /// the cap changed again (or the run ended), the time available (a lower bound).
    pub response_seconds: f64,
    /// False when the trailing average never got under the cap.
    pub reached: bool,
    /// The trailing average was above the new cap when it took effect.
    pub binding: bool,
}

/// All step-down responses of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepDownSummary {
    pub decreases: usize,
    pub binding: usize,
    pub not_reached: usize,
    pub p50_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
}

/// Correlation of power with the cap signal.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tracking {
    /// The highest correlation over the delays searched.
    pub correlation: f64,
    /// The delay of power behind the cap that gives it.
    pub delay_seconds: f64,
    /// The correlation without any delay.
    pub correlation_at_zero_delay: f64,
    /// 1 s windows (taken every 100 ms) that were compared.
    pub samples: usize,
}

/// Mean of `xs[from..to]` (clipped to the series), if any element is in range.
fn mean(xs: &[f64], from: usize, to: usize) -> Option<f64> {
    let to = to.min(xs.len());
    (from < to).then(|| xs[from..to].iter().sum::<f64>() / (to - from) as f64)
}

/// Step responses of `power` (mean watts of consecutive `period`-second bins from t = 0) to
/// each decrease; a decrease is followed at most until `min(until, end_seconds)`.
pub fn step_responses(
    power: &[f64],
    period: f64,
    decreases: &[Decrease],
    end_seconds: f64,
) -> Vec<StepResponse> {
    let window = (WINDOW_SECONDS / period).round().max(1.0) as usize;
    let mut out = Vec::with_capacity(decreases.len());
    for d in decreases {
        if d.at_seconds >= end_seconds {
            continue;
        }
        let stop = d.until_seconds.min(end_seconds);
        // Evaluate at bin edges k·period from the first edge at or after the decrease.
        let mut k = (d.at_seconds / period - 1e-9).ceil().max(0.0) as usize;
        let mut response = None;
        let mut binding = None;
        while k as f64 * period <= stop + 1e-9 && k <= power.len() {
            if let Some(avg) = mean(power, k.saturating_sub(window), k) {
                let fits = avg <= d.cap_watts * (1.0 + 1e-9);
                binding.get_or_insert(!fits);
                if fits {
                    response = Some((k as f64 * period - d.at_seconds).max(0.0));
                    break;
                }
            }
            k += 1;
        }
        out.push(StepResponse {
            at_seconds: d.at_seconds,
            cap_watts: d.cap_watts,
            response_seconds: response.unwrap_or(stop - d.at_seconds),
            reached: response.is_some(),
            binding: binding.unwrap_or(true),
        });
    }
    out
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn summarize(responses: &[StepResponse]) -> Option<StepDownSummary> {
    if responses.is_empty() {
        return None;
    }
    let mut t: Vec<f64> = responses.iter().map(|r| r.response_seconds).collect();
    t.sort_by(f64::total_cmp);
    Some(StepDownSummary {
        decreases: responses.len(),
        binding: responses.iter().filter(|r| r.binding).count(),
        not_reached: responses.iter().filter(|r| !r.reached).count(),
        p50_seconds: percentile(&t, 0.50),
        p99_seconds: percentile(&t, 0.99),
        max_seconds: t[t.len() - 1],
    })
}

/// Pearson correlation; None when either side is constant or there are fewer than 2 pairs.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len().min(b.len());
    if n < 2 {
        return None;
    }
    let (ma, mb) = (
        a[..n].iter().sum::<f64>() / n as f64,
        b[..n].iter().sum::<f64>() / n as f64,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (x, y) = (a[i] - ma, b[i] - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    let denominator = (saa * sbb).sqrt();
    (denominator > 1e-12 * n as f64).then(|| sab / denominator)
}

/// Trailing-free moving means: `out[k]` = mean of `xs[k..k + window]`, for every full window.
fn moving_means(xs: &[f64], window: usize) -> Vec<f64> {
    if xs.len() < window || window == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(xs.len() - window + 1);
    let mut sum: f64 = xs[..window].iter().sum();
    out.push(sum / window as f64);
    for k in window..xs.len() {
        sum += xs[k] - xs[k - window];
        out.push(sum / window as f64);
    }
    out
}

/// Correlation of 1 s average power with the 1 s average cap, both taken every `period`
/// seconds over the bins where `cap` is in force (`cap[k]` = the cap at bin k's midpoint), and
/// the delay (0..=`max_delay_seconds`, step `period`) of power that maximizes it.
pub fn tracking(
    power: &[f64],
    cap: &[Option<f64>],
    period: f64,
    max_delay_seconds: f64,
) -> Option<Tracking> {
    let n = power.len().min(cap.len());
    let first = cap[..n].iter().position(Option::is_some)?;
    let last = cap[..n].iter().rposition(Option::is_some)? + 1;
    if cap[first..last].iter().any(Option::is_none) {
        return None; // a gap in the cap: not a signal to track
    }
    let window = (WINDOW_SECONDS / period).round().max(1.0) as usize;
    let caps: Vec<f64> = cap[first..last].iter().map(|c| c.unwrap_or(0.0)).collect();
    let cap_avg = moving_means(&caps, window);
    let power_avg = moving_means(&power[first..n], window);
    let max_lag = (max_delay_seconds / period).round() as usize;
    let mut best: Option<(f64, usize)> = None;
    let mut at_zero = None;
    let mut samples = 0;
    for lag in 0..=max_lag {
        // cap_avg[k] is paired with power_avg[k + lag].
        let m = cap_avg.len().min(power_avg.len().saturating_sub(lag));
        if m < 2 {
            break;
        }
        let Some(r) = pearson(&power_avg[lag..lag + m], &cap_avg[..m]) else {
            continue;
        };
        if lag == 0 {
            at_zero = Some(r);
            samples = m;
        }
        if best.is_none_or(|(b, _)| r > b) {
            best = Some((r, lag));
        }
    }
    let (correlation, lag) = best?;
    Some(Tracking {
        correlation,
        delay_seconds: lag as f64 * period,
        correlation_at_zero_delay: at_zero.unwrap_or(f64::NAN),
        samples,
    })
}

/// The cap at each bin's midpoint.
pub fn cap_series(envelope: &Envelope, bins: usize, period: f64) -> Vec<Option<f64>> {
    (0..bins)
        .map(|k| envelope.cap_at((k as f64 + 0.5) * period))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: f64 = 0.1;

    /// A 100 ms power series: `before` W until `t_drop`, then `after` W.
    fn drop_series(before: f64, after: f64, t_drop: f64, seconds: f64) -> Vec<f64> {
        (0..(seconds / P).round() as usize)
            .map(|k| {
                if (k as f64) * P < t_drop - 1e-9 {
                    before
                } else {
                    after
                }
            })
            .collect()
    }

    fn decrease(at: f64, cap: f64) -> Decrease {
        Decrease {
            at_seconds: at,
            cap_watts: cap,
            until_seconds: f64::INFINITY,
        }
    }

    #[test]
    fn step_response_is_the_time_until_the_trailing_second_fits() {
        // 700 W → 400 W instantly at the step to 490 W: the trailing average fits once
        // 0.7 s of it is the new level (0.3·700 + 0.7·400 = 490).
        let p = drop_series(700.0, 400.0, 10.0, 20.0);
        let r = step_responses(&p, P, &[decrease(10.0, 490.0)], 20.0);
        assert_eq!(r.len(), 1);
        assert!((r[0].response_seconds - 0.7).abs() < 1e-9, "{r:?}");
        assert!(r[0].reached && r[0].binding);
        // Power that only drops 0.5 s after the step: 1.2 s.
        let late = drop_series(700.0, 400.0, 10.5, 20.0);
        let r = step_responses(&late, P, &[decrease(10.0, 490.0)], 20.0);
        assert!((r[0].response_seconds - 1.2).abs() < 1e-9, "{r:?}");
        // Already under the new cap: 0, not binding.
        let low = drop_series(300.0, 300.0, 0.0, 20.0);
        let r = step_responses(&low, P, &[decrease(10.0, 490.0)], 20.0);
        assert_eq!(r[0].response_seconds, 0.0);
        assert!(r[0].reached && !r[0].binding);
        // Never fits before the cap changes again: not reached, the time available.
        let never = drop_series(700.0, 600.0, 10.0, 20.0);
        let d = Decrease {
            until_seconds: 15.0,
            ..decrease(10.0, 490.0)
        };
        let r = step_responses(&never, P, &[d], 20.0);
        assert!(!r[0].reached && r[0].binding);
        assert!((r[0].response_seconds - 5.0).abs() < 1e-9);
        let s = summarize(&r).unwrap();
        assert_eq!((s.decreases, s.binding, s.not_reached), (1, 1, 1));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn step_down_percentiles_are_nearest_rank() {
        let p = drop_series(700.0, 400.0, 10.0, 20.0);
        let mut all = Vec::new();
        for i in 0..100 {
            let mut r = step_responses(&p, P, &[decrease(10.0, 490.0)], 20.0)[0];
            r.response_seconds = f64::from(i) / 100.0;
            all.push(r);
        }
        let s = summarize(&all).unwrap();
        assert!((s.p50_seconds - 0.49).abs() < 1e-12, "{s:?}");
        assert!((s.p99_seconds - 0.98).abs() < 1e-12, "{s:?}");
        assert!((s.max_seconds - 0.99).abs() < 1e-12);
    }

    #[test]
    fn pearson_matches_known_values() {
        let x: Vec<f64> = (0..50).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 3.0 * v + 2.0).collect();
        let z: Vec<f64> = x.iter().map(|v| -v).collect();
        assert!((pearson(&x, &y).unwrap() - 1.0).abs() < 1e-12);
        assert!((pearson(&x, &z).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(pearson(&x, &[1.0; 50]), None);
        // x² on a symmetric range is uncorrelated with x.
        let s: Vec<f64> = (-10..=10).map(f64::from).collect();
        let q: Vec<f64> = s.iter().map(|v| v * v).collect();
        assert!(pearson(&s, &q).unwrap().abs() < 1e-12);
    }

    /// A held random setpoint every 2 s (deterministic LCG), as 100 ms bins.
    fn signal(seconds: f64) -> Vec<f64> {
        let mut state: u64 = 12345;
        let per = (2.0 / P) as usize;
        let n = (seconds / P) as usize;
        let mut out = Vec::with_capacity(n);
        let mut v = 0.0;
        for k in 0..n {
            if k % per == 0 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v = 350.0 + 280.0 * ((state >> 11) as f64 / (1u64 << 53) as f64);
            }
            out.push(v);
        }
        out
    }

    #[test]
    fn tracking_finds_the_delay_and_the_correlation() {
        let cap = signal(600.0);
        let caps: Vec<Option<f64>> = cap.iter().map(|c| Some(*c)).collect();
        // Power follows the cap exactly 1.5 s late.
        let lag = 15;
        let power: Vec<f64> = (0..cap.len())
            .map(|k| if k >= lag { cap[k - lag] * 0.96 } else { 600.0 })
            .collect();
        let t = tracking(&power, &caps, P, MAX_DELAY_SECONDS).unwrap();
        assert!((t.delay_seconds - 1.5).abs() < 1e-9, "{t:?}");
        assert!(t.correlation > 0.99, "{t:?}");
        assert!(t.correlation_at_zero_delay < 0.8, "{t:?}");
        // Power that ignores the cap.
        let flat: Vec<f64> = (0..cap.len()).map(|k| 500.0 + (k % 7) as f64).collect();
        let t = tracking(&flat, &caps, P, MAX_DELAY_SECONDS).unwrap();
        assert!(t.correlation < 0.3, "{t:?}");
        // Power clipped by a cap it only reaches half the time: correlation well under 1.
        let clipped: Vec<f64> = cap.iter().map(|c| c.min(490.0) * 0.96).collect();
        let t = tracking(&clipped, &caps, P, MAX_DELAY_SECONDS).unwrap();
        assert!(
            t.delay_seconds == 0.0 && t.correlation < 0.95 && t.correlation > 0.6,
            "{t:?}"
        );
        // No cap before 100 s: only the capped part counts; a constant cap has nothing to track.
        let mut late = caps.clone();
        for c in late.iter_mut().take(1000) {
            *c = None;
        }
        let t = tracking(&power, &late, P, MAX_DELAY_SECONDS).unwrap();
        assert!((t.delay_seconds - 1.5).abs() < 1e-9, "{t:?}");
        assert!(tracking(&power, &vec![Some(490.0); power.len()], P, 10.0).is_none());
        assert!(tracking(&power, &vec![None; power.len()], P, 10.0).is_none());
    }
}
