//! Traces across processes (feature `otel`): the spans of workflows and steps form one
//! OpenTelemetry trace with their caller's, through the W3C trace context stored in the
//! workflow's `dbos.otelContext` attribute (as DBOS stores it) — each on SQLite and Postgres.
//!
//! Every test of this binary shares one in-memory exporter (the tracer provider and the
//! subscriber are process-wide); each finds its own spans by workflow id.
#![cfg(feature = "otel")]

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use cairn::{Client, EnqueueOptions, Queue, StartOptions, WorkflowState};
use common::{TestDb, count};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData, SpanExporter};
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AppError {
    #[error("flaky: attempt {0}")]
    Flaky(usize),
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

// ---- The exporter --------------------------------------------------------------------------

/// The in-memory exporter, announcing each export so tests wait for spans without polling.
#[derive(Debug)]
struct Announcing {
    spans: InMemorySpanExporter,
    exported: watch::Sender<usize>,
}

impl SpanExporter for Announcing {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.spans.export(batch).await;
        self.exported.send_modify(|count| *count += n);
        result
    }
}

struct Exported {
    spans: InMemorySpanExporter,
    exported: watch::Receiver<usize>,
}

/// Install, once per process, a tracer provider that exports every span as it ends into
/// memory, as the global provider, and a subscriber with Cairn's layer.
static EXPORTED: LazyLock<Exported> = LazyLock::new(|| {
    let spans = InMemorySpanExporter::default();
    let (exported, receiver) = watch::channel(0);
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(Announcing {
            spans: spans.clone(),
            exported,
        })
        .build();
    opentelemetry::global::set_tracer_provider(provider);
    let subscriber = tracing_subscriber::registry().with(cairn::otel::layer());
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    Exported {
        spans,
        exported: receiver,
    }
});

fn install() {
    LazyLock::force(&EXPORTED);
}

