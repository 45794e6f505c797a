//! An ingest node: one camera's GStreamer source, kept running (a live source that fails, stalls
//! or ends is restarted with exponential back-off and jitter), its frames encoded for the wire
//! and published on `<ns>.frames.<camera>`, and its `camera_up` / `camera_down` /
//! `camera_reconnecting` events on `<ns>.events.<camera>`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use backon::BackoffBuilder as _;
use panoptes_ingest::{
    Framerate, Ingest, IngestError, Output, RawFrame, SourceSpec, SourceStatus, TestPattern,
};
use panoptes_pipeline::meter::{self, count_camera};
use panoptes_pipeline::{CameraId, Event, EventKind, Subjects};
use panoptes_topology::{CameraConfig, ReconnectConfig, SourceConfig};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
    /// Restarts of the source after it failed, stalled or ended.
    pub reconnects: AtomicU64,
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

/// What a run of the source tells the supervisor, from GStreamer's threads.
enum Signal {
    Status(SourceStatus),
    FirstFrame,
}

/// One started pipeline of a camera.
struct Run {
    ingest: Ingest,
    signals: mpsc::UnboundedReceiver<Signal>,
    /// Milliseconds after `started` of the latest frame (0 until one comes).
    last_frame_ms: Arc<AtomicU64>,
    started: Instant,
}

/// Everything needed to (re)start a camera's pipeline.
struct Source {
    camera: CameraId,
    spec: SourceSpec,
    output: Output,
    /// Survives restarts, so sequence numbers keep increasing across reconnects.
    seq: AtomicU64,
    frames: mpsc::Sender<Out>,
    stats: Arc<IngestStats>,
}

impl Source {
    /// Recordings end; everything else is a camera that should come back.
    fn restarts(&self) -> bool {
        !matches!(self.spec, SourceSpec::Recorded { .. })
    }

    /// Builds and starts the pipeline (blocking: GStreamer state changes wait).
    fn start(self: &Arc<Self>) -> Result<Run, IngestError> {
        let (signal_tx, signals) = mpsc::unbounded_channel();
        let started = Instant::now();
        let last_frame_ms = Arc::new(AtomicU64::new(0));
        let on_frame = {
            let source = self.clone();
            let signal_tx = signal_tx.clone();
            let last = last_frame_ms.clone();
            let mut first = true;
            move |raw: RawFrame| {
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                last.store(ms.max(1), Ordering::Relaxed);
                if std::mem::take(&mut first) {
                    let _ = signal_tx.send(Signal::FirstFrame);
                }
                source.frame(raw);
            }
        };
        let on_status = move |status| {
            let _ = signal_tx.send(Signal::Status(status));
        };
        let ingest = Ingest::start_with(&self.spec, self.output, on_frame, on_status)?;
        Ok(Run {
            ingest,
            signals,
            last_frame_ms,
            started,
        })
    }

