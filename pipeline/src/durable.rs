//! Durable delivery on JetStream: the streams that keep frames (and unfused stages' outputs)
//! until every stage unit reading them has acknowledged them, the detections stream that removes
//! duplicates by message id, and the per-partition consumers a worker pulls from.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::lease::token;
use panoptes_contracts::subjects::Subjects;

#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error(
        "durable delivery needs nats-server 2.10 or newer with JetStream (stream subject transforms); the server is {version}"
    )]
    ServerTooOld { version: String },
    #[error("cannot set up JetStream stream {stream:?}: {message}")]
    Stream { stream: String, message: String },
    #[error("cannot set up consumer {consumer:?} on stream {stream:?}: {message}")]
    Consumer {
        stream: String,
        consumer: String,
        message: String,
    },
}

/// Limits of durable delivery.
#[derive(Clone, Copy, Debug)]
pub struct DurableConfig {
    /// A frame not acknowledged this long after delivery (its worker died) is delivered again.
    pub ack_wait: Duration,
    /// Frames a stream keeps at most; when full, publishers are refused (backpressure).
    pub max_bytes: i64,
    /// Frames one worker holds unacknowledged per partition.
    pub max_ack_pending: i64,
}

impl Default for DurableConfig {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(10),
            max_bytes: 1 << 30,
            max_ack_pending: 16,
        }
    }
}

/// Header JetStream removes duplicates by, within the stream's duplicate window.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// Stream name of the messages on `<ns>.<input>.<camera>` (`input`: `frames` or a stage ID).
pub fn stream_name(subjects: &Subjects, input: &str) -> String {
    format!("{}-{}", token(subjects.namespace()), token(input))
}

/// The partitioned subject messages of `input` are stored under: `<ns>.<input>.<camera>.<partition>`.
pub fn partition_filter(subjects: &Subjects, input: &str, partition: u32) -> String {
    format!("{}.{input}.*.{partition}", subjects.namespace())
}

/// Durable consumer name of `unit` for one partition.
pub fn consumer_name(unit: &str, partition: u32) -> String {
    format!("{}-p{partition}", token(unit))
}

/// Whether the server can transform stream subjects (2.10+).
pub fn check_server(client: &async_nats::Client) -> Result<(), DurableError> {
    let version = client.server_info().version;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (2, 10) {
        return Err(DurableError::ServerTooOld { version });
    }
    Ok(())
}

