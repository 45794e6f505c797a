//! Cascade inputs: crops of the camera frame at the boxes an earlier stage found, made into one
//! normalised `[N, 3, H, W]` tensor per item, optionally turned upright first by a text-line
//! orientation classifier (PaddleOCR's angle classifier: crops it calls "180" with enough
//! confidence are rotated before recognition).
//!
//! Crops are cut on the host with the `crop` operator's kernel (panoptes-op-preprocess): the boxes
//! must stay matched to their crops, row by row, for the result to be attached to the right box.

use std::collections::HashMap;

use panoptes_contracts::detection::Detection;
use panoptes_contracts::frame::PixelFormat;
use panoptes_contracts::stage::{Item, Payload, StageError};
use panoptes_op_preprocess::crop::{Crop, CropRegion};
use panoptes_op_preprocess::{Normalize, PreprocessError};

use crate::graph::{Graph, TensorView};
use crate::stage::Rows;

/// Widths of variable-width crops are rounded up to this, so a backend that plans per input
/// shape (tract) sees few distinct shapes.
const WIDTH_STEP: u32 = 32;

/// How crops are cut: the input size of the model they feed.
#[derive(Clone, Debug)]
pub struct CropSpec {
    pub width: u32,
    pub height: u32,
    /// Keep the box's aspect ratio (scale to fit, pad) or stretch.
    pub keep_aspect: bool,
    /// Let long boxes widen the crops of a batch up to this width (PP-OCR recognisers take any
    /// width): all crops of one call share the width the longest box needs, in steps of 32.
    pub max_width: Option<u32>,
    /// At most this many boxes per frame (the highest-scoring).
    pub max_crops: usize,
    /// The model's normalisation, `(v / 255 - mean) / std`.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Padding in normalised units; `None`: black.
    pub pad: Option<[f32; 3]>,
    /// The model takes BGR planes (models trained on OpenCV images), not RGB.
    pub bgr: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid crops: {0}")]
pub struct CropError(String);

/// The orientation classifier run on each crop before the main model.
pub struct Orientation {
    pub graph: Graph,
    pub spec: CropSpec,
    /// Rotate crops the classifier calls upside-down with at least this probability.
    pub threshold: f32,
}

pub struct Crops {
    spec: CropSpec,
    norm: Normalize,
    /// One resizer per width in use.
    cutters: HashMap<u32, Crop>,
    orientation: Option<(Orientation, Crop)>,
}

impl Crops {
    pub fn new(spec: CropSpec) -> Result<Self, CropError> {
        let norm = Normalize::new(spec.mean, spec.std).map_err(|e| CropError(e.to_string()))?;
        if spec.max_width.is_some_and(|m| m < spec.width) {
            return Err(CropError(format!(
                "max_width {:?} is below width {}",
                spec.max_width, spec.width
            )));
        }
        let mut crops = Self {
            spec,
            norm,
            cutters: HashMap::new(),
            orientation: None,
        };
        crops.cutter(crops.spec.width)?;
        Ok(crops)
    }

    /// Runs `orientation` on every crop first and rotates those it finds upside down.
    pub fn with_orientation(mut self, orientation: Orientation) -> Result<Self, CropError> {
        let s = &orientation.spec;
        let norm = Normalize::new(s.mean, s.std).map_err(|e| CropError(e.to_string()))?;
        let mut cut = Crop::new(s.width, s.height, s.keep_aspect, norm)
            .map_err(|e| CropError(e.to_string()))?;
        if let Some(pad) = s.pad {
            cut = cut.with_padding(pad);
        }
        self.orientation = Some((orientation, cut));
        Ok(self)
    }

    fn cutter(&mut self, width: u32) -> Result<&mut Crop, CropError> {
        if !self.cutters.contains_key(&width) {
            let mut cut = Crop::new(width, self.spec.height, self.spec.keep_aspect, self.norm)
                .map_err(|e| CropError(e.to_string()))?;
            if let Some(pad) = self.spec.pad {
                cut = cut.with_padding(pad);
            }
            self.cutters.insert(width, cut);
        }
        self.cutters
            .get_mut(&width)
            .ok_or_else(|| CropError("no cutter".into()))
    }

