//! The client and workflow management across Cairn and DBOS Transact 3.4, the real thing: the
//! Python package `dbos==3.4.0` run from `$CAIRN_DBOS_PYTHON` (`scripts/python-venv.sh` makes
//! one) as a long-running application (`scripts/interop/client_worker.py`), its
//! `DBOSClient` (`scripts/interop/client_ops.py`) and its `dbos` CLI.
//!
//! - Cairn's standalone [`cairn::Client`] drives a workflow a DBOS application serves: enqueue
//!   by name, send, get_event, result.
//! - DBOS's CLI and client list, inspect, cancel, resume and fork Cairn workflows, and a
//!   running Cairn application carries the changes out.
//! - A plain SQL client (`enqueue_workflow`, `send_message` on Postgres) feeds Cairn.
//! - A DBOS application and a Cairn application share one database; both are SIGKILLed with
//!   workflows in flight and restarted: each recovers only its own.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::{
    Client, EnqueueOptions, Error, ForkOptions, ListStepsOptions, ListWorkflowsOptions, SortOrder,
    StartOptions, WorkflowState,
};
#[cfg(feature = "postgres")]
use common::Backend;
use common::TestDb;
use common::dbos::{PythonProcess, dbos_url, run_cli, run_python};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Workflows
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum ClientError {
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

/// What [`pipeline`] returns: a struct, so DBOS decodes a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Outcome {
    parts: Vec<String>,
    product: i64,
}

#[cairn::step]
async fn stage_one(tag: String) -> Result<String, ClientError> {
    common::count(&format!("{tag}/stage_one"));
    Ok(format!("{tag}-one"))
}

#[cairn::step]
async fn stage_two(tag: String, factor: i64) -> Result<String, ClientError> {
    common::count(&format!("{tag}/stage_two"));
    Ok(format!("{tag}-two-{factor}"))
}

#[cairn::step]
async fn stage_three(tag: String) -> Result<String, ClientError> {
    common::count(&format!("{tag}/stage_three"));
    Ok(format!("{tag}-three"))
}

/// Three steps, each counting its executions under `tag`.
#[cairn::workflow]
async fn pipeline(tag: String, factor: i64) -> Result<Outcome, ClientError> {
    let one = stage_one(tag.clone()).await?;
    let two = stage_two(tag.clone(), factor).await?;
    let three = stage_three(tag).await?;
    Ok(Outcome {
        parts: vec![one, two, three],
        product: factor * 7,
    })
}

/// A step, a message on "go" (10 min: long enough to outlast a slow test), another step.
#[cairn::workflow]
async fn gated(tag: String) -> Result<String, ClientError> {
    let one = stage_one(tag.clone()).await?;
    let go = cairn::recv::<String>("go", Duration::from_secs(600)).await?;
    let three = stage_three(tag).await?;
    Ok(format!("{one}/{}/{three}", go.unwrap_or_default()))
}

/// What [`inbox`] receives: two messages on "letters" and one without a topic, then whatever
/// a short third receive on "letters" finds.
#[cairn::workflow]
async fn inbox(name: String, meta: Value) -> Result<Value, ClientError> {
    let first = cairn::recv::<Value>("letters", Duration::from_secs(60)).await?;
    let second = cairn::recv::<Value>("letters", Duration::from_secs(60)).await?;
    let untitled = cairn::recv::<Value>(None, Duration::from_secs(60)).await?;
    let extra = cairn::recv::<Value>("letters", Duration::from_secs(2)).await?;
    Ok(json!({"name": name, "meta": meta, "letters": [first, second, extra], "untitled": untitled}))
}

// ---------------------------------------------------------------------------------------------
// 1. Cairn's client drives a DBOS application
// ---------------------------------------------------------------------------------------------

/// What DBOS's `py_chat` returns (see `client_worker.py`).
#[derive(Debug, PartialEq, Deserialize, Serialize)]
struct Chat {
    greeting: String,
    count: i64,
    tags: Vec<String>,
    reply: Value,
}

