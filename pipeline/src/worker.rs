//! The stage worker: subscribes to every camera's frames, keeps the newest pending frame per
//! camera (live delivery), runs each frame through the stage chain on a dedicated thread, and
//! publishes detections and events. A failing frame is reported and only that frame is lost.
//! A worker given a [`PartitionSet`] serves only the cameras hashed into it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::detection::{DETECTIONS_SCHEMA, DetectionMessage};
use crate::event::{Event, EventKind};
use crate::frame::Frame;
use crate::graph::StageGraph;
use crate::partition::PartitionSet;
use crate::stage::{Item, Payload, Stage};
use crate::subjects::Subjects;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot subscribe to {subject}: {message}")]
    Subscribe { subject: String, message: String },
    #[error("the processing thread panicked")]
    Panicked,
}

/// Counters of one worker, readable while it runs.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub received: AtomicU64,
    pub processed: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
    /// Frames of cameras outside this worker's partitions: another worker's, not a loss.
    pub skipped: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub received: u64,
    pub processed: u64,
    pub dropped: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl WorkerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            received: self.received.load(Ordering::Relaxed),
            processed: self.processed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }
}

/// Messages the processing thread hands to the async publisher.
enum Outbound {
    Detections(String, Bytes),
    Event(String, Bytes),
}

pub struct Worker {
    client: async_nats::Client,
    subjects: Subjects,
    graph: StageGraph,
    stats: Arc<WorkerStats>,
    partitions: Option<PartitionSet>,
}

impl Worker {
    pub fn new(
        client: async_nats::Client,
        subjects: Subjects,
        stages: Vec<Box<dyn Stage>>,
    ) -> Self {
        Self::with_graph(client, subjects, StageGraph::chain(stages))
    }

    /// A worker running stages wired as a tree (fan-out, sinks); see [`StageGraph`].
    pub fn with_graph(client: async_nats::Client, subjects: Subjects, graph: StageGraph) -> Self {
        Self {
            client,
            subjects,
            graph,
            stats: Arc::default(),
            partitions: None,
        }
    }

    /// Serves only cameras in `partitions`; other cameras' frames are skipped (counted in
    /// [`WorkerStats::skipped`], not as drops). The worker still receives them: it subscribes
    /// to every camera, so this splits the work, not the network traffic.
    pub fn with_partitions(mut self, partitions: PartitionSet) -> Self {
        self.partitions = Some(partitions);
        self
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Serves until `cancel` fires, then drains what it already took and flushes.
    pub async fn run(self, cancel: CancellationToken) -> Result<StatsSnapshot, WorkerError> {
        let Worker {
            client,
            subjects,
            graph,
            stats,
            partitions,
        } = self;
        let subject = subjects.all_frames();
        let mut sub =
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| WorkerError::Subscribe {
                    subject: subject.clone(),
                    message: e.to_string(),
                })?;
        let serving = partitions
            .as_ref()
            .map_or_else(|| "all".to_owned(), PartitionSet::to_string);
        tracing::info!(%subject, stages = %graph.describe(), partitions = %serving, "worker subscribed");

        let slots = Arc::new(Slots::default());
        let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(256);
        let chain = Chain::new(graph, subjects.clone(), stats.clone(), out_tx.clone());
        let processor = {
            let slots = slots.clone();
            std::thread::Builder::new()
                .name("panoptes-stages".into())
                .spawn(move || chain.run(&slots))
                .map_err(|_| WorkerError::Panicked)?
        };
        let publisher = {
            let client = client.clone();
            tokio::spawn(async move {
                while let Some(out) = out_rx.recv().await {
                    let (subject, body) = match out {
                        Outbound::Detections(s, b) | Outbound::Event(s, b) => (s, b),
                    };
                    if let Err(e) = client.publish(subject.clone(), body).await {
                        tracing::warn!(%subject, error = %e, "publish failed");
                    }
                }
                let _ = client.flush().await;
            })
        };

        let mut drops = DropReporter::default();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                msg = sub.next() => {
                    let Some(msg) = msg else { break };
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    let Some(camera) = subjects.camera_of(&msg.subject).map(str::to_owned) else {
                        tracing::warn!(subject = %msg.subject, "frame on a subject without a camera token");
                        continue;
                    };
                    if partitions.as_ref().is_some_and(|p| !p.owns(&camera)) {
                        stats.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if slots.put(camera.clone(), msg.payload) {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        if let Some(count) = drops.dropped(&camera) {
                            let event = Event::new(&camera, EventKind::FramesDropped,
                                format!("{count} frames dropped to keep up (live delivery keeps the newest frame)"))
                                .stage("worker").count(count);
                            if let Ok(body) = serde_json::to_vec(&event) {
                                let _ = out_tx.send(Outbound::Event(subjects.events_for(&camera), body.into())).await;
                            }
                        }
                    }
                }
            }
        }
        let _ = sub.unsubscribe().await;
        slots.close();
        drop(out_tx);
        let joined = tokio::task::spawn_blocking(move || processor.join()).await;
        let _ = publisher.await;
        match joined {
            Ok(Ok(())) => Ok(stats.snapshot()),
            _ => Err(WorkerError::Panicked),
        }
    }
}

/// Pending frames: at most one per camera (the newest), served round-robin across cameras.
#[derive(Default)]
struct Slots {
    inner: Mutex<SlotsInner>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotsInner {
    pending: HashMap<String, Bytes>,
    order: VecDeque<String>,
    closed: bool,
}

impl Slots {
    /// Stores the newest frame of `camera`; true if it replaced one not yet processed.
    fn put(&self, camera: String, payload: Bytes) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let replaced = match inner.pending.insert(camera.clone(), payload) {
            Some(_) => true,
            None => {
                inner.order.push_back(camera);
                false
            }
        };
        self.ready.notify_one();
        replaced
    }

