//! Postprocessors as pipeline stages: [`from_config`] and [`build`] make the one a topology
//! names, and
//! [`DbStage`] runs the DB text-box postprocessor (probability map in, boxes in original-frame
//! pixels out).

use panoptes_contracts::detection::Detection;
pub use panoptes_contracts::kinds::Postprocessor;
use panoptes_contracts::stage::{Item, Payload, Stage, StageError};
use serde::Deserialize;

use crate::common;
use crate::ctc::{CtcParams, CtcStage};
use crate::db::{DbParams, DbPostProcessor};
use crate::topk::{TopkParams, TopkStage};
use crate::yolo::{YoloParams, YoloStage};

/// Why a postprocessor stage could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum PostprocessError {
    #[error("invalid params for postprocessor {postprocessor:?}: {message}")]
    Params {
        postprocessor: String,
        message: String,
    },
    #[error("the {postprocessor} postprocessor needs {what}")]
    Missing {
        postprocessor: &'static str,
        what: &'static str,
    },
    #[error(
        "the {postprocessor} postprocessor names each detection by its class (the model's \
         labels); `label` does not apply to it"
    )]
    LabelNotUsed { postprocessor: &'static str },
    #[error("stage {stage:?}")]
    Stage {
        stage: String,
        #[source]
        source: Box<PostprocessError>,
    },
}

/// Builds a topology's `kind: postprocess` stage. `manifest_params`: what the manifest of the
/// model upstream gives this postprocessor, used when the stage sets no `params`; `labels`: that
/// model's class names or character list (see [`build`]).
pub fn from_config(
    p: &panoptes_topology::PostprocessStage,
    manifest_params: Option<serde_json::Value>,
    labels: Option<Vec<String>>,
) -> Result<Box<dyn Stage>, PostprocessError> {
    let params = match (&p.params, manifest_params) {
        (serde_json::Value::Null, Some(params)) => params,
        (given, _) => given.clone(),
    };
    build(&p.id, p.postprocessor, &params, p.label.as_deref(), labels).map_err(|e| {
        PostprocessError::Stage {
            stage: p.id.clone(),
            source: Box::new(e),
        }
    })
}

/// Builds the stage for a topology's `postprocessor` (`db`, `yolo`, `topk` or `ctc`) with its
/// `params` (`null` for none).
///
/// - `label`: `db`: the label of every box (default `"text"`); `ctc`: the label of whole-frame
///   readings (default `"text"`; regions keep theirs); `yolo`: replaces the class name on every
///   detection; `topk`: an error (the class is the label).
/// - `labels`: the model's class names (`yolo`, `topk`: class `i` is `labels[i]`, or the
///   number when there is none) or, for `ctc`, its character list (required); `db` ignores it.
pub fn build(
    id: &str,
    postprocessor: Postprocessor,
    params: &serde_json::Value,
    label: Option<&str>,
    labels: Option<Vec<String>>,
) -> Result<Box<dyn Stage>, PostprocessError> {
    let name = postprocessor.name();
    let invalid = |e: &dyn std::error::Error| PostprocessError::Params {
        postprocessor: name.to_owned(),
        message: e.to_string(),
    };
    Ok(match postprocessor {
        Postprocessor::Db => Box::new(DbStage::from_config(id, params, label)?),
        Postprocessor::Yolo => {
            let p: YoloParams = common::parse_params(name, params)?;
            let stage = YoloStage::new(id, p, labels, label.map(str::to_owned));
            Box::new(stage.map_err(|e| invalid(&e))?)
        }
        Postprocessor::Topk => {
            if label.is_some() {
                return Err(PostprocessError::LabelNotUsed {
                    postprocessor: "topk",
                });
            }
            let p: TopkParams = common::parse_params(name, params)?;
            Box::new(TopkStage::new(id, p, labels).map_err(|e| invalid(&e))?)
        }
        Postprocessor::Ctc => {
            let p: CtcParams = common::parse_params(name, params)?;
            let Some(charset) = labels else {
                return Err(PostprocessError::Missing {
                    postprocessor: "ctc",
                    what: "the model's character list (labels)",
                });
            };
            let stage = CtcStage::new(id, p, charset, label);
            Box::new(stage.map_err(|e| invalid(&e))?)
        }
    })
}

