//! Shadow stages: a candidate (a new operator module, another model) run beside a live stage on
//! a sampled share of frames. The live stage thread only clones the sampled inputs and the live
//! outputs they led to, and hands them over without waiting; the candidate runs on a thread of
//! its own at the lowest CPU priority, compares its output with the live one and reports on
//! `<ns>.shadow.<stage>.<camera>` and in the shadow metrics.
//!
//! Invariant: nothing a candidate does reaches live results or holds up the live thread. The
//! hand-over queue holds one batch; a batch sampled while the candidate is still busy is
//! skipped (counted). A candidate that cannot start, traps, spins past its time limit or
//! panics costs only its own reports.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Instant;

use bytes::Bytes;
use panoptes_contracts::agreement::{DEFAULT_IOU, compare_frame};
use panoptes_contracts::detection::Detection;
use panoptes_contracts::meter;
use panoptes_contracts::shadow::{SHADOW_SCHEMA, ShadowMessage, ShadowOutcome};
use panoptes_contracts::stage::{Item, Payload, Stage, StageError};
use panoptes_contracts::subjects::Subjects;
use panoptes_contracts::tensor::Tensor;
use tokio::sync::mpsc;

/// A candidate for one live stage, as the worker's builder gives it to the graph.
pub struct Shadow {
    /// The candidate, then copies of the live stages after it up to the one whose output is
    /// compared (e.g. a candidate model and a copy of the postprocessor that reads it).
    pub(crate) stages: Vec<Box<dyn Stage>>,
    /// The share of frames it runs on, in (0, 1].
    pub(crate) sample: f64,
}

impl Shadow {
    pub fn new(stages: Vec<Box<dyn Stage>>, sample: f64) -> Self {
        Self {
            stages,
            sample: sample.clamp(0.0, 1.0),
        }
    }
}

/// Whether frame `seq` of `camera` is in a shadow's sample: a hash of both, so every worker
/// (and a replay) picks the same frames.
pub fn sampled(camera: &str, seq: u64, share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    // FNV-1a over the camera, then splitmix64 with the seq: stable across builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in camera.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < share
}

/// What a stage put out for one frame, kept for the comparison.
#[derive(Clone, Debug)]
pub(crate) enum Observed {
    Detections(Vec<Detection>),
    Tensor(Tensor),
    Frame(panoptes_contracts::Frame),
}

impl Observed {
    pub(crate) fn of(item: &Item) -> Self {
        match &item.payload {
            Payload::Detections(d) => Observed::Detections(d.clone()),
            Payload::Tensor(t) => Observed::Tensor(t.clone()),
            Payload::Frame(f) => Observed::Frame(f.clone()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Observed::Detections(_) => "detections",
            Observed::Tensor(_) => "tensor",
            Observed::Frame(_) => "frame",
        }
    }
}

/// One sampled frame: its input to the candidate and what the live stages made of it.
pub(crate) struct Sampled {
    pub(crate) input: Item,
    pub(crate) live: Observed,
}

/// The live thread's side of one shadow: where in the graph it taps, and the queue to its
/// thread.
pub(crate) struct Tap {
    /// The live node the candidate stands in for; its inputs are sampled.
    pub(crate) at: usize,
    /// The live node whose outputs are compared with the candidate chain's.
    pub(crate) compare_at: usize,
    stage: String,
    share: f64,
    queue: Option<SyncSender<Vec<Sampled>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// This pass's sampled inputs, by origin.
    taken: Vec<(usize, Item)>,
    /// This pass's live outputs at `compare_at`, by origin.
    live: HashMap<usize, Observed>,
    /// Sampled frames not run because the candidate was busy (also in the metrics).
    skipped: u64,
}

/// Where reports go: a task on the worker's runtime publishes them.
pub(crate) type Reports = mpsc::Sender<(String, Bytes)>;

impl Tap {
    /// Starts the candidate's thread; `stage` is the live stage's ID.
    pub(crate) fn start(
        at: usize,
        compare_at: usize,
        stage: String,
        shadow: Shadow,
        subjects: Subjects,
        reports: Reports,
    ) -> Self {
        let (queue, jobs) = std::sync::mpsc::sync_channel::<Vec<Sampled>>(1);
        let runner = Runner {
            stage: stage.clone(),
            stages: shadow.stages,
            subjects,
            reports,
            agreed: 0,
            differed: 0,
        };
        let thread = std::thread::Builder::new()
            .name(format!("shadow-{stage}"))
            .spawn(move || runner.run(jobs));
        let (queue, thread) = match thread {
            Ok(thread) => (Some(queue), Some(thread)),
            Err(e) => {
                tracing::error!(%stage, error = %e, "cannot start the shadow thread; the live stage runs without its candidate");
                (None, None)
            }
        };
        Self {
            at,
            compare_at,
            stage,
            share: shadow.sample,
            queue,
            thread,
            taken: Vec::new(),
            live: HashMap::new(),
            skipped: 0,
        }
    }

