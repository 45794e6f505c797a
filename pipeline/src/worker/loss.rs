//! Loss accounting: what becomes of frames that were not published, so each is reported once:
//! lost (`frames_lost`: arrived while the lease had lapsed, or never reached a worker in a
//! handover), refused (`frames_refused`: beyond the camera limit) or late (`frames_late`:
//! durable, redelivered after newer frames of its camera), and dropped frames' reports.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::message::{AckKind, Acker};
use tokio::sync::mpsc;

use super::WorkerStats;
use super::intake::{Intake, PROGRESS_READ, parse_progress};
use super::publishing::Outbound;
use super::scheduling::Pending;
use crate::camera_state::{CameraTable, LapsedRun, Settled};
use crate::lease::{Ownership, Standing};
use panoptes_contracts::event::{Event, EventKind};
use panoptes_contracts::meter::{self, count_camera};
use panoptes_contracts::subjects::Subjects;

/// How a frame joins its camera's lapsed run.
#[derive(Clone, Copy, Debug)]
pub(super) enum Lapsed {
    /// Arrived while the lease had lapsed, with its sequence number when it could be read.
    Arrived(Option<u64>),
    /// Taken in while the lease held, not published because it lapsed meanwhile.
    GivenUp,
}

/// A live frame of a partition whose lease lapsed: not served, and lost or another worker's
/// depending on what the next lease round finds (`Intake::resolve`). Frames refused at
/// intake and frames given up inside the worker join the same run, so each is reported once.
pub(super) fn note_lapsed(
    table: &CameraTable,
    ownership: &Ownership,
    camera: &str,
    partition: u32,
    how: Lapsed,
) {
    let handovers = ownership.handovers(partition);
    table.with(camera, |s| {
        let accounted = s.accounted;
        let run = s.lapsed.get_or_insert(LapsedRun {
            partition,
            handovers,
            singles: 0,
            arrived: 0,
            first: None,
            last: None,
        });
        match how {
            Lapsed::Arrived(Some(seq)) if accounted.is_none_or(|a| seq > a) => {
                run.arrived += 1;
                run.first = Some(run.first.map_or(seq, |f| f.min(seq)));
                run.last = Some(run.last.map_or(seq, |l| l.max(seq)));
            }
            Lapsed::Arrived(_) | Lapsed::GivenUp => run.singles += 1,
        }
    });
}

impl Intake {
    /// Settles frames that arrived while `camera`'s partition had lapsed, once the lease round
    /// has said whose the partition is: still this worker's (renewed or taken again), so
    /// nobody processed them: lost; handed over meanwhile, so the next owner counts the gap:
    /// skipped. `stopping`: the worker stops while the lease is still lapsed: lost.
    pub(super) async fn resolve(&mut self, camera: &str, run: LapsedRun, stopping: bool) {
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
            self.stats
                .skipped
                .fetch_add(run.members(), Ordering::Relaxed);
            count_camera(meter::WORKER_SKIPPED, camera, run.members());
            return;
        }
        // Nobody else served the partition meanwhile, so every frame after the last one this
        // worker accounted for, up to the newest that arrived in the lapse, is lost: those
        // that arrived, and those that never reached it (published while NATS was down for
        // this worker, or dropped on the way while it stalled).
        let accounted = self.table.with(camera, |s| s.accounted).flatten();
        let Settled { lost, never, span } = run.settle(accounted);
        if let Some(last) = run.last {
            self.table.with(camera, |s| s.account(last));
        }
        let which = match span {
            Some((from, last)) => format!(" (seq {from}..={last})"),
            None => String::new(),
        };
        tracing::warn!(
            camera,
            partition = run.partition,
            lost,
            "frames lost while the partition's lease had lapsed"
        );
        let event = count_lost(
            &self.stats,
            camera,
            lost,
            format!(
                "{lost} frames{which} lost while this worker's lease on partition {} had lapsed (NATS unreachable, or the worker stalled): {} arrived and were not processed, {never} never reached it; live delivery does not keep them",
                run.partition,
                run.members()
            ),
        );
        self.send_event(camera, &event).await;
    }

    /// A frame of a camera beyond the limit of tracked cameras. Durable: terminated, so that
    /// JetStream does not hand it out again and again.
    pub(super) async fn refuse(&mut self, camera: &str, now: Instant, acker: Option<Acker>) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(meter::WORKER_REFUSED).increment(1);
        if let Some(acker) = acker {
            let _ = acker.ack_with(AckKind::Term).await;
        }
        if let Some((camera, count)) = self.refusals.refused(camera, now) {
            self.report_refused(&camera, count).await;
        }
    }

    /// Frames `first..=last` of `camera` never reached this worker although it held their
    /// partition: lost on the way (the NATS client dropped them as a slow consumer, or the
    /// connection broke), counted once.
    pub(super) async fn report_gap(&self, camera: &str, partition: u32, first: u64, last: u64) {
        let lost = last - first + 1;
        self.table.with(camera, |s| s.account(last));
        tracing::warn!(
            camera,
            partition,
            lost,
            "frames never reached this worker while it held their partition"
        );
        let event = count_lost(
            &self.stats,
            camera,
            lost,
            format!(
                "{lost} frames (seq {first}..={last}) never reached this worker while it held partition {partition}: dropped on the way (the NATS client's buffer was full, e.g. after the process stalled, or the connection broke); live delivery does not keep them"
            ),
        );
        self.send_event(camera, &event).await;
    }

    pub(super) async fn report_drops(&self, camera: &str, count: u64) {
        let event = Event::new(
            camera,
            EventKind::FramesDropped,
            format!("{count} frames dropped to keep up (live delivery keeps the newest frame)"),
        )
        .stage("worker")
        .count(count);
        self.send_event(camera, &event).await;
    }

    pub(super) async fn report_refused(&self, camera: &str, count: u64) {
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
}

