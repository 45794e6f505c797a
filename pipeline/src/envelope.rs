//! Pipeline items on the wire between stages in different processes (`<ns>.<stage>.<camera>`):
//! one Arrow IPC stream message holding one RecordBatch of one row (schema `item/v1`).

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeListArray, Float32Array, ListArray,
    RecordBatch, StringArray, StructArray, UInt32Array, UInt64Array,
};
use arrow_buffer::{Buffer, OffsetBuffer};
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema};
use bytes::Bytes;

use crate::camera::{CameraId, InvalidCameraId};
use crate::detection::Detection;
use crate::frame::{Frame, FrameError, PixelFormat};
use crate::stage::{FrameMeta, Item, Payload};
use crate::tensor::{Tensor, Transform};

/// Version tag of the item payload schema, also sent in the `Panoptes-Schema` header.
pub const ITEM_SCHEMA: &str = "item/v1";
/// The schema-metadata key frame/v1 uses too, so one look tells the two apart.
const SCHEMA_KEY: &str = "panoptes.schema";
const SCHEMA_FAMILY: &str = "item/";

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a valid Arrow IPC stream: {0}")]
    Ipc(String),
    #[error("the Arrow stream holds no record batch")]
    NoBatch,
    #[error("an item message must hold exactly 1 row, this one holds {0}")]
    RowCount(usize),
    #[error("the message has no {SCHEMA_KEY:?} schema metadata (expected {ITEM_SCHEMA:?})")]
    MissingSchema,
    #[error("the message is schema {found:?}, not {ITEM_SCHEMA:?}")]
    WrongSchema { found: String },
    #[error("item schema version {found:?} is not supported (this build reads {ITEM_SCHEMA:?})")]
    UnsupportedVersion { found: String },
    #[error("missing column {0:?}")]
    MissingColumn(String),
    #[error("column {column:?} has type {found}, expected {expected}")]
    WrongType {
        column: String,
        found: String,
        expected: String,
    },
    #[error("unexpected column {0:?} (item/v1 has no such column)")]
    UnexpectedColumn(String),
    #[error("column {0:?} is null, but this item needs it")]
    NullColumn(String),
    #[error("unknown payload kind {0:?} (frame, tensor, detections)")]
    UnknownPayload(String),
    #[error("tensor shape {shape:?} does not match its {actual} values")]
    TensorShape { shape: Vec<u64>, actual: usize },
    #[error("column {column:?}: {reason}")]
    Malformed { column: String, reason: String },
    #[error(transparent)]
    Camera(#[from] InvalidCameraId),
    #[error(
        "the payload says camera {payload:?} but it arrived on the subject of camera {subject:?}"
    )]
    CameraMismatch { payload: String, subject: String },
    #[error("column {column:?} is not valid JSON for its type: {source}")]
    Json {
        column: &'static str,
        source: serde_json::Error,
    },
    #[error("the {which} frame: {source}")]
    Frame {
        which: &'static str,
        source: FrameError,
    },
    #[error(
        "the {which} frame is camera {camera:?} seq {seq} (captured {capture_ts_ns}), but the item \
         is about camera {item_camera:?} seq {item_seq} (captured {item_capture_ts_ns}); one \
         message carries one camera frame"
    )]
    ForeignFrame {
        which: &'static str,
        camera: String,
        seq: u64,
        capture_ts_ns: u64,
        item_camera: String,
        item_seq: u64,
        item_capture_ts_ns: u64,
    },
}

/// Column names, shared by the writer, the reader and their errors.
mod col {
    pub const CAMERA: &str = "camera";
    pub const SEQ: &str = "seq";
    pub const CAPTURE_TS_NS: &str = "capture_ts_ns";
    pub const WIDTH: &str = "width";
    pub const HEIGHT: &str = "height";
    pub const PAYLOAD: &str = "payload";
    pub const TRANSFORM: &str = "transform";
    pub const FRAME: &str = "frame";
    pub const SOURCE: &str = "source";
    pub const SOURCE_IS_FRAME: &str = "source_is_frame";
    pub const TENSOR_SHAPE: &str = "tensor_shape";
    pub const TENSOR_DATA: &str = "tensor_data";
    pub const DETECTIONS: &str = "detections";
    pub const REGIONS: &str = "regions";
    pub const FORMAT: &str = "format";
    pub const PIXELS: &str = "pixels";
}

