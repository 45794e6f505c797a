//! An ingest node: one camera's GStreamer source, kept running (a live source that fails, stalls
//! or ends is restarted with exponential back-off and jitter), its frames encoded for the wire
//! and published on `<ns>.frames.<camera>`, and its `camera_up` / `camera_down` /
//! `camera_reconnecting` events on `<ns>.events.<camera>`; while someone watches, small JPEG
//! previews of its frames on `<ns>.preview.<camera>` ([`crate::preview`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use panoptes_contracts::meter::{self, count_camera};
use panoptes_contracts::{CameraId, Event, Subjects};
use panoptes_topology::{CameraConfig, SourceConfig};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::frame_out::{EncodedFrame, FramePublisher, PublishFrameError};
use crate::preview::{self, Tap};
use crate::supervisor::{FrameClock, Restart, Run, Signal, Supervisor};
use crate::{
    Framerate, Ingest, IngestError, Motion, Output, Overlay, RawFrame, SourceSpec, TestPattern,
};

/// Counters of one ingest node.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Frames handed to the NATS connection.
    pub published: AtomicU64,
    /// Frames dropped because publishing could not keep up.
    pub dropped: AtomicU64,
    /// Frames NATS refused (e.g. larger than the server's max_payload).
    pub failed: AtomicU64,
    /// Restarts of the source after it failed, stalled or ended.
    pub reconnects: AtomicU64,
    /// Previews published while someone watched.
    pub previews: AtomicU64,
}

/// Where a camera's source stands, as `panoptes camera list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CameraState {
    /// Started, no frame yet.
    Starting,
    /// Frames flow.
    Up,
    /// Waiting to restart the source: attempt `attempt` follows after the back-off delay.
    Reconnecting { attempt: u64, cause: String },
    /// Done for good: a recording ended, or a source that is not restarted failed.
    Ended { cause: String },
}

pub struct IngestNode {
    camera: CameraId,
    config: CameraConfig,
    cancel: CancellationToken,
    supervisor: tokio::task::JoinHandle<()>,
    publisher: tokio::task::JoinHandle<()>,
    stats: Arc<IngestStats>,
    state: Arc<Mutex<CameraState>>,
}

/// What the publisher sends: frames, and the supervisor's events in the same queue.
enum Out {
    Frame(EncodedFrame),
    Event(Event),
}

impl From<Event> for Out {
    fn from(event: Event) -> Self {
        Self::Event(event)
    }
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
                motion: p.motion.map(motion),
                overlays: p
                    .overlays
                    .iter()
                    .map(|o| Overlay {
                        text: o.text.clone(),
                        xpos: o.xpos,
                        ypos: o.ypos,
                        motion: o.motion.map(motion),
                    })
                    .collect(),
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

fn motion(m: panoptes_topology::TextMotion) -> Motion {
    Motion { dx: m.dx, dy: m.dy }
}

fn parse_colour(s: &str) -> Option<u32> {
    let hex = s.strip_prefix('#')?;
    (hex.len() == 6)
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
        .map(|rgb| 0xff00_0000 | rgb)
}

/// Everything needed to (re)start a camera's pipeline.
struct Source {
    spec: SourceSpec,
    output: Output,
    frames: Arc<Frames>,
}

/// Where a camera's frames go, shared by all its runs.
struct Frames {
    camera: CameraId,
    /// Survives restarts, so sequence numbers keep increasing across reconnects.
    seq: AtomicU64,
    tx: mpsc::Sender<Out>,
    stats: Arc<IngestStats>,
    /// Offered every frame; takes one now and then while someone watches the camera.
    preview: Option<Arc<Tap>>,
}

impl Source {
    /// Builds and starts the pipeline (blocking: GStreamer state changes wait).
    fn start_pipeline(&self) -> Result<Run, IngestError> {
        let (signal_tx, signals) = mpsc::unbounded_channel();
        let clock = FrameClock::new();
        let on_frame = {
            let frames = self.frames.clone();
            let signal_tx = signal_tx.clone();
            let clock = clock.clone();
            let mut first = true;
            move |raw: RawFrame| {
                clock.frame();
                if std::mem::take(&mut first) {
                    let _ = signal_tx.send(Signal::FirstFrame);
                }
                frames.frame(raw);
            }
        };
        let on_status = move |status| {
            let _ = signal_tx.send(Signal::Status(status));
        };
        let ingest = Ingest::start_with(&self.spec, self.output, on_frame, on_status)?;
        let live = ingest.is_live();
        Ok(Run::new(signals, clock, live, move || ingest.stop()))
    }
}

impl Restart for Source {
    fn start(&self) -> Result<Run, String> {
        self.start_pipeline().map_err(|e| e.to_string())
    }

