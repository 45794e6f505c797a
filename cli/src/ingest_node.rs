//! An ingest node: one camera's GStreamer source, its frames encoded as Arrow and published on
//! `<ns>.frames.<camera>`, and its up/down status published on `<ns>.events.<camera>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use bytes::Bytes;
use panoptes_ingest::{Framerate, Ingest, RawFrame, SourceSpec, SourceStatus, TestPattern};
use panoptes_pipeline::frame::{FRAME_SCHEMA, Frame, PixelBuffer, PixelFormat};
use panoptes_topology::{CameraConfig, SourceConfig};
use panoptes_pipeline::{CameraId, Event, EventKind, Subjects, headers};
use tokio::sync::mpsc;

/// Counters of one ingest node.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub published: AtomicU64,
    /// Frames dropped because publishing could not keep up.
    pub dropped: AtomicU64,
}

pub struct IngestNode {
    camera: CameraId,
    ingest: Option<Ingest>,
    publisher: tokio::task::JoinHandle<()>,
    stats: Arc<IngestStats>,
}

enum Out {
    Frame(u64, u64, Bytes),
    Event(Event),
}

/// The GStreamer source a topology camera describes.
pub fn source_spec(cam: &CameraConfig) -> anyhow::Result<SourceSpec> {
    match &cam.source {
        SourceConfig::TestPattern(p) => {
            let mut pattern = TestPattern {
                text: p.text.clone(),
                width: cam.width,
                height: cam.height,
                fps: Framerate::from(cam.fps),
                xpos: p.xpos,
                ypos: p.ypos,
                live: true,
                ..TestPattern::default()
            };
            if let Some(font) = &p.font {
                pattern.font = font.clone();
            }
            if let Some(bg) = &p.background {
                pattern.background = parse_colour(bg).with_context(|| {
                    format!("camera {}: background {bg:?} is not #RRGGBB", cam.id)
                })?;
            }
            Ok(SourceSpec::TestPattern(pattern))
        }
        other => anyhow::bail!(
            "camera {}: {} sources are not supported by this build yet",
            cam.id,
            source_kind(other)
        ),
    }
}

fn source_kind(s: &SourceConfig) -> &'static str {
    match s {
        SourceConfig::Rtsp(_) => "rtsp",
        SourceConfig::File(_) => "file",
        SourceConfig::V4l2(_) => "v4l2",
        SourceConfig::Http(_) => "http",
        SourceConfig::TestPattern(_) => "test_pattern",
    }
}

fn parse_colour(s: &str) -> Option<u32> {
    let hex = s.strip_prefix('#')?;
    (hex.len() == 6)
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
        .map(|rgb| 0xff00_0000 | rgb)
}

impl IngestNode {
    pub fn start(
        cam: &CameraConfig,
        client: async_nats::Client,
        subjects: Subjects,
    ) -> anyhow::Result<Self> {
        panoptes_ingest::init().context("cannot initialise GStreamer")?;
        let spec = source_spec(cam)?;
        let camera = CameraId::new(&cam.id)?;
        let stats = Arc::new(IngestStats::default());
        // Two frames in flight at most: a stalled NATS connection drops frames, not memory.
        let (tx, rx) = mpsc::channel::<Out>(2);
        let publisher = tokio::spawn(publish_loop(client, subjects, camera.clone(), rx));

        let seq = AtomicU64::new(0);
        let frame_tx = tx.clone();
        let frame_camera = camera.clone();
        let frame_stats = stats.clone();
        let on_frame = move |raw: RawFrame| {
            let seq = seq.fetch_add(1, Ordering::Relaxed);
            let raw_ts = raw.capture_ts_ns;
            let frame = Frame {
                camera: frame_camera.clone(),
                seq,
                capture_ts_ns: raw.capture_ts_ns,
                width: raw.width,
                height: raw.height,
                format: PixelFormat::Rgb8,
                pixels: PixelBuffer::from_vec(raw.data),
            };
            match frame.encode() {
                Ok(bytes) => {
                    if frame_tx.try_send(Out::Frame(seq, raw_ts, bytes)).is_ok() {
                        frame_stats.published.fetch_add(1, Ordering::Relaxed);
                    } else {
                        frame_stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    tracing::error!(camera = %frame_camera, error = %e, "cannot encode frame")
                }
            }
        };
        let status_camera = camera.clone();
        let on_status = move |status: SourceStatus| {
            let event = match status {
                SourceStatus::Playing => Event::new(
                    status_camera.as_str(),
                    EventKind::CameraUp,
                    "source is playing",
                ),
                SourceStatus::Eos => Event::new(
                    status_camera.as_str(),
                    EventKind::CameraDown,
                    "end of stream",
                ),
                SourceStatus::Error(e) => Event::new(
                    status_camera.as_str(),
                    EventKind::CameraDown,
                    format!("source error: {e}"),
                ),
                other => Event::new(
                    status_camera.as_str(),
                    EventKind::CameraDown,
                    format!("source status {other:?}"),
                ),
            };
            // Status must not be lost to a full frame queue.
            let _ = tx.blocking_send(Out::Event(event.stage("ingest")));
        };
        let ingest = Ingest::start(&spec, on_frame, on_status)
            .with_context(|| format!("camera {camera}: cannot start its source"))?;
        tracing::info!(%camera, "ingest started");
        Ok(Self {
            camera,
            ingest: Some(ingest),
            publisher,
            stats,
        })
    }

    pub fn camera(&self) -> &CameraId {
        &self.camera
    }

    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    /// Stops the source and waits for queued frames to be published.
    pub async fn stop(mut self) {
        if let Some(ingest) = self.ingest.take() {
            // Joining GStreamer threads blocks.
            let _ = tokio::task::spawn_blocking(move || ingest.stop()).await;
        }
        let _ = (&mut self.publisher).await;
    }
}

async fn publish_loop(
    client: async_nats::Client,
    subjects: Subjects,
    camera: CameraId,
    mut rx: mpsc::Receiver<Out>,
) {
    let frames = subjects.frames(&camera);
    let events = subjects.events(&camera);
    while let Some(out) = rx.recv().await {
        let result = match out {
            Out::Frame(seq, capture_ts_ns, bytes) => {
                let mut h = async_nats::HeaderMap::new();
                h.insert(headers::CAMERA, camera.as_str());
                h.insert(headers::SEQ, seq.to_string().as_str());
                h.insert(headers::CAPTURE_TS_NS, capture_ts_ns.to_string().as_str());
                h.insert(headers::SCHEMA, FRAME_SCHEMA);
                client.publish_with_headers(frames.clone(), h, bytes).await
            }
            Out::Event(event) => match serde_json::to_vec(&event) {
                Ok(body) => client.publish(events.clone(), body.into()).await,
                Err(_) => Ok(()),
            },
        };
        if let Err(e) = result {
            tracing::warn!(%camera, error = %e, "publish failed");
        }
    }
    let _ = client.flush().await;
}
