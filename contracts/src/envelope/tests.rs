//! Round trips of every payload kind, and messages that are truncated, tampered with, of
//! another schema or missing columns.

use std::sync::Arc;

use arrow_array::{RecordBatch, UInt32Array};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;

use super::schema::col;
use super::{EnvelopeError, ITEM_SCHEMA, SCHEMA_KEY, decode, encode};
use crate::camera::CameraId;
use crate::detection::Detection;
use crate::frame::{Frame, PixelBuffer, PixelFormat};
use crate::stage::{Item, Payload};
use crate::tensor::{Tensor, Transform};

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
        track: None,
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
    let (Payload::Detections(a), Payload::Detections(b)) = (&item.payload, &back.payload) else {
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
    let damage: [fn(u8) -> u8; 5] = [|b| b ^ 0xa5, |b| b ^ 0x01, |b| b ^ 0x80, |_| 0xff, |_| 0x7f];
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