/// An image in the item (the payload or the source): camera, seq and capture time are the
/// item's, so only what may differ travels.
fn image_fields() -> Fields {
    Fields::from(vec![
        Field::new(col::WIDTH, DataType::UInt32, false),
        Field::new(col::HEIGHT, DataType::UInt32, false),
        Field::new(col::FORMAT, DataType::Utf8, false),
        Field::new(col::PIXELS, DataType::Binary, false),
    ])
}

fn transform_item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Float32, false))
}

fn shape_item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::UInt64, false))
}

fn data_item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Float32, false))
}

fn schema() -> Arc<Schema> {
    Arc::new(
        Schema::new(vec![
            Field::new(col::CAMERA, DataType::Utf8, false),
            Field::new(col::SEQ, DataType::UInt64, false),
            Field::new(col::CAPTURE_TS_NS, DataType::UInt64, false),
            Field::new(col::WIDTH, DataType::UInt32, false),
            Field::new(col::HEIGHT, DataType::UInt32, false),
            Field::new(col::PAYLOAD, DataType::Utf8, false),
            Field::new(
                col::TRANSFORM,
                DataType::FixedSizeList(transform_item(), 4),
                false,
            ),
            Field::new_struct(col::FRAME, image_fields(), true),
            Field::new_struct(col::SOURCE, image_fields(), true),
            Field::new(col::SOURCE_IS_FRAME, DataType::Boolean, false),
            Field::new(col::TENSOR_SHAPE, DataType::List(shape_item()), true),
            Field::new(col::TENSOR_DATA, DataType::List(data_item()), true),
            Field::new(col::DETECTIONS, DataType::Utf8, true),
            Field::new(col::REGIONS, DataType::Utf8, true),
        ])
        .with_metadata(arrow_schema::Metadata::new().with(SCHEMA_KEY, ITEM_SCHEMA)),
    )
}

fn ipc(e: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::Ipc(e.to_string())
}

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

/// The source frame's sequence number and capture time of an item message, without copying
/// its tensor (what a worker needs to account for a message before it processes it).
pub fn meta(payload: Bytes) -> Result<(u64, u64), EnvelopeError> {
    let batch = one_row(payload)?;
    let row = Row(&batch);
    Ok((
        row.required::<UInt64Array>(col::SEQ)?.value(0),
        row.required::<UInt64Array>(col::CAPTURE_TS_NS)?.value(0),
    ))
}

/// The message's one record batch, after the framing check (arrow-ipc must not see unchecked
/// buffers).
fn one_row(payload: Bytes) -> Result<RecordBatch, EnvelopeError> {
    crate::ipc_check::check_stream(&payload, check_schema, EnvelopeError::Ipc)?;
    let mut decoder = StreamDecoder::new();
    let mut buffer = Buffer::from(payload);
    let batch = loop {
        match decoder.decode(&mut buffer).map_err(ipc)? {
            Some(batch) => break batch,
            None if buffer.is_empty() => return Err(EnvelopeError::NoBatch),
            None => {}
        }
    };
    if batch.num_rows() != 1 {
        return Err(EnvelopeError::RowCount(batch.num_rows()));
    }
    Ok(batch)
}

