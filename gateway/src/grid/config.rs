//! `[grid]` in the config: parsed raw (unknown keys rejected) and validated into `GridConfig`;
//! and the token-hash lists shared with `[server] api_key_sha256`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::auth::{parse_sha256_hex, TokenHash};
use super::GridConfig;
use crate::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrid {
    data_dir: PathBuf,
    subscription_watts: Option<f64>,
    hardware_max_watts: Option<f64>,
    hardware_min_watts: Option<f64>,
    ramp_default_seconds: f64,
    pub operator_token_sha256: Vec<String>,
}

impl RawGrid {
    pub fn validate(self, base: &Path) -> Result<GridConfig, GatewayError> {
        let bad = |key: &str, why: &str| Err(GatewayError::Config(format!("grid.{key}: {why}")));
        for (key, watts) in [
            ("subscription_watts", self.subscription_watts),
            ("hardware_max_watts", self.hardware_max_watts),
            ("hardware_min_watts", self.hardware_min_watts),
        ] {
            if watts.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
                return bad(key, "must be a positive number of watts");
            }
        }
        let ramp = self.ramp_default_seconds;
        if !(ramp.is_finite() && (0.0..=crate::grid::envelope::MAX_RAMP_SECONDS).contains(&ramp)) {
            return bad("ramp_default_seconds", "must be between 0 and 86400");
        }
        Ok(GridConfig {
            data_dir: base.join(self.data_dir),
            subscription_watts: self.subscription_watts,
            hardware_max_watts: self.hardware_max_watts,
            hardware_min_watts: self.hardware_min_watts,
            ramp_default_seconds: ramp,
        })
    }
}

/// Hex SHA-256 hashes (64 digits each), e.g. from `printf %s TOKEN | sha256sum`.
pub fn hashes(key: &str, list: &[String]) -> Result<Vec<TokenHash>, GatewayError> {
    list.iter()
        .enumerate()
        .map(|(i, text)| {
            parse_sha256_hex(text).ok_or_else(|| {
                GatewayError::Config(format!("{key}[{i}]: not a hex SHA-256 hash (64 digits)"))
            })
        })
        .collect()
}
