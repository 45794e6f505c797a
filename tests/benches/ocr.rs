//! Panoptes' OCR topology against RapidOCR, the tool users would pick instead, in the same run
//! on the same frames: frames per second, word recall and precision of both, and the ratio.
//!
//! - Frames: rendered by `ocr_rapidocr.py render` (Pillow): signs and plates in eight DejaVu
//!   faces, 20–60 px, light or dark backgrounds with a gradient and noise, lines rotated by up
//!   to 3°, alternately 960×540 and 640×480. The text of each line is the truth.
//! - RapidOCR: `rapidocr-onnxruntime` 1.4.4 (the wheel Panoptes' models come from, so the same
//!   det, cls and rec files), default settings, one frame after another as its README calls it,
//!   in a venv this bench creates under `~/.cache/panoptes/rapidocr-venv` (from PyPI).
//! - Panoptes: `topologies/ocr.yaml`'s stages in a real worker on a real nats-server. The frames
//!   arrive as `frame/v1` from `--cameras` cameras, each publishing its next frame when the
//!   detections of the last one arrive (one frame in flight per camera, so nothing is dropped
//!   and the frames of different cameras can share batches). Twice per round, each on a fresh
//!   pipeline: as the file says (the detector's input shaped to each frame), and with a fixed
//!   640×640 letterbox. Each start is timed to its first detection message (models and Wasm
//!   modules cached, one frame in flight), then one untimed pass warms every stage.
//! - Score per frame: words are the whitespace-separated tokens of the lines; matched words are
//!   counted as a multiset (case-sensitive). Recall = matched ÷ true words, precision = matched
//!   ÷ words read. "Lines read" ignores spaces: a true line whose characters were read exactly,
//!   however they were split into words.
//!
//! Rounds alternate RapidOCR and Panoptes; medians and the ratio are printed at the end.
//!
//! ```text
//! source ~/.cache/panoptes/env.sh
//! export CARGO_TARGET_DIR=/root/.cache/panoptes/target
//! cargo bench -p panoptes-tests --bench ocr                    # 48 frames, 5 rounds
//! cargo bench -p panoptes-tests --bench ocr -- --frames 24 --rounds 3 --show
//! ```
//!
//! Nothing here asserts a speed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser as _;
use futures::StreamExt as _;
use panoptes::runner::{Role, Running};
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::{CameraId, DetectionMessage, Subjects};
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_tests::browser::Rgba;
use panoptes_tests::median_f64;
use panoptes_topology::TopologyFile;

/// The wheel `models/fetch.sh` takes the PP-OCR models from.
const RAPIDOCR: &str = "rapidocr-onnxruntime==1.4.4";

#[derive(clap::Parser, Debug)]
struct Options {
    /// Frames rendered (half 960×540, half 640×480).
    #[arg(long, env = "PANOPTES_BENCH_FRAMES", default_value_t = 48)]
    frames: usize,
    /// Rounds over all frames, per side.
    #[arg(long, env = "PANOPTES_BENCH_ROUNDS", default_value_t = 5)]
    rounds: usize,
    /// Panoptes cameras the frames are spread over (one frame in flight each).
    #[arg(long, env = "PANOPTES_BENCH_CAMERAS", default_value_t = 4)]
    cameras: usize,
    /// Seed of the rendered scene.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Print every frame whose lines either side read otherwise than the truth.
    #[arg(long)]
    show: bool,
    /// cargo bench passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The rendered frames and their true lines, in name order.
struct Scene {
    names: Vec<String>,
    frames: Vec<(u32, u32, Vec<u8>)>,
    truth: Vec<Vec<String>>,
}

/// Words matched, true and read, and lines read (spaces ignored), summed over frames.
#[derive(Default, Clone, Copy)]
struct Score {
    matched: usize,
    truth: usize,
    read: usize,
    lines: usize,
    lines_read: usize,
}

impl Score {
    fn of(truth: &[Vec<String>], found: &[Vec<String>]) -> Self {
        let mut s = Score::default();
        for (t, f) in truth.iter().zip(found) {
            let mut want: HashMap<&str, usize> = HashMap::new();
            for w in t.iter().flat_map(|l| l.split_whitespace()) {
                *want.entry(w).or_default() += 1;
                s.truth += 1;
            }
            for w in f.iter().flat_map(|l| l.split_whitespace()) {
                s.read += 1;
                if let Some(n) = want.get_mut(w).filter(|n| **n > 0) {
                    *n -= 1;
                    s.matched += 1;
                }
            }
            let squeeze = |l: &String| l.split_whitespace().collect::<String>();
            let got: Vec<String> = f.iter().map(squeeze).collect();
            s.lines += t.len();
            s.lines_read += t.iter().filter(|l| got.contains(&squeeze(l))).count();
        }
        s
    }

