//! `panoptes publish`: how a third party feeds the pipeline — frames from an image, a video file
//! or a test pattern, decoded by GStreamer and published exactly as an ingest node publishes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use panoptes_contracts::{CameraId, Subjects};
use panoptes_ingest::{Framerate, Ingest, Output, RawFrame, SourceSpec, SourceStatus, TestPattern};
use tokio::sync::mpsc;

use crate::nats_args::NatsArgs;
use panoptes_ingest::frame_out::{EncodedFrame, FramePublisher, raw_fits};

/// How `panoptes publish` sends pictures, as a camera's `encoding` in a topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    /// Packed RGB (`rgb8`): what an RGB-only first stage reads.
    Raw,
    /// JPEG (`jpeg`): the workers' first stage must be the `jpeg` operator.
    Jpeg,
    /// Raw when a raw frame fits the server's max_payload, JPEG otherwise.
    Auto,
}

/// Rate stills are sent at when `--fps` is not given: a typical camera's.
const DEFAULT_STILL_FPS: f64 = 10.0;

#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("source")
        .required(true)
        .args(["image", "video", "test_pattern"])
))]
pub struct PublishArgs {
    /// A still image (PNG, JPEG, anything GStreamer decodes), sent --count times.
    #[arg(long, env = "PANOPTES_IMAGE", value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// A video file, sent frame by frame at its own rate (or --fps).
    #[arg(long, env = "PANOPTES_VIDEO", value_name = "FILE")]
    pub video: Option<PathBuf>,
    /// A synthetic frame: TEXT drawn on a solid background, as a test_pattern camera draws it;
    /// sent --count times.
    #[arg(long, env = "PANOPTES_TEST_PATTERN", value_name = "TEXT")]
    pub test_pattern: Option<String>,
    /// The camera the frames are published as (subject `<namespace>.frames.<camera>`).
    #[arg(long, env = "PANOPTES_CAMERA")]
    pub camera: String,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[arg(long, env = "PANOPTES_NAMESPACE", default_value = Subjects::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// How frames travel: `raw` RGB, `jpeg`, or `auto` (raw when it fits the server's
    /// max_payload, else JPEG), as a camera's `encoding` in a topology.
    #[arg(long, env = "PANOPTES_ENCODING", value_enum, default_value_t = Encoding::Raw)]
    pub encoding: Encoding,
    /// JPEG quality (1..=100) for `--encoding jpeg|auto`.
    #[arg(long, env = "PANOPTES_JPEG_QUALITY", default_value_t = 85,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
    /// Frames to send. An image or test pattern is sent this many times (default 1); a video
    /// stops after this many frames (default: at its end).
    #[arg(long, env = "PANOPTES_COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Frames per second to send. Default: 10 for an image or test pattern; a video's own rate
    /// (with --fps a video is resampled to this rate, dropping or repeating frames).
    #[arg(long, env = "PANOPTES_FPS", value_parser = parse_fps)]
    pub fps: Option<f64>,
    /// Scale frames to this width (default: the source's; 1280 for a test pattern).
    #[arg(long, env = "PANOPTES_WIDTH", value_parser = clap::value_parser!(u32).range(1..=16_384))]
    pub width: Option<u32>,
    /// Scale frames to this height (default: the source's; 720 for a test pattern).
    #[arg(long, env = "PANOPTES_HEIGHT", value_parser = clap::value_parser!(u32).range(1..=16_384))]
    pub height: Option<u32>,
    /// Start the video again at its end, until --count frames are sent or Ctrl-C.
    #[arg(long = "loop", env = "PANOPTES_LOOP")]
    pub looping: bool,
}

fn parse_fps(s: &str) -> Result<f64, String> {
    let fps: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(fps.is_finite() && fps > 0.0 && fps <= 1000.0) {
        return Err(format!("{s} is not a frame rate in (0, 1000]"));
    }
    Ok(fps)
}

/// What was sent so far; read for the summary whether publishing finished, failed or was
/// interrupted.
#[derive(Default)]
struct Progress {
    frames: u64,
    bytes: u64,
    size: Option<(u32, u32)>,
}

/// What will be sent, prepared before connecting so a bad file fails before NATS is involved.
enum Plan {
    /// One picture, sent `--count` times.
    Still(RawFrame),
    /// A video file and the pipeline that plays it.
    Video(PathBuf, SourceSpec),
}

/// Publishes what `args` asks for, until done or `shutdown` completes, and prints a summary
/// line on stderr. Sequence numbers start at 0 on every run, as an ingest node's do.
pub async fn run(args: PublishArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let camera = CameraId::new(&args.camera)?;
    if args.looping && args.video.is_none() {
        bail!("--loop applies to --video only");
    }
    panoptes_ingest::init().context("cannot initialise GStreamer")?;
    // Decoded once as RGB before connecting, so a bad file fails before NATS is involved.
    let planned = plan(&args, Output::Rgb).await?;
    let client = args.nats.connect().await?;
    let max_payload = client.server_info().max_payload;
    let planned = match planned {
        Plan::Still(still) => match output_for(&args, (still.width, still.height), max_payload) {
            Output::Rgb => Plan::Still(still),
            jpeg => plan(&args, jpeg).await?,
        },
        video => video,
    };
    let publisher = FramePublisher::new(client.clone(), &Subjects::new(&args.namespace), camera);
    let started = Instant::now();
    let mut progress = Progress::default();
    let outcome = tokio::select! {
        r = publish(planned, &args, max_payload, &publisher, &mut progress) => r.map(|()| ""),
        () = shutdown => Ok(" (interrupted)"),
    };
    // Publishing only queues on the connection; the summary must not claim frames still queued.
    let flushed = confirm_delivery(&client).await;
    let secs = started.elapsed().as_secs_f64();
    let size = progress
        .size
        .map_or_else(String::new, |(w, h)| format!(" of {w}x{h}"));
    eprintln!(
        "panoptes: published {} frame(s){size} ({:.1} MB) on {} in {secs:.1} s ({:.1} frames/s){}",
        progress.frames,
        progress.bytes as f64 / 1e6,
        publisher.subject(),
        progress.frames as f64 / secs.max(1e-9),
        outcome.as_ref().map_or(" (failed)", |s| s)
    );
    outcome?;
    flushed
}

/// Returns once the server has taken everything published on `client` so far. `flush` only
/// hands bytes to the socket, and a process exiting right after could still lose its last
/// frame; a message echoed back through the server proves it read all that came before,
/// because a server handles each connection's messages in order.
async fn confirm_delivery(client: &async_nats::Client) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .context("cannot confirm delivery to NATS")?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .context("cannot confirm delivery to NATS")?;
    tokio::time::timeout(Duration::from_secs(30), echo.next())
        .await
        .ok()
        .flatten()
        .map(drop)
        .context("NATS did not confirm the frames were delivered within 30 s")
}

/// What `args` asks frames of `size` to travel as, given the server's `max_payload`.
fn output_for(args: &PublishArgs, (width, height): (u32, u32), max_payload: usize) -> Output {
    let jpeg = Output::Jpeg {
        quality: args.jpeg_quality,
    };
    match args.encoding {
        Encoding::Raw => Output::Rgb,
        Encoding::Jpeg => jpeg,
        Encoding::Auto if raw_fits(width, height, max_payload) => Output::Rgb,
        Encoding::Auto => jpeg,
    }
}

/// Prepares what to send, stills decoded (or rendered) to `output`.
async fn plan(args: &PublishArgs, output: Output) -> anyhow::Result<Plan> {
    if let Some(text) = &args.test_pattern {
        let pattern = TestPattern {
            text: text.clone(),
            width: args.width.unwrap_or(1280),
            height: args.height.unwrap_or(720),
            live: false,
            ..TestPattern::default()
        };
        let still = if output == Output::Rgb {
            tokio::task::spawn_blocking(move || panoptes_ingest::render_still(&pattern))
                .await?
                .context("cannot render the test pattern")?
        } else {
            // The same picture through the same pipeline, encoded by its jpegenc tail.
            let mut decoder = Decoder::start(&SourceSpec::TestPattern(pattern), output)
                .context("cannot render the test pattern")?;
            let still = decoder
                .next()
                .await
                .context("cannot render the test pattern")?;
            decoder.stop().await;
            still.ok_or_else(|| anyhow!("the test pattern produced no picture"))?
        };
        Ok(Plan::Still(still))
    } else if let Some(path) = &args.image {
        let spec = decode_spec(path, args, None, false)?;
        let mut decoder = Decoder::start(&spec, output)
            .with_context(|| format!("cannot decode {}", path.display()))?;
        let still = decoder
            .next()
            .await
            .with_context(|| format!("cannot decode {}", path.display()))?;
        decoder.stop().await;
        let still = still.ok_or_else(|| anyhow!("{} holds no picture", path.display()))?;
        Ok(Plan::Still(still))
    } else if let Some(path) = &args.video {
        let spec = decode_spec(path, args, args.fps.map(framerate), true)?;
        Ok(Plan::Video(path.clone(), spec))
    } else {
        // clap's `source` group requires one of the three.
        bail!("give one of --image, --video or --test-pattern")
    }
}

async fn publish(
    plan: Plan,
    args: &PublishArgs,
    max_payload: usize,
    publisher: &FramePublisher,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    match plan {
        Plan::Still(still) => publish_still(args, still, publisher, progress).await,
        Plan::Video(path, spec) => {
            let output = video_output(&path, &spec, args, max_payload).await?;
            publish_video(&path, &spec, output, args, publisher, progress).await
        }
    }
}

/// The output for a video: for `auto`, decided by the size of its first frame.
async fn video_output(
    path: &Path,
    spec: &SourceSpec,
    args: &PublishArgs,
    max_payload: usize,
) -> anyhow::Result<Output> {
    if args.encoding != Encoding::Auto {
        return Ok(output_for(args, (0, 0), max_payload));
    }
    let mut probe = Decoder::start(spec, Output::Rgb)
        .with_context(|| format!("cannot play {}", path.display()))?;
    let first = probe
        .next()
        .await
        .with_context(|| format!("cannot play {}", path.display()))?;
    probe.stop().await;
    let first = first.ok_or_else(|| anyhow!("{} holds no video frames", path.display()))?;
    Ok(output_for(args, (first.width, first.height), max_payload))
}

/// Sends one picture `--count` times at `--fps`, each as a new frame captured now.
async fn publish_still(
    args: &PublishArgs,
    still: RawFrame,
    publisher: &FramePublisher,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let fps = args.fps.unwrap_or(DEFAULT_STILL_FPS);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / fps));
    // Late ticks shift the schedule instead of bursting to catch up: steady spacing is what a
    // camera looks like.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0..args.count.unwrap_or(1) {
        ticks.tick().await;
        let frame = RawFrame {
            capture_ts_ns: panoptes_contracts::time::now_ns(),
            ..still.clone()
        };
        send(publisher, seq, frame, progress).await?;
    }
    Ok(())
}

