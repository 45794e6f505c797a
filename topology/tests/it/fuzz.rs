//! Property tests: whatever YAML arrives, the validator answers with diagnostics, never a panic,
//! and every diagnostic it gives points inside the file.

use std::path::Path;

use panoptes_topology::TopologyFile;
use proptest::prelude::*;

/// Keys and values of the topology language, so generated documents get deep into the checks
/// instead of stopping at the first unknown key.
const WORDS: &[&str] = &[
    "namespace",
    "nats",
    "url",
    "auth",
    "token",
    "user",
    "password",
    "tls",
    "delivery",
    "live",
    "durable",
    "partitions",
    "telemetry",
    "sampling",
    "models",
    "file",
    "max_batch",
    "cameras",
    "id",
    "source",
    "test_pattern",
    "rtsp",
    "text",
    "fps",
    "width",
    "stages",
    "kind",
    "operator",
    "model",
    "postprocess",
    "tracker",
    "sink",
    "input",
    "frames",
    "wasm",
    "emits",
    "detections",
    "models",
    "grants",
    "env",
    "dirs",
    "host",
    "guest",
    "/data",
    "watch",
    "postprocessor",
    "db",
    "batching",
    "subject",
    "crops",
    "cam-a",
    "det",
    "${X}",
    "${X:-1}",
    "{camera}",
    "<<",
];

fn env(name: &str) -> Option<String> {
    (name == "X").then(|| "7".to_owned())
}

fn check(text: &str) {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Err(d) = TopologyFile::parse(text, "fuzz.yaml", base, &env) {
        for item in &d.items {
            if let Some(span) = item.span {
                assert!(
                    span.start <= text.len() && span.end <= text.len() + 1,
                    "{item:?} outside the text"
                );
            }
        }
        // Rendering must not panic either (multi-byte text, spans at the very end).
        let _ = d.render(false);
    }
}

fn scalar() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e6f64..1e6).prop_map(serde_json::Value::from),
        prop::sample::select(WORDS).prop_map(serde_json::Value::from),
        "[a-zé#:*. -]{0,12}".prop_map(serde_json::Value::from),
    ]
}

fn value() -> impl Strategy<Value = serde_json::Value> {
    scalar().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            prop::collection::vec((prop::sample::select(WORDS), inner), 0..6).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// Block-style YAML, the way people write topologies.
fn block(v: &serde_json::Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        serde_json::Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                out.push_str(&format!("{pad}{k}:"));
                if v.is_object() && v.as_object().is_some_and(|m| !m.is_empty())
                    || v.as_array().is_some_and(|a| !a.is_empty())
                {
                    out.push('\n');
                    block(v, indent + 2, out);
                } else {
                    out.push_str(&format!(" {v}\n"));
                }
            }
        }
        serde_json::Value::Array(a) if !a.is_empty() => {
            for v in a {
                out.push_str(&format!("{pad}- {v}\n"));
            }
        }
        other => out.push_str(&format!("{pad}{other}\n")),
    }
}

const QUICKSTART: &str = include_str!("../../../topologies/quickstart.yaml");

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_is_answered(text in "\\PC{0,200}") {
        check(&text);
    }

    #[test]
    fn generated_documents_are_answered(v in value()) {
        // Flow style (JSON is YAML) and block style.
        check(&v.to_string());
        let mut text = String::new();
        block(&v, 0, &mut text);
        check(&text);
    }

    #[test]
    fn edited_quickstart_is_answered(edits in prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, "[ :\\-{}\\[\\]#\"'a-z0-9\n]"), 1..8)) {
        let mut text: Vec<char> = QUICKSTART.chars().collect();
        for (at, op, s) in edits {
            let i = at.index(text.len().max(1));
            match op {
                0 if i < text.len() => { text.remove(i); }
                1 => { for (j, c) in s.chars().enumerate() { text.insert((i + j).min(text.len()), c); } }
                _ if i < text.len() => { if let Some(c) = s.chars().next() { text[i] = c; } }
                _ => {}
            }
        }
        let text: String = text.into_iter().collect();
        check(&text);
    }
}
