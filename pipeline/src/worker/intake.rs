//! Intake: where a worker's messages come from (live core-NATS subscriptions, durable JetStream
//! pull consumers per partition) and what becomes of each on arrival: served, skipped, refused
//! or noted lapsed, with the per-camera table and progress records that decide it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::message::{AckKind, Acker};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::loss::{GapCheck, Lapsed, Refusals, note_lapsed};
use super::publishing::Outbound;
use super::scheduling::{Pending, Slots};
use super::{Input, WorkerError, WorkerStats};
use crate::camera_state::{CameraLimits, CameraTable, Mark};
use crate::durable::{self, DurableConfig};
use crate::lease::{Ownership, Standing};
use panoptes_contracts::event::Event;
use panoptes_contracts::frame::Frame;
use panoptes_contracts::meter::{self, count_camera};
use panoptes_contracts::subjects::Subjects;

/// How often the intake resolves lapsed frames, forgets idle cameras and reports refusals.
pub(super) fn housekeeping_period(limits: CameraLimits) -> Duration {
    (limits.idle_ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// How long the intake waits for a camera's progress record at the start of a tenure.
pub(super) const PROGRESS_READ: Duration = Duration::from_secs(1);

/// Opens (or creates) the namespace's progress bucket: file storage, so the records outlive a
/// nats-server restart. A bucket made by an older version (memory storage) is used as it is.
pub(super) async fn open_progress(
    js: &jetstream::Context,
    namespace: &str,
) -> Option<jetstream::kv::Store> {
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
pub(super) fn parse_progress(value: &[u8]) -> Option<Mark> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split_ascii_whitespace();
    let seq = parts.next()?.parse().ok()?;
    let capture_ts_ns = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    Some(Mark { seq, capture_ts_ns })
}

/// The sequence number and capture time of a frame or forwarded item, read from its metadata
/// (no pixels or tensors copied).
fn meta_of(input: &Input, payload: &Bytes) -> Option<(u64, u64)> {
    match input {
        Input::Frames => Frame::decode(payload.clone(), None)
            .ok()
            .map(|f| (f.seq, f.capture_ts_ns)),
        Input::Stage(_) => panoptes_contracts::envelope::meta(payload.clone()).ok(),
    }
}

/// The intake side of a worker: decides for each message whether it is served, skipped,
/// refused or counted lost, and keeps the per-camera table.
pub(super) struct Intake {
    pub(super) subjects: Subjects,
    pub(super) input: Input,
    pub(super) unit: String,
    pub(super) ownership: Arc<Ownership>,
    pub(super) stats: Arc<WorkerStats>,
    pub(super) table: Arc<CameraTable>,
    pub(super) slots: Arc<Slots>,
    pub(super) out: mpsc::Sender<Outbound>,
    pub(super) progress: Option<jetstream::kv::Store>,
    pub(super) durable: bool,
    pub(super) refusals: Refusals,
    /// All partitions' handover counts summed at the last housekeeping: when it changes, a
    /// partition changed hands and the stages drop the cameras that went with it.
    pub(super) handovers: u64,
}

impl Intake {
    pub(super) async fn take(&mut self, incoming: Incoming) {
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
                Lapsed::Arrived(meta.map(|m| m.0)),
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
        } else if matches!(self.input, Input::Frames)
            && let Some((seq, _)) = meta
            && let Some(accounted) = self.table.with(&camera, |s| s.accounted).flatten()
            && seq > accounted.saturating_add(1)
        {
            // Within a tenure every frame of the camera reaches this worker unless the way
            // here dropped it: the client's buffer for the subscription overflows when the
            // process stalls (async-nats drops the newest as a slow consumer, silently).
            // Frames from another stage's unit skip this: that unit reports its own drops.
            self.report_gap(&camera, partition, accounted + 1, seq - 1)
                .await;
        }
        self.table.with(&camera, |s| {
            s.in_worker += 1;
            if let Some((seq, _)) = meta {
                s.account(seq);
            }
        });
        self.ownership.enter(partition);
        let span = panoptes_telemetry::trace::frame_span(&camera, self.input.token());
        panoptes_telemetry::trace::continue_from(&span, incoming.headers.as_ref());
        let pending = Pending {
            camera: camera.clone(),
            partition,
            payload: incoming.payload,
            acker: incoming.acker,
            _permit: incoming.permit,
            span,
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

    /// Resolves lapsed frames, forgets idle cameras (here and in the stages), reports refusals
    /// held back.
    pub(super) async fn housekeeping(&mut self) {
        let now = Instant::now();
        for (camera, run) in self.table.lapsed() {
            self.resolve(&camera, run, false).await;
        }
        let mut forgotten = Vec::new();
        for (camera, state) in self.table.expire(now) {
            if state.drops.1 > 0 {
                self.report_drops(&camera, state.drops.1).await;
            }
            forgotten.push(camera);
        }
        let handovers = (0..self.ownership.total())
            .map(|p| self.ownership.handovers(p))
            .sum();
        let moved = std::mem::replace(&mut self.handovers, handovers) != handovers;
        self.slots.forget(forgotten, moved);
        self.slots.prune(now);
        if let Some((camera, count)) = self.refusals.due(now) {
            self.report_refused(&camera, count).await;
        }
        metrics::gauge!(meter::WORKER_CAMERAS)
            .set(self.stats.cameras.load(Ordering::Relaxed) as f64);
    }

    /// At stop: what would otherwise go unreported.
    pub(super) async fn finish(&mut self) {
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

    pub(super) async fn send_event(&self, camera: &str, event: &Event) {
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

/// Frames a durable worker holds at once (pulled, not yet acknowledged), over all partitions.
pub(super) const DURABLE_IN_WORKER: usize = 32;

/// A message as a source hands it to the intake loop.
pub(super) struct Incoming {
    subject: String,
    /// Carries the publisher's trace context.
    headers: Option<async_nats::HeaderMap>,
    payload: Bytes,
    acker: Option<Acker>,
    permit: Option<OwnedSemaphorePermit>,
}

/// The camera of `<ns>.<input>.<camera>` and, for subjects a server mapping or stream
/// transform partitioned (`<ns>.<input>.<camera>.<partition>`), the partition.
fn camera_token(
    subjects: &Subjects,
    input: &Input,
    subject: &str,
) -> Option<(String, Option<u32>)> {
    let rest = subject
        .strip_prefix(subjects.namespace())?
        .strip_prefix('.')?
        .strip_prefix(input.token())?
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
pub(super) async fn spawn_live(
    client: &async_nats::Client,
    subjects: &Subjects,
    input: &Input,
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
    let input = input.clone();
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

/// What durable intake needs: the input stream (set up by [`durable::prepare_unit`]) and where
/// its messages go.
pub(super) struct DurableIntake {
    pub(super) stream: jetstream::stream::Stream,
    pub(super) subjects: Subjects,
    pub(super) input: Input,
    pub(super) unit: String,
    pub(super) config: DurableConfig,
    pub(super) ownership: Arc<Ownership>,
    pub(super) tx: mpsc::Sender<Incoming>,
    pub(super) cancel: CancellationToken,
    pub(super) permits: Arc<Semaphore>,
}

/// Durable intake: one pull consumer per accepted partition, started and stopped as the
/// partition's lease comes and goes.
pub(super) fn spawn_durable(d: DurableIntake) -> tokio::task::JoinHandle<()> {
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
            d.input.token(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_tokens_with_and_without_a_partition() {
        let s = Subjects::new("ns");
        let frames = Input::Frames;
        assert_eq!(
            camera_token(&s, &frames, "ns.frames.cam-1"),
            Some(("cam-1".into(), None))
        );
        assert_eq!(
            camera_token(&s, &frames, "ns.frames.cam-1.7"),
            Some(("cam-1".into(), Some(7)))
        );
        assert_eq!(
            camera_token(
                &s,
                &Input::Stage("preprocess".into()),
                "ns.preprocess.cam-1"
            ),
            Some(("cam-1".into(), None))
        );
        assert_eq!(camera_token(&s, &frames, "ns.frames.cam-1.x"), None);
        assert_eq!(camera_token(&s, &frames, "ns.frames."), None);
        assert_eq!(camera_token(&s, &frames, "other.frames.cam"), None);
    }

    #[test]
    fn inputs_read_from_the_topology_are_typed_once() {
        assert_eq!(Input::from("frames"), Input::Frames);
        assert_eq!(
            Input::from("preprocess".to_owned()),
            Input::Stage("preprocess".into())
        );
        assert_eq!(Input::Stage("preprocess".into()).token(), "preprocess");
        assert_eq!(Input::Frames.to_string(), "frames");
    }
}
