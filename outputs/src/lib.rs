//! panoptes-outputs: where analytics events and detection messages leave the system.
//!
//! It owns the outputs a topology declares (`outputs:`): reading `<ns>.analytics.*` and
//! `<ns>.detections.*` (core NATS in live delivery, a durable JetStream consumer per output in
//! durable delivery: `intake.rs`), keeping what passes an output's filter (`message.rs`), a
//! bounded queue, and delivering to a webhook (`webhook.rs`: HTTP POST signed with
//! HMAC-SHA256) or an MQTT broker (`mqtt.rs`: rumqttc, QoS 1, acknowledged publishes), with
//! exponential back-off and jitter between attempts (`retry.rs`). What happens to an output
//! (its endpoint down or back, a message given up, messages dropped) is published as
//! `output-events/v1` on `<ns>.outputs.<output>` (`status.rs`). `panoptes run` and
//! `panoptes sink` start them with [`Outputs::start`].
//!
//! Invariant: an output never slows the pipeline (it only subscribes), and in durable delivery
//! a message is acknowledged to JetStream only after its endpoint took it (or refused it for
//! good), so an endpoint or broker outage loses nothing; every message carries an ID receivers
//! drop duplicates by. No secret and no message body is ever put into a status event or log.

mod intake;
mod message;
mod mqtt;
mod retry;
mod run;
mod status;
mod tls;
mod webhook;

pub use message::{Filter, MAX_PAYLOAD, Malformed, Message};
pub use retry::Backoff;
pub use run::{OutputError, Outputs, OutputsConfig};
pub use webhook::{SIGNATURE_HEADER, sign};
