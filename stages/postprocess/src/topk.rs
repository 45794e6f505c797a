//! Classifier outputs: the `k` best classes of each row of an `[N, C]` (or `[C]`) score tensor.
//!
//! Row `i` belongs to `item.regions[i]` in cascades (the classifier ran on crops of the frame);
//! each region keeps its box, polygon and text and becomes `k` detections, one per class, with
//! the class's label and score. Without regions the tensor must hold one row, and the
//! detections cover the whole frame.

use panoptes_contracts::detection::Detection;
use panoptes_contracts::stage::{FrameMeta, Item, Payload, Stage, StageError};
use panoptes_contracts::tensor::Tensor;
use serde::Deserialize;

use crate::common::{self, InputError};

/// Whether scores go through a softmax first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "SoftmaxSetting")]
pub enum Softmax {
    /// Only rows that are not already a probability distribution (a value outside `[0, 1]`, or
    /// a sum more than 1e-3 away from 1).
    #[default]
    Auto,
    Always,
    Never,
}

/// `softmax: true | false | "auto"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SoftmaxSetting {
    Bool(bool),
    Word(String),
}

impl TryFrom<SoftmaxSetting> for Softmax {
    type Error = String;

    fn try_from(s: SoftmaxSetting) -> Result<Self, String> {
        match s {
            SoftmaxSetting::Bool(true) => Ok(Self::Always),
            SoftmaxSetting::Bool(false) => Ok(Self::Never),
            SoftmaxSetting::Word(w) if w == "auto" => Ok(Self::Auto),
            SoftmaxSetting::Word(w) => Err(format!(
                "softmax must be true, false or \"auto\", not {w:?}"
            )),
        }
    }
}

/// `params:` of a `postprocessor: topk` stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopkParams {
    /// Classes kept per row.
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default)]
    pub softmax: Softmax,
    /// Classes scoring below this are left out; a region none of whose classes pass is dropped.
    #[serde(default)]
    pub min_score: f32,
}

fn default_k() -> usize {
    1
}

impl Default for TopkParams {
    fn default() -> Self {
        Self {
            k: default_k(),
            softmax: Softmax::Auto,
            min_score: 0.0,
        }
    }
}

