//! Tests of the NVML adapter through a scripted fake GPU.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvml_wrapper::error::NvmlError;

use super::*;
use crate::power::{ClockRange, NvmlActuator, PowerActuator};

/// What the fake GPU reports; `None` means "not supported". Shared, so a test can change it
/// between samples while the sensor owns the device.
#[derive(Debug, Default)]
struct State {
    power_mw: u32,
    instant_mw: Option<u32>,
    energy_mj: Option<u64>,
    sm_clock_mhz: Option<u32>,
    limit_mw: Option<u32>,
    gpu_lost: bool,
    deny_set: bool,
    set_calls: Vec<String>,
}

#[derive(Clone, Default)]
struct FakeGpu(Arc<Mutex<State>>);

impl FakeGpu {
    fn with(f: impl FnOnce(&mut State)) -> Self {
        let g = FakeGpu::default();
        f(&mut g.0.lock().unwrap());
        g
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }
}

fn supported<T: Copy>(v: Option<T>) -> Result<T, NvmlError> {
    v.ok_or(NvmlError::NotSupported)
}

impl NvmlDevice for FakeGpu {
    fn power_usage_mw(&self) -> Result<u32, NvmlError> {
        let s = self.state();
        if s.gpu_lost {
            return Err(NvmlError::GpuLost);
        }
        Ok(s.power_mw)
    }
    fn instant_power_mw(&self) -> Result<u32, NvmlError> {
        supported(self.state().instant_mw)
    }
    fn total_energy_mj(&self) -> Result<u64, NvmlError> {
        supported(self.state().energy_mj)
    }
    fn sm_clock_mhz(&self) -> Result<u32, NvmlError> {
        supported(self.state().sm_clock_mhz)
    }
    fn sm_clock_range_mhz(&self) -> Result<(u32, u32), NvmlError> {
        Ok((345, 1980))
    }
    fn power_limit_mw(&self) -> Result<u32, NvmlError> {
        supported(self.state().limit_mw)
    }
    fn power_limit_constraints_mw(&self) -> Result<(u32, u32), NvmlError> {
        Ok((200_000, 700_000))
    }
    fn set_locked_clocks_mhz(&mut self, min_mhz: u32, max_mhz: u32) -> Result<(), NvmlError> {
        self.set(format!("lock {min_mhz}..{max_mhz}"))
    }
    fn reset_locked_clocks(&mut self) -> Result<(), NvmlError> {
        self.set("reset".into())
    }
    fn set_power_limit_mw(&mut self, limit_mw: u32) -> Result<(), NvmlError> {
        self.set(format!("limit {limit_mw}"))
    }
    fn throttle_reasons_bits(&self) -> Result<u64, NvmlError> {
        Ok(0x4)
    }
}

impl FakeGpu {
    fn set(&self, call: String) -> Result<(), NvmlError> {
        let mut s = self.state();
        s.set_calls.push(call);
        if s.deny_set {
            Err(NvmlError::NoPermission)
        } else {
            Ok(())
        }
    }
}

fn at(t0: Instant, seconds: f64) -> Instant {
    t0 + Duration::from_secs_f64(seconds)
}

#[test]
fn milliwatts_become_watts_and_the_instant_field_is_preferred() {
    let g = FakeGpu::with(|s| {
        s.power_mw = 250_000;
        s.instant_mw = Some(301_500);
        s.sm_clock_mhz = Some(1980);
        s.limit_mw = Some(700_000);
        s.energy_mj = Some(0);
    });
    let mut sensor = NvmlSensor::new(vec![g]);
    let s = sensor.sample_at(Instant::now()).unwrap();
    assert_eq!(s.source, EnergySource::Nvml);
    let d = &s.devices[0];
    assert_eq!(d.device, "gpu0");
    assert!((d.power_watts - 301.5).abs() < 1e-9);
    assert_eq!(d.sm_clock_mhz, Some(1980));
    assert_eq!(d.power_limit_watts, Some(700.0));
}

#[test]
fn without_the_instant_field_power_usage_is_used_and_said_once() {
    let g = FakeGpu::with(|s| {
        s.power_mw = 123_456;
        s.energy_mj = Some(0);
    });
    let mut sensor = NvmlSensor::new(vec![g]);
    let t0 = Instant::now();
    for i in 0..3 {
        let s = sensor.sample_at(at(t0, f64::from(i))).unwrap();
        assert!((s.devices[0].power_watts - 123.456).abs() < 1e-9);
    }
    // One notice for the instant field, one for the absent clock/limit; not one per sample.
    assert_eq!(sensor.notes.count(), 2);
    assert!(!sensor.gpus[0].instant_power_ok);
}

