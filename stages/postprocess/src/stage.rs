//! The DB postprocessor as a pipeline stage: probability-map tensor in, detections in
//! original-frame pixel coordinates out.

use panoptes_pipeline::detection::Detection;
use panoptes_pipeline::stage::{Item, Payload, Stage, StageError};
use serde::Deserialize;

use crate::db::{DbParams, DbPostProcessor};

#[derive(Debug, thiserror::Error)]
pub enum PostprocessError {
    #[error("unknown postprocessor {0:?} (available: db)")]
    Unknown(String),
    #[error("invalid params for postprocessor {postprocessor:?}: {message}")]
    Params {
        postprocessor: String,
        message: String,
    },
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
    /// Builds the stage named by a topology's `postprocessor` and `params`.
    pub fn from_config(
        id: &str,
        postprocessor: &str,
        params: &serde_json::Value,
        label: Option<&str>,
    ) -> Result<Self, PostprocessError> {
        if postprocessor != "db" {
            return Err(PostprocessError::Unknown(postprocessor.to_owned()));
        }
        let fail = |message: String| PostprocessError::Params {
            postprocessor: postprocessor.to_owned(),
            message,
        };
        let cfg: DbParamsConfig = if params.is_null() {
            DbParamsConfig::default()
        } else {
            serde_json::from_value(params.clone()).map_err(|e| fail(e.to_string()))?
        };
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
        let Payload::Tensor(map) = &item.payload else {
            return Err(StageError::WrongInput {
                expected: "tensor",
                got: item.payload.kind(),
            });
        };
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
        let (fw, fh) = (item.frame.width as f32, item.frame.height as f32);
        let to_frame = |p: [f32; 2]| {
            let [x, y] = item.transform.to_source(p);
            [x.clamp(0.0, fw), y.clamp(0.0, fh)]
        };
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
    use panoptes_pipeline::CameraId;
    use panoptes_pipeline::frame::{Frame, PixelFormat};
    use panoptes_pipeline::tensor::{Tensor, Transform};

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

    fn arrow_buffer_empty() -> panoptes_pipeline::frame::PixelBuffer {
        panoptes_pipeline::frame::PixelBuffer::from_vec(Vec::<u8>::new())
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
            DbStage::from_config("boxes", "db", &serde_json::Value::Null, None).expect("stage");
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
        assert!(DbStage::from_config("b", "yolo", &serde_json::Value::Null, None).is_err());
        let err = DbStage::from_config("b", "db", &serde_json::json!({"tresh": 0.2}), None)
            .err()
            .expect("typo accepted");
        assert!(err.to_string().contains("tresh"), "{err}");
        let mut stage =
            DbStage::from_config("b", "db", &serde_json::Value::Null, None).expect("stage");
        let map = Tensor::new(vec![2, 3, 4], vec![0.0; 24]).expect("shape");
        assert!(
            stage
                .process(item_with_map(map, Transform::IDENTITY))
                .is_err()
        );
    }
}
