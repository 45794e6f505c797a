//! Frames onto NATS as contract v1 says: a raw RGB frame becomes an Arrow `frame/v1` payload with
//! the `Panoptes-*` headers on `<ns>.frames.<camera>`. Ingest nodes and `panoptes publish` share it.

use bytes::Bytes;
use panoptes_ingest::RawFrame;
use panoptes_pipeline::frame::{FRAME_SCHEMA, Frame, FrameError, PixelBuffer, PixelFormat};
use panoptes_pipeline::{CameraId, Subjects, headers};

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
    /// Encodes `raw` (packed RGB) as frame `seq` of `camera`.
    pub fn encode(camera: &CameraId, seq: u64, raw: RawFrame) -> Result<Self, FrameError> {
        // A root: the sampling decision for the frame's whole trace is made here.
        let span = tracing::info_span!(
            target: "panoptes::trace",
            parent: None,
            "ingest",
            camera = %camera,
            seq = seq,
            width = raw.width,
            height = raw.height,
            outcome = tracing::field::Empty,
        );
        let frame = Frame {
            camera: camera.clone(),
            seq,
            capture_ts_ns: raw.capture_ts_ns,
            width: raw.width,
            height: raw.height,
            format: PixelFormat::Rgb8,
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
         more than the NATS server's max_payload of {limit} bytes: send smaller frames or raise \
         max_payload in the server's configuration"
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
        let seq = frame.seq.to_string();
        let ts = frame.capture_ts_ns.to_string();
        let pairs = [
            (headers::CAMERA, self.camera.as_str()),
            (headers::SEQ, seq.as_str()),
            (headers::CAPTURE_TS_NS, ts.as_str()),
            (headers::SCHEMA, FRAME_SCHEMA),
        ];
        let mut map = async_nats::HeaderMap::new();
        // The header block as NATS serialises it: "NATS/1.0\r\n", "<name>: <value>\r\n" each, "\r\n".
        let mut header_len = "NATS/1.0\r\n\r\n".len();
        for (name, value) in pairs {
            map.insert(name, value);
            header_len += name.len() + ": \r\n".len() + value.len();
        }
        if panoptes_pipeline::trace::inject(&frame.span, &mut map) {
            for name in [headers::TRACEPARENT, headers::TRACESTATE] {
                if let Some(value) = map.get(name) {
                    header_len += name.len() + ": \r\n".len() + value.as_str().len();
                }
            }
        }
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
