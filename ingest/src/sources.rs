//! Camera sources other than the synthetic test pattern (RTSP, files, V4L2, HTTP) as GStreamer
//! launch descriptions: [`SourceSpec::Pipeline`] for live cameras, [`SourceSpec::Recorded`] for
//! files and HLS, which play at their own speed and (files) may loop.
//!
//! Each description decodes whatever the source carries and ends in raw RGB caps of the
//! camera's configured size and rate, so every camera's frames look alike on the wire. Locations
//! come from the topology and are quoted for `gst_parse`, so spaces, quotes or `!` in a path or
//! URL stay part of the value and cannot add elements to the pipeline.

use std::path::Path;

use crate::SourceSpec;
use anyhow::{Context as _, bail};
use panoptes_topology::{CameraConfig, RtspTransport, SourceConfig};

/// The [`SourceSpec`] for `cam`'s source; relative file paths resolve against
/// `base_dir` (the topology file's directory). Test patterns are not described here: they
/// are built element by element (see `ingest_node::source_spec`).
pub fn pipeline_spec(cam: &CameraConfig, base_dir: &Path) -> anyhow::Result<SourceSpec> {
    let source = match &cam.source {
        SourceConfig::Rtsp(rtsp) => {
            let protocols = match rtsp.transport {
                RtspTransport::Tcp => "tcp",
                RtspTransport::Udp => "udp",
            };
            format!(
                "rtspsrc location={} protocols={protocols} latency={} ! decodebin",
                quote(&rtsp.url).with_context(|| format!("camera {}: rtsp url", cam.id))?,
                rtsp.latency_ms
            )
        }
        SourceConfig::File(file) => {
            let path = if file.path.is_absolute() {
                file.path.clone()
            } else {
                base_dir.join(&file.path)
            };
            let location = path.to_str().with_context(|| {
                format!(
                    "camera {}: file path {} is not UTF-8",
                    cam.id,
                    path.display()
                )
            })?;
            format!(
                "filesrc location={} ! decodebin",
                quote(location).with_context(|| format!("camera {}: file path", cam.id))?
            )
        }
        SourceConfig::V4l2(v4l2) => {
            let device = v4l2.device.to_str().with_context(|| {
                format!(
                    "camera {}: device {} is not UTF-8",
                    cam.id,
                    v4l2.device.display()
                )
            })?;
            // decodebin passes raw video through and decodes the MJPEG many USB cameras send
            // at their larger sizes.
            format!(
                "v4l2src device={} ! decodebin",
                quote(device).with_context(|| format!("camera {}: v4l2 device", cam.id))?
            )
        }
        SourceConfig::Http(http) => {
            let location =
                quote(&http.url).with_context(|| format!("camera {}: http url", cam.id))?;
            // decodebin finds the container by content: multipart MJPEG goes through
            // multipartdemux, an HLS playlist through hlsdemux. Only an MJPEG stream is a live
            // camera; HLS is played like a recording (see below).
            if is_hls(&http.url) {
                format!("souphttpsrc location={location} ! decodebin")
            } else {
                // Multipart MJPEG carries no timestamps; videorate needs them, so the source
                // stamps each buffer with its arrival time, as a camera would.
                format!(
                    "souphttpsrc location={location} is-live=true do-timestamp=true ! decodebin"
                )
            }
        }
        SourceConfig::TestPattern(_) => {
            bail!(
                "camera {}: a test pattern is not built from a pipeline description",
                cam.id
            )
        }
    };
    let description = format!("{source} ! {}", rate_size_tail(cam));
    // Files and HLS are not live: played as a plain pipeline they would be decoded as fast
    // as the CPU allows and the ingest node would drop most frames. As recordings they play
    // at their own speed, like a camera.
    Ok(match &cam.source {
        SourceConfig::File(file) => SourceSpec::Recorded {
            description,
            looping: file.looping,
        },
        SourceConfig::Http(http) if is_hls(&http.url) => SourceSpec::Recorded {
            description,
            looping: false,
        },
        _ => SourceSpec::Pipeline(description),
    })
}

