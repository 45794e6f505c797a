//! Ingest cost per frame: decoding a camera's H.264, converting it and encoding it for the wire,
//! raw RGB against JPEG, at 720p and 1080p, as CPU time of this process per frame.
//!
//! ```text
//! source ~/.cache/panoptes/env.sh
//! export CARGO_TARGET_DIR=/root/.cache/panoptes/target
//! cargo bench -p panoptes --bench ingest
//! cargo bench -p panoptes --bench ingest -- --quick            # smoke run (~1 min)
//! INGEST_ROUNDS=9 cargo bench -p panoptes --bench ingest       # tighter medians
//! ```
//!
//! Needs GStreamer with x264enc (gstreamer1.0-plugins-ugly), avdec_h264 (gstreamer1.0-libav) and
//! jpegenc (gstreamer1.0-plugins-good). Options: `cargo bench -p panoptes --bench ingest -- --help`
//! (each also an environment variable; the argument wins).
//!
//! What it measures. First it makes one H.264-in-MP4 clip per size with GStreamer (30 fps, x264
//! `veryfast`, `zerolatency` so no B-frames, as IP cameras send; 3 Mb/s at 720p, 6 Mb/s at
//! 1080p): SMPTE bars with a share of noise on top (sensor-like texture, so the JPEG encoder has
//! real detail to code: a flat picture would make JPEG look cheaper than it is) and a running
//! clock. Then, per size, four configurations, each playing the whole clip as fast as it
//! decodes (a non-live pipeline, nothing paces it):
//!
//! - **decode**: `filesrc ! decodebin ! videorate ! videoscale ! fakesink`: the decoder alone
//!   (rate and scale are passthroughs: the clip is at the camera's size and rate), the floor
//!   under every other configuration;
//! - **raw**: the real ingest path of a `file` camera: the description `sources::pipeline_spec`
//!   builds (decodebin, videorate, videoscale to the camera's size, in the decoder's format)
//!   through `Ingest::start_with(…, Output::Rgb, …)`, which converts to RGB, and in `on_frame`
//!   what the ingest node does, `EncodedFrame::encode` to the Arrow `frame/v1` payload (not
//!   publishing);
//! - **jpeg**: the same description through `Output::Jpeg { quality }`: the decoder's YUV goes
//!   straight to JFIF's I420 and jpegenc, never through RGB. The decoder's I420 is BT.709
//!   limited range and JFIF's is BT.601 full range, so videoconvert still converts every pixel;
//! - **jpeg, via RGB** (reference): the description converted to `format=RGB` first, as
//!   `sources.rs` wrote it before JPEG existed, so the RGB frame is converted again to I420;
//! - **jpeg, no range fix** (reference only, wrong colours): the description straight into jpegenc
//!   without that conversion, as plain GStreamer to a fakesink (no appsink, no Arrow payload),
//!   to show what the colour conversion costs.
//!
//! The file camera's description is played as `SourceSpec::Pipeline`, not as the `Recorded`
//! spec the ingest node uses, which would play it at real-time speed. One untimed pass of every
//! configuration first (plugin loading, page cache), then rounds that run every configuration of
//! both sizes in an order rotated by the round, so drifts of the machine spread over all of them.
//!
//! Reported per configuration, medians over the rounds: CPU ms per frame (utime + stime of this
//! whole process from /proc/self/stat, all GStreamer threads included, over the run from start to
//! end of stream), frames/s per core (frames ÷ CPU seconds: what one core sustains), wall fps
//! (frames ÷ wall seconds; the decoder's threads use both cores, so this can exceed the
//! per-core figure), bytes per frame on the wire (the Arrow payload; the NATS headers add ~200),
//! and the time in `EncodedFrame::encode` per frame. Ratios are taken per round against the raw
//! run of the same round and size, then the median: JPEG CPU per frame ÷ raw CPU per frame. The
//! decode share shows what the conversion and encoding add on top of decoding. The machine's
//! steal over each run is printed on stderr; CPU time is what this process was given, so steal
//! lengthens wall time but not CPU time. Nothing here asserts a speed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use panoptes_contracts::CameraId;
use panoptes_ingest::frame_out::EncodedFrame;
use panoptes_ingest::{Ingest, Output, SourceSpec, SourceStatus};
use panoptes_tests::median_f64;
use panoptes_tests::procstat::{clock_ticks, cpu_ticks, machine_busy_ticks};
use panoptes_topology::CameraConfig;

