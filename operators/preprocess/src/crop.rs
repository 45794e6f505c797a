//! Crops of detection boxes, each resized to one input size and normalised into one
//! `[N, 3, H, W]` batch tensor, with the transform that maps each crop back to the frame. The
//! `crop` operator's kernel (cascades: detector boxes in, classifier or recogniser input out).
//!
//! A box is cropped at sub-pixel precision (fast_image_resize's fractional crop box), so the
//! transform is exact. Only the pixels the box touches are read: [`CropRegion`] names the rows
//! (and columns) to fetch, which is what lets the Wasm operator copy just those rows out of the
//! host's frame instead of the whole frame. The filter never looks outside those whole pixels,
//! so a crop does not depend on how much of the frame around it was fetched.

use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::{Normalize, PreprocessError, Transform, append_chw_padded, check_size};

/// A box clamped to the frame, in frame pixel coordinates (pixel `i` covers `[i, i + 1)`),
/// with the whole pixels it touches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropRegion {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
    /// Columns `x0..x1` and rows `y0..y1` of the frame that the box touches.
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl CropRegion {
    /// Clamps `[x1, y1, x2, y2]` to a `frame_w x frame_h` frame. `None` when nothing of it is
    /// left (empty, inverted, entirely outside, or not finite).
    pub fn new(bbox: [f32; 4], frame_w: u32, frame_h: u32) -> Option<Self> {
        if bbox.iter().any(|v| v.is_nan()) || frame_w == 0 || frame_h == 0 {
            return None;
        }
        let [x1, y1, x2, y2] = bbox.map(f64::from);
        let (fw, fh) = (f64::from(frame_w), f64::from(frame_h));
        let (left, right) = (x1.clamp(0.0, fw), x2.clamp(0.0, fw));
        let (top, bottom) = (y1.clamp(0.0, fh), y2.clamp(0.0, fh));
        if right <= left || bottom <= top {
            return None;
        }
        // The casts are exact: the values are whole numbers in 0..=frame size.
        let (x0, xe) = (left.floor() as u32, (right.ceil() as u32).min(frame_w));
        let (y0, ye) = (top.floor() as u32, (bottom.ceil() as u32).min(frame_h));
        Some(Self {
            left,
            top,
            width: right - left,
            height: bottom - top,
            x0,
            y0,
            x1: xe.max(x0 + 1),
            y1: ye.max(y0 + 1),
        })
    }

    /// The byte range of the packed RGB8 frame holding rows `y0..y1` (whole rows): what to read
    /// to crop this box.
    pub fn row_range(&self, frame_w: u32) -> std::ops::Range<usize> {
        let row = frame_w as usize * 3;
        self.y0 as usize * row..self.y1 as usize * row
    }
}

/// Picks the boxes to crop: those with something left inside the frame, at most `max` of them
/// (the highest-scoring when there are more), in their input order.
pub fn select(
    boxes: impl IntoIterator<Item = ([f32; 4], f32)>,
    frame_w: u32,
    frame_h: u32,
    max: usize,
) -> Vec<CropRegion> {
    select_indexed(boxes, frame_w, frame_h, max)
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// [`select`], with each kept box's index in the input.
pub fn select_indexed(
    boxes: impl IntoIterator<Item = ([f32; 4], f32)>,
    frame_w: u32,
    frame_h: u32,
    max: usize,
) -> Vec<(usize, CropRegion)> {
    let mut kept: Vec<(usize, f32, CropRegion)> = boxes
        .into_iter()
        .enumerate()
        .filter_map(|(i, (bbox, score))| {
            CropRegion::new(bbox, frame_w, frame_h).map(|r| (i, score, r))
        })
        .collect();
    if kept.len() > max {
        // Stable: equal scores keep their input order. NaN scores sort last.
        kept.sort_by(|a, b| {
            let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
            key(b.1).total_cmp(&key(a.1))
        });
        kept.truncate(max);
        kept.sort_by_key(|&(i, _, _)| i);
    }
    kept.into_iter().map(|(i, _, r)| (i, r)).collect()
}

/// Reusable crop state for one output size: the resizer and its scratch survive between crops
/// and frames.
pub struct Crop {
    dst_w: u32,
    dst_h: u32,
    keep_aspect: bool,
    norm: Normalize,
    /// Padding per channel in normalised units (default: black, like the letterbox).
    pad: [f32; 3],
    resizer: Resizer,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Crop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crop")
            .field("dst_w", &self.dst_w)
            .field("dst_h", &self.dst_h)
            .field("keep_aspect", &self.keep_aspect)
            .field("norm", &self.norm)
            .finish()
    }
}

