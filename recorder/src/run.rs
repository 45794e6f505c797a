//! The recorder as a service: which cameras it records (partition leases, unit `recorder`,
//! like a worker's), their frames, detections and analytics events from NATS, each camera's
//! buffer, clip and segments, and the finished clips encoded on blocking threads and stored.
//! An open clip's plan is kept in the KV bucket `<ns>-recording` until its last part is
//! stored, so the camera's next recorder goes on with it after a crash or a hand-back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use panoptes_contracts::analytics::AnalyticsEvent;
use panoptes_contracts::clip::{ClipEvent, ClipKind};
use panoptes_contracts::detection::{Detection, DetectionMessage};
use panoptes_contracts::frame::Frame;
use panoptes_contracts::partition::partition_of;
use panoptes_contracts::subjects::Subjects;
use panoptes_pipeline::lease::{LeaseConfig, LeaseManager, Ownership};
use panoptes_topology::{RecordConfig, Topology};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::RecordError;
use crate::buffer::{BufferedFrame, PreRoll};
use crate::clip::{ClipPlan, FinishedClip, Recording, Segments};
use crate::encode::{ClipFormat, encode_clip, encode_snapshot};
use crate::overlay::{Places, svg};
use crate::rules::Rules;
use crate::store::{ClipStore, describe, object_name};

/// How late an event may arrive after its frame (the pipeline's latency) and still get its
/// whole pre-roll: the buffer keeps the longest pre-roll plus this.
const EVENT_LATENCY_ALLOWANCE: Duration = Duration::from_secs(5);
/// A clip whose camera sent nothing for this long past its end is finished with what it has.
const SILENCE_GRACE: Duration = Duration::from_secs(2);
/// How often open clips of silent cameras are checked, and how often retention runs.
const TICK: Duration = Duration::from_millis(500);
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// At most this many clips are encoded at once; the others wait (their frames are held).
const ENCODERS: usize = 2;
/// Events listed in a clip's description (a clip extended by thousands keeps the first ones).
const MAX_EVENTS: usize = 256;

/// What a recorder needs of a topology.
#[derive(Clone, Debug)]
pub struct RecorderConfig {
    pub namespace: String,
    pub partitions: u32,
    pub lease_ttl: Duration,
    pub record: RecordConfig,
    /// Zones and lines per camera, for drawing.
    pub places: HashMap<String, Places>,
}

impl RecorderConfig {
    /// `None` when the topology records nothing.
    pub fn from_topology(t: &Topology) -> Option<Self> {
        let record = t.record.clone()?;
        if record.rules.is_empty() && record.continuous.is_empty() {
            return None;
        }
        let places = t
            .cameras
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    Places {
                        zones: c.zones.clone(),
                        lines: c.lines.clone(),
                    },
                )
            })
            .collect();
        Some(Self {
            namespace: t.namespace.clone(),
            partitions: t.partitions,
            lease_ttl: Duration::from_millis(t.workers.lease_ttl_ms),
            record,
            places,
        })
    }

    fn segment_ns(&self, camera: &str) -> Option<(u64, bool)> {
        self.record
            .continuous
            .iter()
            .find(|c| c.cameras.is_empty() || c.cameras.iter().any(|x| x == camera))
            .map(|c| ((c.segment_s * 1e9) as u64, c.draw))
    }
}

/// The KV bucket of open clips' plans.
pub fn plans_bucket(namespace: &str) -> String {
    format!("{}-recording", panoptes_pipeline::lease::token(namespace))
}

struct Camera {
    buffer: PreRoll,
    /// Detections of recent frames, by seq (several messages of one frame add up).
    detections: BTreeMap<u64, Vec<Detection>>,
    recording: Recording,
    segments: Option<(Segments, bool)>,
    /// The partition's tenure this state belongs to (`Ownership::epoch`).
    epoch: u64,
}

struct Recorder {
    config: RecorderConfig,
    subjects: Subjects,
    rules: Rules,
    client: async_nats::Client,
    store: ClipStore,
    plans: kv::Store,
    ownership: Arc<Ownership>,
    format: ClipFormat,
    cameras: HashMap<String, Camera>,
    tasks: JoinSet<()>,
    encoders: Arc<Semaphore>,
}

