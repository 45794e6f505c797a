//! YOLO-family detector outputs: decoding the v5, v8 and YOLOX layouts into boxes, and
//! non-maximum suppression.
//!
//! | layout  | output tensor     | per anchor                                                       |
//! |---------|-------------------|------------------------------------------------------------------|
//! | `v5`    | `[1, N, 5 + C]`   | cx, cy, w, h (input pixels), objectness, C class scores          |
//! | `v8`    | `[1, 4 + C, N]`   | cx, cy, w, h (input pixels), C class scores (no objectness)      |
//! | `yolox` | `[1, N, 5 + C]`   | raw grid offsets x, y, log w, log h, objectness, C class scores  |
//!
//! v8 is strictly channels first: a tensor with more channels than anchors is refused rather
//! than misread (transpose `[1, N, 4 + C]` exports in the graph). The leading batch dimension
//! must be 1 (the model stage splits batches per item); it may also be left out.
//!
//! Scores are used as the model gives them (the exporters of these families apply the sigmoid
//! in the graph): `score = objectness × class score` (v8: the class score), taking the best
//! class of each anchor. YOLOX anchors are ordered stride by stride, row-major within each
//! stride: `cx = (x + gx) · s`, `cy = (y + gy) · s`, `w = exp(log w) · s`, `h = exp(log h) · s`.
//!
//! Anchors whose score is not strictly above `conf_threshold`, or whose box or score is not
//! finite, are dropped. [`nms`] keeps boxes greedily by descending score and suppresses those
//! overlapping a kept box of the same class (of any class when class-agnostic) by an IoU
//! strictly above `iou_threshold`. [`YoloStage`] maps boxes to the original frame, clamps them
//! and drops those entirely outside it (letterbox padding) before NMS, so `max_detections`
//! counts only boxes in the frame.

use panoptes_contracts::detection::Detection;
use panoptes_contracts::stage::{Item, Payload, Stage, StageError};
use panoptes_contracts::tensor::Tensor;
use serde::Deserialize;

use crate::common::{self, InputError};

/// Which member of the YOLO family produced the tensor (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YoloLayout {
    V5,
    V8,
    Yolox,
}

impl YoloLayout {
    fn name(self) -> &'static str {
        match self {
            Self::V5 => "v5",
            Self::V8 => "v8",
            Self::Yolox => "yolox",
        }
    }
}

/// `params:` of a `postprocessor: yolo` stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YoloParams {
    pub layout: YoloLayout,
    /// Anchors scoring strictly above this are candidates.
    #[serde(default = "default_conf")]
    pub conf_threshold: f32,
    /// NMS suppresses boxes overlapping a kept one by an IoU strictly above this.
    #[serde(default = "default_iou")]
    pub iou_threshold: f32,
    /// At most this many boxes per frame, highest scores first.
    #[serde(default = "default_max_detections")]
    pub max_detections: usize,
    /// NMS across classes instead of per class.
    #[serde(default)]
    pub class_agnostic: bool,
    /// YOLOX only: the strides of the output grids, in output order (default `[8, 16, 32]`).
    #[serde(default)]
    pub strides: Option<Vec<u32>>,
    /// YOLOX only: the model's input size `[width, height]`; when absent, a square input is
    /// inferred from the number of anchors.
    #[serde(default)]
    pub input: Option<[u32; 2]>,
}

fn default_conf() -> f32 {
    0.25
}
fn default_iou() -> f32 {
    0.45
}
fn default_max_detections() -> usize {
    300
}

const DEFAULT_STRIDES: [u32; 3] = [8, 16, 32];
/// Inferring a YOLOX input size gives up beyond this side (set `input` for larger models).
const MAX_INFERRED_SIDE: u32 = 1 << 15;

impl YoloParams {
    /// Defaults for `layout`.
    pub fn new(layout: YoloLayout) -> Self {
        Self {
            layout,
            conf_threshold: default_conf(),
            iou_threshold: default_iou(),
            max_detections: default_max_detections(),
            class_agnostic: false,
            strides: None,
            input: None,
        }
    }

