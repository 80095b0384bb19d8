//! Eviction: a workflow waiting longer than `evict_after` leaves memory and, when what it
//! waits for arrives (a message, an event, its timer), runs again from its checkpoints —
//! finished steps are not run again, and neither its code nor its callers can tell.

mod common;

use std::time::{Duration, Instant};

use cairn::StartOptions;
use common::TestDb;

#[cairn::step]
async fn counted(key: String) -> Result<u32, cairn::Error> {
    Ok(common::count(&key) as u32)
}

#[cairn::workflow]
async fn wait_for_mail(key: String) -> Result<String, cairn::Error> {
    let before = counted(format!("{key} before")).await?;
    cairn::set_event("parked", &true).await?;
    let mail = cairn::recv::<String>("mail", Duration::from_secs(120)).await?;
    let after = counted(format!("{key} after")).await?;
    Ok(format!("{before} {} {after}", mail.unwrap_or_default()))
}

#[cairn::workflow]
async fn nap(key: String) -> Result<u32, cairn::Error> {
    let before = counted(format!("{key} before")).await?;
    cairn::sleep(Duration::from_millis(1500)).await?;
    let after = counted(format!("{key} after")).await?;
    Ok(before * 10 + after)
}

#[cairn::workflow]
async fn await_event(publisher: String) -> Result<String, cairn::Error> {
    let value = cairn::get_event::<String>(&publisher, "ready", Duration::from_secs(120)).await?;
    Ok(value.unwrap_or_default())
}

#[cairn::workflow]
async fn publish(value: String) -> Result<(), cairn::Error> {
    cairn::set_event("ready", &value).await
}

/// Waits for its child `wait_for_mail` (called directly), between two steps of its own.
#[cairn::workflow]
async fn parent_of_mail(key: String) -> Result<String, cairn::Error> {
    let before = counted(format!("{key} parent before")).await?;
    let child = wait_for_mail(key.clone()).await?;
    let after = counted(format!("{key} parent after")).await?;
    Ok(format!("{before} [{child}] {after}"))
}

/// The queue whose one slot `wait_for_mail` holds while `enqueues_behind` waits for its turn.
const SLOT_QUEUE: &str = "eviction-one-slot";

/// Puts a short child on [`SLOT_QUEUE`] and waits for its result.
#[cairn::workflow]
async fn enqueues_behind(key: String) -> Result<u32, cairn::Error> {
    let handle = cairn::enqueue_workflow(SLOT_QUEUE, short, key).await?;
    handle.result().await
}

#[cairn::workflow]
async fn short(key: String) -> Result<u32, cairn::Error> {
    counted(format!("{key} short")).await
}

async fn evicting_app(db: &TestDb) -> cairn::Cairn {
    db.builder("eviction-test")
        .evict_after(Some(Duration::from_millis(50)))
        .queue(cairn::Queue::new(SLOT_QUEUE).concurrency(1))
        .launch()
        .await
        .expect("launch")
}

