//! The stage contract: a stage takes items (a frame, a tensor, detections) and returns the next,
//! within a lifecycle the worker drives ([`Stage`]). Stage crates (wasm operators, models,
//! postprocessors) implement it; the worker's graph runs them.

use crate::camera::CameraId;
use crate::detection::Detection;
use crate::frame::Frame;
use crate::tensor::{Tensor, Transform};

/// What flows between stages for one frame. Cloned where a stage's output fans out.
#[derive(Clone, Debug)]
pub struct Item {
    pub frame: FrameMeta,
    pub payload: Payload,
    /// Maps coordinates of the current tensor back to the original frame.
    pub transform: Transform,
    /// The frame this item is about, for stages that read pixels after earlier stages turned
    /// the payload into tensors (operators get it as their `frame` resource). Cloning shares
    /// the pixel buffer.
    pub source: Option<Frame>,
    /// Cascades: the boxes (original-frame pixels) that the rows of the current tensor were
    /// cropped from, in row order. Postprocessors after a crop stage (CTC, top-k) attach their
    /// result to these boxes, so one message carries each box with what was read in it.
    pub regions: Option<Vec<Detection>>,
    /// This frame's span; a batch span links to the span of every frame in the batch.
    pub span: tracing::Span,
}

/// Facts about the source frame that every stage's output keeps.
#[derive(Clone, Debug)]
pub struct FrameMeta {
    pub camera: CameraId,
    pub seq: u64,
    pub capture_ts_ns: u64,
    pub width: u32,
    pub height: u32,
}

#[derive(Clone, Debug)]
pub enum Payload {
    Frame(Frame),
    Tensor(Tensor),
    Detections(Vec<Detection>),
}

impl Payload {
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Frame(_) => "frame",
            Payload::Tensor(_) => "tensor",
            Payload::Detections(_) => "detections",
        }
    }
}

impl Item {
    pub fn from_frame(frame: Frame) -> Self {
        Self {
            frame: FrameMeta {
                camera: frame.camera.clone(),
                seq: frame.seq,
                capture_ts_ns: frame.capture_ts_ns,
                width: frame.width,
                height: frame.height,
            },
            source: Some(frame.clone()),
            payload: Payload::Frame(frame),
            transform: Transform::IDENTITY,
            regions: None,
            // The worker gives each item the span of its frame; a bare item has none.
            span: tracing::Span::none(),
        }
    }
}

/// Why a stage failed one item. The worker reports it on the camera's events subject and goes on.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("expected a {expected} input, got a {got}")]
    WrongInput {
        expected: &'static str,
        got: &'static str,
    },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("operator trapped: {0}")]
    Trap(String),
    #[error("operator exceeded its time limit of {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Failed(String),
}

/// A stage of the worker's graph, driven through its lifecycle by the worker (as stream
/// processors drive operators):
///
/// 1. [`start`](Stage::start) once, before the first item, on the thread that runs the stage;
/// 2. [`process_batch`](Stage::process_batch) (or [`process`](Stage::process)) for every batch;
/// 3. [`tick`](Stage::tick) every [`tick_interval`](Stage::tick_interval), frames or not, for
///    rules that fire with time alone (dwell, track expiry);
/// 4. [`snapshot`](Stage::snapshot) / [`restore`](Stage::restore) / [`forget`](Stage::forget)
///    of per-camera state as cameras move between workers (their partition's lease);
/// 5. [`stop`](Stage::stop) once, after the last item.
///
/// Every hook but `process` has a default that does nothing, so a stateless stage implements
/// `id` and `process` (or `process_batch`) only.
pub trait Stage: Send {
    /// The stage ID from the topology.
    fn id(&self) -> &str;
    /// Model name reported in detection messages, for model stages.
    fn model(&self) -> Option<&str> {
        None
    }

    /// Prepares the stage before its first item. An error stops the worker before it takes
    /// any partition, naming the stage.
    fn start(&mut self) -> Result<(), StageError> {
        Ok(())
    }

    fn process(&mut self, item: Item) -> Result<Item, StageError>;

    /// Processes items of several frames (usually of different cameras) in one call; a model
    /// stage runs them as one inference batch. Returns one result per item, in order, so a
    /// failure loses only its own item. The default processes them one by one.
    fn process_batch(&mut self, items: Vec<Item>) -> Vec<Result<Item, StageError>> {
        items.into_iter().map(|item| self.process(item)).collect()
    }

