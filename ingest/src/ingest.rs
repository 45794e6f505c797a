//! Running a source: the started pipeline, its frame and bus threads, and one-shot stills.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::pipeline::{Built, build};
use crate::{IngestError, Output, RawFrame, SourceSpec, TestPattern};

/// How long worker threads block before re-checking the stop flag. Only bounds shutdown
/// latency in corner cases; normally a wake-up message or flushing ends the wait at once.
const POLL: gst::ClockTime = gst::ClockTime::from_mseconds(100);

/// Generous because the first textoverlay render loads fonts (Pango/fontconfig caches).
const STILL_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a looping source may take to preroll before its first seek; generous because
/// a file on slow storage or a remote demuxer may need to read a lot first.
const PREROLL_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(30);

/// Name of the application message that wakes the bus thread for shutdown.
const STOP_MESSAGE: &str = "panoptes-ingest-stop";

/// Source life-cycle events, reported from the bus thread.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceStatus {
    /// The pipeline reached PLAYING (reported on every transition into it).
    Playing,
    /// The source ended; no more frames will come.
    Eos,
    /// An element reported an error: `"<element path>: <message> (<debug info>)"`.
    Error(String),
}

/// A running source. Frames and status go to the callbacks given to [`Ingest::start`] (or
/// [`Ingest::start_with`]), each called from its own thread. Dropping it stops the pipeline
/// like [`Ingest::stop`].
pub struct Ingest {
    live: bool,
    pipeline: gst::Pipeline,
    stop: Arc<AtomicBool>,
    frame_thread: Option<JoinHandle<()>>,
    bus_thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("pipeline", &self.pipeline.name())
            .field("live", &self.live)
            .field("stopped", &self.stop.load(Ordering::Relaxed))
            .finish()
    }
}

impl Ingest {
    /// Builds the pipeline for `spec`, sets it PLAYING and starts delivering packed RGB frames:
    /// [`Ingest::start_with`] with [`Output::Rgb`].
    pub fn start<F, S>(spec: &SourceSpec, on_frame: F, on_status: S) -> Result<Self, IngestError>
    where
        F: FnMut(RawFrame) + Send + 'static,
        S: FnMut(SourceStatus) + Send + 'static,
    {
        Self::start_with(spec, Output::Rgb, on_frame, on_status)
    }

    /// Builds the pipeline for `spec` ending in `output` (RGB, or JPEG encoded in the
    /// pipeline), sets it PLAYING and starts delivering frames.
    ///
    /// Errors that GStreamer reports while starting (bad description, missing element,
    /// a source that cannot open) are returned here; later ones go to `on_status`.
    /// `on_frame` runs on a dedicated thread and the appsink queues at most two frames for it,
    /// so a slow consumer never grows memory. Live sources (cameras, live test patterns) cannot
    /// wait, so the oldest queued frame is dropped and the consumer always gets recent ones;
    /// non-live sources (files, non-live patterns) are throttled instead and lose nothing.
    pub fn start_with<F, S>(
        spec: &SourceSpec,
        output: Output,
        on_frame: F,
        on_status: S,
    ) -> Result<Self, IngestError>
    where
        F: FnMut(RawFrame) + Send + 'static,
        S: FnMut(SourceStatus) + Send + 'static,
    {
        let Built { pipeline, appsink } = build(spec, output, None)?;
        let bus = bus_of(&pipeline)?;
        let looping = matches!(spec, SourceSpec::Recorded { looping: true, .. });
        let live = set_playing(&pipeline, &bus, looping, |live| appsink.set_drop(live))?;

        // From here on Drop cleans up, also if a thread fails to spawn.
        let mut ingest = Self {
            live,
            pipeline: pipeline.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            frame_thread: None,
            bus_thread: None,
        };
        let stop = ingest.stop.clone();
        let watched = pipeline.clone();
        ingest.bus_thread = Some(
            std::thread::Builder::new()
                .name("ingest-bus".into())
                .spawn(move || watch_bus(&watched, &bus, &stop, looping && !live, on_status))
                .map_err(IngestError::Thread)?,
        );
        let stop = ingest.stop.clone();
        ingest.frame_thread = Some(
            std::thread::Builder::new()
                .name("ingest-frames".into())
                .spawn(move || pull_frames(&pipeline, &appsink, &stop, on_frame))
                .map_err(IngestError::Thread)?,
        );
        Ok(ingest)
    }

