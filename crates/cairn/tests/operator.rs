//! What an operator sees: log lines for a workflow's life (failures with their error, retries
//! with their workflow, cancellations, recoveries, versions left alone), spans that nest, and
//! a start that says whether it created the workflow — each on SQLite and on Postgres.
//!
//! One global subscriber captures every test's lines and spans (tests may share a process);
//! each test looks only for its own ids.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use cairn::{Error, StartOptions};
use common::{TestDb, count, counted};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum OrderError {
    #[error("rejected: {0}")]
    Rejected(String),
}

#[cairn::step]
async fn note(key: String) -> Result<u32, OrderError> {
    count(&key);
    Ok(1)
}

#[cairn::workflow]
async fn noted(key: String) -> Result<u32, OrderError> {
    note(key).await
}

#[cairn::workflow]
async fn rejected(why: String) -> Result<(), OrderError> {
    Err(OrderError::Rejected(why))
}

/// Fails its first attempt, succeeds on the second.
#[cairn::step(max_attempts = 3, interval_ms = 1)]
async fn flaky(key: String) -> Result<u32, OrderError> {
    if count(&key) == 1 {
        return Err(OrderError::Rejected(format!("first try of {key}")));
    }
    Ok(2)
}

#[cairn::workflow]
async fn retried(key: String) -> Result<u32, OrderError> {
    flaky(key).await
}

/// The name of the span current inside the step's body.
#[cairn::step]
async fn observe() -> Result<String, OrderError> {
    let current = tracing::Span::current();
    Ok(current.metadata().map_or("none", |m| m.name()).to_owned())
}

#[cairn::workflow]
async fn child_of() -> Result<String, OrderError> {
    observe().await
}

#[cairn::workflow]
async fn parent_of() -> Result<String, OrderError> {
    let mine = observe().await?; // operation 1
    let child = child_of().await?; // operation 2: the child `<id>-2`
    Ok(format!("{mine}/{child}"))
}

#[cairn::workflow]
async fn parked() -> Result<Option<String>, cairn::Error> {
    cairn::recv::<String>("never", Duration::from_secs(3600)).await
}

/// Blocks until `release(key)`; announces each time it starts waiting.
#[cairn::step]
async fn hold(key: String) -> Result<(), OrderError> {
    common::reached(&key);
    common::until_released(&key).await;
    Ok(())
}

#[cairn::workflow]
async fn held(key: String) -> Result<(), OrderError> {
    hold(key).await
}

#[cairn::workflow]
async fn staged(key: String) -> Result<u32, OrderError> {
    let first = note(format!("{key}/first")).await?; // operation 1
    hold(key).await?; // operation 2
    Ok(first + 1)
}

fn key(db: &TestDb, what: &str) -> String {
    format!("{what}@{}", db.url)
}

fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

// ---- capturing lines and spans ----

/// Every line the fmt layer wrote, as text.
static LOGS: LazyLock<Arc<Mutex<Vec<u8>>>> = LazyLock::new(Default::default);

/// Every span created: its name, its fields, and its parent's serial.
static SPANS: LazyLock<Mutex<HashMap<u64, SpanRecord>>> = LazyLock::new(Default::default);

#[derive(Debug, Clone)]
struct SpanRecord {
    name: &'static str,
    fields: HashMap<&'static str, String>,
    parent: Option<u64>,
}

/// A serial per span, kept in the span's extensions (span ids are reused once closed).
#[derive(Clone, Copy)]
struct Serial(u64);

/// Records each span with its parent, as the registry resolves it.
struct SpanRecorder;

struct Fields<'a>(&'a mut HashMap<&'static str, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanRecorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let Some(span) = ctx.span(id) else { return };
        let serial = NEXT.fetch_add(1, Ordering::Relaxed);
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Serial>().copied())
            .map(|s| s.0);
        span.extensions_mut().insert(Serial(serial));
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let record = SpanRecord {
            name: attrs.metadata().name(),
            fields,
            parent,
        };
        SPANS.lock().unwrap().insert(serial, record);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(serial) = ctx
            .span(id)
            .and_then(|s| s.extensions().get::<Serial>().copied())
        else {
            return;
        };
        if let Some(record) = SPANS.lock().unwrap().get_mut(&serial.0) {
            values.record(&mut Fields(&mut record.fields));
        }
    }
}

