//! Sandbox parity for operators written in JavaScript (componentize-js components with the
//! SpiderMonkey engine inside): the faults JavaScript can express, from
//! `operators/js/fixtures/misbehave.js` (built by `scripts/build-operators.sh` as
//! `misbehave-js`). A loop hits the deadline, a hog the memory cap, thrown errors fail their
//! frame only; the clock is the host's only when granted. (JavaScript in this engine has no
//! file or environment API, even when granted, and no way to make the guest trap on purpose.)

use crate::common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{load, options, process_frame};
use panoptes_wasm::{
    Capabilities, EngineOptions, FrameResource, OperatorEngine, OperatorErrorKind,
    OperatorInstance, OperatorModule, Output, WasmError,
};

const FAULTS: &str = r#"{"faults": {
    "cam-spin": "spin", "cam-hog": "hog", "cam-reject": "reject", "cam-throw": "throw"
}}"#;

fn frame_of(camera: &str, seq: u64) -> FrameResource {
    common::camera_frame(camera, seq)
}

fn label(result: Result<Output, WasmError>) -> String {
    common::first_label(result)
}

fn module() -> &'static OperatorModule {
    static MODULE: OnceLock<(OperatorEngine, OperatorModule)> = OnceLock::new();
    &MODULE
        .get_or_init(|| {
            load(
                "misbehave-js",
                EngineOptions {
                    max_memory_bytes: 96 << 20,
                    epoch_tick: Duration::from_millis(2),
                    max_instances: 8,
                    ..options()
                },
            )
        })
        .1
}

fn instance(config: &str, caps: Capabilities) -> OperatorInstance {
    let mut op = module()
        .instantiate_with(config, Arc::new(caps))
        .expect("instantiate misbehave-js");
    op.set_deadline(Duration::from_millis(500));
    op
}

#[test]
fn each_fault_of_a_javascript_operator_fails_its_frame_only() {
    let mut op = instance(FAULTS, Capabilities::default());
    let mut seq = 0;
    let mut next = |camera: &str| {
        seq += 1;
        frame_of(camera, seq)
    };
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok js");

    let spin = process_frame(&mut op, next("cam-spin")).unwrap_err();
    assert!(
        matches!(spin, WasmError::Timeout { after, .. } if after == Duration::from_millis(500)),
        "{spin:?}"
    );
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok js");

    let hog = process_frame(&mut op, next("cam-hog")).unwrap_err();
    assert!(
        matches!(&hog, WasmError::MemoryLimit { limit, requested, .. } if *limit == 96 << 20 && requested > limit),
        "{hog:?}"
    );
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok js");

    let rebuilds = op.rebuilds();
    let reject = process_frame(&mut op, next("cam-reject")).unwrap_err();
    assert!(
        matches!(&reject, WasmError::Operator { error, .. } if error.kind == OperatorErrorKind::InvalidInput),
        "{reject:?}"
    );
    assert!(reject.to_string().contains("camera cam-reject"), "{reject}");
    let thrown = process_frame(&mut op, next("cam-throw")).unwrap_err();
    assert!(
        matches!(&thrown, WasmError::Operator { error, .. } if error.kind == OperatorErrorKind::Internal && error.message.starts_with("TypeError")),
        "{thrown:?}"
    );
    assert_eq!(op.rebuilds(), rebuilds, "operator errors must not rebuild");
    assert_eq!(label(process_frame(&mut op, next("cam-ok"))), "ok js");
}

#[test]
fn a_javascript_operator_gets_no_environment_and_no_clock_unless_granted() {
    // StarlingMonkey gives scripts no `process.env`: even a granted variable stays out of
    // reach, so JavaScript operators cannot read the environment at all.
    common::check_env(&instance, "HOME", false);
    common::check_clock(&instance);
}