    /// Whether the source is live (GStreamer's notion: it produces in real time and did not
    /// preroll). Live sources drop frames for slow consumers; others are throttled.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Stops the pipeline (state NULL) and joins both threads. Equivalent to dropping.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake the bus thread before going to NULL: a NULL pipeline flushes its bus, which
        // would discard the wake-up and leave the thread waiting out its poll interval.
        if let Some(bus) = self.pipeline.bus() {
            let msg = gst::message::Application::new(gst::Structure::new_empty(STOP_MESSAGE));
            let _ = bus.post(msg);
        }
        join(self.bus_thread.take());
        if let Err(e) = self.pipeline.set_state(gst::State::Null) {
            tracing::warn!(error = %e, "ingest pipeline refused to go to NULL");
        }
        join(self.frame_thread.take());
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn join(handle: Option<JoinHandle<()>>) {
    let Some(handle) = handle else { return };
    // Stopping from inside a callback must not wait for the very thread running it.
    if handle.thread().id() == std::thread::current().id() {
        return;
    }
    if handle.join().is_err() {
        tracing::error!("an ingest callback panicked");
    }
}

/// Renders exactly one frame of `pattern` (forced non-live, packed RGB) and returns it.
///
/// Used to learn where `textoverlay` draws a given text, see [`ink_bbox`](crate::ink_bbox).
pub fn render_still(pattern: &TestPattern) -> Result<RawFrame, IngestError> {
    let still = TestPattern {
        live: false,
        ..pattern.clone()
    };
    let Built { pipeline, appsink } = build(&SourceSpec::TestPattern(still), Output::Rgb, Some(1))?;
    let bus = bus_of(&pipeline)?;
    // Null on every exit path; a PLAYING pipeline left behind would leak its threads.
    struct NullOnDrop(gst::Pipeline);
    impl Drop for NullOnDrop {
        fn drop(&mut self) {
            let _ = self.0.set_state(gst::State::Null);
        }
    }
    let _guard = NullOnDrop(pipeline.clone());
    set_playing(&pipeline, &bus, false, |_| {})?;

    let timeout =
        gst::ClockTime::try_from(STILL_TIMEOUT).unwrap_or(gst::ClockTime::from_seconds(20));
    match appsink.try_pull_sample(timeout) {
        Some(sample) => RawFrame::from_sample(&sample, capture_ts_ns(&pipeline, &sample)),
        None => match pop_error(&bus) {
            Some(err) => Err(IngestError::Pipeline(err)),
            None if appsink.is_eos() => Err(IngestError::NoFrame),
            None => Err(IngestError::Timeout(STILL_TIMEOUT)),
        },
    }
}

fn bus_of(pipeline: &gst::Pipeline) -> Result<gst::Bus, IngestError> {
    pipeline.bus().ok_or_else(|| IngestError::Start {
        reason: "pipeline has no bus".into(),
    })
}

/// Sets PLAYING via PAUSED and returns whether the pipeline is live; `on_live` runs in
/// between, before data flows into the appsink for real. Going through PAUSED is the
/// reliable way to learn liveness: only live pipelines answer NO_PREROLL there.
///
/// With `looping`, a non-live pipeline is prerolled and given a flushing segment seek to its
/// start before playing, so it posts SEGMENT_DONE instead of EOS at the end (see `watch_bus`).
///
/// On failure returns the error the failing element posted, which says far more than the
/// bare state-change failure.
fn set_playing(
    pipeline: &gst::Pipeline,
    bus: &gst::Bus,
    looping: bool,
    on_live: impl FnOnce(bool),
) -> Result<bool, IngestError> {
    let fail = |state: &str| {
        let reason = pop_error(bus).unwrap_or_else(|| format!("state change to {state} failed"));
        let _ = pipeline.set_state(gst::State::Null);
        IngestError::Start { reason }
    };
    let live = match pipeline.set_state(gst::State::Paused) {
        Ok(gst::StateChangeSuccess::NoPreroll) => true,
        Ok(_) => false,
        Err(_) => return Err(fail("PAUSED")),
    };
    if looping && !live {
        // A seek needs a prerolled pipeline (demuxers know the duration only then).
        match pipeline.state(PREROLL_TIMEOUT) {
            (Ok(gst::StateChangeSuccess::Success), _, _) => {}
            (Ok(_), _, _) => {
                let _ = pipeline.set_state(gst::State::Null);
                return Err(IngestError::Start {
                    reason: format!("source did not preroll within {PREROLL_TIMEOUT}"),
                });
            }
            (Err(_), _, _) => return Err(fail("PAUSED")),
        }
        if pipeline
            .seek(
                1.0,
                gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT,
                gst::SeekType::Set,
                gst::ClockTime::ZERO,
                gst::SeekType::None,
                gst::ClockTime::NONE,
            )
            .is_err()
        {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(IngestError::Start {
                reason: "source cannot loop: it refused to seek to its start".into(),
            });
        }
    }
    on_live(live);
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| fail("PLAYING"))?;
    Ok(live)
}

