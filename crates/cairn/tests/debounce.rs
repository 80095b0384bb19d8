//! Debouncing: calls with one key coalesce into one workflow run with the latest arguments,
//! a maximum wait bounds the delay, keys and workflows stay apart, and a call after the
//! workflow left its delay starts a new one — each on SQLite and on Postgres.
//!
//! The calls are made by an application that does not serve the debounce queue, so nothing
//! starts while they are made (no race with the period); a second application on the same
//! database serves the queue and runs what the rows say, as another process would.
//!
//! Inside a workflow a debounce is the workflow's operation `DBOS.debounce_delayed_workflow`
//! (DBOS's step name): a replay answers the recorded workflow without touching the rows.

mod common;

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use cairn::{
    Cairn, Debouncer, DeduplicationPolicy, EnqueueOptions, Error, Queue, StartOptions,
    WorkflowState,
};
use common::{TestDb, count, counted};

const QUEUE: &str = "debounced";
const PERIOD: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AppError {
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

/// Counts its runs under `key`; answers `value`.
#[cairn::workflow]
async fn collect(key: String, value: i64) -> Result<i64, AppError> {
    count(&key);
    Ok(value)
}

/// Another workflow, to show two workflows' keys stay apart.
#[cairn::workflow]
async fn collect_other(key: String, value: i64) -> Result<i64, AppError> {
    count(&key);
    Ok(value + 1000)
}

/// Announces it started under `key`, then waits until released; answers `value`.
#[cairn::workflow]
async fn gated(key: String, value: i64) -> Result<i64, AppError> {
    common::reached(&key);
    common::until_released(&key).await;
    Ok(value)
}

/// The application a workflow below debounces with, by the workflow's key: set by the test
/// after each launch (a recovered workflow waits here until its new application is set).
static APPS: LazyLock<tokio::sync::watch::Sender<HashMap<String, Cairn>>> =
    LazyLock::new(|| tokio::sync::watch::channel(HashMap::new()).0);

async fn app_for(key: &str) -> Cairn {
    let mut apps = APPS.subscribe();
    let apps = apps
        .wait_for(|apps| apps.contains_key(key))
        .await
        .expect("the sender is static");
    apps[key].clone()
}

fn set_app(key: &str, app: Option<&Cairn>) {
    APPS.send_modify(|apps| match app {
        Some(app) => {
            apps.insert(key.to_owned(), app.clone());
        }
        None => {
            apps.remove(key);
        }
    });
}

/// Blocks until `release(key)`; announces each time it starts waiting.
#[cairn::step]
async fn gate(key: String) -> Result<(), AppError> {
    common::reached(&key);
    common::until_released(&key).await;
    Ok(())
}

/// Debounces `collect` under `debounce_key` with `value` (the workflow's first operation),
/// then waits at the gate `key`; answers the debounced workflow's id and whether this call
/// created it.
#[cairn::workflow]
async fn debounce_then_gate(
    key: String,
    debounce_key: String,
    value: i64,
) -> Result<(String, bool), AppError> {
    let app = app_for(&key).await;
    let handle = app
        .debounce(
            &debouncer(),
            collect,
            &debounce_key,
            PERIOD,
            (key.clone(), value),
        )
        .await?;
    gate(key).await?;
    Ok((handle.id().to_owned(), handle.created()))
}

/// Debounces under `debounce_key`; answers how the call went (id, or the deduplication error).
#[cairn::workflow]
async fn debounce_or_refused(
    key: String,
    debounce_key: String,
    value: i64,
) -> Result<String, AppError> {
    let app = app_for(&key).await;
    let outcome = match app
        .debounce(
            &debouncer(),
            collect,
            &debounce_key,
            PERIOD,
            (key.clone(), value),
        )
        .await
    {
        Ok(handle) => format!("debounced {}", handle.id()),
        Err(Error::Deduplicated { existing, .. }) => format!("deduplicated by {existing}"),
        Err(other) => return Err(other.into()),
    };
    gate(key).await?;
    Ok(outcome)
}

/// An application that makes calls but does not serve the debounce queue.
async fn caller(db: &TestDb) -> Cairn {
    db.builder("debounce")
        .listen_queues(["not-served"])
        .shutdown_grace(Duration::from_millis(20))
        .launch()
        .await
        .expect("launch")
}

/// An application serving the debounce queue (polling it often), as another executor.
async fn server(db: &TestDb) -> Cairn {
    db.builder("debounce")
        .executor_id("server")
        .queue(Queue::new(QUEUE).polling_interval(Duration::from_millis(50)))
        .launch()
        .await
        .expect("launch")
}

fn debouncer() -> Debouncer {
    Debouncer::new().with_queue(QUEUE)
}

async fn column(db: &TestDb, workflow_id: &str, column: &str) -> Option<String> {
    db.query_text(&format!(
        "SELECT CAST({column} AS TEXT) FROM workflow_status WHERE workflow_uuid = '{workflow_id}'"
    ))
    .await
}

async fn coalesces(db: &TestDb) {
    let key = format!("coalesce-{}", uuid::Uuid::new_v4());
    let app = caller(db).await;
    let d = debouncer();
    let first = app
        .debounce(&d, collect, "k", PERIOD, (key.clone(), 1))
        .await
        .unwrap();
    assert!(first.created());
    for value in 2..=4 {
        let again = app
            .debounce(&d, collect, "k", PERIOD, (key.clone(), value))
            .await
            .unwrap();
        assert_eq!(again.id(), first.id());
        assert!(!again.created());
    }
    assert_eq!(
        column(db, first.id(), "status").await.as_deref(),
        Some("DELAYED")
    );
    let debounced = column(db, first.id(), "is_debounced").await;
    assert!(
        matches!(debounced.as_deref(), Some("1" | "true")),
        "{debounced:?}"
    );

    let runner = server(db).await;
    assert_eq!(first.result().await.unwrap(), 4);
    assert_eq!(counted(&key), 1);
    // Promoted: the key is free again.
    assert_eq!(column(db, first.id(), "deduplication_id").await, None);

    // A call after the workflow started starts a new one.
    let next = app
        .debounce(&d, collect, "k", PERIOD, (key.clone(), 5))
        .await
        .unwrap();
    assert!(next.created());
    assert_ne!(next.id(), first.id());
    assert_eq!(next.result().await.unwrap(), 5);
    assert_eq!(counted(&key), 2);
    runner.shutdown().await.unwrap();
    app.shutdown().await.unwrap();
}

async fn max_wait_bounds(db: &TestDb) {
    let key = format!("max-wait-{}", uuid::Uuid::new_v4());
    let app = caller(db).await;
    // Each call would put the workflow off an hour; the maximum wait is 300 ms.
    let hour = Duration::from_secs(3600);
    let d = debouncer().with_max_wait(PERIOD);
    let first = app
        .debounce(&d, collect, "k", hour, (key.clone(), 1))
        .await
        .unwrap();
    let again = app
        .debounce(&d, collect, "k", hour, (key.clone(), 2))
        .await
        .unwrap();
    assert_eq!(again.id(), first.id());
    let deadline = column(db, first.id(), "debounce_deadline_epoch_ms").await;
    assert!(deadline.is_some());
    assert_eq!(
        column(db, first.id(), "delay_until_epoch_ms").await,
        deadline,
        "the bounce is capped at the deadline"
    );

    let runner = server(db).await;
    assert_eq!(first.result().await.unwrap(), 2);
    assert_eq!(counted(&key), 1);
    runner.shutdown().await.unwrap();
    app.shutdown().await.unwrap();
}

async fn keys_and_workflows_apart(db: &TestDb) {
    let key = format!("apart-{}", uuid::Uuid::new_v4());
    let app = caller(db).await;
    let d = debouncer();
    let a = app
        .debounce(&d, collect, "a", PERIOD, (key.clone(), 1))
        .await
        .unwrap();
    let b = app
        .debounce(&d, collect, "b", PERIOD, (key.clone(), 2))
        .await
        .unwrap();
    let other = app
        .debounce(&d, collect_other, "a", PERIOD, (key.clone(), 3))
        .await
        .unwrap();
    assert!(a.created() && b.created() && other.created());
    assert_ne!(a.id(), b.id());
    assert_ne!(a.id(), other.id());

    let runner = server(db).await;
    assert_eq!(a.result().await.unwrap(), 1);
    assert_eq!(b.result().await.unwrap(), 2);
    assert_eq!(other.result().await.unwrap(), 1003);
    assert_eq!(counted(&key), 3);
    runner.shutdown().await.unwrap();
    app.shutdown().await.unwrap();
}

/// A key held by a workflow enqueued with that deduplication id (not debounced, not
/// `DELAYED`) is not bounced: the debounce fails as the enqueue would.
async fn foreign_holder_refused(db: &TestDb) {
    let key = format!("foreign-{}", uuid::Uuid::new_v4());
    let app = caller(db).await;
    let d = debouncer();
    // Learn the workflow's stored name and deduplication id from a first debounce.
    let probe = app
        .debounce(&d, collect, "probe", PERIOD, (key.clone(), 0))
        .await
        .unwrap();
    let name = column(db, probe.id(), "name").await.expect("name");
    let options = EnqueueOptions::default()
        .with_deduplication_id(format!("{name}-held"))
        .with_deduplication_policy(DeduplicationPolicy::Reject);
    let holder = app
        .enqueue_with(options, QUEUE, collect, (key.clone(), 1))
        .await
        .unwrap();
    match app
        .debounce(&d, collect, "held", PERIOD, (key.clone(), 2))
        .await
    {
        Err(Error::Deduplicated { existing, .. }) => assert_eq!(existing, holder.id()),
        other => panic!("expected a deduplication error, got {other:?}"),
    }
    app.shutdown().await.unwrap();
}

/// Once the dispatcher has taken the workflow out of its delay, the key is free: a call
/// while it still runs starts a new workflow.
async fn call_while_running_starts_anew(db: &TestDb) {
    let key = format!("running-{}", uuid::Uuid::new_v4());
    let app = caller(db).await;
    let d = debouncer();
    let first = app
        .debounce(&d, gated, "k", PERIOD, (key.clone(), 1))
        .await
        .unwrap();
    let runner = server(db).await;
    common::wait_reached(&key).await;
    let second = app
        .debounce(&d, gated, "k", PERIOD, (key.clone(), 2))
        .await
        .unwrap();
    assert!(second.created());
    assert_ne!(second.id(), first.id());
    common::release(&key);
    assert_eq!(first.result().await.unwrap(), 1);
    assert_eq!(second.result().await.unwrap(), 2);
    runner.shutdown().await.unwrap();
    app.shutdown().await.unwrap();
}

/// The raw `workflow_status` columns a debounce writes, to see whether anything touched them.
async fn debounce_columns(db: &TestDb, workflow_id: &str) -> Vec<Option<String>> {
    let mut columns = Vec::new();
    for name in [
        "status",
        "updated_at",
        "delay_until_epoch_ms",
        "debounce_deadline_epoch_ms",
        "is_debounced",
    ] {
        columns.push(column(db, workflow_id, name).await);
    }
    columns.push(
        db.query_text(&format!(
            "SELECT inputs FROM workflow_input WHERE workflow_uuid = '{workflow_id}'"
        ))
        .await,
    );
    columns
}

/// Inside a workflow a debounce is one operation, recorded under DBOS's step name with the
/// workflow it created (id `<caller>-<operation id>`); after the caller is abandoned and
/// recovered, its replay answers the same workflow and touches none of the debounce rows
/// (meanwhile bounced from outside, so a second debounce would show).
async fn a_debounce_inside_a_workflow_is_recorded_once_across_a_relaunch(db: &TestDb) {
    let key = format!("in-workflow-{}", uuid::Uuid::new_v4());
    let app = caller(db).await;
    set_app(&key, Some(&app));
    let parent = "debouncing-parent";
    app.start_with(
        StartOptions::id(parent),
        debounce_then_gate,
        (key.clone(), "k".to_owned(), 1),
    )
    .await
    .unwrap();
    common::wait_reached(&key).await;
    let debounced = format!("{parent}-1");
    assert_eq!(
        app.status(&debounced).await.unwrap().state,
        WorkflowState::Delayed
    );
    let steps = app.list_steps(parent).await.unwrap();
    assert_eq!(steps[0].name, "DBOS.debounce_delayed_workflow");
    assert_eq!(
        steps[0].child_workflow_id.as_deref(),
        Some(debounced.as_str())
    );
    let output: serde_json::Value =
        serde_json::from_str(steps[0].raw_output.as_deref().expect("an output")).unwrap();
    assert_eq!(output["bounced_workflow_id"], serde_json::Value::Null);
    // Bounced from outside: the latest arguments are 2 now.
    let outside = app
        .debounce(&debouncer(), collect, "k", PERIOD, (key.clone(), 2))
        .await
        .unwrap();
    assert_eq!(outside.id(), debounced);
    assert!(!outside.created());
    let before = debounce_columns(db, &debounced).await;
    set_app(&key, None);
    app.shutdown().await.unwrap();

    let app = caller(db).await;
    set_app(&key, Some(&app));
    common::wait_reached(&key).await;
    common::release(&key);
    let handle = app.retrieve::<(String, bool)>(parent).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), (debounced.clone(), false));
    assert_eq!(
        debounce_columns(db, &debounced).await,
        before,
        "the replay left the debounce rows alone"
    );
    let steps = app.list_steps(parent).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.name == "DBOS.debounce_delayed_workflow")
            .count(),
        1
    );
    let rows = db
        .query_text("SELECT CAST(COUNT(*) AS TEXT) FROM workflow_status WHERE name LIKE '%collect'")
        .await;
    assert_eq!(rows.as_deref(), Some("1"), "one debounced workflow");

    // Served: it runs once, with the latest arguments.
    let runner = server(db).await;
    assert_eq!(
        app.retrieve::<i64>(&debounced)
            .await
            .unwrap()
            .result()
            .await
            .unwrap(),
        2
    );
    assert_eq!(counted(&key), 1);
    set_app(&key, None);
    runner.shutdown().await.unwrap();
    app.shutdown().await.unwrap();
}

