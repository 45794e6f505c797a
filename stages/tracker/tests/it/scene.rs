//! A scripted scene: objects moving along straight paths at known speeds, so every frame's
//! ground truth is known; and the identity metrics (IDF1, ID switches) tracking is judged by.

use std::collections::BTreeMap;

use panoptes_tracker::{CameraTracker, Observation, TrackerConfig};

/// Frames 33.3 ms apart (30 fps), as nanoseconds.
pub const FRAME_NS: u64 = 33_333_333;

/// An object of the scene: where its box is at frame `f`, while `frames` contains `f`.
pub struct Object {
    pub label: &'static str,
    pub start: [f32; 2],
    /// Pixels per frame.
    pub speed: [f32; 2],
    pub size: [f32; 2],
    pub frames: std::ops::Range<u32>,
    pub score: fn(u32) -> f32,
}

impl Object {
    pub fn bbox(&self, f: u32) -> Option<[f32; 4]> {
        if !self.frames.contains(&f) {
            return None;
        }
        let x = self.start[0] + self.speed[0] * f as f32;
        let y = self.start[1] + self.speed[1] * f as f32;
        Some([x, y, x + self.size[0], y + self.size[1]])
    }
}

pub fn steady(_: u32) -> f32 {
    0.9
}

/// Per frame: for each ground-truth object visible, the track ID the tracker gave its box.
pub type Assignments = Vec<BTreeMap<usize, Option<u64>>>;

/// Runs `frames` frames of `objects` through one camera's tracker; `jitter` moves each box by
/// a deterministic pixel offset, as a detector's boxes wobble.
pub fn run(
    objects: &[Object],
    frames: u32,
    cfg: &TrackerConfig,
    tracker: &mut CameraTracker,
    from: u32,
) -> Assignments {
    let mut out = Vec::new();
    for f in from..frames {
        let mut truth = Vec::new();
        let mut boxes = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            if let Some(mut b) = o.bbox(f) {
                let wobble = ((f as usize * 7 + i * 13) % 5) as f32 - 2.0;
                b[0] += wobble * 0.5;
                b[2] += wobble * 0.5;
                b[1] -= wobble * 0.3;
                truth.push(i);
                boxes.push((b, (o.score)(f), o.label));
            }
        }
        let obs: Vec<Observation<'_>> = boxes
            .iter()
            .map(|&(bbox, score, label)| Observation { bbox, score, label })
            .collect();
        let update = tracker.update(cfg, u64::from(f) * FRAME_NS, &obs);
        let mut frame = BTreeMap::new();
        for (k, &i) in truth.iter().enumerate() {
            frame.insert(i, update.views[k].as_ref().map(|v| v.id));
        }
        out.push(frame);
    }
    out
}

/// Identity metrics over a run.
#[derive(Debug)]
pub struct Identity {
    /// IDF1: the F1 score of boxes given the ID matched to their object (one-to-one).
    pub idf1: f64,
    /// Times an object's ID changed from one frame where it had one to the next.
    pub switches: usize,
    /// Per object: the share of the frames it was visible in that carried its main ID.
    pub coverage: Vec<f64>,
}

pub fn identity(run: &Assignments, objects: usize) -> Identity {
    // Frames per (object, id), and what each object was given over time.
    let mut counts: BTreeMap<(usize, u64), usize> = BTreeMap::new();
    let mut visible = vec![0usize; objects];
    let mut predicted = 0usize;
    let mut switches = 0;
    let mut last: Vec<Option<u64>> = vec![None; objects];
    for frame in run {
        for (&o, &id) in frame {
            visible[o] += 1;
            if let Some(id) = id {
                predicted += 1;
                *counts.entry((o, id)).or_default() += 1;
                if last[o].is_some_and(|l| l != id) {
                    switches += 1;
                }
                last[o] = Some(id);
            }
        }
    }
    // One-to-one object ↔ ID matching maximising shared frames (greedy on a few objects is
    // optimal only by luck, so take the solver).
    let ids: Vec<u64> = {
        let mut v: Vec<u64> = counts.keys().map(|&(_, id)| id).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut idtp = 0usize;
    if !ids.is_empty() {
        let (rows, cols) = (objects, ids.len().max(objects));
        let mut w = pathfinding::prelude::Matrix::new(rows, cols, 0i64);
        for (&(o, id), &n) in &counts {
            if let Ok(c) = ids.binary_search(&id) {
                w[(o, c)] = n as i64;
            }
        }
        let (total, _) = pathfinding::prelude::kuhn_munkres(&w);
        idtp = total as usize;
    }
    let gt: usize = visible.iter().sum();
    let idf1 = 2.0 * idtp as f64 / (gt + predicted) as f64;
    let coverage = (0..objects)
        .map(|o| {
            let best = counts
                .iter()
                .filter(|((obj, _), _)| *obj == o)
                .map(|(_, &n)| n)
                .max()
                .unwrap_or(0);
            best as f64 / visible[o].max(1) as f64
        })
        .collect();
    Identity {
        idf1,
        switches,
        coverage,
    }
}
