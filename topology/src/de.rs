//! The typed reader: deserializes the config types straight from the spanned YAML tree, so every
//! error it raises points at the value it is about (the innermost node being read when the error
//! was made), instead of a message about a JSON value with no place in the file.
//!
//! It reads like `serde_json::Value` does (non-negative integers as `u64`, `null` as `None`, an
//! enum as a string or a one-key mapping) with one addition the schema check already promises:
//! an integral number such as `fps: 10.0` is read as an integer where an integer is expected.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};

use crate::diagnostic::Diagnostic;
use crate::yaml::{Entry, Node, Span, Value};

/// A typed-reader error and the span of the value it is about.
#[derive(Debug)]
pub struct TypedError {
    message: String,
    span: Option<Span>,
}

impl TypedError {
    /// Places the error at `span` unless a value further in already placed it.
    fn at(mut self, span: Span) -> Self {
        self.span.get_or_insert(span);
        self
    }

    /// The error as a diagnostic, located at its value (errors from [`read`] always are: what
    /// no value placed is placed at the root).
    pub fn into_diagnostic(self) -> Diagnostic {
        let d = Diagnostic::new(format!("cannot read this value: {}", self.message));
        match self.span {
            Some(span) => Diagnostic {
                span: Some(span),
                ..d
            }
            .label("here"),
            None => d,
        }
    }
}

impl fmt::Display for TypedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TypedError {}

impl de::Error for TypedError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TypedError {
            message: msg.to_string(),
            span: None,
        }
    }
}

/// Reads a `T` from the tree; an error is located at the innermost value it is about.
pub fn read<'de, T: de::Deserialize<'de>>(root: &'de Node) -> Result<T, TypedError> {
    T::deserialize(root).map_err(|e| e.at(root.span))
}

/// An integral, finite float as the integer it denotes, for integer targets.
fn integral(x: f64) -> Option<IntValue> {
    // 2^64 and 2^63 are exact in f64; a float at or beyond them does not fit.
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if !x.is_finite() || x.fract() != 0.0 {
        None
    } else if (0.0..TWO_64).contains(&x) {
        Some(IntValue::U(x as u64))
    } else if (-TWO_63..0.0).contains(&x) {
        Some(IntValue::I(x as i64))
    } else {
        None
    }
}

enum IntValue {
    U(u64),
    I(i64),
}

/// `forward` methods: each locates what its visitor raised at this node.
macro_rules! located {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
                self.any(visitor).map_err(|e| e.at(self.span))
            }
        )*
    };
}

/// Integer methods: an integral float is read as the integer it denotes.
macro_rules! integers {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
                self.integer(visitor).map_err(|e| e.at(self.span))
            }
        )*
    };
}

impl<'de> NodeExt<'de> for &'de Node {
    fn any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match &self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => match u64::try_from(*i) {
                Ok(u) => visitor.visit_u64(u),
                Err(_) => visitor.visit_i64(*i),
            },
            Value::Float(x) => visitor.visit_f64(*x),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => {
                let mut seq = Seq {
                    items: items.iter(),
                };
                let out = visitor.visit_seq(&mut seq)?;
                match seq.items.len() {
                    0 => Ok(out),
                    left => Err(de::Error::invalid_length(
                        items.len() - left,
                        &"fewer elements in the list",
                    )),
                }
            }
            Value::Map(entries) => {
                let mut map = Map {
                    entries: entries.iter(),
                    value: None,
                };
                let out = visitor.visit_map(&mut map)?;
                match map.entries.len() {
                    0 => Ok(out),
                    left => Err(de::Error::invalid_length(
                        entries.len() - left,
                        &"fewer entries in the mapping",
                    )),
                }
            }
        }
    }

    fn integer<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match &self.value {
            Value::Float(x) => match integral(*x) {
                Some(IntValue::U(u)) => visitor.visit_u64(u),
                Some(IntValue::I(i)) => visitor.visit_i64(i),
                None => visitor.visit_f64(*x),
            },
            _ => self.any(visitor),
        }
    }
}

/// The two ways a node is read: as whatever it is, or as an integer where one is expected.
trait NodeExt<'de> {
    fn any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError>;
    fn integer<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError>;
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = TypedError;

    located! {
        deserialize_any deserialize_bool deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_seq deserialize_map deserialize_identifier
        deserialize_ignored_any
    }

    integers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TypedError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.at(self.span))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.at(self.span))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        match &self.value {
            // A unit variant: `softmax: auto`.
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            // Any other variant: a mapping with exactly one key, the variant's name.
            Value::Map(entries) if entries.len() == 1 => {
                visitor.visit_enum(Variant { entry: &entries[0] })
            }
            Value::Map(_) => Err(de::Error::invalid_value(
                de::Unexpected::Map,
                &"a mapping with a single key (the variant)",
            )),
            other => Err(de::Error::invalid_type(unexpected(other), &"a variant")),
        }
        .map_err(|e| e.at(self.span))
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Int(i) => de::Unexpected::Signed(*i),
        Value::Float(x) => de::Unexpected::Float(*x),
        Value::Str(s) => de::Unexpected::Str(s),
        Value::Seq(_) => de::Unexpected::Seq,
        Value::Map(_) => de::Unexpected::Map,
    }
}

