//! A replay's detections against the stored ones, frame by frame (each frame judged by
//! [`panoptes_contracts::agreement`]), summed up per label, with the frames that differ.

use std::collections::{BTreeMap, BTreeSet};

pub use panoptes_contracts::agreement::{DEFAULT_IOU, FrameDiff, TextChange, compare_frame};
use panoptes_contracts::detection::{Detection, DetectionMessage};
use serde::Serialize;

/// Detection messages by the frame (camera, seq) they are about.
pub type ByFrame = BTreeMap<(String, u64), Vec<DetectionMessage>>;

/// Everything a replay compared.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    /// Frames replayed.
    pub frames: u64,
    /// Frames compared (replayed, with stored results).
    pub compared: u64,
    /// Compared frames whose detections agree.
    pub agreeing: u64,
    /// Frames replayed without stored results (the live pipeline dropped or did not reach
    /// them): not compared.
    pub without_stored_result: u64,
    /// Compared frames the replay gave no result for.
    pub without_result: u64,
    pub lost_by_label: BTreeMap<String, u64>,
    pub added_by_label: BTreeMap<String, u64>,
    pub text_changes: u64,
    /// Distinct track IDs in the stored and the replayed detections, per camera summed.
    pub tracks_before: u64,
    pub tracks_after: u64,
    /// Median time from handing a frame to the stages to its first result, ms.
    pub ms_per_frame_p50: Option<f64>,
    /// Frames replayed per second, wall clock.
    pub frames_per_s: f64,
    /// The frames that differ, in replay order.
    pub differing: Vec<FrameDiff>,
}

fn detections_of(messages: &[DetectionMessage]) -> Vec<Detection> {
    messages
        .iter()
        .flat_map(|m| m.detections.iter().cloned())
        .collect()
}

fn tracks(messages: &ByFrame) -> u64 {
    let ids: BTreeSet<(&str, u64)> = messages
        .iter()
        .flat_map(|((camera, _), ms)| {
            ms.iter()
                .flat_map(|m| &m.detections)
                .filter_map(|d| d.track.map(|t| (camera.as_str(), t.track_id)))
        })
        .collect();
    ids.len() as u64
}

impl Comparison {
    /// Compares the frames `replayed` (camera and seq, in replay order) by their stored and
    /// replayed detection messages.
    pub fn of(replayed: &[(String, u64)], stored: &ByFrame, after: &ByFrame, iou_min: f32) -> Self {
        let mut c = Comparison {
            frames: replayed.len() as u64,
            ..Comparison::default()
        };
        let mut stored_seen = BTreeMap::new();
        let mut after_seen = BTreeMap::new();
        for key in replayed {
            let Some(before) = stored.get(key) else {
                c.without_stored_result += 1;
                continue;
            };
            c.compared += 1;
            stored_seen.insert(key.clone(), before.clone());
            let diff = match after.get(key) {
                Some(now) => {
                    after_seen.insert(key.clone(), now.clone());
                    compare_frame(
                        &key.0,
                        key.1,
                        &detections_of(before),
                        &detections_of(now),
                        iou_min,
                    )
                }
                None => {
                    c.without_result += 1;
                    FrameDiff {
                        camera: key.0.clone(),
                        seq: key.1,
                        lost: detections_of(before),
                        no_result: true,
                        ..FrameDiff::default()
                    }
                }
            };
            for d in &diff.lost {
                *c.lost_by_label.entry(d.label.clone()).or_default() += 1;
            }
            for d in &diff.added {
                *c.added_by_label.entry(d.label.clone()).or_default() += 1;
            }
            c.text_changes += diff.text_changes.len() as u64;
            if diff.agrees() {
                c.agreeing += 1;
            } else {
                c.differing.push(diff);
            }
        }
        c.tracks_before = tracks(&stored_seen);
        c.tracks_after = tracks(&after_seen);
        c
    }

    /// Compared frames that agree, of all compared (1 when nothing was compared).
    pub fn agreement(&self) -> f64 {
        if self.compared == 0 {
            1.0
        } else {
            self.agreeing as f64 / self.compared as f64
        }
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "replayed {} frames ({:.1} frames/s{}); compared {}: agreement {:.3} ({} agree, {} differ)",
            self.frames,
            self.frames_per_s,
            self.ms_per_frame_p50
                .map(|ms| format!(", {ms:.1} ms per frame p50"))
                .unwrap_or_default(),
            self.compared,
            self.agreement(),
            self.agreeing,
            self.differing.len()
        )?;
        if self.without_stored_result > 0 {
            writeln!(
                f,
                "  {} frames had no stored result (not compared)",
                self.without_stored_result
            )?;
        }
        if self.without_result > 0 {
            writeln!(
                f,
                "  {} frames gave no result in the replay",
                self.without_result
            )?;
        }
        let labels: BTreeSet<&String> = self
            .lost_by_label
            .keys()
            .chain(self.added_by_label.keys())
            .collect();
        for label in labels {
            writeln!(
                f,
                "  {label}: {} lost, {} added",
                self.lost_by_label.get(label).copied().unwrap_or(0),
                self.added_by_label.get(label).copied().unwrap_or(0)
            )?;
        }
        writeln!(f, "  text changes: {}", self.text_changes)?;
        write!(
            f,
            "  tracks: {} stored, {} in the replay",
            self.tracks_before, self.tracks_after
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, x: f32, text: Option<&str>) -> Detection {
        Detection {
            bbox: [x, 10.0, x + 40.0, 30.0],
            polygon: None,
            label: label.into(),
            score: 0.9,
            text: text.map(str::to_owned),
            track: None,
        }
    }

    #[test]
    fn the_summary_counts_per_label_and_skips_frames_without_a_stored_result() {
        let message = |seq, ds: Vec<Detection>| DetectionMessage {
            schema: "detections/v1.1".into(),
            camera: "c".into(),
            seq,
            capture_ts_ns: 0,
            published_ts_ns: 0,
            width: 640,
            height: 480,
            pipeline: "p".into(),
            model: None,
            detections: ds,
        };
        let replayed: Vec<(String, u64)> = (0..4).map(|s| ("c".to_owned(), s)).collect();
        let stored = BTreeMap::from([
            (
                ("c".into(), 0),
                vec![message(0, vec![det("text", 0.0, None)])],
            ),
            (
                ("c".into(), 1),
                vec![message(1, vec![det("text", 0.0, None)])],
            ),
            (("c".into(), 2), vec![message(2, vec![])]),
        ]);
        let after = BTreeMap::from([
            (
                ("c".into(), 0),
                vec![message(0, vec![det("text", 0.0, None)])],
            ),
            (("c".into(), 1), vec![message(1, vec![])]),
            (
                ("c".into(), 3),
                vec![message(3, vec![det("text", 0.0, None)])],
            ),
        ]);
        let c = Comparison::of(&replayed, &stored, &after, DEFAULT_IOU);
        assert_eq!((c.frames, c.compared, c.agreeing), (4, 3, 1));
        assert_eq!((c.without_stored_result, c.without_result), (1, 1));
        assert_eq!(c.lost_by_label.get("text"), Some(&1));
        assert_eq!(
            c.differing
                .iter()
                .map(|d| (d.seq, d.no_result))
                .collect::<Vec<_>>(),
            [(1, false), (2, true)]
        );
        assert!((c.agreement() - 1.0 / 3.0).abs() < 1e-9);
        assert!(c.to_string().contains("agreement 0.333"), "{c}");
    }
}
