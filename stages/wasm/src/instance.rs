//! A live operator instance: its sandboxed store, the per-call deadline and memory cap, and the
//! mapping of guest results and traps onto [`WasmError`].

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use panoptes_contracts::frame::{PixelBuffer, PixelFormat as FrameFormat};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::Capabilities;
use crate::engine::OperatorModule;
use crate::error::{OperatorError, OperatorErrorKind, WasmError};
use crate::nn::NnState;

pub(crate) mod kernels;
mod state;
mod world;
use state::StateExports;

pub(crate) mod bindings {
    //! Host bindings generated from the `panoptes:operator` WIT worlds. `model-operator`
    //! includes `operator`, so one set of bindings serves both kinds of component.
    wasmtime::component::bindgen!({
        world: "model-operator",
        path: "../../operators/wit",
        imports: { default: trappable },
        additional_derives: [PartialEq],
        with: {
            "panoptes:operator/types.frame": crate::instance::FrameResource,
            "wasi:nn/tensor.tensor": crate::nn::NnTensor,
            "wasi:nn/graph.graph": crate::nn::NnGraph,
            "wasi:nn/inference.graph-execution-context": crate::nn::NnContext,
            "wasi:nn/errors.error": crate::nn::NnError,
        },
    });
}

use bindings::panoptes::operator::types as wit;
use world::Bindings;
pub(crate) use world::OperatorPre;

pub use wit::{
    Detection, Image, Input, Output, PixelFormat, Tensor, TensorInput, TensorOutput, Transform,
};

/// The frame an operator call is about, as the guest's `frame` resource: metadata plus the
/// pixel buffer, which is shared with the pipeline (never copied unless the guest asks).
#[derive(Debug, Clone)]
pub struct FrameResource {
    pub camera: String,
    pub seq: u64,
    pub capture_ts_ns: u64,
    pub width: u32,
    pub height: u32,
    pub format: FrameFormat,
    /// `None` where the stage has only the frame's metadata; a guest asking for pixels then
    /// traps with a message that says so.
    pub pixels: Option<PixelBuffer>,
}

impl FrameResource {
    pub fn from_frame(frame: &panoptes_contracts::frame::Frame) -> Self {
        Self {
            camera: frame.camera.to_string(),
            seq: frame.seq,
            capture_ts_ns: frame.capture_ts_ns,
            width: frame.width,
            height: frame.height,
            format: frame.format,
            pixels: Some(frame.pixels.clone()),
        }
    }
}

pub(crate) fn wit_format(format: FrameFormat) -> PixelFormat {
    match format {
        FrameFormat::Rgb8 => PixelFormat::Rgb8,
        FrameFormat::Nv12 => PixelFormat::Nv12,
        FrameFormat::I420 => PixelFormat::I420,
        FrameFormat::Jpeg => PixelFormat::Jpeg,
    }
}

pub(crate) fn frame_format(format: PixelFormat) -> FrameFormat {
    match format {
        PixelFormat::Rgb8 => FrameFormat::Rgb8,
        PixelFormat::Nv12 => FrameFormat::Nv12,
        PixelFormat::I420 => FrameFormat::I420,
        PixelFormat::Jpeg => FrameFormat::Jpeg,
    }
}

/// How much of the guest's stdout/stderr (panic messages, mostly) is kept to explain a trap.
const OUTPUT_TAIL_BYTES: usize = 4096;

/// One operator instance, owned by one worker stream. Not shared between threads while in use
/// (`process` takes `&mut self`), but may be moved between them.
pub struct OperatorInstance {
    module: OperatorModule,
    config: String,
    capabilities: Arc<Capabilities>,
    deadline: Duration,
    max_memory_bytes: usize,
    /// `None` after a trap: the guest's state is unknown, so it is rebuilt on the next call.
    live: Option<Live>,
    rebuilds: u64,
    /// The module exports the stateful world's functions (`instance/state.rs`).
    stateful: bool,
}

struct Live {
    store: Store<HostState>,
    bindings: Bindings,
    /// The `panoptes:operator@0.2.0` exports of a stateful operator.
    state: Option<StateExports>,
}

