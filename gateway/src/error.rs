//! The gateway's one error type.

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("config: {0}")]
    Config(String),
    #[error("invalid `{param}`: {message}")]
    InvalidRequest {
        param: &'static str,
        message: String,
    },
    #[error(transparent)]
    Model(#[from] gridserve_models::ModelError),
    #[error("bench: {0}")]
    Bench(String),
    /// A power sensor or actuator that this machine does not have (no driver, no counters).
    #[error("power: {0} is not available")]
    PowerUnavailable(String),
    /// Present, but the process may not use it (e.g. setting clocks without root).
    #[error("power: {0}: permission denied")]
    PowerDenied(String),
    /// A device error or an out-of-range request.
    #[error("power: {0}")]
    Power(String),
    /// A grid envelope that fails validation; `param` is the request field (`intervals[2].end`).
    #[error("invalid `{param}`: {message}")]
    InvalidEnvelope { param: String, message: String },
    #[error("grid envelope `{0}` already exists")]
    EnvelopeExists(String),
    #[error("no grid envelope `{0}`")]
    EnvelopeNotFound(String),
    /// The grid store (SQLite) failed: it cannot be opened, written or read.
    #[error("grid store: {0}")]
    Store(String),
    /// The OpenADR VEN could not start (client set-up) or talk to its VTN.
    #[error("openadr: {0}")]
    OpenAdr(String),
}
