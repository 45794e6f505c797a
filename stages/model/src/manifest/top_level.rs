//! A first look at a would-be manifest's top level that keeps and quotes nothing of it, so that
//! a file that is not a manifest (say `/etc/shadow`) is refused without printing its lines.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// The keys every manifest has (serde refuses one without them).
pub(super) const REQUIRED_KEYS: [&str; 4] = ["name", "file", "inputs", "outputs"];

/// The shape of a YAML document's top level, read without keeping (or quoting) any of it.
pub(super) enum TopLevel {
    /// A mapping, and how many of its keys are [`REQUIRED_KEYS`].
    Mapping { manifest_keys: usize },
    /// What it is instead, in words.
    Other(&'static str),
}

/// Whether a mapping key is one of [`REQUIRED_KEYS`]; any key is read, none is kept.
struct RequiredKey(bool);

impl<'de> Deserialize<'de> for RequiredKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl<'de> Visitor<'de> for Key {
            type Value = RequiredKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<RequiredKey, E> {
                Ok(RequiredKey(REQUIRED_KEYS.contains(&key)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequiredKey, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(RequiredKey(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RequiredKey, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(RequiredKey(false))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_none<E: de::Error>(self) -> Result<RequiredKey, E> {
                Ok(RequiredKey(false))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RequiredKey, D::Error> {
                d.deserialize_any(Key)
            }
        }
        d.deserialize_any(Key)
    }
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> Visitor<'de> for Shape {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YAML document")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut manifest_keys = 0;
                while let Some((RequiredKey(required), de::IgnoredAny)) = map.next_entry()? {
                    manifest_keys += usize::from(required);
                }
                Ok(TopLevel::Mapping { manifest_keys })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(TopLevel::Other("a list"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("text"))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("bytes"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("nothing"))
            }
            fn visit_none<E: de::Error>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("nothing"))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<TopLevel, D::Error> {
                d.deserialize_any(Shape)
            }
        }
        d.deserialize_any(Shape)
    }
}