    pub fn validate(&self) -> Result<(), YoloError> {
        let bad = |m: &str| Err(YoloError::Params(m.to_owned()));
        if !self.conf_threshold.is_finite() {
            return bad("conf_threshold must be finite");
        }
        if !(0.0..=1.0).contains(&self.iou_threshold) {
            return bad("iou_threshold must be within 0..=1");
        }
        if self.max_detections == 0 {
            return bad("max_detections must be at least 1");
        }
        if self.layout != YoloLayout::Yolox && (self.strides.is_some() || self.input.is_some()) {
            return bad("strides and input only apply to layout yolox");
        }
        if let Some(s) = &self.strides
            && (s.is_empty() || s.contains(&0))
        {
            return bad("strides must be a non-empty list of positive numbers");
        }
        if let Some([w, h]) = self.input
            && (w == 0 || h == 0)
        {
            return bad("input [w, h] must be positive");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum YoloError {
    #[error("{0}")]
    Params(String),
    #[error("the yolo {layout} layout needs a {expected} tensor, got shape {shape:?}")]
    Shape {
        layout: &'static str,
        expected: &'static str,
        shape: Vec<usize>,
    },
    #[error(
        "the YOLOX output has {anchors} anchors, which fits no square input with strides \
         {strides:?}; set params.input to the model's [width, height]"
    )]
    NoInputSize { anchors: usize, strides: Vec<u32> },
    #[error(
        "the YOLOX output has {anchors} anchors, but a {width}x{height} input with strides \
         {strides:?} gives {expected}"
    )]
    AnchorCount {
        anchors: usize,
        width: u32,
        height: u32,
        strides: Vec<u32>,
        expected: u64,
    },
    #[error(transparent)]
    Input(#[from] InputError),
}

/// One box in the model's input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YoloBox {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    pub class: usize,
    pub score: f32,
}

/// Decodes one layout's output tensors into candidate boxes.
#[derive(Debug, Clone)]
pub struct YoloDecoder {
    params: YoloParams,
    strides: Vec<u32>,
}

impl YoloDecoder {
    pub fn new(params: YoloParams) -> Result<Self, YoloError> {
        params.validate()?;
        let strides = params
            .strides
            .clone()
            .unwrap_or_else(|| DEFAULT_STRIDES.to_vec());
        Ok(Self { params, strides })
    }

    pub fn params(&self) -> &YoloParams {
        &self.params
    }

    /// Every anchor scoring above `conf_threshold`, in anchor order, in model-input pixels
    /// (before NMS).
    pub fn decode(&self, tensor: &Tensor) -> Result<Vec<YoloBox>, YoloError> {
        common::check_len(tensor)?;
        let layout = self.params.layout;
        let shape_error = |expected| YoloError::Shape {
            layout: layout.name(),
            expected,
            shape: tensor.shape.clone(),
        };
        let (anchors, width) = match tensor.shape.as_slice() {
            [1, a, b] | [a, b] => (*a, *b),
            _ => {
                return Err(shape_error(match layout {
                    YoloLayout::V8 => "[1, 4 + classes, anchors]",
                    _ => "[1, anchors, 5 + classes]",
                }));
            }
        };
        let data = tensor.data.as_slice();
        let conf = self.params.conf_threshold;
        match layout {
            YoloLayout::V5 => {
                if width < 6 {
                    return Err(shape_error("[1, anchors, 5 + classes]"));
                }
                Ok(
                    rows_with_objectness(data, width, |_, r| centre_box(r[0], r[1], r[2], r[3]))
                        .filter(|b| b.score > conf)
                        .collect(),
                )
            }
            YoloLayout::Yolox => {
                if width < 6 {
                    return Err(shape_error("[1, anchors, 5 + classes]"));
                }
                let grid = self.grid(anchors)?;
                Ok(rows_with_objectness(data, width, |i, r| {
                    // `grid` has exactly one cell per row.
                    let (gx, gy, s) = grid.get(i).copied().unwrap_or((0, 0, 0));
                    let s = s as f32;
                    centre_box(
                        (r[0] + gx as f32) * s,
                        (r[1] + gy as f32) * s,
                        r[2].exp() * s,
                        r[3].exp() * s,
                    )
                })
                .filter(|b| b.score > conf)
                .collect())
            }
            YoloLayout::V8 => {
                // Channels first: [4 + C, N]; `anchors` is 4 + C here.
                let (channels, n) = (anchors, width);
                if channels < 5 {
                    return Err(shape_error("[1, 4 + classes, anchors]"));
                }
                // Detectors have far more anchors than classes: more channels than anchors means
                // the tensor is [1, anchors, 4 + classes], which would be misread.
                if channels > n {
                    return Err(shape_error(
                        "[1, 4 + classes, anchors] (channels first, not [1, anchors, 4 + classes])",
                    ));
                }
                Ok(decode_v8(data, channels, n, conf))
            }
        }
    }

