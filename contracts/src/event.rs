//! Status and error events published on `<ns>.events.<camera>` (JSON, schema `events/v1.2`;
//! v1.1 adds `track_end` and its `track` object to v1, v1.2 `camera_stopped`).

use serde::{Deserialize, Serialize};

pub const EVENTS_SCHEMA: &str = "events/v1.2";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A frame could not be processed; only that frame is lost.
    FrameError,
    /// Frames were dropped to keep up (live delivery keeps the newest frame per camera).
    FramesDropped,
    /// Live delivery: frames nobody processed because their partition had no live owner: a
    /// worker died and its lease had not yet expired (counted by the worker that took the
    /// partition over, from the gap in sequence numbers), or the owner's lease lapsed while
    /// NATS was unreachable and it had not yet renewed it (counted by that worker, frame by
    /// frame). `count` frames, `message` names their sequence numbers.
    FramesLost,
    /// Durable delivery: a frame delivered again after newer frames of its camera were
    /// processed (its worker stalled past its lease, then JetStream redelivered it). It is
    /// acknowledged and not processed, so the stages see each camera's frames in order; `seq`
    /// names it.
    FramesLate,
    /// Frames of cameras beyond the worker's limit of tracked cameras were refused; `count`
    /// frames since the last such event, `camera` the latest of them.
    FramesRefused,
    /// The source delivers frames (again).
    CameraUp,
    /// The source failed, stalled or ended; `message` says which.
    CameraDown,
    /// The camera was stopped on purpose: removed at runtime (`panoptes camera remove`, a
    /// topology reload without it) or its ingest process stops. Nothing more comes from it
    /// until it is added again.
    CameraStopped,
    /// A live source is restarted after a back-off delay; `count` is the attempt (from 1).
    CameraReconnecting,
    /// A tracker stage ended a track (not seen for its `max_age`, or its camera went silent);
    /// `track` says which, how long it lived and how far it went; `stage` names the tracker.
    TrackEnd,
    /// A stage's saved state of a camera could not be used (another version's, corrupt,
    /// unreadable); the stage starts the camera afresh. `message` says why.
    StateDiscarded,
}

/// The track a `track_end` event is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrackSummary {
    pub track_id: u64,
    pub label: String,
    /// Capture times of its first and last matched frame.
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    pub duration_ms: u64,
    /// Frames it was matched in.
    pub hits: u32,
    /// Distance its box centre travelled, in pixels.
    pub path_px: f64,
    /// Its last matched box, `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// A status or error event of a camera.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(title = "events/v1.1")]
pub struct Event {
    /// `events/v1.1` (readers accept `events/v1` and any `events/v1.N`).
    pub schema: String,
    pub camera: String,
    pub kind: EventKind,
    /// The stage where it happened (`decode`, `ingest`, or a stage ID from the topology).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Human-readable cause.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    pub ts_ns: u64,
    /// `track_end`: the track that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackSummary>,
}

/// The JSON Schema of event messages (committed as `docs/events.schema.json`).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Event)).unwrap_or(serde_json::Value::Bool(true))
}

impl Event {
    pub fn new(camera: &str, kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            schema: EVENTS_SCHEMA.to_owned(),
            camera: camera.to_owned(),
            kind,
            stage: None,
            seq: None,
            message: message.into(),
            count: None,
            ts_ns: crate::time::now_ns(),
            track: None,
        }
    }

    pub fn stage(mut self, stage: impl Into<String>) -> Self {
        self.stage = Some(stage.into());
        self
    }

    pub fn seq(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }

    pub fn count(mut self, count: u64) -> Self {
        self.count = Some(count);
        self
    }
}
