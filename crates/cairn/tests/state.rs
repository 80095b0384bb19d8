//! Application state and context accessors: values given to the builder reach workflows and
//! steps, configured instances keep their own values across recovery, and workflow and step
//! code can read where it runs — each on SQLite and on Postgres.

mod common;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use cairn::{Cairn, Error, StartOptions, WorkflowState};
use common::{TestDb, count};

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum AppError {
    #[error("flaky: attempt {0}")]
    Flaky(usize),
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

/// Configuration, as an application gives it to the builder.
struct Greeting(String);

/// A second value of another type, as a pool or a client would be.
struct Punctuation(char);

/// A value of a type nobody gives.
struct Missing;

/// A region's settings: given once for the application, and per configured instance.
struct Region(&'static str);

/// What a step body sees of itself: `(step id, attempt)`.
type StepView = (Option<i32>, Option<u32>);

/// What step bodies saw, by test key, one entry per attempt.
static SEEN: LazyLock<Mutex<HashMap<String, Vec<StepView>>>> = LazyLock::new(Default::default);

fn see(key: &str) {
    let mut seen = SEEN.lock().unwrap();
    let entry = seen.entry(key.to_owned()).or_default();
    entry.push((cairn::step_id(), cairn::step_attempt()));
}

fn seen(key: &str) -> Vec<StepView> {
    SEEN.lock().unwrap().get(key).cloned().unwrap_or_default()
}

/// A unique key per test run, for counters, gates and what steps saw.
fn key(db: &TestDb, what: &str) -> String {
    format!("{what}@{}", db.url)
}

/// A builder that abandons in-flight workflows at once on shutdown, as a crash would.
fn quick_exit(db: &TestDb) -> cairn::CairnBuilder {
    db.builder("cairn-test")
        .shutdown_grace(Duration::from_millis(20))
}

#[cairn::step]
async fn punctuate(text: String) -> Result<String, AppError> {
    let mark = cairn::state::<Punctuation>()?;
    Ok(format!("{text}{}", mark.0))
}

#[cairn::workflow]
async fn greet(name: String) -> Result<String, AppError> {
    let greeting = cairn::state::<Greeting>()?;
    punctuate(format!("{}, {name}", greeting.0)).await
}

/// A value given to the builder is reachable, typed, from workflow code and from step
/// bodies; several types can be given.
async fn state_given_to_the_builder_reaches_workflows_and_steps(db: &TestDb) {
    let app = db
        .builder("cairn-test")
        .state(Greeting("hello".to_owned()))
        .state(Punctuation('!'))
        .launch()
        .await
        .unwrap();
    let greeting = app.run(greet, "ada".to_owned()).await.unwrap();
    assert_eq!(greeting, "hello, ada!");
    app.shutdown().await.unwrap();
}

#[cairn::step]
async fn look_for_missing() -> Result<String, AppError> {
    match cairn::state::<Missing>() {
        Err(Error::MissingState {
            type_name,
            instance,
        }) => Ok(format!("{type_name} {instance:?}")),
        other => Ok(format!("unexpected {:?}", other.map(|_| ()))),
    }
}

#[cairn::workflow]
async fn missing_state() -> Result<String, AppError> {
    look_for_missing().await
}

/// Asking for a type that was not given is `Error::MissingState` naming it; outside any
/// workflow there is no state to read: `Error::NotInWorkflow`.
async fn state_that_was_not_given_is_a_typed_error(db: &TestDb) {
    let app = db.launch().await;
    let found = app.run(missing_state, ()).await.unwrap();
    assert_eq!(found, "state::Missing None");

    let error = Error::MissingState {
        type_name: "state::Missing",
        instance: None,
    };
    assert!(error.to_string().contains(".state(value)"), "{error}");

    match cairn::state::<Greeting>() {
        Err(Error::NotInWorkflow("cairn::state")) => {}
        other => panic!("expected NotInWorkflow, got {:?}", other.map(|_| ())),
    }
    app.shutdown().await.unwrap();
}

/// What the workflow's code and its steps saw of their context.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Seen {
    workflow_id: Option<String>,
    in_workflow: bool,
    step_id_in_workflow_code: Option<i32>,
    step_attempt_in_workflow_code: Option<u32>,
    instance: Option<String>,
    flaky_step: (Option<String>, Option<i32>, Option<u32>),
    second_step: StepView,
}

/// Fails until its third attempt; records what each attempt saw.
#[cairn::step(max_attempts = 3, interval_ms = 1)]
async fn flaky(key: String) -> Result<(Option<String>, Option<i32>, Option<u32>), AppError> {
    see(&key);
    let attempt = count(&key);
    if attempt < 3 {
        return Err(AppError::Flaky(attempt));
    }
    Ok((
        cairn::workflow_id(),
        cairn::step_id(),
        cairn::step_attempt(),
    ))
}

#[cairn::step]
async fn plain() -> Result<StepView, AppError> {
    Ok((cairn::step_id(), cairn::step_attempt()))
}

#[cairn::workflow]
async fn observe(key: String) -> Result<Seen, AppError> {
    let flaky_step = flaky(key).await?;
    let second_step = plain().await?;
    Ok(Seen {
        workflow_id: cairn::workflow_id(),
        in_workflow: cairn::in_workflow(),
        step_id_in_workflow_code: cairn::step_id(),
        step_attempt_in_workflow_code: cairn::step_attempt(),
        instance: cairn::instance(),
        flaky_step,
        second_step,
    })
}

/// Workflow code and step bodies read the workflow's id; a step body reads its operation id
/// and its attempt (from 1, moving on with each retry); workflow code has no step id; outside
/// any workflow there is nothing to read.
async fn accessors_describe_the_running_workflow_and_step(db: &TestDb) {
    let app = db.launch().await;
    let k = key(db, "accessors");
    let handle = app.start(observe, k.clone()).await.unwrap();
    let id = handle.id().to_owned();
    let seen_by_workflow = handle.result().await.unwrap();
    assert_eq!(
        seen_by_workflow,
        Seen {
            workflow_id: Some(id.clone()),
            in_workflow: true,
            step_id_in_workflow_code: None,
            step_attempt_in_workflow_code: None,
            instance: None,
            flaky_step: (Some(id.clone()), Some(1), Some(3)),
            second_step: (Some(2), Some(1)),
        }
    );
    assert_eq!(
        seen(&k),
        vec![(Some(1), Some(1)), (Some(1), Some(2)), (Some(1), Some(3))],
        "each attempt saw the same step id and its own attempt number"
    );

    // Outside any workflow, and in a step called as a plain function.
    assert_eq!(cairn::workflow_id(), None);
    assert!(!cairn::in_workflow());
    assert_eq!(cairn::step_id(), None);
    assert_eq!(cairn::step_attempt(), None);
    assert_eq!(cairn::instance(), None);
    assert_eq!(plain().await.unwrap(), (None, None));
    app.shutdown().await.unwrap();
}

/// Blocks until `release(key)`; announces each time it starts waiting.
#[cairn::step]
async fn gate(key: String) -> Result<StepView, AppError> {
    common::reached(&key);
    common::until_released(&key).await;
    Ok((cairn::step_id(), cairn::step_attempt()))
}

#[cairn::workflow]
async fn observe_across_recovery(key: String) -> Result<(Option<String>, StepView), AppError> {
    plain().await?;
    let gate_step = gate(key).await?;
    Ok((cairn::workflow_id(), gate_step))
}

/// After recovery the workflow's code sees the same workflow id, and a step that runs again
/// sees the same step id, starting again at attempt 1.
async fn accessors_are_the_same_after_recovery(db: &TestDb) {
    let k = key(db, "recovered accessors");
    let app = quick_exit(db).launch().await.unwrap();
    let handle = app.start(observe_across_recovery, k.clone()).await.unwrap();
    let id = handle.id().to_owned();
    common::wait_reached(&k).await;
    app.shutdown().await.unwrap();

    let app = db.launch().await;
    common::wait_reached(&k).await;
    common::release(&k);
    let handle = app
        .retrieve::<(Option<String>, StepView)>(&id)
        .await
        .unwrap();
    assert_eq!(
        handle.result().await.unwrap(),
        (Some(id.clone()), (Some(2), Some(1)))
    );
    assert_eq!(app.status(&id).await.unwrap().recovery_attempts, 2);
    app.shutdown().await.unwrap();
}

#[cairn::step]
async fn region_of_step() -> Result<String, AppError> {
    Ok(cairn::state::<Region>()?.0.to_owned())
}

#[cairn::workflow]
async fn child_region() -> Result<(Option<String>, String), AppError> {
    Ok((cairn::instance(), region_of_step().await?))
}

/// Reads its region (in code and in a step), waits at a gate, and asks a child for its own.
#[cairn::workflow]
async fn regional(key: String) -> Result<Vec<String>, AppError> {
    let in_code = cairn::state::<Region>()?.0.to_owned();
    let in_step = region_of_step().await?;
    gate(key).await?;
    let (child_instance, child) = child_region().await?;
    let instance = cairn::instance().unwrap_or_else(|| "-".to_owned());
    let child_instance = child_instance.unwrap_or_else(|| "-".to_owned());
    Ok(vec![instance, in_code, in_step, child_instance, child])
}

/// The regions every launch in the instance tests configures.
fn regions(builder: cairn::CairnBuilder) -> cairn::CairnBuilder {
    builder
        .state(Region("global"))
        .instance_state("eu", Region("eu"))
        .instance_state("us", Region("us"))
}

/// One workflow function, several configured instances: each execution gets its instance's
/// value (else the application's), its children run as the same instance, the instance is
/// recorded as DBOS's `config_name`, and recovery after a restart picks the right instance.
async fn instances_keep_their_state_across_recovery(db: &TestDb) {
    let app = regions(quick_exit(db)).launch().await.unwrap();
    let mut started = Vec::new();
    for instance in [None, Some("eu"), Some("us")] {
        let k = key(db, &format!("instance {instance:?}"));
        let mut options = StartOptions::default();
        if let Some(instance) = instance {
            options = options.with_instance(instance);
        }
        let handle = app.start_with(options, regional, k.clone()).await.unwrap();
        common::wait_reached(&k).await;
        started.push((instance, k, handle.id().to_owned()));
    }
    for (instance, _, id) in &started {
        let status = app.status(id).await.unwrap();
        assert_eq!(status.instance.as_deref(), *instance);
        let recorded = db
            .query_text(&format!(
                "SELECT config_name FROM workflow_status WHERE workflow_uuid = '{id}'"
            ))
            .await;
        assert_eq!(recorded.as_deref(), *instance, "recorded as config_name");
    }
    app.shutdown().await.unwrap();

    let app = regions(db.builder("cairn-test")).launch().await.unwrap();
    for (_, k, _) in &started {
        common::wait_reached(k).await;
        common::release(k);
    }
    for (instance, _, id) in &started {
        let handle = app.retrieve::<Vec<String>>(id).await.unwrap();
        let region = instance.unwrap_or("global");
        let name = instance.unwrap_or("-");
        assert_eq!(
            handle.result().await.unwrap(),
            vec![name, region, region, name, region],
            "instance {instance:?}"
        );
        let child = app.status(&format!("{id}-3")).await.unwrap();
        assert_eq!(child.instance.as_deref(), *instance, "the child's instance");
        assert_eq!(app.status(id).await.unwrap().recovery_attempts, 2);
    }
    app.shutdown().await.unwrap();
}

/// Starting a workflow as an instance this process does not configure is refused before
/// anything is written: it could get neither its state nor a recovery here.
async fn an_unconfigured_instance_cannot_be_started(db: &TestDb) {
    let app = regions(db.builder("cairn-test")).launch().await.unwrap();
    let options = StartOptions::id("mars-1").with_instance("mars");
    match app.start_with(options, regional, "unused".to_owned()).await {
        Err(Error::InvalidArgument { argument, reason }) => {
            assert_eq!(argument, "instance");
            assert!(reason.contains("instance_state(\"mars\""), "{reason}");
        }
        other => panic!(
            "expected InvalidArgument, got {:?}",
            other.map(|h| h.id().to_owned())
        ),
    }
    assert!(matches!(
        app.status("mars-1").await,
        Err(Error::NotFound(_))
    ));
    app.shutdown().await.unwrap();
}

/// A workflow of an instance that the relaunched process does not configure is left
/// `PENDING` for a process that does, which then finishes it with the instance's state.
async fn a_workflow_of_an_unconfigured_instance_waits_for_a_process_that_configures_it(
    db: &TestDb,
) {
    let k = key(db, "unconfigured");
    let app = regions(quick_exit(db)).launch().await.unwrap();
    let options = StartOptions::default().with_instance("eu");
    let id = app
        .start_with(options, regional, k.clone())
        .await
        .unwrap()
        .id()
        .to_owned();
    common::wait_reached(&k).await;
    app.shutdown().await.unwrap();

    // Only the application's region: the `eu` workflow is not run here.
    let app = quick_exit(db)
        .state(Region("global"))
        .launch()
        .await
        .unwrap();
    assert!(!app.recover_pending().await.unwrap().contains(&id));
    assert_eq!(app.status(&id).await.unwrap().state, WorkflowState::Pending);
    app.shutdown().await.unwrap();

    let app: Cairn = regions(db.builder("cairn-test")).launch().await.unwrap();
    common::wait_reached(&k).await;
    common::release(&k);
    let handle = app.retrieve::<Vec<String>>(&id).await.unwrap();
    assert_eq!(
        handle.result().await.unwrap(),
        vec!["eu", "eu", "eu", "eu", "eu"]
    );
    app.shutdown().await.unwrap();
}

both_backends!(
    state_given_to_the_builder_reaches_workflows_and_steps,
    state_that_was_not_given_is_a_typed_error,
    accessors_describe_the_running_workflow_and_step,
    accessors_are_the_same_after_recovery,
    instances_keep_their_state_across_recovery,
    an_unconfigured_instance_cannot_be_started,
    a_workflow_of_an_unconfigured_instance_waits_for_a_process_that_configures_it,
);
