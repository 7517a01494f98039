//! The gated activations of the feed-forward as candle ops: `act(gate) * up`, GELU-tanh
//! (Gemma) or SiLU (Llama, Qwen).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::{cpu_f32, cpu_store, kernel_err, same_dtype};
use crate::cpu as k;

/// `gelu_tanh(gate) * up`, element-wise.
pub fn gelu_tanh_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.apply_op2_no_bwd(up, &GatedAct::GeluTanh)
}

/// `silu(gate) * up`, element-wise.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.apply_op2_no_bwd(up, &GatedAct::Silu)
}

enum GatedAct {
    GeluTanh,
    Silu,
}

impl CustomOp2 for GatedAct {
    fn name(&self) -> &'static str {
        match self {
            GatedAct::GeluTanh => "gelu_tanh_mul",
            GatedAct::Silu => "silu_mul",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!(
                "{}: gate {:?} and up {:?}",
                self.name(),
                l1.shape(),
                l2.shape()
            )
        }
        same_dtype(self.name(), s1.dtype(), s2.dtype())?;
        let mut gate = cpu_f32(s1, l1, self.name())?.into_owned();
        let up = cpu_f32(s2, l2, self.name())?;
        match self {
            GatedAct::GeluTanh => k::gelu_tanh_mul(&mut gate, &up),
            GatedAct::Silu => k::silu_mul(&mut gate, &up),
        }
        .map_err(kernel_err)?;
        Ok((
            cpu_store(gate, s1.dtype(), self.name())?,
            l1.shape().clone(),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::gpu::{kernel_name, output, ptx, view, with_float_type};
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;

        if l1.shape() != l2.shape() {
            bail!(
                "{}: gate {:?} and up {:?}",
                self.name(),
                l1.shape(),
                l2.shape()
            )
        }
        same_dtype(self.name(), s1.dtype(), s2.dtype())?;
        let (module, source) = match self {
            GatedAct::GeluTanh => ("gelu_tanh_mul", ptx::GELU_TANH_MUL),
            GatedAct::Silu => ("silu_mul", ptx::SILU_MUL),
        };
        let dev = s1.device.clone();
        let dtype = s1.dtype();
        let f = dev.get_or_load_custom_func(&kernel_name(module, dtype)?, module, source)?;
        let n = l1.shape().elem_count();
        with_float_type!(dtype, self.name(), |T| {
            let (gate, up) = (
                view::<T>(s1, l1, self.name())?,
                view::<T>(s2, l2, self.name())?,
            );
            let mut out = output::<T>(&dev, n)?;
            let mut launch = f.builder();
            launch.arg(&gate);
            launch.arg(&up);
            launch.arg(&mut out);
            launch.arg(&n);
            // Grid-stride loop: enough blocks to fill a GPU, capped so huge tensors loop.
            let blocks = n.div_ceil(256).clamp(1, 65_535) as u32;
            let cfg = LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: argument types and order match `<act>_mul_<dtype>`.
            unsafe { launch.launch(cfg) }.w()?;
            Ok((
                candle_core::CudaStorage::wrap_cuda_slice(out, dev),
                l1.shape().clone(),
            ))
        })
    }
}
