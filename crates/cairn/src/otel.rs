//! OpenTelemetry traces (cargo feature `otel`): Cairn's `workflow` and `step` spans exported
//! over OTLP, and parented across processes.
//!
//! Two calls set it up, in this order:
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An OTLP/HTTP exporter and a tracer provider, configured from the `OTEL_*` variables.
//! let _otel = cairn::otel::init_from_env()?; // flushes and shuts down when dropped
//! tracing_subscriber::registry()
//!     .with(cairn::otel::layer()) // tracing spans become OpenTelemetry spans
//!     .with(tracing_subscriber::fmt::layer())
//!     .init();
//! # Ok(())
//! # }
//! ```
//!
//! # Traces across processes
//!
//! When a workflow is started or enqueued (by the application, a [`Client`](crate::Client),
//! or a workflow starting a child) while an OpenTelemetry span is current, Cairn stores that
//! span's W3C trace context with the workflow, as DBOS does: in the workflow's `attributes`,
//! under [`TRACE_CONTEXT_ATTRIBUTE`] (`"dbos.otelContext"`), a carrier such as
//! `{"traceparent": "00-<trace id>-<span id>-01"}` (plus `"tracestate"` when there is one;
//! never baggage). Attributes the caller set are kept, and a carrier the caller set under
//! that key wins. Wherever the workflow then executes (right away, from a queue, or recovered
//! by another process), its `workflow` span's parent is that stored context, so one trace
//! runs from the request that enqueued the workflow through every step, in every service.
//! DBOS's own SDKs read and write the same attribute, so a workflow enqueued by a DBOS
//! service joins its trace too.
//!
//! A carrier that cannot be read (not an object, not a valid `traceparent`) is ignored with
//! a warning: the workflow runs, under a span of its own. Without a current span nothing is
//! stored, and nothing is read unless the attributes hold the key.
//!
//! The context propagates through any [`tracing_opentelemetry`] layer (this module's
//! [`layer`] or one of your own) or, without one, through the current
//! [`opentelemetry::Context`].

use std::collections::HashMap;
use std::fmt;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The workflow attribute that holds a workflow's W3C trace context, as DBOS names it: a
/// JSON object with `traceparent` and, when not empty, `tracestate`.
pub const TRACE_CONTEXT_ATTRIBUTE: &str = "dbos.otelContext";

/// The instrumentation scope of Cairn's spans.
const SCOPE: &str = "cairn";

/// The OTLP protocol this build exports with (the only one compiled in).
const HTTP_PROTOBUF: &str = "http/protobuf";

/// Why [`init_from_env`] or [`OtelGuard::shutdown`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum OtelError {
    /// The `OTEL_*` configuration cannot be used: the variable and why.
    Config {
        /// The environment variable at fault.
        variable: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The OTLP exporter could not be built (its configuration, or its HTTP client).
    Exporter(opentelemetry_otlp::ExporterBuildError),
    /// Flushing or shutting down the tracer provider failed (an export timed out, or the
    /// provider was already shut down).
    Sdk(opentelemetry_sdk::error::OTelSdkError),
}

impl fmt::Display for OtelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OtelError::Config { variable, reason } => write!(f, "{variable}: {reason}"),
            OtelError::Exporter(_) => f.write_str("could not build the OTLP span exporter"),
            OtelError::Sdk(_) => f.write_str("the OpenTelemetry tracer provider failed"),
        }
    }
}

impl std::error::Error for OtelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OtelError::Config { .. } => None,
            OtelError::Exporter(error) => Some(error),
            OtelError::Sdk(error) => Some(error),
        }
    }
}

