//! The reference of the device sampler (`kernels/cuda/sample.cu`): the same filters found by
//! sorting instead of bisection, and the same draw (a walk over the kept weights in index
//! order), in f64. Two algorithms that must pick the same token.

use crate::KernelError;

/// Below this temperature sampling is argmax (the engine's sampler uses the same cut-off).
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// One row's sampling parameters, as the device kernel takes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleRow {
    pub temperature: f32,
    /// Keep the `top_k` largest logits (ties kept); 0 = off.
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// The uniform draw in [0, 1), from the sequence's own seeded generator.
    pub uniform: f32,
}

/// A sampled token and its logprob under the model's raw (unscaled, unfiltered) distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprob: f32,
}

fn clean(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

/// Samples one row: argmax below [`GREEDY_TEMPERATURE`], else top-k, then top-p over what
/// top-k kept, and min-p, on weights `exp((l - max) * (1 / temperature))`.
pub fn sample_reference(logits: &[f32], p: &SampleRow) -> Result<Sampled, KernelError> {
    if logits.is_empty() {
        return Err(KernelError::Invalid {
            op: "sample",
            message: "empty logits row".into(),
        });
    }
    let l: Vec<f32> = logits.iter().map(|&x| clean(x)).collect();
    let (mut id, m) = l
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bm), (i, &x)| {
            if x > bm {
                (i, x)
            } else {
                (bi, bm)
            }
        });
    let log_z = l.iter().map(|&x| ((x - m) as f64).exp()).sum::<f64>().ln() as f32;
    if p.temperature >= GREEDY_TEMPERATURE && m.is_finite() {
        let inv_t = 1.0 / p.temperature;
        let weight = |x: f32| ((x - m) * inv_t).exp() as f64;
        let floor = filter_floor(&l, p, &weight);
        let kept = |x: f32| x >= floor && x > f32::NEG_INFINITY && weight(x) >= p.min_p as f64;
        if let Some(drawn) = draw(&l, p.uniform, &kept, &weight) {
            id = drawn;
        }
    }
    Ok(Sampled {
        token: id as u32,
        logprob: l[id] - m - log_z,
    })
}

/// The smallest logit top-k and top-p keep (`-inf` when neither filters).
fn filter_floor(l: &[f32], p: &SampleRow, weight: &dyn Fn(f32) -> f64) -> f32 {
    let mut order: Vec<usize> = (0..l.len()).collect();
    order.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
    let mut floor = f32::NEG_INFINITY;
    if p.top_k > 0 && p.top_k < l.len() {
        floor = l[order[p.top_k - 1]];
    }
    if p.top_p < 1.0 {
        let mass: f64 = l.iter().filter(|&&x| x >= floor).map(|&x| weight(x)).sum();
        let need = p.top_p as f64 * mass;
        let mut run = 0.0;
        for &i in order.iter().take_while(|&&i| l[i] >= floor) {
            run += weight(l[i]);
            if run >= need {
                floor = l[i];
                break;
            }
        }
    }
    floor
}

/// The kept token where the running weight first passes `uniform * total`, in index order.
fn draw(
    l: &[f32],
    uniform: f32,
    kept: &dyn Fn(f32) -> bool,
    weight: &dyn Fn(f32) -> f64,
) -> Option<usize> {
    let total: f64 = l.iter().filter(|&&x| kept(x)).map(|&x| weight(x)).sum();
    let target = uniform as f64 * total;
    let (mut run, mut last) = (0.0, None);
    for (i, &x) in l.iter().enumerate().filter(|&(_, &x)| kept(x)) {
        last = Some(i);
        run += weight(x);
        if run > target {
            return Some(i);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(temperature: f32, top_k: usize, top_p: f32, min_p: f32, uniform: f32) -> SampleRow {
        SampleRow {
            temperature,
            top_k,
            top_p,
            min_p,
            uniform,
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum_and_reports_its_logprob() {
        let l = [1.0, 3.0, 3.0, f32::NAN];
        let s = sample_reference(&l, &row(0.0, 0, 1.0, 0.0, 0.9)).unwrap();
        assert_eq!(s.token, 1);
        let z = (-2f64).exp() + 2.0;
        assert!((s.logprob as f64 - (-z.ln())).abs() < 1e-6);
    }

    #[test]
    fn the_draw_walks_weights_in_index_order() {
        // Equal logits, no filters: u picks the token whose share of [0, 1) holds it.
        let l = [0.0; 4];
        for (u, want) in [(0.1, 0), (0.3, 1), (0.6, 2), (0.99, 3)] {
            let s = sample_reference(&l, &row(1.0, 0, 1.0, 0.0, u)).unwrap();
            assert_eq!(s.token, want, "u = {u}");
        }
    }

    #[test]
    fn top_k_top_p_and_min_p_remove_the_tail() {
        // Weights at temperature 1: 1, e^-1, e^-2, e^-5 (token 3 is last).
        let l = [5.0, 4.0, 3.0, 0.0];
        let last = |p: SampleRow| sample_reference(&l, &p).unwrap().token;
        assert_eq!(last(row(1.0, 0, 1.0, 0.0, 0.9999)), 3);
        assert_eq!(last(row(1.0, 2, 1.0, 0.0, 0.9999)), 1, "top-k 2");
        // Mass of {0}: 0.70 of the total; {0, 1}: 0.96.
        assert_eq!(last(row(1.0, 0, 0.6, 0.0, 0.9999)), 0, "top-p 0.6");
        assert_eq!(last(row(1.0, 0, 0.9, 0.0, 0.9999)), 1, "top-p 0.9");
        assert_eq!(
            last(row(1.0, 0, 1.0, 0.1, 0.9999)),
            2,
            "min-p 0.1 keeps e^-2"
        );
    }

    #[test]
    fn an_empty_row_is_an_error() {
        assert!(sample_reference(&[], &row(1.0, 0, 1.0, 0.0, 0.5)).is_err());
    }
}