    /// Cuts the crops of every item: its payload must be detections and its source frame RGB8.
    /// Sets each item's `regions` to the boxes kept (in row order) and returns their rows; an
    /// item that cannot be cropped becomes an error and gets `None`.
    pub(crate) fn cut(&mut self, items: &mut [Result<Item, StageError>]) -> Vec<Option<Rows>> {
        let mut regions: Vec<Option<Vec<CropRegion>>> = Vec::with_capacity(items.len());
        for slot in items.iter_mut() {
            let picked = match slot {
                Ok(item) => self.pick(item),
                Err(_) => {
                    regions.push(None);
                    continue;
                }
            };
            match picked {
                Ok(r) => regions.push(Some(r)),
                Err(e) => {
                    *slot = Err(e);
                    regions.push(None);
                }
            }
        }

        let flips = match self.orientation.is_some() {
            true => self.classify(items, &regions),
            false => Ok(HashMap::new()),
        };
        let flips = match flips {
            Ok(f) => f,
            Err(message) => {
                for (slot, r) in items.iter_mut().zip(&mut regions) {
                    if slot.is_ok() {
                        *slot = Err(StageError::Failed(message.clone()));
                        *r = None;
                    }
                }
                HashMap::new()
            }
        };

        let height = self.spec.height as usize;
        let mut out = Vec::with_capacity(items.len());
        for (i, (slot, regions)) in items.iter_mut().zip(regions).enumerate() {
            let (Ok(item), Some(regions)) = (&*slot, regions) else {
                out.push(None);
                continue;
            };
            // Each frame's crops are as wide as its own longest box needs, whatever else shares
            // the batch: a frame reads the same alone or beside others. Items of equal width
            // still run in one call (the stage groups rows by shape).
            let width = self.crop_width(regions.iter());
            let row_len = 3 * height * width as usize;
            let mut data = Vec::with_capacity(regions.len() * row_len);
            let mut failed = None;
            for (j, region) in regions.iter().enumerate() {
                let flip = flips.get(&(i, j)).copied().unwrap_or(false);
                let bgr = self.spec.bgr;
                let cut = match self.cutter(width) {
                    Ok(c) => c,
                    Err(e) => {
                        failed = Some(StageError::Failed(e.to_string()));
                        break;
                    }
                };
                if let Err(e) = append_crop(cut, item, region, flip, bgr, &mut data) {
                    failed = Some(StageError::InvalidInput(e.to_string()));
                    break;
                }
            }
            if let Some(e) = failed {
                *slot = Err(e);
                out.push(None);
                continue;
            }
            out.push(Some(Rows {
                n: regions.len(),
                trailing: vec![3, height, width as usize],
                data,
            }));
        }
        out
    }

    /// The boxes of `item` to crop, clamped to its frame; sets `item.regions` to the
    /// detections they came from.
    fn pick(&self, item: &mut Item) -> Result<Vec<CropRegion>, StageError> {
        let Payload::Detections(detections) = &item.payload else {
            return Err(StageError::WrongInput {
                expected: "detections",
                got: item.payload.kind(),
            });
        };
        let Some(frame) = &item.source else {
            return Err(StageError::InvalidInput(
                "crops need the camera frame, and this item has none".into(),
            ));
        };
        if frame.format != PixelFormat::Rgb8 {
            return Err(StageError::InvalidInput(format!(
                "crops are cut from rgb8 frames, this frame is {}",
                frame.format.as_str()
            )));
        }
        let mut kept: Vec<(Detection, CropRegion)> = detections
            .iter()
            .filter_map(|d| {
                CropRegion::new(d.bbox, frame.width, frame.height).map(|r| (d.clone(), r))
            })
            .collect();
        if kept.len() > self.spec.max_crops {
            kept.sort_by(|a, b| b.0.score.total_cmp(&a.0.score));
            kept.truncate(self.spec.max_crops);
        }
        let (dets, regions) = kept.into_iter().unzip();
        item.regions = Some(dets);
        Ok(regions)
    }

    /// The crop width for one frame's boxes: the configured width, widened (up to `max_width`,
    /// in steps of 32) so the longest box keeps its aspect ratio at the crop height.
    fn crop_width<'a>(&self, regions: impl Iterator<Item = &'a CropRegion>) -> u32 {
        let Some(max) = self.spec.max_width.filter(|_| self.spec.keep_aspect) else {
            return self.spec.width;
        };
        let h = f64::from(self.spec.height);
        let needed = regions
            .map(|r| (h * r.width / r.height).ceil())
            .fold(0.0f64, f64::max);
        let needed = needed.min(f64::from(max)) as u32;
        needed
            .div_ceil(WIDTH_STEP)
            .saturating_mul(WIDTH_STEP)
            .clamp(self.spec.width, max)
    }

