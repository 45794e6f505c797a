//! Video frames on the wire: one Arrow IPC stream message holding one RecordBatch of one row
//! (schema `frame/v1`). Decoding borrows the pixel buffer from the NATS payload without copying.

use std::sync::Arc;

use arrow_array::{Array, BinaryArray, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_buffer::Buffer;

/// Pixel storage of a [`Frame`]: an Arrow buffer that can share memory with a NATS payload.
pub type PixelBuffer = Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;

use crate::camera::{CameraId, InvalidCameraId};

/// Version tag of the frame payload schema, also sent in the `Panoptes-Schema` header.
pub const FRAME_SCHEMA: &str = "frame/v1";
const SCHEMA_KEY: &str = "panoptes.schema";
/// Frames larger than this in either dimension are refused before anything allocates for them.
pub const MAX_DIMENSION: u32 = 16_384;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Packed 8-bit RGB, no row padding.
    Rgb8,
    /// Luma plane, then one interleaved U/V plane at half resolution (what hardware decoders
    /// emit). Odd sizes round the chroma plane up.
    Nv12,
    /// Luma plane, then separate U and V planes at half resolution.
    I420,
    /// A JPEG file; width and height are the encoded image's. Decoded by an operator.
    Jpeg,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 4] = [
        PixelFormat::Rgb8,
        PixelFormat::Nv12,
        PixelFormat::I420,
        PixelFormat::Jpeg,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PixelFormat::Rgb8 => "rgb8",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::I420 => "i420",
            PixelFormat::Jpeg => "jpeg",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Bytes a raw frame of this size must have; None on overflow, and for JPEG, whose size
    /// varies.
    pub fn frame_len(self, width: u32, height: u32) -> Option<usize> {
        let (w, h) = (width as usize, height as usize);
        match self {
            PixelFormat::Rgb8 => w.checked_mul(h)?.checked_mul(3),
            PixelFormat::Nv12 | PixelFormat::I420 => {
                let chroma = w.div_ceil(2).checked_mul(h.div_ceil(2))?.checked_mul(2)?;
                w.checked_mul(h)?.checked_add(chroma)
            }
            PixelFormat::Jpeg => None,
        }
    }
}

/// A decoded frame. `pixels` shares memory with the message it came from.
#[derive(Clone, Debug)]
pub struct Frame {
    pub camera: CameraId,
    pub seq: u64,
    pub capture_ts_ns: u64,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub pixels: PixelBuffer,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("not a valid Arrow IPC stream: {0}")]
    Ipc(String),
    #[error("the Arrow stream holds no record batch")]
    NoBatch,
    #[error("the frame schema is wrong: {0}")]
    Schema(String),
    #[error("a frame message must hold exactly 1 row, this one holds {0}")]
    RowCount(usize),
    #[error("unsupported pixel format {0:?} (supported: rgb8, nv12, i420, jpeg)")]
    UnsupportedFormat(String),
    #[error("frame size {width}x{height} is out of range (1..={MAX_DIMENSION} per side)")]
    BadDimensions { width: u32, height: u32 },
    #[error(
        "declared size {width}x{height} {format} needs {expected} bytes, but the pixel buffer has {actual}"
    )]
    SizeMismatch {
        width: u32,
        height: u32,
        format: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error(transparent)]
    Camera(#[from] InvalidCameraId),
    #[error(
        "the payload says camera {payload:?} but it arrived on the subject of camera {subject:?}"
    )]
    CameraMismatch { payload: String, subject: String },
}

fn schema() -> Arc<Schema> {
    Arc::new(
        Schema::new(vec![
            Field::new("camera", DataType::Utf8, false),
            Field::new("seq", DataType::UInt64, false),
            Field::new("capture_ts_ns", DataType::UInt64, false),
            Field::new("width", DataType::UInt32, false),
            Field::new("height", DataType::UInt32, false),
            Field::new("format", DataType::Utf8, false),
            Field::new("pixels", DataType::Binary, false),
        ])
        .with_metadata(arrow_schema::Metadata::new().with(SCHEMA_KEY, FRAME_SCHEMA)),
    )
}

