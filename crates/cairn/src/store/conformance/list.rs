//! Listing workflows and steps: every filter, their combination, order and paging, the
//! payload flags, and the status row's full set of columns.

use super::*;
#[cfg(feature = "sqlite")]
use crate::error::Error;
use crate::store::{
    CompleteWorkflow, InsertWorkflow, ListSteps, ListWorkflows, MsRange, RecordStep,
};

/// A listing that loads everything and filters nothing (the base of each case).
fn all() -> ListWorkflows {
    ListWorkflows {
        load_input: true,
        load_output: true,
        ..ListWorkflows::default()
    }
}

/// The ids a listing answers, in its order.
async fn listed(db: &TestStore, op: ListWorkflows) -> Vec<String> {
    db.run(op)
        .await
        .into_iter()
        .map(|row| row.workflow_id)
        .collect()
}

/// Owned strings.
fn s(values: &[&str]) -> Vec<String> {
    strings(values)
}

/// Six workflows created 1 ms apart (`a` first), with different names, queues, statuses,
/// versions, executors, applications, parents, forks, users, schedules and attributes.
async fn fixtures(db: &TestStore) {
    let specs = [
        (
            "a",
            "checkout",
            WorkflowState::Pending,
            None,
            "v1",
            "local",
            Some("shop"),
        ),
        (
            "b",
            "checkout",
            WorkflowState::Enqueued,
            Some("orders"),
            "v1",
            "exec-2",
            Some("shop"),
        ),
        (
            "c",
            "refund",
            WorkflowState::Pending,
            None,
            "v2",
            "local",
            Some("billing"),
        ),
        (
            "d",
            "refund",
            WorkflowState::Enqueued,
            Some("emails"),
            "v2",
            "exec-2",
            None,
        ),
        (
            "ab-1",
            "report",
            WorkflowState::Pending,
            None,
            "v1",
            "local",
            Some("shop"),
        ),
        (
            "a_%",
            "report",
            WorkflowState::Pending,
            None,
            "v1",
            "local",
            Some("shop"),
        ),
    ];
    for (n, (id, name, status, queue, version, executor, application)) in
        specs.into_iter().enumerate()
    {
        let wf = NewWorkflow {
            name: name.to_owned(),
            queue_name: queue.map(str::to_owned),
            app_version: Some(version.to_owned()),
            executor_id: executor.to_owned(),
            application_name: application.map(str::to_owned),
            now_ms: T0 + n as i64,
            ..workflow(id, status)
        };
        db.run(InsertWorkflow(wf)).await;
    }
    // `a` succeeds at T0 + 100; `c` is a child of `a`, `d` a fork of `b`.
    db.run(CompleteWorkflow(Completion {
        now_ms: T0 + 100,
        ..completion("a", &owner("a"))
    }))
    .await;
    db.execute(
        "UPDATE workflow_status SET parent_workflow_id = 'a' WHERE workflow_uuid = 'c';
         UPDATE workflow_status SET forked_from = 'b' WHERE workflow_uuid = 'd';
         UPDATE workflow_status SET was_forked_from = TRUE WHERE workflow_uuid = 'b';
         UPDATE workflow_status SET authenticated_user = 'ann', schedule_name = 'nightly',
             attributes = '{\"tenant\":\"t1\",\"tier\":2,\"vip\":true,\"note\":null}'
             WHERE workflow_uuid = 'b';
         UPDATE workflow_status SET authenticated_user = 'bob',
             attributes = '{\"tenant\":\"t1\",\"tier\":3}' WHERE workflow_uuid = 'c';
         UPDATE workflow_status SET updated_at = 1700000000500 WHERE workflow_uuid = 'd';",
    )
    .await;
}