impl std::fmt::Debug for OperatorInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorInstance")
            .field("operator", &self.module.name())
            .field("deadline", &self.deadline)
            .field("live", &self.live.is_some())
            .field("rebuilds", &self.rebuilds)
            .finish()
    }
}

impl OperatorInstance {
    pub(crate) fn new(
        module: OperatorModule,
        config: &str,
        capabilities: Arc<Capabilities>,
    ) -> Result<Self, WasmError> {
        let deadline = module.engine_deadline();
        let max_memory_bytes = module.max_memory_bytes();
        let mut instance = Self {
            module,
            config: config.to_owned(),
            capabilities,
            deadline,
            max_memory_bytes,
            live: None,
            rebuilds: 0,
            stateful: false,
        };
        let live = instance.start()?;
        instance.stateful = live.state.is_some();
        instance.live = Some(live);
        Ok(instance)
    }

    /// The operator's name (its module's file stem).
    pub fn name(&self) -> &str {
        self.module.name()
    }

    /// The module this instance runs.
    pub fn module(&self) -> &OperatorModule {
        &self.module
    }

    /// Per-call deadline on the guest's own running time (time spent in host kernels such as
    /// `wasi:nn` compute is not counted); defaults to the engine's [`EngineOptions::deadline`].
    ///
    /// [`EngineOptions::deadline`]: crate::EngineOptions::deadline
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Overrides the per-call deadline for this instance (e.g. from the topology).
    pub fn set_deadline(&mut self, deadline: Duration) {
        self.deadline = deadline;
    }

    /// Linear-memory cap; defaults to the engine's [`EngineOptions::max_memory_bytes`].
    ///
    /// [`EngineOptions::max_memory_bytes`]: crate::EngineOptions::max_memory_bytes
    pub fn max_memory_bytes(&self) -> usize {
        self.max_memory_bytes
    }

    /// Lowers (or restores) the memory cap for this instance, e.g. from the topology. It applies
    /// to growth from now on; memory the guest already has is kept. Cannot exceed the engine's
    /// cap, which sizes the pool slots.
    pub fn set_max_memory_bytes(&mut self, bytes: usize) -> Result<(), WasmError> {
        let engine_max = self.module.max_memory_bytes();
        if bytes > engine_max {
            return Err(WasmError::Options(format!(
                "operator `{}`: memory cap of {bytes} bytes is above the engine's cap of \
                 {engine_max} bytes",
                self.name()
            )));
        }
        self.max_memory_bytes = bytes;
        if let Some(live) = &mut self.live {
            live.store.data_mut().limiter.limit = bytes;
        }
        Ok(())
    }

    /// How many times the guest was rebuilt after a trap, timeout or memory-limit failure.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Bytes of linear memory the live guest holds, all its memories together (0 before the
    /// first call and after a failure discarded it): what `memory_mib` must leave room for.
    pub fn memory_bytes(&self) -> usize {
        self.live
            .as_ref()
            .map_or(0, |live| live.store.data().limiter.reserved)
    }

