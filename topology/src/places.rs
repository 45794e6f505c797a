//! The cameras' zones and lines as the topology declares them (checked in `semantic/places.rs`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Units of zone and line coordinates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Units {
    /// Pixels of the camera's frames (`width` × `height`).
    #[default]
    Pixels,
    /// Fractions of the frame, 0–1 on each axis.
    Normalized,
}

/// A zone: a polygon of the camera's frame. `analytics` stages report objects entering and
/// leaving it, and staying longer than `dwell_s`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// One token, unique among the camera's zones and lines.
    pub id: String,
    /// Corners in order (at least 3), `[x, y]` in `units`; its edges must not cross.
    pub polygon: Vec<[f64; 2]>,
    #[serde(default)]
    pub units: Units,
    /// Labels it counts; none: every label.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Seconds an object must stay inside for a `dwell` event (once per visit).
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub dwell_s: Option<f64>,
}

/// Which side of a directed line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Left,
    Right,
}

/// A counting line from `from` to `to`. Crossing it onto the side named by `in` is `in`; the
/// other way is `out`. Sides are as seen on the screen walking from `from` to `to` (with
/// `from: [0, 100], to: [640, 100]`, `right` is below the line).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// One token, unique among the camera's zones and lines.
    pub id: String,
    pub from: [f64; 2],
    pub to: [f64; 2],
    #[serde(default)]
    pub units: Units,
    /// The side that counts as `in`.
    #[serde(rename = "in")]
    pub in_side: Side,
    /// Labels it counts; none: every label.
    #[serde(default)]
    pub labels: Vec<String>,
}
