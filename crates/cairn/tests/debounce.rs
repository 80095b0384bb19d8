//! Debouncing: calls with one key coalesce into one workflow run with the latest arguments,
//! a maximum wait bounds the delay, keys and workflows stay apart, and a call after the
//! workflow left its delay starts a new one — each on SQLite and on Postgres.
//!
//! The calls are made by an application that does not serve the debounce queue, so nothing
//! starts while they are made (no race with the period); a second application on the same
//! database serves the queue and runs what the rows say, as another process would.

mod common;

use std::time::Duration;

use cairn::{Cairn, Debouncer, DeduplicationPolicy, EnqueueOptions, Error, Queue};
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

/// An application that makes calls but does not serve the debounce queue.
async fn caller(db: &TestDb) -> Cairn {
    db.builder("debounce")
        .listen_queues(["not-served"])
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

both_backends!(
    coalesces,
    call_while_running_starts_anew,
    max_wait_bounds,
    keys_and_workflows_apart,
    foreign_holder_refused
);