fn pop_error(bus: &gst::Bus) -> Option<String> {
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(describe_error(&msg, &e.error(), e.debug().as_deref())),
        _ => None,
    }
}

fn describe_error(msg: &gst::Message, err: &gst::glib::Error, debug: Option<&str>) -> String {
    let src = msg
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_else(|| "<unknown element>".into());
    match debug {
        Some(d) if !d.is_empty() => format!("{src}: {err} ({d})"),
        _ => format!("{src}: {err}"),
    }
}

/// With `looping`, the end of each pass (SEGMENT_DONE) starts the next with a non-flushing
/// segment seek: frames already queued are kept and running time goes on without a jump.
fn watch_bus<S>(
    pipeline: &gst::Pipeline,
    bus: &gst::Bus,
    stop: &AtomicBool,
    looping: bool,
    mut on_status: S,
) where
    S: FnMut(SourceStatus),
{
    while !stop.load(Ordering::Acquire) {
        let Some(msg) = bus.timed_pop(POLL) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Application(a)
                if a.structure().is_some_and(|s| s.name() == STOP_MESSAGE) =>
            {
                break;
            }
            gst::MessageView::Error(e) => {
                let text = describe_error(&msg, &e.error(), e.debug().as_deref());
                tracing::warn!(error = %text, "ingest pipeline error");
                on_status(SourceStatus::Error(text));
            }
            gst::MessageView::Eos(_) => on_status(SourceStatus::Eos),
            gst::MessageView::SegmentDone(_) if looping => {
                let restarted = pipeline.seek(
                    1.0,
                    gst::SeekFlags::SEGMENT,
                    gst::SeekType::Set,
                    gst::ClockTime::ZERO,
                    gst::SeekType::None,
                    gst::ClockTime::NONE,
                );
                if restarted.is_err() {
                    // Without the seek nothing more flows; say why rather than go quiet.
                    on_status(SourceStatus::Error(
                        "looping source refused to seek back to its start".into(),
                    ));
                }
            }
            gst::MessageView::StateChanged(s)
                if s.current() == gst::State::Playing
                    && msg.src() == Some(pipeline.upcast_ref::<gst::Object>()) =>
            {
                on_status(SourceStatus::Playing);
            }
            gst::MessageView::Warning(w) => {
                tracing::warn!(warning = %w.error(), debug = ?w.debug(), "ingest pipeline warning");
            }
            _ => {}
        }
    }
}

fn pull_frames<F>(
    pipeline: &gst::Pipeline,
    appsink: &gst_app::AppSink,
    stop: &AtomicBool,
    mut on_frame: F,
) where
    F: FnMut(RawFrame),
{
    while !stop.load(Ordering::Acquire) {
        let Some(sample) = appsink.try_pull_sample(POLL) else {
            // Also true once the sink leaves PAUSED/PLAYING, so this cannot spin after NULL.
            if appsink.is_eos() {
                break;
            }
            continue;
        };
        let capture = capture_ts_ns(pipeline, &sample);
        match RawFrame::from_sample(&sample, capture) {
            Ok(frame) => on_frame(frame),
            Err(e) => tracing::warn!(error = %e, "dropping unreadable frame"),
        }
    }
}

/// Wall-clock UNIX time at which the pipeline clock showed the buffer's running time; see
/// [`RawFrame::capture_ts_ns`].
fn capture_ts_ns(pipeline: &gst::Pipeline, sample: &gst::Sample) -> u64 {
    let clock = pipeline.clock();
    // Read both clocks back to back so the age below is not skewed by work in between.
    let clock_now = clock.as_ref().map(|c| c.time());
    let wall_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let age = (|| {
        let base = pipeline.base_time()?;
        let pts = sample.buffer()?.pts()?;
        let running = sample
            .segment()?
            .downcast_ref::<gst::format::Time>()?
            .to_running_time(pts)?;
        clock_now?
            .nseconds()
            .checked_sub(base.nseconds().checked_add(running.nseconds())?)
    })()
    .unwrap_or(0);
    wall_now.saturating_sub(age)
}
