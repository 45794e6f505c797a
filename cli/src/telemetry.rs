//! Where a process's telemetry goes: OTLP trace export and the Prometheus `/metrics` endpoint,
//! from the topology's `telemetry:` section and the standard `OTEL_*` variables (which win).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use panoptes_pipeline::camera_state::CameraLimits;
use panoptes_topology::{OtlpProtocol, TelemetryConfig};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;

/// The role a process plays, which names it as an OpenTelemetry service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceRole {
    /// `panoptes run`: ingest and worker in one process.
    All,
    Ingest,
    Worker,
    Sink,
    Record,
    View,
    Publish,
}

impl ServiceRole {
    pub fn service_name(self) -> &'static str {
        match self {
            ServiceRole::All => "panoptes",
            ServiceRole::Ingest => "panoptes-ingest",
            ServiceRole::Worker => "panoptes-worker",
            ServiceRole::Sink => "panoptes-sink",
            ServiceRole::Record => "panoptes-record",
            ServiceRole::View => "panoptes-view",
            ServiceRole::Publish => "panoptes-publish",
        }
    }
}

/// How spans leave the process.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceExport {
    /// gRPC: the collector's address; HTTP: the full URL of its traces path.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub sampler: SamplerChoice,
    pub service: String,
}

/// The sampler, as `OTEL_TRACES_SAMPLER` names them.
#[derive(Clone, Debug, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    /// The default: a frame's trace is sampled where it starts (ingest), by trace ID, and
    /// every later process follows that decision.
    ParentBasedRatio(f64),
}

impl SamplerChoice {
    fn sampler(&self) -> Sampler {
        match *self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerChoice::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerChoice::ParentBasedAlwaysOff => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOff))
            }
            SamplerChoice::ParentBasedRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

/// Resolves trace export from the topology's `telemetry` (if any) and the environment; `None`
/// when no endpoint is configured anywhere or `OTEL_SDK_DISABLED`/`OTEL_TRACES_EXPORTER=none`
/// turns it off. `env` reads a variable (injected so tests need not touch the process's).
pub fn trace_export(
    config: Option<&TelemetryConfig>,
    role: ServiceRole,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<TraceExport>> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if let Some(exporter) = var("OTEL_TRACES_EXPORTER") {
        match exporter.as_str() {
            "none" => return Ok(None),
            "otlp" => {}
            other => anyhow::bail!(
                "OTEL_TRACES_EXPORTER={other:?}: panoptes exports traces only over OTLP (`otlp`, or `none` for no export)"
            ),
        }
    }
    let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .as_deref()
    {
        Some("grpc") => OtlpProtocol::Grpc,
        Some("http/protobuf") => OtlpProtocol::Http,
        Some(other) => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use `grpc` or `http/protobuf`"
        ),
        None => config.map(|c| c.otlp_protocol).unwrap_or_default(),
    };
    // The signal-specific variable is the full URL; the general one (and the topology's
    // endpoint) is the collector's base URL, to which OTLP/HTTP appends `/v1/traces`.
    let endpoint = if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        url
    } else if let Some(base) =
        var("OTEL_EXPORTER_OTLP_ENDPOINT").or_else(|| config.and_then(|c| c.otlp_endpoint.clone()))
    {
        match protocol {
            OtlpProtocol::Grpc => base,
            OtlpProtocol::Http => format!("{}/v1/traces", base.trim_end_matches('/')),
        }
    } else {
        return Ok(None);
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        anyhow::bail!("OTLP endpoint {endpoint:?} is not an http:// or https:// URL");
    }
    let ratio = match var("OTEL_TRACES_SAMPLER_ARG") {
        Some(arg) => arg
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .with_context(|| {
                format!("OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio from 0 to 1")
            })?,
        None => config.map_or(0.01, |c| c.sampling),
    };
    let sampler = match var("OTEL_TRACES_SAMPLER").as_deref() {
        None | Some("parentbased_traceidratio") => SamplerChoice::ParentBasedRatio(ratio),
        Some("traceidratio") => SamplerChoice::Ratio(ratio),
        Some("always_on") => SamplerChoice::AlwaysOn,
        Some("always_off") => SamplerChoice::AlwaysOff,
        Some("parentbased_always_on") => SamplerChoice::ParentBasedAlwaysOn,
        Some("parentbased_always_off") => SamplerChoice::ParentBasedAlwaysOff,
        Some(other) => anyhow::bail!(
            "OTEL_TRACES_SAMPLER={other:?} is not supported: use always_on, always_off, traceidratio or their parentbased_ forms"
        ),
    };
    let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| role.service_name().to_owned());
    Ok(Some(TraceExport {
        endpoint,
        protocol,
        sampler,
        service,
    }))
}

