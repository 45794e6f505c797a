//! Each camera: a unique ID that is a NATS token, and a source whose URL, file or test-pattern
//! colour can be used.

use std::collections::HashMap;

use super::{Checker, str_at};
use crate::diagnostic::Diagnostic;
use crate::yaml::{Node, Span};

impl Checker<'_> {
    pub(super) fn cameras(&mut self, cameras: Option<&Node>) {
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
}
