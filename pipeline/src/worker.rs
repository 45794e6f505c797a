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

use crate::batch::{Activity, BatchPolicy, Batcher};
use crate::detection::{DETECTIONS_SCHEMA, DetectionMessage};
use crate::event::{Event, EventKind};
use crate::frame::Frame;
use crate::graph::StageGraph;
use crate::partition::PartitionSet;
use crate::stage::{Item, Payload, Stage, StageError};
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
    /// Passes through the stages; each carries a batch of frames (one, without batching).
    pub batches: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub received: u64,
    pub processed: u64,
    pub dropped: u64,
    pub failed: u64,
    pub skipped: u64,
    pub batches: u64,
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
    activity: Activity,
    closed: bool,
}

impl SlotsInner {
    fn pop(&mut self) -> Option<(String, Bytes)> {
        while let Some(camera) = self.order.pop_front() {
            if let Some(payload) = self.pending.remove(&camera) {
                return Some((camera, payload));
            }
        }
        None
    }
}

impl Slots {
    /// Stores the newest frame of `camera`; true if it replaced one not yet processed.
    fn put(&self, camera: String, payload: Bytes) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.activity.saw(&camera, Instant::now());
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

    /// The next batch of frames, one per camera: waits for the first, then takes what is
    /// pending, up to the size `batcher` chose, and keeps the batch open for more while
    /// `batcher` allows it and another active camera may still deliver. Empty once closed.
    fn take_batch(&self, batcher: &Batcher) -> Vec<(String, Bytes)> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Vec::new();
        let opened = loop {
            if inner.closed {
                return batch;
            }
            if let Some(first) = inner.pop() {
                batch.push(first);
                break Instant::now();
            }
            inner = self
                .ready
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        };
        let max = batcher.size_limit();
        while batch.len() < max && !inner.closed {
            if let Some(next) = inner.pop() {
                batch.push(next);
                continue;
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
        batch
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

/// One frame's publications (or the reasons they failed), in the order they were made.
type Results = Vec<Result<(String, DetectionMessage), Box<Event>>>;

/// The stage graph and where its results go; runs on its own thread because stages block.
struct Chain {
    graph: StageGraph,
    /// Nodes reading camera frames, where every frame starts.
    roots: Vec<usize>,
    batcher: Batcher,
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
            out,
        }
    }

    fn run(mut self, slots: &Slots) {
        loop {
            let batch = slots.take_batch(&self.batcher);
            if batch.is_empty() {
                return;
            }
            let (size, started) = (batch.len(), Instant::now());
            let cameras: Vec<String> = batch.iter().map(|(c, _)| c.clone()).collect();
            let results = self.process(batch);
            self.batcher.observe(size, started.elapsed());
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            for (camera, results) in cameras.iter().zip(results) {
                self.publish(camera, results);
            }
        }
    }

    fn publish(&self, camera: &str, results: Results) {
        let mut failed = false;
        for result in results {
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
                            self.subjects.events_for(camera),
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

    fn send(&self, out: Outbound) {
        // Fails only when the publisher is gone, i.e. during shutdown.
        let _ = self.out.blocking_send(out);
    }

    /// Runs a batch of frames (one per camera) through every branch, each stage seeing the
    /// whole batch in one call. Returns each frame's results; a failing stage loses only that
    /// frame's branch.
    fn process(&mut self, batch: Vec<(String, Bytes)>) -> Vec<Results> {
        let started = Instant::now();
        let mut results: Vec<Results> = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        for (i, (camera, payload)) in batch.into_iter().enumerate() {
            match Frame::decode(payload, Some(&camera)) {
                Ok(frame) => {
                    results.push(Vec::new());
                    items.push((i, Item::from_frame(frame)));
                }
                Err(e) => results.push(vec![Err(Box::new(
                    Event::new(
                        &camera,
                        EventKind::FrameError,
                        format!("corrupt frame: {e}"),
                    )
                    .stage("decode"),
                ))]),
            }
        }
        let mut pending: Vec<(usize, Vec<(usize, Item)>)> = if items.is_empty() {
            Vec::new()
        } else {
            fan_out(&self.roots, items)
        };
        while let Some((node, items)) = pending.pop() {
            let n = &mut self.graph.nodes[node];
            let (origins, items): (Vec<usize>, Vec<Item>) = items.into_iter().unzip();
            let meta: Vec<(String, u64)> = items
                .iter()
                .map(|i| (i.frame.camera.to_string(), i.frame.seq))
                .collect();
            let t = Instant::now();
            let mut outs = n.stage.process_batch(items);
            tracing::trace!(
                stage = n.stage.id(),
                items = origins.len(),
                elapsed_us = t.elapsed().as_micros() as u64
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
            for ((origin, (camera, seq)), out) in origins.into_iter().zip(meta).zip(outs) {
                let fail = |message: String| {
                    Box::new(
                        Event::new(&camera, EventKind::FrameError, message)
                            .stage(n.stage.id())
                            .seq(seq),
                    )
                };
                let item = match out {
                    Ok(item) => item,
                    Err(e) => {
                        results[origin]
                            .push(Err(fail(format!("stage {:?} failed: {e}", n.stage.id()))));
                        continue;
                    }
                };
                for output in &n.outputs {
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
                    results[origin].push(Ok((
                        output.subject(&self.subjects, &camera),
                        DetectionMessage {
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
                        },
                    )));
                }
                next.push((origin, item));
            }
            if !next.is_empty() {
                pending.extend(fan_out(&n.children, next));
            }
        }
        results
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

    fn cameras(batch: &[(String, Bytes)]) -> Vec<&str> {
        batch.iter().map(|(c, _)| c.as_str()).collect()
    }

    #[test]
    fn pending_frames_batch_at_once_up_to_max_batch() {
        let slots = Slots::default();
        for cam in ["a", "b", "c"] {
            slots.put(cam.into(), Bytes::from_static(b"f"));
        }
        // Every active camera is already in the batch: it closes instead of waiting a minute
        // for a fourth frame.
        assert_eq!(
            cameras(&slots.take_batch(&batcher(4, 60_000))),
            ["a", "b", "c"]
        );
        for cam in ["a", "b", "c"] {
            slots.put(cam.into(), Bytes::from_static(b"f"));
        }
        assert_eq!(cameras(&slots.take_batch(&batcher(2, 0))), ["a", "b"]);
        assert_eq!(cameras(&slots.take_batch(&batcher(2, 0))), ["c"]);
    }

    #[test]
    fn a_batch_waits_for_an_active_camera_within_max_wait() {
        let slots = Arc::new(Slots::default());
        slots.put("a".into(), Bytes::from_static(b"1"));
        slots.put("b".into(), Bytes::from_static(b"1"));
        assert_eq!(slots.take_batch(&batcher(2, 0)).len(), 2);
        // Both cameras are active; only `a` has a frame. `b` delivers while the batch waits.
        slots.put("a".into(), Bytes::from_static(b"2"));
        let late = {
            let slots = slots.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                slots.put("b".into(), Bytes::from_static(b"2"));
            })
        };
        let batch = slots.take_batch(&batcher(4, 60_000));
        late.join().expect("join");
        assert_eq!(cameras(&batch), ["a", "b"]);
        // Without a wait the batch closes with what is there.
        slots.put("a".into(), Bytes::from_static(b"3"));
        assert_eq!(cameras(&slots.take_batch(&batcher(4, 0))), ["a"]);
    }

    #[test]
    fn closing_ends_a_waiting_batch() {
        let slots = Arc::new(Slots::default());
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
