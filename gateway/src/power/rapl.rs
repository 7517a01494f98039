//! CPU power from Linux powercap (RAPL): `intel-rapl:*/energy_uj` counters, unwrapped with
//! `max_energy_range_uj`. Pure parsers of the file contents, a thin reading layer, and a
//! sensor whose core (`observe`) takes raw counter values so it is testable without sysfs.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::counter::EnergyMeter;
use super::{DeviceSample, EnergySource, PowerSample, PowerSensor};
use crate::GatewayError;

const JOULES_PER_MICROJOULE: f64 = 1e-6;

/// Parses one powercap counter file (`energy_uj`, `max_energy_range_uj`): a decimal integer.
pub fn parse_counter_uj(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse()
        .map_err(|_| format!("not a powercap counter: `{t}`"))
}

/// The device label for a powercap zone, or `None` if the zone is not summed. Packages are
/// top-level zones (`intel-rapl:N`); DRAM is a sub-zone on servers but is *not* inside the
/// package figure, so it is added. `core`/`uncore` are inside the package and `psys` overlaps
/// it, so they are skipped to avoid counting energy twice.
pub fn zone_label(dir_name: &str, zone_name: &str) -> Option<String> {
    let ids: Vec<&str> = dir_name.strip_prefix("intel-rapl:")?.split(':').collect();
    if !ids
        .iter()
        .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    match (ids.as_slice(), zone_name) {
        ([_], name) if name.starts_with("package") => Some(name.to_owned()),
        ([package, _], "dram") | ([package], "dram") => Some(format!("dram-{package}")),
        _ => None,
    }
}

/// One summed powercap zone.
#[derive(Clone, Debug, PartialEq)]
pub struct RaplZone {
    pub label: String,
    pub energy_path: PathBuf,
    /// Where `energy_uj` wraps to zero; `None` if the file is missing (then a backwards step is
    /// treated as a reset).
    pub max_range_uj: Option<u64>,
}

/// The zones under `root` (normally `/sys/class/powercap`), sorted by label.
pub fn find_zones(root: &Path) -> Result<Vec<RaplZone>, GatewayError> {
    let entries = std::fs::read_dir(root)
        .map_err(|e| GatewayError::PowerUnavailable(format!("RAPL ({}: {e})", root.display())))?;
    let mut zones = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let dir_name = entry.file_name().to_string_lossy().into_owned();
        let Ok(zone_name) = std::fs::read_to_string(dir.join("name")) else {
            continue;
        };
        let Some(label) = zone_label(&dir_name, zone_name.trim()) else {
            continue;
        };
        let max_range_uj = std::fs::read_to_string(dir.join("max_energy_range_uj"))
            .ok()
            .and_then(|t| parse_counter_uj(&t).ok());
        zones.push(RaplZone {
            label,
            energy_path: dir.join("energy_uj"),
            max_range_uj,
        });
    }
    zones.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(zones)
}

/// Reads a zone's counter. Since Linux 5.10 `energy_uj` is readable by root only (a side
/// channel), so permission errors are `PowerDenied`.
fn read_energy_uj(zone: &RaplZone) -> Result<u64, GatewayError> {
    let path = zone.energy_path.display();
    match std::fs::read_to_string(&zone.energy_path) {
        Ok(text) => {
            parse_counter_uj(&text).map_err(|e| GatewayError::Power(format!("RAPL {path}: {e}")))
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(GatewayError::PowerDenied(
            format!("RAPL {path} (root only since Linux 5.10)"),
        )),
        Err(e) => Err(GatewayError::PowerUnavailable(format!("RAPL {path} ({e})"))),
    }
}

struct Zone {
    zone: RaplZone,
    meter: EnergyMeter,
    watts: f64,
}

/// Measured CPU (and DRAM) power. Source: `rapl`.
pub struct RaplSensor {
    zones: Vec<Zone>,
}

impl RaplSensor {
    /// Finds the zones under `root` and takes a first reading, so the first `sample` already
    /// has an interval to measure power over.
    pub fn open(root: &Path) -> Result<Self, GatewayError> {
        let zones = find_zones(root)?;
        if zones.is_empty() {
            let why = format!("RAPL (no package zones under {})", root.display());
            return Err(GatewayError::PowerUnavailable(why));
        }
        let mut sensor = Self::new(zones);
        let raws = sensor.read_all()?;
        sensor.observe(Instant::now(), &raws);
        Ok(sensor)
    }

    pub fn new(zones: Vec<RaplZone>) -> Self {
        let zones = zones
            .into_iter()
            .map(|zone| Zone {
                meter: EnergyMeter::new(JOULES_PER_MICROJOULE, zone.max_range_uj),
                zone,
                watts: 0.0,
            })
            .collect();
        Self { zones }
    }

    fn read_all(&self) -> Result<Vec<u64>, GatewayError> {
        self.zones.iter().map(|z| read_energy_uj(&z.zone)).collect()
    }

    /// Feeds one raw `energy_uj` per zone (in `new`'s order), read at `at`. Power is the energy
    /// delta over the interval; on a counter reset the previous power is carried over.
    pub fn observe(&mut self, at: Instant, raws_uj: &[u64]) -> PowerSample {
        let devices = self
            .zones
            .iter_mut()
            .zip(raws_uj)
            .map(|(z, &raw)| {
                let seconds = z.meter.elapsed_seconds(at);
                let before_joules = z.meter.total_joules();
                z.meter.update(raw, at, z.watts);
                if seconds > 0.0 {
                    z.watts = (z.meter.total_joules() - before_joules) / seconds;
                }
                DeviceSample {
                    device: z.zone.label.clone(),
                    power_watts: z.watts,
                    energy_joules: z.meter.total_joules(),
                    sm_clock_mhz: None,
                    power_limit_watts: None,
                }
            })
            .collect();
        PowerSample {
            at,
            source: EnergySource::Rapl,
            devices,
        }
    }
}

impl PowerSensor for RaplSensor {
    fn source(&self) -> EnergySource {
        EnergySource::Rapl
    }

    fn sample(&mut self) -> Result<PowerSample, GatewayError> {
        let raws = self.read_all()?;
        Ok(self.observe(Instant::now(), &raws))
    }
}

#[cfg(test)]
#[path = "rapl_tests.rs"]
mod tests;
