//! Range checks shared by the profile and shape validators; each failure names the TOML key.

use crate::GatewayError;

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