/// Decodes an item message. `subject_camera` is the camera token of the subject it arrived on;
/// the payload must agree with it. Pixel buffers share memory with `payload`; tensor values are
/// copied (NATS payloads are not aligned for f32, and `Tensor` owns a `Vec`).
pub fn decode(payload: Bytes, subject_camera: Option<&str>) -> Result<Item, EnvelopeError> {
    let batch = one_row(payload)?;
    let row = Row(&batch);

    let camera = CameraId::new(row.required::<StringArray>(col::CAMERA)?.value(0))?;
    if let Some(subject) = subject_camera
        && subject != camera.as_str()
    {
        return Err(EnvelopeError::CameraMismatch {
            payload: camera.to_string(),
            subject: subject.to_owned(),
        });
    }
    let meta = FrameMeta {
        camera,
        seq: row.required::<UInt64Array>(col::SEQ)?.value(0),
        capture_ts_ns: row.required::<UInt64Array>(col::CAPTURE_TS_NS)?.value(0),
        width: row.required::<UInt32Array>(col::WIDTH)?.value(0),
        height: row.required::<UInt32Array>(col::HEIGHT)?.value(0),
    };
    let transform = read_transform(row.required::<FixedSizeListArray>(col::TRANSFORM)?)?;
    let frame = row
        .optional::<StructArray>(col::FRAME)?
        .map(|s| read_image(col::FRAME, s, &meta))
        .transpose()?;
    let own_source = row
        .optional::<StructArray>(col::SOURCE)?
        .map(|s| read_image(col::SOURCE, s, &meta))
        .transpose()?;
    let source_is_frame = row.required::<BooleanArray>(col::SOURCE_IS_FRAME)?.value(0);

    let kind = row.required::<StringArray>(col::PAYLOAD)?.value(0);
    let payload = match kind {
        "frame" => Payload::Frame(
            frame
                .clone()
                .ok_or_else(|| EnvelopeError::NullColumn(col::FRAME.into()))?,
        ),
        "tensor" => Payload::Tensor(read_tensor(&row)?),
        "detections" => {
            let json = row
                .optional::<StringArray>(col::DETECTIONS)?
                .ok_or_else(|| EnvelopeError::NullColumn(col::DETECTIONS.into()))?
                .value(0);
            Payload::Detections(from_json(col::DETECTIONS, json)?)
        }
        other => return Err(EnvelopeError::UnknownPayload(other.to_owned())),
    };
    let source = if source_is_frame {
        if own_source.is_some() {
            return Err(EnvelopeError::Malformed {
                column: col::SOURCE.into(),
                reason: format!("set although {} is true", col::SOURCE_IS_FRAME),
            });
        }
        Some(frame.ok_or_else(|| EnvelopeError::Malformed {
            column: col::SOURCE_IS_FRAME.into(),
            reason: format!("true, but the {} column is null", col::FRAME),
        })?)
    } else {
        own_source
    };
    let regions = row
        .optional::<StringArray>(col::REGIONS)?
        .map(|r| from_json(col::REGIONS, r.value(0)))
        .transpose()?;

    // The receiving worker gives the item its frame span (continuing the sender's trace).
    let span = tracing::Span::none();
    Ok(Item {
        frame: meta,
        payload,
        transform,
        source,
        regions,
        span,
    })
}

/// The schema tag, then every column of item/v1 with its type and no other. Nullability and
/// the names of list items are not compared, so other Arrow writers' defaults are accepted;
/// the reader checks for nulls where a value is needed.
fn check_schema(found: &Schema) -> Result<(), EnvelopeError> {
    match found.metadata().get(SCHEMA_KEY) {
        None => return Err(EnvelopeError::MissingSchema),
        Some(s) if s == ITEM_SCHEMA => {}
        Some(s) if s.starts_with(SCHEMA_FAMILY) => {
            return Err(EnvelopeError::UnsupportedVersion { found: s.clone() });
        }
        Some(s) => return Err(EnvelopeError::WrongSchema { found: s.clone() }),
    }
    let expected = schema();
    let wrong_type = |name: &str, found: &DataType, expected: &DataType| EnvelopeError::WrongType {
        column: name.to_owned(),
        found: found.to_string(),
        expected: expected.to_string(),
    };
    for want in expected.fields() {
        let (_, got) = found
            .column_with_name(want.name())
            .ok_or_else(|| EnvelopeError::MissingColumn(want.name().clone()))?;
        if !same_type(want.data_type(), got.data_type()) {
            return Err(wrong_type(want.name(), got.data_type(), want.data_type()));
        }
    }
    // Duplicated names must have the expected type too: the reader takes the first.
    for got in found.fields() {
        let (_, want) = expected
            .column_with_name(got.name())
            .ok_or_else(|| EnvelopeError::UnexpectedColumn(got.name().clone()))?;
        if !same_type(want.data_type(), got.data_type()) {
            return Err(wrong_type(got.name(), got.data_type(), want.data_type()));
        }
    }
    Ok(())
}

fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::List(x), DataType::List(y)) => same_type(x.data_type(), y.data_type()),
        (DataType::FixedSizeList(x, n), DataType::FixedSizeList(y, m)) => {
            n == m && same_type(x.data_type(), y.data_type())
        }
        (DataType::Struct(x), DataType::Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(f, g)| f.name() == g.name() && same_type(f.data_type(), g.data_type()))
        }
        _ => a == b,
    }
}