    /// The live node `at` is about to process `items` (with their origins): keeps copies of
    /// the sampled ones.
    pub(crate) fn take(&mut self, origins: &[usize], items: &[Item]) {
        if self.queue.is_none() {
            return;
        }
        for (&origin, item) in origins.iter().zip(items) {
            if sampled(item.frame.camera.as_str(), item.frame.seq, self.share) {
                let mut copy = item.clone();
                // The candidate's work is not part of the frame's trace.
                copy.span = tracing::Span::none();
                self.taken.push((origin, copy));
            }
        }
    }

    /// Whether `origin` was sampled in this pass (its live output at `compare_at` is kept).
    pub(crate) fn wants(&self, origin: usize) -> bool {
        self.taken.iter().any(|(o, _)| *o == origin)
    }

    pub(crate) fn observe(&mut self, origin: usize, item: &Item) {
        self.live.insert(origin, Observed::of(item));
    }

    /// The pass is over: hands the sampled frames whose live output is known to the
    /// candidate, or counts them skipped when it is still busy.
    pub(crate) fn flush(&mut self) {
        let taken = std::mem::take(&mut self.taken);
        let mut live = std::mem::take(&mut self.live);
        let Some(queue) = &self.queue else { return };
        // A frame the live stages failed on has nothing to compare with.
        let job: Vec<Sampled> = taken
            .into_iter()
            .filter_map(|(origin, input)| live.remove(&origin).map(|live| Sampled { input, live }))
            .collect();
        if job.is_empty() {
            return;
        }
        match queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                self.skipped += job.len() as u64;
                metrics::counter!(meter::SHADOW_FRAMES, "stage" => self.stage.clone(), "outcome" => "skipped")
                    .increment(job.len() as u64);
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!(stage = %self.stage, "the shadow candidate's thread ended; the live stage runs without it");
                self.queue = None;
            }
        }
    }

    /// Drops what this pass sampled (a tick's pass: no frames to compare).
    pub(crate) fn discard(&mut self) {
        self.taken.clear();
        self.live.clear();
    }

    /// Lets the candidate finish its queue, stop its stages and end.
    pub(crate) fn stop(&mut self) {
        if self.skipped > 0 {
            tracing::info!(stage = %self.stage, skipped = self.skipped,
                "shadow candidate stopping; frames it was too busy to run were skipped");
        }
        self.queue = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!(stage = %self.stage, "the shadow candidate's thread panicked");
        }
    }
}

/// The candidate's thread.
struct Runner {
    stage: String,
    stages: Vec<Box<dyn Stage>>,
    subjects: Subjects,
    reports: Reports,
    agreed: u64,
    differed: u64,
}

impl Runner {
    fn run(mut self, jobs: Receiver<Vec<Sampled>>) {
        lowest_priority();
        for i in 0..self.stages.len() {
            if let Err(e) = self.stages[i].start() {
                tracing::error!(stage = %self.stage, candidate = self.stages[i].id(), error = %e,
                    "the shadow candidate cannot start; the live stage runs without it");
                for started in self.stages[..i].iter_mut().rev() {
                    started.stop();
                }
                return;
            }
        }
        tracing::info!(stage = %self.stage, candidate = self.stages.first().map(|s| s.id()).unwrap_or(""), "shadow candidate started");
        while let Ok(job) = jobs.recv() {
            self.batch(job);
        }
        for stage in self.stages.iter_mut().rev() {
            stage.stop();
        }
    }

