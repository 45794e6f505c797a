//! What it costs to move one frame between processes over NATS instead of within one: a real
//! nats-server on loopback, Arrow encode and decode included, against the same encode and
//! decode in process.
//!
//! ```text
//! source ~/.cache/panoptes/env.sh
//! export CARGO_TARGET_DIR=/root/.cache/panoptes/target
//! cargo bench -p panoptes-tests --bench transport
//! cargo bench -p panoptes-tests --bench transport -- --messages 100 --window 4 --quality 90
//! ```
//!
//! Options: `cargo bench -p panoptes-tests --bench transport -- --help` (each also an environment
//! variable; the argument wins).
//!
//! Messages, all of camera `cam-1` on a 640×480 synthetic scene (gradients, shapes, mild
//! sensor noise, so JPEG sizes are those of a camera picture rather than of noise or of a flat
//! colour):
//!
//! - **raw**: a frame/v1 RGB frame (`Frame::encode` / `Frame::decode`) on `<ns>.frames.<camera>`.
//! - **jpeg**: the frame JPEG-compressed (jpeg-encoder, once, outside the clock: a camera or
//!   its ingest node does that) as a frame/v1 `jpeg` frame. `→rgb` is the receiver's JPEG decode
//!   to RGB (zune-jpeg, the `jpeg` operator's kernel), listed apart and added in `+rgb p50`.
//! - **tensor+src** and **tensor**: an item/v1 envelope (`envelope::encode` / `decode`) on
//!   `<ns>.<stage>.<camera>` holding a 1×3×640×640 f32 tensor with its letterbox transform,
//!   with and without the source frame: what a model stage in another process receives from
//!   a letterbox stage (it keeps the source, for crops).
//!
//! For each: bytes per message; in-process encode and decode medians (decoding from an
//! unaligned copy, as NATS payloads are); publish→receive latency with one message in flight
//! (encode, publish, receive on a second connection, decode; median and p90); throughput in
//! messages/s with up to `--window` messages published back to back and not yet decoded; and
//! ratios: latency ÷ in-process encode+decode, and throughput ÷ what in-process encode+decode
//! alone would allow on one core. Publisher, subscriber and nats-server share the machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use panoptes_contracts::envelope;
use panoptes_contracts::frame::PixelBuffer;
use panoptes_contracts::stage::{Item, Payload};
use panoptes_contracts::{CameraId, Frame, PixelFormat, Tensor, Transform};
use panoptes_op_preprocess::jpeg::{JpegOptions, decode_rgb8};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const SIDE: usize = 640;
const CAMERA: &str = "cam-1";
const NS: &str = "bench";
/// In-process encode/decode repetitions per case (medians).
const LOCAL_RUNS: usize = 40;
/// Untimed round trips before each measured series (connections, allocator, caches).
const WARMUP: usize = 10;
/// A lost message must not hang the benchmark.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What it costs to move one frame between processes over NATS instead of within one; see the
/// file's header.
#[derive(clap::Parser)]
struct Args {
    /// Messages per case, for latency and for throughput.
    #[arg(long, env = "PANOPTES_BENCH_MESSAGES", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=100_000))]
    messages: u64,
    /// Messages in flight for throughput.
    #[arg(long, env = "PANOPTES_BENCH_WINDOW", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    window: u64,
    /// The JPEG quality.
    #[arg(long, env = "PANOPTES_BENCH_QUALITY", default_value_t = 85,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
    #[command(flatten)]
    cargo: panoptes_tests::CargoBench,
}

struct Config {
    messages: usize,
    window: usize,
    quality: u8,
}

impl Config {
    fn load() -> Self {
        let args = <Args as clap::Parser>::parse();
        // Ranges checked by clap, so the casts are exact.
        Self {
            messages: args.messages as usize,
            window: args.window as usize,
            quality: args.quality,
        }
    }
}

/// Encodes a message and decodes one, as a sender and a receiver of this kind of message do.
#[derive(Clone)]
struct Codec {
    name: &'static str,
    subject: String,
    encode: Arc<dyn Fn() -> anyhow::Result<Bytes> + Send + Sync>,
    decode: Arc<dyn Fn(Bytes) -> anyhow::Result<()> + Send + Sync>,
}

fn camera() -> CameraId {
    CameraId::new(CAMERA).expect("a valid camera ID")
}

