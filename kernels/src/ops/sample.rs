//! Batched sampling as a candle op: logits `[rows, vocab]` f32 and per-row parameters in,
//! `[rows, 2]` (token id, logprob) out. On a GPU only those 8 bytes per row reach the host.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};

use super::{cpu_f32, kernel_err};
use crate::cpu::{self as k, SampleRow, Sampled};

/// Values per row of the parameter tensor: temperature, top_k, top_p, min_p, uniform.
pub const SAMPLE_PARAMS: usize = 5;

/// Parameters for a batch of rows, as the op's second input.
pub struct SampleParams;

impl SampleParams {
    /// `[rows, SAMPLE_PARAMS]` f32 on `device`. top_k travels as f32 (exact below 2^24).
    pub fn tensor(rows: &[SampleRow], device: &Device) -> Result<Tensor> {
        let flat: Vec<f32> = rows
            .iter()
            .flat_map(|r| [r.temperature, r.top_k as f32, r.top_p, r.min_p, r.uniform])
            .collect();
        Tensor::from_vec(flat, (rows.len(), SAMPLE_PARAMS), device)
    }

    /// Reads the op's output back: one `Sampled` per row.
    pub fn results(out: &Tensor) -> Result<Vec<Sampled>> {
        Ok(out
            .to_vec2::<f32>()?
            .into_iter()
            .map(|r| Sampled {
                token: r[0] as u32,
                logprob: r[1],
            })
            .collect())
    }
}

/// Samples every row; see [`k::sample_reference`] for the exact rule.
pub fn sample(logits: &Tensor, params: &Tensor) -> Result<Tensor> {
    logits.apply_op2_no_bwd(params, &Sample)
}

struct Sample;

fn dims(logits: &Layout, params: &Layout) -> Result<(usize, usize)> {
    let (rows, vocab) = logits.shape().dims2()?;
    if params.shape().dims2()? != (rows, SAMPLE_PARAMS) || vocab == 0 || vocab >= 1 << 24 {
        bail!(
            "sample: logits {:?} need params of ({rows}, {SAMPLE_PARAMS}) and a vocabulary \
             below 2^24, got {:?}",
            logits.shape(),
            params.shape()
        )
    }
    Ok((rows, vocab))
}

impl CustomOp2 for Sample {
    fn name(&self) -> &'static str {
        "sample"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, vocab) = dims(l1, l2)?;
        if s1.dtype() != DType::F32 || s2.dtype() != DType::F32 {
            bail!("sample: logits and params must be f32")
        }
        let (logits, params) = (cpu_f32(s1, l1, "sample")?, cpu_f32(s2, l2, "sample")?);
        let mut out = Vec::with_capacity(rows * 2);
        for (row, p) in logits
            .chunks_exact(vocab)
            .zip(params.chunks_exact(SAMPLE_PARAMS))
        {
            let p = SampleRow {
                temperature: p[0],
                top_k: p[1].max(0.0) as usize,
                top_p: p[2],
                min_p: p[3],
                uniform: p[4],
            };
            let s = k::sample_reference(row, &p).map_err(kernel_err)?;
            out.extend([s.token as f32, s.logprob]);
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, 2))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::gpu::{output, per_row, ptx, view};
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;

        let (rows, vocab) = dims(l1, l2)?;
        if s1.dtype() != DType::F32 || s2.dtype() != DType::F32 {
            bail!("sample: logits and params must be f32")
        }
        let dev = s1.device.clone();
        let f = dev.get_or_load_custom_func("sample_f32", "sample", ptx::SAMPLE)?;
        let (logits, params) = (
            view::<f32>(s1, l1, "sample")?,
            view::<f32>(s2, l2, "sample")?,
        );
        let mut out = output::<f32>(&dev, rows * 2)?;
        let vocab = vocab as i32;
        let mut launch = f.builder();
        launch.arg(&logits);
        launch.arg(&params);
        launch.arg(&mut out);
        launch.arg(&vocab);
        // 1024 threads: the kernel's `partial` scratch is sized for exactly that many.
        // SAFETY: argument types and order match `sample_f32`.
        unsafe { launch.launch(per_row(rows, 1024)) }.w()?;
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((rows, 2)),
        ))
    }
}
