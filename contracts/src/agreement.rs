//! Whether two sets of detections of one frame agree: boxes of the same label matched
//! greedily by IoU (best pairs first), text compared on matched boxes; what is left over was
//! lost (in the first set, not the second) or added. Scores are not compared: a change of score
//! that moves no box is not a change users act on. Replay and shadow stages both judge by it.

use serde::{Deserialize, Serialize};

use crate::detection::Detection;

/// The overlap two boxes need to be the same object.
pub const DEFAULT_IOU: f32 = 0.5;

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Recognised text that changed on a box found in both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextChange {
    pub label: String,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub before: Option<String>,
    pub after: Option<String>,
}

/// How one frame's detections differ.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameDiff {
    pub camera: String,
    pub seq: u64,
    /// In `before` (stored, live), not found in `after` (replay, candidate).
    pub lost: Vec<Detection>,
    /// In `after`, not in `before`.
    pub added: Vec<Detection>,
    pub text_changes: Vec<TextChange>,
    /// `after` gave no result for this frame (it failed or timed out).
    #[serde(default)]
    pub no_result: bool,
}

impl FrameDiff {
    pub fn agrees(&self) -> bool {
        self.lost.is_empty()
            && self.added.is_empty()
            && self.text_changes.is_empty()
            && !self.no_result
    }
}

/// Compares one frame's detections `before` (stored, or the live stage's) with `after` (a
/// replay's, or a candidate's).
pub fn compare_frame(
    camera: &str,
    seq: u64,
    before: &[Detection],
    after: &[Detection],
    iou_min: f32,
) -> FrameDiff {
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (i, b) in before.iter().enumerate() {
        for (j, a) in after.iter().enumerate() {
            if a.label == b.label {
                let o = iou(&b.bbox, &a.bbox);
                if o >= iou_min {
                    pairs.push((o, i, j));
                }
            }
        }
    }
    pairs.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
    let (mut used_b, mut used_a) = (vec![false; before.len()], vec![false; after.len()]);
    let mut diff = FrameDiff {
        camera: camera.to_owned(),
        seq,
        ..FrameDiff::default()
    };
    for (_, i, j) in pairs {
        if used_b[i] || used_a[j] {
            continue;
        }
        used_b[i] = true;
        used_a[j] = true;
        if before[i].text != after[j].text {
            diff.text_changes.push(TextChange {
                label: before[i].label.clone(),
                bbox: before[i].bbox,
                before: before[i].text.clone(),
                after: after[j].text.clone(),
            });
        }
    }
    diff.lost = unmatched(before, &used_b);
    diff.added = unmatched(after, &used_a);
    diff
}

/// The detections of `all` not marked `used`.
fn unmatched(all: &[Detection], used: &[bool]) -> Vec<Detection> {
    all.iter()
        .zip(used)
        .filter(|(_, u)| !**u)
        .map(|(d, _)| d.clone())
        .collect()
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
    fn the_same_boxes_agree_and_moved_or_relabelled_ones_do_not() {
        let before = [det("text", 0.0, Some("GATE 7")), det("text", 100.0, None)];
        let same = [det("text", 101.0, None), det("text", 1.0, Some("GATE 7"))];
        assert!(compare_frame("c", 1, &before, &same, DEFAULT_IOU).agrees());

        let after = [
            det("text", 1.0, Some("GATE7")),
            det("plate", 100.0, None),
            det("text", 300.0, None),
        ];
        let d = compare_frame("c", 1, &before, &after, DEFAULT_IOU);
        assert_eq!(d.text_changes.len(), 1);
        assert_eq!(d.text_changes[0].after.as_deref(), Some("GATE7"));
        assert_eq!(d.lost.len(), 1);
        assert_eq!(d.lost[0].bbox[0], 100.0);
        assert_eq!(
            d.added
                .iter()
                .map(|a| (a.label.as_str(), a.bbox[0]))
                .collect::<Vec<_>>(),
            [("plate", 100.0), ("text", 300.0)]
        );
    }
}