impl Frame {
    /// Checks that the declared geometry matches the pixel buffer.
    pub fn validate(&self) -> Result<(), FrameError> {
        let (width, height) = (self.width, self.height);
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(FrameError::BadDimensions { width, height });
        }
        if self.format == PixelFormat::Jpeg {
            // Decoders check the content; only an empty image is refused here.
            if self.pixels.is_empty() {
                return Err(FrameError::SizeMismatch {
                    width,
                    height,
                    format: self.format.as_str(),
                    expected: 1,
                    actual: 0,
                });
            }
            return Ok(());
        }
        let expected = self
            .format
            .frame_len(width, height)
            .ok_or(FrameError::BadDimensions { width, height })?;
        if expected != self.pixels.len() {
            return Err(FrameError::SizeMismatch {
                width,
                height,
                format: self.format.as_str(),
                expected,
                actual: self.pixels.len(),
            });
        }
        Ok(())
    }

    /// Encodes the frame as an Arrow IPC stream (schema, one batch, end marker).
    pub fn encode(&self) -> Result<Bytes, FrameError> {
        let pixels = BinaryArray::try_new(
            arrow_buffer::OffsetBuffer::from_lengths([self.pixels.len()]),
            self.pixels.clone(),
            None,
        )
        .map_err(|e| FrameError::Ipc(e.to_string()))?;
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(vec![self.camera.as_str()])),
                Arc::new(UInt64Array::from(vec![self.seq])),
                Arc::new(UInt64Array::from(vec![self.capture_ts_ns])),
                Arc::new(UInt32Array::from(vec![self.width])),
                Arc::new(UInt32Array::from(vec![self.height])),
                Arc::new(StringArray::from(vec![self.format.as_str()])),
                Arc::new(pixels),
            ],
        )
        .map_err(|e| FrameError::Ipc(e.to_string()))?;
        let mut out = Vec::with_capacity(self.pixels.len() + 1024);
        let mut writer = StreamWriter::try_new(&mut out, &batch.schema())
            .map_err(|e| FrameError::Ipc(e.to_string()))?;
        writer
            .write(&batch)
            .and_then(|()| writer.finish())
            .map_err(|e| FrameError::Ipc(e.to_string()))?;
        drop(writer);
        Ok(Bytes::from(out))
    }

    /// Decodes and validates a frame message. `subject_camera` is the camera token of the subject
    /// it arrived on; the payload must agree with it.
    pub fn decode(payload: Bytes, subject_camera: Option<&str>) -> Result<Frame, FrameError> {
        crate::ipc_check::check_stream(&payload, check_schema, FrameError::Ipc)?;
        let mut decoder = StreamDecoder::new();
        let mut buffer = Buffer::from(payload);
        let batch = loop {
            match decoder
                .decode(&mut buffer)
                .map_err(|e| FrameError::Ipc(e.to_string()))?
            {
                Some(batch) => break batch,
                None if buffer.is_empty() => return Err(FrameError::NoBatch),
                None => {}
            }
        };
        if batch.num_rows() != 1 {
            return Err(FrameError::RowCount(batch.num_rows()));
        }
        let camera = CameraId::new(column::<StringArray>(&batch, "camera")?.value(0))?;
        if let Some(subject) = subject_camera
            && subject != camera.as_str()
        {
            return Err(FrameError::CameraMismatch {
                payload: camera.to_string(),
                subject: subject.to_owned(),
            });
        }
        let format_name = column::<StringArray>(&batch, "format")?.value(0);
        let format = PixelFormat::parse(format_name)
            .ok_or_else(|| FrameError::UnsupportedFormat(format_name.to_owned()))?;
        let pixels = column::<BinaryArray>(&batch, "pixels")?;
        // The one row's bytes, as a slice of the shared buffer (no copy).
        let offsets = pixels.value_offsets();
        let (start, end) = (offsets[0], offsets[1]);
        let (start, end) = (
            usize::try_from(start).map_err(|_| FrameError::Schema("negative offset".into()))?,
            usize::try_from(end).map_err(|_| FrameError::Schema("negative offset".into()))?,
        );
        let values = pixels.values();
        if start > end || end > values.len() {
            return Err(FrameError::Schema("pixel offsets out of bounds".into()));
        }
        let frame = Frame {
            camera,
            seq: column::<UInt64Array>(&batch, "seq")?.value(0),
            capture_ts_ns: column::<UInt64Array>(&batch, "capture_ts_ns")?.value(0),
            width: column::<UInt32Array>(&batch, "width")?.value(0),
            height: column::<UInt32Array>(&batch, "height")?.value(0),
            format,
            pixels: values.slice_with_length(start, end - start),
        };
        frame.validate()?;
        Ok(frame)
    }
}

