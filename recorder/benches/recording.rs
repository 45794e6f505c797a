//! What recording costs one camera at 720p and 10 fps, in CPU seconds per second of video
//! (this process's CPU time from /proc, GStreamer's threads included), each beside a baseline
//! measured in the same run on the same frames:
//! - pre-roll buffering of raw RGB frames (JPEG-encoded once, kept in the buffer) against the
//!   bare JPEG encoder; of JPEG frames (kept as they came) in absolute terms;
//! - recording a clip (JPEG decode, boxes drawn by rsvgoverlay, H.264 in MP4) against GStreamer
//!   encoding the same scene from raw frames with nothing drawn (videoconvert, x264enc,
//!   mp4mux), and the bytes stored per minute of video.
//!
//! ```text
//! source ~/.cache/panoptes/env.sh
//! cargo bench -p panoptes-recorder --bench recording            # --seconds 30 --runs 3
//! ```

use std::time::Instant;

use gstreamer as gst;
use gstreamer::prelude::*;
use panoptes_contracts::detection::{Detection, TrackInfo};
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_recorder::buffer::{BufferedFrame, PreRoll};
use panoptes_recorder::encode::{ClipFormat, encode_clip};
use panoptes_recorder::overlay::{Places, svg};
use panoptes_tests::procstat::{clock_ticks, cpu_ticks};

#[derive(clap::Parser)]
struct Args {
    /// Seconds of 10 fps video per run.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Runs per case (medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    runs: u64,
    #[command(flatten)]
    cargo: panoptes_tests::CargoBench,
}

const W: u32 = 1280;
const H: u32 = 720;
const FPS: u64 = 10;

/// A scene with texture (so JPEG and H.264 have something to code): gradients, a grid of
/// "text" strokes, and a bright box moving 12 px per frame.
fn scene(seq: u64) -> Vec<u8> {
    let mut px = Vec::with_capacity((W * H * 3) as usize);
    let bx = (40 + 12 * seq as u32) % (W - 200);
    for y in 0..H {
        for x in 0..W {
            let in_box = (bx..bx + 160).contains(&x) && (280..440).contains(&y);
            let stroke = (y % 40 < 3 && x % 90 < 60) || (x % 90 == 5 && y % 40 < 20);
            let v = if in_box {
                [235, 235, 235]
            } else if stroke {
                [200, 190, 60]
            } else {
                [
                    (x * 60 / W + 20) as u8,
                    (y * 60 / H + 30) as u8,
                    ((x + y) % 64 + 40) as u8,
                ]
            };
            px.extend_from_slice(&v);
        }
    }
    px
}

fn frame(seq: u64, format: PixelFormat, pixels: Vec<u8>) -> Frame {
    Frame {
        camera: panoptes_contracts::CameraId::new("bench").expect("camera"),
        seq,
        capture_ts_ns: seq * 1_000_000_000 / FPS,
        width: W,
        height: H,
        format,
        pixels: PixelBuffer::from_vec(pixels),
    }
}

fn detections(seq: u64) -> Vec<Detection> {
    let bx = ((40 + 12 * seq as u32) % (W - 200)) as f32;
    vec![Detection {
        bbox: [bx, 280.0, bx + 160.0, 440.0],
        polygon: None,
        label: "person".into(),
        score: 0.9,
        text: None,
        track: Some(TrackInfo {
            track_id: 3,
            track_age_ms: seq * 100,
            velocity: [120.0, 0.0],
        }),
    }]
}

/// CPU seconds this process spent in `f`, and its result.
fn cpu<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let pid = std::process::id();
    let before = cpu_ticks(pid).unwrap_or(0);
    let out = f();
    let after = cpu_ticks(pid).unwrap_or(0);
    ((after.saturating_sub(before)) as f64 / clock_ticks(), out)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The baseline encoder: raw RGB frames straight into x264enc and mp4mux, nothing drawn.
fn bare_h264(frames: &[Vec<u8>]) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bare.mp4");
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={W},height={H},framerate={FPS}/1 ! \
         videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=veryfast key-int-max=10 ! h264parse ! \
         mp4mux ! filesink location={}",
        path.display()
    ))
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    let src = pipeline
        .by_name("src")
        .and_then(|s| s.downcast::<gstreamer_app::AppSrc>().ok())
        .expect("appsrc");
    src.set_max_bytes(0);
    pipeline.set_state(gst::State::Playing).expect("play");
    for (i, f) in frames.iter().enumerate() {
        let mut b = gst::Buffer::from_slice(f.clone());
        if let Some(b) = b.get_mut() {
            b.set_pts(gst::ClockTime::from_mseconds(i as u64 * 1000 / FPS));
            b.set_duration(gst::ClockTime::from_mseconds(1000 / FPS));
        }
        src.push_buffer(b).expect("push");
    }
    src.end_of_stream().expect("eos");
    let bus = pipeline.bus().expect("bus");
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(600)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("bare encoder: {}", e.error()),
            _ => {}
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    std::fs::metadata(&path).map_or(0, |m| m.len() as usize)
}

