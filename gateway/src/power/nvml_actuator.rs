//! The NVML actuator: locks SM clocks and sets power limits on every GPU, and turns read-only
//! (saying so once) when the process may not.

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Device;

use super::notes::Notes;
use super::nvml_api::{map_error, nvml_device_for, nvml_devices, NvmlDevice};
use super::{ActuatorLimits, ClockRange, PowerActuator};
use crate::GatewayError;

const WATTS_PER_MILLIWATT: f64 = 1e-3;

/// Locks SM clocks and sets power limits on every GPU alike (limits are per GPU). Without
/// permission it says so once and turns read-only: later commands fail at once with
/// `PowerDenied` without calling the driver, and the sensor keeps working.
pub struct NvmlActuator<D: NvmlDevice = Device<'static>> {
    gpus: Vec<D>,
    read_only: bool,
    notes: Notes,
}

impl NvmlActuator {
    pub fn open() -> Result<Self, GatewayError> {
        Ok(Self::new(nvml_devices()?))
    }

    /// One engine's GPU (see `nvml_device_for`).
    pub fn open_gpu(pci_bus_id: Option<&str>, ordinal: usize) -> Result<Self, GatewayError> {
        Ok(Self::new(vec![nvml_device_for(pci_bus_id, ordinal)?.1]))
    }
}

impl<D: NvmlDevice> NvmlActuator<D> {
    pub fn new(gpus: Vec<D>) -> Self {
        Self {
            gpus,
            read_only: false,
            notes: Notes::default(),
        }
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// How many distinct warnings were logged (tests check "once").
    #[cfg(test)]
    pub(crate) fn notices_said(&self) -> usize {
        self.notes.count()
    }

    /// Runs `command` on each GPU in turn, stopping at the first failure.
    fn apply(
        &mut self,
        what: &str,
        mut command: impl FnMut(&mut D) -> Result<(), NvmlError>,
    ) -> Result<(), GatewayError> {
        if self.read_only {
            return Err(GatewayError::PowerDenied(format!(
                "NVML {what} (read-only: no permission earlier)"
            )));
        }
        for (i, dev) in self.gpus.iter_mut().enumerate() {
            match command(dev) {
                Ok(()) => {}
                Err(NvmlError::NoPermission) => {
                    self.read_only = true;
                    self.notes.warn_once("read-only", "NVML: no permission to set clocks or power limits (needs root); continuing read-only: power is measured, not steered");
                    return Err(map_error(
                        &format!("NVML gpu{i} {what}"),
                        NvmlError::NoPermission,
                    ));
                }
                Err(e) => return Err(map_error(&format!("NVML gpu{i} {what}"), e)),
            }
        }
        Ok(())
    }
}

impl<D: NvmlDevice> PowerActuator for NvmlActuator<D> {
    /// The ranges every GPU accepts (the intersection).
    fn limits(&self) -> Result<ActuatorLimits, GatewayError> {
        let mut limits: Option<ActuatorLimits> = None;
        for (i, dev) in self.gpus.iter().enumerate() {
            let (pmin_mw, pmax_mw) = dev
                .power_limit_constraints_mw()
                .map_err(|e| map_error(&format!("NVML gpu{i} power limit range"), e))?;
            let (cmin, cmax) = dev
                .sm_clock_range_mhz()
                .map_err(|e| map_error(&format!("NVML gpu{i} SM clock range"), e))?;
            let here = ActuatorLimits {
                power_limit_min_watts: f64::from(pmin_mw) * WATTS_PER_MILLIWATT,
                power_limit_max_watts: f64::from(pmax_mw) * WATTS_PER_MILLIWATT,
                sm_clock_min_mhz: cmin,
                sm_clock_max_mhz: cmax,
            };
            limits = Some(match limits {
                None => here,
                Some(l) => ActuatorLimits {
                    power_limit_min_watts: l.power_limit_min_watts.max(here.power_limit_min_watts),
                    power_limit_max_watts: l.power_limit_max_watts.min(here.power_limit_max_watts),
                    sm_clock_min_mhz: l.sm_clock_min_mhz.max(here.sm_clock_min_mhz),
                    sm_clock_max_mhz: l.sm_clock_max_mhz.min(here.sm_clock_max_mhz),
                },
            });
        }
        limits.ok_or_else(|| GatewayError::PowerUnavailable("NVML actuator (no GPU)".into()))
    }

    fn set_sm_clock(&mut self, range: Option<ClockRange>) -> Result<(), GatewayError> {
        let Some(r) = range else {
            return self.apply("clock unlock", |d| d.reset_locked_clocks());
        };
        let l = self.limits()?;
        if r.min_mhz > r.max_mhz || r.min_mhz < l.sm_clock_min_mhz || r.max_mhz > l.sm_clock_max_mhz
        {
            return Err(GatewayError::Power(format!(
                "SM clock range {}..={} MHz is outside {}..={} MHz",
                r.min_mhz, r.max_mhz, l.sm_clock_min_mhz, l.sm_clock_max_mhz
            )));
        }
        self.apply("clock lock", |d| {
            d.set_locked_clocks_mhz(r.min_mhz, r.max_mhz)
        })
    }

    fn set_power_limit(&mut self, watts: f64) -> Result<(), GatewayError> {
        let l = self.limits()?;
        if !(watts >= l.power_limit_min_watts && watts <= l.power_limit_max_watts) {
            return Err(GatewayError::Power(format!(
                "power limit {watts} W is outside {}..={} W",
                l.power_limit_min_watts, l.power_limit_max_watts
            )));
        }
        let limit_mw = (watts / WATTS_PER_MILLIWATT).round() as u32;
        self.apply("power limit", |d| d.set_power_limit_mw(limit_mw))
    }
}
