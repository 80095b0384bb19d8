//! Queues: enqueueing (alone and as a parent's step), deduplication, and the `queues` table of
//! definitions.

use std::time::Duration;

use super::*;
use crate::engine::queue::Queue;
use crate::error::Error;
use crate::store::{
    CompleteWorkflow, DeleteQueue, EnqueueOutcome, EnqueueWorkflow, GetQueue, GetWorkflow,
    ListQueues, QueueUpdate, QueuedFields, RecordOutcome, RegisterAppVersion, UpdateQueue,
    UpsertQueue,
};

/// An `ENQUEUED` `checkout` on `orders` with these queue columns.
fn enqueue(id: &str, queued: QueuedFields) -> EnqueueWorkflow {
    let mut workflow = workflow(id, WorkflowState::Enqueued);
    if queued.delay_until_epoch_ms.is_some() {
        workflow.status = WorkflowState::Delayed;
    }
    workflow.timeout_ms = Some(5_000);
    EnqueueWorkflow {
        workflow,
        queued,
        parent: None,
    }
}

fn dedup(id: &str) -> QueuedFields {
    QueuedFields {
        deduplication_id: Some(id.to_owned()),
        ..QueuedFields::default()
    }
}

fn upsert(queue: Queue, application: &str, update: QueueUpdate) -> UpsertQueue {
    UpsertQueue {
        queue,
        application_name: application.to_owned(),
        update,
        now_ms: T0,
    }
}

async fn get(db: &TestStore, name: &str) -> Option<Queue> {
    db.run(GetQueue {
        name: name.to_owned(),
    })
    .await
}

