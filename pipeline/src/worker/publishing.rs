//! Publishing: a branch's output becomes publications (detection messages, forwarded items)
//! on the stage thread, and they go out on the async side. Results of a partition this worker no longer holds are not published (its new owner publishes them);
//! durable results go through JetStream with a message id and the frame is acknowledged only
//! once they are stored; a frame not published is handed back or joins its lapsed run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_nats::jetstream;
use async_nats::jetstream::message::AckKind;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::WorkerStats;
use super::loss::{Lapsed, late, note_lapsed};
use super::scheduling::Pending;
use crate::camera_state::{CameraTable, Mark};
use crate::durable;
use crate::graph::{Node, Output};
use crate::lease::{Ownership, Standing};
use panoptes_contracts::detection::{DETECTIONS_SCHEMA, DetectionMessage};
use panoptes_contracts::event::{Event, EventKind};
use panoptes_contracts::meter::{self, count_camera};
use panoptes_contracts::stage::{Item, Payload};
use panoptes_contracts::subjects::Subjects;

/// A message for one publication on the async side.
pub(super) enum Outbound {
    /// One frame's results; the frame is acknowledged (durable) after they are published.
    Frame {
        pending: Pending,
        /// The frame's sequence number and capture time, when it could be decoded.
        seq: Option<u64>,
        capture_ts_ns: Option<u64>,
        results: Results,
    },
    /// Results of items a stage emitted without a frame (a tick), about `camera`.
    Emitted {
        camera: String,
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
    /// An analytics event; in durable delivery stored in the analytics stream under its ID
    /// (an event raised again for a redelivered frame is dropped as a duplicate).
    Analytics {
        subject: String,
        id: String,
        body: Bytes,
    },
}

/// One frame's publications (or the reasons they failed), in the order they were made.
pub(super) type Results = Vec<Result<Publication, Box<Event>>>;

/// A publication a frame (or a tick) produced.
pub(super) struct Publication {
    pub(super) destination: Destination,
    pub(super) subject: String,
    /// Removes duplicates in JetStream: camera, seq and branch.
    pub(super) id: String,
    pub(super) body: Bytes,
}

/// What a branch output publishes to, which decides how it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Destination {
    /// Detection messages on the namespace's detections subjects (`<ns>.detections.…`),
    /// which the durable detections stream keeps.
    Detections,
    /// Detection messages on a sink's own subject elsewhere: core NATS only.
    Sink,
    /// Whole items for a stage in another process (`<ns>.<stage>.<camera>`), whose input
    /// stream keeps them in durable delivery.
    Forward,
}

impl Destination {
    /// Where `output` publishes. Known once per output: only the camera varies per message,
    /// and the detections subjects are told by what precedes it.
    pub(super) fn of(output: &Output, subjects: &Subjects) -> Self {
        if output.forward {
            return Destination::Forward;
        }
        let fixed = output
            .pattern
            .replace("{namespace}", subjects.namespace())
            .replace("{stage}", &output.name);
        let detections = format!("{}.detections.", subjects.namespace());
        if fixed.starts_with(&detections) {
            Destination::Detections
        } else {
            Destination::Sink
        }
    }

    /// Whether durable delivery publishes it through JetStream (a stream takes the subject).
    fn stored(self) -> bool {
        matches!(self, Destination::Detections | Destination::Forward)
    }

    fn metric(self) -> &'static str {
        match self {
            Destination::Forward => meter::ITEMS_FORWARDED,
            Destination::Detections | Destination::Sink => meter::DETECTIONS_PUBLISHED,
        }
    }
}

/// One item a stage put out, with the camera and seq it is reported under and the index of
/// the results it adds to.
pub(super) struct StageOut {
    pub(super) origin: usize,
    pub(super) camera: String,
    pub(super) seq: u64,
    pub(super) item: Item,
}