/// Install an OTLP span exporter and a tracer provider configured from the standard `OTEL_*`
/// environment variables, as OpenTelemetry's global tracer provider, and W3C trace context
/// as the global propagator. Keep the returned guard alive: dropping it flushes the spans
/// not yet exported and shuts the provider down.
///
/// Spans are exported in batches, from a thread of their own, as OTLP over HTTP with
/// protobuf (plain HTTP; for HTTPS or gRPC build your own exporter and provider, install it
/// with [`opentelemetry::global::set_tracer_provider`], and use [`layer`] as usual).
///
/// | variable | default |
/// |---|---|
/// | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces` |
/// | `OTEL_EXPORTER_OTLP_ENDPOINT` | `http://localhost:4318` |
/// | `OTEL_EXPORTER_OTLP_HEADERS`, `…_TRACES_HEADERS` | none (`key=value,…`) |
/// | `OTEL_EXPORTER_OTLP_TIMEOUT`, `…_TRACES_TIMEOUT` | 10000 (ms) |
/// | `OTEL_EXPORTER_OTLP_PROTOCOL`, `…_TRACES_PROTOCOL` | `http/protobuf`, the only one supported |
/// | `OTEL_SERVICE_NAME` | `unknown_service` |
/// | `OTEL_RESOURCE_ATTRIBUTES` | none (`key=value,…`) |
/// | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | `parentbased_always_on` |
/// | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_EXPORT_TIMEOUT` | 5000 ms, 2048, 512, 30000 ms |
/// | `OTEL_TRACES_EXPORTER` | `otlp`; `none` exports nothing |
/// | `OTEL_SDK_DISABLED` | `false`; `true` exports nothing |
///
/// With nothing exported, spans still get trace ids, so workflows still store and follow
/// their callers' trace context.
///
/// # Errors
///
/// [`OtelError::Config`] for a protocol other than `http/protobuf` or an exporter other
/// than `otlp` or `none`; [`OtelError::Exporter`] when the exporter cannot be built.
pub fn init_from_env() -> Result<OtelGuard, OtelError> {
    let mut builder =
        SdkTracerProvider::builder().with_resource(opentelemetry_sdk::Resource::builder().build());
    if exporting()? {
        check_protocol()?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(OtelError::Exporter)?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(OtelGuard {
        provider: Some(provider),
    })
}

/// Whether `OTEL_SDK_DISABLED` and `OTEL_TRACES_EXPORTER` leave spans to export over OTLP.
fn exporting() -> Result<bool, OtelError> {
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if disabled {
        return Ok(false);
    }
    match env("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => Ok(true),
        Some("none") => Ok(false),
        Some(other) => Err(OtelError::Config {
            variable: "OTEL_TRACES_EXPORTER",
            reason: format!("`{other}` is not supported; use `otlp` or `none`"),
        }),
    }
}

/// Refuse a protocol this build does not export with, rather than silently use another.
fn check_protocol() -> Result<(), OtelError> {
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = env(variable) {
            if protocol != HTTP_PROTOBUF {
                return Err(OtelError::Config {
                    variable,
                    reason: format!(
                        "`{protocol}` is not supported; Cairn exports OTLP as `{HTTP_PROTOBUF}`"
                    ),
                });
            }
            // The signal's own variable wins over the general one.
            break;
        }
    }
    Ok(())
}

/// A set, non-blank environment variable, trimmed.
fn env(variable: &str) -> Option<String> {
    let value = std::env::var(variable).ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of the global tracer
/// provider, under the instrumentation scope `cairn`: add it to your subscriber
/// (`tracing_subscriber::registry().with(cairn::otel::layer())`).
///
/// Create it after [`init_from_env`] (or after installing your own global provider): it
/// uses the provider installed when it is created. It is
/// [`tracing_opentelemetry`]'s layer with its defaults (source locations, thread ids and
/// levels recorded as attributes), which its methods can change.
pub fn layer<S>() -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry::global::BoxedTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let scope = InstrumentationScope::builder(SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    tracing_opentelemetry::layer().with_tracer(opentelemetry::global::tracer_with_scope(scope))
}

/// The tracer provider [`init_from_env`] installed. Dropping it flushes the spans not yet
/// exported and shuts the provider down (blocking until the export ends or times out);
/// [`OtelGuard::shutdown`] does the same and reports failures.
#[must_use = "dropping the guard shuts the tracer provider down"]
pub struct OtelGuard {
    /// `None` once shut down.
    provider: Option<SdkTracerProvider>,
}

impl fmt::Debug for OtelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelGuard")
            .field("running", &self.provider.is_some())
            .finish()
    }
}

impl OtelGuard {
    /// The tracer provider, to build tracers of your own with it.
    pub fn provider(&self) -> Option<&SdkTracerProvider> {
        self.provider.as_ref()
    }

    /// Export the spans that have ended and are not exported yet, now.
    ///
    /// # Errors
    ///
    /// [`OtelError::Sdk`] when the export fails or times out.
    pub fn force_flush(&self) -> Result<(), OtelError> {
        match &self.provider {
            Some(provider) => provider.force_flush().map_err(OtelError::Sdk),
            None => Ok(()),
        }
    }

    /// Flush the spans not yet exported and shut the provider down.
    ///
    /// # Errors
    ///
    /// [`OtelError::Sdk`] when the last export fails or times out.
    pub fn shutdown(mut self) -> Result<(), OtelError> {
        match self.provider.take() {
            Some(provider) => provider.shutdown().map_err(OtelError::Sdk),
            None => Ok(()),
        }
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            // The tracing pipeline may be what failed: say it on stderr too.
            eprintln!("cairn::otel: shutting down the tracer provider failed: {error}");
        }
    }
}

// ---- The trace context stored with workflows ------------------------------------------------

/// The OpenTelemetry context of the current span: the current `tracing` span's (through a
/// `tracing_opentelemetry` layer), else the current OpenTelemetry context's.
fn current_context() -> Option<Context> {
    let span = tracing::Span::current();
    if !span.is_none() {
        let cx = span.context();
        if cx.span().span_context().is_valid() {
            return Some(cx);
        }
    }
    let cx = Context::current();
    cx.span().span_context().is_valid().then_some(cx)
}

/// The W3C carrier of the current span's context (`traceparent`, and `tracestate` when not
/// empty), or `None` without a valid current span.
fn current_carrier() -> Option<Map<String, Value>> {
    let cx = current_context()?;
    let mut headers = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut headers);
    let carrier: Map<String, Value> = headers
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    (!carrier.is_empty()).then_some(carrier)
}

