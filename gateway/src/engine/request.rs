//! What a caller asks the engine for, and why a sequence ended.

use gridserve_models::sampling::SamplingParams;

/// Admission tier. Under pressure, `Flexible` work waits or is preempted first and
/// `Interactive` last. Order matters: lower sorts first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Interactive,
    #[default]
    Standard,
    Flexible,
}

impl Priority {
    /// The API's name for the tier (the `priority` request field, metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Standard => "standard",
            Priority::Flexible => "flexible",
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenerationRequest {
    /// Prompt token ids (BOS included when the model wants one).
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Extra token ids that end generation (beyond the model's end-of-sequence ids).
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past end-of-sequence tokens (benchmarks use this).
    pub ignore_eos: bool,
    pub priority: Priority,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token, a stop token or a stop string.
    Stop,
    /// `max_tokens` or the context length.
    Length,
    /// The caller went away or cancelled.
    Abort,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}
