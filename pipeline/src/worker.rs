//! The stage worker: takes the frames of the partitions it serves (live: core NATS, newest frame
//! per camera; durable: JetStream consumers, every frame, acknowledged once its results are
//! published), runs batches of them through the stage graph on a dedicated thread, and publishes
//! detections, forwarded items and events. A failing frame is reported and only that frame is lost.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::message::{AckKind, Acker};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::batch::{Activity, BatchPolicy, Batcher};
use crate::camera_state::{CameraLimits, CameraTable, LapsedRun, Mark};
use crate::detection::{DETECTIONS_SCHEMA, DetectionMessage};
use crate::durable::{self, DurableConfig};
use crate::event::{Event, EventKind};
use crate::frame::Frame;
use crate::graph::StageGraph;
use crate::lease::{Ownership, Standing};
use crate::meter::{self, count_camera};
use crate::partition::PartitionSet;
use crate::stage::{Item, Payload, Stage, StageError};
use crate::subjects::Subjects;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot subscribe to {subject}: {message}")]
    Subscribe { subject: String, message: String },
    #[error(transparent)]
    Durable(#[from] durable::DurableError),
    #[error("the processing thread panicked")]
    Panicked,
}

/// Counters of one worker, readable while it runs.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub received: AtomicU64,
    pub processed: AtomicU64,
    /// Live delivery: frames replaced by a newer one of their camera before they were processed.
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
    /// Frames of cameras outside this worker's partitions: another worker's, not a loss.
    pub skipped: AtomicU64,
    /// Passes through the stages; each carries a batch of frames (one, without batching).
    pub batches: AtomicU64,
    /// Frames whose partition moved to another worker while they were here: live, their
    /// results were not published; durable, they were handed back for redelivery.
    pub handed_back: AtomicU64,
    /// Live delivery: frames nobody processed because their partition had no live owner:
    /// published between a worker's death and the takeover (counted by the worker that took the
    /// partition over), or arrived here (or were here, unpublished) while this worker's lease
    /// had lapsed (NATS unreachable, the worker stalled) and it then kept the partition.
    pub lost: AtomicU64,
    /// Durable delivery: frames redelivered after newer frames of their camera were processed;
    /// acknowledged, not processed (per-camera order).
    pub late: AtomicU64,
    /// Frames of cameras beyond [`CameraLimits::max_cameras`], refused.
    pub refused: AtomicU64,
    /// Cameras the worker keeps state for now.
    pub cameras: Arc<AtomicU64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub received: u64,
    pub processed: u64,
    pub dropped: u64,
    pub failed: u64,
    pub skipped: u64,
    pub batches: u64,
    pub handed_back: u64,
    pub lost: u64,
    pub late: u64,
    pub refused: u64,
    /// Cameras tracked when the snapshot was taken.
    pub cameras: u64,
}

impl WorkerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            received: self.received.load(Ordering::Relaxed),
            processed: self.processed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            handed_back: self.handed_back.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            cameras: self.cameras.load(Ordering::Relaxed),
        }
    }
}

/// How frames reach the worker.
#[derive(Clone, Debug, Default)]
pub enum Delivery {
    /// Core NATS: the newest frame per camera wins under overload; drops are counted.
    #[default]
    Live,
    /// JetStream: every frame, at least once, acknowledged after its results are published.
    Durable(DurableConfig),
}

/// One frame (or forwarded item) between intake and publication.
struct Pending {
    camera: String,
    partition: u32,
    payload: Bytes,
    /// Durable delivery: acknowledges the message once its results are out.
    acker: Option<Acker>,
    /// Durable delivery: bounds the frames held in the worker.
    _permit: Option<OwnedSemaphorePermit>,
    /// The frame's span in this worker, continuing the publisher's trace.
    span: tracing::Span,
    /// Live delivery: the frame's sequence number, read at intake, so that a frame given up
    /// after intake is accounted for by seq like one refused there.
    seq: Option<u64>,
}

/// A message for one publication on the async side.
enum Outbound {
    /// One frame's results; the frame is acknowledged (durable) after they are published.
    Frame {
        pending: Pending,
        /// The frame's sequence number and capture time, when it could be decoded.
        seq: Option<u64>,
        capture_ts_ns: Option<u64>,
        results: Results,
    },
    /// A frame not processed here: its partition moved (durable: redeliver it elsewhere).
    HandBack(Pending),
    /// Durable: a frame older than one of its camera already fed to the stages; acknowledged
    /// and reported, not processed.
    Late {
        pending: Pending,
        seq: u64,
    },
    Event(String, Bytes),
}

/// A publication a frame produced.
enum Publication {
    Detections {
        subject: String,
        id: String,
        body: Bytes,
    },
    /// An item for a stage in another process (`<ns>.<stage>.<camera>`).
    Forward {
        subject: String,
        id: String,
        body: Bytes,
    },
}

pub struct Worker {
    client: async_nats::Client,
    subjects: Subjects,
    graph: StageGraph,
    stats: Arc<WorkerStats>,
    ownership: Arc<Ownership>,
    delivery: Delivery,
    /// `frames`, or the stage whose forwarded items this worker's first stages read.
    input: String,
    /// Names this worker's consumers (durable) and leases: the stages it runs.
    unit: String,
    limits: CameraLimits,
}

impl Worker {
    pub fn new(
        client: async_nats::Client,
        subjects: Subjects,
        stages: Vec<Box<dyn Stage>>,
    ) -> Self {
        Self::with_graph(client, subjects, StageGraph::chain(stages))
    }

    /// A worker running stages wired as a tree (fan-out, sinks); see [`StageGraph`]. It serves
    /// every camera until given partitions or leased ownership.
    pub fn with_graph(client: async_nats::Client, subjects: Subjects, graph: StageGraph) -> Self {
        let all = PartitionSet::all(1).map(|s| Ownership::fixed(&s));
        Self {
            client,
            subjects,
            graph,
            stats: Arc::default(),
            ownership: Arc::new(all.unwrap_or_else(|_| Ownership::leased(1))),
            delivery: Delivery::Live,
            input: "frames".to_owned(),
            unit: "worker".to_owned(),
            limits: CameraLimits::default(),
        }
    }

    /// Serves only cameras in `partitions`, fixed for the worker's lifetime; other cameras'
    /// frames are skipped (counted in [`WorkerStats::skipped`], not as drops).
    pub fn with_partitions(self, partitions: PartitionSet) -> Self {
        self.with_ownership(Arc::new(Ownership::fixed(&partitions)))
    }

    /// Serves the partitions `ownership` says, as they change (leases, see [`crate::lease`]).
    pub fn with_ownership(mut self, ownership: Arc<Ownership>) -> Self {
        self.ownership = ownership;
        self
    }

    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Reads `<ns>.<input>.<camera>` (`frames`, or a stage run by another process) and names
    /// this worker's unit (its consumers and leases).
    pub fn with_input(mut self, input: impl Into<String>, unit: impl Into<String>) -> Self {
        self.input = input.into();
        self.unit = unit.into();
        self
    }

