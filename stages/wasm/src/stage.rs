//! A Wasm operator as a pipeline stage, and the slot that lets its module be replaced while the
//! worker runs (hot reload): a new module is checked (signature, digest), compiled and
//! initialised off the worker's path, then picked up between two frames.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use panoptes_contracts::camera::CameraId;
use panoptes_contracts::detection::Detection as FrameDetection;
use panoptes_contracts::frame::Frame;
use panoptes_contracts::stage::{FrameMeta, IdRange, Item, Payload, Stage, StageError};
use panoptes_contracts::tensor::{Tensor as FrameTensor, Transform as FrameTransform};
use sha2::{Digest, Sha256};

use crate::capabilities::Capabilities;
use crate::engine::{OperatorEngine, OperatorModule};
use crate::error::WasmError;
use crate::instance::{
    Detection, FrameResource, Input, OperatorInstance, Output, TensorInput, Transform, frame_format,
};

mod kept;
use kept::Guest;

/// Where an operator module comes from and what it must prove before it is compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleSpec {
    pub path: PathBuf,
    /// `sha256:<hex>` (or bare hex) the module must hash to.
    pub digest: Option<String>,
    /// Public key file `<path>.sig` must verify against.
    pub signed_by: Option<PathBuf>,
}

impl ModuleSpec {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            digest: None,
            signed_by: None,
        }
    }

    /// Reads the module and checks its signature and digest; returns the bytes that passed,
    /// so exactly those are compiled.
    pub fn read_checked(&self) -> Result<Vec<u8>, WasmError> {
        let bytes = match &self.signed_by {
            Some(key) => panoptes_client::keys::verify_file(&self.path, key).map_err(|source| {
                WasmError::Signature {
                    path: self.path.clone(),
                    source,
                }
            })?,
            None => read_module(&self.path)?,
        };
        if let Some(declared) = &self.digest {
            let got = sha256_hex(&bytes);
            if !digest_matches(&got, declared) {
                return Err(WasmError::Digest {
                    path: self.path.clone(),
                    got,
                    declared: declared.clone(),
                });
            }
        }
        Ok(bytes)
    }
}

/// Reads an operator module named by a topology or a reload request: bounded by
/// [`panoptes_files::MODULE_MAX`] and without blocking, so `/dev/zero` or a FIFO is refused by
/// what it is instead of read until memory runs out (or forever).
pub(crate) fn read_module(path: &Path) -> Result<Vec<u8>, WasmError> {
    panoptes_files::read_bounded(path, panoptes_files::MODULE_MAX).map_err(|e| {
        let kind = match e {
            panoptes_files::FileError::NotFound { .. } => std::io::ErrorKind::NotFound,
            _ => std::io::ErrorKind::InvalidInput,
        };
        // The variant's message names the path; the source says only what is wrong.
        WasmError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(kind, e.reason()),
        }
    })
}

/// Whether a hex sha256 is the one a topology declares (`sha256:<hex>` or bare hex).
pub fn digest_matches(got: &str, declared: &str) -> bool {
    got.eq_ignore_ascii_case(declared.trim_start_matches("sha256:"))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    // sha2's digest output formats itself as lowercase hex (`LowerHex`).
    format!("{:x}", Sha256::digest(bytes))
}

impl OperatorEngine {
    /// Reads, checks (signature, digest) and loads the module `spec` describes.
    pub fn load_spec(&self, spec: &ModuleSpec) -> Result<OperatorModule, WasmError> {
        let bytes = spec.read_checked()?;
        self.load_bytes(&spec.path, &bytes)
    }
}

/// How an operator stage's instances are made: the module source, the `init` configuration
/// and what the instance may reach.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub config: String,
    pub capabilities: Arc<Capabilities>,
    pub deadline: Option<Duration>,
    pub max_memory_bytes: Option<usize>,
}

impl InstanceSpec {
    pub fn new(config: impl Into<String>) -> Self {
        Self {
            config: config.into(),
            capabilities: Arc::new(Capabilities::default()),
            deadline: None,
            max_memory_bytes: None,
        }
    }