    /// Runs the operator on one frame. A returned error fails this frame only: after a trap,
    /// timeout or memory-limit failure the guest is discarded and transparently rebuilt (with the
    /// same configuration) on the next call.
    pub fn process(&mut self, frame: FrameResource, input: &Input) -> Result<Output, WasmError> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => {
                let live = self.start()?;
                self.rebuilds += 1;
                live
            }
        };
        live.store.data_mut().begin_call();
        live.store
            .set_epoch_deadline(self.module.deadline_ticks(self.deadline));
        let own = live
            .store
            .data_mut()
            .table
            .push(frame)
            .map_err(|e| WasmError::Instantiate {
                operator: self.name().to_owned(),
                message: format!("cannot hand the frame to the operator: {e}"),
            })?;
        let borrow = Resource::<FrameResource>::new_borrow(own.rep());
        let result = live.bindings.call_process(&mut live.store, borrow, input);
        let _ = live.store.data_mut().table.delete(own);
        self.flush_logs(&live.store);
        match result {
            Ok(Ok(output)) => {
                self.live = Some(live);
                Ok(output)
            }
            // The guest caught a refused allocation (Python's MemoryError) and answered with
            // an error: still the memory cap's doing, and its memory stays at the cap, so the
            // instance is rebuilt like after a trap.
            Ok(Err(_)) if live.store.data().limiter.exceeded.is_some() => {
                let state = live.store.data();
                Err(WasmError::MemoryLimit {
                    operator: self.name().to_owned(),
                    limit: state.limiter.limit,
                    requested: state.limiter.exceeded.unwrap_or_default(),
                })
            }
            Ok(Err(error)) => {
                self.live = Some(live);
                Err(WasmError::Operator {
                    operator: self.name().to_owned(),
                    error: operator_error(error),
                })
            }
            // `live` is dropped here: its memory goes back to the pool.
            Err(err) => Err(self.classify(err, live.store.data())),
        }
    }

    /// Instantiates the guest in a fresh sandboxed store and runs `init` with the configuration.
    fn start(&self) -> Result<Live, WasmError> {
        let operator = self.name().to_owned();
        let state = HostState::new(
            self.max_memory_bytes,
            &self.capabilities,
            self.module.models(),
            self.module.epoch_tick(),
        )
        .map_err(|message| WasmError::Instantiate {
            operator: operator.clone(),
            message,
        })?;
        let mut store = Store::new(self.module.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            // Time the guest spent waiting on host kernels is credited back; only its own
            // running time counts against the deadline.
            let credit = std::mem::take(&mut ctx.data_mut().kernel_credit_ticks);
            if credit > 0 {
                Ok(UpdateDeadline::Continue(credit))
            } else {
                Err(wasmtime::Trap::Interrupt.into())
            }
        });
        store.set_epoch_deadline(self.module.deadline_ticks(self.deadline));
        let instantiated = self
            .module
            .pre()
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                let bindings = Bindings::new(self.module.pre(), &mut store, &instance)?;
                Ok((instance, bindings))
            });
        let (instance, bindings) = match instantiated {
            Ok(both) => both,
            Err(err) => {
                if store.data().limiter.exceeded.is_some() {
                    return Err(self.classify(err, store.data()));
                }
                return Err(WasmError::Instantiate {
                    operator,
                    message: format!("{err:#}"),
                });
            }
        };
        let state = StateExports::find(&mut store, &instance).map_err(|message| {
            WasmError::Instantiate {
                operator: operator.clone(),
                message,
            }
        })?;
        store.data_mut().begin_call();
        let result = bindings.call_init(&mut store, &self.config);
        self.flush_logs(&store);
        match result {
            Ok(Ok(())) => Ok(Live {
                store,
                bindings,
                state,
            }),
            Ok(Err(error)) => Err(WasmError::Init {
                operator,
                message: operator_error(error).to_string(),
            }),
            Err(err) => Err(self.classify(err, store.data())),
        }
    }

    /// Forwards what the guest printed to the host log, when the topology granted `logs`.
    fn flush_logs(&self, store: &Store<HostState>) {
        if !self.capabilities.logs {
            return;
        }
        let text = store.data().output.text();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(operator = %self.name(), "{line}");
        }
    }

    /// Turns a wasmtime error from a guest call into the precise failure.
    fn classify(&self, err: wasmtime::Error, state: &HostState) -> WasmError {
        let operator = self.name().to_owned();
        if let Some(&wasmtime::Trap::Interrupt) = err.downcast_ref::<wasmtime::Trap>() {
            return WasmError::Timeout {
                operator,
                after: self.deadline,
            };
        }
        // A refused memory.grow usually ends in the guest's allocator aborting, which is an
        // ordinary trap; the limiter remembers why.
        if let Some(requested) = state.limiter.exceeded {
            return WasmError::MemoryLimit {
                operator,
                limit: state.limiter.limit,
                requested,
            };
        }
        // Most useful first: what happened, then what the guest printed (a panic message,
        // usually), then where it was.
        let mut message = match err.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            // A host function refused the call; its error is the root of the chain.
            None => err
                .chain()
                .last()
                .map_or_else(|| err.to_string(), |cause| cause.to_string()),
        };
        let output = state.output.text();
        if !output.trim().is_empty() {
            message.push_str("\nguest output (tail):\n");
            message.push_str(output.trim());
        }
        if let Some(backtrace) = err.downcast_ref::<wasmtime::WasmBacktrace>() {
            message.push_str(&format!("\n{backtrace}"));
        }
        WasmError::Trap { operator, message }
    }
}

