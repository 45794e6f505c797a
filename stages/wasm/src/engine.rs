//! The process-wide Wasm engine (pooling allocator, epoch ticker) and compiled operator modules.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use panoptes_model::ModelRegistry;

use crate::cache;
use crate::capabilities::Capabilities;
use crate::error::WasmError;
use crate::instance::{HostState, OperatorInstance, OperatorPre, bindings};

/// Wasm pages are 64 KiB; memory limits are rounded up to whole pages.
const WASM_PAGE: usize = 64 * 1024;

/// Settings for the process-wide [`OperatorEngine`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where compiled modules are cached (created if missing). `None` compiles on every load.
    /// Cached artifacts are native code loaded without validation: the directory must be
    /// writable only by this user.
    pub cache_dir: Option<PathBuf>,
    /// Linear-memory cap per operator instance, in bytes.
    pub max_memory_bytes: usize,
    /// Per-call deadline (`init` and each `process`); instances may override it.
    pub deadline: Duration,
    /// Granularity of deadlines: the epoch ticker's period. A call is interrupted between one
    /// and two ticks after its deadline.
    pub epoch_tick: Duration,
    /// Most operator instances alive at once (sizes the pooling allocator).
    pub max_instances: u32,
    /// Bytes of each pooled linear memory reset with memset instead of madvise when an instance
    /// is dropped, so a reused slot does not page-fault its working set back in. The price is
    /// resident memory: every pool slot once used keeps up to this much.
    pub keep_resident_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_memory_bytes: 256 << 20,
            deadline: Duration::from_secs(1),
            epoch_tick: Duration::from_millis(10),
            max_instances: 64,
            keep_resident_bytes: 16 << 20,
        }
    }
}

/// One per process: compiles and caches operator modules and drives deadlines.
#[derive(Clone)]
pub struct OperatorEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: Engine,
    linker: Linker<HostState>,
    options: EngineOptions,
    /// Where `wasi:nn` `load-by-name` finds models; `None` refuses every model.
    models: Option<Arc<ModelRegistry>>,
    /// Kept alive by every module and instance, so deadlines keep firing while any guest can run.
    _ticker: Ticker,
}

