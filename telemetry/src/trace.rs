//! One trace per frame across processes: the W3C trace context travels in NATS headers
//! (`traceparent`, `tracestate`), and the spans every process opens for a frame are named here.
//!
//! Spans are plain `tracing` spans with the target [`TARGET`]; the binary decides whether an
//! OpenTelemetry layer turns them into OTLP spans. Without one they are disabled and cost a
//! callsite check, and [`inject`] writes nothing.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use panoptes_contracts::headers;

/// The `tracing` target of every span that belongs to a frame's trace; the binary's
/// OpenTelemetry layer exports exactly these.
pub const TARGET: &str = "panoptes::trace";

struct HeaderInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes `span`'s trace context into `headers` with the globally installed propagator.
/// Returns whether anything was written (nothing when tracing is off or the span is disabled).
pub fn inject(span: &Span, headers: &mut async_nats::HeaderMap) -> bool {
    if span.is_disabled() {
        return false;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return false;
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers));
    });
    headers.get(headers::TRACEPARENT).is_some()
}

/// Headers carrying `span`'s trace context, or `None` when there is nothing to carry.
pub fn headers_for(span: &Span) -> Option<async_nats::HeaderMap> {
    let mut map = async_nats::HeaderMap::new();
    inject(span, &mut map).then_some(map)
}

/// Makes the trace context in `headers` (if any) the parent of `span`, so the span continues
/// the trace of whoever published the message.
pub fn continue_from(span: &Span, headers: Option<&async_nats::HeaderMap>) {
    let Some(headers) = headers else { return };
    if span.is_disabled() || headers.get(headers::TRACEPARENT).is_none() {
        return;
    }
    let cx =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    if cx.span().span_context().is_valid() {
        // Fails only when the span was already started, which a fresh span is not.
        let _ = span.set_parent(cx);
    }
}

/// The span of one frame inside a worker, from intake to publication: the parent of its stage
/// spans. `seq` is recorded when the frame is decoded.
pub fn frame_span(camera: &str, input: &str) -> Span {
    tracing::info_span!(
        target: "panoptes::trace",
        "frame",
        camera = %camera,
        seq = tracing::field::Empty,
        input = %input,
        outcome = tracing::field::Empty,
    )
}

/// One stage's work on one item, a child of the item's frame span.
pub fn stage_span(parent: &Span, stage: &str, camera: &str, seq: u64) -> Span {
    tracing::info_span!(
        target: "panoptes::trace",
        parent: parent,
        "stage",
        stage = %stage,
        camera = %camera,
        seq = seq,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// Marks `span` (opened by [`stage_span`] or [`frame_span`]) as failed with `message`.
pub fn fail(span: &Span, message: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_tracer_nothing_is_injected_and_nothing_breaks() {
        let span = frame_span("cam", "frames");
        let mut map = async_nats::HeaderMap::new();
        assert!(!inject(&span, &mut map));
        assert!(map.get(headers::TRACEPARENT).is_none());
        assert!(headers_for(&span).is_none());
        map.insert(
            headers::TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        continue_from(&span, Some(&map));
        continue_from(&span, None);
    }
}
