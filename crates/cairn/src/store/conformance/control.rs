//! Cancelling, descendants, resuming, and claiming enqueued workflows.

use std::sync::Arc;

use super::*;
use crate::status::WorkflowState;
use crate::store::{
    CancelWorkflows, ClaimEnqueued, ClaimLimits, CompleteWorkflow, DeadLetter, Descendants,
    InsertWorkflow, QueueClaim, QueuePartitions, RecordOutcome, RecordStep, ResumeWorkflow,
};

/// Cancel these workflows at `now_ms`.
fn cancel(ids: &[&str], now_ms: i64) -> CancelWorkflows {
    CancelWorkflows {
        workflow_ids: strings(ids),
        now_ms,
    }
}

/// Resume `workflow_id` onto DBOS's internal queue at `now_ms`.
fn resume(workflow_id: &str, now_ms: i64) -> ResumeWorkflow {
    ResumeWorkflow {
        workflow_id: workflow_id.to_owned(),
        queue_name: "_dbos_internal_queue".to_owned(),
        now_ms,
    }
}

/// Claim up to `limit` `checkout` workflows of queue `orders` for `shop`, executor `worker`,
/// version `v1`, as `new_owner`.
pub(super) fn claim(new_owner: &str, limit: i64, now_ms: i64) -> ClaimEnqueued {
    let limits = ClaimLimits {
        priority_enabled: true,
        ..ClaimLimits::default()
    };
    claim_under(new_owner, limit, now_ms, limits)
}

/// As [`claim`], under these limits.
fn claim_under(new_owner: &str, limit: i64, now_ms: i64, limits: ClaimLimits) -> ClaimEnqueued {
    ClaimEnqueued(QueueClaim {
        queue_name: "orders".to_owned(),
        names: strings(&["checkout"]),
        executor_id: "worker".to_owned(),
        app_version: "v1".to_owned(),
        application_name: Some("shop".to_owned()),
        new_owner: new_owner.to_owned(),
        now_ms,
        limit,
        limits,
        partition_key: None,
        probe: true,
    })
}

/// An enqueued `checkout` on `orders`, created at `T0 + age`.
pub(super) fn enqueued(id: &str, age: i64) -> NewWorkflow {
    NewWorkflow {
        now_ms: T0 + age,
        ..workflow(id, WorkflowState::Enqueued)
    }
}

/// The descendants of `workflow_id`, sorted.
async fn descendants(db: &TestStore, workflow_id: &str) -> Vec<String> {
    let mut found = db
        .run(Descendants {
            workflow_id: workflow_id.to_owned(),
        })
        .await;
    found.sort();
    found
}

