//! Checks the schema cannot express: references between stages, cameras and models, cycles,
//! duplicate IDs, NATS tokens, what each stage consumes and produces, and files that must
//! exist. They read the spanned tree, so they run (and point at lines) even when other parts
//! of the file are malformed.

use std::collections::HashMap;
use std::path::Path;

use panoptes_files::FileError;
use panoptes_pipeline::CameraId;

use crate::config::FRAMES;
use crate::diagnostic::Diagnostic;
use crate::schema_check::did_you_mean;
use crate::yaml::{Node, Span};

/// Stage IDs that would collide with the fixed subjects `<ns>.<stage>.<camera>` shares.
const RESERVED: &[&str] = &[FRAMES, "detections", "events", "control"];

pub fn check(root: &Node, base_dir: &Path) -> Vec<Diagnostic> {
    let mut c = Checker {
        base_dir,
        out: Vec::new(),
    };
    c.namespace(root);
    c.nats(root.get("nats"));
    c.telemetry(root.get("telemetry"));
    c.control(root.get("control"));
    let models = c.models(root.get("models"));
    c.cameras(root.get("cameras"));
    c.stages(root.get("stages"), &models);
    c.out
}

/// The checks [`check`] makes of each camera, for one camera on its own (a camera added at
/// runtime); `root` is the camera's mapping.
pub fn check_camera(root: &Node, base_dir: &Path) -> Vec<Diagnostic> {
    let mut c = Checker {
        base_dir,
        out: Vec::new(),
    };
    c.cameras(Some(&Node {
        span: root.span,
        value: crate::yaml::Value::Seq(vec![root.clone()]),
    }));
    c.out
}

struct Checker<'a> {
    base_dir: &'a Path,
    out: Vec<Diagnostic>,
}

fn str_at<'n>(node: Option<&'n Node>, key: &str) -> Option<(&'n str, Span)> {
    let n = node?.get(key)?;
    Some((n.as_str()?, n.span))
}

/// What flows along an edge.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flow {
    Frames,
    Tensors,
    Detections,
    Nothing,
}

impl Flow {
    fn name(self) -> &'static str {
        match self {
            Flow::Frames => "frames",
            Flow::Tensors => "tensors",
            Flow::Detections => "detections",
            Flow::Nothing => "nothing (it publishes)",
        }
    }
}

struct StageInfo<'n> {
    id: &'n str,
    id_span: Span,
    kind: Option<&'n str>,
    kind_span: Span,
    input: &'n str,
    input_span: Option<Span>,
    /// A model stage run on crops at the boxes of its input.
    crops: bool,
    /// What an operator stage says it produces (`None`: a value the schema refuses), and where
    /// it says so.
    emits: Option<Flow>,
    emits_span: Option<Span>,
}

