//! Previews (`preview/v1`): small JPEGs of a camera's frames for people to look at, published by
//! the camera's ingest node on `<ns>.preview.<camera>` only while someone subscribes there.
//!
//! The payload is the JPEG file itself; the headers say which frame it shows and that frame's
//! size, which detection coordinates refer to (the preview is usually smaller). A message with
//! an empty payload is the ingest node's interest probe, sent as a request that nobody answers:
//! readers skip it. Readers bound what they accept ([`MAX_PREVIEW_BYTES`]).

use crate::headers;

pub const PREVIEW_SCHEMA: &str = "preview/v1";
/// Width and height of the frame the preview shows (detections' coordinates refer to them).
pub const FRAME_WIDTH: &str = "Panoptes-Frame-Width";
pub const FRAME_HEIGHT: &str = "Panoptes-Frame-Height";
/// The largest preview a reader should accept.
pub const MAX_PREVIEW_BYTES: usize = 4 << 20;

/// What a preview's headers say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewMeta {
    pub camera: String,
    pub seq: u64,
    pub capture_ts_ns: u64,
    pub frame_width: u32,
    pub frame_height: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreviewError {
    #[error("preview header {0} is missing or not a number")]
    Header(&'static str),
    #[error("preview header {SCHEMA} is {0:?}, not {PREVIEW_SCHEMA}", SCHEMA = headers::SCHEMA)]
    Schema(String),
    #[error("preview of {0} bytes is over the limit of {MAX_PREVIEW_BYTES}")]
    TooLarge(usize),
    #[error("preview is not a JPEG file")]
    NotJpeg,
}

impl PreviewMeta {
    /// The header pairs of a preview message.
    pub fn headers(&self) -> [(&'static str, String); 6] {
        [
            (headers::SCHEMA, PREVIEW_SCHEMA.to_owned()),
            (headers::CAMERA, self.camera.clone()),
            (headers::SEQ, self.seq.to_string()),
            (headers::CAPTURE_TS_NS, self.capture_ts_ns.to_string()),
            (FRAME_WIDTH, self.frame_width.to_string()),
            (FRAME_HEIGHT, self.frame_height.to_string()),
        ]
    }

    /// Reads a preview message: its headers (through `get`) and its payload, which must be a
    /// JPEG within [`MAX_PREVIEW_BYTES`]. `camera` is the subject's camera token.
    pub fn read<'a>(
        camera: &str,
        get: impl Fn(&str) -> Option<&'a str>,
        payload: &[u8],
    ) -> Result<Self, PreviewError> {
        match get(headers::SCHEMA) {
            Some(PREVIEW_SCHEMA) => {}
            other => return Err(PreviewError::Schema(other.unwrap_or_default().to_owned())),
        }
        if payload.len() > MAX_PREVIEW_BYTES {
            return Err(PreviewError::TooLarge(payload.len()));
        }
        if !payload.starts_with(&[0xFF, 0xD8]) {
            return Err(PreviewError::NotJpeg);
        }
        fn number<'a, T: std::str::FromStr>(
            get: &impl Fn(&str) -> Option<&'a str>,
            name: &'static str,
        ) -> Result<T, PreviewError> {
            get(name)
                .and_then(|v| v.parse().ok())
                .ok_or(PreviewError::Header(name))
        }
        Ok(Self {
            camera: camera.to_owned(),
            seq: number(&get, headers::SEQ)?,
            capture_ts_ns: number(&get, headers::CAPTURE_TS_NS)?,
            frame_width: number(&get, FRAME_WIDTH)?,
            frame_height: number(&get, FRAME_HEIGHT)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn meta() -> PreviewMeta {
        PreviewMeta {
            camera: "gate".into(),
            seq: 42,
            capture_ts_ns: 7,
            frame_width: 1280,
            frame_height: 720,
        }
    }

    #[test]
    fn headers_read_back() {
        let map: HashMap<&str, String> = meta().headers().into_iter().collect();
        let get = |k: &str| map.get(k).map(String::as_str);
        assert_eq!(PreviewMeta::read("gate", get, b"\xFF\xD8rest"), Ok(meta()));
    }

    #[test]
    fn bad_previews_are_named() {
        let mut map: HashMap<&str, String> = meta().headers().into_iter().collect();
        let read = |map: &HashMap<&str, String>, payload: &[u8]| {
            PreviewMeta::read("gate", |k| map.get(k).map(String::as_str), payload)
        };
        assert_eq!(read(&map, b"GIF89a"), Err(PreviewError::NotJpeg));
        assert_eq!(
            read(&map, &vec![0xFF; MAX_PREVIEW_BYTES + 1]),
            Err(PreviewError::TooLarge(MAX_PREVIEW_BYTES + 1))
        );
        map.insert(FRAME_WIDTH, "wide".into());
        assert_eq!(
            read(&map, b"\xFF\xD8"),
            Err(PreviewError::Header(FRAME_WIDTH))
        );
        map.insert(headers::SCHEMA, "frame/v1".into());
        assert_eq!(
            read(&map, b"\xFF\xD8"),
            Err(PreviewError::Schema("frame/v1".into()))
        );
    }
}
