//! Configuration: the TOML file parsed into a raw struct that rejects unknown keys, then
//! validated into the typed sub-configs each component takes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gridserve_models::device::DeviceSpec;
use gridserve_models::KvCacheOptions;
use serde::Deserialize;

use crate::api::ApiConfig;
use crate::engine::{Priority, StepBudget};
use crate::grid::auth::Credentials;
use crate::grid::config::{hashes, RawGrid};
use crate::grid::openadr::{OpenAdrConfig, RawOpenAdr};
use crate::grid::GridConfig;
use crate::power::controller::{ControllerConfig, RawControllerConfig};
use crate::power::CpuScope;
use crate::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    model: RawModel,
    engine: RawEngine,
    server: RawServer,
    power: RawPower,
    controller: RawControllerConfig,
    grid: RawGrid,
    openadr: RawOpenAdr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    host: String,
    port: u16,
    max_waiting_requests: usize,
    drain_timeout_seconds: f64,
    max_body_bytes: usize,
    default_completion_max_tokens: usize,
    max_n: usize,
    api_key_sha256: Vec<String>,
    api_key_tiers: std::collections::BTreeMap<String, Priority>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPower {
    sensor: SensorChoice,
    cpu_estimate_scope: CpuScope,
    cpu_idle_watts: f64,
    cpu_watts_per_busy_core: f64,
    powercap_root: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    path: PathBuf,
    chat_template: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    /// Optional so configs written before it keep loading; `cpu` when absent.
    #[serde(default = "default_device")]
    device: String,
    threads: usize,
    kv_block_size: usize,
    kv_cache_mib: usize,
    max_seq_len: usize,
    step_budget: RawStepBudget,
}

fn default_device() -> String {
    "cpu".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStepBudget {
    max_tokens: usize,
    max_seqs: usize,
}

/// Which model to load and how to talk to it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub path: PathBuf,
    /// A Jinja file, or `None` for the template the model itself carries (`"model"` in the
    /// config: GGUF `tokenizer.chat_template` or tokenizer_config.json's `chat_template`).
    pub chat_template: Option<PathBuf>,
}

/// How the engine runs the model.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Where the model runs: `cpu`, `cuda:N[,M..]` (one engine per GPU) or `auto`.
    pub device: DeviceSpec,
    /// Model threads; 0 was resolved to the core count.
    pub threads: usize,
    pub kv: KvCacheOptions,
    pub step_budget: StepBudget,
}

/// How `gridserve serve` listens and admits requests.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub max_waiting_requests: usize,
    pub drain_timeout: Duration,
    pub api: ApiConfig,
}

/// Which power sensor to use (`[power] sensor`, or `serve --power`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SensorChoice {
    /// NVML if a driver answers, else RAPL if readable, else the estimate.
    Auto,
    Nvml,
    Rapl,
    Estimate,
    /// The GPU digital twin: `twin:GPU[:MODEL]`, GPU a profile in `config/gpus` (a unique
    /// prefix such as `h100` will do), MODEL a shape in `config/models` (default: the
    /// served model's, `gemma-3-270m`).
    Twin {
        gpu: String,
        model: Option<String>,
    },
}

impl std::str::FromStr for SensorChoice {
    type Err = GatewayError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let choice = match text {
            "auto" => Self::Auto,
            "nvml" => Self::Nvml,
            "rapl" => Self::Rapl,
            "estimate" => Self::Estimate,
            _ => {
                let mut parts = text.strip_prefix("twin:").unwrap_or_default().split(':');
                let gpu = parts.next().unwrap_or_default();
                let model = parts.next().map(str::to_owned);
                if gpu.is_empty() || model.as_deref() == Some("") || parts.next().is_some() {
                    return Err(GatewayError::Config(format!(
                        "power sensor `{text}`: expected auto, nvml, rapl, estimate or \
                         twin:GPU[:MODEL] (e.g. twin:h100)"
                    )));
                }
                Self::Twin {
                    gpu: gpu.to_owned(),
                    model,
                }
            }
        };
        Ok(choice)
    }
}

impl TryFrom<String> for SensorChoice {
    type Error = GatewayError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// Where power figures come from and how the CPU estimate is made.
#[derive(Clone, Debug, PartialEq)]
pub struct PowerConfig {
    pub sensor: SensorChoice,
    pub cpu_estimate_scope: CpuScope,
    pub cpu_idle_watts: f64,
    pub cpu_watts_per_busy_core: f64,
    pub powercap_root: PathBuf,
    /// Where the twin's GPU profiles (`gpus/`) and model shapes (`models/`) live: the
    /// config file's directory.
    pub twin_config_dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub model: ModelConfig,
    pub engine: EngineConfig,
    pub server: ServerConfig,
    pub power: PowerConfig,
    pub controller: ControllerConfig,
    pub grid: GridConfig,
    pub openadr: OpenAdrConfig,
    /// Token hashes from the file; `GRIDSERVE_OPERATOR_TOKEN` / `GRIDSERVE_API_KEY` are added
    /// when serving (`Credentials::with_env`), so parsing never depends on the environment.
    pub credentials: Credentials,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GatewayError::Config(format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
    }