/// A debounce inside a workflow that finds the key held bounces the holder: the record names
/// it (DBOS's `bounced_workflow_id`), the holder runs once with the workflow's arguments.
async fn a_debounce_inside_a_workflow_bounces_the_holder(db: &TestDb) {
    let key = format!("in-workflow-bounce-{}", uuid::Uuid::new_v4());
    let app = caller(db).await;
    set_app(&key, Some(&app));
    let holder = app
        .debounce(&debouncer(), collect, "k", PERIOD, (key.clone(), 1))
        .await
        .unwrap();
    assert!(holder.created());
    let parent = app
        .start(debounce_then_gate, (key.clone(), "k".to_owned(), 5))
        .await
        .unwrap();
    common::wait_reached(&key).await;
    common::release(&key);
    assert_eq!(
        parent.result().await.unwrap(),
        (holder.id().to_owned(), false)
    );
    let steps = app.list_steps(parent.id()).await.unwrap();
    assert_eq!(steps[0].name, "DBOS.debounce_delayed_workflow");
    assert_eq!(steps[0].child_workflow_id.as_deref(), Some(holder.id()));
    let output: serde_json::Value =
        serde_json::from_str(steps[0].raw_output.as_deref().expect("an output")).unwrap();
    assert_eq!(output["bounced_workflow_id"].as_str(), Some(holder.id()));
    let runner = server(db).await;
    assert_eq!(holder.result().await.unwrap(), 5);
    assert_eq!(counted(&key), 1);
    set_app(&key, None);
    runner.shutdown().await.unwrap();
    app.shutdown().await.unwrap();
}