conformance! {
    /// With no filter every workflow is listed, oldest first (DBOS's default order); each
    /// filter keeps exactly the rows it names, and a list-valued filter matches any value.
    async fn each_filter_keeps_exactly_the_rows_it_names(db) {
        fixtures(db).await;
        let cases: Vec<(&str, ListWorkflows, Vec<String>)> = vec![
            ("none", all(), s(&["a", "b", "c", "d", "ab-1", "a_%"])),
            ("ids", ListWorkflows { workflow_ids: Some(s(&["d", "a", "zz"])), ..all() }, s(&["a", "d"])),
            ("no ids", ListWorkflows { workflow_ids: Some(vec![]), ..all() }, vec![]),
            ("prefix", ListWorkflows { id_prefixes: s(&["ab"]), ..all() }, s(&["ab-1"])),
            ("prefix is literal", ListWorkflows { id_prefixes: s(&["a_"]), ..all() }, s(&["a_%"])),
            ("prefixes", ListWorkflows { id_prefixes: s(&["c", "d"]), ..all() }, s(&["c", "d"])),
            ("prefix is case-sensitive", ListWorkflows { id_prefixes: s(&["A"]), ..all() }, vec![]),
            ("status", ListWorkflows { statuses: s(&["ENQUEUED"]), ..all() }, s(&["b", "d"])),
            ("statuses", ListWorkflows { statuses: s(&["ENQUEUED", "SUCCESS"]), ..all() }, s(&["a", "b", "d"])),
            ("name", ListWorkflows { names: s(&["refund"]), ..all() }, s(&["c", "d"])),
            ("queue", ListWorkflows { queue_names: s(&["orders"]), ..all() }, s(&["b"])),
            ("queued only", ListWorkflows { queued_only: true, ..all() }, s(&["b", "d"])),
            ("version", ListWorkflows { app_versions: s(&["v2"]), ..all() }, s(&["c", "d"])),
            ("executor", ListWorkflows { executor_ids: s(&["exec-2"]), ..all() }, s(&["b", "d"])),
            ("parent", ListWorkflows { parent_workflow_ids: s(&["a"]), ..all() }, s(&["c"])),
            ("forked from", ListWorkflows { forked_from: s(&["b"]), ..all() }, s(&["d"])),
            ("user", ListWorkflows { users: s(&["ann", "bob"]), ..all() }, s(&["b", "c"])),
            ("schedule", ListWorkflows { schedule_names: s(&["nightly"]), ..all() }, s(&["b"])),
            ("application (and unclaimed)", ListWorkflows { application_names: s(&["billing"]), ..all() }, s(&["c", "d"])),
            ("created", ListWorkflows { created: MsRange { min: Some(T0 + 1), max: Some(T0 + 3) }, ..all() }, s(&["b", "c", "d"])),
            ("created from", ListWorkflows { created: MsRange { min: Some(T0 + 4), max: None }, ..all() }, s(&["ab-1", "a_%"])),
            ("updated", ListWorkflows { updated: MsRange { min: Some(T0 + 100), max: None }, ..all() }, s(&["a", "d"])),
            ("completed", ListWorkflows { completed: MsRange { min: None, max: Some(T0 + 100) }, ..all() }, s(&["a"])),
            ("dequeued", ListWorkflows { dequeued: MsRange { min: Some(T0 + 2), max: None }, ..all() }, s(&["c", "ab-1", "a_%"])),
            ("was forked from", ListWorkflows { was_forked_from: Some(true), ..all() }, s(&["b"])),
            ("is a fork", ListWorkflows { is_fork: Some(true), ..all() }, s(&["d"])),
            ("is not a fork", ListWorkflows { is_fork: Some(false), statuses: s(&["ENQUEUED"]), ..all() }, s(&["b"])),
            ("has a parent", ListWorkflows { has_parent: Some(true), ..all() }, s(&["c"])),
            ("top level", ListWorkflows { has_parent: Some(false), names: s(&["refund"]), ..all() }, s(&["d"])),
            ("attribute", ListWorkflows { attributes: vec![("tenant".into(), "t1".into())], ..all() }, s(&["b", "c"])),
            ("attributes", ListWorkflows { attributes: vec![("tenant".into(), "t1".into()), ("tier".into(), 3.into())], ..all() }, s(&["c"])),
            ("attribute number as float", ListWorkflows { attributes: vec![("tier".into(), 2.0.into())], ..all() }, s(&["b"])),
            ("attribute bool and null", ListWorkflows { attributes: vec![("vip".into(), true.into()), ("note".into(), serde_json::Value::Null)], ..all() }, s(&["b"])),
            ("attribute absent", ListWorkflows { attributes: vec![("note".into(), serde_json::Value::Null), ("tier".into(), 3.into())], ..all() }, vec![]),
            ("attribute of another type", ListWorkflows { attributes: vec![("tier".into(), "2".into())], ..all() }, vec![]),
            ("combined", ListWorkflows { names: s(&["checkout", "refund"]), app_versions: s(&["v1"]), statuses: s(&["ENQUEUED"]), ..all() }, s(&["b"])),
        ];
        for (what, op, expected) in cases {
            assert_eq!(listed(db, op).await, expected, "{what}");
        }
    }

    /// Newest first reverses the order; limit and offset page through it.
    async fn listings_sort_and_page(db) {
        fixtures(db).await;
        let newest = ListWorkflows { newest_first: true, ..all() };
        assert_eq!(listed(db, newest.clone()).await, s(&["a_%", "ab-1", "d", "c", "b", "a"]));
        let page = ListWorkflows { limit: Some(2), offset: Some(1), ..newest };
        assert_eq!(listed(db, page).await, s(&["ab-1", "d"]));
        let first = ListWorkflows { limit: Some(2), ..all() };
        assert_eq!(listed(db, first).await, s(&["a", "b"]));
        let rest = ListWorkflows { offset: Some(4), ..all() };
        assert_eq!(listed(db, rest).await, s(&["ab-1", "a_%"]));
    }

    /// The payload flags decide whether inputs and outputs are read; every status column is
    /// read either way.
    async fn payloads_are_read_only_when_asked(db) {
        fixtures(db).await;
        let ids = Some(s(&["a"]));
        let full = db.run(ListWorkflows { workflow_ids: ids.clone(), ..all() }).await;
        assert_eq!(full[0].inputs.as_deref(), Some(INPUTS));
        assert_eq!(full[0].output.as_deref(), Some("\"done\""));
        let bare = db
            .run(ListWorkflows { workflow_ids: ids.clone(), ..ListWorkflows::default() })
            .await;
        assert_eq!((bare[0].inputs.clone(), bare[0].output.clone()), (None, None));
        assert_eq!(
            WorkflowRow { inputs: None, output: None, error: None, ..full[0].clone() },
            bare[0]
        );
        let inputs_only = db
            .run(ListWorkflows { workflow_ids: ids, load_input: true, ..ListWorkflows::default() })
            .await;
        assert_eq!(inputs_only[0].inputs.as_deref(), Some(INPUTS));
        assert_eq!(inputs_only[0].output, None);
    }

    /// The workflow row carries every column DBOS shows, as `GetWorkflow` and a listing read it.
    async fn a_workflow_row_carries_every_column(db) {
        fixtures(db).await;
        db.execute(
            "UPDATE workflow_status SET deduplication_id = 'dedup', priority = 7,
                 queue_partition_key = 'p1', delay_until_epoch_ms = 1700000009999,
                 assumed_role = 'admin', authenticated_roles = '[\"admin\",\"user\"]',
                 class_name = 'Shop', workflow_timeout_ms = 60000,
                 workflow_deadline_epoch_ms = 1700000060000
             WHERE workflow_uuid = 'b'",
        )
        .await;
        let row = db.row("b").await;
        assert_eq!(row.deduplication_id.as_deref(), Some("dedup"));
        assert_eq!(row.priority, 7);
        assert_eq!(row.queue_partition_key.as_deref(), Some("p1"));
        assert_eq!(row.delay_until_epoch_ms, Some(1_700_000_009_999));
        assert_eq!(row.authenticated_user.as_deref(), Some("ann"));
        assert_eq!(row.assumed_role.as_deref(), Some("admin"));
        assert_eq!(row.authenticated_roles.as_deref(), Some(r#"["admin","user"]"#));
        assert_eq!(row.schedule_name.as_deref(), Some("nightly"));
        assert_eq!(row.class_name.as_deref(), Some("Shop"));
        assert_eq!((row.workflow_timeout_ms, row.workflow_deadline_epoch_ms), (Some(60_000), Some(1_700_000_060_000)));
        assert!(row.was_forked_from);
        let attributes: serde_json::Value =
            serde_json::from_str(row.attributes.as_deref().expect("attributes")).expect("JSON");
        assert_eq!(attributes, serde_json::json!({"tenant": "t1", "tier": 2, "vip": true, "note": null}));
        let d = db.row("d").await;
        assert_eq!((d.forked_from.as_deref(), d.was_forked_from, d.priority), (Some("b"), false, 0));
        let listed = db.run(ListWorkflows { workflow_ids: Some(s(&["b"])), ..all() }).await;
        assert_eq!(listed, [row]);
    }

    /// A row in a format Cairn cannot decode, or with attributes that are not JSON, is
    /// listed all the same (its values raw), and an attribute filter passes over it.
    async fn rows_cairn_cannot_decode_are_listed(db) {
        fixtures(db).await;
        db.execute(
            "UPDATE workflow_status SET serialization = 'py_pickle' WHERE workflow_uuid = 'a';
             UPDATE workflow_input SET inputs = 'gASVAAAA' WHERE workflow_uuid = 'a'",
        )
        .await;
        let rows = db.run(ListWorkflows { workflow_ids: Some(s(&["a"])), ..all() }).await;
        assert_eq!(rows[0].serialization.as_deref(), Some("py_pickle"));
        assert_eq!(rows[0].inputs.as_deref(), Some("gASVAAAA"));
        let tenant = ListWorkflows { attributes: vec![("tenant".into(), "t1".into())], ..all() };
        assert_eq!(listed(db, tenant).await, s(&["b", "c"]));
    }

    /// Steps are listed in function id order, paged, with or without their outputs.
    async fn steps_are_listed_in_order_and_paged(db) {
        db.pending(&["w"]).await;
        for function_id in [3, 1, 2, 4] {
            db.run(RecordStep(step("w", &owner("w"), function_id))).await;
        }
        let page = |limit, offset, load_output| ListSteps {
            workflow_id: "w".to_owned(),
            limit,
            offset,
            load_output,
        };
        assert_eq!(function_ids(&db.run(page(None, None, true)).await), [1, 2, 3, 4]);
        assert_eq!(function_ids(&db.run(page(Some(2), Some(1), true)).await), [2, 3]);
        assert_eq!(function_ids(&db.run(page(None, Some(3), true)).await), [4]);
        let with = db.run(page(Some(1), None, true)).await;
        assert_eq!(with[0].output.as_deref(), Some("\"out1\""));
        let without = db.run(page(Some(1), None, false)).await;
        assert_eq!(without[0], Checkpoint { output: None, error: None, ..with[0].clone() });
        assert!(db.run(ListSteps { workflow_id: "missing".to_owned(), ..page(None, None, true) }).await.is_empty());
    }
}

/// SQLite has no JSONB containment: a nested attribute value is refused, naming the key.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_refuses_nested_attribute_values() {
    let db = TestStore::open(Backend::Sqlite).await;
    let outcome = guard(async {
        let op = ListWorkflows {
            attributes: vec![("tags".into(), serde_json::json!(["a"]))],
            ..all()
        };
        match db.attempt(op).await {
            Err(Error::InvalidArgument { argument, reason }) => {
                assert_eq!(argument, "attributes");
                assert!(reason.contains("`tags`"), "{reason}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    })
    .await;
    db.finish(outcome).await;
}

/// Postgres matches a nested attribute value by containment, as DBOS does.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_matches_nested_attribute_values_by_containment() {
    let db = TestStore::open(Backend::Postgres).await;
    let outcome = guard(async {
        db.pending(&["t"]).await;
        db.execute(
            "UPDATE workflow_status SET attributes = '{\"tags\":[\"a\",\"b\"],\"n\":{\"x\":1,\"y\":2}}'",
        )
        .await;
        let hit = ListWorkflows {
            attributes: vec![
                ("tags".into(), serde_json::json!(["b"])),
                ("n".into(), serde_json::json!({"x": 1})),
            ],
            ..all()
        };
        assert_eq!(listed(&db, hit).await, ["t"]);
        let miss = ListWorkflows {
            attributes: vec![("tags".into(), serde_json::json!(["c"]))],
            ..all()
        };
        assert!(listed(&db, miss).await.is_empty());
    })
    .await;
    db.finish(outcome).await;
}