impl Crop {
    /// Crops become `3 x dst_h x dst_w` each. With `keep_aspect` a crop is scaled to fit and
    /// padded on the right and bottom (like the letterbox); without, it is stretched.
    pub fn new(
        dst_w: u32,
        dst_h: u32,
        keep_aspect: bool,
        norm: Normalize,
    ) -> Result<Self, PreprocessError> {
        check_size("destination", dst_w, dst_h)?;
        Ok(Self {
            dst_w,
            dst_h,
            keep_aspect,
            pad: [norm.padding(0), norm.padding(1), norm.padding(2)],
            norm,
            resizer: Resizer::new(),
            scratch: Vec::new(),
        })
    }

    /// Pads with these normalised values instead of black (PaddleOCR's recognisers pad with
    /// 0 after normalisation, i.e. mid-grey).
    pub fn with_padding(mut self, pad: [f32; 3]) -> Self {
        self.pad = pad;
        self
    }

    /// Shape of a batch of `n` crops: `[n, 3, dst_h, dst_w]`.
    pub fn output_shape(&self, n: usize) -> [usize; 4] {
        [n, 3, self.dst_h as usize, self.dst_w as usize]
    }

    /// Values one crop adds to the batch.
    pub fn crop_len(&self) -> usize {
        3 * self.dst_h as usize * self.dst_w as usize
    }

    /// Crops `region` out of `rows` (the frame's rows `region.y0..region.y1`, packed RGB8,
    /// `frame_w` pixels each, as [`CropRegion::row_range`] names them), and appends it to `out`
    /// as one normalised CHW crop. Returns the crop → frame transform.
    pub fn append(
        &mut self,
        rows: &[u8],
        frame_w: u32,
        region: &CropRegion,
        out: &mut Vec<f32>,
    ) -> Result<Transform, PreprocessError> {
        let band_h = region.y1 - region.y0;
        let expected = frame_w as usize * band_h as usize * 3;
        if rows.len() != expected || region.x1 > frame_w || region.x0 >= region.x1 {
            return Err(PreprocessError::BufferSize {
                format: "RGB8 rows",
                width: frame_w,
                height: band_h,
                expected,
                actual: rows.len(),
            });
        }
        let (new_w, new_h) = if self.keep_aspect {
            let scale =
                (f64::from(self.dst_w) / region.width).min(f64::from(self.dst_h) / region.height);
            let side = |len: f64, dst: u32| ((len * scale).round() as u32).clamp(1, dst);
            (
                side(region.width, self.dst_w),
                side(region.height, self.dst_h),
            )
        } else {
            (self.dst_w, self.dst_h)
        };
        let len = new_w as usize * new_h as usize * 3;
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
        let resized = &mut self.scratch[..len];
        {
            let resize_err = |e: &dyn std::fmt::Display| PreprocessError::Resize(e.to_string());
            let band = ImageRef::new(frame_w, band_h, rows, PixelType::U8x3)
                .map_err(|e| resize_err(&e))?;
            let window = CroppedImage::new(&band, region.x0, 0, region.x1 - region.x0, band_h)
                .map_err(|e| resize_err(&e))?;
            let (left, top) = (
                region.left - f64::from(region.x0),
                region.top - f64::from(region.y0),
            );
            let width = fit_inside(left, region.width, f64::from(region.x1 - region.x0));
            let height = fit_inside(top, region.height, f64::from(band_h));
            let options = ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
                .crop(left, top, width, height);
            let mut dst = Image::from_slice_u8(new_w, new_h, resized, PixelType::U8x3)
                .map_err(|e| resize_err(&e))?;
            self.resizer
                .resize(&window, &mut dst, &options)
                .map_err(|e| resize_err(&e))?;
        }
        append_chw_padded(
            resized,
            new_w as usize,
            new_h as usize,
            self.dst_w as usize,
            self.dst_h as usize,
            &self.norm,
            self.pad,
            out,
        );
        let scale_x = f64::from(new_w) / region.width;
        let scale_y = f64::from(new_h) / region.height;
        Ok(Transform {
            scale_x: scale_x as f32,
            scale_y: scale_y as f32,
            offset_x: (-region.left * scale_x) as f32,
            offset_y: (-region.top * scale_y) as f32,
        })
    }
}

