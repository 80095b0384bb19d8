//! DBOS's own `dbos` CLI (DBOS Transact 3.4, Python) and the `cairn` CLI read the same system
//! database alike: the same workflows with the same statuses and names, the same details of
//! one workflow, the same steps and children; and a cancel made by either one is seen by the
//! other. Both backends. Without DBOS's Python these tests fail (run scripts/python-venv.sh).

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;

use cairn::{Cairn, EnqueueOptions, Error, Queue, StartOptions, WorkflowState};
use common::{Backend, TestDb, checkout, dbos_python, double, waiting};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// DBOS's CLI
// ---------------------------------------------------------------------------------------------

/// The database's URL as DBOS (SQLAlchemy) spells it: `sqlite:////abs/path`, `postgresql://…`.
fn dbos_url(db: &TestDb) -> String {
    match db.backend {
        Backend::Sqlite => db.url.clone(),
        Backend::Postgres => db.url.replacen("postgres://", "postgresql://", 1),
    }
}

/// Run `dbos <command…> -s <db> <rest…>` (DBOS's CLI from the same virtual environment),
/// without `DBOS_SYSTEM_DATABASE_URL`; fail the test unless it exits 0. Returns its stdout
/// parsed as JSON (`null` when it printed nothing).
async fn dbos(db: &TestDb, command: &[&str], rest: &[&str]) -> Value {
    let python = dbos_python();
    let cli = python.with_file_name("dbos");
    let url = dbos_url(db);
    let mut args: Vec<&str> = command.to_vec();
    args.extend(["-s", &url]);
    args.extend_from_slice(rest);
    let output = tokio::process::Command::new(&cli)
        .args(&args)
        .current_dir(db.dir())
        .env_remove("DBOS_SYSTEM_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (run scripts/python-venv.sh)",
                cli.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dbos {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        args.join(" "),
        output.status
    );
    if stdout.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "dbos {} printed no JSON ({e}):\n{stdout}\n--- stderr\n{stderr}",
            args.join(" ")
        )
    })
}

// ---------------------------------------------------------------------------------------------
// The application
// ---------------------------------------------------------------------------------------------

/// A step, a child workflow (`checkout`, id `<parent>-2`), another step.
#[cairn::workflow]
async fn order(n: u32) -> Result<u32, cairn::Error> {
    let doubled = double(n).await?;
    let checked = checkout(doubled).await?;
    double(checked).await
}

const APP_VERSION: &str = "agree-v1";
const EXECUTOR: &str = "agree-exec";

/// An application on `db` (version [`APP_VERSION`], executor [`EXECUTOR`]) with `ok-1`
/// (succeeded), `fail-1` (failed in its second step), `order-1` (three steps, the second the
/// child `order-1-2`), `paid-1` (enqueued on the served queue `payments`, succeeded),
/// `cancel-1` (cancelled while waiting), `wait-1` (waiting) and `queued-1` / `queued-2`
/// (enqueued on the queue `idle`, which nobody serves).
async fn populate(db: &TestDb) -> Cairn {
    let app = Cairn::builder("agree-test")
        .database_url(&db.url)
        .app_version(APP_VERSION)
        .executor_id(EXECUTOR)
        .queue(Queue::new("payments").concurrency(4))
        .launch()
        .await
        .expect("launch");
    common::finish_ok_and_fail(&app).await;
    let order_handle = app
        .start_with(StartOptions::id("order-1"), order, 1)
        .await
        .expect("start order-1");
    assert_eq!(order_handle.result().await.expect("order-1 succeeds"), 16);
    common::finish_paid(&app).await;
    let cancelled = app
        .start_with(StartOptions::id("cancel-1"), waiting, ())
        .await
        .expect("start cancel-1");
    assert!(app.cancel("cancel-1").await.expect("cancel cancel-1"));
    assert!(
        matches!(cancelled.result().await, Err(Error::Cancelled(_))),
        "cancel-1 stops cancelled"
    );
    app.start_with(StartOptions::id("wait-1"), waiting, ())
        .await
        .expect("start wait-1");
    for id in ["queued-1", "queued-2"] {
        app.enqueue_with(EnqueueOptions::id(id), "idle", checkout, 2)
            .await
            .unwrap_or_else(|e| panic!("enqueue {id}: {e}"));
    }
    app
}

// ---------------------------------------------------------------------------------------------
// Comparing
// ---------------------------------------------------------------------------------------------

/// `workflow_id → (status, name)` of a JSON array of workflows (both CLIs use these keys).
fn by_id(list: &Value) -> BTreeMap<String, (Value, Value)> {
    list.as_array()
        .unwrap_or_else(|| panic!("an array of workflows: {list:#}"))
        .iter()
        .map(|w| {
            let id = w["workflow_id"]
                .as_str()
                .unwrap_or_else(|| panic!("a workflow id in {w:#}"))
                .to_owned();
            (id, (w["status"].clone(), w["name"].clone()))
        })
        .collect()
}

