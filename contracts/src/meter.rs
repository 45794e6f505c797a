//! Metric names every process reports through the `metrics` facade. Libraries only count; the
//! binary installs the Prometheus exporter that serves them on `/metrics` (nothing is recorded
//! when none is installed).

/// Frames an ingest node published, per `camera`.
pub const INGEST_FRAMES: &str = "panoptes_ingest_frames_total";
/// Frames an ingest node dropped because publishing could not keep up, per `camera`.
pub const INGEST_DROPPED: &str = "panoptes_ingest_dropped_total";
/// Frames NATS refused (e.g. over max_payload), per `camera`.
pub const INGEST_FAILED: &str = "panoptes_ingest_failed_total";
/// Restarts of a live source after it failed, stalled or ended, per `camera`.
pub const INGEST_RECONNECTS: &str = "panoptes_ingest_reconnects_total";
/// Previews an ingest node published while someone listened, per `camera`.
pub const INGEST_PREVIEWS: &str = "panoptes_ingest_previews_total";
/// 1 while a camera's source delivers frames, 0 while it is down, per `camera`.
pub const INGEST_UP: &str = "panoptes_ingest_camera_up";

/// Messages a worker received on its input, per `camera`.
pub const WORKER_RECEIVED: &str = "panoptes_worker_frames_received_total";
/// Frames a live worker replaced with a newer one of the same camera (overload), per `camera`.
pub const WORKER_DROPPED: &str = "panoptes_worker_frames_dropped_total";
/// Frames of partitions this worker does not serve, per `camera`.
pub const WORKER_SKIPPED: &str = "panoptes_worker_frames_skipped_total";
/// Frames whose results were published, per `camera`.
pub const WORKER_PROCESSED: &str = "panoptes_worker_frames_processed_total";
/// Frames with at least one failed branch, per `camera`.
pub const WORKER_FAILED: &str = "panoptes_worker_frames_failed_total";
/// Frames handed back because their partition moved away, per `camera`.
pub const WORKER_HANDED_BACK: &str = "panoptes_worker_frames_handed_back_total";
/// Live frames nobody processed: the sequence gap when a partition was taken over, and frames
/// that arrived while the partition's lease had lapsed (NATS unreachable), per `camera`.
pub const WORKER_LOST: &str = "panoptes_worker_frames_lost_total";
/// Durable frames redelivered after newer frames of their camera were processed, acknowledged
/// and not processed (the ordering rule), per `camera`.
pub const WORKER_LATE: &str = "panoptes_worker_frames_late_total";
/// Frames of cameras beyond the worker's limit of tracked cameras (no `camera` label: the
/// refused IDs are exactly the ones not to make series for).
pub const WORKER_REFUSED: &str = "panoptes_worker_frames_refused_total";
/// Cameras a worker keeps state for now.
pub const WORKER_CAMERAS: &str = "panoptes_worker_cameras";

