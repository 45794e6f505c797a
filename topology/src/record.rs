//! Evidence as the topology declares it (`record:`): which events make a clip, pre- and
//! post-roll, drawing, continuous segments and retention. Run by `panoptes-recorder`;
//! checked in `semantic/record.rs`.

use panoptes_contracts::analytics::AnalyticsKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Clips and snapshots of events, kept in the NATS Object Store bucket `<ns>-clips`. Recorded
/// by `panoptes run` or by `panoptes record` processes of their own (cameras shared by
/// partition leases, like workers).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// Which events make a clip.
    #[serde(default)]
    pub rules: Vec<RecordRule>,
    /// Cameras recorded all the time, in fixed-length segments.
    #[serde(default)]
    pub continuous: Vec<ContinuousRecording>,
    /// When stored clips are removed.
    #[serde(default)]
    pub retention: Retention,
    /// Most memory the recent frames of one camera may hold (the pre-roll buffer), in MiB:
    /// the oldest frames go first when a camera's frames are larger than expected.
    #[serde(default = "default_buffer_mib")]
    #[schemars(range(min = 1, max = 4096))]
    pub buffer_mib: u64,
    /// Quality of the JPEG that raw (RGB) frames are encoded to once, when they enter the
    /// buffer; JPEG frames are kept as they arrived.
    #[serde(default = "default_jpeg_quality")]
    #[schemars(range(min = 1, max = 100))]
    pub jpeg_quality: u8,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            continuous: Vec::new(),
            retention: Retention::default(),
            buffer_mib: default_buffer_mib(),
            jpeg_quality: default_jpeg_quality(),
        }
    }
}

impl RecordConfig {
    /// The longest pre-roll any rule asks for: how much of each camera the buffer keeps.
    pub fn longest_pre_roll_s(&self) -> f64 {
        self.rules.iter().map(|r| r.pre_roll_s).fold(0.0, f64::max)
    }
}

fn default_buffer_mib() -> u64 {
    64
}

fn default_jpeg_quality() -> u8 {
    85
}

/// One rule: events it matches start a clip (or extend the clip of their camera already
/// being recorded) from `pre_roll_s` before the event to `post_roll_s` after it, and take a
/// snapshot of the event's frame. Analytics events match by `kinds`, `places` and `labels`;
/// with `detections`, the rule matches detection messages with one of those labels instead.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordRule {
    /// One token, unique among the rules; clips name the rules that made them.
    pub id: String,
    /// Only these cameras; none: every camera.
    #[serde(default)]
    pub cameras: Vec<String>,
    /// Analytics event kinds that match; none: every kind.
    #[serde(default)]
    pub kinds: Vec<AnalyticsKind>,
    /// Zones or lines (IDs) whose events match; none: every place.
    #[serde(default)]
    pub places: Vec<String>,
    /// Labels of the objects whose events match; none: every label.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Match detection messages that carry a detection of one of these labels, instead of
    /// analytics events.
    #[serde(default)]
    pub detections: Vec<String>,
    /// Seconds of video before the event.
    #[serde(default = "default_pre_roll_s")]
    #[schemars(range(min = 0.0, max = 300.0))]
    pub pre_roll_s: f64,
    /// Seconds of video after the event (after the last event, when events overlap).
    #[serde(default = "default_post_roll_s")]
    #[schemars(range(min = 0.0, max = 3600.0))]
    pub post_roll_s: f64,
    /// Longest clip, in seconds: events that keep extending a clip stop doing so here, and
    /// the next one starts a new clip.
    #[serde(default = "default_max_length_s")]
    #[schemars(range(min = 1.0, max = 7200.0))]
    pub max_length_s: f64,
    /// Draw boxes, labels, track IDs, zones and lines on the clip and the snapshot.
    #[serde(default = "default_true")]
    pub draw: bool,
}

fn default_pre_roll_s() -> f64 {
    5.0
}

fn default_post_roll_s() -> f64 {
    5.0
}

fn default_max_length_s() -> f64 {
    120.0
}

fn default_true() -> bool {
    true
}

/// A camera recorded without events, in segments of `segment_s` seconds.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContinuousRecording {
    /// The cameras; none: every camera.
    #[serde(default)]
    pub cameras: Vec<String>,
    /// Length of each segment.
    #[serde(default = "default_segment_s")]
    #[schemars(range(min = 1.0, max = 3600.0))]
    pub segment_s: f64,
    /// Draw what was detected, as on clips.
    #[serde(default)]
    pub draw: bool,
}

fn default_segment_s() -> f64 {
    60.0
}

/// Stored clips (with their snapshots) are removed when older than `max_age_h`, and the
/// oldest first while all of them together are over `max_mib`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default = "default_max_age_h")]
    #[schemars(range(min = 0.01))]
    pub max_age_h: f64,
    #[serde(default = "default_max_mib")]
    #[schemars(range(min = 1))]
    pub max_mib: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age_h: default_max_age_h(),
            max_mib: default_max_mib(),
        }
    }
}

fn default_max_age_h() -> f64 {
    168.0
}

fn default_max_mib() -> u64 {
    1024
}