    fn recall(&self) -> f64 {
        self.matched as f64 / self.truth.max(1) as f64
    }

    fn precision(&self) -> f64 {
        self.matched as f64 / self.read.max(1) as f64
    }

    fn line_recall(&self) -> f64 {
        self.lines_read as f64 / self.lines.max(1) as f64
    }
}

/// The bench's venv with RapidOCR, created (from PyPI) when missing; its python.
fn rapidocr_python() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let cache = Path::new(&home).join(".cache/panoptes");
    let venv = cache.join("rapidocr-venv");
    let python = venv.join("bin/python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", "import rapidocr_onnxruntime, cv2, PIL"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready(&python) {
        return Ok(python);
    }
    eprintln!("creating {} with {RAPIDOCR} (PyPI)", venv.display());
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    // The wheel models/fetch.sh downloaded is used when it is there.
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--find-links"])
        .arg(cache.join("wheels"))
        .arg(RAPIDOCR))?;
    if !ready(&python) {
        bail!("{} cannot import rapidocr_onnxruntime", python.display());
    }
    Ok(python)
}

fn run(cmd: &mut Command) -> anyhow::Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn load_scene(dir: &Path) -> anyhow::Result<Scene> {
    let truth: HashMap<String, Vec<String>> =
        serde_json::from_slice(&std::fs::read(dir.join("truth.json"))?)?;
    let mut names: Vec<String> = truth.keys().cloned().collect();
    names.sort();
    let mut frames = Vec::with_capacity(names.len());
    for name in &names {
        let png = std::fs::read(dir.join(name))?;
        let rgba = Rgba::from_png(&png)?;
        frames.push((rgba.width, rgba.height, rgba.rgb()));
    }
    let truth = names.iter().map(|n| truth[n].clone()).collect();
    Ok(Scene {
        names,
        frames,
        truth,
    })
}

/// One round of RapidOCR per element of its `fps`, and what the last round read.
struct RapidRun {
    fps: Vec<f64>,
    texts: Vec<Vec<String>>,
}

fn rapidocr(python: &Path, script: &Path, dir: &Path, scene: &Scene) -> anyhow::Result<RapidRun> {
    let out = run(Command::new(python)
        .arg(script)
        .arg("run")
        .arg(dir)
        .args(["--rounds", "1"])
        .stderr(std::process::Stdio::inherit()))?;
    let out: serde_json::Value = serde_json::from_slice(&out).context("RapidOCR's JSON")?;
    let fps = serde_json::from_value(out["fps"].clone()).context("RapidOCR's fps")?;
    let mut read: HashMap<String, Vec<String>> =
        serde_json::from_value(out["texts"].clone()).context("RapidOCR's texts")?;
    let texts = scene
        .names
        .iter()
        .map(|n| read.remove(n).unwrap_or_default())
        .collect();
    Ok(RapidRun { fps, texts })
}

