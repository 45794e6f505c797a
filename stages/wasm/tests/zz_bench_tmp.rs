use std::time::Instant;
use panoptes_wasm::*;
#[test]
fn bench() {
    let engine = OperatorEngine::new(EngineOptions { max_instances: 4, ..Default::default() }).unwrap();
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../operators/dist/letterbox.wasm");
    let m = engine.load(&p).unwrap();
    let t = Instant::now();
    for _ in 0..100 { drop(m.instantiate("{}").unwrap()); }
    eprintln!("instantiate+init+drop: {:?}", t.elapsed() / 100);
    let mut inst = m.instantiate("{}").unwrap();
    let (w, h) = (1280u32, 720u32);
    let px: Vec<u8> = (0..w * h * 3).map(|i| (i * 31 % 251) as u8).collect();
    let info = FrameInfo { camera: "c".into(), seq: 0, width: w, height: h, format: PixelFormat::Rgb8 };
    for _ in 0..5 { inst.process(&info, &px).unwrap(); }
    let n = 100;
    let t = Instant::now();
    for _ in 0..n { std::hint::black_box(inst.process(&info, &px).unwrap()); }
    let wasm = t.elapsed() / n;
    let norm = panoptes_op_preprocess::Normalize::new([0.5; 3], [0.5; 3]).unwrap();
    let mut lb = panoptes_op_preprocess::Letterbox::new(640, 640, norm).unwrap();
    let mut out = Vec::new();
    for _ in 0..5 { lb.run(&px, w, h, &mut out).unwrap(); }
    let t = Instant::now();
    for _ in 0..n { let mut out = Vec::new(); lb.run(&px, w, h, &mut out).unwrap(); std::hint::black_box(out); }
    let native_fresh = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n { lb.run(&px, w, h, &mut out).unwrap(); std::hint::black_box(&out); }
    let native = t.elapsed() / n;
    eprintln!("process wasm {wasm:?}  native(reused out) {native:?} native(fresh out) {native_fresh:?}");
}