    /// Recordings end; everything else is a camera that should come back.
    fn restarts(&self) -> bool {
        !matches!(self.spec, SourceSpec::Recorded { .. })
    }
}

impl Frames {
    fn frame(&self, raw: RawFrame) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        match EncodedFrame::encode(&self.camera, seq, raw) {
            Ok(frame) => {
                if let Some(tap) = &self.preview {
                    tap.offer(&frame.payload, &frame.span);
                }
                if let Err(e) = self.tx.try_send(Out::Frame(frame)) {
                    if let mpsc::error::TrySendError::Full(Out::Frame(f)) = &e {
                        f.span.record("outcome", "dropped");
                    }
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    count_camera(meter::INGEST_DROPPED, self.camera.as_str(), 1);
                }
            }
            Err(e) => tracing::error!(camera = %self.camera, error = %e, "cannot encode frame"),
        }
    }
}

impl IngestNode {
    /// Starts `cam`'s source. A source that cannot be built (a description that does not
    /// parse, a missing GStreamer element) or a recording that cannot start is an error here;
    /// a live camera that cannot be reached yet is not: it is reported down and retried.
    pub fn start(
        cam: &CameraConfig,
        base_dir: &Path,
        client: async_nats::Client,
        subjects: Subjects,
        budget: Arc<preview::Budget>,
    ) -> anyhow::Result<Self> {
        crate::init().context("cannot initialise GStreamer")?;
        let spec = source_spec(cam, base_dir)?;
        let camera = CameraId::new(&cam.id)?;
        let output = crate::frame_out::wire_output(cam, client.server_info().max_payload);
        let stats = Arc::new(IngestStats::default());
        // Two frames in flight at most: a stalled NATS connection drops frames, not memory.
        let (tx, rx) = mpsc::channel::<Out>(2);
        let cancel = CancellationToken::new();
        let preview = cam.preview.enabled().then(|| {
            preview::start(
                client.clone(),
                subjects.preview_for(camera.as_str()),
                camera.clone(),
                cam.preview,
                stats.clone(),
                budget,
                cancel.clone(),
            )
        });
        let publisher = tokio::spawn(publish_loop(
            FramePublisher::new(client.clone(), &subjects, camera.clone()),
            client,
            subjects.events(&camera),
            stats.clone(),
            rx,
        ));
        let source = Arc::new(Source {
            spec,
            output,
            frames: Arc::new(Frames {
                camera: camera.clone(),
                seq: AtomicU64::new(0),
                tx: tx.clone(),
                stats: stats.clone(),
                preview,
            }),
        });
        let first = match source.start_pipeline() {
            Ok(run) => Ok(run),
            Err(e) if source.restarts() && is_transient(&e) => Err(e.to_string()),
            Err(e) => {
                cancel.cancel();
                publisher.abort();
                return Err(e).with_context(|| format!("camera {camera}: cannot start its source"));
            }
        };
        let state = Arc::new(Mutex::new(CameraState::Starting));
        let supervisor = tokio::spawn(
            Supervisor::new(
                source,
                camera.clone(),
                cam.reconnect.clone(),
                cancel.clone(),
                state.clone(),
                stats.clone(),
                tx,
            )
            .run(Some(first)),
        );
        tracing::info!(%camera, ?output, "ingest started");
        Ok(Self {
            camera,
            config: cam.clone(),
            cancel,
            supervisor,
            publisher,
            stats,
            state,
        })
    }

    pub fn camera(&self) -> &CameraId {
        &self.camera
    }

    /// The configuration the node was started with (reload compares it with the file's).
    pub fn config(&self) -> &CameraConfig {
        &self.config
    }

    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    pub fn state(&self) -> CameraState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(CameraState::Starting)
    }

    /// Stops the source and waits for queued frames and events to be published.
    pub async fn stop(self) {
        self.cancel.cancel();
        if let Err(e) = self.supervisor.await {
            tracing::error!(camera = %self.camera, error = %e, "the camera's supervisor failed");
        }
        let _ = self.publisher.await;
    }
}

/// Failures a later attempt may not repeat (the camera is off, the network is down), as
/// opposed to a pipeline that cannot be built at all.
fn is_transient(e: &IngestError) -> bool {
    matches!(
        e,
        IngestError::Start { .. } | IngestError::Pipeline(_) | IngestError::Timeout(_)
    )
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
