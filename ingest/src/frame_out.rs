//! Frames onto NATS as contract v1 says: a frame from ingest (packed RGB, or a JPEG file) becomes
//! an Arrow `frame/v1` payload (`rgb8` or `jpeg`) with the `Panoptes-*` headers on
//! `<ns>.frames.<camera>`. Ingest nodes and `panoptes publish` share it, and [`wire_output`]
//! decides which of the two a camera sends.

use crate::{FrameFormat, Output, RawFrame};
use bytes::Bytes;
use panoptes_contracts::frame::{FRAME_SCHEMA, Frame, FrameError, PixelBuffer, PixelFormat};
use panoptes_contracts::{CameraId, Subjects, headers};
use panoptes_topology::{CameraConfig, WireEncoding};

/// Bytes a frame needs on the wire besides its pixels, with room to spare: the Arrow IPC stream
/// around them (schema message with its metadata, record batch header, buffer padding to 64
/// bytes, end marker; the camera ID is in it once) and the NATS header block, which
/// `max_payload` counts too. Measured (test `wire_overhead_is_within_the_allowance`): at most
/// 2,071 bytes, 1,733 of framing and 338 of headers, for a camera ID of the maximum 128
/// characters, the longest numbers and a `traceparent`; 4 KiB leaves room for a `tracestate`
/// and headers to come.
pub const FRAME_OVERHEAD_ALLOWANCE: usize = 4096;

/// What `cam`'s ingest node sends, given the server's `max_payload` (0: the server did not say,
/// and then nothing is refused either): `raw` RGB, `jpeg` at the camera's quality, or for `auto`
/// RGB when a raw frame of the camera's size (plus [`FRAME_OVERHEAD_ALLOWANCE`]) fits, else JPEG.
pub fn wire_output(cam: &CameraConfig, max_payload: usize) -> Output {
    let jpeg = Output::Jpeg {
        quality: cam.jpeg_quality,
    };
    match cam.encoding {
        WireEncoding::Raw => Output::Rgb,
        WireEncoding::Jpeg => jpeg,
        WireEncoding::Auto if raw_fits(cam.width, cam.height, max_payload) => Output::Rgb,
        WireEncoding::Auto => jpeg,
    }
}

/// Whether a raw RGB frame of `width`×`height` travels within `max_payload` (0: unknown, fits).
pub fn raw_fits(width: u32, height: u32, max_payload: usize) -> bool {
    if max_payload == 0 {
        return true;
    }
    PixelFormat::Rgb8
        .frame_len(width, height)
        .and_then(|pixels| pixels.checked_add(FRAME_OVERHEAD_ALLOWANCE))
        .is_some_and(|size| size <= max_payload)
}

/// A frame encoded for the wire, with what its headers repeat from the payload.
#[derive(Clone, Debug)]
pub struct EncodedFrame {
    pub seq: u64,
    pub capture_ts_ns: u64,
    pub payload: Bytes,
    /// The frame's root span (`ingest`) from encoding to publication; its trace context goes
    /// in the message headers, so every process that handles the frame continues its trace.
    pub span: tracing::Span,
}