impl std::fmt::Debug for OperatorEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorEngine")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl OperatorEngine {
    /// An engine whose operators cannot load models.
    pub fn new(options: EngineOptions) -> Result<Self, WasmError> {
        Self::with_models(options, None)
    }

    /// An engine whose model operators load from `models` (the process's one registry, so
    /// every instance shares each loaded graph).
    pub fn with_models(
        options: EngineOptions,
        models: Option<Arc<ModelRegistry>>,
    ) -> Result<Self, WasmError> {
        if options.max_memory_bytes < WASM_PAGE {
            return Err(WasmError::Options(format!(
                "max_memory_bytes = {} is below one Wasm page ({WASM_PAGE} bytes)",
                options.max_memory_bytes
            )));
        }
        if options.max_memory_bytes > 4 << 30 {
            return Err(WasmError::Options(format!(
                "max_memory_bytes = {} is above the 4 GiB a 32-bit Wasm memory can address",
                options.max_memory_bytes
            )));
        }
        if options.epoch_tick.is_zero() || options.deadline.is_zero() {
            return Err(WasmError::Options(
                "deadline and epoch_tick must be greater than zero".into(),
            ));
        }
        if options.max_instances == 0 {
            return Err(WasmError::Options(
                "max_instances must be at least 1".into(),
            ));
        }

        let max_memory = options.max_memory_bytes.div_ceil(WASM_PAGE) * WASM_PAGE;
        let n = options.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        // A Rust component is one main core module plus a few small shim modules (with tables but
        // no memories); the multipliers leave room for that and for multi-module operators.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            // The store's limiter enforces the exact cap; this bounds each pool slot.
            .max_memory_size(max_memory)
            .linear_memory_keep_resident(options.keep_resident_bytes.min(max_memory));

        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .wasm_simd(true);
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine {
            message: format!("{e:#}"),
        })?;

        let mut linker = Linker::new(&engine);
        // Rust std on wasip2 imports WASI interfaces; they are linked, but the per-store WasiCtx
        // grants no capability.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| deny_clock_waits(&mut linker))
            // The frame resource and `wasi:nn`: every component may import them; which models
            // resolve is decided per instance.
            .and_then(|()| {
                bindings::ModelOperator::add_to_linker::<
                    HostState,
                    wasmtime::component::HasSelf<HostState>,
                >(&mut linker, |state| state)
            })
            .and_then(|()| crate::instance::kernels::add_to_linker(&mut linker))
            .map_err(|e| WasmError::Engine {
                message: format!("cannot link WASI: {e:#}"),
            })?;

        let ticker = Ticker::start(engine.clone(), options.epoch_tick)?;
        Ok(Self {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                options,
                models,
                _ticker: ticker,
            }),
        })
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// Loads an operator component from `path`: deserialised from the cache when a compatible
    /// compiled copy exists, compiled (and cached) otherwise.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<OperatorModule, WasmError> {
        let path = path.as_ref();
        let bytes = crate::stage::read_module(path)?;
        self.load_bytes(path, &bytes)
    }

    /// Like [`load`](Self::load), from bytes already read from `path` (which names the module in
    /// errors and logs). Lets a caller compile exactly the bytes it verified a signature over.
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<OperatorModule, WasmError> {
        let compile_err = |message: String| WasmError::Compile {
            path: path.to_owned(),
            message,
        };
        // Precompiled artifacts are native code; only our own cache may supply them.
        if Engine::detect_precompiled(bytes).is_some() {
            return Err(compile_err(
                "this is a precompiled wasmtime artifact, not a Wasm component; load the .wasm file"
                    .into(),
            ));
        }

        let engine = &self.inner.engine;
        let cached = self
            .inner
            .options
            .cache_dir
            .as_deref()
            .map(|dir| cache::entry_path(dir, bytes, engine));
        let mut from_cache = false;
        let component = match cached.as_deref().and_then(|p| cache::read(engine, p)) {
            Some(component) => {
                from_cache = true;
                component
            }
            None => {
                let component = Component::from_binary(engine, bytes)
                    .map_err(|e| compile_err(format!("{e:#}")))?;
                if let Some(entry) = &cached {
                    cache::write(entry, &component);
                }
                component
            }
        };

        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| compile_err(format!("{e:#}")))?;
        let pre = OperatorPre::new(pre).map_err(|e| {
            compile_err(format!(
                "does not implement the panoptes:operator world: {e:#}"
            ))
        })?;

        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        tracing::debug!(operator = %name, path = %path.display(), from_cache, "loaded operator module");
        Ok(OperatorModule {
            inner: Arc::new(ModuleInner {
                engine: self.inner.clone(),
                name,
                path: path.to_owned(),
                pre,
                from_cache,
            }),
        })
    }
}