    /// An instance of `module` with this configuration, grants and limits.
    pub fn instantiate(&self, module: &OperatorModule) -> Result<OperatorInstance, WasmError> {
        let mut instance = module.instantiate_with(&self.config, self.capabilities.clone())?;
        if let Some(deadline) = self.deadline {
            instance.set_deadline(deadline);
        }
        if let Some(bytes) = self.max_memory_bytes {
            instance.set_max_memory_bytes(bytes)?;
        }
        Ok(instance)
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A different module was checked, compiled and initialised; stages switch to it before
    /// their next frame.
    Swapped { sha256: String, generation: u64 },
    /// The file holds the module already running.
    Unchanged { sha256: String },
}

/// The current module of one operator stage. Shared between the stage (which runs it) and
/// whoever reloads it (a file watcher, a control message).
#[derive(Clone)]
pub struct OperatorSlot {
    inner: Arc<SlotInner>,
}

struct SlotInner {
    stage: String,
    engine: OperatorEngine,
    state: Mutex<SlotState>,
    generation: AtomicU64,
}

struct SlotState {
    spec: ModuleSpec,
    /// How instances are made; a promoted candidate brings its own.
    instance: InstanceSpec,
    module: OperatorModule,
    sha256: String,
    /// A checked, initialised instance of `module` waiting for the stage to take it, so the
    /// worker thread never pays for instantiation and `init`.
    ready: Option<OperatorInstance>,
}

impl std::fmt::Debug for OperatorSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("OperatorSlot")
            .field("stage", &self.inner.stage)
            .field("path", &state.spec.path)
            .field("sha256", &state.sha256)
            .field("generation", &self.generation())
            .finish()
    }
}

impl OperatorSlot {
    /// Loads `spec` (checked), instantiates it once with `instance` to prove `init` accepts the
    /// configuration, and returns the slot with that instance.
    pub fn load(
        stage: impl Into<String>,
        engine: OperatorEngine,
        spec: ModuleSpec,
        instance: InstanceSpec,
    ) -> Result<(Self, OperatorInstance), WasmError> {
        let bytes = spec.read_checked()?;
        let module = engine.load_bytes(&spec.path, &bytes)?;
        let first = instance.instantiate(&module)?;
        let slot = Self {
            inner: Arc::new(SlotInner {
                stage: stage.into(),
                engine,
                state: Mutex::new(SlotState {
                    spec,
                    instance,
                    module,
                    sha256: sha256_hex(&bytes),
                    ready: None,
                }),
                generation: AtomicU64::new(0),
            }),
        };
        Ok((slot, first))
    }

    pub fn stage(&self) -> &str {
        &self.inner.stage
    }

