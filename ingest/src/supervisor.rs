//! The supervisor that keeps one camera's source running: a run that fails, stalls or (for a
//! live source) ends is stopped and restarted after an exponential, jittered back-off, with
//! `camera_up` / `camera_down` / `camera_reconnecting` events and the camera's [`CameraState`].
//! It is generic over what it restarts ([`Restart`]) and times everything on tokio's clock, so
//! tests drive it with a scripted source under a paused clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder as _;
use panoptes_contracts::meter::{self, count_camera};
use panoptes_contracts::{CameraId, Event, EventKind};
use panoptes_topology::ReconnectConfig;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::SourceStatus;
use crate::node::{CameraState, IngestStats};

/// What the supervisor keeps running: a camera's GStreamer pipeline, or a fake in tests.
pub(crate) trait Restart: Send + Sync + 'static {
    /// Starts one run. May block (GStreamer state changes wait), so the supervisor calls it on
    /// tokio's blocking pool.
    fn start(&self) -> Result<Run, String>;

    /// Whether a run that fails or ends is followed by another (a live camera), or the source
    /// is then done for good (a recording).
    fn restarts(&self) -> bool;
}

/// What a run tells the supervisor, from whatever threads it runs on.
pub(crate) enum Signal {
    Status(SourceStatus),
    FirstFrame,
}

/// When a run started and when its latest frame came: marked by the thread that receives
/// frames, read by the supervisor's stall check. Off the runtime's threads (GStreamer's),
/// tokio's clock is the system's, so a run on a paused clock must mark its frames from the
/// runtime, as the tests' fake does.
pub(crate) struct FrameClock {
    started: Instant,
    /// Milliseconds after `started` of the latest frame; 0 until one comes.
    last_ms: AtomicU64,
}