    /// The grid cell `(gx, gy, stride)` of each YOLOX anchor.
    fn grid(&self, anchors: usize) -> Result<Vec<(u32, u32, u32)>, YoloError> {
        let strides = &self.strides;
        let cells = |w: u32, h: u32| -> u64 {
            strides
                .iter()
                .map(|&s| u64::from(w / s) * u64::from(h / s))
                .sum()
        };
        let (w, h) = match self.params.input {
            Some([w, h]) => {
                let expected = cells(w, h);
                if expected != anchors as u64 {
                    return Err(YoloError::AnchorCount {
                        anchors,
                        width: w,
                        height: h,
                        strides: strides.clone(),
                        expected,
                    });
                }
                (w, h)
            }
            None => {
                // The smallest square side whose grids hold exactly `anchors` cells. The count
                // grows with the side, so stop once it passes `anchors`.
                let mut side = 1u32;
                loop {
                    let n = cells(side, side);
                    if n == anchors as u64 {
                        break (side, side);
                    }
                    if n > anchors as u64 || side >= MAX_INFERRED_SIDE {
                        return Err(YoloError::NoInputSize {
                            anchors,
                            strides: strides.clone(),
                        });
                    }
                    side += 1;
                }
            }
        };
        let mut grid = Vec::with_capacity(anchors);
        for &s in strides {
            for gy in 0..h / s {
                for gx in 0..w / s {
                    grid.push((gx, gy, s));
                }
            }
        }
        Ok(grid)
    }
}

fn centre_box(cx: f32, cy: f32, w: f32, h: f32) -> [f32; 4] {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

/// The best class of `scores` and its score; `None` when no score is a number.
fn best_class(scores: impl Iterator<Item = f32>) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for (c, v) in scores.enumerate() {
        // Never true for NaN, nor for -inf.
        if v > best.map_or(f32::NEG_INFINITY, |b| b.1) {
            best = Some((c, v));
        }
    }
    best
}

/// Rows `[4 box values, objectness, C class scores]` (v5, YOLOX) as boxes, whatever their score;
/// `to_box(row index, row)` decodes the box. Rows with non-finite values are skipped.
fn rows_with_objectness<'a>(
    data: &'a [f32],
    width: usize,
    to_box: impl Fn(usize, &[f32]) -> [f32; 4] + 'a,
) -> impl Iterator<Item = YoloBox> + 'a {
    data.chunks_exact(width)
        .enumerate()
        .filter_map(move |(i, row)| {
            let obj = *row.get(4)?;
            let (class, cls) = best_class(row.get(5..)?.iter().copied())?;
            let score = obj * cls;
            let bbox = to_box(i, row);
            (score.is_finite() && bbox.iter().all(|v| v.is_finite())).then_some(YoloBox {
                bbox,
                class,
                score,
            })
        })
}

