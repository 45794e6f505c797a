//! `shadow/v1`: what a shadow stage (a candidate run beside a live stage on a sampled share of
//! frames) reports for each frame it ran, on `<ns>.shadow.<stage>.<camera>`. Never read by the
//! live pipeline: these messages are for people and tools deciding whether to promote.

use serde::{Deserialize, Serialize};

use crate::agreement::TextChange;
use crate::detection::Detection;

pub const SHADOW_SCHEMA: &str = "shadow/v1";

/// How a candidate's output for one frame compares with the live stage's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowOutcome {
    /// The same boxes (matched by IoU and label) and text; or, for tensors, the same shape and
    /// values within float tolerance.
    Agree,
    Differ,
    /// The candidate trapped, ran out of time or failed on the frame.
    Fault,
}

impl ShadowOutcome {
    /// The `outcome` label of the shadow metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowOutcome::Agree => "agree",
            ShadowOutcome::Differ => "differ",
            ShadowOutcome::Fault => "fault",
        }
    }
}

/// One frame as the candidate saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShadowMessage {
    pub schema: String,
    /// The live stage the candidate shadows.
    pub stage: String,
    pub camera: String,
    pub seq: u64,
    pub capture_ts_ns: u64,
    pub outcome: ShadowOutcome,
    /// What the two were compared on: `detections` or `tensor` (or `frame`).
    pub compared: String,
    /// The live detections, when the comparison is of detections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Vec<Detection>>,
    /// The candidate's detections, when it gave detections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Vec<Detection>>,
    /// Live boxes the candidate did not find.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<Detection>,
    /// Candidate boxes the live stage did not find.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<Detection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_changes: Vec<TextChange>,
    /// For a tensor comparison that differs: the largest absolute difference (or why the
    /// shapes do not compare).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difference: Option<String>,
    /// Why the candidate failed (a fault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The candidate's time for the batch this frame was in, microseconds.
    pub candidate_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_and_leaves_out_what_is_empty() {
        let m = ShadowMessage {
            schema: SHADOW_SCHEMA.into(),
            stage: "zone".into(),
            camera: "door".into(),
            seq: 7,
            capture_ts_ns: 1,
            outcome: ShadowOutcome::Fault,
            compared: "detections".into(),
            live: Some(Vec::new()),
            candidate: None,
            lost: Vec::new(),
            added: Vec::new(),
            text_changes: Vec::new(),
            difference: None,
            error: Some("trap".into()),
            candidate_us: 12,
        };
        let json = serde_json::to_value(&m).expect("serialise");
        assert_eq!(json["outcome"], "fault");
        assert!(json.get("lost").is_none() && json.get("candidate").is_none());
        let back: ShadowMessage = serde_json::from_value(json).expect("parse");
        assert_eq!(back, m);
    }
}
