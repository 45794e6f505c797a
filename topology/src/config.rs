//! The topology language as Rust types: what each key means, its default, and (through
//! schemars) the JSON Schema editors use. Validation lives in `check`; these types only
//! describe a topology that already passed it.

pub use crate::operator::{DirGrant, Emits, Grants, OperatorStage};
pub use crate::outputs::{
    MqttOutput, OutputConfig, OutputFilter, OutputSource, Qos, RetryConfig, WebhookOutput,
};
pub use crate::places::{LineConfig, Side, Units, ZoneConfig};
pub use crate::record::{ContinuousRecording, RecordConfig, RecordRule, Retention};
pub use crate::shadow::{ModelShadow, OperatorShadow};
pub use crate::test_pattern::{TestPatternSource, TextMotion, TextOverlay};
pub use crate::tracking::TrackerStage;
use crate::tracking::{default_max_age, default_snapshot_interval_ms};
pub use panoptes_contracts::kinds::Postprocessor;
use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Panoptes topology: cameras, the stages their frames go through, and where results go.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Panoptes topology")]
pub struct Topology {
    /// First token of every subject (`<namespace>.frames.<camera>`); one NATS token.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The NATS server. Without a URL, `panoptes run` starts its own local nats-server.
    #[serde(default)]
    pub nats: NatsConfig,
    /// `live`: lowest latency, under overload the newest frame per camera wins and drops are
    /// counted. `durable`: JetStream, at-least-once, no frame lost across a worker crash.
    #[serde(default)]
    pub delivery: Delivery,
    /// Number of partitions cameras are hashed into; a worker owns whole partitions.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1024))]
    pub partitions: u32,
    /// How workers share partitions (leases) and how much durable delivery keeps.
    #[serde(default)]
    pub workers: WorkersConfig,
    /// Tracing export and the metrics endpoint.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Changing a running deployment over NATS (cameras, operator reloads). Off by default.
    #[serde(default)]
    pub control: ControlConfig,
    /// Models stages refer to by name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Cameras ingest nodes read. May be empty when third parties publish the frames.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    /// Stages frames go through. Each stage reads `input` (default: the stage above it; the
    /// first reads `frames`); several stages reading one input fan out.
    pub stages: Vec<StageConfig>,
    /// Where analytics events and detection messages are delivered (webhooks, MQTT); run by
    /// `panoptes run` or by `panoptes sink` processes of their own.
    #[serde(default)]
    pub outputs: Vec<OutputConfig>,
    /// Clips and snapshots of events, in the NATS Object Store bucket `<ns>-clips`; recorded
    /// by `panoptes run` or by `panoptes record` processes of their own.
    #[serde(default)]
    pub record: Option<RecordConfig>,
    /// Keep the cameras' frames and the detections made of them in JetStream for
    /// `panoptes replay` (stream `<namespace>-retain`), whatever processing does.
    #[serde(default)]
    pub retain: Option<RetainConfig>,
}

/// Frame retention for replay: the newest frames of every camera with the detections the live
/// pipeline produced for them, in stream `<namespace>-retain` (limits retention: the oldest go
/// first once either limit is reached). Raw 1280x720 frames are 2.7 MB each: size `max_gib`
/// for your cameras' rate.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetainConfig {
    /// Hours kept.
    #[serde(default = "default_retain_hours")]
    #[schemars(range(min = 0.01, max = 8760))]
    pub max_age_h: f64,
    /// GiB kept at most.
    #[serde(default = "default_retain_gib")]
    #[schemars(range(min = 0.01, max = 100000))]
    pub max_gib: f64,
}

fn default_retain_hours() -> f64 {
    1.0
}
fn default_retain_gib() -> f64 {
    10.0
}