/// A standalone Cairn client enqueues by name (portable JSON positional arguments) a workflow
/// a DBOS Python application serves on its queue, reads the event it sets, sends it the
/// message it waits for, and gets its result, typed. DBOS needs no configuration for it: it
/// decodes the arguments in the format the row names and answers in the same.
async fn a_cairn_client_drives_a_workflow_a_dbos_app_serves(db: &TestDb) {
    let log = side_log(db);
    let (worker, ready) = PythonProcess::start(
        "client_worker.py",
        &["serve", &dbos_url(db), path_str(&log)],
        &[],
    )
    .await;
    let client = Client::connect(&db.url).await.expect("connect");

    let handle = client
        .enqueue_by_name(
            "py_queue",
            "py_chat",
            vec![json!("Ada"), json!(3), json!(["x", "y"])],
            EnqueueOptions::id("chat-1"),
        )
        .await
        .expect("enqueue by name");
    assert_eq!(handle.id(), "chat-1");

    let greeting: Option<Value> = client
        .get_event("chat-1", "greeting", Duration::from_secs(60))
        .await
        .expect("get_event");
    assert_eq!(greeting, Some(json!({"text": "Hello, Ada!", "count": 3})));

    let reply = json!({"ok": true, "n": [1, 2], "text": "from Cairn"});
    client.send("chat-1", "reply", &reply).await.expect("send");

    let chat: Chat = within(120, "the DBOS workflow's result", async {
        client
            .retrieve::<Chat>("chat-1")
            .await
            .expect("retrieve")
            .result()
            .await
    })
    .await
    .expect("result");
    assert_eq!(
        chat,
        Chat {
            greeting: "Hello, Ada!".to_owned(),
            count: 3,
            tags: vec!["x".to_owned(), "y".to_owned()],
            reply,
        }
    );

    let status = client.status("chat-1").await.expect("status");
    assert_eq!(status.state, WorkflowState::Success);
    assert_eq!(status.name, "py_chat");
    assert_eq!(status.queue_name.as_deref(), Some("py_queue"));
    assert_eq!(status.serialization.as_deref(), Some("portable_json"));
    assert_eq!(status.application_name.as_deref(), Some("interop-py"));
    assert_eq!(status.executor_id.as_deref(), Some("local"), "DBOS ran it");
    assert_eq!(
        status.app_version.as_deref(),
        ready["app_version"].as_str(),
        "stamped with the DBOS process's version"
    );
    let steps = client.list_steps("chat-1").await.expect("steps");
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names.first().copied(),
        Some("py_greet"),
        "DBOS's steps: {names:?}"
    );
    assert!(names.contains(&"DBOS.setEvent"), "{names:?}");
    assert!(names.contains(&"DBOS.recv"), "{names:?}");
    assert_eq!(
        db.query_text(
            "SELECT CASE WHEN consumed THEN 'consumed' ELSE 'unconsumed' END || ' ' || serialization \
             FROM notifications WHERE destination_uuid = 'chat-1'"
        )
        .await
        .as_deref(),
        Some("consumed portable_json"),
        "Cairn's message, consumed by DBOS's recv"
    );

    // An exception in the DBOS workflow reaches Cairn as its portable error.
    let failing = client
        .enqueue_by_name(
            "py_queue",
            "py_fail",
            vec![json!("bad input 7")],
            EnqueueOptions::id("fail-1"),
        )
        .await
        .expect("enqueue py_fail");
    let failed = within(120, "the failing DBOS workflow", failing.result()).await;
    match failed {
        Err(Error::Application(e)) => {
            assert_eq!(e.name, "ValueError", "{e:?}");
            assert_eq!(e.message, "bad input 7", "{e:?}");
        }
        other => panic!("expected the DBOS workflow's ValueError, got {other:?}"),
    }
    assert_eq!(
        client.status("fail-1").await.expect("status").state,
        WorkflowState::Error
    );

    client.close().await;
    worker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. DBOS's CLI and client manage Cairn workflows
// ---------------------------------------------------------------------------------------------

/// The application the management tests run: its name and version are what DBOS filters on.
async fn managed_app(db: &TestDb) -> cairn::Cairn {
    db.builder("cairn-managed")
        .app_version("managed-v1")
        .launch()
        .await
        .expect("launch")
}