/// Items that entered a stage, per `stage` and `camera`.
pub const STAGE_IN: &str = "panoptes_stage_frames_in_total";
/// Items a stage passed on, per `stage` and `camera`.
pub const STAGE_OUT: &str = "panoptes_stage_frames_out_total";
/// Items a stage failed, per `stage`, `camera` and `kind` (trap, timeout, invalid_input, ...).
pub const STAGE_ERRORS: &str = "panoptes_stage_errors_total";
/// Operator traps and time-outs, per `stage` and `kind`.
pub const OPERATOR_FAULTS: &str = "panoptes_operator_faults_total";
/// Frames a shadow stage's candidate was given, by `stage` and `outcome` (`agree`, `differ`,
/// `fault`, or `skipped`: sampled while the candidate was still busy, so not run).
pub const SHADOW_FRAMES: &str = "panoptes_shadow_frames_total";
/// Of the frames a shadow stage compared (agree + differ), the share that agreed, by `stage`.
pub const SHADOW_AGREEMENT: &str = "panoptes_shadow_agreement";
/// The candidate's time per batch, by `stage`.
pub const SHADOW_SECONDS: &str = "panoptes_shadow_seconds";
/// Duration of one stage call (one batch), per `stage`.
pub const STAGE_SECONDS: &str = "panoptes_stage_seconds";
/// Capture to results published, per `camera`.
pub const FRAME_LATENCY: &str = "panoptes_frame_latency_seconds";
/// Frames per worker batch.
pub const BATCH_FRAMES: &str = "panoptes_batch_frames";
/// Rows per model inference call, per `stage` and `model`.
pub const MODEL_BATCH_ROWS: &str = "panoptes_model_batch_rows";
/// Duration of one model inference call, per `stage` and `model`.
pub const MODEL_SECONDS: &str = "panoptes_model_inference_seconds";
/// Detection messages published, per `camera`.
pub const DETECTIONS_PUBLISHED: &str = "panoptes_detections_published_total";
/// Items forwarded to a stage in another process, per `camera`.
pub const ITEMS_FORWARDED: &str = "panoptes_items_forwarded_total";
/// Analytics events raised, per `camera`, `place` (zone or line), `label` and `kind`.
pub const ANALYTICS_EVENTS: &str = "panoptes_analytics_events_total";
/// Line crossings, per `camera`, `line`, `label` and `direction` (`in`/`out`).
pub const LINE_CROSSINGS: &str = "panoptes_line_crossings_total";
/// Tracked objects inside a zone now, per `camera`, `zone` and `label`.
pub const ZONE_OCCUPANCY: &str = "panoptes_zone_occupancy";
/// Per-camera stage states (tracks) that could not be saved to KV for the next owner.
pub const STATE_WRITE_ERRORS: &str = "panoptes_state_write_errors_total";
/// Saved states a new owner could not use (another version's, corrupt): the camera started afresh.
pub const STATE_DISCARDED: &str = "panoptes_state_discarded_total";
/// Messages an output delivered (webhook answered 2xx, MQTT broker acknowledged), per `output`.
pub const OUTPUT_DELIVERED: &str = "panoptes_output_delivered_total";
/// Delivery attempts that failed (and may be retried), per `output`.
pub const OUTPUT_FAILED_ATTEMPTS: &str = "panoptes_output_failed_attempts_total";
/// Messages an output gave up after its attempts, or that its endpoint refused for good, per
/// `output` (durable delivery leaves the first in JetStream for a later try).
pub const OUTPUT_GAVE_UP: &str = "panoptes_output_gave_up_total";
/// Messages an output dropped because its queue was full (live delivery), per `output`.
pub const OUTPUT_DROPPED: &str = "panoptes_output_dropped_total";
/// Messages the web view skipped (malformed, of an unknown camera), per `subject` kind and
/// `reason`.
pub const VIEW_SKIPPED: &str = "panoptes_view_skipped_total";
/// Messages an output skipped as malformed, per `output`.
pub const OUTPUT_MALFORMED: &str = "panoptes_output_malformed_total";
/// Time from a message reaching an output to its delivery, per `output`.
pub const OUTPUT_DELIVERY_SECONDS: &str = "panoptes_output_delivery_seconds";
/// Clips and segments a recorder stored, per camera.
pub const RECORDER_CLIPS: &str = "panoptes_recorder_clips_total";
/// Bytes of video a recorder stored, per camera.
pub const RECORDER_BYTES: &str = "panoptes_recorder_bytes_total";
/// Times the NATS connection was re-established.
pub const NATS_RECONNECTS: &str = "panoptes_nats_reconnects_total";
/// Times the NATS connection was lost.
pub const NATS_DISCONNECTS: &str = "panoptes_nats_disconnects_total";

/// Histogram buckets for the `_seconds` metrics: 1 ms to 10 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Histogram buckets for batch sizes.
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Adds `n` to `name{camera}`.
pub fn count_camera(name: &'static str, camera: &str, n: u64) {
    metrics::counter!(name, "camera" => camera.to_owned()).increment(n);
}
