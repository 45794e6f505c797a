//! JPEG output (`Output::Jpeg`): the test pattern and description sources end in `jpegenc`,
//! every frame is one JPEG file of the source's size that an independent decoder (zune-jpeg,
//! the `jpeg` operator's kernel) reads back, and bad qualities are refused before starting.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use panoptes_ingest::{
    FrameFormat, Framerate, Ingest, IngestError, Output, RawFrame, SourceSpec, SourceStatus,
    TestPattern, ink_bbox, render_still,
};
use panoptes_op_preprocess::jpeg::{self, JpegOptions};

/// Failure guard only: how long a source may take to deliver what a test waits for.
const DEADLINE: Duration = Duration::from_secs(20);

/// Starts `spec` with `output`, both callbacks feeding channels.
fn start(
    spec: &SourceSpec,
    output: Output,
) -> (
    Ingest,
    mpsc::Receiver<RawFrame>,
    mpsc::Receiver<SourceStatus>,
) {
    let (ftx, frx) = mpsc::channel();
    let (stx, srx) = mpsc::channel();
    let ingest = Ingest::start_with(
        spec,
        output,
        move |f| {
            let _ = ftx.send(f);
        },
        move |s| {
            let _ = stx.send(s);
        },
    )
    .expect("ingest starts");
    (ingest, frx, srx)
}

fn recv_frames(rx: &mpsc::Receiver<RawFrame>, n: usize) -> Vec<RawFrame> {
    let deadline = Instant::now() + DEADLINE;
    let mut frames = Vec::new();
    while frames.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(f) => frames.push(f),
            Err(e) => panic!("only {} of {n} frames: {e}", frames.len()),
        }
    }
    frames
}

fn wait_eos(rx: &mpsc::Receiver<SourceStatus>) {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(SourceStatus::Eos) => return,
            Ok(s) => seen.push(s),
            Err(e) => panic!("no end of stream (saw {seen:?}): {e}"),
        }
    }
}

/// Checks that `f` is a JPEG frame of `width`×`height` and returns it decoded as packed RGB,
/// in a frame of its own for `ink_bbox`.
fn decoded(f: &RawFrame, width: u32, height: u32) -> RawFrame {
    assert_eq!(f.format, FrameFormat::Jpeg, "{f:?}");
    assert_eq!((f.width, f.height, f.stride), (width, height, 0), "{f:?}");
    assert!(
        f.data.starts_with(&[0xFF, 0xD8]),
        "a JPEG file starts with SOI"
    );
    assert!(f.data.ends_with(&[0xFF, 0xD9]), "and ends with EOI");
    assert_eq!(
        f.pixel(0, 0),
        None,
        "JPEG frames have no addressable pixels"
    );
    let mut rgb = Vec::new();
    let size = jpeg::decode_rgb8(&f.data, &JpegOptions::default(), &mut rgb).expect("decodes");
    assert_eq!(size, (width, height), "the file's own size");
    RawFrame {
        format: FrameFormat::Rgb,
        stride: width * 3,
        data: rgb,
        ..f.clone()
    }
}

#[test]
fn test_pattern_as_jpeg_decodes_to_the_pattern() {
    let pattern = TestPattern {
        text: "JPEG 42".into(),
        width: 640,
        height: 360,
        fps: Framerate::from(30),
        background: 0xff30_5070,
        live: false,
        ..TestPattern::default()
    };
    let (ingest, frames_rx, _status) = start(
        &SourceSpec::TestPattern(pattern.clone()),
        Output::Jpeg { quality: 85 },
    );
    let frames = recv_frames(&frames_rx, 3);
    ingest.stop();
    let still = render_still(&pattern).expect("RGB still");
    let want = ink_bbox(&still, pattern.background_rgb(), 24).expect("text drawn");
    for f in &frames {
        // A few KB for a flat background with text, against 691,200 bytes as RGB.
        assert!(f.data.len() < 60_000, "{} bytes", f.data.len());
        let rgb = decoded(f, 640, 360);
        let bg = rgb.pixel(5, 5).expect("inside");
        let diff = bg
            .iter()
            .zip(pattern.background_rgb())
            .map(|(a, b)| a.abs_diff(b))
            .max();
        let got = ink_bbox(&rgb, pattern.background_rgb(), 24).expect("text decoded");
        eprintln!(
            "{} bytes, background {bg:?} (max diff {diff:?}), text {got:?} vs RGB {want:?}",
            f.data.len()
        );
        // Converted to I420 and JPEG-coded: measured 1 off.
        assert!(diff <= Some(4), "background {bg:?}");
        // The text is where the RGB still has it; JPEG ringing and 4:2:0 chroma move the
        // edge of what differs from the background by a pixel or two.
        for (g, w) in got.iter().zip(want) {
            assert!(g.abs_diff(w) <= 4, "text at {got:?}, RGB still {want:?}");
        }
    }
}