/// Wait until no workflow execution is left in memory (every one evicted or finished).
async fn until_evicted(app: &cairn::Cairn) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.workflows_in_memory() > 0 {
        assert!(
            Instant::now() < deadline,
            "the waiting workflow was never evicted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait until the workflow `id` (a `wait_for_mail`) has set its `parked` event: it is about
/// to wait for its mail.
async fn until_parked(app: &cairn::Cairn, id: &str) {
    let parked: Option<bool> = app
        .get_event(id, "parked", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(parked, Some(true), "{id} parked");
}

/// Start `parent_of_mail` and wait until it and its child (waiting for its mail) have both
/// left memory; the parent's handle and the child's id.
async fn parent_and_child_evicted(
    app: &cairn::Cairn,
    key: &str,
) -> (cairn::WorkflowHandle<String>, String) {
    let id = format!("parent-{key}");
    let handle = app
        .start_with(StartOptions::id(id.clone()), parent_of_mail, key.to_owned())
        .await
        .unwrap();
    // The child is the parent's second operation.
    let child = format!("{id}-2");
    until_parked(app, &child).await;
    until_evicted(app).await;
    (handle, child)
}

fn key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Evicted in `recv`, woken by its message: the step before the wait ran once, the event set
/// before it is still there, and the result is the uninterrupted one.
async fn a_workflow_evicted_in_recv_wakes_on_its_message_without_rerunning_its_steps(db: &TestDb) {
    let app = evicting_app(db).await;
    let key = key();
    let id = format!("mail-{key}");
    let handle = app
        .start_with(StartOptions::id(id.clone()), wait_for_mail, key.clone())
        .await
        .unwrap();
    until_evicted(&app).await;
    until_parked(&app, &id).await;
    app.send(&id, "mail", &"hello").await.unwrap();
    assert_eq!(handle.result().await.unwrap(), "1 hello 1");
    assert_eq!(
        common::counted(&format!("{key} before")),
        1,
        "no step ran twice"
    );
    app.shutdown().await.unwrap();
}

/// Evicted in a durable sleep, woken at its deadline.
async fn a_workflow_evicted_in_a_durable_sleep_wakes_at_its_deadline(db: &TestDb) {
    let app = evicting_app(db).await;
    let key = key();
    let handle = app.start(nap, key.clone()).await.unwrap();
    until_evicted(&app).await;
    assert_eq!(handle.result().await.unwrap(), 11);
    assert_eq!(common::counted(&format!("{key} before")), 1);
    app.shutdown().await.unwrap();
}

/// Evicted in `get_event`, woken when the other workflow sets the event.
async fn a_workflow_evicted_in_get_event_wakes_when_the_event_is_set(db: &TestDb) {
    let app = evicting_app(db).await;
    let publisher = format!("publisher-{}", key());
    let waiter = app.start(await_event, publisher.clone()).await.unwrap();
    until_evicted(&app).await;
    app.start_with(StartOptions::id(publisher), publish, "go".to_owned())
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    assert_eq!(waiter.result().await.unwrap(), "go");
    app.shutdown().await.unwrap();
}

/// Cancelled while evicted: a message arriving afterwards does not run it again.
async fn a_workflow_cancelled_while_evicted_stays_cancelled(db: &TestDb) {
    let app = evicting_app(db).await;
    let key = key();
    let id = format!("mail-{key}");
    let handle = app
        .start_with(StartOptions::id(id.clone()), wait_for_mail, key.clone())
        .await
        .unwrap();
    until_evicted(&app).await;
    assert!(app.cancel(&id).await.unwrap());
    app.send(&id, "mail", &"too late").await.unwrap();
    let error = handle.result().await.unwrap_err();
    assert!(matches!(error, cairn::Error::Cancelled(_)), "{error}");
    assert_eq!(common::counted(&format!("{key} after")), 0);
    app.shutdown().await.unwrap();
}

/// Without eviction a waiting workflow stays in memory.
async fn with_eviction_off_a_waiting_workflow_stays_in_memory(db: &TestDb) {
    let app = db
        .builder("eviction-test")
        .evict_after(None)
        .launch()
        .await
        .unwrap();
    let key = key();
    let id = format!("mail-{key}");
    let handle = app
        .start_with(StartOptions::id(id.clone()), wait_for_mail, key.clone())
        .await
        .unwrap();
    until_parked(&app, &id).await;
    assert_eq!(app.workflows_in_memory(), 1);
    app.send(&id, "mail", &"hi").await.unwrap();
    assert_eq!(handle.result().await.unwrap(), "1 hi 1");
    app.shutdown().await.unwrap();
}

/// A parent evicted while its child waits in `recv` (both leave memory) wakes when the child
/// finishes, and returns the child's result; neither's steps ran twice.
async fn a_workflow_evicted_while_it_waits_for_its_child_wakes_when_the_child_finishes(
    db: &TestDb,
) {
    let app = evicting_app(db).await;
    let key = key();
    let (handle, child) = parent_and_child_evicted(&app, &key).await;
    app.send(&child, "mail", &"hello").await.unwrap();
    assert_eq!(handle.result().await.unwrap(), "1 [1 hello 1] 1");
    for step in ["parent before", "before", "parent after", "after"] {
        assert_eq!(
            common::counted(&format!("{key} {step}")),
            1,
            "{step} ran once"
        );
    }
    app.shutdown().await.unwrap();
}

/// A workflow waiting for a child that waits for a queue slot (held by a workflow parked in
/// `recv`) leaves memory, and completes once the slot frees and the child has run.
async fn a_workflow_evicted_while_its_child_waits_for_a_queue_slot_completes_after_it(db: &TestDb) {
    let app = evicting_app(db).await;
    let key = key();
    let holder = format!("holder-{key}");
    app.enqueue_with(
        cairn::EnqueueOptions::default().with_id(holder.clone()),
        SLOT_QUEUE,
        wait_for_mail,
        format!("{key} holder"),
    )
    .await
    .unwrap();
    until_parked(&app, &holder).await;
    let waiter = app.start(enqueues_behind, key.clone()).await.unwrap();
    until_evicted(&app).await;
    assert_eq!(
        common::counted(&format!("{key} short")),
        0,
        "the child waits for the slot"
    );
    app.send(&holder, "mail", &"free").await.unwrap();
    assert_eq!(waiter.result().await.unwrap(), 1);
    assert_eq!(common::counted(&format!("{key} short")), 1);
    app.shutdown().await.unwrap();
}

/// Another process (a client of its own) cancels the child an evicted parent waits for: no
/// announcement reaches this process, and the parent's look at the database finds the
/// child's end and fails with it.
async fn a_workflow_evicted_while_it_waits_for_its_child_learns_of_another_processs_cancel(
    db: &TestDb,
) {
    let app = evicting_app(db).await;
    let key = key();
    let (handle, child) = parent_and_child_evicted(&app, &key).await;
    let other = cairn::Client::connect(&db.url).await.unwrap();
    other.cancel(&child).await.unwrap();
    let error = handle.result().await.unwrap_err();
    assert!(
        matches!(&error, cairn::Error::Cancelled(id) if *id == child),
        "the parent fails with its child's cancellation: {error:?}"
    );
    assert_eq!(common::counted(&format!("{key} parent after")), 0);
    other.close().await;
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn inbox(n: u64) -> Result<u64, cairn::Error> {
    let got = cairn::recv::<u64>("mail", Duration::from_secs(300)).await?;
    Ok(n + got.unwrap_or(0))
}

/// More unfinished workflows than one recovery batch: launch resumes the first batch and the
/// rest stream in behind it; every one completes, once.
async fn a_backlog_larger_than_a_recovery_batch_is_resumed_completely(db: &TestDb) {
    const N: u64 = 1_200;
    let first = db.launch().await;
    let mut ids = Vec::new();
    for n in 0..N {
        let id = format!("inbox-{n}");
        first
            .start_with(StartOptions::id(id.clone()), inbox, n)
            .await
            .unwrap();
        ids.push(id);
    }
    first.shutdown().await.unwrap();

    let second = db.launch().await;
    let messages = ids
        .iter()
        .map(|id| cairn::Message::new(id, Some("mail"), &1_000u64))
        .collect();
    second.send_many(messages).await.unwrap();
    for (n, id) in ids.iter().enumerate() {
        let handle = second.retrieve::<u64>(id).await.unwrap();
        assert_eq!(handle.result().await.unwrap(), n as u64 + 1_000);
    }
    let status = second.status(&ids[N as usize - 1]).await.unwrap();
    assert_eq!(status.recovery_attempts, 2, "recovered once");
    second.shutdown().await.unwrap();
}

both_backends!(
    a_backlog_larger_than_a_recovery_batch_is_resumed_completely,
    a_workflow_evicted_in_recv_wakes_on_its_message_without_rerunning_its_steps,
    a_workflow_evicted_in_a_durable_sleep_wakes_at_its_deadline,
    a_workflow_evicted_in_get_event_wakes_when_the_event_is_set,
    a_workflow_cancelled_while_evicted_stays_cancelled,
    with_eviction_off_a_waiting_workflow_stays_in_memory,
    a_workflow_evicted_while_it_waits_for_its_child_wakes_when_the_child_finishes,
    a_workflow_evicted_while_its_child_waits_for_a_queue_slot_completes_after_it,
    a_workflow_evicted_while_it_waits_for_its_child_learns_of_another_processs_cancel,
);
