//! The host's error type: every way loading or running an operator can fail, worded for the
//! `events` subject and logs.

use std::path::PathBuf;
use std::time::Duration;

/// What kind of error an operator reported (the WIT `error` variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorErrorKind {
    /// The configuration passed to `init` is unusable.
    InvalidConfig,
    /// This frame cannot be processed (wrong size, format, ...).
    InvalidInput,
    /// Anything else that went wrong inside the operator.
    Internal,
}

impl std::fmt::Display for OperatorErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::InvalidConfig => "invalid config",
            Self::InvalidInput => "invalid input",
            Self::Internal => "internal error",
        })
    }
}

/// An error the operator itself returned (as opposed to a trap): the guest is still healthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct OperatorError {
    pub kind: OperatorErrorKind,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("invalid Wasm engine options: {0}")]
    Options(String),

    #[error("cannot create the Wasm engine: {message}")]
    Engine { message: String },

    #[error("cannot read operator module {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot tell what operator {} accepts: {source}", path.display())]
    Accepts {
        path: PathBuf,
        #[source]
        source: crate::accepts::AcceptsError,
    },

    #[error("refusing operator {}: {source}", path.display())]
    Signature {
        path: PathBuf,
        #[source]
        source: panoptes_client::keys::SignatureError,
    },

    #[error("refusing operator {}: its digest is sha256:{got}, not the declared {declared}", path.display())]
    Digest {
        path: PathBuf,
        got: String,
        declared: String,
    },

    #[error("cannot compile operator module {}: {message}", path.display())]
    Compile { path: PathBuf, message: String },

    #[error("cannot instantiate operator `{operator}`: {message}")]
    Instantiate { operator: String, message: String },

    #[error("operator `{operator}` rejected its configuration: {message}")]
    Init { operator: String, message: String },

    #[error(
        "operator `{operator}` trapped (the frame is dropped and the instance will be rebuilt): {message}"
    )]
    Trap { operator: String, message: String },

    #[error(
        "operator `{operator}` ran past its deadline of {after:?} and was interrupted (the frame is dropped and the instance will be rebuilt)"
    )]
    Timeout { operator: String, after: Duration },

    #[error(
        "operator `{operator}` tried to grow its memory to {requested} bytes, over its limit of {limit} bytes (the frame is dropped and the instance will be rebuilt)"
    )]
    MemoryLimit {
        operator: String,
        limit: usize,
        requested: usize,
    },

    #[error("operator `{operator}` refused the saved state: {message}")]
    StateRefused { operator: String, message: String },

    #[error("operator `{operator}` failed on this frame: {error}")]
    Operator {
        operator: String,
        #[source]
        error: OperatorError,
    },
}

impl WasmError {
    /// Whether the guest instance was torn down by this error (trap, timeout, memory limit).
    pub fn is_fatal_to_instance(&self) -> bool {
        matches!(
            self,
            Self::Trap { .. } | Self::Timeout { .. } | Self::MemoryLimit { .. }
        )
    }
}