/// Sends a video's frames as GStreamer paces them, restarting it at the end with `--loop`.
async fn publish_video(
    path: &Path,
    spec: &SourceSpec,
    output: Output,
    args: &PublishArgs,
    publisher: &FramePublisher,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let mut seq = 0u64;
    loop {
        let mut decoder = Decoder::start(spec, output)
            .with_context(|| format!("cannot play {}", path.display()))?;
        let first = seq;
        while let Some(frame) = decoder
            .next()
            .await
            .with_context(|| format!("cannot play {}", path.display()))?
        {
            send(publisher, seq, frame, progress).await?;
            seq += 1;
            if args.count.is_some_and(|c| seq >= c) {
                decoder.stop().await;
                return Ok(());
            }
        }
        decoder.stop().await;
        if seq == first {
            bail!("{} holds no video frames", path.display());
        }
        if !args.looping {
            return Ok(());
        }
    }
}

async fn send(
    publisher: &FramePublisher,
    seq: u64,
    frame: RawFrame,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let size = (frame.width, frame.height);
    let encoded = EncodedFrame::encode(publisher.camera(), seq, frame)?;
    let bytes = encoded.payload.len() as u64;
    publisher.publish(encoded).await?;
    progress.frames += 1;
    progress.bytes += bytes;
    progress.size = Some(size);
    Ok(())
}