#[test]
fn energy_is_monotonic_joules_across_a_driver_counter_reset() {
    let g = FakeGpu::with(|s| {
        s.power_mw = 400_000;
        s.energy_mj = Some(9_000_000);
    });
    let mut sensor = NvmlSensor::new(vec![g.clone()]);
    let t0 = Instant::now();
    assert_eq!(sensor.sample_at(t0).unwrap().devices[0].energy_joules, 0.0);
    g.state().energy_mj = Some(9_400_000);
    let e1 = sensor.sample_at(at(t0, 1.0)).unwrap().total_energy_joules();
    assert!((e1 - 400.0).abs() < 1e-9, "{e1}");
    // Driver reloaded: the counter restarts near zero. The 2 s gap is filled at 400 W.
    g.state().energy_mj = Some(5_000);
    let e2 = sensor.sample_at(at(t0, 3.0)).unwrap().total_energy_joules();
    assert!((e2 - 1200.0).abs() < 1e-9, "{e2}");
    g.state().energy_mj = Some(405_000);
    let e3 = sensor.sample_at(at(t0, 4.0)).unwrap().total_energy_joules();
    assert!((e3 - 1600.0).abs() < 1e-9, "{e3}");
}

#[test]
fn without_an_energy_counter_power_is_integrated() {
    let g = FakeGpu::with(|s| s.power_mw = 100_000);
    let mut sensor = NvmlSensor::new(vec![g]);
    let t0 = Instant::now();
    sensor.sample_at(t0).unwrap();
    let s = sensor.sample_at(at(t0, 2.5)).unwrap();
    assert!((s.total_energy_joules() - 250.0).abs() < 1e-9);
}

#[test]
fn every_gpu_is_reported_and_totalled() {
    let a = FakeGpu::with(|s| {
        s.power_mw = 300_000;
        s.energy_mj = Some(0);
    });
    let b = FakeGpu::with(|s| {
        s.power_mw = 500_000;
        s.energy_mj = Some(1_000);
    });
    let mut sensor = NvmlSensor::new(vec![a.clone(), b.clone()]);
    let t0 = Instant::now();
    sensor.sample_at(t0).unwrap();
    a.state().energy_mj = Some(300_000);
    b.state().energy_mj = Some(501_000);
    let s = sensor.sample_at(at(t0, 1.0)).unwrap();
    let names: Vec<_> = s.devices.iter().map(|d| d.device.as_str()).collect();
    assert_eq!(names, ["gpu0", "gpu1"]);
    assert!((s.total_watts() - 800.0).abs() < 1e-9);
    assert!((s.total_energy_joules() - 800.0).abs() < 1e-9);
    assert_eq!(
        sensor.throttle_reasons()[1],
        ("gpu1".to_owned(), vec!["sw_power_cap".to_owned()])
    );
}

#[test]
fn a_lost_gpu_is_a_power_error() {
    let g = FakeGpu::with(|s| s.gpu_lost = true);
    let err = NvmlSensor::new(vec![g])
        .sample_at(Instant::now())
        .unwrap_err();
    assert!(
        matches!(err, GatewayError::Power(ref m) if m.contains("gpu0")),
        "{err}"
    );
}

#[test]
fn permission_denied_turns_read_only_with_one_warning() {
    let g = FakeGpu::with(|s| s.deny_set = true);
    let mut act = NvmlActuator::new(vec![g.clone()]);
    let e1 = act.set_power_limit(300.0).unwrap_err();
    assert!(matches!(e1, GatewayError::PowerDenied(_)), "{e1}");
    assert!(act.is_read_only());
    let e2 = act.set_sm_clock(None).unwrap_err();
    assert!(matches!(e2, GatewayError::PowerDenied(_)), "{e2}");
    // Only the first command reached the driver; the warning was logged once.
    assert_eq!(g.state().set_calls, ["limit 300000"]);
    assert_eq!(act.notices_said(), 1);
    // Reading limits still works: the actuator is read-only, not gone.
    assert_eq!(act.limits().unwrap().power_limit_max_watts, 700.0);
}

#[test]
fn commands_reach_every_gpu_in_nvml_units() {
    let (a, b) = (FakeGpu::default(), FakeGpu::default());
    let mut act = NvmlActuator::new(vec![a.clone(), b.clone()]);
    act.set_power_limit(450.5).unwrap();
    act.set_sm_clock(Some(ClockRange {
        min_mhz: 1000,
        max_mhz: 1500,
    }))
    .unwrap();
    act.set_sm_clock(None).unwrap();
    for g in [a, b] {
        assert_eq!(
            g.state().set_calls,
            ["limit 450500", "lock 1000..1500", "reset"]
        );
    }
}

#[test]
fn out_of_range_commands_are_rejected_before_the_driver() {
    let g = FakeGpu::default();
    let mut act = NvmlActuator::new(vec![g.clone()]);
    assert!(matches!(
        act.set_power_limit(150.0),
        Err(GatewayError::Power(_))
    ));
    assert!(matches!(
        act.set_power_limit(f64::NAN),
        Err(GatewayError::Power(_))
    ));
    let too_high = ClockRange {
        min_mhz: 1000,
        max_mhz: 2100,
    };
    assert!(matches!(
        act.set_sm_clock(Some(too_high)),
        Err(GatewayError::Power(_))
    ));
    let inverted = ClockRange {
        min_mhz: 1500,
        max_mhz: 1000,
    };
    assert!(act.set_sm_clock(Some(inverted)).is_err());
    assert!(g.state().set_calls.is_empty());
    assert!(!act.is_read_only());
}
