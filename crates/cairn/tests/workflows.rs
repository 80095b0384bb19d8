//! Workflows and steps: checkpoints, idempotent ids, replay, recovery, children, dead letters,
//! panics and undecodable rows — each on SQLite and on Postgres.

mod common;

use std::time::Duration;

use cairn::{Cairn, Error, StartOptions, WorkflowState};
use common::{TestDb, count, counted};

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AppError {
    #[error("rejected: {0}")]
    Rejected(String),
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

#[cairn::step]
async fn add(key: String, a: i64, b: i64) -> Result<i64, AppError> {
    count(&key);
    Ok(a + b)
}

#[cairn::step]
async fn reject(key: String, why: String) -> Result<i64, AppError> {
    count(&key);
    Err(AppError::Rejected(why))
}

/// Blocks until `release(key)`; announces each time it starts waiting.
#[cairn::step]
async fn gate(key: String) -> Result<(), AppError> {
    common::reached(&key);
    common::until_released(&key).await;
    Ok(())
}

#[cairn::workflow]
async fn sum_three(key: String, x: i64) -> Result<i64, AppError> {
    let a = add(key.clone(), x, 1).await?;
    let b = add(key.clone(), a, 2).await?;
    add(key, b, 3).await
}

#[cairn::workflow]
async fn other_workflow() -> Result<(), AppError> {
    Ok(())
}

/// A unique key per test run, for counters and gates.
fn key(db: &TestDb, what: &str) -> String {
    format!("{what}@{}", db.url)
}

/// Abandon an application mid-workflow, as a crash would: the in-flight workflows stay PENDING.
async fn abandon(app: Cairn) {
    app.shutdown().await.expect("shutdown");
}

fn quick_exit(db: &TestDb) -> cairn::CairnBuilder {
    db.builder("cairn-test")
        .shutdown_grace(Duration::from_millis(20))
}

/// A workflow runs its steps in order, checkpoints each one, and records its output.
async fn a_workflow_runs_its_steps_and_checkpoints_each(db: &TestDb) {
    let app = db.launch().await;
    let k = key(db, "steps");
    let handle = app.start(sum_three, (k.clone(), 5)).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 11);
    assert_eq!(counted(&k), 3);

    let status = handle.status().await.unwrap();
    assert_eq!(status.state, WorkflowState::Success);
    assert_eq!(status.name, "sum_three");
    assert_eq!(status.recovery_attempts, 1);
    assert_eq!(status.serialization.as_deref(), Some("portable_json"));
    assert_eq!(
        status.raw_input.as_deref(),
        Some(format!(r#"{{"positionalArgs":["{k}",5],"namedArgs":{{}}}}"#).as_str())
    );
    assert_eq!(status.output::<i64>().unwrap(), Some(11));

    let steps = app.list_steps(handle.id()).await.unwrap();
    let summary: Vec<_> = steps
        .iter()
        .map(|s| (s.function_id, s.name.as_str(), s.raw_output.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "add", Some("6")),
            (2, "add", Some("8")),
            (3, "add", Some("11"))
        ]
    );
    app.shutdown().await.unwrap();
}

/// A caller-chosen id is an idempotency key: the workflow runs once, even when the same id is
/// started many times concurrently.
async fn a_workflow_id_runs_once_under_concurrent_starts(db: &TestDb) {
    let app = db.launch().await;
    let k = key(db, "idempotent");
    let starts = (0..16).map(|_| {
        let app = app.clone();
        let k = k.clone();
        tokio::spawn(async move {
            app.start_with(StartOptions::id("order-7"), sum_three, (k, 1))
                .await
        })
    });
    for start in futures::future::join_all(starts).await {
        let handle = start.unwrap().unwrap();
        assert_eq!(handle.id(), "order-7");
        assert_eq!(handle.result().await.unwrap(), 7);
    }
    let again = app
        .start_with(StartOptions::id("order-7"), sum_three, (k.clone(), 100))
        .await
        .unwrap();
    assert_eq!(
        again.result().await.unwrap(),
        7,
        "the existing workflow's result, not a new run"
    );
    assert_eq!(counted(&k), 3, "three steps, run once");

    let conflict = app
        .start_with(StartOptions::id("order-7"), other_workflow, ())
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, Error::ConflictingWorkflow { ref existing, ref requested, .. } if existing == "sum_three" && requested == "other_workflow"),
        "{conflict}"
    );
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn add_then_gate(key: String) -> Result<i64, AppError> {
    let sum = add(key.clone(), 40, 2).await?;
    gate(key).await?;
    Ok(sum)
}

