//! Activations: GELU with the tanh approximation (Gemma's MLP), fused with the gate product.

use crate::error::check_len;
use crate::KernelError;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// GELU, tanh approximation, as in PyTorch's `gelu(approximate="tanh")` and ggml's `gelu`.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]`: the GeGLU of Gemma's feed-forward, in place.
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) -> Result<(), KernelError> {
    check_len("gelu_tanh_mul", "up", up.len(), gate.len())?;
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_known_values() {
        // Values from torch.nn.functional.gelu(x, approximate="tanh").
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu_tanh(-1.0) + 0.158_808).abs() < 1e-5);
        assert!((gelu_tanh(3.0) - 2.996_363).abs() < 1e-5);
        assert_eq!(gelu_tanh(0.0), 0.0);
    }

    #[test]
    fn gated_product_differs_from_silu() {
        let mut g = [1.0f32, 2.0];
        gelu_tanh_mul(&mut g, &[2.0, 0.5]).unwrap();
        assert!((g[0] - 2.0 * 0.841_192).abs() < 1e-5);
        let silu_1 = 1.0 / (1.0 + (-1.0f32).exp());
        assert!((g[0] - 2.0 * silu_1).abs() > 0.05, "GELU, not SiLU");
    }
}