    /// How often the worker calls [`tick`](Stage::tick); `None` (the default): never.
    fn tick_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Time passed without (or besides) frames. Returns what the stage emits because of it
    /// (e.g. the end of a track nobody saw for too long); these items flow on to the stage's
    /// successors as results of `process` would. `now` comes from the worker's clock, which
    /// tests pause and advance.
    fn tick(&mut self, now: std::time::Instant) -> Vec<Item> {
        let _ = now;
        Vec::new()
    }

    /// For a stage that keeps per-camera state which must follow a camera to its next owner:
    /// how often the worker saves it ([`snapshot`](Stage::snapshot), besides at hand-back).
    /// The worker then calls [`restore`](Stage::restore) before a camera's first item of each
    /// tenure. `None` (the default): the stage keeps no such state.
    fn snapshot_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// This stage's state of `camera`, for the camera's next owner; `None` (the default): the
    /// stage keeps none (or none of this camera).
    fn snapshot(&self, camera: &CameraId) -> Option<Vec<u8>> {
        let _ = camera;
        None
    }

    /// This worker's tenure of `camera` begins: `state` is what a previous owner saved (from
    /// [`snapshot`](Stage::snapshot)), if any; IDs the stage hands out for the camera during
    /// this tenure come from `ids`, which no other tenure of the camera gets. A blob the stage
    /// cannot read (another version's, say) is refused with an error; the worker reports it
    /// and calls again without state.
    fn restore(
        &mut self,
        camera: &CameraId,
        state: Option<&[u8]>,
        ids: IdRange,
    ) -> Result<(), StageError> {
        let _ = (camera, state, ids);
        Ok(())
    }

    /// Events the stage raised since the last call (e.g. a track ended), published on the
    /// camera's events subject. The worker asks after every batch and tick.
    fn take_events(&mut self) -> Vec<crate::event::Event> {
        Vec::new()
    }

    /// Analytics events the stage raised since the last call (zone entries, line crossings,
    /// dwell), published on `<ns>.analytics.<camera>`. The worker asks after every batch and
    /// tick.
    fn take_analytics(&mut self) -> Vec<crate::analytics::AnalyticsEvent> {
        Vec::new()
    }

    /// `camera` is no longer this worker's (its partition moved, or it went silent): drop what
    /// the stage keeps of it.
    fn forget(&mut self, camera: &CameraId) {
        let _ = camera;
    }

    /// After the last item: release what `start` took.
    fn stop(&mut self) {}

    /// How this stage wants frames grouped; `None` (the default): it gains nothing from
    /// batches. The worker gathers frames by the merged policy of all its stages.
    fn batching(&self) -> Option<crate::batching::BatchPolicy> {
        None
    }
}

/// IDs a stage may hand out for one camera during one tenure (`first..end`): the worker claims
/// a fresh range per camera each time it takes the camera on, so two owners never issue the
/// same ID, even when the second restored an older snapshot than the first had reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub first: u64,
    pub end: u64,
}

impl IdRange {
    /// IDs of each tenure: 2^32 of them, so tenure `n` (from 0) hands out
    /// `n·2^32 + 1 ..= (n+1)·2^32 - 1`; below 2^53 (exact in JSON numbers) for 2^21 tenures.
    pub const PER_TENURE: u64 = 1 << 32;

    /// The range of tenure `n` (counted from 0 per camera).
    pub fn of_tenure(n: u64) -> Self {
        let first = n.saturating_mul(Self::PER_TENURE);
        Self {
            first: first.max(1),
            end: first.saturating_add(Self::PER_TENURE),
        }
    }

    pub fn contains(&self, id: u64) -> bool {
        (self.first..self.end).contains(&id)
    }
}

/// What a stage reads, and what a worker's first stages read (`<ns>.<token>.<camera>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Input {
    /// Camera frames (`frame/v1`) from ingest.
    #[default]
    Frames,
    /// Items (`item/v1`) forwarded by the stage with this ID, run by another process.
    Stage(String),
}

impl Input {
    /// The token the topology names camera frames by; no stage may take it as its ID.
    pub const FRAMES: &'static str = "frames";

    /// The subject token: `frames`, or the upstream stage's ID.
    pub fn token(&self) -> &str {
        match self {
            Input::Frames => Self::FRAMES,
            Input::Stage(stage) => stage,
        }
    }
}

/// A topology's `input:`: `frames`, or a stage ID.
impl From<&str> for Input {
    fn from(token: &str) -> Self {
        if token == Self::FRAMES {
            Input::Frames
        } else {
            Input::Stage(token.to_owned())
        }
    }
}

impl From<String> for Input {
    fn from(token: String) -> Self {
        if token == Self::FRAMES {
            Input::Frames
        } else {
            Input::Stage(token)
        }
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.token())
    }
}
