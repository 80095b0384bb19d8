//! Enqueueing and queue definitions: the rows an enqueue writes (as DBOS writes them),
//! deduplication, delays, enqueues inside a workflow (exactly once across a relaunch), and
//! the stored definitions — each on SQLite and on Postgres. The queues used here are not
//! served by the test's process, so the rows stay as the enqueue wrote them.

mod common;

use std::time::Duration;

use cairn::{DeduplicationPolicy, EnqueueOptions, Error, Queue, StartOptions, WorkflowState};
use common::{TestDb, count, counted};

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AppError {
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

#[cairn::workflow]
async fn ship(order: String, quantity: i64) -> Result<String, AppError> {
    Ok(format!("{order} x{quantity}"))
}

/// Blocks until `release(key)`; announces each time it starts waiting.
#[cairn::step]
async fn gate(key: String) -> Result<(), AppError> {
    common::reached(&key);
    common::until_released(&key).await;
    Ok(())
}

#[cairn::step]
async fn tick(key: String) -> Result<(), AppError> {
    count(&key);
    Ok(())
}

/// Enqueues `ship` on the unserved queue `side`, then waits at a gate; answers the child's id.
#[cairn::workflow]
async fn enqueue_then_gate(key: String) -> Result<String, AppError> {
    tick(key.clone()).await?;
    let child = cairn::enqueue_workflow("side", ship, ("o-child".to_owned(), 2)).await?;
    gate(key).await?;
    Ok(child.id().to_owned())
}

/// Enqueues with a deduplication id (rejected if held), then waits at a gate; answers how the
/// enqueue went.
#[cairn::workflow]
async fn dedup_then_gate(key: String) -> Result<String, AppError> {
    let options = EnqueueOptions::default().with_deduplication_id("once");
    let outcome =
        match cairn::enqueue_workflow_with(options, "side", ship, ("o".to_owned(), 1)).await {
            Ok(handle) => format!("enqueued {}", handle.id()),
            Err(Error::Deduplicated { existing, .. }) => format!("deduplicated by {existing}"),
            Err(other) => return Err(other.into()),
        };
    gate(key).await?;
    Ok(outcome)
}

/// A unique key per test run, for counters and gates.
fn key(db: &TestDb, what: &str) -> String {
    format!("{what}@{}", db.url)
}

/// An application that serves none of the test's queues (only DBOS's internal one).
fn unserved(db: &TestDb) -> cairn::CairnBuilder {
    db.builder("cairn-test")
        .listen_queues(Vec::<String>::new())
        .shutdown_grace(Duration::from_millis(20))
}

async fn column(db: &TestDb, column: &str, id: &str) -> Option<String> {
    db.query_text(&format!(
        "SELECT CAST({column} AS TEXT) FROM workflow_status WHERE workflow_uuid = '{id}'"
    ))
    .await
}

/// An enqueue writes DBOS's row: ENQUEUED on the queue, no owner and no start, the timeout
/// without a deadline (it starts at dequeue), priority, partition key and version as asked.
async fn an_enqueue_writes_the_row_as_dbos(db: &TestDb) {
    let app = unserved(db)
        .queue(Queue::new("parts").partition_queue(true))
        .launch()
        .await
        .unwrap();
    let options = EnqueueOptions::id("e1")
        .with_priority(3)
        .with_partition_key("eu")
        .with_timeout(Duration::from_secs(9))
        .with_app_version("v-next");
    let parts = app.get_queue("parts").await.unwrap().expect("stored");
    let handle = app
        .enqueue_with(options, &parts, ship, ("o1".to_owned(), 3))
        .await
        .unwrap();
    assert_eq!(handle.id(), "e1");
    assert!(handle.created());
    let status = app.status("e1").await.unwrap();
    assert_eq!(status.state, WorkflowState::Enqueued);
    assert_eq!(status.queue_name.as_deref(), Some("parts"));
    assert_eq!(status.name, "ship");
    assert_eq!(status.app_version.as_deref(), Some("v-next"));
    assert_eq!(status.started_at_ms, None);
    assert_eq!(status.recovery_attempts, 0);
    assert_eq!(
        status.raw_input.as_deref(),
        Some(r#"{"positionalArgs":["o1",3],"namedArgs":{}}"#)
    );
    assert_eq!(column(db, "priority", "e1").await.as_deref(), Some("3"));
    assert_eq!(
        column(db, "queue_partition_key", "e1").await.as_deref(),
        Some("eu")
    );
    assert_eq!(
        column(db, "workflow_timeout_ms", "e1").await.as_deref(),
        Some("9000")
    );
    assert_eq!(column(db, "workflow_deadline_epoch_ms", "e1").await, None);
    assert_eq!(column(db, "owner_xid", "e1").await, None);

    // The same id again: the existing workflow, not a second one.
    let again = app
        .enqueue_with(
            EnqueueOptions::id("e1").with_partition_key("eu"),
            "parts",
            ship,
            ("o1".to_owned(), 3),
        )
        .await
        .unwrap();
    assert!(!again.created());

    // By name, with JSON arguments, for a workflow this process need not know.
    let by_name = app
        .enqueue_by_name(
            "side",
            "billing.charge",
            vec![serde_json::json!({"cents": 5})],
            EnqueueOptions::id("e2"),
        )
        .await
        .unwrap();
    let status = by_name.status().await.unwrap();
    assert_eq!(
        (status.name.as_str(), status.state),
        ("billing.charge", WorkflowState::Enqueued)
    );
    assert_eq!(
        status.raw_input.as_deref(),
        Some(r#"{"positionalArgs":[{"cents":5}],"namedArgs":{}}"#)
    );
    app.shutdown().await.unwrap();
}

/// Refused up front: an empty queue name, a priority out of DBOS's range, a missing (or
/// needless) partition key on a queue defined here.
async fn invalid_enqueues_are_refused(db: &TestDb) {
    let app = unserved(db)
        .queue(Queue::new("parts").partition_concurrency(1))
        .queue(Queue::new("plain"))
        .launch()
        .await
        .unwrap();
    let refused = |result: cairn::Result<cairn::WorkflowHandle<String>>, what: &str| match result {
        Err(Error::InvalidArgument { argument, .. }) => assert_eq!(argument, what),
        other => panic!("expected an invalid {what}, got {other:?}"),
    };
    refused(app.enqueue("", ship, ("o".to_owned(), 1)).await, "queue");
    let zero = EnqueueOptions::default().with_priority(0);
    refused(
        app.enqueue_with(zero, "side", ship, ("o".to_owned(), 1))
            .await,
        "priority",
    );
    let high = EnqueueOptions::default().with_priority(cairn::MAX_PRIORITY + 1);
    refused(
        app.enqueue_with(high, "side", ship, ("o".to_owned(), 1))
            .await,
        "priority",
    );
    refused(
        app.enqueue("parts", ship, ("o".to_owned(), 1)).await,
        "partition_key",
    );
    let keyed = EnqueueOptions::default().with_partition_key("eu");
    refused(
        app.enqueue_with(keyed, "plain", ship, ("o".to_owned(), 1))
            .await,
        "partition_key",
    );
    // A queue not defined here may be served elsewhere: allowed.
    app.enqueue("elsewhere", ship, ("o".to_owned(), 1))
        .await
        .unwrap();
    app.shutdown().await.unwrap();
}

/// A deduplication id held by an unfinished workflow of the queue: rejected with a typed
/// error naming it, or answered with the holder's handle; nothing new is enqueued.
async fn deduplication_rejects_or_returns_the_existing(db: &TestDb) {
    let app = unserved(db).launch().await.unwrap();
    let first = app
        .enqueue_with(
            EnqueueOptions::id("d1").with_deduplication_id("cart-7"),
            "side",
            ship,
            ("o".to_owned(), 1),
        )
        .await
        .unwrap();
    let rejected = app
        .enqueue_with(
            EnqueueOptions::id("d2").with_deduplication_id("cart-7"),
            "side",
            ship,
            ("o".to_owned(), 1),
        )
        .await;
    match rejected {
        Err(Error::Deduplicated {
            workflow_id,
            queue,
            deduplication_id,
            existing,
        }) => {
            assert_eq!(
                (
                    workflow_id.as_str(),
                    queue.as_str(),
                    deduplication_id.as_str(),
                    existing.as_str()
                ),
                ("d2", "side", "cart-7", "d1")
            );
        }
        other => panic!("expected Deduplicated, got {other:?}"),
    }
    assert!(matches!(app.status("d2").await, Err(Error::NotFound(_))));
    let returned = app
        .enqueue_with(
            EnqueueOptions::id("d3")
                .with_deduplication_id("cart-7")
                .with_deduplication_policy(DeduplicationPolicy::ReturnExisting),
            "side",
            ship,
            ("o".to_owned(), 1),
        )
        .await
        .unwrap();
    assert_eq!(returned.id(), first.id());
    assert!(!returned.created());
    assert!(matches!(app.status("d3").await, Err(Error::NotFound(_))));
    app.shutdown().await.unwrap();
}

/// A delay writes `DELAYED` with `delay_until_epoch_ms` = now + delay.
async fn a_delay_writes_delayed(db: &TestDb) {
    let app = unserved(db).launch().await.unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let options = EnqueueOptions::id("late").with_delay(Duration::from_secs(3600));
    app.enqueue_with(options, "side", ship, ("o".to_owned(), 1))
        .await
        .unwrap();
    assert_eq!(
        app.status("late").await.unwrap().state,
        WorkflowState::Delayed
    );
    let until: i64 = column(db, "delay_until_epoch_ms", "late")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(until >= before + 3_600_000, "{until} vs {before}");
    app.shutdown().await.unwrap();
}

/// Inside a workflow an enqueue is an operation: after the parent is abandoned and recovered,
/// its replay answers the same child and enqueues nothing more.
async fn an_enqueue_inside_a_workflow_happens_once_across_a_relaunch(db: &TestDb) {
    let k = key(db, "enqueue-once");
    let app = unserved(db).launch().await.unwrap();
    let parent = app
        .start_with(StartOptions::id("parent"), enqueue_then_gate, k.clone())
        .await
        .unwrap();
    common::wait_reached(&k).await;
    let child = "parent-2";
    assert_eq!(
        app.status(child).await.unwrap().state,
        WorkflowState::Enqueued
    );
    assert_eq!(
        app.status(child)
            .await
            .unwrap()
            .parent_workflow_id
            .as_deref(),
        Some("parent")
    );
    assert_eq!(parent.id(), "parent");
    app.shutdown().await.unwrap();

    let app = unserved(db).launch().await.unwrap();
    common::wait_reached(&k).await;
    common::release(&k);
    let handle = app.retrieve::<String>("parent").await.unwrap();
    assert_eq!(handle.result().await.unwrap(), child);
    let children = db
        .query_text("SELECT CAST(COUNT(*) AS TEXT) FROM workflow_status WHERE parent_workflow_id = 'parent'")
        .await;
    assert_eq!(children.as_deref(), Some("1"));
    assert_eq!(counted(&k), 1, "the finished step did not run again");
    let steps = app.list_steps("parent").await.unwrap();
    assert_eq!(steps[1].child_workflow_id.as_deref(), Some(child));
    app.shutdown().await.unwrap();
}

/// Inside a workflow a rejected enqueue is recorded too: after a relaunch, its replay fails
/// the same way even though the deduplication id has been freed meanwhile.
async fn a_deduplicated_enqueue_inside_a_workflow_replays_its_error(db: &TestDb) {
    let k = key(db, "dedup-once");
    let app = unserved(db).launch().await.unwrap();
    let options = EnqueueOptions::id("holder").with_deduplication_id("once");
    app.enqueue_with(options, "side", ship, ("o".to_owned(), 1))
        .await
        .unwrap();
    app.start_with(StartOptions::id("deduper"), dedup_then_gate, k.clone())
        .await
        .unwrap();
    common::wait_reached(&k).await;
    // Free the id: a second execution of the enqueue would now succeed.
    assert!(app.cancel("holder").await.unwrap());
    app.shutdown().await.unwrap();

    let app = unserved(db).launch().await.unwrap();
    common::wait_reached(&k).await;
    common::release(&k);
    let handle = app.retrieve::<String>("deduper").await.unwrap();
    assert_eq!(handle.result().await.unwrap(), "deduplicated by holder");
    let children = db
        .query_text(
            "SELECT CAST(COUNT(*) AS TEXT) FROM workflow_status WHERE parent_workflow_id = 'deduper'",
        )
        .await;
    assert_eq!(children.as_deref(), Some("0"));
    app.shutdown().await.unwrap();
}

/// Definitions on the builder are stored at launch and managed from the app: list, get,
/// update limits, delete. Two definitions of one name fail the launch.
async fn queue_definitions_are_stored_and_managed(db: &TestDb) {
    let duplicate = unserved(db)
        .queue(Queue::new("a"))
        .queue(Queue::new("a"))
        .launch()
        .await;
    assert!(
        matches!(duplicate, Err(Error::InvalidArgument { .. })),
        "{duplicate:?}"
    );
    let reserved = unserved(db).queue(Queue::new("_dbos_mine")).launch().await;
    assert!(
        matches!(reserved, Err(Error::InvalidArgument { .. })),
        "{reserved:?}"
    );

    let app = unserved(db)
        .queue(
            Queue::new("orders")
                .concurrency(4)
                .rate_limit(10, Duration::from_secs(1)),
        )
        .queue(Queue::new("emails"))
        .launch()
        .await
        .unwrap();
    let names: Vec<String> = app
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, ["emails", "orders"]);
    let orders = app.get_queue("orders").await.unwrap().expect("stored");
    assert_eq!(orders.concurrency, Some(4));
    assert_eq!(
        orders.rate_limit.map(|r| (r.limit, r.period)),
        Some((10, Duration::from_secs(1)))
    );
    assert!(
        app.update_queue(Queue::new("orders").concurrency(8))
            .await
            .unwrap()
    );
    assert_eq!(
        app.get_queue("orders")
            .await
            .unwrap()
            .and_then(|q| q.concurrency),
        Some(8)
    );
    assert!(app.delete_queue("emails").await.unwrap());
    assert!(app.get_queue("emails").await.unwrap().is_none());
    app.shutdown().await.unwrap();

    // The same version relaunched (still the latest) writes its definition again.
    let app = unserved(db)
        .queue(Queue::new("orders").concurrency(2))
        .launch()
        .await
        .unwrap();
    assert_eq!(
        app.get_queue("orders")
            .await
            .unwrap()
            .and_then(|q| q.concurrency),
        Some(2)
    );
    app.shutdown().await.unwrap();
}

both_backends!(
    an_enqueue_writes_the_row_as_dbos,
    invalid_enqueues_are_refused,
    deduplication_rejects_or_returns_the_existing,
    a_delay_writes_delayed,
    an_enqueue_inside_a_workflow_happens_once_across_a_relaunch,
    a_deduplicated_enqueue_inside_a_workflow_replays_its_error,
    queue_definitions_are_stored_and_managed,
);
