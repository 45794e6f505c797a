//! The `item/v1` schema: its column names and types, and the check a received message's schema
//! must pass before any of its buffers are read.

use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema};

use super::{EnvelopeError, ITEM_SCHEMA, SCHEMA_FAMILY, SCHEMA_KEY};

/// Column names, shared by the writer, the reader and their errors.
pub(super) mod col {
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
pub(super) fn image_fields() -> Fields {
    Fields::from(vec![
        Field::new(col::WIDTH, DataType::UInt32, false),
        Field::new(col::HEIGHT, DataType::UInt32, false),
        Field::new(col::FORMAT, DataType::Utf8, false),
        Field::new(col::PIXELS, DataType::Binary, false),
    ])
}

pub(super) fn transform_item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Float32, false))
}

pub(super) fn shape_item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::UInt64, false))
}

pub(super) fn data_item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Float32, false))
}

pub(super) fn schema() -> Arc<Schema> {
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

/// The schema tag, then every column of item/v1 with its type and no other. Nullability and
/// the names of list items are not compared, so other Arrow writers' defaults are accepted;
/// the reader checks for nulls where a value is needed.
pub(super) fn check_schema(found: &Schema) -> Result<(), EnvelopeError> {
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