    /// Bounds the per-camera state: at most `limits.max_cameras` cameras, each forgotten after
    /// `limits.idle_ttl` without frames.
    pub fn with_limits(mut self, limits: CameraLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Serves until `cancel` fires, then finishes the frames it holds and flushes.
    pub async fn run(self, cancel: CancellationToken) -> Result<StatsSnapshot, WorkerError> {
        let Worker {
            client,
            subjects,
            graph,
            stats,
            ownership,
            delivery,
            input,
            unit,
            limits,
        } = self;
        let js = jetstream::new(client.clone());
        let (in_tx, mut in_rx) = mpsc::channel::<Incoming>(64);
        let sources = CancellationToken::new();
        let durable = match &delivery {
            Delivery::Durable(config) => Some(*config),
            Delivery::Live => None,
        };
        let intake = match durable {
            None => {
                spawn_live(
                    &client,
                    &subjects,
                    &input,
                    ownership.clone(),
                    in_tx,
                    sources.clone(),
                )
                .await?
            }
            Some(config) => {
                durable::check_server(&client)?;
                let stream = durable::with_retries(|| {
                    durable::ensure_input_stream(&js, &subjects, &input, ownership.total(), &config)
                })
                .await?;
                durable::with_retries(|| durable::ensure_detections_stream(&js, &subjects)).await?;
                // Streams for what this worker forwards, so its first publications are kept
                // even before the next stage's workers start.
                for stage in graph.forwarded() {
                    durable::with_retries(|| {
                        durable::ensure_input_stream(
                            &js,
                            &subjects,
                            &stage,
                            ownership.total(),
                            &config,
                        )
                    })
                    .await?;
                }
                // Every partition's consumer exists from the start: interest retention keeps
                // frames only for consumers that exist.
                for p in 0..ownership.total() {
                    durable::with_retries(|| {
                        durable::ensure_consumer(&stream, &subjects, &input, &unit, p, &config)
                    })
                    .await?;
                }
                spawn_durable(DurableIntake {
                    stream,
                    subjects: subjects.clone(),
                    input: input.clone(),
                    unit: unit.clone(),
                    config,
                    ownership: ownership.clone(),
                    tx: in_tx,
                    cancel: sources.clone(),
                    permits: Arc::new(Semaphore::new(DURABLE_IN_WORKER)),
                })
            }
        };
        tracing::info!(input = %format!("{}.{input}.*", subjects.namespace()), %unit, stages = %graph.describe(), delivery = if durable.is_some() { "durable" } else { "live" }, "worker subscribed");

        // Each camera's last published frame: in live delivery a worker taking a partition
        // over counts what was lost in between; in durable delivery it is the ordering
        // watermark a new owner starts from. Optional: without JetStream the worker runs,
        // uncounted, with watermarks of its own only.
        let progress = open_progress(&js, subjects.namespace()).await;
        let table = Arc::new(CameraTable::new(limits, stats.cameras.clone()));
        let slots = Arc::new(Slots::new(durable.is_none()));
        let (out_tx, out_rx) = mpsc::channel::<Outbound>(256);
        let chain = Chain::new(
            graph,
            subjects.clone(),
            stats.clone(),
            ownership.clone(),
            input.clone(),
            out_tx.clone(),
            durable.map(|_| table.clone()),
        );
        let processor = {
            let slots = slots.clone();
            std::thread::Builder::new()
                .name("panoptes-stages".into())
                .spawn(move || chain.run(&slots))
                .map_err(|_| WorkerError::Panicked)?
        };
        let publisher = tokio::spawn(publish_loop(
            Publisher {
                client: client.clone(),
                js,
                subjects: subjects.clone(),
                ownership: ownership.clone(),
                stats: stats.clone(),
                table: table.clone(),
                durable: durable.is_some(),
                progress: progress.as_ref().map(|_| {
                    format!(
                        "$KV.{}.{}.",
                        crate::lease::progress_bucket(subjects.namespace()),
                        crate::lease::token(&unit)
                    )
                }),
            },
            out_rx,
        ));

        let mut intake_state = Intake {
            subjects,
            input,
            unit,
            ownership,
            stats: stats.clone(),
            table,
            slots: slots.clone(),
            out: out_tx,
            progress,
            durable: durable.is_some(),
            refusals: Refusals::default(),
        };
        let mut housekeeping = tokio::time::interval(housekeeping_period(limits));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let incoming = tokio::select! {
                () = cancel.cancelled() => break,
                _ = housekeeping.tick() => {
                    intake_state.housekeeping().await;
                    continue;
                }
                m = in_rx.recv() => m,
            };
            let Some(incoming) = incoming else { break };
            intake_state.take(incoming).await;
        }
        sources.cancel();
        let _ = intake.await;
        intake_state.finish().await;
        slots.close();
        // The last sender: the publisher ends once the stage thread has sent its last frame.
        drop(intake_state);
        let joined = tokio::task::spawn_blocking(move || processor.join()).await;
        let _ = publisher.await;
        match joined {
            Ok(Ok(())) => Ok(stats.snapshot()),
            _ => Err(WorkerError::Panicked),
        }
    }
}

