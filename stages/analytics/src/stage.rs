//! The `analytics` stage: each camera's tracked boxes against its zones and lines. Boxes pass
//! through unchanged; what they did becomes `analytics/v1` events, occupancy gauges and
//! crossing counters; time rules (dwell, a silent camera's tracks ending) run on the tick.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use panoptes_contracts::analytics::{ANALYTICS_SCHEMA, AnalyticsEvent, AnalyticsKind};
use panoptes_contracts::camera::CameraId;
use panoptes_contracts::meter;
use panoptes_contracts::stage::{IdRange, Item, Payload, Stage, StageError};
use panoptes_topology::{Anchor, CameraConfig};

use crate::camera::{CameraAnalytics, Limits, Observed};
use crate::rules::Rules;

/// How often time rules run.
pub const TICK: Duration = Duration::from_millis(250);
/// Names the state format; another is refused.
const STATE_FORMAT: &str = "panoptes.analytics";
const STATE_VERSION: u32 = 1;
/// Largest state read back.
const MAX_STATE_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("analytics stage {stage:?}: no camera of the topology has zones or lines")]
    NothingToWatch { stage: String },
}

/// Builds the stage a topology's `kind: analytics` declares, over the topology's cameras'
/// zones and lines.
pub fn build(
    cfg: &panoptes_topology::AnalyticsStage,
    cameras: &[CameraConfig],
) -> Result<AnalyticsStage, BuildError> {
    let cameras: HashMap<String, CameraConfig> = cameras
        .iter()
        .filter(|c| !c.zones.is_empty() || !c.lines.is_empty())
        .map(|c| (c.id.clone(), c.clone()))
        .collect();
    if cameras.is_empty() {
        return Err(BuildError::NothingToWatch {
            stage: cfg.id.clone(),
        });
    }
    Ok(AnalyticsStage {
        id: cfg.id.clone(),
        anchor: cfg.anchor,
        limits: Limits {
            max_age: cfg.max_age,
            max_age_ms: cfg.max_age_ms,
        },
        save_every: Duration::from_millis(cfg.snapshot_interval_ms.max(100)),
        configs: cameras,
        cameras: HashMap::new(),
        events: Vec::new(),
        gauges: BTreeSet::new(),
    })
}

/// See the module docs.
pub struct AnalyticsStage {
    id: String,
    anchor: Anchor,
    limits: Limits,
    save_every: Duration,
    /// The topology's cameras that have zones or lines.
    configs: HashMap<String, CameraConfig>,
    cameras: HashMap<CameraId, Camera>,
    events: Vec<AnalyticsEvent>,
    /// Occupancy gauges set so far, `(camera, zone, label)`: set back to 0 when emptied.
    gauges: BTreeSet<(String, String, String)>,
}

struct Camera {
    /// In pixels of this camera's frames (known from its first frame).
    rules: Option<Rules>,
    state: CameraAnalytics,
    /// When (worker clock) the first tick after its newest frame came: how long it has been
    /// silent is measured from there (at most one tick late).
    seen_at: Option<Instant>,
    interval_ns: Option<f64>,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: &'a str,
    version: u32,
    state: &'a CameraAnalytics,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    format: String,
    version: u32,
    state: serde_json::Value,
}

fn anchor_of(anchor: Anchor, b: [f32; 4]) -> [f64; 2] {
    let x = f64::from(b[0] + b[2]) / 2.0;
    match anchor {
        Anchor::BottomCenter => [x, f64::from(b[3])],
        Anchor::Center => [x, f64::from(b[1] + b[3]) / 2.0],
    }
}

impl AnalyticsStage {
    fn camera(&mut self, camera: &CameraId) -> &mut Camera {
        self.cameras
            .entry(camera.clone())
            .or_insert_with(|| Camera {
                rules: None,
                state: CameraAnalytics::default(),
                seen_at: None,
                interval_ns: None,
            })
    }

    fn publish(&mut self, camera: &CameraId, observed: Vec<Observed>) {
        for o in observed {
            let kind = o.kind.name();
            metrics::counter!(meter::ANALYTICS_EVENTS, "camera" => camera.to_string(), "place" => o.place.clone(), "label" => o.label.clone(), "kind" => kind).increment(1);
            if let Some(direction) = o.direction {
                metrics::counter!(meter::LINE_CROSSINGS, "camera" => camera.to_string(), "line" => o.place.clone(), "label" => o.label.clone(), "direction" => direction.name()).increment(1);
            }
            let (zone, line) = match o.kind {
                AnalyticsKind::LineCross => (None, Some(o.place.clone())),
                _ => (Some(o.place.clone()), None),
            };
            self.events.push(AnalyticsEvent {
                schema: ANALYTICS_SCHEMA.to_owned(),
                id: format!(
                    "{camera}:{}:{kind}:{}:{}:{}",
                    self.id, o.place, o.track_id, o.seq
                ),
                kind: o.kind,
                camera: camera.to_string(),
                stage: self.id.clone(),
                zone,
                line,
                direction: o.direction,
                track_id: o.track_id,
                label: o.label,
                seq: o.seq,
                capture_ts_ns: o.capture_ts_ns,
                ts_ns: o.ts_ns,
                dwell_ms: o.dwell_ms,
                ended: o.ended,
                point: [o.point[0] as f32, o.point[1] as f32],
            });
        }
        self.occupancy(camera);
    }