/// `len`, shortened by rounding error if needed so that `start + len <= limit` holds in f64
/// (fast_image_resize refuses a crop box that ends even one ulp past its image).
fn fit_inside(start: f64, len: f64, limit: f64) -> f64 {
    let mut len = len.min(limit - start);
    while start + len > limit {
        len = len.next_down();
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::Resize;

    fn frame(w: u32, h: u32) -> Vec<u8> {
        (0..w * h * 3)
            .map(|i| ((i * 13) ^ (i / 251)) as u8)
            .collect()
    }

    fn crop_one(
        crop: &mut Crop,
        frame: &[u8],
        w: u32,
        h: u32,
        bbox: [f32; 4],
    ) -> (Vec<f32>, Transform) {
        let r = CropRegion::new(bbox, w, h).unwrap();
        let mut out = Vec::new();
        let t = crop
            .append(&frame[r.row_range(w)], w, &r, &mut out)
            .unwrap();
        (out, t)
    }

    #[test]
    fn region_clamps_and_rejects_empty_boxes() {
        let r = CropRegion::new([-5.0, 10.5, 20.25, 1000.0], 64, 48).unwrap();
        assert_eq!((r.left, r.top, r.width, r.height), (0.0, 10.5, 20.25, 37.5));
        assert_eq!((r.x0, r.y0, r.x1, r.y1), (0, 10, 21, 48));
        assert_eq!(r.row_range(64), 10 * 64 * 3..48 * 64 * 3);
        for empty in [
            [10.0, 10.0, 10.0, 20.0],
            [10.0, 20.0, 20.0, 10.0],
            [70.0, 0.0, 80.0, 10.0],
            [-10.0, -10.0, -1.0, 5.0],
            [f32::NAN, 0.0, 5.0, 5.0],
        ] {
            assert_eq!(CropRegion::new(empty, 64, 48), None, "{empty:?}");
        }
        // A sliver thinner than a pixel still touches one whole pixel.
        let r = CropRegion::new([3.2, 4.0, 3.4, 9.0], 64, 48).unwrap();
        assert_eq!((r.x0, r.x1), (3, 4));
        // Infinite edges clamp to the frame.
        let r = CropRegion::new([f32::NEG_INFINITY, 0.0, f32::INFINITY, 1.0], 64, 48).unwrap();
        assert_eq!((r.left, r.width), (0.0, 64.0));
    }

    #[test]
    fn select_keeps_the_best_in_input_order() {
        let b = |x: f32| [x, 0.0, x + 4.0, 4.0];
        let boxes = [
            (b(0.0), 0.5),
            ([5.0, 5.0, 5.0, 9.0], 0.99), // empty: skipped whatever its score
            (b(10.0), 0.9),
            (b(20.0), 0.1),
            (b(30.0), 0.7),
        ];
        let picked = select(boxes, 64, 48, 2);
        let lefts: Vec<f64> = picked.iter().map(|r| r.left).collect();
        assert_eq!(lefts, [10.0, 30.0]);
        assert_eq!(select(boxes, 64, 48, 10).len(), 4);
        assert!(select(boxes, 64, 48, 0).is_empty());
    }

    #[test]
    fn whole_pixel_box_at_its_own_size_is_an_exact_copy() {
        let (w, h) = (40u32, 30u32);
        let src = frame(w, h);
        let mut crop = Crop::new(8, 6, false, Normalize::RAW).unwrap();
        let (out, t) = crop_one(&mut crop, &src, w, h, [5.0, 7.0, 13.0, 13.0]);
        assert_eq!(out.len(), crop.crop_len());
        for c in 0..3 {
            for y in 0..6 {
                for x in 0..8 {
                    let want = src[(((7 + y) * w as usize) + 5 + x) * 3 + c];
                    assert_eq!(out[(c * 6 + y) * 8 + x], f32::from(want));
                }
            }
        }
        assert_eq!(t.to_source(0.0, 0.0), (5.0, 7.0));
        assert_eq!(t.to_source(8.0, 6.0), (13.0, 13.0));
    }

    #[test]
    fn full_frame_box_equals_the_resize_kernel() {
        let (w, h) = (64u32, 48u32);
        let src = frame(w, h);
        let norm = Normalize::new([0.5; 3], [0.25; 3]).unwrap();
        let mut crop = Crop::new(24, 40, false, norm).unwrap();
        let (out, t) = crop_one(&mut crop, &src, w, h, [0.0, 0.0, 64.0, 48.0]);
        let mut want = Vec::new();
        let rt = Resize::new(24, 40)
            .unwrap()
            .run_tensor(&src, w, h, &norm, &mut want)
            .unwrap();
        assert_eq!(out, want);
        assert_eq!(t, rt);
    }

    #[test]
    fn keep_aspect_pads_and_maps_back_exactly() {
        let (w, h) = (100u32, 80u32);
        let src = frame(w, h);
        let norm = Normalize::new([0.5; 3], [0.5; 3]).unwrap();
        let mut crop = Crop::new(32, 32, true, norm).unwrap();
        // 40.5 x 20.25 box: scaled by 32 / 40.5, it becomes 32 x 16 with 16 rows of padding.
        let bbox = [10.25, 30.5, 50.75, 50.75];
        let (out, t) = crop_one(&mut crop, &src, w, h, bbox);
        for c in 0..3 {
            let plane = &out[c * 1024..(c + 1) * 1024];
            assert!(plane[16 * 32..].iter().all(|&v| v == norm.padding(c)));
            assert!(plane[..16 * 32].iter().any(|&v| v != norm.padding(c)));
        }
        let (x, y) = t.to_source(0.0, 0.0);
        assert!(
            (x - 10.25).abs() < 1e-4 && (y - 30.5).abs() < 1e-4,
            "{x} {y}"
        );
        let (x, y) = t.to_source(32.0, 16.0);
        assert!(
            (x - 50.75).abs() < 1e-4 && (y - 50.75).abs() < 1e-4,
            "{x} {y}"
        );
    }

    #[test]
    fn crops_append_into_one_batch_and_read_only_their_pixels() {
        let (w, h) = (50u32, 40u32);
        let src = frame(w, h);
        let mut crop = Crop::new(10, 12, false, Normalize::RAW).unwrap();
        let boxes = [[1.5, 2.5, 20.0, 30.0], [30.0, 10.0, 49.5, 39.9]];
        let mut batch = Vec::new();
        for b in boxes {
            let r = CropRegion::new(b, w, h).unwrap();
            // Columns outside x0..x1 are fetched with the rows but must not matter.
            let mut rows = src[r.row_range(w)].to_vec();
            for (i, px) in rows.chunks_exact_mut(3).enumerate() {
                let x = (i % w as usize) as u32;
                if x < r.x0 || x >= r.x1 {
                    px.fill(0xA5);
                }
            }
            crop.append(&rows, w, &r, &mut batch).unwrap();
        }
        assert_eq!(batch.len(), 2 * crop.crop_len());
        let (first, _) = crop_one(&mut crop, &src, w, h, boxes[0]);
        let (second, _) = crop_one(&mut crop, &src, w, h, boxes[1]);
        assert_eq!(batch, [first, second].concat());
    }

    #[test]
    fn append_rejects_rows_that_do_not_match_the_region() {
        let r = CropRegion::new([0.0, 2.0, 4.0, 5.0], 8, 8).unwrap();
        let mut crop = Crop::new(4, 4, false, Normalize::RAW).unwrap();
        let err = crop.append(&[0; 10], 8, &r, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("needs 72 bytes"), "{err}");
    }
}