pub fn default_namespace() -> String {
    "panoptes".to_owned()
}
fn default_partitions() -> u32 {
    16
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// e.g. `nats://10.0.0.5:4222`, or `tls://…`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Exactly one method: `user` + `password`, `token`, `credentials` (a `.creds` file) or `nkey`
/// (a file holding the seed).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    #[serde(default)]
    pub nkey: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CA certificates to trust (in addition to the system roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS; needs `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// The control subjects (`<ns>.control.cameras.*` on ingest processes,
/// `<ns>.control.operators.reload` on workers) change a running deployment. They are off unless
/// `enabled`; then every request must be signed by one of `keys` (ed25519, see
/// `docs/security.md`), carry a fresh timestamp and a nonce never seen before.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Subscribe to the control subjects at all.
    #[serde(default)]
    pub enabled: bool,
    /// Public key files (`panoptes operator keygen` writes them) whose signed requests are
    /// obeyed; relative to the topology file.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
    /// How old (or how far ahead of this process's clock) a request may be; also how long its
    /// nonce is remembered.
    #[serde(default = "default_control_max_age_ms")]
    #[schemars(range(min = 1000, max = 600000))]
    pub max_age_ms: u64,
    /// Directories that the files of cameras added at runtime (file paths, V4L2 devices) and
    /// reloaded operator modules must lie in. Empty: runtime-added file and V4L2 cameras are
    /// refused, and a reload may only name files beside the stage's own module.
    #[serde(default)]
    pub allow_dirs: Vec<PathBuf>,
    /// Hosts that RTSP and HTTP cameras added at runtime may connect to (names or addresses,
    /// as written in the URL). Absent: any host.
    #[serde(default)]
    pub allow_hosts: Option<Vec<String>>,
}

fn default_control_max_age_ms() -> u64 {
    30_000
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            keys: Vec::new(),
            max_age_ms: default_control_max_age_ms(),
            allow_dirs: Vec::new(),
            allow_hosts: None,
        }
    }
}

/// Workers of one stage unit hold their partitions through leases in the NATS KV bucket
/// `<namespace>-leases`; a worker that stops renewing (crashed, cut off) loses them after
/// `lease_ttl_ms` and the others take them over.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// Takeover time after a worker dies: its leases expire this long after its last renewal
    /// (renewals happen three times per TTL).
    #[serde(default = "default_lease_ttl_ms")]
    #[schemars(range(min = 300, max = 600000))]
    pub lease_ttl_ms: u64,
    /// Durable delivery: a frame delivered to a worker that does not acknowledge it within this
    /// time (it died mid-frame) is delivered again.
    #[serde(default = "default_ack_wait_ms")]
    #[schemars(range(min = 1000, max = 3600000))]
    pub ack_wait_ms: u64,
    /// Durable delivery: the most a stream of frames keeps, in MiB. When workers fall this far
    /// behind, JetStream refuses further frames (backpressure on the publishers).
    #[serde(default = "default_stream_max_mib")]
    #[schemars(range(min = 1))]
    pub stream_max_mib: u64,
    /// The most cameras one worker keeps state for; frames of further cameras are refused
    /// (counted, reported in `frames_refused` events) until idle ones expire.
    #[serde(default = "default_max_cameras")]
    #[schemars(range(min = 1))]
    pub max_cameras: usize,
    /// A camera without frames this long is forgotten by the worker (its queue, counters,
    /// watermark and metric series). Keep it longer than `ack_wait_ms`.
    #[serde(default = "default_camera_idle_ttl_ms")]
    #[schemars(range(min = 1000))]
    pub camera_idle_ttl_ms: u64,
}

fn default_max_cameras() -> usize {
    1024
}
fn default_camera_idle_ttl_ms() -> u64 {
    300_000
}

fn default_lease_ttl_ms() -> u64 {
    3000
}
fn default_ack_wait_ms() -> u64 {
    10_000
}
fn default_stream_max_mib() -> u64 {
    1024
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            lease_ttl_ms: default_lease_ttl_ms(),
            ack_wait_ms: default_ack_wait_ms(),
            stream_max_mib: default_stream_max_mib(),
            max_cameras: default_max_cameras(),
            camera_idle_ttl_ms: default_camera_idle_ttl_ms(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    Live,
    Durable,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP collector endpoint, e.g. `http://localhost:4317`. Also `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    #[serde(default)]
    pub otlp_protocol: OtlpProtocol,
    /// Share of frames traced, 0.0 to 1.0.
    #[serde(default = "default_sampling")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling: f64,
    /// Address for the Prometheus `/metrics` endpoint, e.g. `0.0.0.0:9464`.
    #[serde(default)]
    pub metrics: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::default(),
            sampling: default_sampling(),
            metrics: None,
        }
    }
}

fn default_sampling() -> f64 {
    0.01
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    #[default]
    Grpc,
    Http,
}

