//! Reading what an output delivers: in live delivery a core NATS subscription per source (a
//! queue group per output, so `panoptes sink` processes of one output share the messages); in
//! durable delivery a durable JetStream pull consumer per output and source, whose messages are
//! acknowledged only once delivered. Either way into the output's bounded queue.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::AckKind};
use futures::StreamExt as _;
use panoptes_contracts::Subjects;
use panoptes_pipeline::durable;
use panoptes_topology::OutputSource;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::message::{Filter, Message};
use crate::status::Status;

/// A message on its way to an endpoint, with what settles it.
pub(crate) struct Delivery {
    pub(crate) msg: Message,
    pub(crate) ack: Ack,
    /// When it was read from NATS.
    pub(crate) since: Instant,
}

/// How a delivered (or given up) message is settled with NATS.
pub(crate) enum Ack {
    /// Core NATS: nothing to settle.
    Live,
    /// JetStream: acknowledged after delivery, redelivered if not.
    Durable(Box<jetstream::message::Acker>),
}

impl Ack {
    async fn send(&self, kind: AckKind) {
        if let Ack::Durable(acker) = self
            && let Err(e) = acker.ack_with(kind).await
        {
            tracing::debug!(error = %e, "cannot settle a JetStream message; it will be redelivered");
        }
    }

    /// Delivered.
    pub(crate) async fn done(self) {
        self.send(AckKind::Ack).await;
    }

    /// Never deliverable (malformed, refused for good): not redelivered.
    pub(crate) async fn refuse(self) {
        self.send(AckKind::Term).await;
    }

    /// Given up for now: JetStream redelivers it after `delay`.
    pub(crate) async fn later(self, delay: Duration) {
        self.send(AckKind::Nak(Some(delay))).await;
    }

    /// Still being tried: keeps JetStream from redelivering it meanwhile.
    pub(crate) async fn progress(&self) {
        self.send(AckKind::Progress).await;
    }

    pub(crate) fn durable(&self) -> bool {
        matches!(self, Ack::Durable(_))
    }
}

/// What an intake needs of its output.
pub(crate) struct Intake {
    pub(crate) client: async_nats::Client,
    pub(crate) subjects: Subjects,
    pub(crate) output: String,
    pub(crate) sources: Vec<OutputSource>,
    pub(crate) filter: Filter,
    pub(crate) tx: mpsc::Sender<Delivery>,
    pub(crate) status: std::sync::Arc<Status>,
}

impl Intake {
    fn subjects_of(&self, source: OutputSource) -> Vec<String> {
        let ns = self.subjects.namespace();
        let name = source.name();
        if self.filter.cameras().is_empty() {
            vec![format!("{ns}.{name}.*")]
        } else {
            self.filter
                .cameras()
                .iter()
                .map(|c| format!("{ns}.{name}.{c}"))
                .collect()
        }
    }

    fn admit(&self, source: OutputSource, subject: &str, payload: &bytes::Bytes) -> Admitted {
        let Some(camera) = self.subjects.camera_of(subject) else {
            return Admitted::Skip;
        };
        match self.filter.admit(source, camera, payload) {
            Ok(Some(msg)) => Admitted::Deliver(msg),
            Ok(None) => Admitted::Skip,
            Err(e) => {
                self.status.malformed(subject, &e);
                Admitted::Malformed
            }
        }
    }