/// How often the intake resolves lapsed frames, forgets idle cameras and reports refusals.
fn housekeeping_period(limits: CameraLimits) -> Duration {
    (limits.idle_ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// How long the intake waits for a camera's progress record at the start of a tenure.
const PROGRESS_READ: Duration = Duration::from_secs(1);

/// Opens (or creates) the namespace's progress bucket: file storage, so the records outlive a
/// nats-server restart. A bucket made by an older version (memory storage) is used as it is.
async fn open_progress(js: &jetstream::Context, namespace: &str) -> Option<jetstream::kv::Store> {
    let bucket = crate::lease::progress_bucket(namespace);
    let config = jetstream::kv::Config {
        bucket: bucket.clone(),
        description: "panoptes: last published frame per camera (live: loss accounting; durable: ordering watermark)".into(),
        history: 1,
        max_age: Duration::from_secs(24 * 3600),
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    match js.create_or_update_key_value(config).await {
        Ok(kv) => Some(kv),
        Err(e) => match js.get_key_value(&bucket).await {
            Ok(kv) => Some(kv),
            Err(_) => {
                tracing::info!(error = %e, "no progress bucket: frames lost in a failover are not counted and watermarks stay local");
                None
            }
        },
    }
}

/// A progress record: `<seq> <capture_ts_ns>` (older versions wrote the sequence number alone).
fn parse_progress(value: &[u8]) -> Option<Mark> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split_ascii_whitespace();
    let seq = parts.next()?.parse().ok()?;
    let capture_ts_ns = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    Some(Mark { seq, capture_ts_ns })
}

/// A live frame of a partition whose lease lapsed: not served, and lost or another worker's
/// depending on what the next lease round finds (`Intake::resolve`). Frames refused at
/// intake and frames given up inside the worker (taken in while the lease held, not published
/// because it lapsed meanwhile) join the same run, so each is reported once.
fn note_lapsed(
    table: &CameraTable,
    ownership: &Ownership,
    camera: &str,
    partition: u32,
    seq: Option<u64>,
) {
    let handovers = ownership.handovers(partition);
    table.with(camera, |s| {
        let run = s.lapsed.get_or_insert(LapsedRun {
            partition,
            handovers,
            count: 0,
            first: None,
            last: None,
        });
        run.count += 1;
        if let Some(seq) = seq {
            run.first = Some(run.first.map_or(seq, |f| f.min(seq)));
            run.last = Some(run.last.map_or(seq, |l| l.max(seq)));
        }
    });
}

/// The sequence number and capture time of a frame or forwarded item, read from its metadata
/// (no pixels or tensors copied).
fn meta_of(input: &str, payload: &Bytes) -> Option<(u64, u64)> {
    if input == "frames" {
        Frame::decode(payload.clone(), None)
            .ok()
            .map(|f| (f.seq, f.capture_ts_ns))
    } else {
        crate::envelope::meta(payload.clone()).ok()
    }
}

/// The intake side of a worker: decides for each message whether it is served, skipped,
/// refused or counted lost, and keeps the per-camera table.
struct Intake {
    subjects: Subjects,
    input: String,
    unit: String,
    ownership: Arc<Ownership>,
    stats: Arc<WorkerStats>,
    table: Arc<CameraTable>,
    slots: Arc<Slots>,
    out: mpsc::Sender<Outbound>,
    progress: Option<jetstream::kv::Store>,
    durable: bool,
    refusals: Refusals,
}

impl Intake {
    async fn take(&mut self, incoming: Incoming) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let Some((camera, mapped)) = camera_token(&self.subjects, &self.input, &incoming.subject)
        else {
            tracing::warn!(subject = %incoming.subject, "message on a subject without a camera token");
            if let Some(acker) = incoming.acker {
                let _ = acker.ack_with(AckKind::Term).await;
            }
            return;
        };
        let partition = mapped.unwrap_or_else(|| self.ownership.partition_of(&camera));
        let standing = self.ownership.standing(partition);
        if standing == Standing::Elsewhere || (self.durable && standing == Standing::Lapsed) {
            count_camera(meter::WORKER_RECEIVED, &camera, 1);
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            count_camera(meter::WORKER_SKIPPED, &camera, 1);
            if let Some(acker) = incoming.acker {
                // Another worker's now, or ours again once the lease is renewed: redeliver at
                // once rather than after ack_wait.
                let _ = acker.ack_with(AckKind::Nak(None)).await;
            }
            return;
        }
        let now = Instant::now();
        if self.table.admit(&camera, now, |_| ()).is_none() {
            self.refuse(&camera, now, incoming.acker).await;
            return;
        }
        count_camera(meter::WORKER_RECEIVED, &camera, 1);
        // Live: which frame this is, so that whatever becomes of it is accounted for once.
        let meta = if self.durable {
            None
        } else {
            meta_of(&self.input, &incoming.payload)
        };
        if standing == Standing::Lapsed {
            note_lapsed(
                &self.table,
                &self.ownership,
                &camera,
                partition,
                meta.map(|m| m.0),
            );
            return;
        }
        if let Some(run) = self.table.with(&camera, |s| s.lapsed).flatten() {
            self.resolve(&camera, run, false).await;
        }
        let epoch = self.ownership.epoch(partition);
        let new_tenure = self
            .table
            .with(&camera, |s| s.epoch.replace(epoch) != Some(epoch))
            .unwrap_or(false);
        if new_tenure {
            self.start_tenure(&camera, partition, meta).await;
        }
        self.table.with(&camera, |s| {
            s.in_worker += 1;
            if let Some((seq, _)) = meta {
                s.account(seq);
            }
        });
        self.ownership.enter(partition);
        let span = crate::trace::frame_span(&camera, &self.input);
        crate::trace::continue_from(&span, incoming.headers.as_ref());
        let pending = Pending {
            camera: camera.clone(),
            partition,
            payload: incoming.payload,
            acker: incoming.acker,
            _permit: incoming.permit,
            span,
            seq: meta.map(|m| m.0),
        };
        if let Some(replaced) = self.slots.put(pending) {
            self.ownership.leave(replaced.partition);
            self.table.left(&camera);
            replaced.span.record("outcome", "dropped");
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            count_camera(meter::WORKER_DROPPED, &camera, 1);
            if let Some(count) = self.table.with(&camera, |s| s.dropped(now)).flatten() {
                self.report_drops(&camera, count).await;
            }
        }
    }

    /// Settles frames that arrived while `camera`'s partition had lapsed, once the lease round
    /// has said whose the partition is: still this worker's (renewed or taken again), so
    /// nobody processed them: lost; handed over meanwhile, so the next owner counts the gap:
    /// skipped. `stopping`: the worker stops while the lease is still lapsed: lost.
    async fn resolve(&mut self, camera: &str, run: LapsedRun, stopping: bool) {
        let lost = if self.ownership.handovers(run.partition) != run.handovers {
            false
        } else {
            match self.ownership.standing(run.partition) {
                Standing::Serving => true,
                Standing::Lapsed if stopping => true,
                Standing::Lapsed => return,
                Standing::Elsewhere => false,
            }
        };
        self.table.with(camera, |s| s.lapsed = None);
        if !lost {
            self.stats.skipped.fetch_add(run.count, Ordering::Relaxed);
            count_camera(meter::WORKER_SKIPPED, camera, run.count);
            return;
        }
        // Nobody else served the partition meanwhile, so frames between the last one this
        // worker accounted for and the first that arrived in the lapse never reached a worker
        // (published while NATS was down for this worker): lost as well.
        let accounted = self.table.with(camera, |s| s.accounted).flatten();
        let (gap, from) = match (accounted, run.first) {
            (Some(a), Some(first)) if first > a.saturating_add(1) => (first - a - 1, Some(a + 1)),
            _ => (0, run.first),
        };
        let lost = run.count + gap;
        if let Some(last) = run.last {
            self.table.with(camera, |s| s.account(last));
        }
        self.stats.lost.fetch_add(lost, Ordering::Relaxed);
        count_camera(meter::WORKER_LOST, camera, lost);
        let which = match (from, run.last) {
            (Some(from), Some(last)) => format!(" (seq {from}..={last})"),
            _ => String::new(),
        };
        tracing::warn!(
            camera,
            partition = run.partition,
            lost,
            "frames lost while the partition's lease had lapsed"
        );
        let event = Event::new(
            camera,
            EventKind::FramesLost,
            format!(
                "{lost} frames{which} lost while this worker's lease on partition {} had lapsed (NATS unreachable, or the worker stalled): {} arrived and were not processed, {gap} never reached it; live delivery does not keep them",
                run.partition, run.count
            ),
        )
        .stage("worker")
        .count(lost);
        self.send_event(camera, &event).await;
    }

    /// The first frame of `camera` in a new tenure of its partition (or since the camera was
    /// last forgotten). Live: frames between the last one anyone published (or this worker
    /// accounted for) and this one never reached a worker: lost. Durable: the watermark
    /// continues from the last frame any worker published.
    async fn start_tenure(&mut self, camera: &str, partition: u32, meta: Option<(u64, u64)>) {
        let Some(kv) = self.progress.clone() else {
            return;
        };
        let key = format!("{}.{camera}", crate::lease::token(&self.unit));
        if self.durable {
            // Before the frame can reach the stages. Pulled intake waits without losing
            // anything (JetStream keeps the rest).
            if let Ok(Ok(Some(value))) = tokio::time::timeout(PROGRESS_READ, kv.get(key)).await
                && let Some(mark) = parse_progress(&value)
            {
                self.table.with(camera, |s| s.stored(mark));
            }
            return;
        }
        let Some((seq, _)) = meta else { return };
        // Live: in a task, as the intake must not wait (frames keep coming on the connection
        // the read shares, and a stalled intake makes the client drop them); what this worker
        // accounted for so far is taken now.
        let check = GapCheck {
            kv,
            key,
            camera: camera.to_owned(),
            partition,
            seq,
            accounted: self.table.with(camera, |s| s.accounted).flatten(),
            stats: self.stats.clone(),
            table: self.table.clone(),
            out: self.out.clone(),
            events: self.subjects.events_for(camera),
        };
        tokio::spawn(check.run());
    }

    /// A frame of a camera beyond the limit of tracked cameras. Durable: terminated, so that
    /// JetStream does not hand it out again and again.
    async fn refuse(&mut self, camera: &str, now: Instant, acker: Option<Acker>) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(meter::WORKER_REFUSED).increment(1);
        if let Some(acker) = acker {
            let _ = acker.ack_with(AckKind::Term).await;
        }
        if let Some((camera, count)) = self.refusals.refused(camera, now) {
            self.report_refused(&camera, count).await;
        }
    }

    /// Resolves lapsed frames, forgets idle cameras, reports refusals held back.
    async fn housekeeping(&mut self) {
        let now = Instant::now();
        for (camera, run) in self.table.lapsed() {
            self.resolve(&camera, run, false).await;
        }
        for (camera, state) in self.table.expire(now) {
            if state.drops.1 > 0 {
                self.report_drops(&camera, state.drops.1).await;
            }
        }
        self.slots.prune(now);
        if let Some((camera, count)) = self.refusals.due(now) {
            self.report_refused(&camera, count).await;
        }
        metrics::gauge!(meter::WORKER_CAMERAS)
            .set(self.stats.cameras.load(Ordering::Relaxed) as f64);
    }

    /// At stop: what would otherwise go unreported.
    async fn finish(&mut self) {
        for (camera, run) in self.table.lapsed() {
            self.resolve(&camera, run, true).await;
        }
        for (camera, count) in self.table.unreported_drops() {
            self.report_drops(&camera, count).await;
        }
        if let Some((camera, count)) = self.refusals.flush() {
            self.report_refused(&camera, count).await;
        }
    }

    async fn report_drops(&self, camera: &str, count: u64) {
        let event = Event::new(
            camera,
            EventKind::FramesDropped,
            format!("{count} frames dropped to keep up (live delivery keeps the newest frame)"),
        )
        .stage("worker")
        .count(count);
        self.send_event(camera, &event).await;
    }

    async fn report_refused(&self, camera: &str, count: u64) {
        let limits = self.table.limits();
        tracing::warn!(
            count,
            latest = camera,
            max_cameras = limits.max_cameras,
            "frames of cameras beyond this worker's limit refused"
        );
        let event = Event::new(
            camera,
            EventKind::FramesRefused,
            format!(
                "{count} frames of cameras beyond this worker's limit of {} tracked cameras refused since the last report (this camera the latest); a camera is forgotten after {} s without frames",
                limits.max_cameras,
                limits.idle_ttl.as_secs_f64()
            ),
        )
        .stage("worker")
        .count(count);
        self.send_event(camera, &event).await;
    }

    async fn send_event(&self, camera: &str, event: &Event) {
        if let Ok(body) = serde_json::to_vec(event) {
            let _ = self
                .out
                .send(Outbound::Event(
                    self.subjects.events_for(camera),
                    body.into(),
                ))
                .await;
        }
    }
}

