//! What every OpenAI response and stream chunk shares: the id, `object`, `created`, `model`
//! header, and `usage`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::power::EnergySource;

use serde::Serialize;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// gridserve's extension: the energy this request used, and where the figure comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_joules: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_source: Option<EnergySource>,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            energy_joules: None,
            energy_source: None,
        }
    }

    /// Adds the energy of all choices, when the engine meters it.
    pub fn with_energy(mut self, joules: Option<f64>, source: Option<EnergySource>) -> Self {
        if let (Some(j), Some(s)) = (joules, source) {
            self.energy_joules = Some(j);
            self.energy_source = Some(s);
        }
        self
    }
}

/// Adds `x-gridserve-energy-joules` (all choices together) to a finished response, so a client
/// that only reads headers still learns what its tokens cost.
pub fn with_energy_header(
    mut response: axum::response::Response,
    results: &[super::choice::ChoiceResult],
) -> axum::response::Response {
    if let Some(j) = total_energy(results.iter().map(|r| r.energy_joules)) {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{j:.6}")) {
            response
                .headers_mut()
                .insert("x-gridserve-energy-joules", v);
        }
    }
    response
}

/// Sums the choices' energies; None if none was metered.
pub fn total_energy(parts: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    parts
        .into_iter()
        .flatten()
        .fold(None, |acc, j| Some(acc.unwrap_or(0.0) + j))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The header fields of one response; every chunk of a stream repeats them.
#[derive(Clone, Debug)]
pub struct ResponseMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ResponseMeta {
    /// `prefix` is OpenAI's: `cmpl` or `chatcmpl`.
    pub fn new(prefix: &str, model: &str) -> Self {
        Self {
            id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            created: unix_now(),
            model: model.to_owned(),
        }
    }

    /// A whole response or chunk of type `object`. `usage` is left out when `None`; streams
    /// that report usage pass `Some(Value::Null)` on every chunk but the last, as OpenAI does.
    pub fn object(&self, object: &str, choices: Vec<Value>, usage: Option<Value>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            v["usage"] = usage;
        }
        v
    }
}
