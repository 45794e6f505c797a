//! ByteTrack for one camera: every detection, high-score or low, gets a chance to continue a
//! track, in two passes. High-score boxes first meet all tracks (lost ones included); low-score
//! boxes then meet only tracks still unmatched, so an object whose score dips while it is
//! occluded keeps its ID instead of losing it. A track earns an ID after `min_hits` matches and
//! keeps it until it has gone unmatched for `max_age` frames (or `max_age_ms`).

use serde::{Deserialize, Serialize};

use crate::assign::assign;
use crate::kalman::Motion;

/// Tuning of the association and of track birth and death.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackerConfig {
    /// Boxes scoring at least this take part in the first pass and may start tracks.
    pub high_score: f32,
    /// Boxes scoring below this are not tracked at all.
    pub low_score: f32,
    /// A box not matched to any track starts one if it scores at least this.
    pub new_track_score: f32,
    /// Least IoU of a high-score box with a track's predicted box to continue it.
    pub iou_threshold: f32,
    /// Least IoU of a low-score box (second pass).
    pub low_iou_threshold: f32,
    /// Matches a new track needs before it gets an ID.
    pub min_hits: u32,
    /// Frames of the camera a track may go unmatched before it ends.
    pub max_age: u32,
    /// Time a track may go unmatched before it ends, besides `max_age`.
    pub max_age_ms: Option<u64>,
    /// Track each label on its own: a box continues only a track of its label.
    pub per_label: bool,
    /// Most tracks kept per camera; boxes beyond it start none (a flood of boxes cannot take
    /// the worker's memory).
    pub max_tracks: usize,
}

impl Default for TrackerConfig {
    /// ByteTrack's published defaults (track_thresh 0.5, match_thresh 0.8 as IoU 0.2, second
    /// pass 0.5, track_buffer 30 frames) with birth after two matches.
    fn default() -> Self {
        Self {
            high_score: 0.5,
            low_score: 0.1,
            new_track_score: 0.6,
            iou_threshold: 0.2,
            low_iou_threshold: 0.5,
            min_hits: 2,
            max_age: 30,
            max_age_ms: None,
            per_label: true,
            max_tracks: 4096,
        }
    }
}

/// A box given to the tracker.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    pub bbox: [f32; 4],
    pub score: f32,
    pub label: &'a str,
}

/// What the tracker says of a box that continues (or just confirmed) a track.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackView {
    pub id: u64,
    /// Time since the track's first box, in milliseconds of capture time.
    pub age_ms: u64,
    /// Boxes matched to the track so far, this one included.
    pub hits: u32,
    /// Velocity of the box centre, pixels per second.
    pub velocity: [f32; 2],
}

/// A track that ended: unmatched for longer than the configured age, or its camera ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackEnd {
    pub id: u64,
    pub label: String,
    /// Capture time of its first and last box.
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    pub duration_ms: u64,
    pub hits: u32,
    /// Distance its box centre travelled between matched boxes, in pixels.
    pub path_px: f64,
    /// Its last matched box.
    #[serde(rename = "box")]
    pub last_box: [f32; 4],
}

/// The result of one frame: a view per observation (in order; `None` for a box that continues
/// no confirmed track) and the tracks that ended.
#[derive(Debug, Default)]
pub struct Update {
    pub views: Vec<Option<TrackView>>,
    pub ended: Vec<TrackEnd>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    /// Seen fewer than `min_hits` times; has no ID yet.
    Tentative,
    /// Matched in the last frame.
    Tracked,
    /// Confirmed, unmatched for `misses` frames.
    Lost,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Track {
    id: Option<u64>,
    label: String,
    phase: Phase,
    motion: Motion,
    hits: u32,
    misses: u32,
    first_ts_ns: u64,
    last_ts_ns: u64,
    last_box: [f32; 4],
    path_px: f64,
}

impl Track {
    fn center(b: [f32; 4]) -> [f64; 2] {
        [f64::from(b[0] + b[2]) / 2.0, f64::from(b[1] + b[3]) / 2.0]
    }

    fn matched(&mut self, bbox: [f32; 4], ts_ns: u64) {
        self.motion.update(bbox);
        let ([x0, y0], [x1, y1]) = (Self::center(self.last_box), Self::center(bbox));
        self.path_px += (x1 - x0).hypot(y1 - y0);
        self.last_box = bbox;
        self.last_ts_ns = ts_ns;
        self.hits = self.hits.saturating_add(1);
        self.misses = 0;
    }

    fn view(&self, ts_ns: u64) -> Option<TrackView> {
        Some(TrackView {
            id: self.id?,
            age_ms: ts_ns.saturating_sub(self.first_ts_ns) / 1_000_000,
            hits: self.hits,
            velocity: self.motion.velocity(),
        })
    }

