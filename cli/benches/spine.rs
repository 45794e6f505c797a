//! Per-frame cost of every step of the quickstart path, and end-to-end frames/s for one camera.
//!
//! `cargo bench -p panoptes --bench spine` (after scripts/setup.sh). Prints medians over repeated
//! runs and ratios against baselines measured in this same run (native vs Wasm preprocessing, sum
//! of steps vs end to end). Options: `cargo bench -p panoptes --bench spine -- --help`.

use anyhow::Context as _;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use panoptes::runner::{Role, Running};
use panoptes_client::{DetectionSubscriber, Received};
use panoptes_contracts::CameraId;
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::stage::{Item, Payload, Stage};
use panoptes_ingest::{Ingest, SourceSpec, SourceStatus};
use panoptes_model::{Graph, GraphOptions};
use panoptes_op_preprocess::{Letterbox, Normalize};
use panoptes_postprocess::DbStage;
use panoptes_topology::TopologyFile;
use panoptes_wasm::{EngineOptions, FrameResource, Input, OperatorEngine, Output};

const W: u32 = 1280;
const H: u32 = 720;
const MEAN: [f32; 3] = [0.5; 3];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    std::hint::black_box(f()); // warm-up
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

fn row(step: &str, d: Duration, runs: usize, note: &str) {
    println!("{step:<42} {:>9.3} ms  (median of {runs}){note}", ms(d));
}

fn row_mean(step: &str, d: Duration, frames: u32) {
    println!(
        "{step:<42} {:>9.3} ms  (mean over a {frames}-frame run)",
        ms(d)
    );
}

/// Frames from GStreamer: render (videotestsrc + textoverlay), convert I420 -> RGB, pull.
fn ingest_per_frame(frames: u32) -> anyhow::Result<(Duration, Vec<u8>)> {
    panoptes_ingest::init()?;
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern=solid-color foreground-color=0xff203040 \
         ! video/x-raw,format=I420,width={W},height={H},framerate=1000/1 \
         ! textoverlay text=\"PANOPTES ALPHA\" font-desc=\"Sans Bold 36\""
    );
    let (tx, rx) = mpsc::channel();
    let done = tx.clone();
    let started = Instant::now();
    let ingest = Ingest::start(
        &SourceSpec::Pipeline(desc),
        move |f| {
            let _ = tx.send(Some(f.data));
        },
        move |s| {
            if matches!(s, SourceStatus::Eos | SourceStatus::Error(_)) {
                let _ = done.send(None);
            }
        },
    )?;
    let mut last = Vec::new();
    let mut n = 0u32;
    while let Ok(Some(data)) = rx.recv_timeout(Duration::from_secs(60)) {
        last = data;
        n += 1;
    }
    let elapsed = started.elapsed();
    ingest.stop();
    anyhow::ensure!(n > 0, "ingest produced no frames");
    Ok((elapsed / n, last))
}

/// Per-frame cost of every step of the quickstart path, and end-to-end frames/s for one camera.
#[derive(clap::Parser)]
struct Args {
    /// Seconds of the end-to-end run.
    #[arg(long, env = "SPINE_E2E_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    e2e_secs: u64,
    #[command(flatten)]
    cargo: panoptes_tests::CargoBench,
}

