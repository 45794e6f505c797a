//! Clips and snapshots encoded with GStreamer: the buffered JPEG frames decoded, the overlay
//! of each frame drawn by `rsvgoverlay`, then H.264 in MP4 (x264enc, mp4mux) where those are
//! installed, MJPEG in AVI otherwise; a snapshot is one frame drawn and encoded to JPEG. The
//! pipelines run to the end on the calling thread (callers use a blocking thread).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::RecordError;
use crate::buffer::BufferedFrame;

/// How clips are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipFormat {
    /// H.264 in MP4.
    Mp4H264,
    /// Motion JPEG in AVI: when no H.264 encoder is installed.
    AviMjpeg,
}

impl ClipFormat {
    /// H.264 in MP4 when x264enc, h264parse and mp4mux are installed.
    pub fn available() -> Result<Self, RecordError> {
        init()?;
        let have = |name: &str| gst::ElementFactory::find(name).is_some();
        Ok(if have("x264enc") && have("h264parse") && have("mp4mux") {
            ClipFormat::Mp4H264
        } else {
            ClipFormat::AviMjpeg
        })
    }

    pub fn extension(self) -> &'static str {
        match self {
            ClipFormat::Mp4H264 => "mp4",
            ClipFormat::AviMjpeg => "avi",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ClipFormat::Mp4H264 => "video/mp4",
            ClipFormat::AviMjpeg => "video/x-msvideo",
        }
    }

    fn encoder(self) -> &'static str {
        match self {
            // An I-frame every second of 10 fps video, so a clip seeks well.
            ClipFormat::Mp4H264 => {
                "video/x-raw,format=I420 ! x264enc speed-preset=veryfast key-int-max=10 ! h264parse ! mp4mux"
            }
            ClipFormat::AviMjpeg => "jpegenc quality=85 ! avimux",
        }
    }
}

fn init() -> Result<(), RecordError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| RecordError::Encode(format!("GStreamer is not usable: {e}")))
}

fn gst_error(what: &str, e: impl std::fmt::Display) -> RecordError {
    RecordError::Encode(format!("{what}: {e}"))
}