    /// Runs one batch through the candidate chain, compares and reports each frame.
    fn batch(&mut self, job: Vec<Sampled>) {
        let started = Instant::now();
        let (inputs, lives): (Vec<Item>, Vec<Observed>) =
            job.into_iter().map(|s| (s.input, s.live)).unzip();
        let metas: Vec<(String, u64, u64)> = inputs
            .iter()
            .map(|i| {
                (
                    i.frame.camera.to_string(),
                    i.frame.seq,
                    i.frame.capture_ts_ns,
                )
            })
            .collect();
        let mut current: Vec<Result<Item, String>> = inputs.into_iter().map(Ok).collect();
        for stage in &mut self.stages {
            let (ok, positions): (Vec<Item>, Vec<usize>) = current
                .iter_mut()
                .enumerate()
                .filter_map(|(i, r)| match std::mem::replace(r, Err(String::new())) {
                    Ok(item) => Some((item, i)),
                    Err(e) => {
                        *r = Err(e);
                        None
                    }
                })
                .unzip();
            if ok.is_empty() {
                break;
            }
            let outs = stage.process_batch(ok);
            // What the candidate raised stays with it.
            let _ = stage.take_events();
            let _ = stage.take_analytics();
            if outs.len() != positions.len() {
                let message = format!(
                    "stage {:?} returned {} results for {} items",
                    stage.id(),
                    outs.len(),
                    positions.len()
                );
                for p in positions {
                    current[p] = Err(message.clone());
                }
                continue;
            }
            for (p, out) in positions.into_iter().zip(outs) {
                current[p] = out.map_err(|e| describe(stage.id(), &e));
            }
        }
        let elapsed = started.elapsed();
        metrics::histogram!(meter::SHADOW_SECONDS, "stage" => self.stage.clone())
            .record(elapsed.as_secs_f64());
        let candidate_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        for (((camera, seq, capture_ts_ns), live), out) in metas.into_iter().zip(lives).zip(current)
        {
            let mut message = ShadowMessage {
                schema: SHADOW_SCHEMA.to_owned(),
                stage: self.stage.clone(),
                camera,
                seq,
                capture_ts_ns,
                outcome: ShadowOutcome::Agree,
                compared: live.kind().to_owned(),
                live: None,
                candidate: None,
                lost: Vec::new(),
                added: Vec::new(),
                text_changes: Vec::new(),
                difference: None,
                error: None,
                candidate_us,
            };
            judge(&mut message, live, out);
            self.count(message.outcome);
            let subject = self.subjects.shadow_for(&self.stage, &message.camera);
            if let Ok(body) = serde_json::to_vec(&message) {
                // A full queue (NATS slow or gone) loses reports, never live frames.
                let _ = self.reports.try_send((subject, body.into()));
            }
        }
    }

    fn count(&mut self, outcome: ShadowOutcome) {
        metrics::counter!(meter::SHADOW_FRAMES, "stage" => self.stage.clone(), "outcome" => outcome.as_str())
            .increment(1);
        match outcome {
            ShadowOutcome::Agree => self.agreed += 1,
            ShadowOutcome::Differ => self.differed += 1,
            ShadowOutcome::Fault => return,
        }
        let compared = self.agreed + self.differed;
        metrics::gauge!(meter::SHADOW_AGREEMENT, "stage" => self.stage.clone())
            .set(self.agreed as f64 / compared as f64);
    }
}

fn describe(stage: &str, e: &StageError) -> String {
    format!("stage {stage:?} failed: {e}")
}

/// Fills in `message`'s outcome: the candidate's `out` against the `live` output.
fn judge(message: &mut ShadowMessage, live: Observed, out: Result<Item, String>) {
    let candidate = match out {
        Ok(item) => Observed::of(&item),
        Err(e) => {
            message.outcome = ShadowOutcome::Fault;
            message.error = Some(e);
            if let Observed::Detections(d) = live {
                message.live = Some(d);
            }
            return;
        }
    };
    match (live, candidate) {
        (Observed::Detections(live), Observed::Detections(candidate)) => {
            let diff = compare_frame(&message.camera, message.seq, &live, &candidate, DEFAULT_IOU);
            if !diff.agrees() {
                message.outcome = ShadowOutcome::Differ;
            }
            message.lost = diff.lost;
            message.added = diff.added;
            message.text_changes = diff.text_changes;
            message.live = Some(live);
            message.candidate = Some(candidate);
        }
        (Observed::Tensor(live), Observed::Tensor(candidate)) => {
            if let Some(difference) = tensor_difference(&live, &candidate) {
                message.outcome = ShadowOutcome::Differ;
                message.difference = Some(difference);
            }
        }
        (Observed::Frame(live), Observed::Frame(candidate)) => {
            let same = live.width == candidate.width
                && live.height == candidate.height
                && live.format == candidate.format
                && live.pixels.as_slice() == candidate.pixels.as_slice();
            if !same {
                message.outcome = ShadowOutcome::Differ;
                message.difference = Some(format!(
                    "frame {}x{} {:?} against the live {}x{} {:?}, or other pixels",
                    candidate.width,
                    candidate.height,
                    candidate.format,
                    live.width,
                    live.height,
                    live.format
                ));
            }
        }
        (live, candidate) => {
            message.outcome = ShadowOutcome::Fault;
            message.error = Some(format!(
                "the candidate gave a {}, the live stage a {}",
                candidate.kind(),
                live.kind()
            ));
            if let Observed::Detections(d) = live {
                message.live = Some(d);
            }
            if let Observed::Detections(d) = candidate {
                message.candidate = Some(d);
            }
        }
    }
}

