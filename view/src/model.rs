//! What the view knows of the deployment, built from NATS messages alone: per camera its
//! recent frames, the detection messages of those frames, track trails, health and counters;
//! the event timeline; what was skipped. Every collection here is bounded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use panoptes_contracts::analytics::AnalyticsEvent;
use panoptes_contracts::camera::CameraId;
use panoptes_contracts::clip::ClipMessage;
use panoptes_contracts::detection::DetectionMessage;
use panoptes_contracts::event::{Event, EventKind};
use panoptes_contracts::frame::Frame;
use panoptes_contracts::preview::PreviewMeta;
use serde::Serialize;

/// How much the view holds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Cameras shown; messages of further cameras are skipped (`too_many_cameras`).
    pub cameras: usize,
    /// Recent frames held per camera while their detections arrive.
    pub frames: usize,
    /// Bytes of recent frames held per camera (the newest frame is always held).
    pub frame_bytes: usize,
    /// Entries of the event timeline.
    pub events: usize,
    /// How long a frame waits for its detections before it is shown without them.
    pub match_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cameras: 256,
            frames: 32,
            frame_bytes: 8 << 20,
            events: 200,
            match_wait: Duration::from_secs(1),
        }
    }
}

/// Detection messages held per camera (by frame seq).
const DETECTION_SEQS: usize = 128;
/// Points of a track's trail, and how long a track not seen keeps it.
const TRAIL_POINTS: usize = 32;
const TRAIL_KEEP: Duration = Duration::from_secs(3);
/// Latency samples per camera for p50/p99.
const LATENCY_SAMPLES: usize = 256;
/// A camera without frames for this long is shown as silent.
const SILENT_AFTER: Duration = Duration::from_secs(5);
/// Clip objects remembered (only announced objects can be fetched through the view).
const CLIP_OBJECTS: usize = 1000;
/// After a camera stopped, frames of it still in flight are not taken for a new camera.
const STOPPED_QUIET: Duration = Duration::from_secs(5);

/// A camera's state as its ingest reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// Frames arrive.
    Up,
    /// The source failed and is being restarted.
    Reconnecting,
    /// The source failed, stalled or ended (`cause` says which) and is not restarted yet.
    Down,
    /// No frame, result or word from its ingest for a while (the ingest may be gone).
    Silent,
}

struct HeldFrame {
    /// The frame's seq, capture time and size (what detections' coordinates refer to).
    seq: u64,
    capture_ts_ns: u64,
    width: u32,
    height: u32,
    picture: Picture,
    received: Instant,
    trace_id: Option<String>,
}

/// What a browser is shown of a frame.
#[derive(Clone, Debug)]
pub enum Picture {
    /// A frame as workers get it (sampled from `<ns>.frames.<camera>`): scaled down and
    /// encoded for browsers when shown.
    Frame(Frame),
    /// A preview from the camera's ingest node: a JPEG already, often smaller than the frame.
    Jpeg(Bytes),
}

impl Picture {
    fn len(&self) -> usize {
        match self {
            Picture::Frame(f) => f.pixels.len(),
            Picture::Jpeg(j) => j.len(),
        }
    }
}

#[derive(Default)]
struct Trail {
    points: VecDeque<[f32; 2]>,
    seen: Option<Instant>,
}

struct Camera {
    frames: VecDeque<HeldFrame>,
    detections: BTreeMap<u64, Vec<DetectionMessage>>,
    trails: HashMap<u64, Trail>,
    state: CameraState,
    cause: String,
    /// The first and the latest frame seq seen: frames the camera published in between.
    seqs: Option<(u64, u64)>,
    messages_out: u64,
    dropped: u64,
    lost: u64,
    errors: u64,
    latencies_ms: VecDeque<f64>,
    /// When a frame or detection message of it last arrived.
    last_seen: Option<Instant>,
    /// The last frame encoded for browsers, shared by all of them.
    jpeg: Option<(u64, Bytes)>,
    /// When its ingest last sent a preview.
    previewed: Option<Instant>,
}

