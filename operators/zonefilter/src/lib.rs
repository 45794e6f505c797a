//! Zone filter: keeps detections scoring at least `min_score`, with one of `labels`, whose
//! anchor point (bottom centre or centre) lies in one of `zones`, and relabels them by zone
//! (`relabel: "{zone}/{label}"`). The same operator and config as
//! `operators/python/examples/zone_filter.py` and `operators/js/examples/zone_filter.js`, so
//! the three languages can be compared call for call (`stages/wasm/benches/languages.rs`).
//! Invariant: detections it keeps are passed on unchanged apart from the label.

use panoptes_operator_sdk::{Detection, Error, Frame, Input, Operator, Output};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// Where an object stands: the middle of the box's lower edge.
    #[default]
    BottomCenter,
    Center,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Units {
    #[default]
    Pixels,
    Normalized,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub id: String,
    pub polygon: Vec<[f32; 2]>,
    #[serde(default)]
    pub units: Units,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub min_score: f32,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    #[serde(default)]
    pub anchor: Anchor,
    #[serde(default)]
    pub zones: Vec<Zone>,
    #[serde(default)]
    pub relabel: Option<String>,
}

/// Even-odd rule: whether `(x, y)` lies in `polygon`.
pub fn inside(x: f32, y: f32, polygon: &[[f32; 2]]) -> bool {
    let mut hit = false;
    let n = polygon.len();
    for i in 0..n {
        let ([x1, y1], [x2, y2]) = (polygon[i], polygon[(i + 1) % n]);
        if (y1 > y) != (y2 > y) && x < (x2 - x1) * (y - y1) / (y2 - y1) + x1 {
            hit = !hit;
        }
    }
    hit
}

pub struct ZoneFilter {
    config: Config,
}

impl ZoneFilter {
    fn zone_of(&self, d: &Detection, width: f32, height: f32) -> Option<&str> {
        let x = (d.x1 + d.x2) / 2.0;
        let y = match self.config.anchor {
            Anchor::BottomCenter => d.y2,
            Anchor::Center => (d.y1 + d.y2) / 2.0,
        };
        self.config.zones.iter().find_map(|z| {
            let (px, py) = match z.units {
                Units::Normalized => (x / width, y / height),
                Units::Pixels => (x, y),
            };
            inside(px, py, &z.polygon).then_some(z.id.as_str())
        })
    }
}

impl Operator for ZoneFilter {
    fn init(config: &str) -> Result<Self, Error> {
        let config: Config = panoptes_operator_sdk::config(config)?;
        if let Some(z) = config.zones.iter().find(|z| z.polygon.len() < 3) {
            return Err(Error::InvalidConfig(format!(
                "zone {:?} needs at least 3 corners",
                z.id
            )));
        }
        Ok(Self { config })
    }

    fn process(&mut self, frame: &Frame, input: Input) -> Result<Output, Error> {
        let Input::Detections(detections) = input else {
            return Err(Error::InvalidInput(
                "zonefilter takes detections: put it after a postprocess stage".into(),
            ));
        };
        let (width, height) = (frame.width().max(1) as f32, frame.height().max(1) as f32);
        let mut kept = Vec::with_capacity(detections.len());
        for mut d in detections {
            if d.score < self.config.min_score {
                continue;
            }
            if let Some(labels) = &self.config.labels
                && !labels.contains(&d.label)
            {
                continue;
            }
            let zone = if self.config.zones.is_empty() {
                ""
            } else {
                match self.zone_of(&d, width, height) {
                    Some(zone) => zone,
                    None => continue,
                }
            };
            if let Some(template) = &self.config.relabel {
                d.label = template
                    .replace("{zone}", zone)
                    .replace("{label}", &d.label);
            }
            kept.push(d);
        }
        Ok(Output::Detections(kept))
    }
}

panoptes_operator_sdk::export_operator!(ZoneFilter, accepts: []);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_inside_and_outside_a_square() {
        let square = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        assert!(inside(0.5, 0.5, &square));
        assert!(!inside(1.5, 0.5, &square));
        assert!(!inside(0.5, -0.1, &square));
    }
}