    /// The next camera's frame, or None once closed.
    fn take(&self) -> Option<(String, Bytes)> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if inner.closed {
                return None;
            }
            if let Some(camera) = inner.order.pop_front()
                && let Some(payload) = inner.pending.remove(&camera)
            {
                return Some((camera, payload));
            }
            inner = self
                .ready
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn close(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.ready.notify_all();
    }
}

/// Rate-limits drop events to one per camera per second, carrying the count since the last one.
#[derive(Default)]
struct DropReporter {
    since: HashMap<String, (Instant, u64)>,
}

impl DropReporter {
    fn dropped(&mut self, camera: &str) -> Option<u64> {
        let now = Instant::now();
        let entry = self
            .since
            .entry(camera.to_owned())
            .or_insert((now - Duration::from_secs(1), 0));
        entry.1 += 1;
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            let count = entry.1;
            *entry = (now, 0);
            Some(count)
        } else {
            None
        }
    }
}

/// The stage graph and where its results go; runs on its own thread because stages block.
struct Chain {
    graph: StageGraph,
    /// Nodes reading camera frames, where every frame starts.
    roots: Vec<usize>,
    subjects: Subjects,
    stats: Arc<WorkerStats>,
    out: mpsc::Sender<Outbound>,
}

impl Chain {
    fn new(
        mut graph: StageGraph,
        subjects: Subjects,
        stats: Arc<WorkerStats>,
        out: mpsc::Sender<Outbound>,
    ) -> Self {
        graph.finish();
        Self {
            roots: graph.roots(),
            graph,
            subjects,
            stats,
            out,
        }
    }

    fn run(mut self, slots: &Slots) {
        while let Some((camera, payload)) = slots.take() {
            let mut failed = false;
            for result in self.process(&camera, payload) {
                match result {
                    Ok((subject, message)) => match serde_json::to_vec(&message) {
                        Ok(body) => self.send(Outbound::Detections(subject, body.into())),
                        Err(e) => tracing::error!(error = %e, "cannot encode detections"),
                    },
                    Err(event) => {
                        failed = true;
                        tracing::warn!(camera, stage = ?event.stage, seq = ?event.seq, cause = %event.message, "frame failed");
                        if let Ok(body) = serde_json::to_vec(&event) {
                            self.send(Outbound::Event(
                                self.subjects.events_for(&camera),
                                body.into(),
                            ));
                        }
                    }
                }
            }
            let counter = if failed {
                &self.stats.failed
            } else {
                &self.stats.processed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn send(&self, out: Outbound) {
        // Fails only when the publisher is gone, i.e. during shutdown.
        let _ = self.out.blocking_send(out);
    }

    /// Runs one frame through every branch. Each publication is a result; a failing stage
    /// loses only its own branch.
    fn process(
        &mut self,
        camera: &str,
        payload: Bytes,
    ) -> Vec<Result<(String, DetectionMessage), Box<Event>>> {
        let frame = match Frame::decode(payload, Some(camera)) {
            Ok(f) => f,
            Err(e) => {
                return vec![Err(Box::new(
                    Event::new(camera, EventKind::FrameError, format!("corrupt frame: {e}"))
                        .stage("decode"),
                ))];
            }
        };
        let item = Item::from_frame(frame);
        let (seq, started) = (item.frame.seq, Instant::now());
        let mut results = Vec::new();
        let mut pending: Vec<(usize, Item)> = fan_out(&self.roots, item);
        while let Some((node, item)) = pending.pop() {
            let n = &mut self.graph.nodes[node];
            let t = Instant::now();
            let item = match n.stage.process(item) {
                Ok(item) => item,
                Err(e) => {
                    results.push(Err(Box::new(
                        Event::new(
                            camera,
                            EventKind::FrameError,
                            format!("stage {:?} failed: {e}", n.stage.id()),
                        )
                        .stage(n.stage.id())
                        .seq(seq),
                    )));
                    continue;
                }
            };
            tracing::trace!(
                stage = n.stage.id(),
                elapsed_us = t.elapsed().as_micros() as u64
            );
            for output in &n.outputs {
                let Payload::Detections(detections) = &item.payload else {
                    results.push(Err(Box::new(
                        Event::new(
                            camera,
                            EventKind::FrameError,
                            format!(
                                "branch {} ended with a {}, not detections",
                                n.path,
                                item.payload.kind()
                            ),
                        )
                        .stage(n.stage.id())
                        .seq(seq),
                    )));
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
                results.push(Ok((
                    output.subject(&self.subjects, camera),
                    DetectionMessage {
                        schema: DETECTIONS_SCHEMA.to_owned(),
                        camera: camera.to_owned(),
                        seq,
                        capture_ts_ns: item.frame.capture_ts_ns,
                        published_ts_ns: crate::time::now_ns(),
                        width: item.frame.width,
                        height: item.frame.height,
                        pipeline: n.path.clone(),
                        model: n.model.clone(),
                        detections: detections.clone(),
                    },
                )));
            }
            pending.extend(fan_out(&n.children, item));
        }
        results
    }
}

/// One copy of `item` per node; the last node gets the original.
fn fan_out(nodes: &[usize], item: Item) -> Vec<(usize, Item)> {
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