/// Every frame of the scene through the running worker, `cameras` frames in flight; frames per
/// second and the text lines read per frame.
async fn panoptes_round(
    client: &async_nats::Client,
    subjects: &Subjects,
    scene: &Scene,
    cameras: usize,
    seq: &mut u64,
) -> anyhow::Result<(f64, Vec<Vec<String>>)> {
    // Frames made and subscriptions set up before the clock starts: the round times the
    // pipeline, not the bench's copying.
    let mut sides = Vec::with_capacity(cameras);
    for c in 0..cameras {
        let camera = CameraId::new(&format!("bench-{c}"))?;
        let results = client.subscribe(subjects.detections(&camera)).await?;
        let mine: Vec<(usize, Frame)> = (c..scene.frames.len())
            .step_by(cameras)
            .map(|i| {
                *seq += 1;
                (i, frame(&camera, *seq, &scene.frames[i]))
            })
            .collect();
        sides.push((subjects.frames(&camera), results, mine));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (subject, mut results, mine) in sides {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut read = Vec::new();
            for (i, mut frame) in mine {
                frame.capture_ts_ns = panoptes_contracts::time::now_ns();
                let seq = frame.seq;
                client.publish(subject.clone(), frame.encode()?).await?;
                loop {
                    let msg = tokio::time::timeout(Duration::from_secs(60), results.next())
                        .await
                        .with_context(|| format!("no detections for frame {i} in 60 s"))?
                        .context("subscription ended")?;
                    let m: DetectionMessage = serde_json::from_slice(&msg.payload)?;
                    if m.seq == seq {
                        let lines = m.detections.into_iter().filter_map(|d| d.text).collect();
                        read.push((i, lines));
                        break;
                    }
                }
            }
            anyhow::Ok(read)
        }));
    }
    let mut texts = vec![Vec::new(); scene.frames.len()];
    for task in tasks {
        for (i, lines) in task.await?? {
            texts[i] = lines;
        }
    }
    let fps = scene.frames.len() as f64 / started.elapsed().as_secs_f64();
    Ok((fps, texts))
}

/// Camera `camera`'s frame `seq` of the scene's `(width, height, rgb)` (capture time 0: set when
/// it is sent).
fn frame(camera: &CameraId, seq: u64, (width, height, px): &(u32, u32, Vec<u8>)) -> Frame {
    Frame {
        camera: camera.clone(),
        seq,
        capture_ts_ns: 0,
        width: *width,
        height: *height,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(px.clone()),
    }
}

/// Sends the scene's first frame until its detections arrive (see
/// [`panoptes_tests::publish_until_detected`]).
async fn first_detection(
    client: &async_nats::Client,
    subjects: &Subjects,
    scene: &Scene,
    seq: &mut u64,
) -> anyhow::Result<()> {
    let (width, height, rgb) = &scene.frames[0];
    let camera = CameraId::new("bench-start")?;
    let within = Duration::from_secs(120);
    panoptes_tests::publish_until_detected(
        client,
        subjects,
        &camera,
        (*width, *height, rgb),
        seq,
        within,
    )
    .await
    .map(drop)
}