/// A fresh tag, so the step counts of concurrent tests never mix.
fn fresh_tag(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

fn stage_counts(tag: &str) -> [usize; 3] {
    ["stage_one", "stage_two", "stage_three"].map(|s| common::counted(&format!("{tag}/{s}")))
}

/// `dbos workflow list` (with filters), `get` and `steps`, and `DBOSClient.list_workflows`
/// with its filters, show Cairn's workflows as Cairn recorded them: ids, names, statuses,
/// inputs and outputs decoded, versions, owners, and step names and outputs.
async fn dbos_lists_and_inspects_cairn_workflows_with_filters(db: &TestDb) {
    let app = managed_app(db).await;
    let tag = fresh_tag("list");
    let mut outputs = Vec::new();
    for n in 1..=3 {
        let id = format!("{tag}-p{n}");
        let handle = app
            .start_with(StartOptions::id(&id), pipeline, (tag.clone(), n))
            .await
            .expect("start");
        outputs.push((id, handle.result().await.expect("result")));
    }
    let waiting_id = format!("{tag}-g");
    app.start_with(StartOptions::id(&waiting_id), gated, tag.clone())
        .await
        .expect("start gated");
    wait_for_steps(&app, &waiting_id, |names| names.contains(&"DBOS.sleep")).await;
    let url = dbos_url(db);

    // `dbos workflow list` with its filters.
    let rows = cli_list(&url, &["-n", "pipeline", "-S", "SUCCESS", "-l", "100"]).await;
    assert_eq!(
        ids_of(&rows),
        sorted(outputs.iter().map(|(id, _)| id.clone())),
        "{rows:#?}"
    );
    for (id, output) in &outputs {
        let row = rows
            .iter()
            .find(|r| r["workflow_id"] == json!(id))
            .expect("listed");
        let n: i64 = id[id.len() - 1..].parse().expect("n");
        assert_eq!(row["name"], json!("pipeline"), "{row:#}");
        assert_eq!(row["status"], json!("SUCCESS"), "{row:#}");
        assert_eq!(
            row["input"],
            json!({"args": [tag, n], "kwargs": {}}),
            "{row:#}"
        );
        assert_eq!(row["output"], serde_json::to_value(output).expect("json"));
        assert_eq!(row["app_version"], json!("managed-v1"), "{row:#}");
        assert_eq!(row["executor_id"], json!(app.executor_id()), "{row:#}");
        assert_eq!(row["application_name"], json!("cairn-managed"), "{row:#}");
    }
    let pending = cli_list(&url, &["-S", "PENDING"]).await;
    assert_eq!(ids_of(&pending), vec![waiting_id.clone()], "{pending:#?}");
    assert_eq!(pending[0]["name"], json!("gated"));
    assert_eq!(pending[0]["input"], json!({"args": [tag], "kwargs": {}}));
    let owned = cli_list(
        &url,
        &["-v", "managed-v1", "-a", "cairn-managed", "-l", "100"],
    )
    .await;
    assert_eq!(owned.len(), 4, "{owned:#?}");
    assert!(
        cli_list(&url, &["-v", "another-version"]).await.is_empty(),
        "no workflow of another version"
    );
    assert!(
        cli_list(&url, &["-a", "another-app"]).await.is_empty(),
        "no workflow of another application"
    );
    let newest = cli_list(&url, &["-n", "pipeline", "-l", "2", "-d"]).await;
    assert_eq!(newest.len(), 2, "{newest:#?}");
    let created: Vec<i64> = newest.iter().map(created_at).collect();
    assert!(created[0] >= created[1], "newest first: {newest:#?}");
    let first_page = cli_list(&url, &["-n", "pipeline", "-l", "1"]).await;
    let second_page = cli_list(&url, &["-n", "pipeline", "-l", "1", "-o", "1"]).await;
    assert_eq!((first_page.len(), second_page.len()), (1, 1));
    assert_ne!(
        first_page[0]["workflow_id"], second_page[0]["workflow_id"],
        "the offset skips the first"
    );

    // `dbos workflow get` and `steps`.
    let (first_id, first_output) = &outputs[0];
    let got = run_cli(&["workflow", "get", "-s", &url, first_id]).await;
    assert_eq!(got["workflow_id"], json!(first_id), "{got:#}");
    assert_eq!(got["status"], json!("SUCCESS"), "{got:#}");
    assert_eq!(got["name"], json!("pipeline"), "{got:#}");
    assert_eq!(
        got["output"],
        serde_json::to_value(first_output).expect("json")
    );
    let steps = run_cli(&["workflow", "steps", "-s", &url, first_id]).await;
    let steps: Vec<(Value, Value)> = steps
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["function_name"].clone(), s["output"].clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (json!("stage_one"), json!(first_output.parts[0])),
            (json!("stage_two"), json!(first_output.parts[1])),
            (json!("stage_three"), json!(first_output.parts[2])),
        ]
    );
    let waiting_steps = run_cli(&["workflow", "steps", "-s", &url, &waiting_id]).await;
    let waiting_names: Vec<&str> = waiting_steps
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["function_name"].as_str())
        .collect();
    assert_eq!(
        waiting_names.first().copied(),
        Some("stage_one"),
        "{waiting_steps:#}"
    );
    assert!(waiting_names.contains(&"DBOS.sleep"), "{waiting_steps:#}");

    // `DBOSClient.list_workflows` with the filters the CLI does not expose.
    let listed = dbos_list(
        db,
        json!({"workflow_id_prefix": format!("{tag}-p"), "status": ["SUCCESS", "PENDING"],
               "load_input": false, "load_output": false, "sort_desc": true}),
    )
    .await;
    assert_eq!(
        listed
            .iter()
            .map(|r| r["workflow_id"].as_str().expect("id").to_owned())
            .collect::<Vec<_>>()
            .len(),
        3
    );
    for row in &listed {
        assert_eq!(row["input"], Value::Null, "not loaded: {row:#}");
        assert_eq!(row["output"], Value::Null, "not loaded: {row:#}");
    }
    let by_ids = dbos_list(
        db,
        json!({"workflow_ids": [waiting_id, outputs[2].0], "name": ["gated", "pipeline"],
               "executor_id": app.executor_id(), "application_name": "cairn-managed"}),
    )
    .await;
    assert_eq!(
        ids_of(&by_ids),
        sorted([waiting_id.clone(), outputs[2].0.clone()]),
        "{by_ids:#?}"
    );
    let by_status = dbos_list(db, json!({"status": "PENDING", "name": "gated"})).await;
    assert_eq!(ids_of(&by_status), vec![waiting_id.clone()]);

    app.send(&waiting_id, "go", &"go").await.expect("send");
    app.shutdown().await.expect("shutdown");
}

