//! Detection messages published on `<ns>.detections.<camera>` (JSON, schema `detections/v1.1`,
//! JSON Schema in `docs/detections.schema.json`). Coordinates are pixels of the original frame.

use serde::{Deserialize, Serialize};

/// The schema messages are published under. v1.1 adds the tracking fields (`track_id`,
/// `track_age_ms`, `velocity`) to v1; a v1 reader that ignores unknown fields reads it as is.
pub const DETECTIONS_SCHEMA: &str = "detections/v1.1";

/// Whether `schema` names a `detections/v1` message of any minor version: readers accept
/// these and ignore fields they do not know.
pub fn is_detections_v1(schema: &str) -> bool {
    schema == "detections/v1"
        || schema
            .strip_prefix("detections/v1.")
            .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()))
}

/// One box a stage found, in original-frame pixels, with what was read in it and, after a
/// tracker, the object it belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(extend("dependentRequired" = { "track_id": ["track_age_ms", "velocity"] }))]
pub struct Detection {
    /// Axis-aligned box `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The (possibly rotated) quadrilateral, clockwise from top-left, when the model gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polygon: Option<[[f32; 2]; 4]>,
    pub label: String,
    pub score: f32,
    /// Recognised text, where a stage produces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The object this box belongs to, after a tracker stage (v1.1): `track_id`,
    /// `track_age_ms` and `velocity` on the wire, absent for boxes not (yet) in a confirmed
    /// track.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackInfo>,
}

/// A tracked box's track (detections/v1.1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrackInfo {
    /// Unique within the camera for the camera's whole life, never reused, across workers.
    pub track_id: u64,
    /// Milliseconds of capture time since the track was first seen.
    pub track_age_ms: u64,
    /// Estimated motion of the box centre, pixels per second `[vx, vy]`.
    pub velocity: [f32; 2],
}

/// A detection message: the results of one frame on one branch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(title = "detections/v1.1")]
pub struct DetectionMessage {
    /// `detections/v1.1` (readers accept `detections/v1` and any `detections/v1.N`).
    pub schema: String,
    pub camera: String,
    pub seq: u64,
    pub capture_ts_ns: u64,
    /// When the worker published this message.
    pub published_ts_ns: u64,
    /// Frame size the coordinates refer to.
    pub width: u32,
    pub height: u32,
    /// The stage chain that produced it, e.g. `preprocess>detect>text-boxes`.
    pub pipeline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub detections: Vec<Detection>,
}

/// The JSON Schema of detection messages (committed as `docs/detections.schema.json`).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(DetectionMessage))
        .unwrap_or(serde_json::Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Detection {
        Detection {
            bbox: [1.0, 2.0, 3.0, 4.0],
            polygon: None,
            label: "person".into(),
            score: 0.9,
            text: None,
            track: None,
        }
    }

    #[test]
    fn track_fields_are_flat_and_absent_when_untracked() {
        let untracked = serde_json::to_value(plain()).expect("json");
        assert!(untracked.get("track_id").is_none(), "{untracked}");
        let tracked = Detection {
            track: Some(TrackInfo {
                track_id: 7,
                track_age_ms: 1500,
                velocity: [10.0, -2.5],
            }),
            ..plain()
        };
        let json = serde_json::to_value(&tracked).expect("json");
        assert_eq!(json["track_id"], 7);
        assert_eq!(json["track_age_ms"], 1500);
        assert_eq!(json["velocity"][1], -2.5);
        let back: Detection = serde_json::from_value(json).expect("read back");
        assert_eq!(back, tracked);
        // A v1 box (no tracking fields) reads as untracked.
        let v1: Detection =
            serde_json::from_str(r#"{"box":[1,2,3,4],"label":"person","score":0.9}"#).expect("v1");
        assert_eq!(v1, plain());
    }

    #[test]
    fn minor_versions_of_v1_are_accepted() {
        for ok in ["detections/v1", "detections/v1.1", "detections/v1.12"] {
            assert!(is_detections_v1(ok), "{ok}");
        }
        for bad in [
            "detections/v2",
            "detections/v1.",
            "detections/v1.x",
            "detections/v10",
        ] {
            assert!(!is_detections_v1(bad), "{bad}");
        }
    }
}