/// `params:` of a `postprocessor: db` stage; absent keys keep PaddleOCR's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DbParamsConfig {
    thresh: Option<f32>,
    box_thresh: Option<f32>,
    unclip_ratio: Option<f32>,
    max_candidates: Option<usize>,
    min_size: Option<f32>,
    use_dilation: Option<bool>,
}

pub struct DbStage {
    id: String,
    label: String,
    db: DbPostProcessor,
}

impl DbStage {
    /// Builds the stage from a topology's `params` for the `db` postprocessor.
    pub fn from_config(
        id: &str,
        params: &serde_json::Value,
        label: Option<&str>,
    ) -> Result<Self, PostprocessError> {
        let postprocessor = Postprocessor::Db.name();
        let fail = |message: String| PostprocessError::Params {
            postprocessor: postprocessor.to_owned(),
            message,
        };
        let cfg: DbParamsConfig = common::parse_params(postprocessor, params)?;
        let d = DbParams::default();
        let params = DbParams {
            thresh: cfg.thresh.unwrap_or(d.thresh),
            box_thresh: cfg.box_thresh.unwrap_or(d.box_thresh),
            unclip_ratio: cfg.unclip_ratio.unwrap_or(d.unclip_ratio),
            max_candidates: cfg.max_candidates.unwrap_or(d.max_candidates),
            min_size: cfg.min_size.unwrap_or(d.min_size),
            use_dilation: cfg.use_dilation.unwrap_or(d.use_dilation),
        };
        let db = DbPostProcessor::new(params).map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            id: id.to_owned(),
            label: label.unwrap_or("text").to_owned(),
            db,
        })
    }
}

impl Stage for DbStage {
    fn id(&self) -> &str {
        &self.id
    }

