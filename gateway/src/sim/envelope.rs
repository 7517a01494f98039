//! The power envelope: a fleet-wide cap in watts over time. Sources (exactly one):
//! - `steps = [{ at_seconds, cap_watts | cap_fraction, ramp_seconds? }]`: each value holds until
//!   the next; `ramp_seconds` moves linearly from the cap in force to the new one;
//! - `trace = "file.csv"` (`at_seconds,cap_watts`);
//! - `random_steps = { count, min_fraction, max_fraction, seed, start_seconds? }`: `count`
//!   steps evenly spread from `start_seconds` to the end, each to a uniform random fraction;
//! - `regulation = { center_fraction, amplitude_fraction, period_seconds, seed,
//!   start_seconds? }`: a PJM-RegD-like signal `s` in [−1, 1], a new uniform random setpoint
//!   held for each period, cap = (center + amplitude · s) × reference.
//!
//! Fractions are of `reference_watts` (default: the fleet's rated power, GPUs × the GPU's
//! maximum power limit).

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::scenario::{bad, resolve};
use crate::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvelope {
    reference_watts: Option<f64>,
    steps: Option<Vec<RawStep>>,
    trace: Option<String>,
    random_steps: Option<RawRandomSteps>,
    regulation: Option<RawRegulation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at_seconds: f64,
    cap_watts: Option<f64>,
    cap_fraction: Option<f64>,
    ramp_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRandomSteps {
    count: usize,
    min_fraction: f64,
    max_fraction: f64,
    seed: u64,
    start_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegulation {
    center_fraction: f64,
    amplitude_fraction: f64,
    period_seconds: f64,
    seed: u64,
    start_seconds: Option<f64>,
}

/// What the envelope's values depend on besides its own keys.
#[derive(Clone, Copy, Debug)]
pub struct EnvelopeContext<'a> {
    /// Where a relative `trace` path starts.
    pub base_dir: &'a Path,
    /// `reference_watts` when the scenario leaves it out: the fleet's rated power.
    pub rated_watts: f64,
    /// The scenario's length (generated signals fill it).
    pub duration_seconds: f64,
}

/// Where the cap schedule came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    #[default]
    None,
    Steps,
    Trace,
    RandomSteps,
    Regulation,
}

/// From `at_seconds` the cap moves linearly from `from_watts` to `cap_watts` over
/// `ramp_seconds` (0: at once), then holds until the next segment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    pub at_seconds: f64,
    pub from_watts: f64,
    pub cap_watts: f64,
    pub ramp_seconds: f64,
}

impl Segment {
    /// When the new cap is fully in force.
    pub fn settled_seconds(&self) -> f64 {
        self.at_seconds + self.ramp_seconds
    }
}

/// A decrease of the cap: from `at_seconds` (a step, or the end of a ramp) `cap_watts` is in
/// force until `until_seconds` (the next change, or infinity).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decrease {
    pub at_seconds: f64,
    pub cap_watts: f64,
    pub until_seconds: f64,
}

/// Cap changes in time order; before the first there is no cap.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Envelope {
    segments: Vec<Segment>,
    kind: SignalKind,
    reference_watts: Option<f64>,
}

impl Envelope {
    /// No cap at any time.
    pub fn none() -> Self {
        Self::default()
    }

    /// `(at_seconds, cap_watts)` pairs; must be in time order with positive caps.
    pub fn from_steps(steps: Vec<(f64, f64)>) -> Result<Self, GatewayError> {
        Self::from_ramps(
            "envelope.steps",
            steps.into_iter().map(|(at, cap)| (at, cap, 0.0)).collect(),
        )
    }