    /// Bumped by every successful swap.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    pub fn path(&self) -> PathBuf {
        self.state().spec.path.clone()
    }

    pub fn sha256(&self) -> String {
        self.state().sha256.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Re-reads the module (from `path`, or the current path), checks it like at start-up
    /// (signature, digest), compiles it and runs `init` on a fresh instance. Only when all of
    /// that succeeds does the stage switch to it; otherwise the running module stays and the
    /// error says why.
    pub fn reload(&self, path: Option<&Path>) -> Result<Reloaded, WasmError> {
        let (mut spec, instance) = {
            let state = self.state();
            (state.spec.clone(), state.instance.clone())
        };
        if let Some(path) = path {
            spec.path = path.to_owned();
        }
        self.swap(spec, instance, false)
    }

    /// A shadow stage's candidate promoted: its module and instance settings (config, limits;
    /// its grants are the stage's) become this slot's, checked and initialised like a reload.
    pub fn adopt(&self, candidate: &OperatorSlot) -> Result<Reloaded, WasmError> {
        let (spec, instance) = {
            let state = candidate.state();
            (state.spec.clone(), state.instance.clone())
        };
        self.swap(spec, instance, true)
    }

    fn swap(
        &self,
        spec: ModuleSpec,
        instance: InstanceSpec,
        settings_change: bool,
    ) -> Result<Reloaded, WasmError> {
        let bytes = spec.read_checked()?;
        let sha256 = sha256_hex(&bytes);
        if sha256 == self.state().sha256 && !settings_change {
            return Ok(Reloaded::Unchanged { sha256 });
        }
        let module = self.inner.engine.load_bytes(&spec.path, &bytes)?;
        let ready = instance.instantiate(&module)?;
        let mut state = self.state();
        state.spec = spec;
        state.instance = instance;
        state.module = module;
        state.sha256.clone_from(&sha256);
        state.ready = Some(ready);
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::info!(stage = %self.inner.stage, path = %state.spec.path.display(), %sha256,
            generation, "operator module swapped");
        Ok(Reloaded::Swapped { sha256, generation })
    }

    /// The instance a stage at `seen` generation should switch to, if a newer one exists.
    fn take_newer(&self, seen: u64) -> Option<(u64, Result<OperatorInstance, WasmError>)> {
        let generation = self.generation();
        if generation == seen {
            return None;
        }
        let mut state = self.state();
        let instance = match state.ready.take() {
            Some(instance) => Ok(instance),
            // Another stage took the prepared one: make our own.
            None => state.instance.instantiate(&state.module),
        };
        Some((generation, instance))
    }

    /// Polls the module file (and its signature) every `period` and reloads when either
    /// changes. Stops when the returned guard is dropped.
    pub fn watch(&self, period: Duration) -> Result<Watcher, WasmError> {
        let slot = self.clone();
        // Taken now, not in the thread: a change made before the thread first runs must count.
        let mut last = slot.fingerprint();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("watch-{}", self.inner.stage))
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    let now = slot.fingerprint();
                    if now == last {
                        continue;
                    }
                    last = now;
                    match slot.reload(None) {
                        Ok(Reloaded::Swapped { .. } | Reloaded::Unchanged { .. }) => {}
                        // A half-copied file or a signature not yet updated fails here and is
                        // retried at the next change.
                        Err(e) => tracing::warn!(stage = %slot.inner.stage, error = %e,
                            "operator file changed but cannot be reloaded; keeping the running module"),
                    }
                }
            })
            .map_err(|e| WasmError::Engine {
                message: format!("cannot start the operator file watcher: {e}"),
            })?;
        Ok(Watcher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Size and modification time of the module and its signature file.
    fn fingerprint(&self) -> [Option<(u64, SystemTime)>; 2] {
        let path = self.path();
        let meta = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        };
        [
            meta(&path),
            meta(&panoptes_client::keys::signature_path(&path)),
        ]
    }
}

/// Stops an [`OperatorSlot::watch`] thread when dropped.
pub struct Watcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What an operator stage is declared to produce (the topology's `emits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Frames,
    Tensors,
    Detections,
}

impl OutputKind {
    fn of(output: &Output) -> Self {
        match output {
            Output::Image(_) => OutputKind::Frames,
            Output::Tensors(_) => OutputKind::Tensors,
            Output::Detections(_) => OutputKind::Detections,
        }
    }

    fn name(self) -> &'static str {
        match self {
            OutputKind::Frames => "frames",
            OutputKind::Tensors => "tensors",
            OutputKind::Detections => "detections",
        }
    }
}

/// A Wasm operator as a stage: frame, tensors or detections in; an image, tensors or detections
/// out. Switches to a reloaded module between frames.
pub struct OperatorStage {
    id: String,
    /// Outputs of another kind fail the frame: the stages after this one were checked
    /// against the declared kind.
    expect: Option<OutputKind>,
    slot: OperatorSlot,
    generation: u64,
    /// Behind a lock only because the worker asks for snapshots through `&self`; every other
    /// call has `&mut self` and takes it without locking.
    guest: Mutex<Guest>,
    /// Whether the operator keeps per-camera state (decided at start), and how often it is
    /// saved.
    stateful: bool,
    snapshot_every: Duration,
    _watcher: Option<Watcher>,
    /// Set by the first frame after a failed switch, so the failure is reported once.
    switch_failed: bool,
}

