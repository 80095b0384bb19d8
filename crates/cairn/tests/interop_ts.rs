//! Interoperability with DBOS's TypeScript client, the real thing: `DBOSClient` of
//! `@dbos-inc/dbos-sdk` 5.3.0 in its default configuration (values in its `js_superjson`
//! format), run with the machine's Node.js from `$CAIRN_DBOS_TS_DIR`
//! (`scripts/node-client.sh` installs it), driving `scripts/interop/ts/client.js`.
//!
//! The TypeScript SDK's system database is Postgres only (it has no SQLite driver), so the
//! client's own tests run on Postgres. What it writes — `js_superjson` messages — is also
//! written by hand on both backends, with a `py_pickle` message Cairn cannot read: `recv`
//! refuses that one with a typed error and leaves it unconsumed.

mod common;

use std::time::Duration;

use cairn::Error;
use common::TestDb;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Workflows
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum TsError {
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

#[cairn::step]
async fn shout(name: String) -> Result<String, TsError> {
    Ok(name.to_uppercase())
}

/// A step, then a greeting.
#[cairn::workflow]
async fn greet(name: String) -> Result<String, TsError> {
    let loud = shout(name).await?;
    Ok(format!("hello {loud}"))
}

/// One message on "topic", as JSON.
#[cairn::workflow]
async fn receive_value(_tag: String) -> Result<Option<Value>, TsError> {
    Ok(cairn::recv::<Value>("topic", Duration::from_secs(30)).await?)
}

/// One message on "topic" as a number: 7 from TypeScript.
#[cairn::workflow]
async fn receive_number(_tag: String) -> Result<Option<u32>, TsError> {
    Ok(cairn::recv::<u32>("topic", Duration::from_secs(30)).await?)
}

/// One message on "topic"; a message it cannot decode is handled, not fatal: the workflow
/// answers the error it got.
#[cairn::workflow]
async fn receive_or_refuse(_tag: String) -> Result<String, TsError> {
    match cairn::recv::<Value>("topic", Duration::from_secs(30)).await {
        Ok(value) => Ok(format!("received {value:?}")),
        Err(Error::Decode { column, reason, .. }) => Ok(format!("refused {column}: {reason}")),
        Err(other) => Err(other.into()),
    }
}

/// Sets the event "status", then waits for "done".
#[cairn::workflow]
async fn publish(tag: String) -> Result<String, TsError> {
    cairn::set_event("status", &json!({"state": "ready", "tag": tag})).await?;
    let done = cairn::recv::<String>("done", Duration::from_secs(60)).await?;
    Ok(done.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The value the TypeScript client sends as `rich` (see `client.js`), as portable JSON maps
/// it: dates and big integers as strings, the set as an array, the string-keyed map as an
/// object, the number-keyed one as pairs, `undefined` left out of the object and `null` in
/// the array.
fn rich_as_portable() -> Value {
    json!({
        "when": "2024-01-02T03:04:05.678Z",
        "big": "12345678901234567890",
        "tags": ["a", "b"],
        "scores": {"x": 1, "y": 2},
        "pairs": [[1, "one"], [2, "two"]],
        "list": [null, 3],
    })
}

/// The same value as DBOS TypeScript's `DBOSJSON.stringify` writes it (captured from
/// @dbos-inc/dbos-sdk 5.3.0).
const RICH_SUPERJSON: &str = r#"{"json":{"when":"2024-01-02T03:04:05.678Z","big":"12345678901234567890","tags":["a","b"],"scores":[["x",1],["y",2]],"pairs":[[1,"one"],[2,"two"]],"missing":null,"list":[null,3]},"meta":{"values":{"when":["Date"],"big":["bigint"],"tags":["set"],"scores":["map"],"pairs":["map"],"missing":["undefined"],"list.0":["undefined"]}},"__dbos_serializer":"superjson"}"#;

/// Insert a message to `id` on "topic" as another SDK would, in `serialization`.
async fn insert_message(db: &TestDb, id: &str, uuid: &str, text: &str, serialization: &str) {
    let text = text.replace('\'', "''");
    db.execute(&format!(
        "INSERT INTO notifications (destination_uuid, topic, message, message_uuid, serialization) \
         VALUES ('{id}', 'topic', '{text}', '{uuid}', '{serialization}')"
    ))
    .await;
}

async fn count(db: &TestDb, sql: &str) -> String {
    db.query_text(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM {sql}"))
        .await
        .unwrap_or_default()
}

async fn finish<T>(handle: cairn::WorkflowHandle<T>) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    tokio::time::timeout(Duration::from_secs(60), handle.result())
        .await
        .expect("the workflow finishes")
        .expect("result")
}

// ---------------------------------------------------------------------------------------------
// Both backends: what the TypeScript SDK writes, written by hand
// ---------------------------------------------------------------------------------------------

/// A `js_superjson` message (DBOS TypeScript's default format) with dates, a big integer, a
/// set, two maps and `undefined`s is received as portable JSON, consumed, and recorded as it
/// was stored, in its own format (a replay decodes the record the same way).
async fn a_superjson_message_is_received_as_portable_json(db: &TestDb) {
    let app = db.launch().await;
    let handle = app
        .start(receive_value, "superjson".to_owned())
        .await
        .expect("start");
    let id = handle.id().to_owned();
    insert_message(db, &id, "sj-1", RICH_SUPERJSON, "js_superjson").await;
    assert_eq!(finish(handle).await, Some(rich_as_portable()));
    let consumed = format!("notifications WHERE destination_uuid = '{id}' AND consumed");
    assert_eq!(count(db, &consumed).await, "1");
    let recorded = format!(
        "operation_outputs WHERE workflow_uuid = '{id}' AND function_name = 'DBOS.recv' \
         AND serialization = 'js_superjson'"
    );
    assert_eq!(
        count(db, &recorded).await,
        "1",
        "the checkpoint keeps the message's format"
    );
    let steps = app.list_steps(&id).await.expect("steps");
    let recv = steps
        .iter()
        .find(|s| s.name == "DBOS.recv")
        .expect("the recv step");
    assert_eq!(
        recv.raw_output.as_deref(),
        Some(RICH_SUPERJSON),
        "recorded as received"
    );
    app.shutdown().await.expect("shutdown");
}

/// A message in a format Cairn cannot read (`py_pickle`) makes `recv` return
/// [`Error::Decode`] naming the format, which the workflow handles; the message stays
/// unconsumed and no `DBOS.recv` checkpoint is written.
async fn an_unreadable_message_is_a_typed_error_and_stays_unconsumed(db: &TestDb) {
    let app = db.launch().await;
    let handle = app
        .start(receive_or_refuse, "pickle".to_owned())
        .await
        .expect("start");
    let id = handle.id().to_owned();
    insert_message(db, &id, "pickle-1", "gASVBQAAAAAAAACMAWGULg==", "py_pickle").await;
    let answer = finish(handle).await;
    assert!(
        answer.starts_with("refused notifications.message") && answer.contains("py_pickle"),
        "{answer}"
    );
    let status = app.status(&id).await.expect("status");
    assert_eq!(
        status.state,
        cairn::WorkflowState::Success,
        "the workflow handled it"
    );
    let unconsumed = format!(
        "notifications WHERE destination_uuid = '{id}' AND message_uuid = 'pickle-1' AND NOT consumed \
         AND consumed_by_function_id IS NULL"
    );
    assert_eq!(
        count(db, &unconsumed).await,
        "1",
        "the message is still there"
    );
    let recv =
        format!("operation_outputs WHERE workflow_uuid = '{id}' AND function_name = 'DBOS.recv'");
    assert_eq!(
        count(db, &recv).await,
        "0",
        "nothing was recorded for the refused recv"
    );
    app.shutdown().await.expect("shutdown");
}

/// A portable message of another type than the one asked for is refused the same way: a
/// typed error, the message left for a reader that can take it.
async fn a_message_of_another_type_stays_unconsumed(db: &TestDb) {
    let app = db.launch().await;
    let handle = app
        .start(receive_number, "mistyped".to_owned())
        .await
        .expect("start");
    let id = handle.id().to_owned();
    app.send(&id, "topic", &"not a number").await.expect("send");
    let error = tokio::time::timeout(Duration::from_secs(60), handle.result())
        .await
        .expect("the workflow finishes")
        .expect_err("a string is not a u32");
    assert!(error.to_string().contains("u32"), "{error}");
    let unconsumed = format!("notifications WHERE destination_uuid = '{id}' AND NOT consumed");
    assert_eq!(count(db, &unconsumed).await, "1");
    app.shutdown().await.expect("shutdown");
}

both_backends!(
    a_superjson_message_is_received_as_portable_json,
    an_unreadable_message_is_a_typed_error_and_stays_unconsumed,
    a_message_of_another_type_stays_unconsumed,
);

// ---------------------------------------------------------------------------------------------
// Postgres: the TypeScript client itself
// ---------------------------------------------------------------------------------------------

/// DBOS's TypeScript client, as a new user runs it (`DBOSClient.create({systemDatabaseUrl})`),
/// on a Cairn database: it lists Cairn workflows, reads their results and steps, enqueues a
/// Cairn workflow by name onto a queue a Cairn process serves and gets its result, sends
/// messages (in its default `js_superjson`) that Cairn workflows receive with `cairn::recv`,
/// and reads an event a Cairn workflow set.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbos_typescript_client_operates_cairn_workflows() {
    use cairn::Queue;
    use common::Backend;
    use common::ts::run_ts;

    let db = TestDb::new(Backend::Postgres);
    let app = db
        .builder("cairn-test")
        .queue(Queue::new("ts-queue").polling_interval(Duration::from_millis(50)))
        .launch()
        .await
        .expect("launch");
    let url = db.url.clone();

    // Results, listing and steps of a workflow Cairn ran.
    let handle = app.start(greet, "ann".to_owned()).await.expect("start");
    let greeted = handle.id().to_owned();
    assert_eq!(finish(handle).await, "hello ANN");
    let result = run_ts(&url, &["result", &greeted]).await;
    assert_eq!(result, json!({"result": "hello ANN"}));
    let listed = run_ts(&url, &["list", "greet"]).await;
    let row = listed
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["workflowID"] == json!(greeted)))
        .unwrap_or_else(|| panic!("{greeted} not listed: {listed:#}"));
    assert_eq!(row["status"], json!("SUCCESS"), "{row:#}");
    assert_eq!(row["output"], json!("hello ANN"), "{row:#}");
    assert_eq!(row["input"], json!(["ann"]), "{row:#}");
    let listed_steps = run_ts(&url, &["steps", &greeted]).await;
    let steps = listed_steps
        .as_array()
        .unwrap_or_else(|| panic!("{listed_steps:#}"));
    assert_eq!(steps.len(), 1, "{listed_steps:#}");
    assert!(
        steps[0]["name"]
            .as_str()
            .is_some_and(|n| n.contains("shout")),
        "{listed_steps:#}"
    );
    assert_eq!(steps[0]["output"], json!("ANN"), "{listed_steps:#}");
    assert_eq!(steps[0]["error"], Value::Null, "{listed_steps:#}");

    // Enqueue by name (arguments in js_superjson) onto the queue this process serves.
    let enqueued = format!("ts-enqueued-{}", uuid::Uuid::new_v4());
    let answer = run_ts(
        &url,
        &["enqueue", "ts-queue", "greet", r#"["bob"]"#, &enqueued],
    )
    .await;
    assert_eq!(answer["workflowID"], json!(enqueued), "{answer:#}");
    let result = run_ts(&url, &["result", &enqueued]).await;
    assert_eq!(result, json!({"result": "hello BOB"}));
    let status = app.status(&enqueued).await.expect("status");
    assert_eq!(status.queue_name.as_deref(), Some("ts-queue"));
    assert_eq!(
        status.executor_id.as_deref(),
        Some(app.executor_id()),
        "this process ran it"
    );
    // Its outcome is written in the format its row names (js_superjson), so Cairn reads it too.
    let handle = app.retrieve::<String>(&enqueued).await.expect("retrieve");
    assert_eq!(finish(handle).await, "hello BOB");
    let superjson_output = format!(
        "workflow_output WHERE workflow_uuid = '{enqueued}' AND output LIKE '%\"__dbos_serializer\":\"superjson\"%'"
    );
    assert_eq!(count(&db, &superjson_output).await, "1");

    // Messages in the client's default format reach cairn::recv.
    let number = app
        .start(receive_number, "ts-number".to_owned())
        .await
        .expect("start");
    let number_id = number.id().to_owned();
    run_ts(&url, &["send", &number_id, "topic", "number"]).await;
    assert_eq!(finish(number).await, Some(7));
    let rich = app
        .start(receive_value, "ts-rich".to_owned())
        .await
        .expect("start");
    let rich_id = rich.id().to_owned();
    run_ts(&url, &["send", &rich_id, "topic", "rich"]).await;
    assert_eq!(finish(rich).await, Some(rich_as_portable()));
    let superjson = format!(
        "notifications WHERE destination_uuid IN ('{number_id}', '{rich_id}') \
         AND serialization = 'js_superjson' AND consumed"
    );
    assert_eq!(
        count(&db, &superjson).await,
        "2",
        "both sent as js_superjson and consumed"
    );

    // An event a Cairn workflow set.
    let publisher = app
        .start(publish, "ts-event".to_owned())
        .await
        .expect("start");
    let publisher_id = publisher.id().to_owned();
    let event = run_ts(&url, &["event", &publisher_id, "status", "30"]).await;
    assert_eq!(
        event,
        json!({"value": {"state": "ready", "tag": "ts-event"}})
    );
    app.send(&publisher_id, "done", &"done")
        .await
        .expect("send");
    assert_eq!(finish(publisher).await, "done");

    app.shutdown().await.expect("shutdown");
    db.drop_db().await;
}
