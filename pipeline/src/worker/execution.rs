//! Execution: the stage graph on a thread of its own (stages block), driven through its
//! lifecycle: every stage started before the worker takes anything, batches of frames decoded
//! and run through every branch, ticks at each stage's interval, cameras forgotten when the
//! worker drops them, and every stage stopped after the last batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::keeping::Keeper;
use super::publishing::{Destination, Outbound, Results, StageOut, emit};
use super::scheduling::{Chores, Pending, Slots, Work};
use super::{Input, WorkerError, WorkerStats};
use crate::batch::Batcher;
use crate::camera_state::CameraTable;
use crate::graph::StageGraph;
use crate::lease::Ownership;
use crate::shadow::{Reports, Tap};
use panoptes_contracts::batching::BatchPolicy;
use panoptes_contracts::camera::CameraId;
use panoptes_contracts::event::{Event, EventKind};
use panoptes_contracts::frame::Frame;
use panoptes_contracts::meter;
use panoptes_contracts::stage::{Item, StageError};
use panoptes_contracts::subjects::Subjects;

/// The shortest tick period: tokio's intervals refuse zero.
const MIN_TICK: Duration = Duration::from_millis(1);

/// The stage graph and where its results go; runs on its own thread because stages block.
pub(super) struct Chain {
    graph: StageGraph,
    /// Nodes reading the worker's input, where every frame starts.
    roots: Vec<usize>,
    /// Per node, where each of its outputs publishes.
    destinations: Vec<Vec<Destination>>,
    batcher: Batcher,
    subjects: Subjects,
    stats: Arc<WorkerStats>,
    ownership: Arc<Ownership>,
    input: Input,
    out: mpsc::Sender<Outbound>,
    /// Durable delivery: the per-camera watermarks; frames at or below theirs are not
    /// processed.
    watermarks: Option<Arc<CameraTable>>,
    /// Cameras whose frames reached the stages, with the partition and its handover count
    /// then: a camera whose partition changed hands since is forgotten by every stage.
    fed: HashMap<String, (u32, u64)>,
    /// Per-camera stage state across owners; `None` when no stage keeps any.
    keeper: Option<Keeper>,
    /// Shadow candidates beside live nodes.
    taps: Vec<Tap>,
}

/// The stage thread once every stage has started, and the tasks that tick its stages.
pub(super) struct StageThread {
    thread: std::thread::JoinHandle<()>,
    /// Nodes whose stages want ticks, with how often.
    ticks: Vec<(usize, Duration)>,
    /// How often stage states are saved, when a stage keeps any.
    saves: Option<Duration>,
    tickers: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl StageThread {
    /// Ticks every stage that asked for it at its interval on the runtime's clock (which
    /// tests pause), the first one interval from now.
    pub(super) fn start_ticks(&mut self, slots: &Arc<Slots>) {
        for &(node, every) in &self.ticks {
            let every = every.max(MIN_TICK);
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (slots, cancel) = (slots.clone(), self.tickers.clone());
            self.tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        _ = interval.tick() => {
                            slots.tick(node, tokio::time::Instant::now().into_std());
                        }
                    }
                }
            }));
        }
        if let Some(every) = self.saves {
            let every = every.max(MIN_TICK);
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (slots, cancel) = (slots.clone(), self.tickers.clone());
            self.tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        _ = interval.tick() => slots.save_states(),
                    }
                }
            }));
        }
    }

    /// Stops ticking, lets the thread finish what `slots` hold, stop every stage and end.
    pub(super) async fn finish(self, slots: &Slots) -> Result<(), WorkerError> {
        self.tickers.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        slots.close();
        let thread = self.thread;
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(WorkerError::Panicked),
        }
    }
}

impl Chain {
    pub(super) fn new(
        mut graph: StageGraph,
        subjects: Subjects,
        stats: Arc<WorkerStats>,
        ownership: Arc<Ownership>,
        input: Input,
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
        let destinations = graph
            .nodes
            .iter()
            .map(|n| {
                n.outputs
                    .iter()
                    .map(|o| Destination::of(o, &subjects))
                    .collect()
            })
            .collect();
        Self {
            roots: graph.roots(),
            destinations,
            graph,
            batcher: Batcher::new(policy),
            subjects,
            stats,
            ownership,
            input,
            out,
            watermarks,
            fed: HashMap::new(),
            keeper: None,
            taps: Vec::new(),
        }
    }