impl OperatorStage {
    pub fn new(slot: OperatorSlot, instance: OperatorInstance) -> Self {
        Self {
            id: slot.stage().to_owned(),
            expect: None,
            generation: slot.generation(),
            slot,
            stateful: instance.is_stateful(),
            guest: Mutex::new(Guest::new(instance)),
            snapshot_every: Duration::from_secs(1),
            _watcher: None,
            switch_failed: false,
        }
    }

    /// Fails frames whose output is not of `kind`.
    pub fn expecting(mut self, kind: OutputKind) -> Self {
        self.expect = Some(kind);
        self
    }

    /// Keeps a file watcher alive as long as the stage.
    pub fn with_watcher(mut self, watcher: Watcher) -> Self {
        self._watcher = Some(watcher);
        self
    }

    pub fn slot(&self) -> &OperatorSlot {
        &self.slot
    }

    /// How often a stateful operator's per-camera state is saved (besides at hand-back).
    pub fn snapshot_every(mut self, every: Duration) -> Self {
        self.snapshot_every = every;
        self
    }

    /// Whether the operator keeps per-camera state (world `stateful-operator@0.2.0`).
    pub fn is_stateful(&self) -> bool {
        self.stateful
    }

    fn guest(&mut self) -> &mut Guest {
        self.guest.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    fn switch_if_reloaded(&mut self) {
        let Some((generation, next)) = self.slot.take_newer(self.generation) else {
            return;
        };
        self.generation = generation;
        match next {
            Ok(instance) => {
                self.guest
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner)
                    .replace(&self.id, instance);
                self.switch_failed = false;
            }
            Err(e) => {
                if !std::mem::replace(&mut self.switch_failed, true) {
                    tracing::warn!(stage = %self.id, error = %e,
                        "cannot start the reloaded operator; keeping the previous instance");
                }
            }
        }
    }
}

impl Stage for OperatorStage {
    fn id(&self) -> &str {
        &self.id
    }

    fn snapshot_interval(&self) -> Option<Duration> {
        self.stateful.then_some(self.snapshot_every)
    }

    fn snapshot(&self, camera: &CameraId) -> Option<Vec<u8>> {
        self.guest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot(&self.id, camera)
    }

    fn restore(
        &mut self,
        camera: &CameraId,
        state: Option<&[u8]>,
        ids: IdRange,
    ) -> Result<(), StageError> {
        self.guest()
            .restore(camera, state, ids)
            .map_err(|e| StageError::Failed(e.to_string()))
    }

    fn forget(&mut self, camera: &CameraId) {
        self.guest
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .forget(&self.id, camera);
    }