    /// Parses TOML text; relative paths are taken against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, GatewayError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| GatewayError::Config(e.to_string()))?;
        raw.validate(base)
    }
}

impl RawConfig {
    fn validate(self, base: &Path) -> Result<Config, GatewayError> {
        let e = &self.engine;
        let bad = |key: &str, why: &str| Err(GatewayError::Config(format!("engine.{key}: {why}")));
        if e.kv_block_size == 0 || e.kv_block_size > 1024 {
            return bad("kv_block_size", "must be between 1 and 1024");
        }
        if e.kv_cache_mib == 0 {
            return bad("kv_cache_mib", "must be at least 1");
        }
        if e.step_budget.max_tokens == 0 || e.step_budget.max_seqs == 0 {
            return bad("step_budget", "max_tokens and max_seqs must be at least 1");
        }
        let device: DeviceSpec = e
            .device
            .parse()
            .map_err(|err| GatewayError::Config(format!("engine.device: {err}")))?;
        let threads = if e.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            e.threads
        };
        let api_keys = hashes("server.api_key_sha256", &self.server.api_key_sha256)?;
        let tier_keys: Vec<String> = self.server.api_key_tiers.keys().cloned().collect();
        let tiers: Vec<_> = hashes("server.api_key_tiers", &tier_keys)?
            .into_iter()
            .zip(self.server.api_key_tiers.values().copied())
            .collect();
        if let Some((_, key)) = tiers
            .iter()
            .zip(&tier_keys)
            .find(|((h, _), _)| !api_keys.contains(h))
        {
            return Err(GatewayError::Config(format!(
                "server.api_key_tiers: {key} is not in server.api_key_sha256"
            )));
        }
        let server = self.server.validate()?;
        let power = self.power.validate(base)?;
        let controller = self.controller.validate()?;
        let operator = hashes(
            "grid.operator_token_sha256",
            &self.grid.operator_token_sha256,
        )?;
        let grid = self.grid.validate(base)?;
        let openadr = self.openadr.validate(base)?;
        Ok(Config {
            server,
            power,
            controller,
            grid,
            openadr,
            credentials: Credentials::new(operator, api_keys).with_api_key_tiers(tiers),
            model: ModelConfig {
                path: base.join(&self.model.path),
                chat_template: (self.model.chat_template != Path::new("model"))
                    .then(|| base.join(&self.model.chat_template)),
            },
            engine: EngineConfig {
                device,
                threads,
                kv: KvCacheOptions {
                    block_size: e.kv_block_size,
                    kv_cache_bytes: e.kv_cache_mib << 20,
                    max_seq_len: (e.max_seq_len > 0).then_some(e.max_seq_len),
                },
                step_budget: StepBudget {
                    max_tokens: e.step_budget.max_tokens,
                    max_seqs: e.step_budget.max_seqs,
                },
            },
        })
    }
}