/// The attributes of a new workflow with the current trace context added under
/// [`TRACE_CONTEXT_ATTRIBUTE`]; `None` when there is nothing to add: no current span, the
/// caller's attributes are not an object (refused later), or they already hold the key.
pub(crate) fn with_trace_context(attributes: Option<&Value>) -> Option<Value> {
    let own = match attributes {
        None => None,
        Some(Value::Object(map)) if map.contains_key(TRACE_CONTEXT_ATTRIBUTE) => return None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => return None,
    };
    let carrier = current_carrier()?;
    let mut merged = own.cloned().unwrap_or_default();
    merged.insert(TRACE_CONTEXT_ATTRIBUTE.to_owned(), Value::Object(carrier));
    Some(Value::Object(merged))
}

/// The remote parent stored in a workflow's attributes (their JSON text), if they hold a
/// readable carrier. A carrier that cannot be read is logged and ignored.
pub(crate) fn stored_parent(workflow_id: &str, attributes: Option<&str>) -> Option<Context> {
    let text = attributes?;
    // Most workflows carry no trace context: skip parsing their attributes.
    if !text.contains(TRACE_CONTEXT_ATTRIBUTE) {
        return None;
    }
    let carrier = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut map)) => map.remove(TRACE_CONTEXT_ATTRIBUTE)?,
        _ => return None,
    };
    match parent_from_carrier(&carrier) {
        Ok(cx) => Some(cx),
        Err(reason) => {
            tracing::warn!(
                workflow_id,
                carrier = %carrier,
                "ignoring the workflow's malformed `{TRACE_CONTEXT_ATTRIBUTE}` attribute: {reason}"
            );
            None
        }
    }
}

/// The remote span context of a W3C carrier, or why it cannot be read.
fn parent_from_carrier(carrier: &Value) -> Result<Context, &'static str> {
    let Value::Object(map) = carrier else {
        return Err("not a JSON object");
    };
    let mut headers = HashMap::with_capacity(map.len());
    for (key, value) in map {
        match value {
            Value::String(text) => {
                headers.insert(key.to_ascii_lowercase(), text.clone());
            }
            _ if key.eq_ignore_ascii_case("traceparent") => {
                return Err("its `traceparent` is not a string");
            }
            _ => {}
        }
    }
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &headers);
    if cx.span().span_context().is_valid() {
        Ok(cx)
    } else {
        Err("no valid W3C `traceparent`")
    }
}

/// Make a workflow's span a child of the trace context stored in its attributes, if any. A
/// span without an OpenTelemetry layer (or disabled) is left alone.
pub(crate) fn follow_stored_context(
    span: &tracing::Span,
    workflow_id: &str,
    attributes: Option<&str>,
) {
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = stored_parent(workflow_id, attributes) {
        // Fails only without a `tracing_opentelemetry` layer, when there is nothing to parent.
        let _ = span.set_parent(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_carrier_gives_its_remote_span_context() {
        let attributes = serde_json::json!({
            "customer": "acme",
            TRACE_CONTEXT_ATTRIBUTE: {"traceparent": TRACEPARENT, "tracestate": "k=v"},
        })
        .to_string();
        let cx = stored_parent("wf", Some(&attributes)).expect("a parent");
        let span = cx.span();
        let parent = span.span_context();
        assert!(parent.is_remote());
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parent.is_sampled());
        assert_eq!(parent.trace_state().get("k"), Some("v"));
    }

    /// The carrier lives in user-writable attributes: whatever it holds, reading it never
    /// fails, it only yields no parent.
    #[test]
    fn a_malformed_carrier_is_ignored() {
        let malformed = [
            serde_json::json!({ TRACE_CONTEXT_ATTRIBUTE: "00-not-a-carrier" }),
            serde_json::json!({ TRACE_CONTEXT_ATTRIBUTE: {"traceparent": 42} }),
            serde_json::json!({ TRACE_CONTEXT_ATTRIBUTE: {"traceparent": "garbage"} }),
            serde_json::json!({ TRACE_CONTEXT_ATTRIBUTE: {
                "traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            }}),
            serde_json::json!({ TRACE_CONTEXT_ATTRIBUTE: {} }),
            serde_json::json!({ TRACE_CONTEXT_ATTRIBUTE: null }),
        ];
        for attributes in malformed {
            let text = attributes.to_string();
            assert!(stored_parent("wf", Some(&text)).is_none(), "{text}");
        }
        assert!(stored_parent("wf", Some("not json, but dbos.otelContext")).is_none());
        assert!(stored_parent("wf", Some("[\"dbos.otelContext\"]")).is_none());
        assert!(stored_parent("wf", Some("{\"customer\": \"acme\"}")).is_none());
        assert!(stored_parent("wf", None).is_none());
    }

    #[test]
    fn nothing_is_added_without_a_current_span() {
        let attributes = serde_json::json!({"customer": "acme"});
        assert_eq!(with_trace_context(Some(&attributes)), None);
        assert_eq!(with_trace_context(None), None);
    }
}
