//! The standalone client: it connects to a system database an application created (never
//! creating or migrating one), enqueues typed workflows that the application runs, awaits
//! their results, and talks to running workflows — each on SQLite and on Postgres.

mod common;

use std::time::Duration;

use cairn::{Client, EnqueueOptions, Error, Message, Queue, ReadStreamOptions, WorkflowState};
use common::{Backend, TestDb};
use futures::StreamExt;

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AppError {
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

#[cairn::workflow]
async fn double(n: i64) -> Result<i64, AppError> {
    Ok(n * 2)
}

/// Waits for a message, publishes it as an event and on a stream, and returns it.
#[cairn::workflow]
async fn echo(prefix: String) -> Result<String, AppError> {
    let message: Option<String> = cairn::recv(Some("in"), Duration::from_secs(60)).await?;
    let reply = format!("{prefix}{}", message.unwrap_or_default());
    cairn::set_event("reply", &reply).await?;
    cairn::write_stream("out", &reply).await?;
    cairn::close_stream("out").await?;
    Ok(reply)
}

both_backends!(
    a_client_refuses_a_database_without_a_schema_and_creates_nothing,
    a_client_enqueues_a_typed_workflow_that_the_application_runs,
    a_client_messages_a_workflow_and_reads_its_event_and_stream,
    a_client_sends_many_messages_all_or_none,
    a_client_reads_a_stream_from_an_offset_with_a_timeout,
    management_calls_inside_a_workflow_are_recorded_as_its_steps,
    a_retention_policy_deletes_finished_workflows_while_the_application_runs,
);

async fn a_client_refuses_a_database_without_a_schema_and_creates_nothing(db: &TestDb) {
    let refused = Client::connect(&db.url).await;
    assert!(
        matches!(refused, Err(Error::SchemaVersion { found: 0, .. })),
        "{refused:?}"
    );
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("launch a Cairn application"), "{message}");
    match db.backend {
        Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite:///");
            assert!(
                !std::path::Path::new(path).exists(),
                "the client created {path}"
            );
        }
        Backend::Postgres => {
            let server =
                common::pg_client(&format!("{}/postgres", common::postgres_server())).await;
            let name = db.url.rsplit('/').next().unwrap_or_default().to_owned();
            let found = server
                .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .expect("query pg_database");
            assert!(found.is_empty(), "the client created database {name}");
        }
    }
    // Once an application has created it, the client connects.
    let app = db.launch().await;
    let client = Client::connect(&db.url).await.expect("connect");
    assert_eq!(client.backend(), app.backend());
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