/// The sorted ids of a JSON array of workflows.
fn ids(list: &Value) -> Vec<String> {
    by_id(list).into_keys().collect()
}

/// Cairn's RFC 3339 time as epoch milliseconds (DBOS's spelling), `null` staying `null`.
fn epoch_ms(time: &Value) -> Value {
    match time.as_str() {
        None => time.clone(),
        Some(text) => json!(
            chrono::DateTime::parse_from_rfc3339(text)
                .unwrap_or_else(|e| panic!("`{text}` is not RFC 3339: {e}"))
                .timestamp_millis()
        ),
    }
}

/// Assert DBOS's `error` (the exception as text) and Cairn's (`{"name", "message"}`) are
/// both absent, or both present with DBOS's text holding Cairn's message.
fn assert_errors_agree(ours: &Value, theirs: &Value, context: &str) {
    assert_eq!(
        ours.is_null(),
        theirs.is_null(),
        "an error on both or neither: {context}"
    );
    if let (Some(message), Some(text)) = (ours["message"].as_str(), theirs.as_str()) {
        assert!(text.contains(message), "the error message: {context}");
    }
}

/// Assert `dbos workflow get` and `cairn workflow get --json` agree on `id`: status, name,
/// queue, application version and name, executor, the times, input, output, error and the
/// other columns both show. Returns DBOS's document.
async fn assert_get_agrees(db: &TestDb, id: &str) -> Value {
    let theirs = dbos(db, &["workflow", "get"], &[id]).await;
    let ours = db.cairn_json(&["workflow", "get", id]).await;
    let context = format!("{id}\n--- cairn\n{ours:#}\n--- dbos\n{theirs:#}");
    for key in [
        "workflow_id",
        "status",
        "name",
        "queue_name",
        "app_version",
        "executor_id",
        "application_name",
        "recovery_attempts",
        "parent_workflow_id",
        "forked_from",
        "deduplication_id",
        "priority",
        "schedule_name",
        "attributes",
        "output",
    ] {
        assert_eq!(ours[key], theirs[key], "`{key}` differs: {context}");
    }
    for (key, their_key) in [
        ("created_at", "created_at"),
        ("updated_at", "updated_at"),
        ("completed_at", "completed_at"),
        ("started_at", "dequeued_at"),
    ] {
        assert_eq!(
            epoch_ms(&ours[key]),
            theirs[their_key],
            "`{key}` differs from DBOS's `{their_key}`: {context}"
        );
    }
    assert_eq!(
        ours["input"], theirs["input"]["args"],
        "the input: {context}"
    );
    assert_errors_agree(&ours["error"], &theirs["error"], &context);
    theirs
}

