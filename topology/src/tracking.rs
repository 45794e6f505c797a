//! The `tracker` stage's settings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Multi-object tracking per camera (ByteTrack): gives the boxes of one object the same
/// `track_id` across frames, and raises `track_end` events. Its state follows each camera to
/// its next worker (KV `<ns>-state`). Defaults are ByteTrack's published ones.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackerStage {
    pub id: String,
    #[serde(default)]
    pub input: Option<String>,
    /// Boxes scoring at least this are associated first and may start tracks.
    #[serde(default = "default_high_score")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub high_score: f64,
    /// Boxes scoring below this are ignored; those between it and `high_score` only continue
    /// tracks (ByteTrack's second pass).
    #[serde(default = "default_low_score")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub low_score: f64,
    /// An unmatched box starts a track if it scores at least this.
    #[serde(default = "default_new_track_score")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub new_track_score: f64,
    /// Least IoU of a high-score box with a track's predicted box to continue it.
    #[serde(default = "default_iou")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub iou_threshold: f64,
    /// Least IoU of a low-score box with a track's predicted box (second pass).
    #[serde(default = "default_low_iou")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub low_iou_threshold: f64,
    /// Matches a new track needs before it gets a track ID.
    #[serde(default = "default_min_hits")]
    #[schemars(range(min = 1))]
    pub min_hits: u32,
    /// Frames of its camera a track may go unmatched before it ends.
    #[serde(default = "default_max_age")]
    pub max_age: u32,
    /// Milliseconds (capture time) a track may go unmatched before it ends, besides
    /// `max_age`. A camera that stops sending frames ends its tracks after this, or after
    /// `max_age` of its recent frame intervals when unset.
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    /// Track each label on its own (a `person` box never continues a `car` track).
    #[serde(default = "crate::config::yes")]
    pub per_label: bool,
    /// Most tracks kept per camera; boxes beyond it start none.
    #[serde(default = "default_max_tracks")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_tracks: u32,
    /// How often each camera's state is saved to KV for its next owner, in milliseconds
    /// (it is also saved when the worker hands the camera over).
    #[serde(default = "default_snapshot_interval_ms")]
    #[schemars(range(min = 100))]
    pub snapshot_interval_ms: u64,
}

pub(crate) fn default_high_score() -> f64 {
    0.5
}
pub(crate) fn default_low_score() -> f64 {
    0.1
}
pub(crate) fn default_new_track_score() -> f64 {
    0.6
}
pub(crate) fn default_iou() -> f64 {
    0.2
}
pub(crate) fn default_low_iou() -> f64 {
    0.5
}
pub(crate) fn default_min_hits() -> u32 {
    2
}
pub(crate) fn default_max_age() -> u32 {
    30
}
pub(crate) fn default_max_tracks() -> u32 {
    4096
}
pub(crate) fn default_snapshot_interval_ms() -> u64 {
    1000
}