conformance! {
    /// Only unfinished workflows (`PENDING`, `ENQUEUED`, `DELAYED`) are cancelled, each once, in
    /// the order asked, with their run fields cleared; finished and missing ones are untouched.
    async fn cancelling_touches_only_unfinished_workflows(db) {
        db.pending(&["running", "done"]).await;
        for id in ["queued", "delayed"] {
            db.run(InsertWorkflow(workflow(id, WorkflowState::Enqueued))).await;
        }
        db.execute(
            "UPDATE workflow_status SET status = 'DELAYED' WHERE workflow_uuid = 'delayed'; \
             UPDATE workflow_status SET deduplication_id = 'd' WHERE workflow_uuid = 'queued';",
        )
        .await;
        assert!(db.run(CompleteWorkflow(completion("done", "owner-done"))).await);

        let asked = ["queued", "done", "missing", "running", "queued", "delayed"];
        assert_eq!(
            db.run(cancel(&asked, T0 + 9_000)).await,
            ["queued", "running", "delayed"]
        );
        for id in ["running", "queued", "delayed"] {
            let row = db.row(id).await;
            assert_eq!(row.status, Some(WorkflowState::Cancelled), "{id}");
            assert_eq!(
                (row.owner_xid, row.queue_name, row.started_at_epoch_ms, row.updated_at),
                (None, None, None, T0 + 9_000),
                "{id}"
            );
        }
        assert_eq!(
            db.lines("SELECT deduplication_id FROM workflow_status WHERE workflow_uuid = 'queued'")
                .await,
            ["NULL"]
        );
        let done = db.row("done").await;
        assert_eq!((done.status, done.updated_at), (Some(WorkflowState::Success), T0 + 1_000));
        assert!(db.run(cancel(&asked, T0 + 9_500)).await.is_empty(), "already cancelled");
        assert!(db.run(cancel(&[], T0 + 9_500)).await.is_empty());
        assert_eq!(db.row("running").await.updated_at, T0 + 9_000);
    }

    /// A cancelled workflow's owner can no longer checkpoint or complete it.
    async fn a_cancelled_workflows_owner_can_no_longer_write(db) {
        db.pending(&["w"]).await;
        db.run(cancel(&["w"], T0 + 1)).await;
        assert_eq!(
            db.run(RecordStep(step("w", "owner-w", 1))).await,
            RecordOutcome::NotOwner { status: Some(WorkflowState::Cancelled) }
        );
        assert!(!db.run(CompleteWorkflow(completion("w", "owner-w"))).await);
        assert_eq!(db.row("w").await.status, Some(WorkflowState::Cancelled));
    }

    /// Descendants follow `parent_workflow_id` through every level, each once, never the
    /// workflow itself nor another tree.
    async fn descendants_cover_every_level(db) {
        for (id, parent) in [
            ("root", None),
            ("a", Some("root")),
            ("b", Some("root")),
            ("a1", Some("a")),
            ("a2", Some("a")),
            ("a1x", Some("a1")),
            ("stranger", None),
            ("s1", Some("stranger")),
        ] {
            let mut wf = workflow(id, WorkflowState::Pending);
            wf.parent_workflow_id = parent.map(str::to_owned);
            db.run(InsertWorkflow(wf)).await;
        }
        assert_eq!(descendants(db, "root").await, ["a", "a1", "a1x", "a2", "b"]);
        assert_eq!(descendants(db, "a").await, ["a1", "a1x", "a2"]);
        assert_eq!(descendants(db, "a1").await, ["a1x"]);
        assert!(descendants(db, "a1x").await.is_empty());
        assert!(descendants(db, "nowhere").await.is_empty());
    }

    /// A cancelled workflow is put back as DBOS 3.4 does: `ENQUEUED` on the internal queue,
    /// owner, deadline and start time cleared, attempts reset, its executor, version and
    /// checkpoints kept; its old owner can no longer write.
    async fn resuming_a_cancelled_workflow_enqueues_it_as_dbos_does(db) {
        let mut wf = workflow("w", WorkflowState::Pending);
        (wf.timeout_ms, wf.deadline_epoch_ms) = (Some(60_000), Some(T0 + 60_000));
        db.run(InsertWorkflow(wf)).await;
        db.run(RecordStep(step("w", "owner-w", 1))).await;
        db.run(cancel(&["w"], T0 + 1_000)).await;

        let now = T0 + 100_000;
        assert_eq!(db.run(resume("w", now)).await, Some(true));
        let row = db.row("w").await;
        assert_eq!(row.status, Some(WorkflowState::Enqueued));
        assert_eq!(row.queue_name.as_deref(), Some("_dbos_internal_queue"));
        assert_eq!(row.owner_xid, None);
        assert_eq!(row.recovery_attempts, Some(0));
        assert_eq!(
            (row.started_at_epoch_ms, row.workflow_deadline_epoch_ms, row.completed_at),
            (None, None, None)
        );
        assert_eq!(row.workflow_timeout_ms, Some(60_000), "the timeout stays for the next run");
        assert_eq!(row.updated_at, now);
        assert_eq!(row.executor_id.as_deref(), Some("local"));
        assert_eq!(row.application_version.as_deref(), Some("v1"));
        assert_eq!(row.inputs.as_deref(), Some(INPUTS));
        assert!(matches!(
            db.run(RecordStep(step("w", "owner-w", 2))).await,
            RecordOutcome::NotOwner { .. }
        ));
    }

    /// Finished workflows (`SUCCESS`, `ERROR`) are left as they are; a missing one answers
    /// `None`; a running, dead-lettered or enqueued one is put back on the queue.
    async fn resume_leaves_finished_workflows_alone_and_enqueues_the_rest(db) {
        db.pending(&["running", "done", "failed", "dead"]).await;
        db.run(InsertWorkflow(workflow("queued", WorkflowState::Enqueued))).await;
        assert!(db.run(CompleteWorkflow(completion("done", "owner-done"))).await);
        let failure = Completion {
            status: WorkflowState::Error,
            output: None,
            error: Some(r#"{"name":"E","message":"m"}"#.to_owned()),
            ..completion("failed", "owner-failed")
        };
        assert!(db.run(CompleteWorkflow(failure)).await);
        assert!(
            db.run(DeadLetter {
                workflow_id: "dead".to_owned(),
                owner_xid: "owner-dead".to_owned(),
                now_ms: T0 + 2,
            })
            .await
        );
        assert_eq!(db.run(resume("done", T0 + 5)).await, Some(false));
        assert_eq!(db.run(resume("failed", T0 + 5)).await, Some(false));
        assert_eq!(db.run(resume("missing", T0 + 5)).await, None);
        assert_eq!(db.row("done").await.status, Some(WorkflowState::Success));
        assert_eq!(db.row("failed").await.status, Some(WorkflowState::Error));
        for id in ["running", "dead", "queued"] {
            assert_eq!(db.run(resume(id, T0 + 10)).await, Some(true), "{id}");
            let row = db.row(id).await;
            assert_eq!(row.status, Some(WorkflowState::Enqueued), "{id}");
            assert_eq!(row.queue_name.as_deref(), Some("_dbos_internal_queue"), "{id}");
            assert_eq!((row.owner_xid, row.recovery_attempts), (None, Some(0)), "{id}");
        }
    }

    /// A claim takes the oldest `ENQUEUED` workflows of its queue whose function it can run, of
    /// its application (or unclaimed) and version (or none), up to its limit: each becomes
    /// `PENDING` here under the new owner, started now, one attempt more, with a deadline from
    /// its timeout.
    async fn claiming_takes_the_oldest_matching_enqueued_workflows(db) {
        let mut timed = enqueued("timed", 1);
        timed.timeout_ms = Some(5_000);
        let mut unclaimed = enqueued("unclaimed", 2);
        unclaimed.application_name = None;
        let mut other_queue = enqueued("other-queue", 0);
        other_queue.queue_name = Some("emails".to_owned());
        let mut other_name = enqueued("other-name", 0);
        other_name.name = "refund".to_owned();
        let mut other_app = enqueued("other-app", 0);
        other_app.application_name = Some("bank".to_owned());
        let mut other_version = enqueued("other-version", 0);
        other_version.app_version = Some("v0".to_owned());
        for wf in [
            enqueued("first", 0),
            timed,
            unclaimed,
            enqueued("no-version", 3),
            enqueued("last", 4),
            other_queue,
            other_name,
            other_app,
            other_version,
        ] {
            db.run(InsertWorkflow(wf)).await;
        }
        db.pending(&["running"]).await;
        db.execute(
            "UPDATE workflow_status SET application_version = NULL WHERE workflow_uuid = 'no-version'",
        )
        .await;

        let now = T0 + 50;
        let claimed = db.run(claim("worker-1", 4, now)).await;
        assert_eq!(ids(&claimed), ["first", "no-version", "timed", "unclaimed"]);
        for c in &claimed {
            let row = &c.row;
            assert_eq!(row.status, Some(WorkflowState::Pending), "{}", row.workflow_id);
            assert_eq!(row.owner_xid.as_deref(), Some("worker-1"));
            assert_eq!(row.executor_id.as_deref(), Some("worker"));
            assert_eq!(row.application_version.as_deref(), Some("v1"));
            assert_eq!(row.started_at_epoch_ms, Some(now));
            assert_eq!(row.recovery_attempts, Some(1));
            assert_eq!(row.inputs.as_deref(), Some(INPUTS));
            let deadline = (row.workflow_id == "timed").then_some(now + 5_000);
            assert_eq!(row.workflow_deadline_epoch_ms, deadline, "{}", row.workflow_id);
            assert_eq!(db.row(&row.workflow_id).await, *row);
        }
        assert!(claimed.iter().all(|c| c.checkpoints.is_empty()));

        let rest = db.run(claim("worker-2", 10, now + 1)).await;
        assert_eq!(ids(&rest), ["last"]);
        assert!(db.run(claim("worker-3", 10, now + 2)).await.is_empty(), "an idle queue");
        for id in ["other-queue", "other-name", "other-app", "other-version"] {
            assert_eq!(db.row(id).await.status, Some(WorkflowState::Enqueued), "{id}");
        }
        assert_eq!(db.row("running").await.owner_xid.as_deref(), Some("owner-running"));
    }

    /// A claim takes higher priority (lower number) first, then older; a timeout keeps a
    /// deadline already set; the checkpoints recorded so far come with the row.
    async fn claiming_follows_priority_then_age(db) {
        for (id, age) in [("old", 0), ("new", 10), ("urgent", 20)] {
            db.run(InsertWorkflow(enqueued(id, age))).await;
        }
        db.execute(
            "UPDATE workflow_status SET priority = -1 WHERE workflow_uuid = 'urgent'; \
             UPDATE workflow_status SET workflow_timeout_ms = 5000, \
                 workflow_deadline_epoch_ms = 42 WHERE workflow_uuid = 'old'; \
             INSERT INTO operation_outputs (workflow_uuid, function_id, function_name, output, \
                 serialization) VALUES ('old', 1, 'step1', '\"x\"', 'portable_json');",
        )
        .await;
        let first = db.run(claim("w1", 1, T0 + 100)).await;
        assert_eq!(ids(&first), ["urgent"]);
        let second = db.run(claim("w2", 1, T0 + 100)).await;
        assert_eq!(ids(&second), ["old"]);
        assert_eq!(second[0].row.workflow_deadline_epoch_ms, Some(42));
        assert_eq!(function_ids(&second[0].checkpoints), [1]);
        assert_eq!(second[0].checkpoints[0].output.as_deref(), Some("\"x\""));
        assert_eq!(ids(&db.run(claim("w3", 1, T0 + 100)).await), ["new"]);
    }

    /// Without `priority_enabled` a claim takes the oldest first, whatever the priorities.
    async fn claiming_ignores_priority_unless_enabled(db) {
        for (id, age) in [("old", 0), ("urgent", 20)] {
            db.run(InsertWorkflow(enqueued(id, age))).await;
        }
        db.execute("UPDATE workflow_status SET priority = -1 WHERE workflow_uuid = 'urgent'")
            .await;
        let fifo = claim_under("w1", 1, T0 + 100, ClaimLimits::default());
        assert_eq!(ids(&db.run(fifo).await), ["old"]);
    }

    /// Global concurrency counts the queue's `PENDING` rows of every executor; worker
    /// concurrency those of the claiming executor; a finished row frees its slot.
    async fn claiming_leaves_room_for_running_workflows(db) {
        for i in 0..8 {
            db.run(InsertWorkflow(enqueued(&format!("q{i}"), i))).await;
        }
        let global = ClaimLimits {
            concurrency: Some(3),
            ..ClaimLimits::default()
        };
        assert_eq!(ids(&db.run(claim_under("a", 10, T0 + 100, global.clone())).await), ["q0", "q1", "q2"]);
        assert!(db.run(claim_under("b", 10, T0 + 101, global.clone())).await.is_empty());
        db.execute("UPDATE workflow_status SET status = 'SUCCESS' WHERE workflow_uuid = 'q0'")
            .await;
        assert_eq!(ids(&db.run(claim_under("c", 10, T0 + 102, global)).await), ["q3"]);

        // Three PENDING rows belong to executor `worker`; another executor has its own room.
        let worker = ClaimLimits {
            worker_concurrency: Some(4),
            ..ClaimLimits::default()
        };
        assert_eq!(ids(&db.run(claim_under("d", 10, T0 + 103, worker.clone())).await), ["q4"]);
        let mut elsewhere = claim_under("e", 10, T0 + 104, worker);
        elsewhere.0.executor_id = "other".to_owned();
        assert_eq!(ids(&db.run(elsewhere).await), ["q5", "q6", "q7"]);
    }

    /// A rate limit counts the queue's rows started within the last period (running or
    /// finished, not waiting), as DBOS 3.4's limiter does.
    async fn claiming_honours_the_rate_limit(db) {
        for i in 0..5 {
            db.run(InsertWorkflow(enqueued(&format!("q{i}"), i))).await;
        }
        let limited = ClaimLimits {
            rate_limit: Some((2, 1_000)),
            ..ClaimLimits::default()
        };
        assert_eq!(ids(&db.run(claim_under("a", 10, T0 + 100, limited.clone())).await), ["q0", "q1"]);
        db.execute("UPDATE workflow_status SET status = 'SUCCESS' WHERE workflow_uuid = 'q0'")
            .await;
        assert!(db.run(claim_under("b", 10, T0 + 1_099, limited.clone())).await.is_empty());
        assert_eq!(ids(&db.run(claim_under("c", 10, T0 + 1_100, limited)).await), ["q2", "q3"]);
    }

    /// A partition's claim takes only its rows, under the partition's limits and the
    /// queue's; the partitions listed are those with rows waiting.
    async fn claiming_one_partition_applies_its_limits(db) {
        for i in 0..6 {
            db.run(InsertWorkflow(enqueued(&format!("q{i}"), i))).await;
        }
        db.execute(
            "UPDATE workflow_status SET queue_partition_key = 'even' \
                 WHERE workflow_uuid IN ('q0', 'q2', 'q4'); \
             UPDATE workflow_status SET queue_partition_key = 'odd' \
                 WHERE workflow_uuid IN ('q1', 'q3', 'q5');",
        )
        .await;
        let listed = QueuePartitions {
            queue_name: "orders".to_owned(),
            now_ms: T0 + 100,
        };
        let mut partitions = db.run(listed.clone()).await;
        partitions.sort();
        assert_eq!(partitions, ["even", "odd"]);
        let limits = ClaimLimits {
            partition_concurrency: Some(2),
            ..ClaimLimits::default()
        };
        let mut even = claim_under("a", 10, T0 + 100, limits.clone());
        even.0.partition_key = Some("even".to_owned());
        assert_eq!(ids(&db.run(even.clone()).await), ["q0", "q2"]);
        even.0.new_owner = "b".to_owned();
        assert!(db.run(even).await.is_empty(), "the partition is full");
        let mut odd = claim_under("c", 10, T0 + 100, limits);
        odd.0.partition_key = Some("odd".to_owned());
        assert_eq!(ids(&db.run(odd).await), ["q1", "q3"]);
        db.execute("UPDATE workflow_status SET status = 'SUCCESS' WHERE queue_partition_key = 'odd'")
            .await;
        assert_eq!(db.run(listed).await, ["even"]);
    }

    /// A `DELAYED` row becomes `ENQUEUED` (and claimable) once its delay has passed, not
    /// before.
    async fn claiming_promotes_due_delayed_workflows(db) {
        db.run(InsertWorkflow(enqueued("later", 0))).await;
        db.execute(
            "UPDATE workflow_status SET status = 'DELAYED', delay_until_epoch_ms = 500 + created_at \
                 WHERE workflow_uuid = 'later'",
        )
        .await;
        assert!(db.run(claim("a", 10, T0 + 499)).await.is_empty());
        assert_eq!(db.row("later").await.status, Some(WorkflowState::Delayed));
        assert_eq!(ids(&db.run(claim("b", 10, T0 + 500)).await), ["later"]);
    }

    /// Concurrent claimers never take the same workflow, and together take all of them (each
    /// claim under a fresh token, as the dispatcher makes them).
    async fn concurrent_claimers_take_each_workflow_once(db) {
        for i in 0..40 {
            db.run(InsertWorkflow(enqueued(&format!("q{i:02}"), i))).await;
        }
        let claimers: Vec<_> = (0..4)
            .map(|c| {
                let store = Arc::clone(&db.store);
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    let mut round = 0;
                    loop {
                        round += 1;
                        let token = format!("worker-{c}-{round}");
                        let batch = store.run(claim(&token, 3, T0 + 100)).await?;
                        if batch.is_empty() {
                            return Ok::<_, crate::error::Error>(mine);
                        }
                        assert!(batch.iter().all(|b| b.row.owner_xid.as_deref() == Some(&*token)));
                        mine.extend(batch);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for claimer in futures::future::join_all(claimers).await {
            let claimed = claimer.expect("the task").expect("claim");
            for c in &claimed {
                let owner = db.row(&c.row.workflow_id).await.owner_xid;
                assert_eq!(owner, c.row.owner_xid, "{} changed hands", c.row.workflow_id);
            }
            all.extend(claimed);
        }
        let expected: Vec<String> = (0..40).map(|i| format!("q{i:02}")).collect();
        assert_eq!(ids(&all), expected);
    }

    /// Concurrent claimers sharing a global concurrency limit take turns: together they
    /// never hold more than the limit, however many claim at once.
    async fn concurrent_claimers_share_the_global_limit(db) {
        for i in 0..40 {
            db.run(InsertWorkflow(enqueued(&format!("q{i:02}"), i))).await;
        }
        let claimers: Vec<_> = (0..8)
            .map(|c| {
                let store = Arc::clone(&db.store);
                tokio::spawn(async move {
                    let limits = ClaimLimits {
                        concurrency: Some(5),
                        ..ClaimLimits::default()
                    };
                    let token = format!("worker-{c}");
                    let claimed = store.run(claim_under(&token, 3, T0 + 100, limits)).await?;
                    Ok::<_, crate::error::Error>(claimed.len())
                })
            })
            .collect();
        let mut total = 0;
        for claimer in futures::future::join_all(claimers).await {
            total += claimer.expect("the task").expect("claim");
        }
        assert_eq!(total, 5, "the claimers filled the limit and no more");
    }
}