/// A model stages refer to by name: an ONNX `file`, or a `manifest` that describes one (its
/// file, sha256, inputs, normalisation, labels and postprocessor; see docs/models.md). Exactly
/// one of the two.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The ONNX file, relative to the topology file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A model manifest (`models/<name>.yaml`), relative to the topology file; its `file` is
    /// relative to the manifest.
    #[serde(default)]
    pub manifest: Option<PathBuf>,
    /// Expected sha256 of the file (hex); checked when the model loads. With a manifest that
    /// declares one too, the two must agree.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Largest batch the graph takes. Default: what its input shape declares.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_batch: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// One NATS token: ASCII letters, digits, `-` and `_`.
    pub id: String,
    pub source: SourceConfig,
    /// Frames per second taken from the source.
    #[serde(default = "default_fps")]
    #[schemars(range(min = 1, max = 240))]
    pub fps: u32,
    /// Frame size on the wire (the source is scaled to it).
    #[serde(default = "default_width")]
    #[schemars(range(min = 16, max = 7680))]
    pub width: u32,
    #[serde(default = "default_height")]
    #[schemars(range(min = 16, max = 4320))]
    pub height: u32,
    /// Zones of this camera for `analytics` stages: objects entering, leaving, dwelling.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Counting lines of this camera for `analytics` stages.
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    /// How frames travel: `raw` RGB, `jpeg` (encoded at ingest; the first stage must be the
    /// `jpeg` operator), or `auto`: raw when a frame fits the server's max_payload, else JPEG.
    #[serde(default)]
    pub encoding: WireEncoding,
    /// JPEG quality (1..=100, libjpeg's scale) when frames travel as JPEG.
    #[serde(default = "default_jpeg_quality")]
    #[schemars(range(min = 1, max = 100))]
    pub jpeg_quality: u8,
    /// Restarting a live source (RTSP, V4L2, HTTP MJPEG) that fails, stalls or ends.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Small JPEGs of the camera's frames for the web view, made only while someone watches.
    #[serde(default)]
    pub preview: PreviewConfig,
}

/// Previews (`preview/v1` on `<ns>.preview.<camera>`): while a view or other subscriber
/// listens, the ingest node scales frames down and publishes them as JPEG at this rate, so
/// nobody pulls full raw frames to look at a camera.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewConfig {
    /// Previews per second while someone listens; 0 turns them off.
    #[serde(default = "default_preview_fps")]
    #[schemars(range(min = 0, max = 30))]
    pub fps: f64,
    /// Widest preview in pixels (narrower frames keep their size).
    #[serde(default = "default_preview_width")]
    #[schemars(range(min = 16, max = 7680))]
    pub width: u32,
    /// JPEG quality (1..=100).
    #[serde(default = "default_preview_quality")]
    #[schemars(range(min = 1, max = 100))]
    pub quality: u8,
}

impl Default for PreviewConfig {
    fn default() -> Self {
        Self {
            fps: default_preview_fps(),
            width: default_preview_width(),
            quality: default_preview_quality(),
        }
    }
}

impl PreviewConfig {
    pub fn enabled(&self) -> bool {
        self.fps > 0.0
    }
}

fn default_preview_fps() -> f64 {
    2.0
}
fn default_preview_width() -> u32 {
    640
}
fn default_preview_quality() -> u8 {
    70
}

/// Exponential back-off with jitter between restarts of a live source: the n-th wait is up to
/// `initial_ms * 2^(n-1)` plus a random share of it, at most `max_ms`; it starts over once
/// frames flow again.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// First wait after a failure.
    #[serde(default = "default_reconnect_initial_ms")]
    #[schemars(range(min = 10, max = 600000))]
    pub initial_ms: u64,
    /// Longest wait between attempts.
    #[serde(default = "default_reconnect_max_ms")]
    #[schemars(range(min = 10, max = 3600000))]
    pub max_ms: u64,
    /// A playing live source that delivers no frame for this long counts as failed (a camera
    /// that hangs without closing its connection).
    #[serde(default = "default_stall_ms")]
    #[schemars(range(min = 100, max = 600000))]
    pub stall_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_ms: default_reconnect_initial_ms(),
            max_ms: default_reconnect_max_ms(),
            stall_ms: default_stall_ms(),
        }
    }
}

fn default_reconnect_initial_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_stall_ms() -> u64 {
    5_000
}

fn default_fps() -> u32 {
    10
}
fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}
fn default_jpeg_quality() -> u8 {
    85
}