/// Live: the first frame of a camera in a new tenure, checked against the last frame any
/// worker published and what this worker accounted for: the frames in between never reached a
/// worker.
pub(super) struct GapCheck {
    pub(super) kv: jetstream::kv::Store,
    pub(super) key: String,
    pub(super) camera: String,
    pub(super) partition: u32,
    pub(super) seq: u64,
    pub(super) accounted: Option<u64>,
    pub(super) stats: Arc<WorkerStats>,
    pub(super) table: Arc<CameraTable>,
    pub(super) out: mpsc::Sender<Outbound>,
    pub(super) events: String,
}

impl GapCheck {
    pub(super) async fn run(self) {
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
        tracing::warn!(
            camera,
            partition,
            lost,
            "frames lost in a partition handover"
        );
        let event = count_lost(
            &self.stats,
            camera,
            lost,
            format!(
                "{lost} frames (seq {}..={}) were published while partition {partition} had no live worker (a worker stopped or died, or NATS was unreachable) and never reached one; live delivery does not keep them",
                last + 1,
                seq - 1,
            ),
        );
        if let Ok(body) = serde_json::to_vec(&event) {
            let _ = self
                .out
                .send(Outbound::Event(self.events, body.into()))
                .await;
        }
    }
}

/// Counts `lost` frames of `camera` (the worker's counter and its metric) and makes the
/// `frames_lost` event that says `why`; the caller sends it.
fn count_lost(stats: &WorkerStats, camera: &str, lost: u64, why: String) -> Event {
    stats.lost.fetch_add(lost, Ordering::Relaxed);
    count_camera(meter::WORKER_LOST, camera, lost);
    Event::new(camera, EventKind::FramesLost, why)
        .stage("worker")
        .count(lost)
}

/// Refused frames, reported at most once per second over all cameras (one camera's counter
/// each would be the unbounded state the limit is there to prevent).
#[derive(Default)]
pub(super) struct Refusals {
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
    pub(super) fn due(&mut self, now: Instant) -> Option<(String, u64)> {
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

    pub(super) fn flush(&mut self) -> Option<(String, u64)> {
        (self.count > 0).then(|| {
            (
                std::mem::take(&mut self.latest),
                std::mem::take(&mut self.count),
            )
        })
    }
}

/// A late frame (durable): acknowledged, so it is not delivered again, counted and reported.
pub(super) async fn late(
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
