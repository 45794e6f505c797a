//! A camera's zones and lines in frame pixels, from its topology config.

use panoptes_topology::geometry::Point;
use panoptes_topology::{CameraConfig, Side, Units};

/// A zone in pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    pub id: String,
    pub polygon: Vec<Point>,
    /// Labels it counts; empty: all.
    pub labels: Vec<String>,
    pub dwell_ms: Option<u64>,
}

/// A line in pixels; crossing onto `in_side` is `in`.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub id: String,
    pub from: Point,
    pub to: Point,
    pub in_side: Side,
    pub labels: Vec<String>,
}

/// Everything a camera's analytics tests tracks against.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    pub zones: Vec<Zone>,
    pub lines: Vec<Line>,
}

pub(crate) fn counts(labels: &[String], label: &str) -> bool {
    labels.is_empty() || labels.iter().any(|l| l == label)
}

impl Zone {
    pub fn counts(&self, label: &str) -> bool {
        counts(&self.labels, label)
    }
}

impl Line {
    pub fn counts(&self, label: &str) -> bool {
        counts(&self.labels, label)
    }
}

impl Rules {
    /// `camera`'s zones and lines for frames of `width` × `height` (normalised coordinates
    /// scale to it; pixels are taken as they are).
    pub fn of_camera(camera: &CameraConfig, width: u32, height: u32) -> Self {
        let scale = |units: Units, p: [f64; 2]| match units {
            Units::Pixels => p,
            Units::Normalized => [p[0] * f64::from(width), p[1] * f64::from(height)],
        };
        Self {
            zones: camera
                .zones
                .iter()
                .map(|z| Zone {
                    id: z.id.clone(),
                    polygon: z.polygon.iter().map(|&p| scale(z.units, p)).collect(),
                    labels: z.labels.clone(),
                    dwell_ms: z.dwell_s.map(|s| (s.max(0.0) * 1000.0).round() as u64),
                })
                .collect(),
            lines: camera
                .lines
                .iter()
                .map(|l| Line {
                    id: l.id.clone(),
                    from: scale(l.units, l.from),
                    to: scale(l.units, l.to),
                    in_side: l.in_side,
                    labels: l.labels.clone(),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.lines.is_empty()
    }
}