impl TopkParams {
    pub fn validate(&self) -> Result<(), TopkError> {
        if self.k == 0 {
            return Err(TopkError::Params("k must be at least 1"));
        }
        if !self.min_score.is_finite() {
            return Err(TopkError::Params("min_score must be finite"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopkError {
    #[error("{0}")]
    Params(&'static str),
    #[error("the topk postprocessor needs an [N, classes] or [classes] tensor, got shape {0:?}")]
    Shape(Vec<usize>),
    #[error(transparent)]
    Input(#[from] InputError),
}

/// Whether `row` is already a probability distribution: every value in `[0, 1]` and a sum
/// within 1e-3 of 1.
pub fn is_distribution(row: &[f32]) -> bool {
    let in_range = row.iter().all(|v| (0.0..=1.0).contains(v));
    let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
    in_range && (sum - 1.0).abs() <= 1e-3
}

/// Softmax in place, shifted by the row's largest finite value. Rows holding NaN or infinities
/// come out with non-finite values, which [`top_k`] skips.
pub fn softmax(row: &mut [f32]) {
    let max = row
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    for v in row.iter_mut() {
        *v = (f64::from(*v) / sum) as f32;
    }
}

/// The `k` highest finite scores of `row` as `(class, score)`, best first; ties keep the lower
/// class first.
pub fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = row
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    scored
}

/// The topk postprocessor as a pipeline stage.
pub struct TopkStage {
    id: String,
    params: TopkParams,
    labels: Option<Vec<String>>,
    scratch: Vec<f32>,
}

impl TopkStage {
    /// `labels[i]` names class `i` (classes without one are named by their number).
    pub fn new(
        id: &str,
        params: TopkParams,
        labels: Option<Vec<String>>,
    ) -> Result<Self, TopkError> {
        params.validate()?;
        Ok(Self {
            id: id.to_owned(),
            params,
            labels,
            scratch: Vec::new(),
        })
    }

    fn classify(
        &mut self,
        tensor: &Tensor,
        regions: &mut Option<Vec<Detection>>,
        frame: &FrameMeta,
    ) -> Result<Vec<Detection>, TopkError> {
        common::check_len(tensor)?;
        let (rows, classes) = match tensor.shape.as_slice() {
            [n, c] => (*n, *c),
            [c] => (1, *c),
            other => return Err(TopkError::Shape(other.to_vec())),
        };
        if classes == 0 {
            return Err(TopkError::Shape(tensor.shape.clone()));
        }
        let regions = common::row_boxes(regions, frame, rows, "")?;
        let mut out = Vec::with_capacity(rows.saturating_mul(self.params.k).min(4096));
        for (row, region) in tensor.data.chunks_exact(classes).zip(regions) {
            self.scratch.clear();
            self.scratch.extend_from_slice(row);
            let apply = match self.params.softmax {
                Softmax::Always => true,
                Softmax::Never => false,
                Softmax::Auto => !is_distribution(row),
            };
            if apply {
                softmax(&mut self.scratch);
            }
            for (class, score) in top_k(&self.scratch, self.params.k) {
                if score < self.params.min_score {
                    continue;
                }
                out.push(Detection {
                    label: common::class_label(self.labels.as_deref(), class),
                    score,
                    ..region.clone()
                });
            }
        }
        Ok(out)
    }
}

impl Stage for TopkStage {
    fn id(&self) -> &str {
        &self.id
    }

    fn process(&mut self, mut item: Item) -> Result<Item, StageError> {
        let tensor = common::tensor(&item.payload)?;
        let detections = self
            .classify(tensor, &mut item.regions, &item.frame)
            .map_err(|e| StageError::InvalidInput(e.to_string()))?;
        item.payload = Payload::Detections(detections);
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_support::{detections, item, region};
    use panoptes_contracts::tensor::Transform;

    fn stage(p: TopkParams, labels: &[&str]) -> TopkStage {
        let labels = labels.iter().map(|s| s.to_string()).collect();
        TopkStage::new("cls", p, Some(labels)).expect("stage")
    }

    fn run(s: &mut TopkStage, t: Tensor, regions: Option<Vec<Detection>>) -> Vec<Detection> {
        let mut it = item(t, 200, 100, Transform::IDENTITY);
        it.regions = regions;
        detections(s.process(it).expect("process"))
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn whole_frame_top_k_of_probabilities() {
        let t = Tensor::new(vec![1, 4], vec![0.1, 0.6, 0.3, 0.0]).expect("shape");
        let p = TopkParams {
            k: 2,
            ..TopkParams::default()
        };
        let d = run(&mut stage(p, &["a", "b", "c"]), t, None);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].label.as_str(), d[0].score), ("b", 0.6));
        assert_eq!((d[1].label.as_str(), d[1].score), ("c", 0.3));
        assert!(d.iter().all(|d| d.bbox == [0.0, 0.0, 200.0, 100.0]));
    }

    #[test]
    fn auto_softmax_only_for_logits() {
        // Logits (outside [0, 1]): softmax of [0, ln 3] is [0.25, 0.75].
        let t = Tensor::new(vec![2], vec![0.0, 3.0f32.ln()]).expect("shape");
        let d = run(&mut stage(TopkParams::default(), &["0°", "180°"]), t, None);
        assert_eq!(d[0].label, "180°");
        assert!(close(d[0].score, 0.75), "{d:?}");
        // In [0, 1] but not summing to 1: also softmaxed.
        let t = Tensor::new(vec![2], vec![0.5, 0.9]).expect("shape");
        let d = run(&mut stage(TopkParams::default(), &[]), t, None);
        assert!(close(d[0].score, 1.0 / (1.0 + (-0.4f32).exp())), "{d:?}");
        // Forced off: raw values; forced on: softmaxed even though a distribution.
        let probs = Tensor::new(vec![2], vec![0.2, 0.8]).expect("shape");
        let never = TopkParams {
            softmax: Softmax::Never,
            ..TopkParams::default()
        };
        assert_eq!(
            run(&mut stage(never, &[]), probs.clone(), None)[0].score,
            0.8
        );
        let always = TopkParams {
            softmax: Softmax::Always,
            ..TopkParams::default()
        };
        let d = run(&mut stage(always, &[]), probs.clone(), None);
        assert!(close(d[0].score, 1.0 / (1.0 + (-0.6f32).exp())), "{d:?}");
        let d = run(&mut stage(TopkParams::default(), &[]), probs, None);
        assert_eq!(d[0].score, 0.8);
    }

    #[test]
    fn regions_get_their_row_labels_and_min_score_drops() {
        let t = Tensor::new(vec![3, 2], vec![0.9, 0.1, 0.2, 0.8, 0.55, 0.45]).expect("shape");
        let regions = vec![
            region([0.0, 0.0, 10.0, 10.0], "text"),
            region([20.0, 0.0, 30.0, 10.0], "text"),
            region([40.0, 0.0, 50.0, 10.0], "text"),
        ];
        let p = TopkParams {
            min_score: 0.6,
            ..TopkParams::default()
        };
        let d = run(
            &mut stage(p, &["0", "180"]),
            t.clone(),
            Some(regions.clone()),
        );
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(
            (d[0].bbox, d[0].label.as_str(), d[0].score),
            ([0.0, 0.0, 10.0, 10.0], "0", 0.9)
        );
        assert_eq!(d[0].polygon, regions[0].polygon);
        assert_eq!(
            (d[1].bbox, d[1].label.as_str(), d[1].score),
            ([20.0, 0.0, 30.0, 10.0], "180", 0.8)
        );
        // k = 2: two detections per region, same box, best first.
        let p = TopkParams {
            k: 2,
            ..TopkParams::default()
        };
        let d = run(&mut stage(p, &["0", "180"]), t.clone(), Some(regions));
        assert_eq!(d.len(), 6);
        assert_eq!((d[4].label.as_str(), d[4].score), ("0", 0.55));
        assert_eq!((d[5].label.as_str(), d[5].score), ("180", 0.45));
        assert_eq!(d[4].bbox, d[5].bbox);
    }

    #[test]
    fn bad_inputs_are_errors_and_nan_is_skipped() {
        let mut s = stage(TopkParams::default(), &[]);
        let process = |s: &mut TopkStage, t: Tensor, regions: Option<Vec<Detection>>| {
            let mut it = item(t, 10, 10, Transform::IDENTITY);
            it.regions = regions;
            s.process(it)
        };
        // Two rows and no regions; rows and regions disagreeing; wrong rank; no classes.
        let two = Tensor::new(vec![2, 2], vec![0.5; 4]).expect("shape");
        assert!(process(&mut s, two.clone(), None).is_err());
        let one_region = Some(vec![region([0.0, 0.0, 1.0, 1.0], "x")]);
        let err = process(&mut s, two, one_region).unwrap_err();
        assert!(err.to_string().contains("2 rows"), "{err}");
        let cube = Tensor::new(vec![1, 2, 2], vec![0.5; 4]).expect("shape");
        assert!(process(&mut s, cube, None).is_err());
        assert!(process(&mut s, Tensor::new(vec![1, 0], vec![]).expect("s"), None).is_err());
        // NaN scores are never picked.
        let t = Tensor::new(vec![3], vec![f32::NAN, 0.2, f32::INFINITY]).expect("shape");
        let d = detections(process(&mut s, t, None).expect("process"));
        assert!(d.iter().all(|d| d.score.is_finite()), "{d:?}");
        let t = Tensor::new(vec![2], vec![f32::NAN; 2]).expect("shape");
        assert!(detections(process(&mut s, t, None).expect("process")).is_empty());
        // Zero regions, zero rows: nothing, no error.
        let t = Tensor::new(vec![0, 3], vec![]).expect("shape");
        assert!(detections(process(&mut s, t, Some(vec![])).expect("process")).is_empty());
    }

    #[test]
    fn params_parse_and_validate() {
        let p: TopkParams =
            serde_json::from_value(serde_json::json!({"k": 3, "softmax": "auto"})).expect("ok");
        assert_eq!((p.k, p.softmax), (3, Softmax::Auto));
        let p: TopkParams =
            serde_json::from_value(serde_json::json!({"softmax": true})).expect("ok");
        assert_eq!(p.softmax, Softmax::Always);
        assert!(
            serde_json::from_value::<TopkParams>(serde_json::json!({"softmax": "yes"})).is_err()
        );
        assert!(serde_json::from_value::<TopkParams>(serde_json::json!({"kk": 1})).is_err());
        let zero = TopkParams {
            k: 0,
            ..TopkParams::default()
        };
        assert!(TopkStage::new("c", zero, None).is_err());
    }
}
