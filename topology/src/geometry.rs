//! Plane geometry of zones and lines, in image coordinates (x right, y down), shared by the
//! topology's checks (a zone's polygon must not cross itself) and the analytics stage (is a
//! point in a zone, did a step cross a line). Hand-written: four functions of a few lines each,
//! where `geo` would bring a tree of crates (i_overlay, rstar, geographiclib) for them.

/// `[x, y]`.
pub type Point = [f64; 2];

/// Twice the signed area of the triangle `o, a, b`: positive when `b` lies to the right of the
/// direction `o → a` as seen on screen (y pointing down), negative to the left, zero on it.
pub fn cross(o: Point, a: Point, b: Point) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Whether `p` is inside `polygon` (even-odd rule; a point on an edge may go either way).
pub fn contains(polygon: &[Point], p: Point) -> bool {
    let mut inside = false;
    let n = polygon.len();
    for i in 0..n {
        let (a, b) = (polygon[i], polygon[(i + 1) % n]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                inside = !inside;
            }
        }
    }
    inside
}

/// Whether segments `p1 p2` and `q1 q2` share a point (touching and collinear overlap count).
pub fn segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool {
    let d1 = cross(q1, q2, p1);
    let d2 = cross(q1, q2, p2);
    let d3 = cross(p1, p2, q1);
    let d4 = cross(p1, p2, q2);
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    {
        return true;
    }
    let on = |a: Point, b: Point, p: Point, d: f64| {
        d == 0.0
            && p[0] >= a[0].min(b[0])
            && p[0] <= a[0].max(b[0])
            && p[1] >= a[1].min(b[1])
            && p[1] <= a[1].max(b[1])
    };
    on(q1, q2, p1, d1) || on(q1, q2, p2, d2) || on(p1, p2, q1, d3) || on(p1, p2, q2, d4)
}

/// The first pair of edges (by index; edge `i` runs from corner `i` to corner `i+1`) of
/// `polygon` that meet other than at their shared corner, if any: a polygon that crosses
/// itself has no well-defined inside.
pub fn self_intersection(polygon: &[Point]) -> Option<(usize, usize)> {
    let n = polygon.len();
    if n < 4 {
        return None;
    }
    for i in 0..n {
        for j in i + 1..n {
            // Neighbouring edges share a corner by construction.
            if j == i + 1 || (i == 0 && j == n - 1) {
                continue;
            }
            let (a1, a2) = (polygon[i], polygon[(i + 1) % n]);
            let (b1, b2) = (polygon[j], polygon[(j + 1) % n]);
            if segments_intersect(a1, a2, b1, b2) {
                return Some((i, j));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARE: [Point; 4] = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]];

    #[test]
    fn points_in_and_out_of_a_polygon() {
        assert!(contains(&SQUARE, [5.0, 5.0]));
        assert!(!contains(&SQUARE, [15.0, 5.0]));
        assert!(!contains(&SQUARE, [5.0, -0.1]));
        // A concave L: the notch is outside.
        let l = [
            [0.0, 0.0],
            [10.0, 0.0],
            [10.0, 4.0],
            [4.0, 4.0],
            [4.0, 10.0],
            [0.0, 10.0],
        ];
        assert!(contains(&l, [2.0, 8.0]));
        assert!(!contains(&l, [8.0, 8.0]));
    }

    #[test]
    fn sides_follow_the_screen() {
        // Walking right along y = 0, a point below (larger y) is on the right.
        assert!(cross([0.0, 0.0], [1.0, 0.0], [0.5, 1.0]) > 0.0);
        assert!(cross([0.0, 0.0], [1.0, 0.0], [0.5, -1.0]) < 0.0);
    }

    #[test]
    fn crossing_segments_and_polygons() {
        assert!(segments_intersect(
            [0.0, 0.0],
            [2.0, 2.0],
            [0.0, 2.0],
            [2.0, 0.0]
        ));
        assert!(!segments_intersect(
            [0.0, 0.0],
            [1.0, 0.0],
            [0.0, 1.0],
            [1.0, 1.0]
        ));
        // Touching at an end counts.
        assert!(segments_intersect(
            [0.0, 0.0],
            [1.0, 1.0],
            [1.0, 1.0],
            [2.0, 0.0]
        ));
        assert_eq!(self_intersection(&SQUARE), None);
        // A bow tie: edges 0 and 2 cross.
        let bow = [[0.0, 0.0], [10.0, 10.0], [10.0, 0.0], [0.0, 10.0]];
        assert_eq!(self_intersection(&bow), Some((0, 2)));
    }
}
