//! A camera's recent frames as JPEG (the pre-roll buffer): what a clip starts with when an
//! event arrives, bounded by time and by bytes.

use std::collections::VecDeque;

use bytes::Bytes;
use panoptes_contracts::frame::{Frame, PixelFormat};

use crate::RecordError;

/// One frame as the recorder keeps it: JPEG, with the metadata a clip needs.
#[derive(Clone, Debug)]
pub struct BufferedFrame {
    pub seq: u64,
    pub capture_ts_ns: u64,
    pub width: u32,
    pub height: u32,
    pub jpeg: Bytes,
}

impl BufferedFrame {
    /// A JPEG frame is kept as it arrived; an RGB frame is encoded once, at `quality`.
    pub fn from_frame(frame: &Frame, quality: u8) -> Result<Self, RecordError> {
        let jpeg = match frame.format {
            PixelFormat::Jpeg => Bytes::copy_from_slice(frame.pixels.as_slice()),
            PixelFormat::Rgb8 => {
                let (w, h) = (
                    u16::try_from(frame.width).map_err(|_| too_large(frame))?,
                    u16::try_from(frame.height).map_err(|_| too_large(frame))?,
                );
                let mut out = Vec::with_capacity(frame.pixels.len() / 8);
                jpeg_encoder::Encoder::new(&mut out, quality)
                    .encode(frame.pixels.as_slice(), w, h, jpeg_encoder::ColorType::Rgb)
                    .map_err(|e| {
                        RecordError::Frame(format!("cannot encode the frame as JPEG: {e}"))
                    })?;
                Bytes::from(out)
            }
            other => {
                return Err(RecordError::Frame(format!(
                    "frames in {} are not recorded (rgb8 and jpeg are)",
                    other.as_str()
                )));
            }
        };
        Ok(Self {
            seq: frame.seq,
            capture_ts_ns: frame.capture_ts_ns,
            width: frame.width,
            height: frame.height,
            jpeg,
        })
    }
}

fn too_large(frame: &Frame) -> RecordError {
    RecordError::Frame(format!(
        "a {}x{} frame is too large for JPEG",
        frame.width, frame.height
    ))
}

/// The frames of the last `keep_ns` (by capture time), at most `max_bytes` of them.
#[derive(Debug)]
pub struct PreRoll {
    frames: VecDeque<BufferedFrame>,
    keep_ns: u64,
    max_bytes: usize,
    bytes: usize,
}

impl PreRoll {
    pub fn new(keep_ns: u64, max_bytes: usize) -> Self {
        Self {
            frames: VecDeque::new(),
            keep_ns,
            max_bytes,
            bytes: 0,
        }
    }

    /// Adds a frame (a frame older than the newest is dropped: a clip runs forward) and
    /// forgets what fell out of the window or over the byte cap.
    pub fn push(&mut self, frame: BufferedFrame) {
        if self
            .frames
            .back()
            .is_some_and(|last| frame.capture_ts_ns <= last.capture_ts_ns)
        {
            return;
        }
        self.bytes += frame.jpeg.len();
        let newest = frame.capture_ts_ns;
        self.frames.push_back(frame);
        while let Some(first) = self.frames.front() {
            let too_old = newest.saturating_sub(first.capture_ts_ns) > self.keep_ns;
            if !(too_old || self.bytes > self.max_bytes) || self.frames.len() == 1 {
                break;
            }
            self.bytes -= first.jpeg.len();
            self.frames.pop_front();
        }
    }

    /// Frames captured at or after `from_ns`, oldest first.
    pub fn since(&self, from_ns: u64) -> impl Iterator<Item = &BufferedFrame> {
        self.frames
            .iter()
            .filter(move |f| f.capture_ts_ns >= from_ns)
    }

    pub fn newest(&self) -> Option<&BufferedFrame> {
        self.frames.back()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, ts_ms: u64, bytes: usize) -> BufferedFrame {
        BufferedFrame {
            seq,
            capture_ts_ns: ts_ms * 1_000_000,
            width: 4,
            height: 4,
            jpeg: Bytes::from(vec![0; bytes]),
        }
    }

    #[test]
    fn keeps_the_window_and_the_byte_cap() {
        let mut p = PreRoll::new(1_000_000_000, 10_000);
        for i in 0..30 {
            p.push(frame(i, i * 100, 100));
        }
        // 1 s at 10 fps: frames 19..=29 (the one exactly 1 s old stays).
        assert_eq!(p.len(), 11);
        assert_eq!(p.since(2_500_000_000).count(), 5);
        let mut small = PreRoll::new(u64::MAX, 350);
        for i in 0..10 {
            small.push(frame(i, i, 100));
        }
        assert_eq!(small.len(), 3);
        assert_eq!(small.bytes(), 300);
    }

    #[test]
    fn a_frame_from_the_past_is_not_kept() {
        let mut p = PreRoll::new(u64::MAX, usize::MAX);
        p.push(frame(2, 200, 1));
        p.push(frame(1, 100, 1));
        assert_eq!(p.len(), 1);
        assert_eq!(p.newest().map(|f| f.seq), Some(2));
    }
}
