//! Detection messages published on `<ns>.detections.<camera>` (JSON, schema `detections/v1`,
//! JSON Schema in `docs/detections.schema.json`). Coordinates are pixels of the original frame.

use serde::{Deserialize, Serialize};

pub const DETECTIONS_SCHEMA: &str = "detections/v1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionMessage {
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
