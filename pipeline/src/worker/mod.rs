//! The stage worker: takes the frames of the partitions it serves (live: core NATS, newest frame
//! per camera; durable: JetStream consumers, every frame, acknowledged once its results are
//! published), runs batches of them through the stage graph on a dedicated thread, and publishes
//! detections, forwarded items and events. A failing frame is reported and only that frame is lost.
//!
//! This file holds the worker's public face and wires its parts together: `intake` (NATS to the
//! per-camera table), `scheduling` (per-camera slots, batches), `execution` (the stage graph and
//! its lifecycle on the stage thread), `keeping` (per-camera stage state across owners),
//! `publishing` (results to NATS) and `loss` (accounting for the frames that were not published).

mod execution;
mod intake;
mod keeping;
mod loss;
mod publishing;
mod scheduling;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::camera_state::{CameraLimits, CameraTable};
use crate::durable::{self, DurableConfig};
use crate::graph::StageGraph;
use crate::lease::Ownership;
use panoptes_contracts::partition::PartitionSet;
use panoptes_contracts::stage::Stage;
use panoptes_contracts::subjects::Subjects;

use execution::Chain;
use intake::{DURABLE_IN_WORKER, DurableIntake, Incoming, Intake};
use loss::Refusals;
use publishing::{Outbound, Publisher};
use scheduling::Slots;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot subscribe to {subject}: {message}")]
    Subscribe { subject: String, message: String },
    #[error(transparent)]
    Durable(#[from] durable::DurableError),
    #[error("stage {stage:?} did not start: {message}")]
    StageStart { stage: String, message: String },
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

// What the worker's first stages read: the one typed value the topology's plan also uses.
pub use panoptes_contracts::stage::Input;

pub struct Worker {
    client: async_nats::Client,
    subjects: Subjects,
    graph: StageGraph,
    stats: Arc<WorkerStats>,
    ownership: Arc<Ownership>,
    delivery: Delivery,
    /// What this worker's first stages read.
    input: Input,
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
            input: Input::Frames,
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

    /// Reads `<ns>.<input>.<camera>` (`frames`, or a stage run by another process; a
    /// topology's `input:` converts) and names this worker's unit (its consumers and leases).
    pub fn with_input(mut self, input: impl Into<Input>, unit: impl Into<String>) -> Self {
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

    /// Starts every stage, serves until `cancel` fires, then finishes the frames it holds,
    /// stops the stages and flushes. A stage that cannot start fails the worker before it
    /// takes anything.
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
        let durable = match &delivery {
            Delivery::Durable(config) => Some(*config),
            Delivery::Live => None,
        };
        let stages_described = graph.describe();
        let forwarded = graph.forwarded();
        let table = Arc::new(CameraTable::new(limits, stats.cameras.clone()));
        let slots = Arc::new(Slots::new(durable.is_none()));
        let (out_tx, out_rx) = mpsc::channel::<Outbound>(256);
        // Stages with per-camera state: saved to KV for the camera's next owner, restored from
        // it when a camera's tenure here begins.
        let (keeper, state_writer) = if graph
            .nodes
            .iter()
            .any(|n| n.stage.snapshot_interval().is_some())
        {
            let store = match crate::state::StateStore::open(&js, subjects.namespace(), &unit).await
            {
                Ok(store) => Some(store),
                Err(e) => {
                    tracing::warn!(error = %e, "no state bucket: stage state does not follow cameras to other workers, and IDs restart with the process");
                    None
                }
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let keeper = keeping::Keeper::new(store.clone(), tx, &graph);
            let writer = tokio::spawn(crate::state::write_loop(store, ownership.clone(), rx));
            (keeper, Some(writer))
        } else {
            (None, None)
        };
        let keeps_state = keeper.is_some();
        // Shadow candidates report through a queue of their own, so a burst of reports never
        // takes room from live publications.
        let (reports_tx, mut reports_rx) = mpsc::channel::<(String, bytes::Bytes)>(64);
        let reporter = (!graph.shadows.is_empty()).then(|| {
            let client = client.clone();
            tokio::spawn(async move {
                while let Some((subject, body)) = reports_rx.recv().await {
                    if let Err(e) = client.publish(subject.clone(), body).await {
                        tracing::debug!(%subject, error = %e, "shadow report not published");
                    }
                }
            })
        });
        let chain = Chain::new(
            graph,
            subjects.clone(),
            stats.clone(),
            ownership.clone(),
            input.clone(),
            out_tx.clone(),
            durable.map(|_| table.clone()),
        )
        .keeping(keeper)
        .shadowing(&reports_tx);
        drop(reports_tx);
        let mut stages = chain.spawn(slots.clone()).await?;
        // Partitions about to be released: the stage thread saves their cameras' states first.
        let hand_offs = keeps_state.then(|| {
            let mut asked = ownership.watch_hand_offs();
            let slots = slots.clone();
            tokio::spawn(async move {
                while let Some(partition) = asked.recv().await {
                    slots.hand_off(partition);
                }
            })
        });

        let (in_tx, mut in_rx) = mpsc::channel::<Incoming>(64);
        let sources = CancellationToken::new();
        let intake = match durable {
            None => {
                intake::spawn_live(
                    &client,
                    &subjects,
                    &input,
                    ownership.clone(),
                    in_tx,
                    sources.clone(),
                )
                .await
            }
            Some(config) => durable::prepare_unit(
                &client,
                &subjects,
                input.token(),
                &unit,
                &forwarded,
                ownership.total(),
                &config,
            )
            .await
            .map_err(WorkerError::from)
            .map(|stream| {
                intake::spawn_durable(DurableIntake {
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
            }),
        };
        let intake = match intake {
            Ok(intake) => intake,
            Err(e) => {
                // Nothing was taken; the stages still stop.
                let _ = stages.finish(&slots).await;
                return Err(e);
            }
        };
        tracing::info!(input = %format!("{}.{input}.*", subjects.namespace()), %unit, stages = %stages_described, delivery = if durable.is_some() { "durable" } else { "live" }, "worker subscribed");

        // Each camera's last published frame: in live delivery a worker taking a partition
        // over counts what was lost in between; in durable delivery it is the ordering
        // watermark a new owner starts from. Optional: without JetStream the worker runs,
        // uncounted, with watermarks of its own only.
        let progress = intake::open_progress(&js, subjects.namespace()).await;
        let publisher = tokio::spawn(publishing::publish_loop(
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
        stages.start_ticks(&slots);

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
            handovers: 0,
        };
        let mut housekeeping = tokio::time::interval(intake::housekeeping_period(limits));
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
        // The last sender besides the stage thread: the publisher ends once that thread has
        // sent its last frame.
        drop(intake_state);
        let finished = stages.finish(&slots).await;
        if let Some(task) = hand_offs {
            task.abort();
        }
        // The stage thread queued its last states as it ended.
        if let Some(writer) = state_writer {
            let _ = writer.await;
        }
        let _ = publisher.await;
        if let Some(reporter) = reporter {
            let _ = reporter.await;
        }
        finished.map(|()| stats.snapshot())
    }
}
