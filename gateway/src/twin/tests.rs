//! Behavioural tests of the twin against the repository's own profiles: firmware, clock
//! locking, actuator delay, telemetry, batch/power ordering and profile validation.

use std::path::PathBuf;
use std::time::Duration;

use super::step::step_cost;
use super::workload::SteadyWorkload;
use super::*;
use crate::power::{ClockRange, EnergySource, PowerActuator, PowerSensor};
use crate::GatewayError;

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn h100() -> GpuProfile {
    GpuProfile::load_named(&config_dir().join("gpus"), "h100-sxm").unwrap()
}

fn llama8b() -> ModelShape {
    ModelShape::load_named(&config_dir().join("models"), "llama-3.1-8b").unwrap()
}

fn decode(batch: u32) -> StepComposition {
    StepComposition::uniform(batch, 600.0, 0.0, 0.0)
}

/// Runs `step` repeatedly for `seconds` of virtual time.
fn run_for(twin: &mut TwinCluster, step: &StepComposition, seconds: f64) {
    let end = twin.now().as_secs_f64() + seconds;
    while twin.now().as_secs_f64() < end {
        twin.advance(step);
    }
}

#[test]
fn twin_profiles_and_shapes_in_config_load() {
    for gpu in ["h100-sxm", "h200-sxm", "a100-sxm-80gb"] {
        GpuProfile::load_named(&config_dir().join("gpus"), gpu).unwrap();
    }
    for model in ["llama-3.1-8b", "llama-3.1-70b", "gemma-3-270m"] {
        ModelShape::load_named(&config_dir().join("models"), model).unwrap();
    }
}

#[test]
fn twin_firmware_holds_one_second_average_under_a_low_limit() {
    let mut twin = TwinCluster::new(h100(), llama8b(), None);
    let heavy = StepComposition::uniform(256, 600.0, 512.0, 300.0);
    run_for(&mut twin, &heavy, 2.0);
    assert!(twin.gpus()[0].power_usage_watts() > 600.0);
    twin.set_power_limit(400.0).unwrap();
    // Within ~2 s of the command the 1 s average must be at or under the limit, and stay there.
    run_for(&mut twin, &heavy, 2.0);
    for _ in 0..30 {
        run_for(&mut twin, &heavy, 0.1);
        let gpu = &twin.gpus()[0];
        assert!(
            gpu.power_usage_watts() <= 400.0,
            "1 s average {} W over 400 W at {:?}",
            gpu.power_usage_watts(),
            gpu.now()
        );
        assert!(gpu.clock_mhz() < 1500, "clock {} MHz", gpu.clock_mhz());
    }
    // And it does not throttle far below the limit either.
    assert!(twin.gpus()[0].power_usage_watts() > 370.0);
}

#[test]
fn twin_locked_low_clock_cuts_decode_power_not_latency_but_slows_prefill() {
    let (profile, shape) = (h100(), llama8b());
    let fast = step_cost(&profile, &shape, 1, &decode(64), 1980.0);
    let slow = step_cost(&profile, &shape, 1, &decode(64), 1200.0);
    assert!(
        slow.power_watts < 0.8 * fast.power_watts,
        "{} vs {} W",
        slow.power_watts,
        fast.power_watts
    );
    assert!(slow.duration_seconds < 1.05 * fast.duration_seconds);
    assert!(slow.energy_joules < 0.85 * fast.energy_joules);

    let prefill = StepComposition::uniform(0, 0.0, 8192.0, 1024.0);
    let fast = step_cost(&profile, &shape, 1, &prefill, 1980.0);
    let slow = step_cost(&profile, &shape, 1, &prefill, 990.0);
    let ratio = slow.duration_seconds / fast.duration_seconds;
    assert!(
        (1.8..=2.05).contains(&ratio),
        "prefill slowed {ratio}× at half clock"
    );

    // Through the actuator: the lock clamps the running clock once the delay has passed.
    let mut twin = TwinCluster::new(profile, shape, None);
    twin.set_sm_clock(Some(ClockRange {
        min_mhz: 1200,
        max_mhz: 1200,
    }))
    .unwrap();
    run_for(&mut twin, &decode(64), 0.5);
    assert_eq!(twin.gpus()[0].clock_mhz(), 1200);
    let locked = twin.advance(&decode(64));
    assert!(
        (locked.power_watts - step_cost(&h100(), &llama8b(), 1, &decode(64), 1200.0).power_watts)
            .abs()
            < 1e-9
    );
}

#[test]
fn twin_actuator_commands_wait_for_the_delay() {
    let profile = h100();
    let delay = profile.firmware.actuator_delay;
    let mut twin = TwinCluster::new(profile, llama8b(), None);
    twin.set_power_limit(300.0).unwrap();
    twin.set_sm_clock(Some(ClockRange {
        min_mhz: 900,
        max_mhz: 1100,
    }))
    .unwrap();
    twin.idle(delay / 2);
    assert_eq!(twin.gpus()[0].power_limit_watts(), 700.0);
    assert_eq!(twin.gpus()[0].clock_mhz(), 1980);
    twin.idle(delay);
    assert_eq!(twin.gpus()[0].power_limit_watts(), 300.0);
    assert_eq!(
        twin.gpus()[0].locked_clocks(),
        Some(ClockRange {
            min_mhz: 900,
            max_mhz: 1100
        })
    );
    assert!(twin.gpus()[0].clock_mhz() <= 1100);
}

