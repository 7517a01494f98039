//! Branch-free f32 `exp` for vectorised loops (GELU, softmax): selects instead of branches and
//! bit tricks instead of float-to-int casts, so a loop calling it compiles to vector code.

use std::f32::consts::LOG2_E;

/// 1.5 · 2²³: adding it rounds a float of magnitude < 2²² to an integer held in the low
/// mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// ln 2 split in two (Cody–Waite): `LN2_HI` = 355/512 has 9 significant bits, so
/// `n * LN2_HI` is exact for the `n` used here.
const LN2_HI: f32 = 355.0 / 512.0;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this the result is 0; above `MAX_ARG` it saturates at e^88 (no inf, no subnormal
/// scale: `n` stays in -126..=127).
const MIN_ARG: f32 = -87.0;
const MAX_ARG: f32 = 88.0;

/// e^x, max relative error 1e-7 on [-87, 88] (Cephes' degree-5 polynomial on the reduced
/// argument); 0 below -87, e^88 above 88, NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    // `clamp` compiles to min/max selects and lets NaN through.
    let c = x.clamp(MIN_ARG, MAX_ARG);
    let t = c * LOG2_E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = (((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * (r * r)
        + r
        + 1.0;
    // `t`'s low bits hold n; shifting them into the exponent field gives 2^n (the magic's
    // own bits shift out).
    let two_n = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
    if x < MIN_ARG {
        0.0
    } else {
        p * two_n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_is_within_1e_7_over_the_range() {
        let mut worst = 0f64;
        for i in 0..=1_750_000 {
            let x = MIN_ARG + i as f32 * 1e-4;
            let want = (x as f64).exp();
            worst = worst.max(((exp_approx(x) as f64 - want) / want).abs());
        }
        assert!(worst < 1e-7, "{worst:e}");
    }

    #[test]
    fn edges_saturate_without_inf_or_subnormals() {
        assert_eq!(exp_approx(0.0), 1.0);
        assert_eq!(exp_approx(-1000.0), 0.0);
        assert_eq!(exp_approx(f32::NEG_INFINITY), 0.0);
        assert!(exp_approx(f32::INFINITY).is_finite());
        assert!(exp_approx(f32::NAN).is_nan());
        assert!(exp_approx(MIN_ARG).is_normal());
    }
}
