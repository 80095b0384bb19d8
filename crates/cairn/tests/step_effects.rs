//! Events, streams and messages written from inside a step (as DBOS allows) — each on SQLite
//! and on Postgres.

mod common;

use std::time::Duration;

use common::TestDb;
use futures::StreamExt;

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AppError {
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

/// Sets an event, writes and closes a stream, and sends a message, all from one step.
#[cairn::step]
async fn publish(destination: String) -> Result<(), AppError> {
    cairn::set_event("progress", &"half").await?;
    cairn::set_event("progress", &"done").await?;
    cairn::write_stream("items", &1).await?;
    cairn::write_stream("items", &2).await?;
    cairn::close_stream("items").await?;
    cairn::send(&destination, "mail", &"from a step").await?;
    Ok(())
}

#[cairn::workflow]
async fn publisher(destination: String) -> Result<(), AppError> {
    publish(destination).await
}

#[cairn::workflow]
async fn mailbox() -> Result<Option<String>, AppError> {
    Ok(cairn::recv::<String>("mail", Duration::from_secs(60)).await?)
}

/// A step's events, stream values and messages reach readers, are recorded at the step's
/// operation id, and add no checkpoint besides the step's own.
async fn writes_from_a_step_are_seen_without_checkpoints_of_their_own(db: &TestDb) {
    let app = db.launch().await;
    let receiver = app
        .start_with(cairn::StartOptions::id("step-rx"), mailbox, ())
        .await
        .unwrap();
    let handle = app
        .start_with(
            cairn::StartOptions::id("step-tx"),
            publisher,
            "step-rx".to_owned(),
        )
        .await
        .unwrap();
    handle.result().await.unwrap();

    let event: Option<String> = app
        .get_event("step-tx", "progress", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(event.as_deref(), Some("done"));
    let items: Vec<i32> = app
        .read_stream::<i32>("step-tx", "items")
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, vec![1, 2]);
    assert_eq!(
        receiver.result().await.unwrap().as_deref(),
        Some("from a step")
    );

    let steps = app.list_steps("step-tx").await.unwrap();
    let recorded: Vec<_> = steps.iter().map(|s| s.function_id).collect();
    assert_eq!(recorded, vec![1], "only the step itself: {steps:?}");
    assert!(!steps[0].name.starts_with("DBOS."), "{steps:?}");
    let history = db
        .query_text(
            "SELECT CAST(COUNT(*) AS TEXT) FROM workflow_events_history \
             WHERE workflow_uuid = 'step-tx' AND function_id = 1",
        )
        .await;
    assert_eq!(
        history.as_deref(),
        Some("1"),
        "one history row per (step, key)"
    );
    let stream_rows = db
        .query_text(
            "SELECT CAST(COUNT(*) AS TEXT) FROM streams \
             WHERE workflow_uuid = 'step-tx' AND function_id = 1",
        )
        .await;
    assert_eq!(
        stream_rows.as_deref(),
        Some("3"),
        "two values and the close"
    );
    app.shutdown().await.unwrap();
}

/// Waits at a gate, then tries to write; counts each write refused because the workflow was
/// cancelled meanwhile.
#[cairn::step]
async fn late_publish(key: String) -> Result<(), AppError> {
    common::reached(&key);
    common::until_released(&format!("{key}/go")).await;
    let event = cairn::set_event("late", &1).await;
    let stream = cairn::write_stream("late", &1).await;
    for outcome in [event, stream] {
        if matches!(outcome, Err(cairn::Error::Cancelled(_))) {
            common::count(&format!("{key}/refused"));
        }
    }
    common::reached(&format!("{key}/done"));
    Ok(())
}

#[cairn::workflow]
async fn late_publisher(key: String) -> Result<(), AppError> {
    late_publish(key).await
}

/// A step whose workflow was cancelled (its execution no longer owns it) writes nothing: the
/// write is refused, and the step body sees the cancellation.
async fn a_step_that_lost_its_workflow_writes_nothing(db: &TestDb) {
    let app = db.launch().await;
    let key = format!("late@{}", db.url);
    let handle = app.start(late_publisher, key.clone()).await.unwrap();
    let id = handle.id().to_owned();
    common::wait_reached(&key).await;
    assert!(app.cancel(&id).await.unwrap());
    common::release(&format!("{key}/go"));
    common::wait_reached(&format!("{key}/done")).await;
    assert_eq!(common::counted(&format!("{key}/refused")), 2);
    let event: Option<i32> = app.get_event(&id, "late", Duration::ZERO).await.unwrap();
    assert_eq!(event, None);
    let stream_rows = db
        .query_text(&format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM streams WHERE workflow_uuid = '{id}'"
        ))
        .await;
    assert_eq!(stream_rows.as_deref(), Some("0"));
    app.shutdown().await.unwrap();
}

both_backends!(
    writes_from_a_step_are_seen_without_checkpoints_of_their_own,
    a_step_that_lost_its_workflow_writes_nothing,
);
