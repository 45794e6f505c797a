//! panoptes-recorder: evidence of events. It owns each recorded camera's pre-roll buffer of
//! JPEG frames (`buffer.rs`), the `record.rules` that turn analytics events and detections
//! into clip triggers (`rules.rs`), the clip state machine (`clip.rs`: pre-roll, post-roll,
//! overlapping events extend one clip up to its longest length, continuous segments), what
//! is drawn on frames (`overlay.rs`: an SVG of boxes, labels, track IDs, zones and lines),
//! encoding with GStreamer (`encode.rs`: H.264 in MP4, MJPEG in AVI without x264, snapshots
//! as JPEG), the Object Store bucket `<ns>-clips` with retention (`store.rs`), and the service
//! (`run.rs`: partition leases decide which recorder records a camera, `clips/v1` on
//! `<ns>.clips.<camera>` once stored).
//!
//! Invariant: a clip is listed only once complete (its video and snapshot fully stored, with
//! its description); a camera is recorded by at most one recorder at a time, and the plan of
//! its open clip (KV `<ns>-recording`) lets the next one go on with it.

pub mod buffer;
pub mod clip;
pub mod encode;
pub mod overlay;
pub mod rules;
pub mod run;
pub mod store;

pub use run::{RecorderConfig, run};
pub use store::{ClipStore, Role, StoredObject};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A frame that cannot be recorded (its format, its size).
    #[error("{0}")]
    Frame(String),
    /// GStreamer could not encode a clip or snapshot.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The Object Store or KV refused something.
    #[error("{0}")]
    Store(String),
}
