//! Planar geometry for the DB postprocess: the convex hull of pixel centres, the
//! minimum-area enclosing (rotated) rectangle, and the per-row span of a filled
//! convex polygon.
//!
//! Hull and caliper comparisons run on exact `i64` arithmetic over integer pixel
//! coordinates, so degenerate inputs (collinear points, plateaus of equal
//! projection) cannot send the calipers round in circles because of rounding.

/// An integer point `[x, y]`. `i64` so that cross and dot products of pixel
/// coordinates cannot overflow for any map that fits in memory.
pub(crate) type IPt = [i64; 2];

fn cross(o: IPt, a: IPt, b: IPt) -> i64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Andrew's monotone chain.
///
/// Sorts and deduplicates `points` in place and writes the hull into `hull`,
/// counter-clockwise in the x-right/y-up sense (every turn has positive cross
/// product), without collinear vertices. One or two distinct points yield a
/// hull of that many vertices.
pub(crate) fn convex_hull(points: &mut Vec<IPt>, hull: &mut Vec<IPt>) {
    hull.clear();
    points.sort_unstable();
    points.dedup();
    if points.len() <= 1 {
        hull.extend_from_slice(points);
        return;
    }
    for &p in points.iter() {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0 {
            hull.pop();
        }
        hull.push(p);
    }
    let lower_len = hull.len() + 1;
    for &p in points.iter().rev().skip(1) {
        while hull.len() >= lower_len && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0 {
            hull.pop();
        }
        hull.push(p);
    }
    // The upper chain ends where the lower one started.
    hull.pop();
}

/// A rotated rectangle: `width` runs along the unit vector `axis`, `height`
/// along its left normal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RotatedRect {
    pub center: [f64; 2],
    pub axis: [f64; 2],
    pub width: f64,
    pub height: f64,
}

impl RotatedRect {
    pub fn min_side(&self) -> f64 {
        self.width.min(self.height)
    }

    pub fn normal(&self) -> [f64; 2] {
        [-self.axis[1], self.axis[0]]
    }

    pub fn corners(&self) -> [[f64; 2]; 4] {
        let [ux, uy] = self.axis;
        let [nx, ny] = self.normal();
        let (hw, hh) = (self.width / 2.0, self.height / 2.0);
        let [cx, cy] = self.center;
        [
            [cx - hw * ux - hh * nx, cy - hw * uy - hh * ny],
            [cx + hw * ux - hh * nx, cy + hw * uy - hh * ny],
            [cx + hw * ux + hh * nx, cy + hw * uy + hh * ny],
            [cx - hw * ux + hh * nx, cy - hw * uy + hh * ny],
        ]
    }

    /// Grows every side outwards by `d`. For a rectangle this is exactly the
    /// minimum-area rectangle of its round-join polygon offset (the arcs stay
    /// inside the corners), which is what PaddleOCR's pyclipper unclip followed
    /// by `cv2.minAreaRect` computes.
    pub fn expanded(&self, d: f64) -> RotatedRect {
        RotatedRect {
            width: self.width + 2.0 * d,
            height: self.height + 2.0 * d,
            ..*self
        }
    }
}

