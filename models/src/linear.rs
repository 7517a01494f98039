//! The matmul seam: every projection of every architecture goes through `QLinear`, so the CPU
//! quantized matmul can be replaced (by our own kernels, or CUDA) in one place.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use gridserve_kernels::cpu::{q8_0_matmul_on, PackedQ8_0};

use crate::pool::StepPool;
use crate::profile::{self, Stage};
use crate::ModelError;

/// How a weight is multiplied.
enum Backend {
    /// candle's quantized matmul (formats that cannot be requantized, other devices).
    Candle(QMatMul),
    /// Q8_0 through our batched kernel, which reads each weight block once for all rows. The
    /// tensor is held so its bytes (borrowed from the CPU storage) stay alive.
    Q8_0(Arc<QTensor>),
    /// Q8_0 rows owned here, e.g. several projections' weights stacked into one matrix.
    Q8_0Owned(Vec<u8>),
    /// Q8_0 repacked with weight rows in the vector lanes (see `PackedQ8_0`): 1.3–4.6× the
    /// GGUF-layout kernel from 1 to 128 rows here, so every Q8_0 weight ends up in it when
    /// the CPU has AVX-512 VNNI.
    Packed(PackedQ8_0),
}

/// `y = x · Wᵀ` with `W` of shape `[out_dim, in_dim]`, stored quantized.
pub struct QLinear {
    backend: Backend,
    in_dim: usize,
    out_dim: usize,
    /// Run single rows as two: see `forward`.
    pad_single_row: bool,
    /// What its time counts as in a step profile.
    stage: Stage,
}

impl QLinear {
    /// Wraps a GGUF weight. On the CPU every projection runs through the one batched Q8_0
    /// kernel: candle multiplies each activation row by a separate vec-dot (no weight reuse
    /// across a batch; Q5_0's is scalar), 2–5× slower per row at prefill. Q5_0, Q4_K and Q6_K
    /// are requantized to Q8_0 at load.
    ///
    /// Requantizing moves each value by at most half a Q8_0 step, block max / 254 (RMS
    /// max / 440). The formats' own steps are about max / 16 (Q5_0), 2·max / 15 (Q4_K, with
    /// its min offset) and max / 32 (Q6_K), RMS error max / 55, / 26 and / 111: adding the
    /// independent requantization error raises the RMS weight error by 0.8 %, 0.2 % and 3 %.
    /// The greedy outputs of the real model still equal llama.cpp's (`tests/real_model.rs`).
    /// (Q5_0 maps onto Q8_0 losslessly too — same scale, `q − 16` — but that tried variant
    /// flipped a near-tie in those reference continuations, so it is not used.) The cost is
    /// memory traffic: 8.5 bits per weight instead of 5.5 / 4.5 / 6.6 (+38 MB per token for
    /// the default model), which batch-1 decode still more than makes up (README, numbers).
    pub fn from_qtensor(weight: QTensor) -> Result<Self, ModelError> {
        if !matches!(weight.device(), Device::Cpu) {
            return Self::from_arc(Arc::new(weight));
        }
        let (out_dim, in_dim) = weight.shape().dims2()?;
        let stage = match weight.dtype() {
            GgmlDType::Q8_0 | GgmlDType::Q5_0 => Stage::MatmulQ8_0,
            GgmlDType::Q4K => Stage::MatmulQ4K,
            GgmlDType::Q6K => Stage::MatmulQ6K,
            _ => return Self::from_arc(Arc::new(weight)),
        };
        let bytes = if weight.dtype() == GgmlDType::Q8_0 {
            weight.data()?.into_owned()
        } else {
            let dense = weight.dequantize(&Device::Cpu)?;
            QTensor::quantize(&dense, GgmlDType::Q8_0)?
                .data()?
                .into_owned()
        };
        Ok(Self {
            backend: Backend::Q8_0Owned(bytes),
            in_dim,
            out_dim,
            pad_single_row: false,
            stage,
        })
    }

    /// Shares a weight that is also used elsewhere (Gemma's output head is its embedding).
    pub fn from_arc(weight: Arc<QTensor>) -> Result<Self, ModelError> {
        let (out_dim, in_dim) = weight.shape().dims2()?;
        let pad_single_row = weight.dtype() == GgmlDType::Q6K;
        let stage = match weight.dtype() {
            GgmlDType::Q8_0 => Stage::MatmulQ8_0,
            GgmlDType::Q4K => Stage::MatmulQ4K,
            GgmlDType::Q6K => Stage::MatmulQ6K,
            _ => Stage::MatmulOther,
        };
        let on_cpu = matches!(weight.device(), Device::Cpu);
        let backend = if weight.dtype() == GgmlDType::Q8_0 && on_cpu && PackedQ8_0::available() {
            Backend::Packed(PackedQ8_0::new(&weight.data()?, out_dim, in_dim)?)
        } else if weight.dtype() == GgmlDType::Q8_0 && on_cpu {
            Backend::Q8_0(weight)
        } else {
            Backend::Candle(QMatMul::from_arc(weight)?)
        };
        Ok(Self {
            backend,
            in_dim,
            out_dim,
            pad_single_row,
            stage,
        })
    }