    /// Starts the graph's shadow candidates, each on its own thread, reporting to `reports`.
    pub(super) fn shadowing(mut self, reports: &Reports) -> Self {
        for (at, compare_at, shadow) in std::mem::take(&mut self.graph.shadows) {
            let stage = self.graph.nodes[at].stage.id().to_owned();
            self.taps.push(Tap::start(
                at,
                compare_at,
                stage,
                shadow,
                self.subjects.clone(),
                reports.clone(),
            ));
        }
        self
    }

    /// Keeps per-camera stage state across owners (restored per tenure, saved to KV).
    pub(super) fn keeping(mut self, keeper: Option<Keeper>) -> Self {
        self.keeper = keeper;
        self
    }

    /// Starts every stage on the stage thread and, once all have, serves `slots` there until
    /// they close, then stops every stage. A stage that cannot start fails this, naming it;
    /// the stages started before it are stopped.
    pub(super) async fn spawn(mut self, slots: Arc<Slots>) -> Result<StageThread, WorkerError> {
        let saves = self.keeper.as_ref().and_then(|_| {
            self.graph
                .nodes
                .iter()
                .filter_map(|n| n.stage.snapshot_interval())
                .min()
        });
        let (started_tx, started_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("panoptes-stages".into())
            .spawn(move || match self.graph.start() {
                Ok(ticks) => {
                    if started_tx.send(Ok(ticks)).is_ok() {
                        self.run(&slots);
                    } else {
                        // Nobody waits for the stages any more.
                        self.graph.stop();
                    }
                }
                Err(failed) => {
                    let _ = started_tx.send(Err(failed));
                }
            })
            .map_err(|_| WorkerError::Panicked)?;
        let started = started_rx.await;
        if let Ok(Ok(ticks)) = started {
            return Ok(StageThread {
                thread,
                ticks,
                saves,
                tickers: CancellationToken::new(),
                tasks: Vec::new(),
            });
        }
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        match started {
            Ok(Err((stage, e))) => Err(WorkerError::StageStart {
                stage,
                message: e.to_string(),
            }),
            _ => Err(WorkerError::Panicked),
        }
    }

    fn run(mut self, slots: &Slots) {
        while let Some(Work { chores, frames }) = slots.take(&self.batcher) {
            self.chores(chores);
            if frames.is_empty() {
                continue;
            }
            // A partition that moved away while its frames waited: the new owner serves them.
            let (batch, moved): (Vec<Pending>, Vec<Pending>) = frames
                .into_iter()
                .partition(|p| self.ownership.holds(p.partition));
            for pending in moved {
                self.send(Outbound::HandBack(pending));
            }
            if batch.is_empty() {
                continue;
            }
            for p in &batch {
                self.feeding(&p.camera, p.partition);
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
        // What is still held here goes on from its last state, wherever it runs next.
        self.save_held(None);
        self.graph.stop();
        for tap in &mut self.taps {
            tap.stop();
        }
    }

    /// Queues the states of the cameras fed here whose partition is still held (of
    /// `partition` only, when given).
    fn save_held(&self, partition: Option<u32>) {
        let Some(keeper) = &self.keeper else {
            return;
        };
        let cameras = self
            .fed
            .iter()
            .filter(|(_, (p, _))| {
                partition.is_none_or(|only| only == *p) && self.ownership.holds(*p)
            })
            .map(|(camera, _)| camera.as_str());
        keeper.save(&self.graph, cameras);
    }

    /// Publishes the analytics events a stage raised on `<ns>.analytics.<camera>`.
    fn report_analytics(&self, events: Vec<panoptes_contracts::analytics::AnalyticsEvent>) {
        for event in events {
            if let Ok(body) = serde_json::to_vec(&event) {
                self.send(Outbound::Analytics {
                    subject: self.subjects.analytics_for(&event.camera),
                    id: event.id,
                    body: body.into(),
                });
            }
        }
    }

    /// Publishes the events stages raised (a track ended, a state discarded).
    fn report(&self, events: Vec<Event>) {
        for event in events {
            if let Ok(body) = serde_json::to_vec(&event) {
                self.send(Outbound::Event(
                    self.subjects.events_for(&event.camera),
                    body.into(),
                ));
            }
        }
    }

    fn send(&self, out: Outbound) {
        // Fails only when the publisher is gone, i.e. during shutdown.
        let _ = self.out.blocking_send(out);
    }

    /// States to save for partitions about to go, cameras to forget (idle, or gone with
    /// their partition), ticks due, then the periodic save.
    fn chores(&mut self, chores: Chores) {
        for partition in chores.hand_offs {
            self.save_held(Some(partition));
            if let Some(keeper) = &self.keeper {
                keeper.handed_off(partition);
            }
        }
        for camera in chores.forget {
            // Silent for the worker's idle time: its saved state goes with it.
            if self.fed.contains_key(&camera)
                && let Some(keeper) = &self.keeper
            {
                keeper.remove(&self.graph, &camera);
            }
            self.forget(&camera);
        }
        if chores.moved {
            let moved: Vec<String> = self
                .fed
                .iter()
                .filter(|(_, (p, h))| self.ownership.handovers(*p) != *h)
                .map(|(camera, _)| camera.clone())
                .collect();
            for camera in moved {
                self.forget(&camera);
            }
        }
        for (node, now) in chores.ticks {
            self.tick(node, now);
        }
        if chores.save {
            self.save_held(None);
        }
    }

    /// `camera`'s frame is about to reach the stages. If its partition changed hands since
    /// its last frame here, another worker served it meanwhile: the stages start it afresh.
    /// A camera's tenure here begins with its first frame: stateful stages restore it.
    fn feeding(&mut self, camera: &str, partition: u32) {
        let now = (partition, self.ownership.handovers(partition));
        match self.fed.get_mut(camera) {
            Some(held) if *held == now => return,
            Some(held) => {
                *held = now;
                if let Ok(id) = CameraId::new(camera) {
                    self.graph.forget(&id);
                }
            }
            None => {
                self.fed.insert(camera.to_owned(), now);
            }
        }
        if let Some(keeper) = &self.keeper
            && let Ok(id) = CameraId::new(camera)
        {
            let events = keeper.begin(&mut self.graph, &id);
            self.report(events);
        }
    }

    /// Every stage drops what it keeps of `camera`, if its frames reached them since they
    /// last did.
    fn forget(&mut self, camera: &str) {
        if self.fed.remove(camera).is_none() {
            return;
        }
        // A camera ID that is not valid never decodes, so no stage keeps anything of it.
        if let Ok(id) = CameraId::new(camera) {
            self.graph.forget(&id);
        }
    }

    /// `node`'s tick: what its stage emits is published on the node's outputs and runs on
    /// through its successors, as results of `process` would.
    fn tick(&mut self, node: usize, now: Instant) {
        let Some(n) = self.graph.nodes.get_mut(node) else {
            return;
        };
        let items = n.stage.tick(now);
        let events = n.stage.take_events();
        let analytics = n.stage.take_analytics();
        self.report(events);
        self.report_analytics(analytics);
        if items.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut cameras = Vec::with_capacity(items.len());
        let mut outs = Vec::with_capacity(items.len());
        for (origin, item) in items.into_iter().enumerate() {
            let camera = item.frame.camera.to_string();
            cameras.push(camera.clone());
            outs.push(StageOut {
                origin,
                camera,
                seq: item.frame.seq,
                item,
            });
        }
        let mut results: Vec<Results> = cameras.iter().map(|_| Vec::new()).collect();
        let n = &self.graph.nodes[node];
        let next = emit(
            n,
            &self.destinations[node],
            &self.subjects,
            outs,
            &mut results,
            started,
        );
        let pending = if next.is_empty() {
            Vec::new()
        } else {
            fan_out(&n.children, next)
        };
        self.walk(pending, &mut results, started);
        for tap in &mut self.taps {
            tap.discard();
        }
        for (camera, results) in cameras.into_iter().zip(results) {
            if !results.is_empty() {
                self.send(Outbound::Emitted { camera, results });
            }
        }
    }

    fn decode(&self, camera: &str, payload: Bytes) -> Result<Item, String> {
        match &self.input {
            Input::Frames => Frame::decode(payload, Some(camera))
                .map(Item::from_frame)
                .map_err(|e| format!("corrupt frame: {e}")),
            Input::Stage(stage) => panoptes_contracts::envelope::decode(payload, Some(camera))
                .map_err(|e| format!("corrupt item from stage {stage:?}: {e}")),
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
                    panoptes_telemetry::trace::fail(&span, &message);
                    metas.push(None);
                    results.push(vec![Err(Box::new(
                        Event::new(&camera, EventKind::FrameError, message).stage("decode"),
                    ))]);
                }
            }
        }
        let pending = if items.is_empty() {
            Vec::new()
        } else {
            fan_out(&self.roots, items)
        };
        self.walk(pending, &mut results, started);
        for tap in &mut self.taps {
            tap.flush();
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

    /// Runs items queued for nodes through those nodes and on down the graph, each stage
    /// seeing all its items in one call. What a branch publishes, or why an item failed, goes
    /// to `results[origin]` of the item's origin.
    fn walk(
        &mut self,
        mut pending: Vec<(usize, Vec<(usize, Item)>)>,
        results: &mut [Results],
        started: Instant,
    ) {
        while let Some((node, items)) = pending.pop() {
            let n = &mut self.graph.nodes[node];
            let (origins, mut items): (Vec<usize>, Vec<Item>) = items.into_iter().unzip();
            for tap in self.taps.iter_mut().filter(|t| t.at == node) {
                tap.take(&origins, &items);
            }
            let meta: Vec<(String, u64)> = items
                .iter()
                .map(|i| (i.frame.camera.to_string(), i.frame.seq))
                .collect();
            // While the stage runs, each item's span is its stage span (a model stage links its
            // batch span to them); afterwards the items carry their frame span again.
            let mut frame_spans = Vec::with_capacity(items.len());
            let mut stage_spans = Vec::with_capacity(items.len());
            for (item, (camera, seq)) in items.iter_mut().zip(&meta) {
                let stage_span =
                    panoptes_telemetry::trace::stage_span(&item.span, n.stage.id(), camera, *seq);
                stage_spans.push(stage_span.clone());
                frame_spans.push(std::mem::replace(&mut item.span, stage_span));
                metrics::counter!(meter::STAGE_IN, "stage" => n.stage.id().to_owned(), "camera" => camera.clone()).increment(1);
            }
            let t = Instant::now();
            let mut outs = n.stage.process_batch(items);
            let elapsed = t.elapsed();
            let events = n.stage.take_events();
            let analytics = n.stage.take_analytics();
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
                let mut item = match out {
                    Ok(item) => item,
                    Err(e) => {
                        let message = format!("stage {:?} failed: {e}", n.stage.id());
                        panoptes_telemetry::trace::fail(&stage_span, &message);
                        count_stage_error(n.stage.id(), &camera, &e);
                        results[origin].push(Err(Box::new(
                            Event::new(&camera, EventKind::FrameError, message)
                                .stage(n.stage.id())
                                .seq(seq),
                        )));
                        continue;
                    }
                };
                item.span = frame_span;
                drop(stage_span);
                for tap in self.taps.iter_mut().filter(|t| t.compare_at == node) {
                    if tap.wants(origin) {
                        tap.observe(origin, &item);
                    }
                }
                next.push(StageOut {
                    origin,
                    camera,
                    seq,
                    item,
                });
            }
            self.report(events);
            self.report_analytics(analytics);
            let n = &self.graph.nodes[node];
            let next = emit(
                n,
                &self.destinations[node],
                &self.subjects,
                next,
                results,
                started,
            );
            if !next.is_empty() {
                pending.extend(fan_out(&n.children, next));
            }
        }
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
mod tests;
