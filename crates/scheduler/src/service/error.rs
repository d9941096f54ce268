//! What the platform's operations fail with, in terms an API maps to status
//! codes: not found, invalid input (with its location), conflict with the
//! current state, or an internal failure.

use haul_register::store;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("{0} not found")]
    NotFound(String),
    /// A job spec or request that does not validate; the message locates the problem.
    #[error("{0}")]
    Invalid(String),
    /// The request does not fit the current state (an illegal transition, a job others depend on).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<store::Error> for PlatformError {
    fn from(error: store::Error) -> Self {
        match error {
            store::Error::NotFound { what } => PlatformError::NotFound(what),
            store::Error::IllegalTransition { .. } | store::Error::RunNotRunning { .. } => {
                PlatformError::Conflict(error.to_string())
            }
            other => PlatformError::Internal(other.into()),
        }
    }
}

impl From<haul_collect_core::job::JobFileError> for PlatformError {
    fn from(error: haul_collect_core::job::JobFileError) -> Self {
        PlatformError::Invalid(error.to_string())
    }
}