async fn a_client_enqueues_a_typed_workflow_that_the_application_runs(db: &TestDb) {
    let app = db
        .builder("client-enqueue")
        .queue(Queue::new("work"))
        .launch()
        .await
        .expect("launch");
    let client = Client::connect(&db.url).await.expect("connect");
    let handle = client
        .enqueue_with(
            EnqueueOptions::id("from-client").with_priority(3),
            "work",
            double,
            21,
        )
        .await
        .expect("enqueue");
    assert_eq!(handle.id(), "from-client");
    let result = tokio::time::timeout(Duration::from_secs(60), handle.result())
        .await
        .expect("the application ran the workflow in time");
    assert_eq!(result.expect("result"), 42);
    // The application that ran it took it over (as a DBOS worker does).
    let status = client.status("from-client").await.expect("status");
    assert_eq!(status.state, WorkflowState::Success);
    assert_eq!(status.queue_name.as_deref(), Some("work"));
    assert_eq!(status.app_version.as_deref(), Some(app.app_version()));
    assert_eq!(status.application_name.as_deref(), Some("client-enqueue"));
    // Until then, what a client enqueues belongs to no application version or application
    // (as with DBOS's client): any worker of the queue may run it.
    let waiting = client
        .enqueue("unserved", double, 1)
        .await
        .expect("enqueue on a queue nobody serves");
    let status = client.status(waiting.id()).await.expect("status");
    assert_eq!(status.state, WorkflowState::Enqueued);
    assert_eq!(status.app_version, None);
    assert_eq!(status.application_name, None);
    // The same id again is the same workflow, not a second one.
    let again = client
        .enqueue_with(EnqueueOptions::id("from-client"), "work", double, 21)
        .await
        .expect("enqueue again");
    assert!(!again.created());
    assert_eq!(again.result().await.expect("result"), 42);
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

async fn a_client_messages_a_workflow_and_reads_its_event_and_stream(db: &TestDb) {
    let app = db.launch().await;
    let handle = app
        .start_with(cairn::StartOptions::id("echo-1"), echo, "re: ".to_owned())
        .await
        .expect("start");
    let client = Client::connect(&db.url).await.expect("connect");
    client
        .send("echo-1", "in", &"hello".to_owned())
        .await
        .expect("send");
    let event: Option<String> = client
        .get_event("echo-1", "reply", Duration::from_secs(60))
        .await
        .expect("get_event");
    assert_eq!(event.as_deref(), Some("re: hello"));
    let streamed: Vec<String> = client
        .read_stream::<String>("echo-1", "out")
        .map(|item| item.expect("stream item"))
        .collect()
        .await;
    assert_eq!(streamed, ["re: hello"]);
    let from_client = client.retrieve::<String>("echo-1").await.expect("retrieve");
    assert_eq!(from_client.result().await.expect("result"), "re: hello");
    assert_eq!(handle.result().await.expect("result"), "re: hello");
    assert!(matches!(
        client.retrieve::<String>("no-such-workflow").await,
        Err(Error::NotFound(_))
    ));
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

/// Receives one message on its own id's topic and returns it.
#[cairn::workflow]
async fn inbox(topic: String) -> Result<i64, AppError> {
    let value: Option<i64> = cairn::recv(Some(topic.as_str()), Duration::from_secs(60)).await?;
    Ok(value.unwrap_or(-1))
}

/// Writes `n` values to stream `s`, then waits for a message before closing it.
#[cairn::workflow]
async fn slow_writer(n: i64) -> Result<(), AppError> {
    for i in 0..n {
        cairn::write_stream("s", &i).await?;
    }
    let _: Option<String> = cairn::recv(Some("close"), Duration::from_secs(60)).await?;
    cairn::close_stream("s").await?;
    Ok(())
}

async fn a_client_sends_many_messages_all_or_none(db: &TestDb) {
    let app = db.launch().await;
    let a = app
        .start_with(cairn::StartOptions::id("inbox-a"), inbox, "t".to_owned())
        .await
        .expect("start a");
    let b = app
        .start_with(cairn::StartOptions::id("inbox-b"), inbox, "u".to_owned())
        .await
        .expect("start b");
    let client = Client::connect(&db.url).await.expect("connect");
    // One destination is missing: nothing is sent, and the error names it.
    let refused = client
        .send_many(vec![
            Message::new("inbox-a", Some("t"), &1),
            Message::new("no-such-workflow", Some("t"), &2),
        ])
        .await;
    assert!(
        matches!(&refused, Err(Error::NotFound(id)) if id == "no-such-workflow"),
        "{refused:?}"
    );
    client
        .send_many(vec![
            Message::new("inbox-a", Some("t"), &10).with_idempotency_key("k"),
            Message::new("inbox-b", Some("u"), &20),
        ])
        .await
        .expect("send_many");
    // The refused batch sent nothing: inbox-a receives 10, not 1.
    assert_eq!(a.result().await.expect("a"), 10);
    assert_eq!(b.result().await.expect("b"), 20);
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

async fn a_client_reads_a_stream_from_an_offset_with_a_timeout(db: &TestDb) {
    let app = db.launch().await;
    let writer = app
        .start_with(cairn::StartOptions::id("writer"), slow_writer, 3)
        .await
        .expect("start");
    let client = Client::connect(&db.url).await.expect("connect");
    // From offset 1, with a short timeout: values 1 and 2, then a timeout error (the writer
    // waits for a message before it closes the stream), then the end.
    let options = ReadStreamOptions::default()
        .offset(1)
        .timeout(Duration::from_millis(300));
    let items: Vec<cairn::Result<i64>> = client
        .read_stream_with::<i64>("writer", "s", options)
        .collect()
        .await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0].as_ref().ok(), Some(&1));
    assert_eq!(items[1].as_ref().ok(), Some(&2));
    assert!(
        matches!(
            &items[2],
            Err(Error::StreamTimedOut { workflow_id, offset: 3, .. }) if workflow_id == "writer"
        ),
        "{:?}",
        items[2]
    );
    client.send("writer", "close", &"now").await.expect("send");
    writer.result().await.expect("writer");
    // A closed stream read from its end yields nothing, without waiting for the timeout.
    let rest: Vec<cairn::Result<i64>> = client
        .read_stream_with::<i64>("writer", "s", ReadStreamOptions::default().offset(3))
        .collect()
        .await;
    assert!(rest.is_empty(), "{rest:?}");
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

/// The clients the `inspect` workflows use, by test database url.
static CLIENTS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Client>>> =
    std::sync::LazyLock::new(Default::default);

/// Inspects workflow `target` through the client registered for `url`.
#[cairn::workflow]
async fn inspect(url: String, target: String) -> Result<String, AppError> {
    let client = CLIENTS
        .lock()
        .unwrap()
        .get(&url)
        .cloned()
        .expect("a client for this test");
    let status = client.status(&target).await?;
    let steps = client.list_steps(&target).await?;
    let events = client.list_events(&target).await?;
    Ok(format!("{} {} {}", status.state, steps.len(), events.len()))
}

async fn management_calls_inside_a_workflow_are_recorded_as_its_steps(db: &TestDb) {
    let app = db.launch().await;
    let target = app
        .start_with(cairn::StartOptions::id("target"), double, 4)
        .await
        .expect("start");
    assert_eq!(target.result().await.expect("target"), 8);
    let client = Client::connect(&db.url).await.expect("connect");
    CLIENTS
        .lock()
        .unwrap()
        .insert(db.url.clone(), client.clone());
    let inspected = app
        .start_with(
            cairn::StartOptions::id("inspector"),
            inspect,
            (db.url.clone(), "target".to_owned()),
        )
        .await
        .expect("start inspector");
    assert_eq!(inspected.result().await.expect("inspector"), "SUCCESS 0 0");
    let steps = app.list_steps("inspector").await.expect("steps");
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "DBOS.getStatus",
            "DBOS.listWorkflowSteps",
            "DBOS.get_events"
        ]
    );
    let recorded: serde_json::Value =
        serde_json::from_str(steps[0].raw_output.as_deref().expect("recorded status"))
            .expect("status JSON");
    assert_eq!(recorded["workflow_id"], "target");
    CLIENTS.lock().unwrap().remove(&db.url);
    client.close().await;
    app.shutdown().await.expect("shutdown");
}