    /// `(at_seconds, cap_watts, ramp_seconds)`; a ramp starts from the cap in force at
    /// `at_seconds` (the first change has nothing to ramp from, so it must not ramp). Errors
    /// name `key`.
    pub fn from_ramps(key: &str, steps: Vec<(f64, f64, f64)>) -> Result<Self, GatewayError> {
        let mut out = Self {
            segments: Vec::with_capacity(steps.len()),
            kind: SignalKind::Steps,
            reference_watts: None,
        };
        for (i, &(at, cap, ramp)) in steps.iter().enumerate() {
            if !(at.is_finite() && at >= 0.0) {
                return Err(bad(
                    key,
                    format!("step {i}: at_seconds must be >= 0 (got {at})"),
                ));
            }
            if !(cap.is_finite() && cap > 0.0) {
                return Err(bad(
                    key,
                    format!("step {i}: the cap must be > 0 W (got {cap})"),
                ));
            }
            if !(ramp.is_finite() && ramp >= 0.0) {
                return Err(bad(
                    key,
                    format!("step {i}: ramp_seconds must be >= 0 (got {ramp})"),
                ));
            }
            if i == 0 && ramp > 0.0 {
                return Err(bad(
                    key,
                    "step 0: ramp_seconds needs a cap in force before it to ramp from",
                ));
            }
            if i > 0 && steps[i - 1].0 > at {
                return Err(bad(
                    key,
                    format!("step {i}: at_seconds must not go back in time"),
                ));
            }
            let from = out.cap_at(at).unwrap_or(cap);
            out.segments.push(Segment {
                at_seconds: at,
                from_watts: from,
                cap_watts: cap,
                ramp_seconds: ramp,
            });
        }
        Ok(out)
    }

    pub(super) fn validate(
        raw: &RawEnvelope,
        ctx: &EnvelopeContext<'_>,
    ) -> Result<Self, GatewayError> {
        let reference = match raw.reference_watts {
            Some(w) if !(w.is_finite() && w > 0.0) => {
                return Err(bad(
                    "envelope.reference_watts",
                    format!("must be > 0 (got {w})"),
                ))
            }
            Some(w) => w,
            None => ctx.rated_watts,
        };
        let sources = [
            raw.steps.is_some(),
            raw.trace.is_some(),
            raw.random_steps.is_some(),
            raw.regulation.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(bad(
                "envelope",
                "needs exactly one of steps, trace, random_steps or regulation (omit \
                 [envelope] for no cap)",
            ));
        }
        let mut env = if let Some(steps) = &raw.steps {
            Self::validate_steps(steps, reference)?
        } else if let Some(file) = &raw.trace {
            let mut e = Self::read_trace(&resolve(ctx.base_dir, file))?;
            e.kind = SignalKind::Trace;
            e
        } else if let Some(r) = &raw.random_steps {
            Self::random_steps(r, reference, ctx.duration_seconds)?
        } else if let Some(r) = &raw.regulation {
            Self::regulation(r, reference, ctx.duration_seconds)?
        } else {
            unreachable!("exactly one source is set")
        };
        env.reference_watts = Some(reference);
        Ok(env)
    }

    fn validate_steps(steps: &[RawStep], reference: f64) -> Result<Self, GatewayError> {
        let mut out = Vec::with_capacity(steps.len());
        for (i, s) in steps.iter().enumerate() {
            let cap = match (s.cap_watts, s.cap_fraction) {
                (Some(w), None) => w,
                (None, Some(f)) => {
                    if !(f.is_finite() && f > 0.0) {
                        return Err(bad(
                            "envelope.steps",
                            format!("step {i}: cap_fraction must be > 0 (got {f})"),
                        ));
                    }
                    f * reference
                }
                _ => {
                    return Err(bad(
                        "envelope.steps",
                        format!("step {i}: needs exactly one of cap_watts or cap_fraction"),
                    ))
                }
            };
            out.push((s.at_seconds, cap, s.ramp_seconds.unwrap_or(0.0)));
        }
        Self::from_ramps("envelope.steps", out)
    }

    fn start(key: &str, start: Option<f64>, duration: f64) -> Result<f64, GatewayError> {
        let start = start.unwrap_or(0.0);
        if !(start.is_finite() && start >= 0.0 && start < duration) {
            return Err(bad(
                key,
                format!("must be >= 0 and before duration_seconds ({duration}) (got {start})"),
            ));
        }
        Ok(start)
    }