    fn process(&mut self, mut item: Item) -> Result<Item, StageError> {
        let map = common::tensor(&item.payload)?;
        // [1, 1, H, W] (or [H, W]): one probability map.
        let (h, w) = match map.shape.as_slice() {
            [1, 1, h, w] | [1, h, w] | [h, w] => (*h, *w),
            other => {
                return Err(StageError::InvalidInput(format!(
                    "the DB postprocessor needs a [1,1,H,W] probability map, got shape {other:?}"
                )));
            }
        };
        let boxes = self
            .db
            .process(&map.data, h, w)
            .map_err(|e| StageError::InvalidInput(e.to_string()))?;
        let to_frame = |p| common::to_frame_point(&item.transform, &item.frame, p);
        let detections = boxes
            .iter()
            .map(|b| {
                let polygon = b.points.map(to_frame);
                let xs = polygon.map(|p| p[0]);
                let ys = polygon.map(|p| p[1]);
                let bbox = [
                    xs.iter().copied().fold(f32::INFINITY, f32::min),
                    ys.iter().copied().fold(f32::INFINITY, f32::min),
                    xs.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    ys.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                ];
                Detection {
                    bbox,
                    polygon: Some(polygon),
                    label: self.label.clone(),
                    score: b.score,
                    text: None,
                    track: None,
                }
            })
            // Boxes that fall entirely in letterbox padding are not in the frame.
            .filter(|d| d.bbox[2] > d.bbox[0] && d.bbox[3] > d.bbox[1])
            .collect();
        item.payload = Payload::Detections(detections);
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_contracts::CameraId;
    use panoptes_contracts::frame::{Frame, PixelFormat};
    use panoptes_contracts::tensor::{Tensor, Transform};

    fn item_with_map(map: Tensor, transform: Transform) -> Item {
        let frame = Frame {
            camera: CameraId::new("c").expect("valid"),
            seq: 1,
            capture_ts_ns: 0,
            width: 1280,
            height: 720,
            format: PixelFormat::Rgb8,
            pixels: arrow_buffer_empty(),
        };
        let mut item = Item::from_frame(frame);
        item.payload = Payload::Tensor(map);
        item.transform = transform;
        item
    }

    fn arrow_buffer_empty() -> panoptes_contracts::frame::PixelBuffer {
        panoptes_contracts::frame::PixelBuffer::from_vec(Vec::<u8>::new())
    }

    #[test]
    fn boxes_are_mapped_to_frame_pixels() {
        let (h, w) = (64usize, 64usize);
        let mut data = vec![0.0f32; h * w];
        for y in 20..30 {
            for x in 10..50 {
                data[y * w + x] = 0.95;
            }
        }
        let map = Tensor::new(vec![1, 1, h, w], data).expect("shape");
        // The map is the frame at half size.
        let t = Transform {
            scale_x: 0.05,
            scale_y: 0.05,
            offset_x: 0.0,
            offset_y: 0.0,
        };
        let mut stage =
            DbStage::from_config("boxes", &serde_json::Value::Null, None).expect("stage");
        let out = stage.process(item_with_map(map, t)).expect("process");
        let Payload::Detections(d) = out.payload else {
            panic!("no detections")
        };
        assert_eq!(d.len(), 1, "{d:?}");
        // Pixel centres 10..=49 x 20..=29 give a 39x9 rectangle; unclip grows each side by
        // area*1.6/perimeter = 351*1.6/96 = 5.85; then x20 back to frame pixels.
        let expected = [83.0, 283.0, 1097.0, 697.0];
        for (got, want) in d[0].bbox.iter().zip(expected) {
            assert!((got - want).abs() < 2.0, "{:?} vs {expected:?}", d[0].bbox);
        }
        assert_eq!(d[0].label, "text");
    }

    #[test]
    fn bad_config_and_shapes_are_errors() {
        let err = DbStage::from_config("b", &serde_json::json!({"tresh": 0.2}), None)
            .err()
            .expect("typo accepted");
        assert!(err.to_string().contains("tresh"), "{err}");
        let mut stage = DbStage::from_config("b", &serde_json::Value::Null, None).expect("stage");
        let map = Tensor::new(vec![2, 3, 4], vec![0.0; 24]).expect("shape");
        assert!(
            stage
                .process(item_with_map(map, Transform::IDENTITY))
                .is_err()
        );
    }

    #[test]
    fn build_makes_every_postprocessor_and_names_bad_config() {
        let null = serde_json::Value::Null;
        let chars = Some(vec!["a".to_owned()]);
        for (kind, params, labels) in [
            (Postprocessor::Db, null.clone(), None),
            (
                Postprocessor::Yolo,
                serde_json::json!({"layout": "v8"}),
                None,
            ),
            (Postprocessor::Topk, null.clone(), None),
            (
                Postprocessor::Ctc,
                serde_json::json!({"min_score": 0.3}),
                chars.clone(),
            ),
        ] {
            let stage =
                build("s", kind, &params, None, labels).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(stage.id(), "s");
        }
        let err = |name: &str, params: serde_json::Value, label, labels| {
            let kind: Postprocessor =
                serde_json::from_value(serde_json::json!(name)).expect("a postprocessor name");
            build("s", kind, &params, label, labels)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = err("yolo", null.clone(), None, None);
        assert!(e.contains("\"yolo\"") && e.contains("layout"), "{e}");
        let e = err("yolo", serde_json::json!({"layout": "v9"}), None, None);
        assert!(e.contains("v9"), "{e}");
        let e = err(
            "yolo",
            serde_json::json!({"layout": "v5", "iou": 0.5}),
            None,
            None,
        );
        assert!(e.contains("\"yolo\"") && e.contains("`iou`"), "{e}");
        let e = err(
            "yolo",
            serde_json::json!({"layout": "v5", "iou_threshold": 2.0}),
            None,
            None,
        );
        assert!(e.contains("iou_threshold"), "{e}");
        let e = err("topk", serde_json::json!({"top": 2}), None, None);
        assert!(e.contains("\"topk\"") && e.contains("`top`"), "{e}");
        let e = err("topk", null.clone(), Some("kind"), None);
        assert!(e.contains("`label`"), "{e}");
        let e = err("ctc", null.clone(), None, None);
        assert!(e.contains("needs the model's character list"), "{e}");
        let e = err("ctc", serde_json::json!({"drop_score": 0.5}), None, chars);
        assert!(e.contains("\"ctc\"") && e.contains("`drop_score`"), "{e}");
        let e = err("ctc", null, None, Some(vec![]));
        assert!(e.contains("character list"), "{e}");
        let e = err("db", serde_json::json!({"tresh": 0.2}), None, None);
        assert!(e.contains("\"db\"") && e.contains("`tresh`"), "{e}");
    }
}
