//! DB (Differentiable Binarization) text-detection postprocess, as in PaddleOCR's
//! `DBPostProcess` used with the PP-OCRv4 detector (`score_mode = "fast"`).
//!
//! The detector outputs a per-pixel text probability map. This module
//! binarises it, finds the 8-connected text regions, fits a minimum-area
//! rotated rectangle to each, scores it by the mean probability under the
//! rectangle, and grows ("unclips") it back out, because DB is trained to
//! predict shrunken text kernels.
//!
//! Where this knowingly differs from PaddleOCR:
//! - Regions come from connected components, so only outer contours count.
//!   PaddleOCR's `RETR_LIST` also returns hole contours, which give spurious
//!   boxes around holes inside a region.
//! - The unclip is worked out exactly for a rectangle. PaddleOCR rounds to
//!   pyclipper's integer grid, which moves corners by up to a pixel.
//! - Regions are taken in raster order of their first pixel, both for
//!   `max_candidates` and for the output order. OpenCV's contour order
//!   differs, and PaddleOCR sorts boxes afterwards anyway.
//! - Non-finite probabilities count as 0 in the box score, and values are
//!   clamped to `[0, 1]`, so a NaN cannot turn into a passing score.

use crate::geometry::{IPt, RotatedRect, convex_hull, convex_row_span, min_area_rect};
use thiserror::Error;

/// Tunables of the DB postprocess. `Default` gives PaddleOCR/RapidOCR's PP-OCRv4
/// settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DbParams {
    /// A pixel is text when its probability is strictly above this.
    pub thresh: f32,
    /// Boxes whose mean probability is below this are dropped.
    pub box_thresh: f32,
    /// Grows each box by `area * unclip_ratio / perimeter` on every side.
    pub unclip_ratio: f32,
    /// At most this many regions are examined, in raster order.
    pub max_candidates: usize,
    /// Boxes with a side shorter than this (before unclip; `min_size + 2`
    /// after) are dropped.
    pub min_size: f32,
    /// Dilates the bitmap with a 2×2 kernel before finding regions.
    pub use_dilation: bool,
}

impl Default for DbParams {
    fn default() -> Self {
        Self {
            thresh: 0.3,
            box_thresh: 0.5,
            unclip_ratio: 1.6,
            max_candidates: 1000,
            min_size: 3.0,
            use_dilation: false,
        }
    }
}

impl DbParams {
    /// Rejects values that would quietly produce NaN boxes.
    pub fn validate(&self) -> Result<(), DbError> {
        if !self.thresh.is_finite() {
            return Err(DbError::InvalidParams("thresh must be finite"));
        }
        if !self.box_thresh.is_finite() {
            return Err(DbError::InvalidParams("box_thresh must be finite"));
        }
        if !(self.unclip_ratio.is_finite() && self.unclip_ratio >= 0.0) {
            return Err(DbError::InvalidParams(
                "unclip_ratio must be finite and non-negative",
            ));
        }
        if !self.min_size.is_finite() {
            return Err(DbError::InvalidParams("min_size must be finite"));
        }
        Ok(())
    }
}

/// Errors from the DB postprocess.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DbError {
    #[error("probability map has {len} values, which does not fit shape {height}x{width}")]
    ShapeMismatch {
        height: usize,
        width: usize,
        len: usize,
    },
    #[error("invalid DB parameters: {0}")]
    InvalidParams(&'static str),
}

/// A detected text quadrilateral in probability-map pixel coordinates (pixel
/// centres are integers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextBox {
    /// Corners `[x, y]`, clockwise on screen (y down) from top-left:
    /// top-left, top-right, bottom-right, bottom-left.
    pub points: [[f32; 2]; 4],
    /// Mean probability inside the box before unclipping.
    pub score: f32,
}

impl TextBox {
    /// Axis-aligned bounds `[x1, y1, x2, y2]` of the four corners.
    pub fn bbox(&self) -> [f32; 4] {
        let mut b = [
            f32::INFINITY,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
        ];
        for [x, y] in self.points {
            b[0] = b[0].min(x);
            b[1] = b[1].min(y);
            b[2] = b[2].max(x);
            b[3] = b[3].max(y);
        }
        b
    }
}