/// Where the fmt layer writes: the shared buffer.
#[derive(Clone)]
struct Buffer;

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install the capturing subscriber once per process: Cairn's lines from `debug` up, other
/// crates' from `warn`, and every span.
fn capture() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let lines = tracing_subscriber::fmt::layer()
            .with_writer(|| Buffer)
            .with_ansi(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target().starts_with("cairn") || *meta.level() <= tracing::Level::WARN
            }));
        let subscriber = tracing_subscriber::registry()
            .with(lines)
            .with(SpanRecorder);
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
    });
}

/// The captured lines that contain every one of `parts`.
fn lines_with(parts: &[&str]) -> Vec<String> {
    let logs = LOGS.lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .map(str::to_owned)
        .collect()
}

/// The one line that contains every one of `parts`.
fn line_with(parts: &[&str]) -> String {
    let mut found = lines_with(parts);
    assert_eq!(found.len(), 1, "one line with {parts:?}, found {found:?}");
    found.remove(0)
}

/// The spans named `name` whose `workflow_id` is `workflow_id`, with their serials.
fn spans_of(name: &str, workflow_id: &str) -> Vec<(u64, SpanRecord)> {
    SPANS
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, r)| {
            r.name == name && r.fields.get("workflow_id").map(String::as_str) == Some(workflow_id)
        })
        .map(|(serial, r)| (*serial, r.clone()))
        .collect()
}

/// The one span named `name` of the workflow `workflow_id`.
fn span_of(name: &str, workflow_id: &str) -> (u64, SpanRecord) {
    let mut found = spans_of(name, workflow_id);
    assert_eq!(
        found.len(),
        1,
        "one {name} span of {workflow_id}: {found:?}"
    );
    found.remove(0)
}

// ---- the tests ----

/// Of many concurrent starts of one id, exactly one reports that it created the workflow;
/// the others (and later starts, and retrieved handles) say it already existed.
async fn exactly_one_of_concurrent_starts_of_an_id_reports_created(db: &TestDb) {
    capture();
    let app = db.launch().await;
    let k = key(db, "created");
    let starts = (0..16).map(|_| {
        let app = app.clone();
        let k = k.clone();
        tokio::spawn(async move { app.start_with(StartOptions::id("order-9"), noted, k).await })
    });
    let mut created = 0;
    for start in futures::future::join_all(starts).await {
        let handle = start.unwrap().unwrap();
        created += usize::from(handle.created());
        assert_eq!(handle.result().await.unwrap(), 1);
    }
    assert_eq!(created, 1, "exactly one start created the workflow");
    assert_eq!(counted(&k), 1, "and it ran once");

    let again = app
        .start_with(StartOptions::id("order-9"), noted, k.clone())
        .await
        .unwrap();
    assert!(
        !again.created(),
        "a finished workflow's id is not created again"
    );
    let retrieved = app.retrieve::<u32>("order-9").await.unwrap();
    assert!(!retrieved.created(), "retrieving creates nothing");
    let fresh = app.start(noted, k.clone()).await.unwrap();
    assert!(fresh.created(), "a start with a new id creates it");
    fresh.result().await.unwrap();
    app.shutdown().await.unwrap();
}