/// Failure guard only: how long one run may take.
const GUARD: Duration = Duration::from_secs(300);
const FPS: u32 = 30;
/// `(width, height, x264 bitrate in kb/s)`: typical camera bitrates for the size.
const SIZES: [(u32, u32, u32); 2] = [(1280, 720, 3000), (1920, 1080, 6000)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    Decode,
    Raw,
    Jpeg,
    JpegViaRgb,
    JpegNoRangeFix,
}

const CONFIGS: [Config; 5] = [
    Config::Decode,
    Config::Raw,
    Config::Jpeg,
    Config::JpegViaRgb,
    Config::JpegNoRangeFix,
];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Decode => "decode",
            Config::Raw => "raw",
            Config::Jpeg => "jpeg",
            Config::JpegViaRgb => "jpeg, via RGB",
            Config::JpegNoRangeFix => "jpeg, no range fix",
        }
    }
}

/// Ingest CPU per frame (decode, convert, encode for the wire), raw RGB against JPEG, at 720p
/// and 1080p; see the file's header.
#[derive(clap::Parser)]
struct Args {
    /// A smoke run: 2 rounds, 60-frame clips (otherwise 5, 150).
    #[arg(long, env = "PANOPTES_BENCH_QUICK", value_parser = clap::builder::FalseyValueParser::new())]
    quick: bool,
    /// Rounds of every configuration [default: see --quick].
    #[arg(long, env = "INGEST_ROUNDS", value_parser = clap::value_parser!(u64).range(1..=1000))]
    rounds: Option<u64>,
    /// Frames per clip, 10..=10000 [default: see --quick].
    #[arg(long, env = "INGEST_FRAMES", value_parser = clap::value_parser!(u32).range(10..=10_000))]
    frames: Option<u32>,
    /// The JPEG quality (the topology's default `jpeg_quality`).
    #[arg(long, env = "INGEST_QUALITY", default_value_t = 85,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
    /// Share of noise over the SMPTE bars, 0..=1 (0: flat bars).
    #[arg(long, env = "INGEST_NOISE", default_value_t = 0.15, value_parser = noise)]
    noise: f64,
    #[command(flatten)]
    cargo: panoptes_tests::CargoBench,
}

/// `--noise`'s values: an alpha.
fn noise(s: &str) -> Result<f64, String> {
    panoptes_tests::non_negative(s)
        .ok()
        .filter(|x| *x <= 1.0)
        .ok_or_else(|| format!("{s:?} is not a number from 0 to 1"))
}

struct Options {
    rounds: usize,
    frames: u32,
    quality: u8,
    noise: f64,
}

impl Options {
    /// The options of [`Args`], with `--quick`'s defaults filled in.
    fn load() -> Self {
        let args = <Args as clap::Parser>::parse();
        let (rounds, frames) = if args.quick { (2, 60) } else { (5, 150) };
        Self {
            // At most 1000, checked by clap, so the cast is exact.
            rounds: args.rounds.map_or(rounds, |n| n as usize),
            frames: args.frames.unwrap_or(frames),
            quality: args.quality,
            noise: args.noise,
        }
    }
}

/// Runs a gst-launch description to its end (the clip encoders).
fn run_to_eos(desc: &str) -> anyhow::Result<()> {
    let pipeline = gst::parse::launch(desc).with_context(|| format!("cannot parse {desc}"))?;
    play_to_eos(&pipeline, desc)
}

