//! The kernels crate's one error type: shape and layout mismatches caught before any work.

/// A kernel was called with buffers that do not fit together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("{op}: {what} has {got} elements, expected {expected}")]
    Shape {
        op: &'static str,
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("{op}: {message}")]
    Invalid { op: &'static str, message: String },
    /// A device that was asked for cannot be used (no GPU, no driver, a CPU-only build).
    #[error("{0}")]
    Device(String),
}

/// Checks a buffer's length; the kernels use this so a bad call is an error, not a panic.
pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    got: usize,
    expected: usize,
) -> Result<(), KernelError> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::Shape {
            op,
            what,
            got,
            expected,
        })
    }
}