/// Assert `dbos workflow steps` and `cairn workflow steps --json` agree on `id`'s steps: the
/// same ids, names and child ids, the same outputs (as JSON values) where both show one, and
/// an error on the same steps. Returns `(function_id, name, child_workflow_id)` per step.
async fn assert_steps_agree(db: &TestDb, id: &str) -> Vec<(u64, String, Option<String>)> {
    let theirs = dbos(db, &["workflow", "steps"], &[id]).await;
    let ours = db.cairn_json(&["workflow", "steps", id]).await;
    let context = format!("{id}\n--- cairn\n{ours:#}\n--- dbos\n{theirs:#}");
    let theirs = theirs.as_array().expect("dbos: an array of steps");
    let ours = ours.as_array().expect("cairn: an array of steps");
    assert_eq!(ours.len(), theirs.len(), "the number of steps: {context}");
    let mut summary = Vec::new();
    for (mine, other) in ours.iter().zip(theirs) {
        assert_eq!(
            mine["function_id"], other["function_id"],
            "step ids: {context}"
        );
        assert_eq!(
            mine["name"], other["function_name"],
            "step names: {context}"
        );
        assert_eq!(
            mine["child_workflow_id"], other["child_workflow_id"],
            "child ids: {context}"
        );
        if !mine["output"].is_null() && !other["output"].is_null() {
            assert_eq!(mine["output"], other["output"], "step outputs: {context}");
        }
        assert_errors_agree(&mine["error"], &other["error"], &context);
        assert_eq!(
            epoch_ms(&mine["started_at"]),
            other["started_at_epoch_ms"],
            "step start times: {context}"
        );
        assert_eq!(
            epoch_ms(&mine["completed_at"]),
            other["completed_at_epoch_ms"],
            "step completion times: {context}"
        );
        summary.push((
            mine["function_id"].as_u64().expect("a step id"),
            mine["name"].as_str().expect("a step name").to_owned(),
            mine["child_workflow_id"].as_str().map(str::to_owned),
        ));
    }
    summary
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// `dbos workflow list` and `cairn workflow list --json` list the same workflows with the
/// same statuses and names, and the same ones under `--status ERROR`; `get` agrees on
/// workflows in every state (a parent and its child, enqueued, failed, cancelled, waiting);
/// `steps` agree on the parent (steps, a child), the child and a failed workflow.
async fn the_dbos_and_cairn_clis_show_the_same_workflows_and_steps(db: &TestDb) {
    let app = populate(db).await;

    let theirs = dbos(db, &["workflow", "list"], &["--limit", "1000"]).await;
    let ours = db
        .cairn_json(&["workflow", "list", "--limit", "1000"])
        .await;
    let (theirs, ours) = (by_id(&theirs), by_id(&ours));
    assert_eq!(
        ours, theirs,
        "the same workflows, statuses and names (cairn left, dbos right)"
    );
    let expected: Vec<(&str, &str)> = vec![
        ("cancel-1", "CANCELLED"),
        ("fail-1", "ERROR"),
        ("ok-1", "SUCCESS"),
        ("order-1", "SUCCESS"),
        ("order-1-2", "SUCCESS"),
        ("paid-1", "SUCCESS"),
        ("queued-1", "ENQUEUED"),
        ("queued-2", "ENQUEUED"),
        ("wait-1", "PENDING"),
    ];
    let listed: Vec<(&str, &str)> = ours
        .iter()
        .map(|(id, (status, _))| (id.as_str(), status.as_str().expect("a status")))
        .collect();
    assert_eq!(listed, expected);

    let their_errors = dbos(
        db,
        &["workflow", "list"],
        &["--limit", "1000", "--status", "ERROR"],
    )
    .await;
    let our_errors = db
        .cairn_json(&["workflow", "list", "--limit", "1000", "--status", "ERROR"])
        .await;
    assert_eq!(ids(&our_errors), ids(&their_errors));
    assert_eq!(ids(&our_errors), ["fail-1"]);

    let got = assert_get_agrees(db, "order-1").await;
    assert_eq!(got["app_version"], APP_VERSION, "{got:#}");
    assert_eq!(got["executor_id"], EXECUTOR, "{got:#}");
    let got = assert_get_agrees(db, "queued-1").await;
    assert_eq!(got["queue_name"], "idle", "{got:#}");
    assert_get_agrees(db, "paid-1").await;
    let got = assert_get_agrees(db, "fail-1").await;
    assert!(
        got["error"]
            .as_str()
            .is_some_and(|e| e.contains("card 6 declined")),
        "{got:#}"
    );
    assert_get_agrees(db, "order-1-2").await;
    assert_get_agrees(db, "cancel-1").await;
    assert_get_agrees(db, "wait-1").await;

    let steps = assert_steps_agree(db, "order-1").await;
    let shape: Vec<(u64, Option<String>)> = steps
        .iter()
        .map(|(function_id, _, child)| (*function_id, child.clone()))
        .collect();
    assert_eq!(
        shape,
        [(1, None), (2, Some("order-1-2".to_owned())), (3, None)],
        "{steps:?}"
    );
    assert_eq!(assert_steps_agree(db, "fail-1").await.len(), 2);
    assert_eq!(assert_steps_agree(db, "order-1-2").await.len(), 2);

    app.shutdown().await.expect("shutdown");
}

/// `dbos workflow cancel` on a workflow Cairn enqueued shows as CANCELLED in `cairn workflow
/// get`, and `cairn workflow cancel` shows as CANCELLED in `dbos workflow get`; neither
/// touches the other workflows.
async fn a_cancel_by_either_cli_shows_in_the_other(db: &TestDb) {
    let app = populate(db).await;

    dbos(db, &["workflow", "cancel"], &["queued-1"]).await;
    let ours = db.cairn_json(&["workflow", "get", "queued-1"]).await;
    assert_eq!(ours["status"], "CANCELLED", "{ours:#}");
    assert_get_agrees(db, "queued-1").await;

    let cancelled = db.cairn_json(&["workflow", "cancel", "queued-2"]).await;
    assert_eq!(cancelled, json!({ "cancelled": ["queued-2"] }));
    let theirs = dbos(db, &["workflow", "get"], &["queued-2"]).await;
    assert_eq!(theirs["status"], "CANCELLED", "{theirs:#}");
    assert_get_agrees(db, "queued-2").await;

    let client = db.client().await;
    for (id, state) in [
        ("queued-1", WorkflowState::Cancelled),
        ("queued-2", WorkflowState::Cancelled),
        ("wait-1", WorkflowState::Pending),
        ("ok-1", WorkflowState::Success),
    ] {
        assert_eq!(
            client.status(id).await.expect("status").state,
            state,
            "{id}"
        );
    }
    let theirs = dbos(db, &["workflow", "list"], &["--limit", "1000"]).await;
    let ours = db
        .cairn_json(&["workflow", "list", "--limit", "1000"])
        .await;
    assert_eq!(by_id(&ours), by_id(&theirs), "cairn left, dbos right");

    app.shutdown().await.expect("shutdown");
}

both_backends!(
    the_dbos_and_cairn_clis_show_the_same_workflows_and_steps,
    a_cancel_by_either_cli_shows_in_the_other,
);