/// Plays `pipeline` until end of stream; an error or no end within [`GUARD`] fails, naming
/// `desc`. The pipeline is back in NULL either way.
fn play_to_eos(pipeline: &gst::Element, desc: &str) -> anyhow::Result<()> {
    let bus = pipeline.bus().context("pipeline has no bus")?;
    pipeline.set_state(gst::State::Playing)?;
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(GUARD.as_secs()),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = pipeline.set_state(gst::State::Null);
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Ok(()),
        Some(gst::MessageView::Error(e)) => bail!("{desc}: {} ({:?})", e.error(), e.debug()),
        _ => bail!("{desc}: no end of stream within {GUARD:?}"),
    }
}

/// The benchmark clip of one size: SMPTE bars, `noise` of snow over them, a running clock.
fn make_clip(dir: &Path, (w, h, kbps): (u32, u32, u32), o: &Options) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("clip-{w}x{h}.mp4"));
    let location = path.to_str().context("temporary path is not UTF-8")?;
    let n = o.frames;
    let caps = format!("video/x-raw,width={w},height={h},framerate={FPS}/1");
    let desc = format!(
        "compositor name=mix sink_1::alpha={noise} \
         ! {caps},format=I420 ! timeoverlay font-desc=\"Sans 36\" \
         ! x264enc speed-preset=veryfast tune=zerolatency key-int-max={FPS} bitrate={kbps} \
         ! h264parse ! mp4mux ! filesink location=\"{location}\" \
         videotestsrc num-buffers={n} pattern=smpte ! {caps} ! mix.sink_0 \
         videotestsrc num-buffers={n} pattern=snow ! {caps} ! mix.sink_1",
        noise = o.noise
    );
    run_to_eos(&desc)?;
    Ok(path)
}

/// The `file` camera the ingest node would build for `clip`: its description, as
/// `sources::pipeline_spec` writes it.
fn camera_description(clip: &Path, (w, h): (u32, u32)) -> anyhow::Result<String> {
    let json = serde_json::json!({
        "id": "bench", "source": { "file": { "path": clip } },
        "width": w, "height": h, "fps": FPS,
    });
    let cam: CameraConfig = serde_json::from_value(json)?;
    match panoptes_ingest::sources::pipeline_spec(&cam, Path::new("/"))? {
        SourceSpec::Recorded { description, .. } | SourceSpec::Pipeline(description) => {
            Ok(description)
        }
        other => bail!("unexpected source spec {other:?}"),
    }
}

/// One run's figures.
#[derive(Clone, Copy, Debug)]
struct Sample {
    frames: u64,
    cpu_s: f64,
    wall_s: f64,
    /// Arrow payload bytes, summed (0 for decode).
    bytes: u64,
    /// Time inside `EncodedFrame::encode`, summed.
    encode_s: f64,
    steal_s: Option<f64>,
}

impl Sample {
    fn cpu_ms_per_frame(&self) -> f64 {
        self.cpu_s * 1e3 / self.frames as f64
    }
    fn per_core_fps(&self) -> f64 {
        self.frames as f64 / self.cpu_s
    }
    fn wall_fps(&self) -> f64 {
        self.frames as f64 / self.wall_s
    }
    fn bytes_per_frame(&self) -> f64 {
        self.bytes as f64 / self.frames as f64
    }
    fn encode_ms_per_frame(&self) -> f64 {
        self.encode_s * 1e3 / self.frames as f64
    }
}

/// CPU seconds of this process so far.
fn cpu_now(ticks: f64) -> anyhow::Result<f64> {
    let t = cpu_ticks(std::process::id()).context("cannot read /proc/self/stat")?;
    Ok(t as f64 / ticks)
}

