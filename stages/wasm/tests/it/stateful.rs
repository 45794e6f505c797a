//! Stateful operators (world `panoptes:operator/stateful-operator@0.2.0`), on the `tally`
//! operator in Rust and in Python (`tally-py`, the same state format): a camera's state leaves
//! one instance and continues in another; a state the guest cannot read is refused by name; a
//! stage carries every camera's state across a hot reload, from Rust to Python too, and drops
//! it on `forget`; operators of the 0.1.0 worlds keep no state.

/// The two builds of tally.
const TALLIES: [&str; 2] = ["tally", "tally-py"];

use crate::common;

use common::{camera_frame, load, operator_path, options, process_frame, rgb_frame};
use panoptes_contracts::CameraId;
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::stage::{IdRange, Item, Payload, Stage};
use panoptes_wasm::{
    InstanceSpec, ModuleSpec, OperatorEngine, OperatorInstance, OperatorSlot, OperatorStage,
    Output, Reloaded, WasmError,
};

/// The counts tally reported for a frame: the text of its last box.
fn counts(output: Result<Output, WasmError>) -> serde_json::Value {
    match output.expect("the frame should succeed") {
        Output::Detections(d) => {
            let last = d.last().expect("the tally box");
            assert_eq!(last.label, "tally");
            serde_json::from_str(last.text.as_deref().expect("text")).expect("JSON counts")
        }
        other => panic!("expected detections, got {}", common::output_kind(&other)),
    }
}

fn frames(output: Result<Output, WasmError>) -> u64 {
    counts(output)["frames"].as_u64().expect("frames")
}

fn tally(module: &panoptes_wasm::OperatorModule) -> OperatorInstance {
    InstanceSpec::new("{}").instantiate(module).expect("tally")
}

const IDS: IdRange = IdRange { first: 1, end: 100 };

#[test]
fn a_cameras_state_continues_in_another_instance() {
    for name in TALLIES {
        continues_in_another_instance(name);
    }
}

fn continues_in_another_instance(name: &str) {
    let (_engine, module) = load(name, options());
    let mut a = tally(&module);
    assert!(a.is_stateful());
    for seq in 1..=3 {
        assert_eq!(
            frames(process_frame(&mut a, camera_frame("cam-a", seq))),
            seq
        );
    }
    assert_eq!(frames(process_frame(&mut a, camera_frame("cam-b", 1))), 1);
    let saved = a
        .snapshot("cam-a")
        .expect("snapshot")
        .expect("cam-a has state");
    assert_eq!(a.snapshot("cam-c").expect("snapshot"), None);

    let mut b = tally(&module);
    b.restore("cam-a", Some(&saved), IDS).expect("restore");
    b.restore("cam-b", None, IDS).expect("fresh start");
    assert_eq!(frames(process_frame(&mut b, camera_frame("cam-a", 4))), 4);
    assert_eq!(frames(process_frame(&mut b, camera_frame("cam-b", 2))), 1);

    b.forget("cam-a").expect("forget");
    assert_eq!(b.snapshot("cam-a").expect("snapshot"), None);
}

#[test]
fn a_state_the_operator_cannot_read_is_refused_by_name() {
    for name in TALLIES {
        refused_by_name(name);
    }
}

fn refused_by_name(name: &str) {
    let (_engine, module) = load(name, options());
    let mut t = tally(&module);
    let old = br#"{"version":0,"counts":{"frames":9,"labels":{}}}"#;
    match t.restore("cam-a", Some(old), IDS) {
        Err(WasmError::StateRefused { operator, message }) => {
            assert_eq!(operator, name);
            assert!(message.contains("version 0"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The guest is unharmed: a fresh start and frames work.
    t.restore("cam-a", None, IDS).expect("fresh start");
    assert_eq!(frames(process_frame(&mut t, camera_frame("cam-a", 1))), 1);
}

#[test]
fn operators_of_the_first_world_keep_no_state() {
    let (_engine, module) = load("zonefilter", options());
    let mut z = InstanceSpec::new("{}")
        .instantiate(&module)
        .expect("zonefilter");
    assert!(!z.is_stateful());
    assert_eq!(z.snapshot("cam-a").expect("snapshot"), None);
    z.restore("cam-a", Some(b"anything"), IDS)
        .expect("nothing to restore");
    z.forget("cam-a").expect("forget");
}

fn item(camera: &str, seq: u64) -> Item {
    let (w, h) = (32, 24);
    Item::from_frame(Frame {
        camera: CameraId::new(camera).expect("camera"),
        seq,
        capture_ts_ns: seq,
        width: w,
        height: h,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(rgb_frame(w, h)),
    })
}

fn stage_frames(stage: &mut OperatorStage, camera: &str, seq: u64) -> u64 {
    match stage.process(item(camera, seq)).expect("frame").payload {
        Payload::Detections(d) => {
            let text = d.last().and_then(|d| d.text.clone()).expect("tally text");
            let counts: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            counts["frames"].as_u64().expect("frames")
        }
        other => panic!("expected detections, got {}", other.kind()),
    }
}

/// The same component with a custom section appended: other bytes (so a reload swaps), the
/// same behaviour.
fn rebuilt_copy(from: &std::path::Path, to: &std::path::Path) {
    let mut bytes = std::fs::read(from).expect("read");
    let name = b"panoptes-test";
    let payload = b"another build";
    bytes.push(0); // custom section
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    std::fs::write(to, bytes).expect("write");
}

#[test]
fn a_stage_carries_every_cameras_state_across_a_hot_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("tally.wasm");
    std::fs::copy(operator_path("tally"), &module).expect("copy");
    let engine = OperatorEngine::new(options()).expect("engine");
    let (slot, instance) = OperatorSlot::load(
        "count",
        engine,
        ModuleSpec::new(&module),
        InstanceSpec::new("{}"),
    )
    .expect("load");
    let mut stage = OperatorStage::new(slot.clone(), instance)
        .snapshot_every(std::time::Duration::from_millis(500));
    assert_eq!(
        stage.snapshot_interval(),
        Some(std::time::Duration::from_millis(500))
    );
    let (a, b) = (
        CameraId::new("cam-a").unwrap(),
        CameraId::new("cam-b").unwrap(),
    );
    stage.restore(&a, None, IDS).expect("tenure of cam-a");
    stage.restore(&b, None, IDS).expect("tenure of cam-b");
    for seq in 1..=5 {
        assert_eq!(stage_frames(&mut stage, "cam-a", seq), seq);
    }
    assert_eq!(stage_frames(&mut stage, "cam-b", 1), 1);

    let next = dir.path().join("tally-rebuilt.wasm");
    rebuilt_copy(&module, &next);
    assert!(matches!(
        slot.reload(Some(&next)).expect("reload"),
        Reloaded::Swapped { .. }
    ));
    // The new module goes on counting where the old one was, per camera.
    assert_eq!(stage_frames(&mut stage, "cam-a", 6), 6);
    assert_eq!(stage_frames(&mut stage, "cam-b", 2), 2);
    let saved = stage.snapshot(&a).expect("state of cam-a");
    assert!(String::from_utf8_lossy(&saved).contains(r#""frames":6"#));

    // And from Rust to Python: the same state format, so the counts go on.
    slot.reload(Some(&operator_path("tally-py")))
        .expect("reload to Python");
    assert_eq!(stage_frames(&mut stage, "cam-a", 7), 7);
    assert_eq!(stage_frames(&mut stage, "cam-b", 3), 3);

    stage.forget(&a);
    assert_eq!(stage.snapshot(&a), None);
    assert!(stage.snapshot(&b).is_some());
}
