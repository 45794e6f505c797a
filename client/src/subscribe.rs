//! The result side of the pipeline: subscribe to `<ns>.detections.<camera>` (one camera or all)
//! and decode detection messages, for `panoptes subscribe`, tests and downstream consumers.

use futures::StreamExt;
use panoptes_contracts::{CameraId, DetectionMessage, Event, Subjects};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot subscribe to {subject}: {message}")]
    Subscribe { subject: String, message: String },
}

/// A decoded result message.
#[derive(Debug, Clone)]
pub enum Received<T> {
    Message(T),
    /// The raw payload, kept for display when it is not valid (a third-party publisher's, say).
    Invalid {
        subject: String,
        error: String,
    },
}

/// A subscription decoding each message as `T`.
pub struct Subscription<T> {
    sub: async_nats::Subscriber,
    _message: std::marker::PhantomData<fn() -> T>,
}

/// Detections of one camera or of every camera.
pub type DetectionSubscriber = Subscription<DetectionMessage>;
/// Events of one camera or of every camera.
pub type EventSubscriber = Subscription<Event>;

impl Subscription<DetectionMessage> {
    pub async fn new(
        client: &async_nats::Client,
        subjects: &Subjects,
        camera: Option<&CameraId>,
    ) -> Result<Self, SinkError> {
        let subject = camera.map_or_else(|| subjects.all_detections(), |c| subjects.detections(c));
        Self::on(client, subject).await
    }
}

impl Subscription<Event> {
    pub async fn new(
        client: &async_nats::Client,
        subjects: &Subjects,
        camera: Option<&CameraId>,
    ) -> Result<Self, SinkError> {
        let subject = camera.map_or_else(|| subjects.all_events(), |c| subjects.events(c));
        Self::on(client, subject).await
    }
}

impl<T: serde::de::DeserializeOwned> Subscription<T> {
    async fn on(client: &async_nats::Client, subject: String) -> Result<Self, SinkError> {
        let sub = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| SinkError::Subscribe {
                subject,
                message: e.to_string(),
            })?;
        Ok(Self {
            sub,
            _message: std::marker::PhantomData,
        })
    }

    /// The next message; None when the connection closes.
    pub async fn next(&mut self) -> Option<Received<T>> {
        let msg = self.sub.next().await?;
        Some(decode(&msg))
    }
}

fn decode<T: serde::de::DeserializeOwned>(msg: &async_nats::Message) -> Received<T> {
    match serde_json::from_slice(&msg.payload) {
        Ok(m) => Received::Message(m),
        Err(e) => Received::Invalid {
            subject: msg.subject.to_string(),
            error: e.to_string(),
        },
    }
}

/// One line of `panoptes subscribe --format table`.
pub fn table_row(m: &DetectionMessage) -> String {
    let boxes = m
        .detections
        .iter()
        .map(|d| {
            let [x1, y1, x2, y2] = d.bbox;
            format!(
                "{}({:.2})@[{x1:.0},{y1:.0},{x2:.0},{y2:.0}]",
                d.label, d.score
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let latency_ms = m.published_ts_ns.saturating_sub(m.capture_ts_ns) as f64 / 1e6;
    format!(
        "{:<16} seq={:<6} n={:<3} latency={latency_ms:>7.1}ms {boxes}",
        m.camera,
        m.seq,
        m.detections.len()
    )
}