#[test]
fn description_source_as_jpeg_runs_to_eos_at_its_size() {
    // An odd size: I420's chroma planes round up, and the JPEG must still say 321x181.
    let spec = SourceSpec::Pipeline(
        "videotestsrc num-buffers=4 pattern=smpte ! videoscale ! video/x-raw,width=321,height=181"
            .into(),
    );
    let (ingest, frames_rx, status_rx) = start(&spec, Output::Jpeg { quality: 90 });
    let frames = recv_frames(&frames_rx, 4);
    wait_eos(&status_rx);
    ingest.stop();
    for f in &frames {
        let rgb = decoded(f, 321, 181);
        // SMPTE bars: the first bar is 75% grey/white, the third cyan-ish; both survive.
        let [r, g, b] = rgb.pixel(10, 10).expect("inside");
        assert!(r > 150 && g > 150 && b > 150, "first bar {:?}", [r, g, b]);
    }
    let pts: Vec<Option<u64>> = frames.iter().map(|f| f.pts_ns).collect();
    assert!(pts.iter().all(Option::is_some), "{pts:?}");
}

#[test]
fn description_ending_in_rgb_caps_still_encodes() {
    // What camera descriptions end in today (`…,format=RGB,width=…`): converted to I420 for
    // the encoder, so it works, at the cost of one more conversion.
    let spec = SourceSpec::Pipeline(
        "videotestsrc num-buffers=2 pattern=ball ! video/x-raw,format=RGB,width=256,height=144"
            .into(),
    );
    let (ingest, frames_rx, status_rx) = start(&spec, Output::Jpeg { quality: 50 });
    let frames = recv_frames(&frames_rx, 2);
    wait_eos(&status_rx);
    ingest.stop();
    for f in &frames {
        decoded(f, 256, 144);
    }
}

#[test]
fn colours_match_rgb_output_for_hd_yuv_sources() {
    // HD I420 from a decoder is BT.709 limited range; the JPEG must still decode to the
    // colours RGB output shows (JFIF is BT.601 full range, see the pipeline's colorimetry).
    // The colorimetry is named because videotestsrc would otherwise take JFIF's from the
    // caps downstream and paint limited-range values under it.
    let spec = SourceSpec::Pipeline(
        "videotestsrc num-buffers=1 pattern=smpte \
         ! video/x-raw,format=I420,width=1280,height=720,colorimetry=bt709"
            .into(),
    );
    let first = |output| {
        let (ingest, frames_rx, _status) = start(&spec, output);
        let frame = recv_frames(&frames_rx, 1).remove(0);
        ingest.stop();
        frame
    };
    let rgb = first(Output::Rgb);
    let jpeg = decoded(&first(Output::Jpeg { quality: 95 }), 1280, 720);
    // The centre of each of the seven top bars, away from edges where 4:2:0 chroma bleeds.
    let mut worst = 0;
    for bar in 0..7 {
        let x = 1280 * (2 * bar + 1) / 14;
        let (a, b) = (rgb.pixel(x, 100), jpeg.pixel(x, 100));
        let (Some(a), Some(b)) = (a, b) else {
            panic!("bar {bar} outside the frame")
        };
        let diff = a
            .iter()
            .zip(b)
            .map(|(p, q)| p.abs_diff(q))
            .max()
            .unwrap_or(0);
        eprintln!("bar {bar}: RGB output {a:?}, JPEG {b:?}");
        worst = worst.max(diff);
    }
    // Measured: at most 3 off; limited range read as JFIF was up to 18 off (white at 235).
    assert!(worst <= 6, "colours differ by up to {worst}");
}

#[test]
fn quality_is_passed_to_the_encoder() {
    let size = |quality: u8| {
        let spec = SourceSpec::Pipeline(
            "videotestsrc num-buffers=1 pattern=smpte ! video/x-raw,width=640,height=480".into(),
        );
        let (ingest, frames_rx, _status) = start(&spec, Output::Jpeg { quality });
        let frame = recv_frames(&frames_rx, 1).remove(0);
        ingest.stop();
        decoded(&frame, 640, 480);
        frame.data.len()
    };
    let (low, high) = (size(10), size(95));
    eprintln!("smpte 640x480: quality 10 → {low} bytes, 95 → {high} bytes");
    assert!(high > 2 * low, "quality 10: {low} bytes, 95: {high} bytes");
}

#[test]
fn rgb_output_is_unchanged_by_default() {
    assert_eq!(Output::default(), Output::Rgb);
    let spec =
        SourceSpec::Pipeline("videotestsrc num-buffers=1 ! video/x-raw,width=32,height=16".into());
    let (ingest, frames_rx, _status) = start(&spec, Output::default());
    let f = recv_frames(&frames_rx, 1).remove(0);
    ingest.stop();
    assert_eq!(f.format, FrameFormat::Rgb);
    assert_eq!((f.width, f.height, f.stride), (32, 16, 96));
    assert_eq!(f.data.len(), 32 * 16 * 3);
}

#[test]
fn out_of_range_quality_is_refused_before_starting() {
    let spec = SourceSpec::TestPattern(TestPattern {
        live: false,
        ..TestPattern::default()
    });
    for quality in [0, 101, 255] {
        match Ingest::start_with(&spec, Output::Jpeg { quality }, |_| {}, |_| {}) {
            Err(e @ IngestError::InvalidSpec(_)) => {
                assert!(e.to_string().contains(&quality.to_string()), "{e}")
            }
            other => panic!("quality {quality}: expected InvalidSpec, got {other:?}"),
        }
    }
}
