//! The `tracker` stage: a [`CameraTracker`] per camera behind the stage lifecycle. Boxes leave
//! with their track (`track_id`, age, velocity); ended tracks become `track_end` events; a
//! camera's tracks are its state, saved and restored as the camera moves between workers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use panoptes_contracts::camera::CameraId;
use panoptes_contracts::detection::TrackInfo;
use panoptes_contracts::event::{Event, EventKind, TrackSummary};
use panoptes_contracts::stage::{IdRange, Item, Payload, Stage, StageError};

use crate::{CameraTracker, Observation, TrackEnd, TrackerConfig, decode_state, encode_state};

/// How often the stage looks for tracks of silent cameras to end.
pub const TICK: Duration = Duration::from_millis(250);

/// Why a topology's tracker stage cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("tracker stage {stage:?}: {message}")]
    Invalid { stage: String, message: String },
}

/// Builds the stage a topology's `kind: tracker` declares.
pub fn build(cfg: &panoptes_topology::TrackerStage) -> Result<TrackerStage, BuildError> {
    let fail = |message: String| BuildError::Invalid {
        stage: cfg.id.clone(),
        message,
    };
    let unit = |name: &str, v: f64| {
        if (0.0..=1.0).contains(&v) {
            Ok(v as f32)
        } else {
            Err(fail(format!("{name} must be between 0 and 1, not {v}")))
        }
    };
    let tracker = TrackerConfig {
        high_score: unit("high_score", cfg.high_score)?,
        low_score: unit("low_score", cfg.low_score)?,
        new_track_score: unit("new_track_score", cfg.new_track_score)?,
        iou_threshold: unit("iou_threshold", cfg.iou_threshold)?,
        low_iou_threshold: unit("low_iou_threshold", cfg.low_iou_threshold)?,
        min_hits: cfg.min_hits.max(1),
        max_age: cfg.max_age,
        max_age_ms: cfg.max_age_ms,
        per_label: cfg.per_label,
        max_tracks: cfg.max_tracks.max(1) as usize,
    };
    if tracker.low_score > tracker.high_score {
        return Err(fail(format!(
            "low_score {} is above high_score {}",
            cfg.low_score, cfg.high_score
        )));
    }
    Ok(TrackerStage::new(&cfg.id, tracker)
        .snapshot_every(Duration::from_millis(cfg.snapshot_interval_ms.max(100))))
}

/// Tracks each camera's boxes; see the module docs.
pub struct TrackerStage {
    id: String,
    cfg: TrackerConfig,
    cameras: HashMap<CameraId, Camera>,
    events: Vec<Event>,
    snapshot_every: Duration,
}

struct Camera {
    tracker: CameraTracker,
    /// When (worker clock) its newest frame was processed, to tell how long it has been
    /// silent in capture time: `last_ts_ns + (now - seen_at)`.
    seen_at: Option<Instant>,
    /// Mean capture interval of its recent frames, nanoseconds (for ending the tracks of a
    /// silent camera after `max_age` frames' worth of time).
    interval_ns: Option<f64>,
}

impl Camera {
    fn new(ids: IdRange) -> Self {
        let mut tracker = CameraTracker::starting_at(ids.first);
        tracker.within(ids.first, ids.end);
        Self {
            tracker,
            seen_at: None,
            interval_ns: None,
        }
    }
}

impl TrackerStage {
    pub fn new(id: &str, cfg: TrackerConfig) -> Self {
        Self {
            id: id.to_owned(),
            cfg,
            cameras: HashMap::new(),
            events: Vec::new(),
            snapshot_every: Duration::from_secs(1),
        }
    }

    /// How often the worker saves each camera's state.
    pub fn snapshot_every(mut self, every: Duration) -> Self {
        self.snapshot_every = every;
        self
    }

    /// Cameras with state here now.
    pub fn cameras(&self) -> usize {
        self.cameras.len()
    }

    fn ended(&mut self, camera: &CameraId, seq: Option<u64>, ended: Vec<TrackEnd>) {
        for end in ended {
            let mut event = Event::new(
                camera.as_str(),
                EventKind::TrackEnd,
                format!(
                    "track {} ({}) ended after {} ms, {:.0} px",
                    end.id, end.label, end.duration_ms, end.path_px
                ),
            )
            .stage(&self.id);
            event.seq = seq;
            event.track = Some(TrackSummary {
                track_id: end.id,
                label: end.label,
                first_ts_ns: end.first_ts_ns,
                last_ts_ns: end.last_ts_ns,
                duration_ms: end.duration_ms,
                hits: end.hits,
                path_px: end.path_px,
                bbox: end.last_box,
            });
            self.events.push(event);
        }
    }
}

