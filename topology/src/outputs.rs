//! Outputs as the topology declares them: where analytics events and detection messages leave
//! the system (webhooks, MQTT), with filters, queues and retries. Run by `panoptes-outputs`.

use std::path::PathBuf;

use panoptes_contracts::analytics::AnalyticsKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One output: it reads result subjects, keeps what passes its filter and delivers it.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputConfig {
    /// HTTP POST of each message's JSON, signed with HMAC-SHA256.
    Webhook(WebhookOutput),
    /// Publishes each message's JSON to an MQTT broker.
    Mqtt(MqttOutput),
}

/// Which result subjects an output reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputSource {
    /// `analytics/v1` events on `<ns>.analytics.<camera>`.
    Analytics,
    /// `detections/v1` messages on `<ns>.detections.<camera>`.
    Detections,
    /// `clips/v1` announcements of stored clips on `<ns>.clips.<camera>`, naming the video,
    /// the snapshot and the events each holds (see `record:`).
    Clips,
}

impl OutputSource {
    pub fn name(self) -> &'static str {
        match self {
            OutputSource::Analytics => "analytics",
            OutputSource::Detections => "detections",
            OutputSource::Clips => "clips",
        }
    }
}

fn default_from() -> Vec<OutputSource> {
    vec![OutputSource::Analytics]
}

/// What an output keeps of what it reads; each list left empty keeps everything.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputFilter {
    /// Only these cameras.
    #[serde(default)]
    pub cameras: Vec<String>,
    /// Only these labels: analytics events of objects with one of them, and detection
    /// messages with at least one such detection (the others are left out of the message).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Only these analytics event kinds (detection messages are kept whatever this says).
    #[serde(default)]
    pub kinds: Vec<AnalyticsKind>,
}

/// Delivery attempts of one message: exponential back-off with full jitter between them.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts before a message is given up (reported as an `output_gave_up` event; in
    /// durable delivery it stays in JetStream and is delivered again later).
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
    /// Delay before the second attempt, in milliseconds; it doubles after each attempt.
    #[serde(default = "default_initial_ms")]
    #[schemars(range(min = 1))]
    pub initial_ms: u64,
    /// Longest delay between attempts, in milliseconds.
    #[serde(default = "default_max_ms")]
    #[schemars(range(min = 1))]
    pub max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
        }
    }
}

fn default_max_attempts() -> u32 {
    6
}
fn default_initial_ms() -> u64 {
    200
}
fn default_max_ms() -> u64 {
    10_000
}
fn default_queue() -> usize {
    1024
}
fn default_timeout_ms() -> u64 {
    5_000
}

/// A webhook: each message is POSTed as JSON to `url`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookOutput {
    /// One token, unique among the outputs.
    pub id: String,
    /// What it reads.
    #[serde(default = "default_from")]
    pub from: Vec<OutputSource>,
    #[serde(default)]
    pub filter: OutputFilter,
    /// `http://` or `https://` (system CA roots, or `ca`).
    pub url: String,
    /// Environment variable holding the HMAC-SHA256 key; the signature of the body is sent as
    /// `X-Panoptes-Signature: sha256=<hex>`. Unset: requests are not signed.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// PEM file of CA certificates to trust instead of the system's (https).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Time one request may take, connection included, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    #[schemars(range(min = 1))]
    pub timeout_ms: u64,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Messages waiting for delivery at most; in live delivery further ones are dropped (and
    /// counted) while it is full, in durable delivery JetStream holds them.
    #[serde(default = "default_queue")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub queue: usize,
}

/// MQTT quality of service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Qos {
    /// At most once.
    #[serde(rename = "0")]
    AtMostOnce,
    /// At least once: a message counts as delivered when the broker acknowledged it.
    #[default]
    #[serde(rename = "1")]
    AtLeastOnce,
}

/// An MQTT output: each message is published to a topic made from `topic`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttOutput {
    /// One token, unique among the outputs.
    pub id: String,
    #[serde(default = "default_from")]
    pub from: Vec<OutputSource>,
    #[serde(default)]
    pub filter: OutputFilter,
    /// `mqtt://host:port` (default port 1883) or `mqtts://host:port` (TLS, default port 8883).
    pub url: String,
    /// Topic of each message; `{namespace}`, `{camera}`, `{kind}` (an analytics kind or
    /// `detections`), `{label}` (analytics events only; `detections` otherwise) and `{output}`
    /// are replaced.
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub qos: Qos,
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM file of CA certificates to trust instead of the system's (mqtts).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// MQTT client ID (default: `panoptes-<output>-<random>`).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default = "default_queue")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub queue: usize,
}

fn default_topic() -> String {
    "panoptes/{camera}/{kind}".to_owned()
}

/// The placeholders an MQTT topic template may use.
pub const TOPIC_PLACEHOLDERS: [&str; 5] = ["namespace", "camera", "kind", "label", "output"];

impl OutputConfig {
    pub fn id(&self) -> &str {
        match self {
            OutputConfig::Webhook(o) => &o.id,
            OutputConfig::Mqtt(o) => &o.id,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            OutputConfig::Webhook(_) => "webhook",
            OutputConfig::Mqtt(_) => "mqtt",
        }
    }

    pub fn from(&self) -> &[OutputSource] {
        match self {
            OutputConfig::Webhook(o) => &o.from,
            OutputConfig::Mqtt(o) => &o.from,
        }
    }

    pub fn filter(&self) -> &OutputFilter {
        match self {
            OutputConfig::Webhook(o) => &o.filter,
            OutputConfig::Mqtt(o) => &o.filter,
        }
    }

    pub fn retry(&self) -> &RetryConfig {
        match self {
            OutputConfig::Webhook(o) => &o.retry,
            OutputConfig::Mqtt(o) => &o.retry,
        }
    }

    pub fn queue(&self) -> usize {
        match self {
            OutputConfig::Webhook(o) => o.queue,
            OutputConfig::Mqtt(o) => o.queue,
        }
    }
}