/// An attribute of a span, as text: its last value (a recorded field is appended again).
fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .rfind(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// Wait (up to 60 s) until the ended spans hold one that `matches`, and return it.
async fn span_where(what: &str, matches: impl Fn(&SpanData) -> bool) -> SpanData {
    let mut exported = EXPORTED.exported.clone();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            exported.borrow_and_update();
            let spans = EXPORTED.spans.get_finished_spans().expect("spans");
            if let Some(span) = spans.into_iter().find(|span| matches(span)) {
                return span;
            }
            exported.changed().await.expect("the exporter lives");
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no span {what} ended"))
}

/// The `workflow` span of an execution of `workflow_id` (from `origin`, or any).
async fn workflow_span(workflow_id: &str, origin: Option<&str>) -> SpanData {
    span_where(&format!("for workflow {workflow_id}"), |span| {
        span.name == "workflow"
            && attribute(span, "workflow_id").as_deref() == Some(workflow_id)
            && origin.is_none_or(|o| attribute(span, "origin").as_deref() == Some(o))
    })
    .await
}

/// The `step` span of operation `function_id` of `workflow_id`.
async fn step_span(workflow_id: &str, function_id: i64) -> SpanData {
    span_where(
        &format!("for step {function_id} of workflow {workflow_id}"),
        |span| {
            span.name == "step"
                && attribute(span, "workflow_id").as_deref() == Some(workflow_id)
                && attribute(span, "function_id") == Some(function_id.to_string())
        },
    )
    .await
}

/// The OpenTelemetry ids of a `tracing` span.
fn ids(span: &tracing::Span) -> (TraceId, SpanId) {
    let cx = span.context();
    let otel = cx.span();
    let context = otel.span_context();
    assert!(
        context.is_valid(),
        "the caller's span has an OpenTelemetry context"
    );
    (context.trace_id(), context.span_id())
}

/// The trace context stored with a workflow, as DBOS reads it: `attributes["dbos.otelContext"]`.
async fn stored_carrier(client: &Client, workflow_id: &str) -> serde_json::Value {
    let status = client.status(workflow_id).await.expect("status");
    let attributes = status.attributes.expect("attributes");
    attributes["dbos.otelContext"].clone()
}

// ---- Workflows -----------------------------------------------------------------------------

#[cairn::step(max_attempts = 3, interval_ms = 10)]
async fn flaky(key: String) -> Result<usize, AppError> {
    let attempt = count(&key);
    if attempt < 2 {
        Err(AppError::Flaky(attempt))
    } else {
        Ok(attempt)
    }
}

#[cairn::step]
async fn plain(n: i64) -> Result<i64, AppError> {
    Ok(n + 1)
}

#[cairn::workflow]
async fn traced_child(n: i64) -> Result<i64, AppError> {
    plain(n).await
}

#[cairn::workflow]
async fn traced_parent(key: String) -> Result<i64, AppError> {
    let attempts = flaky(key).await?;
    let child = traced_child(10).await?;
    Ok(i64::try_from(attempts).unwrap_or_default() + child)
}

#[cairn::workflow]
async fn traced(n: i64) -> Result<i64, AppError> {
    plain(n).await
}

#[cairn::step]
async fn gate(key: String) -> Result<(), AppError> {
    common::reached(&key);
    common::until_released(&key).await;
    Ok(())
}

#[cairn::workflow]
async fn gated(key: String) -> Result<i64, AppError> {
    gate(key).await?;
    plain(1).await
}

// ---- Tests ---------------------------------------------------------------------------------

both_backends!(
    a_workflow_with_retries_and_a_child_forms_one_tree_of_spans,
    a_workflow_enqueued_in_a_span_runs_in_its_trace_from_the_stored_context,
    a_recovered_workflow_runs_in_its_callers_trace,
    a_carrier_set_by_the_caller_is_kept_and_a_malformed_one_is_ignored,
);

/// The workflow span is the parent of its steps' spans (one per step, however many attempts
/// it took) and of its child workflow's span, whose steps nest under it; all in one trace.
async fn a_workflow_with_retries_and_a_child_forms_one_tree_of_spans(db: &TestDb) {
    install();
    let app = db.launch().await;
    let id = format!("tree-{}", uuid::Uuid::new_v4());
    let caller = tracing::info_span!("request");
    let (trace, request) = ids(&caller);
    let handle = app
        .start_with(StartOptions::id(&id), traced_parent, id.clone())
        .instrument(caller)
        .await
        .expect("start");
    assert_eq!(handle.result().await.expect("result"), 2 + 11);

    let workflow = workflow_span(&id, Some("start")).await;
    assert_eq!(
        workflow.parent_span_id, request,
        "the workflow runs in its caller's trace"
    );
    assert_eq!(workflow.span_context.trace_id(), trace);
    let flaky = step_span(&id, 1).await;
    assert_eq!(flaky.parent_span_id, workflow.span_context.span_id());
    assert_eq!(flaky.span_context.trace_id(), trace);
    assert_eq!(attribute(&flaky, "attempt").as_deref(), Some("2"));
    let retried = EXPORTED.spans.get_finished_spans().expect("spans");
    let steps = retried
        .iter()
        .filter(|s| s.name == "step" && attribute(s, "workflow_id").as_deref() == Some(&id))
        .count();
    assert_eq!(steps, 1, "one span for a step, whatever its attempts");

    let child_id = format!("{id}-2");
    let child = workflow_span(&child_id, Some("child")).await;
    assert_eq!(child.parent_span_id, workflow.span_context.span_id());
    assert_eq!(child.span_context.trace_id(), trace);
    let child_step = step_span(&child_id, 1).await;
    assert_eq!(child_step.parent_span_id, child.span_context.span_id());
    assert_eq!(child_step.span_context.trace_id(), trace);

    // Each carries the trace context it was started in, for another process to follow.
    let parent_carrier = stored_carrier(&app, &id).await;
    assert_eq!(
        parent_carrier["traceparent"],
        json!(format!("00-{trace}-{request}-01"))
    );
    let child_carrier = stored_carrier(&app, &child_id).await;
    assert_eq!(
        child_carrier["traceparent"],
        json!(format!("00-{trace}-{}-01", workflow.span_context.span_id()))
    );
    app.shutdown().await.expect("shutdown");
}

/// A workflow a client enqueues from inside a span is stored with that span's W3C context
/// (beside the caller's own attributes), and the application that dequeues it — with no
/// in-memory link to the caller — parents its span to that context.
async fn a_workflow_enqueued_in_a_span_runs_in_its_trace_from_the_stored_context(db: &TestDb) {
    install();
    let app = db
        .builder("otel-enqueue")
        .queue(Queue::new("traced"))
        .launch()
        .await
        .expect("launch");
    let client = Client::connect(&db.url).await.expect("connect");
    let id = format!("enqueued-{}", uuid::Uuid::new_v4());
    let caller = tracing::info_span!("producer");
    let (trace, producer) = ids(&caller);
    let options = EnqueueOptions::id(&id).with_attributes(json!({"customer": "acme"}));
    let handle = client
        .enqueue_with(options, "traced", traced, 41)
        .instrument(caller)
        .await
        .expect("enqueue");
    assert_eq!(handle.result().await.expect("result"), 42);

    let status = client.status(&id).await.expect("status");
    let attributes = status.attributes.expect("attributes");
    assert_eq!(
        attributes["customer"],
        json!("acme"),
        "the caller's attributes stay"
    );
    let carrier = attributes["dbos.otelContext"]
        .as_object()
        .expect("a carrier object");
    let traceparent = carrier["traceparent"].as_str().expect("a traceparent");
    assert_eq!(traceparent, format!("00-{trace}-{producer}-01"));
    assert!(
        carrier
            .keys()
            .all(|k| k == "traceparent" || k == "tracestate"),
        "only the W3C trace context: {carrier:?}"
    );
    // In the row itself, where DBOS's SDKs and tools read it.
    let row = db
        .query_text(&format!(
            "SELECT CAST(attributes AS TEXT) FROM workflow_status WHERE workflow_uuid = '{id}'"
        ))
        .await
        .expect("the attributes column");
    let row: serde_json::Value = serde_json::from_str(&row).expect("JSON attributes");
    assert_eq!(row["dbos.otelContext"]["traceparent"], json!(traceparent));

    let workflow = workflow_span(&id, Some("queue")).await;
    assert_eq!(workflow.parent_span_id, producer);
    assert_eq!(workflow.span_context.trace_id(), trace);
    assert!(
        workflow.parent_span_is_remote,
        "the parent came from the stored context"
    );
    let step = step_span(&id, 1).await;
    assert_eq!(step.parent_span_id, workflow.span_context.span_id());
    assert_eq!(step.span_context.trace_id(), trace);

    // Enqueued outside any span, a workflow stores no trace context.
    let untraced = client
        .enqueue("traced", traced, 1)
        .await
        .expect("enqueue without a span");
    let untraced_id = untraced.id().to_owned();
    assert_eq!(untraced.result().await.expect("result"), 2);
    let status = client.status(&untraced_id).await.expect("status");
    assert_eq!(status.attributes, None);
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

/// A workflow abandoned mid-run (as by a crash) and recovered by the next launch runs in the
/// trace of the span it was started from: its parent comes from the database.
async fn a_recovered_workflow_runs_in_its_callers_trace(db: &TestDb) {
    install();
    let key = format!("recovered@{}", db.url);
    let app = db
        .builder("cairn-test")
        .shutdown_grace(Duration::from_millis(20))
        .launch()
        .await
        .expect("launch");
    let caller = tracing::info_span!("request");
    let (trace, request) = ids(&caller);
    let id = app
        .start(gated, key.clone())
        .instrument(caller)
        .await
        .expect("start")
        .id()
        .to_owned();
    common::wait_reached(&key).await;
    app.shutdown().await.expect("shutdown");

    let app = db.launch().await;
    common::wait_reached(&key).await;
    common::release(&key);
    let handle = app.retrieve::<i64>(&id).await.expect("retrieve");
    assert_eq!(handle.result().await.expect("result"), 2);
    assert_eq!(
        app.status(&id).await.expect("status").state,
        WorkflowState::Success
    );

    let recovered = workflow_span(&id, Some("recovery")).await;
    assert_eq!(recovered.parent_span_id, request);
    assert_eq!(recovered.span_context.trace_id(), trace);
    let step = step_span(&id, 2).await;
    assert_eq!(step.parent_span_id, recovered.span_context.span_id());
    app.shutdown().await.expect("shutdown");
}

/// A carrier the caller stored under `dbos.otelContext` (a DBOS service's, say) is kept and
/// followed; one that cannot be read is kept too, and the workflow runs under a root span.
async fn a_carrier_set_by_the_caller_is_kept_and_a_malformed_one_is_ignored(db: &TestDb) {
    install();
    let app = db.launch().await;
    let caller = tracing::info_span!("request");
    let (caller_trace, _) = ids(&caller);

    let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let id = format!("dbos-carrier-{}", uuid::Uuid::new_v4());
    let options =
        StartOptions::id(&id).with_attributes(json!({"dbos.otelContext": {"traceparent": remote}}));
    let handle = app
        .start_with(options, traced, 1)
        .instrument(caller.clone())
        .await
        .expect("start");
    assert_eq!(handle.result().await.expect("result"), 2);
    assert_eq!(
        stored_carrier(&app, &id).await["traceparent"],
        json!(remote)
    );
    let workflow = workflow_span(&id, None).await;
    assert_eq!(
        workflow.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(workflow.parent_span_id.to_string(), "00f067aa0ba902b7");

    for (n, malformed) in [
        json!({"traceparent": "00-garbage"}),
        json!({"traceparent": 42}),
        json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("malformed-{n}-{}", uuid::Uuid::new_v4());
        let options = StartOptions::id(&id)
            .with_attributes(json!({"dbos.otelContext": malformed.clone(), "n": n}));
        let handle = app
            .start_with(options, traced, 1)
            .instrument(caller.clone())
            .await
            .expect("start");
        assert_eq!(
            handle
                .result()
                .await
                .expect("a malformed carrier fails nothing"),
            2
        );
        assert_eq!(stored_carrier(&app, &id).await, malformed);
        let workflow = workflow_span(&id, None).await;
        assert_eq!(workflow.parent_span_id, SpanId::INVALID, "a root span");
        assert_ne!(workflow.span_context.trace_id(), caller_trace);
    }
    app.shutdown().await.expect("shutdown");
}