/// One horizontal run of text pixels `x0..=x1` on row `y`.
#[derive(Debug, Clone, Copy)]
struct Run {
    y: usize,
    x0: usize,
    x1: usize,
}

/// Reusable DB postprocessor. It keeps its scratch buffers between calls, so
/// processing a stream of same-sized maps does not allocate per frame beyond
/// the returned `Vec`.
#[derive(Debug, Clone)]
pub struct DbPostProcessor {
    params: DbParams,
    bitmap: Vec<u8>,
    runs: Vec<Run>,
    row_start: Vec<usize>,
    parent: Vec<usize>,
    run_label: Vec<u32>,
    comp_start: Vec<usize>,
    order: Vec<usize>,
    points: Vec<IPt>,
    hull: Vec<IPt>,
}

impl DbPostProcessor {
    pub fn new(params: DbParams) -> Result<Self, DbError> {
        params.validate()?;
        Ok(Self {
            params,
            bitmap: Vec::new(),
            runs: Vec::new(),
            row_start: Vec::new(),
            parent: Vec::new(),
            run_label: Vec::new(),
            comp_start: Vec::new(),
            order: Vec::new(),
            points: Vec::new(),
            hull: Vec::new(),
        })
    }

    pub fn params(&self) -> &DbParams {
        &self.params
    }

    /// Runs the postprocess on a row-major `height × width` probability map
    /// (the `[1, 1, H, W]` detector output for one image).
    pub fn process(
        &mut self,
        prob: &[f32],
        height: usize,
        width: usize,
    ) -> Result<Vec<TextBox>, DbError> {
        let mismatch = DbError::ShapeMismatch {
            height,
            width,
            len: prob.len(),
        };
        if height.checked_mul(width) != Some(prob.len()) {
            return Err(mismatch);
        }
        if prob.is_empty() {
            return Ok(Vec::new());
        }
        let p = self.params;

        self.bitmap.clear();
        self.bitmap
            .extend(prob.iter().map(|&v| u8::from(v > p.thresh)));
        if p.use_dilation {
            dilate_2x2(&mut self.bitmap, width);
        }
        self.label_components(height, width);

        let n_comp = self.comp_start.len().saturating_sub(1);
        let mut boxes = Vec::new();
        for c in 0..n_comp.min(p.max_candidates) {
            self.points.clear();
            for &r in &self.order[self.comp_start[c]..self.comp_start[c + 1]] {
                let run = self.runs[r];
                let y = run.y as i64;
                // The hull of a run is its two ends; interior pixels only
                // slow the sort down.
                self.points.push([run.x0 as i64, y]);
                if run.x1 != run.x0 {
                    self.points.push([run.x1 as i64, y]);
                }
            }
            convex_hull(&mut self.points, &mut self.hull);
            let Some(rect) = min_area_rect(&self.hull) else {
                continue;
            };
            if rect.min_side() < f64::from(p.min_size) {
                continue;
            }
            let score = box_score_fast(prob, height, width, &paddle_order(rect.corners()));
            if score < f64::from(p.box_thresh) {
                continue;
            }
            let grown = rect.expanded(unclip_distance(&rect, f64::from(p.unclip_ratio)));
            if grown.min_side() < f64::from(p.min_size) + 2.0 {
                continue;
            }
            let (max_x, max_y) = ((width - 1) as f64, (height - 1) as f64);
            let quad = paddle_order(grown.corners());
            let points =
                quad.map(|[x, y]| [x.clamp(0.0, max_x) as f32, y.clamp(0.0, max_y) as f32]);
            boxes.push(TextBox {
                points,
                score: score as f32,
            });
        }
        Ok(boxes)
    }

