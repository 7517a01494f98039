//! The OpenAI request body as clients send it, for both `/v1/completions` and
//! `/v1/chat/completions`. Fields whose JSON type varies (`prompt`, `stop`, `logprobs`,
//! message `content`) stay `Value` here and are checked in `params`/`prompt`, where the error
//! can name the field; unknown fields are ignored, as OpenAI clients send many.

use serde::Deserialize;
use serde_json::Value;

/// Everything either endpoint reads. One struct keeps the two endpoints' parsing identical;
/// each endpoint only looks at the fields it owns (`prompt` or `messages`).
#[derive(Debug, Default, Deserialize)]
pub struct OpenAiRequest {
    pub model: Option<String>,
    pub prompt: Option<Value>,
    pub messages: Option<Vec<RawMessage>>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// vLLM convention: -1 (or 0) disables top-k.
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<Value>,
    /// vLLM extension: extra token ids that end generation.
    pub stop_token_ids: Option<Vec<u32>>,
    pub n: Option<u64>,
    /// Completions: integer (top alternatives); chat: bool.
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// vLLM extension.
    pub ignore_eos: Option<bool>,
    pub priority: Option<PriorityParam>,
    // `user` is accepted and ignored like any unknown field.

    // Known OpenAI parameters gridserve does not implement: present (and non-trivial) → 400.
    pub tools: Option<Value>,
    pub functions: Option<Value>,
    pub tool_choice: Option<Value>,
    pub function_call: Option<Value>,
    pub response_format: Option<Value>,
    pub echo: Option<bool>,
    pub best_of: Option<u64>,
    pub logit_bias: Option<Value>,
    pub suffix: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct RawMessage {
    pub role: String,
    /// A string or a list of `{"type":"text","text":…}` parts.
    pub content: Option<Value>,
}

/// gridserve extension: the admission tier (`engine::Priority`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PriorityParam {
    Interactive,
    Standard,
    Flexible,
}

impl From<PriorityParam> for crate::engine::Priority {
    fn from(p: PriorityParam) -> Self {
        match p {
            PriorityParam::Interactive => Self::Interactive,
            PriorityParam::Standard => Self::Standard,
            PriorityParam::Flexible => Self::Flexible,
        }
    }
}