impl Stage for TrackerStage {
    fn id(&self) -> &str {
        &self.id
    }

    fn process(&mut self, mut item: Item) -> Result<Item, StageError> {
        let Payload::Detections(detections) = &mut item.payload else {
            return Err(StageError::WrongInput {
                expected: "detections",
                got: item.payload.kind(),
            });
        };
        let camera = item.frame.camera.clone();
        let ts_ns = item.frame.capture_ts_ns;
        let state = self
            .cameras
            .entry(camera.clone())
            .or_insert_with(|| Camera::new(IdRange::of_tenure(0)));
        if let Some(last) = state.tracker.last_ts_ns()
            && ts_ns > last
        {
            let dt = (ts_ns - last) as f64;
            state.interval_ns = Some(state.interval_ns.map_or(dt, |m| 0.8 * m + 0.2 * dt));
        }
        state.seen_at = Some(Instant::now());
        let observations: Vec<Observation<'_>> = detections
            .iter()
            .map(|d| Observation {
                bbox: d.bbox,
                score: d.score,
                label: &d.label,
            })
            .collect();
        let update = state.tracker.update(&self.cfg, ts_ns, &observations);
        drop(observations);
        for (d, view) in detections.iter_mut().zip(update.views) {
            d.track = view.map(|v| TrackInfo {
                track_id: v.id,
                track_age_ms: v.age_ms,
                velocity: v.velocity,
            });
        }
        let seq = item.frame.seq;
        self.ended(&camera, Some(seq), update.ended);
        Ok(item)
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TICK)
    }

    /// Ends the tracks of cameras that went silent: unmatched for `max_age_ms`, or for
    /// `max_age` of the camera's recent frame intervals, of capture time extrapolated from
    /// its last frame.
    fn tick(&mut self, now: Instant) -> Vec<Item> {
        let mut all = Vec::new();
        for (camera, state) in &mut self.cameras {
            let (Some(seen_at), Some(last_ts)) = (state.seen_at, state.tracker.last_ts_ns()) else {
                continue;
            };
            let max_age_ms = self.cfg.max_age_ms.or_else(|| {
                state
                    .interval_ns
                    .map(|i| (i * f64::from(self.cfg.max_age) / 1e6).ceil() as u64)
            });
            let Some(max_age_ms) = max_age_ms else {
                continue;
            };
            let silent = now.saturating_duration_since(seen_at);
            let now_ts = last_ts.saturating_add(silent.as_nanos() as u64);
            let cfg = TrackerConfig {
                max_age_ms: Some(max_age_ms),
                ..self.cfg.clone()
            };
            let ended = state.tracker.expire(&cfg, now_ts);
            if !ended.is_empty() {
                all.push((camera.clone(), ended));
            }
        }
        for (camera, ended) in all {
            self.ended(&camera, None, ended);
        }
        Vec::new()
    }

    fn snapshot_interval(&self) -> Option<Duration> {
        Some(self.snapshot_every)
    }

    fn snapshot(&self, camera: &CameraId) -> Option<Vec<u8>> {
        self.cameras
            .get(camera)
            .map(|state| encode_state(&state.tracker))
    }

    fn restore(
        &mut self,
        camera: &CameraId,
        state: Option<&[u8]>,
        ids: IdRange,
    ) -> Result<(), StageError> {
        let mut fresh = Camera::new(ids);
        if let Some(bytes) = state {
            let mut tracker = decode_state(bytes, self.cfg.max_tracks).map_err(|e| {
                StageError::InvalidInput(format!("saved state of camera {camera}: {e}"))
            })?;
            if tracker.next_id() >= ids.end {
                return Err(StageError::InvalidInput(format!(
                    "saved state of camera {camera} hands out track ID {}, beyond this tenure's range {}..{}",
                    tracker.next_id(),
                    ids.first,
                    ids.end
                )));
            }
            tracker.within(ids.first, ids.end);
            fresh.tracker = tracker;
        }
        self.cameras.insert(camera.clone(), fresh);
        Ok(())
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The camera moved to another worker (which continues its tracks from the saved state)
    /// or went idle (its tracks already ended on the tick): nothing to report.
    fn forget(&mut self, camera: &CameraId) {
        self.cameras.remove(camera);
    }
}
