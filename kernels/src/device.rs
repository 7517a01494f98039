//! Device choice (`cpu`, `cuda:N[,M..]`, `auto`) and opening CUDA devices without panicking:
//! a GPU that is missing, or a build without the `cuda` feature, is a clear error instead.

use std::str::FromStr;

use candle_core::Device;

use crate::KernelError;

/// What `--device` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    /// These GPU ordinals, one engine each.
    Cuda(Vec<usize>),
    /// Every GPU there is, else the CPU.
    Auto,
}

impl FromStr for DeviceSpec {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self, KernelError> {
        let bad = |why: String| {
            KernelError::Device(format!(
                "`{s}`: {why} (expected cpu, auto, cuda or cuda:N[,M..])"
            ))
        };
        match s.trim() {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(Self::Auto),
            "cuda" => Ok(Self::Cuda(vec![0])),
            other => {
                let Some(list) = other.strip_prefix("cuda:") else {
                    return Err(bad("unknown device".into()));
                };
                let mut ordinals = Vec::new();
                for part in list.split(',') {
                    let n: usize = part
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("`{part}` is not a GPU number")))?;
                    if ordinals.contains(&n) {
                        return Err(bad(format!("cuda:{n} is listed twice")));
                    }
                    ordinals.push(n);
                }
                Ok(Self::Cuda(ordinals))
            }
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Auto => f.write_str("auto"),
            Self::Cuda(ns) => {
                let list: Vec<String> = ns.iter().map(|n| n.to_string()).collect();
                write!(f, "cuda:{}", list.join(","))
            }
        }
    }
}

/// Opens GPU `ordinal`, or says why it cannot be used here.
pub fn open_cuda(ordinal: usize) -> Result<Device, KernelError> {
    #[cfg(feature = "cuda")]
    {
        // candle/cudarc may panic rather than return an error on some driver failures; a
        // server must report those, not die.
        match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
            Ok(Ok(dev)) => Ok(dev),
            Ok(Err(e)) => Err(KernelError::Device(format!("cuda:{ordinal}: {e}"))),
            Err(_) => Err(KernelError::Device(format!(
                "cuda:{ordinal}: the CUDA driver could not be initialised"
            ))),
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(KernelError::Device(format!(
            "cuda:{ordinal}: this gridserve was built without the `cuda` feature \
             (build with `--features cuda`; scripts/check-cuda.sh sets up a toolkit)"
        )))
    }
}

/// GPUs the driver reports (0 without a driver, without a GPU, or in a CPU build).
pub fn cuda_device_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc::driver::CudaContext;
        std::panic::catch_unwind(CudaContext::device_count)
            .ok()
            .and_then(|r| r.ok())
            .map_or(0, |n| n.max(0) as usize)
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}

/// How a device is named in logs, status and errors: `cpu`, `cuda:1`.
pub fn label(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The CUDA ordinal of a GPU device (None for the CPU).
pub fn cuda_ordinal(device: &Device) -> Option<usize> {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => Some(gpu_id),
        _ => None,
    }
}

/// The GPU's PCI address as NVML spells it (`00000000:17:00.0`), so the power sensor opened
/// for an engine reads the same GPU whatever `CUDA_VISIBLE_DEVICES` or `CUDA_DEVICE_ORDER`
/// renumbered. None for the CPU (or if the driver will not say).
pub fn pci_bus_id(device: &Device) -> Option<String> {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute as Attr;
        let cuda = device.as_cuda_device().ok()?;
        let stream = cuda.cuda_stream();
        let context = stream.context();
        let get = |attr| context.attribute(attr).ok();
        let domain = get(Attr::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?;
        let bus = get(Attr::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?;
        let slot = get(Attr::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?;
        Some(format!("{domain:08x}:{bus:02x}:{slot:02x}.0"))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        None
    }
}

/// The devices to run on: `auto` is every GPU there is, or the CPU when there is none.
pub fn resolve(spec: &DeviceSpec) -> Result<Vec<Device>, KernelError> {
    match spec {
        DeviceSpec::Cpu => Ok(vec![Device::Cpu]),
        DeviceSpec::Cuda(ordinals) => ordinals.iter().map(|&n| open_cuda(n)).collect(),
        DeviceSpec::Auto => {
            let gpus: Vec<Device> = (0..cuda_device_count())
                .filter_map(|n| open_cuda(n).ok())
                .collect();
            Ok(if gpus.is_empty() {
                vec![Device::Cpu]
            } else {
                gpus
            })
        }
    }
}

/// GPU 0 for the CUDA half of a parity test, or why there is none (printed as a skip).
pub fn test_cuda_device() -> Result<Device, String> {
    open_cuda(0).map_err(|e| e.to_string())
}

/// Declares a parity test twice: `cpu` always runs; `cuda` runs on GPU 0 when there is one,
/// prints `SKIPPED` with the reason when there is none, and is listed as ignored (with the
/// reason) in a build without the `cuda` feature. `$check` names a `fn(&Device) -> Result<()>` of the enclosing module.
#[macro_export]
macro_rules! test_device {
    ($name:ident, $check:ident) => {
        mod $name {
            #[test]
            fn cpu() {
                super::$check(&candle_core::Device::Cpu).unwrap();
            }

            #[test]
            #[cfg_attr(not(feature = "cuda"), ignore = "built without the `cuda` feature")]
            fn cuda() {
                match $crate::device::test_cuda_device() {
                    Ok(dev) => super::$check(&dev).unwrap(),
                    Err(why) => {
                        println!("SKIPPED {}::cuda: no CUDA device ({why})", module_path!())
                    }
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse_and_print_back() {
        for (text, spec) in [
            ("cpu", DeviceSpec::Cpu),
            ("auto", DeviceSpec::Auto),
            ("cuda", DeviceSpec::Cuda(vec![0])),
            ("cuda:1", DeviceSpec::Cuda(vec![1])),
            ("cuda:0,2", DeviceSpec::Cuda(vec![0, 2])),
        ] {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), spec, "{text}");
        }
        assert_eq!(DeviceSpec::Cuda(vec![0, 2]).to_string(), "cuda:0,2");
        assert_eq!(label(&Device::Cpu), "cpu");
        assert_eq!(pci_bus_id(&Device::Cpu), None);
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:0,0", "cuda:-1"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains("expected cpu, auto"), "{bad}: {err}");
        }
    }

    #[test]
    fn auto_without_a_gpu_is_the_cpu_and_cuda_is_a_clear_error() {
        if cuda_device_count() > 0 {
            return; // a GPU machine: nothing to check here.
        }
        assert!(resolve(&DeviceSpec::Auto).unwrap()[0].is_cpu());
        let err = resolve(&DeviceSpec::Cuda(vec![0])).unwrap_err().to_string();
        assert!(err.starts_with("cuda:0: "), "{err}");
    }
}
