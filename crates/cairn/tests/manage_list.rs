//! Listing and inspecting workflows: `list_workflows` with DBOS's filters, order, paging and
//! payload flags, `list_queued_workflows`, `list_workflow_steps`, and the full status row —
//! through a standalone `cairn::Client` and through a launched app (one implementation), on
//! SQLite and on Postgres. Inside a workflow each listing is a durable step.

mod common;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use cairn::{
    Cairn, Client, ClientOptions, EnqueueOptions, ListStepsOptions, ListWorkflowsOptions,
    SortOrder, StartOptions, WorkflowState, WorkflowStatus,
};
use common::TestDb;

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum ShopError {
    #[error("declined: {0}")]
    Declined(String),
}

#[cairn::step]
async fn charge(amount: u32) -> Result<u32, ShopError> {
    Ok(amount * 2)
}

#[cairn::workflow]
async fn checkout(amount: u32) -> Result<u32, ShopError> {
    let first = charge(amount).await?;
    let second = charge(first).await?;
    Ok(second)
}

#[cairn::workflow]
async fn refund(reason: String) -> Result<(), ShopError> {
    Err(ShopError::Declined(reason))
}

#[cairn::workflow]
async fn parent(amount: u32) -> Result<u32, ShopError> {
    let doubled = charge(amount).await?; // operation 1
    checkout(doubled).await // operation 2: the child `<id>-2`
}

/// The client each `lister` workflow lists with, by test key (tests share the process).
static CLIENTS: LazyLock<Mutex<HashMap<String, Client>>> = LazyLock::new(Default::default);

/// Lists three ways from inside a workflow; answers how many each found.
#[cairn::workflow]
async fn lister(key: String) -> Result<(usize, usize, usize), cairn::Error> {
    let client = CLIENTS.lock().unwrap().get(&key).cloned().expect("client");
    let all = client
        .list_workflows(ListWorkflowsOptions::new().name("checkout"))
        .await?;
    let queued = client
        .list_queued_workflows(ListWorkflowsOptions::new())
        .await?;
    let steps = client
        .list_workflow_steps(&format!("{key}-checkout"), ListStepsOptions::new())
        .await?;
    Ok((all.len(), queued.len(), steps.len()))
}

/// The ids of a listing, in order.
fn ids(listed: &[WorkflowStatus]) -> Vec<String> {
    listed.iter().map(|w| w.workflow_id.clone()).collect()
}

/// A listing's ids through `client`.
async fn list(client: &Client, options: ListWorkflowsOptions) -> Vec<String> {
    ids(&client.list_workflows(options).await.expect("list"))
}

