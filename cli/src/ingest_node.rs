//! An ingest node: one camera's GStreamer source, its frames encoded as Arrow and published on
//! `<ns>.frames.<camera>`, and its up/down status published on `<ns>.events.<camera>`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use panoptes_ingest::{Framerate, Ingest, RawFrame, SourceSpec, SourceStatus, TestPattern};
use panoptes_pipeline::meter::{self, count_camera};
use panoptes_pipeline::{CameraId, Event, EventKind, Subjects};
use panoptes_topology::{CameraConfig, SourceConfig};
use tokio::sync::mpsc;

use crate::frame_out::{EncodedFrame, FramePublisher, PublishFrameError};

/// Counters of one ingest node.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Frames handed to the NATS connection.
    pub published: AtomicU64,
    /// Frames dropped because publishing could not keep up.
    pub dropped: AtomicU64,
    /// Frames NATS refused (e.g. larger than the server's max_payload).
    pub failed: AtomicU64,
}

pub struct IngestNode {
    camera: CameraId,
    ingest: Option<Ingest>,
    publisher: tokio::task::JoinHandle<()>,
    stats: Arc<IngestStats>,
}

enum Out {
    Frame(EncodedFrame),
    Event(Event),
}

/// The GStreamer source a topology camera describes; relative paths in it resolve against
/// `base_dir` (the topology file's directory).
pub fn source_spec(cam: &CameraConfig, base_dir: &Path) -> anyhow::Result<SourceSpec> {
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
        _ => crate::sources::pipeline_spec(cam, base_dir),
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
        base_dir: &Path,
        client: async_nats::Client,
        subjects: Subjects,
    ) -> anyhow::Result<Self> {
        panoptes_ingest::init().context("cannot initialise GStreamer")?;
        let spec = source_spec(cam, base_dir)?;
        let camera = CameraId::new(&cam.id)?;
        let stats = Arc::new(IngestStats::default());
        // Two frames in flight at most: a stalled NATS connection drops frames, not memory.
        let (tx, rx) = mpsc::channel::<Out>(2);
        let publisher = tokio::spawn(publish_loop(
            FramePublisher::new(client.clone(), &subjects, camera.clone()),
            client,
            subjects.events(&camera),
            stats.clone(),
            rx,
        ));

        let seq = AtomicU64::new(0);
        let frame_tx = tx.clone();
        let frame_camera = camera.clone();
        let frame_stats = stats.clone();
        let on_frame = move |raw: RawFrame| {
            let seq = seq.fetch_add(1, Ordering::Relaxed);
            match EncodedFrame::encode(&frame_camera, seq, raw) {
                Ok(frame) => {
                    if let Err(e) = frame_tx.try_send(Out::Frame(frame)) {
                        if let mpsc::error::TrySendError::Full(Out::Frame(f)) = &e {
                            f.span.record("outcome", "dropped");
                        }
                        frame_stats.dropped.fetch_add(1, Ordering::Relaxed);
                        count_camera(meter::INGEST_DROPPED, frame_camera.as_str(), 1);
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
    frames: FramePublisher,
    client: async_nats::Client,
    events: String,
    stats: Arc<IngestStats>,
    mut rx: mpsc::Receiver<Out>,
) {
    let camera = frames.camera().clone();
    let mut too_large_reported = false;
    while let Some(out) = rx.recv().await {
        match out {
            Out::Frame(frame) => match frames.publish(frame).await {
                Ok(()) => {
                    stats.published.fetch_add(1, Ordering::Relaxed);
                    count_camera(meter::INGEST_FRAMES, camera.as_str(), 1);
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    count_camera(meter::INGEST_FAILED, camera.as_str(), 1);
                    // Every frame of a camera has the same size: say it once, not at frame rate.
                    let too_large = matches!(e, PublishFrameError::TooLarge { .. });
                    if !too_large || !too_large_reported {
                        tracing::error!(%camera, error = %e, "frame not published");
                    }
                    too_large_reported |= too_large;
                }
            },
            Out::Event(event) => {
                if let Ok(body) = serde_json::to_vec(&event)
                    && let Err(e) = client.publish(events.clone(), body.into()).await
                {
                    tracing::warn!(%camera, error = %e, "event not published");
                }
            }
        }
    }
    let _ = client.flush().await;
}
