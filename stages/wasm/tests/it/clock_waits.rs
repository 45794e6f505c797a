//! Timed waits stay refused when a stage is granted real clocks, and the refusal says so and
//! why: with `grants.clock` the old message ("operators are not granted clocks") was false and
//! sent users looking for a grant they already had. Against the real `misbehave` operator,
//! whose `sleep` fault calls `std::thread::sleep` (a `wasi:clocks` timed wait).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{load, options, process_frame, rgb_frame};
use panoptes_contracts::frame::{PixelBuffer, PixelFormat};
use panoptes_wasm::{Capabilities, FrameResource, OperatorInstance, WasmError};

fn sleeper(caps: Capabilities) -> OperatorInstance {
    let (_engine, module) = load("misbehave", options());
    let mut op = module
        .instantiate_with(r#"{"all": "sleep"}"#, Arc::new(caps))
        .expect("instantiate misbehave");
    // Failure guard only: the refusal is immediate; a sleep that got through would take 10 s.
    op.set_deadline(Duration::from_secs(5));
    op
}

fn frame() -> FrameResource {
    FrameResource {
        camera: "cam-sleep".into(),
        seq: 1,
        capture_ts_ns: 0,
        width: 8,
        height: 8,
        format: PixelFormat::Rgb8,
        pixels: Some(PixelBuffer::from_vec(rgb_frame(8, 8))),
    }
}

fn refusal(caps: Capabilities) -> String {
    let mut op = sleeper(caps);
    let err = process_frame(&mut op, frame()).expect_err("a sleeping operator must fail");
    assert!(matches!(err, WasmError::Trap { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn sleeping_with_the_clock_granted_is_refused_as_a_timed_wait_not_a_missing_grant() {
    let text = refusal(Capabilities {
        clock: true,
        ..Capabilities::default()
    });
    assert!(
        !text.contains("not granted clocks"),
        "the stage has the clock: {text}"
    );
    assert!(
        text.contains("timed waits are not allowed even with `grants.clock`"),
        "{text}"
    );
    assert!(
        text.contains("an epoch deadline cannot interrupt a host call"),
        "the reason: {text}"
    );
    assert!(
        text.contains("subscribe-duration"),
        "what was called: {text}"
    );
}

#[test]
fn sleeping_without_the_clock_names_both_the_missing_grant_and_the_rule() {
    let text = refusal(Capabilities::default());
    assert!(text.contains("not granted clocks"), "{text}");
    assert!(
        text.contains("timed waits are not allowed even with `grants.clock`"),
        "so that granting the clock is not tried as the fix: {text}"
    );
}