/// The frame/v1 columns with their types and no other, so a tampered schema cannot reach the
/// array decoders with types the checks above did not measure.
fn check_schema(found: &Schema) -> Result<(), FrameError> {
    let expected = schema();
    match found.metadata().get(SCHEMA_KEY) {
        Some(s) if s == FRAME_SCHEMA => {}
        // Named in full: a publisher of another language has to add this key by hand.
        Some(other) => {
            return Err(FrameError::Schema(format!(
                "schema metadata {SCHEMA_KEY:?} is {other:?}, expected {FRAME_SCHEMA:?}"
            )));
        }
        None => {
            return Err(FrameError::Schema(format!(
                "the schema metadata has no {SCHEMA_KEY:?} key; frames must carry \
                 {SCHEMA_KEY:?} = {FRAME_SCHEMA:?} (docs/nats.md, Frames)"
            )));
        }
    }
    if found.fields().len() != expected.fields().len() {
        return Err(FrameError::Schema(format!(
            "{} columns, expected {}",
            found.fields().len(),
            expected.fields().len()
        )));
    }
    for want in expected.fields() {
        match found.field_with_name(want.name()) {
            Ok(f) if f.data_type() == want.data_type() => {}
            Ok(f) => {
                return Err(FrameError::Schema(format!(
                    "column {:?} is {}, expected {}",
                    want.name(),
                    f.data_type(),
                    want.data_type()
                )));
            }
            Err(_) => {
                return Err(FrameError::Schema(format!(
                    "missing column {:?}",
                    want.name()
                )));
            }
        }
    }
    Ok(())
}

fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, FrameError> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| FrameError::Schema(format!("missing column {name:?}")))?;
    if col.null_count() > 0 {
        return Err(FrameError::Schema(format!("column {name:?} is null")));
    }
    col.as_any().downcast_ref::<T>().ok_or_else(|| {
        FrameError::Schema(format!(
            "column {name:?} has type {}, expected {}",
            col.data_type(),
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("?")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_single_byte_corruption_panics_the_decoder() {
        // Anyone who can publish on a frames subject can send these; arrow-ipc alone panicked
        // on 696 of 5,976 such messages before the structural check.
        let good = frame(4, 3).encode().expect("encode");
        let mut errors = 0;
        for at in 0..good.len() {
            for flip in [0xff_u8, 0x01, 0x80] {
                let mut bad = good.to_vec();
                bad[at] ^= flip;
                if Frame::decode(Bytes::from(bad), None).is_err() {
                    errors += 1;
                }
            }
            // A cut stream is an error or (cut only in the end marker) the frame itself.
            let _ = Frame::decode(good.slice(..at), None);
        }
        assert!(errors > 0);
    }

    fn frame(w: u32, h: u32) -> Frame {
        let pixels: Vec<u8> = (0..(w * h * 3)).map(|i| (i % 251) as u8).collect();
        Frame {
            camera: CameraId::new("cam-1").expect("valid"),
            seq: 42,
            capture_ts_ns: 1_700_000_000_000_000_000,
            width: w,
            height: h,
            format: PixelFormat::Rgb8,
            pixels: Buffer::from_vec(pixels),
        }
    }

    #[test]
    fn round_trip_without_copying_pixels() {
        let f = frame(64, 48);
        let bytes = f.encode().expect("encode");
        let base = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        let g = Frame::decode(bytes, Some("cam-1")).expect("decode");
        assert_eq!(g.camera, f.camera);
        assert_eq!(
            (g.seq, g.capture_ts_ns, g.width, g.height),
            (42, f.capture_ts_ns, 64, 48)
        );
        assert_eq!(g.pixels.as_slice(), f.pixels.as_slice());
        assert!(
            base.contains(&(g.pixels.as_ptr() as usize)),
            "pixels were copied"
        );
    }

    #[test]
    fn random_bytes_are_an_ipc_error() {
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let err = Frame::decode(Bytes::from(junk), None).expect_err("junk decoded");
        assert!(
            matches!(err, FrameError::Ipc(_) | FrameError::NoBatch),
            "{err}"
        );
    }

    #[test]
    fn truncated_message_is_an_error() {
        let bytes = frame(32, 32).encode().expect("encode");
        for cut in [0, 8, 100, bytes.len() / 2, bytes.len() - 9] {
            let err = Frame::decode(bytes.slice(..cut), None).expect_err("truncated decoded");
            assert!(
                matches!(err, FrameError::Ipc(_) | FrameError::NoBatch),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn declared_size_must_match_buffer() {
        let mut f = frame(32, 32);
        f.width = 64;
        let err = Frame::decode(f.encode().expect("encode"), None).expect_err("mismatch decoded");
        assert!(
            matches!(
                err,
                FrameError::SizeMismatch {
                    expected: 6144,
                    actual: 3072,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("64x32"), "{err}");
    }

    #[test]
    fn subject_and_payload_camera_must_agree() {
        let err = Frame::decode(frame(4, 4).encode().expect("encode"), Some("cam-2"))
            .expect_err("mismatch decoded");
        assert!(matches!(err, FrameError::CameraMismatch { .. }), "{err}");
    }
}
