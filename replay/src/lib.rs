//! panoptes-replay: frames kept for replay and what a replay found. It owns the retention
//! stream (`retain.rs`: `<ns>-retain`, every camera's frames and the detections the live
//! pipeline made of them, kept by age and size whatever processing does), reading a time range
//! of it (`read.rs`), and the frame-by-frame comparison of a replay's detections with the
//! stored ones (`compare.rs`: boxes matched by IoU, labels, text, tracks; a summary and the
//! frames that differ). `panoptes replay` (cli) runs the stages over what `read.rs` hands it,
//! in a namespace of its own.
//!
//! Invariant: nothing here publishes; reading the stream leaves it as it was.

pub mod compare;
pub mod read;
pub mod retain;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "no frames are kept in namespace {namespace}: stream {stream} does not exist (add `retain:` to the topology and run it)"
    )]
    NotRetained { namespace: String, stream: String },
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("{0}")]
    Range(String),
}

fn js_error(e: impl std::fmt::Display) -> ReplayError {
    ReplayError::JetStream(e.to_string())
}