    fn process(&mut self, mut item: Item) -> Result<Item, StageError> {
        self.switch_if_reloaded();
        let frame = frame_resource(&item);
        let payload = std::mem::replace(&mut item.payload, Payload::Detections(Vec::new()));
        let input = match payload {
            Payload::Frame(_) => Input::Frame,
            Payload::Tensor(t) => Input::Tensors(TensorInput {
                tensors: vec![wit_tensor(t)?],
                transform: wit_transform(item.transform),
            }),
            Payload::Detections(d) => Input::Detections(d.iter().map(wit_detection).collect()),
        };
        let tensor_input = matches!(input, Input::Tensors(_));
        let guest = self.guest.get_mut().unwrap_or_else(PoisonError::into_inner);
        guest.ready(&self.id).map_err(stage_error)?;
        let output = guest.instance.process(frame, &input).map_err(stage_error)?;
        if let Some(expected) = self.expect {
            let got = OutputKind::of(&output);
            if got != expected {
                return Err(StageError::Failed(format!(
                    "operator `{}` returned {} but the topology declares `emits: {}`",
                    self.id,
                    got.name(),
                    expected.name()
                )));
            }
        }
        match output {
            Output::Image(image) => {
                let format = frame_format(image.format);
                let source = item.source.as_ref().ok_or_else(|| {
                    StageError::Failed("operator returned an image for a frame it never had".into())
                })?;
                let frame = Frame {
                    camera: source.camera.clone(),
                    seq: source.seq,
                    capture_ts_ns: source.capture_ts_ns,
                    width: image.width,
                    height: image.height,
                    format,
                    pixels: image.pixels.into(),
                };
                frame.validate().map_err(|e| {
                    StageError::Failed(format!("operator `{}` returned a bad image: {e}", self.id))
                })?;
                // Later coordinates refer to this image.
                item.frame = FrameMeta {
                    width: frame.width,
                    height: frame.height,
                    ..item.frame
                };
                item.transform = FrameTransform::IDENTITY;
                item.source = Some(frame.clone());
                item.payload = Payload::Frame(frame);
            }
            Output::Tensors(out) => {
                let mut tensors = out.tensors.into_iter();
                let first = tensors.next().ok_or_else(|| {
                    StageError::Failed(format!("operator `{}` returned no tensor", self.id))
                })?;
                if tensors.next().is_some() {
                    tracing::debug!(stage = %self.id,
                        "operator returned several tensors; the pipeline carries the first");
                }
                let shape = first.shape.iter().map(|&d| d as usize).collect();
                let tensor = FrameTensor::new(shape, first.data).map_err(|e| {
                    StageError::Failed(format!(
                        "operator `{}` returned a malformed tensor: {e}",
                        self.id
                    ))
                })?;
                if let Some(t) = out.transforms.first() {
                    item.transform = compose(item.transform, *t, tensor_input);
                }
                item.payload = Payload::Tensor(tensor);
            }
            Output::Detections(dets) => {
                // Detections are in the coordinates of what the operator was given.
                let to_frame = if tensor_input {
                    item.transform
                } else {
                    FrameTransform::IDENTITY
                };
                item.payload = Payload::Detections(
                    dets.iter().map(|d| frame_detection(d, to_frame)).collect(),
                );
            }
        }
        Ok(item)
    }
}

fn frame_resource(item: &Item) -> FrameResource {
    match &item.source {
        Some(frame) => FrameResource::from_frame(frame),
        None => FrameResource {
            camera: item.frame.camera.to_string(),
            seq: item.frame.seq,
            capture_ts_ns: item.frame.capture_ts_ns,
            width: item.frame.width,
            height: item.frame.height,
            format: panoptes_contracts::frame::PixelFormat::Rgb8,
            pixels: None,
        },
    }
}

fn stage_error(e: WasmError) -> StageError {
    match e {
        WasmError::Timeout { after, .. } => StageError::Timeout(after),
        WasmError::Trap { .. } => StageError::Trap(e.to_string()),
        WasmError::Operator { ref error, .. }
            if error.kind == crate::error::OperatorErrorKind::InvalidInput =>
        {
            StageError::InvalidInput(e.to_string())
        }
        other => StageError::Failed(other.to_string()),
    }
}

fn wit_tensor(t: FrameTensor) -> Result<crate::instance::Tensor, StageError> {
    let shape = t
        .shape
        .iter()
        .map(|&d| u32::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            StageError::InvalidInput(format!("tensor shape {:?} is too large", t.shape))
        })?;
    Ok(crate::instance::Tensor {
        name: String::new(),
        shape,
        data: t.data,
    })
}

fn wit_transform(t: FrameTransform) -> Transform {
    Transform {
        scale_x: t.scale_x,
        scale_y: t.scale_y,
        offset_x: t.offset_x,
        offset_y: t.offset_y,
    }
}

/// The transform from the operator's output to the original frame. An operator given the
/// frame reports output → frame directly; one given tensors reports output → its input, which
/// is chained with the input's own transform.
fn compose(input: FrameTransform, t: Transform, tensor_input: bool) -> FrameTransform {
    if !tensor_input {
        return FrameTransform {
            scale_x: t.scale_x,
            scale_y: t.scale_y,
            offset_x: t.offset_x,
            offset_y: t.offset_y,
        };
    }
    // dst = in * s2 + o2 and in = src * s1 + o1  =>  dst = src * s1 s2 + o1 s2 + o2.
    FrameTransform {
        scale_x: input.scale_x * t.scale_x,
        scale_y: input.scale_y * t.scale_y,
        offset_x: input.offset_x * t.scale_x + t.offset_x,
        offset_y: input.offset_y * t.scale_y + t.offset_y,
    }
}