/// `dbos workflow cancel` stops a Cairn workflow waiting in recv (at its next durable
/// operation: it never reaches its last step), and `dbos workflow resume` makes the running
/// Cairn application continue it from its checkpoints: its first step is not run again, the
/// message sent while it was cancelled is received, and it completes.
async fn dbos_cli_cancel_and_resume_are_carried_out_by_cairn(db: &TestDb) {
    let app = managed_app(db).await;
    let tag = fresh_tag("cancel");
    let id = format!("{tag}-g");
    let handle = app
        .start_with(StartOptions::id(&id), gated, tag.clone())
        .await
        .expect("start");
    wait_for_steps(&app, &id, |names| names.contains(&"DBOS.sleep")).await;
    let url = dbos_url(db);

    run_cli(&["workflow", "cancel", "-s", &url, &id]).await;
    let got = run_cli(&["workflow", "get", "-s", &url, &id]).await;
    assert_eq!(got["status"], json!("CANCELLED"), "{got:#}");
    // The message wakes the recv, whose consume is refused: the workflow stops cancelled.
    app.send(&id, "go", &"after the cancel")
        .await
        .expect("send");
    let stopped = within(60, "the cancelled workflow stops", handle.result()).await;
    assert!(
        matches!(stopped, Err(Error::Cancelled(ref w)) if *w == id),
        "{stopped:?}"
    );
    assert_eq!(
        stage_counts(&tag),
        [1, 0, 0],
        "stopped before its last step"
    );
    assert_eq!(
        app.status(&id).await.expect("status").state,
        WorkflowState::Cancelled
    );

    run_cli(&["workflow", "resume", "-s", &url, &id]).await;
    let resumed = within(60, "the resumed workflow", async {
        app.retrieve::<String>(&id)
            .await
            .expect("retrieve")
            .result()
            .await
    })
    .await
    .expect("result");
    assert_eq!(resumed, format!("{tag}-one/after the cancel/{tag}-three"));
    assert_eq!(
        stage_counts(&tag),
        [1, 0, 1],
        "its first step not run again"
    );
    let status = app.status(&id).await.expect("status");
    assert_eq!(status.state, WorkflowState::Success);
    assert_eq!(status.executor_id.as_deref(), Some(app.executor_id()));
    let got = run_cli(&["workflow", "get", "-s", &url, &id]).await;
    assert_eq!(got["status"], json!("SUCCESS"), "{got:#}");
    assert_eq!(got["output"], json!(resumed), "{got:#}");
    app.shutdown().await.expect("shutdown");
}

/// A Cairn workflow forked with `dbos workflow fork --step 3` (and with `DBOSClient`, from
/// step 2 at an explicit application version) runs in the running Cairn application under
/// the new id, from the given step: the steps before it are copied, not run again.
async fn a_dbos_fork_of_a_cairn_workflow_runs_in_cairn_from_its_step(db: &TestDb) {
    let app = managed_app(db).await;
    let tag = fresh_tag("fork");
    let id = format!("{tag}-p");
    let original = app
        .start_with(StartOptions::id(&id), pipeline, (tag.clone(), 6))
        .await
        .expect("start")
        .result()
        .await
        .expect("result");
    assert_eq!(stage_counts(&tag), [1, 1, 1]);
    let url = dbos_url(db);

    let forked_id = format!("{tag}-fork3");
    let forked = run_cli(&[
        "workflow", "fork", "-s", &url, &id, "--step", "3", "-f", &forked_id,
    ])
    .await;
    assert_eq!(forked["workflow_id"], json!(forked_id), "{forked:#}");
    let output = within(60, "the fork from step 3", async {
        app.retrieve::<Outcome>(&forked_id)
            .await
            .expect("retrieve")
            .result()
            .await
    })
    .await
    .expect("the fork's result");
    assert_eq!(output, original);
    assert_eq!(stage_counts(&tag), [1, 1, 2], "only step 3 ran again");
    let status = app.status(&forked_id).await.expect("status");
    assert_eq!(status.state, WorkflowState::Success);
    assert_eq!(status.forked_from.as_deref(), Some(id.as_str()));
    assert_eq!(status.executor_id.as_deref(), Some(app.executor_id()));
    let names: Vec<String> = app
        .list_steps(&forked_id)
        .await
        .expect("steps")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["stage_one", "stage_two", "stage_three"]);

    let forked_id = format!("{tag}-fork2");
    let forked = run_python(
        "client_ops.py",
        &["fork", &url, &id, "2", &forked_id, "managed-v1"],
    )
    .await;
    assert_eq!(forked["forked_from"], json!(id), "{forked:#}");
    assert_eq!(forked["app_version"], json!("managed-v1"), "{forked:#}");
    let output = within(60, "the fork from step 2", async {
        app.retrieve::<Outcome>(&forked_id)
            .await
            .expect("retrieve")
            .result()
            .await
    })
    .await
    .expect("the fork's result");
    assert_eq!(output, original);
    assert_eq!(stage_counts(&tag), [1, 2, 3], "steps 2 and 3 ran again");

    let forks = dbos_list(db, json!({"forked_from": id})).await;
    assert_eq!(
        ids_of(&forks),
        sorted([format!("{tag}-fork2"), format!("{tag}-fork3")]),
        "{forks:#?}"
    );
    app.shutdown().await.expect("shutdown");
}