/// Plays `desc` into a fakesink as plain GStreamer: `(buffers, bytes)` that reached it.
fn gst_only(desc: &str) -> anyhow::Result<(u64, u64)> {
    let pipeline = gst::parse::launch(&format!("{desc} ! fakesink name=sink sync=false"))?;
    let bin = pipeline
        .clone()
        .downcast::<gst::Bin>()
        .map_err(|_| anyhow::anyhow!("not a bin"))?;
    let pad = bin
        .by_name("sink")
        .and_then(|s| s.static_pad("sink"))
        .context("fakesink pad")?;
    let count = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let counter = count.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        counter.0.fetch_add(1, Ordering::Relaxed);
        if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
            counter.1.fetch_add(b.size() as u64, Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
    play_to_eos(&pipeline, desc)?;
    Ok((
        count.0.load(Ordering::Relaxed),
        count.1.load(Ordering::Relaxed),
    ))
}

/// Plays `desc` through `Ingest::start_with` with `output`, encoding every frame as the ingest
/// node does: `(frames, payload bytes, seconds inside EncodedFrame::encode)`.
fn ingest(desc: &str, output: Output) -> anyhow::Result<(u64, u64, f64)> {
    struct Totals {
        frames: AtomicU64,
        bytes: AtomicU64,
        encode_ns: AtomicU64,
    }
    let totals = Arc::new(Totals {
        frames: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        encode_ns: AtomicU64::new(0),
    });
    let camera = CameraId::new("bench")?;
    let (status_tx, status_rx) = mpsc::channel();
    let on_frame = {
        let totals = totals.clone();
        move |raw| {
            let seq = totals.frames.fetch_add(1, Ordering::Relaxed);
            let t = Instant::now();
            match EncodedFrame::encode(&camera, seq, raw) {
                Ok(frame) => {
                    let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    totals.encode_ns.fetch_add(ns, Ordering::Relaxed);
                    let len = frame.payload.len() as u64;
                    totals.bytes.fetch_add(len, Ordering::Relaxed);
                    std::hint::black_box(frame);
                }
                Err(e) => eprintln!("frame {seq} does not encode: {e}"),
            }
        }
    };
    let ingest = Ingest::start_with(
        &SourceSpec::Pipeline(desc.to_owned()),
        output,
        on_frame,
        move |s| {
            let _ = status_tx.send(s);
        },
    )?;
    let deadline = Instant::now() + GUARD;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match status_rx.recv_timeout(left) {
            Ok(SourceStatus::Eos) => break,
            Ok(SourceStatus::Error(e)) => bail!("{desc}: {e}"),
            Ok(_) => {}
            Err(_) => bail!("{desc}: no end of stream within {GUARD:?}"),
        }
    }
    // Joins the frame thread, so every frame handed to on_frame is counted.
    ingest.stop();
    Ok((
        totals.frames.load(Ordering::Relaxed),
        totals.bytes.load(Ordering::Relaxed),
        totals.encode_ns.load(Ordering::Relaxed) as f64 / 1e9,
    ))
}

/// The descriptions of one size: the camera's (raw, jpeg), and the same converted to RGB
/// before the wire format (the tail `sources.rs` wrote before JPEG existed).
struct Descriptions {
    camera: String,
    via_rgb: String,
    /// The decoder alone: the camera's description up to its conversion.
    decode: String,
    /// The description into jpegenc without JFIF's colorimetry (wrong colours, reference only).
    no_range_fix: String,
}

fn descriptions(clip: &Path, (w, h): (u32, u32)) -> anyhow::Result<Descriptions> {
    let camera = camera_description(clip, (w, h))?;
    const SCALED: &str = "videoscale ! video/x-raw,";
    if !camera.contains(SCALED) || camera.contains("format=") {
        bail!("the camera description no longer ends in `{SCALED}…` without a format: {camera}");
    }
    let via_rgb = camera.replace(
        SCALED,
        "videoscale ! videoconvert ! video/x-raw,format=RGB,",
    );
    let decode = camera
        .split(" ! videoconvert")
        .next()
        .context("no videoconvert in the camera description")?
        .to_owned();
    let no_range_fix = format!("{camera} ! videoconvert ! video/x-raw,format=I420 ! jpegenc");
    Ok(Descriptions {
        camera,
        via_rgb,
        decode,
        no_range_fix,
    })
}

