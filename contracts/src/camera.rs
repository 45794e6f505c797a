//! Camera identifiers: each must be exactly one NATS subject token, because it is one.

use std::fmt;
use std::sync::Arc;

/// A validated camera ID: 1..=128 ASCII letters, digits, `-` or `_`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CameraId(Arc<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid camera ID {id:?}: {reason}")]
pub struct InvalidCameraId {
    pub id: String,
    pub reason: &'static str,
}

impl CameraId {
    pub const MAX_LEN: usize = 128;

    pub fn new(id: &str) -> Result<Self, InvalidCameraId> {
        let fail = |reason| {
            Err(InvalidCameraId {
                id: id.to_owned(),
                reason,
            })
        };
        if id.is_empty() {
            return fail("it is empty");
        }
        if id.len() > Self::MAX_LEN {
            return fail("it is longer than 128 characters");
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return fail(
                "only ASCII letters, digits, '-' and '_' may appear (it must be one NATS token)",
            );
        }
        Ok(Self(Arc::from(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CameraId({})", self.0)
    }
}

impl serde::Serialize for CameraId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for CameraId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CameraId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_tokens() {
        for id in ["cam1", "front-door", "LOT_7", "a"] {
            assert_eq!(CameraId::new(id).map(|c| c.to_string()), Ok(id.to_owned()));
        }
    }

    #[test]
    fn rejects_non_tokens() {
        for id in ["", "a.b", "a b", "cam*", "cam>", "é", &"x".repeat(129)] {
            assert!(CameraId::new(id).is_err(), "{id:?} accepted");
        }
    }
}