fn show(label: &str, scene: &Scene, texts: &[Vec<String>]) {
    for ((name, truth), read) in scene.names.iter().zip(&scene.truth).zip(texts) {
        let (mut t, mut r) = (truth.clone(), read.clone());
        t.sort();
        r.sort();
        if t != r {
            println!("  {label} {name}: {truth:?} read {read:?}");
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let root = panoptes_tests::require_setup();
    let python = rapidocr_python()?;
    let script = root.join("tests/benches/ocr_rapidocr.py");
    let dir = tempfile::tempdir()?;
    run(Command::new(&python)
        .arg(&script)
        .arg("render")
        .arg(dir.path())
        .args(["--frames", &options.frames.to_string()])
        .args(["--seed", &options.seed.to_string()]))?;
    let scene = load_scene(dir.path())?;

    let nats = NatsServer::start(&NatsServerOptions::default())?;
    let client = async_nats::connect(nats.url()).await?;
    let mut topology = TopologyFile::load(&root.join("topologies/ocr.yaml"))
        .map_err(|d| anyhow::anyhow!(d.render(false)))?;
    topology.config.cameras.clear();
    let subjects = Subjects::new(topology.namespace.clone());
    let variants = [
        ("panoptes", topology.clone()),
        ("panoptes 640x640", with_letterbox_shape(&topology, "fixed")),
    ];
    let mut seq = 0;
    let mut runs: Vec<Vec<(f64, Score, f64)>> = variants.iter().map(|_| Vec::new()).collect();
    let (mut theirs, mut their_scores) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        let rapid = rapidocr(&python, &script, dir.path(), &scene)?;
        let score = Score::of(&scene.truth, &rapid.texts);
        eprintln!(
            "round {round}: rapidocr {:.2} frames/s (recall {:.3}, precision {:.3})",
            median_f64(rapid.fps.clone()),
            score.recall(),
            score.precision()
        );
        let last = round + 1 == options.rounds;
        if options.show && last {
            show("rapidocr", &scene, &rapid.texts);
        }
        theirs.extend(rapid.fps);
        their_scores.push(score);
        for ((name, t), runs) in variants.iter().zip(&mut runs) {
            let started = Instant::now();
            let running = Running::start(t, Some(nats.url()), Role::All).await?;
            first_detection(&client, &subjects, &scene, &mut seq).await?;
            let first = started.elapsed().as_secs_f64();
            panoptes_round(&client, &subjects, &scene, options.cameras, &mut seq).await?;
            let (fps, texts) =
                panoptes_round(&client, &subjects, &scene, options.cameras, &mut seq).await?;
            running.stop().await?;
            let score = Score::of(&scene.truth, &texts);
            eprintln!(
                "round {round}: {name} {fps:.2} frames/s (recall {:.3}, precision {:.3}); start to first detection {first:.2} s",
                score.recall(),
                score.precision(),
            );
            if options.show && last {
                show(name, &scene, &texts);
            }
            runs.push((fps, score, first));
        }
    }

    let worker_start = match panoptes_binary() {
        Some(bin) => {
            let mut starts = Vec::new();
            for _ in 0..options.rounds {
                starts.push(
                    binary_start(&bin, &root, &nats, &client, &subjects, &scene, &mut seq).await?,
                );
            }
            Some(median_f64(starts))
        }
        None => {
            eprintln!(
                "no panoptes binary beside this bench: `cargo build --release -p panoptes` to time `panoptes worker`'s start"
            );
            None
        }
    };

    let t = median_f64(theirs);
    println!(
        "\nOCR on {} rendered frames ({} rounds each; medians; load {}):",
        scene.frames.len(),
        options.rounds,
        panoptes_tests::loadavg()
    );
    let line = |name: &str, fps: f64, scores: &[Score]| {
        let med = |f: fn(&Score) -> f64| median_f64(scores.iter().map(f).collect());
        println!(
            "  {name:>16}: {fps:6.2} frames/s (ratio to rapidocr {:.2}), word recall {:.3}, precision {:.3}, lines read {:.3}",
            fps / t,
            med(Score::recall),
            med(Score::precision),
            med(Score::line_recall),
        );
    };
    line("rapidocr", t, &their_scores);
    for ((name, _), runs) in variants.iter().zip(&runs) {
        let scores: Vec<Score> = runs.iter().map(|r| r.1).collect();
        line(
            name,
            median_f64(runs.iter().map(|r| r.0).collect()),
            &scores,
        );
        let recalls: Vec<String> = scores
            .iter()
            .map(|s| format!("{:.3}", s.recall()))
            .collect();
        println!(
            "  {name:>16}: recall per round {}; start to first detection {:.2} s (median)",
            recalls.join(", "),
            median_f64(runs.iter().map(|r| r.2).collect())
        );
    }
    if let Some(s) = worker_start {
        println!(
            "  `panoptes worker topologies/ocr.yaml` (the binary) start to first detection: {s:.2} s (median of {})",
            options.rounds
        );
    }
    Ok(())
}

/// The `panoptes` binary of the build this bench belongs to (`target/<profile>/panoptes`).
fn panoptes_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("panoptes");
    bin.is_file().then_some(bin)
}

/// Seconds from spawning `panoptes worker topologies/ocr.yaml` to its first detection message
/// (models and Wasm modules cached by the runs before).
async fn binary_start(
    bin: &Path,
    root: &Path,
    nats: &NatsServer,
    client: &async_nats::Client,
    subjects: &Subjects,
    scene: &Scene,
    seq: &mut u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .arg("worker")
        .arg(root.join("topologies/ocr.yaml"))
        .args(["--nats", nats.url()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let first = first_detection(client, subjects, scene, seq).await;
    let elapsed = started.elapsed().as_secs_f64();
    // SIGTERM: a clean stop hands its leases back for the next start.
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on the child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    first?;
    Ok(elapsed)
}

/// `topology` with its letterbox's `shape` set (`fixed` or `frame`).
fn with_letterbox_shape(topology: &TopologyFile, shape: &str) -> TopologyFile {
    let mut t = topology.clone();
    for stage in &mut t.stages {
        if let panoptes_topology::StageConfig::Operator(op) = stage
            && op.wasm.file_stem().is_some_and(|s| s == "letterbox")
            && let Some(config) = op.config.as_object_mut()
        {
            config.insert("shape".into(), serde_json::Value::from(shape));
        }
    }
    t
}