/// `fps` as the fraction GStreamer caps take (millihertz precision for non-integer rates).
fn framerate(fps: f64) -> Framerate {
    if fps.fract() == 0.0 {
        Framerate::new(fps as u32, 1)
    } else {
        Framerate::new((fps * 1000.0).round() as u32, 1000)
    }
}

/// The decoding pipeline for a file: any container and codec installed GStreamer plugins
/// handle, optionally resampled to `rate`, scaled to `--width`/`--height`, and paced to real
/// time (`identity sync=true`; without it a file decodes as fast as the CPU allows).
fn decode_spec(
    path: &Path,
    args: &PublishArgs,
    rate: Option<Framerate>,
    paced: bool,
) -> anyhow::Result<SourceSpec> {
    let mut desc = format!("uridecodebin uri={}", file_uri(path)?);
    if paced {
        desc.push_str(" ! identity sync=true");
    }
    if let Some(Framerate { num, den }) = rate {
        desc.push_str(&format!(" ! videorate ! video/x-raw,framerate={num}/{den}"));
    }
    if args.width.is_some() || args.height.is_some() {
        // With one side given, a square pixel aspect ratio lets videoscale pick the other so
        // the picture keeps its shape.
        desc.push_str(" ! videoconvert ! videoscale ! video/x-raw,pixel-aspect-ratio=1/1");
        if let Some(w) = args.width {
            desc.push_str(&format!(",width={w}"));
        }
        if let Some(h) = args.height {
            desc.push_str(&format!(",height={h}"));
        }
    }
    Ok(SourceSpec::Pipeline(desc))
}