/// Why two tensors differ beyond float tolerance (1e-4 absolute plus 1e-3 relative), or `None`
/// when they agree.
fn tensor_difference(live: &Tensor, candidate: &Tensor) -> Option<String> {
    if live.shape != candidate.shape {
        return Some(format!(
            "shape {:?} against the live {:?}",
            candidate.shape, live.shape
        ));
    }
    let mut worst: Option<(usize, f32)> = None;
    for (i, (a, b)) in live.data.iter().zip(&candidate.data).enumerate() {
        let d = (a - b).abs();
        let beyond = d > 1e-4 + 1e-3 * a.abs() || d.is_nan();
        if beyond && worst.is_none_or(|(_, w)| d > w || d.is_nan()) {
            worst = Some((i, d));
        }
    }
    worst.map(|(i, d)| format!("largest difference {d} at index {i}"))
}

/// The candidate yields the CPU to everything else in the process: nice 19 for this thread
/// (Linux keeps a nice value per thread).
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with PRIO_PROCESS and 0 only changes the calling thread's nice value.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_samples_about_that_many_frames_the_same_every_time() {
        let picked = |share| {
            (0..10_000u64)
                .filter(|seq| sampled("door", *seq, share))
                .count()
        };
        let tenth = picked(0.1);
        assert!((900..=1100).contains(&tenth), "{tenth}");
        assert_eq!(picked(1.0), 10_000);
        assert_eq!(picked(0.1), tenth);
        // Another camera's sample is other frames.
        let same = (0..1000u64)
            .filter(|s| sampled("door", *s, 0.1) && sampled("gate", *s, 0.1))
            .count();
        assert!(same < 40, "{same}");
    }

    /// A candidate that says when it starts on an item, then holds it until the test lets it
    /// go.
    struct Held {
        started: std::sync::mpsc::Sender<u64>,
        gate: std::sync::mpsc::Receiver<()>,
    }

    impl Stage for Held {
        fn id(&self) -> &str {
            "held"
        }
        fn process(&mut self, item: Item) -> Result<Item, StageError> {
            let _ = self.started.send(item.frame.seq);
            let _ = self.gate.recv();
            Ok(item)
        }
    }

    fn item(seq: u64) -> Item {
        Item {
            frame: panoptes_contracts::stage::FrameMeta {
                camera: panoptes_contracts::CameraId::new("door").expect("camera"),
                seq,
                capture_ts_ns: seq,
                width: 4,
                height: 4,
            },
            payload: Payload::Detections(Vec::new()),
            transform: panoptes_contracts::Transform::IDENTITY,
            source: None,
            regions: None,
            span: tracing::Span::none(),
        }
    }

    #[test]
    fn a_busy_candidate_skips_what_it_cannot_take_and_the_live_side_never_waits() {
        let (open, gate) = std::sync::mpsc::channel();
        let (started, starts) = std::sync::mpsc::channel();
        let (reports, mut received) = mpsc::channel(16);
        let shadow = Shadow::new(vec![Box::new(Held { started, gate })], 1.0);
        let mut tap = Tap::start(0, 0, "zone".into(), shadow, Subjects::new("ns"), reports);
        let patience = std::time::Duration::from_secs(30);
        // Each pass offers one frame; the candidate holds the first, the queue the second.
        for seq in 0..4 {
            let it = item(seq);
            tap.take(&[0], std::slice::from_ref(&it));
            assert!(tap.wants(0));
            tap.observe(0, &it);
            tap.flush();
            if seq == 0 {
                // The candidate took it off the queue before the next pass.
                assert_eq!(starts.recv_timeout(patience), Ok(0));
            }
        }
        // Frame 1 waits in the queue's one place: 2 and 3 are skipped.
        assert_eq!(tap.skipped, 2);
        for _ in 0..4 {
            let _ = open.send(());
        }
        tap.stop();
        assert_eq!(starts.recv_timeout(patience), Ok(1));
        // A report for each frame run, the held one and the queued one, and no other.
        for seq in [0, 1] {
            let report = received.try_recv().expect("a report for a frame run");
            assert_eq!(report.0, "ns.shadow.zone.door");
            let message: ShadowMessage = serde_json::from_slice(&report.1).expect("shadow/v1");
            assert_eq!((message.seq, message.outcome), (seq, ShadowOutcome::Agree));
        }
        assert!(received.try_recv().is_err());
    }

    #[test]
    fn tensors_agree_within_float_tolerance() {
        let t = |data: Vec<f32>| Tensor::new(vec![data.len()], data).expect("tensor");
        assert!(tensor_difference(&t(vec![1.0, 2.0]), &t(vec![1.0, 2.0005])).is_none());
        let d = tensor_difference(&t(vec![1.0, 2.0]), &t(vec![1.0, 2.5])).expect("differs");
        assert!(d.contains("index 1"), "{d}");
        assert!(tensor_difference(&t(vec![1.0]), &t(vec![1.0, 2.0])).is_some());
        assert!(tensor_difference(&t(vec![1.0]), &t(vec![f32::NAN])).is_some());
    }
}
