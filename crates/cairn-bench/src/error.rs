//! The harness's one error type: what it was doing, and why that failed.

use std::fmt;

/// A failed benchmark run, rendered as `<what the harness was doing>: <cause>`.
#[derive(Debug)]
pub struct BenchError {
    /// What the harness was doing, e.g. "launching Cairn".
    doing: String,
    /// The cause, with its chain of sources.
    cause: String,
}

impl BenchError {
    /// An error with no underlying cause beyond `cause` itself.
    pub fn new(doing: impl Into<String>, cause: impl Into<String>) -> Self {
        Self {
            doing: doing.into(),
            cause: cause.into(),
        }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.doing, self.cause)
    }
}

impl std::error::Error for BenchError {}

/// Attach what the harness was doing to a failure.
pub trait Context<T> {
    /// Turn the error into a [`BenchError`] that says what was being done.
    fn context(self, doing: impl Into<String>) -> Result<T, BenchError>;
}

impl<T, E: std::error::Error> Context<T> for Result<T, E> {
    fn context(self, doing: impl Into<String>) -> Result<T, BenchError> {
        self.map_err(|e| BenchError::new(doing, with_sources(&e)))
    }
}

/// An error's message followed by its sources' (drivers often keep the useful part there).
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}
