//! Each stage on its own: unique, unreserved IDs, and the fields of its kind (an operator's
//! module, digest, models and grants; a model stage's model and batching; a sink's subject).
//! What the stages say about their inputs is gathered for the edge checks.

use std::collections::HashMap;
use std::path::Path;

use super::{Checker, Flow, StageInfo, str_at};
use crate::config::FRAMES;
use crate::diagnostic::Diagnostic;
use crate::yaml::{Node, Span};

/// Stage IDs that would collide with the fixed subjects `<ns>.<stage>.<camera>` shares.
const RESERVED: &[&str] = &[FRAMES, "detections", "events", "analytics", "control"];

impl Checker<'_> {
    pub(super) fn stages(&mut self, stages: Option<&Node>, models: &HashMap<&str, Option<u64>>) {
        let Some(stages) = stages else { return };
        let items = stages.items();
        if items.is_empty() && matches!(stages.value, crate::yaml::Value::Seq(_)) {
            self.out.push(
                Diagnostic::at(stages.span, "no stages: a topology needs at least one")
                    .label("empty"),
            );
            return;
        }
        let mut infos: Vec<StageInfo<'_>> = Vec::new();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for (i, stage) in items.iter().enumerate() {
            let Some((id, id_span)) = str_at(Some(stage), "id") else {
                continue;
            };
            if RESERVED.contains(&id) {
                self.out.push(
                    Diagnostic::at(id_span, format!("stage ID `{id}` is reserved"))
                        .label("reserved")
                        .help(format!(
                            "{} name fixed subjects; pick another ID",
                            RESERVED.join(", ")
                        )),
                );
            } else if self.token(id, id_span, "stage ID")
                && let Some(first) = seen.get(id)
            {
                self.out.push(
                    Diagnostic::at(id_span, format!("stage ID `{id}` is used twice"))
                        .label("second use")
                        .related(*first, "first used here"),
                );
            }
            seen.entry(id).or_insert(id_span);
            let (kind, kind_span) = match str_at(Some(stage), "kind") {
                Some((k, s)) => (Some(k), s),
                None => (None, id_span),
            };
            let (input, input_span) = match str_at(Some(stage), "input") {
                Some((inp, s)) => (inp, Some(s)),
                None if i == 0 => (FRAMES, None),
                None => match infos.last() {
                    Some(prev) => (prev.id, None),
                    None => (FRAMES, None),
                },
            };
            let crops = stage
                .get("crops")
                .is_some_and(|c| !matches!(c.value, crate::yaml::Value::Null));
            let (emits, emits_span) = match stage.get("emits") {
                None => (Some(Flow::Tensors), None),
                Some(n) => {
                    let flow = match n.as_str() {
                        Some("tensors") => Some(Flow::Tensors),
                        Some("frames") => Some(Flow::Frames),
                        Some("detections") => Some(Flow::Detections),
                        _ => None,
                    };
                    (flow, Some(n.span))
                }
            };
            infos.push(StageInfo {
                id,
                id_span,
                kind,
                kind_span,
                input,
                input_span,
                crops,
                emits,
                emits_span,
            });
            self.stage_fields(stage, kind, models);
        }
        // With a duplicated ID the edges are ambiguous; checking them would only echo that.
        if seen.len() == infos.len() {
            self.edges(&infos);
        }
    }

    fn stage_fields(
        &mut self,
        stage: &Node,
        kind: Option<&str>,
        models: &HashMap<&str, Option<u64>>,
    ) {
        match kind {
            Some("operator") => {
                self.file_exists(Some(stage), "wasm", "operator module");
                self.file_exists(Some(stage), "signed_by", "public key file");
                self.digest(stage);
                if let Some(shadow) = stage.get("shadow") {
                    self.file_exists(Some(shadow), "wasm", "candidate module");
                    self.digest(shadow);
                }
                self.operator_models(stage.get("models"), models);
                self.grants(stage.get("grants"));
            }
            Some("model") => {
                let Some((model, span)) = str_at(Some(stage), "model") else {
                    return;
                };
                let Some(max) = models.get(model) else {
                    self.unknown_model(model, span, models);
                    return;
                };
                if let Some((name, span)) = str_at(stage.get("shadow"), "model")
                    && !models.contains_key(name)
                {
                    self.unknown_model(name, span, models);
                }
                if let Some(orientation) = stage.get("crops").and_then(|c| c.get("orientation"))
                    && let Some((name, span)) = str_at(Some(orientation), "model")
                    && !models.contains_key(name)
                {
                    self.unknown_model(name, span, models);
                }
                let batching = stage.get("batching");
                if let (Some(model_max), Some(b)) = (max, batching.and_then(|b| b.get("max_batch")))
                    && let Some(want) = b.as_u64()
                    && want > *model_max
                {
                    self.out.push(
                        Diagnostic::at(
                            b.span,
                            format!(
                                "model `{model}` takes batches of at most {model_max}, not {want}"
                            ),
                        )
                        .label("too large for the model")
                        .help(format!("set max_batch to {model_max} or less")),
                    );
                }
                if let Some(b) = batching
                    && let (Some(_), Some(t)) = (b.get("max_wait_ms"), b.entry("latency_target_ms"))
                {
                    self.out.push(
                        Diagnostic::at(
                            t.key_span,
                            "give max_wait_ms or latency_target_ms, not both",
                        )
                        .label("conflicts with max_wait_ms"),
                    );
                }
            }
            Some("sink") => {
                let Some((subject, span)) = str_at(Some(stage), "subject") else {
                    return;
                };
                self.sink_subject(subject, span);
            }
            Some("tracker") => self.tracker_scores(stage),
            _ => {}
        }
    }

    /// A module's `digest`, when given: `sha256:` and 64 hexadecimal digits.
    fn digest(&mut self, module: &Node) {
        if let Some((digest, span)) = str_at(Some(module), "digest") {
            let ok = digest
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                self.out.push(
                    Diagnostic::at(
                        span,
                        "digest must be `sha256:` followed by 64 hexadecimal digits",
                    )
                    .label("not a digest"),
                );
            }
        }
    }

    /// A tracker's score thresholds in their order: `low_score` ≤ `high_score` ≤
    /// `new_track_score` would be ByteTrack's; only `low_score` above `high_score` breaks it
    /// (no box could be a low-score one). Defaults fill what is not given.
    fn tracker_scores(&mut self, stage: &Node) {
        let score = |key: &str, default: f64| {
            stage
                .entry(key)
                .and_then(|e| e.value.as_f64().map(|v| (v, Some(e.value.span))))
                .unwrap_or((default, None))
        };
        let (low, low_span) = score("low_score", 0.1);
        let (high, high_span) = score("high_score", 0.5);
        if low > high
            && let Some(span) = low_span.or(high_span)
        {
            self.out.push(
                Diagnostic::at(
                    span,
                    format!("low_score {low} is above high_score {high}"),
                )
                .label("score thresholds out of order")
                .help("boxes between low_score and high_score continue tracks; low_score must not exceed high_score"),
            );
        }
    }

    /// An operator's `models`: names declared at the top level, each listed once.
    fn operator_models(&mut self, list: Option<&Node>, models: &HashMap<&str, Option<u64>>) {
        let Some(list) = list else { return };
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for item in list.items() {
            let Some(name) = item.as_str() else { continue };
            if let Some(first) = seen.get(name) {
                self.out.push(
                    Diagnostic::at(item.span, format!("model `{name}` is listed twice"))
                        .label("second listing")
                        .related(*first, "first listed here")
                        .help("list each model once"),
                );
                continue;
            }
            seen.insert(name, item.span);
            if !models.contains_key(name) {
                self.unknown_model(name, item.span, models);
            }
        }
    }

    /// An operator's `grants`: directories that exist, absolute guest paths given once, and
    /// environment variable names a process environment can hold.
    fn grants(&mut self, grants: Option<&Node>) {
        let Some(grants) = grants else { return };
        for e in grants.get("env").map(Node::entries).unwrap_or_default() {
            let problem = if e.key.is_empty() {
                Some("is empty")
            } else if e.key.contains('=') {
                Some("contains `=`")
            } else if e.key.contains('\0') {
                Some("contains a NUL character")
            } else {
                None
            };
            if let Some(problem) = problem {
                self.out.push(
                    Diagnostic::at(
                        e.key_span,
                        format!("environment variable name {:?} {problem}", e.key),
                    )
                    .label("not a variable name")
                    .help("write each variable as `NAME: value`; names cannot be empty or contain `=` or NUL"),
                );
            }
        }
        let mut guests: HashMap<&str, Span> = HashMap::new();
        for dir in grants.get("dirs").map(Node::items).unwrap_or_default() {
            if let Some((host, span)) = str_at(Some(dir), "host") {
                let path = Path::new(host);
                let full = if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    self.base_dir.join(path)
                };
                if !full.exists() {
                    self.out.push(
                        Diagnostic::at(span, format!("granted directory `{host}` does not exist"))
                            .label("no such directory")
                            .help(
                                "relative paths are resolved against the topology file's directory",
                            ),
                    );
                } else if !full.is_dir() {
                    self.out.push(
                        Diagnostic::at(
                            span,
                            format!("granted directory `{host}` is not a directory"),
                        )
                        .label("not a directory")
                        .help("grant the directory that holds the file"),
                    );
                }
            }
            let Some((guest, span)) = str_at(Some(dir), "guest") else {
                continue;
            };
            if !guest.starts_with('/') {
                self.out.push(
                    Diagnostic::at(span, format!("guest path {guest:?} is not absolute"))
                        .label("relative")
                        .help(format!(
                            "the operator opens the directory by this path; start it with `/`, e.g. \"{}\"",
                            match guest.trim_start_matches("./") {
                                g if g.is_empty() || g.contains("..") => "/data".to_owned(),
                                g => format!("/{g}"),
                            }
                        )),
                );
                continue;
            }
            // `/data/` and `/data` name the same directory.
            let key = match guest.trim_end_matches('/') {
                "" => "/",
                k => k,
            };
            if let Some(first) = guests.get(key) {
                self.out.push(
                    Diagnostic::at(span, format!("two directories are granted as `{key}`"))
                        .label("second grant")
                        .related(*first, "first granted here")
                        .help("give each directory its own guest path"),
                );
            } else {
                guests.insert(key, span);
            }
        }
    }

    fn sink_subject(&mut self, subject: &str, span: Span) {
        let mut rest = subject;
        let mut filled = String::new();
        while let Some(open) = rest.find('{') {
            filled.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                self.out
                    .push(Diagnostic::at(span, "unclosed `{` in subject").label("here"));
                return;
            };
            let name = &rest[open + 1..open + close];
            if !["namespace", "camera", "stage"].contains(&name) {
                self.out.push(
                    Diagnostic::at(span, format!("unknown placeholder `{{{name}}}` in subject"))
                        .label("unknown placeholder")
                        .help("placeholders are {namespace}, {camera} and {stage}"),
                );
                return;
            }
            filled.push('x');
            rest = &rest[open + close + 1..];
        }
        filled.push_str(rest);
        if !subject.contains("{camera}") {
            self.out.push(
                Diagnostic::at(span, "a sink subject must contain `{camera}`")
                    .label("no {camera}")
                    .help("results stay partitioned by camera, e.g. \"{namespace}.detections.{camera}\""),
            );
        }
        let bad = filled.split('.').any(|t| {
            t.is_empty()
                || t == "*"
                || t == ">"
                || t.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
        });
        if bad {
            self.out.push(
                Diagnostic::at(
                    span,
                    format!("subject {subject:?} is not a valid NATS subject"),
                )
                .label("empty token, space or wildcard")
                .help("tokens are separated by single dots; no spaces, `*` or `>`"),
            );
        }
    }
}