#[test]
fn twin_actuator_rejects_out_of_range() {
    let mut twin = TwinCluster::new(h100(), llama8b(), None);
    assert!(matches!(
        twin.set_power_limit(150.0),
        Err(GatewayError::Power(_))
    ));
    assert!(matches!(
        twin.set_power_limit(701.0),
        Err(GatewayError::Power(_))
    ));
    let bad = ClockRange {
        min_mhz: 1500,
        max_mhz: 1000,
    };
    assert!(matches!(
        twin.set_sm_clock(Some(bad)),
        Err(GatewayError::Power(_))
    ));
    let bad = ClockRange {
        min_mhz: 100,
        max_mhz: 1000,
    };
    assert!(matches!(
        twin.set_sm_clock(Some(bad)),
        Err(GatewayError::Power(_))
    ));
    let limits = twin.limits().unwrap();
    assert_eq!(
        (limits.power_limit_min_watts, limits.power_limit_max_watts),
        (200.0, 700.0)
    );
}

#[test]
fn twin_energy_counter_is_monotonic_and_integrates_power() {
    let mut twin = TwinCluster::new(h100(), llama8b(), None);
    let steps = SteadyWorkload {
        running_seqs: 128,
        mean_prompt_tokens: 300.0,
        prompt_log_sigma: 1.5,
        mean_output_tokens: 400.0,
        max_step_tokens: 8192,
    };
    let (mut last_counter, mut summed_joules) = (0.0, 0.0);
    for (i, step) in steps.steps().take(400).enumerate() {
        summed_joules += twin.advance(&step).energy_joules;
        if i % 50 == 0 {
            twin.idle(Duration::from_millis(37));
            summed_joules += 0.037 * twin.gpus()[0].profile().idle_watts;
        }
        let counter = twin.sample().unwrap().total_energy_joules();
        assert!(
            counter >= last_counter,
            "counter went back: {counter} < {last_counter}"
        );
        last_counter = counter;
    }
    let exact = twin.total_energy_joules();
    assert!(
        (exact - summed_joules).abs() < 1e-6 * exact,
        "{exact} vs {summed_joules}"
    );
    // The reported counter lags the exact integral by at most one 100 ms update.
    assert!(
        last_counter <= exact && exact - last_counter <= 0.1 * 700.0,
        "{last_counter} vs {exact}"
    );
}

#[test]
fn twin_sensor_reports_each_gpu_in_virtual_time() {
    let shape = ModelShape::load_named(&config_dir().join("models"), "llama-3.1-70b").unwrap();
    let mut twin = TwinCluster::new(h100(), shape, None);
    let first = twin.sample().unwrap();
    run_for(&mut twin, &decode(64), 1.5);
    let later = twin.sample().unwrap();
    assert_eq!(later.source, EnergySource::Twin);
    assert_eq!(later.devices.len(), 4);
    assert_eq!(later.devices[3].device, "gpu3");
    assert_eq!(later.devices[0].sm_clock_mhz, Some(1980));
    assert_eq!(later.devices[0].power_limit_watts, Some(700.0));
    let elapsed = later.at - first.at;
    assert_eq!(elapsed, twin.now());
    assert!(later.total_watts() > 4.0 * 300.0);
}

#[test]
fn twin_lower_batch_draws_lower_power() {
    let (profile, shape) = (h100(), llama8b());
    let watts: Vec<f64> = [1, 8, 32, 128, 512]
        .iter()
        .map(|&b| step_cost(&profile, &shape, 1, &decode(b), 1980.0).power_watts)
        .collect();
    assert!(watts.windows(2).all(|w| w[0] < w[1]), "{watts:?}");
    assert!(watts[0] > profile.idle_watts);
}

#[test]
fn twin_rejects_bad_profiles() {
    let good = std::fs::read_to_string(config_dir().join("gpus/h100-sxm.toml")).unwrap();
    let cases = [
        good.replace("idle_watts = 70.0", "idle_watts = -5.0"),
        good.replace(
            "power_limit_min_watts = 200.0",
            "power_limit_min_watts = 800.0",
        ),
        good.replace("memory_efficiency = 0.95", "memory_efficiency = 1.5"),
        good.replace("sm_clock_min_mhz = 345", "sm_clock_min_mhz = 2500"),
        good.replace("clock_step_mhz = 15", "clock_step_mhz = 0"),
        good.replace("[telemetry]", "[telemetry]\nsurprise = 1"),
        good.replace("hbm_bytes = 80e9", "hbm_bytes = 0.0"),
        good.lines()
            .filter(|l| !l.starts_with("hbm_bytes"))
            .collect::<Vec<_>>()
            .join("\n"),
        good.lines()
            .filter(|l| !l.starts_with("energy_per_byte_joules"))
            .collect::<Vec<_>>()
            .join("\n"),
    ];
    for (i, text) in cases.iter().enumerate() {
        assert!(text != &good, "case {i} did not change the profile");
        assert!(
            matches!(GpuProfile::parse(text), Err(GatewayError::Config(_))),
            "case {i} accepted"
        );
    }
    assert!(matches!(ModelShape::parse("name = \"x\"\nlayers = 0\nhidden_size = 1\nparams = 1.0\nweight_bytes = 1.0\nkv_bytes_per_token = 1.0\ntensor_parallel = 1\n"), Err(GatewayError::Config(_))));
}