conformance! {
    /// An enqueue writes DBOS's queued row: status, queue columns, no owner, no start, no
    /// deadline (it starts at dequeue), zero recovery attempts, the inputs.
    async fn an_enqueue_writes_the_queued_row(db) {
        let queued = QueuedFields {
            deduplication_id: Some("d1".to_owned()),
            priority: 7,
            partition_key: Some("eu".to_owned()),
            delay_until_epoch_ms: None,
        };
        assert_eq!(db.run(enqueue("q1", queued)).await, EnqueueOutcome::Enqueued);
        let row = db.row("q1").await;
        assert_eq!(row.status, Some(WorkflowState::Enqueued));
        assert_eq!(row.queue_name.as_deref(), Some("orders"));
        assert_eq!(row.owner_xid, None);
        assert_eq!(row.started_at_epoch_ms, None);
        assert_eq!(row.recovery_attempts, Some(0));
        assert_eq!(row.workflow_timeout_ms, Some(5_000));
        assert_eq!(row.workflow_deadline_epoch_ms, None);
        assert_eq!(row.inputs.as_deref(), Some(INPUTS));
        assert_eq!(
            db.lines("SELECT deduplication_id, priority, queue_partition_key, delay_until_epoch_ms, \
                      creator_xid FROM workflow_status WHERE workflow_uuid = 'q1'").await,
            ["d1|7|eu|NULL|owner-q1"]
        );

        let delayed = QueuedFields {
            delay_until_epoch_ms: Some(T0 + 60_000),
            ..QueuedFields::default()
        };
        assert_eq!(db.run(enqueue("q2", delayed)).await, EnqueueOutcome::Enqueued);
        assert_eq!(db.row("q2").await.status, Some(WorkflowState::Delayed));
        assert_eq!(
            db.lines("SELECT delay_until_epoch_ms FROM workflow_status WHERE workflow_uuid = 'q2'")
                .await,
            [(T0 + 60_000).to_string()]
        );
    }

    /// A deduplication id held by an unfinished workflow of the queue refuses the enqueue
    /// (nothing written) and names the holder; an existing id is reported as it is; a re-run
    /// of the same enqueue (its own creator) is the enqueue itself.
    async fn deduplication_and_existing_ids(db) {
        assert_eq!(db.run(enqueue("a", dedup("k"))).await, EnqueueOutcome::Enqueued);
        assert_eq!(
            db.run(enqueue("b", dedup("k"))).await,
            EnqueueOutcome::Deduplicated { existing_workflow_id: "a".to_owned() }
        );
        assert_eq!(db.run(GetWorkflow::of("b")).await, None);
        // The same id on another queue is free.
        let mut other = enqueue("c", dedup("k"));
        other.workflow.queue_name = Some("other".to_owned());
        assert_eq!(db.run(other).await, EnqueueOutcome::Enqueued);
        // The same enqueue again: retry-safe.
        assert_eq!(db.run(enqueue("a", dedup("k"))).await, EnqueueOutcome::Enqueued);
        // Another creator under an existing id.
        let mut again = enqueue("a", QueuedFields::default());
        again.workflow.creator_xid = "someone-else".to_owned();
        assert_eq!(
            db.run(again).await,
            EnqueueOutcome::Existing {
                name: Some("checkout".to_owned()),
                status: Some(WorkflowState::Enqueued),
            }
        );
    }

    /// Inside a workflow the child's row and the parent's checkpoint commit together; a second
    /// enqueue at the same slot is refused with the checkpoint; a parent no longer owned
    /// writes nothing.
    async fn an_enqueue_from_a_workflow_records_the_parent_step(db) {
        db.pending(&["p"]).await;
        let mut child = enqueue("p-1", QueuedFields::default());
        child.workflow.parent_workflow_id = Some("p".to_owned());
        let mut record = internal("p", 1, "checkout");
        record.child_workflow_id = Some("p-1".to_owned());
        child.parent = Some(record.clone());
        assert_eq!(db.run(child.clone()).await, EnqueueOutcome::Enqueued);
        let checkpoint = db.checkpoint("p", 1).await.expect("the parent's checkpoint");
        assert_eq!(checkpoint.child_workflow_id.as_deref(), Some("p-1"));
        assert_eq!(db.row("p-1").await.parent_workflow_id.as_deref(), Some("p"));
        // The very same enqueue again (committed unseen): answered as done.
        assert_eq!(db.run(child.clone()).await, EnqueueOutcome::Enqueued);

        let mut second = enqueue("p-other", QueuedFields::default());
        second.parent = Some(record.clone());
        assert!(matches!(
            db.run(second).await,
            EnqueueOutcome::Refused(RecordOutcome::Duplicate(_))
        ));
        assert_eq!(db.run(GetWorkflow::of("p-other")).await, None);

        let mut stranger = enqueue("p-2", QueuedFields::default());
        let mut foreign = internal("p", 2, "checkout");
        foreign.owner_xid = "not-the-owner".to_owned();
        stranger.parent = Some(foreign);
        assert!(matches!(
            db.run(stranger).await,
            EnqueueOutcome::Refused(RecordOutcome::NotOwner { .. })
        ));
        assert_eq!(db.run(GetWorkflow::of("p-2")).await, None);
        assert_eq!(db.checkpoint("p", 2).await, None);
    }

    /// A definition is stored as DBOS 3.4 writes it and read back; `Never` keeps an existing
    /// row, `Always` overwrites it; `IfLatestVersion` overwrites only for the latest version;
    /// another application's name is refused.
    async fn queue_definitions_upsert_as_dbos(db) {
        let orders = Queue::new("orders")
            .concurrency(10)
            .worker_concurrency(2)
            .rate_limit(50, Duration::from_secs(2))
            .partition_concurrency(3);
        assert!(db.run(upsert(orders.clone(), "shop", QueueUpdate::Always)).await);
        let stored = get(db, "orders").await.expect("stored");
        assert_eq!(stored.concurrency, Some(10));
        assert_eq!(stored.worker_concurrency, Some(2));
        assert_eq!(stored.rate_limit, orders.rate_limit);
        assert_eq!(stored.partition_concurrency, Some(3));
        assert!(stored.partition_queue && stored.priority_enabled);
        assert_eq!(
            db.lines("SELECT application_name, CASE WHEN priority_enabled THEN 1 ELSE 0 END, \
                      CASE WHEN partition_queue THEN 1 ELSE 0 END FROM queues").await,
            ["shop|1|1"]
        );

        let wider = Queue::new("orders").concurrency(20);
        assert!(!db.run(upsert(wider.clone(), "shop", QueueUpdate::Never)).await);
        assert_eq!(get(db, "orders").await.and_then(|q| q.concurrency), Some(10));
        assert!(!db.run(upsert(wider.clone(), "shop", QueueUpdate::Always)).await);
        assert_eq!(get(db, "orders").await.and_then(|q| q.concurrency), Some(20));

        for (version, at) in [("v1", T0), ("v2", T0 + 1)] {
            db.run(RegisterAppVersion {
                version: version.to_owned(),
                application_name: Some("shop".to_owned()),
                now_ms: at,
            })
            .await;
        }
        let narrow = Queue::new("orders").concurrency(5);
        let old = QueueUpdate::IfLatestVersion("v1".to_owned());
        db.run(upsert(narrow.clone(), "shop", old)).await;
        assert_eq!(get(db, "orders").await.and_then(|q| q.concurrency), Some(20));
        let latest = QueueUpdate::IfLatestVersion("v2".to_owned());
        db.run(upsert(narrow, "shop", latest)).await;
        assert_eq!(get(db, "orders").await.and_then(|q| q.concurrency), Some(5));

        let refused = db.attempt(upsert(Queue::new("orders"), "bank", QueueUpdate::Always)).await;
        assert!(matches!(refused, Err(Error::InvalidArgument { .. })), "{refused:?}");
    }

    /// List (own and unowned, by name), update and delete definitions.
    async fn queue_definitions_list_update_delete(db) {
        db.run(upsert(Queue::new("b"), "shop", QueueUpdate::Always)).await;
        db.run(upsert(Queue::new("a"), "shop", QueueUpdate::Always)).await;
        db.run(upsert(Queue::new("z"), "bank", QueueUpdate::Always)).await;
        db.execute("INSERT INTO queues (queue_id, name) VALUES ('u', 'unowned')").await;
        let names = |queues: Vec<Queue>| queues.into_iter().map(|q| q.name).collect::<Vec<_>>();
        let listed = db.run(ListQueues { application_name: Some("shop".to_owned()) }).await;
        assert_eq!(names(listed), ["a", "b", "unowned"]);

        let update = UpdateQueue { queue: Queue::new("a").worker_concurrency(4), now_ms: T0 + 9 };
        assert!(db.run(update).await);
        assert_eq!(get(db, "a").await.and_then(|q| q.worker_concurrency), Some(4));
        let missing = UpdateQueue { queue: Queue::new("nope"), now_ms: T0 };
        assert!(!db.run(missing).await);

        assert!(db.run(DeleteQueue { name: "a".to_owned() }).await);
        assert!(!db.run(DeleteQueue { name: "a".to_owned() }).await);
        assert!(get(db, "a").await.is_none());
    }
}