impl RawServer {
    fn validate(self) -> Result<ServerConfig, GatewayError> {
        let bad = |key: &str, why: &str| Err(GatewayError::Config(format!("server.{key}: {why}")));
        if self.max_waiting_requests == 0 {
            return bad("max_waiting_requests", "must be at least 1");
        }
        if !(self.drain_timeout_seconds.is_finite() && self.drain_timeout_seconds >= 0.0) {
            return bad("drain_timeout_seconds", "must be a non-negative number");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        if self.default_completion_max_tokens == 0 || self.max_n == 0 {
            return bad(
                "default_completion_max_tokens / max_n",
                "must be at least 1",
            );
        }
        Ok(ServerConfig {
            host: self.host,
            port: self.port,
            max_waiting_requests: self.max_waiting_requests,
            drain_timeout: Duration::from_secs_f64(self.drain_timeout_seconds),
            api: ApiConfig {
                max_body_bytes: self.max_body_bytes,
                default_completion_max_tokens: self.default_completion_max_tokens,
                max_n: self.max_n,
            },
        })
    }
}

impl RawPower {
    fn validate(self, base: &Path) -> Result<PowerConfig, GatewayError> {
        let watts_ok = |w: f64| w.is_finite() && w >= 0.0;
        if !watts_ok(self.cpu_idle_watts) || !watts_ok(self.cpu_watts_per_busy_core) {
            return Err(GatewayError::Config(
                "power.cpu_idle_watts / cpu_watts_per_busy_core: must be non-negative numbers"
                    .into(),
            ));
        }
        Ok(PowerConfig {
            sensor: self.sensor,
            cpu_estimate_scope: self.cpu_estimate_scope,
            cpu_idle_watts: self.cpu_idle_watts,
            cpu_watts_per_busy_core: self.cpu_watts_per_busy_core,
            powercap_root: base.join(self.powercap_root),
            twin_config_dir: base.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../../config/default.toml");

    #[test]
    fn default_config_parses_with_paths_next_to_it() {
        let c = Config::parse(DEFAULT, Path::new("/srv/gs/config")).unwrap();
        assert_eq!(
            c.model.path,
            Path::new("/srv/gs/config/../models-data/gemma-3-270m-q4_k_m.gguf")
        );
        assert_eq!(c.engine.kv.block_size, 16);
        assert_eq!(c.engine.kv.kv_cache_bytes, 2048 << 20);
        assert!(c.engine.threads >= 1);
        assert_eq!((c.server.host.as_str(), c.server.port), ("127.0.0.1", 8000));
        assert_eq!(c.server.drain_timeout, Duration::from_secs(30));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = DEFAULT.replace("threads = 0", "threads = 0\nthread = 2");
        let err = Config::parse(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `thread`"), "{err}");
    }

    #[test]
    fn zero_budget_is_rejected() {
        let text = DEFAULT.replace("max_seqs = 32", "max_seqs = 0");
        assert!(Config::parse(&text, Path::new(".")).is_err());
    }

    #[test]
    fn power_section_parses_and_is_checked() {
        let c = Config::parse(DEFAULT, Path::new("/srv/gs/config")).unwrap();
        assert_eq!(c.power.sensor, SensorChoice::Auto);
        assert_eq!(c.power.cpu_idle_watts, 20.0);
        assert_eq!(c.power.cpu_watts_per_busy_core, 12.0);
        assert_eq!(c.power.powercap_root, Path::new("/sys/class/powercap"));
        let rapl = DEFAULT.replace("sensor = \"auto\"", "sensor = \"rapl\"");
        let c = Config::parse(&rapl, Path::new(".")).unwrap();
        assert_eq!(c.power.sensor, SensorChoice::Rapl);
        let bad = DEFAULT.replace("sensor = \"auto\"", "sensor = \"gpu\"");
        assert!(Config::parse(&bad, Path::new(".")).is_err());
        let twin = DEFAULT.replace("sensor = \"auto\"", "sensor = \"twin:h100:llama-3.1-8b\"");
        let c = Config::parse(&twin, Path::new("/srv/gs/config")).unwrap();
        let expected = SensorChoice::Twin {
            gpu: "h100".into(),
            model: Some("llama-3.1-8b".into()),
        };
        assert_eq!(c.power.sensor, expected);
        assert_eq!(c.power.twin_config_dir, Path::new("/srv/gs/config"));
        for bad in ["twin:", "twin:h100:", "twin:a:b:c", "twin"] {
            assert!(bad.parse::<SensorChoice>().is_err(), "{bad}");
        }
        let negative = DEFAULT.replace("cpu_idle_watts = 20.0", "cpu_idle_watts = -1.0");
        let err = Config::parse(&negative, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("power.cpu_idle_watts"), "{err}");
    }

    #[test]
    fn grid_section_parses_and_is_checked() {
        let c = Config::parse(DEFAULT, Path::new("/srv/gs/config")).unwrap();
        assert_eq!(c.grid.data_dir, Path::new("/srv/gs/config/../data"));
        assert_eq!(c.grid.default_cap(), None, "unbounded unless configured");
        assert!(!c.credentials.api_keys_required());
        let hash = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        let text = DEFAULT
            .replace(
                "api_key_sha256 = []",
                &format!("api_key_sha256 = [\"{hash}\"]"),
            )
            .replace(
                "# subscription_watts = 2000.0",
                "subscription_watts = 2000.0",
            );
        let c = Config::parse(&text, Path::new(".")).unwrap();
        assert!(c
            .credentials
            .is(crate::grid::auth::TokenKind::ApiKey, "secret"));
        assert_eq!(c.grid.default_cap(), Some(2000.0));
        assert_eq!(c.credentials.tier_of("secret"), None);
        let tiered = text.replace(
            "api_key_tiers = {}",
            &format!("api_key_tiers = {{ \"{hash}\" = \"flexible\" }}"),
        );
        let c = Config::parse(&tiered, Path::new(".")).unwrap();
        assert_eq!(c.credentials.tier_of("secret"), Some(Priority::Flexible));
        let unknown = DEFAULT.replace(
            "api_key_tiers = {}",
            &format!("api_key_tiers = {{ \"{hash}\" = \"flexible\" }}"),
        );
        let err = Config::parse(&unknown, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not in server.api_key_sha256"), "{err}");
        let bad_hash = DEFAULT.replace(
            "operator_token_sha256 = []",
            "operator_token_sha256 = [\"abc\"]",
        );
        let err = Config::parse(&bad_hash, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("grid.operator_token_sha256[0]"), "{err}");
        let negative = DEFAULT.replace("# hardware_min_watts = 100.0", "hardware_min_watts = -5.0");
        let err = Config::parse(&negative, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("grid.hardware_min_watts"), "{err}");
    }
}