/// The `/metrics` address: `--metrics` (or `PANOPTES_METRICS`) wins over the topology's.
pub fn metrics_address(
    flag: Option<&str>,
    config: Option<&TelemetryConfig>,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = flag.or_else(|| config.and_then(|c| c.metrics.as_deref())) else {
        return Ok(None);
    };
    addr.parse()
        .map(Some)
        .with_context(|| format!("metrics address {addr:?} is not ip:port, e.g. 0.0.0.0:9464"))
}

/// Serves `/metrics` on `addr` for everything this process records through `metrics`, with
/// the default idle timeout ([`serve_metrics_with`]). Must run inside the tokio runtime (the
/// listener is a task on it).
pub fn serve_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    serve_metrics_with(addr, CameraLimits::default().idle_ttl)
}

/// Serves `/metrics` on `addr`, and beside it the process's `/healthz` and `/readyz`
/// ([`crate::health`]). Counter and histogram series not updated for `idle` are
/// removed, so a camera that stopped (or a flood of made-up camera IDs) does not keep its
/// series forever: give it the workers' camera idle TTL, so a camera's series go when the
/// worker forgets the camera. A series that comes back starts from 0 (Prometheus' `rate()`
/// reads that as a counter reset). The exporter prunes only while rendering, so a task renders
/// (and discards) the page every quarter of `idle` even when nobody scrapes.
pub fn serve_metrics_with(addr: SocketAddr, idle: Duration) -> anyhow::Result<()> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use metrics_util::MetricKindMask;
    use panoptes_contracts::meter;
    let recorder = PrometheusBuilder::new()
        .idle_timeout(
            MetricKindMask::COUNTER | MetricKindMask::HISTOGRAM,
            Some(idle),
        )
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), meter::SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(meter::BATCH_FRAMES.into()),
                meter::SIZE_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(meter::MODEL_BATCH_ROWS.into()),
                meter::SIZE_BUCKETS,
            )
        })
        .map(PrometheusBuilder::build_recorder)
        .with_context(|| format!("cannot serve /metrics on {addr}"))?;
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .with_context(|| format!("cannot serve /metrics on {addr}"))?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .with_context(|| format!("cannot serve /metrics on {addr}"))?;
    let page = handle.clone();
    let app = crate::health::routes(crate::health::global()).route(
        "/metrics",
        axum::routing::get(move || {
            let page = page.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    page.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = ?e, "the /metrics listener stopped");
        }
    });
    let every = (idle / 4).max(Duration::from_millis(100));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            drop(handle.render());
        }
    });
    tracing::info!(%addr, idle_s = idle.as_secs_f64(), "serving Prometheus metrics on /metrics, health on /healthz and /readyz");
    Ok(())
}

/// A running trace exporter; [`Tracing::shutdown`] flushes the spans still queued.
pub struct Tracing {
    provider: SdkTracerProvider,
}

/// The `tracing` layer that exports frame spans (target `panoptes::trace`) over OTLP, and the
/// provider behind it. Installs the W3C trace-context propagator that NATS headers use. Must
/// run inside the tokio runtime (the gRPC channel is a task on it).
pub fn trace_layer<S>(
    export: &TraceExport,
) -> anyhow::Result<(Box<dyn tracing_subscriber::Layer<S> + Send + Sync>, Tracing)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    let timeout = Duration::from_secs(5);
    // reqwest is built without a default TLS provider (the outputs pick ring explicitly), so
    // its blocking client behind the HTTP exporter needs a process default; an earlier
    // install (same provider) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = match export.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&export.endpoint)
            .with_timeout(timeout)
            .build(),
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(&export.endpoint)
            .with_timeout(timeout)
            .build(),
    }
    .with_context(|| format!("cannot set up OTLP export to {}", export.endpoint))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(export.sampler.sampler())
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(export.service.clone())
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("panoptes"))
        // Busy/idle times, thread and source location on every span: cost without use here.
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_filter(
            Targets::new().with_target(panoptes_telemetry::trace::TARGET, tracing::Level::TRACE),
        );
    Ok((Box::new(layer), Tracing { provider }))
}

