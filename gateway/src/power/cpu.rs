//! The CPU power estimate used when nothing measures power: idle watts plus watts per busy
//! core, times the busy cores measured from `/proc/stat` between samples. Labelled `estimate`
//! everywhere, because it is a model, not a measurement.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::counter::EnergyMeter;
use super::proc_stat::{busy_cores, parse_proc_stat, ProcStat};
use super::{DeviceSample, EnergySource, PowerSample, PowerSensor};
use crate::GatewayError;

/// The linear CPU power model (`[power] cpu_idle_watts`, `cpu_watts_per_busy_core`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuPowerModel {
    pub idle_watts: f64,
    pub watts_per_busy_core: f64,
}

impl CpuPowerModel {
    pub fn watts(&self, busy_cores: f64) -> f64 {
        self.idle_watts + self.watts_per_busy_core * busy_cores
    }
}

/// Estimated CPU power. Source: `estimate`.
pub struct EstimateSensor {
    model: CpuPowerModel,
    stat_path: PathBuf,
    prev: ProcStat,
    /// Busy cores of the last interval that had any ticks; reused for an interval too short
    /// for the kernel's 10 ms tick, instead of reporting idle.
    busy_cores: f64,
    meter: EnergyMeter,
}

impl EstimateSensor {
    /// Reads `/proc/stat` once: the first interval starts now, and until one has elapsed the
    /// utilisation since boot stands in.
    pub fn open(model: CpuPowerModel) -> Result<Self, GatewayError> {
        let path = Path::new("/proc/stat");
        let first = read_proc_stat(path)?;
        let mut sensor = Self::new(model, path.to_owned());
        sensor.observe(Instant::now(), first);
        Ok(sensor)
    }

    pub fn new(model: CpuPowerModel, stat_path: PathBuf) -> Self {
        Self {
            model,
            stat_path,
            prev: ProcStat::default(),
            busy_cores: 0.0,
            meter: EnergyMeter::new(1.0, None),
        }
    }

    /// Feeds one snapshot taken at `at`. The power is the model at the interval's average
    /// busy cores, and so it is also the interval's average power: energy is power × interval.
    pub fn observe(&mut self, at: Instant, stat: ProcStat) -> PowerSample {
        if stat.times.total_ticks > self.prev.times.total_ticks {
            self.busy_cores = busy_cores(&self.prev, &stat);
        }
        self.prev = stat;
        let power_watts = self.model.watts(self.busy_cores);
        self.meter.integrate(at, power_watts);
        PowerSample {
            at,
            source: EnergySource::Estimate,
            devices: vec![DeviceSample {
                device: "cpu".into(),
                power_watts,
                energy_joules: self.meter.total_joules(),
                sm_clock_mhz: None,
                power_limit_watts: None,
            }],
        }
    }

    /// Busy cores over the last interval (for logs and tests).
    pub fn busy_cores(&self) -> f64 {
        self.busy_cores
    }
}

fn read_proc_stat(path: &Path) -> Result<ProcStat, GatewayError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        GatewayError::PowerUnavailable(format!("CPU estimate ({}: {e})", path.display()))
    })?;
    parse_proc_stat(&text).map_err(GatewayError::Power)
}

impl PowerSensor for EstimateSensor {
    fn source(&self) -> EnergySource {
        EnergySource::Estimate
    }

    fn sample(&mut self) -> Result<PowerSample, GatewayError> {
        let stat = read_proc_stat(&self.stat_path)?;
        Ok(self.observe(Instant::now(), stat))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::proc_stat::CpuTimes;
    use super::*;

    const MODEL: CpuPowerModel = CpuPowerModel {
        idle_watts: 20.0,
        watts_per_busy_core: 12.0,
    };

    fn stat(cpus: usize, busy_ticks: u64, total_ticks: u64) -> ProcStat {
        let times = CpuTimes {
            busy_ticks,
            total_ticks,
        };
        ProcStat { cpus, times }
    }

    #[test]
    fn energy_integrates_idle_plus_per_core_times_busy_over_time() {
        let mut s = EstimateSensor::new(MODEL, PathBuf::new());
        let t0 = Instant::now();
        // Since boot: 1000 of 4000 ticks busy on 4 CPUs = 1 busy core.
        let first = s.observe(t0, stat(4, 1000, 4000));
        assert_eq!(first.source, EnergySource::Estimate);
        assert!((first.total_watts() - 32.0).abs() < 1e-9);
        assert_eq!(first.total_energy_joules(), 0.0);
        // Next 10 s: 2 of 4 cores busy: 20 + 12 × 2 = 44 W, 440 J.
        let s1 = s.observe(
            t0 + Duration::from_secs(10),
            stat(4, 1000 + 2000, 4000 + 4000),
        );
        assert!((s.busy_cores() - 2.0).abs() < 1e-12);
        assert!((s1.total_watts() - 44.0).abs() < 1e-9);
        assert!((s1.total_energy_joules() - 440.0).abs() < 1e-9);
        // Next 5 s idle: 20 W, +100 J.
        let s2 = s.observe(t0 + Duration::from_secs(15), stat(4, 3000, 10_000));
        assert!((s2.total_energy_joules() - 540.0).abs() < 1e-9);
    }

    #[test]
    fn an_interval_shorter_than_a_tick_keeps_the_last_utilisation() {
        let mut s = EstimateSensor::new(MODEL, PathBuf::new());
        let t0 = Instant::now();
        s.observe(t0, stat(2, 100, 200)); // 1 busy core
        let again = s.observe(t0 + Duration::from_millis(2), stat(2, 100, 200));
        assert!((again.total_watts() - 32.0).abs() < 1e-9);
    }

    #[test]
    fn this_machine_proc_stat_is_readable() {
        // Linux only; elsewhere there is no estimate to make.
        if cfg!(target_os = "linux") {
            let mut s = EstimateSensor::open(MODEL).unwrap();
            let w = s.sample().unwrap().total_watts();
            assert!(w >= 20.0, "{w}");
        }
    }
}