/// Records until `cancel`; then finishes and stores what is open.
pub async fn run(
    client: async_nats::Client,
    config: RecorderConfig,
    cancel: CancellationToken,
) -> Result<(), RecordError> {
    let format = ClipFormat::available()?;
    let store = ClipStore::open(&client, &config.namespace, &config.record.retention).await?;
    let js = jetstream::new(client.clone());
    let plans = js
        .create_or_update_key_value(kv::Config {
            bucket: plans_bucket(&config.namespace),
            description: "panoptes: clips being recorded, for the camera's next recorder".into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| RecordError::Store(format!("cannot open the recording plans bucket: {e}")))?;
    let ownership = Arc::new(Ownership::leased(config.partitions));
    let leases = LeaseManager::open(
        &client,
        &config.namespace,
        "recorder",
        LeaseConfig {
            ttl: config.lease_ttl,
        },
        ownership.clone(),
    )
    .await
    .map_err(|e| RecordError::Store(e.to_string()))?;
    let lease_cancel = CancellationToken::new();
    let lease_task = tokio::spawn(leases.run(lease_cancel.clone()));
    let mut hand_offs = ownership.watch_hand_offs();

    let subjects = Subjects::new(config.namespace.clone());
    let sub = |subject: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| RecordError::Store(format!("cannot subscribe to {subject}: {e}")))
        }
    };
    // `>`: with the partition mapping frames arrive as `<ns>.frames.<camera>.<partition>`.
    let mut frames = sub(format!("{}.frames.>", config.namespace)).await?;
    let mut detections = sub(subjects.all_detections()).await?;
    let mut analytics = sub(subjects.all_analytics()).await?;
    tracing::info!(format = ?format, rules = config.record.rules.len(),
        continuous = config.record.continuous.len(), "recorder started");

    let mut r = Recorder {
        rules: Rules::new(config.record.rules.clone()),
        config,
        subjects,
        client,
        store,
        plans,
        ownership,
        format,
        cameras: HashMap::new(),
        tasks: JoinSet::new(),
        encoders: Arc::new(Semaphore::new(ENCODERS)),
    };
    let mut tick = tokio::time::interval(TICK);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(m) = frames.next() => r.frame(&m.subject, m.payload).await,
            Some(m) = detections.next() => r.detections(&m.payload),
            Some(m) = analytics.next() => r.analytics(&m.payload),
            Some(partition) = hand_offs.recv() => r.hand_off(partition),
            _ = tick.tick() => r.tick(),
            _ = sweep.tick() => r.sweep(),
            Some(_) = r.tasks.join_next(), if !r.tasks.is_empty() => {}
        }
    }
    // Stop: what is open is stored as it is; plans stay for whoever records next.
    let cameras: Vec<String> = r.cameras.keys().cloned().collect();
    for camera in cameras {
        r.close(&camera, false);
    }
    while r.tasks.join_next().await.is_some() {}
    lease_cancel.cancel();
    let _ = lease_task.await;
    Ok(())
}

impl Recorder {
    fn holds(&self, camera: &str) -> Option<u32> {
        let p = partition_of(camera, self.ownership.total());
        self.ownership.holds(p).then_some(p)
    }