/// After an abandoned execution, the next launch resumes the workflow at its first unfinished
/// step: finished steps are replayed from their checkpoints, not run again.
async fn recovery_resumes_at_the_first_unfinished_step(db: &TestDb) {
    let k = key(db, "resume");
    let app = quick_exit(db).launch().await.unwrap();
    let handle = app.start(add_then_gate, k.clone()).await.unwrap();
    common::wait_reached(&k).await;
    let id = handle.id().to_owned();
    abandon(app).await;

    let app = db.launch().await;
    let status = app.status(&id).await.unwrap();
    // Recovery claimed it at launch; the gate step has not finished yet.
    assert_eq!(status.state, WorkflowState::Pending);
    assert_eq!(status.recovery_attempts, 2);
    common::wait_reached(&k).await;
    common::release(&k);
    let handle = app.retrieve::<i64>(&id).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 42);
    assert_eq!(counted(&k), 1, "the finished step did not run again");
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn reject_then_gate(key: String) -> Result<String, AppError> {
    let rejected = reject(key.clone(), "no funds".into()).await;
    gate(key).await?;
    match rejected {
        Err(error) => Ok(error.to_string()),
        Ok(n) => Ok(format!("unexpected {n}")),
    }
}

/// A recorded step error is replayed as the same error without running the step again.
async fn replay_returns_recorded_errors(db: &TestDb) {
    let k = key(db, "errors");
    let app = quick_exit(db).launch().await.unwrap();
    let id = app
        .start(reject_then_gate, k.clone())
        .await
        .unwrap()
        .id()
        .to_owned();
    common::wait_reached(&k).await;
    abandon(app).await;

    let recorded = db
        .query_text(&format!(
            "SELECT error FROM operation_outputs WHERE workflow_uuid = '{id}' AND function_id = 1"
        ))
        .await;
    assert_eq!(
        recorded.as_deref(),
        Some(
            r#"{"name":"AppError","message":"rejected: no funds","code":null,"data":{"Rejected":"no funds"}}"#
        ),
        "recorded with DBOS's fields, and the value for a typed replay"
    );

    common::release(&k);
    let app = db.launch().await;
    let result = app
        .retrieve::<String>(&id)
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    assert_eq!(result, "rejected: no funds");
    assert_eq!(counted(&k), 1, "the failed step ran once");
    app.shutdown().await.unwrap();
}

/// A replay that meets a recorded step under another name fails the workflow with a
/// non-determinism error naming both.
async fn a_renamed_step_is_a_non_determinism_error(db: &TestDb) {
    let k = key(db, "nondeterminism");
    let app = quick_exit(db).launch().await.unwrap();
    let id = app
        .start(add_then_gate, k.clone())
        .await
        .unwrap()
        .id()
        .to_owned();
    common::wait_reached(&k).await;
    abandon(app).await;
    db.execute(&format!("UPDATE operation_outputs SET function_name = 'charge_card' WHERE workflow_uuid = '{id}' AND function_id = 1")).await;

    common::release(&k);
    let app = db.launch().await;
    let error = app
        .retrieve::<i64>(&id)
        .await
        .unwrap()
        .result()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::NonDeterminism { function_id: 1, expected, recorded, .. }
            if expected == "add" && recorded == "charge_card"),
        "expected the recorded non-determinism error, got {error:?}"
    );
    assert_eq!(error.to_portable().name, "DBOSUnexpectedStepError");
    assert_eq!(app.status(&id).await.unwrap().state, WorkflowState::Error);
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn child(key: String, n: i64) -> Result<i64, AppError> {
    count(&format!("{key}/child"));
    add(key, n, 100).await
}