/// A debounce inside a workflow that fails (the key held by a workflow that is not debounced)
/// records its error: after a relaunch the replay fails the same way although the key has
/// been freed meanwhile, and nothing is enqueued.
async fn a_refused_debounce_inside_a_workflow_replays_its_error(db: &TestDb) {
    let key = format!("in-workflow-refused-{}", uuid::Uuid::new_v4());
    let app = caller(db).await;
    set_app(&key, Some(&app));
    // Learn the stored workflow name (the deduplication id's prefix) from a first debounce.
    let probe = app
        .debounce(&debouncer(), collect, "probe", PERIOD, (key.clone(), 0))
        .await
        .unwrap();
    let name = column(db, probe.id(), "name").await.expect("name");
    let options =
        EnqueueOptions::id("foreign-holder").with_deduplication_id(format!("{name}-held"));
    app.enqueue_with(options, QUEUE, collect, (key.clone(), 1))
        .await
        .unwrap();
    let parent = "refused-parent";
    app.start_with(
        StartOptions::id(parent),
        debounce_or_refused,
        (key.clone(), "held".to_owned(), 2),
    )
    .await
    .unwrap();
    common::wait_reached(&key).await;
    // Free the key: a second execution of the debounce would now create a workflow.
    assert!(app.cancel("foreign-holder").await.unwrap());
    set_app(&key, None);
    app.shutdown().await.unwrap();

    let app = caller(db).await;
    set_app(&key, Some(&app));
    common::wait_reached(&key).await;
    common::release(&key);
    let handle = app.retrieve::<String>(parent).await.unwrap();
    assert_eq!(
        handle.result().await.unwrap(),
        "deduplicated by foreign-holder"
    );
    assert!(matches!(
        app.status(&format!("{parent}-1")).await,
        Err(Error::NotFound(_))
    ));
    let steps = app.list_steps(parent).await.unwrap();
    assert_eq!(steps[0].name, "DBOS.debounce_delayed_workflow");
    assert!(steps[0].raw_error.is_some());
    set_app(&key, None);
    app.shutdown().await.unwrap();
}