/// Creates or updates the stream of `<ns>.<input>.*`. Publishers keep publishing
/// `<ns>.<input>.<camera>`; the stream stores each message as `<ns>.<input>.<camera>.<partition>`
/// with nats-server's own `partition()` (the hash [`crate::partition_of`] computes), so
/// per-partition consumers need no help from publishers. Messages already mapped by a server
/// `mappings` block (see docs/nats.md) arrive partitioned and are stored as they are.
/// Interest retention: a message is removed once every unit's consumer has acknowledged it.
pub async fn ensure_input_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
    input: &str,
    partitions: u32,
    config: &DurableConfig,
) -> Result<stream::Stream, DurableError> {
    let ns = subjects.namespace();
    let name = stream_name(subjects, input);
    let cfg = stream::Config {
        name: name.clone(),
        description: Some(format!(
            "panoptes {input} by camera, partitioned into {partitions}"
        )),
        subjects: vec![format!("{ns}.{input}.*"), format!("{ns}.{input}.*.*")],
        subject_transform: Some(stream::SubjectTransform {
            source: format!("{ns}.{input}.*"),
            destination: format!(
                "{ns}.{input}.{{{{wildcard(1)}}}}.{{{{partition({partitions},1)}}}}"
            ),
        }),
        retention: stream::RetentionPolicy::Interest,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        max_bytes: config.max_bytes,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    js.create_or_update_stream(cfg)
        .await
        .map_err(|e| DurableError::Stream {
            stream: name.clone(),
            message: e.to_string(),
        })?;
    js.get_stream(&name)
        .await
        .map_err(|e| DurableError::Stream {
            stream: name,
            message: e.to_string(),
        })
}

/// Creates or updates the detections stream (`<ns>.detections.*`), which drops a message whose
/// id it has seen in the last two minutes: a frame processed twice (redelivered after a crash)
/// still yields one stored detection message.
pub async fn ensure_detections_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<(), DurableError> {
    ensure_results_stream(js, subjects, "detections", "panoptes detections").await
}

/// Creates or updates the analytics stream (`<ns>.analytics.*`): analytics events raised in
/// durable delivery are kept for the outputs' consumers, duplicates (an event raised again
/// after a redelivered frame) removed by the event's ID within two minutes.
pub async fn ensure_analytics_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<(), DurableError> {
    ensure_results_stream(js, subjects, "analytics", "panoptes analytics events").await
}

/// Creates or updates the stream of clip announcements (`<ns>.clips.*`, `clips/v1`), for
/// outputs that deliver them in durable delivery.
pub async fn ensure_clips_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<(), DurableError> {
    ensure_results_stream(js, subjects, "clips", "panoptes clip announcements").await
}

/// A stream of results (`<ns>.<kind>.*`): kept 24 h or 1 GiB, duplicates by `Nats-Msg-Id`
/// removed within two minutes.
async fn ensure_results_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
    kind: &str,
    what: &str,
) -> Result<(), DurableError> {
    let name = stream_name(subjects, kind);
    js.create_or_update_stream(stream::Config {
        name: name.clone(),
        description: Some(format!("{what}; duplicates removed by Nats-Msg-Id")),
        subjects: vec![format!("{}.{kind}.*", subjects.namespace())],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(24 * 3600),
        max_bytes: 1 << 30,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| DurableError::Stream {
        stream: name,
        message: e.to_string(),
    })
}

/// Creates (or updates) the durable pull consumer of `unit` for one partition. Every partition's
/// consumer is created when a unit starts, so the stream keeps frames for partitions nobody
/// serves at the moment.
pub async fn ensure_consumer(
    stream: &stream::Stream,
    subjects: &Subjects,
    input: &str,
    unit: &str,
    partition: u32,
    config: &DurableConfig,
) -> Result<consumer::PullConsumer, DurableError> {
    let name = consumer_name(unit, partition);
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("panoptes unit {unit}, partition {partition}")),
            filter_subject: partition_filter(subjects, input, partition),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_ack_pending: config.max_ack_pending,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| DurableError::Consumer {
            stream: stream_name(subjects, input),
            consumer: name,
            message: e.to_string(),
        })
}

/// Sets up, once at a unit's start, what its durable delivery needs (each call retried a few
/// times, see [`with_retries`]): a server that can partition streams, the stream of its input,
/// the detections and analytics streams, the streams of the stages it forwards to (so its first publications
/// are kept even before the next stage's workers start), and every partition's consumer from
/// the start (interest retention keeps messages only for consumers that exist). Returns the
/// input stream the unit's consumers pull from.
pub async fn prepare_unit(
    client: &async_nats::Client,
    subjects: &Subjects,
    input: &str,
    unit: &str,
    forwarded: &[String],
    partitions: u32,
    config: &DurableConfig,
) -> Result<stream::Stream, DurableError> {
    check_server(client)?;
    let js = jetstream::new(client.clone());
    let stream =
        with_retries(|| ensure_input_stream(&js, subjects, input, partitions, config)).await?;
    with_retries(|| ensure_detections_stream(&js, subjects)).await?;
    with_retries(|| ensure_analytics_stream(&js, subjects)).await?;
    for stage in forwarded {
        with_retries(|| ensure_input_stream(&js, subjects, stage, partitions, config)).await?;
    }
    for p in 0..partitions {
        with_retries(|| ensure_consumer(&stream, subjects, input, unit, p, config)).await?;
    }
    Ok(stream)
}

/// Runs a JetStream set-up call, retrying a few times (0.1 s, doubling): workers starting
/// together race to create the same stream or consumer, and a server that just restarted
/// answers "JetStream not ready" for a moment.
pub async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, DurableError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DurableError>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..6 {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tracing::debug!(error = %e, "JetStream set-up failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    call().await
}

/// The id that makes a result message unique: camera, frame sequence number and branch.
pub fn message_id(camera: &str, seq: u64, branch: &str) -> String {
    format!("{camera}:{seq}:{branch}")
}
