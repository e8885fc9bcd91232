//! Logs and traces through `tracing`: logs to standard error as text or JSON and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans exported over OTLP (gRPC).
//!
//! Spans: `connection` (one per WebSocket, carrying the trace id that its log lines show),
//! `ingest` with `validate` and `store` (and `publish` after commit) for each EVENT, `req`
//! with `query` and `stream` for each REQ.
//!
//! The spans of requests are at DEBUG level: the trace exporter takes every span of the relay
//! down to DEBUG, the logs only what the log level asks for. So a relay that exports no traces
//! and logs at INFO creates no span per request, which keeps the memory of a subscription and
//! the CPU of an event small; what a request logs then belongs to its connection's span
//! ([`or_parent`]). The connection's span is at WARN level, so that it is there whenever one
//! of its warnings is logged, and it always has a trace id: the exported trace's, or without
//! OTLP one made for it ([`trace_id`]).

use std::io::{self, IsTerminal};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::Level;
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::config::{Config, LogFormat};

/// The environment variable that turns OTLP export on (the OpenTelemetry convention).
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Whether OTLP export is configured.
pub fn otlp_enabled() -> bool {
    std::env::var(OTLP_ENDPOINT).is_ok_and(|v| !v.is_empty())
}

/// The installed subscriber; flushes spans when shut down.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber. Call it inside a tokio runtime (the OTLP client
    /// needs one).
    pub fn init(config: &Config) -> anyhow::Result<Self> {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
        let logs = match config.log_format {
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_writer(io::stderr)
                .boxed(),
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_ansi(io::stderr().is_terminal())
                .with_writer(io::stderr)
                .boxed(),
        };
        let tracer = if otlp_enabled() {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()?;
            let resource = Resource::builder().with_service_name("starling").build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        } else {
            None
        };
        let traces = tracer.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("starling"))
                .with_filter(Targets::new().with_target("starling", Level::DEBUG))
        });
        tracing_subscriber::registry()
            .with(logs.with_filter(filter))
            .with(traces)
            .init();
        Ok(Self { tracer })
    }

    /// Exports the spans still buffered.
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer {
            let _ = tracer.shutdown();
        }
    }
}

/// The trace id of a span: its OpenTelemetry trace id when spans are exported, or else one
/// made here of the same form (32 hex digits, random), so that the log lines of a connection
/// can be told from others' and matched without a tracing backend.
pub fn trace_id(span: &tracing::Span) -> String {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let id = context.span().span_context().trace_id();
    if id == opentelemetry::trace::TraceId::INVALID {
        crate::nostr::hex::encode(&crate::tls::random_bytes::<16>())
    } else {
        id.to_string()
    }
}

/// `span`, or `parent` when `span` is off (a request's span exists only when it is traced
/// or logged at DEBUG), so that what is logged inside still carries the connection's fields
/// and trace id.
pub fn or_parent(span: tracing::Span, parent: &tracing::Span) -> tracing::Span {
    if span.is_disabled() {
        parent.clone()
    } else {
        span
    }
}