fn from_json(column: &'static str, json: &str) -> Result<Vec<Detection>, EnvelopeError> {
    serde_json::from_str(json).map_err(|source| EnvelopeError::Json { column, source })
}

/// The single row of a decoded batch, with typed and named column access.
struct Row<'a>(&'a RecordBatch);

impl<'a> Row<'a> {
    fn required<T: Array + 'static>(&self, name: &str) -> Result<&'a T, EnvelopeError> {
        self.optional(name)?
            .ok_or_else(|| EnvelopeError::NullColumn(name.to_owned()))
    }

    /// None when the row's value is null.
    fn optional<T: Array + 'static>(&self, name: &str) -> Result<Option<&'a T>, EnvelopeError> {
        let col = self
            .0
            .column_by_name(name)
            .ok_or_else(|| EnvelopeError::MissingColumn(name.to_owned()))?;
        let typed = downcast::<T>(name, col.as_ref())?;
        Ok((!col.is_null(0)).then_some(typed))
    }
}

fn downcast<'a, T: Array + 'static>(
    name: &str,
    col: &'a dyn Array,
) -> Result<&'a T, EnvelopeError> {
    col.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| EnvelopeError::WrongType {
            column: name.to_owned(),
            found: col.data_type().to_string(),
            expected: std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("?")
                .to_owned(),
        })
}

/// The `[start, end)` range of row 0 of a variable-length array, checked against its values.
fn row_range(
    column: &str,
    offsets: &[i32],
    values_len: usize,
) -> Result<(usize, usize), EnvelopeError> {
    let bad = |reason: &str| EnvelopeError::Malformed {
        column: column.to_owned(),
        reason: reason.to_owned(),
    };
    let (&start, &end) = (
        offsets.first().ok_or_else(|| bad("no offsets"))?,
        offsets.get(1).ok_or_else(|| bad("no offsets"))?,
    );
    let start = usize::try_from(start).map_err(|_| bad("negative offset"))?;
    let end = usize::try_from(end).map_err(|_| bad("negative offset"))?;
    if start > end || end > values_len {
        return Err(bad("offsets out of bounds"));
    }
    Ok((start, end))
}

fn read_transform(list: &FixedSizeListArray) -> Result<Transform, EnvelopeError> {
    let values = downcast::<Float32Array>(col::TRANSFORM, list.values().as_ref())?;
    let malformed = || EnvelopeError::Malformed {
        column: col::TRANSFORM.into(),
        reason: "expected 4 non-null values [scale_x, scale_y, offset_x, offset_y]".into(),
    };
    let start = list.value_offset_at(0);
    if list.value_length() != 4 || values.len() < start.saturating_add(4) {
        return Err(malformed());
    }
    let v = values.slice(start, 4);
    if v.null_count() > 0 {
        return Err(malformed());
    }
    let v = v.values();
    Ok(Transform {
        scale_x: v[0],
        scale_y: v[1],
        offset_x: v[2],
        offset_y: v[3],
    })
}

fn read_image(
    which: &'static str,
    image: &StructArray,
    meta: &FrameMeta,
) -> Result<Frame, EnvelopeError> {
    let width = child::<UInt32Array>(which, image, col::WIDTH)?.value(0);
    let height = child::<UInt32Array>(which, image, col::HEIGHT)?.value(0);
    let format_name = child::<StringArray>(which, image, col::FORMAT)?.value(0);
    let format = PixelFormat::parse(format_name).ok_or_else(|| EnvelopeError::Frame {
        which,
        source: FrameError::UnsupportedFormat(format_name.to_owned()),
    })?;
    let pixels = child::<BinaryArray>(which, image, col::PIXELS)?;
    let values = pixels.values();
    let (start, end) = row_range(col::PIXELS, pixels.value_offsets(), values.len())?;
    let frame = Frame {
        camera: meta.camera.clone(),
        seq: meta.seq,
        capture_ts_ns: meta.capture_ts_ns,
        width,
        height,
        format,
        // The row's bytes as a slice of the message buffer: no copy.
        pixels: values.slice_with_length(start, end - start),
    };
    frame
        .validate()
        .map_err(|source| EnvelopeError::Frame { which, source })?;
    Ok(frame)
}

