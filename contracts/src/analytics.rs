//! Analytics events published on `<ns>.analytics.<camera>` (JSON, schema `analytics/v1`, JSON
//! Schema in `docs/analytics.schema.json`): a tracked object entered or left a zone, crossed a
//! line, or stayed in a zone past its dwell time.

use serde::{Deserialize, Serialize};

pub const ANALYTICS_SCHEMA: &str = "analytics/v1";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnalyticsKind {
    /// The track's anchor point entered the zone.
    ZoneEnter,
    /// It left the zone, or its track ended inside it (`ended: true`).
    ZoneExit,
    /// Its anchor point crossed the line; `direction` says which way.
    LineCross,
    /// It has stayed in the zone for the zone's dwell time (once per visit).
    Dwell,
}

impl AnalyticsKind {
    pub fn name(self) -> &'static str {
        match self {
            AnalyticsKind::ZoneEnter => "zone_enter",
            AnalyticsKind::ZoneExit => "zone_exit",
            AnalyticsKind::LineCross => "line_cross",
            AnalyticsKind::Dwell => "dwell",
        }
    }
}

/// Which way a line was crossed: onto the side the line names `in`, or off it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One analytics event (`analytics/v1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(title = "analytics/v1")]
pub struct AnalyticsEvent {
    /// `analytics/v1`.
    pub schema: String,
    /// Unique per event and stable across redelivery (`<camera>:<stage>:<kind>:<zone or
    /// line>:<track_id>:<seq>`): receivers drop duplicates by it.
    pub id: String,
    pub kind: AnalyticsKind,
    pub camera: String,
    /// The analytics stage that raised it.
    pub stage: String,
    /// The zone's ID (zone_enter, zone_exit, dwell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The line's ID (line_cross).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// line_cross: which way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    pub track_id: u64,
    pub label: String,
    /// The frame that showed it (for an event raised by time alone, the track's last frame).
    pub seq: u64,
    /// Capture time of that frame.
    pub capture_ts_ns: u64,
    /// When the event was raised (capture time extrapolated by the worker's clock for events
    /// raised without a frame: a dwell that ran out, a track that ended).
    pub ts_ns: u64,
    /// zone_exit and dwell: how long the object has been in the zone, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell_ms: Option<u64>,
    /// zone_exit: the track ended inside the zone rather than walked out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
    /// The anchor point (original-frame pixels) when it happened.
    pub point: [f32; 2],
}

/// The JSON Schema of analytics events (committed as `docs/analytics.schema.json`).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(AnalyticsEvent))
        .unwrap_or(serde_json::Value::Bool(true))
}