/// Rate and size of what the camera promises on the wire; the wire format (RGB, or I420 for
/// JPEG) is the ingest stage's tail. videorate comes first so dropped frames are never scaled,
/// and scaling works on the decoder's own (usually YUV) pixels: no RGB step on the way to JPEG.
/// videoscale keeps the picture's aspect ratio with black borders when the configured size has
/// another shape.
fn rate_size_tail(cam: &CameraConfig) -> String {
    format!(
        "videorate ! videoscale ! video/x-raw,width={},height={},framerate={}/1,pixel-aspect-ratio=1/1",
        cam.width, cam.height, cam.fps
    )
}

/// Whether an HTTP URL names an HLS playlist (path ends in `.m3u8`, query ignored).
fn is_hls(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.to_ascii_lowercase().ends_with(".m3u8")
}

/// `value` as a double-quoted gst_parse string: `"` and `\` are backslash-escaped, which
/// gst_parse undoes, so the element sees the value unchanged.
fn quote(value: &str) -> anyhow::Result<String> {
    if value.contains('\0') {
        bail!("{value:?} contains a NUL character");
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ingest, RawFrame, SourceStatus};
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use std::path::PathBuf;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Only guards against a hang; the clips below play in about a second.
    const PATIENCE: Duration = Duration::from_secs(60);

    fn camera(source: serde_json::Value, width: u32, height: u32, fps: u32) -> CameraConfig {
        // Through serde so defaults of keys added later apply, as they do for a topology file.
        let json = serde_json::json!({
            "id": "cam", "source": source, "width": width, "height": height, "fps": fps,
        });
        serde_json::from_value(json).expect("camera config")
    }

    /// Encodes 20 frames (one second) of a moving ball with `encoder` (e.g. `x264enc ! mp4mux`).
    fn make_clip(dir: &Path, name: &str, encoder: &str) -> PathBuf {
        crate::init().expect("GStreamer");
        let path = dir.join(name);
        let location = quote(path.to_str().expect("UTF-8 temp path")).expect("quote");
        let desc = format!(
            "videotestsrc num-buffers=20 pattern=ball ! video/x-raw,format=I420,width=640,height=480,framerate=20/1 ! {encoder} ! filesink location={location}"
        );
        let pipeline = gst::parse::launch(&desc).expect("encoder pipeline");
        let bus = pipeline.bus().expect("bus");
        pipeline.set_state(gst::State::Playing).expect("play");
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(PATIENCE.as_secs()),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("encoder finished");
        let _ = pipeline.set_state(gst::State::Null);
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("encoding {name} failed: {} ({:?})", e.error(), e.debug());
        }
        path
    }

    /// Starts `spec` through [`Ingest`] as the ingest node does, frames and statuses to channels.
    fn start(
        spec: &SourceSpec,
    ) -> (
        Ingest,
        mpsc::Receiver<RawFrame>,
        mpsc::Receiver<SourceStatus>,
    ) {
        let (frame_tx, frame_rx) = mpsc::channel();
        let (status_tx, status_rx) = mpsc::channel();
        let ingest = Ingest::start(
            spec,
            move |f| {
                let _ = frame_tx.send(f);
            },
            move |s| {
                let _ = status_tx.send(s);
            },
        )
        .expect("start ingest");
        (ingest, frame_rx, status_rx)
    }

    /// Plays `cam` through [`Ingest`] as the ingest node does, until the stream ends.
    fn play(cam: &CameraConfig, base_dir: &Path) -> (Vec<RawFrame>, Vec<SourceStatus>) {
        let spec = crate::node::source_spec(cam, base_dir).expect("spec");
        let (ingest, frame_rx, status_rx) = start(&spec);
        // The frame thread ends, dropping its sender, once the appsink has seen end of stream.
        let mut frames = Vec::new();
        loop {
            match frame_rx.recv_timeout(PATIENCE) {
                Ok(f) => frames.push(f),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("no end of stream"),
            }
        }
        let mut statuses = Vec::new();
        while !statuses.contains(&SourceStatus::Eos) {
            match status_rx.recv_timeout(PATIENCE) {
                Ok(s) => statuses.push(s),
                Err(e) => panic!("no EOS status ({e}); got {statuses:?}"),
            }
        }
        ingest.stop();
        (frames, statuses)
    }

    fn check_frames(frames: &[RawFrame], width: u32, height: u32, fps: u64) {
        // One second of video at `fps`; videorate may add the frame at the very end.
        let n = frames.len() as u64;
        assert!((fps..=fps + 1).contains(&n), "{n} frames: {frames:?}");
        for f in frames {
            assert_eq!((f.width, f.height), (width, height), "{f:?}");
            assert_eq!(f.data.len(), (width * height * 3) as usize);
        }
        let step = 1_000_000_000 / fps;
        for pair in frames.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert_eq!(
                b.pts_ns.zip(a.pts_ns).map(|(b, a)| b - a),
                Some(step),
                "{a:?} → {b:?}"
            );
            assert!(b.capture_ts_ns > a.capture_ts_ns, "{a:?} → {b:?}");
        }
        // Decoded pictures, not blank frames: the white ball on black is in every one.
        for f in frames {
            let (mut dark, mut bright) = (false, false);
            for px in f.data.chunks_exact(3) {
                dark |= px.iter().all(|&v| v < 30);
                bright |= px.iter().all(|&v| v > 220);
            }
            assert!(dark && bright, "frame {:?} is not the test clip", f.pts_ns);
        }
    }

    #[test]
    fn h264_mp4_file_is_scaled_resampled_and_ends() {
        // A space and quotes in the directory check the quoting of the location.
        let dir = tempfile::Builder::new()
            .prefix("panoptes clip \"q\" ")
            .tempdir()
            .expect("temp dir");
        make_clip(dir.path(), "clip one.mp4", "x264enc ! mp4mux");
        let cam = camera(
            serde_json::json!({"file": {"path": "clip one.mp4"}}),
            320,
            240,
            10,
        );
        let (frames, statuses) = play(&cam, dir.path());
        assert!(statuses.contains(&SourceStatus::Playing), "{statuses:?}");
        check_frames(&frames, 320, 240, 10);
    }

    #[test]
    fn mjpeg_mkv_file_with_absolute_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = make_clip(dir.path(), "clip.mkv", "jpegenc ! matroskamux");
        // Wider than the clip's 4:3: the picture keeps its shape between black borders.
        let cam = camera(serde_json::json!({"file": {"path": path}}), 256, 144, 5);
        let (frames, _) = play(&cam, Path::new("/nonexistent"));
        check_frames(&frames, 256, 144, 5);
    }

    #[test]
    fn looping_file_starts_over_instead_of_ending() {
        let dir = tempfile::tempdir().expect("temp dir");
        make_clip(dir.path(), "clip.mp4", "x264enc ! mp4mux");
        let cam = camera(
            serde_json::json!({"file": {"path": "clip.mp4", "loop": true}}),
            160,
            120,
            10,
        );
        let spec = crate::node::source_spec(&cam, dir.path()).expect("spec");
        assert!(
            matches!(spec, SourceSpec::Recorded { looping: true, .. }),
            "{spec:?}"
        );
        let (ingest, frame_rx, status_rx) = start(&spec);
        // Two and a half passes over the one-second clip.
        let frames: Vec<RawFrame> = (0..25)
            .map(|i| match frame_rx.recv_timeout(PATIENCE) {
                Ok(f) => f,
                Err(e) => panic!("frame {i} did not come: {e}"),
            })
            .collect();
        ingest.stop();
        let statuses: Vec<SourceStatus> = status_rx.try_iter().collect();
        assert!(!statuses.contains(&SourceStatus::Eos), "{statuses:?}");
        assert!(
            !statuses.iter().any(|s| matches!(s, SourceStatus::Error(_))),
            "{statuses:?}"
        );
        let restarts = frames
            .windows(2)
            .filter(|p| p[1].pts_ns < p[0].pts_ns)
            .count();
        assert_eq!(restarts, 2, "{frames:?}");
        for pair in frames.windows(2) {
            assert!(
                pair[1].capture_ts_ns > pair[0].capture_ts_ns,
                "{:?} → {:?}",
                pair[0],
                pair[1]
            );
        }
        for f in &frames {
            assert_eq!((f.width, f.height), (160, 120));
        }
    }

    /// Serves `body` once, as an MJPEG camera does: multipart/x-mixed-replace, sent in pieces
    /// over a while, then the connection closes (which ends the stream).
    fn serve_mjpeg_once(body: Vec<u8>, boundary: &str) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/cam 1/video.mjpg",
            listener.local_addr().expect("addr")
        );
        let header = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={boundary}\r\nConnection: close\r\n\r\n"
        );
        std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut stream = reader.into_inner();
            let _ = stream.write_all(header.as_bytes());
            for piece in body.chunks(body.len() / 10 + 1) {
                let _ = stream.write_all(piece);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        url
    }

    #[test]
    fn mjpeg_over_http_is_decoded_and_ends_when_the_server_closes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clip = make_clip(
            dir.path(),
            "clip.multipart",
            "jpegenc ! multipartmux boundary=panoptesframe",
        );
        let body = std::fs::read(clip).expect("read clip");
        // A space in the path checks the quoting; souphttpsrc escapes it on the wire.
        let url = serve_mjpeg_once(body, "panoptesframe");
        let cam = camera(serde_json::json!({"http": {"url": url}}), 320, 240, 10);
        let (frames, statuses) = play(&cam, dir.path());
        assert!(
            !statuses.iter().any(|s| matches!(s, SourceStatus::Error(_))),
            "{statuses:?}"
        );
        // A live source: how many frames videorate keeps depends on arrival times, but the
        // stream delivered at least one, at the configured size, before it ended.
        assert!(!frames.is_empty());
        for f in &frames {
            assert_eq!((f.width, f.height, f.data.len()), (320, 240, 320 * 240 * 3));
        }
        for pair in frames.windows(2) {
            assert!(pair[1].capture_ts_ns > pair[0].capture_ts_ns, "{frames:?}");
        }
    }

    #[test]
    fn a_missing_file_is_named_when_the_source_starts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cam = camera(
            serde_json::json!({"file": {"path": "nothing here.mp4"}}),
            64,
            64,
            5,
        );
        let spec = crate::node::source_spec(&cam, dir.path()).expect("spec");
        match Ingest::start(&spec, |_| {}, |_| {}) {
            Ok(_) => panic!("a missing file started"),
            Err(e) => assert!(e.to_string().contains("nothing here.mp4"), "{e}"),
        }
    }

    #[test]
    fn descriptions_quote_locations_and_pick_elements() {
        let rtsp = camera(
            serde_json::json!({"rtsp": {"url": "rtsp://u:p\"w@cam/x", "transport": "udp", "latency_ms": 50}}),
            640,
            360,
            15,
        );
        let SourceSpec::Pipeline(desc) = pipeline_spec(&rtsp, Path::new("/t")).expect("rtsp")
        else {
            panic!("not a pipeline");
        };
        assert!(
            desc.starts_with(
                r#"rtspsrc location="rtsp://u:p\"w@cam/x" protocols=udp latency=50 ! decodebin ! "#
            ),
            "{desc}"
        );
        assert!(
            desc.ends_with(
                "video/x-raw,width=640,height=360,framerate=15/1,pixel-aspect-ratio=1/1"
            ),
            "{desc}"
        );
        let v4l2 = camera(
            serde_json::json!({"v4l2": {"device": "/dev/video0"}}),
            64,
            64,
            5,
        );
        let SourceSpec::Pipeline(desc) = pipeline_spec(&v4l2, Path::new("/t")).expect("v4l2")
        else {
            panic!("not a pipeline");
        };
        assert!(
            desc.starts_with(r#"v4l2src device="/dev/video0" ! decodebin ! "#),
            "{desc}"
        );
        let http = |url: &str| {
            let cam = camera(serde_json::json!({"http": {"url": url}}), 64, 64, 5);
            pipeline_spec(&cam, Path::new("/t")).expect("http")
        };
        match http("http://cam/video.mjpg") {
            SourceSpec::Pipeline(desc) => assert!(
                desc.starts_with(
                    r#"souphttpsrc location="http://cam/video.mjpg" is-live=true do-timestamp=true ! decodebin ! "#
                ),
                "{desc}"
            ),
            other => panic!("MJPEG over HTTP is a live pipeline: {other:?}"),
        }
        match http("http://cam/live.M3U8?t=1") {
            SourceSpec::Recorded {
                description,
                looping: false,
            } => assert!(
                description.starts_with(
                    r#"souphttpsrc location="http://cam/live.M3U8?t=1" ! decodebin ! "#
                ),
                "{description}"
            ),
            other => panic!("HLS is played as a recording: {other:?}"),
        }
        assert_eq!(quote(r"a\b").expect("quote"), r#""a\\b""#);
        assert!(quote("a\0b").is_err());
    }
}