/// Live: the first frame of a camera in a new tenure, checked against the last frame any
/// worker published and what this worker accounted for: the frames in between never reached a
/// worker.
struct GapCheck {
    kv: jetstream::kv::Store,
    key: String,
    camera: String,
    partition: u32,
    seq: u64,
    accounted: Option<u64>,
    stats: Arc<WorkerStats>,
    table: Arc<CameraTable>,
    out: mpsc::Sender<Outbound>,
    events: String,
}

impl GapCheck {
    async fn run(self) {
        let record = match tokio::time::timeout(PROGRESS_READ, self.kv.get(self.key.as_str())).await
        {
            Ok(Ok(Some(value))) => parse_progress(&value),
            _ => None,
        };
        let Some(last) = record
            .map(|m| m.seq)
            .into_iter()
            .chain(self.accounted)
            .max()
        else {
            return;
        };
        let (camera, seq, partition) = (self.camera.as_str(), self.seq, self.partition);
        // A camera that restarted counts from 0 again: nothing to count.
        if seq <= last.saturating_add(1) {
            return;
        }
        let lost = seq - last - 1;
        self.table.with(camera, |s| s.account(seq - 1));
        self.stats.lost.fetch_add(lost, Ordering::Relaxed);
        count_camera(meter::WORKER_LOST, camera, lost);
        tracing::warn!(
            camera,
            partition,
            lost,
            "frames lost in a partition handover"
        );
        let event = Event::new(
            camera,
            EventKind::FramesLost,
            format!(
                "{lost} frames (seq {}..={}) were published while partition {partition} had no live worker (a worker stopped or died, or NATS was unreachable) and never reached one; live delivery does not keep them",
                last + 1,
                seq - 1,
            ),
        )
        .stage("worker")
        .count(lost);
        if let Ok(body) = serde_json::to_vec(&event) {
            let _ = self
                .out
                .send(Outbound::Event(self.events, body.into()))
                .await;
        }
    }
}

/// Refused frames, reported at most once per second over all cameras (one camera's counter
/// each would be the unbounded state the limit is there to prevent).
#[derive(Default)]
struct Refusals {
    reported: Option<Instant>,
    count: u64,
    latest: String,
}

impl Refusals {
    fn refused(&mut self, camera: &str, now: Instant) -> Option<(String, u64)> {
        self.count += 1;
        camera.clone_into(&mut self.latest);
        self.due(now)
    }

    /// The count to report, if one is due.
    fn due(&mut self, now: Instant) -> Option<(String, u64)> {
        if self.count == 0
            || self
                .reported
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return None;
        }
        self.reported = Some(now);
        self.flush()
    }

    fn flush(&mut self) -> Option<(String, u64)> {
        (self.count > 0).then(|| {
            (
                std::mem::take(&mut self.latest),
                std::mem::take(&mut self.count),
            )
        })
    }
}

/// Frames a durable worker holds at once (pulled, not yet acknowledged), over all partitions.
const DURABLE_IN_WORKER: usize = 32;

/// A message as a source hands it to the intake loop.
struct Incoming {
    subject: String,
    /// Carries the publisher's trace context.
    headers: Option<async_nats::HeaderMap>,
    payload: Bytes,
    acker: Option<Acker>,
    permit: Option<OwnedSemaphorePermit>,
}

/// The camera of `<ns>.<input>.<camera>` and, for subjects a server mapping or stream
/// transform partitioned (`<ns>.<input>.<camera>.<partition>`), the partition.
fn camera_token(subjects: &Subjects, input: &str, subject: &str) -> Option<(String, Option<u32>)> {
    let rest = subject
        .strip_prefix(subjects.namespace())?
        .strip_prefix('.')?
        .strip_prefix(input)?
        .strip_prefix('.')?;
    match rest.split_once('.') {
        None if !rest.is_empty() => Some((rest.to_owned(), None)),
        Some((camera, partition)) if !camera.is_empty() && !partition.contains('.') => {
            Some((camera.to_owned(), Some(partition.parse().ok()?)))
        }
        _ => None,
    }
}

/// Live intake: one subscription to `<ns>.<input>.*` (servers without a partition mapping),
/// plus one to `<ns>.<input>.*.<p>` for every partition accepted (servers with one: only the
/// served partitions' frames cross the network).
async fn spawn_live(
    client: &async_nats::Client,
    subjects: &Subjects,
    input: &str,
    ownership: Arc<Ownership>,
    tx: mpsc::Sender<Incoming>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, WorkerError> {
    let subscribe = |subject: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| WorkerError::Subscribe {
                    subject,
                    message: e.to_string(),
                })
        }
    };
    let ns = subjects.namespace().to_owned();
    let all = subscribe(format!("{ns}.{input}.*")).await?;
    let forward = |mut sub: async_nats::Subscriber,
                   tx: mpsc::Sender<Incoming>,
                   cancel: CancellationToken| async move {
        loop {
            let msg = tokio::select! {
                () = cancel.cancelled() => break,
                m = sub.next() => m,
            };
            let Some(msg) = msg else { break };
            let incoming = Incoming {
                subject: msg.subject.to_string(),
                headers: msg.headers,
                payload: msg.payload,
                acker: None,
                permit: None,
            };
            if tx.send(incoming).await.is_err() {
                break;
            }
        }
        let _ = sub.unsubscribe().await;
    };
    let mut tasks = vec![tokio::spawn(forward(all, tx.clone(), cancel.clone()))];
    let client = client.clone();
    let input = input.to_owned();
    tasks.push(tokio::spawn(async move {
        let mut accepting = ownership.watch_accepting();
        let mut per_partition: HashMap<u32, CancellationToken> = HashMap::new();
        loop {
            let want: Vec<u32> = accepting.borrow_and_update().clone();
            per_partition.retain(|p, token| {
                let keep = want.contains(p);
                if !keep {
                    token.cancel();
                }
                keep
            });
            for p in want {
                if per_partition.contains_key(&p) {
                    continue;
                }
                let subject = format!("{ns}.{input}.*.{p}");
                match client.subscribe(subject.clone()).await {
                    Ok(sub) => {
                        let token = cancel.child_token();
                        tokio::spawn(forward(sub, tx.clone(), token.clone()));
                        per_partition.insert(p, token);
                    }
                    Err(e) => tracing::warn!(%subject, error = %e, "cannot subscribe"),
                }
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = accepting.changed() => if changed.is_err() { break },
            }
        }
    }));
    Ok(tokio::spawn(async move {
        for t in tasks {
            let _ = t.await;
        }
    }))
}

struct DurableIntake {
    stream: jetstream::stream::Stream,
    subjects: Subjects,
    input: String,
    unit: String,
    config: DurableConfig,
    ownership: Arc<Ownership>,
    tx: mpsc::Sender<Incoming>,
    cancel: CancellationToken,
    permits: Arc<Semaphore>,
}