both_backends!(
    a_debounce_inside_a_workflow_is_recorded_once_across_a_relaunch,
    a_debounce_inside_a_workflow_bounces_the_holder,
    a_refused_debounce_inside_a_workflow_replays_its_error,
    coalesces,
    call_while_running_starts_anew,
    max_wait_bounds,
    keys_and_workflows_apart,
    foreign_holder_refused,
    a_standalone_client_debounces_onto_a_served_queue
);

/// A process that runs no workflows debounces through a client (DBOS's `DebouncerClient`):
/// its calls coalesce with each other's and the application runs the workflow once, with the
/// last arguments.
async fn a_standalone_client_debounces_onto_a_served_queue(db: &TestDb) {
    let key = format!("client-{}", uuid::Uuid::new_v4());
    let runner = server(db).await;
    let client = cairn::Client::connect(&db.url).await.expect("connect");
    let d = debouncer();
    let first = client
        .debounce(&d, collect, "c", PERIOD, (key.clone(), 1))
        .await
        .expect("debounce");
    assert!(first.created());
    let again = client
        .debounce(&d, collect, "c", PERIOD, (key.clone(), 2))
        .await
        .expect("debounce again");
    assert_eq!(again.id(), first.id());
    assert_eq!(first.result().await.expect("result"), 2);
    assert_eq!(counted(&key), 1);
    client.close().await;
    runner.shutdown().await.expect("shutdown");
}