fn main() -> anyhow::Result<()> {
    let e2e_secs = <Args as clap::Parser>::parse().e2e_secs;
    println!(
        "panoptes spine benchmark: {W}x{H} RGB frames -> 640x640 PP-OCRv4 det, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{}", "-".repeat(78));

    let (ingest, pixels) = ingest_per_frame(100)?;
    row_mean("ingest: render + I420->RGB + appsink pull", ingest, 100);

    let camera = CameraId::new("bench")?;
    let frame = Frame {
        camera,
        seq: 1,
        capture_ts_ns: 0,
        width: W,
        height: H,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(pixels),
    };
    let encode = time(50, || frame.encode().expect("encode"));
    row("arrow: encode frame (IPC stream)", encode, 50, "");
    let bytes = frame.encode()?;
    let decode = time(200, || {
        Frame::decode(bytes.clone(), Some("bench")).expect("decode")
    });
    row("arrow: decode frame (zero-copy)", decode, 200, "");

    let mut native = Letterbox::new(640, 640, Normalize::new(MEAN, MEAN)?)?;
    let mut out = Vec::new();
    let native_t = time(30, || {
        native
            .run(frame.pixels.as_slice(), W, H, &mut out)
            .expect("native")
    });
    row("preprocess: letterbox+normalise, native", native_t, 30, "");

    let engine = OperatorEngine::new(EngineOptions::default())?;
    let module = engine.load(root().join("operators/dist/letterbox.wasm"))?;
    let mut op = module
        .instantiate(r#"{"width":640,"height":640,"mean":[0.5,0.5,0.5],"std":[0.5,0.5,0.5]}"#)?;
    let resource = FrameResource::from_frame(&frame);
    let wasm_t = time(30, || {
        op.process(resource.clone(), &Input::Frame).expect("wasm")
    });
    row(
        "preprocess: same code as Wasm operator",
        wasm_t,
        30,
        &format!(
            "  -> {:.2}x native",
            wasm_t.as_secs_f64() / native_t.as_secs_f64()
        ),
    );
    let Output::Tensors(out) = op.process(resource, &Input::Frame)? else {
        anyhow::bail!("letterbox returned no tensor");
    };
    let tensor_out = out
        .tensors
        .into_iter()
        .next()
        .context("letterbox returned no tensor")?;

    let model_path = root().join("models/files/ch_PP-OCRv4_det_infer.onnx");
    let shape = tensor_out.shape.iter().map(|&d| d as usize).collect();
    let input = panoptes_contracts::Tensor::new(shape, tensor_out.data)?;
    let model = Graph::load("det", &model_path, &GraphOptions::default())?;
    let model_t = time(10, || model.run_f32(&input).expect("model"));
    row("model: PP-OCRv4 det 640x640, ort CPU", model_t, 10, "");
    let prob = model.run_f32(&input)?;

    let mut db = DbStage::from_config("boxes", &serde_json::Value::Null, None)?;
    let mut boxes = 0;
    let post_t = time(50, || {
        let mut item = Item::from_frame(frame.clone());
        item.payload = Payload::Tensor(prob.clone());
        let out = db.process(item).expect("postprocess");
        if let Payload::Detections(d) = out.payload {
            boxes = d.len();
        }
    });
    row(
        "postprocess: DB boxes (incl. map clone)",
        post_t,
        50,
        &format!("  ({boxes} boxes)"),
    );

    let sum = encode + decode + wasm_t + model_t + post_t;
    println!(
        "{:<42} {:>9.3} ms  -> {:.1} frames/s if steps ran back to back",
        "sum of worker-side steps",
        ms(sum),
        1.0 / sum.as_secs_f64()
    );

    // End to end: one camera at 30 fps through a real nats-server; live mode keeps the newest
    // frame, so the detection rate is what the worker sustains.
    let rt = tokio::runtime::Runtime::new()?;
    let (fps, latency) = rt.block_on(async {
        let mut topology = TopologyFile::load(&root().join("topologies/quickstart.yaml"))?;
        topology.cameras.truncate(1);
        topology.cameras[0].fps = 30;
        let running = Running::start(&topology, None, Role::All).await?;
        let client = panoptes::connect(&running.nats_url).await?;
        let mut sub = DetectionSubscriber::new(&client, &running.subjects, None).await?;
        // Skip start-up (model warm-up, first frames).
        let warm = Instant::now();
        while warm.elapsed() < Duration::from_secs(3) {
            let _ = tokio::time::timeout(Duration::from_secs(1), sub.next()).await;
        }
        let (start, mut n, mut lat) = (Instant::now(), 0u32, Vec::new());
        while start.elapsed() < Duration::from_secs(e2e_secs) {
            if let Ok(Some(Received::Message(m))) =
                tokio::time::timeout(Duration::from_secs(1), sub.next()).await
            {
                n += 1;
                lat.push(Duration::from_nanos(
                    m.published_ts_ns.saturating_sub(m.capture_ts_ns),
                ));
            }
        }
        let fps = f64::from(n) / start.elapsed().as_secs_f64();
        drop(sub);
        let summary = running.stop().await?;
        println!("end to end: {summary:?}");
        anyhow::ensure!(!lat.is_empty(), "no detections end to end");
        anyhow::Ok((fps, median(lat)))
    })?;
    println!(
        "{:<42} {:>9.2} frames/s  (1 camera @30 fps offered, {e2e_secs} s; median capture->publish latency {:.1} ms)",
        "end to end",
        fps,
        ms(latency)
    );
    println!(
        "{:<42} {:>9.2}       (end-to-end fps / back-to-back-steps fps)",
        "pipeline efficiency",
        fps * sum.as_secs_f64()
    );
    Ok(())
}
