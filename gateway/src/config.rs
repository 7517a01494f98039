//! Configuration: the TOML file parsed into a raw struct that rejects unknown keys, then
//! validated into the typed sub-configs each component takes.

use std::path::{Path, PathBuf};

use gridserve_models::KvCacheOptions;
use serde::Deserialize;

use crate::engine::StepBudget;
use crate::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    model: RawModel,
    engine: RawEngine,
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
    threads: usize,
    kv_block_size: usize,
    kv_cache_mib: usize,
    max_seq_len: usize,
    step_budget: RawStepBudget,
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
    pub chat_template: PathBuf,
}

/// How the engine runs the model.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Model threads; 0 was resolved to the core count.
    pub threads: usize,
    pub kv: KvCacheOptions,
    pub step_budget: StepBudget,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub model: ModelConfig,
    pub engine: EngineConfig,
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
        let threads = if e.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            e.threads
        };
        Ok(Config {
            model: ModelConfig {
                path: base.join(&self.model.path),
                chat_template: base.join(&self.model.chat_template),
            },
            engine: EngineConfig {
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
}