/// Durable intake: one pull consumer per accepted partition, started and stopped as the
/// partition's lease comes and goes.
fn spawn_durable(d: DurableIntake) -> tokio::task::JoinHandle<()> {
    let d = Arc::new(d);
    tokio::spawn(async move {
        let mut accepting = d.ownership.watch_accepting();
        let mut running: HashMap<u32, (CancellationToken, tokio::task::JoinHandle<()>)> =
            HashMap::new();
        loop {
            let want: Vec<u32> = accepting.borrow_and_update().clone();
            let stopped: Vec<u32> = running
                .keys()
                .filter(|p| !want.contains(p))
                .copied()
                .collect();
            for p in stopped {
                if let Some((token, task)) = running.remove(&p) {
                    token.cancel();
                    let _ = task.await;
                }
            }
            for p in want {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(p) {
                    let token = d.cancel.child_token();
                    let task = tokio::spawn(pull_partition(d.clone(), p, token.clone()));
                    slot.insert((token, task));
                }
            }
            tokio::select! {
                () = d.cancel.cancelled() => break,
                changed = accepting.changed() => if changed.is_err() { break },
            }
        }
        for (_, (token, task)) in running {
            token.cancel();
            let _ = task.await;
        }
    })
}

/// Pulls one partition's frames until `cancel`, reconnecting the consumer when it fails.
async fn pull_partition(d: Arc<DurableIntake>, partition: u32, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !cancel.is_cancelled() {
        let consumer = match durable::ensure_consumer(
            &d.stream,
            &d.subjects,
            &d.input,
            &d.unit,
            partition,
            &d.config,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(partition, error = %e, "consumer unavailable; retrying");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // Short pull requests: after a partition moves away, a request still open on the
        // server could hand this worker frames nobody acknowledges until `ack_wait`.
        let messages = consumer
            .stream()
            .max_messages_per_batch(4)
            .expires(Duration::from_secs(1))
            .heartbeat(Duration::from_millis(400))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(partition, error = %e, "cannot pull; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            // A permit before the next message: the worker holds a bounded number of frames,
            // and JetStream keeps the rest (backpressure).
            let permit = tokio::select! {
                () = cancel.cancelled() => return,
                p = d.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let next = tokio::select! {
                () = cancel.cancelled() => return,
                m = messages.next() => m,
            };
            match next {
                Some(Ok(msg)) => {
                    let (msg, acker) = msg.split();
                    let incoming = Incoming {
                        subject: msg.subject.to_string(),
                        headers: msg.headers,
                        payload: msg.payload,
                        acker: Some(acker),
                        permit: Some(permit),
                    };
                    if d.tx.send(incoming).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(partition, error = %e, "pull interrupted; resubscribing");
                    break;
                }
                None => break,
            }
        }
    }
}

/// What the publishing task needs.
struct Publisher {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    ownership: Arc<Ownership>,
    stats: Arc<WorkerStats>,
    table: Arc<CameraTable>,
    durable: bool,
    /// The subject prefix progress records go to (`$KV.<bucket>.<unit>.`).
    progress: Option<String>,
}

/// Publishes what the processing thread produced. Results of a partition this worker no longer
/// holds are not published (the new owner publishes them), so two workers never both publish
/// one camera's results; durable frames are acknowledged only after their results are stored.
async fn publish_loop(p: Publisher, mut rx: mpsc::Receiver<Outbound>) {
    let Publisher {
        client,
        js,
        subjects,
        ownership,
        stats,
        table,
        durable,
        progress,
    } = p;
    let detections_prefix = format!("{}.detections.", subjects.namespace());
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Event(subject, body) => {
                if let Err(e) = client.publish(subject.clone(), body).await {
                    tracing::warn!(%subject, error = %e, "publish failed");
                }
            }
            Outbound::HandBack(pending) => {
                table.left(&pending.camera);
                not_held(&stats, &ownership, &table, durable, pending).await;
            }
            Outbound::Late { pending, seq } => {
                table.left(&pending.camera);
                late(&client, &subjects, &stats, &ownership, pending, seq).await;
            }
            Outbound::Frame {
                pending,
                seq,
                capture_ts_ns,
                results,
            } => {
                table.left(&pending.camera);
                // Durable: the watermark moves with what is stored, and back if this frame,
                // fed last, goes back to JetStream without results.
                let fed = match (durable, seq, capture_ts_ns) {
                    (true, Some(seq), Some(capture_ts_ns)) => Some(Mark { seq, capture_ts_ns }),
                    _ => None,
                };
                if !ownership.holds(pending.partition) {
                    if let Some(mark) = fed {
                        table.with(&pending.camera, |s| s.unstored(mark));
                    }
                    not_held(&stats, &ownership, &table, durable, pending).await;
                    continue;
                }
                // Counted here, not where it ran: a frame whose partition moved meanwhile is
                // handed back instead, and counts only as that.
                let (counter, metric) = if results.iter().any(Result::is_err) {
                    (&stats.failed, meter::WORKER_FAILED)
                } else {
                    (&stats.processed, meter::WORKER_PROCESSED)
                };
                counter.fetch_add(1, Ordering::Relaxed);
                count_camera(metric, &pending.camera, 1);
                let span = tracing::info_span!(
                    target: "panoptes::trace",
                    parent: &pending.span,
                    "publish",
                    camera = %pending.camera,
                    seq = seq.unwrap_or_default(),
                    messages = results.len(),
                );
                // Whoever reads the results (a subscriber, the next process of a split
                // topology) continues this frame's trace.
                let trace_headers = crate::trace::headers_for(&span);
                let mut stored = true;
                let mut acks = Vec::new();
                for result in results {
                    match result {
                        Ok(publication) => {
                            let (subject, id, body, forward) = match publication {
                                Publication::Detections { subject, id, body } => {
                                    (subject, id, body, false)
                                }
                                Publication::Forward { subject, id, body } => {
                                    (subject, id, body, true)
                                }
                            };
                            let metric = if forward {
                                meter::ITEMS_FORWARDED
                            } else {
                                meter::DETECTIONS_PUBLISHED
                            };
                            // Durable results go through JetStream (deduplicated by id) when a
                            // stream takes their subject; other sinks' subjects stay core NATS.
                            if durable && (forward || subject.starts_with(&detections_prefix)) {
                                let mut headers = trace_headers.clone().unwrap_or_default();
                                headers.insert(durable::MSG_ID, id.as_str());
                                match js
                                    .publish_with_headers(subject.clone(), headers, body)
                                    .await
                                {
                                    Ok(ack) => {
                                        count_camera(metric, &pending.camera, 1);
                                        acks.push((subject, ack));
                                    }
                                    Err(e) => {
                                        stored = false;
                                        tracing::warn!(%subject, error = %e, "durable publish failed");
                                    }
                                }
                            } else {
                                let sent = match &trace_headers {
                                    Some(h) => {
                                        client
                                            .publish_with_headers(subject.clone(), h.clone(), body)
                                            .await
                                    }
                                    None => client.publish(subject.clone(), body).await,
                                };
                                match sent {
                                    Ok(()) => count_camera(metric, &pending.camera, 1),
                                    Err(e) => {
                                        tracing::warn!(%subject, error = %e, "publish failed")
                                    }
                                }
                            }
                        }
                        Err(event) => {
                            if let Ok(body) = serde_json::to_vec(&event) {
                                let subject = subjects.events_for(&pending.camera);
                                if let Err(e) = client.publish(subject.clone(), body.into()).await {
                                    tracing::warn!(%subject, error = %e, "publish failed");
                                }
                            }
                        }
                    }
                }
                for (subject, ack) in acks {
                    if let Err(e) = ack.await {
                        stored = false;
                        tracing::warn!(%subject, error = %e, "JetStream did not store the result");
                    }
                }
                if let Some(ts) = capture_ts_ns {
                    // Wall clocks of two machines: a capture "after" now means skew, not latency.
                    let now = crate::time::now_ns();
                    if now >= ts {
                        metrics::histogram!(meter::FRAME_LATENCY, "camera" => pending.camera.clone())
                            .record((now - ts) as f64 / 1e9);
                    }
                }
                drop(span);
                if let (Some(prefix), Some(seq)) = (&progress, seq)
                    && (stored || !durable)
                {
                    // A plain publish onto the bucket's subject: a KV put without waiting for
                    // the acknowledgement, one small message per frame.
                    let subject = format!("{prefix}{}", pending.camera);
                    let record = format!("{seq} {}", capture_ts_ns.unwrap_or(0));
                    let _ = client.publish(subject, record.into()).await;
                }
                if let Some(mark) = fed {
                    table.with(&pending.camera, |s| {
                        if stored {
                            s.stored(mark);
                        } else {
                            s.unstored(mark);
                        }
                    });
                }
                if let Some(acker) = &pending.acker {
                    // Not stored: let JetStream deliver the frame again rather than lose it.
                    let kind = if stored {
                        AckKind::Ack
                    } else {
                        AckKind::Nak(None)
                    };
                    if let Err(e) = acker.ack_with(kind).await {
                        tracing::warn!(camera = %pending.camera, error = %e, "cannot acknowledge frame");
                    }
                }
                ownership.leave(pending.partition);
            }
        }
    }
    let _ = client.flush().await;
}

