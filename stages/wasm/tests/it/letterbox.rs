//! End-to-end tests of the host against the real `letterbox` operator component, checked against
//! the same preprocessing code run natively.
//!
//! Needs `operators/dist/letterbox.wasm` (or `$PANOPTES_OPERATOR_DIR/letterbox.wasm`): run
//! `scripts/build-operators.sh` first.

use crate::common;

use std::time::Duration;

use common::{first_tensor, load as load_named, max_abs_diff, process_frame, rgb, rgb_frame};
use panoptes_op_preprocess::letterbox_normalize;
use panoptes_wasm::{EngineOptions, OperatorEngine, OperatorErrorKind, OperatorModule, WasmError};

const CONFIG: &str =
    r#"{"width":640,"height":640,"mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225]}"#;
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

fn operator_path() -> std::path::PathBuf {
    common::operator_path("letterbox")
}

fn options() -> EngineOptions {
    common::options()
}

fn load(options: EngineOptions) -> (OperatorEngine, OperatorModule) {
    load_named("letterbox", options)
}

fn frame(width: u32, height: u32) -> Vec<u8> {
    rgb_frame(width, height)
}

#[test]
fn wasm_output_matches_native_preprocessing() {
    let (_engine, module) = load(options());
    let mut instance = module.instantiate(CONFIG).expect("instantiate");
    let (w, h) = (1280, 720);
    let pixels = frame(w, h);

    let (out, transform) =
        first_tensor(process_frame(&mut instance, rgb(w, h, 1, &pixels)).expect("process"));

    let mut native = Vec::new();
    let t = letterbox_normalize(&pixels, w, h, 640, 640, MEAN, STD, &mut native).unwrap();
    assert_eq!(out.shape, vec![1, 3, 640, 640]);
    assert_eq!(out.data.len(), native.len());
    let max_diff = max_abs_diff(&out.data, &native);
    let differing = out.data.iter().zip(&native).filter(|(a, b)| a != b).count();
    eprintln!("wasm vs native: max abs diff {max_diff}, {differing} values not bit-identical");
    assert!(max_diff <= 1e-5, "max abs diff {max_diff} > 1e-5");

    let transform = transform.expect("letterbox reports its transform");
    assert_eq!(transform.scale_x, t.scale_x);
    assert_eq!(transform.scale_y, t.scale_y);
    assert_eq!((transform.offset_x, transform.offset_y), (0.0, 0.0));

    // The instance is reused: a second frame gives the same answer.
    let (again, _) =
        first_tensor(process_frame(&mut instance, rgb(w, h, 2, &pixels)).expect("process"));
    assert_eq!(again.data, out.data);
}

#[test]
fn invalid_input_fails_the_frame_only() {
    let (_engine, module) = load(options());
    let mut instance = module.instantiate("{}").expect("instantiate with defaults");
    let pixels = frame(320, 240);

    let err = instance
        .process(
            rgb(320, 240, 1, &pixels[..pixels.len() - 3]),
            &panoptes_wasm::Input::Frame,
        )
        .unwrap_err();
    match &err {
        WasmError::Operator { operator, error } => {
            assert_eq!(operator, "letterbox");
            assert_eq!(error.kind, OperatorErrorKind::InvalidInput);
            assert!(error.message.contains("230397 bytes"), "{err}");
        }
        other => panic!("expected an invalid-input operator error, got {other:?}"),
    }
    assert!(!err.is_fatal_to_instance());
    let text = err.to_string();
    assert!(text.contains("invalid input"), "{text}");
    assert!(text.contains("frame 1 of camera cam-1"), "{text}");

    let out = instance
        .process(rgb(320, 240, 2, &pixels), &panoptes_wasm::Input::Frame)
        .expect("still works");
    assert_eq!(first_tensor(out).0.shape, vec![1, 3, 640, 640]);
    assert_eq!(instance.rebuilds(), 0, "an operator error must not rebuild");
}