fn operator_error(error: wit::Error) -> OperatorError {
    let (kind, message) = match error {
        wit::Error::InvalidConfig(m) => (OperatorErrorKind::InvalidConfig, m),
        wit::Error::InvalidInput(m) => (OperatorErrorKind::InvalidInput, m),
        wit::Error::Internal(m) => (OperatorErrorKind::Internal, m),
    };
    OperatorError { kind, message }
}

impl wit::Host for HostState {}

impl wit::HostFrame for HostState {
    fn camera(&mut self, frame: Resource<FrameResource>) -> wasmtime::Result<String> {
        Ok(self.table.get(&frame)?.camera.clone())
    }

    fn seq(&mut self, frame: Resource<FrameResource>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&frame)?.seq)
    }

    fn capture_ts_ns(&mut self, frame: Resource<FrameResource>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&frame)?.capture_ts_ns)
    }

    fn width(&mut self, frame: Resource<FrameResource>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&frame)?.width)
    }

    fn height(&mut self, frame: Resource<FrameResource>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&frame)?.height)
    }

    fn format(&mut self, frame: Resource<FrameResource>) -> wasmtime::Result<PixelFormat> {
        Ok(wit_format(self.table.get(&frame)?.format))
    }

    fn byte_len(&mut self, frame: Resource<FrameResource>) -> wasmtime::Result<u64> {
        let frame = self.table.get(&frame)?;
        Ok(frame.pixels.as_ref().map_or(0, |p| p.len() as u64))
    }

    fn pixels(&mut self, frame: Resource<FrameResource>) -> wasmtime::Result<Vec<u8>> {
        let frame = self.table.get(&frame)?;
        let pixels = frame.pixels.as_ref().ok_or_else(|| no_pixels(frame))?;
        Ok(pixels.as_slice().to_vec())
    }

    fn read(
        &mut self,
        frame: Resource<FrameResource>,
        offset: u64,
        len: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        let frame = self.table.get(&frame)?;
        let pixels = frame.pixels.as_ref().ok_or_else(|| no_pixels(frame))?;
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(start, len)| Some(start..start.checked_add(len)?))
            .filter(|r| r.end <= pixels.len());
        Ok(match range {
            Some(r) => Ok(pixels.as_slice()[r].to_vec()),
            None => Err(format!(
                "bytes {offset}..{} are outside the {}-byte pixel buffer",
                offset.saturating_add(len),
                pixels.len()
            )),
        })
    }

    fn drop(&mut self, frame: Resource<FrameResource>) -> wasmtime::Result<()> {
        // Borrowed frames are removed by the host after the call; nothing owns them in Wasm.
        if frame.owned() {
            self.table.delete(frame)?;
        }
        Ok(())
    }
}

fn no_pixels(frame: &FrameResource) -> wasmtime::Error {
    wasmtime::format_err!(
        "the operator asked for the pixels of frame {} of camera {}, but this stage has only \
         the frame's metadata",
        frame.seq,
        frame.camera
    )
}

/// Per-store host state: a WASI context with only the granted capabilities, the memory cap,
/// the frame and `wasi:nn` resources, and the deadline credit for time spent in host kernels.
pub(crate) struct HostState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    limiter: MemoryLimiter,
    output: OutputTail,
    pub(crate) nn: NnState,
    kernels: kernels::KernelState,
    /// Epoch ticks spent inside host kernels during the current call, handed back to the guest
    /// by the deadline callback.
    pub(crate) kernel_credit_ticks: u64,
    pub(crate) epoch_tick: Duration,
    /// Whether the stage was granted real clocks, so that a refused timed wait can say that
    /// the grant does not extend to sleeping.
    pub(crate) clock_granted: bool,
}

