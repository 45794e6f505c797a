//! Assignment of tracks to detections by IoU: candidate pairs above a threshold, split into
//! groups that share no box, each group solved optimally (Kuhn-Munkres, maximum total IoU).
//! Boxes far apart never meet in one matrix, so a crowded frame costs little more than the
//! pairs that actually overlap.

use pathfinding::prelude::{Matrix, kuhn_munkres};

/// Intersection over union of two `[x1, y1, x2, y2]` boxes; 0 for empty or disjoint ones.
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    if inter <= 0.0 {
        return 0.0;
    }
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// IoU is scaled to integers for the solver; this resolution ranks any two distinct IoUs a
/// tracker could tell apart.
const SCALE: f32 = 1_000_000.0;

/// Pairs `(track, detection)` maximising the total IoU, each with IoU ≥ `threshold`, where
/// `compatible(track, detection)` (same label, say) allows the pair.
pub fn assign(
    tracks: &[[f32; 4]],
    detections: &[[f32; 4]],
    threshold: f32,
    compatible: impl Fn(usize, usize) -> bool,
) -> Vec<(usize, usize)> {
    let mut edges = Vec::new();
    for (t, &tb) in tracks.iter().enumerate() {
        for (d, &db) in detections.iter().enumerate() {
            // Cheap rejection before the division.
            if tb[0] >= db[2] || db[0] >= tb[2] || tb[1] >= db[3] || db[1] >= tb[3] {
                continue;
            }
            let overlap = iou(tb, db);
            if overlap >= threshold && overlap > 0.0 && compatible(t, d) {
                edges.push((t, d, overlap));
            }
        }
    }
    if edges.is_empty() {
        return Vec::new();
    }
    // Connected groups of tracks and detections (union-find; detections follow the tracks).
    let n = tracks.len() + detections.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for &(t, d, _) in &edges {
        let (a, b) = (root(&mut parent, t), root(&mut parent, tracks.len() + d));
        if a != b {
            parent[a] = b;
        }
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<(usize, usize, f32)>> =
        std::collections::BTreeMap::new();
    for &(t, d, overlap) in &edges {
        let r = root(&mut parent, t);
        groups.entry(r).or_default().push((t, d, overlap));
    }
    let mut pairs = Vec::new();
    for group in groups.into_values() {
        if let [(t, d, _)] = group[..] {
            pairs.push((t, d));
            continue;
        }
        pairs.extend(solve(&group));
    }
    pairs.sort_unstable();
    pairs
}

/// The optimal matching of one group of overlapping tracks and detections.
fn solve(group: &[(usize, usize, f32)]) -> Vec<(usize, usize)> {
    let mut ts: Vec<usize> = group.iter().map(|e| e.0).collect();
    let mut ds: Vec<usize> = group.iter().map(|e| e.1).collect();
    ts.sort_unstable();
    ts.dedup();
    ds.sort_unstable();
    ds.dedup();
    // The solver wants no more rows than columns.
    let transpose = ts.len() > ds.len();
    let (rows, cols) = if transpose { (&ds, &ts) } else { (&ts, &ds) };
    let mut weights = Matrix::new(rows.len(), cols.len(), 0i64);
    for &(t, d, overlap) in group {
        let (r, c) = if transpose { (d, t) } else { (t, d) };
        if let (Ok(r), Ok(c)) = (rows.binary_search(&r), cols.binary_search(&c)) {
            weights[(r, c)] = (overlap * SCALE) as i64;
        }
    }
    let (_, assignment) = kuhn_munkres(&weights);
    assignment
        .iter()
        .enumerate()
        .filter(|&(r, &c)| weights[(r, c)] > 0)
        .map(|(r, &c)| {
            if transpose {
                (cols[c], rows[r])
            } else {
                (rows[r], cols[c])
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]), 0.0);
        let half = iou([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]);
        assert!((half - 1.0 / 3.0).abs() < 1e-6, "{half}");
    }

    /// Greedy matching would give track 0 the detection it overlaps most and leave track 1
    /// without one; the optimum serves both.
    #[test]
    fn the_total_overlap_wins_over_the_best_single_pair() {
        let tracks = [[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]];
        let dets = [[3.0, 0.0, 13.0, 10.0], [-1.0, 0.0, 9.0, 10.0]];
        let pairs = assign(&tracks, &dets, 0.1, |_, _| true);
        assert_eq!(pairs, vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn pairs_under_the_threshold_or_incompatible_stay_apart() {
        let tracks = [[0.0, 0.0, 10.0, 10.0], [100.0, 0.0, 110.0, 10.0]];
        let dets = [[8.0, 0.0, 18.0, 10.0], [100.0, 0.0, 110.0, 10.0]];
        assert_eq!(assign(&tracks, &dets, 0.3, |_, _| true), vec![(1, 1)]);
        assert!(assign(&tracks, &dets, 0.3, |_, _| false).is_empty());
    }

    /// More detections than tracks and the other way round.
    #[test]
    fn uneven_groups() {
        let tracks = [[0.0, 0.0, 10.0, 10.0]];
        let dets = [
            [1.0, 0.0, 11.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
            [2.0, 0.0, 12.0, 10.0],
        ];
        assert_eq!(assign(&tracks, &dets, 0.1, |_, _| true), vec![(0, 1)]);
        assert_eq!(assign(&dets, &tracks, 0.1, |_, _| true), vec![(1, 0)]);
    }
}
