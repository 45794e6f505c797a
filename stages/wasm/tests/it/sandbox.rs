//! Fault isolation and the sandbox, against the real `misbehave` test operator: a trapping, an
//! endless-loop, a memory-hogging and a sleeping frame each fail with their own error while the
//! other cameras' frames go on; capabilities are denied unless granted.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{load, options, process_frame};
use panoptes_wasm::{
    Capabilities, DirGrant, EngineOptions, FrameResource, OperatorErrorKind, OperatorInstance,
    Output, WasmError,
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

fn instance(options: EngineOptions, config: &str, caps: Capabilities) -> OperatorInstance {
    let (_engine, module) = load("misbehave", options);
    module
        .instantiate_with(config, Arc::new(caps))
        .expect("instantiate misbehave")
}

#[test]
fn each_fault_fails_its_frame_only_and_the_others_go_on() {
    let mut op = instance(
        EngineOptions {
            max_memory_bytes: 64 << 20,
            epoch_tick: Duration::from_millis(2),
            ..options()
        },
        FAULTS,
        Capabilities::default(),
    );
    op.set_deadline(Duration::from_millis(200));
    let mut seq = 0;
    let mut next = |camera: &str| {
        seq += 1;
        frame_of(camera, seq)
    };

    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok v1");

    let trap = process_frame(&mut op, next("cam-trap")).unwrap_err();
    assert!(matches!(trap, WasmError::Trap { .. }), "{trap:?}");
    let text = trap.to_string();
    assert!(text.contains("operator `misbehave` trapped"), "{text}");
    assert!(
        text.contains("deliberate trap on frame 2"),
        "the panic message: {text}"
    );
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok v1");

    let spin = process_frame(&mut op, next("cam-spin")).unwrap_err();
    assert!(
        matches!(spin, WasmError::Timeout { after, .. } if after == Duration::from_millis(200)),
        "{spin:?}"
    );
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok v1");

    let hog = process_frame(&mut op, next("cam-hog")).unwrap_err();
    match &hog {
        WasmError::MemoryLimit {
            limit, requested, ..
        } => {
            assert_eq!(*limit, 64 << 20);
            assert!(requested > limit, "{hog}");
        }
        other => panic!("expected a memory-limit error, got {other:?}"),
    }
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok v1");

    let sleep = process_frame(&mut op, next("cam-sleep")).unwrap_err();
    assert!(matches!(sleep, WasmError::Trap { .. }), "{sleep:?}");
    assert!(sleep.to_string().contains("not granted clocks"), "{sleep}");
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok v1");

    // An error the operator returns itself keeps the instance.
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
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok v1");

    // Trap, spin, hog and sleep each cost one rebuild.
    assert_eq!(op.rebuilds(), 4);
}

#[test]
fn files_are_denied_unless_a_directory_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("table.txt"), b"12345").unwrap();
    let config = r#"{"all": {"read": "/data/table.txt"}}"#;

    let mut denied = instance(options(), config, Capabilities::default());
    let err = process_frame(&mut denied, frame_of("cam-1", 1)).unwrap_err();
    assert!(
        matches!(&err, WasmError::Operator { error, .. } if error.kind == OperatorErrorKind::Internal),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("cannot read /data/table.txt"),
        "{err}"
    );

    let mut granted = instance(
        options(),
        config,
        Capabilities {
            dirs: vec![DirGrant {
                host: dir.path().to_owned(),
                guest: "/data".into(),
                writable: false,
            }],
            ..Capabilities::default()
        },
    );
    assert_eq!(
        label(process_frame(&mut granted, frame_of("cam-1", 1))),
        "read 5 bytes"
    );

    // Only the granted directory: the host's own files stay out of reach.
    let mut outside = instance(
        options(),
        r#"{"all": {"read": "/data/../../etc/hostname"}}"#,
        Capabilities {
            dirs: vec![DirGrant {
                host: dir.path().to_owned(),
                guest: "/data".into(),
                writable: false,
            }],
            ..Capabilities::default()
        },
    );
    assert!(process_frame(&mut outside, frame_of("cam-1", 1)).is_err());
}

#[test]
fn environment_and_clock_are_denied_unless_granted() {
    let make = |config: &str, caps| instance(options(), config, caps);
    common::check_env(&make, "PANOPTES_TEST_SECRET", true);
    common::check_clock(&make);
}

#[test]
fn a_frame_without_pixels_is_reported_not_faked() {
    let mut op = instance(options(), r#"{"all": "trap"}"#, Capabilities::default());
    let mut frame = frame_of("c", 1);
    frame.pixels = None;
    // `misbehave` never reads pixels; the letterbox operator does.
    let (_engine, letterbox) = load("letterbox", options());
    let mut lb = letterbox.instantiate("{}").unwrap();
    let err = process_frame(&mut lb, frame.clone()).unwrap_err();
    assert!(
        err.to_string().contains("only the frame's metadata"),
        "{err}"
    );
    assert!(process_frame(&mut op, frame).is_err());
}