/// A non-null field of a struct column, named `<column>.<field>` in errors.
fn child<'a, T: Array + 'static>(
    column: &str,
    parent: &'a StructArray,
    name: &str,
) -> Result<&'a T, EnvelopeError> {
    let qualified = || format!("{column}.{name}");
    let child = parent
        .column_by_name(name)
        .ok_or_else(|| EnvelopeError::MissingColumn(qualified()))?;
    if child.is_null(0) {
        return Err(EnvelopeError::NullColumn(qualified()));
    }
    downcast(&qualified(), child.as_ref())
}

fn read_tensor(row: &Row<'_>) -> Result<Tensor, EnvelopeError> {
    let shape_list = row
        .optional::<ListArray>(col::TENSOR_SHAPE)?
        .ok_or_else(|| EnvelopeError::NullColumn(col::TENSOR_SHAPE.into()))?;
    let data_list = row
        .optional::<ListArray>(col::TENSOR_DATA)?
        .ok_or_else(|| EnvelopeError::NullColumn(col::TENSOR_DATA.into()))?;

    let dims = downcast::<UInt64Array>(col::TENSOR_SHAPE, shape_list.values().as_ref())?;
    let (start, end) = row_range(col::TENSOR_SHAPE, shape_list.value_offsets(), dims.len())?;
    let dims = dims.slice(start, end - start);
    let data = downcast::<Float32Array>(col::TENSOR_DATA, data_list.values().as_ref())?;
    let (start, end) = row_range(col::TENSOR_DATA, data_list.value_offsets(), data.len())?;
    let data = data.slice(start, end - start);
    for (column, nulls) in [
        (col::TENSOR_SHAPE, dims.null_count()),
        (col::TENSOR_DATA, data.null_count()),
    ] {
        if nulls > 0 {
            return Err(EnvelopeError::Malformed {
                column: column.into(),
                reason: format!("{nulls} null values"),
            });
        }
    }

    let shape_u64 = dims.values().to_vec();
    let mismatch = || EnvelopeError::TensorShape {
        shape: shape_u64.clone(),
        actual: data.len(),
    };
    let shape = shape_u64
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| mismatch()))
        .collect::<Result<Vec<_>, _>>()?;
    let expected = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(mismatch)?;
    if expected != data.len() {
        return Err(mismatch());
    }
    Tensor::new(shape, data.values().to_vec()).map_err(|_| mismatch())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelBuffer;

    fn camera() -> CameraId {
        CameraId::new("cam-1").expect("valid")
    }

    fn frame(w: u32, h: u32) -> Frame {
        let pixels: Vec<u8> = (0..(w * h * 3)).map(|i| (i % 251) as u8).collect();
        Frame {
            camera: camera(),
            seq: 42,
            capture_ts_ns: 1_700_000_000_000_000_000,
            width: w,
            height: h,
            format: PixelFormat::Rgb8,
            pixels: PixelBuffer::from_vec(pixels),
        }
    }

    fn detection(label: &str, text: Option<&str>) -> Detection {
        Detection {
            bbox: [1.5, 2.25, 30.0, 40.125],
            polygon: Some([[1.5, 2.25], [30.0, 2.5], [30.0, 40.125], [1.0, 40.0]]),
            label: label.to_owned(),
            score: 0.875,
            text: text.map(str::to_owned),
        }
    }

    fn within(bytes: &Bytes, p: &PixelBuffer) -> bool {
        let base = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        base.contains(&(p.as_ptr() as usize))
    }

    fn assert_meta(a: &Item, b: &Item) {
        assert_eq!(
            (&a.frame.camera, a.frame.seq, a.frame.capture_ts_ns),
            (&b.frame.camera, b.frame.seq, b.frame.capture_ts_ns)
        );
        assert_eq!(
            (a.frame.width, a.frame.height),
            (b.frame.width, b.frame.height)
        );
        assert_eq!(a.transform, b.transform);
        assert_eq!(a.regions, b.regions);
    }

    fn tensor_item() -> Item {
        let mut item = Item::from_frame(frame(64, 48));
        let shape = vec![2, 3, 4, 5];
        let data = (0..120).map(|i| i as f32 * 0.5 - 7.25).collect();
        item.payload = Payload::Tensor(Tensor::new(shape, data).expect("shape"));
        item.transform = Transform {
            scale_x: 0.5,
            scale_y: 0.25,
            offset_x: 3.0,
            offset_y: -1.5,
        };
        item.regions = Some(vec![detection("text", None), detection("text", None)]);
        item
    }

    #[test]
    fn frame_round_trip_encodes_pixels_once_and_borrows_them() {
        let item = Item::from_frame(frame(64, 48));
        let bytes = encode(&item).expect("encode");
        let mut without_source = item.clone();
        without_source.source = None;
        assert_eq!(
            bytes.len(),
            encode(&without_source).expect("encode").len(),
            "pixels written twice"
        );
        let back = decode(bytes.clone(), Some("cam-1")).expect("decode");
        assert_meta(&item, &back);
        let (Payload::Frame(f), Some(s)) = (&back.payload, &back.source) else {
            panic!("payload {} source {:?}", back.payload.kind(), back.source);
        };
        assert_eq!(f.pixels.as_slice(), frame(64, 48).pixels.as_slice());
        assert_eq!((f.width, f.height, f.format), (64, 48, PixelFormat::Rgb8));
        assert_eq!((&f.camera, f.seq), (&item.frame.camera, 42));
        assert!(within(&bytes, &f.pixels), "pixels were copied");
        assert_eq!(s.pixels.as_ptr(), f.pixels.as_ptr());
        // A decoded item re-encodes as compactly.
        assert_eq!(encode(&back).expect("re-encode").len(), bytes.len());
    }

    #[test]
    fn frame_with_a_different_source_keeps_both() {
        let mut item = Item::from_frame(frame(64, 48));
        let mut small = frame(8, 6);
        small.format = PixelFormat::Rgb8;
        item.frame.width = 8;
        item.frame.height = 6;
        item.payload = Payload::Frame(small);
        let bytes = encode(&item).expect("encode");
        let back = decode(bytes.clone(), None).expect("decode");
        let (Payload::Frame(f), Some(s)) = (&back.payload, &back.source) else {
            panic!("payload {} source {:?}", back.payload.kind(), back.source);
        };
        assert_eq!((f.width, s.width), (8, 64));
        assert!(within(&bytes, &s.pixels), "source pixels were copied");
        assert_eq!(s.pixels.as_slice(), frame(64, 48).pixels.as_slice());
    }

    #[test]
    fn tensor_round_trip_with_transform_regions_and_source() {
        let item = tensor_item();
        let bytes = encode(&item).expect("encode");
        let back = decode(bytes.clone(), Some("cam-1")).expect("decode");
        assert_meta(&item, &back);
        let (Payload::Tensor(a), Payload::Tensor(b)) = (&item.payload, &back.payload) else {
            panic!("payload {}", back.payload.kind());
        };
        assert_eq!(a, b);
        let source = back.source.as_ref().expect("source");
        assert_eq!(source.pixels.as_slice(), frame(64, 48).pixels.as_slice());
        assert!(within(&bytes, &source.pixels), "source pixels were copied");
        assert_eq!(back.regions.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn detections_round_trip_without_source() {
        let mut item = tensor_item();
        item.source = None;
        item.regions = None;
        item.payload = Payload::Detections(vec![
            detection("plate", Some("AB-123")),
            detection("car", None),
        ]);
        let back = decode(encode(&item).expect("encode"), Some("cam-1")).expect("decode");
        assert_meta(&item, &back);
        let (Payload::Detections(a), Payload::Detections(b)) = (&item.payload, &back.payload)
        else {
            panic!("payload {}", back.payload.kind());
        };
        assert_eq!(a, b);
        assert!(back.source.is_none());
        assert!(back.regions.is_none());
    }

    #[test]
    fn camera_mismatch_is_refused() {
        let bytes = encode(&tensor_item()).expect("encode");
        let err = decode(bytes, Some("cam-2")).expect_err("mismatch decoded");
        assert!(matches!(err, EnvelopeError::CameraMismatch { .. }), "{err}");
        assert!(err.to_string().contains("cam-2"), "{err}");
    }

    #[test]
    fn truncated_or_tampered_payloads_are_errors() {
        let bytes = encode(&tensor_item()).expect("encode");
        for cut in [0, 8, 100, bytes.len() / 2, bytes.len() - 9] {
            let err = decode(bytes.slice(..cut), None).expect_err("truncated decoded");
            assert!(
                matches!(err, EnvelopeError::Ipc(_) | EnvelopeError::NoBatch),
                "cut {cut}: {err}"
            );
        }
        // Damage every byte of the message (metadata, offsets, lengths) in turn, in several
        // ways: each result is a decoded item or an error, never a panic.
        let mut errors = 0;
        let damage: [fn(u8) -> u8; 5] =
            [|b| b ^ 0xa5, |b| b ^ 0x01, |b| b ^ 0x80, |_| 0xff, |_| 0x7f];
        for f in damage {
            for i in 0..bytes.len() {
                let mut tampered = bytes.to_vec();
                tampered[i] = f(tampered[i]);
                if decode(Bytes::from(tampered), Some("cam-1")).is_err() {
                    errors += 1;
                }
            }
        }
        assert!(errors > 0);
    }

    #[test]
    fn tensor_shape_must_match_its_data() {
        let mut item = tensor_item();
        // Bypasses Tensor::new, as a foreign writer could.
        item.payload = Payload::Tensor(Tensor {
            shape: vec![2, 3, 4, 6],
            data: vec![0.0; 120],
        });
        let err = decode(encode(&item).expect("encode"), None).expect_err("mismatch decoded");
        assert!(
            matches!(err, EnvelopeError::TensorShape { actual: 120, .. }),
            "{err}"
        );
        item.payload = Payload::Tensor(Tensor {
            shape: vec![usize::MAX, 2],
            data: vec![0.0; 2],
        });
        let err = decode(encode(&item).expect("encode"), None).expect_err("overflow decoded");
        assert!(matches!(err, EnvelopeError::TensorShape { .. }), "{err}");
    }

    #[test]
    fn a_frame_message_is_not_an_item() {
        let err = decode(frame(4, 4).encode().expect("encode"), None).expect_err("decoded");
        assert!(
            matches!(&err, EnvelopeError::WrongSchema { found } if found == "frame/v1"),
            "{err}"
        );
    }

    #[test]
    fn other_item_versions_and_bad_json_are_named() {
        let item = tensor_item();
        let bytes = encode(&item).expect("encode");
        let patched = replace_first(&bytes, b"item/v1", b"item/v9");
        let err = decode(patched, None).expect_err("v9 decoded");
        assert!(
            matches!(&err, EnvelopeError::UnsupportedVersion { found } if found == "item/v9"),
            "{err}"
        );
        let patched = replace_first(&bytes, b"\"label\":", b"\"label\";");
        let err = decode(patched, None).expect_err("bad JSON decoded");
        assert!(
            matches!(
                err,
                EnvelopeError::Json {
                    column: "regions",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_frame_of_another_camera_is_not_encoded() {
        let mut item = tensor_item();
        let mut other = frame(64, 48);
        other.seq = 43;
        item.source = Some(other);
        let err = encode(&item).expect_err("encoded");
        assert!(
            matches!(
                err,
                EnvelopeError::ForeignFrame {
                    which: "source",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_and_mistyped_columns_are_named() {
        let batch = RecordBatch::try_new(
            Arc::new(
                Schema::new(vec![Field::new(col::CAMERA, DataType::UInt32, false)])
                    .with_metadata(arrow_schema::Metadata::new().with(SCHEMA_KEY, ITEM_SCHEMA)),
            ),
            vec![Arc::new(UInt32Array::from(vec![7]))],
        )
        .expect("batch");
        let mut out = Vec::new();
        let mut w = StreamWriter::try_new(&mut out, &batch.schema()).expect("writer");
        w.write(&batch).expect("write");
        w.finish().expect("finish");
        drop(w);
        let err = decode(Bytes::from(out), None).expect_err("decoded");
        assert!(
            matches!(&err, EnvelopeError::WrongType { column, .. } if column == "camera"),
            "{err}"
        );

        let mut item = tensor_item();
        item.regions = None;
        let bytes = encode(&item).expect("encode");
        // The same message with the `payload` column renamed.
        let patched = replace_first(&bytes, b"payload", b"paylaod");
        let err = decode(patched, None).expect_err("decoded");
        assert!(
            matches!(&err, EnvelopeError::MissingColumn(c) if c == "payload"),
            "{err}"
        );
    }

    /// `bytes` with the first `from` (same length as `to`) replaced.
    fn replace_first(bytes: &[u8], from: &[u8], to: &[u8]) -> Bytes {
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .unwrap_or_else(|| panic!("{from:?} not found"));
        let mut v = bytes.to_vec();
        v[at..at + to.len()].copy_from_slice(to);
        Bytes::from(v)
    }
}
