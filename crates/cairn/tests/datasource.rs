//! Transactional steps on an application database: the body's writes and the step's record
//! commit in one transaction, conflicts are retried, failures roll back; and on the system
//! database itself the writes commit with the checkpoint. (A SIGKILL between the commit and
//! the checkpoint is tested with real processes in `crash_datasource.rs`.)

#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod common;

use cairn::StartOptions;
use common::appdb::AppDb;
use common::{Backend, TestDb};

#[cairn::workflow]
async fn place_order(item: String) -> Result<i64, cairn::Error> {
    let orders = cairn::state::<AppDb>()?;
    orders.insert(&item, false).await
}

#[cairn::workflow]
async fn place_failing_order(item: String) -> Result<i64, cairn::Error> {
    let orders = cairn::state::<AppDb>()?;
    orders.insert(&item, true).await
}

#[cairn::workflow]
async fn bump(key: String) -> Result<i64, cairn::Error> {
    let counters = cairn::state::<AppDb>()?;
    counters.increment(&key, &format!("gate {key}")).await
}

fn item() -> String {
    format!("item-{}", uuid::Uuid::new_v4().simple())
}

async fn app_with(db: &TestDb, orders: &AppDb) -> cairn::Cairn {
    db.builder("datasource-test")
        .state(orders.clone())
        .launch()
        .await
        .expect("launch")
}

/// The body's row and the completion record are both there, once, and the step's output is
/// the recorded one; the checkpoint in the system database holds the same output.
async fn a_transactional_step_writes_once_and_records_its_output_beside_its_writes(db: &TestDb) {
    let orders = AppDb::fresh(db.backend).await;
    let app = app_with(db, &orders).await;
    let item = item();
    let handle = app
        .start_with(
            StartOptions::id(format!("order-{item}")),
            place_order,
            item.clone(),
        )
        .await
        .unwrap();
    let id = handle.result().await.unwrap();
    let rows = orders
        .count(&format!(
            "SELECT count(*) FROM orders WHERE item = '{item}'"
        ))
        .await;
    assert_eq!(rows, 1);
    assert_eq!(common::counted(&format!("body {item}")), 1);
    let recorded = orders.completion_output(handle.id(), 1).await;
    assert_eq!(recorded.as_deref(), Some(id.to_string().as_str()));
    let steps = app.list_steps(handle.id()).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].name, "insert_order");
    app.shutdown().await.unwrap();
    orders.drop_db().await;
}

/// A body that fails after writing leaves no row and no completion record; its error is the
/// workflow's.
async fn a_failed_transaction_is_rolled_back_and_its_error_is_the_steps(db: &TestDb) {
    let orders = AppDb::fresh(db.backend).await;
    let app = app_with(db, &orders).await;
    let item = item();
    let handle = app.start(place_failing_order, item.clone()).await.unwrap();
    let error = handle.result().await.unwrap_err();
    assert_eq!(error.to_string(), "out of stock");
    let rows = orders
        .count(&format!(
            "SELECT count(*) FROM orders WHERE item = '{item}'"
        ))
        .await;
    assert_eq!(rows, 0, "the failed transaction's insert was rolled back");
    assert_eq!(orders.completion_output(handle.id(), 1).await, None);
    app.shutdown().await.unwrap();
    orders.drop_db().await;
}

/// Two serializable read-modify-write transactions that overlap: one fails with a
/// serialization failure and runs again, so neither update is lost.
async fn conflicting_serializable_transactions_are_retried_and_no_update_is_lost(db: &TestDb) {
    let counters = AppDb::fresh(Backend::Postgres).await;
    let key = format!("k{}", uuid::Uuid::new_v4().simple());
    counters
        .execute(&format!(
            "CREATE TABLE counters (key TEXT PRIMARY KEY, n BIGINT NOT NULL); \
             INSERT INTO counters VALUES ('{key}', 0)"
        ))
        .await;
    let app = app_with(db, &counters).await;
    let gate = format!("gate {key}");
    let first = app.start(bump, key.clone()).await.unwrap();
    let second = app.start(bump, key.clone()).await.unwrap();
    common::wait_reached(&gate).await;
    common::wait_reached(&gate).await;
    common::release(&gate);
    let mut outputs = vec![
        first.result().await.unwrap(),
        second.result().await.unwrap(),
    ];
    outputs.sort_unstable();
    assert_eq!(outputs, vec![1, 2]);
    let n = counters
        .count(&format!("SELECT n FROM counters WHERE key = '{key}'"))
        .await;
    assert_eq!(n, 2, "no update was lost");
    assert!(
        common::counted(&format!("attempt {key}")) >= 3,
        "the transaction that lost the conflict ran again"
    );
    app.shutdown().await.unwrap();
    counters.drop_db().await;
}

/// On the system database itself there is no completion table: the order and the step's
/// checkpoint commit in one transaction.
async fn on_the_system_database_the_writes_commit_with_the_checkpoint(db: &TestDb) {
    let probe = db.launch().await;
    probe.shutdown().await.unwrap();
    let orders = AppDb::system(db).await;
    let app = app_with(db, &orders).await;
    let item = item();
    let handle = app.start(place_order, item.clone()).await.unwrap();
    let id = handle.result().await.unwrap();
    let rows = orders
        .count(&format!(
            "SELECT count(*) FROM orders WHERE item = '{item}'"
        ))
        .await;
    assert_eq!(rows, 1);
    assert!(
        !orders.has_completion_table().await,
        "no completion table on the system database"
    );
    let steps = app.list_steps(handle.id()).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(
        steps[0].raw_output.as_deref(),
        Some(id.to_string().as_str())
    );
    app.shutdown().await.unwrap();
}

/// Outside a workflow a transactional step is a plain transaction: it writes, and records
/// nothing.
async fn outside_a_workflow_a_transaction_writes_and_records_nothing(db: &TestDb) {
    let orders = AppDb::fresh(db.backend).await;
    let item = item();
    let id = orders.insert(&item, false).await.unwrap();
    assert!(id > 0);
    let rows = orders
        .count(&format!(
            "SELECT count(*) FROM orders WHERE item = '{item}'"
        ))
        .await;
    assert_eq!(rows, 1);
    assert!(!orders.has_completion_table().await);
    orders.drop_db().await;
}

both_backends!(
    a_transactional_step_writes_once_and_records_its_output_beside_its_writes,
    a_failed_transaction_is_rolled_back_and_its_error_is_the_steps,
    conflicting_serializable_transactions_are_retried_and_no_update_is_lost,
    on_the_system_database_the_writes_commit_with_the_checkpoint,
    outside_a_workflow_a_transaction_writes_and_records_nothing,
);
