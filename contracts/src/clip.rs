//! Evidence kept of events, announced on `<ns>.clips.<camera>` (JSON, schema `clips/v1`, JSON
//! Schema in `docs/clips.schema.json`) once stored in the NATS Object Store bucket
//! `<ns>-clips`: the clip's and its snapshot's object names, the events it holds and the time
//! it covers, so an output (webhook, MQTT) can link them.

use serde::{Deserialize, Serialize};

pub const CLIPS_SCHEMA: &str = "clips/v1";

/// What was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClipKind {
    /// A clip made by events (`record.rules`), with a snapshot of its first event's frame.
    Clip,
    /// A fixed-length segment of continuous recording (`record.continuous`).
    Segment,
}

/// One event a clip holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClipEvent {
    /// The analytics event's `id`, or `<camera>:<seq>:<pipeline>` of a detection message.
    pub id: String,
    /// `zone_enter`, `zone_exit`, `line_cross`, `dwell`, or `detection`.
    pub kind: String,
    pub seq: u64,
    pub capture_ts_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
}

/// A stored clip or segment (`clips/v1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(title = "clips/v1")]
pub struct ClipMessage {
    /// `clips/v1`.
    pub schema: String,
    pub kind: ClipKind,
    /// `<camera>-<start ms>` (a part recorded after the camera moved to another recorder adds
    /// `-p<part>`); unique per camera.
    pub id: String,
    pub camera: String,
    /// The video's object name in `<ns>-clips`.
    pub object: String,
    /// `video/mp4` (H.264) or `video/x-msvideo` (MJPEG).
    pub content_type: String,
    /// The snapshot's object name (clips only): the first event's frame, drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Capture time of the first frame and the end of the last one.
    pub start_ns: u64,
    pub end_ns: u64,
    pub frames: u64,
    pub bytes: u64,
    /// 1, or the part of a clip a later recorder went on with.
    pub part: u32,
    /// The events it holds (clips only), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ClipEvent>,
    /// The rules that made it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// Track IDs seen in its frames' detections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<u64>,
    /// When it was stored.
    pub stored_ns: u64,
}

/// The JSON Schema of clip messages (committed as `docs/clips.schema.json`).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ClipMessage))
        .unwrap_or(serde_json::Value::Bool(true))
}