/// Minimum-area enclosing rectangle of a convex hull as produced by
/// [`convex_hull`], by rotating calipers: the optimum has a side flush with a
/// hull edge, and the three other supporting vertices only ever move forwards
/// as the edge advances, so the whole sweep is linear.
pub(crate) fn min_area_rect(hull: &[IPt]) -> Option<RotatedRect> {
    let n = hull.len();
    match n {
        0 => return None,
        1 => {
            return Some(RotatedRect {
                center: [hull[0][0] as f64, hull[0][1] as f64],
                axis: [1.0, 0.0],
                width: 0.0,
                height: 0.0,
            });
        }
        2 => {
            let (p, q) = (hull[0], hull[1]);
            let (dx, dy) = ((q[0] - p[0]) as f64, (q[1] - p[1]) as f64);
            let len = dx.hypot(dy);
            let axis = if len > 0.0 {
                [dx / len, dy / len]
            } else {
                [1.0, 0.0]
            };
            return Some(RotatedRect {
                center: [(p[0] + q[0]) as f64 / 2.0, (p[1] + q[1]) as f64 / 2.0],
                axis,
                width: len,
                height: 0.0,
            });
        }
        _ => {}
    }

    let next = |i: usize| if i + 1 == n { 0 } else { i + 1 };
    let mut best: Option<(f64, RotatedRect)> = None;
    let (mut j, mut k, mut l) = (1, 1, 1);
    for i in 0..n {
        let p = hull[i];
        let q = hull[next(i)];
        let e = [q[0] - p[0], q[1] - p[1]];
        let len2 = e[0] * e[0] + e[1] * e[1];
        if len2 == 0 {
            continue;
        }
        // Unnormalised projections: comparing them is exact, and dividing by
        // |e| afterwards gives the true lengths.
        let along = |r: IPt| (r[0] - p[0]) * e[0] + (r[1] - p[1]) * e[1];
        let across = |r: IPt| e[0] * (r[1] - p[1]) - e[1] * (r[0] - p[0]);

        // Going counter-clockwise from q the supports come in the order
        // max-along (j), max-across (k), min-along (l). The step caps only
        // guard against a malformed hull; a proper one never reaches them.
        if i == 0 {
            j = next(i);
        }
        let mut steps = 0;
        while steps < n && along(hull[next(j)]) > along(hull[j]) {
            j = next(j);
            steps += 1;
        }
        if i == 0 {
            k = j;
        }
        steps = 0;
        while steps < n && across(hull[next(k)]) > across(hull[k]) {
            k = next(k);
            steps += 1;
        }
        if i == 0 {
            l = k;
        }
        steps = 0;
        while steps < n && along(hull[next(l)]) < along(hull[l]) {
            l = next(l);
            steps += 1;
        }

        let len = (len2 as f64).sqrt();
        let a_max = along(hull[j]) as f64 / len;
        let a_min = along(hull[l]) as f64 / len;
        let height = across(hull[k]) as f64 / len;
        let width = a_max - a_min;
        let area = width * height;
        if best.as_ref().is_none_or(|(b, _)| area < *b) {
            let axis = [e[0] as f64 / len, e[1] as f64 / len];
            let normal = [-axis[1], axis[0]];
            let mid = (a_max + a_min) / 2.0;
            let center = [
                p[0] as f64 + axis[0] * mid + normal[0] * height / 2.0,
                p[1] as f64 + axis[1] * mid + normal[1] * height / 2.0,
            ];
            best = Some((
                area,
                RotatedRect {
                    center,
                    axis,
                    width,
                    height,
                },
            ));
        }
    }
    best.map(|(_, r)| r)
}

fn round_half_up(v: f64) -> i64 {
    (v + 0.5).floor() as i64
}