struct Seq<'de> {
    items: std::slice::Iter<'de, Node>,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = TypedError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TypedError> {
        match self.items.next() {
            // Located here too: a seed may fail after reading the node (a tagged enum does).
            Some(node) => seed
                .deserialize(node)
                .map(Some)
                .map_err(|e| e.at(node.span)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'de> {
    entries: std::slice::Iter<'de, Entry>,
    value: Option<&'de Node>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = TypedError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TypedError> {
        match self.entries.next() {
            Some(entry) => {
                self.value = Some(&entry.value);
                let key: de::value::BorrowedStrDeserializer<'de, TypedError> =
                    de::value::BorrowedStrDeserializer::new(&entry.key);
                seed.deserialize(key)
                    .map(Some)
                    .map_err(|e| e.at(entry.key_span))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TypedError> {
        match self.value.take() {
            Some(node) => seed.deserialize(node).map_err(|e| e.at(node.span)),
            None => Err(de::Error::custom("a mapping value was read before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A one-key mapping read as an enum variant: the key names it, the value holds its data.
struct Variant<'de> {
    entry: &'de Entry,
}

impl<'de> EnumAccess<'de> for Variant<'de> {
    type Error = TypedError;
    type Variant = &'de Node;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, &'de Node), TypedError> {
        let key: de::value::BorrowedStrDeserializer<'de, TypedError> =
            de::value::BorrowedStrDeserializer::new(&self.entry.key);
        let variant = seed
            .deserialize(key)
            .map_err(|e| e.at(self.entry.key_span))?;
        Ok((variant, &self.entry.value))
    }
}

impl<'de> VariantAccess<'de> for &'de Node {
    type Error = TypedError;

    fn unit_variant(self) -> Result<(), TypedError> {
        match self.value {
            Value::Null => Ok(()),
            ref other => Err(de::Error::invalid_type(unexpected(other), &"unit variant"))
                .map_err(|e: TypedError| e.at(self.span)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, TypedError> {
        seed.deserialize(self).map_err(|e| e.at(self.span))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TypedError> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn tree(text: &str) -> Node {
        let (node, problems) = crate::yaml::parse(text, &|_| None).expect("parses");
        assert!(problems.is_empty(), "{problems:?}");
        node
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: u32,
        #[serde(default)]
        x: Option<f64>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Tagged {
        A { v: u8 },
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Plain {
        Unit,
        Data(u32),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        inner: Vec<Inner>,
        tagged: Vec<Tagged>,
        plain: Vec<Plain>,
        json: serde_json::Value,
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let text = "inner: [{n: 1}, {n: 2.0, x: 3}]\ntagged: [{kind: a, v: 7}]\n\
                    plain: [unit, {data: 5}]\njson: {a: [1, -2, 1.5, x, null, true]}\n";
        let out: Outer = read(&tree(text)).expect("reads");
        assert_eq!(
            out,
            Outer {
                inner: vec![Inner { n: 1, x: None }, Inner { n: 2, x: Some(3.0) }],
                tagged: vec![Tagged::A { v: 7 }],
                plain: vec![Plain::Unit, Plain::Data(5)],
                json: serde_json::json!({"a": [1, -2, 1.5, "x", null, true]}),
            }
        );
    }

    #[test]
    fn an_error_points_at_the_value_it_is_about() {
        let text = "inner: [{n: 1}, {n: 18446744073709551615}]\ntagged: []\nplain: []\njson: 1\n";
        let err = read::<Outer>(&tree(text)).expect_err("too large for u32");
        let span = err.span.expect("located");
        assert_eq!(&text[span.start..span.end], "18446744073709551615");
        let text = "inner: []\ntagged: []\nplain: [unit]\n";
        let err = read::<Outer>(&tree(text)).expect_err("missing json");
        assert!(err.message.contains("missing field `json`"), "{err}");
        assert_eq!(err.span.map(|s| s.start), Some(0));
    }

    #[test]
    fn an_error_inside_a_tagged_enum_points_at_its_item() {
        let text = "inner: []\ntagged: [{kind: a, v: 300}]\nplain: []\njson: 1\n";
        let err = read::<Outer>(&tree(text)).expect_err("300 is not a u8");
        let span = err.span.expect("located");
        assert_eq!(&text[span.start..span.end], "{kind: a, v: 300}");
    }
}
