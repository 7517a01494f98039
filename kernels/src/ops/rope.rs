//! NeoX rotary embedding as a candle op: `x` is `[tokens, heads, head_dim]`, `cos`/`sin` are
//! f32 `[tokens, head_dim / 2]` for each token's own position (a step's table).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::{cpu_f32, cpu_store, kernel_err};
use crate::cpu as k;

/// Rotates every head of every token by that token's angles.
pub fn rope_neox(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.apply_op3_no_bwd(cos, sin, &RopeNeox)
}

struct RopeNeox;

/// `(tokens, heads, head_dim)`, checked against the tables.
fn dims(x: &Layout, cos: &Layout, sin: &Layout) -> Result<(usize, usize, usize)> {
    let (tokens, heads, head_dim) = x.shape().dims3()?;
    let want = (tokens, head_dim / 2);
    if head_dim % 2 != 0 || cos.shape().dims2()? != want || sin.shape().dims2()? != want {
        bail!(
            "rope_neox: x {:?} needs cos/sin of {want:?}, got {:?} and {:?}",
            x.shape(),
            cos.shape(),
            sin.shape()
        )
    }
    Ok((tokens, heads, head_dim))
}

impl CustomOp3 for RopeNeox {
    fn name(&self) -> &'static str {
        "rope_neox"
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
        let (_, heads, head_dim) = dims(l1, l2, l3)?;
        if s2.dtype() != DType::F32 || s3.dtype() != DType::F32 {
            bail!("rope_neox: cos/sin must be f32")
        }
        let name = self.name();
        let mut x = cpu_f32(s1, l1, name)?.into_owned();
        let (cos, sin) = (cpu_f32(s2, l2, name)?, cpu_f32(s3, l3, name)?);
        let (row, half) = (heads * head_dim, head_dim / 2);
        if row > 0 && half > 0 {
            for (t, xs) in x.chunks_exact_mut(row).enumerate() {
                let span = t * half..(t + 1) * half;
                k::rope_neox_rows(xs, &cos[span.clone()], &sin[span]).map_err(kernel_err)?;
            }
        }
        Ok((cpu_store(x, s1.dtype(), name)?, l1.shape().clone()))
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
        use crate::gpu::{kernel_name, output, ptx, view, with_float_type};
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;

        let (tokens, heads, head_dim) = dims(l1, l2, l3)?;
        let dev = s1.device.clone();
        let dtype = s1.dtype();
        let f = dev.get_or_load_custom_func(
            &kernel_name("rope_neox", dtype)?,
            "rope_neox",
            ptx::ROPE_NEOX,
        )?;
        let cos = view::<f32>(s2, l2, self.name())?;
        let sin = view::<f32>(s3, l3, self.name())?;
        with_float_type!(dtype, self.name(), |T| {
            let x = view::<T>(s1, l1, self.name())?;
            let mut out = output::<T>(&dev, l1.shape().elem_count())?;
            let (h, d) = (heads as i32, head_dim as i32);
            let mut launch = f.builder();
            launch.arg(&x);
            launch.arg(&mut out);
            launch.arg(&cos);
            launch.arg(&sin);
            launch.arg(&h);
            launch.arg(&d);
            let cfg = LaunchConfig {
                grid_dim: (tokens.max(1) as u32, heads as u32, 1),
                block_dim: ((head_dim / 2).clamp(1, 1024) as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: argument types and order match `rope_neox_<dtype>`.
            unsafe { launch.launch(cfg) }.w()?;
            Ok((
                candle_core::CudaStorage::wrap_cuda_slice(out, dev),
                l1.shape().clone(),
            ))
        })
    }
}