impl Camera {
    fn new() -> Self {
        Self {
            frames: VecDeque::new(),
            detections: BTreeMap::new(),
            trails: HashMap::new(),
            state: CameraState::Up,
            cause: String::new(),
            seqs: None,
            messages_out: 0,
            dropped: 0,
            lost: 0,
            errors: 0,
            latencies_ms: VecDeque::new(),
            last_seen: None,
            jpeg: None,
            previewed: None,
        }
    }

    fn held_bytes(&self) -> usize {
        self.frames.iter().map(|f| f.picture.len()).sum()
    }
}

/// One entry of the event timeline.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineEntry {
    /// Increasing: a page asks for entries after the last it has.
    pub id: u64,
    pub ts_ns: u64,
    pub camera: String,
    /// `zone_enter`, `line_cross`, … (analytics), `camera_down`, `track_end`, … (events),
    /// `clip` or `segment` (stored clips).
    pub kind: String,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    /// The trace of the frame it is about, when that frame was sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// A camera as the page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct CameraSummary {
    pub id: String,
    pub state: CameraState,
    pub cause: String,
    pub width: u32,
    pub height: u32,
    /// Frames the camera published since the view first saw one (by seq).
    pub frames_in: u64,
    pub messages_out: u64,
    pub dropped: u64,
    pub lost: u64,
    pub errors: u64,
    pub fps: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub last_seq: Option<u64>,
}

/// A frame picked for browsers, with what is drawn on it.
pub struct ShownFrame {
    pub camera: String,
    pub seq: u64,
    pub picture: Picture,
    /// Its JPEG when already encoded for another browser.
    pub jpeg: Option<Bytes>,
    pub header: serde_json::Value,
}

/// Why a message was skipped (the `reason` of the counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    Malformed,
    UnknownCamera,
    CameraMismatch,
    TooManyCameras,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Malformed => "malformed",
            Skip::UnknownCamera => "unknown_camera",
            Skip::CameraMismatch => "camera_mismatch",
            Skip::TooManyCameras => "too_many_cameras",
        }
    }
}