/// How a camera's frames travel to the workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WireEncoding {
    /// Packed RGB, `width * height * 3` bytes: no encoding cost, but a 1280x720 frame (2.76 MB)
    /// is over NATS's default max_payload of 1 MiB.
    #[default]
    Raw,
    /// JPEG at `jpeg_quality`, encoded by the ingest node's GStreamer pipeline.
    Jpeg,
    /// Raw when a raw frame fits the NATS server's max_payload (learnt when the ingest node
    /// connects), JPEG otherwise.
    Auto,
}

/// Where a camera's frames come from: exactly one of these keys.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// An RTSP camera.
    Rtsp(RtspSource),
    /// A recorded file, any container and codec the installed GStreamer plugins decode.
    File(FileSource),
    /// A V4L2 (USB) camera.
    V4l2(V4l2Source),
    /// An HTTP(S) stream: MJPEG or HLS.
    Http(HttpSource),
    /// A synthetic camera: a solid background with text drawn by GStreamer's textoverlay.
    TestPattern(TestPatternSource),
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RtspSource {
    /// `rtsp://host[:port]/path`; credentials may come from `${VAR}`.
    pub url: String,
    #[serde(default)]
    pub transport: RtspTransport,
    /// Jitter buffer in milliseconds.
    #[serde(default = "default_rtsp_latency")]
    pub latency_ms: u32,
}

fn default_rtsp_latency() -> u32 {
    200
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// Path to the file, relative to the topology file.
    pub path: PathBuf,
    /// Start again at the end instead of reporting end-of-stream.
    #[serde(default, rename = "loop")]
    pub looping: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct V4l2Source {
    /// e.g. `/dev/video0`.
    pub device: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    /// `http://` or `https://` URL of an MJPEG stream or HLS playlist.
    pub url: String,
}

/// One step of the topology, chosen by `kind`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StageConfig {
    /// A Wasm operator component run in the sandbox.
    Operator(OperatorStage),
    /// An ONNX model run by a host backend.
    Model(ModelStage),
    /// Turns model output into detections.
    Postprocess(PostprocessStage),
    /// Gives detections of one object the same track ID across frames.
    Tracker(TrackerStage),
    /// Zones, lines and dwell over tracked detections (the cameras' `zones` and `lines`).
    Analytics(AnalyticsStage),
    /// Publishes detections to a subject pattern.
    Sink(SinkStage),
}