    fn end(&self) -> Option<TrackEnd> {
        Some(TrackEnd {
            id: self.id?,
            label: self.label.clone(),
            first_ts_ns: self.first_ts_ns,
            last_ts_ns: self.last_ts_ns,
            duration_ms: self.last_ts_ns.saturating_sub(self.first_ts_ns) / 1_000_000,
            hits: self.hits,
            path_px: self.path_px,
            last_box: self.last_box,
        })
    }
}

/// The tracks of one camera and the next ID it hands out. Serialisable whole: it is the state
/// that follows the camera to its next owner.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CameraTracker {
    next_id: u64,
    /// IDs end here for this owner (its tenure's range): not part of the state, which the
    /// next owner continues with its own range.
    #[serde(skip)]
    id_end: Option<u64>,
    last_ts_ns: Option<u64>,
    tracks: Vec<Track>,
}

/// Why a restored state was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("tracker state has {tracks} tracks, more than the {max} allowed")]
    TooManyTracks { tracks: usize, max: usize },
    #[error("tracker state holds a non-finite motion state")]
    NotFinite,
    #[error("tracker state reuses track ID {0}, not below its next ID {1}")]
    IdReused(u64, u64),
}

impl CameraTracker {
    /// A camera whose track IDs start at `first_id` (a new owner's range, so IDs issued by
    /// different owners never meet).
    pub fn starting_at(first_id: u64) -> Self {
        Self {
            next_id: first_id.max(1),
            ..Self::default()
        }
    }

    /// The ID the next confirmed track gets.
    pub fn next_id(&self) -> u64 {
        self.next_id.max(1)
    }

    /// Continues IDs from at least `first_id` (a new owner's range); never goes back.
    pub fn reserve_from(&mut self, first_id: u64) {
        self.next_id = self.next_id.max(first_id);
    }

    /// This owner hands out IDs from `first..end` only (its tenure of the camera): new tracks
    /// past the end stay unconfirmed rather than take an ID another owner may give.
    pub fn within(&mut self, first: u64, end: u64) {
        self.reserve_from(first);
        self.id_end = Some(end);
    }

    /// Capture time of the newest frame seen, in nanoseconds.
    pub fn last_ts_ns(&self) -> Option<u64> {
        self.last_ts_ns
    }

    /// Tracks held now: tentative, tracked and lost.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Checks a state read from elsewhere before it is used.
    pub fn check(&self, max_tracks: usize) -> Result<(), StateError> {
        if self.tracks.len() > max_tracks {
            return Err(StateError::TooManyTracks {
                tracks: self.tracks.len(),
                max: max_tracks,
            });
        }
        for t in &self.tracks {
            if !t.motion.is_finite() || !t.path_px.is_finite() {
                return Err(StateError::NotFinite);
            }
            if let Some(id) = t.id
                && id >= self.next_id
            {
                return Err(StateError::IdReused(id, self.next_id));
            }
        }
        Ok(())
    }

    /// Runs one frame captured at `ts_ns` (nanoseconds; frames of a camera come in capture
    /// order) through the tracker.
    pub fn update(
        &mut self,
        cfg: &TrackerConfig,
        ts_ns: u64,
        observations: &[Observation<'_>],
    ) -> Update {
        let dt_s = self
            .last_ts_ns
            .map_or(0.0, |last| ts_ns.saturating_sub(last) as f64 / 1e9);
        self.last_ts_ns = Some(self.last_ts_ns.map_or(ts_ns, |last| last.max(ts_ns)));
        for t in &mut self.tracks {
            t.motion.predict(dt_s);
        }
        let predicted: Vec<[f32; 4]> = self.tracks.iter().map(|t| t.motion.bbox()).collect();
        let boxes: Vec<[f32; 4]> = observations.iter().map(|o| o.bbox).collect();
        let same_group =
            |t: usize, o: usize| !cfg.per_label || self.tracks[t].label == observations[o].label;

        let mut track_of: Vec<Option<usize>> = vec![None; observations.len()];
        let mut matched = vec![false; self.tracks.len()];
        let high: Vec<usize> = (0..observations.len())
            .filter(|&o| observations[o].score >= cfg.high_score)
            .collect();
        let low: Vec<usize> = (0..observations.len())
            .filter(|&o| {
                let s = observations[o].score;
                s >= cfg.low_score && s < cfg.high_score
            })
            .collect();

        // Pass 1: high-score boxes against confirmed tracks, lost ones included.
        let confirmed: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| self.tracks[t].phase != Phase::Tentative)
            .collect();
        pass(
            &confirmed,
            &high,
            &predicted,
            &boxes,
            cfg.iou_threshold,
            &same_group,
            &mut matched,
            &mut track_of,
        );
        // Pass 2: low-score boxes against tracks matched last frame and not yet now.
        let unmatched_tracked: Vec<usize> = confirmed
            .iter()
            .copied()
            .filter(|&t| !matched[t] && self.tracks[t].phase == Phase::Tracked)
            .collect();
        pass(
            &unmatched_tracked,
            &low,
            &predicted,
            &boxes,
            cfg.low_iou_threshold,
            &same_group,
            &mut matched,
            &mut track_of,
        );
        // Pass 3: tentative tracks against the high-score boxes left.
        let tentative: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| self.tracks[t].phase == Phase::Tentative)
            .collect();
        let high_left: Vec<usize> = high
            .iter()
            .copied()
            .filter(|&o| track_of[o].is_none())
            .collect();
        // ByteTrack's match_thresh 0.7 for unconfirmed tracks.
        pass(
            &tentative,
            &high_left,
            &predicted,
            &boxes,
            cfg.iou_threshold.max(0.3),
            &same_group,
            &mut matched,
            &mut track_of,
        );

