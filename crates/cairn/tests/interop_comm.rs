//! Interoperability of messages, events, streams and cancellation with DBOS Transact 3.4, the
//! real thing: the Python package `dbos==3.4.0` run from `$CAIRN_DBOS_PYTHON`
//! (`scripts/python-venv.sh` makes one), driving `scripts/interop/comm.py`.
//!
//! DBOS's client sends to Cairn workflows, reads their events and streams and cancels them;
//! Cairn reads events and streams a DBOS application wrote.

mod common;

use std::time::Duration;

use common::TestDb;
use common::dbos::{dbos_url, run_python};
use futures::StreamExt;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Workflows
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum CommError {
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

/// Two messages on "topic" (30 s each), then whatever a third, short receive finds.
#[cairn::workflow]
async fn collect(_tag: String) -> Result<Vec<Option<Value>>, CommError> {
    let first = cairn::recv::<Value>("topic", Duration::from_secs(30)).await?;
    let second = cairn::recv::<Value>("topic", Duration::from_secs(30)).await?;
    let third = cairn::recv::<Value>("topic", Duration::from_secs(3)).await?;
    Ok(vec![first, second, third])
}

/// One message on "topic".
#[cairn::workflow]
async fn receive_one(_tag: String) -> Result<Option<Value>, CommError> {
    Ok(cairn::recv::<Value>("topic", Duration::from_secs(30)).await?)
}

/// Events "status" ("a", then "b") and "count" (3), the stream "s" of 0..5 closed; then it
/// waits for a message on "done" so readers see the stream end by its close, not by the
/// workflow's end.
#[cairn::workflow]
async fn publish(_tag: String) -> Result<String, CommError> {
    cairn::set_event("status", &"a").await?;
    cairn::set_event("status", &"b").await?;
    cairn::set_event("count", &3).await?;
    for n in 0..5 {
        cairn::write_stream("s", &n).await?;
    }
    cairn::close_stream("s").await?;
    let done = cairn::recv::<String>("done", Duration::from_secs(60)).await?;
    Ok(done.unwrap_or_else(|| "<timeout>".to_owned()))
}

#[cairn::step]
async fn prepare(tag: String) -> Result<String, CommError> {
    Ok(format!("prepared {tag}"))
}

/// A step, a message on "go" (from DBOS), then a long wait on "never".
#[cairn::workflow]
async fn wait_long(tag: String) -> Result<Option<String>, CommError> {
    prepare(tag).await?;
    let go = cairn::recv::<String>("go", Duration::from_secs(30)).await?;
    assert_eq!(go.as_deref(), Some("go"));
    Ok(cairn::recv::<String>("never", Duration::from_secs(60)).await?)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// DBOS's client sends two messages (portable JSON) to a Cairn workflow waiting in recv: a
/// dict, then one with an idempotency key sent twice. The workflow receives them in order and
/// the idempotent one only once; both rows are consumed by the receiving operations.
async fn dbos_client_messages_reach_a_cairn_workflow(db: &TestDb) {
    let app = db.launch().await;
    let handle = app
        .start(collect, "messages".to_owned())
        .await
        .expect("start");
    let id = handle.id().to_owned();
    wait_for_steps(&app, &id, |steps| count_named(steps, "DBOS.sleep") >= 1).await;

    let url = dbos_url(db);
    let dict = json!({"kind": "dict", "items": [1, 2, 3], "nested": {"ok": true}});
    let sent = run_python("comm.py", &["send", &url, &id, "topic", &dict.to_string()]).await;
    assert_eq!(sent["sent"], json!(1), "{sent:#}");
    let once = json!("exactly once");
    let sent = run_python(
        "comm.py",
        &["send", &url, &id, "topic", &once.to_string(), "key-1", "2"],
    )
    .await;
    assert_eq!(sent["sent"], json!(2), "{sent:#}");

    let received = tokio::time::timeout(Duration::from_secs(60), handle.result())
        .await
        .expect("the workflow finishes")
        .expect("result");
    assert_eq!(
        received,
        vec![Some(dict), Some(once), None],
        "both messages in order; the idempotent one delivered once"
    );

    let rows = |filter: &str| {
        format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM notifications WHERE destination_uuid = '{id}' {filter}"
        )
    };
    assert_eq!(db.query_text(&rows("")).await.as_deref(), Some("2"));
    assert_eq!(
        db.query_text(&rows("AND consumed AND serialization = 'portable_json'"))
            .await
            .as_deref(),
        Some("2"),
        "both rows portable JSON and consumed"
    );
    // recv 1 is operation 1 (its deadline 2), recv 2 is operation 3 (deadline 4).
    let consumer = |filter: &str| {
        format!(
            "SELECT CAST(consumed_by_function_id AS TEXT) FROM notifications \
             WHERE destination_uuid = '{id}' AND {filter}"
        )
    };
    assert_eq!(
        db.query_text(&consumer(&format!("message_uuid <> 'key-1::{id}'")))
            .await
            .as_deref(),
        Some("1"),
        "the dict was consumed by the first recv"
    );
    assert_eq!(
        db.query_text(&consumer(&format!("message_uuid = 'key-1::{id}'")))
            .await
            .as_deref(),
        Some("3"),
        "the idempotent message (its uuid DBOS's `key::destination`) by the second recv"
    );
    app.shutdown().await.expect("shutdown");
}

/// DBOS's client reads the events a Cairn workflow set (the latest values) and its stream,
/// which ends at Cairn's close while the workflow is still running.
async fn dbos_client_reads_cairn_events_and_streams(db: &TestDb) {
    let app = db.launch().await;
    let handle = app
        .start(publish, "events".to_owned())
        .await
        .expect("start");
    let id = handle.id().to_owned();
    wait_for_steps(&app, &id, |steps| count_named(steps, "DBOS.sleep") >= 1).await;

    let seen = run_python("comm.py", &["read", &dbos_url(db), &id]).await;
    assert_eq!(seen["status"], json!("b"), "the latest value: {seen:#}");
    assert_eq!(seen["count"], json!(3), "{seen:#}");
    assert_eq!(seen["missing"], Value::Null, "{seen:#}");
    assert_eq!(
        seen["stream"],
        json!([0, 1, 2, 3, 4]),
        "the stream, ended by its close: {seen:#}"
    );
    let status = app.status(&id).await.expect("status");
    assert_eq!(
        status.state,
        cairn::WorkflowState::Pending,
        "DBOS read the stream to its end while the workflow still ran"
    );

    app.send(&id, "done", &"done").await.expect("send");
    let done = tokio::time::timeout(Duration::from_secs(60), handle.result())
        .await
        .expect("the workflow finishes")
        .expect("result");
    assert_eq!(done, "done");
    app.shutdown().await.expect("shutdown");
}

/// DBOS's client cancels a Cairn workflow waiting in recv. Cairn learns of it at the
/// workflow's next durable operation: a message from Rust wakes the recv, whose consume is
/// refused (the workflow is no longer PENDING), so the workflow stops as cancelled and the
/// message stays unconsumed. Before that, a message DBOS sent was consumed by Cairn's recv.
async fn dbos_client_cancels_a_cairn_workflow(db: &TestDb) {
    let app = db.launch().await;
    let handle = app
        .start(wait_long, "cancel".to_owned())
        .await
        .expect("start");
    let id = handle.id().to_owned();
    let url = dbos_url(db);

    // prepare = 1, recv "go" = 2 (deadline 3), recv "never" = 4 (deadline 5).
    wait_for_steps(&app, &id, |steps| count_named(steps, "DBOS.sleep") >= 1).await;
    run_python("comm.py", &["send", &url, &id, "go", "\"go\""]).await;
    wait_for_steps(&app, &id, |steps| count_named(steps, "DBOS.sleep") >= 2).await;
    let go_row = db
        .query_text(&format!(
            "SELECT CAST(consumed_by_function_id AS TEXT) || ' ' || serialization || ' ' || message \
             FROM notifications WHERE destination_uuid = '{id}' AND topic = 'go' AND consumed"
        ))
        .await;
    assert_eq!(
        go_row.as_deref(),
        Some("2 portable_json \"go\""),
        "DBOS's message consumed by the recv (operation 2)"
    );

    let cancelled = run_python("comm.py", &["cancel", &url, &id]).await;
    assert_eq!(cancelled["status"], json!("CANCELLED"), "{cancelled:#}");

    app.send(&id, "never", &"wake up")
        .await
        .expect("send after the cancel");
    let result = tokio::time::timeout(Duration::from_secs(30), handle.result())
        .await
        .expect("the cancelled workflow stops at its next durable operation");
    assert!(
        matches!(result, Err(cairn::Error::Cancelled(ref w)) if *w == id),
        "result after DBOS's cancel: {result:?}"
    );
    let status = app.status(&id).await.expect("status");
    assert_eq!(status.state, cairn::WorkflowState::Cancelled);
    let steps = app.list_steps(&id).await.expect("steps");
    let names: Vec<(i32, &str)> = steps
        .iter()
        .map(|s| (s.function_id, s.name.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            (1, "prepare"),
            (2, "DBOS.recv"),
            (3, "DBOS.sleep"),
            (5, "DBOS.sleep")
        ],
        "the refused recv recorded nothing"
    );
    let never_row = db
        .query_text(&format!(
            "SELECT CASE WHEN consumed THEN 'consumed' ELSE 'unconsumed' END \
             FROM notifications WHERE destination_uuid = '{id}' AND topic = 'never'"
        ))
        .await;
    assert_eq!(never_row.as_deref(), Some("unconsumed"));
    app.shutdown().await.expect("shutdown");

    // DBOS still sees it cancelled.
    let seen = run_python("comm.py", &["status", &url, &id]).await;
    assert_eq!(seen["status"], json!("CANCELLED"), "{seen:#}");
}

/// A DBOS application (portable JSON) sets events and writes a stream; Cairn reads them.
async fn cairn_reads_events_set_by_dbos(db: &TestDb) {
    let written = run_python("comm.py", &["app", &dbos_url(db), "portable"]).await;
    let id = written["workflow_id"]
        .as_str()
        .expect("workflow id")
        .to_owned();
    assert_eq!(written["status"], json!("SUCCESS"), "{written:#}");

    let app = db.launch().await;
    let k: Option<Value> = app
        .get_event(&id, "k", Duration::from_secs(5))
        .await
        .expect("get_event k");
    assert_eq!(
        k,
        Some(json!({"x": 2, "y": [1, "two"]})),
        "the latest value"
    );
    let n: Option<i64> = app
        .get_event(&id, "n", Duration::from_secs(5))
        .await
        .expect("get_event n");
    assert_eq!(n, Some(7));
    let missing: Option<Value> = app
        .get_event(&id, "missing", Duration::from_millis(200))
        .await
        .expect("get_event missing");
    assert_eq!(missing, None);
    let events = app.list_events(&id).await.expect("list_events");
    assert_eq!(
        serde_json::to_value(&events).expect("json"),
        json!({"k": {"x": 2, "y": [1, "two"]}, "n": 7})
    );
    let stream: Vec<Value> = tokio::time::timeout(
        Duration::from_secs(30),
        app.read_stream::<Value>(&id, "s").collect::<Vec<_>>(),
    )
    .await
    .expect("the stream ends")
    .into_iter()
    .collect::<cairn::Result<_>>()
    .expect("stream values");
    assert_eq!(stream, vec![json!(1), json!("two"), json!({"three": 3})]);
    app.shutdown().await.expect("shutdown");
}

/// A DBOS application with its default serializer writes events and stream values as
/// `py_pickle`; Cairn refuses each with an [`cairn::Error::Decode`] that names the format.
async fn cairn_refuses_pickled_events_set_by_dbos(db: &TestDb) {
    let written = run_python("comm.py", &["app", &dbos_url(db), "default"]).await;
    let id = written["workflow_id"]
        .as_str()
        .expect("workflow id")
        .to_owned();
    assert_eq!(written["status"], json!("SUCCESS"), "{written:#}");
    let format = db
        .query_text(&format!(
            "SELECT serialization FROM workflow_events WHERE workflow_uuid = '{id}' AND key = 'k'"
        ))
        .await;
    assert_eq!(
        format.as_deref(),
        Some("py_pickle"),
        "DBOS's default format"
    );

    let app = db.launch().await;
    // Every read is checked before failing, so a failure lists each one that misbehaves.
    let mut wrong = Vec::new();
    let mut expect_pickle_refused =
        |what: &str, outcome: Result<String, cairn::Error>| match outcome {
            Err(
                ref error @ cairn::Error::Decode {
                    ref workflow_id, ..
                },
            ) if *workflow_id == id && error.to_string().contains("py_pickle") => {}
            Err(error) => wrong.push(format!("{what}: {error:?} ({error})")),
            Ok(value) => wrong.push(format!("{what}: returned {value}")),
        };
    let k = app
        .get_event::<Value>(&id, "k", Duration::from_secs(5))
        .await;
    expect_pickle_refused("get_event", k.map(|v| format!("{v:?}")));
    let events = app.list_events(&id).await;
    expect_pickle_refused("list_events", events.map(|v| format!("{v:?}")));
    let first = tokio::time::timeout(
        Duration::from_secs(30),
        Box::pin(app.read_stream::<Value>(&id, "s")).next(),
    )
    .await
    .expect("the stream yields");
    expect_pickle_refused(
        "read_stream",
        first
            .unwrap_or_else(|| Ok(Value::from("<the stream ended>")))
            .map(|v| format!("{v:?}")),
    );
    assert!(
        wrong.is_empty(),
        "expected Error::Decode naming py_pickle for workflow {id}, got:\n{}",
        wrong.join("\n")
    );
    app.shutdown().await.expect("shutdown");
}

/// DBOS's client with its default serializer sends a `py_pickle` message; the Cairn
/// workflow receiving it fails with a decode error that names the format.
async fn cairn_refuses_a_pickled_message_from_dbos(db: &TestDb) {
    let app = db.launch().await;
    let handle = app
        .start(receive_one, "pickled".to_owned())
        .await
        .expect("start");
    let id = handle.id().to_owned();
    let url = dbos_url(db);
    run_python(
        "comm.py",
        &[
            "send",
            &url,
            &id,
            "topic",
            "{\"x\": 1}",
            "-",
            "1",
            "default",
        ],
    )
    .await;
    let format = db
        .query_text(&format!(
            "SELECT serialization FROM notifications WHERE destination_uuid = '{id}'"
        ))
        .await;
    assert_eq!(
        format.as_deref(),
        Some("py_pickle"),
        "DBOS's default format"
    );
    let result = tokio::time::timeout(Duration::from_secs(60), handle.result())
        .await
        .expect("the workflow finishes");
    assert!(
        matches!(&result, Err(cairn::Error::Application(e)) if e.message.contains("py_pickle")),
        "expected the workflow to fail with a decode error naming py_pickle, got {result:?}"
    );
    app.shutdown().await.expect("shutdown");
}

both_backends!(
    dbos_client_messages_reach_a_cairn_workflow,
    dbos_client_reads_cairn_events_and_streams,
    dbos_client_cancels_a_cairn_workflow,
    cairn_reads_events_set_by_dbos,
    cairn_refuses_pickled_events_set_by_dbos,
    cairn_refuses_a_pickled_message_from_dbos,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn count_named(steps: &[cairn::StepInfo], name: &str) -> usize {
    steps.iter().filter(|s| s.name == name).count()
}

/// Wait (up to 30 s) until the workflow's recorded operations satisfy `ready`.
async fn wait_for_steps(app: &cairn::Cairn, id: &str, ready: impl Fn(&[cairn::StepInfo]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let steps = app.list_steps(id).await.expect("list_steps");
        if ready(&steps) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workflow {id} did not get there; its operations: {:?}",
            steps
                .iter()
                .map(|s| (s.function_id, s.name.as_str()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
