//! Control flow: step retries and timeouts, cancellation, resume, workflow deadlines, waits
//! over several workflows, and patches — each on SQLite and on Postgres.

mod common;

use std::time::{Duration, Instant};

use cairn::{Error, StartOptions, WorkflowState};
use common::{TestDb, count, counted};

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AppError {
    #[error("flaky: attempt {0}")]
    Flaky(usize),
    #[error("fatal")]
    Fatal,
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

fn retryable(error: &AppError) -> bool {
    !matches!(error, AppError::Fatal)
}

#[cairn::step(max_attempts = 3, interval_ms = 10, backoff_rate = 2.0)]
async fn flaky(key: String, succeed_on: usize) -> Result<usize, AppError> {
    let attempt = count(&key);
    if attempt < succeed_on {
        Err(AppError::Flaky(attempt))
    } else {
        Ok(attempt)
    }
}

#[cairn::step(max_attempts = 5, interval_ms = 10, should_retry = retryable)]
async fn fatal(key: String) -> Result<(), AppError> {
    count(&key);
    Err(AppError::Fatal)
}

#[cairn::step(max_attempts = 2, interval_ms = 10, timeout_ms = 50)]
async fn slow(key: String) -> Result<(), AppError> {
    count(&key);
    tokio::time::sleep(Duration::from_secs(10)).await;
    Ok(())
}

#[cairn::workflow]
async fn retrying(key: String, succeed_on: usize) -> Result<usize, AppError> {
    flaky(key, succeed_on).await
}

#[cairn::workflow]
async fn not_retried(key: String) -> Result<(), AppError> {
    fatal(key).await
}

#[cairn::workflow]
async fn timing_out(key: String) -> Result<(), AppError> {
    slow(key).await
}

/// A failing step is retried with backoff; when retries are spent the step returns its last
/// attempt's typed error, recorded under DBOS's name with the attempt count; `should_retry`
/// stops retries; an attempt past its timeout fails (and is retried).
async fn steps_retry_and_fail_well(db: &TestDb) {
    let app = db.launch().await;
    let k = format!("retry@{}", db.url);
    assert_eq!(app.run(retrying, (k.clone(), 3)).await.unwrap(), 3);

    let k = format!("exhausted@{}", db.url);
    let handle = app.start(retrying, (k.clone(), 10)).await.unwrap();
    let error = handle.result().await.unwrap_err();
    assert!(
        matches!(
            error.application_error::<AppError>(),
            Some(AppError::Flaky(3))
        ),
        "{error:?}"
    );
    assert_eq!(counted(&k), 3);
    let steps = app.list_steps(handle.id()).await.unwrap();
    let recorded = steps[0].raw_error.as_deref().unwrap();
    assert!(
        recorded.contains("DBOSMaxStepRetriesExceeded")
            && recorded.contains("failed after 3 attempts")
            && recorded.contains("flaky: attempt 3"),
        "{recorded}"
    );

    let k = format!("fatal@{}", db.url);
    let error = app.run(not_retried, k.clone()).await.unwrap_err();
    assert!(
        matches!(&error, Error::Application(p) if p.message == "fatal"),
        "{error:?}"
    );
    assert_eq!(counted(&k), 1, "should_retry said no");

    let k = format!("slow@{}", db.url);
    let started = Instant::now();
    let error = app.run(timing_out, k.clone()).await.unwrap_err();
    assert!(
        error.to_string().contains("timed out after 50 ms"),
        "{error}"
    );
    assert_eq!(counted(&k), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
    app.shutdown().await.unwrap();
}

#[cairn::step]
async fn mark(key: String) -> Result<(), AppError> {
    count(&key);
    common::reached(&key);
    Ok(())
}

#[cairn::workflow]
async fn waits_for_go(key: String) -> Result<String, AppError> {
    mark(key).await?;
    cairn::set_event("waiting", &true).await?;
    let go = cairn::recv::<String>("go", Duration::from_secs(60)).await?;
    Ok(go.unwrap_or_default())
}

/// Cancelling a waiting workflow interrupts it at once; resuming it continues from its last
/// checkpoint (the finished step does not run again).
async fn cancel_interrupts_and_resume_continues(db: &TestDb) {
    let app = db.launch().await;
    let k = format!("cancel@{}", db.url);
    let handle = app.start(waits_for_go, k.clone()).await.unwrap();
    // Wait until the step's checkpoint is behind it (the event comes after it).
    let waiting: Option<bool> = app
        .get_event(handle.id(), "waiting", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(waiting, Some(true));
    let started = Instant::now();
    assert!(app.cancel(handle.id()).await.unwrap());
    let error = handle.result().await.unwrap_err();
    assert!(
        matches!(error, Error::Cancelled(ref id) if id == handle.id()),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "interrupted at once"
    );
    assert_eq!(
        handle.status().await.unwrap().state,
        WorkflowState::Cancelled
    );
    assert!(!app.cancel(handle.id()).await.unwrap(), "already cancelled");

    let version = handle.status().await.unwrap().app_version;
    let resumed = app.resume::<String>(handle.id()).await.unwrap();
    app.send(handle.id(), "go", &"resumed").await.unwrap();
    assert_eq!(resumed.result().await.unwrap(), "resumed");
    assert_eq!(counted(&k), 1, "the checkpointed step did not run again");
    let status = handle.status().await.unwrap();
    assert_eq!(status.recovery_attempts, 1, "resume resets the attempts");
    assert_eq!(status.app_version, version, "resume keeps the version");
    assert_eq!(status.queue_name.as_deref(), Some("_dbos_internal_queue"));

    // As in DBOS 3.4, a finished workflow is left alone: a handle, nothing re-run.
    let again = app.resume::<String>(handle.id()).await.unwrap();
    assert_eq!(again.result().await.unwrap(), "resumed");
    assert_eq!(handle.status().await.unwrap().state, WorkflowState::Success);
    assert!(matches!(
        app.resume::<String>("no-such-workflow").await,
        Err(Error::NotFound(_))
    ));
    app.shutdown().await.unwrap();
}

/// A workflow put back on DBOS's internal queue (what `dbos workflow resume` does) is picked
/// up and continued by a running Cairn application.
async fn a_workflow_resumed_by_dbos_tools_runs_here(db: &TestDb) {
    let app = db.launch().await;
    let k = format!("dbos-resume@{}", db.url);
    let handle = app.start(waits_for_go, k.clone()).await.unwrap();
    let waiting: Option<bool> = app
        .get_event(handle.id(), "waiting", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(waiting, Some(true));
    app.cancel(handle.id()).await.unwrap();
    assert!(matches!(
        handle.result().await.unwrap_err(),
        Error::Cancelled(_)
    ));
    // DBOS's resume: back to ENQUEUED on the internal queue, owner cleared, attempts reset.
    db.execute(&format!(
        "UPDATE workflow_status SET status = 'ENQUEUED', queue_name = '_dbos_internal_queue', \
         owner_xid = NULL, recovery_attempts = 0, workflow_deadline_epoch_ms = NULL, \
         started_at_epoch_ms = NULL WHERE workflow_uuid = '{}'",
        handle.id()
    ))
    .await;
    app.send(handle.id(), "go", &"from the queue")
        .await
        .unwrap();
    assert_eq!(handle.result().await.unwrap(), "from the queue");
    let status = handle.status().await.unwrap();
    assert_eq!(status.state, WorkflowState::Success);
    assert_eq!(status.recovery_attempts, 1);
    assert_eq!(counted(&k), 1, "the checkpointed step did not run again");
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn parent_of_waiter(key: String) -> Result<String, AppError> {
    let child = cairn::start_child_workflow(waits_for_go, key).await?;
    Ok(child.result().await?)
}

/// Cancelling with descendants cancels the whole tree.
async fn cancel_reaches_descendants(db: &TestDb) {
    let app = db.launch().await;
    let k = format!("tree@{}", db.url);
    let parent = app.start(parent_of_waiter, k.clone()).await.unwrap();
    common::wait_reached(&k).await;
    let mut cancelled = app.cancel_with_descendants(parent.id()).await.unwrap();
    cancelled.sort();
    assert_eq!(
        cancelled,
        vec![parent.id().to_owned(), format!("{}-1", parent.id())]
    );
    assert!(matches!(
        parent.result().await.unwrap_err(),
        Error::Cancelled(_)
    ));
    let child = app.status(&format!("{}-1", parent.id())).await.unwrap();
    assert_eq!(child.state, WorkflowState::Cancelled);
    app.shutdown().await.unwrap();
}

/// A workflow past its deadline is cancelled and its caller gets a typed timeout; its
/// children inherit the deadline.
async fn a_workflow_past_its_deadline_times_out(db: &TestDb) {
    let app = db.launch().await;
    let k = format!("deadline@{}", db.url);
    let options = StartOptions::default().with_timeout(Duration::from_millis(400));
    let started = Instant::now();
    let handle = app
        .start_with(options, parent_of_waiter, k.clone())
        .await
        .unwrap();
    let error = handle.result().await.unwrap_err();
    assert!(
        matches!(error, Error::TimedOut(ref id) if id == handle.id()),
        "{error:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(380)
            && started.elapsed() < Duration::from_secs(5)
    );
    let parent = db
        .query_text(&format!("SELECT CAST(workflow_deadline_epoch_ms AS TEXT) FROM workflow_status WHERE workflow_uuid = '{}'", handle.id()))
        .await;
    let child = db
        .query_text(&format!("SELECT CAST(workflow_deadline_epoch_ms AS TEXT) FROM workflow_status WHERE workflow_uuid = '{}-1'", handle.id()))
        .await;
    assert!(parent.is_some());
    assert_eq!(child, parent, "the child inherits the parent's deadline");
    let child_error = app
        .retrieve::<String>(&format!("{}-1", handle.id()))
        .await
        .unwrap()
        .result()
        .await
        .unwrap_err();
    assert!(matches!(child_error, Error::TimedOut(_)), "{child_error:?}");
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn gated(key: String) -> Result<(), AppError> {
    gate(key).await
}

/// The deadline is recorded: a workflow recovered by a new process is still cancelled at its
/// original deadline.
async fn a_recovered_workflow_keeps_its_deadline(db: &TestDb) {
    let k = format!("recovered-deadline@{}", db.url);
    let app = db
        .builder("cairn-test")
        .shutdown_grace(Duration::from_millis(20))
        .launch()
        .await
        .unwrap();
    let options = StartOptions::default().with_timeout(Duration::from_millis(1500));
    let started = Instant::now();
    let id = app
        .start_with(options, gated, k.clone())
        .await
        .unwrap()
        .id()
        .to_owned();
    common::wait_reached(&k).await;
    app.shutdown().await.unwrap();

    let app = db.launch().await;
    let error = app
        .retrieve::<()>(&id)
        .await
        .unwrap()
        .result()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::TimedOut(_)), "{error:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1450) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    app.shutdown().await.unwrap();
}

#[cairn::step(cancellable = true)]
async fn long_call(key: String) -> Result<(), AppError> {
    common::reached(&key);
    tokio::time::sleep(Duration::from_secs(60)).await;
    Ok(())
}

#[cairn::workflow]
async fn in_long_call(key: String) -> Result<(), AppError> {
    long_call(key).await
}

/// A cancellable step is interrupted while its body runs.
async fn a_cancellable_step_is_interrupted(db: &TestDb) {
    let app = db.launch().await;
    let k = format!("preempt@{}", db.url);
    let handle = app.start(in_long_call, k.clone()).await.unwrap();
    common::wait_reached(&k).await;
    let started = Instant::now();
    app.cancel(handle.id()).await.unwrap();
    assert!(matches!(
        handle.result().await.unwrap_err(),
        Error::Cancelled(_)
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        app.list_steps(handle.id()).await.unwrap().is_empty(),
        "the interrupted step is not recorded"
    );
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn napper(millis: u64) -> Result<u64, AppError> {
    cairn::sleep(Duration::from_millis(millis)).await?;
    Ok(millis)
}

#[cairn::workflow]
async fn race() -> Result<u64, AppError> {
    let slow = cairn::start_child_workflow(napper, 2_000).await?;
    let fast = cairn::start_child_workflow(napper, 10).await?;
    let first = cairn::wait_first(&[slow.clone(), fast]).await?;
    let winner = first.result().await?;
    cairn::wait_all(&[slow]).await?;
    Ok(winner)
}

/// wait_first returns the first workflow to finish and records the choice; wait_all waits
/// for the rest.
async fn wait_first_records_the_winner(db: &TestDb) {
    let app = db.launch().await;
    let handle = app.start(race, ()).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 10);
    let steps = app.list_steps(handle.id()).await.unwrap();
    let wait = steps
        .iter()
        .find(|s| s.name == "DBOS.waitFirst")
        .expect("recorded");
    assert_eq!(
        wait.raw_output.as_deref(),
        Some(format!("\"{}-2\"", handle.id()).as_str())
    );
    app.shutdown().await.unwrap();
}

#[cairn::step]
async fn version_step(key: String, version: u32) -> Result<u32, AppError> {
    count(&format!("{key}/v{version}"));
    Ok(version)
}

#[cairn::workflow]
async fn patched(key: String) -> Result<u32, AppError> {
    let version = if cairn::patch("v2").await? {
        version_step(key.clone(), 2).await?
    } else {
        version_step(key.clone(), 1).await?
    };
    gate(key).await?;
    Ok(version)
}

#[cairn::step]
async fn gate(key: String) -> Result<(), AppError> {
    common::reached(&key);
    common::until_released(&key).await;
    Ok(())
}

/// A new execution takes the patched path and records the marker; an execution whose
/// history predates the patch keeps the old path on replay.
async fn patches_branch_old_executions_from_new(db: &TestDb) {
    let k = format!("patch-new@{}", db.url);
    let app = db.launch().await;
    let handle = app.start(patched, k.clone()).await.unwrap();
    common::wait_reached(&k).await;
    common::release(&k);
    assert_eq!(handle.result().await.unwrap(), 2);
    let names: Vec<_> = app
        .list_steps(handle.id())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["DBOS.patch-v2", "version_step", "gate"]);
    app.shutdown().await.unwrap();

    // An "old" execution: its history has the unpatched step where the marker would be.
    let k = format!("patch-old@{}", db.url);
    let app = db
        .builder("cairn-test")
        .shutdown_grace(Duration::from_millis(20))
        .launch()
        .await
        .unwrap();
    let id = app.start(patched, k.clone()).await.unwrap().id().to_owned();
    common::wait_reached(&k).await;
    app.shutdown().await.unwrap();
    db.execute(&format!(
        "DELETE FROM operation_outputs WHERE workflow_uuid = '{id}' AND function_id IN (1, 3); \
         UPDATE operation_outputs SET function_id = 1, output = '1' WHERE workflow_uuid = '{id}' AND function_id = 2;"
    ))
    .await;
    common::release(&k);
    let app = db.launch().await;
    assert_eq!(
        app.retrieve::<u32>(&id)
            .await
            .unwrap()
            .result()
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        counted(&format!("{k}/v1")),
        0,
        "the old step replayed from its record"
    );
    app.shutdown().await.unwrap();
}

/// A domain error with no `From<cairn::Error>`: Cairn's own failures cannot become one.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum PlainError {
    #[error("no message")]
    NoMessage,
}

/// Waits for a message, then records that the wait returned (it must not, once cancelled).
#[cairn::workflow]
async fn waits_plainly(key: String) -> Result<u32, PlainError> {
    common::reached(&key);
    let got = cairn::recv::<u32>("t", Duration::from_secs(3600)).await;
    count(&format!("{key}/returned"));
    got.ok().flatten().ok_or(PlainError::NoMessage)
}

/// Cancelling a workflow stops it where it waits: the wait never returns into the workflow's
/// code (which has no way to hold Cairn's error), and the workflow ends `CANCELLED`.
async fn a_cancelled_wait_never_returns_into_the_workflow(db: &TestDb) {
    let app = db.launch().await;
    let k = format!("plain-cancel@{}", db.url);
    let handle = app.start(waits_plainly, k.clone()).await.unwrap();
    common::wait_reached(&k).await;
    assert!(app.cancel(handle.id()).await.unwrap());
    let error = handle.result().await.unwrap_err();
    assert!(matches!(error, Error::Cancelled(_)), "{error:?}");
    assert_eq!(
        app.status(handle.id()).await.unwrap().state,
        WorkflowState::Cancelled
    );
    assert_eq!(
        counted(&format!("{k}/returned")),
        0,
        "the wait did not return"
    );
    app.shutdown().await.unwrap();
}

/// Runs until its gate opens, whatever happens to its workflow meanwhile.
#[cairn::step]
async fn finishes_anyway(key: String) -> Result<u32, AppError> {
    count(&key);
    common::reached(&key);
    common::until_released(&key).await;
    Ok(7)
}

#[cairn::step]
async fn after(key: String) -> Result<(), AppError> {
    count(&format!("{key}/after"));
    Ok(())
}

#[cairn::workflow]
async fn cancelled_mid_step(key: String) -> Result<u32, AppError> {
    let n = finishes_anyway(key.clone()).await?;
    after(key).await?;
    Ok(n)
}

/// A step that is not cancellable and finishes after its workflow was cancelled has its
/// outcome recorded; the cancellation takes effect at the next durable operation, and a
/// resume continues after the step without running it again.
async fn a_step_finishing_after_a_cancel_is_recorded(db: &TestDb) {
    let app = db.launch().await;
    let k = format!("finish-anyway@{}", db.url);
    let handle = app.start(cancelled_mid_step, k.clone()).await.unwrap();
    common::wait_reached(&k).await;
    assert!(app.cancel(handle.id()).await.unwrap());
    common::release(&k);
    assert!(matches!(handle.result().await, Err(Error::Cancelled(_))));
    assert_eq!(
        app.status(handle.id()).await.unwrap().state,
        WorkflowState::Cancelled
    );
    // Resuming waits for the cancelled execution here to stop (after recording the step).
    let resumed = app.resume::<u32>(handle.id()).await.unwrap();
    assert_eq!(resumed.result().await.unwrap(), 7);
    assert_eq!(counted(&k), 1, "the recorded step did not run again");
    assert_eq!(
        counted(&format!("{k}/after")),
        1,
        "the next step ran once, after the resume"
    );
    let steps = app.list_steps(handle.id()).await.unwrap();
    assert_eq!(steps[0].raw_output.as_deref(), Some("7"));
    app.shutdown().await.unwrap();
}

both_backends!(
    a_step_finishing_after_a_cancel_is_recorded,
    a_cancelled_wait_never_returns_into_the_workflow,
    steps_retry_and_fail_well,
    cancel_interrupts_and_resume_continues,
    cancel_reaches_descendants,
    a_workflow_resumed_by_dbos_tools_runs_here,
    a_workflow_past_its_deadline_times_out,
    a_recovered_workflow_keeps_its_deadline,
    a_cancellable_step_is_interrupted,
    wait_first_records_the_winner,
    patches_branch_old_executions_from_new,
);
