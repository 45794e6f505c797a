//! YAML to a tree that remembers where every node and key came from, with `${VAR}` and
//! `${VAR:-default}` interpolated in scalars before they are typed (so `fps: ${FPS:-10}` is an
//! integer). Types follow the YAML 1.2 core schema; quoted scalars are always strings.

use std::collections::HashMap;
use std::fmt;

use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle, ScanError};

use crate::EnvLookup;
use crate::diagnostic::Diagnostic;

/// A byte range of the source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

/// One step of a path into the tree: a mapping key or a list index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

impl From<&str> for PathSeg {
    fn from(k: &str) -> Self {
        PathSeg::Key(k.to_owned())
    }
}

impl From<usize> for PathSeg {
    fn from(i: usize) -> Self {
        PathSeg::Index(i)
    }
}

/// Renders a path the way users write it: `stages[2].batching.max_batch`.
pub fn display_path(path: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSeg::Index(i) => {
                out.push_str(&format!("[{i}]"));
            }
        }
    }
    if out.is_empty() {
        out.push_str("the top level");
    }
    out
}

impl Value {
    /// What users call this kind of value in messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Seq(_) => f.write_str("[…]"),
            Value::Map(_) => f.write_str("{…}"),
        }
    }
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match &self.value {
            Value::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }

    /// A number, integer or not.
    pub fn as_f64(&self) -> Option<f64> {
        match &self.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    pub fn entries(&self) -> &[Entry] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The node at `path`, or the deepest ancestor on it that exists.
    pub fn find(&self, path: &[PathSeg]) -> Option<&Node> {
        let mut node = self;
        for seg in path {
            let next = match seg {
                PathSeg::Key(k) => node.get(k),
                PathSeg::Index(i) => node.items().get(*i),
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        Some(node)
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Parses one YAML document. A syntax error stops parsing (the rest cannot be trusted); problems
/// that do not (duplicate keys, unset variables) are returned next to the tree.
pub fn parse(text: &str, env: EnvLookup<'_>) -> Result<(Node, Vec<Diagnostic>), Box<Diagnostic>> {
    let mut b = Builder {
        text,
        parser: Parser::new_from_str(text),
        env,
        anchors: HashMap::new(),
        problems: Vec::new(),
        char_to_byte: None,
        depth: 0,
        alias_bytes: 0,
    };
    let root = b.document()?;
    Ok((root, b.problems))
}

const MAX_DEPTH: usize = 64;

/// How much aliases may add to a document, in (approximate) bytes of tree. An alias copies its
/// anchor's value, and aliases of anchors that hold aliases multiply: a few hundred bytes of
/// nested aliases ("billion laughs") would otherwise expand to gigabytes. Real topologies reuse
/// a few defaults blocks, kilobytes at most.
pub const MAX_ALIAS_EXPANSION: usize = 16 << 20;

struct Builder<'a> {
    text: &'a str,
    parser: Parser<'a, serde_saphyr::granit_parser::StrInput<'a>>,
    env: EnvLookup<'a>,
    /// Each anchor's value with its [`measure`]: what an alias to it adds to the document.
    anchors: HashMap<usize, (Node, Measure)>,
    problems: Vec<Diagnostic>,
    char_to_byte: Option<Vec<usize>>,
    depth: usize,
    /// What aliases have added so far, against [`MAX_ALIAS_EXPANSION`].
    alias_bytes: usize,
}

/// The size of a subtree: approximate bytes (nodes, entries and string contents) and height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Measure {
    bytes: usize,
    height: usize,
}

fn measure(node: &Node) -> Measure {
    let own = std::mem::size_of::<Node>();
    match &node.value {
        Value::Str(s) => Measure {
            bytes: own + s.len(),
            height: 0,
        },
        Value::Seq(items) => items.iter().map(measure).fold(
            Measure {
                bytes: own,
                height: 1,
            },
            |acc, m| Measure {
                bytes: acc.bytes.saturating_add(m.bytes),
                height: acc.height.max(m.height + 1),
            },
        ),
        Value::Map(entries) => entries.iter().fold(
            Measure {
                bytes: own,
                height: 1,
            },
            |acc, e| {
                let m = measure(&e.value);
                Measure {
                    bytes: acc
                        .bytes
                        .saturating_add(std::mem::size_of::<Entry>() + e.key.len())
                        .saturating_add(m.bytes),
                    height: acc.height.max(m.height + 1),
                }
            },
        ),
        _ => Measure {
            bytes: own,
            height: 0,
        },
    }
}

impl<'a> Builder<'a> {
    fn offset(&mut self, m: &Marker) -> usize {
        if let Some(b) = m.byte_offset() {
            return b.min(self.text.len());
        }
        let map = self.char_to_byte.get_or_insert_with(|| {
            self.text
                .char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(self.text.len()))
                .collect()
        });
        map.get(m.index()).copied().unwrap_or(self.text.len())
    }

    fn span(&mut self, s: &serde_saphyr::granit_parser::Span) -> Span {
        let start = self.offset(&s.start);
        let end = self.offset(&s.end).max(start);
        Span { start, end }
    }

    fn scan_error(&mut self, e: ScanError) -> Box<Diagnostic> {
        let at = self.offset(e.marker());
        Box::new(
            Diagnostic::at(
                Span {
                    start: at,
                    end: at + 1,
                },
                format!("invalid YAML: {}", e.info()),
            )
            .label("here"),
        )
    }

    fn next(&mut self) -> Result<(Event<'a>, Span), Box<Diagnostic>> {
        loop {
            match self.parser.next_event() {
                None => {
                    let end = self.text.len();
                    return Err(Box::new(Diagnostic::at(
                        Span { start: end, end },
                        "invalid YAML: unexpected end of file",
                    )));
                }
                Some(Err(e)) => return Err(self.scan_error(e)),
                Some(Ok((event, span))) => {
                    let span = self.span(&span);
                    #[allow(unreachable_patterns)]
                    match event {
                        Event::Anchor(..) => continue,
                        _ => return Ok((event, span)),
                    }
                }
            }
        }
    }

    fn document(&mut self) -> Result<Node, Box<Diagnostic>> {
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::StreamStart => continue,
                Event::StreamEnd => {
                    return Err(Box::new(Diagnostic::at(span, "the topology file is empty")));
                }
                Event::DocumentStart(..) => break,
                _ => continue,
            }
        }
        let (event, span) = self.next()?;
        let root = self.node(event, span)?;
        // A second document would be silently ignored; say so instead.
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::DocumentEnd => continue,
                Event::StreamEnd => break,
                Event::DocumentStart(..) => {
                    self.problems.push(
                        Diagnostic::at(span, "a topology file holds one YAML document")
                            .label("a second document starts here"),
                    );
                    break;
                }
                _ => continue,
            }
        }
        Ok(root)
    }

    fn node(&mut self, event: Event<'a>, span: Span) -> Result<Node, Box<Diagnostic>> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let forced_str = tag.as_ref().is_some_and(|t| t.suffix() == "str");
                let text = self.interpolate(&text, span);
                let value = if style == ScalarStyle::Plain && !forced_str {
                    resolve_plain(&text)
                } else {
                    Value::Str(text)
                };
                let node = Node { value, span };
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::SequenceStart(_, anchor, _) => {
                self.enter(span)?;
                let mut items = Vec::new();
                let end = loop {
                    let (event, s) = self.next()?;
                    if let Event::SequenceEnd = event {
                        break s;
                    }
                    items.push(self.node(event, s)?);
                };
                self.depth -= 1;
                let node = Node {
                    value: Value::Seq(items),
                    span: Span {
                        start: span.start,
                        end: end.end.max(span.end),
                    },
                };
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::MappingStart(_, anchor, _) => {
                self.enter(span)?;
                let mut entries: Vec<Entry> = Vec::new();
                let mut merged: Vec<Entry> = Vec::new();
                let end = loop {
                    let (event, key_span) = self.next()?;
                    if let Event::MappingEnd = event {
                        break key_span;
                    }
                    let key_node = self.node(event, key_span)?;
                    let (event, s) = self.next()?;
                    let value = self.node(event, s)?;
                    let key = match &key_node.value {
                        Value::Str(k) => k.clone(),
                        Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Null => {
                            key_text(self.text, key_node.span)
                        }
                        _ => {
                            self.problems.push(
                                Diagnostic::at(key_node.span, "mapping keys must be plain words")
                                    .label("a list or mapping used as a key"),
                            );
                            continue;
                        }
                    };
                    if key == "<<" {
                        // YAML merge key: `<<: *defaults` copies entries not given here.
                        match value.value {
                            Value::Map(m) => merged.extend(m),
                            Value::Seq(maps) => {
                                for m in maps {
                                    if let Value::Map(m) = m.value {
                                        merged.extend(m);
                                    }
                                }
                            }
                            _ => self.problems.push(
                                Diagnostic::at(value.span, "`<<` merges a mapping into this one")
                                    .label("not a mapping"),
                            ),
                        }
                        continue;
                    }
                    if let Some(first) = entries.iter().find(|e| e.key == key) {
                        self.problems.push(
                            Diagnostic::at(key_node.span, format!("duplicate key `{key}`"))
                                .label("given again here")
                                .related(first.key_span, "first given here"),
                        );
                        continue;
                    }
                    entries.push(Entry {
                        key,
                        key_span: key_node.span,
                        value,
                    });
                };
                self.depth -= 1;
                for m in merged {
                    if !entries.iter().any(|e| e.key == m.key) {
                        entries.push(m);
                    }
                }
                let node = Node {
                    value: Value::Map(entries),
                    span: Span {
                        start: span.start,
                        end: end.end.max(span.end),
                    },
                };
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::Alias(id) => {
                let Some((anchored, size)) = self.anchors.get(&id) else {
                    return Err(Box::new(Diagnostic::at(span, "alias to an unknown anchor")));
                };
                // Checked before the copy is made, so a bomb never allocates.
                self.alias_bytes = self.alias_bytes.saturating_add(size.bytes);
                if self.alias_bytes > MAX_ALIAS_EXPANSION {
                    return Err(Box::new(
                        Diagnostic::at(
                            span,
                            format!(
                                "aliases expand this file by more than {} MiB",
                                MAX_ALIAS_EXPANSION >> 20
                            ),
                        )
                        .label("this alias crosses the limit")
                        .help(
                            "each alias copies its anchor's value, and aliases to anchors that \
                             hold aliases multiply; reuse fewer or smaller anchors",
                        ),
                    ));
                }
                if self.depth + size.height > MAX_DEPTH {
                    return Err(Box::new(
                        Diagnostic::at(
                            span,
                            format!("nesting deeper than {MAX_DEPTH} levels through this alias"),
                        )
                        .label("this alias"),
                    ));
                }
                Ok(Node {
                    value: anchored.value.clone(),
                    span,
                })
            }
            other => Err(Box::new(Diagnostic::at(
                span,
                format!("invalid YAML: unexpected {other:?}"),
            ))),
        }
    }

    fn enter(&mut self, span: Span) -> Result<(), Box<Diagnostic>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Box::new(Diagnostic::at(
                span,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            )));
        }
        Ok(())
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), measure(node)));
        }
    }

    /// `${VAR}`, `${VAR:-default}` and `$$` (a literal `$`).
    fn interpolate(&mut self, text: &str, span: Span) -> String {
        if !text.contains('$') {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(close) = body.find('}') else {
                    self.problems.push(
                        Diagnostic::at(span, "unterminated `${` in value")
                            .help("write `${NAME}` or `${NAME:-default}`; `$$` is a literal `$`"),
                    );
                    out.push_str(&rest[i..]);
                    return out;
                };
                let inner = &body[..close];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                let valid = !name.is_empty()
                    && name.chars().enumerate().all(|(j, c)| {
                        c == '_' || c.is_ascii_alphabetic() || (j > 0 && c.is_ascii_digit())
                    });
                if !valid {
                    self.problems.push(
                        Diagnostic::at(span, format!("`${{{inner}}}` is not a variable reference"))
                            .help("names are letters, digits and `_`: `${NAME}` or `${NAME:-default}`"),
                    );
                } else {
                    match ((self.env)(name), default) {
                        (Some(v), _) => out.push_str(&v),
                        (None, Some(d)) => out.push_str(d),
                        (None, None) => self.problems.push(
                            Diagnostic::at(
                                span,
                                format!("environment variable `{name}` is not set"),
                            )
                            .label("used here")
                            .help(format!("set it, or give a default: `${{{name}:-value}}`")),
                        ),
                    }
                }
                rest = &body[close + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }
}

fn key_text(text: &str, span: Span) -> String {
    text.get(span.start..span.end)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// YAML 1.2 core schema for plain scalars.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = |t: &str, radix: u32| !t.is_empty() && t.chars().all(|c| c.is_digit(radix));
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits(unsigned, 10) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Int(i);
        }
        if let Ok(x) = s.parse::<f64>() {
            return Value::Float(x);
        }
    }
    if let Some(h) = s.strip_prefix("0x")
        && digits(h, 16)
        && let Ok(i) = i64::from_str_radix(h, 16)
    {
        return Value::Int(i);
    }
    if let Some(o) = s.strip_prefix("0o")
        && digits(o, 8)
        && let Ok(i) = i64::from_str_radix(o, 8)
    {
        return Value::Int(i);
    }
    let looks_float = {
        let (mantissa, exp) = match unsigned.find(['e', 'E']) {
            Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
            None => (unsigned, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (mantissa, None),
        };
        let mantissa_ok = match frac {
            Some(f) => {
                (int.is_empty() || digits(int, 10))
                    && (f.is_empty() || digits(f, 10))
                    && !(int.is_empty() && f.is_empty())
            }
            None => digits(int, 10),
        };
        let exp_ok = exp.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
        mantissa_ok && exp_ok && (frac.is_some() || exp.is_some())
    };
    if looks_float && let Ok(x) = s.parse::<f64>() {
        return Value::Float(x);
    }
    Value::Str(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "FPS").then(|| "25".to_owned())
    }

    fn parse_ok(text: &str) -> Node {
        let (node, problems) = parse(text, &env).expect("parses");
        assert!(problems.is_empty(), "{problems:?}");
        node
    }

    #[test]
    fn types_follow_the_core_schema() {
        let n = parse_ok("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: hello\ng: 0x10\nh: 1e3\ni: -2\n");
        assert_eq!(n.get("a").map(|n| &n.value), Some(&Value::Int(1)));
        assert_eq!(n.get("b").map(|n| &n.value), Some(&Value::Float(1.5)));
        assert_eq!(n.get("c").map(|n| &n.value), Some(&Value::Bool(true)));
        assert_eq!(n.get("d").map(|n| &n.value), Some(&Value::Null));
        assert_eq!(n.get("e").map(|n| &n.value), Some(&Value::Str("1".into())));
        assert_eq!(
            n.get("f").map(|n| &n.value),
            Some(&Value::Str("hello".into()))
        );
        assert_eq!(n.get("g").map(|n| &n.value), Some(&Value::Int(16)));
        assert_eq!(n.get("h").map(|n| &n.value), Some(&Value::Float(1000.0)));
        assert_eq!(n.get("i").map(|n| &n.value), Some(&Value::Int(-2)));
    }

    #[test]
    fn spans_point_at_keys_and_values() {
        let text = "top:\n  inner: value\n";
        let n = parse_ok(text);
        let inner = n.get("top").and_then(|t| t.entry("inner")).expect("inner");
        assert_eq!(&text[inner.key_span.start..inner.key_span.end], "inner");
        assert_eq!(&text[inner.value.span.start..inner.value.span.end], "value");
    }

    #[test]
    fn interpolation_types_the_result_and_reports_unset_variables() {
        let n = parse_ok("fps: ${FPS}\nw: ${WIDTH:-640}\nname: \"${FPS}\"\ncost: $$5\n");
        assert_eq!(n.get("fps").map(|n| &n.value), Some(&Value::Int(25)));
        assert_eq!(n.get("w").map(|n| &n.value), Some(&Value::Int(640)));
        assert_eq!(
            n.get("name").map(|n| &n.value),
            Some(&Value::Str("25".into()))
        );
        assert_eq!(
            n.get("cost").map(|n| &n.value),
            Some(&Value::Str("$5".into()))
        );
        let (_, problems) = parse("fps: ${NOPE}\n", &env).expect("parses");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("NOPE"), "{problems:?}");
    }

    #[test]
    fn duplicate_keys_anchors_and_merges() {
        let (_, problems) = parse("a: 1\na: 2\n", &env).expect("parses");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let n = parse_ok("base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\n");
        let u = n.get("use").expect("use");
        assert_eq!(u.get("x").map(|n| &n.value), Some(&Value::Int(1)));
        assert_eq!(u.get("y").map(|n| &n.value), Some(&Value::Int(3)));
    }

    /// Nine levels of ten aliases each: 10^9 leaves if expanded ("billion laughs").
    fn billion_laughs() -> String {
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..=9 {
            let prev = format!("*a{}", i - 1);
            let items = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        text
    }

    #[test]
    fn an_alias_bomb_is_refused_at_the_alias_that_crosses_the_limit() {
        let text = billion_laughs();
        let err = parse(&text, &env).expect_err("alias bomb");
        assert!(
            err.message.contains("aliases expand this file"),
            "{}",
            err.message
        );
        let span = err.span.expect("located");
        assert!(text[span.start..span.end].starts_with("*a"), "{span:?}");
    }

    #[test]
    fn aliases_that_nest_past_the_depth_limit_are_refused() {
        // Each anchor holds the previous one a level deeper: depth grows by one per line.
        let mut text = String::from("a0: &a0 [x]\n");
        for i in 1..=70 {
            text.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        let err = parse(&text, &env).expect_err("too deep");
        assert!(
            err.message.contains("nesting deeper than"),
            "{}",
            err.message
        );
    }

    #[test]
    fn modest_reuse_of_anchors_is_fine() {
        let mut text = String::from("defaults: &d {fps: 10, width: 640, height: 480}\ncams:\n");
        for i in 0..200 {
            text.push_str(&format!("  - {{<<: *d, id: cam{i}}}\n"));
        }
        let n = parse_ok(&text);
        assert_eq!(n.get("cams").map(|c| c.items().len()), Some(200));
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = parse("a: [1, 2\nb: 3\n", &env).expect_err("bad yaml");
        assert!(err.span.is_some());
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
    }
}
