//! Exit codes, decided in one place.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | verification failed: a signature, digest or file does not match |
//! | 2 | usage or input error: bad arguments, unreadable or malformed files, bad keys |

use std::fmt::Display;

/// An error at the CLI edge together with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// 1 or 2.
    pub code: u8,
    /// One-line message (file name first where there is one).
    pub error: anyhow::Error,
    /// Extra machine-readable detail for `--json`.
    pub detail: Option<serde_json::Value>,
}

/// Verification failed.
pub const FAILED: u8 = 1;
/// Usage or input error.
pub const INPUT: u8 = 2;

impl CliError {
    /// Verification failure (exit 1).
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        CliError {
            code: FAILED,
            error: error.into(),
            detail: None,
        }
    }

    /// Input error (exit 2).
    pub fn input(error: impl Into<anyhow::Error>) -> Self {
        CliError {
            code: INPUT,
            error: error.into(),
            detail: None,
        }
    }

    /// Attaches JSON detail.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// Converts any error into an input error (exit 2).
pub trait OrInput<T> {
    /// Maps the error to exit 2.
    fn or_input(self) -> Result<T, CliError>;
}

impl<T, E: Into<anyhow::Error>> OrInput<T> for Result<T, E> {
    fn or_input(self) -> Result<T, CliError> {
        self.map_err(CliError::input)
    }
}

/// Converts any error into a verification failure (exit 1).
pub trait OrFailed<T> {
    /// Maps the error to exit 1.
    fn or_failed(self) -> Result<T, CliError>;
}

impl<T, E: Display> OrFailed<T> for Result<T, E> {
    fn or_failed(self) -> Result<T, CliError> {
        self.map_err(|e| CliError::failed(anyhow::anyhow!("{e}")))
    }
}