    fn frame(&self, raw: RawFrame) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        match EncodedFrame::encode(&self.camera, seq, raw) {
            Ok(frame) => {
                if let Err(e) = self.frames.try_send(Out::Frame(frame)) {
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
    ) -> anyhow::Result<Self> {
        panoptes_ingest::init().context("cannot initialise GStreamer")?;
        let spec = source_spec(cam, base_dir)?;
        let camera = CameraId::new(&cam.id)?;
        let output = crate::frame_out::wire_output(cam, client.server_info().max_payload);
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
        let source = Arc::new(Source {
            camera: camera.clone(),
            spec,
            output,
            seq: AtomicU64::new(0),
            frames: tx,
            stats: stats.clone(),
        });
        let first = match source.start() {
            Ok(run) => Ok(run),
            Err(e) if source.restarts() && is_transient(&e) => Err(e.to_string()),
            Err(e) => {
                publisher.abort();
                return Err(e).with_context(|| format!("camera {camera}: cannot start its source"));
            }
        };
        let state = Arc::new(Mutex::new(CameraState::Starting));
        let cancel = CancellationToken::new();
        let supervisor = tokio::spawn(
            Supervisor {
                source,
                policy: cam.reconnect.clone(),
                cancel: cancel.clone(),
                state: state.clone(),
                announced_down: false,
            }
            .run(first),
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

/// How one run of the source ended.
enum Outcome {
    Cancelled,
    /// A recording reached its end.
    Ended,
    Failed {
        cause: String,
    },
}

/// Keeps one camera's source running until cancelled.
struct Supervisor {
    source: Arc<Source>,
    policy: ReconnectConfig,
    cancel: CancellationToken,
    state: Arc<Mutex<CameraState>>,
    /// Whether `camera_down` was sent for the current outage (one per outage, not per attempt).
    announced_down: bool,
}

impl Supervisor {
    async fn run(mut self, first: Result<Run, String>) {
        let camera = self.source.camera.clone();
        let mut backoff = self.backoff();
        let mut attempt = 0u64;
        let mut next = Some(first);
        loop {
            let started = match next.take() {
                Some(first) => first,
                None => {
                    let source = self.source.clone();
                    match tokio::task::spawn_blocking(move || source.start()).await {
                        Ok(started) => started.map_err(|e| e.to_string()),
                        Err(e) => Err(format!("starting the source panicked: {e}")),
                    }
                }
            };
            let cause = match started {
                Err(e) => format!("cannot start the source: {e}"),
                Ok(mut run) => {
                    let (outcome, was_up) = self.watch(&mut run).await;
                    // Joining GStreamer's threads blocks.
                    let ingest = run.ingest;
                    let _ = tokio::task::spawn_blocking(move || ingest.stop()).await;
                    if was_up {
                        // Frames flowed: the next outage starts its back-off over.
                        backoff = self.backoff();
                        attempt = 0;
                    }
                    match outcome {
                        Outcome::Cancelled => break,
                        Outcome::Ended => {
                            self.down("end of stream").await;
                            self.set(CameraState::Ended {
                                cause: "end of stream".into(),
                            });
                            break;
                        }
                        Outcome::Failed { cause } => cause,
                    }
                }
            };
            tracing::warn!(%camera, %cause, "camera source down");
            self.down(&cause).await;
            if !self.source.restarts() {
                self.set(CameraState::Ended { cause });
                break;
            }
            attempt += 1;
            let max = Duration::from_millis(self.policy.max_ms);
            let delay = backoff.next().unwrap_or(max).min(max);
            self.set(CameraState::Reconnecting {
                attempt,
                cause: cause.clone(),
            });
            self.event(
                Event::new(
                    camera.as_str(),
                    EventKind::CameraReconnecting,
                    format!(
                        "restarting the source in {:.1} s (attempt {attempt}) after: {cause}",
                        delay.as_secs_f64()
                    ),
                )
                .count(attempt),
            )
            .await;
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
            self.source.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            count_camera(meter::INGEST_RECONNECTS, camera.as_str(), 1);
            tracing::info!(%camera, attempt, "restarting camera source");
        }
        metrics::gauge!(meter::INGEST_UP, "camera" => camera.as_str().to_owned()).set(0.0);
    }

    /// Delays between attempts: exponential from `initial_ms`, doubled each time, plus up to
    /// the same again as jitter (so cameras that failed together do not retry in step), capped
    /// at `max_ms`, unbounded in number.
    fn backoff(&self) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.policy.initial_ms))
            .with_max_delay(Duration::from_millis(self.policy.max_ms))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Follows one run until it ends; also says whether frames flowed in it.
    async fn watch(&mut self, run: &mut Run) -> (Outcome, bool) {
        let camera = self.source.camera.clone();
        let stall = Duration::from_millis(self.policy.stall_ms);
        // Only live sources can stall: a recording waits for its consumer and is never late.
        let watch_stall = run.ingest.is_live();
        let mut tick = tokio::time::interval((stall / 4).max(Duration::from_millis(25)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_up = false;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return (Outcome::Cancelled, was_up),
                signal = run.signals.recv() => match signal {
                    Some(Signal::FirstFrame) => {
                        was_up = true;
                        self.announced_down = false;
                        self.set(CameraState::Up);
                        metrics::gauge!(meter::INGEST_UP, "camera" => camera.as_str().to_owned()).set(1.0);
                        tracing::info!(%camera, "camera source up");
                        self.event(Event::new(camera.as_str(), EventKind::CameraUp, "receiving frames")).await;
                    }
                    Some(Signal::Status(SourceStatus::Eos)) if !self.source.restarts() => {
                        return (Outcome::Ended, was_up);
                    }
                    Some(Signal::Status(SourceStatus::Eos)) => {
                        return (Outcome::Failed { cause: "the stream ended".into() }, was_up);
                    }
                    Some(Signal::Status(SourceStatus::Error(e))) => {
                        return (Outcome::Failed { cause: e }, was_up);
                    }
                    Some(Signal::Status(_)) => {}
                    None => {
                        return (Outcome::Failed { cause: "the source's threads stopped".into() }, was_up);
                    }
                },
                _ = tick.tick(), if watch_stall => {
                    let last = Duration::from_millis(run.last_frame_ms.load(Ordering::Relaxed));
                    if run.started.elapsed().saturating_sub(last) > stall {
                        let what = if was_up { "no frame" } else { "no first frame" };
                        return (
                            Outcome::Failed { cause: format!("{what} for {:.1} s", stall.as_secs_f64()) },
                            was_up,
                        );
                    }
                }
            }
        }
    }

    async fn down(&mut self, cause: &str) {
        if std::mem::replace(&mut self.announced_down, true) {
            return;
        }
        metrics::gauge!(meter::INGEST_UP, "camera" => self.source.camera.as_str().to_owned())
            .set(0.0);
        let event = Event::new(self.source.camera.as_str(), EventKind::CameraDown, cause);
        self.event(event).await;
    }

    async fn event(&self, event: Event) {
        // Status must not be lost to a full frame queue: wait for room.
        let _ = self
            .source
            .frames
            .send(Out::Event(event.stage("ingest")))
            .await;
    }

    fn set(&self, state: CameraState) {
        if let Ok(mut s) = self.state.lock() {
            *s = state;
        }
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