fn bounce(
    id: &str,
    inputs: Option<&str>,
    delay_until: Option<i64>,
    deadline: Option<i64>,
) -> crate::store::UpdateDelayed {
    crate::store::UpdateDelayed {
        workflow_id: id.to_owned(),
        workflow_name: "checkout".to_owned(),
        inputs: inputs.map(str::to_owned),
        delay_until_epoch_ms: delay_until,
        debounce_deadline_epoch_ms: deadline,
        now_ms: T0 + 1,
    }
}

conformance! {
    /// A debounce's write: on a `DELAYED` row of the named workflow it marks it debounced,
    /// sets the deadline once, moves the delay (capped at the deadline) and replaces the
    /// inputs; on any other row it writes nothing.
    async fn update_delayed_bounces_only_a_delayed_row(db) {
        let delayed = QueuedFields {
            deduplication_id: Some("checkout-k".to_owned()),
            delay_until_epoch_ms: Some(T0 + 100),
            ..QueuedFields::default()
        };
        assert_eq!(db.run(enqueue("d1", delayed)).await, EnqueueOutcome::Enqueued);
        let columns = "SELECT CASE WHEN is_debounced THEN 'debounced' ELSE 'plain' END, \
                       debounce_deadline_epoch_ms, delay_until_epoch_ms, deduplication_id \
                       FROM workflow_status WHERE workflow_uuid = 'd1'";
        let expect =
            |deadline: i64, delay: i64| [format!("debounced|{deadline}|{delay}|checkout-k")];
        // Marking: the deadline is set, the delay kept (under it), the inputs kept.
        assert!(db.run(bounce("d1", None, None, Some(T0 + 500))).await);
        assert_eq!(db.lines(columns).await, expect(T0 + 500, T0 + 100));
        assert_eq!(db.row("d1").await.inputs.as_deref(), Some(INPUTS));
        // A bounce within the deadline moves the delay; a later deadline does not replace it.
        let later_deadline = Some(T0 + 9_000);
        assert!(db.run(bounce("d1", Some("[2]"), Some(T0 + 300), later_deadline)).await);
        assert_eq!(db.lines(columns).await, expect(T0 + 500, T0 + 300));
        assert_eq!(db.row("d1").await.inputs.as_deref(), Some("[2]"));
        // Past the deadline: capped at it.
        assert!(db.run(bounce("d1", Some("[3]"), Some(T0 + 60_000), None)).await);
        assert_eq!(db.lines(columns).await, expect(T0 + 500, T0 + 500));
        assert_eq!(db.row("d1").await.inputs.as_deref(), Some("[3]"));
        // Retried: the same row.
        assert!(db.run(bounce("d1", Some("[3]"), Some(T0 + 60_000), None)).await);

        // Another workflow's name, or a row no longer DELAYED: nothing written.
        let mut other = bounce("d1", Some("[4]"), Some(T0 + 200), None);
        other.workflow_name = "refund".to_owned();
        assert!(!db.run(other).await);
        assert_eq!(db.run(enqueue("e1", QueuedFields::default())).await, EnqueueOutcome::Enqueued);
        assert!(!db.run(bounce("e1", Some("[4]"), Some(T0 + 200), None)).await);
        assert_eq!(db.row("e1").await.inputs.as_deref(), Some(INPUTS));
        assert!(!db.run(bounce("missing", Some("[4]"), Some(T0 + 200), None)).await);
        assert_eq!(db.row("d1").await.inputs.as_deref(), Some("[3]"));
    }
}