/// Runs `pipeline` until end of stream or error.
fn run_to_end(pipeline: &gst::Pipeline) -> Result<(), RecordError> {
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| gst_error("cannot start the encoding pipeline", e))?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| RecordError::Encode("the pipeline has no bus".into()))?;
    let result = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(120)) else {
            break Err(RecordError::Encode(
                "encoding made no progress in 120 s".into(),
            ));
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(err) => {
                break Err(RecordError::Encode(format!(
                    "{} (from {})",
                    err.error(),
                    err.src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default()
                )));
            }
            _ => {}
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Where a frame's overlay is set on `rsvgoverlay` just before the frame reaches it.
fn draw_per_buffer(overlay: &gst::Element, svgs: HashMap<u64, String>) -> Result<(), RecordError> {
    let pad = overlay
        .static_pad("sink")
        .ok_or_else(|| RecordError::Encode("rsvgoverlay has no sink pad".into()))?;
    let target = overlay.downgrade();
    let svgs = Arc::new(Mutex::new(svgs));
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let (Some(gst::PadProbeData::Buffer(buffer)), Some(overlay)) =
            (info.data.as_ref(), target.upgrade())
            && let Some(pts) = buffer.pts()
        {
            let svgs = svgs.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(svg) = svgs.get(&pts.nseconds()) {
                overlay.set_property("data", svg.as_str());
            }
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Encodes `frames` (in capture order) into a clip; `overlays`, when given, is one SVG per
/// frame. Timestamps are the capture times from the first frame on, so the clip lasts as long
/// as the scene did (the last frame for the median frame interval).
pub fn encode_clip(
    frames: &[BufferedFrame],
    overlays: Option<&[String]>,
    format: ClipFormat,
) -> Result<Vec<u8>, RecordError> {
    init()?;
    let first = frames
        .first()
        .ok_or_else(|| RecordError::Encode("a clip needs at least one frame".into()))?;
    let mut gaps: Vec<u64> = frames
        .windows(2)
        .map(|w| w[1].capture_ts_ns.saturating_sub(w[0].capture_ts_ns))
        .collect();
    gaps.sort_unstable();
    let interval = gaps
        .get(gaps.len() / 2)
        .copied()
        .filter(|&g| g > 0)
        .unwrap_or(100_000_000);
    let fps_milli = (1e12 / interval as f64).round().max(1.0) as i32;
    let dir = tempfile::tempdir().map_err(|e| gst_error("cannot make a scratch directory", e))?;
    let path = dir.path().join(format!("clip.{}", format.extension()));
    // An element between the size caps and the encoder's caps either way: two caps in a row
    // do not parse (videoconvert passes through what is already I420).
    let draw = if overlays.is_some() {
        "rsvgoverlay name=overlay qos=false fit-to-frame=true ! videoconvert ! "
    } else {
        "videoconvert ! "
    };
    let description = format!(
        "appsrc name=src format=time caps=image/jpeg,framerate={fps_milli}/1000 ! jpegdec ! \
         videoconvert ! videoscale ! video/x-raw,width={w},height={h},pixel-aspect-ratio=1/1 ! \
         {draw}{encoder} ! filesink name=sink",
        w = first.width,
        h = first.height,
        encoder = format.encoder(),
    );
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| gst_error("cannot build the encoding pipeline", e))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| RecordError::Encode("the encoding description is not a pipeline".into()))?;
    let by_name = |name: &str| {
        pipeline
            .by_name(name)
            .ok_or_else(|| RecordError::Encode(format!("no element `{name}`")))
    };
    by_name("sink")?.set_property("location", path.to_string_lossy().as_ref());
    let pts = |f: &BufferedFrame| f.capture_ts_ns.saturating_sub(first.capture_ts_ns);
    if let (Some(overlays), Ok(overlay)) = (overlays, by_name("overlay")) {
        let svgs = frames
            .iter()
            .map(pts)
            .zip(overlays.iter().cloned())
            .collect();
        draw_per_buffer(&overlay, svgs)?;
    }
    let src = by_name("src")?
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| RecordError::Encode("`src` is not an appsrc".into()))?;
    src.set_max_bytes(0);
    let feeder = {
        let src = src.clone();
        let frames: Vec<BufferedFrame> = frames.to_vec();
        let first_ts = first.capture_ts_ns;
        std::thread::spawn(move || {
            for (i, f) in frames.iter().enumerate() {
                let mut buffer = gst::Buffer::from_slice(f.jpeg.clone());
                let start = f.capture_ts_ns.saturating_sub(first_ts);
                let end = frames.get(i + 1).map_or(start + interval, |n| {
                    n.capture_ts_ns.saturating_sub(first_ts)
                });
                if let Some(b) = buffer.get_mut() {
                    b.set_pts(gst::ClockTime::from_nseconds(start));
                    b.set_duration(gst::ClockTime::from_nseconds(end.saturating_sub(start)));
                }
                if src.push_buffer(buffer).is_err() {
                    return;
                }
            }
            let _ = src.end_of_stream();
        })
    };
    let result = run_to_end(&pipeline);
    let _ = feeder.join();
    result?;
    std::fs::read(&path).map_err(|e| gst_error("cannot read the encoded clip", e))
}

/// One frame with its overlay drawn (when given), as JPEG.
pub fn encode_snapshot(
    frame: &BufferedFrame,
    overlay: Option<&str>,
) -> Result<Vec<u8>, RecordError> {
    init()?;
    let draw = if overlay.is_some() {
        "rsvgoverlay name=overlay qos=false fit-to-frame=true ! videoconvert ! "
    } else {
        ""
    };
    let description = format!(
        "appsrc name=src format=time caps=image/jpeg,framerate=0/1 ! jpegdec ! videoconvert ! \
         {draw}jpegenc quality=90 ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| gst_error("cannot build the snapshot pipeline", e))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| RecordError::Encode("the snapshot description is not a pipeline".into()))?;
    if let (Some(svg), Some(o)) = (overlay, pipeline.by_name("overlay")) {
        o.set_property("data", svg);
    }
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| RecordError::Encode("no appsrc".into()))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| RecordError::Encode("no appsink".into()))?;
    let mut buffer = gst::Buffer::from_slice(frame.jpeg.clone());
    if let Some(b) = buffer.get_mut() {
        b.set_pts(gst::ClockTime::ZERO);
    }
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| gst_error("cannot start the snapshot pipeline", e))?;
    let pushed = src.push_buffer(buffer).is_ok() && src.end_of_stream().is_ok();
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(30));
    let _ = pipeline.set_state(gst::State::Null);
    let sample = match (pushed, sample) {
        (true, Some(sample)) => sample,
        _ => {
            return Err(RecordError::Encode(
                "the snapshot pipeline produced no image".into(),
            ));
        }
    };
    let buffer = sample
        .buffer()
        .ok_or_else(|| RecordError::Encode("the snapshot sample has no buffer".into()))?;
    let map = buffer
        .map_readable()
        .map_err(|e| gst_error("cannot read the snapshot", e))?;
    Ok(map.as_slice().to_vec())
}
