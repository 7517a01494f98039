//! GPU profiles: `config/gpus/NAME.toml` parsed into raw structs, then validated into
//! `GpuProfile`, the typed constants the step model, firmware and telemetry read.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::checks::{bad, load_file, non_negative, ordered, positive, within};
use crate::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    limits: RawLimits,
    model: RawModel,
    serving: RawServing,
    firmware: RawFirmware,
    telemetry: RawTelemetry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    power_limit_min_watts: f64,
    power_limit_max_watts: f64,
    power_limit_default_watts: f64,
    idle_watts: f64,
    sm_clock_min_mhz: u32,
    sm_clock_max_mhz: u32,
    sm_clock_default_mhz: u32,
    hbm_bandwidth_bytes_per_second: f64,
    hbm_bytes: f64,
    dense_bf16_flops_per_second: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    memory_efficiency: f64,
    kv_read_efficiency: f64,
    compute_efficiency: f64,
    smoothmax_exponent: f64,
    memory_clock_knee_mhz: u32,
    voltage_min_fraction: f64,
    voltage_knee_mhz: u32,
    active_watts: f64,
    energy_per_byte_joules: f64,
    energy_per_flop_joules: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServing {
    step_overhead_seconds: f64,
    per_sequence_seconds: f64,
    allreduce_latency_seconds: f64,
    interconnect_bytes_per_second: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFirmware {
    actuator_delay_seconds: f64,
    period_seconds: f64,
    window_seconds: f64,
    clock_step_mhz: u32,
    headroom_fraction: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    power_window_seconds: f64,
    instant_power_window_seconds: f64,
    energy_counter_period_seconds: f64,
}

/// Constants of the step model (see `step.rs` for the equations they enter).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConstants {
    pub memory_efficiency: f64,
    pub kv_read_efficiency: f64,
    pub compute_efficiency: f64,
    pub smoothmax_exponent: f64,
    pub memory_clock_knee_mhz: f64,
    pub voltage_min_fraction: f64,
    pub voltage_knee_mhz: f64,
    pub active_watts: f64,
    pub energy_per_byte_joules: f64,
    pub energy_per_flop_joules: f64,
    pub step_overhead_seconds: f64,
    pub per_sequence_seconds: f64,
    pub allreduce_latency_seconds: f64,
    pub interconnect_bytes_per_second: f64,
}

/// How the simulated firmware enforces the power limit.
#[derive(Clone, Debug, PartialEq)]
pub struct FirmwareConstants {
    pub actuator_delay: Duration,
    pub period: Duration,
    pub window: Duration,
    pub clock_step_mhz: u32,
    pub headroom_fraction: f64,
}

/// How the simulated NVML reports.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConstants {
    pub power_window: Duration,
    /// What NVML's instant-power field averages over (what the sensor reports when the GPU
    /// has that field, as Hopper does).
    pub instant_power_window: Duration,
    pub energy_counter_period: Duration,
}

/// One GPU model, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuProfile {
    pub name: String,
    pub power_limit_min_watts: f64,
    pub power_limit_max_watts: f64,
    pub power_limit_default_watts: f64,
    pub idle_watts: f64,
    pub sm_clock_min_mhz: u32,
    pub sm_clock_max_mhz: u32,
    pub sm_clock_default_mhz: u32,
    pub hbm_bandwidth_bytes_per_second: f64,
    /// HBM capacity of one GPU, bytes (`limits.hbm_bytes`): weights plus KV cache must fit.
    pub hbm_bytes: f64,
    pub dense_bf16_flops_per_second: f64,
    pub model: ModelConstants,
    pub firmware: FirmwareConstants,
    pub telemetry: TelemetryConstants,
}