    fn random_steps(
        r: &RawRandomSteps,
        reference: f64,
        duration: f64,
    ) -> Result<Self, GatewayError> {
        if r.count == 0 {
            return Err(bad("envelope.random_steps.count", "must be at least 1"));
        }
        if !(r.min_fraction.is_finite() && r.min_fraction > 0.0) {
            return Err(bad(
                "envelope.random_steps.min_fraction",
                format!("must be > 0 (got {})", r.min_fraction),
            ));
        }
        if !(r.max_fraction.is_finite() && r.max_fraction >= r.min_fraction) {
            return Err(bad(
                "envelope.random_steps.max_fraction",
                format!(
                    "must be >= min_fraction ({}) (got {})",
                    r.min_fraction, r.max_fraction
                ),
            ));
        }
        let start = Self::start(
            "envelope.random_steps.start_seconds",
            r.start_seconds,
            duration,
        )?;
        let mut rng = StdRng::seed_from_u64(r.seed);
        let every = (duration - start) / r.count as f64;
        let steps = (0..r.count)
            .map(|i| {
                let f = rng.random_range(r.min_fraction..=r.max_fraction);
                (start + i as f64 * every, f * reference, 0.0)
            })
            .collect();
        let mut e = Self::from_ramps("envelope.random_steps", steps)?;
        e.kind = SignalKind::RandomSteps;
        Ok(e)
    }

    fn regulation(r: &RawRegulation, reference: f64, duration: f64) -> Result<Self, GatewayError> {
        if !(r.center_fraction.is_finite() && r.center_fraction > 0.0) {
            return Err(bad(
                "envelope.regulation.center_fraction",
                format!("must be > 0 (got {})", r.center_fraction),
            ));
        }
        if !(r.amplitude_fraction.is_finite()
            && r.amplitude_fraction >= 0.0
            && r.amplitude_fraction < r.center_fraction)
        {
            return Err(bad(
                "envelope.regulation.amplitude_fraction",
                format!(
                    "must be >= 0 and below center_fraction ({}) so the cap stays positive \
                     (got {})",
                    r.center_fraction, r.amplitude_fraction
                ),
            ));
        }
        if !(r.period_seconds.is_finite() && r.period_seconds > 0.0) {
            return Err(bad(
                "envelope.regulation.period_seconds",
                format!("must be > 0 (got {})", r.period_seconds),
            ));
        }
        let start = Self::start(
            "envelope.regulation.start_seconds",
            r.start_seconds,
            duration,
        )?;
        let mut rng = StdRng::seed_from_u64(r.seed);
        let n = ((duration - start) / r.period_seconds).ceil() as usize;
        let steps = (0..n)
            .map(|i| {
                let s: f64 = rng.random_range(-1.0..=1.0);
                (
                    start + i as f64 * r.period_seconds,
                    (r.center_fraction + r.amplitude_fraction * s) * reference,
                    0.0,
                )
            })
            .collect();
        let mut e = Self::from_ramps("envelope.regulation", steps)?;
        e.kind = SignalKind::Regulation;
        Ok(e)
    }

