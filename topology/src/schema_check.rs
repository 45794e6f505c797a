//! Structural validation: walks the JSON Schema generated from the config types over the
//! spanned tree and reports every mismatch at its place. A general JSON Schema validator could
//! say "not valid under any of the schemas in oneOf"; this walker knows the two union shapes
//! serde produces (tagged by `kind`, keyed by variant) and reports against the branch the user
//! meant, with did-you-mean suggestions for keys and values.

use serde_json::{Map, Value as J};

use crate::diagnostic::Diagnostic;
use crate::yaml::{Node, PathSeg, Span, Value, display_path};

pub fn check(schema: &J, root: &Node) -> Vec<Diagnostic> {
    let mut walker = Walker {
        root: schema,
        out: Vec::new(),
    };
    let anchor = Span {
        start: root.span.start,
        end: root.span.start,
    };
    walker.node(schema, root, &mut Vec::new(), anchor);
    walker.out
}

struct Walker<'s> {
    root: &'s J,
    out: Vec<Diagnostic>,
}

/// Suggests the closest of `candidates` to `word`, if any is close enough to be a typo.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn one_of_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<'s> Walker<'s> {
    fn resolve(&self, schema: &'s J) -> &'s J {
        let mut s = schema;
        for _ in 0..16 {
            let Some(r) = s.get("$ref").and_then(J::as_str) else {
                return s;
            };
            let Some(name) = r.strip_prefix("#/$defs/") else {
                return s;
            };
            match self.root.get("$defs").and_then(|d| d.get(name)) {
                Some(def) => s = def,
                None => return s,
            }
        }
        s
    }

    /// `anchor` is where to point when something is missing from `node` (its key, usually).
    fn node(&mut self, schema: &'s J, node: &Node, path: &mut Vec<PathSeg>, anchor: Span) {
        let schema = self.resolve(schema);
        match schema {
            J::Bool(true) => return,
            J::Bool(false) => {
                self.out.push(Diagnostic::at(
                    node.span,
                    format!("{} takes no value here", display_path(path)),
                ));
                return;
            }
            _ => {}
        }
        if let Some(branches) = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(J::as_array)
        {
            self.union(branches, node, path, anchor);
            return;
        }
        if let Some(all) = schema.get("allOf").and_then(J::as_array) {
            for s in all {
                self.node(s, node, path, anchor);
            }
        }
        if !self.type_ok(schema, node, path) {
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(J::as_array) {
            self.enumeration(allowed, node, path);
        }
        if let Some(c) = schema.get("const") {
            self.enumeration(std::slice::from_ref(c), node, path);
        }
        self.range(schema, node, path);
        match &node.value {
            Value::Map(_) => self.object(schema, node, path, anchor),
            Value::Seq(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        path.push(PathSeg::Index(i));
                        let a = Span {
                            start: item.span.start,
                            end: item.span.start,
                        };
                        self.node(item_schema, item, path, a);
                        path.pop();
                    }
                }
            }
            _ => {}
        }
    }

    fn types(&self, schema: &'s J) -> Vec<&'s str> {
        match schema.get("type") {
            Some(J::String(t)) => vec![t.as_str()],
            Some(J::Array(ts)) => ts.iter().filter_map(J::as_str).collect(),
            _ => Vec::new(),
        }
    }

    fn type_ok(&mut self, schema: &'s J, node: &Node, path: &[PathSeg]) -> bool {
        let types = self.types(schema);
        if types.is_empty() {
            return true;
        }
        let ok = types.iter().any(|t| match (*t, &node.value) {
            ("null", Value::Null)
            | ("boolean", Value::Bool(_))
            | ("integer", Value::Int(_))
            | ("number", Value::Int(_) | Value::Float(_))
            | ("string", Value::Str(_))
            | ("array", Value::Seq(_))
            | ("object", Value::Map(_)) => true,
            // `fps: 10.0` is an integer to anyone reading it.
            ("integer", Value::Float(x)) => x.fract() == 0.0 && x.is_finite(),
            _ => false,
        });
        if let (true, Value::Float(x)) = (ok, &node.value)
            && !x.is_finite()
        {
            self.out.push(
                Diagnostic::at(
                    node.span,
                    format!("{} must be a finite number", display_path(path)),
                )
                .label("not finite"),
            );
            return false;
        }
        if !ok {
            let want: Vec<&str> = types
                .iter()
                .filter(|t| **t != "null")
                .map(|t| match *t {
                    "boolean" => "a boolean (true or false)",
                    "integer" => "an integer",
                    "number" => "a number",
                    "string" => "a string",
                    "array" => "a list",
                    "object" => "a mapping",
                    other => other,
                })
                .collect();
            let mut d = Diagnostic::at(
                node.span,
                format!(
                    "{} must be {}, found {}{}",
                    display_path(path),
                    want.join(" or "),
                    node.value.kind(),
                    match &node.value {
                        Value::Seq(_) | Value::Map(_) => String::new(),
                        v => format!(" ({v})"),
                    }
                ),
            )
            .label(format!("{} here", node.value.kind()));
            if types.contains(&"string")
                && matches!(node.value, Value::Int(_) | Value::Float(_) | Value::Bool(_))
            {
                d = d.help("quote it to make it a string");
            }
            self.out.push(d);
        }
        ok
    }

    fn enumeration(&mut self, allowed: &[J], node: &Node, path: &[PathSeg]) {
        let json = node.to_json();
        if allowed.contains(&json) {
            return;
        }
        let names: Vec<String> = allowed
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect();
        let mut d = Diagnostic::at(
            node.span,
            format!(
                "{} is {}, which is not one of {}",
                display_path(path),
                node.value,
                one_of_list(&names)
            ),
        )
        .label("unknown value");
        if let Some(s) = node.as_str()
            && let Some(best) = did_you_mean(s, names.iter().map(String::as_str))
        {
            d = d.help(format!("did you mean `{best}`?"));
        }
        self.out.push(d);
    }

    fn range(&mut self, schema: &J, node: &Node, path: &[PathSeg]) {
        let x = match node.value {
            Value::Int(i) => i as f64,
            Value::Float(x) => x,
            _ => return,
        };
        let bound = |k: &str| schema.get(k).and_then(J::as_f64);
        let fmt = |b: f64| {
            if b.fract() == 0.0 {
                format!("{}", b as i64)
            } else {
                format!("{b}")
            }
        };
        let problem = if let Some(problem) = self.int_format(schema, &node.value) {
            Some(problem)
        } else if let Some(min) = bound("minimum").filter(|m| x < *m) {
            Some(format!("must be at least {}", fmt(min)))
        } else if let Some(max) = bound("maximum").filter(|m| x > *m) {
            Some(format!("must be at most {}", fmt(max)))
        } else if let Some(min) = bound("exclusiveMinimum").filter(|m| x <= *m) {
            Some(format!("must be greater than {}", fmt(min)))
        } else {
            bound("exclusiveMaximum")
                .filter(|m| x >= *m)
                .map(|max| format!("must be less than {}", fmt(max)))
        };
        if let Some(p) = problem {
            self.out.push(
                Diagnostic::at(
                    node.span,
                    format!("{} {p}, found {}", display_path(path), node.value),
                )
                .label("out of range"),
            );
        }
    }

    /// An integer outside the range of the field's Rust type (the schema's `format`, e.g.
    /// `uint32`), which `minimum`/`maximum` alone do not say. A number past `i64` cannot be held
    /// exactly at all, so 64-bit fields stop at `i64::MAX` here.
    fn int_format(&self, schema: &J, value: &Value) -> Option<String> {
        if !self.types(schema).contains(&"integer") {
            return None;
        }
        let (lo, hi): (i128, i128) = match schema.get("format").and_then(J::as_str)? {
            "uint8" => (0, u8::MAX.into()),
            "uint16" => (0, u16::MAX.into()),
            "uint32" => (0, u32::MAX.into()),
            "uint64" | "uint" => (0, i64::MAX.into()),
            "int8" => (i8::MIN.into(), i8::MAX.into()),
            "int16" => (i16::MIN.into(), i16::MAX.into()),
            "int32" => (i32::MIN.into(), i32::MAX.into()),
            "int64" | "int" => (i64::MIN.into(), i64::MAX.into()),
            _ => return None,
        };
        let (below, above) = match *value {
            Value::Int(i) => (i128::from(i) < lo, i128::from(i) > hi),
            // 2^63 is exact in f64; an integral float at or past it is beyond every bound here.
            Value::Float(x) => (
                x < lo as f64 || x < -9_223_372_036_854_775_808.0,
                x > hi as f64 || x >= 9_223_372_036_854_775_808.0,
            ),
            _ => return None,
        };
        if below {
            Some(format!("must be at least {lo}"))
        } else if above {
            Some(format!("must be at most {hi}"))
        } else {
            None
        }
    }

    fn object(&mut self, schema: &'s J, node: &Node, path: &mut Vec<PathSeg>, anchor: Span) {
        static EMPTY: std::sync::OnceLock<Map<String, J>> = std::sync::OnceLock::new();
        let props = schema
            .get("properties")
            .and_then(J::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new));
        let additional = schema.get("additionalProperties");
        for entry in node.entries() {
            path.push(PathSeg::Key(entry.key.clone()));
            match (props.get(&entry.key), additional) {
                (Some(s), _) => self.node(s, &entry.value, path, entry.key_span),
                (None, Some(J::Bool(false))) => {
                    path.pop();
                    let mut d = Diagnostic::at(
                        entry.key_span,
                        format!("unknown key `{}` in {}", entry.key, display_path(path)),
                    )
                    .label("unknown key");
                    let keys: Vec<String> = props.keys().cloned().collect();
                    d = match did_you_mean(&entry.key, keys.iter().map(String::as_str)) {
                        Some(best) => d.help(format!("did you mean `{best}`?")),
                        None => d.help(format!("expected one of {}", one_of_list(&keys))),
                    };
                    self.out.push(d);
                    continue;
                }
                (None, Some(s)) => self.node(s, &entry.value, path, entry.key_span),
                (None, None) => {}
            }
            path.pop();
        }
        if let Some(required) = schema.get("required").and_then(J::as_array) {
            for r in required.iter().filter_map(J::as_str) {
                if node.get(r).is_none() {
                    let span = if anchor.start == anchor.end && anchor.start == node.span.start {
                        Span {
                            start: node.span.start,
                            end: node.span.start + 1,
                        }
                    } else {
                        anchor
                    };
                    self.out.push(
                        Diagnostic::at(span, format!("{} is missing `{r}`", display_path(path)))
                            .label(format!("`{r}` is required here")),
                    );
                }
            }
        }
    }

    /// The property a branch is selected by, and its value: `kind: model` for internally
    /// tagged enums, `rtsp: {...}` (the single required key) for externally tagged ones.
    fn discriminator(&self, branch: &'s J) -> Option<(&'s str, Option<String>)> {
        let branch = self.resolve(branch);
        let props = branch.get("properties")?.as_object()?;
        for (k, p) in props {
            let p = self.resolve(p);
            if let Some(c) = p.get("const").and_then(J::as_str) {
                return Some((k.as_str(), Some(c.to_owned())));
            }
            if let Some([J::String(c)]) = p.get("enum").and_then(J::as_array).map(Vec::as_slice) {
                return Some((k.as_str(), Some(c.clone())));
            }
        }
        let required = branch.get("required")?.as_array()?;
        if required.len() == 1 && props.len() == 1 {
            return required[0].as_str().map(|k| (k, None));
        }
        None
    }

    fn union(&mut self, branches: &'s [J], node: &Node, path: &mut Vec<PathSeg>, anchor: Span) {
        // A branch that accepts the node as it is ends the search.
        let mut attempts = Vec::with_capacity(branches.len());
        for b in branches {
            let mut w = Walker {
                root: self.root,
                out: Vec::new(),
            };
            w.node(b, node, path, anchor);
            if w.out.is_empty() {
                return;
            }
            attempts.push(w.out);
        }
        // Unit enums with documented variants: a list of consts.
        let consts: Vec<String> = branches
            .iter()
            .filter_map(|b| {
                self.resolve(b)
                    .get("const")
                    .and_then(J::as_str)
                    .map(str::to_owned)
            })
            .collect();
        if consts.len() == branches.len() {
            let values: Vec<J> = consts.iter().cloned().map(J::String).collect();
            if node.as_str().is_none() {
                self.out.push(
                    Diagnostic::at(
                        node.span,
                        format!(
                            "{} must be one of {}, found {}",
                            display_path(path),
                            one_of_list(&consts),
                            node.value.kind()
                        ),
                    )
                    .label(format!("{} here", node.value.kind())),
                );
            } else {
                self.enumeration(&values, node, path);
            }
            return;
        }
        // Option<T>: null was refused above, so the value is for T.
        let non_null: Vec<usize> = branches
            .iter()
            .enumerate()
            .filter(|(_, b)| self.types(self.resolve(b)) != ["null"])
            .map(|(i, _)| i)
            .collect();
        if non_null.len() == 1 {
            self.out.append(&mut attempts[non_null[0]]);
            return;
        }
        let discs: Vec<Option<(&str, Option<String>)>> =
            branches.iter().map(|b| self.discriminator(b)).collect();
        if discs.iter().all(Option::is_some) && !discs.is_empty() {
            let discs: Vec<(&str, Option<String>)> = discs.into_iter().flatten().collect();
            let what = display_path(path);
            if !matches!(node.value, Value::Map(_)) {
                self.out.push(
                    Diagnostic::at(
                        node.span,
                        format!("{what} must be a mapping, found {}", node.value.kind()),
                    )
                    .label(format!("{} here", node.value.kind())),
                );
                return;
            }
            if let Some(tag) = discs[0].1.as_ref().map(|_| discs[0].0) {
                // Internally tagged: `kind: <variant>`.
                let names: Vec<String> = discs.iter().filter_map(|(_, v)| v.clone()).collect();
                match node.entry(tag) {
                    None => self.out.push(
                        Diagnostic::at(
                            Span {
                                start: node.span.start,
                                end: node.span.start + 1,
                            },
                            format!("{what} is missing `{tag}`"),
                        )
                        .label(format!("`{tag}` is required here"))
                        .help(format!("`{tag}` is one of {}", one_of_list(&names))),
                    ),
                    Some(e) => match e
                        .value
                        .as_str()
                        .and_then(|v| names.iter().position(|n| n == v))
                    {
                        Some(i) => self.out.append(&mut attempts[i]),
                        None => {
                            let mut d = Diagnostic::at(
                                e.value.span,
                                format!(
                                    "unknown {tag} {} in {what}; expected one of {}",
                                    e.value.value,
                                    one_of_list(&names)
                                ),
                            )
                            .label(format!("unknown {tag}"));
                            if let Some(best) = e
                                .value
                                .as_str()
                                .and_then(|v| did_you_mean(v, names.iter().map(String::as_str)))
                            {
                                d = d.help(format!("did you mean `{best}`?"));
                            }
                            self.out.push(d);
                        }
                    },
                }
                return;
            }
            // Externally tagged: exactly one of the variant keys.
            let names: Vec<String> = discs.iter().map(|(k, _)| (*k).to_owned()).collect();
            let present: Vec<usize> = names
                .iter()
                .enumerate()
                .filter(|(_, n)| node.get(n).is_some())
                .map(|(i, _)| i)
                .collect();
            match present.as_slice() {
                [i] => {
                    // Report the chosen variant's problems, but say "one of" for extra keys.
                    let chosen = &names[*i];
                    for e in node.entries().iter().filter(|e| &e.key != chosen) {
                        self.out.push(
                            Diagnostic::at(
                                e.key_span,
                                format!(
                                    "{what} takes exactly one of {}; `{chosen}` is already given",
                                    one_of_list(&names)
                                ),
                            )
                            .label("extra key"),
                        );
                    }
                    let branch = self.resolve(&branches[*i]);
                    if let (Some(entry), Some(s)) = (
                        node.entry(chosen),
                        branch
                            .get("properties")
                            .and_then(|p| p.get(chosen.as_str())),
                    ) {
                        path.push(PathSeg::Key(chosen.clone()));
                        self.node(s, &entry.value, path, entry.key_span);
                        path.pop();
                    }
                }
                [] => {
                    let mut reported = false;
                    for e in node.entries() {
                        let mut d = Diagnostic::at(
                            e.key_span,
                            format!(
                                "unknown key `{}` in {what}; expected one of {}",
                                e.key,
                                one_of_list(&names)
                            ),
                        )
                        .label("unknown key");
                        if let Some(best) = did_you_mean(&e.key, names.iter().map(String::as_str)) {
                            d = d.help(format!("did you mean `{best}`?"));
                        }
                        self.out.push(d);
                        reported = true;
                    }
                    if !reported {
                        self.out.push(
                            Diagnostic::at(
                                anchor_or(node, anchor),
                                format!("{what} needs one of {}", one_of_list(&names)),
                            )
                            .label("empty"),
                        );
                    }
                }
                many => {
                    let given: Vec<String> = many.iter().map(|i| names[*i].clone()).collect();
                    self.out.push(
                        Diagnostic::at(
                            anchor_or(node, anchor),
                            format!(
                                "{what} takes exactly one of {}, but {} are given",
                                one_of_list(&names),
                                one_of_list(&given)
                            ),
                        )
                        .label("more than one"),
                    );
                }
            }
            return;
        }
        // No better idea: the branch with the fewest problems is most likely the intent.
        if let Some(best) = attempts.into_iter().min_by_key(Vec::len) {
            self.out.extend(best);
        }
    }
}

fn anchor_or(node: &Node, anchor: Span) -> Span {
    if anchor.start == anchor.end {
        Span {
            start: node.span.start,
            end: node.span.start + 1,
        }
    } else {
        anchor
    }
}
