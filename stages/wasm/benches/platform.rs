//! Benchmark of the operator platform's fixed costs, each against a baseline measured in the
//! same run: pooled instantiation (+ `init`), loading a module from the compiled-module cache
//! versus compiling it, and the `wasi:nn` host-kernel overhead of a model operator versus
//! calling ONNX Runtime directly on the same model.
//!
//! Run: `cargo bench --release -p panoptes-wasm --bench platform` (after
//! `scripts/build-operators.sh` and `models/fetch.sh`). Prints medians; the ratios are what to
//! compare across machines.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use panoptes_contracts::frame::PixelFormat;
use panoptes_contracts::tensor::Tensor as FrameTensor;
use panoptes_model::{Graph, GraphOptions, ModelRegistry};
use panoptes_wasm::{
    Capabilities, EngineOptions, FrameResource, Input, OperatorEngine, Tensor, TensorInput,
    Transform,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    // One warm-up call: first-touch page faults and lazy initialisation are not steady state.
    std::hint::black_box(f());
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dist = root().join("operators/dist");
    let letterbox = dist.join("letterbox.wasm");
    println!("operator platform benchmark (medians; ratios against a baseline of the same run)");

    // Instantiation: a pooled instance plus `init`, for an operator whose init builds resize
    // state (letterbox) and one whose init only parses JSON (misbehave).
    let engine = OperatorEngine::new(EngineOptions::default())?;
    let module = engine.load(&letterbox)?;
    let inst = time(200, || module.instantiate("{}").expect("instantiate"));
    let misbehave = engine.load(dist.join("misbehave.wasm"))?;
    let inst_small = time(200, || misbehave.instantiate("{}").expect("instantiate"));
    println!(
        "pooled instantiate + init: letterbox {:.1} µs, misbehave (no init work) {:.1} µs  (200 runs)",
        inst.as_secs_f64() * 1e6,
        inst_small.as_secs_f64() * 1e6
    );

    // Cold start: a fresh engine (a restarted worker) loading from the cache vs compiling.
    let cache = tempfile::tempdir()?;
    let cached_opts = EngineOptions {
        cache_dir: Some(cache.path().to_owned()),
        max_instances: 4,
        ..EngineOptions::default()
    };
    OperatorEngine::new(cached_opts.clone())?.load(&letterbox)?; // fill the cache
    let bytes = std::fs::read(&letterbox)?;
    let mut compile = Vec::new();
    let mut from_cache = Vec::new();
    for _ in 0..7 {
        let uncached = OperatorEngine::new(EngineOptions {
            max_instances: 4,
            ..EngineOptions::default()
        })?;
        let t = Instant::now();
        uncached.load_bytes(&letterbox, &bytes)?;
        compile.push(t.elapsed());
        let restarted = OperatorEngine::new(cached_opts.clone())?;
        let t = Instant::now();
        let m = restarted.load_bytes(&letterbox, &bytes)?;
        from_cache.push(t.elapsed());
        assert!(m.from_cache());
    }
    let (compile, from_cache) = (median(compile), median(from_cache));
    println!(
        "cold start of letterbox.wasm ({} KiB): compile {:.1} ms, from cache {:.2} ms  ({:.0}x faster; 7 runs)",
        bytes.len() / 1024,
        ms(compile),
        ms(from_cache),
        compile.as_secs_f64() / from_cache.as_secs_f64()
    );

    // Host kernel: the `onnx` model operator through wasi:nn vs a direct ort call, same model,
    // same threads, same input, in turns so drift hits both alike.
    let det = root().join("models/files/ch_PP-OCRv4_det_infer.onnx");
    let opts = GraphOptions {
        threads: 2,
        ..GraphOptions::default()
    };
    let registry = ModelRegistry::new();
    registry.declare("det", &det, None, opts);
    let registry = Arc::new(registry);
    let engine = OperatorEngine::with_models(EngineOptions::default(), Some(registry.clone()))?;
    let onnx = engine.load(dist.join("onnx.wasm"))?;
    let mut op = onnx.instantiate_with(
        r#"{"model": "det"}"#,
        Arc::new(Capabilities {
            models: vec!["det".into()],
            ..Capabilities::default()
        }),
    )?;
    op.set_deadline(Duration::from_secs(10));
    let direct = Graph::load("det", &det, &opts)?;
    let (h, w) = (640usize, 640usize);
    let data: Vec<f32> = (0..3 * h * w)
        .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect();
    let input = Input::Tensors(TensorInput {
        tensors: vec![Tensor {
            name: String::new(),
            shape: vec![1, 3, h as u32, w as u32],
            data: data.clone(),
        }],
        transform: Transform {
            scale_x: 1.0,
            scale_y: 1.0,
            offset_x: 0.0,
            offset_y: 0.0,
        },
    });
    let tensor = FrameTensor::new(vec![1, 3, h, w], data)?;
    let frame = FrameResource {
        camera: "bench".into(),
        seq: 0,
        capture_ts_ns: 0,
        width: 1280,
        height: 720,
        format: PixelFormat::Rgb8,
        pixels: None,
    };
    // Warm both (the operator loads the shared graph on its first frame).
    op.process(frame.clone(), &input)?;
    direct.run_f32(&tensor)?;
    let runs = 15;
    let (mut via_nn, mut via_ort) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(op.process(frame.clone(), &input)?);
        via_nn.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(direct.run_f32(&tensor)?);
        via_ort.push(t.elapsed());
    }
    let (nn, ort) = (median(via_nn), median(via_ort));
    let overhead = nn.as_secs_f64() / ort.as_secs_f64() - 1.0;
    println!(
        "PP-OCRv4 det 640x640, ort CPU 2 threads: via wasi:nn operator {:.1} ms, direct ort {:.1} ms, \
         overhead {:+.1}% (goal < 2%; {runs} alternating runs)",
        ms(nn),
        ms(ort),
        overhead * 100.0
    );
    Ok(())
}