    /// Two-pass run-length labelling with union-find. Working on runs rather
    /// than pixels keeps it cheap on maps that are mostly background, and it
    /// yields the runs we need for the hull directly. Afterwards
    /// `order[comp_start[c]..comp_start[c + 1]]` lists component `c`'s runs in
    /// raster order, and components are numbered by their first pixel.
    fn label_components(&mut self, height: usize, width: usize) {
        self.runs.clear();
        self.row_start.clear();
        for y in 0..height {
            self.row_start.push(self.runs.len());
            let row = &self.bitmap[y * width..(y + 1) * width];
            let mut x = 0;
            while let Some(off) = row[x..].iter().position(|&b| b != 0) {
                let x0 = x + off;
                let len = row[x0..].iter().position(|&b| b == 0).unwrap_or(width - x0);
                self.runs.push(Run {
                    y,
                    x0,
                    x1: x0 + len - 1,
                });
                x = x0 + len;
                if x >= width {
                    break;
                }
            }
        }
        self.row_start.push(self.runs.len());

        self.parent.clear();
        self.parent.extend(0..self.runs.len());
        for y in 1..height {
            let (mut i, prev_end) = (self.row_start[y - 1], self.row_start[y]);
            let (mut j, cur_end) = (self.row_start[y], self.row_start[y + 1]);
            while i < prev_end && j < cur_end {
                let (a, b) = (self.runs[i], self.runs[j]);
                // 8-connectivity: diagonal neighbours touch too.
                if a.x0 <= b.x1 + 1 && b.x0 <= a.x1 + 1 {
                    union(&mut self.parent, i, j);
                }
                if a.x1 < b.x1 {
                    i += 1;
                } else {
                    j += 1;
                }
            }
        }

        // Union always keeps the smaller index as root, so a component's root
        // is its first run and numbering roots as they are met orders
        // components by first pixel.
        self.run_label.clear();
        self.run_label.resize(self.runs.len(), u32::MAX);
        let mut n_comp = 0usize;
        for r in 0..self.runs.len() {
            let root = find(&mut self.parent, r);
            let label = if root == r {
                n_comp += 1;
                (n_comp - 1) as u32
            } else {
                self.run_label[root]
            };
            self.run_label[r] = label;
        }

        // Counting sort of runs by component, stable so each stays in raster
        // order.
        self.comp_start.clear();
        self.comp_start.resize(n_comp + 1, 0);
        for &l in &self.run_label {
            self.comp_start[l as usize + 1] += 1;
        }
        for c in 0..n_comp {
            self.comp_start[c + 1] += self.comp_start[c];
        }
        self.order.clear();
        self.order.resize(self.runs.len(), 0);
        let mut fill = self.comp_start.clone();
        for (r, &l) in self.run_label.iter().enumerate() {
            let slot = &mut fill[l as usize];
            self.order[*slot] = r;
            *slot += 1;
        }
    }
}

/// One-shot convenience wrapper around [`DbPostProcessor`].
pub fn db_postprocess(
    prob: &[f32],
    height: usize,
    width: usize,
    params: &DbParams,
) -> Result<Vec<TextBox>, DbError> {
    DbPostProcessor::new(*params)?.process(prob, height, width)
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (lo, hi) = (ra.min(rb), ra.max(rb));
        parent[hi] = lo;
    }
}

/// `cv2.dilate(bitmap, [[1, 1], [1, 1]])`: with OpenCV's default centre anchor
/// each pixel becomes the max of itself and its left, upper and upper-left
/// neighbours. Walking bottom-up and right-to-left reads only unmodified
/// pixels, so no second buffer is needed.
fn dilate_2x2(bitmap: &mut [u8], width: usize) {
    if width == 0 {
        return;
    }
    let height = bitmap.len() / width;
    for y in (0..height).rev() {
        let (above, rest) = bitmap.split_at_mut(y * width);
        let row = &mut rest[..width];
        for x in (1..width).rev() {
            row[x] |= row[x - 1];
        }
        if y > 0 {
            let prev = &above[(y - 1) * width..];
            row[0] |= prev[0];
            for x in 1..width {
                row[x] |= prev[x] | prev[x - 1];
            }
        }
    }
}

/// PaddleOCR's `unclip` distance, `area * ratio / perimeter` (shapely on the
/// four corners).
fn unclip_distance(rect: &RotatedRect, ratio: f64) -> f64 {
    let perimeter = 2.0 * (rect.width + rect.height);
    if perimeter > 0.0 {
        rect.width * rect.height * ratio / perimeter
    } else {
        0.0
    }
}

