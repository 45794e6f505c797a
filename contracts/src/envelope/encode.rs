//! Writing an item as an `item/v1` message: one row, pixel buffers written straight from the
//! frames, a source that is the payload frame written once.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeListArray, Float32Array, ListArray,
    RecordBatch, StringArray, StructArray, UInt32Array, UInt64Array,
};
use arrow_buffer::OffsetBuffer;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::FieldRef;
use bytes::Bytes;

use super::schema::{col, data_item, image_fields, schema, shape_item, transform_item};
use super::{EnvelopeError, ipc};
use crate::detection::Detection;
use crate::frame::Frame;
use crate::stage::{FrameMeta, Item, Payload};

/// Encodes an item as an Arrow IPC stream (schema, one batch, end marker). Pixel buffers are
/// written straight from the frames; a source that is the payload frame is written once.
pub fn encode(item: &Item) -> Result<Bytes, EnvelopeError> {
    let meta = &item.frame;
    let payload_frame = match &item.payload {
        Payload::Frame(f) => Some(f),
        _ => None,
    };
    if let Some(f) = payload_frame {
        check_frame("payload", f, meta)?;
    }
    let source_is_frame = match (&item.source, payload_frame) {
        (Some(s), Some(f)) => same_frame(s, f),
        _ => false,
    };
    let own_source = match &item.source {
        Some(s) if !source_is_frame => {
            check_frame("source", s, meta)?;
            Some(s)
        }
        _ => None,
    };

    let (shape, data) = match &item.payload {
        Payload::Tensor(t) => {
            let shape = UInt64Array::from_iter_values(t.shape.iter().map(|&d| d as u64));
            // Arrow wants an owned buffer and the item is borrowed: one copy before the writer's.
            let data = Float32Array::from(t.data.clone());
            (
                list_of(shape_item(), Arc::new(shape))?,
                list_of(data_item(), Arc::new(data))?,
            )
        }
        _ => (
            ListArray::new_null(shape_item(), 1),
            ListArray::new_null(data_item(), 1),
        ),
    };
    let detections = match &item.payload {
        Payload::Detections(d) => Some(to_json(col::DETECTIONS, d)?),
        _ => None,
    };
    let regions = item
        .regions
        .as_ref()
        .map(|r| to_json(col::REGIONS, r))
        .transpose()?;
    let t = item.transform;
    let transform = FixedSizeListArray::try_new(
        transform_item(),
        4,
        Arc::new(Float32Array::from(vec![
            t.scale_x, t.scale_y, t.offset_x, t.offset_y,
        ])),
        None,
    )
    .map_err(ipc)?;

    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![meta.camera.as_str()])),
            Arc::new(UInt64Array::from(vec![meta.seq])),
            Arc::new(UInt64Array::from(vec![meta.capture_ts_ns])),
            Arc::new(UInt32Array::from(vec![meta.width])),
            Arc::new(UInt32Array::from(vec![meta.height])),
            Arc::new(StringArray::from(vec![item.payload.kind()])),
            Arc::new(transform),
            Arc::new(image_column(payload_frame)?),
            Arc::new(image_column(own_source)?),
            Arc::new(BooleanArray::from(vec![source_is_frame])),
            Arc::new(shape),
            Arc::new(data),
            Arc::new(StringArray::from(vec![detections])),
            Arc::new(StringArray::from(vec![regions])),
        ],
    )
    .map_err(ipc)?;

    let payload_bytes = payload_frame.map_or(0, |f| f.pixels.len())
        + own_source.map_or(0, |f| f.pixels.len())
        + match &item.payload {
            Payload::Tensor(t) => t.data.len() * 4,
            _ => 0,
        };
    let mut out = Vec::with_capacity(payload_bytes + 4096);
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema()).map_err(ipc)?;
    writer
        .write(&batch)
        .and_then(|()| writer.finish())
        .map_err(ipc)?;
    drop(writer);
    Ok(Bytes::from(out))
}

/// A frame in an item must be of the item's camera frame (stages that return images keep the
/// source's camera, seq and capture time), so the message need not carry them twice.
fn check_frame(which: &'static str, f: &Frame, meta: &FrameMeta) -> Result<(), EnvelopeError> {
    if f.camera != meta.camera || f.seq != meta.seq || f.capture_ts_ns != meta.capture_ts_ns {
        return Err(EnvelopeError::ForeignFrame {
            which,
            camera: f.camera.to_string(),
            seq: f.seq,
            capture_ts_ns: f.capture_ts_ns,
            item_camera: meta.camera.to_string(),
            item_seq: meta.seq,
            item_capture_ts_ns: meta.capture_ts_ns,
        });
    }
    f.validate()
        .map_err(|source| EnvelopeError::Frame { which, source })
}

/// Same memory and geometry: what `Item::from_frame` and a decoded item produce. Comparing the
/// pixels' contents would cost a pass over them on every message for a rare win.
fn same_frame(a: &Frame, b: &Frame) -> bool {
    a.pixels.as_ptr() == b.pixels.as_ptr()
        && a.pixels.len() == b.pixels.len()
        && (a.width, a.height, a.format) == (b.width, b.height, b.format)
        && (&a.camera, a.seq, a.capture_ts_ns) == (&b.camera, b.seq, b.capture_ts_ns)
}

fn image_column(frame: Option<&Frame>) -> Result<StructArray, EnvelopeError> {
    let Some(f) = frame else {
        return Ok(StructArray::new_null(image_fields(), 1));
    };
    let pixels = BinaryArray::try_new(
        OffsetBuffer::from_lengths([f.pixels.len()]),
        f.pixels.clone(),
        None,
    )
    .map_err(ipc)?;
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(vec![f.width])),
        Arc::new(UInt32Array::from(vec![f.height])),
        Arc::new(StringArray::from(vec![f.format.as_str()])),
        Arc::new(pixels),
    ];
    StructArray::try_new(image_fields(), arrays, None).map_err(ipc)
}

fn list_of(field: FieldRef, values: ArrayRef) -> Result<ListArray, EnvelopeError> {
    let offsets = OffsetBuffer::<i32>::from_lengths([values.len()]);
    ListArray::try_new(field, offsets, values, None).map_err(ipc)
}

fn to_json(column: &'static str, d: &[Detection]) -> Result<String, EnvelopeError> {
    serde_json::to_string(d).map_err(|source| EnvelopeError::Json { column, source })
}
