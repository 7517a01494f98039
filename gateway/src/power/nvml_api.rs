//! The few NVML calls gridserve makes, behind a small trait in NVML's own units (mW, mJ, MHz),
//! so the adapter in `nvml.rs` can be tested with a fake device; plus error mapping and the
//! process-wide NVML handle.

use std::sync::OnceLock;

use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::enums::device::{GpuLockedClocksSetting, SampleValue};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::NVML_FI_DEV_POWER_INSTANT;
use nvml_wrapper::{Device, Nvml};

use crate::GatewayError;

/// One GPU as NVML shows it. Raw NVML units; conversion happens in the adapter.
pub trait NvmlDevice: Send {
    /// `nvmlDeviceGetPowerUsage`: a ~1 s average on Hopper, instantaneous on older GPUs.
    fn power_usage_mw(&self) -> Result<u32, NvmlError>;
    /// The `NVML_FI_DEV_POWER_INSTANT` field (newer drivers and GPUs only).
    fn instant_power_mw(&self) -> Result<u32, NvmlError>;
    /// Energy since the driver was loaded (Volta and newer).
    fn total_energy_mj(&self) -> Result<u64, NvmlError>;
    fn sm_clock_mhz(&self) -> Result<u32, NvmlError>;
    /// Lowest and highest SM clocks the GPU supports.
    fn sm_clock_range_mhz(&self) -> Result<(u32, u32), NvmlError>;
    /// The power limit the GPU enforces now.
    fn power_limit_mw(&self) -> Result<u32, NvmlError>;
    /// The lowest and highest power limits that may be set.
    fn power_limit_constraints_mw(&self) -> Result<(u32, u32), NvmlError>;
    fn set_locked_clocks_mhz(&mut self, min_mhz: u32, max_mhz: u32) -> Result<(), NvmlError>;
    fn reset_locked_clocks(&mut self) -> Result<(), NvmlError>;
    fn set_power_limit_mw(&mut self, limit_mw: u32) -> Result<(), NvmlError>;
    /// `nvmlClocksThrottleReason*` bits.
    fn throttle_reasons_bits(&self) -> Result<u64, NvmlError>;
}

impl NvmlDevice for Device<'static> {
    fn power_usage_mw(&self) -> Result<u32, NvmlError> {
        self.power_usage()
    }

    fn instant_power_mw(&self) -> Result<u32, NvmlError> {
        let fields = self.field_values_for(&[FieldId(NVML_FI_DEV_POWER_INSTANT)])?;
        let sample = fields.into_iter().next().ok_or(NvmlError::NotSupported)??;
        match sample.value? {
            SampleValue::U32(mw) => Ok(mw),
            SampleValue::U64(mw) => Ok(u32::try_from(mw).unwrap_or(u32::MAX)),
            SampleValue::I64(mw) => Ok(u32::try_from(mw.max(0)).unwrap_or(u32::MAX)),
            SampleValue::F64(mw) => Ok(mw.max(0.0) as u32),
        }
    }

    fn total_energy_mj(&self) -> Result<u64, NvmlError> {
        self.total_energy_consumption()
    }

    fn sm_clock_mhz(&self) -> Result<u32, NvmlError> {
        self.clock_info(Clock::SM)
    }

    fn sm_clock_range_mhz(&self) -> Result<(u32, u32), NvmlError> {
        let max_mhz = self.max_clock_info(Clock::SM)?;
        // Supported SM clocks are listed per memory clock; the top memory clock has the full set.
        let mem_mhz = self.max_clock_info(Clock::Memory)?;
        let min_mhz = self.supported_graphics_clocks(mem_mhz)?.into_iter().min();
        Ok((min_mhz.unwrap_or(max_mhz).min(max_mhz), max_mhz))
    }

    fn power_limit_mw(&self) -> Result<u32, NvmlError> {
        self.enforced_power_limit()
    }

    fn power_limit_constraints_mw(&self) -> Result<(u32, u32), NvmlError> {
        let c = self.power_management_limit_constraints()?;
        Ok((c.min_limit, c.max_limit))
    }

    fn set_locked_clocks_mhz(&mut self, min_mhz: u32, max_mhz: u32) -> Result<(), NvmlError> {
        self.set_gpu_locked_clocks(GpuLockedClocksSetting::Numeric {
            min_clock_mhz: min_mhz,
            max_clock_mhz: max_mhz,
        })
    }

    fn reset_locked_clocks(&mut self) -> Result<(), NvmlError> {
        self.reset_gpu_locked_clocks()
    }

    fn set_power_limit_mw(&mut self, limit_mw: u32) -> Result<(), NvmlError> {
        self.set_power_management_limit(limit_mw)
    }

    fn throttle_reasons_bits(&self) -> Result<u64, NvmlError> {
        self.current_throttle_reasons().map(|r| r.bits())
    }
}

/// The process's NVML handle. Initialised once and never shut down, so the `Device`s taken
/// from it can live as long as the sensor and actuator that hold them (`Device<'static>`).
static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();

