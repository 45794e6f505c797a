//! Hot reload at the slot level: a watched file swap reaches the stage between two frames, and
//! a reload that fails its checks (signature) or `init` leaves the running module in place.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{operator_path, options, rgb_frame};
use panoptes_client::keys::SecretKey;
use panoptes_contracts::CameraId;
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::stage::{Item, Payload, Stage};
use panoptes_wasm::{
    InstanceSpec, ModuleSpec, OperatorEngine, OperatorSlot, OperatorStage, Reloaded, WasmError,
};

fn item(seq: u64) -> Item {
    let (w, h) = (32, 24);
    Item::from_frame(Frame {
        camera: CameraId::new("cam-1").unwrap(),
        seq,
        capture_ts_ns: 0,
        width: w,
        height: h,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(rgb_frame(w, h)),
    })
}

fn label(stage: &mut OperatorStage, seq: u64) -> String {
    match stage.process(item(seq)).expect("frame").payload {
        Payload::Detections(d) => d[0].label.clone(),
        other => panic!("expected detections, got {}", other.kind()),
    }
}

fn replace(from: &Path, to: &Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

#[test]
fn a_watched_file_swap_reaches_the_stage_between_frames() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("probe.wasm");
    std::fs::copy(operator_path("misbehave"), &module).unwrap();
    let engine = OperatorEngine::new(options()).unwrap();
    let (slot, instance) = OperatorSlot::load(
        "probe",
        engine,
        ModuleSpec::new(&module),
        InstanceSpec::new("{}"),
    )
    .unwrap();
    let watcher = slot.watch(Duration::from_millis(20)).unwrap();
    let mut stage = OperatorStage::new(slot.clone(), instance).with_watcher(watcher);
    assert_eq!(label(&mut stage, 1), "ok v1");

    replace(&operator_path("misbehave-v2"), &module);
    // Frames keep flowing while the watcher notices; none fails.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 2;
    while slot.generation() == 0 {
        assert!(Instant::now() < deadline, "the watcher never reloaded");
        assert_eq!(label(&mut stage, seq), "ok v1");
        seq += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(label(&mut stage, seq), "ok v2");
}

#[test]
fn a_refused_reload_keeps_the_running_module() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("probe.wasm");
    std::fs::copy(operator_path("misbehave"), &module).unwrap();
    let key = SecretKey::generate().unwrap();
    let public = dir.path().join("ops.pub");
    key.public_key().write_new(&public).unwrap();
    key.sign_file(&module).unwrap();
    let spec = ModuleSpec {
        path: module.clone(),
        digest: None,
        signed_by: Some(public),
    };
    let engine = OperatorEngine::new(options()).unwrap();
    let (slot, instance) =
        OperatorSlot::load("probe", engine, spec, InstanceSpec::new("{}")).unwrap();
    let mut stage = OperatorStage::new(slot.clone(), instance);
    assert_eq!(label(&mut stage, 1), "ok v1");
    let sha_v1 = slot.sha256();

    // Unchanged file: nothing to do.
    assert!(matches!(
        slot.reload(None).unwrap(),
        Reloaded::Unchanged { .. }
    ));

    // A new module without a new signature is refused, naming the file.
    replace(&operator_path("misbehave-v2"), &module);
    let err = slot.reload(None).unwrap_err();
    assert!(matches!(err, WasmError::Signature { .. }), "{err:?}");
    assert!(err.to_string().contains("probe.wasm"), "{err}");
    assert_eq!(slot.sha256(), sha_v1);
    assert_eq!(label(&mut stage, 2), "ok v1");

    // Signed, it goes through.
    key.sign_file(&module).unwrap();
    assert!(matches!(
        slot.reload(None).unwrap(),
        Reloaded::Swapped { generation: 1, .. }
    ));
    assert_eq!(label(&mut stage, 3), "ok v2");

    // A module whose init refuses the stage's config is refused too (letterbox rejects
    // misbehave's keys)... with its own signature, so only init can be the reason.
    let letterbox = dir.path().join("letterbox.wasm");
    std::fs::copy(operator_path("letterbox"), &letterbox).unwrap();
    key.sign_file(&letterbox).unwrap();
    let (slot2, instance2) = OperatorSlot::load(
        "probe2",
        OperatorEngine::new(options()).unwrap(),
        ModuleSpec::new(&module),
        InstanceSpec::new(r#"{"faults": {}}"#),
    )
    .unwrap();
    let mut stage2 = OperatorStage::new(slot2.clone(), instance2);
    let err = slot2.reload(Some(&letterbox)).unwrap_err();
    assert!(matches!(err, WasmError::Init { .. }), "{err:?}");
    assert_eq!(label(&mut stage2, 1), "ok v2");
}