impl Tracing {
    /// Exports what is queued and stops; the exporter blocks, so it runs off the async threads.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            eprintln!("panoptes: trace export did not finish: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn topology(endpoint: Option<&str>, protocol: OtlpProtocol, sampling: f64) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: endpoint.map(str::to_owned),
            otlp_protocol: protocol,
            sampling,
            metrics: None,
        }
    }

    #[test]
    fn nothing_configured_means_no_export() {
        let t = TelemetryConfig::default();
        assert_eq!(
            trace_export(Some(&t), ServiceRole::Worker, with_env(&[])).ok(),
            Some(None)
        );
        assert_eq!(
            trace_export(None, ServiceRole::Worker, with_env(&[])).ok(),
            Some(None)
        );
    }

    #[test]
    fn the_topology_configures_export_and_the_environment_wins() {
        let t = topology(Some("http://collector:4317"), OtlpProtocol::Grpc, 0.05);
        let got = trace_export(Some(&t), ServiceRole::Ingest, with_env(&[]))
            .expect("valid")
            .expect("configured");
        assert_eq!(got.endpoint, "http://collector:4317");
        assert_eq!(got.protocol, OtlpProtocol::Grpc);
        assert_eq!(got.sampler, SamplerChoice::ParentBasedRatio(0.05));
        assert_eq!(got.service, "panoptes-ingest");

        let env = with_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
            ("OTEL_SERVICE_NAME", "edge-7"),
        ]);
        let got = trace_export(Some(&t), ServiceRole::Worker, env)
            .expect("valid")
            .expect("configured");
        assert_eq!(got.endpoint, "http://jaeger:4318/v1/traces");
        assert_eq!(got.protocol, OtlpProtocol::Http);
        assert_eq!(got.sampler, SamplerChoice::Ratio(0.5));
        assert_eq!(got.service, "edge-7");

        let env = with_env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom")]);
        let t = topology(None, OtlpProtocol::Http, 1.0);
        let got = trace_export(Some(&t), ServiceRole::All, env)
            .expect("valid")
            .expect("configured");
        assert_eq!(got.endpoint, "http://c:4318/custom");
        assert_eq!(got.service, "panoptes");
    }

    #[test]
    fn export_can_be_turned_off_and_bad_values_are_named() {
        let t = topology(Some("http://collector:4317"), OtlpProtocol::Grpc, 0.05);
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                trace_export(Some(&t), ServiceRole::Worker, with_env(&[off])).ok(),
                Some(None)
            );
        }
        for (bad, named) in [
            (("OTEL_TRACES_SAMPLER_ARG", "2"), "OTEL_TRACES_SAMPLER_ARG"),
            (("OTEL_TRACES_SAMPLER", "sometimes"), "OTEL_TRACES_SAMPLER"),
            (("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"), "http/json"),
            (("OTEL_TRACES_EXPORTER", "zipkin"), "zipkin"),
            (
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
                "collector:4317",
            ),
        ] {
            let err =
                trace_export(Some(&t), ServiceRole::Worker, with_env(&[bad])).expect_err("refused");
            assert!(format!("{err:#}").contains(named), "{err:#}");
        }
    }

    #[test]
    fn the_metrics_flag_wins_over_the_topology() {
        let t = TelemetryConfig {
            metrics: Some("0.0.0.0:9464".into()),
            ..TelemetryConfig::default()
        };
        assert_eq!(
            metrics_address(None, Some(&t)).ok().flatten(),
            Some("0.0.0.0:9464".parse().expect("addr"))
        );
        assert_eq!(
            metrics_address(Some("127.0.0.1:9500"), Some(&t))
                .ok()
                .flatten(),
            Some("127.0.0.1:9500".parse().expect("addr"))
        );
        assert!(metrics_address(Some("localhost"), None).is_err());
        assert_eq!(metrics_address(None, None).ok(), Some(None));
    }
}
