//! The CPU power estimate used when nothing measures power: idle watts plus watts per busy
//! core, times the busy cores measured between samples — gridserve's own (`/proc/self/stat`,
//! the default: its energy figures and its cap then cover the work it controls) or the whole
//! machine's (`/proc/stat`). Labelled `estimate` everywhere: it is a model, not a measurement.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::counter::EnergyMeter;
use super::proc_stat::{busy_cores, parse_proc_stat, parse_self_stat_ticks, ProcStat};
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

/// Whose busy cores the estimate counts (`[power] cpu_estimate_scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuScope {
    /// This process's threads (`/proc/self/stat`).
    Process,
    /// Every process on the machine (`/proc/stat`).
    System,
}

/// Estimated CPU power. Source: `estimate`.
pub struct EstimateSensor {
    model: CpuPowerModel,
    scope: CpuScope,
    stat_path: PathBuf,
    prev: ProcStat,
    /// Process scope: CPU ticks and when they were read.
    prev_process: Option<(Instant, u64)>,
    /// Busy cores of the last interval that had any ticks; reused for an interval too short
    /// for the kernel's 10 ms tick, instead of reporting idle.
    busy_cores: f64,
    meter: EnergyMeter,
}

impl EstimateSensor {
    /// Reads `/proc/stat` once: the first interval starts now, and until one has elapsed the
    /// utilisation since boot stands in.
    pub fn open(model: CpuPowerModel, scope: CpuScope) -> Result<Self, GatewayError> {
        let path = Path::new("/proc/stat");
        let first = read_proc_stat(path)?;
        let mut sensor = Self::new(model, path.to_owned());
        sensor.scope = scope;
        sensor.observe(Instant::now(), first);
        if scope == CpuScope::Process {
            sensor.prev_process = Some((Instant::now(), read_process_ticks()?));
        }
        Ok(sensor)
    }

    /// A system-scope sensor reading `stat_path`.
    pub fn new(model: CpuPowerModel, stat_path: PathBuf) -> Self {
        Self {
            model,
            scope: CpuScope::System,
            stat_path,
            prev: ProcStat::default(),
            prev_process: None,
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
        self.record(at)
    }

    /// Process scope: `ticks` of this process's CPU time read at `at`.
    pub fn observe_process(&mut self, at: Instant, ticks: u64) -> PowerSample {
        if let Some((prev_at, prev_ticks)) = self.prev_process {
            let seconds = at.saturating_duration_since(prev_at).as_secs_f64();
            // Shorter than a few kernel ticks: too coarse to tell, keep the last figure.
            if seconds >= 0.05 {
                let cpu_seconds =
                    ticks.saturating_sub(prev_ticks) as f64 / clock_ticks_per_second();
                self.busy_cores = cpu_seconds / seconds;
                self.prev_process = Some((at, ticks));
            }
        } else {
            self.prev_process = Some((at, ticks));
        }
        self.record(at)
    }

    fn record(&mut self, at: Instant) -> PowerSample {
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

/// USER_HZ, the unit of `/proc/*/stat` times.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

fn read_process_ticks() -> Result<u64, GatewayError> {
    let text = std::fs::read_to_string("/proc/self/stat").map_err(|e| {
        GatewayError::PowerUnavailable(format!("CPU estimate (/proc/self/stat: {e})"))
    })?;
    parse_self_stat_ticks(&text).map_err(GatewayError::Power)
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
        match self.scope {
            CpuScope::System => {
                let stat = read_proc_stat(&self.stat_path)?;
                Ok(self.observe(Instant::now(), stat))
            }
            CpuScope::Process => Ok(self.observe_process(Instant::now(), read_process_ticks()?)),
        }
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
            let mut s = EstimateSensor::open(MODEL, CpuScope::System).unwrap();
            let w = s.sample().unwrap().total_watts();
            assert!(w >= 20.0, "{w}");
            let mut own = EstimateSensor::open(MODEL, CpuScope::Process).unwrap();
            // Burn ~100 ms of CPU on this thread: about one busy core.
            let start = Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(100) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let busy = own.sample().unwrap().total_watts();
            assert!((26.0..=20.0 + 12.0 * 4.0).contains(&busy), "{busy} W");
        }
    }
}