async fn a_retention_policy_deletes_finished_workflows_while_the_application_runs(db: &TestDb) {
    let policy = cairn::RetentionPolicy::default()
        .with_max_finished(1)
        .with_interval(Duration::from_secs(1));
    let app = db
        .builder("retention")
        .retention(policy)
        .launch()
        .await
        .expect("launch");
    for (n, id) in ["old-1", "old-2", "newest"].into_iter().enumerate() {
        let handle = app
            .start_with(cairn::StartOptions::id(id), double, n as i64)
            .await
            .expect("start");
        handle.result().await.expect("result");
        // Distinct creation times, so "the newest" is well defined.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiting = app
        .start_with(cairn::StartOptions::id("waiting"), echo, String::new())
        .await
        .expect("start waiting");
    // The policy runs every second: wait (bounded) until the two oldest are gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let gone = matches!(app.status("old-1").await, Err(Error::NotFound(_)))
            && matches!(app.status("old-2").await, Err(Error::NotFound(_)));
        if gone {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.status("newest").await.expect("newest kept").state,
        WorkflowState::Success
    );
    assert_eq!(
        app.status("waiting").await.expect("unfinished kept").state,
        WorkflowState::Pending
    );
    app.send("waiting", "in", &"x").await.expect("send");
    assert_eq!(waiting.result().await.expect("waiting"), "x");
    app.shutdown().await.expect("shutdown");
}
