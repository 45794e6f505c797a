//! Sandbox parity for operators written in Python (componentize-py components with the
//! interpreter inside): the Rust `misbehave` fixture's probes against `misbehave-py`, built from
//! `operators/python/fixtures/misbehave.py` by `scripts/build-operators.sh`. Each fault fails its
//! frame only; files, environment and clock are denied unless granted; hot reload swaps a Rust
//! module for a Python one between two frames; a signature is required like for any module.

use crate::common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{load, operator_path, options, process_frame, rgb_frame};
use panoptes_client::keys::{self, SecretKey, SignatureError};
use panoptes_contracts::frame::{PixelBuffer, PixelFormat};
use panoptes_wasm::{
    Capabilities, DirGrant, EngineOptions, FrameResource, InstanceSpec, ModuleSpec, OperatorEngine,
    OperatorErrorKind, OperatorInstance, OperatorModule, OperatorSlot, OperatorStage, Output,
    WasmError,
};

const FAULTS: &str = r#"{"faults": {
    "cam-trap": "trap", "cam-spin": "spin", "cam-hog": "hog", "cam-sleep": "sleep",
    "cam-reject": "reject"
}}"#;

fn frame_of(camera: &str, seq: u64) -> FrameResource {
    common::camera_frame(camera, seq)
}

fn label(result: Result<Output, WasmError>) -> String {
    common::first_label(result)
}

/// An interpreter needs more than a Rust operator: the cap is what `memory_mib` documents.
fn python_options() -> EngineOptions {
    EngineOptions {
        max_memory_bytes: 96 << 20,
        epoch_tick: Duration::from_millis(2),
        ..options()
    }
}

/// Compiled once for the whole file: compiling the interpreter takes seconds.
fn module() -> &'static OperatorModule {
    static MODULE: OnceLock<(OperatorEngine, OperatorModule)> = OnceLock::new();
    &MODULE
        .get_or_init(|| {
            load(
                "misbehave-py",
                EngineOptions {
                    max_instances: 16,
                    ..python_options()
                },
            )
        })
        .1
}

fn instance(config: &str, caps: Capabilities) -> OperatorInstance {
    let mut op = module()
        .instantiate_with(config, Arc::new(caps))
        .expect("instantiate misbehave-py");
    op.set_deadline(Duration::from_millis(500));
    op
}

#[test]
fn each_fault_of_a_python_operator_fails_its_frame_only() {
    let mut op = instance(FAULTS, Capabilities::default());
    let mut seq = 0;
    let mut next = |camera: &str| {
        seq += 1;
        frame_of(camera, seq)
    };
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok py");

    let trap = process_frame(&mut op, next("cam-trap")).unwrap_err();
    assert!(matches!(trap, WasmError::Trap { .. }), "{trap:?}");
    assert!(
        trap.to_string().contains("operator `misbehave-py` trapped"),
        "{trap}"
    );
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok py");

    let spin = process_frame(&mut op, next("cam-spin")).unwrap_err();
    assert!(
        matches!(spin, WasmError::Timeout { after, .. } if after == Duration::from_millis(500)),
        "{spin:?}"
    );
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok py");

    // The interpreter turns the refused growth into MemoryError; the host still names the cap.
    let hog = process_frame(&mut op, next("cam-hog")).unwrap_err();
    match &hog {
        WasmError::MemoryLimit {
            limit, requested, ..
        } => {
            assert_eq!(*limit, 96 << 20);
            assert!(requested > limit, "{hog}");
        }
        other => panic!("expected a memory-limit error, got {other:?}"),
    }
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok py");

    let sleep = process_frame(&mut op, next("cam-sleep")).unwrap_err();
    assert!(
        sleep.to_string().contains("not granted clocks"),
        "{sleep:?}"
    );
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok py");

    let rebuilds = op.rebuilds();
    let reject = process_frame(&mut op, next("cam-reject")).unwrap_err();
    assert!(
        matches!(&reject, WasmError::Operator { error, .. } if error.kind == OperatorErrorKind::InvalidInput),
        "{reject:?}"
    );
    assert!(reject.to_string().contains("camera cam-reject"), "{reject}");
    assert_eq!(
        op.rebuilds(),
        rebuilds,
        "an operator error must not rebuild"
    );
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok py");
}