#[cairn::workflow]
async fn parent(key: String) -> Result<i64, AppError> {
    let direct = child(key.clone(), 1).await?;
    let handle = cairn::start_child_workflow(child, (key.clone(), 2)).await?;
    let awaited = handle.result().await?;
    gate(key).await?;
    Ok(direct + awaited)
}

/// A child workflow gets the id `<parent>-<operation id>`, is recorded in the parent's steps,
/// and starts exactly once across replays of the parent.
async fn child_workflows_start_once_with_derived_ids(db: &TestDb) {
    let k = key(db, "children");
    let app = quick_exit(db).launch().await.unwrap();
    let id = app.start(parent, k.clone()).await.unwrap().id().to_owned();
    common::wait_reached(&k).await;
    abandon(app).await;

    common::release(&k);
    let app = db.launch().await;
    assert_eq!(
        app.retrieve::<i64>(&id)
            .await
            .unwrap()
            .result()
            .await
            .unwrap(),
        101 + 102
    );
    assert_eq!(counted(&format!("{k}/child")), 2, "each child ran once");

    let steps = app.list_steps(&id).await.unwrap();
    let summary: Vec<_> = steps
        .iter()
        .map(|s| (s.function_id, s.name.as_str(), s.child_workflow_id.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "child", Some(format!("{id}-1"))),
            (2, "child", Some(format!("{id}-2"))),
            (3, "DBOS.getResult", Some(format!("{id}-2"))),
            (4, "gate", None),
        ]
    );
    let first = app.status(&format!("{id}-1")).await.unwrap();
    assert_eq!(first.parent_workflow_id.as_deref(), Some(id.as_str()));
    assert_eq!(first.output::<i64>().unwrap(), Some(101));
    app.shutdown().await.unwrap();
}

#[cairn::workflow(max_recovery_attempts = 2)]
async fn doomed(key: String) -> Result<(), AppError> {
    gate(key).await
}

/// A workflow that keeps failing recovery is dead-lettered after its limit instead of looping.
async fn a_workflow_past_its_recovery_limit_is_dead_lettered(db: &TestDb) {
    let k = key(db, "doomed");
    let app = quick_exit(db).launch().await.unwrap();
    let id = app.start(doomed, k.clone()).await.unwrap().id().to_owned();
    common::wait_reached(&k).await;
    abandon(app).await;
    // Attempts 2 and 3 run (the limit is 2 recoveries); the launch after that dead-letters it.
    for attempt in 2..=3 {
        let app = quick_exit(db).launch().await.unwrap();
        common::wait_reached(&k).await;
        assert_eq!(app.status(&id).await.unwrap().recovery_attempts, attempt);
        abandon(app).await;
    }
    let app = db.launch().await;
    let status = app.status(&id).await.unwrap();
    assert_eq!(status.state, WorkflowState::MaxRecoveryAttemptsExceeded);
    let error = app
        .retrieve::<()>(&id)
        .await
        .unwrap()
        .result()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::MaxRecoveryAttemptsExceeded {
                max_attempts: 2,
                ..
            }
        ),
        "{error:?}"
    );
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn panics_in_body(key: String) -> Result<i64, AppError> {
    let n = add(key, 1, 1).await?;
    if n == 2 {
        panic!("the body gave up");
    }
    Ok(n)
}

#[cairn::step]
async fn panicky_step() -> Result<i64, AppError> {
    panic!("the step gave up")
}

#[cairn::workflow]
async fn panics_in_step() -> Result<i64, AppError> {
    panicky_step().await
}