/// v8's `[4 + C, N]`: classes are scanned channel by channel (contiguous memory), keeping each
/// anchor's best.
fn decode_v8(data: &[f32], channels: usize, n: usize, conf: f32) -> Vec<YoloBox> {
    let mut best: Vec<Option<(usize, f32)>> = vec![None; n];
    for (c, plane) in data
        .chunks_exact(n.max(1))
        .enumerate()
        .skip(4)
        .take(channels - 4)
    {
        for (b, &v) in best.iter_mut().zip(plane) {
            if v > b.map_or(f32::NEG_INFINITY, |b| b.1) {
                *b = Some((c - 4, v));
            }
        }
    }
    let at = |c: usize, i: usize| data.get(c * n + i).copied().unwrap_or(f32::NAN);
    best.iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let (class, score) = (*b)?;
            let bbox = centre_box(at(0, i), at(1, i), at(2, i), at(3, i));
            (score > conf && score.is_finite() && bbox.iter().all(|v| v.is_finite()))
                .then_some(YoloBox { bbox, class, score })
        })
        .collect()
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes; 0 when the union is empty.
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let area = |b: [f32; 4]| (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
    let inter = area([
        a[0].max(b[0]),
        a[1].max(b[1]),
        a[2].min(b[2]),
        a[3].min(b[3]),
    ]);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Greedy NMS: boxes by descending score (ties keep their order), each kept unless it overlaps
/// an already kept box (of its class, or any class when `agnostic`) by an IoU above
/// `iou_threshold`; stops at `max` kept boxes.
pub fn nms(
    mut boxes: Vec<YoloBox>,
    iou_threshold: f32,
    max: usize,
    agnostic: bool,
) -> Vec<YoloBox> {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<YoloBox> = Vec::new();
    for b in boxes {
        if kept.len() >= max {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| (agnostic || k.class == b.class) && iou(k.bbox, b.bbox) > iou_threshold);
        if !suppressed {
            kept.push(b);
        }
    }
    kept
}

/// The yolo postprocessor as a pipeline stage: boxes in original-frame pixels, NMS applied
/// there (after boxes entirely in letterbox padding are dropped and the rest clamped).
pub struct YoloStage {
    id: String,
    decoder: YoloDecoder,
    labels: Option<Vec<String>>,
    label: Option<String>,
}

impl YoloStage {
    /// `labels[i]` names class `i` (classes without one are named by their number); `label`,
    /// when given, replaces the class name on every detection.
    pub fn new(
        id: &str,
        params: YoloParams,
        labels: Option<Vec<String>>,
        label: Option<String>,
    ) -> Result<Self, YoloError> {
        Ok(Self {
            id: id.to_owned(),
            decoder: YoloDecoder::new(params)?,
            labels,
            label,
        })
    }

    /// Boxes of `tensor` in the frame of `item`, after NMS.
    fn detect(&self, item: &Item, tensor: &Tensor) -> Result<Vec<Detection>, YoloError> {
        let candidates: Vec<YoloBox> = self
            .decoder
            .decode(tensor)?
            .into_iter()
            .filter_map(|b| {
                let bbox = common::to_frame_box(&item.transform, &item.frame, b.bbox)?;
                Some(YoloBox { bbox, ..b })
            })
            .collect();
        let p = self.decoder.params();
        let kept = nms(
            candidates,
            p.iou_threshold,
            p.max_detections,
            p.class_agnostic,
        );
        Ok(kept
            .into_iter()
            .map(|b| Detection {
                bbox: b.bbox,
                polygon: None,
                label: self
                    .label
                    .clone()
                    .unwrap_or_else(|| common::class_label(self.labels.as_deref(), b.class)),
                score: b.score,
                text: None,
                track: None,
            })
            .collect())
    }
}

impl Stage for YoloStage {
    fn id(&self) -> &str {
        &self.id
    }

    fn process(&mut self, mut item: Item) -> Result<Item, StageError> {
        let tensor = common::tensor(&item.payload)?;
        let detections = self
            .detect(&item, tensor)
            .map_err(|e| StageError::InvalidInput(e.to_string()))?;
        item.payload = Payload::Detections(detections);
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::{detections, item};
    use panoptes_contracts::tensor::Transform;

    fn params(layout: YoloLayout) -> YoloParams {
        YoloParams::new(layout)
    }

    fn stage(p: YoloParams, labels: &[&str]) -> YoloStage {
        let labels = labels.iter().map(|s| s.to_string()).collect();
        YoloStage::new("det", p, Some(labels), None).expect("stage")
    }

    fn run(stage: &mut YoloStage, t: Tensor, transform: Transform) -> Vec<Detection> {
        detections(
            stage
                .process(item(t, 640, 480, transform))
                .expect("process"),
        )
    }

    /// v5 rows `[cx, cy, w, h, obj, cls...]`.
    fn v5(rows: &[[f32; 7]]) -> Tensor {
        Tensor::new(vec![1, rows.len(), 7], rows.concat()).expect("shape")
    }

    /// The same anchors in v8's channels-first layout (objectness folded into the scores), plus
    /// empty anchors so there are more anchors than channels.
    fn v8(rows: &[[f32; 7]]) -> Tensor {
        let n = rows.len() + 8;
        let mut data = vec![0.0; 6 * n];
        for (i, r) in rows.iter().enumerate() {
            for c in 0..4 {
                data[c * n + i] = r[c];
            }
            for c in 0..2 {
                data[(4 + c) * n + i] = r[4] * r[5 + c];
            }
        }
        Tensor::new(vec![1, 6, n], data).expect("shape")
    }

    /// Two overlapping class-0 boxes (IoU 0.6), a class-1 box overlapping the first, one far
    /// away, and one below the threshold.
    const ROWS: [[f32; 7]; 5] = [
        [100.0, 100.0, 100.0, 100.0, 1.0, 0.9, 0.1], // A: class 0, 0.9
        [120.0, 100.0, 100.0, 100.0, 1.0, 0.8, 0.1], // B: class 0, 0.8, IoU(A) = 80/120 = 0.667
        [110.0, 100.0, 100.0, 100.0, 0.5, 0.2, 1.4], // C: class 1, 0.7, IoU(A) = 90/110 = 0.818
        [400.0, 300.0, 40.0, 20.0, 0.5, 1.0, 0.0],   // D: class 0, 0.5
        [300.0, 300.0, 40.0, 20.0, 0.2, 1.0, 0.0],   // E: 0.2, under 0.25
    ];

    fn summary(d: &[Detection]) -> Vec<([f32; 4], String, f32)> {
        d.iter()
            .map(|d| (d.bbox, d.label.clone(), (d.score * 1000.0).round() / 1000.0))
            .collect()
    }

    #[test]
    fn v5_and_v8_give_the_same_exact_boxes() {
        let want = vec![
            ([50.0, 50.0, 150.0, 150.0], "cat".to_owned(), 0.9),
            ([60.0, 50.0, 160.0, 150.0], "dog".to_owned(), 0.7),
            ([380.0, 290.0, 420.0, 310.0], "cat".to_owned(), 0.5),
        ];
        let mut s5 = stage(params(YoloLayout::V5), &["cat", "dog"]);
        assert_eq!(summary(&run(&mut s5, v5(&ROWS), Transform::IDENTITY)), want);
        let mut s8 = stage(params(YoloLayout::V8), &["cat", "dog"]);
        assert_eq!(summary(&run(&mut s8, v8(&ROWS), Transform::IDENTITY)), want);
    }

    #[test]
    fn agnostic_nms_suppresses_across_classes() {
        let p = YoloParams {
            class_agnostic: true,
            ..params(YoloLayout::V5)
        };
        let d = run(&mut stage(p, &["cat"]), v5(&ROWS), Transform::IDENTITY);
        // C (class 1) now goes with B; the unlabelled class 1 would have been named "1".
        assert_eq!(
            summary(&d),
            vec![
                ([50.0, 50.0, 150.0, 150.0], "cat".to_owned(), 0.9),
                ([380.0, 290.0, 420.0, 310.0], "cat".to_owned(), 0.5),
            ]
        );
    }

    #[test]
    fn thresholds_and_max_detections() {
        let p = YoloParams {
            conf_threshold: 0.1,
            iou_threshold: 0.7,
            max_detections: 3,
            ..params(YoloLayout::V5)
        };
        let d = run(&mut stage(p, &[]), v5(&ROWS), Transform::IDENTITY);
        // B survives an IoU threshold of 0.7; E passes 0.1 but max_detections cuts it (and D).
        assert_eq!(
            summary(&d),
            vec![
                ([50.0, 50.0, 150.0, 150.0], "0".to_owned(), 0.9),
                ([70.0, 50.0, 170.0, 150.0], "0".to_owned(), 0.8),
                ([60.0, 50.0, 160.0, 150.0], "1".to_owned(), 0.7),
            ]
        );
        let p = YoloParams {
            conf_threshold: 0.6,
            ..params(YoloLayout::V8)
        };
        let d = run(&mut stage(p, &[]), v8(&ROWS), Transform::IDENTITY);
        assert_eq!(d.len(), 2, "{d:?}");
    }

    #[test]
    fn boxes_map_back_to_the_frame_and_padding_boxes_are_dropped() {
        // A 640x480 frame letterboxed into 320x320: scale 0.5, the frame fills rows 0..240.
        let t = Transform {
            scale_x: 0.5,
            scale_y: 0.5,
            offset_x: 0.0,
            offset_y: 0.0,
        };
        let rows = [
            [50.0, 50.0, 20.0, 40.0, 1.0, 0.9, 0.0],   // inside
            [310.0, 230.0, 40.0, 40.0, 1.0, 0.8, 0.0], // crosses the frame's corner: clamped
            [100.0, 280.0, 40.0, 40.0, 1.0, 0.7, 0.0], // in the padding: dropped
        ];
        let d = run(&mut stage(params(YoloLayout::V5), &[]), v5(&rows), t);
        assert_eq!(
            summary(&d),
            vec![
                ([80.0, 60.0, 120.0, 140.0], "0".to_owned(), 0.9),
                ([580.0, 420.0, 640.0, 480.0], "0".to_owned(), 0.8),
            ]
        );
    }

    #[test]
    fn label_replaces_class_names() {
        let mut s = YoloStage::new("d", params(YoloLayout::V5), None, Some("object".to_owned()))
            .expect("stage");
        let d = run(&mut s, v5(&ROWS), Transform::IDENTITY);
        assert!(d.iter().all(|d| d.label == "object"), "{d:?}");
    }

    /// YOLOX rows for a 64x64 input with strides 8/16/32: 64 + 16 + 4 = 84 anchors.
    #[test]
    fn yolox_decodes_grid_offsets_and_infers_the_input_size() {
        let mut data = vec![0.0f32; 84 * 6];
        let mut set = |anchor: usize, row: [f32; 6]| {
            data[anchor * 6..anchor * 6 + 6].copy_from_slice(&row);
        };
        // Stride 8, cell (gx 3, gy 2) = anchor 2*8+3.
        set(19, [0.5, 0.25, 0.0, 1.0f32.ln(), 0.9, 1.0]);
        // Stride 16, cell (1, 2) = anchor 64 + 2*4 + 1.
        set(73, [0.0, 0.5, 2.0f32.ln(), 0.0, 0.8, 0.5]);
        // Stride 32, cell (1, 1) = anchor 80 + 1*2 + 1, below the threshold.
        set(83, [0.0, 0.0, 0.0, 0.0, 0.2, 1.0]);
        let t = Tensor::new(vec![1, 84, 6], data).expect("shape");
        let p = params(YoloLayout::Yolox);
        let boxes = YoloDecoder::new(p.clone()).expect("decoder").decode(&t);
        let boxes = boxes.expect("decode");
        // cx = 3.5*8 = 28, cy = 2.25*8 = 18, w = h = 8; then cx = 16, cy = 2.5*16 = 40,
        // w = 2*16 = 32, h = 16.
        let want = [
            ([24.0, 14.0, 32.0, 22.0], 0.9),
            ([0.0, 32.0, 32.0, 48.0], 0.4),
        ];
        assert_eq!(boxes.len(), want.len(), "{boxes:?}");
        for (b, (bbox, score)) in boxes.iter().zip(want) {
            assert_eq!((b.class, b.score), (0, score), "{boxes:?}");
            for (got, want) in b.bbox.iter().zip(bbox) {
                assert!((got - want).abs() < 1e-4, "{boxes:?}");
            }
        }
        // Stated explicitly, the same input works; a wrong one is named.
        let explicit = YoloParams {
            input: Some([64, 64]),
            ..p.clone()
        };
        assert!(YoloDecoder::new(explicit).expect("d").decode(&t).is_ok());
        let wrong = YoloParams {
            input: Some([64, 32]),
            ..p.clone()
        };
        let err = YoloDecoder::new(wrong).expect("d").decode(&t).unwrap_err();
        assert!(err.to_string().contains("gives 42"), "{err}");
        // Absurd strides fail quickly instead of searching for ever.
        let huge = YoloParams {
            strides: Some(vec![u32::MAX]),
            ..p.clone()
        };
        let err = YoloDecoder::new(huge).expect("d").decode(&t).unwrap_err();
        assert!(matches!(err, YoloError::NoInputSize { .. }), "{err}");
        // 85 anchors fit no square input.
        let t = Tensor::new(vec![1, 85, 6], vec![0.0; 85 * 6]).expect("shape");
        let err = YoloDecoder::new(p).expect("d").decode(&t).unwrap_err();
        assert!(
            matches!(err, YoloError::NoInputSize { anchors: 85, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("params.input"), "{err}");
    }

    #[test]
    fn yolox_default_strides_fit_the_ddddocr_detector() {
        let d = YoloDecoder::new(params(YoloLayout::Yolox)).expect("decoder");
        let grid = d.grid(3549).expect("416x416");
        assert_eq!(grid.len(), 3549);
        assert_eq!(grid[0], (0, 0, 8));
        assert_eq!(grid[52 * 52], (0, 0, 16));
        assert_eq!(grid[3548], (12, 12, 32));
    }

    #[test]
    fn bad_shapes_and_values_are_errors_not_panics() {
        let mut s = stage(params(YoloLayout::V5), &[]);
        for shape in [vec![2, 3, 7], vec![1, 3, 5], vec![7], vec![1, 1, 3, 7]] {
            let len = shape.iter().product();
            let t = Tensor::new(shape.clone(), vec![0.5; len]).expect("shape");
            let err = s.process(item(t, 10, 10, Transform::IDENTITY)).unwrap_err();
            assert!(err.to_string().contains(&format!("{shape:?}")), "{err}");
        }
        // Data shorter than the shape claims.
        let t = Tensor {
            shape: vec![1, 3, 7],
            data: vec![0.0; 20],
        };
        assert!(s.process(item(t, 10, 10, Transform::IDENTITY)).is_err());
        // v8 with the anchors first is refused, not misread.
        let mut s8 = stage(params(YoloLayout::V8), &[]);
        let t = Tensor::new(vec![1, 100, 4], vec![0.5; 400]).expect("shape");
        assert!(s8.process(item(t, 10, 10, Transform::IDENTITY)).is_err());
        // NaN and infinities anywhere give no boxes and no panic.
        for (layout, shape) in [
            (YoloLayout::V5, vec![1, 84, 6]),
            (YoloLayout::V8, vec![1, 6, 84]),
            (YoloLayout::Yolox, vec![1, 84, 6]),
        ] {
            let mut s = stage(params(layout), &[]);
            for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let t = Tensor::new(shape.clone(), vec![v; 84 * 6]).expect("shape");
                let out = s.process(item(t, 64, 64, Transform::IDENTITY));
                assert!(detections(out.expect("process")).is_empty());
            }
        }
        // Non-tensor input.
        let mut it = item(
            Tensor::new(vec![0], vec![]).expect("s"),
            1,
            1,
            Transform::IDENTITY,
        );
        it.payload = Payload::Detections(vec![]);
        assert!(matches!(s.process(it), Err(StageError::WrongInput { .. })));
    }

    #[test]
    fn params_are_validated() {
        let bad = [
            YoloParams {
                iou_threshold: 1.5,
                ..params(YoloLayout::V5)
            },
            YoloParams {
                conf_threshold: f32::NAN,
                ..params(YoloLayout::V5)
            },
            YoloParams {
                max_detections: 0,
                ..params(YoloLayout::V5)
            },
            YoloParams {
                strides: Some(vec![8]),
                ..params(YoloLayout::V8)
            },
            YoloParams {
                strides: Some(vec![8, 0]),
                ..params(YoloLayout::Yolox)
            },
            YoloParams {
                input: Some([0, 416]),
                ..params(YoloLayout::Yolox)
            },
        ];
        for p in bad {
            assert!(YoloDecoder::new(p.clone()).is_err(), "{p:?}");
        }
    }
}
