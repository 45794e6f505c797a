//! What every postprocessor stage shares: reading the tensor payload, checking its length,
//! parsing `params`, class labels, mapping boxes back to original-frame pixels, and the boxes
//! (cascade regions or the whole frame) that the rows of a batch belong to.

use panoptes_contracts::detection::Detection;
use panoptes_contracts::stage::{FrameMeta, Payload, StageError};
use panoptes_contracts::tensor::{Tensor, Transform};
use serde::de::DeserializeOwned;

use crate::stage::PostprocessError;

/// Problems with the item handed to a postprocessor that do not depend on the postprocessor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error(
        "tensor shape {shape:?} needs {} values, got {actual}",
        expected.map_or_else(|| "too many".to_owned(), |n| n.to_string())
    )]
    Length {
        shape: Vec<usize>,
        /// `None` when the shape's element count overflows `usize`.
        expected: Option<usize>,
        actual: usize,
    },
    #[error(
        "the tensor has {rows} rows but the item has {regions} regions (row i belongs to region i)"
    )]
    RegionCount { rows: usize, regions: usize },
    #[error(
        "the tensor has {rows} rows and the item has no regions: without a crop stage before it, \
         the tensor must hold exactly one row"
    )]
    NoRegions { rows: usize },
}

/// The tensor in `payload`.
pub(crate) fn tensor(payload: &Payload) -> Result<&Tensor, StageError> {
    match payload {
        Payload::Tensor(t) => Ok(t),
        other => Err(StageError::WrongInput {
            expected: "tensor",
            got: other.kind(),
        }),
    }
}

/// Checks that `tensor.data` holds exactly the values its shape needs (the fields are public, so
/// nothing else guarantees it).
pub(crate) fn check_len(tensor: &Tensor) -> Result<(), InputError> {
    let expected = tensor
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected == Some(tensor.data.len()) {
        Ok(())
    } else {
        Err(InputError::Length {
            shape: tensor.shape.clone(),
            expected,
            actual: tensor.data.len(),
        })
    }
}

/// Parses a stage's `params:` (`null` counts as `{}`, so defaults apply) into `T`; the error
/// names the postprocessor and, through serde, the offending key.
pub(crate) fn parse_params<T: DeserializeOwned>(
    postprocessor: &str,
    params: &serde_json::Value,
) -> Result<T, PostprocessError> {
    let value = if params.is_null() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        params.clone()
    };
    serde_json::from_value(value).map_err(|e| PostprocessError::Params {
        postprocessor: postprocessor.to_owned(),
        message: e.to_string(),
    })
}

/// The name of class `class`: `labels[class]`, or the number when there is no such label.
pub(crate) fn class_label(labels: Option<&[String]>, class: usize) -> String {
    labels
        .and_then(|l| l.get(class))
        .cloned()
        .unwrap_or_else(|| class.to_string())
}

/// Maps a point of the tensor to original-frame pixels, clamped to the frame. Non-finite
/// coordinates stay non-finite (`clamp` keeps NaN), so callers can drop them.
pub(crate) fn to_frame_point(transform: &Transform, frame: &FrameMeta, p: [f32; 2]) -> [f32; 2] {
    let (x, y) = transform.to_source(p[0], p[1]);
    [
        x.clamp(0.0, frame.width as f32),
        y.clamp(0.0, frame.height as f32),
    ]
}

/// Maps an axis-aligned box `[x1, y1, x2, y2]` of the tensor to original-frame pixels, clamped
/// to the frame. `None` when the result is empty (the box lay outside the frame, e.g. in
/// letterbox padding) or not finite.
pub(crate) fn to_frame_box(
    transform: &Transform,
    frame: &FrameMeta,
    [x1, y1, x2, y2]: [f32; 4],
) -> Option<[f32; 4]> {
    let [ax, ay] = to_frame_point(transform, frame, [x1, y1]);
    let [bx, by] = to_frame_point(transform, frame, [x2, y2]);
    // A negative scale would swap the corners.
    let b = [ax.min(bx), ay.min(by), ax.max(bx), ay.max(by)];
    let finite = b.iter().all(|v| v.is_finite());
    (finite && b[2] > b[0] && b[3] > b[1]).then_some(b)
}

/// A detection covering the whole frame, for classifiers and recognisers run on full frames.
pub(crate) fn whole_frame(frame: &FrameMeta, label: String, score: f32) -> Detection {
    Detection {
        bbox: [0.0, 0.0, frame.width as f32, frame.height as f32],
        polygon: None,
        label,
        score,
        text: None,
        track: None,
    }
}