    /// Sets the camera's zone occupancy gauges (zero for zones emptied since).
    fn occupancy(&mut self, camera: &CameraId) {
        let Some(cam) = self.cameras.get(camera) else {
            return;
        };
        let Some(rules) = &cam.rules else {
            return;
        };
        let mut now = BTreeSet::new();
        for (zone, label, n) in cam.state.occupancy(rules) {
            let key = (camera.to_string(), zone.to_owned(), label);
            metrics::gauge!(meter::ZONE_OCCUPANCY, "camera" => key.0.clone(), "zone" => key.1.clone(), "label" => key.2.clone()).set(n as f64);
            now.insert(key);
        }
        let emptied: Vec<_> = self
            .gauges
            .iter()
            .filter(|k| k.0 == camera.as_str() && !now.contains(*k))
            .cloned()
            .collect();
        for key in emptied {
            metrics::gauge!(meter::ZONE_OCCUPANCY, "camera" => key.0.clone(), "zone" => key.1.clone(), "label" => key.2.clone()).set(0.0);
        }
        self.gauges.extend(now);
    }
}

impl Stage for AnalyticsStage {
    fn id(&self) -> &str {
        &self.id
    }

    fn process(&mut self, item: Item) -> Result<Item, StageError> {
        let Payload::Detections(detections) = &item.payload else {
            return Err(StageError::WrongInput {
                expected: "detections",
                got: item.payload.kind(),
            });
        };
        let camera = item.frame.camera.clone();
        let Some(config) = self.configs.get(camera.as_str()) else {
            // A camera without zones or lines (e.g. added at runtime): nothing to watch.
            return Ok(item);
        };
        let rules = Rules::of_camera(config, item.frame.width, item.frame.height);
        let (anchor, limits) = (self.anchor, self.limits);
        let tracked: Vec<(u64, &str, [f64; 2])> = detections
            .iter()
            .filter_map(|d| {
                d.track
                    .map(|t| (t.track_id, d.label.as_str(), anchor_of(anchor, d.bbox)))
            })
            .collect();
        let (seq, ts_ns) = (item.frame.seq, item.frame.capture_ts_ns);
        let cam = self.camera(&camera);
        if let Some(last) = cam.state.last_ts_ns()
            && ts_ns > last
        {
            let dt = (ts_ns - last) as f64;
            cam.interval_ns = Some(cam.interval_ns.map_or(dt, |m| 0.8 * m + 0.2 * dt));
        }
        // Stamped by the next tick, on the worker's clock (which tests pause).
        cam.seen_at = None;
        let rules = cam.rules.insert(rules);
        let observed = cam.state.frame(rules, limits, seq, ts_ns, &tracked);
        self.publish(&camera, observed);
        Ok(item)
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TICK)
    }

    /// Dwell thresholds that ran out and tracks of silent cameras that ended, in capture
    /// time extrapolated from each camera's last frame by the worker's clock.
    fn tick(&mut self, now: Instant) -> Vec<Item> {
        let limits = self.limits;
        let mut all = Vec::new();
        for (camera, cam) in &mut self.cameras {
            // The first tick after a frame stamps it; time runs from there.
            let seen_at = *cam.seen_at.get_or_insert(now);
            let (Some(last_ts), Some(rules)) = (cam.state.last_ts_ns(), &cam.rules) else {
                continue;
            };
            let now_ts =
                last_ts.saturating_add(now.saturating_duration_since(seen_at).as_nanos() as u64);
            let max_age_ms = limits.max_age_ms.or_else(|| {
                cam.interval_ns
                    .map(|i| (i * f64::from(limits.max_age) / 1e6).ceil() as u64)
            });
            let observed = cam.state.tick(rules, max_age_ms, now_ts);
            if !observed.is_empty() {
                all.push((camera.clone(), observed));
            }
        }
        for (camera, observed) in all {
            self.publish(&camera, observed);
        }
        Vec::new()
    }

    fn take_analytics(&mut self) -> Vec<AnalyticsEvent> {
        std::mem::take(&mut self.events)
    }

    fn snapshot_interval(&self) -> Option<Duration> {
        Some(self.save_every)
    }

    fn snapshot(&self, camera: &CameraId) -> Option<Vec<u8>> {
        let cam = self.cameras.get(camera)?;
        serde_json::to_vec(&EnvelopeOut {
            format: STATE_FORMAT,
            version: STATE_VERSION,
            state: &cam.state,
        })
        .ok()
    }

    fn restore(
        &mut self,
        camera: &CameraId,
        state: Option<&[u8]>,
        _ids: IdRange,
    ) -> Result<(), StageError> {
        let restored = match state {
            None => CameraAnalytics::default(),
            Some(bytes) => {
                let refuse = |why: String| {
                    StageError::InvalidInput(format!(
                        "saved analytics state of camera {camera}: {why}"
                    ))
                };
                if bytes.len() > MAX_STATE_BYTES {
                    return Err(refuse(format!(
                        "{} bytes, more than the {MAX_STATE_BYTES} allowed",
                        bytes.len()
                    )));
                }
                let envelope: EnvelopeIn =
                    serde_json::from_slice(bytes).map_err(|e| refuse(e.to_string()))?;
                if envelope.format != STATE_FORMAT || envelope.version != STATE_VERSION {
                    return Err(refuse(format!(
                        "{} version {}; this build reads {STATE_FORMAT} version {STATE_VERSION}",
                        envelope.format, envelope.version
                    )));
                }
                serde_json::from_value(envelope.state).map_err(|e| refuse(e.to_string()))?
            }
        };
        let cam = self.camera(camera);
        cam.state = restored;
        cam.seen_at = None;
        Ok(())
    }

    fn forget(&mut self, camera: &CameraId) {
        self.cameras.remove(camera);
    }
}