    /// Counts this projection's time as `stage` in step profiles (e.g. the output head).
    pub fn profiled_as(mut self, stage: Stage) -> Self {
        self.stage = stage;
        self
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `x` is row-major `[rows, in_dim]`; returns `[rows, out_dim]`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, ModelError> {
        profile::time(self.stage, || self.forward_unprofiled(x, rows))
    }

    fn forward_unprofiled(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, ModelError> {
        if x.len() != rows * self.in_dim {
            return Err(ModelError::Batch(format!(
                "matmul input has {} values, expected {rows} rows of {}",
                x.len(),
                self.in_dim
            )));
        }
        // candle multiplies one Q6_K row by a vec-dot but several rows by a repacked tile
        // kernel, and the two round differently. A sequence must compute the same alone as in
        // a batch (greedy output would otherwise drift), so one row runs as two.
        if rows == 1 && self.pad_single_row {
            let doubled = [x, x].concat();
            let mut out = self.run(&doubled, 2)?;
            out.truncate(self.out_dim);
            return Ok(out);
        }
        self.run(x, rows)
    }

    fn run(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, ModelError> {
        match &self.backend {
            Backend::Candle(matmul) => {
                let input = Tensor::from_slice(x, (rows, self.in_dim), &Device::Cpu)?;
                let out = matmul.forward(&input)?;
                Ok(out.flatten_all()?.to_vec1::<f32>()?)
            }
            Backend::Q8_0(weight) => {
                // Borrowed, not copied, for CPU storage.
                let bytes = weight.data()?;
                Ok(q8_0_matmul_on(
                    &StepPool,
                    x,
                    rows,
                    self.in_dim,
                    &bytes,
                    self.out_dim,
                )?)
            }
            Backend::Packed(packed) => Ok(packed.matmul(&StepPool, x, rows)?),
            Backend::Q8_0Owned(bytes) => Ok(q8_0_matmul_on(
                &StepPool,
                x,
                rows,
                self.in_dim,
                bytes,
                self.out_dim,
            )?),
        }
    }

    /// Repacks Q8_0 rows for the packed kernel when this CPU runs it (call after `stack`,
    /// which needs the GGUF layout).
    pub fn pack(self) -> Result<Self, ModelError> {
        match &self.backend {
            Backend::Q8_0Owned(bytes) if PackedQ8_0::available() => {
                let packed = PackedQ8_0::new(bytes, self.out_dim, self.in_dim)?;
                Ok(Self {
                    backend: Backend::Packed(packed),
                    ..self
                })
            }
            _ => Ok(self),
        }
    }

    /// Row `row` of the weight as f32 (the embedding lookup of a tied output head), when the
    /// weight is packed; `None` otherwise.
    pub fn packed_row(&self, row: usize, out: &mut [f32]) -> Option<Result<(), ModelError>> {
        match &self.backend {
            Backend::Packed(p) => Some(p.row_into(row, out).map_err(ModelError::from)),
            _ => None,
        }
    }

    /// Stacks projections of the same input into one `[Σ out_dim, in_dim]` matrix, when all
    /// are Q8_0 on the CPU (else `None`). Output columns come out in `parts` order, each
    /// computed exactly as by its own projection (a row's result never depends on the others).
    pub fn stack(parts: &[QLinear]) -> Result<Option<QLinear>, ModelError> {
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        for part in parts {
            if part.in_dim != first.in_dim {
                return Ok(None);
            }
            match &part.backend {
                Backend::Q8_0(weight) => bytes.extend_from_slice(&weight.data()?),
                Backend::Q8_0Owned(own) => bytes.extend_from_slice(own),
                Backend::Candle(_) | Backend::Packed(_) => return Ok(None),
            }
        }
        Ok(Some(QLinear {
            backend: Backend::Q8_0Owned(bytes),
            in_dim: first.in_dim,
            out_dim: parts.iter().map(|p| p.out_dim).sum(),
            pad_single_row: false,
            stage: Stage::MatmulQ8_0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(dtype: GgmlDType, n: usize, k: usize) -> QTensor {
        let data: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.2)
            .collect();
        let t = Tensor::from_vec(data, (n, k), &Device::Cpu).unwrap();
        QTensor::quantize(&t, dtype).unwrap()
    }

    /// Our Q8_0 kernel quantizes activations with f32 block scales where candle rounds them to
    /// f16, so the two agree to within that rounding, not bit for bit.
    #[test]
    fn q8_0_kernel_agrees_with_candle() {
        let (n, k, rows) = (48, 640, 5);
        let qt = Arc::new(weight(GgmlDType::Q8_0, n, k));
        let ours = QLinear::from_arc(qt.clone()).unwrap();
        assert!(matches!(
            ours.backend,
            Backend::Q8_0(_) | Backend::Packed(_)
        ));
        let candle = QMatMul::from_arc(qt).unwrap();
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 2.0)
            .collect();
        let got = ours.forward(&x, rows).unwrap();
        let input = Tensor::from_slice(&x, (rows, k), &Device::Cpu).unwrap();
        let want = candle
            .forward(&input)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-3 * scale,
                "{g} vs {w} (max |y| {scale})"
            );
        }
    }

    /// Every row's result must not depend on which other rows share the matmul: that is what
    /// makes a sequence's output the same alone and inside any batch.
    #[test]
    fn rows_are_batch_invariant_for_every_format() {
        for (dtype, k) in [
            (GgmlDType::Q4K, 512),
            (GgmlDType::Q6K, 512),
            (GgmlDType::Q8_0, 512),
            (GgmlDType::Q8_0, 640),
            (GgmlDType::Q5_0, 640),
        ] {
            let lin = QLinear::from_qtensor(weight(dtype, 64, k)).unwrap();
            for rows in [2, 3, 8, 31, 32, 40, 77] {
                let x: Vec<f32> = (0..rows * k)
                    .map(|i| ((i * 31 % 97) as f32 / 97.0 - 0.5) * 3.0)
                    .collect();
                let batched = lin.forward(&x, rows).unwrap();
                for r in [0, rows / 2, rows - 1] {
                    let alone = lin.forward(&x[r * k..(r + 1) * k], 1).unwrap();
                    assert_eq!(
                        &batched[r * 64..(r + 1) * 64],
                        &alone[..],
                        "{dtype:?} k={k}: row {r} of {rows}"
                    );
                }
            }
        }
    }
}