    /// Core NATS: subscribes (queue group `panoptes-output-<id>`) to every source; a full queue
    /// drops the message and counts it. Returns once subscribed; reads until `cancel`.
    pub(crate) async fn live(
        self,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
        let group = format!("panoptes-output-{}", self.output);
        let mut subs = Vec::new();
        for &source in &self.sources {
            for subject in self.subjects_of(source) {
                let sub = self.client.queue_subscribe(subject, group.clone()).await?;
                subs.push(sub.map(move |m| (source, m)).boxed());
            }
        }
        Ok(tokio::spawn(async move {
            let mut all = futures::stream::select_all(subs);
            loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => break,
                    m = all.next() => m,
                };
                let Some((source, m)) = next else { break };
                let Admitted::Deliver(msg) = self.admit(source, m.subject.as_str(), &m.payload)
                else {
                    continue;
                };
                let delivery = Delivery {
                    msg,
                    ack: Ack::Live,
                    since: Instant::now(),
                };
                match self.tx.try_send(delivery) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => self.status.dropped().await,
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
        }))
    }

    /// JetStream: one durable consumer `output-<id>-<source>` per source (created at the
    /// stream's new messages the first time, resumed after), at most `window` messages
    /// unacknowledged; a full queue waits (JetStream keeps the rest).
    pub(crate) async fn durable(
        self,
        window: usize,
        ack_wait: Duration,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, durable::DurableError> {
        durable::check_server(&self.client)?;
        let js = jetstream::new(self.client.clone());
        let mut consumers = Vec::new();
        for &source in &self.sources {
            let stream_name = durable::stream_name(&self.subjects, source.name());
            match source {
                OutputSource::Analytics => {
                    durable::with_retries(|| durable::ensure_analytics_stream(&js, &self.subjects))
                        .await?
                }
                OutputSource::Detections => {
                    durable::with_retries(|| durable::ensure_detections_stream(&js, &self.subjects))
                        .await?
                }
                OutputSource::Clips => {
                    durable::with_retries(|| durable::ensure_clips_stream(&js, &self.subjects))
                        .await?
                }
            }
            let name = consumer_name(&self.output, source);
            let config = consumer::pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("panoptes output {}", self.output)),
                filter_subjects: self.subjects_of(source),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: i64::try_from(window).unwrap_or(i64::MAX),
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            };
            let consumer = durable::with_retries(|| async {
                let stream = js.get_stream(&stream_name).await.map_err(|e| {
                    durable::DurableError::Stream {
                        stream: stream_name.clone(),
                        message: e.to_string(),
                    }
                })?;
                // An existing consumer keeps its position; only its settings are updated.
                stream.create_consumer(config.clone()).await.map_err(|e| {
                    durable::DurableError::Consumer {
                        stream: stream_name.clone(),
                        consumer: name.clone(),
                        message: e.to_string(),
                    }
                })
            })
            .await?;
            consumers.push((source, consumer));
        }
        let intake = std::sync::Arc::new(self);
        let tasks: Vec<_> = consumers
            .into_iter()
            .map(|(source, consumer)| {
                let (intake, cancel) = (intake.clone(), cancel.clone());
                tokio::spawn(async move { intake.pull(source, consumer, window, cancel).await })
            })
            .collect();
        Ok(tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
        }))
    }

    async fn pull(
        &self,
        source: OutputSource,
        consumer: consumer::PullConsumer,
        window: usize,
        cancel: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        while !cancel.is_cancelled() {
            let messages = consumer
                .stream()
                .max_messages_per_batch(window.clamp(1, 256))
                .expires(Duration::from_secs(5))
                .heartbeat(Duration::from_secs(2))
                .messages()
                .await;
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(output = %self.output, error = %e, "cannot pull; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => return,
                    m = messages.next() => m,
                };
                match next {
                    Some(Ok(m)) => {
                        let (m, acker) = m.split();
                        let ack = Ack::Durable(Box::new(acker));
                        match self.admit(source, m.subject.as_str(), &m.payload) {
                            Admitted::Deliver(msg) => {
                                let delivery = Delivery {
                                    msg,
                                    ack,
                                    since: Instant::now(),
                                };
                                let sent = tokio::select! {
                                    () = cancel.cancelled() => return,
                                    s = self.tx.send(delivery) => s,
                                };
                                if sent.is_err() {
                                    return;
                                }
                            }
                            Admitted::Skip => ack.done().await,
                            Admitted::Malformed => ack.refuse().await,
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(output = %self.output, error = %e, "pull interrupted; pulling again");
                        break;
                    }
                    None => break,
                }
            }
        }
    }
}

enum Admitted {
    Deliver(Message),
    Skip,
    Malformed,
}

/// The durable consumer an output reads `source` through.
pub(crate) fn consumer_name(output: &str, source: OutputSource) -> String {
    format!("output-{output}-{}", source.name())
}

/// At most this many consumer names are read from one stream when pruning: a stream with more
/// is not one panoptes made, and the rest are left alone.
const PRUNE_SCAN: usize = 4096;

/// Deletes the durable consumers of outputs the topology no longer declares (or no longer feeds
/// from that source), so a removed output does not keep messages pinned in the stream. Only
/// names of the form `output-<id>-<source>` on panoptes' own streams are touched; other
/// consumers stay. Failures are logged: a stale consumer costs storage, not correctness.
pub(crate) async fn prune_consumers(
    client: &async_nats::Client,
    subjects: &Subjects,
    declared: &[(String, OutputSource)],
) -> Vec<String> {
    let js = jetstream::new(client.clone());
    let mut removed = Vec::new();
    for source in [
        OutputSource::Analytics,
        OutputSource::Detections,
        OutputSource::Clips,
    ] {
        let stream_name = durable::stream_name(subjects, source.name());
        let Ok(stream) = js.get_stream(&stream_name).await else {
            continue;
        };
        let suffix = format!("-{}", source.name());
        let names: Vec<String> = stream
            .consumer_names()
            .take(PRUNE_SCAN)
            .filter_map(|n| async move { n.ok() })
            .collect()
            .await;
        for name in names {
            let Some(output) = name
                .strip_prefix("output-")
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
            else {
                continue;
            };
            if declared.iter().any(|(id, s)| id == output && *s == source) {
                continue;
            }
            match stream.delete_consumer(&name).await {
                Ok(_) => {
                    tracing::info!(
                        stream = %stream_name, consumer = %name,
                        "removed the durable consumer of an output the topology no longer declares"
                    );
                    removed.push(name);
                }
                Err(e) => tracing::warn!(
                    stream = %stream_name, consumer = %name, error = %e,
                    "cannot remove the durable consumer of a removed output"
                ),
            }
        }
    }
    removed
}