#[test]
fn a_python_operator_gets_no_file_environment_or_clock_unless_granted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("table.txt"), b"12345").unwrap();
    let read = r#"{"all": {"read": "/data/table.txt"}}"#;
    let mut denied = instance(read, Capabilities::default());
    let err = process_frame(&mut denied, frame_of("c", 1)).unwrap_err();
    assert!(
        matches!(&err, WasmError::Operator { error, .. } if error.kind == OperatorErrorKind::Internal),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("cannot read /data/table.txt"),
        "{err}"
    );
    let grant = || Capabilities {
        dirs: vec![DirGrant {
            host: dir.path().to_owned(),
            guest: "/data".into(),
            writable: false,
        }],
        ..Capabilities::default()
    };
    let mut granted = instance(read, grant());
    assert_eq!(
        label(process_frame(&mut granted, frame_of("c", 1))),
        "read 5 bytes"
    );
    let mut outside = instance(r#"{"all": {"read": "/data/../../etc/hostname"}}"#, grant());
    assert!(process_frame(&mut outside, frame_of("c", 1)).is_err());
    let mut host_file = instance(r#"{"all": {"read": "/etc/passwd"}}"#, grant());
    assert!(process_frame(&mut host_file, frame_of("c", 1)).is_err());

    // The host's environment is not the guest's: only granted variables are there.
    common::check_env(&instance, "HOME", true);
    common::check_clock(&instance);
}

#[test]
fn a_rust_operator_is_hot_swapped_for_a_python_one_between_frames() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("probe.wasm");
    std::fs::copy(operator_path("misbehave"), &module).unwrap();
    let engine = OperatorEngine::new(python_options()).unwrap();
    let (slot, instance) = OperatorSlot::load(
        "probe",
        engine,
        ModuleSpec::new(&module),
        InstanceSpec::new("{}"),
    )
    .unwrap();
    let watcher = slot.watch(Duration::from_millis(20)).unwrap();
    let mut stage = OperatorStage::new(slot.clone(), instance).with_watcher(watcher);
    let item = |seq| {
        panoptes_contracts::stage::Item::from_frame(panoptes_contracts::frame::Frame {
            camera: panoptes_contracts::CameraId::new("cam-1").unwrap(),
            seq,
            capture_ts_ns: 0,
            width: 32,
            height: 24,
            format: PixelFormat::Rgb8,
            pixels: PixelBuffer::from_vec(rgb_frame(32, 24)),
        })
    };
    let mut label_of = |seq| match panoptes_contracts::stage::Stage::process(&mut stage, item(seq))
        .expect("frame")
        .payload
    {
        panoptes_contracts::stage::Payload::Detections(d) => d[0].label.clone(),
        other => panic!("expected detections, got {}", other.kind()),
    };
    assert_eq!(label_of(1), "ok v1");
    let staged = module.with_extension("staged");
    std::fs::copy(operator_path("misbehave-py"), &staged).unwrap();
    std::fs::rename(&staged, &module).unwrap();
    // Compiling the interpreter takes seconds; frames go on with the old module meanwhile.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seq = 2;
    loop {
        let label = label_of(seq);
        if label == "ok py" {
            break;
        }
        assert_eq!(label, "ok v1", "frame {seq}");
        assert!(
            Instant::now() < deadline,
            "the Python module never took over"
        );
        seq += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_python_operator_needs_its_signature_like_any_module() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("misbehave-py.wasm");
    std::fs::copy(operator_path("misbehave-py"), &module).unwrap();
    let secret = dir.path().join("key");
    let public = keys::generate_key_files(&secret).unwrap();
    SecretKey::read(&secret)
        .unwrap()
        .sign_file(&module)
        .unwrap();
    let bytes = keys::verify_file(&module, &public).expect("verifies");
    assert_eq!(bytes, std::fs::read(operator_path("misbehave-py")).unwrap());
    let mut op = instance("{}", Capabilities::default());
    assert_eq!(label(process_frame(&mut op, frame_of("c", 1))), "ok py");

    // One byte changed anywhere in the interpreter: refused before compiling.
    let mut tampered = bytes.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    std::fs::write(&module, &tampered).unwrap();
    assert!(
        matches!(
            keys::verify_file(&module, &public),
            Err(SignatureError::Mismatch { .. })
        ),
        "a tampered module verified"
    );
}
