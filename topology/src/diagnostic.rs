//! Located problems in a topology file and their rendering as `file:line:column` plus a caret
//! snippet (annotate-snippets, the renderer rustc's style comes from).

use std::fmt;
use std::sync::Arc;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use crate::yaml::Span;

/// The text of a topology file and the name it is shown under.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub origin: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(origin: String, text: String) -> Self {
        Self { origin, text }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, col)
    }
}

/// One problem, optionally pointing at a span of the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<Span>,
    /// Text under the carets.
    pub label: Option<String>,
    /// Another place worth showing, e.g. where a duplicate ID was first used.
    pub related: Option<(Span, String)>,
    /// Hints such as "did you mean `text`?".
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            span: None,
            label: None,
            related: None,
            help: None,
        }
    }

    pub fn at(span: Span, message: impl Into<String>) -> Self {
        Self {
            span: Some(span),
            ..Self::new(message)
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn related(mut self, span: Span, note: impl Into<String>) -> Self {
        self.related = Some((span, note.into()));
        self
    }
}

/// Every problem found in one topology file.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    pub source: Arc<SourceFile>,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(source: Arc<SourceFile>, items: Vec<Diagnostic>) -> Self {
        Self { source, items }
    }

    pub fn single(source: SourceFile, item: Diagnostic) -> Self {
        Self::new(Arc::new(source), vec![item])
    }

    /// `file:line:column: message` lines, one per problem: for logs and tests.
    pub fn short(&self) -> Vec<String> {
        self.items
            .iter()
            .map(|d| match d.span {
                Some(span) => {
                    let (line, col) = self.source.line_col(span.start);
                    format!("{}:{line}:{col}: {}", self.source.origin, d.message)
                }
                None => format!("{}: {}", self.source.origin, d.message),
            })
            .collect()
    }

    /// Renders every problem with its snippet; `color` adds ANSI styles.
    pub fn render(&self, color: bool) -> String {
        let renderer = if color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let text = self.source.text.as_str();
        let mut out = String::new();
        for d in &self.items {
            let title = Level::ERROR.primary_title(d.message.as_str());
            let mut group = match d.span {
                Some(span) => {
                    let range = clamp(text, span);
                    let mut snippet = Snippet::source(text).path(self.source.origin.as_str());
                    let primary = AnnotationKind::Primary.span(range);
                    snippet = snippet.annotation(match &d.label {
                        Some(l) => primary.label(l.as_str()),
                        None => primary,
                    });
                    if let Some((rel, note)) = &d.related {
                        snippet = snippet.annotation(
                            AnnotationKind::Context
                                .span(clamp(text, *rel))
                                .label(note.as_str()),
                        );
                    }
                    title.element(snippet)
                }
                None => Group::with_title(title),
            };
            if let Some(help) = &d.help {
                group = group.element(Level::HELP.message(help.as_str()));
            }
            out.push_str(&renderer.render(&[group]));
            out.push_str("\n\n");
        }
        let n = self.items.len();
        out.push_str(&format!(
            "{}: {n} problem{} found",
            self.source.origin,
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

fn clamp(text: &str, span: Span) -> std::ops::Range<usize> {
    let mut start = span.start.min(text.len());
    let mut end = span.end.clamp(start, text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostics {}