impl GpuProfile {
    /// Loads `dir/NAME.toml` (the CLI passes `config/gpus`).
    pub fn load_named(dir: &Path, name: &str) -> Result<Self, GatewayError> {
        Self::load(&dir.join(format!("{name}.toml")))
    }

    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        load_file(path, Self::parse)
    }

    pub fn parse(text: &str) -> Result<Self, GatewayError> {
        let raw: RawProfile =
            toml::from_str(text).map_err(|e| GatewayError::Config(format!("gpu profile: {e}")))?;
        Self::validate(raw)
    }

    fn validate(raw: RawProfile) -> Result<Self, GatewayError> {
        let l = &raw.limits;
        positive("limits.idle_watts", l.idle_watts)?;
        positive("limits.power_limit_min_watts", l.power_limit_min_watts)?;
        ordered(
            "limits.power_limit_min_watts",
            l.power_limit_min_watts,
            l.power_limit_max_watts,
        )?;
        within(
            "limits.power_limit_default_watts",
            l.power_limit_default_watts,
            l.power_limit_min_watts,
            l.power_limit_max_watts,
        )?;
        if l.sm_clock_min_mhz == 0 || l.sm_clock_min_mhz > l.sm_clock_max_mhz {
            return Err(bad(
                "limits.sm_clock_min_mhz",
                "must be > 0 and <= sm_clock_max_mhz",
            ));
        }
        let (lo, hi) = (f64::from(l.sm_clock_min_mhz), f64::from(l.sm_clock_max_mhz));
        within(
            "limits.sm_clock_default_mhz",
            f64::from(l.sm_clock_default_mhz),
            lo,
            hi,
        )?;
        positive(
            "limits.hbm_bandwidth_bytes_per_second",
            l.hbm_bandwidth_bytes_per_second,
        )?;
        positive("limits.hbm_bytes", l.hbm_bytes)?;
        positive(
            "limits.dense_bf16_flops_per_second",
            l.dense_bf16_flops_per_second,
        )?;
        let model = validate_model(&raw.model, &raw.serving, hi)?;
        let firmware = validate_firmware(&raw.firmware)?;
        let t = &raw.telemetry;
        positive("telemetry.power_window_seconds", t.power_window_seconds)?;
        positive(
            "telemetry.instant_power_window_seconds",
            t.instant_power_window_seconds,
        )?;
        positive(
            "telemetry.energy_counter_period_seconds",
            t.energy_counter_period_seconds,
        )?;
        Ok(Self {
            name: raw.name,
            power_limit_min_watts: l.power_limit_min_watts,
            power_limit_max_watts: l.power_limit_max_watts,
            power_limit_default_watts: l.power_limit_default_watts,
            idle_watts: l.idle_watts,
            sm_clock_min_mhz: l.sm_clock_min_mhz,
            sm_clock_max_mhz: l.sm_clock_max_mhz,
            sm_clock_default_mhz: l.sm_clock_default_mhz,
            hbm_bandwidth_bytes_per_second: l.hbm_bandwidth_bytes_per_second,
            hbm_bytes: l.hbm_bytes,
            dense_bf16_flops_per_second: l.dense_bf16_flops_per_second,
            model,
            firmware,
            telemetry: TelemetryConstants {
                power_window: Duration::from_secs_f64(t.power_window_seconds),
                instant_power_window: Duration::from_secs_f64(t.instant_power_window_seconds),
                energy_counter_period: Duration::from_secs_f64(t.energy_counter_period_seconds),
            },
        })
    }
}

fn validate_model(
    m: &RawModel,
    s: &RawServing,
    max_mhz: f64,
) -> Result<ModelConstants, GatewayError> {
    within("model.memory_efficiency", m.memory_efficiency, 1e-3, 1.0)?;
    within("model.kv_read_efficiency", m.kv_read_efficiency, 1e-3, 1.0)?;
    within("model.compute_efficiency", m.compute_efficiency, 1e-3, 1.0)?;
    within("model.smoothmax_exponent", m.smoothmax_exponent, 1.0, 64.0)?;
    within(
        "model.memory_clock_knee_mhz",
        f64::from(m.memory_clock_knee_mhz),
        1.0,
        max_mhz,
    )?;
    within(
        "model.voltage_min_fraction",
        m.voltage_min_fraction,
        0.1,
        1.0,
    )?;
    within(
        "model.voltage_knee_mhz",
        f64::from(m.voltage_knee_mhz),
        1.0,
        max_mhz,
    )?;
    non_negative("model.active_watts", m.active_watts)?;
    non_negative("model.energy_per_byte_joules", m.energy_per_byte_joules)?;
    non_negative("model.energy_per_flop_joules", m.energy_per_flop_joules)?;
    non_negative("serving.step_overhead_seconds", s.step_overhead_seconds)?;
    non_negative("serving.per_sequence_seconds", s.per_sequence_seconds)?;
    non_negative(
        "serving.allreduce_latency_seconds",
        s.allreduce_latency_seconds,
    )?;
    positive(
        "serving.interconnect_bytes_per_second",
        s.interconnect_bytes_per_second,
    )?;
    Ok(ModelConstants {
        memory_efficiency: m.memory_efficiency,
        kv_read_efficiency: m.kv_read_efficiency,
        compute_efficiency: m.compute_efficiency,
        smoothmax_exponent: m.smoothmax_exponent,
        memory_clock_knee_mhz: f64::from(m.memory_clock_knee_mhz),
        voltage_min_fraction: m.voltage_min_fraction,
        voltage_knee_mhz: f64::from(m.voltage_knee_mhz),
        active_watts: m.active_watts,
        energy_per_byte_joules: m.energy_per_byte_joules,
        energy_per_flop_joules: m.energy_per_flop_joules,
        step_overhead_seconds: s.step_overhead_seconds,
        per_sequence_seconds: s.per_sequence_seconds,
        allreduce_latency_seconds: s.allreduce_latency_seconds,
        interconnect_bytes_per_second: s.interconnect_bytes_per_second,
    })
}

fn validate_firmware(f: &RawFirmware) -> Result<FirmwareConstants, GatewayError> {
    non_negative("firmware.actuator_delay_seconds", f.actuator_delay_seconds)?;
    positive("firmware.period_seconds", f.period_seconds)?;
    positive("firmware.window_seconds", f.window_seconds)?;
    if f.clock_step_mhz == 0 {
        return Err(bad("firmware.clock_step_mhz", "must be > 0"));
    }
    within("firmware.headroom_fraction", f.headroom_fraction, 0.0, 0.5)?;
    Ok(FirmwareConstants {
        actuator_delay: Duration::from_secs_f64(f.actuator_delay_seconds),
        period: Duration::from_secs_f64(f.period_seconds),
        window: Duration::from_secs_f64(f.window_seconds),
        clock_step_mhz: f.clock_step_mhz,
        headroom_fraction: f.headroom_fraction,
    })
}
