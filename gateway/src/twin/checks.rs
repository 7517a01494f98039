//! Range checks shared by the profile and shape validators; each failure names the TOML key.

use std::path::Path;

use crate::GatewayError;

/// Reads `path` and parses it with `parse`, naming the file in any config error.
pub(crate) fn load_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, GatewayError>,
) -> Result<T, GatewayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| GatewayError::Config(format!("reading {}: {e}", path.display())))?;
    parse(&text).map_err(|e| match e {
        GatewayError::Config(m) => GatewayError::Config(format!("{}: {m}", path.display())),
        other => other,
    })
}

pub(crate) fn bad(key: &str, why: &str) -> GatewayError {
    GatewayError::Config(format!("`{key}` {why}"))
}

pub(crate) fn positive(key: &str, v: f64) -> Result<(), GatewayError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(key, &format!("must be > 0 (got {v})")))
    }
}

pub(crate) fn non_negative(key: &str, v: f64) -> Result<(), GatewayError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(bad(key, &format!("must be >= 0 (got {v})")))
    }
}

pub(crate) fn within(key: &str, v: f64, lo: f64, hi: f64) -> Result<(), GatewayError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(bad(key, &format!("must be in [{lo}, {hi}] (got {v})")))
    }
}

pub(crate) fn ordered(key: &str, lo: f64, hi: f64) -> Result<(), GatewayError> {
    if lo <= hi {
        Ok(())
    } else {
        Err(bad(
            key,
            &format!("must be <= the maximum (got {lo} > {hi})"),
        ))
    }
}