/// Where a stage reads from: `frames` (camera frames) or another stage's ID.
pub const FRAMES: &str = panoptes_contracts::stage::Input::FRAMES;

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelStage {
    pub id: String,
    #[serde(default)]
    pub input: Option<String>,
    /// A name from the top-level `models` map.
    pub model: String,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub device: Device,
    /// Intra-op threads (absent: let the backend decide).
    #[serde(default)]
    #[schemars(range(min = 1, max = 256))]
    pub threads: Option<usize>,
    #[serde(default)]
    pub batching: Option<BatchingConfig>,
    /// Cascade: run the model on crops of the camera frame at the boxes its input (a
    /// detections stage) found, resized to this size, instead of on a tensor.
    #[serde(default)]
    pub crops: Option<CropConfig>,
    /// A candidate model run beside this one on a share of frames (docs/replay.md).
    #[serde(default)]
    pub shadow: Option<ModelShadow>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CropConfig {
    #[schemars(range(min = 1, max = 4096))]
    pub width: u32,
    #[schemars(range(min = 1, max = 4096))]
    pub height: u32,
    /// Keep the box's aspect ratio and pad (true), or stretch to the size (false).
    #[serde(default = "yes")]
    pub keep_aspect: bool,
    /// Let long boxes widen the crops up to this width instead of shrinking them (for models
    /// with a dynamic input width, like PP-OCR recognisers): the crops of one call share the
    /// width their longest box needs, in steps of 32.
    #[serde(default)]
    #[schemars(range(min = 1, max = 8192))]
    pub max_width: Option<u32>,
    /// At most this many boxes per frame are cropped (the highest-scoring).
    #[serde(default = "default_max_crops")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_crops: u32,
    /// Turn crops upright first: a text-line orientation classifier (PP-OCR's `cls` model,
    /// classes 0° and 180°) runs on every crop, and crops it calls upside down are rotated.
    #[serde(default)]
    pub orientation: Option<OrientationConfig>,
}

fn default_max_crops() -> u32 {
    64
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrientationConfig {
    /// A name from the top-level `models` map: a classifier with outputs [N, 2] (0°, 180°).
    pub model: String,
    /// The classifier's input size.
    #[serde(default = "default_orientation_width")]
    #[schemars(range(min = 1, max = 4096))]
    pub width: u32,
    #[serde(default = "default_orientation_height")]
    #[schemars(range(min = 1, max = 4096))]
    pub height: u32,
    /// Rotate a crop when the classifier says 180° with at least this probability.
    #[serde(default = "default_orientation_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: f32,
}

fn default_orientation_width() -> u32 {
    192
}

fn default_orientation_height() -> u32 {
    48
}

fn default_orientation_threshold() -> f32 {
    0.9
}

pub(crate) fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    #[default]
    Ort,
    Tract,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
    Tensorrt,
    Openvino,
}

/// Frames of several cameras in one inference call. A batch closes at the size the controller
/// chose (at most `max_batch`), or when `max_wait_ms` (or the wait the `latency_target_ms`
/// leaves) has passed.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    #[schemars(range(min = 1, max = 256))]
    pub max_batch: u32,
    #[serde(default)]
    pub max_wait_ms: Option<u32>,
    #[serde(default)]
    pub latency_target_ms: Option<u32>,
    /// Learn the batch size with the lowest measured cost per frame, starting unbatched (CPUs
    /// rarely gain from batches; GPUs do). `false`: always fill batches up to `max_batch`.
    #[serde(default = "yes")]
    pub adaptive: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostprocessStage {
    pub id: String,
    #[serde(default)]
    pub input: Option<String>,
    pub postprocessor: Postprocessor,
    /// Postprocessor settings (for `db`: `threshold`, `box_threshold`, `unclip_ratio`, …).
    #[serde(default)]
    pub params: serde_json::Value,
    /// Label given to every detection.
    #[serde(default)]
    pub label: Option<String>,
}

/// Events about tracked objects and the cameras' zones and lines (`zone_enter`, `zone_exit`,
/// `line_cross`, `dwell`) on `<ns>.analytics.<camera>`; detections pass through unchanged.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsStage {
    pub id: String,
    #[serde(default)]
    pub input: Option<String>,
    /// The point of a box that is tested against zones and lines.
    #[serde(default)]
    pub anchor: Anchor,
    /// Frames a track may be missing before it counts as ended (leaving its zones).
    #[serde(default = "default_max_age")]
    pub max_age: u32,
    /// Milliseconds a track may be missing before it counts as ended, besides `max_age`.
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    /// How often each camera's state (which zones each track is in, since when) is saved to
    /// KV for its next worker, in milliseconds (also at hand-over).
    #[serde(default = "default_snapshot_interval_ms")]
    #[schemars(range(min = 100))]
    pub snapshot_interval_ms: u64,
}

/// A point of a box.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// Middle of the bottom edge: where a person or vehicle touches the ground.
    #[default]
    BottomCenter,
    Center,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkStage {
    pub id: String,
    #[serde(default)]
    pub input: Option<String>,
    /// Subject pattern; `{namespace}`, `{camera}` and `{stage}` are filled in. Must contain
    /// `{camera}` so results stay partitioned by camera.
    #[serde(default = "default_sink_subject")]
    pub subject: String,
    #[serde(default)]
    pub format: SinkFormat,
}

pub fn default_sink_subject() -> String {
    "{namespace}.detections.{camera}".to_owned()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkFormat {
    #[default]
    Json,
    Arrow,
}

impl StageConfig {
    pub fn id(&self) -> &str {
        match self {
            StageConfig::Operator(s) => &s.id,
            StageConfig::Model(s) => &s.id,
            StageConfig::Postprocess(s) => &s.id,
            StageConfig::Tracker(s) => &s.id,
            StageConfig::Analytics(s) => &s.id,
            StageConfig::Sink(s) => &s.id,
        }
    }

    /// The input as written (`None`: the stage above, or `frames` for the first).
    pub fn input(&self) -> Option<&str> {
        match self {
            StageConfig::Operator(s) => s.input.as_deref(),
            StageConfig::Model(s) => s.input.as_deref(),
            StageConfig::Postprocess(s) => s.input.as_deref(),
            StageConfig::Tracker(s) => s.input.as_deref(),
            StageConfig::Analytics(s) => s.input.as_deref(),
            StageConfig::Sink(s) => s.input.as_deref(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            StageConfig::Operator(_) => "operator",
            StageConfig::Model(_) => "model",
            StageConfig::Postprocess(_) => "postprocess",
            StageConfig::Tracker(_) => "tracker",
            StageConfig::Analytics(_) => "analytics",
            StageConfig::Sink(_) => "sink",
        }
    }
}