/// A panic in a workflow or a step is recorded as that workflow's error; the process goes on.
async fn a_panic_becomes_the_workflows_error(db: &TestDb) {
    let app = db.launch().await;
    let error = app.run(panics_in_body, key(db, "panic")).await.unwrap_err();
    assert!(
        matches!(&error, Error::Application(p) if p.name == "Panic" && p.message == "the body gave up"),
        "{error:?}"
    );

    let handle = app.start(panics_in_step, ()).await.unwrap();
    // The workflow propagated the step's error through its own error type.
    let error = handle.result().await.unwrap_err();
    assert!(
        matches!(&error, Error::Application(p) if p.name == "AppError" && p.message == "the step gave up"),
        "{error:?}"
    );
    let steps = app.list_steps(handle.id()).await.unwrap();
    let recorded: serde_json::Value =
        serde_json::from_str(steps[0].raw_error.as_deref().unwrap()).unwrap();
    assert_eq!(recorded["name"], "Panic", "{recorded}");
    assert_eq!(recorded["message"], "the step gave up", "{recorded}");
    assert_eq!(
        app.status(handle.id()).await.unwrap().state,
        WorkflowState::Error
    );
    app.shutdown().await.unwrap();
}

/// A row in a format Cairn cannot decode is listed with its raw text, and asking for its
/// value gives an error naming the workflow, the column and the format.
async fn an_undecodable_row_is_a_clear_error(db: &TestDb) {
    let app = db.launch().await;
    db.execute(
        "INSERT INTO workflow_status (workflow_uuid, status, name, serialization, created_at, updated_at) \
         VALUES ('pickled-1', 'SUCCESS', 'legacy', 'py_pickle', 1, 1); \
         INSERT INTO workflow_output (workflow_uuid, output) VALUES ('pickled-1', 'gASVCAAAAAAAAACMBGRvbmWULg==');",
    )
    .await;
    let status = app.status("pickled-1").await.unwrap();
    assert_eq!(
        status.raw_output.as_deref(),
        Some("gASVCAAAAAAAAACMBGRvbmWULg==")
    );
    let error = app
        .retrieve::<String>("pickled-1")
        .await
        .unwrap()
        .result()
        .await
        .unwrap_err();
    match &error {
        Error::Decode {
            workflow_id,
            column,
            reason,
        } => {
            assert_eq!(workflow_id, "pickled-1");
            assert_eq!(column, "workflow_output.output");
            assert!(reason.contains("py_pickle"), "{reason}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(matches!(app.status("nope").await.unwrap_err(), Error::NotFound(id) if id == "nope"));
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn parallel_with_gate(key: String) -> Result<Vec<i64>, AppError> {
    // Operation 3 (the gate) is still running when the process goes away, while 1, 2 and 4
    // have completed: the replay must line every recorded outcome up with its call.
    let (a, b, gated, c) = tokio::join!(
        add(key.clone(), 1, 0),
        add(key.clone(), 2, 0),
        gate(key.clone()),
        add(key.clone(), 3, 0)
    );
    gated?;
    let rest = futures::future::join_all((4..=5).map(|n| add(key.clone(), n, 0))).await;
    let mut all = vec![a?, b?, c?];
    for r in rest {
        all.push(r?);
    }
    Ok(all)
}

/// Steps started in a fixed order and awaited together get deterministic ids and replay
/// from their checkpoints, even when the process stopped between their completions.
async fn parallel_steps_get_deterministic_ids(db: &TestDb) {
    let k = key(db, "parallel");
    // A longer grace than quick_exit, so the checkpoints of the steps that finished are
    // written before the blocked execution is abandoned.
    let app = db
        .builder("cairn-test")
        .shutdown_grace(Duration::from_millis(500))
        .launch()
        .await
        .unwrap();
    let id = app
        .start(parallel_with_gate, k.clone())
        .await
        .unwrap()
        .id()
        .to_owned();
    common::wait_reached(&k).await;
    abandon(app).await;
    let recorded: Vec<i32> = {
        let app = db
            .builder("inspector")
            .recover_on_launch(false)
            .launch()
            .await
            .unwrap();
        let steps = app.list_steps(&id).await.unwrap();
        app.shutdown().await.unwrap();
        steps.iter().map(|s| s.function_id).collect()
    };
    assert!(
        !recorded.contains(&3),
        "the gate had not finished: {recorded:?}"
    );
    assert!(
        recorded.contains(&1) && recorded.contains(&2),
        "{recorded:?}"
    );

    common::release(&k);
    let app = db.launch().await;
    assert_eq!(
        app.retrieve::<Vec<i64>>(&id)
            .await
            .unwrap()
            .result()
            .await
            .unwrap(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(counted(&k), 5, "each parallel step ran once");
    let steps = app.list_steps(&id).await.unwrap();
    let summary: Vec<_> = steps
        .iter()
        .map(|s| {
            (
                s.function_id,
                s.name.as_str(),
                s.raw_output.clone().unwrap_or_default(),
            )
        })
        .collect();
    let expected = vec![
        (1, "add", "1".to_owned()),
        (2, "add", "2".to_owned()),
        (3, "gate", "null".to_owned()),
        (4, "add", "3".to_owned()),
        (5, "add", "4".to_owned()),
        (6, "add", "5".to_owned()),
    ];
    assert_eq!(summary, expected);
    app.shutdown().await.unwrap();
}

#[cairn::workflow]
async fn closure_steps(key: String) -> Result<i64, AppError> {
    let k = key.clone();
    let n: i64 = cairn::run_step("roll", move || async move {
        count(&k);
        // A step inside a step is a plain call: not recorded.
        add(k, 3, 4).await
    })
    .await?;
    Ok(n)
}

/// Outside a workflow a step is a plain call; `run_step` checkpoints a closure, and a step
/// inside it is not recorded separately.
async fn steps_outside_workflows_just_run(db: &TestDb) {
    let k = key(db, "plain");
    assert_eq!(add(k.clone(), 2, 3).await.unwrap(), 5);
    assert_eq!(counted(&k), 1);

    let app = db.launch().await;
    let handle = app.start(closure_steps, k.clone()).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 7);
    let steps = app.list_steps(handle.id()).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(
        (steps[0].name.as_str(), steps[0].raw_output.as_deref()),
        ("roll", Some("7"))
    );
    app.shutdown().await.unwrap();
}

/// An id or topic the database could not index is refused up front with a typed error
/// that names the argument and quotes only its start; nothing is written.
async fn an_over_long_id_is_refused_with_a_short_typed_error(db: &TestDb) {
    let app = db.launch().await;
    let long = "x".repeat(100_000);
    let error = app
        .start_with(
            StartOptions::id(long.clone()),
            add_then_gate,
            "k".to_owned(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::InvalidArgument {
                argument: "workflow_id",
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.len() < 300,
        "the message stays short: {} bytes",
        message.len()
    );
    assert!(message.contains("100000 bytes"), "{message}");
    let error = app
        .send("some-workflow", long.as_str(), &1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::InvalidArgument {
                argument: "topic",
                ..
            }
        ),
        "{error:?}"
    );
    let rows = db
        .query_text("SELECT CAST(COUNT(*) AS TEXT) FROM workflow_status")
        .await;
    assert_eq!(rows.as_deref(), Some("0"));
    app.shutdown().await.unwrap();
}

both_backends!(
    an_over_long_id_is_refused_with_a_short_typed_error,
    a_workflow_runs_its_steps_and_checkpoints_each,
    a_workflow_id_runs_once_under_concurrent_starts,
    recovery_resumes_at_the_first_unfinished_step,
    replay_returns_recorded_errors,
    a_renamed_step_is_a_non_determinism_error,
    child_workflows_start_once_with_derived_ids,
    a_workflow_past_its_recovery_limit_is_dead_lettered,
    a_panic_becomes_the_workflows_error,
    an_undecodable_row_is_a_clear_error,
    parallel_steps_get_deterministic_ids,
    steps_outside_workflows_just_run,
);