/// The boxes the `rows` rows of a batch tensor belong to: the item's `regions` (taken out of
/// the item, since the detections built from them replace them), one per row, or, when the
/// item has no regions, the whole `frame` labelled `frame_label` (then there must be exactly
/// one row).
pub(crate) fn row_boxes(
    regions: &mut Option<Vec<Detection>>,
    frame: &FrameMeta,
    rows: usize,
    frame_label: &str,
) -> Result<Vec<Detection>, InputError> {
    match regions {
        Some(r) if r.len() == rows => Ok(regions.take().unwrap_or_default()),
        Some(r) => Err(InputError::RegionCount {
            rows,
            regions: r.len(),
        }),
        None if rows == 1 => Ok(vec![whole_frame(frame, frame_label.to_owned(), 0.0)]),
        None => Err(InputError::NoRegions { rows }),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use panoptes_contracts::CameraId;
    use panoptes_contracts::detection::Detection;
    use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
    use panoptes_contracts::stage::{Item, Payload};
    use panoptes_contracts::tensor::{Tensor, Transform};

    /// An item of a `width x height` frame whose payload is `tensor`.
    pub fn item(tensor: Tensor, width: u32, height: u32, transform: Transform) -> Item {
        let frame = Frame {
            camera: CameraId::new("c").expect("valid"),
            seq: 1,
            capture_ts_ns: 0,
            width,
            height,
            format: PixelFormat::Rgb8,
            pixels: PixelBuffer::from_vec(Vec::<u8>::new()),
        };
        let mut item = Item::from_frame(frame);
        item.source = None;
        item.payload = Payload::Tensor(tensor);
        item.transform = transform;
        item
    }

    pub fn detections(item: Item) -> Vec<Detection> {
        match item.payload {
            Payload::Detections(d) => d,
            other => panic!("expected detections, got a {}", other.kind()),
        }
    }

    pub fn region(bbox: [f32; 4], label: &str) -> Detection {
        Detection {
            bbox,
            polygon: Some([
                [bbox[0], bbox[1]],
                [bbox[2], bbox[1]],
                [bbox[2], bbox[3]],
                [bbox[0], bbox[3]],
            ]),
            label: label.to_owned(),
            score: 0.9,
            text: None,
            track: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::item;
    use super::*;

    #[test]
    fn boxes_map_through_the_transform_and_clamp_to_the_frame() {
        let t = Transform {
            scale_x: 0.5,
            scale_y: 0.5,
            offset_x: 0.0,
            offset_y: 10.0,
        };
        let it = item(Tensor::new(vec![0], vec![]).expect("shape"), 100, 50, t);
        assert_eq!(
            to_frame_box(&t, &it.frame, [5.0, 20.0, 25.0, 30.0]),
            Some([10.0, 20.0, 50.0, 40.0])
        );
        // Partly outside: clamped.
        assert_eq!(
            to_frame_box(&t, &it.frame, [-5.0, 0.0, 100.0, 60.0]),
            Some([0.0, 0.0, 100.0, 50.0])
        );
        // Entirely in the padding below the frame, or not finite: dropped.
        assert_eq!(to_frame_box(&t, &it.frame, [0.0, 40.0, 20.0, 50.0]), None);
        assert_eq!(
            to_frame_box(&t, &it.frame, [f32::NAN, 0.0, 20.0, 20.0]),
            None
        );
    }

    #[test]
    fn lengths_are_checked_without_overflow() {
        let bad = Tensor {
            shape: vec![usize::MAX, 2],
            data: vec![0.0; 4],
        };
        assert!(matches!(
            check_len(&bad),
            Err(InputError::Length { expected: None, .. })
        ));
        let short = Tensor {
            shape: vec![2, 3],
            data: vec![0.0; 5],
        };
        assert!(check_len(&short).is_err());
    }

    #[test]
    fn rows_need_matching_regions_or_one_row() {
        let it = item(
            Tensor::new(vec![0], vec![]).expect("shape"),
            64,
            32,
            Transform::IDENTITY,
        );
        let mut regions = None;
        let whole = row_boxes(&mut regions, &it.frame, 1, "x").expect("one row");
        assert_eq!(whole[0].bbox, [0.0, 0.0, 64.0, 32.0]);
        assert_eq!(
            row_boxes(&mut regions, &it.frame, 2, "x"),
            Err(InputError::NoRegions { rows: 2 })
        );
        let mut regions = Some(vec![whole_frame(&it.frame, "r".into(), 1.0)]);
        assert_eq!(
            row_boxes(&mut regions, &it.frame, 3, "x"),
            Err(InputError::RegionCount {
                rows: 3,
                regions: 1
            })
        );
        let got = row_boxes(&mut regions, &it.frame, 1, "x").expect("matches");
        assert_eq!(got[0].label, "r");
        assert!(regions.is_none());
    }
}
