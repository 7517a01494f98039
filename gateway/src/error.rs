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
}