conformance! {
    /// Many enqueues and completions at once (which Postgres writes in shared multi-row
    /// statements) each get their own outcome: every fresh id is enqueued once, a held
    /// deduplication id and a taken id are refused as they are alone, and each completion is
    /// made only under its owner.
    /// One new id enqueued twice at once by two creators is enqueued once.
    async fn concurrent_enqueues_and_completions_each_get_their_own_outcome(db) {
        db.run(enqueue("held", dedup("k"))).await;
        let enqueues = (0..64).map(|i| {
            let op = match i {
                0 => enqueue("late", dedup("k")),
                1 => enqueue("held", QueuedFields::default()),
                // One new id twice, by two creators: one enqueues it, the other finds it.
                // (Late in the list: the first few are written alone, the rest in batches.)
                40 | 41 => {
                    let mut twin = enqueue("twin", QueuedFields::default());
                    twin.workflow.creator_xid = format!("creator-{i}");
                    twin
                }
                _ => enqueue(&format!("q{i}"), QueuedFields::default()),
            };
            async move { db.run(op).await }
        });
        let outcomes = futures::future::join_all(enqueues).await;
        assert_eq!(
            outcomes[0],
            EnqueueOutcome::Deduplicated { existing_workflow_id: "held".to_owned() }
        );
        // The same id by its own creator: the enqueue itself, committed before.
        assert_eq!(outcomes[1], EnqueueOutcome::Enqueued);
        let twins = [&outcomes[40], &outcomes[41]];
        assert!(twins.contains(&&EnqueueOutcome::Enqueued), "{twins:?}");
        assert!(
            twins.iter().any(|o| matches!(o, EnqueueOutcome::Existing { .. })),
            "{twins:?}"
        );
        let others = outcomes[2..40].iter().chain(&outcomes[42..]);
        assert!(others.into_iter().all(|o| *o == EnqueueOutcome::Enqueued));
        assert_eq!(
            db.count("SELECT COUNT(*) FROM workflow_status WHERE status = 'ENQUEUED'").await,
            62
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM workflow_input").await, 62);

        let ids: Vec<String> = (0..64).map(|i| format!("p{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        db.pending(&refs).await;
        let completions = ids.iter().enumerate().map(|(i, id)| {
            // Every fourth completion is attempted by a stranger.
            let owner = if i % 4 == 0 { "stranger".to_owned() } else { owner(id) };
            async move { db.run(CompleteWorkflow(completion(id, &owner))).await }
        });
        let completed = futures::future::join_all(completions).await;
        for (i, made) in completed.iter().enumerate() {
            assert_eq!(*made, i % 4 != 0, "completion of p{i}");
        }
        assert_eq!(
            db.count("SELECT COUNT(*) FROM workflow_status WHERE status = 'SUCCESS'").await,
            48
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM workflow_output").await, 48);
    }
}
