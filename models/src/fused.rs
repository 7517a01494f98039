//! Projections of one input (Gemma's q/k/v, gate/up) run as a single matmul where the kernel
//! allows: one activation quantization and one parallel dispatch instead of several, and
//! enough weight rows for the threads to share evenly even for the small k/v matrices.

use crate::linear::QLinear;
use crate::ModelError;

enum Parts {
    /// One stacked matrix; the output columns of part `i` are `offsets[i] .. offsets[i + 1]`.
    Stacked {
        linear: QLinear,
        offsets: Vec<usize>,
    },
    /// Formats that cannot be stacked run one by one.
    Separate(Vec<QLinear>),
}

pub struct FusedLinear {
    parts: Parts,
    /// `(in_dim, out_dim)` of each part, for shape checks.
    dims: Vec<(usize, usize)>,
}

impl FusedLinear {
    pub fn new(parts: Vec<QLinear>) -> Result<Self, ModelError> {
        let dims: Vec<(usize, usize)> = parts.iter().map(|p| (p.in_dim(), p.out_dim())).collect();
        let parts = match QLinear::stack(&parts)? {
            Some(linear) => {
                let linear = linear.pack()?;
                let mut offsets = vec![0];
                for &(_, out) in &dims {
                    offsets.push(offsets.last().copied().unwrap_or(0) + out);
                }
                Parts::Stacked { linear, offsets }
            }
            None => Parts::Separate(
                parts
                    .into_iter()
                    .map(QLinear::pack)
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Self { parts, dims })
    }

    pub fn dims(&self) -> &[(usize, usize)] {
        &self.dims
    }

    /// `x` is row-major `[rows, in_dim]`; returns one row-major `[rows, out_dim]` per part.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        match &self.parts {
            Parts::Separate(parts) => parts.iter().map(|p| p.forward(x, rows)).collect(),
            Parts::Stacked { linear, offsets } => {
                let y = linear.forward(x, rows)?;
                let width = linear.out_dim();
                Ok(offsets
                    .windows(2)
                    .map(|w| {
                        y.chunks_exact(width)
                            .flat_map(|row| row[w[0]..w[1]].iter().copied())
                            .collect()
                    })
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::*;

    fn linear(dtype: GgmlDType, n: usize, k: usize, seed: usize) -> QLinear {
        let data: Vec<f32> = (0..n * k)
            .map(|i| (((i + seed) * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.2)
            .collect();
        let t = Tensor::from_vec(data, (n, k), &Device::Cpu).unwrap();
        QLinear::from_qtensor(QTensor::quantize(&t, dtype).unwrap()).unwrap()
    }

    /// Stacked or not, each part's output is exactly what the part computes alone.
    #[test]
    fn each_part_equals_its_own_projection() {
        let k = 256;
        // Q8_0 stacks (and is packed where the CPU allows); F16 stays with candle, one by one.
        for dtype in [GgmlDType::Q8_0, GgmlDType::F16] {
            let widths = [48, 16, 16];
            let parts = || -> Vec<QLinear> {
                widths
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| linear(dtype, n, k, i * 101))
                    .collect()
            };
            let fused = FusedLinear::new(parts()).unwrap();
            assert_eq!(
                matches!(fused.parts, Parts::Stacked { .. }),
                dtype == GgmlDType::Q8_0
            );
            let rows = 5;
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 31 % 97) as f32) / 97.0 - 0.5)
                .collect();
            let got = fused.forward(&x, rows).unwrap();
            for (part, got) in parts().iter().zip(&got) {
                assert_eq!(&part.forward(&x, rows).unwrap(), got, "{dtype:?}");
            }
        }
    }
}