    fn read_trace(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("envelope.trace", format!("reading {}: {e}", path.display())))?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let header = lines.next().map(|(_, l)| l.replace(' ', ""));
        if header.as_deref() != Some("at_seconds,cap_watts") {
            return Err(bad(
                "envelope.trace",
                format!("{}: header must be at_seconds,cap_watts", path.display()),
            ));
        }
        let mut steps = Vec::new();
        for (i, line) in lines {
            let parsed = line
                .split_once(',')
                .and_then(|(a, c)| Some((a.trim().parse().ok()?, c.trim().parse().ok()?, 0.0)));
            let Some(step) = parsed else {
                return Err(bad(
                    "envelope.trace",
                    format!("{} line {}: expected two numbers", path.display(), i + 1),
                ));
            };
            steps.push(step);
        }
        Self::from_ramps("envelope.trace", steps)
    }

    /// The fleet-wide cap in force at `t_seconds`, if any.
    pub fn cap_at(&self, t_seconds: f64) -> Option<f64> {
        let i = self.segments.partition_point(|s| s.at_seconds <= t_seconds);
        let s = self.segments.get(i.checked_sub(1)?)?;
        let into = t_seconds - s.at_seconds;
        Some(if s.ramp_seconds > 0.0 && into < s.ramp_seconds {
            s.from_watts + (s.cap_watts - s.from_watts) * into / s.ramp_seconds
        } else {
            s.cap_watts
        })
    }

    pub fn is_capped(&self) -> bool {
        !self.segments.is_empty()
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn kind(&self) -> SignalKind {
        self.kind
    }

    /// What fractions were relative to (set for envelopes read from a scenario).
    pub fn reference_watts(&self) -> Option<f64> {
        self.reference_watts
    }

    /// Every decrease of the cap: a step down takes effect at its `at_seconds`, a ramp down
    /// when it ends; each lasts until the next segment starts.
    pub fn decreases(&self) -> Vec<Decrease> {
        let mut out = Vec::new();
        for (i, s) in self.segments.iter().enumerate() {
            if i == 0 || s.cap_watts >= s.from_watts {
                continue;
            }
            let until = self
                .segments
                .get(i + 1)
                .map_or(f64::INFINITY, |n| n.at_seconds);
            if s.settled_seconds() >= until {
                continue; // replaced before the ramp ended
            }
            out.push(Decrease {
                at_seconds: s.settled_seconds(),
                cap_watts: s.cap_watts,
                until_seconds: until,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(duration: f64) -> EnvelopeContext<'static> {
        EnvelopeContext {
            base_dir: Path::new("."),
            rated_watts: 700.0,
            duration_seconds: duration,
        }
    }

    fn parse(text: &str, duration: f64) -> Result<Envelope, String> {
        let raw: RawEnvelope = toml::from_str(text).map_err(|e| e.to_string())?;
        Envelope::validate(&raw, &ctx(duration)).map_err(|e| e.to_string())
    }

    #[test]
    fn fractions_are_of_the_rated_power_unless_a_reference_is_given() {
        let e = parse(
            "steps = [{ at_seconds = 0, cap_fraction = 1.0 }, { at_seconds = 10, cap_fraction = 0.7 }]",
            100.0,
        )
        .unwrap();
        assert_eq!(e.cap_at(5.0), Some(700.0));
        assert!((e.cap_at(10.0).unwrap() - 490.0).abs() < 1e-9);
        assert_eq!(e.reference_watts(), Some(700.0));
        let e = parse(
            "reference_watts = 1000\nsteps = [{ at_seconds = 0, cap_fraction = 0.5 }, \
             { at_seconds = 1, cap_watts = 300 }]",
            100.0,
        )
        .unwrap();
        assert_eq!(e.cap_at(0.5), Some(500.0));
        assert_eq!(e.cap_at(1.0), Some(300.0));
        assert_eq!(e.cap_at(-1.0), None);
        let both = parse(
            "steps = [{ at_seconds = 0, cap_fraction = 0.5, cap_watts = 3 }]",
            100.0,
        )
        .unwrap_err();
        assert!(
            both.contains("envelope.steps") && both.contains("exactly one"),
            "{both}"
        );
        let bad_ref = parse("reference_watts = -1\nsteps = []", 100.0).unwrap_err();
        assert!(bad_ref.contains("envelope.reference_watts"), "{bad_ref}");
        let unknown = parse("steps = [{ at_seconds = 0, cap = 1 }]", 100.0).unwrap_err();
        assert!(unknown.contains("unknown field `cap`"), "{unknown}");
        let two = parse(
            "steps = []\nregulation = { center_fraction = 0.7, amplitude_fraction = 0.2, \
             period_seconds = 2, seed = 1 }",
            100.0,
        )
        .unwrap_err();
        assert!(two.contains("exactly one"), "{two}");
    }

    #[test]
    fn a_ramp_moves_linearly_from_the_cap_in_force_and_ends_as_a_decrease() {
        let e = parse(
            "steps = [{ at_seconds = 0, cap_fraction = 1.0 }, \
             { at_seconds = 1800, cap_fraction = 0.75, ramp_seconds = 900 }, \
             { at_seconds = 13500, cap_fraction = 1.0, ramp_seconds = 900 }]",
            15000.0,
        )
        .unwrap();
        assert_eq!(e.cap_at(1800.0), Some(700.0));
        assert!((e.cap_at(2250.0).unwrap() - 612.5).abs() < 1e-9);
        assert!((e.cap_at(2700.0).unwrap() - 525.0).abs() < 1e-9);
        assert!((e.cap_at(13950.0).unwrap() - 612.5).abs() < 1e-9);
        assert_eq!(e.cap_at(14400.0), Some(700.0));
        let d = e.decreases();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].at_seconds, 2700.0);
        assert!((d[0].cap_watts - 525.0).abs() < 1e-9);
        assert_eq!(d[0].until_seconds, 13500.0);
        let first = parse(
            "steps = [{ at_seconds = 0, cap_watts = 500, ramp_seconds = 10 }]",
            100.0,
        )
        .unwrap_err();
        assert!(
            first.contains("envelope.steps") && first.contains("ramp"),
            "{first}"
        );
    }

    #[test]
    fn random_steps_are_seeded_bounded_and_spread_over_the_run() {
        let text =
            "random_steps = { count = 200, min_fraction = 0.4, max_fraction = 1.0, seed = 5 }";
        let e = parse(text, 36_000.0).unwrap();
        assert_eq!(e.kind(), SignalKind::RandomSteps);
        assert_eq!(e, parse(text, 36_000.0).unwrap());
        assert_ne!(
            e,
            parse(&text.replace("seed = 5", "seed = 6"), 36_000.0).unwrap()
        );
        let segs = e.segments();
        assert_eq!(segs.len(), 200);
        assert_eq!(segs[0].at_seconds, 0.0);
        assert!((segs[1].at_seconds - 180.0).abs() < 1e-9);
        assert!((segs[199].at_seconds - 35_820.0).abs() < 1e-6);
        assert!(segs
            .iter()
            .all(|s| (280.0..=700.0).contains(&s.cap_watts) && s.ramp_seconds == 0.0));
        let lo = segs.iter().map(|s| s.cap_watts).fold(f64::MAX, f64::min);
        let hi = segs.iter().map(|s| s.cap_watts).fold(0.0, f64::max);
        assert!(lo < 320.0 && hi > 660.0, "{lo} {hi}");
        // About half the changes are decreases.
        let n = e.decreases().len();
        assert!((70..130).contains(&n), "{n}");
        let bad = parse(
            "random_steps = { count = 2, min_fraction = 0.9, max_fraction = 0.4, seed = 5 }",
            100.0,
        )
        .unwrap_err();
        assert!(bad.contains("envelope.random_steps.max_fraction"), "{bad}");
    }

    #[test]
    fn regulation_holds_a_setpoint_per_period_within_center_plus_minus_amplitude() {
        let text = "regulation = { center_fraction = 0.7, amplitude_fraction = 0.2, \
                    period_seconds = 2, seed = 9, start_seconds = 100 }";
        let e = parse(text, 3700.0).unwrap();
        assert_eq!(e.kind(), SignalKind::Regulation);
        assert_eq!(e.cap_at(99.9), None);
        assert_eq!(e.segments().len(), 1800);
        assert_eq!(e.cap_at(100.0), e.cap_at(101.99));
        let caps: Vec<f64> = e.segments().iter().map(|s| s.cap_watts).collect();
        assert!(caps
            .iter()
            .all(|c| (350.0 - 1e-9..=630.0 + 1e-9).contains(c)));
        let mean = caps.iter().sum::<f64>() / caps.len() as f64;
        assert!((mean - 490.0).abs() < 10.0, "mean {mean}");
        let spread = caps.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / caps.len() as f64;
        // Uniform on ±140 W: standard deviation 140/√3 ≈ 81 W.
        assert!((spread.sqrt() - 80.8).abs() < 6.0, "{}", spread.sqrt());
        assert!(caps.windows(2).filter(|w| w[0] != w[1]).count() > 1700);
        let bad = parse(
            &text.replace("amplitude_fraction = 0.2", "amplitude_fraction = 0.8"),
            3700.0,
        )
        .unwrap_err();
        assert!(
            bad.contains("envelope.regulation.amplitude_fraction"),
            "{bad}"
        );
        let late = parse(
            &text.replace("start_seconds = 100", "start_seconds = 5000"),
            3700.0,
        )
        .unwrap_err();
        assert!(late.contains("envelope.regulation.start_seconds"), "{late}");
    }
}