/// The WASI monotonic-clock version wasmtime-wasi 48 defines (its `wit/deps/clocks.wit`).
const WASI_MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Replaces WASI's timed waits with traps. Epoch deadlines only interrupt Wasm code, not a host
/// call, so a guest sleeping in `wasi:io/poll` would otherwise hold its worker thread past any
/// deadline. This holds with `grants.clock` too: the grant gives real time to read, not waits.
fn deny_clock_waits(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::StoreContextMut;
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;

    fn denied(what: &str, clock_granted: bool) -> wasmtime::Error {
        let called =
            format!("the operator called {WASI_MONOTONIC_CLOCK}#{what} (sleep or timed wait)");
        if clock_granted {
            wasmtime::format_err!(
                "{called}, but timed waits are not allowed even with `grants.clock`: the grant \
                 gives real time to read, and an epoch deadline cannot interrupt a host call, so \
                 a sleeping operator would hold its worker past its `timeout_ms`"
            )
        } else {
            wasmtime::format_err!(
                "{called}, but this stage is not granted clocks, and timed waits are not allowed \
                 even with `grants.clock` (an epoch deadline cannot interrupt a host call)"
            )
        }
    }
    linker.allow_shadowing(true);
    let mut clock = linker.instance(WASI_MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |store: StoreContextMut<'_, HostState>,
         (_,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(denied("subscribe-duration", store.data().clock_granted))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |store: StoreContextMut<'_, HostState>,
         (_,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(denied("subscribe-instant", store.data().clock_granted))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A compiled operator, ready to instantiate cheaply (linking is done once, here). Cloning is
/// cheap and shares the compiled code.
#[derive(Clone)]
pub struct OperatorModule {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    engine: Arc<EngineInner>,
    name: String,
    path: PathBuf,
    pre: OperatorPre,
    from_cache: bool,
}

impl std::fmt::Debug for OperatorModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorModule")
            .field("name", &self.inner.name)
            .field("path", &self.inner.path)
            .field("from_cache", &self.inner.from_cache)
            .finish()
    }
}

impl OperatorModule {
    /// The operator's name: the module's file stem (`letterbox` for `letterbox.wasm`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the compiled code came from the on-disk cache rather than a fresh compilation.
    pub fn from_cache(&self) -> bool {
        self.inner.from_cache
    }

    /// Creates an instance with no capabilities and calls the operator's `init` with
    /// `config_json`.
    pub fn instantiate(&self, config_json: &str) -> Result<OperatorInstance, WasmError> {
        self.instantiate_with(config_json, Arc::new(Capabilities::default()))
    }

    /// Like [`instantiate`](Self::instantiate), granting `capabilities`.
    pub fn instantiate_with(
        &self,
        config_json: &str,
        capabilities: Arc<Capabilities>,
    ) -> Result<OperatorInstance, WasmError> {
        OperatorInstance::new(self.clone(), config_json, capabilities)
    }

    /// The engine's model registry, for `wasi:nn`.
    pub(crate) fn models(&self) -> Option<Arc<ModelRegistry>> {
        self.inner.engine.models.clone()
    }

    pub(crate) fn epoch_tick(&self) -> Duration {
        self.inner.engine.options.epoch_tick
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine.engine
    }

    pub(crate) fn pre(&self) -> &OperatorPre {
        &self.inner.pre
    }

    pub(crate) fn max_memory_bytes(&self) -> usize {
        self.inner.engine.options.max_memory_bytes
    }

    pub(crate) fn engine_deadline(&self) -> Duration {
        self.inner.engine.options.deadline
    }

    /// Epoch ticks for `deadline`. The epoch may advance right after the deadline is set, so one
    /// extra tick guarantees the guest gets at least `deadline`.
    pub(crate) fn deadline_ticks(&self, deadline: Duration) -> u64 {
        deadline_ticks(deadline, self.inner.engine.options.epoch_tick)
    }
}

/// See [`OperatorModule::deadline_ticks`]. Capped (at centuries of ticks) because wasmtime adds
/// the delta to the current epoch without saturating.
fn deadline_ticks(deadline: Duration, tick: Duration) -> u64 {
    let ticks = deadline.as_nanos().div_ceil(tick.as_nanos().max(1)).max(1);
    u64::try_from(ticks).unwrap_or(u64::MAX).min(1 << 48) + 1
}

/// Background thread advancing the engine's epoch every tick; stops when dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Self, WasmError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                // Dropping the sender disconnects the channel and ends the loop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .map_err(|e| WasmError::Engine {
                message: format!("cannot start the epoch ticker thread: {e}"),
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_to_whole_ticks_plus_one() {
        let tick = Duration::from_millis(10);
        assert_eq!(deadline_ticks(Duration::from_millis(1), tick), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(10), tick), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(11), tick), 3);
        assert_eq!(deadline_ticks(Duration::MAX, tick), (1 << 48) + 1);
    }

    #[test]
    fn rejects_unusable_options() {
        for options in [
            EngineOptions {
                max_memory_bytes: 1000,
                ..Default::default()
            },
            EngineOptions {
                deadline: Duration::ZERO,
                ..Default::default()
            },
            EngineOptions {
                max_instances: 0,
                ..Default::default()
            },
        ] {
            let err = OperatorEngine::new(options).unwrap_err();
            assert!(matches!(err, WasmError::Options(_)), "{err}");
        }
    }
}