/// A late frame (durable): acknowledged, so it is not delivered again, counted and reported.
async fn late(
    client: &async_nats::Client,
    subjects: &Subjects,
    stats: &WorkerStats,
    ownership: &Ownership,
    pending: Pending,
    seq: u64,
) {
    stats.late.fetch_add(1, Ordering::Relaxed);
    count_camera(meter::WORKER_LATE, &pending.camera, 1);
    pending.span.record("outcome", "late");
    tracing::info!(camera = %pending.camera, seq, "late frame dropped: newer frames of its camera were already processed");
    if let Some(acker) = &pending.acker
        && let Err(e) = acker.ack_with(AckKind::Ack).await
    {
        tracing::warn!(camera = %pending.camera, error = %e, "cannot acknowledge frame");
    }
    let event = Event::new(
        &pending.camera,
        EventKind::FramesLate,
        format!(
            "frame {seq} was delivered again after newer frames of its camera were processed (its worker stalled past its lease); dropped so that the stages see the camera's frames in order"
        ),
    )
    .stage("worker")
    .seq(seq)
    .count(1);
    if let Ok(body) = serde_json::to_vec(&event) {
        let subject = subjects.events_for(&pending.camera);
        if let Err(e) = client.publish(subject.clone(), body.into()).await {
            tracing::warn!(%subject, error = %e, "publish failed");
        }
    }
    ownership.leave(pending.partition);
}

/// A frame taken in but not published because its partition is no longer held. Live, with the
/// lease merely lapsed (nobody took the partition), it joins its camera's lapsed run and is
/// reported with the frames that arrived meanwhile; otherwise it is handed back.
async fn not_held(
    stats: &WorkerStats,
    ownership: &Ownership,
    table: &CameraTable,
    durable: bool,
    pending: Pending,
) {
    if !durable && ownership.standing(pending.partition) == Standing::Lapsed {
        note_lapsed(
            table,
            ownership,
            &pending.camera,
            pending.partition,
            pending.seq,
        );
        pending.span.record("outcome", "lapsed");
        ownership.leave(pending.partition);
        return;
    }
    hand_back(stats, ownership, pending).await;
}

async fn hand_back(stats: &WorkerStats, ownership: &Ownership, pending: Pending) {
    stats.handed_back.fetch_add(1, Ordering::Relaxed);
    count_camera(meter::WORKER_HANDED_BACK, &pending.camera, 1);
    pending.span.record("outcome", "handed back");
    if let Some(acker) = &pending.acker {
        let _ = acker.ack_with(AckKind::Nak(None)).await;
    }
    ownership.leave(pending.partition);
}

/// Pending frames per camera, served round-robin across cameras. Live: at most one per
/// camera (the newest); durable: a queue per camera (bounded by the intake's permits).
struct Slots {
    inner: Mutex<SlotsInner>,
    ready: Condvar,
    newest_only: bool,
}

#[derive(Default)]
struct SlotsInner {
    pending: HashMap<String, VecDeque<Pending>>,
    order: VecDeque<String>,
    activity: Activity,
    closed: bool,
}

impl SlotsInner {
    fn pop(&mut self) -> Option<Pending> {
        while let Some(camera) = self.order.pop_front() {
            let Some(queue) = self.pending.get_mut(&camera) else {
                continue;
            };
            let Some(next) = queue.pop_front() else {
                continue;
            };
            if queue.is_empty() {
                self.pending.remove(&camera);
            } else {
                // More of this camera wait; it goes to the back of the round.
                self.order.push_back(camera);
            }
            return Some(next);
        }
        None
    }
}

impl Slots {
    fn new(newest_only: bool) -> Self {
        Self {
            inner: Mutex::default(),
            ready: Condvar::new(),
            newest_only,
        }
    }

    /// Stores a frame; live delivery returns the one of its camera it replaced.
    fn put(&self, pending: Pending) -> Option<Pending> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let camera = pending.camera.clone();
        inner.activity.saw(&camera, Instant::now());
        let queue = inner.pending.entry(camera.clone()).or_default();
        let replaced = if self.newest_only {
            queue.pop_front()
        } else {
            None
        };
        let was_empty = queue.is_empty();
        queue.push_back(pending);
        if was_empty {
            inner.order.push_back(camera);
        }
        self.ready.notify_one();
        replaced
    }

    /// The next batch of frames, one per camera: waits for the first, then takes what is
    /// pending, up to the size `batcher` chose, and keeps the batch open for more while
    /// `batcher` allows it and another active camera may still deliver. Empty once closed
    /// and drained.
    fn take_batch(&self, batcher: &Batcher) -> Vec<Pending> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch: Vec<Pending> = Vec::new();
        let opened = loop {
            if let Some(first) = inner.pop() {
                batch.push(first);
                break Instant::now();
            }
            if inner.closed {
                return batch;
            }
            inner = self
                .ready
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        };
        let max = batcher.size_limit();
        let mut deferred = Vec::new();
        while batch.len() < max {
            if let Some(next) = inner.pop() {
                // One frame per camera per pass keeps each camera's frames in order.
                if batch.iter().any(|b| b.camera == next.camera) {
                    deferred.push(next);
                    if inner.order.is_empty() {
                        break;
                    }
                    continue;
                }
                batch.push(next);
                continue;
            }
            if inner.closed {
                break;
            }
            let now = Instant::now();
            let deadline = opened + batcher.wait_budget(batch.len());
            // Only cameras outside the batch can add to it.
            if now >= deadline || inner.activity.active(now) <= batch.len() {
                break;
            }
            inner = self
                .ready
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        // Back at the front of their queues, still first in line.
        for p in deferred.into_iter().rev() {
            let camera = p.camera.clone();
            let inner = &mut *inner;
            let queue = inner.pending.entry(camera.clone()).or_default();
            if queue.is_empty() {
                inner.order.push_front(camera);
            }
            queue.push_front(p);
        }
        batch
    }

    /// Forgets cameras not heard from for a while in the batch-closing activity.
    fn prune(&self, now: Instant) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .activity
            .prune(now);
    }

    fn close(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.ready.notify_all();
    }
}

/// One frame's publications (or the reasons they failed), in the order they were made.
type Results = Vec<Result<Publication, Box<Event>>>;

/// The stage graph and where its results go; runs on its own thread because stages block.
struct Chain {
    graph: StageGraph,
    /// Nodes reading the worker's input, where every frame starts.
    roots: Vec<usize>,
    batcher: Batcher,
    subjects: Subjects,
    stats: Arc<WorkerStats>,
    ownership: Arc<Ownership>,
    /// `frames`: payloads are frames; otherwise items forwarded by another process.
    input: String,
    out: mpsc::Sender<Outbound>,
    /// Durable delivery: the per-camera watermarks; frames at or below theirs are not
    /// processed.
    watermarks: Option<Arc<CameraTable>>,
}

