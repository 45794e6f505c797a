//! panoptes-ingest: where frames enter. A camera of the topology becomes a GStreamer source
//! ([`sources`] builds the launch strings of rtsp/file/v4l2/http cameras, [`SourceSpec`] the
//! test pattern), an [`node::IngestNode`] runs it under a supervisor (reconnects with
//! exponential back-off and jitter, a stall watchdog, up/down/reconnecting events) and publishes
//! each frame through [`frame_out`] as Arrow `frame/v1` on `<ns>.frames.<camera>`; the
//! [`cameras::CameraSet`] is the running set of cameras, changed at runtime through the camera
//! control subjects and SIGHUP. While someone subscribes to `<ns>.preview.<camera>`, the node
//! also publishes small JPEG previews there ([`preview`]), so views never pull raw frames.
//!
//! Invariant: a camera's sequence numbers strictly increase for the life of the process (across
//! reconnects), and publishing never blocks capture: a frame that cannot be sent at once is
//! dropped and counted.
//!
//! A [`SourceSpec`] says where video comes from; [`Ingest::start`] builds a GStreamer pipeline
//! that ends in an `appsink` producing packed RGB, and hands every frame to a callback as a
//! [`RawFrame`]. [`Ingest::start_with`] can instead end the pipeline in `jpegenc`
//! ([`Output::Jpeg`]), for frames too large to travel raw. Bus messages (playing, end of
//! stream, errors) go to a second callback as [`SourceStatus`]. [`render_still`] and
//! [`ink_bbox`] exist so tests can learn where `textoverlay` put the text of a synthetic test
//! pattern, which is the ground truth that detection stages are checked against.

pub mod cameras;
mod error;
mod frame;
pub mod frame_out;
mod ingest;
pub mod node;
mod pipeline;
pub mod preview;
pub mod sources;
mod spec;
mod supervisor;

use std::sync::OnceLock;

pub use error::IngestError;
pub use frame::{FrameFormat, RawFrame, ink_bbox};
pub use ingest::{Ingest, SourceStatus, render_still};
pub use spec::{Framerate, Motion, Output, Overlay, SourceSpec, TestPattern};

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