/// Cairn's standalone client lists workflows a DBOS application ran (enqueued by DBOS's own
/// client): filtered by name, status, application and id prefix, newest first and paged,
/// with DBOS's inputs, outputs and errors decoded, and their steps; and it forks one, which
/// the DBOS application runs from the given step without running the earlier ones again.
async fn cairn_lists_and_forks_workflows_dbos_ran(db: &TestDb) {
    let log = side_log(db);
    let (worker, ready) = PythonProcess::start(
        "client_worker.py",
        &["serve", &dbos_url(db), path_str(&log)],
        &[],
    )
    .await;
    let url = dbos_url(db);
    let spec: Vec<Value> = (1..=3)
        .map(|n| {
            json!({"workflow_name": "py_steps", "queue_name": "py_queue",
                   "workflow_id": format!("dbos-steps-{n}"), "args": [format!("t{n}")]})
        })
        .chain(
            [json!({"workflow_name": "py_fail", "queue_name": "py_queue",
                       "workflow_id": "dbos-fail", "args": ["no luck"]})],
        )
        .collect();
    let enqueued = run_python(
        "queues.py",
        &["enqueue", &url, &Value::Array(spec).to_string()],
    )
    .await;
    assert_eq!(
        enqueued["ids"].as_array().map(Vec::len),
        Some(4),
        "{enqueued:#}"
    );
    let client = Client::connect(&db.url).await.expect("connect");
    for n in 1..=3 {
        let output = within(120, "a DBOS workflow", async {
            client
                .retrieve::<String>(&format!("dbos-steps-{n}"))
                .await
                .expect("retrieve")
                .result()
                .await
        })
        .await
        .expect("result");
        assert_eq!(output, format!("t{n}:1:2:3"));
    }
    let failed = within(120, "the failing DBOS workflow", async {
        client
            .retrieve::<Value>("dbos-fail")
            .await
            .expect("retrieve")
            .result()
            .await
    })
    .await;
    assert!(matches!(failed, Err(Error::Application(_))), "{failed:?}");

    let listed = client
        .list_workflows(
            ListWorkflowsOptions::new()
                .name("py_steps")
                .status(WorkflowState::Success),
        )
        .await
        .expect("list_workflows");
    let ids: Vec<&str> = listed.iter().map(|s| s.workflow_id.as_str()).collect();
    assert_eq!(
        ids,
        ["dbos-steps-1", "dbos-steps-2", "dbos-steps-3"],
        "oldest first"
    );
    for status in &listed {
        let n = &status.workflow_id["dbos-steps-".len()..];
        assert_eq!(status.name, "py_steps");
        assert_eq!(status.application_name.as_deref(), Some("interop-py"));
        assert_eq!(status.app_version.as_deref(), ready["app_version"].as_str());
        assert_eq!(status.executor_id.as_deref(), Some("local"));
        assert_eq!(status.queue_name.as_deref(), Some("py_queue"));
        assert_eq!(status.input().expect("input"), vec![json!(format!("t{n}"))]);
        assert_eq!(
            status.output::<String>().expect("output"),
            Some(format!("t{n}:1:2:3"))
        );
    }
    let newest = client
        .list_workflows(
            ListWorkflowsOptions::new()
                .workflow_id_prefix("dbos-")
                .order(SortOrder::NewestFirst)
                .limit(2)
                .offset(1)
                .load_input(false),
        )
        .await
        .expect("list_workflows");
    assert_eq!(newest.len(), 2, "{newest:?}");
    assert!(
        newest.iter().all(|s| s.raw_input.is_none()),
        "inputs not loaded"
    );
    assert!(
        newest[0].created_at_ms >= newest[1].created_at_ms,
        "{newest:?}"
    );
    let errors = client
        .list_workflows(
            ListWorkflowsOptions::new()
                .status(WorkflowState::Error)
                .application_name("interop-py"),
        )
        .await
        .expect("list_workflows");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = errors[0].error().expect("error").expect("an error");
    assert_eq!(
        (error.name.as_str(), error.message.as_str()),
        ("ValueError", "no luck")
    );
    assert!(
        client
            .list_workflows(ListWorkflowsOptions::new().application_name("another-app"))
            .await
            .expect("list_workflows")
            .iter()
            .all(|s| s.application_name.is_none()),
        "only unclaimed workflows besides another application's"
    );
    let steps = client
        .list_workflow_steps("dbos-steps-1", ListStepsOptions::default())
        .await
        .expect("steps");
    let steps: Vec<(i32, &str, bool)> = steps
        .iter()
        .map(|s| (s.function_id, s.name.as_str(), s.raw_output.is_some()))
        .collect();
    assert_eq!(
        steps,
        [
            (1, "py_one", true),
            (2, "py_two", true),
            (3, "py_three", true)
        ]
    );
    // DBOS writes step outputs in its default format even in a portable workflow; Cairn
    // lists them all the same, raw.
    assert_eq!(
        db.query_text(
            "SELECT MIN(serialization) || ' ' || MAX(serialization) FROM operation_outputs \
             WHERE workflow_uuid = 'dbos-steps-1'"
        )
        .await
        .as_deref(),
        Some("py_pickle py_pickle")
    );

    // Cairn's client forks workflows DBOS ran; the DBOS application runs the forks, from
    // their start step: the steps before it are copied, not run again.
    let version = ready["app_version"]
        .as_str()
        .expect("app_version")
        .to_owned();
    for (start_step, fork_id, options) in [
        (
            3,
            "dbos-fork-3",
            ForkOptions::default().with_id("dbos-fork-3"),
        ),
        (
            2,
            "dbos-fork-2",
            ForkOptions::default()
                .with_id("dbos-fork-2")
                .with_app_version(&version),
        ),
    ] {
        let fork = client
            .fork_workflow::<String>("dbos-steps-1", start_step, options)
            .await
            .expect("fork");
        assert_eq!(fork.id(), fork_id);
        let output = within(120, "a fork DBOS runs", fork.result())
            .await
            .expect("the fork's result");
        assert_eq!(output, "t1:1:2:3");
        let status = client.status(fork_id).await.expect("status");
        assert_eq!(status.forked_from.as_deref(), Some("dbos-steps-1"));
        assert_eq!(status.application_name.as_deref(), Some("interop-py"));
        assert_eq!(status.app_version.as_deref(), Some(version.as_str()));
        assert_eq!(status.executor_id.as_deref(), Some("local"), "DBOS ran it");
        let names: Vec<String> = client
            .list_steps(fork_id)
            .await
            .expect("steps")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["py_one", "py_two", "py_three"]);
    }
    let fork_runs = |fork_id: &str| -> Vec<String> {
        common::side_log::read(&log)
            .into_iter()
            .filter(|l| l.ends_with(&format!(" {fork_id}")))
            .collect()
    };
    assert_eq!(
        fork_runs("dbos-fork-3"),
        ["exec py_three dbos-fork-3"],
        "steps 1 and 2 copied, not run again"
    );
    assert_eq!(
        fork_runs("dbos-fork-2"),
        ["exec py_two dbos-fork-2", "exec py_three dbos-fork-2"],
        "step 1 copied, not run again"
    );
    let forks = client
        .list_workflows(ListWorkflowsOptions::new().forked_from("dbos-steps-1"))
        .await
        .expect("list_workflows");
    let mut fork_ids: Vec<&str> = forks.iter().map(|s| s.workflow_id.as_str()).collect();
    fork_ids.sort();
    assert_eq!(fork_ids, ["dbos-fork-2", "dbos-fork-3"]);
    assert!(
        client
            .status("dbos-steps-1")
            .await
            .expect("status")
            .was_forked_from
    );
    let executions = common::side_log::read(&log);
    assert_eq!(
        executions.len(),
        9 + 3,
        "three steps of three workflows, one and two of the forks: {executions:?}"
    );

    client.close().await;
    worker.stop().await;
    let _ = std::fs::remove_file(&log);
}

