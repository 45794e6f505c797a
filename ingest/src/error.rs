//! Error type for everything the ingest stage can fail at.

use std::time::Duration;

/// Why a source could not be built, started or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// `gst::init` failed (no usable GStreamer installation).
    #[error("GStreamer initialisation failed: {0}")]
    Init(String),

    /// The [`SourceSpec`](crate::SourceSpec) itself is unusable; nothing was started.
    #[error("invalid source spec: {0}")]
    InvalidSpec(String),

    /// A GStreamer element factory is not installed.
    #[error("GStreamer element `{element}` is not available (install {package})")]
    MissingElement {
        element: &'static str,
        package: &'static str,
    },

    /// A gst-launch style description (`SourceSpec::Pipeline` or `Recorded`) did not parse.
    #[error("cannot parse pipeline description `{description}`: {reason}")]
    Parse { description: String, reason: String },

    /// The pipeline refused to go to PLAYING; `reason` carries the first bus error if any.
    #[error("pipeline failed to start: {reason}")]
    Start { reason: String },

    /// The pipeline reported an error while producing a frame.
    #[error("pipeline error: {0}")]
    Pipeline(String),

    /// No frame arrived in time (synchronous helpers only).
    #[error("no frame within {0:?}")]
    Timeout(Duration),

    /// The stream ended before a frame was produced (synchronous helpers only).
    #[error("stream ended before producing a frame")]
    NoFrame,

    /// A sample could not be turned into a [`RawFrame`](crate::RawFrame).
    #[error("cannot read frame: {0}")]
    Frame(String),

    /// A worker thread could not be spawned.
    #[error("cannot spawn ingest thread: {0}")]
    Thread(#[source] std::io::Error),
}