    /// Runs the orientation classifier on every crop of the batch (one call); returns the
    /// (item, crop) pairs to rotate.
    fn classify(
        &mut self,
        items: &[Result<Item, StageError>],
        regions: &[Option<Vec<CropRegion>>],
    ) -> Result<HashMap<(usize, usize), bool>, String> {
        let Some((orientation, cut)) = &mut self.orientation else {
            return Ok(HashMap::new());
        };
        let mut data = Vec::new();
        let mut index = Vec::new();
        for (i, (slot, regions)) in items.iter().zip(regions).enumerate() {
            let (Ok(item), Some(regions)) = (slot, regions) else {
                continue;
            };
            for (j, region) in regions.iter().enumerate() {
                append_crop(cut, item, region, false, orientation.spec.bgr, &mut data)
                    .map_err(|e| e.to_string())?;
                index.push((i, j));
            }
        }
        if index.is_empty() {
            return Ok(HashMap::new());
        }
        let shape = cut.output_shape(index.len());
        let probs = orientation
            .graph
            .run_first_f32(TensorView::from_f32(&shape, &data))
            .map_err(|e| format!("orientation classifier: {e}"))?;
        let classes = match probs.shape.as_slice() {
            [n, c] if *n == index.len() && *c >= 2 => *c,
            other => {
                return Err(format!(
                    "orientation classifier `{}` returned shape {other:?}, expected [{}, 2]",
                    orientation.graph.name(),
                    index.len()
                ));
            }
        };
        Ok(index
            .into_iter()
            .zip(probs.data.chunks_exact(classes))
            .map(|(at, p)| (at, p[1] > p[0] && p[1] >= orientation.threshold))
            .collect())
    }
}

/// Appends the crop of `region` from the item's frame to `out`; `flip` rotates it by 180°.
fn append_crop(
    cut: &mut Crop,
    item: &Item,
    region: &CropRegion,
    flip: bool,
    bgr: bool,
    out: &mut Vec<f32>,
) -> Result<(), PreprocessError> {
    let start = out.len();
    cut_crop(cut, item, region, flip, out)?;
    if bgr {
        let plane = (out.len() - start) / 3;
        let (r, rest) = out[start..].split_at_mut(plane);
        r.swap_with_slice(&mut rest[plane..]);
    }
    Ok(())
}

fn cut_crop(
    cut: &mut Crop,
    item: &Item,
    region: &CropRegion,
    flip: bool,
    out: &mut Vec<f32>,
) -> Result<(), PreprocessError> {
    let Some(frame) = &item.source else {
        return Err(PreprocessError::Resize("no frame".into()));
    };
    let pixels = frame.pixels.as_slice();
    let rows = pixels
        .get(region.row_range(frame.width))
        .ok_or_else(|| PreprocessError::Resize("box outside the frame buffer".into()))?;
    if !flip {
        cut.append(rows, frame.width, region, out)?;
        return Ok(());
    }
    // Rotate just the pixels the box touches, then crop the rotated box out of them.
    let (bw, bh) = (region.x1 - region.x0, region.y1 - region.y0);
    let row = frame.width as usize * 3;
    let mut band = Vec::with_capacity(bw as usize * bh as usize * 3);
    for y in (0..bh as usize).rev() {
        let start = y * row + region.x0 as usize * 3;
        let line = rows
            .get(start..start + bw as usize * 3)
            .ok_or_else(|| PreprocessError::Resize("box outside the frame buffer".into()))?;
        for px in line.chunks_exact(3).rev() {
            band.extend_from_slice(px);
        }
    }
    let (left, top) = (
        region.left - f64::from(region.x0),
        region.top - f64::from(region.y0),
    );
    let (bwf, bhf) = (f64::from(bw), f64::from(bh));
    let rotated = [
        bwf - (left + region.width),
        bhf - (top + region.height),
        bwf - left,
        bhf - top,
    ]
    .map(|v| v as f32);
    let r = CropRegion::new(rotated, bw, bh)
        .ok_or_else(|| PreprocessError::Resize("empty rotated box".into()))?;
    cut.append(&band[r.row_range(bw)], bw, &r, out)?;
    Ok(())
}