/// Inclusive pixel span `[lo, hi]` covered on row `y` by the convex polygon
/// with integer vertices `poly`, the way `cv2.fillPoly` rasterises it: the
/// interior between the rounded edge crossings plus the 8-connected outline
/// (shallow edges cover a horizontal run per row, steep ones one pixel).
/// `None` when the row misses the polygon.
pub(crate) fn convex_row_span(poly: &[IPt], y: i64) -> Option<(i64, i64)> {
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    for (idx, &a) in poly.iter().enumerate() {
        let b = poly[(idx + 1) % poly.len()];
        let (y_min, y_max) = (a[1].min(b[1]), a[1].max(b[1]));
        if y < y_min || y > y_max {
            continue;
        }
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let (x_lo, x_hi) = if dy == 0 {
            (a[0].min(b[0]), a[0].max(b[0]))
        } else if dx.abs() <= dy.abs() {
            let x = a[0] as f64 + (y - a[1]) as f64 * dx as f64 / dy as f64;
            let xr = round_half_up(x);
            (xr, xr)
        } else {
            let slope = dx as f64 / dy as f64;
            let x_at = |yy: f64| a[0] as f64 + (yy - a[1] as f64) * slope;
            let (u, v) = (x_at(y as f64 - 0.5), x_at(y as f64 + 0.5));
            let (seg_lo, seg_hi) = (a[0].min(b[0]), a[0].max(b[0]));
            (
                (u.min(v).ceil() as i64).clamp(seg_lo, seg_hi),
                (u.max(v).floor() as i64).clamp(seg_lo, seg_hi),
            )
        };
        lo = lo.min(x_lo);
        hi = hi.max(x_hi);
    }
    (lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn brute_min_area(points: &[IPt], hull: &[IPt]) -> f64 {
        let mut best = f64::INFINITY;
        for i in 0..hull.len() {
            let p = hull[i];
            let q = hull[(i + 1) % hull.len()];
            let (dx, dy) = ((q[0] - p[0]) as f64, (q[1] - p[1]) as f64);
            let len = dx.hypot(dy);
            if len == 0.0 {
                continue;
            }
            let (ux, uy) = (dx / len, dy / len);
            let (mut a0, mut a1, mut b0, mut b1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
            for r in points {
                let (rx, ry) = (r[0] as f64, r[1] as f64);
                let a = rx * ux + ry * uy;
                let b = -rx * uy + ry * ux;
                a0 = a0.min(a);
                a1 = a1.max(a);
                b0 = b0.min(b);
                b1 = b1.max(b);
            }
            best = best.min((a1 - a0) * (b1 - b0));
        }
        best
    }

    fn inside(rect: &RotatedRect, p: IPt) -> bool {
        let (dx, dy) = (p[0] as f64 - rect.center[0], p[1] as f64 - rect.center[1]);
        let [nx, ny] = rect.normal();
        let a = dx * rect.axis[0] + dy * rect.axis[1];
        let b = dx * nx + dy * ny;
        a.abs() <= rect.width / 2.0 + 1e-6 && b.abs() <= rect.height / 2.0 + 1e-6
    }

    #[test]
    fn hull_of_square_with_interior_and_edge_points() {
        let mut pts = vec![
            [0, 0],
            [4, 0],
            [4, 4],
            [0, 4],
            [2, 2],
            [2, 0],
            [0, 2],
            [4, 4],
        ];
        let mut hull = Vec::new();
        convex_hull(&mut pts, &mut hull);
        assert_eq!(hull, vec![[0, 0], [4, 0], [4, 4], [0, 4]]);
    }

    #[test]
    fn hull_degenerate_inputs() {
        let mut hull = Vec::new();
        convex_hull(&mut vec![], &mut hull);
        assert!(hull.is_empty());
        convex_hull(&mut vec![[3, 3], [3, 3]], &mut hull);
        assert_eq!(hull, vec![[3, 3]]);
        convex_hull(&mut vec![[0, 0], [1, 1], [2, 2], [3, 3]], &mut hull);
        assert_eq!(hull, vec![[0, 0], [3, 3]]);
    }

    #[test]
    fn min_area_rect_axis_aligned_and_degenerate() {
        let r = min_area_rect(&[[10, 20], [30, 20], [30, 25], [10, 25]]).expect("rect");
        let (long, short) = (r.width.max(r.height), r.min_side());
        assert!((long - 20.0).abs() < 1e-9 && (short - 5.0).abs() < 1e-9);
        assert!((r.center[0] - 20.0).abs() < 1e-9 && (r.center[1] - 22.5).abs() < 1e-9);

        assert!(min_area_rect(&[]).is_none());
        let p = min_area_rect(&[[7, 8]]).expect("point");
        assert_eq!((p.width, p.height, p.center), (0.0, 0.0, [7.0, 8.0]));
        let s = min_area_rect(&[[0, 0], [3, 4]]).expect("segment");
        assert!((s.width - 5.0).abs() < 1e-12 && s.height == 0.0);
    }

    #[test]
    fn min_area_rect_of_diamond_is_rotated() {
        let r = min_area_rect(&[[0, -5], [5, 0], [0, 5], [-5, 0]]).expect("rect");
        let side = 50f64.sqrt();
        assert!((r.width - side).abs() < 1e-9 && (r.height - side).abs() < 1e-9);
        assert!((r.axis[0].abs() - r.axis[1].abs()).abs() < 1e-9);
    }

    #[test]
    fn calipers_match_brute_force_on_random_point_sets() {
        let mut rng = Rng::new(0x5eed);
        let mut hull = Vec::new();
        for round in 0..2000 {
            let n = 1 + rng.below(40) as usize;
            let spread = 1 + rng.below(if round % 2 == 0 { 6 } else { 500 }) as i64;
            let pts: Vec<IPt> = (0..n)
                .map(|_| {
                    [
                        rng.below(spread as u64) as i64,
                        rng.below(spread as u64) as i64,
                    ]
                })
                .collect();
            let mut work = pts.clone();
            convex_hull(&mut work, &mut hull);
            for w in 0..hull.len() {
                let (a, b, c) = (
                    hull[w],
                    hull[(w + 1) % hull.len()],
                    hull[(w + 2) % hull.len()],
                );
                if hull.len() >= 3 {
                    assert!(cross(a, b, c) > 0, "hull not strictly convex: {hull:?}");
                }
            }
            let rect = min_area_rect(&hull).expect("non-empty");
            for &p in &pts {
                assert!(inside(&rect, p), "{p:?} outside {rect:?} for {pts:?}");
            }
            if hull.len() >= 3 {
                let brute = brute_min_area(&pts, &hull);
                let area = rect.width * rect.height;
                assert!(
                    (area - brute).abs() <= 1e-6 * brute.max(1.0),
                    "calipers {area} vs brute {brute} for {pts:?}"
                );
            }
        }
    }

    #[test]
    fn row_span_of_axis_aligned_rectangle_is_inclusive() {
        let poly = [[2, 1], [6, 1], [6, 3], [2, 3]];
        assert_eq!(convex_row_span(&poly, 0), None);
        for y in 1..=3 {
            assert_eq!(convex_row_span(&poly, y), Some((2, 6)));
        }
        assert_eq!(convex_row_span(&poly, 4), None);
    }

    #[test]
    fn row_span_of_triangle_narrows() {
        let poly = [[0, 0], [10, 10], [0, 10]];
        assert_eq!(convex_row_span(&poly, 0), Some((0, 0)));
        assert_eq!(convex_row_span(&poly, 5), Some((0, 5)));
        assert_eq!(convex_row_span(&poly, 10), Some((0, 10)));
    }
}