        for (o, t) in track_of.iter().enumerate() {
            if let Some(t) = *t {
                let track = &mut self.tracks[t];
                track.matched(observations[o].bbox, ts_ns);
                if track.phase == Phase::Tentative && track.hits < cfg.min_hits {
                    continue;
                }
                if track.id.is_none() {
                    let Some(id) = issue_id(&mut self.next_id, self.id_end) else {
                        continue;
                    };
                    track.id = Some(id);
                }
                track.phase = Phase::Tracked;
            }
        }

        // Unmatched: tentative tracks die quietly, confirmed ones are lost and may end.
        let mut ended = Vec::new();
        let mut keep = Vec::with_capacity(self.tracks.len());
        let mut new_index = vec![usize::MAX; self.tracks.len()];
        for (t, mut track) in std::mem::take(&mut self.tracks).into_iter().enumerate() {
            if !matched[t] {
                if track.phase == Phase::Tentative {
                    continue;
                }
                track.phase = Phase::Lost;
                track.misses = track.misses.saturating_add(1);
                let too_old_ms = cfg
                    .max_age_ms
                    .is_some_and(|max| ts_ns.saturating_sub(track.last_ts_ns) / 1_000_000 > max);
                if track.misses > cfg.max_age || too_old_ms {
                    ended.extend(track.end());
                    continue;
                }
            }
            new_index[t] = keep.len();
            keep.push(track);
        }
        self.tracks = keep;

        let mut views = vec![None; observations.len()];
        for (o, t) in track_of.iter().enumerate() {
            if let Some(t) = *t
                && let Some(track) = self.tracks.get(new_index[t])
            {
                views[o] = track.view(ts_ns);
            }
        }

        // New tracks from high-score boxes that continued nothing.
        for o in high {
            if track_of[o].is_some()
                || observations[o].score < cfg.new_track_score
                || self.tracks.len() >= cfg.max_tracks
            {
                continue;
            }
            let bbox = observations[o].bbox;
            let mut track = Track {
                id: None,
                label: observations[o].label.to_owned(),
                phase: Phase::Tentative,
                motion: Motion::new(bbox),
                hits: 1,
                misses: 0,
                first_ts_ns: ts_ns,
                last_ts_ns: ts_ns,
                last_box: bbox,
                path_px: 0.0,
            };
            if cfg.min_hits <= 1
                && let Some(id) = issue_id(&mut self.next_id, self.id_end)
            {
                track.id = Some(id);
                track.phase = Phase::Tracked;
                views[o] = track.view(ts_ns);
            }
            self.tracks.push(track);
        }
        Update { views, ended }
    }

    /// Ends tracks unmatched for longer than `max_age_ms` by `now_ts_ns`, for a camera that
    /// sends no frames (time passes for it all the same).
    pub fn expire(&mut self, cfg: &TrackerConfig, now_ts_ns: u64) -> Vec<TrackEnd> {
        let Some(max) = cfg.max_age_ms else {
            return Vec::new();
        };
        let mut ended = Vec::new();
        self.tracks.retain(|t| {
            let old = now_ts_ns.saturating_sub(t.last_ts_ns) / 1_000_000 > max;
            if old {
                ended.extend(t.end());
            }
            !old
        });
        ended
    }

    /// Ends every track (the camera's stream ended).
    pub fn end_all(&mut self) -> Vec<TrackEnd> {
        std::mem::take(&mut self.tracks)
            .iter()
            .filter_map(Track::end)
            .collect()
    }
}

/// The next ID of a camera, which is never given again (IDs start at 1); `None` once the
/// owner's range (ending at `end`) is used up.
fn issue_id(next_id: &mut u64, end: Option<u64>) -> Option<u64> {
    let id = (*next_id).max(1);
    if end.is_some_and(|end| id >= end) || id == u64::MAX {
        return None;
    }
    *next_id = id + 1;
    Some(id)
}

/// One association pass: matches `tracks` to `observations` (indices) and records the pairs.
#[allow(clippy::too_many_arguments)]
fn pass(
    tracks: &[usize],
    observations: &[usize],
    predicted: &[[f32; 4]],
    boxes: &[[f32; 4]],
    threshold: f32,
    same_group: &impl Fn(usize, usize) -> bool,
    matched: &mut [bool],
    track_of: &mut [Option<usize>],
) {
    if tracks.is_empty() || observations.is_empty() {
        return;
    }
    let tb: Vec<[f32; 4]> = tracks.iter().map(|&t| predicted[t]).collect();
    let ob: Vec<[f32; 4]> = observations.iter().map(|&o| boxes[o]).collect();
    for (i, j) in assign(&tb, &ob, threshold, |i, j| {
        same_group(tracks[i], observations[j])
    }) {
        matched[tracks[i]] = true;
        track_of[observations[j]] = Some(tracks[i]);
    }
}
