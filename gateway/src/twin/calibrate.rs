//! The calibration fit behind `config/gpus/h100-sxm.toml`: deterministic coordinate descent
//! of the step-model constants and the lm-arena-chat prompt mix against the ML.ENERGY rows,
//! running the full twin (firmware included) exactly as `twin validate` does.
//!
//! Re-run with `cargo test -p gridserve --lib twin::calibrate -- --ignored --nocapture`; it
//! prints the fitted constants to paste into the profile (and `LM_ARENA_CHAT`).

use super::profile::GpuProfile;
use super::shape::ModelShape;
use super::validate::{
    run_rows, PromptMix, RowResult, ITL_TOLERANCE, POWER_TOLERANCE, THROUGHPUT_TOLERANCE,
};

/// Everything the fit moves.
#[derive(Clone, Debug)]
pub struct Fit {
    pub profile: GpuProfile,
    pub mix: PromptMix,
}

/// A fitted constant: its TOML key, where it lives in a `Fit`, and its bounds.
pub type Knob = (&'static str, fn(&mut Fit) -> &mut f64, f64, f64);

/// The free constants and their physically plausible bounds.
const KNOBS: [Knob; 13] = [
    (
        "memory_efficiency",
        |f| &mut f.profile.model.memory_efficiency,
        0.5,
        0.95,
    ),
    (
        "kv_read_efficiency",
        |f| &mut f.profile.model.kv_read_efficiency,
        0.1,
        1.0,
    ),
    (
        "compute_efficiency",
        |f| &mut f.profile.model.compute_efficiency,
        0.3,
        0.9,
    ),
    (
        "smoothmax_exponent",
        |f| &mut f.profile.model.smoothmax_exponent,
        1.0,
        12.0,
    ),
    (
        "active_watts",
        |f| &mut f.profile.model.active_watts,
        100.0,
        450.0,
    ),
    (
        "energy_per_byte_joules",
        |f| &mut f.profile.model.energy_per_byte_joules,
        5e-12,
        1.2e-10,
    ),
    (
        "energy_per_flop_joules",
        |f| &mut f.profile.model.energy_per_flop_joules,
        5e-14,
        4e-12,
    ),
    (
        "step_overhead_seconds",
        |f| &mut f.profile.model.step_overhead_seconds,
        1e-5,
        3e-3,
    ),
    (
        "per_sequence_seconds",
        |f| &mut f.profile.model.per_sequence_seconds,
        1e-8,
        1.5e-4,
    ),
    (
        "allreduce_latency_seconds",
        |f| &mut f.profile.model.allreduce_latency_seconds,
        1e-6,
        4e-5,
    ),
    (
        "interconnect_bytes_per_second",
        |f| &mut f.profile.model.interconnect_bytes_per_second,
        5e10,
        4.5e11,
    ),
    (
        "mean_prompt_tokens",
        |f| &mut f.mix.mean_prompt_tokens,
        50.0,
        3000.0,
    ),
    (
        "prompt_log_sigma",
        |f| &mut f.mix.prompt_log_sigma,
        0.1,
        2.5,
    ),
];

/// Σ (error / tolerance)⁴: the 4th power makes the worst row dominate, so the fit pulls
/// every row inside its tolerance rather than trading one row off for the average.
pub fn loss(results: &[RowResult]) -> f64 {
    results
        .iter()
        .map(|r| {
            (r.power_error / POWER_TOLERANCE).powi(4)
                + (r.throughput_error / THROUGHPUT_TOLERANCE).powi(4)
                + (r.itl_error / ITL_TOLERANCE).powi(4)
        })
        .sum()
}

/// Multiplicative coordinate descent from `start`: each knob tries ×(1+step) and ÷(1+step)
/// within its bounds, keeping any improvement; a sweep with none halves the step.
pub fn fit(start: Fit, shapes: &[ModelShape], max_sweeps: usize) -> (Fit, f64) {
    let evaluate = |f: &Fit| loss(&run_rows(&f.profile, shapes, &f.mix));
    descend(start, &KNOBS, max_sweeps, evaluate)
}

/// The GPU constants alone (the knobs before the prompt mix's two): what a measurement with
/// a known workload can fit.
pub fn profile_knobs() -> &'static [Knob] {
    &KNOBS[..KNOBS.len() - 2]
}

/// Coordinate descent over `knobs` minimising `evaluate`.
pub fn descend(
    start: Fit,
    knobs: &[Knob],
    max_sweeps: usize,
    evaluate: impl Fn(&Fit) -> f64,
) -> (Fit, f64) {
    let mut best = start;
    let mut best_loss = evaluate(&best);
    let mut step = 0.05;
    for _ in 0..max_sweeps {
        let mut improved = false;
        for &(_, knob, lo, hi) in knobs {
            for factor in [1.0 + step, 1.0 / (1.0 + step)] {
                let mut candidate = best.clone();
                let value = knob(&mut candidate);
                *value = (*value * factor).clamp(lo, hi);
                let candidate_loss = evaluate(&candidate);
                if candidate_loss < best_loss {
                    (best, best_loss, improved) = (candidate, candidate_loss, true);
                }
            }
        }
        if !improved {
            step /= 2.0;
            if step < 5e-4 {
                break;
            }
        }
    }
    (best, best_loss)
}

/// The fitted values, one `name = value` line each.
pub fn describe(fit: &Fit) -> String {
    let mut f = fit.clone();
    KNOBS
        .iter()
        .map(|(name, knob, _, _)| format!("{name} = {:.4e}\n", *knob(&mut f)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::twin::validate::{format_table, load_shapes, LM_ARENA_CHAT};

    #[test]
    #[ignore = "refits the H100 constants (tens of seconds); run by hand when the model changes"]
    fn twin_calibrate_h100() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config");
        let profile = GpuProfile::load_named(&dir.join("gpus"), "h100-sxm").unwrap();
        let shapes = load_shapes(&dir).unwrap();
        let (fitted, fitted_loss) = fit(
            Fit {
                profile,
                mix: LM_ARENA_CHAT,
            },
            &shapes,
            200,
        );
        println!("loss {fitted_loss:.4}\n{}", describe(&fitted));
        println!(
            "{}",
            format_table(
                "h100-sxm (fitted)",
                &run_rows(&fitted.profile, &shapes, &fitted.mix)
            )
        );
    }
}