/// Every GPU the driver shows, or `PowerUnavailable` when there is no driver or no GPU.
pub fn nvml_devices() -> Result<Vec<Device<'static>>, GatewayError> {
    let nvml = NVML
        .get_or_init(|| Nvml::init().map_err(|e| init_failure(&e)))
        .as_ref()
        .map_err(|why| GatewayError::PowerUnavailable(why.clone()))?;
    let count = nvml
        .device_count()
        .map_err(|e| map_error("NVML device count", e))?;
    if count == 0 {
        return Err(GatewayError::PowerUnavailable(
            "NVML (driver loaded, but it shows no GPU)".into(),
        ));
    }
    (0..count)
        .map(|i| {
            nvml.device_by_index(i)
                .map_err(|e| map_error(&format!("NVML gpu{i}"), e))
        })
        .collect()
}

/// The GPU an engine runs on, with its NVML name (`gpu<NVML index>`): found by its PCI
/// address when CUDA gave one (CUDA and NVML may number GPUs differently), else by NVML index
/// `ordinal`.
pub fn nvml_device_for(
    pci_bus_id: Option<&str>,
    ordinal: usize,
) -> Result<(String, Device<'static>), GatewayError> {
    let nvml = NVML
        .get_or_init(|| Nvml::init().map_err(|e| init_failure(&e)))
        .as_ref()
        .map_err(|why| GatewayError::PowerUnavailable(why.clone()))?;
    let device = match pci_bus_id {
        Some(bus) => nvml
            .device_by_pci_bus_id(bus)
            .map_err(|e| map_error(&format!("NVML GPU at PCI {bus}"), e))?,
        None => {
            let index = u32::try_from(ordinal)
                .map_err(|_| GatewayError::Config(format!("GPU index {ordinal} out of range")))?;
            nvml.device_by_index(index)
                .map_err(|e| map_error(&format!("NVML gpu{ordinal}"), e))?
        }
    };
    let index = device.index().map_or(ordinal as u32, |i| i);
    Ok((format!("gpu{index}"), device))
}

/// Why `Nvml::init` failed, worded for an operator.
fn init_failure(e: &NvmlError) -> String {
    tracing::debug!("Nvml::init: {e}");
    match e {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
            "NVML (libnvidia-ml.so.1 cannot be loaded: no NVIDIA driver installed)".into()
        }
        NvmlError::DriverNotLoaded => "NVML (the NVIDIA kernel driver is not loaded)".into(),
        NvmlError::NoPermission => "NVML (no permission to open the GPU devices)".into(),
        _ => format!("NVML (init failed: {e})"),
    }
}

/// Maps an NVML error on `what` (e.g. "gpu0 power limit") to the gateway's error.
pub fn map_error(what: &str, e: NvmlError) -> GatewayError {
    match e {
        NvmlError::NoPermission => GatewayError::PowerDenied(format!("{what} (needs root)")),
        NvmlError::NotSupported => {
            GatewayError::PowerUnavailable(format!("{what} (not supported by this GPU or driver)"))
        }
        NvmlError::DriverNotLoaded
        | NvmlError::LibraryNotFound
        | NvmlError::LibloadingError(_)
        | NvmlError::FailedToLoadSymbol(_)
        | NvmlError::FunctionNotFound
        | NvmlError::Uninitialized => {
            GatewayError::PowerUnavailable(format!("{what} (NVML library or driver: {e})"))
        }
        other => GatewayError::Power(format!("{what}: {other}")),
    }
}

/// The `nvmlClocksThrottleReason*` bits NVML defines (nvml.h), by name.
const THROTTLE_REASONS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

/// Names of the throttle reasons set in `bits`; unknown bits are shown in hex rather than
/// dropped, so a newer driver's reason is still visible.
pub fn throttle_reason_names(bits: u64) -> Vec<String> {
    let mut names: Vec<String> = THROTTLE_REASONS
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect();
    let known = THROTTLE_REASONS.iter().fold(0, |acc, (bit, _)| acc | bit);
    if bits & !known != 0 {
        names.push(format!("unknown_{:#x}", bits & !known));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_gateway_kinds() {
        let denied = map_error("gpu0 clocks", NvmlError::NoPermission);
        assert!(matches!(denied, GatewayError::PowerDenied(ref m) if m.contains("gpu0 clocks")));
        for e in [
            NvmlError::NotSupported,
            NvmlError::DriverNotLoaded,
            NvmlError::LibraryNotFound,
        ] {
            assert!(matches!(
                map_error("x", e),
                GatewayError::PowerUnavailable(_)
            ));
        }
        assert!(matches!(
            map_error("x", NvmlError::GpuLost),
            GatewayError::Power(_)
        ));
    }

    #[test]
    fn throttle_bits_are_named() {
        assert!(throttle_reason_names(0).is_empty());
        assert_eq!(
            throttle_reason_names(0x4 | 0x40),
            ["sw_power_cap", "hw_thermal_slowdown"]
        );
        assert_eq!(
            throttle_reason_names(0x1 | 0x1000),
            ["gpu_idle", "unknown_0x1000"]
        );
    }

    #[test]
    fn without_a_driver_init_is_a_clean_unavailable_error() {
        // On a machine with a driver this lists GPUs instead; both are fine, a panic is not.
        match nvml_devices() {
            Ok(gpus) => assert!(!gpus.is_empty()),
            Err(e) => assert!(matches!(e, GatewayError::PowerUnavailable(_)), "{e}"),
        }
    }
}