impl EncodedFrame {
    /// Encodes `raw` (packed RGB as `rgb8`, a JPEG file as `jpeg`) as frame `seq` of `camera`.
    pub fn encode(camera: &CameraId, seq: u64, raw: RawFrame) -> Result<Self, FrameError> {
        let format = match raw.format {
            FrameFormat::Rgb => PixelFormat::Rgb8,
            FrameFormat::Jpeg => PixelFormat::Jpeg,
        };
        // A root: the sampling decision for the frame's whole trace is made here.
        let span = tracing::info_span!(
            target: "panoptes::trace",
            parent: None,
            "ingest",
            camera = %camera,
            seq = seq,
            width = raw.width,
            height = raw.height,
            format = format.as_str(),
            outcome = tracing::field::Empty,
        );
        let frame = Frame {
            camera: camera.clone(),
            seq,
            capture_ts_ns: raw.capture_ts_ns,
            width: raw.width,
            height: raw.height,
            format,
            pixels: PixelBuffer::from_vec(raw.data),
        };
        Ok(Self {
            seq,
            capture_ts_ns: raw.capture_ts_ns,
            payload: span.in_scope(|| frame.encode())?,
            span,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishFrameError {
    #[error(
        "frame {seq} of camera {camera} is {size} bytes on the wire (Arrow payload plus headers), \
         more than the NATS server's max_payload of {limit} bytes: send JPEG (a camera's \
         `encoding: auto|jpeg`, `panoptes publish --encoding auto|jpeg`), smaller frames, or \
         raise max_payload in the server's configuration"
    )]
    TooLarge {
        camera: CameraId,
        seq: u64,
        size: usize,
        limit: usize,
    },
    #[error("cannot publish frame {seq} of camera {camera} on {subject}: {source}")]
    Publish {
        camera: CameraId,
        seq: u64,
        subject: String,
        source: async_nats::PublishError,
    },
}

/// Publishes one camera's frames.
#[derive(Clone, Debug)]
pub struct FramePublisher {
    client: async_nats::Client,
    camera: CameraId,
    subject: String,
}

impl FramePublisher {
    pub fn new(client: async_nats::Client, subjects: &Subjects, camera: CameraId) -> Self {
        let subject = subjects.frames(&camera);
        Self {
            client,
            camera,
            subject,
        }
    }

    pub fn camera(&self) -> &CameraId {
        &self.camera
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Publishes `frame` with its headers. A frame over the server's `max_payload` is refused
    /// here with both sizes, because the server would close the connection over it.
    pub async fn publish(&self, frame: EncodedFrame) -> Result<(), PublishFrameError> {
        let (map, header_len) = header_block(&self.camera, &frame);
        let size = header_len + frame.payload.len();
        // 0 means the server did not say; the client then enforces nothing either.
        let limit = self.client.server_info().max_payload;
        if limit > 0 && size > limit {
            return Err(PublishFrameError::TooLarge {
                camera: self.camera.clone(),
                seq: frame.seq,
                size,
                limit,
            });
        }
        self.client
            .publish_with_headers(self.subject.clone(), map, frame.payload)
            .await
            .map_err(|source| PublishFrameError::Publish {
                camera: self.camera.clone(),
                seq: frame.seq,
                subject: self.subject.clone(),
                source,
            })
    }
}

/// `frame`'s NATS headers, and the length of the header block as NATS serialises it
/// ("NATS/1.0\r\n", "<name>: <value>\r\n" each, "\r\n"), which `max_payload` counts.
fn header_block(camera: &CameraId, frame: &EncodedFrame) -> (async_nats::HeaderMap, usize) {
    let seq = frame.seq.to_string();
    let ts = frame.capture_ts_ns.to_string();
    let pairs = [
        (headers::CAMERA, camera.as_str()),
        (headers::SEQ, seq.as_str()),
        (headers::CAPTURE_TS_NS, ts.as_str()),
        (headers::SCHEMA, FRAME_SCHEMA),
    ];
    let mut map = async_nats::HeaderMap::new();
    let mut header_len = "NATS/1.0\r\n\r\n".len();
    for (name, value) in pairs {
        map.insert(name, value);
        header_len += name.len() + ": \r\n".len() + value.len();
    }
    if panoptes_telemetry::trace::inject(&frame.span, &mut map) {
        for name in [headers::TRACEPARENT, headers::TRACESTATE] {
            if let Some(value) = map.get(name) {
                header_len += name.len() + ": \r\n".len() + value.as_str().len();
            }
        }
    }
    (map, header_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(encoding: WireEncoding, width: u32, height: u32) -> CameraConfig {
        let config = serde_json::json!({
            "id": "cam",
            "source": { "test_pattern": { "text": "x" } },
            "width": width,
            "height": height,
            "jpeg_quality": 70,
            "encoding": encoding,
        });
        serde_json::from_value(config).unwrap_or_else(|e| panic!("camera config: {e}"))
    }

    #[test]
    fn wire_output_follows_the_encoding_and_max_payload() {
        let jpeg = Output::Jpeg { quality: 70 };
        let hd = |e| camera(e, 1280, 720);
        for limit in [0, 1 << 20, 8 << 20] {
            assert_eq!(wire_output(&hd(WireEncoding::Raw), limit), Output::Rgb);
            assert_eq!(wire_output(&hd(WireEncoding::Jpeg), limit), jpeg);
        }
        // 2,764,800 bytes of RGB: JPEG on NATS's default 1 MiB, raw on 8 MB or without a limit.
        assert_eq!(wire_output(&hd(WireEncoding::Auto), 1 << 20), jpeg);
        assert_eq!(wire_output(&hd(WireEncoding::Auto), 8 << 20), Output::Rgb);
        assert_eq!(wire_output(&hd(WireEncoding::Auto), 0), Output::Rgb);
        // The allowance counts: exactly the pixels is not enough, pixels plus allowance is.
        let pixels = 1280 * 720 * 3;
        assert_eq!(wire_output(&hd(WireEncoding::Auto), pixels), jpeg);
        assert_eq!(
            wire_output(&hd(WireEncoding::Auto), pixels + FRAME_OVERHEAD_ALLOWANCE),
            Output::Rgb
        );
        // 640x480 (921,600 bytes) fits 1 MiB.
        assert_eq!(
            wire_output(&camera(WireEncoding::Auto, 640, 480), 1 << 20),
            Output::Rgb
        );
    }

    #[test]
    fn wire_overhead_is_within_the_allowance() {
        // The longest camera ID, the longest numbers, a traceparent: the most a frame's
        // framing and headers can take besides its pixels (tracestate is empty for the root
        // spans ingest starts). Sizes whose rows end anywhere within Arrow's 64-byte alignment.
        let id = CameraId::new(&"c".repeat(CameraId::MAX_LEN)).expect("valid ID");
        let traceparent =
            headers::TRACEPARENT.len() + ": \r\n".len() + "00-".len() + 32 + 1 + 16 + 3;
        let mut worst = 0;
        for (width, height) in [
            (1, 1),
            (7, 3),
            (21, 1),
            (640, 480),
            (1279, 719),
            (1920, 1080),
        ] {
            let raw = RawFrame {
                width,
                height,
                format: FrameFormat::Rgb,
                stride: width * 3,
                pts_ns: None,
                capture_ts_ns: u64::MAX,
                data: vec![0; (width * height * 3) as usize],
            };
            let frame = EncodedFrame::encode(&id, u64::MAX, raw).expect("encodes");
            let (_, header_len) = header_block(&id, &frame);
            let overhead =
                frame.payload.len() - (width * height * 3) as usize + header_len + traceparent;
            eprintln!(
                "{width}x{height}: Arrow framing {} bytes, headers {}",
                frame.payload.len() - (width * height * 3) as usize,
                header_len + traceparent
            );
            worst = worst.max(overhead);
        }
        eprintln!("worst overhead: {worst} bytes");
        // Measured: 2,071 bytes.
        assert!(worst <= FRAME_OVERHEAD_ALLOWANCE, "{worst} bytes");
    }

    #[test]
    fn jpeg_frames_are_encoded_as_jpeg() {
        let id = CameraId::new("cam").expect("valid ID");
        // Not a real JPEG: the wire format does not look inside, operators do.
        let file = vec![0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9];
        let raw = RawFrame {
            width: 640,
            height: 360,
            format: FrameFormat::Jpeg,
            stride: 0,
            pts_ns: None,
            capture_ts_ns: 5,
            data: file.clone(),
        };
        let frame = EncodedFrame::encode(&id, 9, raw).expect("encodes");
        let back = Frame::decode(frame.payload, Some("cam")).expect("decodes");
        assert_eq!(back.format, PixelFormat::Jpeg);
        assert_eq!(
            (back.width, back.height, back.seq, back.capture_ts_ns),
            (640, 360, 9, 5)
        );
        assert_eq!(back.pixels.as_slice(), file.as_slice());
    }
}
