//! Calls that are durable where DBOS's are: a workflow function called directly after
//! `launch()` runs as a durable workflow, and `app.start` / `app.run` inside a workflow start
//! a child exactly once across replays.
//!
//! Which application a direct call runs on is process-wide state, so each backend's case runs
//! in one test, one after the other, never beside another launched application.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use cairn::{Cairn, WorkflowState};
use common::{Backend, TestDb, count, counted};

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AppError {
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

#[cairn::step]
async fn double(key: String, n: u64) -> Result<u64, AppError> {
    count(&key);
    Ok(n * 2)
}

#[cairn::workflow]
async fn doubled(key: String, n: u64) -> Result<u64, AppError> {
    double(key, n).await
}

/// The application the parent below starts its child on (set by the test).
static APP: Mutex<Option<Cairn>> = Mutex::new(None);

fn app() -> Cairn {
    APP.lock().unwrap().clone().expect("the test set the app")
}

#[cairn::step]
async fn gate(key: String) -> Result<(), AppError> {
    common::reached(&key);
    common::until_released(&key).await;
    Ok(())
}

/// Starts a child with `app.start`, waits for it with `app.run`'s twin, then waits at a gate.
#[cairn::workflow]
async fn parent(key: String) -> Result<u64, AppError> {
    let app = app();
    let child = app.start(doubled, (format!("{key}/child"), 21)).await?;
    let n = child.result().await?;
    let m = app.run(doubled, (format!("{key}/run"), n)).await?;
    gate(key).await?;
    Ok(m)
}

async fn direct_calls_are_durable(db: &TestDb) {
    // Before launch a workflow function is an ordinary async function.
    let k = format!("plain@{}", db.url);
    assert_eq!(doubled(k.clone(), 4).await.unwrap(), 8);
    assert_eq!(counted(&k), 1);

    // After launch the same call runs durably: a workflow row, its step checkpointed.
    let app = db.launch().await;
    let k = format!("direct@{}", db.url);
    assert_eq!(doubled(k.clone(), 5).await.unwrap(), 10);
    let rows = db
        .query_text("SELECT workflow_uuid FROM workflow_status WHERE name = 'doubled'")
        .await
        .expect("the direct call left a workflow row");
    let status = app.status(&rows).await.unwrap();
    assert_eq!(status.state, WorkflowState::Success);
    assert_eq!(status.output::<u64>().unwrap(), Some(10));
    assert_eq!(app.list_steps(&rows).await.unwrap().len(), 1);
    app.shutdown().await.unwrap();
}

async fn starts_inside_a_workflow_are_children_once(db: &TestDb) {
    let k = format!("parent@{}", db.url);
    let first = db
        .builder("cairn-test")
        .shutdown_grace(Duration::from_millis(20))
        .launch()
        .await
        .unwrap();
    *APP.lock().unwrap() = Some(first.clone());
    let id = first
        .start(parent, k.clone())
        .await
        .unwrap()
        .id()
        .to_owned();
    common::wait_reached(&k).await;
    *APP.lock().unwrap() = None;
    first.shutdown().await.unwrap();

    // Recovery replays the parent: its child and its run are not started again.
    let second = db
        .builder("cairn-test")
        .recover_on_launch(false)
        .launch()
        .await
        .unwrap();
    *APP.lock().unwrap() = Some(second.clone());
    assert_eq!(second.recover_pending().await.unwrap(), vec![id.clone()]);
    common::wait_reached(&k).await;
    common::release(&k);
    let handle = second.retrieve::<u64>(&id).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 84);
    assert_eq!(counted(&format!("{k}/child")), 1, "the child ran once");
    assert_eq!(
        counted(&format!("{k}/run")),
        1,
        "the run's workflow ran once"
    );
    let child = second.status(&format!("{id}-1")).await.unwrap();
    assert_eq!(child.parent_workflow_id.as_deref(), Some(id.as_str()));
    assert_eq!(child.state, WorkflowState::Success);
    *APP.lock().unwrap() = None;
    second.shutdown().await.unwrap();
}

/// After `launch()` a workflow function called directly outside any workflow runs as a
/// durable workflow; before, it is a plain call. Inside a workflow, `app.start` and `app.run`
/// start children exactly once across replays. On both backends, one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_calls_and_starts_inside_workflows_are_durable() {
    for backend in [
        #[cfg(feature = "sqlite")]
        Backend::Sqlite,
        #[cfg(feature = "postgres")]
        Backend::Postgres,
    ] {
        let db = TestDb::new(backend);
        direct_calls_are_durable(&db).await;
        starts_inside_a_workflow_are_children_once(&db).await;
        db.drop_db().await;
    }
}