fn main() {
    let args: Args = clap::Parser::parse();
    let (seconds, runs) = if args.cargo.bench {
        (args.seconds, args.runs)
    } else {
        (2, 1)
    };
    gst::init().expect("gstreamer");
    let n = seconds * FPS;
    eprintln!("generating {n} frames of {W}x{H}…");
    let raw: Vec<Vec<u8>> = (0..n).map(scene).collect();
    let video_s = seconds as f64;
    println!(
        "recording one {W}x{H} camera at {FPS} fps, {seconds} s of video per run, medians of {runs} run(s); \
         CPU s per s of video (one core = 1.0); load average {}",
        panoptes_tests::loadavg()
    );

    // Pre-roll buffering of raw frames, and the bare JPEG encoder.
    let (mut buffered, mut bare_jpeg) = (Vec::new(), Vec::new());
    let mut jpegs: Vec<BufferedFrame> = Vec::new();
    for _ in 0..runs {
        let frames: Vec<Frame> = raw
            .iter()
            .enumerate()
            .map(|(i, p)| frame(i as u64, PixelFormat::Rgb8, p.clone()))
            .collect();
        let (t, kept) = cpu(|| {
            let mut pre = PreRoll::new(10_000_000_000, 64 << 20);
            let mut all = Vec::with_capacity(frames.len());
            for f in &frames {
                let b = BufferedFrame::from_frame(f, 85).expect("jpeg");
                pre.push(b.clone());
                all.push(b);
            }
            all
        });
        buffered.push(t / video_s);
        jpegs = kept;
        let (t, _) = cpu(|| {
            for f in &frames {
                let mut out = Vec::new();
                jpeg_encoder::Encoder::new(&mut out, 85)
                    .encode(
                        f.pixels.as_slice(),
                        W as u16,
                        H as u16,
                        jpeg_encoder::ColorType::Rgb,
                    )
                    .expect("jpeg");
                std::hint::black_box(out);
            }
        });
        bare_jpeg.push(t / video_s);
    }
    // JPEG frames as ingest sends them (`encoding: jpeg`): kept as they came.
    let mut passthrough = Vec::new();
    for _ in 0..runs {
        let frames: Vec<Frame> = jpegs
            .iter()
            .map(|j| frame(j.seq, PixelFormat::Jpeg, j.jpeg.to_vec()))
            .collect();
        let (t, _) = cpu(|| {
            let mut pre = PreRoll::new(10_000_000_000, 64 << 20);
            for f in &frames {
                pre.push(BufferedFrame::from_frame(f, 85).expect("keep"));
            }
        });
        passthrough.push(t / video_s);
    }

    // Recording: the whole clip through GStreamer, drawn, and the bare encoder.
    let places = Places::default();
    let overlays: Vec<String> = (0..n).map(|i| svg(W, H, &places, &detections(i))).collect();
    let format = ClipFormat::available().expect("gstreamer");
    let (mut recorded, mut plain, mut bare, mut bytes) =
        (Vec::new(), Vec::new(), Vec::new(), 0usize);
    for _ in 0..runs {
        let started = Instant::now();
        let (t, clip) = cpu(|| encode_clip(&jpegs, Some(&overlays), format).expect("clip"));
        recorded.push(t / video_s);
        bytes = clip.len();
        eprintln!(
            "clip of {} frames in {:.1} s wall",
            jpegs.len(),
            started.elapsed().as_secs_f64()
        );
        let (t, _) = cpu(|| encode_clip(&jpegs, None, format).expect("clip"));
        plain.push(t / video_s);
        let (t, _) = cpu(|| bare_h264(&raw));
        bare.push(t / video_s);
    }
    let (b, bj, p) = (median(buffered), median(bare_jpeg), median(passthrough));
    let (r, pl, ba) = (median(recorded), median(plain), median(bare));
    println!("| case | CPU s / s of video | baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| pre-roll buffering, raw RGB frames (JPEG once) | {b:.3} | bare JPEG encode {bj:.3} | {:.2} |",
        b / bj
    );
    // Below /proc's clock tick over the whole run reads as 0.
    let p = if p > 0.0 {
        format!("{p:.4}")
    } else {
        format!("< {:.4}", 1.0 / clock_ticks() / video_s)
    };
    println!("| pre-roll buffering, JPEG frames | {p} | — | — |");
    println!(
        "| recording, boxes drawn ({format:?}) | {r:.3} | bare x264 from raw {ba:.3} | {:.2} |",
        r / ba
    );
    println!(
        "| recording, nothing drawn | {pl:.3} | bare x264 from raw {ba:.3} | {:.2} |",
        pl / ba
    );
    println!(
        "bytes stored per minute of video: {:.1} MB (clip of {} frames: {} bytes)",
        bytes as f64 / video_s * 60.0 / 1e6,
        jpegs.len(),
        bytes
    );
}