impl Checker<'_> {
    fn file_exists(&mut self, node: Option<&Node>, key: &str, what: &str) {
        let Some((p, span)) = str_at(node, key) else {
            return;
        };
        let path = Path::new(p);
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        };
        // Files the pipeline reads itself must be regular files (a FIFO would block the read, a
        // device never end it); a video file is GStreamer's to open and may be a pipe.
        let refused = if what == "video file" {
            (!full.exists()).then(|| FileError::NotFound { path: full.clone() })
        } else {
            panoptes_files::check_regular(&full).err()
        };
        match refused {
            None => {}
            Some(FileError::NotFound { .. }) => self.out.push(
                Diagnostic::at(span, format!("{what} `{p}` does not exist"))
                    .label("no such file")
                    .help("relative paths are resolved against the topology file's directory"),
            ),
            Some(e) => self.out.push(
                Diagnostic::at(span, format!("{what} `{p}` {}", e.reason()))
                    .label("not a file that can be read"),
            ),
        }
    }

    fn token(&mut self, value: &str, span: Span, what: &str) -> bool {
        match CameraId::new(value) {
            Ok(_) => true,
            Err(e) => {
                self.out.push(
                    Diagnostic::at(
                        span,
                        format!("{what} {value:?} is not a single NATS token: {}", e.reason),
                    )
                    .label("used as a subject token"),
                );
                false
            }
        }
    }

    fn namespace(&mut self, root: &Node) {
        if let Some((ns, span)) = str_at(Some(root), "namespace") {
            self.token(ns, span, "namespace");
        }
    }

    fn url(&mut self, node: Option<&Node>, key: &str, schemes: &[&str], what: &str) {
        let Some((url, span)) = str_at(node, key) else {
            return;
        };
        let ok = schemes.iter().any(|s| {
            url.strip_prefix(s)
                .and_then(|r| r.strip_prefix("://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
        });
        if !ok {
            let list: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
            self.out.push(
                Diagnostic::at(
                    span,
                    format!("{what} {url:?} must start with {}", list.join(" or ")),
                )
                .label("bad URL"),
            );
        }
    }

    fn nats(&mut self, nats: Option<&Node>) {
        let Some(nats) = nats else { return };
        self.url(Some(nats), "url", &["nats", "tls"], "nats.url");
        if let Some(auth_entry) = nats.entry("auth") {
            let auth = &auth_entry.value;
            let methods: Vec<&str> = ["user", "token", "credentials", "nkey"]
                .into_iter()
                .filter(|k| auth.get(k).is_some())
                .collect();
            if methods.len() > 1 {
                self.out.push(
                    Diagnostic::at(
                        auth_entry.key_span,
                        format!(
                            "nats.auth takes one method, but {} are given",
                            methods.join(", ")
                        ),
                    )
                    .label("several methods")
                    .help("use user + password, token, credentials or nkey"),
                );
            }
            if methods.is_empty() && auth.get("password").is_none() {
                self.out.push(
                    Diagnostic::at(auth_entry.key_span, "nats.auth is empty")
                        .help("use user + password, token, credentials or nkey"),
                );
            }
            match (auth.entry("user"), auth.entry("password")) {
                (Some(u), None) => self.out.push(
                    Diagnostic::at(u.key_span, "nats.auth.user needs a password")
                        .label("no password"),
                ),
                (None, Some(p)) => self.out.push(
                    Diagnostic::at(p.key_span, "nats.auth.password needs a user").label("no user"),
                ),
                _ => {}
            }
            self.file_exists(Some(auth), "credentials", "NATS credentials file");
            self.file_exists(Some(auth), "nkey", "NATS nkey seed file");
        }
        if let Some(tls) = nats.get("tls") {
            for key in ["ca", "cert", "key"] {
                self.file_exists(Some(tls), key, "TLS file");
            }
            match (tls.entry("cert"), tls.entry("key")) {
                (Some(c), None) => self
                    .out
                    .push(Diagnostic::at(c.key_span, "nats.tls.cert needs a key").label("no key")),
                (None, Some(k)) => self
                    .out
                    .push(Diagnostic::at(k.key_span, "nats.tls.key needs a cert").label("no cert")),
                _ => {}
            }
        }
    }

    fn telemetry(&mut self, t: Option<&Node>) {
        let Some(t) = t else { return };
        self.url(
            Some(t),
            "otlp_endpoint",
            &["http", "https"],
            "telemetry.otlp_endpoint",
        );
        if let Some((addr, span)) = str_at(Some(t), "metrics")
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            self.out.push(
                Diagnostic::at(
                    span,
                    format!("telemetry.metrics {addr:?} is not an address like 0.0.0.0:9464"),
                )
                .label("not ip:port"),
            );
        }
    }

    /// Control needs someone to obey: enabled without keys would accept nothing, which is
    /// never what the author meant.
    fn control(&mut self, c: Option<&Node>) {
        let Some(c) = c else { return };
        if let Some(keys) = c.get("keys") {
            for (i, k) in keys.items().iter().enumerate() {
                if let Some(p) = k.as_str() {
                    let full = self.base_dir.join(p);
                    if !full.exists() {
                        self.out.push(
                            Diagnostic::at(k.span, format!("control key `{p}` does not exist"))
                                .label(format!("control.keys[{i}]: no such file"))
                                .help("make a key pair with `panoptes operator keygen --out admin.key` and list admin.key.pub here"),
                        );
                    }
                }
            }
        }
        let enabled = c.get("enabled");
        let on = matches!(
            enabled.map(|n| &n.value),
            Some(crate::yaml::Value::Bool(true))
        );
        let no_keys = c.get("keys").is_none_or(|k| k.items().is_empty());
        if on && no_keys {
            let span = enabled.map_or(c.span, |n| n.span);
            self.out.push(
                Diagnostic::at(span, "control is enabled but lists no keys")
                    .label("no request could be accepted")
                    .help("add the public key files of the people allowed to send control requests under control.keys"),
            );
        }
        for host in c.get("allow_hosts").map(Node::items).unwrap_or_default() {
            if let Some(h) = host.as_str()
                && (h.is_empty() || h.contains(['/', '@', ' ']))
            {
                self.out.push(
                    Diagnostic::at(host.span, format!("{h:?} is not a host name or address"))
                        .label("write the host alone, e.g. cam1.example.net or 10.0.0.5"),
                );
            }
        }
    }

    /// Model names with their declared max batch, for stage references.
    fn models<'n>(&mut self, models: Option<&'n Node>) -> HashMap<&'n str, Option<u64>> {
        let mut out = HashMap::new();
        let Some(models) = models else { return out };
        for e in models.entries() {
            self.token(&e.key, e.key_span, "model name");
            self.file_exists(Some(&e.value), "file", "model file");
            self.file_exists(Some(&e.value), "manifest", "model manifest");
            // Not a mapping: the schema check says so.
            if matches!(e.value.value, crate::yaml::Value::Map(_)) {
                match (e.value.entry("file"), e.value.entry("manifest")) {
                    (Some(_), Some(m)) => self.out.push(
                        Diagnostic::at(
                            m.key_span,
                            format!("model `{}` has both `file` and `manifest`", e.key),
                        )
                        .label("second source")
                        .related(
                            e.value.entry("file").map_or(m.key_span, |f| f.key_span),
                            "`file` given here",
                        )
                        .help("the manifest names the file: keep one of the two"),
                    ),
                    (None, None) => self.out.push(
                        Diagnostic::at(
                            e.key_span,
                            format!("model `{}` needs a `file` or a `manifest`", e.key),
                        )
                        .label("no model file")
                        .help("e.g. `manifest: ../models/ppocr-v4-det.yaml` or `file: model.onnx`"),
                    ),
                    _ => {}
                }
            }
            if let Some((sha, span)) = str_at(Some(&e.value), "sha256")
                && !(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                self.out.push(
                    Diagnostic::at(span, "sha256 must be 64 hexadecimal digits")
                        .label("not a sha256"),
                );
            }
            out.insert(
                e.key.as_str(),
                e.value.get("max_batch").and_then(Node::as_u64),
            );
        }
        out
    }

    fn cameras(&mut self, cameras: Option<&Node>) {
        let Some(cameras) = cameras else { return };
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for cam in cameras.items() {
            if let Some((id, span)) = str_at(Some(cam), "id") {
                if self.token(id, span, "camera ID")
                    && let Some(first) = seen.get(id)
                {
                    self.out.push(
                        Diagnostic::at(span, format!("camera ID `{id}` is used twice"))
                            .label("second use")
                            .related(*first, "first used here"),
                    );
                }
                seen.entry(id).or_insert(span);
            }
            let Some(source) = cam.get("source") else {
                continue;
            };
            self.url(source.get("rtsp"), "url", &["rtsp", "rtsps"], "rtsp.url");
            self.url(source.get("http"), "url", &["http", "https"], "http.url");
            self.file_exists(source.get("file"), "path", "video file");
            if let Some((bg, span)) = str_at(source.get("test_pattern"), "background") {
                let hex = bg.strip_prefix('#').unwrap_or("");
                if !(hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit())) {
                    self.out.push(
                        Diagnostic::at(
                            span,
                            format!("background {bg:?} is not a colour like \"#203040\""),
                        )
                        .label("not #RRGGBB")
                        .help("quote it: `#` starts a comment in YAML"),
                    );
                }
            }
        }
    }

    fn stages(&mut self, stages: Option<&Node>, models: &HashMap<&str, Option<u64>>) {
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
                if let Some((digest, span)) = str_at(Some(stage), "digest") {
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
            _ => {}
        }
    }

    fn unknown_model(&mut self, model: &str, span: Span, models: &HashMap<&str, Option<u64>>) {
        let mut names: Vec<&str> = models.keys().copied().collect();
        names.sort_unstable();
        let mut d =
            Diagnostic::at(span, format!("unknown model `{model}`")).label("not in `models`");
        d = match did_you_mean(model, names.iter().copied()) {
            Some(best) => d.help(format!("did you mean `{best}`?")),
            None if names.is_empty() => d.help("declare it under the top-level `models:`"),
            None => d.help(format!("declared models: {}", names.join(", "))),
        };
        self.out.push(d);
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

    fn edges(&mut self, infos: &[StageInfo<'_>]) {
        // The first stage with an ID wins; a duplicate is reported on its own.
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, s) in infos.iter().enumerate() {
            index.entry(s.id).or_insert(i);
        }
        let mut parent: Vec<Option<usize>> = vec![None; infos.len()];
        let mut known = vec![true; infos.len()];
        for (i, s) in infos.iter().enumerate() {
            if s.input == FRAMES {
                continue;
            }
            match index.get(s.input) {
                Some(&p) if p == i => {
                    known[i] = false;
                    self.out.push(
                        Diagnostic::at(
                            s.input_span.unwrap_or(s.id_span),
                            format!("stage `{}` reads its own output", s.id),
                        )
                        .label("a stage cannot be its own input"),
                    );
                }
                Some(&p) => parent[i] = Some(p),
                None => {
                    known[i] = false;
                    let names: Vec<&str> = std::iter::once(FRAMES)
                        .chain(infos.iter().map(|s| s.id))
                        .collect();
                    let mut d = Diagnostic::at(
                        s.input_span.unwrap_or(s.id_span),
                        format!(
                            "stage `{}` reads from `{}`, which is not a stage",
                            s.id, s.input
                        ),
                    )
                    .label("unknown input");
                    d = match did_you_mean(s.input, names.iter().copied()) {
                        Some(best) => d.help(format!("did you mean `{best}`?")),
                        None => d.help(format!(
                            "inputs are `frames` or a stage ID: {}",
                            names.join(", ")
                        )),
                    };
                    self.out.push(d);
                }
            }
        }
        // Cycles: follow inputs from each stage; reaching it again is a loop no frame enters.
        let mut reported = vec![false; infos.len()];
        for start in 0..infos.len() {
            let mut seen = vec![start];
            let mut at = start;
            while let Some(p) = parent[at] {
                if p == start {
                    if !seen.iter().any(|i| reported[*i]) {
                        for i in &seen {
                            reported[*i] = true;
                        }
                        let names: Vec<&str> = seen.iter().rev().map(|i| infos[*i].id).collect();
                        let s = &infos[start];
                        self.out.push(
                            Diagnostic::at(
                                s.input_span.unwrap_or(s.id_span),
                                format!(
                                    "stages form a cycle: {} → {}",
                                    names.join(" → "),
                                    names[0]
                                ),
                            )
                            .label("this input closes the cycle")
                            .help(
                                "one stage in the cycle must read `frames` or a stage outside it",
                            ),
                        );
                    }
                    break;
                }
                if seen.contains(&p) || seen.len() > infos.len() {
                    break;
                }
                seen.push(p);
                at = p;
            }
        }
        if reported.iter().any(|r| *r) || known.iter().any(|k| !k) {
            return;
        }
        // What each stage produces, in dependency order (parents first, no cycles left).
        let mut produces: Vec<Option<Flow>> = vec![None; infos.len()];
        let mut has_child = vec![false; infos.len()];
        for p in parent.iter().flatten() {
            has_child[*p] = true;
        }
        let mut order = Vec::new();
        let mut done = vec![false; infos.len()];
        for i in 0..infos.len() {
            let mut chain = vec![i];
            let mut at = i;
            while let Some(p) = parent[at] {
                chain.push(p);
                at = p;
            }
            for &c in chain.iter().rev() {
                if !done[c] {
                    done[c] = true;
                    order.push(c);
                }
            }
        }
        for i in order {
            let s = &infos[i];
            let input = match parent[i] {
                None => Flow::Frames,
                Some(p) => match produces[p] {
                    Some(f) => f,
                    None => continue,
                },
            };
            let Some(kind) = s.kind else { continue };
            let (accepts, output): (&[Flow], Option<Flow>) = match kind {
                "operator" => (&[Flow::Frames, Flow::Tensors, Flow::Detections], s.emits),
                "model" if s.crops => (&[Flow::Detections], Some(Flow::Tensors)),
                "model" => (&[Flow::Tensors], Some(Flow::Tensors)),
                "postprocess" => (&[Flow::Tensors], Some(Flow::Detections)),
                "tracker" => (&[Flow::Detections], Some(Flow::Detections)),
                "sink" => (&[Flow::Detections], Some(Flow::Nothing)),
                _ => continue,
            };
            produces[i] = output;
            if !accepts.contains(&input) {
                let want: Vec<&str> = accepts.iter().map(|f| f.name()).collect();
                // An operator's output is what its `emits` says, so the fix may be there.
                let operator = parent[i]
                    .map(|p| &infos[p])
                    .filter(|p| p.kind == Some("operator"))
                    .map(|p| p.id);
                let hint = match (kind, input, operator) {
                    ("model", Flow::Frames, Some(op)) => format!(
                        "`{op}` emits frames: put an operator that makes tensors (e.g. letterbox) between them"
                    ),
                    ("model", Flow::Frames, None) => {
                        "put an operator (e.g. letterbox) before it to make a tensor".to_owned()
                    }
                    ("model", Flow::Detections, Some(op)) => format!(
                        "to run it on the boxes `{op}` found, give it `crops:`; if `{op}` makes tensors, set its `emits: tensors`"
                    ),
                    ("model", Flow::Detections, None) => {
                        "to run it on the boxes found so far, give it `crops:`".to_owned()
                    }
                    ("postprocess", Flow::Frames, _) => {
                        "a model stage must come before it".to_owned()
                    }
                    ("postprocess", Flow::Detections, Some(op)) => {
                        format!("`{op}` emits detections already: read them with a tracker or sink")
                    }
                    ("tracker" | "sink", Flow::Frames | Flow::Tensors, Some(op)) => format!(
                        "put model and postprocess stages after `{op}`, or give it `emits: detections` if it makes them itself"
                    ),
                    (_, Flow::Nothing, _) => {
                        "a sink publishes; nothing can read from it".to_owned()
                    }
                    _ => "check the order of the stages or their `input`".to_owned(),
                };
                self.out.push(
                    Diagnostic::at(
                        s.input_span.unwrap_or(s.kind_span),
                        format!(
                            "stage `{}` ({kind}) takes {}, but its input `{}` gives {}",
                            s.id,
                            want.join(" or "),
                            s.input,
                            input.name()
                        ),
                    )
                    .label("mismatched input")
                    .help(hint),
                );
            }
            if let Some(flow @ (Flow::Tensors | Flow::Frames)) = output
                && !has_child[i]
            {
                let span = match kind {
                    "operator" => s.emits_span.unwrap_or(s.kind_span),
                    _ => s.kind_span,
                };
                let help = match flow {
                    Flow::Frames => {
                        "follow it with an operator that takes frames (e.g. letterbox); every branch must end in detections"
                    }
                    _ => {
                        "end every branch with a postprocess, tracker or sink stage, or an operator with `emits: detections`"
                    }
                };
                self.out.push(
                    Diagnostic::at(
                        span,
                        format!(
                            "stage `{}` ends a branch but produces {}, which nothing publishes",
                            s.id,
                            flow.name()
                        ),
                    )
                    .label("last stage of its branch")
                    .help(help),
                );
            }
        }
    }
}