impl FrameClock {
    /// A clock for a run that starts now.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Records a frame arriving now.
    pub(crate) fn frame(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // 1 at least, so a frame in the first millisecond does not read as "none yet".
        self.last_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// How long since the latest frame, or since the start if none came.
    fn since_last_frame(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// One started run of a source.
pub(crate) struct Run {
    signals: mpsc::UnboundedReceiver<Signal>,
    clock: Arc<FrameClock>,
    /// Only live sources can stall: a recording waits for its consumer and is never late.
    live: bool,
    /// Stops the run; may block (joining GStreamer's threads), so it runs on the blocking pool.
    stop: Box<dyn FnOnce() + Send>,
}

impl Run {
    pub(crate) fn new(
        signals: mpsc::UnboundedReceiver<Signal>,
        clock: Arc<FrameClock>,
        live: bool,
        stop: impl FnOnce() + Send + 'static,
    ) -> Self {
        Self {
            signals,
            clock,
            live,
            stop: Box::new(stop),
        }
    }
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

/// Keeps one camera's source running until cancelled. Events leave through `events` (`E` is
/// the node's outgoing queue item, or plain [`Event`] in tests), waiting for room so that
/// status is never lost to a full queue.
pub(crate) struct Supervisor<R, E> {
    source: Arc<R>,
    camera: CameraId,
    policy: ReconnectConfig,
    cancel: CancellationToken,
    state: Arc<Mutex<CameraState>>,
    stats: Arc<IngestStats>,
    events: mpsc::Sender<E>,
    /// Whether `camera_down` was sent for the current outage (one per outage, not per attempt).
    announced_down: bool,
}

impl<R: Restart, E: From<Event> + Send + 'static> Supervisor<R, E> {
    pub(crate) fn new(
        source: Arc<R>,
        camera: CameraId,
        policy: ReconnectConfig,
        cancel: CancellationToken,
        state: Arc<Mutex<CameraState>>,
        stats: Arc<IngestStats>,
        events: mpsc::Sender<E>,
    ) -> Self {
        Self {
            source,
            camera,
            policy,
            cancel,
            state,
            stats,
            events,
            announced_down: false,
        }
    }

    /// Runs until cancelled, or until a source that is not restarted ends or fails. `first` is
    /// the outcome of a start the caller already made; without it the supervisor starts the
    /// source itself.
    pub(crate) async fn run(mut self, first: Option<Result<Run, String>>) {
        let camera = self.camera.clone();
        let mut backoff = self.backoff();
        let mut attempt = 0u64;
        let mut next = first;
        loop {
            let started = match next.take() {
                Some(first) => first,
                None => {
                    let source = self.source.clone();
                    match tokio::task::spawn_blocking(move || source.start()).await {
                        Ok(started) => started,
                        Err(e) => Err(format!("starting the source panicked: {e}")),
                    }
                }
            };
            let cause = match started {
                Err(e) => format!("cannot start the source: {e}"),
                Ok(mut run) => {
                    let (outcome, was_up) = self.watch(&mut run).await;
                    let _ = tokio::task::spawn_blocking(run.stop).await;
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
            // backon caps the delay before adding jitter; the cap holds for the sum.
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
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            count_camera(meter::INGEST_RECONNECTS, camera.as_str(), 1);
            tracing::info!(%camera, attempt, "restarting camera source");
        }
        metrics::gauge!(meter::INGEST_UP, "camera" => camera.as_str().to_owned()).set(0.0);
        if self.cancel.is_cancelled() {
            let stopped = Event::new(camera.as_str(), EventKind::CameraStopped, "stopped");
            self.event(stopped).await;
        }
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
        let camera = self.camera.clone();
        let stall = Duration::from_millis(self.policy.stall_ms);
        let watch_stall = run.live;
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
                    if run.clock.since_last_frame() > stall {
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
        metrics::gauge!(meter::INGEST_UP, "camera" => self.camera.as_str().to_owned()).set(0.0);
        let event = Event::new(self.camera.as_str(), EventKind::CameraDown, cause);
        self.event(event).await;
    }

    async fn event(&self, event: Event) {
        let _ = self.events.send(E::from(event.stage("ingest"))).await;
    }

    fn set(&self, state: CameraState) {
        if let Ok(mut s) = self.state.lock() {
            *s = state;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The supervisor against a scripted source, on tokio's paused clock: time moves only when
    //! every task waits (auto-advance to the next timer) or a test sleeps, so delays measured
    //! here are the supervisor's own, to the millisecond.

    use std::collections::VecDeque;

    use tokio::task::JoinHandle;

    use super::*;

    /// Long enough for anything the supervisor waits for; on the paused clock it costs nothing,
    /// and a supervisor that hangs fails the test instead of hanging it.
    const PATIENCE: Duration = Duration::from_secs(24 * 3600);

    /// Timers fire on whole milliseconds, and backon computes delays in `f32`.
    const SLACK: Duration = Duration::from_millis(1);

    const REFUSED: &str = "connection refused";

    /// What the fake does when started, in order; once the script is used up, starts fail.
    enum Step {
        Fail,
        Run,
    }

    /// A source whose starts follow a script and return at once; each run it starts is handed
    /// to the test to drive.
    struct Fake {
        restarts: bool,
        live: bool,
        script: Mutex<VecDeque<Step>>,
        starts: Mutex<Vec<Instant>>,
        runs: mpsc::UnboundedSender<Handle>,
    }

    /// The test's end of a fake run.
    struct Handle {
        signals: mpsc::UnboundedSender<Signal>,
        clock: Arc<FrameClock>,
        first: bool,
        stopped: Arc<Mutex<Option<Instant>>>,
    }

    impl Restart for Fake {
        fn start(&self) -> Result<Run, String> {
            self.starts.lock().expect("starts").push(Instant::now());
            let step = self.script.lock().expect("script").pop_front();
            let Some(Step::Run) = step else {
                return Err(REFUSED.into());
            };
            let (tx, signals) = mpsc::unbounded_channel();
            let clock = FrameClock::new();
            let stopped = Arc::new(Mutex::new(None));
            let handle = Handle {
                signals: tx,
                clock: clock.clone(),
                first: true,
                stopped: stopped.clone(),
            };
            self.runs.send(handle).map_err(|_| "the test is gone")?;
            let stop = move || *stopped.lock().expect("stopped") = Some(Instant::now());
            Ok(Run::new(signals, clock, self.live, stop))
        }

        fn restarts(&self) -> bool {
            self.restarts
        }
    }

    impl Handle {
        fn frame(&mut self) {
            self.clock.frame();
            if std::mem::take(&mut self.first) {
                self.signals.send(Signal::FirstFrame).expect("supervisor");
            }
        }

        fn status(&self, status: SourceStatus) {
            self.signals
                .send(Signal::Status(status))
                .expect("supervisor");
        }

        fn stopped(&self) -> Option<Instant> {
            *self.stopped.lock().expect("stopped")
        }
    }

    /// A running supervisor and everything a test observes of it.
    struct Harness {
        fake: Arc<Fake>,
        runs: mpsc::UnboundedReceiver<Handle>,
        events: mpsc::Receiver<Event>,
        state: Arc<Mutex<CameraState>>,
        stats: Arc<IngestStats>,
        cancel: CancellationToken,
        task: JoinHandle<()>,
    }

    fn policy(initial_ms: u64, max_ms: u64, stall_ms: u64) -> ReconnectConfig {
        ReconnectConfig {
            initial_ms,
            max_ms,
            stall_ms,
        }
    }

    fn start(policy: ReconnectConfig, restarts: bool, live: bool, script: Vec<Step>) -> Harness {
        let (runs_tx, runs) = mpsc::unbounded_channel();
        let fake = Arc::new(Fake {
            restarts,
            live,
            script: Mutex::new(script.into()),
            starts: Mutex::new(Vec::new()),
            runs: runs_tx,
        });
        let (events_tx, events) = mpsc::channel(256);
        let state = Arc::new(Mutex::new(CameraState::Starting));
        let stats = Arc::new(IngestStats::default());
        let cancel = CancellationToken::new();
        let supervisor = Supervisor::new(
            fake.clone(),
            CameraId::new("cam").expect("camera id"),
            policy,
            cancel.clone(),
            state.clone(),
            stats.clone(),
            events_tx,
        );
        let task = tokio::spawn(supervisor.run(None));
        Harness {
            fake,
            runs,
            events,
            state,
            stats,
            cancel,
            task,
        }
    }

    impl Harness {
        async fn event(&mut self) -> Event {
            tokio::time::timeout(PATIENCE, self.events.recv())
                .await
                .expect("an event in time")
                .expect("the supervisor is running")
        }

        /// The next event, which must be of `kind` with a message that contains `message`.
        async fn expect(&mut self, kind: EventKind, message: &str) -> Event {
            let event = self.event().await;
            assert_eq!(event.kind, kind, "{event:?}");
            assert!(
                event.message.contains(message),
                "{event:?}: not {message:?}"
            );
            assert_eq!(event.stage.as_deref(), Some("ingest"));
            event
        }

        async fn reconnecting(&mut self, attempt: u64, cause: &str) -> Event {
            let event = self
                .expect(
                    EventKind::CameraReconnecting,
                    &format!("(attempt {attempt}) after: {cause}"),
                )
                .await;
            assert_eq!(event.count, Some(attempt));
            event
        }

        async fn run(&mut self) -> Handle {
            tokio::time::timeout(PATIENCE, self.runs.recv())
                .await
                .expect("a run in time")
                .expect("the fake is alive")
        }

        fn state(&self) -> CameraState {
            self.state.lock().expect("state").clone()
        }

        fn starts(&self) -> Vec<Instant> {
            self.fake.starts.lock().expect("starts").clone()
        }

        fn reconnects(&self) -> u64 {
            self.stats.reconnects.load(Ordering::Relaxed)
        }

        /// The last event: `camera_stopped`, and none after it.
        async fn stopped_last(&mut self) {
            let stopped = self
                .events
                .recv()
                .await
                .expect("an event saying the camera stopped");
            assert_eq!(stopped.kind, EventKind::CameraStopped);
            assert!(
                self.events.recv().await.is_none(),
                "an event after the camera stopped"
            );
        }

        /// Cancels and waits for the supervisor to finish, which must take no time.
        async fn stop(&mut self) {
            let asked = Instant::now();
            self.cancel.cancel();
            tokio::time::timeout(PATIENCE, &mut self.task)
                .await
                .expect("the supervisor ends")
                .expect("the supervisor does not panic");
            assert_eq!(asked.elapsed(), Duration::ZERO, "cancellation waited");
        }
    }

    /// The delay the supervisor announced in a `camera_reconnecting` message.
    fn announced(event: &Event) -> Duration {
        let secs = event
            .message
            .strip_prefix("restarting the source in ")
            .and_then(|rest| rest.split_once(" s "))
            .and_then(|(secs, _)| secs.parse::<f64>().ok())
            .expect("a delay in the message");
        Duration::from_secs_f64(secs)
    }

    /// Checks that `delay`, the wait before attempt `attempt`, is within the back-off's bounds:
    /// `initial * 2^(attempt-1)` plus up to as much again as jitter, never over `max`.
    fn assert_backoff(policy: &ReconnectConfig, attempt: u32, delay: Duration) {
        let max = Duration::from_millis(policy.max_ms);
        let low = (Duration::from_millis(policy.initial_ms) * 2u32.pow(attempt - 1)).min(max);
        let high = (low * 2).min(max);
        assert!(
            delay + SLACK >= low && delay <= high + SLACK,
            "attempt {attempt}: waited {delay:?}, not within [{low:?}, {high:?}]"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failing_starts_back_off_exponentially_with_jitter_up_to_the_cap() {
        let policy = policy(1_000, 10_000, 5_000);
        let mut h = start(policy.clone(), true, true, Vec::new());
        let cause = format!("cannot start the source: {REFUSED}");
        h.expect(EventKind::CameraDown, &cause).await;
        let mut announced_delays = Vec::new();
        for attempt in 1..=9 {
            let event = h.reconnecting(attempt, &cause).await;
            announced_delays.push(announced(&event));
            assert_eq!(
                h.state(),
                CameraState::Reconnecting {
                    attempt,
                    cause: cause.clone()
                }
            );
        }
        let starts = h.starts();
        assert_eq!(starts.len(), 9, "one start per attempt, plus the first");
        assert_eq!(h.reconnects(), 8);
        let mut jittered = false;
        for (attempt, pair) in (1u32..).zip(starts.windows(2)) {
            let delay = pair[1] - pair[0];
            assert_backoff(&policy, attempt, delay);
            let said = announced_delays[attempt as usize - 1];
            assert!(
                delay.abs_diff(said) <= Duration::from_millis(50) + SLACK,
                "attempt {attempt}: waited {delay:?}, announced {said:?}"
            );
            let base = Duration::from_millis(policy.initial_ms) * 2u32.pow(attempt - 1);
            jittered |= base < Duration::from_millis(policy.max_ms) && delay > base + SLACK;
        }
        // Jitter is random in [0, base); all of it under a millisecond is practically impossible.
        assert!(jittered, "no jitter in the delays between {starts:?}");
        assert!(
            h.events.try_recv().is_err(),
            "an event besides the reconnections"
        );
        h.stop().await;
        assert_eq!(h.starts().len(), 9, "restarted after cancellation");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_restarts_the_run_and_frames_reset_the_backoff() {
        let policy = policy(1_000, 30_000, 2_000);
        let stall = Duration::from_millis(policy.stall_ms);
        let tick = stall / 4;
        let script = vec![Step::Fail, Step::Fail, Step::Run, Step::Run];
        let mut h = start(policy.clone(), true, true, script);
        let refused = format!("cannot start the source: {REFUSED}");
        h.expect(EventKind::CameraDown, &refused).await;
        h.reconnecting(1, &refused).await;
        h.reconnecting(2, &refused).await;

        // Third start: frames for a second, then none.
        let mut run = h.run().await;
        for _ in 0..10 {
            run.frame();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        run.frame();
        let last_frame = Instant::now();
        h.expect(EventKind::CameraUp, "receiving frames").await;
        assert_eq!(h.state(), CameraState::Up);
        let cause = "no frame for 2.0 s";
        h.expect(EventKind::CameraDown, cause).await;
        // Frames flowed, so this outage's back-off starts over at attempt 1.
        let event = h.reconnecting(1, cause).await;
        assert!(announced(&event) <= Duration::from_millis(2 * policy.initial_ms));
        let stopped = run.stopped().expect("the stalled run is stopped");
        let silence = stopped - last_frame;
        assert!(
            silence > stall && silence <= stall + tick + SLACK,
            "stopped after {silence:?} without frames"
        );

        // Fourth start: not a single frame.
        let run = h.run().await;
        let starts = h.starts();
        assert_eq!(starts.len(), 4);
        assert_backoff(&policy, 1, starts[3] - stopped);
        // Still the same outage: no second camera_down.
        let cause = "no first frame for 2.0 s";
        h.reconnecting(2, cause).await;
        let stopped = run.stopped().expect("the silent run is stopped");
        let silence = stopped - starts[3];
        assert!(
            silence > stall && silence <= stall + tick + SLACK,
            "stopped after {silence:?} without a first frame"
        );

        // No frames flowed, so the back-off goes on growing.
        h.reconnecting(3, &refused).await;
        let starts = h.starts();
        assert_eq!(starts.len(), 5);
        assert_backoff(&policy, 2, starts[4] - stopped);
        assert_eq!(h.reconnects(), 4);
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_recording_that_reaches_its_end_ends() {
        let policy = policy(1_000, 30_000, 2_000);
        let mut h = start(policy, false, false, vec![Step::Run]);
        let mut run = h.run().await;
        run.status(SourceStatus::Playing);
        run.frame();
        h.expect(EventKind::CameraUp, "receiving frames").await;
        // A recording is never late: a long pause between frames is no stall.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(h.events.try_recv().is_err(), "an event while paused");
        assert_eq!(h.state(), CameraState::Up);
        run.status(SourceStatus::Eos);
        tokio::time::timeout(PATIENCE, &mut h.task)
            .await
            .expect("the supervisor ends by itself")
            .expect("the supervisor does not panic");
        assert!(run.stopped().is_some(), "the run is stopped");
        assert_eq!(
            h.state(),
            CameraState::Ended {
                cause: "end of stream".into()
            }
        );
        let down = h.expect(EventKind::CameraDown, "end of stream").await;
        assert_eq!(down.message, "end of stream");
        assert!(h.events.recv().await.is_none(), "an event after the end");
        assert_eq!(h.starts().len(), 1);
        assert_eq!(h.reconnects(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_is_not_restarted_ends_on_an_error() {
        let policy = policy(1_000, 30_000, 2_000);
        let mut h = start(policy, false, false, vec![Step::Run]);
        let run = h.run().await;
        run.status(SourceStatus::Error("filesrc0: Resource not found".into()));
        tokio::time::timeout(PATIENCE, &mut h.task)
            .await
            .expect("the supervisor ends by itself")
            .expect("the supervisor does not panic");
        let down = h.expect(EventKind::CameraDown, "Resource not found").await;
        assert_eq!(
            h.state(),
            CameraState::Ended {
                cause: down.message
            }
        );
        assert!(h.events.recv().await.is_none(), "an event after the end");
        assert_eq!(h.starts().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_the_backoff_at_once() {
        let policy = policy(60_000, 600_000, 2_000);
        let mut h = start(policy, true, true, Vec::new());
        let cause = format!("cannot start the source: {REFUSED}");
        h.expect(EventKind::CameraDown, &cause).await;
        h.reconnecting(1, &cause).await;
        h.stop().await;
        assert_eq!(h.starts().len(), 1, "restarted after cancellation");
        assert_eq!(h.reconnects(), 0);
        h.stopped_last().await;
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_a_running_source() {
        let policy = policy(1_000, 30_000, 2_000);
        let mut h = start(policy, true, true, vec![Step::Run]);
        let mut run = h.run().await;
        run.frame();
        h.expect(EventKind::CameraUp, "receiving frames").await;
        h.stop().await;
        assert!(run.stopped().is_some(), "the run is stopped");
        assert_eq!(h.state(), CameraState::Up);
        h.stopped_last().await;
    }
}