/// Everything the view shows, fed by [`crate::intake`].
pub struct Deployment {
    limits: Limits,
    cameras: BTreeMap<String, Camera>,
    events: VecDeque<TimelineEntry>,
    next_id: u64,
    clips: VecDeque<(String, String)>,
    skipped: BTreeMap<(&'static str, Skip), u64>,
    /// Cameras that stopped lately, and when.
    stopped: HashMap<String, Instant>,
}

impl Deployment {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            cameras: BTreeMap::new(),
            events: VecDeque::new(),
            next_id: 1,
            clips: VecDeque::new(),
            skipped: BTreeMap::new(),
            stopped: HashMap::new(),
        }
    }

    /// Shows `camera` before anything of it arrived (a camera of the topology).
    pub fn know(&mut self, camera: &str) {
        let _ = self.camera("topology", camera, true);
    }

    /// The cameras shown.
    pub fn camera_ids(&self) -> Vec<String> {
        self.cameras.keys().cloned().collect()
    }

    /// Counts a skipped message of subject kind `kind`.
    pub fn skip(&mut self, kind: &'static str, why: Skip) {
        *self.skipped.entry((kind, why)).or_insert(0) += 1;
        metrics::counter!(panoptes_contracts::meter::VIEW_SKIPPED,
            "subject" => kind, "reason" => why.as_str())
        .increment(1);
    }

    pub fn skipped(&self) -> Vec<serde_json::Value> {
        self.skipped
            .iter()
            .map(|((kind, why), n)| serde_json::json!({ "subject": kind, "reason": why, "count": n }))
            .collect()
    }

    /// The camera named `camera`, made when `create` (and room is left).
    fn camera(&mut self, kind: &'static str, camera: &str, create: bool) -> Option<&mut Camera> {
        if !self.cameras.contains_key(camera) {
            if !create {
                self.skip(kind, Skip::UnknownCamera);
                return None;
            }
            if CameraId::new(camera).is_err() {
                self.skip(kind, Skip::Malformed);
                return None;
            }
            if self.cameras.len() >= self.limits.cameras {
                self.skip(kind, Skip::TooManyCameras);
                return None;
            }
            self.cameras.insert(camera.to_owned(), Camera::new());
        }
        self.cameras.get_mut(camera)
    }

    /// A frame of `camera` (from its subject) arrived.
    pub fn frame(&mut self, camera: &str, payload: Bytes, trace_id: Option<String>, now: Instant) {
        let frame = match Frame::decode(payload, Some(camera)) {
            Ok(f) => f,
            Err(_) => {
                self.skip("frames", Skip::Malformed);
                return;
            }
        };
        self.hold(
            "frames",
            camera,
            HeldFrame {
                seq: frame.seq,
                capture_ts_ns: frame.capture_ts_ns,
                width: frame.width,
                height: frame.height,
                picture: Picture::Frame(frame),
                received: now,
                trace_id,
            },
        );
    }

    /// A preview of `camera` (from its subject) arrived: its headers through `header`.
    pub fn preview<'a>(
        &mut self,
        camera: &str,
        header: impl Fn(&str) -> Option<&'a str>,
        payload: Bytes,
        trace_id: Option<String>,
        now: Instant,
    ) {
        let meta = match PreviewMeta::read(camera, header, &payload) {
            Ok(meta) => meta,
            Err(_) => {
                self.skip("previews", Skip::Malformed);
                return;
            }
        };
        if meta.frame_width == 0 || meta.frame_height == 0 {
            self.skip("previews", Skip::Malformed);
            return;
        }
        self.hold(
            "previews",
            camera,
            HeldFrame {
                seq: meta.seq,
                capture_ts_ns: meta.capture_ts_ns,
                width: meta.frame_width,
                height: meta.frame_height,
                picture: Picture::Jpeg(payload),
                received: now,
                trace_id,
            },
        );
        self.probed(camera, now);
    }

    /// `camera`'s ingest probed for viewers: it makes previews, even when its share of the
    /// node's preview budget has not come round for a while. Only for cameras already known.
    pub fn probed(&mut self, camera: &str, now: Instant) {
        if let Some(cam) = self.cameras.get_mut(camera) {
            cam.previewed = Some(now);
        }
    }

    /// Whether `camera`'s ingest sent a preview within `within` (else the view samples its
    /// frames).
    pub fn previewed(&self, camera: &str, now: Instant, within: Duration) -> bool {
        self.cameras
            .get(camera)
            .and_then(|c| c.previewed)
            .is_some_and(|t| now.duration_since(t) < within)
    }

    /// Whether any camera's ingest sent a preview within `within`.
    pub fn previewed_any(&self, now: Instant, within: Duration) -> bool {
        self.cameras
            .values()
            .filter_map(|c| c.previewed)
            .any(|t| now.duration_since(t) < within)
    }

    fn hold(&mut self, subject: &'static str, camera: &str, held: HeldFrame) {
        let now = held.received;
        self.stopped
            .retain(|_, t| now.duration_since(*t) < STOPPED_QUIET);
        if self.stopped.contains_key(camera) {
            return;
        }
        let limits = self.limits;
        let Some(cam) = self.camera(subject, camera, true) else {
            return;
        };
        cam.seqs = Some(match cam.seqs {
            Some((first, last)) => (first.min(held.seq), last.max(held.seq)),
            None => (held.seq, held.seq),
        });
        cam.last_seen = Some(now);
        if cam.state != CameraState::Up {
            cam.state = CameraState::Up;
            cam.cause.clear();
        }
        // A preview and a sample of the same frame may both arrive while the view switches.
        if cam.frames.back().is_some_and(|f| f.seq == held.seq) {
            return;
        }
        cam.frames.push_back(held);
        while cam.frames.len() > 1
            && (cam.frames.len() > limits.frames || cam.held_bytes() > limits.frame_bytes)
        {
            cam.frames.pop_front();
        }
    }

    /// A detection message arrived on `camera`'s subject.
    pub fn detections(&mut self, camera: &str, payload: &[u8], now: Instant) {
        let Ok(message) = serde_json::from_slice::<DetectionMessage>(payload) else {
            self.skip("detections", Skip::Malformed);
            return;
        };
        if message.camera != camera {
            self.skip("detections", Skip::CameraMismatch);
            return;
        }
        let Some(cam) = self.camera("detections", camera, false) else {
            return;
        };
        cam.messages_out += 1;
        cam.last_seen = Some(now);
        let latency = message
            .published_ts_ns
            .saturating_sub(message.capture_ts_ns);
        cam.latencies_ms.push_back(latency as f64 / 1e6);
        if cam.latencies_ms.len() > LATENCY_SAMPLES {
            cam.latencies_ms.pop_front();
        }
        for d in &message.detections {
            if let Some(track) = &d.track {
                let trail = cam.trails.entry(track.track_id).or_default();
                let [x0, y0, x1, y1] = d.bbox;
                trail.points.push_back([(x0 + x1) / 2.0, (y0 + y1) / 2.0]);
                if trail.points.len() > TRAIL_POINTS {
                    trail.points.pop_front();
                }
                trail.seen = Some(now);
            }
        }
        cam.trails
            .retain(|_, t| t.seen.is_some_and(|s| now.duration_since(s) < TRAIL_KEEP));
        cam.detections.entry(message.seq).or_default().push(message);
        while cam.detections.len() > DETECTION_SEQS {
            cam.detections.pop_first();
        }
    }

    /// A status event arrived.
    pub fn event(&mut self, camera: &str, payload: &[u8], now: Instant) {
        let Ok(event) = serde_json::from_slice::<Event>(payload) else {
            self.skip("events", Skip::Malformed);
            return;
        };
        if event.camera != camera {
            self.skip("events", Skip::CameraMismatch);
            return;
        }
        if event.kind == EventKind::CameraStopped {
            // Removed, or its ingest stopped: it leaves the grid.
            self.cameras.remove(camera);
            if self.stopped.len() < self.limits.cameras {
                self.stopped.insert(camera.to_owned(), now);
            }
        } else {
            if event.kind == EventKind::CameraUp {
                self.stopped.remove(camera);
            }
            // Ingest's own events introduce a camera that never delivered a frame (a dead
            // source at start); other stages' events are about cameras already seen.
            let ingest = matches!(
                event.kind,
                EventKind::CameraUp | EventKind::CameraDown | EventKind::CameraReconnecting
            );
            let Some(cam) = self.camera("events", camera, ingest) else {
                return;
            };
            if ingest {
                cam.last_seen = Some(now);
            }
            let count = event.count.unwrap_or(1);
            match event.kind {
                EventKind::CameraUp => {
                    cam.state = CameraState::Up;
                    cam.cause.clear();
                }
                EventKind::CameraDown => {
                    cam.state = CameraState::Down;
                    cam.cause.clone_from(&event.message);
                }
                EventKind::CameraReconnecting => {
                    cam.state = CameraState::Reconnecting;
                    cam.cause.clone_from(&event.message);
                }
                EventKind::FramesDropped | EventKind::FramesRefused => cam.dropped += count,
                EventKind::FramesLost | EventKind::FramesLate => cam.lost += count,
                EventKind::FrameError | EventKind::StateDiscarded => cam.errors += count,
                EventKind::TrackEnd | EventKind::CameraStopped => {}
            }
        }
        let kind = serde_json::to_value(event.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut text = event.message.clone();
        if let Some(track) = &event.track {
            text = format!(
                "{} {} ended after {:.1} s, {:.0} px",
                track.label,
                track.track_id,
                track.duration_ms as f64 / 1000.0,
                track.path_px
            );
        }
        let trace_id = event.seq.and_then(|seq| self.trace_of(camera, seq));
        self.push(TimelineEntry {
            id: 0,
            ts_ns: event.ts_ns,
            camera: camera.to_owned(),
            kind,
            text,
            seq: event.seq,
            track_id: event.track.as_ref().map(|t| t.track_id),
            trace_id,
            clip: None,
            snapshot: None,
        });
    }

    /// An analytics event arrived.
    pub fn analytics(&mut self, camera: &str, payload: &[u8]) {
        let Ok(event) = serde_json::from_slice::<AnalyticsEvent>(payload) else {
            self.skip("analytics", Skip::Malformed);
            return;
        };
        if event.camera != camera {
            self.skip("analytics", Skip::CameraMismatch);
            return;
        }
        if self.camera("analytics", camera, false).is_none() {
            return;
        }
        let kind = event.kind.name();
        let place = event
            .zone
            .as_deref()
            .or(event.line.as_deref())
            .unwrap_or_default();
        let mut text = format!("{} {} {kind} {place}", event.label, event.track_id);
        if let Some(direction) = event.direction {
            text.push_str(&format!(" ({})", direction.name()));
        }
        if let Some(dwell) = event.dwell_ms {
            text.push_str(&format!(" after {:.1} s", dwell as f64 / 1000.0));
        }
        let trace_id = self.trace_of(camera, event.seq);
        self.push(TimelineEntry {
            id: 0,
            ts_ns: event.ts_ns,
            camera: camera.to_owned(),
            kind: kind.to_owned(),
            text,
            seq: Some(event.seq),
            track_id: Some(event.track_id),
            trace_id,
            clip: None,
            snapshot: None,
        });
    }

    /// A stored clip or segment was announced.
    pub fn clip(&mut self, camera: &str, payload: &[u8]) {
        let Ok(clip) = serde_json::from_slice::<ClipMessage>(payload) else {
            self.skip("clips", Skip::Malformed);
            return;
        };
        if clip.camera != camera {
            self.skip("clips", Skip::CameraMismatch);
            return;
        }
        let kind = serde_json::to_value(clip.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "clip".to_owned());
        self.remember_object(&clip.object, &clip.content_type);
        if let Some(snapshot) = &clip.snapshot {
            self.remember_object(snapshot, "image/jpeg");
        }
        let kinds: Vec<&str> = clip.events.iter().map(|e| e.kind.as_str()).collect();
        let text = format!(
            "{:.1} s, {} frames{}",
            clip.end_ns.saturating_sub(clip.start_ns) as f64 / 1e9,
            clip.frames,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" of {}", kinds.join(", "))
            }
        );
        self.push(TimelineEntry {
            id: 0,
            ts_ns: clip.stored_ns,
            camera: camera.to_owned(),
            kind,
            text,
            seq: None,
            track_id: clip.tracks.first().copied(),
            trace_id: None,
            clip: Some(clip.object.clone()),
            snapshot: clip.snapshot.clone(),
        });
    }

    fn remember_object(&mut self, name: &str, content_type: &str) {
        if self.clips.iter().any(|(n, _)| n == name) {
            return;
        }
        self.clips
            .push_back((name.to_owned(), content_type.to_owned()));
        if self.clips.len() > CLIP_OBJECTS {
            self.clips.pop_front();
        }
    }

    /// The content type of an announced clip or snapshot object; `None` for any other name.
    pub fn announced(&self, name: &str) -> Option<String> {
        self.clips
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    }

    fn trace_of(&self, camera: &str, seq: u64) -> Option<String> {
        self.cameras
            .get(camera)?
            .frames
            .iter()
            .find(|f| f.seq == seq)
            .and_then(|f| f.trace_id.clone())
    }

    fn push(&mut self, mut entry: TimelineEntry) {
        entry.id = self.next_id;
        self.next_id += 1;
        self.events.push_back(entry);
        while self.events.len() > self.limits.events {
            self.events.pop_front();
        }
    }

    /// Timeline entries with an ID above `after`, oldest first.
    pub fn events_after(&self, after: u64) -> Vec<TimelineEntry> {
        self.events
            .iter()
            .filter(|e| e.id > after)
            .cloned()
            .collect()
    }

    pub fn cameras(&self, now: Instant) -> Vec<CameraSummary> {
        self.cameras
            .iter()
            .map(|(id, c)| {
                let newest = c.frames.back();
                let mut sorted: Vec<f64> = c.latencies_ms.iter().copied().collect();
                sorted.sort_by(f64::total_cmp);
                let pct = |q: f64| {
                    (!sorted.is_empty()).then(|| {
                        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
                        sorted[i.min(sorted.len() - 1)]
                    })
                };
                // The camera's own rate: seq and capture time of the oldest and newest frame
                // held (the view samples frames, so counting arrivals would give its rate).
                let fps = match (c.frames.front(), c.frames.back()) {
                    (Some(a), Some(b)) if b.seq > a.seq => {
                        let span = b.capture_ts_ns.saturating_sub(a.capture_ts_ns);
                        if span > 0 {
                            (b.seq - a.seq) as f64 * 1e9 / span as f64
                        } else {
                            0.0
                        }
                    }
                    _ => 0.0,
                };
                let silent = c.state == CameraState::Up
                    && c.last_seen
                        .is_none_or(|t| now.duration_since(t) > SILENT_AFTER);
                CameraSummary {
                    id: id.clone(),
                    state: if silent { CameraState::Silent } else { c.state },
                    cause: c.cause.clone(),
                    width: newest.map_or(0, |f| f.width),
                    height: newest.map_or(0, |f| f.height),
                    frames_in: c.seqs.map_or(0, |(first, last)| last - first + 1),
                    messages_out: c.messages_out,
                    dropped: c.dropped,
                    lost: c.lost,
                    errors: c.errors,
                    fps,
                    latency_p50_ms: pct(0.5),
                    latency_p99_ms: pct(0.99),
                    last_seq: newest.map(|f| f.seq),
                }
            })
            .collect()
    }

    /// Per camera, the newest frame newer than what this browser was sent (`sent`) whose
    /// detections are here, or that waited [`Limits::match_wait`] for them.
    pub fn frames_to_show(&self, sent: &HashMap<String, u64>, now: Instant) -> Vec<ShownFrame> {
        let mut out = Vec::new();
        for (id, cam) in &self.cameras {
            let last_sent = sent.get(id).copied();
            let picked = cam.frames.iter().rev().find(|f| {
                cam.detections.contains_key(&f.seq)
                    || now.duration_since(f.received) >= self.limits.match_wait
            });
            let Some(held) = picked else { continue };
            if last_sent.is_some_and(|s| held.seq <= s) {
                continue;
            }
            let seq = held.seq;
            let detections: Vec<&panoptes_contracts::detection::Detection> = cam
                .detections
                .get(&seq)
                .into_iter()
                .flatten()
                .flat_map(|m| &m.detections)
                .collect();
            let trails: BTreeMap<String, Vec<[f32; 2]>> = cam
                .trails
                .iter()
                .filter(|(_, t)| t.points.len() > 1)
                .map(|(id, t)| (id.to_string(), t.points.iter().copied().collect()))
                .collect();
            out.push(ShownFrame {
                camera: id.clone(),
                seq,
                picture: held.picture.clone(),
                jpeg: cam
                    .jpeg
                    .as_ref()
                    .filter(|(s, _)| *s == seq)
                    .map(|(_, j)| j.clone()),
                header: serde_json::json!({
                    "camera": id,
                    "seq": seq,
                    "capture_ts_ns": held.capture_ts_ns,
                    "width": held.width,
                    "height": held.height,
                    "detections": detections,
                    "trails": trails,
                    "trace_id": held.trace_id,
                }),
            });
        }
        out
    }

    /// Keeps the JPEG of `camera`'s frame `seq` for the next browser.
    pub fn encoded(&mut self, camera: &str, seq: u64, jpeg: Bytes) {
        if let Some(cam) = self.cameras.get_mut(camera) {
            cam.jpeg = Some((seq, jpeg));
        }
    }

    /// Bytes of frames held over all cameras.
    pub fn held_bytes(&self) -> usize {
        self.cameras.values().map(Camera::held_bytes).sum()
    }
}