// ---------------------------------------------------------------------------------------------
// 3. Plain SQL clients (Postgres)
// ---------------------------------------------------------------------------------------------

/// A plain SQL client enqueues a Cairn workflow with `enqueue_workflow(...)` (two positional
/// arguments, an id, the owning application) and sends it messages with `send_message(...)`:
/// on a topic, with a message id (sent twice, delivered once), and without a topic. Cairn runs
/// the workflow and receives every message; a send to a missing workflow is refused with
/// DBOS's error.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_sql_client_enqueues_and_messages_a_cairn_workflow() {
    let db = TestDb::new(Backend::Postgres);
    let app = db
        .builder("cairn-sql")
        .queue(cairn::Queue::new("sql_q").polling_interval(Duration::from_millis(50)))
        .launch()
        .await
        .expect("launch");
    let (sql, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);

    let id: String = sql
        .query_one(
            "SELECT dbos.enqueue_workflow(workflow_name => 'inbox', queue_name => 'sql_q', \
             positional_args => ARRAY['\"ann\"'::json, '{\"k\": [1, 2]}'::json], \
             workflow_id => 'sql-inbox-1', application_name => 'cairn-sql')",
            &[],
        )
        .await
        .expect("enqueue_workflow")
        .get(0);
    assert_eq!(id, "sql-inbox-1");
    for (message, topic, message_id) in [
        ("{\"n\": 1}", Some("letters"), Some("m-1")),
        ("{\"n\": 1}", Some("letters"), Some("m-1")),
        ("\"two\"", Some("letters"), None),
        ("3", None, None),
    ] {
        sql.execute(
            "SELECT dbos.send_message($1, $2::text::json, $3, $4)",
            &[&id, &message, &topic, &message_id],
        )
        .await
        .expect("send_message");
    }
    let missing = sql
        .execute(
            "SELECT dbos.send_message('no-such-workflow', '1'::json)",
            &[],
        )
        .await
        .expect_err("a send to a missing workflow");
    let db_error = missing.as_db_error().expect("a database error");
    assert_eq!(
        *db_error.code(),
        tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION
    );
    assert_eq!(db_error.message(), "DBOS non-existent workflow");

    let result = within(120, "the workflow SQL enqueued", async {
        app.retrieve::<Value>(&id)
            .await
            .expect("retrieve")
            .result()
            .await
    })
    .await
    .expect("result");
    assert_eq!(
        result,
        json!({"name": "ann", "meta": {"k": [1, 2]},
               "letters": [{"n": 1}, "two", null], "untitled": 3}),
        "every message once, in order; the duplicate message id delivered once"
    );
    let status = app.status(&id).await.expect("status");
    assert_eq!(status.application_name.as_deref(), Some("cairn-sql"));
    assert_eq!(status.executor_id.as_deref(), Some(app.executor_id()));
    assert_eq!(
        db.query_text(&format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM notifications \
             WHERE destination_uuid = '{id}' AND consumed"
        ))
        .await
        .as_deref(),
        Some("3")
    );
    app.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

