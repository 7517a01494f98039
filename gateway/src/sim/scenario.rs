//! Scenario files (`config/scenarios/*.toml`): parsed into raw structs that reject unknown
//! keys, then validated into a typed `Scenario` whose errors name the offending key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::arrivals::{RawWorkload, Workload};
use super::envelope::{Envelope, EnvelopeContext, RawEnvelope};
use crate::engine::StepBudget;
use crate::twin::{GpuProfile, ModelShape};
use crate::GatewayError;

/// Tokens per KV block (vLLM's default on CUDA).
pub const BLOCK_SIZE: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    seed: u64,
    duration_seconds: f64,
    replicas: Option<usize>,
    hardware: RawHardware,
    #[serde(default)]
    policy: RawPolicy,
    workload: RawWorkload,
    envelope: Option<RawEnvelope>,
    #[serde(default)]
    output: RawOutput,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHardware {
    gpu: String,
    model: String,
    tensor_parallel: Option<u32>,
    gpu_memory_utilization: Option<f64>,
    max_seq_len: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    kind: Option<PolicyKind>,
    max_seqs: Option<usize>,
    max_tokens: Option<usize>,
    sm_clock_mhz: Option<u32>,
    power_limit_watts: Option<f64>,
    tick_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    timeseries_period_seconds: Option<f64>,
}

/// What one replica runs on: a GPU profile, a model shape split over `tensor_parallel` GPUs,
/// and the KV cache that leaves.
#[derive(Clone, Debug)]
pub struct Hardware {
    pub gpu: String,
    pub profile: GpuProfile,
    pub shape: ModelShape,
    pub tensor_parallel: u32,
    pub gpu_memory_utilization: f64,
    pub max_seq_len: usize,
    pub kv_blocks: usize,
}

/// Which policy steers the replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Fixed batch cap, clock lock and power limit.
    Fixed,
    /// Each GPU's power limit set to its share of the cap (today's `nvidia-smi -pl`).
    CapLimit,
    /// gridserve's controller (`[controller]` in the config).
    Adaptive,
}

/// The policy, the fixed policy's knobs, and how often a policy is consulted.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    pub kind: PolicyKind,
    /// The step budget (the adaptive policy's maximum).
    pub budget: StepBudget,
    /// Lock the SM clock to exactly this (min = max), MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Per-GPU power limit, watts.
    pub power_limit_watts: Option<f64>,
    /// Virtual seconds between policy ticks.
    pub tick_seconds: f64,
}

/// A validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub duration_seconds: f64,
    pub replicas: usize,
    pub hardware: Hardware,
    pub policy: PolicyConfig,
    pub workload: Workload,
    pub envelope: Envelope,
    pub timeseries_period_seconds: f64,
}

/// Command-line overrides applied before validation.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub duration_seconds: Option<f64>,
    pub replicas: Option<usize>,
    pub policy: Option<PolicyKind>,
    /// Replaces `hardware.gpu` (a profile name under `config/gpus/`).
    pub gpu: Option<String>,
    /// Replaces `policy.sm_clock_mhz` (what the `fixed` policy locks).
    pub sm_clock_mhz: Option<u32>,
}

pub(super) fn bad(key: &str, why: impl std::fmt::Display) -> GatewayError {
    GatewayError::Config(format!("scenario: `{key}` {why}"))
}

pub(super) fn positive(key: &str, v: f64) -> Result<f64, GatewayError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(bad(key, format!("must be > 0 (got {v})")))
    }
}

