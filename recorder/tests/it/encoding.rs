//! Clips and snapshots through the real GStreamer elements: H.264 in MP4 and the MJPEG
//! fallback both decode back to every frame, with the capture times' spacing; a frame's SVG
//! is drawn on that frame only.

use gstreamer as gst;
use gstreamer::prelude::*;
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_recorder::buffer::BufferedFrame;
use panoptes_recorder::encode::{ClipFormat, encode_clip, encode_snapshot};

const W: u32 = 320;
const H: u32 = 180;

fn frame(seq: u64) -> BufferedFrame {
    let f = Frame {
        camera: panoptes_contracts::CameraId::new("cam").expect("camera"),
        seq,
        capture_ts_ns: 1_000_000_000 + seq * 100_000_000,
        width: W,
        height: H,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(vec![40u8; (W * H * 3) as usize]),
    };
    BufferedFrame::from_frame(&f, 85).expect("jpeg")
}

/// Decoded frames (timestamps, RGB) of an encoded file.
fn decode(bytes: &[u8], demux: &str) -> Vec<(u64, Vec<u8>)> {
    gst::init().expect("gstreamer");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("clip");
    std::fs::write(&path, bytes).expect("write");
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! {demux} videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
        path.display()
    ))
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gstreamer_app::AppSink>().ok())
        .expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("play");
    let mut out = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let buffer = sample.buffer().expect("buffer");
        let map = buffer.map_readable().expect("map");
        out.push((
            buffer.pts().map_or(0, |t| t.nseconds()),
            map.as_slice().to_vec(),
        ));
    }
    let _ = pipeline.set_state(gst::State::Null);
    out
}

fn green_box_svg() -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}"><rect x="100" y="50" width="60" height="40" fill="none" stroke="#00ff00" stroke-width="4"/></svg>"##
    )
}

fn at(rgb: &[u8], x: u32, y: u32) -> [u8; 3] {
    let i = ((y * W + x) * 3) as usize;
    [rgb[i], rgb[i + 1], rgb[i + 2]]
}

#[test]
fn both_formats_decode_to_every_frame_with_its_time_and_its_own_overlay() {
    let frames: Vec<BufferedFrame> = (0..20).map(frame).collect();
    // Only frame 5 has a box.
    let empty =
        format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}"></svg>"#);
    let overlays: Vec<String> = (0..20)
        .map(|i| {
            if i == 5 {
                green_box_svg()
            } else {
                empty.clone()
            }
        })
        .collect();
    for (format, demux) in [
        (ClipFormat::Mp4H264, "qtdemux ! h264parse ! avdec_h264 !"),
        (ClipFormat::AviMjpeg, "avidemux ! jpegdec !"),
    ] {
        // Nothing drawn: the same frames, as they were.
        let plain = encode_clip(&frames, None, format).expect("encode without overlays");
        assert_eq!(
            decode(&plain, demux).len(),
            20,
            "{format:?} without overlays"
        );
        let bytes = encode_clip(&frames, Some(&overlays), format).expect("encode");
        let decoded = decode(&bytes, demux);
        assert_eq!(decoded.len(), 20, "{format:?}");
        let pts: Vec<u64> = decoded.iter().map(|d| d.0).collect();
        assert_eq!(pts[1] - pts[0], 100_000_000, "{format:?}: {pts:?}");
        assert_eq!(pts[19] - pts[0], 1_900_000_000, "{format:?}: {pts:?}");
        let green = |p: [u8; 3]| p[1] > 180 && p[0] < 90 && p[2] < 90;
        assert!(
            green(at(&decoded[5].1, 130, 50)),
            "{format:?}: {:?}",
            at(&decoded[5].1, 130, 50)
        );
        assert!(
            !green(at(&decoded[6].1, 130, 50)),
            "{format:?}: frame 6 has no box"
        );
        assert!(
            !green(at(&decoded[4].1, 130, 50)),
            "{format:?}: frame 4 has no box"
        );
    }
}

#[test]
fn a_snapshot_is_the_frame_with_its_overlay() {
    let jpeg = encode_snapshot(&frame(3), Some(&green_box_svg())).expect("snapshot");
    let decoded = decode(&jpeg, "jpegdec !");
    assert_eq!(decoded.len(), 1);
    let rgb = &decoded[0].1;
    assert!(at(rgb, 100, 70)[1] > 180, "{:?}", at(rgb, 100, 70));
    assert!(
        at(rgb, 20, 20).iter().all(|&c| c.abs_diff(40) < 20),
        "{:?}",
        at(rgb, 20, 20)
    );
    // Without an overlay, just the frame.
    let plain = decode(
        &encode_snapshot(&frame(3), None).expect("snapshot"),
        "jpegdec !",
    );
    assert!(
        at(&plain[0].1, 100, 70)
            .iter()
            .all(|&c| c.abs_diff(40) < 20)
    );
}
