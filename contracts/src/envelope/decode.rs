//! Reading an `item/v1` message back into an item: the framing and schema checks first, then
//! each column with its type, nulls and offsets checked; pixels stay in the message's buffer.

use arrow_array::{
    Array, BinaryArray, BooleanArray, FixedSizeListArray, Float32Array, ListArray, RecordBatch,
    StringArray, StructArray, UInt32Array, UInt64Array,
};
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use bytes::Bytes;

use super::schema::{check_schema, col};
use super::{EnvelopeError, ipc};
use crate::camera::CameraId;
use crate::detection::Detection;
use crate::frame::{Frame, FrameError, PixelFormat};
use crate::stage::{FrameMeta, Item, Payload};
use crate::tensor::{Tensor, Transform};

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