impl Chain {
    fn new(
        mut graph: StageGraph,
        subjects: Subjects,
        stats: Arc<WorkerStats>,
        ownership: Arc<Ownership>,
        input: String,
        out: mpsc::Sender<Outbound>,
        watermarks: Option<Arc<CameraTable>>,
    ) -> Self {
        graph.finish();
        let policy = graph
            .nodes
            .iter()
            .filter_map(|n| n.stage.batching())
            .reduce(BatchPolicy::merge)
            .unwrap_or(BatchPolicy {
                max_batch: 1,
                max_wait: Duration::ZERO,
                latency_target: None,
                adaptive: false,
            });
        Self {
            roots: graph.roots(),
            graph,
            batcher: Batcher::new(policy),
            subjects,
            stats,
            ownership,
            input,
            out,
            watermarks,
        }
    }

    fn run(mut self, slots: &Slots) {
        loop {
            let taken = slots.take_batch(&self.batcher);
            if taken.is_empty() {
                return;
            }
            // A partition that moved away while its frames waited: the new owner serves them.
            let (batch, moved): (Vec<Pending>, Vec<Pending>) = taken
                .into_iter()
                .partition(|p| self.ownership.holds(p.partition));
            for pending in moved {
                self.send(Outbound::HandBack(pending));
            }
            if batch.is_empty() {
                continue;
            }
            let (size, started) = (batch.len(), Instant::now());
            let payloads: Vec<Taken> = batch
                .iter()
                .map(|p| Taken {
                    camera: p.camera.clone(),
                    payload: p.payload.clone(),
                    span: p.span.clone(),
                })
                .collect();
            let results = self.process(payloads);
            self.batcher.observe(size, started.elapsed());
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            metrics::histogram!(meter::BATCH_FRAMES).record(size as f64);
            for (pending, processed) in batch.into_iter().zip(results) {
                let Processed {
                    seq,
                    capture_ts_ns,
                    results,
                    late,
                } = processed;
                if late && let Some(seq) = seq {
                    self.send(Outbound::Late { pending, seq });
                    continue;
                }
                for result in &results {
                    if let Err(event) = result {
                        tracing::warn!(camera = %pending.camera, stage = ?event.stage, seq = ?event.seq, cause = %event.message, "frame failed");
                    }
                }
                self.send(Outbound::Frame {
                    pending,
                    seq,
                    capture_ts_ns,
                    results,
                });
            }
        }
    }

    fn send(&self, out: Outbound) {
        // Fails only when the publisher is gone, i.e. during shutdown.
        let _ = self.out.blocking_send(out);
    }

    fn decode(&self, camera: &str, payload: Bytes) -> Result<Item, String> {
        if self.input == "frames" {
            Frame::decode(payload, Some(camera))
                .map(Item::from_frame)
                .map_err(|e| format!("corrupt frame: {e}"))
        } else {
            crate::envelope::decode(payload, Some(camera))
                .map_err(|e| format!("corrupt item from stage {:?}: {e}", self.input))
        }
    }

    /// Runs a batch of frames (one per camera) through every branch, each stage seeing the
    /// whole batch in one call. Returns each frame's results; a failing stage loses only that
    /// frame's branch.
    fn process(&mut self, batch: Vec<Taken>) -> Vec<Processed> {
        let started = Instant::now();
        let mut metas: Vec<Option<(u64, u64)>> = Vec::with_capacity(batch.len());
        let mut late = vec![false; batch.len()];
        let mut results: Vec<Results> = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        for (i, incoming) in batch.into_iter().enumerate() {
            let Taken {
                camera,
                payload,
                span,
            } = incoming;
            match self.decode(&camera, payload) {
                Ok(mut item) => {
                    let (seq, ts) = (item.frame.seq, item.frame.capture_ts_ns);
                    span.record("seq", seq);
                    metas.push(Some((seq, ts)));
                    results.push(Vec::new());
                    if self.is_late(&camera, seq, ts) {
                        late[i] = true;
                        continue;
                    }
                    item.span = span;
                    items.push((i, item));
                }
                Err(message) => {
                    crate::trace::fail(&span, &message);
                    metas.push(None);
                    results.push(vec![Err(Box::new(
                        Event::new(&camera, EventKind::FrameError, message).stage("decode"),
                    ))]);
                }
            }
        }
        let mut pending: Vec<(usize, Vec<(usize, Item)>)> = if items.is_empty() {
            Vec::new()
        } else {
            fan_out(&self.roots, items)
        };
        while let Some((node, items)) = pending.pop() {
            let n = &mut self.graph.nodes[node];
            let (origins, mut items): (Vec<usize>, Vec<Item>) = items.into_iter().unzip();
            let meta: Vec<(String, u64)> = items
                .iter()
                .map(|i| (i.frame.camera.to_string(), i.frame.seq))
                .collect();
            // While the stage runs, each item's span is its stage span (a model stage links its
            // batch span to them); afterwards the items carry their frame span again.
            let mut frame_spans = Vec::with_capacity(items.len());
            let mut stage_spans = Vec::with_capacity(items.len());
            for (item, (camera, seq)) in items.iter_mut().zip(&meta) {
                let stage_span = crate::trace::stage_span(&item.span, n.stage.id(), camera, *seq);
                stage_spans.push(stage_span.clone());
                frame_spans.push(std::mem::replace(&mut item.span, stage_span));
                metrics::counter!(meter::STAGE_IN, "stage" => n.stage.id().to_owned(), "camera" => camera.clone()).increment(1);
            }
            let t = Instant::now();
            let mut outs = n.stage.process_batch(items);
            let elapsed = t.elapsed();
            metrics::histogram!(meter::STAGE_SECONDS, "stage" => n.stage.id().to_owned())
                .record(elapsed.as_secs_f64());
            tracing::trace!(
                stage = n.stage.id(),
                items = origins.len(),
                elapsed_us = elapsed.as_micros() as u64
            );
            if outs.len() != origins.len() {
                let message = format!(
                    "stage {:?} returned {} results for {} items",
                    n.stage.id(),
                    outs.len(),
                    origins.len()
                );
                outs = origins
                    .iter()
                    .map(|_| Err(StageError::Failed(message.clone())))
                    .collect();
            }
            let mut next = Vec::with_capacity(origins.len());
            let spans = frame_spans.into_iter().zip(stage_spans);
            for (((origin, (camera, seq)), out), (frame_span, stage_span)) in
                origins.into_iter().zip(meta).zip(outs).zip(spans)
            {
                let fail = |message: String| {
                    Box::new(
                        Event::new(&camera, EventKind::FrameError, message)
                            .stage(n.stage.id())
                            .seq(seq),
                    )
                };
                let mut item = match out {
                    Ok(item) => item,
                    Err(e) => {
                        let message = format!("stage {:?} failed: {e}", n.stage.id());
                        crate::trace::fail(&stage_span, &message);
                        count_stage_error(n.stage.id(), &camera, &e);
                        results[origin].push(Err(fail(message)));
                        continue;
                    }
                };
                item.span = frame_span;
                drop(stage_span);
                metrics::counter!(meter::STAGE_OUT, "stage" => n.stage.id().to_owned(), "camera" => camera.clone()).increment(1);
                for output in &n.outputs {
                    let subject = output.subject(&self.subjects, &camera);
                    if output.forward {
                        // The next stage runs in another process: the whole item goes on.
                        match crate::envelope::encode(&item) {
                            Ok(body) => results[origin].push(Ok(Publication::Forward {
                                subject,
                                id: crate::durable::message_id(&camera, seq, &n.path),
                                body,
                            })),
                            Err(e) => results[origin].push(Err(fail(format!(
                                "cannot encode the output of {:?} for the next process: {e}",
                                n.stage.id()
                            )))),
                        }
                        continue;
                    }
                    let Payload::Detections(detections) = &item.payload else {
                        results[origin].push(Err(fail(format!(
                            "branch {} ended with a {}, not detections",
                            n.path,
                            item.payload.kind()
                        ))));
                        continue;
                    };
                    tracing::debug!(
                        camera,
                        seq,
                        branch = %n.path,
                        n = detections.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "frame processed"
                    );
                    let message = DetectionMessage {
                        schema: DETECTIONS_SCHEMA.to_owned(),
                        camera: camera.clone(),
                        seq,
                        capture_ts_ns: item.frame.capture_ts_ns,
                        published_ts_ns: crate::time::now_ns(),
                        width: item.frame.width,
                        height: item.frame.height,
                        pipeline: n.path.clone(),
                        model: n.model.clone(),
                        detections: detections.clone(),
                    };
                    match serde_json::to_vec(&message) {
                        Ok(body) => results[origin].push(Ok(Publication::Detections {
                            subject,
                            id: crate::durable::message_id(&camera, seq, &n.path),
                            body: body.into(),
                        })),
                        Err(e) => results[origin]
                            .push(Err(fail(format!("cannot encode detections: {e}")))),
                    }
                }
                next.push((origin, item));
            }
            if !next.is_empty() {
                pending.extend(fan_out(&n.children, next));
            }
        }
        metas
            .into_iter()
            .zip(results)
            .zip(late)
            .map(|((meta, results), late)| Processed {
                seq: meta.map(|m| m.0),
                capture_ts_ns: meta.map(|m| m.1),
                results,
                late,
            })
            .collect()
    }