/// PaddleOCR's `get_mini_boxes` corner order: sort by x, then in each pair of
/// left and right corners the one with the smaller y is on top. Gives
/// top-left, top-right, bottom-right, bottom-left.
fn paddle_order(corners: [[f64; 2]; 4]) -> [[f64; 2]; 4] {
    let mut p = corners;
    p.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (tl, bl) = if p[1][1] > p[0][1] {
        (p[0], p[1])
    } else {
        (p[1], p[0])
    };
    let (tr, br) = if p[3][1] > p[2][1] {
        (p[2], p[3])
    } else {
        (p[3], p[2])
    };
    [tl, tr, br, bl]
}

/// PaddleOCR's `box_score_fast`: mean probability over the box's bounding
/// rectangle, masked by the box filled with `cv2.fillPoly` after truncating
/// corners to integers, as PaddleOCR does.
fn box_score_fast(prob: &[f32], height: usize, width: usize, quad: &[[f64; 2]; 4]) -> f64 {
    let (w_max, h_max) = ((width - 1) as i64, (height - 1) as i64);
    let min_x = quad.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
    let max_x = quad.iter().map(|p| p[0]).fold(f64::NEG_INFINITY, f64::max);
    let min_y = quad.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min);
    let max_y = quad.iter().map(|p| p[1]).fold(f64::NEG_INFINITY, f64::max);
    let x0 = (min_x.floor() as i64).clamp(0, w_max);
    let x1 = (max_x.ceil() as i64).clamp(0, w_max);
    let y0 = (min_y.floor() as i64).clamp(0, h_max);
    let y1 = (max_y.ceil() as i64).clamp(0, h_max);

    // PaddleOCR shifts to the crop origin before `astype(int32)`, so truncate
    // relative coordinates, not absolute ones.
    let poly: [IPt; 4] = quad.map(|[x, y]| [(x - x0 as f64) as i64, (y - y0 as f64) as i64]);
    let (mut sum, mut count) = (0.0f64, 0usize);
    for ry in 0..=(y1 - y0) {
        let Some((lo, hi)) = convex_row_span(&poly, ry) else {
            continue;
        };
        let (lo, hi) = (lo.max(0), hi.min(x1 - x0));
        if lo > hi {
            continue;
        }
        let start = (y0 + ry) as usize * width + (x0 + lo) as usize;
        let row = &prob[start..=start + (hi - lo) as usize];
        sum += row
            .iter()
            .map(|&v| {
                if v.is_nan() {
                    0.0
                } else {
                    f64::from(v.clamp(0.0, 1.0))
                }
            })
            .sum::<f64>();
        count += row.len();
    }
    if count == 0 { 0.0 } else { sum / count as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    const H: usize = 640;
    const W: usize = 640;

    fn fill_rect(
        map: &mut [f32],
        width: usize,
        x0: usize,
        y0: usize,
        x1: usize,
        y1: usize,
        v: f32,
    ) {
        for y in y0..=y1 {
            map[y * width + x0..=y * width + x1].fill(v);
        }
    }

    /// Fills pixels whose centre lies in a `len × thick` rectangle centred at
    /// `(cx, cy)` and rotated by `deg` (clockwise on screen, as y points down).
    fn fill_rotated(
        map: &mut [f32],
        width: usize,
        c: [f64; 2],
        len: f64,
        thick: f64,
        deg: f64,
        v: f32,
    ) {
        let (s, co) = deg.to_radians().sin_cos();
        let height = map.len() / width;
        for y in 0..height {
            for x in 0..width {
                let (dx, dy) = (x as f64 - c[0], y as f64 - c[1]);
                let a = dx * co + dy * s;
                let b = -dx * s + dy * co;
                if a.abs() <= len / 2.0 && b.abs() <= thick / 2.0 {
                    map[y * width + x] = v;
                }
            }
        }
    }

    fn run(map: &[f32], h: usize, w: usize) -> Vec<TextBox> {
        db_postprocess(map, h, w, &DbParams::default()).expect("valid shape")
    }

    fn side(a: [f32; 2], b: [f32; 2]) -> f64 {
        f64::from(b[0] - a[0]).hypot(f64::from(b[1] - a[1]))
    }

    fn assert_clockwise_from_top_left(b: &TextBox) {
        let p = b.points;
        // Shoelace sum is positive for clockwise-on-screen with y down.
        let twice_area: f32 = (0..4)
            .map(|i| {
                let (a, c) = (p[i], p[(i + 1) % 4]);
                a[0] * c[1] - c[0] * a[1]
            })
            .sum();
        assert!(twice_area > 0.0, "not clockwise: {p:?}");
        assert!(
            p[0][0] <= p[1][0] && p[0][0] <= p[2][0],
            "first corner not leftmost-top: {p:?}"
        );
        assert!(p[0][1] <= p[3][1], "first corner below last: {p:?}");
    }

    #[test]
    fn axis_aligned_rectangle_is_unclipped_by_expected_distance() {
        let mut map = vec![0.0f32; H * W];
        fill_rect(&mut map, W, 100, 200, 299, 239, 0.9);
        let boxes = run(&map, H, W);
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        let b = boxes[0];
        // Pixel centres span 199 × 39, so d = 199·39·1.6 / (2·(199 + 39)).
        let (w, h) = (199.0f32, 39.0f32);
        let d = w * h * 1.6 / (2.0 * (w + h));
        let expected = [100.0 - d, 200.0 - d, 299.0 + d, 239.0 + d];
        for (got, want) in b.bbox().iter().zip(expected) {
            assert!(
                (got - want).abs() <= 1.5,
                "bbox {:?} vs {expected:?}",
                b.bbox()
            );
        }
        assert!((b.score - 0.9).abs() < 1e-4, "score {}", b.score);
        assert_clockwise_from_top_left(&b);
        assert!(b.points[0][0] < b.points[1][0] && b.points[1][1] < b.points[2][1]);
    }

    #[test]
    fn rotated_rectangle_keeps_its_angle() {
        for deg in [-30.0f64, -12.0, 17.0, 35.0] {
            let mut map = vec![0.0f32; H * W];
            fill_rotated(&mut map, W, [320.0, 320.0], 300.0, 40.0, deg, 0.95);
            let boxes = run(&map, H, W);
            assert_eq!(boxes.len(), 1, "{deg}: {boxes:?}");
            let b = boxes[0];
            assert_clockwise_from_top_left(&b);
            let [tl, tr, _, bl] = b.points;
            let angle = f64::from(tr[1] - tl[1])
                .atan2(f64::from(tr[0] - tl[0]))
                .to_degrees();
            assert!((angle - deg).abs() < 1.0, "angle {angle} vs {deg}");
            // Pixel centres span about 300 × 40 minus a pixel; d ≈ 17.
            let d = 299.0 * 39.0 * 1.6 / (2.0 * (299.0 + 39.0));
            assert!(
                (side(tl, tr) - (299.0 + 2.0 * d)).abs() < 3.0,
                "{deg}: {:?}",
                b.points
            );
            assert!(
                (side(tl, bl) - (39.0 + 2.0 * d)).abs() < 3.0,
                "{deg}: {:?}",
                b.points
            );
            let [cx, cy] = [0, 1].map(|k| b.points.iter().map(|p| p[k]).sum::<f32>() / 4.0);
            assert!((cx - 320.0).abs() < 1.0 && (cy - 320.0).abs() < 1.0);
        }
    }

    #[test]
    fn two_blobs_give_two_boxes_in_raster_order() {
        let mut map = vec![0.0f32; H * W];
        fill_rect(&mut map, W, 50, 400, 250, 430, 0.8);
        fill_rect(&mut map, W, 300, 50, 600, 90, 0.7);
        let boxes = run(&map, H, W);
        assert_eq!(boxes.len(), 2, "{boxes:?}");
        assert!(boxes[0].bbox()[1] < boxes[1].bbox()[1]);
        assert!((boxes[0].score - 0.7).abs() < 1e-4 && (boxes[1].score - 0.8).abs() < 1e-4);
    }

    #[test]
    fn diagonal_touch_is_one_region() {
        let mut map = vec![0.0f32; 100 * 100];
        fill_rect(&mut map, 100, 10, 10, 40, 30, 0.9);
        fill_rect(&mut map, 100, 41, 31, 80, 50, 0.9);
        // The merged L-shape only half fills its rectangle, so let any score
        // through: this is about connectivity.
        let params = DbParams {
            box_thresh: 0.0,
            ..DbParams::default()
        };
        let boxes = db_postprocess(&map, 100, 100, &params).expect("ok");
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        let [x1, y1, x2, y2] = boxes[0].bbox();
        assert!(
            x1 < 10.0 && y1 < 10.0 && x2 > 80.0 && y2 > 50.0,
            "{boxes:?}"
        );
        // One pixel further apart (no shared corner) they split.
        let mut map = vec![0.0f32; 100 * 100];
        fill_rect(&mut map, 100, 10, 10, 40, 30, 0.9);
        fill_rect(&mut map, 100, 42, 31, 80, 50, 0.9);
        assert_eq!(
            db_postprocess(&map, 100, 100, &params).expect("ok").len(),
            2
        );
    }

    #[test]
    fn dilation_bridges_one_pixel_gap() {
        let mut map = vec![0.0f32; 100 * 200];
        fill_rect(&mut map, 200, 10, 40, 60, 60, 0.9);
        fill_rect(&mut map, 200, 62, 40, 120, 60, 0.9);
        assert_eq!(run(&map, 100, 200).len(), 2);
        let params = DbParams {
            use_dilation: true,
            ..DbParams::default()
        };
        let boxes = db_postprocess(&map, 100, 200, &params).expect("ok");
        assert_eq!(boxes.len(), 1, "{boxes:?}");
    }

    #[test]
    fn low_probability_blob_is_dropped() {
        let mut map = vec![0.0f32; H * W];
        fill_rect(&mut map, W, 100, 100, 300, 140, 0.45);
        assert!(run(&map, H, W).is_empty());
    }

    #[test]
    fn tiny_blob_is_dropped() {
        let mut map = vec![0.0f32; H * W];
        fill_rect(&mut map, W, 10, 10, 11, 11, 1.0);
        fill_rect(&mut map, W, 100, 100, 102, 102, 1.0);
        assert!(run(&map, H, W).is_empty());
    }

    #[test]
    fn empty_and_degenerate_maps() {
        assert!(run(&vec![0.0; H * W], H, W).is_empty());
        assert!(run(&[], 0, 0).is_empty());
        assert!(run(&[], 0, 17).is_empty());
        assert!(run(&[1.0], 1, 1).is_empty());
        assert!(run(&[f32::NAN; 64], 8, 8).is_empty());
        assert!(run(&[1.0; 5], 1, 5).is_empty());
    }

    #[test]
    fn all_ones_map_gives_one_box_clipped_to_the_map() {
        let boxes = run(&vec![1.0; 64 * 48], 48, 64);
        assert_eq!(boxes.len(), 1);
        assert_eq!(boxes[0].bbox(), [0.0, 0.0, 63.0, 47.0]);
        assert!((boxes[0].score - 1.0).abs() < 1e-6);
    }

    #[test]
    fn nan_inside_box_does_not_poison_score() {
        let mut map = vec![0.0f32; 100 * 100];
        fill_rect(&mut map, 100, 10, 10, 60, 30, 0.9);
        map[20 * 100 + 30] = f32::NAN;
        let boxes = run(&map, 100, 100);
        assert_eq!(boxes.len(), 1);
        assert!(boxes[0].score.is_finite() && boxes[0].score > 0.85);
    }

    #[test]
    fn max_candidates_limits_regions() {
        let mut map = vec![0.0f32; 200 * 200];
        for i in 0..5 {
            fill_rect(&mut map, 200, 10, 10 + 30 * i, 150, 25 + 30 * i, 0.9);
        }
        assert_eq!(run(&map, 200, 200).len(), 5);
        let params = DbParams {
            max_candidates: 2,
            ..DbParams::default()
        };
        let boxes = db_postprocess(&map, 200, 200, &params).expect("ok");
        assert_eq!(boxes.len(), 2);
        assert!(boxes[1].bbox()[1] < 60.0);
    }

    #[test]
    fn shape_and_param_errors() {
        assert_eq!(
            db_postprocess(&[0.0; 10], 3, 3, &DbParams::default()),
            Err(DbError::ShapeMismatch {
                height: 3,
                width: 3,
                len: 10
            })
        );
        assert!(matches!(
            db_postprocess(&[0.0; 4], usize::MAX, 2, &DbParams::default()),
            Err(DbError::ShapeMismatch { .. })
        ));
        for bad in [
            DbParams {
                thresh: f32::NAN,
                ..DbParams::default()
            },
            DbParams {
                box_thresh: f32::INFINITY,
                ..DbParams::default()
            },
            DbParams {
                unclip_ratio: -1.0,
                ..DbParams::default()
            },
            DbParams {
                min_size: f32::NAN,
                ..DbParams::default()
            },
        ] {
            assert!(matches!(
                DbPostProcessor::new(bad),
                Err(DbError::InvalidParams(_))
            ));
        }
    }

    #[test]
    fn processor_reuse_gives_same_result() {
        let mut map = vec![0.0f32; H * W];
        fill_rotated(&mut map, W, [200.0, 300.0], 250.0, 30.0, 8.0, 0.9);
        fill_rect(&mut map, W, 400, 500, 600, 540, 0.8);
        let mut proc = DbPostProcessor::new(DbParams::default()).expect("params");
        let first = proc.process(&map, H, W).expect("ok");
        let _ = proc.process(&[1.0; 12], 3, 4).expect("ok");
        assert_eq!(proc.process(&map, H, W).expect("ok"), first);
        assert_eq!(first.len(), 2);
    }

    #[test]
    fn randomized_inputs_never_panic() {
        let mut rng = Rng::new(42);
        let mut proc = DbPostProcessor::new(DbParams::default()).expect("params");
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -1.0,
            2.0,
            0.3,
            0.5,
            1.0,
            0.0,
        ];
        for round in 0..400 {
            let h = rng.below(if round % 4 == 0 { 4 } else { 90 }) as usize;
            let w = rng.below(if round % 5 == 0 { 4 } else { 90 }) as usize;
            let mut map = vec![0.0f32; h * w];
            match round % 3 {
                // Pure noise: many tiny, oddly shaped regions.
                0 => map.iter_mut().for_each(|v| *v = rng.unit()),
                // Random blobs on background.
                1 if h > 0 && w > 0 => {
                    for _ in 0..rng.below(8) {
                        let c = [rng.unit() as f64 * w as f64, rng.unit() as f64 * h as f64];
                        let (len, thick) = (rng.unit() as f64 * 60.0, rng.unit() as f64 * 20.0);
                        let deg = rng.unit() as f64 * 180.0 - 90.0;
                        fill_rotated(&mut map, w, c, len, thick, deg, 0.3 + 0.7 * rng.unit());
                    }
                }
                _ => map
                    .iter_mut()
                    .for_each(|v| *v = specials[rng.below(specials.len() as u64) as usize]),
            }
            if round % 7 == 0 {
                let params = DbParams {
                    thresh: rng.unit() - 0.2,
                    box_thresh: rng.unit() - 0.2,
                    unclip_ratio: rng.unit() * 4.0,
                    max_candidates: rng.below(20) as usize,
                    min_size: rng.unit() * 6.0 - 1.0,
                    use_dilation: rng.below(2) == 1,
                };
                proc = DbPostProcessor::new(params).expect("finite params");
            }
            let boxes = proc.process(&map, h, w).expect("shape matches");
            for b in &boxes {
                for [x, y] in b.points {
                    assert!(x.is_finite() && y.is_finite());
                    assert!(
                        (0.0..=(w - 1) as f32).contains(&x) && (0.0..=(h - 1) as f32).contains(&y)
                    );
                }
                assert!(b.score.is_finite());
            }
            // Wrong lengths must be rejected, never indexed.
            assert!(proc.process(&map, h + 1, w.max(1)).is_err());
        }
    }
}