impl Scenario {
    /// Loads a scenario file; GPUs and models resolve under `config_dir/{gpus,models}/`,
    /// trace files relative to the scenario file.
    pub fn load(path: &Path, config_dir: &Path, over: &Overrides) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GatewayError::Config(format!("reading {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::parse(&text, &base, config_dir, over).map_err(|e| match e {
            GatewayError::Config(m) => GatewayError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses scenario text; `base_dir` is where relative trace paths start.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        config_dir: &Path,
        over: &Overrides,
    ) -> Result<Self, GatewayError> {
        let raw: RawScenario =
            toml::from_str(text).map_err(|e| GatewayError::Config(format!("scenario: {e}")))?;
        let duration_seconds = positive(
            "duration_seconds",
            over.duration_seconds.unwrap_or(raw.duration_seconds),
        )?;
        let replicas = over.replicas.or(raw.replicas).unwrap_or(1);
        if replicas == 0 {
            return Err(bad("replicas", "must be at least 1"));
        }
        let hardware = validate_hardware(&raw.hardware, over.gpu.as_deref(), config_dir)?;
        let raw_policy = RawPolicy {
            sm_clock_mhz: over.sm_clock_mhz.or(raw.policy.sm_clock_mhz),
            ..raw.policy.clone()
        };
        let mut policy = validate_policy(&raw_policy, &hardware.profile)?;
        policy.kind = over.policy.unwrap_or(policy.kind);
        let workload = Workload::validate(&raw.workload, base_dir, &hardware)?;
        let envelope = match &raw.envelope {
            Some(e) => {
                let ctx = EnvelopeContext {
                    base_dir,
                    rated_watts: (replicas * hardware.tensor_parallel as usize) as f64
                        * hardware.profile.power_limit_max_watts,
                    duration_seconds,
                };
                Envelope::validate(e, &ctx)?
            }
            None => Envelope::none(),
        };
        let timeseries_period_seconds = positive(
            "output.timeseries_period_seconds",
            raw.output.timeseries_period_seconds.unwrap_or(1.0),
        )?;
        Ok(Self {
            name: raw.name,
            seed: raw.seed,
            duration_seconds,
            replicas,
            hardware,
            policy,
            workload,
            envelope,
            timeseries_period_seconds,
        })
    }

    /// GPUs in the whole fleet.
    pub fn gpus(&self) -> usize {
        self.replicas * self.hardware.tensor_parallel as usize
    }
}

fn validate_hardware(
    raw: &RawHardware,
    gpu: Option<&str>,
    config_dir: &Path,
) -> Result<Hardware, GatewayError> {
    let gpu = gpu.unwrap_or(&raw.gpu);
    let profile = GpuProfile::load_named(&config_dir.join("gpus"), gpu)
        .map_err(|e| bad("hardware.gpu", format!("\"{gpu}\": {e}")))?;
    let shape = ModelShape::load_named(&config_dir.join("models"), &raw.model)
        .map_err(|e| bad("hardware.model", format!("\"{}\": {e}", raw.model)))?;
    let tensor_parallel = raw.tensor_parallel.unwrap_or(shape.tensor_parallel);
    if tensor_parallel == 0 {
        return Err(bad("hardware.tensor_parallel", "must be at least 1"));
    }
    let util = raw.gpu_memory_utilization.unwrap_or(0.9);
    if !(util > 0.0 && util <= 1.0) {
        return Err(bad(
            "hardware.gpu_memory_utilization",
            format!("must be in (0, 1] (got {util})"),
        ));
    }
    let max_seq_len = raw.max_seq_len.unwrap_or(8192);
    if max_seq_len < 2 {
        return Err(bad("hardware.max_seq_len", "must be at least 2"));
    }
    let usable = profile.hbm_bytes * f64::from(tensor_parallel) * util - shape.weight_bytes;
    let kv_blocks = (usable / (shape.kv_bytes_per_token * BLOCK_SIZE as f64)).floor();
    if kv_blocks < 1.0 {
        return Err(bad(
            "hardware.gpu_memory_utilization",
            format!(
                "leaves no KV cache: {} × {tensor_parallel} GPU × {util} HBM holds less than the \
                 {} weights ({} bytes)",
                profile.hbm_bytes, shape.name, shape.weight_bytes
            ),
        ));
    }
    let kv_tokens = kv_blocks as usize * BLOCK_SIZE;
    if kv_tokens < max_seq_len {
        return Err(bad(
            "hardware.max_seq_len",
            format!("{max_seq_len} exceeds the KV cache of {kv_tokens} tokens"),
        ));
    }
    Ok(Hardware {
        gpu: gpu.to_string(),
        profile,
        shape,
        tensor_parallel,
        gpu_memory_utilization: util,
        max_seq_len,
        kv_blocks: kv_blocks as usize,
    })
}

fn validate_policy(raw: &RawPolicy, profile: &GpuProfile) -> Result<PolicyConfig, GatewayError> {
    // vLLM V1's defaults: 256 sequences, 8192 batched tokens per step.
    let budget = StepBudget {
        max_seqs: raw.max_seqs.unwrap_or(256),
        max_tokens: raw.max_tokens.unwrap_or(8192),
    };
    if budget.max_seqs == 0 {
        return Err(bad("policy.max_seqs", "must be at least 1"));
    }
    if budget.max_tokens == 0 {
        return Err(bad("policy.max_tokens", "must be at least 1"));
    }
    if let Some(mhz) = raw.sm_clock_mhz {
        if !(profile.sm_clock_min_mhz..=profile.sm_clock_max_mhz).contains(&mhz) {
            return Err(bad(
                "policy.sm_clock_mhz",
                format!(
                    "{mhz} MHz is outside {}'s {}–{} MHz",
                    profile.name, profile.sm_clock_min_mhz, profile.sm_clock_max_mhz
                ),
            ));
        }
    }
    if let Some(w) = raw.power_limit_watts {
        if !(profile.power_limit_min_watts..=profile.power_limit_max_watts).contains(&w) {
            return Err(bad(
                "policy.power_limit_watts",
                format!(
                    "{w} W is outside {}'s {}–{} W",
                    profile.name, profile.power_limit_min_watts, profile.power_limit_max_watts
                ),
            ));
        }
    }
    let tick_seconds = positive("policy.tick_seconds", raw.tick_seconds.unwrap_or(0.1))?;
    Ok(PolicyConfig {
        kind: raw.kind.unwrap_or(PolicyKind::Fixed),
        budget,
        sm_clock_mhz: raw.sm_clock_mhz,
        power_limit_watts: raw.power_limit_watts,
        tick_seconds,
    })
}

/// Resolves a file named in a scenario relative to the scenario's folder.
pub(super) fn resolve(base_dir: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}
