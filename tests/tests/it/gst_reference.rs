//! GStreamer as an independent reference for the `colorconvert` and `jpeg` Wasm operators: the
//! same NV12/I420 frame (or JPEG file) GStreamer makes is converted (decoded) by the operator
//! and by GStreamer's own `videoconvert` (`jpegdec`), and the RGB results compared.
//!
//! The frames come from `gst-launch-1.0` (gstreamer1.0-tools, installed by scripts/setup.sh):
//! a `tee` writes the YUV frame and, through `videoconvert`, GStreamer's RGB of that very frame.
//! 320x240 keeps every plane's stride equal to its width (GStreamer pads rows to 4 bytes).

use std::path::Path;
use std::process::Command;

use panoptes_contracts::frame::{PixelBuffer, PixelFormat as FrameFormat};
use panoptes_tests::repo_root;
use panoptes_wasm::{EngineOptions, FrameResource, Input, OperatorEngine, Output};

const W: u32 = 320;
const H: u32 = 240;

/// Runs `gst-launch-1.0 -q` with `pipeline` (one element or caps per argument) in `dir`.
fn gst_launch(dir: &Path, pipeline: &str) {
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .current_dir(dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run gst-launch-1.0 (run scripts/setup.sh): {e}"));
    assert!(status.success(), "gst-launch-1.0 {pipeline}: {status}");
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs the operator `name` with `config` on one frame and returns its RGB8 image.
fn run_operator(name: &str, config: &str, format: FrameFormat, pixels: Vec<u8>) -> Vec<u8> {
    let engine = OperatorEngine::new(EngineOptions {
        max_instances: 2,
        ..EngineOptions::default()
    })
    .expect("engine");
    let path = repo_root().join(format!("operators/dist/{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-operators.sh",
        path.display()
    );
    let mut instance = engine
        .load(&path)
        .and_then(|m| m.instantiate(config))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let frame = FrameResource {
        camera: "gst".into(),
        seq: 1,
        capture_ts_ns: 0,
        width: W,
        height: H,
        format,
        pixels: Some(PixelBuffer::from_vec(pixels)),
    };
    match instance.process(frame, &Input::Frame) {
        Ok(Output::Image(image)) => {
            assert_eq!((image.width, image.height), (W, H));
            image.pixels
        }
        Ok(_) => panic!("{name} returned something other than an image"),
        Err(e) => panic!("{name}: {e}"),
    }
}

/// Largest and mean absolute difference, and the share of values more than 2 apart.
fn diff(ours: &[u8], theirs: &[u8]) -> (u8, f64, f64) {
    assert_eq!(ours.len(), theirs.len(), "sizes differ");
    let d: Vec<u8> = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| a.abs_diff(*b))
        .collect();
    let max = d.iter().copied().max().unwrap_or(0);
    let mean = d.iter().map(|&v| f64::from(v)).sum::<f64>() / d.len() as f64;
    let over2 = d.iter().filter(|&&v| v > 2).count() as f64 / d.len() as f64;
    (max, mean, over2)
}

/// A `videoconvert` to packed RGB through 16-bit ARGB64 (`precise`), or straight to RGB.
///
/// videoconvert's direct 8-bit path computes the matrix with coarse fixed-point coefficients:
/// measured here, BT.601 limited-range white (235, 128, 128) comes out as 253 and yellow
/// (210, 16, 146) as (251, 251, 0) instead of 255s, so it is up to 5 off the standard on
/// saturated colours. Through ARGB64 it uses its 16-bit matrix, which matches the standard to 1.
fn to_rgb(options: &str, precise: bool) -> String {
    if precise {
        format!(
            "videoconvert {options} dither=none ! video/x-raw,format=ARGB64 \
             ! videoconvert dither=none ! video/x-raw,format=RGB"
        )
    } else {
        format!("videoconvert {options} dither=none ! video/x-raw,format=RGB")
    }
}

#[test]
fn colorconvert_agrees_with_gstreamer_videoconvert() {
    let _machine = crate::shared_machine();
    let dir = tempfile::tempdir().expect("tempdir");
    for (format, colorimetry, config, op_format) in [
        ("NV12", "bt601", "{}", FrameFormat::Nv12),
        ("I420", "bt601", "{}", FrameFormat::I420),
        ("NV12", "bt709", r#"{"matrix":"bt709"}"#, FrameFormat::Nv12),
    ] {
        // `smpte` has hard colour edges, `ball` a smooth one.
        for pattern in ["smpte", "ball"] {
            // `chroma-mode=none` makes videoconvert repeat chroma samples as the operator does
            // (by default it interpolates them, which differs at every colour edge).
            gst_launch(
                dir.path(),
                &format!(
                    "videotestsrc num-buffers=1 pattern={pattern} \
                     ! video/x-raw,format={format},width={W},height={H},colorimetry={colorimetry} \
                     ! tee name=t \
                     t. ! queue ! filesink location=frame.yuv \
                     t. ! queue ! {} ! filesink location=precise.rgb \
                     t. ! queue ! {} ! filesink location=direct.rgb",
                    to_rgb("chroma-mode=none", true),
                    to_rgb("chroma-mode=none", false),
                ),
            );
            let yuv = read(dir.path(), "frame.yuv");
            assert_eq!(
                yuv.len(),
                (W * H * 3 / 2) as usize,
                "unexpected row padding"
            );
            let ours = run_operator("colorconvert", config, op_format, yuv);
            let (dmax, dmean, _) = diff(&ours, &read(dir.path(), "direct.rgb"));
            let (max, mean, over1) = diff(&ours, &read(dir.path(), "precise.rgb"));
            eprintln!(
                "colorconvert {format} {colorimetry} {pattern}: vs 16-bit videoconvert max abs \
                 diff {max}, mean {mean:.3}, {:.2}% over 1; vs its 8-bit path max {dmax}, mean \
                 {dmean:.3}",
                over1 * 100.0
            );
            // Measured: max 2 (BT.601) and 3 (BT.709); mean 0.27 / 0.003 (BT.601 smpte / ball),
            // 0.40 / 0.66 (BT.709, where the 16-bit path is itself ~1 high on dark greys: the
            // 8-bit path's mean there is 0.03). Against the 8-bit path: max 5, mean 1.54.
            assert!(max <= 4, "max abs diff {max}");
            assert!(mean <= 0.8, "mean abs diff {mean}");
        }
    }
}

#[test]
fn jpeg_agrees_with_gstreamer_jpegdec() {
    let _machine = crate::shared_machine();
    let dir = tempfile::tempdir().expect("tempdir");
    for pattern in ["smpte", "ball"] {
        // jpegdec hands out the YUV planes; videoconvert upsamples the chroma (interpolating,
        // as zune-jpeg does) and converts with the JPEG (full-range BT.601) matrix.
        gst_launch(
            dir.path(),
            &format!(
                "videotestsrc num-buffers=1 pattern={pattern} \
                 ! video/x-raw,format=I420,width={W},height={H} \
                 ! jpegenc quality=90 ! tee name=t \
                 t. ! queue ! filesink location=frame.jpg \
                 t. ! queue ! jpegdec ! {} ! filesink location=precise.rgb \
                 t. ! queue ! jpegdec ! {} ! filesink location=nearest.rgb",
                to_rgb("", true),
                to_rgb("chroma-mode=none", true),
            ),
        );
        let file = read(dir.path(), "frame.jpg");
        let ours = run_operator("jpeg", "{}", FrameFormat::Jpeg, file);
        let (nmax, nmean, _) = diff(&ours, &read(dir.path(), "nearest.rgb"));
        let (max, mean, over2) = diff(&ours, &read(dir.path(), "precise.rgb"));
        eprintln!(
            "jpeg {pattern}: vs jpegdec + videoconvert max abs diff {max}, mean {mean:.3}, \
             {:.2}% over 2; with chroma repeated instead of interpolated: max {nmax}, mean \
             {nmean:.3}",
            over2 * 100.0
        );
        // Measured: max 6, mean 0.91 (smpte); max 4, mean 1.32 (ball). With videoconvert
        // repeating chroma instead, the smpte bars' edges are up to 109 apart: zune-jpeg
        // interpolates chroma as libjpeg does.
        assert!(max <= 8, "max abs diff {max}");
        assert!(mean <= 1.6, "mean abs diff {mean}");
    }
}