impl HostState {
    fn new(
        max_memory_bytes: usize,
        capabilities: &Capabilities,
        models: Option<Arc<panoptes_model::ModelRegistry>>,
        epoch_tick: Duration,
    ) -> Result<Self, String> {
        let output = OutputTail::default();
        let mut builder = WasiCtx::builder();
        // The builder's defaults already deny preopens, env, args, stdin, sockets and name
        // lookup; the explicit calls document that intent and guard against default changes.
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(output.clone())
            .stderr(output.clone());
        if !capabilities.clock {
            builder.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        for (key, value) in &capabilities.env {
            builder.env(key, value);
        }
        capabilities.preopen(&mut builder)?;
        Ok(Self {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: max_memory_bytes,
                exceeded: None,
                reserved: 0,
            },
            output,
            nn: NnState::new(models, &capabilities.models),
            kernels: kernels::KernelState::default(),
            kernel_credit_ticks: 0,
            epoch_tick,
            clock_granted: capabilities.clock,
        })
    }

    fn begin_call(&mut self) {
        self.limiter.exceeded = None;
        self.kernel_credit_ticks = 0;
        // A trap report should show what this call printed, not earlier frames' output.
        self.output.clear();
    }

    /// Credits `elapsed` (spent in a host kernel) back to the guest's deadline.
    pub(crate) fn credit_kernel_time(&mut self, elapsed: Duration) {
        let tick = self.epoch_tick.as_nanos().max(1);
        let ticks = u64::try_from(elapsed.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX);
        self.kernel_credit_ticks = self.kernel_credit_ticks.saturating_add(ticks);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory per store, and records a refused growth so that the trap that usually
/// follows can be reported as [`WasmError::MemoryLimit`].
struct MemoryLimiter {
    limit: usize,
    exceeded: Option<usize>,
    /// Linear memory granted so far, over every memory of the store.
    reserved: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = Some(desired);
            // Refuse rather than trap: memory.grow returns -1 and a guest that handles allocation
            // failure can still answer with an error.
            return Ok(false);
        }
        self.reserved = self
            .reserved
            .saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Table size is bounded by the pooling allocator's `table_elements`.
        Ok(true)
    }
}

/// Clocks that always read zero: operators get no time source unless `clock` is granted.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Guest stdout/stderr sink that keeps only the last few KiB, so a panic message can be attached
/// to the trap it causes without letting a chatty guest grow host memory.
#[derive(Clone, Default)]
struct OutputTail(Arc<Mutex<Vec<u8>>>);

impl OutputTail {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = &bytes[bytes.len().saturating_sub(OUTPUT_TAIL_BYTES)..];
        let overflow = (buf.len() + bytes.len()).saturating_sub(OUTPUT_TAIL_BYTES);
        buf.drain(..overflow);
        buf.extend_from_slice(bytes);
    }

    fn text(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl IsTerminal for OutputTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputTail {
    async fn ready(&mut self) {}
}

impl OutputStream for OutputTail {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: old output is discarded instead of blocking the guest.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for OutputTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_tail_keeps_the_last_bytes() {
        let tail = OutputTail::default();
        tail.push(&vec![b'a'; OUTPUT_TAIL_BYTES]);
        tail.push(b"panicked at boom");
        let text = tail.text();
        assert_eq!(text.len(), OUTPUT_TAIL_BYTES);
        assert!(text.ends_with("panicked at boom"));
        tail.push(&vec![b'z'; 3 * OUTPUT_TAIL_BYTES]);
        assert_eq!(tail.text(), "z".repeat(OUTPUT_TAIL_BYTES));
    }

    #[test]
    fn memory_limiter_refuses_and_remembers() {
        let mut l = MemoryLimiter {
            reserved: 0,
            limit: 1 << 20,
            exceeded: None,
        };
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(l.exceeded, None);
        assert_eq!(l.reserved, 1 << 20);
        assert!(!l.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert_eq!(l.exceeded, Some(2 << 20));
    }
}