/// Owned ids.
fn s(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

/// Start (and finish) the fixtures, 2 ms apart so their creation times differ: `k-1`..`k-3`
/// checkouts, `k-fail` a failed refund, `k-parent` with its child `k-parent-2`, and `k-q`
/// enqueued on a queue no process serves (so it stays `ENQUEUED`).
async fn fixtures(app: &Cairn) {
    for n in 1..=3 {
        let handle = app
            .start_with(StartOptions::id(format!("k-{n}")), checkout, n)
            .await
            .expect("start");
        assert_eq!(handle.result().await.expect("result"), n * 4);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let failed = app
        .start_with(StartOptions::id("k-fail"), refund, "no".to_owned())
        .await
        .expect("start");
    assert!(failed.result().await.is_err());
    tokio::time::sleep(Duration::from_millis(2)).await;
    let handle = app
        .start_with(StartOptions::id("k-parent"), parent, 1)
        .await
        .expect("start");
    assert_eq!(handle.result().await.expect("result"), 8);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let options = EnqueueOptions::id("k-q")
        .with_priority(5)
        .with_deduplication_id("dedup-q")
        .with_partition_key("p1")
        .with_timeout(Duration::from_secs(60));
    app.enqueue_with(options, "unserved", checkout, 9)
        .await
        .expect("enqueue");
}

/// Every filter of `list_workflows` through a standalone client, alone and combined, as the
/// conformance suite checks them on the store, but from the public API.
async fn a_client_lists_with_every_filter(db: &TestDb) {
    let app = db.builder("shop").launch().await.expect("launch");
    fixtures(&app).await;
    db.execute(
        "UPDATE workflow_status SET authenticated_user = 'ann', \
         attributes = '{\"tenant\":\"t1\",\"tier\":2}' WHERE workflow_uuid = 'k-2'",
    )
    .await;
    let client = Client::connect(&db.url).await.expect("connect");
    let everything = s(&[
        "k-1",
        "k-2",
        "k-3",
        "k-fail",
        "k-parent",
        "k-parent-2",
        "k-q",
    ]);
    assert_eq!(list(&client, ListWorkflowsOptions::new()).await, everything);

    let k2 = client.status("k-2").await.expect("status");
    let k3 = client.status("k-3").await.expect("status");
    let since = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).expect("time");
    let version = k2.app_version.clone().expect("version");
    let executor = k2.executor_id.clone().expect("executor");
    let cases: Vec<(&str, ListWorkflowsOptions, Vec<String>)> = vec![
        (
            "ids",
            ListWorkflowsOptions::new().workflow_ids(["k-3", "k-1", "nope"]),
            s(&["k-1", "k-3"]),
        ),
        (
            "no ids",
            ListWorkflowsOptions::new().workflow_ids(Vec::<String>::new()),
            vec![],
        ),
        (
            "prefix",
            ListWorkflowsOptions::new().workflow_id_prefix("k-p"),
            s(&["k-parent", "k-parent-2"]),
        ),
        (
            "status",
            ListWorkflowsOptions::new().status(WorkflowState::Error),
            s(&["k-fail"]),
        ),
        (
            "statuses",
            ListWorkflowsOptions::new().statuses([WorkflowState::Error, WorkflowState::Enqueued]),
            s(&["k-fail", "k-q"]),
        ),
        (
            "name",
            ListWorkflowsOptions::new().name("parent").name("refund"),
            s(&["k-fail", "k-parent"]),
        ),
        (
            "queue",
            ListWorkflowsOptions::new().queue_name("unserved"),
            s(&["k-q"]),
        ),
        (
            "version",
            ListWorkflowsOptions::new()
                .app_version(version.clone())
                .status(WorkflowState::Error),
            s(&["k-fail"]),
        ),
        (
            "other version",
            ListWorkflowsOptions::new().app_version("nope"),
            vec![],
        ),
        (
            "executor",
            ListWorkflowsOptions::new()
                .executor_id(executor)
                .name("refund"),
            s(&["k-fail"]),
        ),
        (
            "parent",
            ListWorkflowsOptions::new().parent_workflow_id("k-parent"),
            s(&["k-parent-2"]),
        ),
        (
            "children",
            ListWorkflowsOptions::new().has_parent(true),
            s(&["k-parent-2"]),
        ),
        ("forks", ListWorkflowsOptions::new().is_fork(true), vec![]),
        (
            "forked from",
            ListWorkflowsOptions::new().forked_from("k-1"),
            vec![],
        ),
        (
            "was forked from",
            ListWorkflowsOptions::new().was_forked_from(true),
            vec![],
        ),
        (
            "user",
            ListWorkflowsOptions::new().authenticated_user("ann"),
            s(&["k-2"]),
        ),
        (
            "attribute",
            ListWorkflowsOptions::new()
                .attribute("tenant", "t1")
                .attribute("tier", 2),
            s(&["k-2"]),
        ),
        (
            "attribute mismatch",
            ListWorkflowsOptions::new().attribute("tier", 3),
            vec![],
        ),
        (
            "created",
            ListWorkflowsOptions::new()
                .created_in(since(k2.created_at_ms)..=since(k3.created_at_ms)),
            s(&["k-2", "k-3"]),
        ),
        (
            "created before",
            ListWorkflowsOptions::new().created_in(..since(k2.created_at_ms)),
            s(&["k-1"]),
        ),
        (
            "updated",
            ListWorkflowsOptions::new()
                .updated_in(..=since(k2.updated_at_ms))
                .name("checkout"),
            s(&["k-1", "k-2"]),
        ),
        (
            "completed",
            ListWorkflowsOptions::new()
                .completed_in(since(k3.completed_at_ms.expect("completed"))..)
                .name("checkout"),
            s(&["k-3", "k-parent-2"]),
        ),
        (
            "dequeued",
            ListWorkflowsOptions::new().dequeued_in(..since(k2.created_at_ms)),
            s(&["k-1"]),
        ),
        (
            "combined",
            ListWorkflowsOptions::new()
                .name("checkout")
                .status(WorkflowState::Success)
                .workflow_id_prefix("k-"),
            s(&["k-1", "k-2", "k-3", "k-parent-2"]),
        ),
        (
            "newest first",
            ListWorkflowsOptions::new()
                .order(SortOrder::NewestFirst)
                .limit(2),
            s(&["k-q", "k-parent-2"]),
        ),
        (
            "page",
            ListWorkflowsOptions::new().limit(2).offset(2),
            s(&["k-3", "k-fail"]),
        ),
        (
            "offset only",
            ListWorkflowsOptions::new().offset(5),
            s(&["k-parent-2", "k-q"]),
        ),
        (
            "other application",
            ListWorkflowsOptions::new().application_name("billing"),
            vec![],
        ),
        (
            "this application",
            ListWorkflowsOptions::new()
                .application_name("shop")
                .name("refund"),
            s(&["k-fail"]),
        ),
    ];
    for (what, options, expected) in cases {
        assert_eq!(list(&client, options).await, expected, "{what}");
    }
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

/// The app lists through the same implementation, scoped by default to its application (and
/// unclaimed workflows); a client named for another application sees only unclaimed ones,
/// unless it asks for ids or for every application.
async fn listings_are_scoped_to_the_callers_application(db: &TestDb) {
    let app = db.builder("shop").launch().await.expect("launch");
    fixtures(&app).await;
    let client = Client::connect(&db.url).await.expect("connect");
    // An unclaimed workflow (as a client without an application name enqueues).
    client
        .enqueue_with(EnqueueOptions::id("free"), "unserved", checkout, 1)
        .await
        .expect("enqueue");
    let from_app = app
        .list_workflows(ListWorkflowsOptions::new().status(WorkflowState::Enqueued))
        .await
        .expect("list");
    assert_eq!(ids(&from_app), s(&["k-q", "free"]));
    let other = Client::connect_with(
        &db.url,
        ClientOptions::default().application_name("billing"),
    )
    .await
    .expect("connect");
    assert_eq!(
        list(&other, ListWorkflowsOptions::new()).await,
        s(&["free"])
    );
    assert_eq!(
        list(&other, ListWorkflowsOptions::new().workflow_ids(["k-1"])).await,
        s(&["k-1"])
    );
    assert_eq!(
        list(
            &other,
            ListWorkflowsOptions::new()
                .any_application()
                .status(WorkflowState::Enqueued)
        )
        .await,
        s(&["k-q", "free"])
    );
    other.close().await;
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

/// `list_queued_workflows` shows workflows on a queue that have not finished; a status
/// filter replaces that default, still only on queues.
async fn queued_workflows_are_those_waiting_or_running_on_a_queue(db: &TestDb) {
    let app = db.builder("shop").launch().await.expect("launch");
    fixtures(&app).await;
    let client = Client::connect(&db.url).await.expect("connect");
    let queued = client
        .list_queued_workflows(ListWorkflowsOptions::new())
        .await
        .expect("list");
    assert_eq!(ids(&queued), s(&["k-q"]));
    let finished = client
        .list_queued_workflows(ListWorkflowsOptions::new().status(WorkflowState::Success))
        .await
        .expect("list");
    assert!(
        finished.is_empty(),
        "no finished workflow ran on a queue: {finished:?}"
    );
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

/// The status row shows what a user needs: queue, priority, deduplication id, partition,
/// timeout, times and attempts; inputs and outputs decode, and are left out on request.
async fn a_listed_status_carries_every_column_and_payloads_on_request(db: &TestDb) {
    let app = db.builder("shop").launch().await.expect("launch");
    fixtures(&app).await;
    let client = Client::connect(&db.url).await.expect("connect");
    let listed = client
        .list_workflows(ListWorkflowsOptions::new().workflow_ids(["k-q", "k-2", "k-fail"]))
        .await
        .expect("list");
    let [k2, fail, q] = listed.as_slice() else {
        panic!("expected three rows, got {listed:?}");
    };
    assert_eq!(q.state, WorkflowState::Enqueued);
    assert_eq!(q.queue_name.as_deref(), Some("unserved"));
    assert_eq!(q.priority, 5);
    assert_eq!(q.deduplication_id.as_deref(), Some("dedup-q"));
    assert_eq!(q.queue_partition_key.as_deref(), Some("p1"));
    assert_eq!(q.timeout_ms, Some(60_000));
    assert_eq!(q.application_name.as_deref(), Some("shop"));
    assert_eq!((q.forked_from.as_deref(), q.was_forked_from), (None, false));
    assert_eq!(k2.state, WorkflowState::Success);
    assert_eq!(k2.name, "checkout");
    assert_eq!(k2.input().expect("input"), [serde_json::json!(2)]);
    assert_eq!(k2.output::<u32>().expect("output"), Some(8));
    assert_eq!(k2.recovery_attempts, 1);
    assert!(k2.completed_at_ms.is_some() && k2.started_at_ms.is_some());
    assert_eq!((k2.priority, k2.attributes.clone()), (0, None));
    assert!(k2.authenticated_roles.is_empty());
    let error = fail.error().expect("decodes").expect("an error");
    assert!(error.message.contains("no"), "{error:?}");

    let bare = client
        .list_workflows(
            ListWorkflowsOptions::new()
                .workflow_ids(["k-2"])
                .load_input(false)
                .load_output(false),
        )
        .await
        .expect("list");
    assert_eq!(
        (bare[0].raw_input.clone(), bare[0].raw_output.clone()),
        (None, None)
    );
    assert_eq!(bare[0].state, WorkflowState::Success);
    let inputs_only = client
        .list_workflows(
            ListWorkflowsOptions::new()
                .workflow_ids(["k-fail"])
                .load_output(false),
        )
        .await
        .expect("list");
    assert!(inputs_only[0].raw_input.is_some());
    assert_eq!(inputs_only[0].raw_error, None);
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

/// A row written in a format Cairn cannot decode (DBOS Python's pickle) is listed with its
/// raw values; decoding it is an error that names the format, never a panic.
async fn a_row_cairn_cannot_decode_is_still_listed(db: &TestDb) {
    let app = db.builder("shop").launch().await.expect("launch");
    fixtures(&app).await;
    db.execute(
        "UPDATE workflow_status SET serialization = 'py_pickle' WHERE workflow_uuid = 'k-1'; \
         UPDATE workflow_input SET inputs = 'gASVBQAAAAAAAABLAYWULg==' WHERE workflow_uuid = 'k-1'; \
         UPDATE workflow_status SET attributes = NULL, authenticated_roles = 'not json' WHERE workflow_uuid = 'k-1'",
    )
    .await;
    let client = Client::connect(&db.url).await.expect("connect");
    let listed = client
        .list_workflows(ListWorkflowsOptions::new().name("checkout"))
        .await
        .expect("list");
    let k1 = listed
        .iter()
        .find(|w| w.workflow_id == "k-1")
        .expect("k-1 listed");
    assert_eq!(k1.serialization.as_deref(), Some("py_pickle"));
    assert_eq!(k1.raw_input.as_deref(), Some("gASVBQAAAAAAAABLAYWULg=="));
    assert_eq!(k1.authenticated_roles, ["not json"]);
    let refused = k1.input().expect_err("pickle is not decoded");
    assert!(refused.to_string().contains("py_pickle"), "{refused}");
    assert_eq!(listed.len(), 5);
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

/// `list_workflow_steps` answers a workflow's operations in order, with their outputs, child
/// ids and times, paged; without outputs on request; empty for an unknown workflow.
async fn steps_are_listed_in_order_and_paged(db: &TestDb) {
    let app = db.builder("shop").launch().await.expect("launch");
    fixtures(&app).await;
    let client = Client::connect(&db.url).await.expect("connect");
    let steps = client
        .list_workflow_steps("k-parent", ListStepsOptions::new())
        .await
        .expect("steps");
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        steps.iter().map(|s| s.function_id).collect::<Vec<_>>()[..2],
        [1, 2]
    );
    assert_eq!(names[0], "charge");
    assert_eq!(steps[0].raw_output.as_deref(), Some("2"));
    assert_eq!(steps[1].child_workflow_id.as_deref(), Some("k-parent-2"));
    assert!(steps[0].started_at_ms.is_some() && steps[0].completed_at_ms.is_some());

    let page = client
        .list_workflow_steps("k-parent", ListStepsOptions::new().offset(1).limit(1))
        .await
        .expect("steps");
    assert_eq!(page, steps[1..2]);
    let bare = client
        .list_workflow_steps("k-1", ListStepsOptions::new().load_output(false))
        .await
        .expect("steps");
    assert_eq!(bare.len(), 2);
    assert!(
        bare.iter()
            .all(|s| s.raw_output.is_none() && s.raw_error.is_none())
    );
    let none = client
        .list_workflow_steps("nope", ListStepsOptions::new())
        .await
        .expect("steps");
    assert!(none.is_empty());
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

/// Inside a workflow each listing is a step under DBOS's name, recorded with its answer.
async fn listing_inside_a_workflow_is_a_durable_step(db: &TestDb) {
    let app = db.builder("shop").launch().await.expect("launch");
    let key = format!("lister-{}", uuid::Uuid::new_v4().simple());
    CLIENTS
        .lock()
        .unwrap()
        .insert(key.clone(), Client::clone(&app));
    app.start_with(StartOptions::id(format!("{key}-checkout")), checkout, 1)
        .await
        .expect("start")
        .result()
        .await
        .expect("result");
    let handle = app
        .start_with(StartOptions::id(key.clone()), lister, key.clone())
        .await
        .expect("start");
    let (all, queued, steps) = handle.result().await.expect("result");
    assert_eq!((all, queued, steps), (1, 0, 2));
    let recorded = app
        .list_workflow_steps(&key, ListStepsOptions::new())
        .await
        .expect("steps");
    let names: Vec<&str> = recorded.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "DBOS.listWorkflows",
            "DBOS.listQueuedWorkflows",
            "DBOS.listWorkflowSteps"
        ]
    );
    assert!(recorded.iter().all(|s| s.raw_output.is_some()));
    CLIENTS.lock().unwrap().remove(&key);
    app.shutdown().await.expect("shutdown");
}

both_backends!(
    a_client_lists_with_every_filter,
    listings_are_scoped_to_the_callers_application,
    queued_workflows_are_those_waiting_or_running_on_a_queue,
    a_listed_status_carries_every_column_and_payloads_on_request,
    a_row_cairn_cannot_decode_is_still_listed,
    steps_are_listed_in_order_and_paged,
    listing_inside_a_workflow_is_a_durable_step,
);
