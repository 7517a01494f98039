//! Steady-state serving, as in the ML.ENERGY runs: `running` sequences always in flight; each
//! finishes after `mean_output_tokens` and is replaced by a new request whose prompt is
//! prefilled in the next steps (chunked, within the step token budget). Deterministic: prompt
//! lengths are lognormal quantiles at a golden-ratio sequence of probabilities, so every run of
//! the validation is identical and the step mix covers the distribution evenly.
//!
//! Per step, `running / mean_output_tokens` requests finish (each sequence lives that many
//! steps) and as many prompts arrive; a decoding sequence is on average halfway through its
//! output, so its mean context is `mean_prompt + mean_output / 2`.

use super::step::StepComposition;

/// The traffic shape of a steady serving run.
#[derive(Clone, Debug, PartialEq)]
pub struct SteadyWorkload {
    /// Sequences decoding in every step (vLLM's running batch).
    pub running_seqs: u32,
    pub mean_prompt_tokens: f64,
    /// σ of ln(prompt length): chat prompts are heavy-tailed (many short, a few long).
    pub prompt_log_sigma: f64,
    pub mean_output_tokens: f64,
    /// Most tokens one step may run (decode + prefill chunk), vLLM's `max_num_batched_tokens`.
    pub max_step_tokens: u32,
}

/// Produces the step compositions of a `SteadyWorkload`, one per `next()`.
#[derive(Clone, Debug)]
pub struct SteadySteps {
    workload: SteadyWorkload,
    arrivals: f64,
    next_request: u64,
    prefill_backlog_tokens: f64,
}

impl SteadyWorkload {
    pub fn steps(&self) -> SteadySteps {
        SteadySteps {
            workload: self.clone(),
            arrivals: 0.0,
            next_request: 0,
            prefill_backlog_tokens: 0.0,
        }
    }

    /// Prompt length of the `index`-th request.
    pub fn prompt_tokens(&self, index: u64) -> f64 {
        const GOLDEN: f64 = 0.618_033_988_749_894_9;
        let u = ((index + 1) as f64 * GOLDEN)
            .fract()
            .clamp(1e-6, 1.0 - 1e-6);
        let sigma = self.prompt_log_sigma;
        // Lognormal with the requested mean: mean = exp(mu + sigma²/2).
        let mu = self.mean_prompt_tokens.ln() - sigma * sigma / 2.0;
        (mu + sigma * inverse_normal_cdf(u)).exp()
    }
}

impl Iterator for SteadySteps {
    type Item = StepComposition;

    fn next(&mut self) -> Option<StepComposition> {
        let w = &self.workload;
        self.arrivals += f64::from(w.running_seqs) / w.mean_output_tokens;
        while self.arrivals >= 1.0 {
            self.arrivals -= 1.0;
            self.prefill_backlog_tokens += w.prompt_tokens(self.next_request);
            self.next_request += 1;
        }
        let budget = f64::from(w.max_step_tokens.saturating_sub(w.running_seqs));
        let prefill_tokens = self.prefill_backlog_tokens.min(budget);
        self.prefill_backlog_tokens -= prefill_tokens;
        let mean_context_tokens = w.mean_prompt_tokens + w.mean_output_tokens / 2.0;
        // A prompt token attends on average to half of a mean-length prompt.
        Some(StepComposition::uniform(
            w.running_seqs,
            mean_context_tokens,
            prefill_tokens,
            w.mean_prompt_tokens / 2.0,
        ))
    }
}

/// Φ⁻¹(p) by Acklam's rational approximation (relative error < 1.2e-9), for 0 < p < 1.
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    const P_LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - P_LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twin_inverse_normal_matches_known_quantiles() {
        assert!(inverse_normal_cdf(0.5).abs() < 1e-9);
        assert!((inverse_normal_cdf(0.975) - 1.959964).abs() < 1e-5);
        assert!((inverse_normal_cdf(0.01) + 2.326348).abs() < 1e-5);
    }

    #[test]
    fn twin_steady_workload_prefills_mean_prompt_per_finished_request() {
        let w = SteadyWorkload {
            running_seqs: 64,
            mean_prompt_tokens: 300.0,
            prompt_log_sigma: 1.0,
            mean_output_tokens: 400.0,
            max_step_tokens: 8192,
        };
        let steps: Vec<_> = w.steps().take(20_000).collect();
        let prefill_per_step =
            steps.iter().map(|s| s.prefill_tokens).sum::<f64>() / steps.len() as f64;
        // 64/400 requests per step × 300 tokens = 48 tokens per step.
        assert!(
            (prefill_per_step - 48.0).abs() / 48.0 < 0.05,
            "{prefill_per_step}"
        );
    }
}