both_backends!(
    a_cairn_client_drives_a_workflow_a_dbos_app_serves,
    dbos_lists_and_inspects_cairn_workflows_with_filters,
    dbos_cli_cancel_and_resume_are_carried_out_by_cairn,
    a_dbos_fork_of_a_cairn_workflow_runs_in_cairn_from_its_step,
    cairn_lists_and_forks_workflows_dbos_ran,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A fresh side file for step logs written by other processes.
fn side_log(_db: &TestDb) -> PathBuf {
    std::env::temp_dir().join(format!(
        "cairn-interop-client-{}.log",
        uuid::Uuid::new_v4().simple()
    ))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Await `future`, failing the test after `seconds`.
async fn within<T>(seconds: u64, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {seconds} s"))
}

/// Wait (up to 60 s) until the workflow's recorded operation names satisfy `ready`.
async fn wait_for_steps(client: &Client, id: &str, ready: impl Fn(&[&str]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let steps = client.list_steps(id).await.expect("list_steps");
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        if ready(&names) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workflow {id} did not get there; its operations: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cli_list(url: &str, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["workflow", "list", "-s", url];
    args.extend_from_slice(filters);
    let listed = run_cli(&args).await;
    listed
        .as_array()
        .unwrap_or_else(|| panic!("a JSON list: {listed:#}"))
        .clone()
}

async fn dbos_list(db: &TestDb, filters: Value) -> Vec<Value> {
    let out = run_python(
        "client_ops.py",
        &["list", &dbos_url(db), &filters.to_string()],
    )
    .await;
    out["workflows"]
        .as_array()
        .unwrap_or_else(|| panic!("workflows: {out:#}"))
        .clone()
}

fn ids_of(rows: &[Value]) -> Vec<String> {
    sorted(
        rows.iter()
            .map(|r| r["workflow_id"].as_str().expect("workflow_id").to_owned()),
    )
}

fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort();
    ids
}

fn created_at(row: &Value) -> i64 {
    match &row["created_at"] {
        Value::Number(n) => n.as_i64().expect("an integer"),
        Value::String(s) => s.parse().expect("a number"),
        other => panic!("created_at: {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A DBOS application and a Cairn application on one database, killed and restarted
// ---------------------------------------------------------------------------------------------

/// Workflows each application starts in the shared-database test.
const SHARED_WORKFLOWS: usize = 4;

#[cairn::step(name = "mark")]
async fn shared_mark(tag: String) -> Result<String, ClientError> {
    common::side_log::append("CAIRN_SHARED_LOG", &format!("mark rs {tag}"));
    Ok(tag)
}

/// The same name, step name and signature as DBOS's `shared_job` (`client_worker.py`), so a
/// process that ran the other application's workflow would succeed at it, and be seen to by
/// the prefix of the output.
#[cairn::workflow]
async fn shared_job(tag: String) -> Result<String, ClientError> {
    shared_mark(tag.clone()).await?;
    let go = cairn::recv::<String>("go", Duration::from_secs(600)).await?;
    Ok(format!("rs:{tag}:{}", go.unwrap_or_default()))
}

/// The Cairn process of the shared-database test: the application "interop-shared-rs" at
/// version "shared-v1" as executor "local" (the DBOS process's version and executor id). With
/// `CAIRN_SHARED_MODE=start` it starts [`SHARED_WORKFLOWS`] `shared_job`s ("rs-<i>"); with
/// `recover` only launches (which recovers). Then it runs until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the Cairn process of the shared-database interop test, started by it"]
async fn shared_cairn_worker() {
    let url = std::env::var("CAIRN_SHARED_URL").expect("CAIRN_SHARED_URL");
    let app = cairn::Cairn::builder("interop-shared-rs")
        .database_url(url)
        .app_version("shared-v1")
        .executor_id("local")
        .launch()
        .await
        .expect("launch");
    if std::env::var("CAIRN_SHARED_MODE").as_deref() == Ok("start") {
        for i in 0..SHARED_WORKFLOWS {
            let id = format!("rs-{i}");
            app.start_with(StartOptions::id(&id), shared_job, id.clone())
                .await
                .expect("start");
        }
    }
    std::future::pending::<()>().await;
}

fn spawn_shared_cairn_worker(db: &TestDb, log: &Path, mode: &str) -> tokio::process::Child {
    tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "shared_cairn_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("CAIRN_SHARED_URL", &db.url)
        .env("CAIRN_SHARED_LOG", log)
        .env("CAIRN_SHARED_MODE", mode)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the Cairn worker")
}

/// A DBOS Python application and a Cairn application run on one system database at once,
/// under the same application version and executor id ("local"), each with workflows of the
/// same name blocked in a recv after one step. Both processes are SIGKILLed, then restarted:
/// each recovers only its own application's workflows (by `application_name`), none runs the
/// other's, no step runs twice, and every workflow completes with its own side's output.
async fn a_dbos_app_and_a_cairn_app_each_recover_only_their_own_workflows(db: &TestDb) {
    let log = side_log(db);
    let url = dbos_url(db);
    let python_args = |mode: &'static str| {
        vec![
            "shared".to_owned(),
            url.clone(),
            path_str(&log).to_owned(),
            mode.to_owned(),
            SHARED_WORKFLOWS.to_string(),
        ]
    };
    let start_python = |mode: &'static str| {
        let args = python_args(mode);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            PythonProcess::start("client_worker.py", &args, &[]).await.0
        }
    };
    // DBOS creates the database; then Cairn joins it.
    let python = start_python("start").await;
    let mut cairn_worker = spawn_shared_cairn_worker(db, &log, "start");

    let ids: Vec<String> = (0..SHARED_WORKFLOWS)
        .flat_map(|i| [format!("py-{i}"), format!("rs-{i}")])
        .collect();
    let client = within(60, "connect", async {
        loop {
            // The Cairn worker may still be creating the Postgres database or the schema.
            match Client::connect(&db.url).await {
                Ok(client) => break client,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    for id in &ids {
        wait_until_exists(&client, id).await;
        wait_for_steps(&client, id, |names| names.contains(&"DBOS.sleep")).await;
    }

    // Real kills, mid-workflow, of both processes.
    python.kill().await;
    cairn_worker.kill().await.expect("SIGKILL the Cairn worker");
    for id in &ids {
        let status = client.status(id).await.expect("status");
        assert_eq!(status.state, WorkflowState::Pending, "{id} was interrupted");
        assert_eq!(status.executor_id.as_deref(), Some("local"), "{id}");
        assert_eq!(status.app_version.as_deref(), Some("shared-v1"), "{id}");
        let owner = if id.starts_with("py-") {
            "interop-shared-py"
        } else {
            "interop-shared-rs"
        };
        assert_eq!(status.application_name.as_deref(), Some(owner), "{id}");
    }

    let python = start_python("recover").await;
    let mut cairn_worker = spawn_shared_cairn_worker(db, &log, "recover");
    for id in &ids {
        client
            .send(id, "go", &format!("go-{id}"))
            .await
            .expect("send");
    }
    for id in &ids {
        let output = within(120, &format!("workflow {id} after recovery"), async {
            client
                .retrieve::<String>(id)
                .await
                .expect("retrieve")
                .result()
                .await
        })
        .await
        .unwrap_or_else(|e| panic!("{id}: {e:?}"));
        let side = &id[..2];
        assert_eq!(
            output,
            format!("{side}:{id}:go-{id}"),
            "{id} was run by its own application"
        );
    }
    let mut marks = common::side_log::read(&log);
    marks.sort();
    let mut expected: Vec<String> = ids
        .iter()
        .map(|id| format!("mark {} {id}", &id[..2]))
        .collect();
    expected.sort();
    assert_eq!(
        marks, expected,
        "each step ran once, in its own application's process"
    );
    for id in &ids {
        let status = client.status(id).await.expect("status");
        assert_eq!(status.state, WorkflowState::Success, "{id}");
        assert!(
            status.recovery_attempts >= 1,
            "{id} was recovered: {status:?}"
        );
    }

    client.close().await;
    python.stop().await;
    cairn_worker.kill().await.expect("stop the Cairn worker");
    let _ = std::fs::remove_file(&log);
}

/// Wait (up to 60 s) until the workflow `id` exists.
async fn wait_until_exists(client: &Client, id: &str) {
    within(60, &format!("workflow {id} exists"), async {
        loop {
            match client.status(id).await {
                Ok(_) => break,
                Err(Error::NotFound(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("status of {id}: {e:?}"),
            }
        }
    })
    .await;
}

both_backends!(a_dbos_app_and_a_cairn_app_each_recover_only_their_own_workflows);