/// A `file://` URI for `path`, percent-encoding every byte but unreserved ones and `/`. The
/// result has no character gst_parse treats specially (spaces, quotes, `!`, `,`), so a file
/// name cannot change the pipeline it is spliced into.
fn file_uri(path: &Path) -> anyhow::Result<String> {
    if !path.is_file() {
        bail!("{} is not a readable file", path.display());
    }
    let absolute = std::path::absolute(path)
        .with_context(|| format!("cannot make {} absolute", path.display()))?;
    let text = absolute
        .to_str()
        .ok_or_else(|| anyhow!("file path {} is not UTF-8", absolute.display()))?;
    let mut uri = String::from("file://");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(uri)
}

/// A started GStreamer source handing frames over in order, lossless: a non-live file source
/// waits for the consumer instead of dropping.
struct Decoder {
    // Receivers are declared (so dropped) before `ingest`: stopping GStreamer joins the frame
    // thread, which may be blocked handing over a frame until its receiver is gone.
    frames: mpsc::Receiver<RawFrame>,
    errors: mpsc::UnboundedReceiver<String>,
    ingest: Option<Ingest>,
}

impl Decoder {
    fn start(spec: &SourceSpec, output: Output) -> anyhow::Result<Self> {
        let (frame_tx, frames) = mpsc::channel(2);
        let (error_tx, errors) = mpsc::unbounded_channel();
        // Runs on the GStreamer frame thread, never on the runtime, so blocking is allowed.
        let on_frame = move |frame: RawFrame| {
            let _ = frame_tx.blocking_send(frame);
        };
        let on_status = move |status: SourceStatus| {
            if let SourceStatus::Error(e) = status {
                let _ = error_tx.send(e);
            }
        };
        let ingest = Ingest::start_with(spec, output, on_frame, on_status)?;
        Ok(Self {
            frames,
            errors,
            ingest: Some(ingest),
        })
    }

    /// The next frame, `None` once the stream ended and every frame was handed over (the
    /// frame thread exits and drops its sender), or the first error GStreamer reported.
    async fn next(&mut self) -> anyhow::Result<Option<RawFrame>> {
        tokio::select! {
            biased;
            frame = self.frames.recv() => Ok(frame),
            Some(e) = self.errors.recv() => Err(anyhow!("{e}")),
        }
    }

    async fn stop(mut self) {
        self.frames.close();
        while self.frames.try_recv().is_ok() {}
        if let Some(ingest) = self.ingest.take() {
            // Joining GStreamer threads blocks.
            let _ = tokio::task::spawn_blocking(move || ingest.stop()).await;
        }
    }
}
