//! Multi-object tracking: which box of this frame is which object of the last ones.
//!
//! Owns ByteTrack's association (`tracker.rs`: high-score boxes first, then low-score boxes
//! against tracks still unmatched), its motion model (`kalman.rs`, driven by capture time) and
//! the assignment (`assign.rs`), per camera ([`CameraTracker`]), and the state format a camera's
//! tracks travel in to its next owner ([`encode_state`] / [`decode_state`]).
//!
//! Invariant: within a camera a track ID is given once and never again; a state is used only
//! after it decoded whole and passed [`CameraTracker::check`].
//!
//! Written here rather than taken from a tracking crate: the state must serialise whole (tracks,
//! filters, the next ID) and new IDs must come from ranges the caller reserves. Of the Rust
//! ByteTrack crates, sightloom-tracking's snapshot has no serialised form and hands out `u32`
//! IDs from its own counter; similari and trackforge were not evaluated in depth. The
//! algorithm is ~300 lines; the assignment is `pathfinding`'s Kuhn-Munkres.

mod assign;
mod kalman;
mod stage;
mod tracker;

pub use assign::{assign, iou};
pub use kalman::{Motion, STEP_S};
pub use stage::{BuildError, TICK, TrackerStage, build};
pub use tracker::{
    CameraTracker, Observation, StateError, TrackEnd, TrackView, TrackerConfig, Update,
};

use serde::{Deserialize, Serialize};

/// Names the state format; a blob with another name or version is refused, not guessed at.
pub const STATE_FORMAT: &str = "panoptes.tracker";
pub const STATE_VERSION: u32 = 1;
/// Largest state blob read back (4,096 tracks take ~1.5 MB as JSON).
pub const MAX_STATE_BYTES: usize = 8 << 20;

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: &'a str,
    version: u32,
    state: &'a CameraTracker,
}

#[derive(Deserialize)]
struct Header {
    format: String,
    version: u32,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    state: CameraTracker,
}

/// Why a state blob was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("tracker state of {0} bytes is larger than the {MAX_STATE_BYTES} allowed")]
    TooLarge(usize),
    #[error("not a tracker state: {0}")]
    Malformed(String),
    #[error(
        "tracker state is {format} version {version}; this build reads {STATE_FORMAT} version {STATE_VERSION}"
    )]
    Incompatible { format: String, version: u32 },
    #[error(transparent)]
    Invalid(#[from] StateError),
}

/// A camera's tracker state as bytes (versioned JSON).
pub fn encode_state(state: &CameraTracker) -> Vec<u8> {
    serde_json::to_vec(&EnvelopeOut {
        format: STATE_FORMAT,
        version: STATE_VERSION,
        state,
    })
    // Serialising plain structs of numbers and strings cannot fail.
    .unwrap_or_default()
}

/// Reads a state [`encode_state`] wrote, checked before it is used.
pub fn decode_state(bytes: &[u8], max_tracks: usize) -> Result<CameraTracker, DecodeError> {
    if bytes.len() > MAX_STATE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let header: Header =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if header.format != STATE_FORMAT || header.version != STATE_VERSION {
        return Err(DecodeError::Incompatible {
            format: header.format,
            version: header.version,
        });
    }
    let envelope: EnvelopeIn =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    envelope.state.check(max_tracks)?;
    Ok(envelope.state)
}