/// A deterministic camera-like picture: lit gradients, a few flat shapes, ±3 of noise.
fn scene() -> Vec<u8> {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut state: u32 = 0x2545_f491;
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let mut rgb = [60.0 + 120.0 * fy, 90.0 + 80.0 * fx, 140.0 - 60.0 * fy];
            if (160..300).contains(&x) && (200..420).contains(&y) {
                rgb = [170.0, 40.0, 35.0];
            }
            let (dx, dy) = (x as f32 - 470.0, y as f32 - 180.0);
            if dx * dx + dy * dy < 90.0 * 90.0 {
                rgb = [230.0, 220.0, 90.0 + 0.3 * dy];
            }
            if (40..600).contains(&x) && (30..60).contains(&y) && (x / 12) % 2 == 0 {
                rgb = [20.0, 20.0, 20.0];
            }
            for c in rgb {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = ((state >> 24) % 7) as f32 - 3.0;
                out.push((c + noise).clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

fn frame(format: PixelFormat, pixels: Vec<u8>) -> Frame {
    Frame {
        camera: camera(),
        seq: 1,
        capture_ts_ns: 1_700_000_000_000_000_000,
        width: WIDTH,
        height: HEIGHT,
        format,
        pixels: PixelBuffer::from(pixels),
    }
}

fn frame_codec(name: &'static str, frame: Frame) -> Codec {
    Codec {
        name,
        subject: format!("{NS}.frames.{CAMERA}"),
        encode: Arc::new(move || Ok(frame.encode()?)),
        decode: Arc::new(|b| {
            std::hint::black_box(Frame::decode(b, Some(CAMERA))?);
            Ok(())
        }),
    }
}

/// What a letterbox stage hands a model stage: the normalised tensor, the transform back to
/// the frame, and (`with_source`) the frame itself.
fn tensor_codec(name: &'static str, source: &Frame, with_source: bool) -> anyhow::Result<Codec> {
    let n = 3 * SIDE * SIDE;
    let data = (0..n).map(|i| ((i % 251) as f32 / 125.0) - 1.0).collect();
    let mut item = Item::from_frame(source.clone());
    item.payload = Payload::Tensor(Tensor::new(vec![1, 3, SIDE, SIDE], data)?);
    item.transform = Transform {
        scale_x: 1.0,
        scale_y: 1.0,
        offset_x: 0.0,
        offset_y: 80.0,
    };
    if !with_source {
        item.source = None;
    }
    Ok(Codec {
        name,
        subject: format!("{NS}.detect.{CAMERA}"),
        encode: Arc::new(move || Ok(envelope::encode(&item)?)),
        decode: Arc::new(|b| {
            std::hint::black_box(envelope::decode(b, Some(CAMERA))?);
            Ok(())
        }),
    })
}

/// `b` at an odd address, as async-nats hands payloads over.
fn unaligned(b: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(b.len() + 1);
    v.push(0);
    v.extend_from_slice(b);
    Bytes::from(v).slice(1..)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Local {
    bytes: usize,
    encode: Duration,
    decode: Duration,
}

fn measure_local(codec: &Codec) -> anyhow::Result<Local> {
    let sample = (codec.encode)()?;
    (codec.decode)(unaligned(&sample))?;
    let mut enc = Vec::with_capacity(LOCAL_RUNS);
    let mut dec = Vec::with_capacity(LOCAL_RUNS);
    for _ in 0..LOCAL_RUNS {
        let started = Instant::now();
        let b = std::hint::black_box((codec.encode)()?);
        enc.push(started.elapsed());
        let b = unaligned(&b);
        let started = Instant::now();
        (codec.decode)(b)?;
        dec.push(started.elapsed());
    }
    Ok(Local {
        bytes: sample.len(),
        encode: median(enc),
        decode: median(dec),
    })
}

struct Remote {
    p50: Duration,
    p90: Duration,
    per_s: f64,
}

async fn next_payload(sub: &mut async_nats::Subscriber) -> anyhow::Result<Bytes> {
    let msg = tokio::time::timeout(RECEIVE_TIMEOUT, sub.next())
        .await
        .context("no message within the receive timeout (dropped by NATS?)")?
        .context("the subscription ended")?;
    Ok(msg.payload)
}

/// Latency with one message in flight, then throughput with up to `window` in flight.
async fn measure_remote(cfg: &Config, url: &str, codec: &Codec) -> anyhow::Result<Remote> {
    let publisher = panoptes::connect(url).await?;
    let receiver = panoptes::connect(url).await?;
    let mut sub = receiver.subscribe(codec.subject.clone()).await?;
    receiver.flush().await?;

    let mut latencies = Vec::with_capacity(cfg.messages);
    for i in 0..WARMUP + cfg.messages {
        let started = Instant::now();
        let payload = (codec.encode)()?;
        publisher.publish(codec.subject.clone(), payload).await?;
        (codec.decode)(next_payload(&mut sub).await?)?;
        if i >= WARMUP {
            latencies.push(started.elapsed());
        }
    }
    latencies.sort();

    // The receiver decodes on its own task and hands back one permit per decoded message.
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.window));
    let total = cfg.messages;
    let consumer = {
        let (permits, decode) = (permits.clone(), codec.decode.clone());
        tokio::spawn(async move {
            for _ in 0..total {
                (decode)(next_payload(&mut sub).await?)?;
                permits.add_permits(1);
            }
            anyhow::Ok(Instant::now())
        })
    };
    let started = Instant::now();
    for _ in 0..total {
        permits.acquire().await?.forget();
        let payload = (codec.encode)()?;
        publisher.publish(codec.subject.clone(), payload).await?;
    }
    let finished = consumer.await??;
    let secs = (finished - started).as_secs_f64();

    Ok(Remote {
        p50: percentile(&latencies, 50.0),
        p90: percentile(&latencies, 90.0),
        per_s: total as f64 / secs,
    })
}

fn main() -> anyhow::Result<()> {
    let cfg = Config::load();
    let bench_started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "transport bench: {WIDTH}×{HEIGHT} frames, {} messages per series, window {}, JPEG \
         quality {}, {cores} cores, load average {} at start",
        cfg.messages,
        cfg.window,
        cfg.quality,
        panoptes_tests::loadavg()
    );

    let rgb = scene();
    let mut jpeg = Vec::new();
    let jpeg_times = (0..5)
        .map(|_| {
            jpeg.clear();
            let started = Instant::now();
            jpeg_encoder::Encoder::new(&mut jpeg, cfg.quality).encode(
                &rgb,
                WIDTH as u16,
                HEIGHT as u16,
                jpeg_encoder::ColorType::Rgb,
            )?;
            Ok(started.elapsed())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let jpeg_encode = median(jpeg_times);
    let mut decoded = Vec::new();
    let to_rgb = median(
        (0..LOCAL_RUNS)
            .map(|_| {
                let started = Instant::now();
                let (w, h) = decode_rgb8(&jpeg, &JpegOptions::default(), &mut decoded)?;
                anyhow::ensure!((w, h) == (WIDTH, HEIGHT), "decoded {w}x{h}");
                Ok(started.elapsed())
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    );

    let raw = frame(PixelFormat::Rgb8, rgb);
    let codecs = vec![
        frame_codec("raw", raw.clone()),
        frame_codec("jpeg", frame(PixelFormat::Jpeg, jpeg)),
        tensor_codec("tensor+src", &raw, true)?,
        tensor_codec("tensor", &raw, false)?,
    ];

    let locals = codecs
        .iter()
        .map(measure_local)
        .collect::<anyhow::Result<Vec<_>>>()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(1))
        .enable_all()
        .build()?;
    let remotes = runtime.block_on(async {
        let server = tokio::task::spawn_blocking(panoptes_tests::nats_server).await?;
        let url = server.url().to_owned();
        let mut out = Vec::new();
        for codec in &codecs {
            let started = Instant::now();
            let r = measure_remote(&cfg, &url, codec).await?;
            eprintln!(
                "  {}: p50 {:.2} ms, {:.0} msg/s ({:.1} s)",
                codec.name,
                ms(r.p50),
                r.per_s,
                started.elapsed().as_secs_f64()
            );
            out.push(r);
        }
        tokio::task::spawn_blocking(move || server.stop()).await?;
        anyhow::Ok(out)
    })?;

    println!(
        "\n{:<11} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8} {:>7} {:>8}",
        "message",
        "bytes",
        "enc ms",
        "dec ms",
        "e+d ms",
        "p50 ms",
        "p90 ms",
        "p50÷e+d",
        "msg/s",
        "MB/s",
        "÷local/s",
        "→rgb ms",
        "+rgb p50"
    );
    for ((codec, l), r) in codecs.iter().zip(&locals).zip(&remotes) {
        let local = l.encode + l.decode;
        let (rgb, with_rgb) = if codec.name == "jpeg" {
            (
                format!("{:.2}", ms(to_rgb)),
                format!("{:.2}", ms(r.p50 + to_rgb)),
            )
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        println!(
            "{:<11} {:>9} {:>7.3} {:>7.3} {:>7.3} {:>7.2} {:>7.2} {:>8.1} {:>8.0} {:>7.0} {:>8.2} {:>7} {:>8}",
            codec.name,
            l.bytes,
            ms(l.encode),
            ms(l.decode),
            ms(local),
            ms(r.p50),
            ms(r.p90),
            r.p50.as_secs_f64() / local.as_secs_f64(),
            r.per_s,
            r.per_s * l.bytes as f64 / 1e6,
            r.per_s * local.as_secs_f64(),
            rgb,
            with_rgb
        );
    }
    println!(
        "\nbytes: one message; enc/dec: in-process medians of {LOCAL_RUNS} (decode from an \
         unaligned copy); e+d: their sum; p50/p90: publish→receive latency with encode and \
         decode, one message in flight ({} messages); p50÷e+d: the latency over in-process \
         encode+decode; msg/s: throughput with up to {} messages in flight; MB/s: msg/s × bytes; \
         ÷local/s: msg/s over 1 ÷ e+d (one core encoding and decoding, no NATS); →rgb: JPEG to \
         RGB (zune-jpeg), not in the jpeg row's other columns; +rgb p50: p50 + →rgb. JPEG \
         encode (jpeg-encoder, q{}, outside every clock): {:.2} ms. Took {:.0} s; load average \
         at end {}",
        cfg.messages,
        cfg.window,
        cfg.quality,
        ms(jpeg_encode),
        bench_started.elapsed().as_secs_f64(),
        panoptes_tests::loadavg()
    );
    Ok(())
}