/// What `n`'s stage put out: counted, published on each of the node's outputs (into
/// `results[origin]`), and returned for the node's successors.
pub(super) fn emit(
    n: &Node,
    destinations: &[Destination],
    subjects: &Subjects,
    outs: Vec<StageOut>,
    results: &mut [Results],
    started: Instant,
) -> Vec<(usize, Item)> {
    let stage = n.stage.id();
    let mut next = Vec::with_capacity(outs.len());
    for StageOut {
        origin,
        camera,
        seq,
        item,
    } in outs
    {
        let fail = |message: String| {
            Box::new(
                Event::new(&camera, EventKind::FrameError, message)
                    .stage(stage)
                    .seq(seq),
            )
        };
        metrics::counter!(meter::STAGE_OUT, "stage" => stage.to_owned(), "camera" => camera.clone()).increment(1);
        for (output, &destination) in n.outputs.iter().zip(destinations) {
            let subject = output.subject(subjects, &camera);
            let id = crate::durable::message_id(&camera, seq, &n.path);
            if destination == Destination::Forward {
                // The next stage runs in another process: the whole item goes on.
                match panoptes_contracts::envelope::encode(&item) {
                    Ok(body) => results[origin].push(Ok(Publication {
                        destination,
                        subject,
                        id,
                        body,
                    })),
                    Err(e) => results[origin].push(Err(fail(format!(
                        "cannot encode the output of {stage:?} for the next process: {e}"
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
                published_ts_ns: panoptes_contracts::time::now_ns(),
                width: item.frame.width,
                height: item.frame.height,
                pipeline: n.path.clone(),
                model: n.model.clone(),
                detections: detections.clone(),
            };
            match serde_json::to_vec(&message) {
                Ok(body) => results[origin].push(Ok(Publication {
                    destination,
                    subject,
                    id,
                    body: body.into(),
                })),
                Err(e) => results[origin].push(Err(fail(format!("cannot encode detections: {e}")))),
            }
        }
        next.push((origin, item));
    }
    next
}

/// What the publishing task needs.
pub(super) struct Publisher {
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) subjects: Subjects,
    pub(super) ownership: Arc<Ownership>,
    pub(super) stats: Arc<WorkerStats>,
    pub(super) table: Arc<CameraTable>,
    pub(super) durable: bool,
    /// The subject prefix progress records go to (`$KV.<bucket>.<unit>.`).
    pub(super) progress: Option<String>,
}

/// Publishes what the processing thread produced, until every sender is gone, then flushes.
/// Two workers never both publish one camera's results; durable frames are acknowledged only
/// after their results are stored.
pub(super) async fn publish_loop(p: Publisher, mut rx: mpsc::Receiver<Outbound>) {
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Event(subject, body) => {
                if let Err(e) = p.client.publish(subject.clone(), body).await {
                    tracing::warn!(%subject, error = %e, "publish failed");
                }
            }
            Outbound::Analytics { subject, id, body } if p.durable => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(durable::MSG_ID, id.as_str());
                let stored = match p
                    .js
                    .publish_with_headers(subject.clone(), headers, body)
                    .await
                {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(error) = stored {
                    tracing::warn!(%subject, %id, %error, "JetStream did not store an analytics event");
                }
            }
            Outbound::Analytics { subject, body, .. } => {
                if let Err(e) = p.client.publish(subject.clone(), body).await {
                    tracing::warn!(%subject, error = %e, "publish failed");
                }
            }
            Outbound::HandBack(pending) => {
                p.table.left(&pending.camera);
                not_held(&p.stats, &p.ownership, &p.table, p.durable, pending).await;
            }
            Outbound::Late { pending, seq } => {
                p.table.left(&pending.camera);
                late(&p.client, &p.subjects, &p.stats, &p.ownership, pending, seq).await;
            }
            Outbound::Frame {
                pending,
                seq,
                capture_ts_ns,
                results,
            } => p.frame(pending, seq, capture_ts_ns, results).await,
            Outbound::Emitted { camera, results } => p.emitted(&camera, results).await,
        }
    }
    let _ = p.client.flush().await;
}

impl Publisher {
    async fn frame(
        &self,
        pending: Pending,
        seq: Option<u64>,
        capture_ts_ns: Option<u64>,
        results: Results,
    ) {
        let Publisher {
            client,
            ownership,
            stats,
            table,
            durable,
            progress,
            ..
        } = self;
        let durable = *durable;
        table.left(&pending.camera);
        // Durable: the watermark moves with what is stored, and back if this frame, fed last,
        // goes back to JetStream without results.
        let fed = match (durable, seq, capture_ts_ns) {
            (true, Some(seq), Some(capture_ts_ns)) => Some(Mark { seq, capture_ts_ns }),
            _ => None,
        };
        if !ownership.holds(pending.partition) {
            if let Some(mark) = fed {
                table.with(&pending.camera, |s| s.unstored(mark));
            }
            not_held(stats, ownership, table, durable, pending).await;
            return;
        }
        // Counted here, not where it ran: a frame whose partition moved meanwhile is handed
        // back instead, and counts only as that.
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
        // Whoever reads the results (a subscriber, the next process of a split topology)
        // continues this frame's trace.
        let trace_headers = panoptes_telemetry::trace::headers_for(&span);
        let stored = self
            .results(&pending.camera, results, trace_headers.as_ref())
            .await;
        if let Some(ts) = capture_ts_ns {
            // Wall clocks of two machines: a capture "after" now means skew, not latency.
            let now = panoptes_contracts::time::now_ns();
            if now >= ts {
                metrics::histogram!(meter::FRAME_LATENCY, "camera" => pending.camera.clone())
                    .record((now - ts) as f64 / 1e9);
            }
        }
        drop(span);
        if let (Some(prefix), Some(seq)) = (progress, seq)
            && (stored || !durable)
        {
            // A plain publish onto the bucket's subject: a KV put without waiting for the
            // acknowledgement, one small message per frame.
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

    /// Results of a stage's tick: published like a frame's while the camera's partition is
    /// held here (its new owner's stages speak for it otherwise). Nothing to acknowledge.
    async fn emitted(&self, camera: &str, results: Results) {
        if !self.ownership.holds(self.ownership.partition_of(camera)) {
            tracing::debug!(
                camera,
                messages = results.len(),
                "tick results of a camera not held here dropped"
            );
            return;
        }
        let span = tracing::info_span!(
            target: "panoptes::trace",
            "publish",
            camera,
            messages = results.len(),
        );
        let trace_headers = panoptes_telemetry::trace::headers_for(&span);
        self.results(camera, results, trace_headers.as_ref()).await;
    }

    /// Publishes one frame's (or tick's) results and reports its failures; returns whether
    /// everything durable delivery must store was stored.
    async fn results(
        &self,
        camera: &str,
        results: Results,
        trace_headers: Option<&async_nats::HeaderMap>,
    ) -> bool {
        let mut stored = true;
        let mut acks = Vec::new();
        for result in results {
            let publication = match result {
                Ok(publication) => publication,
                Err(event) => {
                    if let Ok(body) = serde_json::to_vec(&event) {
                        let subject = self.subjects.events_for(camera);
                        if let Err(e) = self.client.publish(subject.clone(), body.into()).await {
                            tracing::warn!(%subject, error = %e, "publish failed");
                        }
                    }
                    continue;
                }
            };
            let Publication {
                destination,
                subject,
                id,
                body,
            } = publication;
            let metric = destination.metric();
            // Durable results go through JetStream (deduplicated by id) when a stream takes
            // their subject; other sinks' subjects stay core NATS.
            if self.durable && destination.stored() {
                let mut headers = trace_headers.cloned().unwrap_or_default();
                headers.insert(durable::MSG_ID, id.as_str());
                match self
                    .js
                    .publish_with_headers(subject.clone(), headers, body)
                    .await
                {
                    Ok(ack) => {
                        count_camera(metric, camera, 1);
                        acks.push((subject, ack));
                    }
                    Err(e) => {
                        stored = false;
                        tracing::warn!(%subject, error = %e, "durable publish failed");
                    }
                }
            } else {
                let sent = match trace_headers {
                    Some(h) => {
                        self.client
                            .publish_with_headers(subject.clone(), h.clone(), body)
                            .await
                    }
                    None => self.client.publish(subject.clone(), body).await,
                };
                match sent {
                    Ok(()) => count_camera(metric, camera, 1),
                    Err(e) => tracing::warn!(%subject, error = %e, "publish failed"),
                }
            }
        }
        for (subject, ack) in acks {
            if let Err(e) = ack.await {
                stored = false;
                tracing::warn!(%subject, error = %e, "JetStream did not store the result");
            }
        }
        stored
    }
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
            Lapsed::GivenUp,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn output(pattern: &str, name: &str, forward: bool) -> Output {
        Output {
            pattern: pattern.into(),
            name: name.into(),
            forward,
        }
    }

    #[test]
    fn destinations_are_known_per_output() {
        let s = Subjects::new("ns");
        let of = |o: &Output| Destination::of(o, &s);
        assert_eq!(
            of(&output(crate::graph::DEFAULT_RESULT_SUBJECT, "det", false)),
            Destination::Detections
        );
        assert_eq!(
            of(&output(
                "{namespace}.detections.{stage}.{camera}",
                "s",
                false
            )),
            Destination::Detections
        );
        assert_eq!(
            of(&output("{namespace}.alerts.{camera}", "s", false)),
            Destination::Sink
        );
        // What precedes the camera decides, whichever placeholder put it there.
        assert_eq!(
            of(&output("{namespace}.{stage}.{camera}", "detections", false)),
            Destination::Detections
        );
        assert_eq!(
            of(&output("{namespace}.{stage}.{camera}", "pre", true)),
            Destination::Forward
        );
    }
}