    async fn frame(&mut self, subject: &str, payload: bytes::Bytes) {
        let Some(camera) = subject
            .strip_prefix(self.config.namespace.as_str())
            .and_then(|s| s.strip_prefix(".frames."))
            .and_then(|s| s.split('.').next())
        else {
            return;
        };
        let Some(partition) = self.holds(camera) else {
            if self.cameras.contains_key(camera) {
                // Moved to another recorder: store what we have, leave the plan to it.
                self.close(camera, false);
            }
            return;
        };
        let frame = match Frame::decode(payload, Some(camera)) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(camera, error = %e, "frame not recorded");
                return;
            }
        };
        let buffered = match BufferedFrame::from_frame(&frame, self.config.record.jpeg_quality) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(camera, error = %e, "frame not recorded");
                return;
            }
        };
        let epoch = self.ownership.epoch(partition);
        if self.cameras.get(camera).is_none_or(|c| c.epoch != epoch) {
            self.begin(camera, epoch, &buffered).await;
        }
        let Some(cam) = self.cameras.get_mut(camera) else {
            return;
        };
        cam.buffer.push(buffered.clone());
        let finished = cam.recording.frame(&buffered);
        let segment = cam
            .segments
            .as_mut()
            .and_then(|(s, draw)| s.frame(&buffered).map(|seg| (seg, *draw)));
        if let Some(clip) = finished {
            self.store_clip(clip, true);
        }
        if let Some(((start, frames), draw)) = segment {
            self.store_segment(camera, start, frames, draw);
        }
    }

    /// A tenure of `camera` begins here: a fresh buffer, and the clip a previous recorder
    /// left open, if it still runs.
    async fn begin(&mut self, camera: &str, epoch: u64, first: &BufferedFrame) {
        if self.cameras.contains_key(camera) {
            self.close(camera, false);
        }
        let keep_ns = self.rules.longest_pre_ns() + EVENT_LATENCY_ALLOWANCE.as_nanos() as u64;
        let max_bytes = usize::try_from(self.config.record.buffer_mib.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX);
        let mut cam = Camera {
            buffer: PreRoll::new(keep_ns, max_bytes),
            detections: BTreeMap::new(),
            recording: Recording::default(),
            segments: self
                .config
                .segment_ns(camera)
                .map(|(ns, draw)| (Segments::new(ns), draw)),
            epoch,
        };
        match self.plans.get(camera).await {
            Ok(Some(bytes)) => match serde_json::from_slice::<ClipPlan>(&bytes) {
                Ok(plan) if plan.end_ns > first.capture_ts_ns => {
                    tracing::info!(camera, clip = %plan.id, part = plan.part + 1, "going on with a clip another recorder began");
                    cam.recording.resume(plan, &cam.buffer);
                    self.save_plan(cam.recording.plan());
                }
                _ => {
                    let _ = self.plans.delete(camera).await;
                }
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(camera, error = %e, "cannot read the camera's open clip"),
        }
        self.cameras.insert(camera.to_owned(), cam);
    }

    fn detections(&mut self, payload: &[u8]) {
        let Ok(m) = serde_json::from_slice::<DetectionMessage>(payload) else {
            return;
        };
        if self.holds(&m.camera).is_none() {
            return;
        }
        let trigger = self.rules.detections(&m);
        let Some(cam) = self.cameras.get_mut(&m.camera) else {
            return;
        };
        let cap = cam.buffer.len() + 4096;
        cam.detections
            .entry(m.seq)
            .or_default()
            .extend(m.detections.iter().cloned());
        while cam.detections.len() > cap {
            cam.detections.pop_first();
        }
        if let Some(t) = trigger {
            self.trigger(&t);
        }
    }

    fn analytics(&mut self, payload: &[u8]) {
        let Ok(e) = serde_json::from_slice::<AnalyticsEvent>(payload) else {
            return;
        };
        if self.holds(&e.camera).is_none() {
            return;
        }
        if let Some(t) = self.rules.analytics(&e) {
            self.trigger(&t);
        }
    }

    fn trigger(&mut self, t: &crate::rules::Trigger) {
        let Some(cam) = self.cameras.get_mut(&t.camera) else {
            return;
        };
        let (finished, changed) = cam.recording.trigger(t, &cam.buffer);
        let plan = changed.then(|| cam.recording.plan().cloned()).flatten();
        if let Some(clip) = finished {
            self.store_clip(clip, true);
        }
        if let Some(plan) = plan {
            self.save_plan(Some(&plan));
        }
    }

    fn save_plan(&self, plan: Option<&ClipPlan>) {
        let Some(plan) = plan else { return };
        let Ok(bytes) = serde_json::to_vec(plan) else {
            return;
        };
        let plans = self.plans.clone();
        let camera = plan.camera.clone();
        tokio::spawn(async move {
            if let Err(e) = plans.put(&camera, bytes.into()).await {
                tracing::warn!(camera, error = %e, "cannot save the open clip's plan");
            }
        });
    }

    fn tick(&mut self) {
        let now = panoptes_contracts::time::now_ns();
        let grace = SILENCE_GRACE.as_nanos() as u64;
        let mut done = Vec::new();
        for cam in self.cameras.values_mut() {
            done.extend(cam.recording.expire(now, grace));
        }
        for clip in done {
            self.store_clip(clip, true);
        }
        let gone: Vec<String> = self
            .cameras
            .keys()
            .filter(|c| self.holds(c).is_none())
            .cloned()
            .collect();
        for camera in gone {
            self.close(&camera, false);
        }
    }

    /// The camera's partition is being handed back: what is open is stored now, its plan
    /// stays for the next recorder.
    fn hand_off(&mut self, partition: u32) {
        let cameras: Vec<String> = self
            .cameras
            .keys()
            .filter(|c| partition_of(c, self.ownership.total()) == partition)
            .cloned()
            .collect();
        for camera in cameras {
            self.close(&camera, false);
        }
        self.ownership.handed_off(partition);
    }

    /// Forgets `camera`, storing its open clip (`last`: as the clip's last part) and segment.
    fn close(&mut self, camera: &str, last: bool) {
        let Some(mut cam) = self.cameras.remove(camera) else {
            return;
        };
        let open = cam.recording.finish();
        let segment = cam
            .segments
            .as_mut()
            .and_then(|(s, draw)| s.flush().map(|seg| (seg, *draw)));
        // The stores below read the detections of the camera's frames.
        self.cameras.insert(camera.to_owned(), cam);
        if let Some(clip) = open {
            self.store_clip(clip, last);
        }
        if let Some(((start, frames), draw)) = segment {
            self.store_segment(camera, start, frames, draw);
        }
        self.cameras.remove(camera);
    }

    fn overlays(&self, camera: &str, frames: &[BufferedFrame]) -> Vec<String> {
        let places = self.config.places.get(camera).cloned().unwrap_or_default();
        let dets = self.cameras.get(camera).map(|c| &c.detections);
        frames
            .iter()
            .map(|f| {
                let d = dets
                    .and_then(|d| d.get(&f.seq))
                    .map_or(&[][..], Vec::as_slice);
                svg(f.width, f.height, &places, d)
            })
            .collect()
    }

    fn tracks(&self, camera: &str, frames: &[BufferedFrame]) -> Vec<u64> {
        let mut tracks: Vec<u64> = self
            .cameras
            .get(camera)
            .map(|c| {
                frames
                    .iter()
                    .filter_map(|f| c.detections.get(&f.seq))
                    .flatten()
                    .filter_map(|d| d.track.as_ref().map(|t| t.track_id))
                    .collect()
            })
            .unwrap_or_default();
        tracks.sort_unstable();
        tracks.dedup();
        tracks
    }

    /// Encodes and stores a finished clip (`last`: it ended, so its plan goes too).
    fn store_clip(&mut self, clip: FinishedClip, last: bool) {
        let FinishedClip {
            plan,
            frames,
            snapshot_seq,
        } = clip;
        if frames.is_empty() {
            if last {
                self.forget_plan(&plan.camera);
            }
            return;
        }
        let overlays = plan.draw.then(|| self.overlays(&plan.camera, &frames));
        let snapshot_frame = snapshot_seq.and_then(|s| frames.iter().position(|f| f.seq == s));
        let id = plan.object_id();
        let video_name = object_name(&plan.camera, &id, self.format.extension());
        let snapshot_name = object_name(&plan.camera, &id, "jpg");
        let first = frames.first().map_or(plan.start_ns, |f| f.capture_ts_ns);
        let end = plan.end_ns.min(
            frames
                .last()
                .map_or(plan.end_ns, |f| f.capture_ts_ns + median_interval(&frames)),
        );
        let events: Vec<ClipEvent> = plan.events.iter().take(MAX_EVENTS).cloned().collect();
        let tracks = self.tracks(&plan.camera, &frames);
        let format = self.format;
        let (store, client, plans) = (self.store.clone(), self.client.clone(), self.plans.clone());
        let subject = self.subjects.clips_for(&plan.camera);
        let encoders = self.encoders.clone();
        let retention = self.config.record.retention.clone();
        let part_plan = (!last).then(|| plan.clone());
        self.tasks.spawn(async move {
            let Ok(_permit) = encoders.acquire_owned().await else { return };
            let camera = plan.camera.clone();
            let count = frames.len() as u64;
            let encoded = tokio::task::spawn_blocking(move || {
                let video = encode_clip(&frames, overlays.as_deref(), format)?;
                let snapshot = match snapshot_frame {
                    Some(i) => Some(encode_snapshot(
                        &frames[i],
                        overlays.as_ref().map(|o| o[i].as_str()),
                    )?),
                    None => None,
                };
                Ok::<_, RecordError>((video, snapshot))
            })
            .await;
            let (video, snapshot) = match encoded {
                Ok(Ok(both)) => both,
                Ok(Err(e)) => return tracing::error!(camera, clip = %id, error = %e, "clip not encoded"),
                Err(e) => return tracing::error!(camera, clip = %id, error = %e, "clip encoder failed"),
            };
            let message = describe(
                ClipKind::Clip,
                &id,
                &camera,
                (video_name, format.content_type()),
                snapshot.as_ref().map(|_| snapshot_name),
                (first, end, count, video.len() as u64),
                plan.part,
                events,
                plan.rules.clone(),
                tracks,
            );
            if let Err(e) = store.put(&message, video, snapshot).await {
                return tracing::error!(camera, clip = %id, error = %e, "clip not stored");
            }
            metrics::counter!(panoptes_contracts::meter::RECORDER_CLIPS, "camera" => camera.clone()).increment(1);
            metrics::counter!(panoptes_contracts::meter::RECORDER_BYTES, "camera" => camera.clone()).increment(message.bytes);
            tracing::info!(camera, clip = %id, frames = count, bytes = message.bytes, "clip stored");
            match part_plan {
                // A part: the next recorder goes on after it.
                Some(plan) => {
                    if let Ok(bytes) = serde_json::to_vec(&plan) {
                        let _ = plans.put(&camera, bytes.into()).await;
                    }
                }
                None => {
                    let _ = plans.delete(&camera).await;
                }
            }
            if let Ok(json) = serde_json::to_vec(&message) {
                let _ = client.publish(subject, json.into()).await;
            }
            if let Err(e) = store.sweep(&retention, panoptes_contracts::time::now_ns()).await {
                tracing::warn!(error = %e, "retention sweep failed");
            }
        });
    }

    fn forget_plan(&self, camera: &str) {
        let plans = self.plans.clone();
        let camera = camera.to_owned();
        tokio::spawn(async move {
            let _ = plans.delete(&camera).await;
        });
    }

    fn store_segment(&mut self, camera: &str, start: u64, frames: Vec<BufferedFrame>, draw: bool) {
        if frames.is_empty() {
            return;
        }
        let overlays = draw.then(|| self.overlays(camera, &frames));
        let id = format!("{camera}-{}", start / 1_000_000);
        let name = object_name(camera, &format!("segment-{id}"), self.format.extension());
        let end = frames
            .last()
            .map_or(start, |f| f.capture_ts_ns + median_interval(&frames));
        let tracks = self.tracks(camera, &frames);
        let format = self.format;
        let (store, client) = (self.store.clone(), self.client.clone());
        let subject = self.subjects.clips_for(camera);
        let encoders = self.encoders.clone();
        let retention = self.config.record.retention.clone();
        let camera = camera.to_owned();
        self.tasks.spawn(async move {
            let Ok(_permit) = encoders.acquire_owned().await else { return };
            let count = frames.len() as u64;
            let video = match tokio::task::spawn_blocking(move || {
                encode_clip(&frames, overlays.as_deref(), format)
            })
            .await
            {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return tracing::error!(camera, segment = %id, error = %e, "segment not encoded"),
                Err(e) => return tracing::error!(camera, segment = %id, error = %e, "segment encoder failed"),
            };
            let message = describe(
                ClipKind::Segment,
                &id,
                &camera,
                (name, format.content_type()),
                None,
                (start, end, count, video.len() as u64),
                1,
                Vec::new(),
                Vec::new(),
                tracks,
            );
            if let Err(e) = store.put(&message, video, None).await {
                return tracing::error!(camera, segment = %id, error = %e, "segment not stored");
            }
            if let Ok(json) = serde_json::to_vec(&message) {
                let _ = client.publish(subject, json.into()).await;
            }
            if let Err(e) = store.sweep(&retention, panoptes_contracts::time::now_ns()).await {
                tracing::warn!(error = %e, "retention sweep failed");
            }
        });
    }

    fn sweep(&mut self) {
        let store = self.store.clone();
        let retention = self.config.record.retention.clone();
        self.tasks.spawn(async move {
            if let Err(e) = store
                .sweep(&retention, panoptes_contracts::time::now_ns())
                .await
            {
                tracing::warn!(error = %e, "retention sweep failed");
            }
        });
    }
}

/// The median gap between consecutive frames (100 ms when there is one frame).
pub fn median_interval(frames: &[BufferedFrame]) -> u64 {
    let mut gaps: Vec<u64> = frames
        .windows(2)
        .map(|w| w[1].capture_ts_ns.saturating_sub(w[0].capture_ts_ns))
        .collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2)
        .copied()
        .filter(|&g| g > 0)
        .unwrap_or(100_000_000)
}