fn run(config: Config, d: &Descriptions, quality: u8, ticks: f64) -> anyhow::Result<Sample> {
    let jpeg = Output::Jpeg { quality };
    let busy0 = machine_busy_ticks();
    let (cpu0, wall0) = (cpu_now(ticks)?, Instant::now());
    let (frames, bytes, encode_s) = match config {
        Config::Decode => (gst_only(&d.decode)?.0, 0, 0.0),
        Config::JpegNoRangeFix => {
            let (frames, bytes) = gst_only(&format!("{} quality={quality}", d.no_range_fix))?;
            (frames, bytes, 0.0)
        }
        Config::Raw => ingest(&d.camera, Output::Rgb)?,
        Config::Jpeg => ingest(&d.camera, jpeg)?,
        Config::JpegViaRgb => ingest(&d.via_rgb, jpeg)?,
    };
    let (cpu_s, wall_s) = (cpu_now(ticks)? - cpu0, wall0.elapsed().as_secs_f64());
    let steal_s = busy0
        .zip(machine_busy_ticks())
        .map(|(a, b)| b.steal.saturating_sub(a.steal) as f64 / ticks);
    if frames == 0 {
        bail!("{}: no frames", config.name());
    }
    Ok(Sample {
        frames,
        cpu_s,
        wall_s,
        bytes,
        encode_s,
        steal_s,
    })
}

fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn main() -> anyhow::Result<()> {
    let o = Options::load();
    panoptes_ingest::init()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ticks = clock_ticks();
    println!(
        "ingest bench: H.264 clips of {} frames at {FPS} fps (SMPTE bars, noise {}, clock), JPEG quality {}, {} rounds, {cores} cores, load average {} at start",
        o.frames,
        o.noise,
        o.quality,
        o.rounds,
        panoptes_tests::loadavg()
    );
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let mut sizes = Vec::new();
    for size in SIZES {
        let t = Instant::now();
        let clip = make_clip(dir.path(), size, &o)?;
        eprintln!(
            "made {} ({} bytes) in {:.1} s",
            clip.display(),
            std::fs::metadata(&clip)?.len(),
            t.elapsed().as_secs_f64()
        );
        sizes.push(((size.0, size.1), descriptions(&clip, (size.0, size.1))?));
    }
    if let Some((_, d)) = sizes.first() {
        println!("camera description: {}", d.camera);
    }

    // Every (size, config) pair, in a fixed order that rounds rotate.
    let pairs: Vec<(usize, Config)> = (0..sizes.len())
        .flat_map(|s| CONFIGS.iter().map(move |c| (s, *c)))
        .collect();
    for &(s, c) in &pairs {
        let (size, d) = &sizes[s];
        let x = run(c, d, o.quality, ticks)?;
        eprintln!(
            "warm-up {}x{} {}: {} frames, {:.2} ms CPU/frame (not counted)",
            size.0,
            size.1,
            c.name(),
            x.frames,
            x.cpu_ms_per_frame()
        );
    }
    // samples[pair][round]
    let mut samples: Vec<Vec<Sample>> = pairs.iter().map(|_| Vec::new()).collect();
    for round in 0..o.rounds {
        for k in 0..pairs.len() {
            let i = (round + k) % pairs.len();
            let (s, c) = pairs[i];
            let (size, d) = &sizes[s];
            let x = run(c, d, o.quality, ticks)?;
            eprintln!(
                "round {}/{} {}x{} {:>14}: {} frames, {:.2} ms CPU/frame, {:.0} wall fps, steal {}",
                round + 1,
                o.rounds,
                size.0,
                size.1,
                c.name(),
                x.frames,
                x.cpu_ms_per_frame(),
                x.wall_fps(),
                x.steal_s
                    .map_or_else(|| "n/a".to_owned(), |s| format!("{:.2} s", s))
            );
            samples[i].push(x);
        }
    }

    println!();
    println!(
        "| size | config | frames | CPU ms/frame (median) | min–max | frames/s per core | wall fps | bytes/frame on the wire | encode() ms/frame | CPU ÷ raw (median of per-round ratios) | over decode |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratio_lines = Vec::new();
    for (s, (size, _)) in sizes.iter().enumerate() {
        let of = |c: Config| -> anyhow::Result<&Vec<Sample>> {
            pairs
                .iter()
                .position(|p| *p == (s, c))
                .and_then(|i| samples.get(i))
                .context("configuration not measured")
        };
        let raw = of(Config::Raw)?;
        let decode = of(Config::Decode)?;
        let decode_ms = median_f64(decode.iter().map(Sample::cpu_ms_per_frame).collect());
        for c in CONFIGS {
            let xs = of(c)?;
            let med = |f: fn(&Sample) -> f64| median_f64(xs.iter().map(f).collect());
            let cpu: Vec<f64> = xs.iter().map(Sample::cpu_ms_per_frame).collect();
            let (lo, hi) = min_max(&cpu);
            let ratio = median_f64(
                xs.iter()
                    .zip(raw)
                    .map(|(x, r)| x.cpu_ms_per_frame() / r.cpu_ms_per_frame())
                    .collect(),
            );
            let ms = median_f64(cpu.clone());
            let frames = xs.first().map_or(0, |x| x.frames);
            let bytes = match c {
                Config::Decode => "—".to_owned(),
                // The JPEG file alone: no Arrow framing around it.
                Config::JpegNoRangeFix => format!("({:.0})", med(Sample::bytes_per_frame)),
                _ => format!("{:.0}", med(Sample::bytes_per_frame)),
            };
            let encode = match c {
                Config::Decode | Config::JpegNoRangeFix => "—".to_owned(),
                _ => format!("{:.3}", med(Sample::encode_ms_per_frame)),
            };
            println!(
                "| {}x{} | {} | {frames} | {ms:.2} | {lo:.2}–{hi:.2} | {:.0} | {:.0} | {bytes} | {encode} | {ratio:.2} | {} |",
                size.0,
                size.1,
                c.name(),
                med(Sample::per_core_fps),
                med(Sample::wall_fps),
                if c == Config::Decode {
                    "—".to_owned()
                } else {
                    format!("+{:.2} ms", ms - decode_ms)
                }
            );
            if matches!(
                c,
                Config::Jpeg | Config::JpegViaRgb | Config::JpegNoRangeFix
            ) {
                ratio_lines.push(format!(
                    "{}x{}: {} CPU/frame ÷ raw CPU/frame = {ratio:.2} (per round: {})",
                    size.0,
                    size.1,
                    c.name(),
                    xs.iter()
                        .zip(raw)
                        .map(|(x, r)| format!("{:.2}", x.cpu_ms_per_frame() / r.cpu_ms_per_frame()))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
        }
    }
    println!();
    for line in ratio_lines {
        println!("{line}");
    }
    println!(
        "\nCPU ms/frame: utime + stime of this process (every GStreamer thread) from start to end of \
         stream ÷ frames; frames/s per core: frames ÷ CPU seconds; wall fps: frames ÷ wall \
         seconds ({cores} cores; decoders use several threads); bytes/frame: the Arrow frame/v1 \
         payload (NATS headers add ~200 bytes); encode(): time inside EncodedFrame::encode (the \
         Arrow payload), wall time on the frame thread; over decode: CPU ms/frame minus decode's. \
         raw and jpeg play the file camera's description as sources.rs writes it (…videoscale \
         ! video/x-raw,width,height…, the decoder's format); jpeg, via RGB converts it to RGB \
         first (the old tail); jpeg, no range fix is plain GStreamer without JFIF's colorimetry (wrong colours; bytes are the JPEG \
         file alone), for the cost of the colour conversion."
    );
    println!(
        "took {:.0} s; load average at the end: {}",
        started.elapsed().as_secs_f64(),
        panoptes_tests::loadavg()
    );
    Ok(())
}
