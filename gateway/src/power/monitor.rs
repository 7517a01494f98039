//! The power monitor: samples the sensor at a fixed period on its own thread, publishes the
//! `gridserve_power_watts` / `_sm_clock_hertz` / `_power_limit_watts` gauges, shares the
//! latest sample through a `watch` channel (grid status reads it) and hands every sample to
//! a hook (the control loop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics::gauge;
use tokio::sync::watch;

use super::{PowerSample, PowerSensor};
use crate::metrics as m;

/// Sets the per-device gauges from one sample.
pub fn publish_gauges(sample: &PowerSample) {
    let source = sample.source.as_str();
    for d in &sample.devices {
        let device = d.device.clone();
        gauge!(m::POWER_WATTS, "device" => device.clone(), "source" => source).set(d.power_watts);
        if let Some(mhz) = d.sm_clock_mhz {
            gauge!(m::SM_CLOCK_HERTZ, "device" => device.clone(), "source" => source)
                .set(f64::from(mhz) * 1e6);
        }
        if let Some(watts) = d.power_limit_watts {
            gauge!(m::POWER_LIMIT_WATTS, "device" => device, "source" => source).set(watts);
        }
    }
}

/// Called on the monitor thread after every sampling attempt (`None`: the sensor failed).
pub trait SampleHook: Send {
    fn on_sample(&mut self, now: Instant, sample: Option<&PowerSample>);
    /// The monitor is stopping (clean shutdown).
    fn on_stop(&mut self) {}
}

/// A running monitor; stops (and joins) when dropped.
pub struct PowerMonitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    latest: watch::Receiver<Option<PowerSample>>,
}

impl PowerMonitor {
    /// Samples `sensor` every `period` into `tx`, then calls `hook`. A failing sensor is
    /// logged once per failure streak; the last good sample stays published (its `at` shows
    /// how old it is).
    pub fn spawn(
        mut sensor: Box<dyn PowerSensor>,
        period: Duration,
        tx: watch::Sender<Option<PowerSample>>,
        mut hook: Option<Box<dyn SampleHook>>,
    ) -> std::io::Result<Self> {
        let latest = tx.subscribe();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("power-monitor".into())
            .spawn(move || {
                let mut failing = false;
                while !stopping.load(Ordering::Relaxed) {
                    let sample = match sensor.sample() {
                        Ok(sample) => {
                            publish_gauges(&sample);
                            tx.send_replace(Some(sample.clone()));
                            failing = false;
                            Some(sample)
                        }
                        Err(e) => {
                            if !failing {
                                tracing::warn!("power sensor failed: {e}");
                            }
                            failing = true;
                            None
                        }
                    };
                    if let Some(h) = hook.as_mut() {
                        h.on_sample(Instant::now(), sample.as_ref());
                    }
                    std::thread::sleep(period);
                }
                if let Some(h) = hook.as_mut() {
                    h.on_stop();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            latest,
        })
    }

    /// The latest sample (None until the first one).
    pub fn subscribe(&self) -> watch::Receiver<Option<PowerSample>> {
        self.latest.clone()
    }
}

impl Drop for PowerMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::{DeviceSample, EnergySource};
    use crate::GatewayError;

    struct Ramp(f64);

    impl PowerSensor for Ramp {
        fn source(&self) -> EnergySource {
            EnergySource::Twin
        }
        fn sample(&mut self) -> Result<PowerSample, GatewayError> {
            self.0 += 1.0;
            Ok(PowerSample {
                at: Instant::now(),
                source: EnergySource::Twin,
                devices: vec![DeviceSample {
                    device: "gpu0".into(),
                    power_watts: 100.0 + self.0,
                    energy_joules: self.0,
                    sm_clock_mhz: Some(1980),
                    power_limit_watts: Some(700.0),
                }],
            })
        }
    }

    #[test]
    fn monitor_publishes_fresh_samples_and_gauges() {
        let handle = crate::metrics::install();
        let (tx, _) = watch::channel(None);
        let monitor =
            PowerMonitor::spawn(Box::new(Ramp(0.0)), Duration::from_millis(5), tx, None).unwrap();
        let mut rx = monitor.subscribe();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = 0.0;
        while seen < 3.0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            if let Some(s) = rx.borrow_and_update().as_ref() {
                seen = s.total_energy_joules();
            }
        }
        assert!(seen >= 3.0, "samples keep coming: {seen}");
        drop(monitor);
        let text = handle.render();
        assert!(
            text.contains(r#"gridserve_power_watts{device="gpu0",source="twin"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gridserve_sm_clock_hertz{device="gpu0",source="twin"} 1980000000"#)
        );
        assert!(text.contains(r#"gridserve_power_limit_watts{device="gpu0",source="twin"} 700"#));
    }
}
