//! OTLP export, against a real gRPC collector: spans for connections, EVENT ingest and REQs,
//! metrics pushed, and the trace id in log lines.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::support::{Client, Relay, TempDir, eventually, note, postgres::free_port};

/// What the collector received: span names (with their trace ids) and metric names.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, String)>>>,
    metrics: Arc<Mutex<Vec<String>>>,
}

#[tonic::codegen::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let trace_id: String =
                        span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    spans.push((span.name, trace_id));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::codegen::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut metrics = self.metrics.lock().unwrap();
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                metrics.extend(scope.metrics.into_iter().map(|m| m.name));
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_otlp_collector() {
    let collector = Collector::default();
    let port = free_port();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .add_service(MetricsServiceServer::new(collector.clone()))
        .serve(([127, 0, 0, 1], port).into());
    tokio::spawn(server);
    let endpoint = format!("http://127.0.0.1:{port}");
    let relay = Relay::start_in(
        TempDir::new("otlp"),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("RUST_LOG", "info"),
        ],
    );
    let mut client = Client::connect(&relay.url()).await;
    client.publish_ok(&note(1, "traced")).await;
    client.req("traced", &[json!({"kinds": [1]})]).await;
    client.send(json!(["CLOSE", "traced"])).await;
    drop(client);

    let spans = eventually("spans for a connection, an ingest and a REQ", || async {
        let spans = collector.spans.lock().unwrap().clone();
        let names: Vec<&str> = spans.iter().map(|(name, _)| name.as_str()).collect();
        [
            "connection",
            "ingest",
            "validate",
            "store",
            "publish",
            "req",
            "query",
            "stream",
        ]
        .iter()
        .all(|wanted| names.contains(wanted))
        .then_some(spans)
    })
    .await;
    let trace_of = |name: &str| {
        spans
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.clone())
            .unwrap()
    };
    let trace = trace_of("connection");
    assert_eq!(
        trace_of("ingest"),
        trace,
        "an ingest belongs to its connection's trace"
    );
    assert_eq!(
        trace_of("req"),
        trace,
        "a REQ belongs to its connection's trace"
    );
    assert_eq!(
        trace_of("publish"),
        trace,
        "publishing after commit belongs to the ingest's trace"
    );

    eventually("metrics pushed over OTLP", || async {
        let metrics = collector.metrics.lock().unwrap().clone();
        metrics
            .iter()
            .any(|m| m == "starling.events.accepted")
            .then_some(())
    })
    .await;

    let log = relay.storage.dir.path().join("relay.log");
    eventually("the trace id in the connection's log line", || {
        let (log, trace) = (log.clone(), trace.clone());
        async move {
            let text = std::fs::read_to_string(log).ok()?;
            text.lines()
                .any(|l| l.contains("connection closed") && l.contains(&trace))
                .then_some(())
        }
    })
    .await;
}