    /// Durable ordering: whether the frame is at or below its camera's watermark (the newest
    /// frame fed to the stages); if not, it becomes the watermark, as it is fed now.
    fn is_late(&self, camera: &str, seq: u64, capture_ts_ns: u64) -> bool {
        self.watermarks
            .as_ref()
            .and_then(|t| t.with(camera, |s| s.feed(seq, capture_ts_ns)))
            .unwrap_or(false)
    }
}

/// One frame as the processing thread takes it.
struct Taken {
    camera: String,
    payload: Bytes,
    span: tracing::Span,
}

/// One frame's outcome on the processing thread.
struct Processed {
    seq: Option<u64>,
    capture_ts_ns: Option<u64>,
    results: Results,
    /// Durable: older than a frame of its camera already processed; not processed.
    late: bool,
}

/// Counts a stage failure; traps and time-outs are operator faults as well.
fn count_stage_error(stage: &str, camera: &str, e: &StageError) {
    let kind = match e {
        StageError::WrongInput { .. } => "wrong_input",
        StageError::InvalidInput(_) => "invalid_input",
        StageError::Trap(_) => "trap",
        StageError::Timeout(_) => "timeout",
        StageError::Failed(_) => "failed",
    };
    metrics::counter!(meter::STAGE_ERRORS, "stage" => stage.to_owned(), "camera" => camera.to_owned(), "kind" => kind).increment(1);
    if matches!(e, StageError::Trap(_) | StageError::Timeout(_)) {
        metrics::counter!(meter::OPERATOR_FAULTS, "stage" => stage.to_owned(), "kind" => kind)
            .increment(1);
    }
}

/// One copy of `item` per node; the last node gets the original.
fn fan_out<T: Clone>(nodes: &[usize], item: T) -> Vec<(usize, T)> {
    let mut out = Vec::with_capacity(nodes.len());
    let mut nodes = nodes.iter().copied().peekable();
    let mut item = Some(item);
    while let Some(node) = nodes.next() {
        let this = if nodes.peek().is_some() {
            item.clone()
        } else {
            item.take()
        };
        if let Some(i) = this {
            out.push((node, i));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batcher(max_batch: usize, max_wait_ms: u64) -> Batcher {
        Batcher::new(BatchPolicy {
            max_batch,
            max_wait: Duration::from_millis(max_wait_ms),
            latency_target: None,
            adaptive: false,
        })
    }

    fn cameras(batch: &[Pending]) -> Vec<&str> {
        batch.iter().map(|p| p.camera.as_str()).collect()
    }

    fn frame(camera: &str, payload: &'static [u8]) -> Pending {
        Pending {
            camera: camera.to_owned(),
            partition: 0,
            payload: Bytes::from_static(payload),
            acker: None,
            _permit: None,
            span: tracing::Span::none(),
            seq: None,
        }
    }

    #[test]
    fn pending_frames_batch_at_once_up_to_max_batch() {
        let slots = Slots::new(true);
        for cam in ["a", "b", "c"] {
            slots.put(frame(cam, b"f"));
        }
        // Every active camera is already in the batch: it closes instead of waiting a minute
        // for a fourth frame.
        assert_eq!(
            cameras(&slots.take_batch(&batcher(4, 60_000))),
            ["a", "b", "c"]
        );
        for cam in ["a", "b", "c"] {
            slots.put(frame(cam, b"f"));
        }
        assert_eq!(cameras(&slots.take_batch(&batcher(2, 0))), ["a", "b"]);
        assert_eq!(cameras(&slots.take_batch(&batcher(2, 0))), ["c"]);
    }

    #[test]
    fn a_batch_waits_for_an_active_camera_within_max_wait() {
        let slots = Arc::new(Slots::new(true));
        slots.put(frame("a", b"1"));
        slots.put(frame("b", b"1"));
        assert_eq!(slots.take_batch(&batcher(2, 0)).len(), 2);
        // Both cameras are active; only `a` has a frame. `b` delivers while the batch waits.
        slots.put(frame("a", b"2"));
        let late = {
            let slots = slots.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                slots.put(frame("b", b"2"));
            })
        };
        let batch = slots.take_batch(&batcher(4, 60_000));
        late.join().expect("join");
        assert_eq!(cameras(&batch), ["a", "b"]);
        // Without a wait the batch closes with what is there.
        slots.put(frame("a", b"3"));
        assert_eq!(cameras(&slots.take_batch(&batcher(4, 0))), ["a"]);
    }

    #[test]
    fn durable_slots_keep_every_frame_in_order_one_per_camera_per_batch() {
        let slots = Slots::new(false);
        for payload in [b"1", b"2", b"3"] {
            assert!(
                slots.put(frame("a", payload)).is_none(),
                "nothing is replaced"
            );
        }
        assert!(slots.put(frame("b", b"1")).is_none());
        let payloads = |batch: &[Pending]| -> Vec<(String, Vec<u8>)> {
            batch
                .iter()
                .map(|p| (p.camera.clone(), p.payload.to_vec()))
                .collect()
        };
        let first = slots.take_batch(&batcher(8, 0));
        assert_eq!(
            payloads(&first),
            [("a".into(), b"1".to_vec()), ("b".into(), b"1".to_vec())]
        );
        assert_eq!(
            payloads(&slots.take_batch(&batcher(8, 0))),
            [("a".into(), b"2".to_vec())]
        );
        assert_eq!(
            payloads(&slots.take_batch(&batcher(8, 0))),
            [("a".into(), b"3".to_vec())]
        );
        slots.close();
        assert!(slots.take_batch(&batcher(8, 0)).is_empty());
    }

    #[test]
    fn camera_tokens_with_and_without_a_partition() {
        let s = Subjects::new("ns");
        assert_eq!(
            camera_token(&s, "frames", "ns.frames.cam-1"),
            Some(("cam-1".into(), None))
        );
        assert_eq!(
            camera_token(&s, "frames", "ns.frames.cam-1.7"),
            Some(("cam-1".into(), Some(7)))
        );
        assert_eq!(
            camera_token(&s, "preprocess", "ns.preprocess.cam-1"),
            Some(("cam-1".into(), None))
        );
        assert_eq!(camera_token(&s, "frames", "ns.frames.cam-1.x"), None);
        assert_eq!(camera_token(&s, "frames", "ns.frames."), None);
        assert_eq!(camera_token(&s, "frames", "other.frames.cam"), None);
    }

    #[test]
    fn closing_ends_a_waiting_batch() {
        let slots = Arc::new(Slots::new(true));
        let closer = {
            let slots = slots.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                slots.close();
            })
        };
        assert!(slots.take_batch(&batcher(4, 10)).is_empty());
        closer.join().expect("join");
    }
}
