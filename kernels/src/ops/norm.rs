//! RMSNorm as candle ops: plain, fused with the residual add before it (Llama, Qwen:
//! `sum = residual + x; out = norm(sum)`), and Gemma's post-norm add (`residual + norm(x)`).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::{cpu_f32, cpu_store, kernel_err, same_dtype};
use crate::cpu as k;

/// `x / rms(x) * weight` over the last dimension.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    x.apply_op2_no_bwd(weight, &RmsNorm { eps })
}

/// `(sum, norm(sum) * weight)` with `sum = residual + x`: one pass for the residual stream
/// and the next layer's normed input.
pub fn fused_add_rms_norm(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let both = x.apply_op3_no_bwd(residual, weight, &FusedAddRmsNorm { eps })?;
    Ok((both.get(0)?, both.get(1)?))
}

/// `residual + x / rms(x) * weight` (Gemma's norms after attention and after the MLP).
pub fn rms_norm_add(x: &Tensor, weight: &Tensor, residual: &Tensor, eps: f32) -> Result<Tensor> {
    x.apply_op3_no_bwd(weight, residual, &RmsNormAdd { eps })
}

/// `(rows, cols)` of a `[.., cols]` input whose weight has `cols` values.
fn rows_cols(op: &str, x: &Layout, w: &Layout) -> Result<(usize, usize)> {
    let cols = x.shape().dims().last().copied().unwrap_or(0);
    if cols == 0 || w.shape().elem_count() != cols {
        bail!(
            "{op}: weight of {} values for rows of {cols}",
            w.shape().elem_count()
        )
    }
    Ok((x.shape().elem_count() / cols, cols))
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms_norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        rows_cols(self.name(), l1, l2)?;
        same_dtype(self.name(), s1.dtype(), s2.dtype())?;
        let (x, w) = (cpu_f32(s1, l1, self.name())?, cpu_f32(s2, l2, self.name())?);
        let mut out = vec![0f32; x.len()];
        k::rms_norm_rows(&x, &w, self.eps, &mut out).map_err(kernel_err)?;
        Ok((cpu_store(out, s1.dtype(), self.name())?, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (rows, cols) = rows_cols(self.name(), l1, l2)?;
        let out = cuda::launch(
            self.name(),
            "rms_norm",
            self.eps,
            rows,
            cols,
            &[(s1, l1), (s2, l2)],
            1,
        )?;
        Ok((out, l1.shape().clone()))
    }
}

struct FusedAddRmsNorm {
    eps: f32,
}

impl CustomOp3 for FusedAddRmsNorm {
    fn name(&self) -> &'static str {
        "fused_add_rms_norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        rows_cols(self.name(), l1, l3)?;
        if l1.shape() != l2.shape() {
            bail!(
                "{}: x {:?} and residual {:?}",
                self.name(),
                l1.shape(),
                l2.shape()
            )
        }
        same_dtype(self.name(), s1.dtype(), s2.dtype())?;
        same_dtype(self.name(), s1.dtype(), s3.dtype())?;
        let name = self.name();
        let (x, r, w) = (
            cpu_f32(s1, l1, name)?,
            cpu_f32(s2, l2, name)?,
            cpu_f32(s3, l3, name)?,
        );
        // Round the sum to the storage dtype first, as the kernel does, so the norm reads
        // what is stored.
        let sum: Vec<f32> = x.iter().zip(r.iter()).map(|(a, b)| a + b).collect();
        let sum = match cpu_store(sum, s1.dtype(), name)? {
            CpuStorage::F32(v) => v,
            stored => cpu_f32(&stored, &Layout::contiguous(l1.shape()), name)?.into_owned(),
        };
        let mut both = sum.clone();
        both.resize(2 * sum.len(), 0.0);
        k::rms_norm_rows(&sum, &w, self.eps, &mut both[sum.len()..]).map_err(kernel_err)?;
        Ok((cpu_store(both, s1.dtype(), name)?, stacked(l1)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (rows, cols) = rows_cols(self.name(), l1, l3)?;
        let ins = [(s1, l1), (s2, l2), (s3, l3)];
        let out = cuda::launch(
            self.name(),
            "fused_add_rms_norm",
            self.eps,
            rows,
            cols,
            &ins,
            2,
        )?;
        Ok((out, stacked(l1)))
    }
}

/// `[2, ..shape]`: the sum, then the normed rows.
fn stacked(l: &Layout) -> Shape {
    let mut dims = vec![2];
    dims.extend_from_slice(l.shape().dims());
    Shape::from(dims)
}

struct RmsNormAdd {
    eps: f32,
}

impl CustomOp3 for RmsNormAdd {
    fn name(&self) -> &'static str {
        "rms_norm_add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        rows_cols(self.name(), l1, l2)?;
        if l1.shape() != l3.shape() {
            bail!(
                "{}: x {:?} and residual {:?}",
                self.name(),
                l1.shape(),
                l3.shape()
            )
        }
        same_dtype(self.name(), s1.dtype(), s2.dtype())?;
        same_dtype(self.name(), s1.dtype(), s3.dtype())?;
        let name = self.name();
        let (x, w) = (cpu_f32(s1, l1, name)?, cpu_f32(s2, l2, name)?);
        let mut acc = cpu_f32(s3, l3, name)?.into_owned();
        k::rms_norm_add_rows(&x, &w, self.eps, &mut acc).map_err(kernel_err)?;
        Ok((cpu_store(acc, s1.dtype(), name)?, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (rows, cols) = rows_cols(self.name(), l1, l2)?;
        let ins = [(s1, l1), (s2, l2), (s3, l3)];
        let out = cuda::launch(self.name(), "rms_norm_add", self.eps, rows, cols, &ins, 1)?;
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaStorage, Layout, Result};

    use crate::gpu::{kernel_name, output, per_row, ptx, row_threads, view, with_float_type};

    /// The three norm kernels share a signature: the inputs in order, `outputs` row-major
    /// `[rows, cols]` outputs (stacked into one allocation), then `cols` and `eps`.
    pub(super) fn launch(
        op: &str,
        kernel: &str,
        eps: f32,
        rows: usize,
        cols: usize,
        inputs: &[(&CudaStorage, &Layout)],
        outputs: usize,
    ) -> Result<CudaStorage> {
        let (first, _) = inputs[0];
        let dtype = first.dtype();
        for (s, _) in inputs {
            super::same_dtype(op, dtype, s.dtype())?;
        }
        let dev = first.device.clone();
        let f =
            dev.get_or_load_custom_func(&kernel_name(kernel, dtype)?, "rms_norm", ptx::RMS_NORM)?;
        let n = rows * cols;
        with_float_type!(dtype, op, |T| {
            let views = inputs
                .iter()
                .map(|(s, l)| view::<T>(s, l, op))
                .collect::<Result<Vec<_>>>()?;
            let mut out = output::<T>(&dev, outputs * n)?;
            {
                let (mut a, mut b) = out.split_at_mut(n.min(outputs * n));
                let mut launch = f.builder();
                for v in &views {
                    launch.arg(v);
                }
                launch.arg(&mut a);
                if outputs == 2 {
                    launch.arg(&mut b);
                }
                let (cols, eps) = (cols as i32, eps);
                launch.arg(&cols);
                launch.arg(&eps);
                // SAFETY: argument types and order match the kernel's signature.
                unsafe { launch.launch(per_row(rows, row_threads(cols as usize))) }.w()?;
            }
            Ok(CudaStorage::wrap_cuda_slice(out, dev))
        })
    }
}
