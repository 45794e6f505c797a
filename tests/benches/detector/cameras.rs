//! The benchmark's cameras: one frame each, rendered and encoded once, then stamped with a
//! sequence number and capture time per publish.

use anyhow::{anyhow, bail};
use bytes::{Bytes, BytesMut};
use panoptes_contracts::frame::PixelBuffer;
use panoptes_contracts::{CameraId, Frame, PixelFormat};
use panoptes_ingest::TestPattern;

pub const FRAME_WIDTH: u32 = 640;
pub const FRAME_HEIGHT: u32 = 480;

/// How the cameras' frames travel: raw RGB (as `encoding: raw` ingest sends them) or JPEG (as
/// `encoding: jpeg` does; the topology then decodes them in the built-in `jpeg` operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Wire {
    Raw,
    Jpeg,
}

/// The quality `encoding: jpeg` cameras use by default.
const JPEG_QUALITY: u8 = 85;

impl Wire {
    fn format(self) -> PixelFormat {
        match self {
            Wire::Raw => PixelFormat::Rgb8,
            Wire::Jpeg => PixelFormat::Jpeg,
        }
    }

    fn encode(self, rgb: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        match self {
            Wire::Raw => Ok(rgb),
            Wire::Jpeg => {
                let mut jpeg = Vec::new();
                jpeg_encoder::Encoder::new(&mut jpeg, JPEG_QUALITY).encode(
                    &rgb,
                    FRAME_WIDTH as u16,
                    FRAME_HEIGHT as u16,
                    jpeg_encoder::ColorType::Rgb,
                )?;
                Ok(jpeg)
            }
        }
    }
}

/// One camera's frame, encoded once; [`Template::stamp`] writes a sequence number and capture
/// time into a copy (one memcpy of the payload, as a real publisher makes per frame).
#[derive(Clone)]
pub struct Template {
    pub camera: CameraId,
    bytes: Bytes,
    seq_at: usize,
    ts_at: usize,
}

const SEQ_MARK: u64 = 0x5e9_5e9_5e9_5e9_5e9;
const TS_MARK: u64 = 0x7a3_7a3_7a3_7a3_7a3;

fn find_once(haystack: &[u8], needle: &[u8]) -> anyhow::Result<usize> {
    let mut hits = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i);
    match (hits.next(), hits.next()) {
        (Some(i), None) => Ok(i),
        _ => bail!("the marker is not in the encoded frame exactly once"),
    }
}

impl Template {
    fn new(camera: CameraId, pixels: Vec<u8>, wire: Wire) -> anyhow::Result<Self> {
        let frame = Frame {
            camera: camera.clone(),
            seq: SEQ_MARK,
            capture_ts_ns: TS_MARK,
            width: FRAME_WIDTH,
            height: FRAME_HEIGHT,
            format: wire.format(),
            pixels: PixelBuffer::from(wire.encode(pixels)?),
        };
        let bytes = frame.encode()?;
        let t = Self {
            seq_at: find_once(&bytes, &SEQ_MARK.to_le_bytes())?,
            ts_at: find_once(&bytes, &TS_MARK.to_le_bytes())?,
            camera,
            bytes,
        };
        // The patched copy must decode to what was written.
        let check = Frame::decode(t.stamp(7, 42), Some(t.camera.as_str()))?;
        anyhow::ensure!(
            check.seq == 7 && check.capture_ts_ns == 42,
            "patching the template failed"
        );
        Ok(t)
    }

    pub fn stamp(&self, seq: u64, capture_ts_ns: u64) -> Bytes {
        let mut b = BytesMut::from(&self.bytes[..]);
        b[self.seq_at..self.seq_at + 8].copy_from_slice(&seq.to_le_bytes());
        b[self.ts_at..self.ts_at + 8].copy_from_slice(&capture_ts_ns.to_le_bytes());
        b.freeze()
    }
}

/// `n` cameras' frames: a line of text rendered by GStreamer (so the DB postprocessor finds
/// boxes, as on a real feed) on a noisy background.
pub fn templates(n: usize, wire: Wire) -> anyhow::Result<Vec<Template>> {
    panoptes_tests::gst();
    let words = [
        "TOTAL 42.00 EUR",
        "Gate B12 Departures",
        "PANOPTES ALPHA",
        "CAMERA BRAVO 42",
        "Platform 9 3/4",
        "EXIT 17 NORTH",
        "Parking Level -2",
        "Dock 5 Loading",
    ];
    let mut state: u32 = 0x1234_5678;
    (0..n)
        .map(|i| {
            let pattern = TestPattern {
                text: format!("{} #{i}", words[i % words.len()]),
                width: FRAME_WIDTH,
                height: FRAME_HEIGHT,
                font: "Sans Bold 28".into(),
                xpos: 0.3 + 0.05 * (i % 8) as f64,
                ypos: 0.2 + 0.08 * (i % 8) as f64,
                background: 0xff20_3040 + ((i as u32 * 0x0010_0810) & 0x003f_3f3f),
                live: false,
                ..TestPattern::default()
            };
            let raw = panoptes_ingest::render_still(&pattern)
                .map_err(|e| anyhow!("cannot render camera {i}'s frame: {e}"))?;
            anyhow::ensure!(
                raw.width == FRAME_WIDTH && raw.height == FRAME_HEIGHT,
                "rendered {}x{}",
                raw.width,
                raw.height
            );
            let mut pixels = raw.data;
            for p in &mut pixels {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = ((state >> 24) % 25) as i16 - 12;
                *p = (i16::from(*p) + noise).clamp(0, 255) as u8;
            }
            Template::new(CameraId::new(&format!("cam-{i}"))?, pixels, wire)
        })
        .collect()
}
