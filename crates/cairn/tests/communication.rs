//! Messages, events and streams between workflows — each on SQLite and on Postgres.

mod common;

use std::time::{Duration, Instant};

use cairn::Cairn;
use common::TestDb;
use futures::StreamExt;

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AppError {
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

#[cairn::step]
async fn announce(key: String) -> Result<(), AppError> {
    common::reached(&key);
    Ok(())
}

/// Receive `n` messages on `topic`, in order.
#[cairn::workflow]
async fn inbox(key: String, n: u32) -> Result<Vec<String>, AppError> {
    announce(key).await?;
    let mut received = Vec::new();
    for _ in 0..n {
        match cairn::recv::<String>("mail", Duration::from_secs(20)).await? {
            Some(message) => received.push(message),
            None => received.push("<timeout>".to_owned()),
        }
    }
    Ok(received)
}

/// Messages sent before and after the receiver waits all arrive, in order, on their own
/// topic only, each consumed by exactly one recv.
async fn messages_arrive_in_order_on_their_topic(db: &TestDb) {
    let app = db.launch().await;
    let k = format!("inbox@{}", db.url);
    let handle = app
        .start_with(cairn::StartOptions::id("inbox-1"), inbox, (k.clone(), 4))
        .await
        .unwrap();
    for n in 1..=2 {
        app.send("inbox-1", "mail", &format!("early-{n}"))
            .await
            .unwrap();
    }
    app.send("inbox-1", "other", &"elsewhere").await.unwrap();
    common::wait_reached(&k).await;
    for n in 1..=2 {
        app.send("inbox-1", "mail", &format!("late-{n}"))
            .await
            .unwrap();
    }
    assert_eq!(
        handle.result().await.unwrap(),
        vec!["early-1", "early-2", "late-1", "late-2"]
    );
    let unconsumed = db
        .query_text("SELECT CAST(COUNT(*) AS TEXT) FROM notifications WHERE consumed = FALSE")
        .await;
    assert_eq!(
        unconsumed.as_deref(),
        Some("1"),
        "only the message on the other topic is left"
    );
    let missing = app.send("nobody", "mail", &1).await.unwrap_err();
    assert!(
        matches!(missing, cairn::Error::NotFound(ref id) if id == "nobody"),
        "{missing:?}"
    );
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn impatient() -> Result<Option<u32>, AppError> {
    Ok(cairn::recv::<u32>(None, Duration::from_millis(300)).await?)
}

/// recv returns None at its deadline, and records both the receive and the deadline.
async fn recv_returns_none_at_its_deadline(db: &TestDb) {
    let app = db.launch().await;
    let started = Instant::now();
    let handle = app.start(impatient, ()).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(290));
    let steps = app.list_steps(handle.id()).await.unwrap();
    let names: Vec<_> = steps
        .iter()
        .map(|s| (s.function_id, s.name.as_str(), s.raw_output.clone()))
        .collect();
    assert_eq!(names[0], (1, "DBOS.recv", Some("null".to_owned())));
    assert_eq!((names[1].0, names[1].1), (2, "DBOS.sleep"));
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn sender(key: String, destination: String) -> Result<(), AppError> {
    cairn::send(&destination, "mail", &"hello").await?;
    gate(key).await
}

#[cairn::step]
async fn gate(key: String) -> Result<(), AppError> {
    common::reached(&key);
    common::until_released(&key).await;
    Ok(())
}

/// A message sent by a workflow is sent once, even when the workflow is replayed; a message
/// sent from outside with an idempotency key is sent once however often it is sent.
async fn sends_are_exactly_once(db: &TestDb) {
    let k = format!("sender@{}", db.url);
    let app = db
        .builder("cairn-test")
        .shutdown_grace(Duration::from_millis(20))
        .launch()
        .await
        .unwrap();
    let receiver = app
        .start_with(cairn::StartOptions::id("rx"), inbox, (format!("{k}/rx"), 3))
        .await
        .unwrap();
    let sender_id = app
        .start(sender, (k.clone(), "rx".to_owned()))
        .await
        .unwrap()
        .id()
        .to_owned();
    common::wait_reached(&k).await;
    app.shutdown().await.unwrap();

    common::release(&k);
    let app = db.launch().await;
    app.retrieve::<()>(&sender_id)
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    for _ in 0..3 {
        app.send_with(
            cairn::SendOptions::idempotency_key("key-1"),
            "rx",
            "mail",
            &"keyed",
        )
        .await
        .unwrap();
    }
    app.send("rx", "mail", &"last").await.unwrap();
    let received = app
        .retrieve::<Vec<String>>(receiver.id())
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    assert_eq!(received, vec!["hello", "keyed", "last"]);
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn publisher(key: String) -> Result<(), AppError> {
    cairn::set_event("status", &"started").await?;
    gate(key).await?;
    cairn::set_event("status", &"done").await?;
    cairn::set_event("count", &2).await?;
    Ok(())
}

#[cairn::workflow]
async fn watcher(target: String) -> Result<(Option<String>, Option<String>), AppError> {
    let seen = cairn::get_event::<String>(&target, "status", Duration::from_secs(20)).await?;
    common::reached(&format!("{target}/watched"));
    let missing = cairn::get_event::<String>(&target, "never", Duration::from_millis(100)).await?;
    Ok((seen, missing))
}

/// The latest event value wins, every value stays in the history, and a waiting reader
/// (inside or outside a workflow) is woken when the event is set.
async fn events_are_latest_wins_and_wake_readers(db: &TestDb) {
    let app = db.launch().await;
    let k = format!("events@{}", db.url);
    let publisher = app.start(publisher, k.clone()).await.unwrap();
    let id = publisher.id().to_owned();
    let watcher = app.start(watcher, id.clone()).await.unwrap();
    common::wait_reached(&k).await;
    let early: Option<String> = app
        .get_event(&id, "status", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(early.as_deref(), Some("started"));
    // The watcher reads the event before the publisher moves on.
    common::wait_reached(&format!("{id}/watched")).await;
    let waiting = {
        let app = app.clone();
        let id = id.clone();
        tokio::spawn(async move {
            app.get_event::<i64>(&id, "count", Duration::from_secs(20))
                .await
        })
    };
    common::release(&k);
    assert_eq!(waiting.await.unwrap().unwrap(), Some(2));
    publisher.result().await.unwrap();
    let events = app.list_events(&id).await.unwrap();
    assert_eq!(events.get("status"), Some(&serde_json::json!("done")));
    assert_eq!(events.get("count"), Some(&serde_json::json!(2)));
    let history = db
        .query_text(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM workflow_events_history WHERE workflow_uuid = '{id}' AND key = 'status'"))
        .await;
    assert_eq!(history.as_deref(), Some("2"));
    let (seen, missing) = watcher.result().await.unwrap();
    assert_eq!(seen.as_deref(), Some("started"));
    assert_eq!(missing, None);
    app.shutdown().await.unwrap();
}

#[cairn::step]
async fn produce(n: u32) -> Result<u32, AppError> {
    Ok(n * n)
}

#[cairn::workflow]
async fn producer(key: String, close: bool) -> Result<(), AppError> {
    gate(key).await?;
    for n in 0..5 {
        let value = produce(n).await?;
        cairn::write_stream("squares", &value).await?;
    }
    if close {
        cairn::close_stream("squares").await?;
    }
    Ok(())
}

/// A stream yields its values in order, with dense offsets, and ends at close — or, without
/// a close, when the writer has finished and the stream is drained.
async fn streams_yield_in_order_and_end(db: &TestDb) {
    let app = db.launch().await;
    for close in [true, false] {
        let k = format!("stream-{close}@{}", db.url);
        let id = app
            .start(producer, (k.clone(), close))
            .await
            .unwrap()
            .id()
            .to_owned();
        // The reader starts before anything is written and is woken by each write.
        let reader = app.read_stream::<u32>(&id, "squares");
        common::wait_reached(&k).await;
        common::release(&k);
        let values: Vec<u32> = reader.map(|v| v.unwrap()).collect().await;
        assert_eq!(values, vec![0, 1, 4, 9, 16], "close = {close}");
        let offsets = db
            .query_text(&format!(
                "SELECT CAST(MAX(\"offset\") AS TEXT) FROM streams WHERE workflow_uuid = '{id}'"
            ))
            .await;
        assert_eq!(offsets.as_deref(), Some(if close { "5" } else { "4" }));
    }
    app.shutdown().await.unwrap();
}

/// Sending needs a workflow; a launched app exists only to keep the signature honest.
async fn durable_operations_outside_workflows_are_refused(db: &TestDb) {
    let app: Cairn = db.launch().await;
    let error = cairn::send("x", "t", &1).await.unwrap_err();
    assert!(
        matches!(error, cairn::Error::NotInWorkflow("cairn::send")),
        "{error:?}"
    );
    let error = cairn::recv::<u32>("t", Duration::from_millis(1))
        .await
        .unwrap_err();
    assert!(
        matches!(error, cairn::Error::NotInWorkflow("cairn::recv")),
        "{error:?}"
    );
    app.shutdown().await.unwrap();
}

/// Reading the stream of a workflow that does not exist is a typed "no such workflow"
/// error, not an empty stream.
async fn reading_the_stream_of_a_missing_workflow_is_not_found(db: &TestDb) {
    let app = db.launch().await;
    let mut reader = Box::pin(app.read_stream::<u32>("no-such-workflow", "s"));
    let first = reader.next().await.expect("one item");
    assert!(
        matches!(&first, Err(cairn::Error::NotFound(id)) if id == "no-such-workflow"),
        "{first:?}"
    );
    assert!(
        reader.next().await.is_none(),
        "the stream ends after the error"
    );
    app.shutdown().await.unwrap();
}

both_backends!(
    reading_the_stream_of_a_missing_workflow_is_not_found,
    messages_arrive_in_order_on_their_topic,
    recv_returns_none_at_its_deadline,
    sends_are_exactly_once,
    events_are_latest_wins_and_wake_readers,
    streams_yield_in_order_and_end,
    durable_operations_outside_workflows_are_refused,
);
