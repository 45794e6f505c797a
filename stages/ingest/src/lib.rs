//! GStreamer ingest: turns camera sources into raw frames for the pipeline.
//!
//! A [`SourceSpec`] says where video comes from; [`Ingest::start`] builds a GStreamer pipeline
//! that ends in an `appsink` producing packed RGB, and hands every frame to a callback as a
//! [`RawFrame`]. [`Ingest::start_with`] can instead end the pipeline in `jpegenc`
//! ([`Output::Jpeg`]), for frames too large to travel raw. Bus messages (playing, end of
//! stream, errors) go to a second callback as [`SourceStatus`]. [`render_still`] and
//! [`ink_bbox`] exist so tests can learn where `textoverlay` put the text of a synthetic test
//! pattern, which is the ground truth that detection stages are checked against.

mod error;
mod frame;
mod ingest;
mod pipeline;
mod spec;

use std::sync::OnceLock;

pub use error::IngestError;
pub use frame::{FrameFormat, RawFrame, ink_bbox};
pub use ingest::{Ingest, SourceStatus, render_still};
pub use spec::{Framerate, Output, SourceSpec, TestPattern};

/// Initialises GStreamer once per process.
///
/// Safe to call from any thread, any number of times; the first outcome is remembered so a
/// failed initialisation is reported consistently instead of being retried half-way.
pub fn init() -> Result<(), IngestError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gstreamer::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(IngestError::Init)
}