/// A workflow that fails logs one warning carrying its id, its name and its error.
async fn a_failed_workflow_logs_a_warning_with_its_id_and_error(db: &TestDb) {
    capture();
    let app = db.launch().await;
    let why = unique("out of stock");
    let handle = app.start(rejected, why.clone()).await.unwrap();
    handle.result().await.unwrap_err();
    let line = line_with(&[
        "WARN",
        "workflow failed",
        &format!("workflow_id={}", handle.id()),
    ]);
    assert!(line.contains(&format!("rejected: {why}")), "{line}");
    assert!(line.contains(r#"name="rejected""#), "{line}");
    assert!(line.contains("OrderError"), "the error's type: {line}");
    app.shutdown().await.unwrap();
}

/// A step's retry warning names the workflow it belongs to, and the step's span counts the
/// attempt.
async fn a_step_retry_warning_carries_the_workflow_id(db: &TestDb) {
    capture();
    let app = db.launch().await;
    let k = unique("flaky");
    let handle = app.start(retried, k.clone()).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 2);
    let line = line_with(&[
        "WARN",
        "step failed; retrying",
        &format!("first try of {k}"),
    ]);
    assert!(
        line.contains(&format!("workflow_id={}", handle.id())),
        "{line}"
    );
    assert!(line.contains(r#"step="flaky""#), "{line}");
    let (_, step) = span_of("step", handle.id());
    assert_eq!(step.fields["attempt"], "2", "{step:?}");
    assert_eq!(step.fields["function_id"], "1", "{step:?}");
    app.shutdown().await.unwrap();
}

/// A step's span nests under its workflow's, and a child workflow's span under its parent's;
/// inside a step's body the current span is the step's.
async fn spans_nest_steps_under_workflows_and_children_under_parents(db: &TestDb) {
    capture();
    let app = db.launch().await;
    let handle = app.start(parent_of, ()).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), "step/step");
    let parent_id = handle.id();
    let child_id = format!("{parent_id}-2");

    let (parent, parent_span) = span_of("workflow", parent_id);
    assert_eq!(parent_span.fields["name"], "parent_of");
    assert_eq!(parent_span.fields["origin"], "start");
    let (_, parent_step) = span_of("step", parent_id);
    assert_eq!(parent_step.parent, Some(parent), "{parent_step:?}");
    assert_eq!(parent_step.fields["name"], "observe");

    let (child, child_span) = span_of("workflow", &child_id);
    assert_eq!(child_span.parent, Some(parent), "{child_span:?}");
    assert_eq!(child_span.fields["origin"], "child");
    let (_, child_step) = span_of("step", &child_id);
    assert_eq!(child_step.parent, Some(child), "{child_step:?}");
    app.shutdown().await.unwrap();
}

/// A workflow cancelled while it waits logs that it was cancelled.
async fn a_cancelled_workflow_logs_its_cancellation(db: &TestDb) {
    capture();
    let app = db.launch().await;
    let handle = app.start(parked, ()).await.unwrap();
    assert!(app.cancel(handle.id()).await.unwrap());
    // Returns once the execution here has ended, after its last line.
    cairn::wait_all(std::slice::from_ref(&handle))
        .await
        .unwrap();
    line_with(&[
        "INFO",
        "workflow cancelled",
        &format!("workflow_id={}", handle.id()),
    ]);
    app.shutdown().await.unwrap();
}

/// `launch()` says how many of its executor's pending workflows belong to other application
/// versions (it leaves them alone) and what to do; a launch of their own version recovers
/// them, logs the recovery, and marks the execution's span as one.
async fn launch_reports_pending_workflows_of_other_versions(db: &TestDb) {
    capture();
    let (old, new) = (unique("old"), unique("new"));
    let k = key(db, &unique("held"));
    let launch = |version: &str| {
        db.builder("cairn-test")
            .app_version(version)
            .shutdown_grace(Duration::from_millis(20))
            .launch()
    };
    let first = launch(&old).await.unwrap();
    let handle = first.start(held, k.clone()).await.unwrap();
    common::wait_reached(&k).await;
    first.shutdown().await.unwrap(); // abandoned mid-step: it stays PENDING

    let upgraded = launch(&new).await.unwrap();
    let line = line_with(&[
        "WARN",
        "belong to other application versions",
        &format!("app_version={new}"),
    ]);
    assert!(line.contains(&format!("other_versions={old}: 1")), "{line}");
    assert!(line.contains("count=1"), "{line}");
    assert!(
        line.contains("dbos workflow fork"),
        "says what to do: {line}"
    );
    upgraded.shutdown().await.unwrap();

    let again = launch(&old).await.unwrap();
    common::wait_reached(&k).await;
    common::release(&k);
    let recovered = again.retrieve::<()>(handle.id()).await.unwrap();
    recovered.result().await.unwrap();
    line_with(&[
        "INFO",
        "workflow recovered",
        &format!("workflow_id={}", handle.id()),
    ]);
    assert!(
        lines_with(&["belong to other", &format!("app_version={old}")]).is_empty(),
        "nothing is left for the old version's own launch to report"
    );
    let origins: Vec<String> = spans_of("workflow", handle.id())
        .into_iter()
        .map(|(_, span)| span.fields["origin"].clone())
        .collect();
    assert!(origins.contains(&"start".to_owned()), "{origins:?}");
    assert!(origins.contains(&"recovery".to_owned()), "{origins:?}");
    again.shutdown().await.unwrap();
}

/// The second rollout pattern the docs give: a workflow left `PENDING` by the old version,
/// cancelled and forked onto the new version with DBOS's CLI, runs to completion in the new
/// version's process, and the steps it had finished are not run again.
async fn a_workflow_forked_onto_the_new_version_finishes_there(db: &TestDb) {
    use common::dbos::{dbos_url, run_cli};
    capture();
    let (old, new) = (unique("old"), unique("new"));
    let k = key(db, &unique("staged"));
    let launch = |version: &str| {
        db.builder("cairn-test")
            .app_version(version)
            .shutdown_grace(Duration::from_millis(20))
            .launch()
    };
    let first = launch(&old).await.unwrap();
    let original = first.start(staged, k.clone()).await.unwrap();
    common::wait_reached(&k).await;
    first.shutdown().await.unwrap(); // abandoned at step 2: it stays PENDING

    let upgraded = launch(&new).await.unwrap();
    let url = dbos_url(db);
    let fork_id = format!("{}-on-new", original.id());
    run_cli(&["workflow", "cancel", "-s", &url, original.id()]).await;
    run_cli(&[
        "workflow",
        "fork",
        "-s",
        &url,
        original.id(),
        "--step",
        "2",
        "--application-version",
        &new,
        "--forked-workflow-id",
        &fork_id,
    ])
    .await;
    common::wait_reached(&k).await; // the fork runs step 2 here
    common::release(&k);
    let forked = upgraded.retrieve::<u32>(&fork_id).await.unwrap();
    assert_eq!(forked.result().await.unwrap(), 2);
    assert_eq!(
        counted(&format!("{k}/first")),
        1,
        "step 1 was copied, not rerun"
    );
    line_with(&[
        "INFO",
        "workflow dequeued",
        &format!("workflow_id={fork_id}"),
    ]);
    upgraded.shutdown().await.unwrap();
}

/// Starting an id that exists with another workflow is still refused (the flag does not
/// soften a conflict).
async fn a_conflicting_start_is_refused_not_reported_as_existing(db: &TestDb) {
    capture();
    let app = db.launch().await;
    let first = app
        .start_with(StartOptions::id("order-3"), rejected, "no".to_owned())
        .await
        .unwrap();
    assert!(first.created());
    let conflict = app
        .start_with(StartOptions::id("order-3"), noted, "k".to_owned())
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, Error::ConflictingWorkflow { .. }),
        "{conflict}"
    );
    app.shutdown().await.unwrap();
}

both_backends!(
    exactly_one_of_concurrent_starts_of_an_id_reports_created,
    a_failed_workflow_logs_a_warning_with_its_id_and_error,
    a_step_retry_warning_carries_the_workflow_id,
    spans_nest_steps_under_workflows_and_children_under_parents,
    a_cancelled_workflow_logs_its_cancellation,
    launch_reports_pending_workflows_of_other_versions,
    a_conflicting_start_is_refused_not_reported_as_existing,
    a_workflow_forked_onto_the_new_version_finishes_there,
);