fn wit_detection(d: &FrameDetection) -> Detection {
    let [x1, y1, x2, y2] = d.bbox;
    Detection {
        x1,
        y1,
        x2,
        y2,
        score: d.score,
        label: d.label.clone(),
        text: d.text.clone(),
    }
}

/// An operator's detection in frame coordinates. WIT `@0.1.0` carries no track, so boxes an
/// operator returns are untracked (a tracker after it tracks them).
fn frame_detection(d: &Detection, to_frame: FrameTransform) -> FrameDetection {
    let (x1, y1) = to_frame.to_source(d.x1, d.y1);
    let (x2, y2) = to_frame.to_source(d.x2, d.y2);
    FrameDetection {
        bbox: [x1.min(x2), y1.min(y2), x1.max(x2), y1.max(y2)],
        polygon: None,
        label: d.label.clone(),
        score: d.score,
        text: d.text.clone(),
        track: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_transforms_map_through_both_steps() {
        let first = FrameTransform {
            scale_x: 0.5,
            scale_y: 0.5,
            offset_x: 0.0,
            offset_y: 140.0,
        };
        let second = Transform {
            scale_x: 2.0,
            scale_y: 4.0,
            offset_x: 3.0,
            offset_y: -1.0,
        };
        let both = compose(first, second, true);
        // A source point through both steps by hand, then back through the composition.
        let (sx, sy) = (100.0f32, 60.0f32);
        let (ix, iy) = (sx * 0.5, sy * 0.5 + 140.0);
        let (dx, dy) = (ix * 2.0 + 3.0, iy * 4.0 - 1.0);
        let (bx, by) = both.to_source(dx, dy);
        assert!(
            (bx - sx).abs() < 1e-4 && (by - sy).abs() < 1e-4,
            "{bx},{by}"
        );
        assert_eq!(compose(first, second, false).scale_y, 4.0);
    }

    #[test]
    fn digests_compare_with_or_without_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, b"bytes").unwrap();
        let hex = sha256_hex(b"bytes");
        let mut spec = ModuleSpec::new(&path);
        spec.digest = Some(format!("sha256:{}", hex.to_uppercase()));
        assert_eq!(spec.read_checked().unwrap(), b"bytes");
        spec.digest = Some("00".repeat(32));
        let err = spec.read_checked().unwrap_err();
        assert!(matches!(err, WasmError::Digest { .. }), "{err}");
        assert!(err.to_string().contains("m.wasm"), "{err}");
    }

    /// A FIFO nothing ever writes to: a blocking open or read of it never returns.
    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo runs");
        assert!(status.success(), "mkfifo {}", path.display());
    }

    #[test]
    fn a_module_or_key_that_is_not_a_regular_file_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("m.wasm");
        mkfifo(&fifo);
        let err = ModuleSpec::new(&fifo).read_checked().unwrap_err();
        assert!(matches!(err, WasmError::Io { .. }), "{err}");
        assert!(
            err.to_string()
                .ends_with("m.wasm: is a FIFO, not a regular file"),
            "{err}"
        );
        let err = ModuleSpec::new("/dev/zero").read_checked().unwrap_err();
        assert!(err.to_string().contains("is a device"), "{err}");
        // The public key a signature is checked against, and the signature itself.
        let module = dir.path().join("ok.wasm");
        std::fs::write(&module, b"bytes").unwrap();
        let key = dir.path().join("key.pub");
        mkfifo(&key);
        let mut spec = ModuleSpec::new(&module);
        spec.signed_by = Some(key);
        let err = spec.read_checked().unwrap_err();
        assert!(
            err.to_string().contains("is a FIFO, not a regular file"),
            "{err}"
        );
        let missing = read_module(&dir.path().join("nope.wasm")).unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
    }
}
