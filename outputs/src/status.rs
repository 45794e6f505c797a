//! What happens to an output, told to its users: `output-events/v1` on `<ns>.outputs.<output>`
//! (the endpoint went down or came back, a message was given up, messages were dropped), the
//! same in the log, and counters. Only transitions of the endpoint's state are published, so a
//! long outage is one event, not one per attempt.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use panoptes_contracts::meter;
use panoptes_contracts::output::{OutputEvent, OutputEventKind};
use tokio::time::Instant;

use crate::message::Message;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Least time between two `output_dropped` events of one output.
const DROPPED_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Status {
    client: async_nats::Client,
    subject: String,
    output: String,
    state: AtomicU8,
    /// Drops not yet reported, and when they were last reported.
    dropped: Mutex<(u64, Option<Instant>)>,
}

impl Status {
    pub(crate) fn new(client: async_nats::Client, subject: String, output: &str) -> Self {
        Self {
            client,
            subject,
            output: output.to_owned(),
            state: AtomicU8::new(UNKNOWN),
            dropped: Mutex::new((0, None)),
        }
    }

    pub(crate) fn output(&self) -> &str {
        &self.output
    }

    async fn publish(&self, event: OutputEvent) {
        if let Ok(body) = serde_json::to_vec(&event)
            && let Err(e) = self.client.publish(self.subject.clone(), body.into()).await
        {
            tracing::warn!(subject = %self.subject, error = %e, "cannot publish an output event");
        }
    }

    /// The endpoint failed: told once per outage.
    pub(crate) async fn down(&self, cause: &str) {
        if self.state.swap(DOWN, Ordering::AcqRel) != DOWN {
            tracing::warn!(output = %self.output, %cause, "output endpoint down");
            self.publish(OutputEvent::new(
                &self.output,
                OutputEventKind::OutputDown,
                cause,
            ))
            .await;
        }
    }

    /// The endpoint took a message (or accepted the connection): told after an outage.
    pub(crate) async fn up(&self, what: &str) {
        match self.state.swap(UP, Ordering::AcqRel) {
            DOWN => {
                tracing::info!(output = %self.output, %what, "output endpoint back");
                self.publish(OutputEvent::new(
                    &self.output,
                    OutputEventKind::OutputUp,
                    what,
                ))
                .await;
            }
            UNKNOWN => tracing::info!(output = %self.output, %what, "output endpoint up"),
            _ => {}
        }
    }

    pub(crate) async fn gave_up(&self, msg: &Message, attempts: u32, cause: &str, kept: bool) {
        metrics::counter!(meter::OUTPUT_GAVE_UP, "output" => self.output.clone()).increment(1);
        let what = if kept {
            format!(
                "gave up after {attempts} attempt(s): {cause}; JetStream keeps it for a later try"
            )
        } else {
            format!("gave up after {attempts} attempt(s): {cause}")
        };
        tracing::warn!(output = %self.output, id = %msg.id, "{what}");
        let mut event = OutputEvent::new(&self.output, OutputEventKind::OutputGaveUp, what);
        event.camera = Some(msg.camera.clone());
        event.id = Some(msg.id.clone());
        event.attempts = Some(attempts);
        self.publish(event).await;
    }

    /// A message dropped because the queue was full; reported at most once a second.
    pub(crate) async fn dropped(&self) {
        metrics::counter!(meter::OUTPUT_DROPPED, "output" => self.output.clone()).increment(1);
        let due = {
            let Ok(mut d) = self.dropped.lock() else {
                return;
            };
            d.0 += 1;
            let now = Instant::now();
            if d.1
                .is_none_or(|last| now.duration_since(last) >= DROPPED_EVERY)
            {
                d.1 = Some(now);
                Some(std::mem::take(&mut d.0))
            } else {
                None
            }
        };
        if let Some(count) = due {
            self.report_dropped(count).await;
        }
    }

    /// Reports drops not yet reported (at stop).
    pub(crate) async fn flush_dropped(&self) {
        let count = match self.dropped.lock() {
            Ok(mut d) => std::mem::take(&mut d.0),
            Err(_) => 0,
        };
        if count > 0 {
            self.report_dropped(count).await;
        }
    }

    async fn report_dropped(&self, count: u64) {
        tracing::warn!(output = %self.output, count, "output queue full: messages dropped");
        let mut event = OutputEvent::new(
            &self.output,
            OutputEventKind::OutputDropped,
            format!("{count} message(s) dropped: the output's queue was full"),
        );
        event.count = Some(count);
        self.publish(event).await;
    }

    pub(crate) fn delivered(&self, waited: Duration) {
        metrics::counter!(meter::OUTPUT_DELIVERED, "output" => self.output.clone()).increment(1);
        metrics::histogram!(meter::OUTPUT_DELIVERY_SECONDS, "output" => self.output.clone())
            .record(waited.as_secs_f64());
    }

    pub(crate) fn failed_attempt(&self) {
        metrics::counter!(meter::OUTPUT_FAILED_ATTEMPTS, "output" => self.output.clone())
            .increment(1);
    }

    pub(crate) fn malformed(&self, subject: &str, error: &crate::Malformed) {
        metrics::counter!(meter::OUTPUT_MALFORMED, "output" => self.output.clone()).increment(1);
        tracing::debug!(output = %self.output, %subject, %error, "skipped a malformed message");
    }
}
