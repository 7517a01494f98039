//! A model's weights on a candle device, read by GGUF names from any `WeightSource`: the
//! projections as `QMatMul` (quantized formats stay quantized; candle has CUDA kernels for
//! them), norms and biases as f32 tensors.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::loader::WeightSource;
use crate::ModelError;

/// Moves a CPU tensor's bytes to `device` without requantizing.
pub(super) fn to_device(t: QTensor, device: &Device) -> Result<QTensor, ModelError> {
    if device.is_cpu() {
        return Ok(t);
    }
    let shape = t.shape().clone();
    let storage = QStorage::from_data(Cow::Owned(t.data()?.into_owned()), device, t.dtype())?;
    Ok(QTensor::new(storage, shape)?)
}

/// `y = x · Wᵀ (+ b)`.
pub(super) struct DeviceLinear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl DeviceLinear {
    pub fn new(weight: QTensor, bias: Option<Tensor>, device: &Device) -> Result<Self, ModelError> {
        Ok(Self {
            weight: QMatMul::from_arc(Arc::new(to_device(weight, device)?))?,
            bias,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let y = self.weight.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Reads GGUF-named tensors onto one device.
pub(super) struct Reader<'a> {
    pub src: &'a mut dyn WeightSource,
    pub device: &'a Device,
}

impl Reader<'_> {
    /// A small tensor (norm weight, bias) as f32 on the device.
    pub fn vector(&mut self, name: &str) -> Result<Tensor, ModelError> {
        let v = self.src.f32_vec(name)?;
        Ok(Tensor::from_vec(v.clone(), v.len(), &Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_device(self.device)?)
    }

    pub fn linear(&mut self, name: &str, bias: bool) -> Result<DeviceLinear, ModelError> {
        self.linear_with(name, bias, Ok)
    }

    /// A projection whose rows are rearranged first (llama.cpp's q/k order).
    pub fn linear_with(
        &mut self,
        name: &str,
        bias: bool,
        fix: impl Fn(QTensor) -> Result<QTensor, ModelError>,
    ) -> Result<DeviceLinear, ModelError> {
        let weight = fix(self.src.tensor(&format!("{name}.weight"))?)?;
        let bias = if bias {
            Some(self.vector(&format!("{name}.bias"))?)
        } else {
            None
        };
        DeviceLinear::new(weight, bias, self.device)
    }
}
