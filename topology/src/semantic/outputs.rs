//! The outputs: IDs that are tokens and unique, URLs an output can use, topic templates that
//! name only known placeholders, filters that name cameras as tokens, environment variable
//! names that are names.

use std::collections::HashMap;

use super::{Checker, str_at};
use crate::diagnostic::Diagnostic;
use crate::outputs::TOPIC_PLACEHOLDERS;
use crate::yaml::{Node, Span};

impl Checker<'_> {
    pub(super) fn outputs(&mut self, outputs: Option<&Node>) {
        let Some(outputs) = outputs else { return };
        let mut ids: HashMap<&str, Span> = HashMap::new();
        for out in outputs.items() {
            if let Some((id, span)) = str_at(Some(out), "id")
                && self.token(id, span, "output ID")
            {
                if let Some(first) = ids.get(id) {
                    self.out.push(
                        Diagnostic::at(span, format!("`{id}` names two outputs"))
                            .label("second use")
                            .related(*first, "first used here"),
                    );
                }
                ids.entry(id).or_insert(span);
            }
            match str_at(Some(out), "kind").map(|(k, _)| k) {
                Some("webhook") => self.url(Some(out), "url", &["http", "https"], "webhook URL"),
                Some("mqtt") => {
                    self.url(Some(out), "url", &["mqtt", "mqtts"], "MQTT broker URL");
                    self.topic(out);
                }
                _ => {}
            }
            for key in ["secret_env", "password_env"] {
                if let Some((name, span)) = str_at(Some(out), key)
                    && !env_name(name)
                {
                    self.out.push(
                        Diagnostic::at(
                            span,
                            format!("{name:?} is not an environment variable name"),
                        )
                        .label("letters, digits and `_`, not starting with a digit")
                        .help("name the variable that holds the secret, not the secret itself"),
                    );
                }
            }
            if let Some(cameras) = out.get("filter").and_then(|f| f.get("cameras")) {
                for cam in cameras.items() {
                    if let Some(id) = cam.as_str() {
                        self.token(id, cam.span, "camera ID");
                    }
                }
            }
            self.file_exists(Some(out), "ca", "CA certificate file");
        }
    }

    fn topic(&mut self, out: &Node) {
        let Some((topic, span)) = str_at(Some(out), "topic") else {
            return;
        };
        let mut rest = topic;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                self.out.push(
                    Diagnostic::at(
                        span,
                        format!("topic {topic:?} has a `{{` that is not closed"),
                    )
                    .label("unclosed placeholder"),
                );
                return;
            };
            let name = &after[..close];
            if !TOPIC_PLACEHOLDERS.contains(&name) {
                self.out.push(
                    Diagnostic::at(
                        span,
                        format!("topic {topic:?} uses `{{{name}}}`, which is not a placeholder"),
                    )
                    .label("unknown placeholder")
                    .help(format!(
                        "placeholders: {}",
                        TOPIC_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                    )),
                );
            }
            rest = &after[close + 1..];
        }
        if topic.is_empty() || topic.contains(['+', '#']) {
            self.out.push(
                Diagnostic::at(span, format!("topic {topic:?} cannot be published to"))
                    .label("empty, or with an MQTT wildcard (`+`, `#`)"),
            );
        }
    }
}

fn env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