#[test]
fn bad_config_is_an_init_error() {
    let (_engine, module) = load(options());
    let err = module.instantiate(r#"{"widht": 320}"#).unwrap_err();
    assert!(matches!(err, WasmError::Init { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("rejected its configuration"), "{text}");
    assert!(text.contains("unknown field `widht`"), "{text}");
}

#[test]
fn compiled_module_cache_is_hit_on_second_load() {
    let cache = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        cache_dir: Some(cache.path().join("compiled")),
        ..options()
    };
    let engine = OperatorEngine::new(opts.clone()).unwrap();
    let started = std::time::Instant::now();
    let first = engine.load(operator_path()).unwrap();
    let compiled_in = started.elapsed();
    assert!(!first.from_cache(), "empty cache cannot hit");
    let started = std::time::Instant::now();
    let second = engine.load(operator_path()).unwrap();
    let cached_in = started.elapsed();
    assert!(
        second.from_cache(),
        "second load should deserialise the cached artifact"
    );
    eprintln!("load: compiled in {compiled_in:?}, from cache in {cached_in:?}");

    // A fresh engine with the same configuration (a restarted worker) also hits.
    let restarted = OperatorEngine::new(opts).unwrap();
    let third = restarted.load(operator_path()).unwrap();
    assert!(third.from_cache());

    let pixels = frame(640, 480);
    let a = first
        .instantiate(CONFIG)
        .unwrap()
        .process(rgb(640, 480, 1, &pixels), &panoptes_wasm::Input::Frame)
        .unwrap();
    let b = third
        .instantiate(CONFIG)
        .unwrap()
        .process(rgb(640, 480, 1, &pixels), &panoptes_wasm::Input::Frame)
        .unwrap();
    assert_eq!(a, b);

    // A corrupted entry is ignored and replaced, never fatal.
    let entries: Vec<_> = std::fs::read_dir(cache.path().join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "one entry, no stray temp files: {entries:?}"
    );
    std::fs::write(&entries[0], b"garbage").unwrap();
    let reloaded = engine.load(operator_path()).unwrap();
    assert!(!reloaded.from_cache());
    assert!(engine.load(operator_path()).unwrap().from_cache());
}

/// The letterbox runs in the host's kernel on the frame the host holds, and its tensor stays
/// on the host: the operator's linear memory holds neither the frame nor the tensor.
#[test]
fn the_letterbox_kernel_keeps_frame_and_tensor_out_of_guest_memory() {
    let (_engine, module) = load(options());
    let mut instance = module
        .instantiate(r#"{"width":2048,"height":2048}"#)
        .unwrap();
    let pixels = frame(1920, 1080);
    let out = instance
        .process(rgb(1920, 1080, 1, &pixels), &panoptes_wasm::Input::Frame)
        .expect("process");
    let tensor_bytes = first_tensor(out).0.data.len() * 4;
    assert_eq!(tensor_bytes, 3 * 2048 * 2048 * 4);
    let guest = instance.memory_bytes();
    assert!(
        guest < pixels.len() && guest < tensor_bytes / 8,
        "guest memory {guest} bytes: the frame ({}) or the tensor ({tensor_bytes}) went in",
        pixels.len()
    );
}

/// The host's kernel works for the operator, so its time counts against the operator's
/// deadline: a 2048x2048 letterbox is far past 1 ms.
#[test]
fn timeout_is_reported_and_the_instance_recovers() {
    let (_engine, module) = load(EngineOptions {
        epoch_tick: Duration::from_millis(1),
        ..options()
    });
    let mut instance = module
        .instantiate(r#"{"width":2048,"height":2048}"#)
        .unwrap();
    let pixels = frame(1280, 720);
    instance.set_deadline(Duration::from_millis(1));
    let err = instance
        .process(rgb(1280, 720, 1, &pixels), &panoptes_wasm::Input::Frame)
        .unwrap_err();
    assert!(
        matches!(err, WasmError::Timeout { after, .. } if after == Duration::from_millis(1)),
        "{err:?}"
    );
    assert!(err.is_fatal_to_instance());
    assert!(err.to_string().contains("deadline"), "{err}");

    instance.set_deadline(Duration::from_secs(30));
    let out = instance
        .process(rgb(1280, 720, 2, &pixels), &panoptes_wasm::Input::Frame)
        .expect("rebuilt instance works");
    assert_eq!(first_tensor(out).0.shape, vec![1, 3, 2048, 2048]);
    assert_eq!(instance.rebuilds(), 1);
}

#[test]
fn memory_limit_is_reported_as_such() {
    let (_engine, module) = load(EngineOptions {
        max_memory_bytes: 64 << 20,
        ..options()
    });
    // 3 x 4096 x 4096 f32 = 192 MiB of output: over the 64 MiB cap.
    let mut big = module
        .instantiate(r#"{"width":4096,"height":4096}"#)
        .unwrap();
    let pixels = frame(1280, 720);
    let err = big
        .process(rgb(1280, 720, 1, &pixels), &panoptes_wasm::Input::Frame)
        .unwrap_err();
    match &err {
        WasmError::MemoryLimit {
            limit, requested, ..
        } => {
            assert_eq!(*limit, 64 << 20);
            assert!(*requested > *limit);
        }
        other => panic!("expected a memory-limit error, got {other:?}"),
    }
    assert!(err.to_string().contains("memory"), "{err}");

    // Other instances of the same module are unaffected.
    let mut small = module.instantiate(CONFIG).unwrap();
    small
        .process(rgb(1280, 720, 2, &pixels), &panoptes_wasm::Input::Frame)
        .unwrap();

    // A per-instance cap below the engine's also holds, and can be lifted again.
    let mut capped = module.instantiate(CONFIG).unwrap();
    assert!(
        capped.set_max_memory_bytes(128 << 20).is_err(),
        "above the engine cap"
    );
    capped.set_max_memory_bytes(2 << 20).unwrap();
    let err = capped
        .process(rgb(1280, 720, 3, &pixels), &panoptes_wasm::Input::Frame)
        .unwrap_err();
    assert!(
        matches!(err, WasmError::MemoryLimit { limit, .. } if limit == 2 << 20),
        "{err:?}"
    );
    capped.set_max_memory_bytes(64 << 20).unwrap();
    capped
        .process(rgb(1280, 720, 4, &pixels), &panoptes_wasm::Input::Frame)
        .unwrap();
    assert_eq!(capped.rebuilds(), 1);
}

#[test]
fn load_errors_name_the_file() {
    let engine = OperatorEngine::new(options()).unwrap();
    let missing = engine.load("/nonexistent/operator.wasm").unwrap_err();
    assert!(matches!(missing, WasmError::Io { .. }), "{missing:?}");
    assert!(
        missing.to_string().contains("/nonexistent/operator.wasm"),
        "{missing}"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").unwrap();
    let err = engine.load(&junk).unwrap_err();
    assert!(matches!(err, WasmError::Compile { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.wasm"), "{err}");
}
