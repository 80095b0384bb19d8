//! Workflow management through a standalone client and through the application: delete,
//! cancel and resume many, fork, delays, attributes, application versions, event history and
//! retention — each on SQLite and on Postgres.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cairn::{Cairn, Client, Error, WorkflowState};
use common::TestDb;

/// The client workflows manage others with (set once the application is up).
#[derive(Default)]
struct Manager(OnceLock<Client>);

/// The client a workflow of this test manages with.
fn manager() -> cairn::Result<Client> {
    let manager = cairn::state::<Arc<Manager>>()?;
    Ok(manager.0.get().expect("the manager client is set").clone())
}

/// An application on `db`, and a standalone client on the same database (the one workflows
/// use too).
async fn launch(db: &TestDb) -> (Cairn, Client) {
    let manager = Arc::new(Manager::default());
    let app = db
        .builder("manage")
        .state(Arc::clone(&manager))
        .launch()
        .await
        .expect("launch");
    let client = Client::connect(&db.url).await.expect("connect a client");
    let _ = manager.0.set(client.clone());
    (app, client)
}

/// How many rows of `table` belong to `workflow_id` (by `column`).
async fn rows(db: &TestDb, table: &str, column: &str, workflow_id: &str) -> i64 {
    let sql =
        format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table} WHERE {column} = '{workflow_id}'");
    db.query_text(&sql)
        .await
        .expect("a count")
        .parse()
        .expect("an integer")
}

/// How many rows each table holds for `workflow_id`.
async fn footprint(db: &TestDb, workflow_id: &str) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for (table, column) in [
        ("workflow_status", "workflow_uuid"),
        ("workflow_input", "workflow_uuid"),
        ("workflow_output", "workflow_uuid"),
        ("operation_outputs", "workflow_uuid"),
        ("notifications", "destination_uuid"),
        ("workflow_events", "workflow_uuid"),
        ("workflow_events_history", "workflow_uuid"),
        ("streams", "workflow_uuid"),
    ] {
        counts.push((table, rows(db, table, column, workflow_id).await));
    }
    counts
}

/// Whether `workflow_id` has no row left in any table.
async fn gone(db: &TestDb, workflow_id: &str) -> bool {
    footprint(db, workflow_id)
        .await
        .iter()
        .all(|(_, n)| *n == 0)
}

#[cairn::step]
async fn double(n: u32) -> Result<u32, cairn::Error> {
    Ok(n * 2)
}

/// A workflow that leaves a row in every table it owns (a message to it included).
#[cairn::workflow]
async fn busy(n: u32) -> Result<u32, cairn::Error> {
    let doubled = double(n).await?;
    cairn::set_event("doubled", &doubled).await?;
    cairn::set_event("doubled", &(doubled + 1)).await?;
    cairn::write_stream("progress", &doubled).await?;
    let _: Option<u32> = cairn::recv("nudge", Duration::from_secs(30)).await?;
    Ok(doubled)
}

/// A workflow that starts `busy` as its child.
#[cairn::workflow]
async fn parent(n: u32) -> Result<u32, cairn::Error> {
    let child = busy(n).await?;
    Ok(child + 1)
}

/// A workflow that waits for a message for a long time.
#[cairn::workflow]
async fn waiting() -> Result<Option<String>, cairn::Error> {
    cairn::set_event("waiting", &true).await?;
    cairn::recv("never", Duration::from_secs(600)).await
}

/// A workflow that deletes another as one of its steps.
#[cairn::workflow]
async fn deleter(target: String) -> Result<bool, cairn::Error> {
    manager()?.delete_workflow(&target, false).await
}

/// Deleting a finished workflow removes its rows from every table, through the client and
/// through the application alike; deleting it again answers `false`.
async fn deleting_a_workflow_removes_every_row_it_owns(db: &TestDb) {
    let (app, client) = launch(db).await;
    for (manager, id) in [(&client, "by-client"), (&*app, "by-app")] {
        let handle = app
            .start_with(cairn::StartOptions::id(id), busy, 4)
            .await
            .unwrap();
        app.send(id, "nudge", &1u32).await.unwrap();
        assert_eq!(handle.result().await.unwrap(), 8);
        let before = footprint(db, id).await;
        assert!(before.iter().all(|(_, n)| *n > 0), "{before:?}");

        assert!(manager.delete_workflow(id, false).await.unwrap());
        assert!(gone(db, id).await, "{:?}", footprint(db, id).await);
        assert!(matches!(client.status(id).await, Err(Error::NotFound(_))));
        assert!(!manager.delete_workflow(id, false).await.unwrap());
    }
    client.close().await;
    app.shutdown().await.unwrap();
}

/// With `delete_children`, a workflow's children go with it; without, they stay.
async fn deleting_with_children_removes_the_whole_tree(db: &TestDb) {
    let (app, client) = launch(db).await;
    let mut trees = Vec::new();
    for id in ["tree-a", "tree-b"] {
        let handle = app
            .start_with(cairn::StartOptions::id(id), parent, 1)
            .await
            .unwrap();
        let child = format!("{id}-1");
        // The child waits for a nudge; it exists once the parent started it.
        let _: Option<u32> = client
            .get_event(&child, "doubled", Duration::from_secs(30))
            .await
            .unwrap();
        client.send(&child, "nudge", &1u32).await.unwrap();
        assert_eq!(handle.result().await.unwrap(), 3);
        trees.push((id, child));
    }
    let (a, a_child) = &trees[0];
    assert_eq!(
        client.delete_workflows([*a], false).await.unwrap(),
        [a.to_string()]
    );
    assert!(
        client.status(a_child).await.is_ok(),
        "a child stays without delete_children"
    );

    let (b, b_child) = &trees[1];
    let deleted = app
        .delete_workflows([b.to_string(), "missing".to_owned()], true)
        .await
        .unwrap();
    assert_eq!(deleted, [b.to_string(), b_child.clone()]);
    assert!(gone(db, b).await && gone(db, b_child).await);
    client.close().await;
    app.shutdown().await.unwrap();
}

/// Deleting a workflow that is still running (as DBOS allows) stops its execution here at
/// once: its handle answers `NotFound`, and nothing of it is written back afterwards.
async fn deleting_a_running_workflow_stops_it(db: &TestDb) {
    let (app, client) = launch(db).await;
    let handle = app.start(waiting, ()).await.unwrap();
    let ready: Option<bool> = client
        .get_event(handle.id(), "waiting", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(ready, Some(true));
    assert!(app.delete_workflow(handle.id(), false).await.unwrap());
    let outcome = tokio::time::timeout(Duration::from_secs(10), handle.result())
        .await
        .expect("the deleted workflow's execution stops at once");
    assert!(matches!(outcome, Err(Error::NotFound(_))), "{outcome:?}");
    assert!(gone(db, handle.id()).await);
    client.close().await;
    app.shutdown().await.unwrap();
}

/// Inside a workflow, a delete is a step recorded under DBOS's name with its answer.
async fn a_delete_inside_a_workflow_is_a_step(db: &TestDb) {
    let (app, client) = launch(db).await;
    let target = app.start(busy, 2).await.unwrap();
    client.send(target.id(), "nudge", &1u32).await.unwrap();
    target.result().await.unwrap();
    let handle = app.start(deleter, target.id().to_owned()).await.unwrap();
    assert!(handle.result().await.unwrap());
    assert!(gone(db, target.id()).await);
    let steps = client.list_steps(handle.id()).await.unwrap();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].name, "DBOS.deleteWorkflow");
    assert_eq!(steps[0].raw_output.as_deref(), Some("true"));
    assert_eq!(
        client.status(handle.id()).await.unwrap().state,
        WorkflowState::Success
    );
    client.close().await;
    app.shutdown().await.unwrap();
}

/// Start a `waiting` workflow and wait until it waits.
async fn start_waiting(app: &Cairn, client: &Client) -> cairn::WorkflowHandle<Option<String>> {
    let handle = app.start(waiting, ()).await.unwrap();
    let ready: Option<bool> = client
        .get_event(handle.id(), "waiting", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(ready, Some(true));
    handle
}

/// A workflow that starts a `waiting` child and waits for it.
#[cairn::workflow]
async fn waiting_parent() -> Result<Option<String>, cairn::Error> {
    waiting().await
}

/// Cancelling many cancels the unfinished ones (and with `cancel_children` their children)
/// in one call and leaves finished ones alone; a missing id cancels nothing. Resuming many
/// puts them back, and each continues from its checkpoints.
async fn cancel_and_resume_many_at_once(db: &TestDb) {
    let (app, client) = launch(db).await;
    let a = start_waiting(&app, &client).await;
    let b = start_waiting(&app, &client).await;
    let done = app.start(busy, 1).await.unwrap();
    client.send(done.id(), "nudge", &1u32).await.unwrap();
    done.result().await.unwrap();

    let refused = client
        .cancel_workflows([a.id(), "missing"].map(str::to_owned), false)
        .await;
    assert!(
        matches!(&refused, Err(Error::NotFound(id)) if id == "missing"),
        "{refused:?}"
    );
    assert_eq!(a.status().await.unwrap().state, WorkflowState::Pending);

    let ids = [a.id(), b.id(), done.id(), a.id()].map(str::to_owned);
    let cancelled = client.cancel_workflows(ids, false).await.unwrap();
    assert_eq!(cancelled, [a.id(), b.id()]);
    for handle in [&a, &b] {
        assert!(matches!(handle.result().await, Err(Error::Cancelled(_))));
    }
    assert_eq!(done.status().await.unwrap().state, WorkflowState::Success);

    let refused = app
        .resume_workflows::<Option<String>, _, _>([b.id(), "missing"].map(str::to_owned))
        .await;
    assert!(
        matches!(&refused, Err(Error::NotFound(id)) if id == "missing"),
        "{refused:?}"
    );
    assert_eq!(b.status().await.unwrap().state, WorkflowState::Cancelled);

    let resumed = app
        .resume_workflows::<Option<String>, _, _>([a.id(), b.id()].map(str::to_owned))
        .await
        .unwrap();
    for handle in &resumed {
        client.send(handle.id(), "never", &"go").await.unwrap();
        assert_eq!(handle.result().await.unwrap().as_deref(), Some("go"));
    }

    let parent = app.start(waiting_parent, ()).await.unwrap();
    let child = format!("{}-1", parent.id());
    let ready: Option<bool> = client
        .get_event(&child, "waiting", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(ready, Some(true));
    let cancelled = app
        .cancel_workflows([parent.id().to_owned()], true)
        .await
        .unwrap();
    assert_eq!(cancelled, [parent.id().to_owned(), child.clone()]);
    assert_eq!(
        client.status(&child).await.unwrap().state,
        WorkflowState::Cancelled
    );
    client.close().await;
    app.shutdown().await.unwrap();
}

#[cairn::step]
async fn tally(key: String, n: u32) -> Result<u32, cairn::Error> {
    common::count(&format!("{key}#{n}"));
    Ok(n)
}

/// Three counted steps, with an event set and a stream value written between them
/// (operations 1 to 6: step, event, stream, step, event, step).
#[cairn::workflow]
async fn three_steps(key: String) -> Result<u32, cairn::Error> {
    let a = tally(key.clone(), 1).await?;
    cairn::set_event("after", &1u32).await?;
    cairn::write_stream("s", &"one").await?;
    let b = tally(key.clone(), 2).await?;
    cairn::set_event("after", &2u32).await?;
    let c = tally(key, 3).await?;
    Ok(a + b + c)
}

/// A fork from step 4 replays the original's first three operations from their copied
/// checkpoints (their step body does not run again; their event and stream value are
/// there) and runs the rest; the fork records where it came from, and the original that it
/// was forked. A fork from step 1 runs everything again. A missing original and a taken
/// fork id are refused.
async fn a_fork_replays_the_steps_before_its_start(db: &TestDb) {
    let (app, client) = launch(db).await;
    let key = format!("fork@{}", db.url);
    let original = app
        .start_with(
            cairn::StartOptions::id("original"),
            three_steps,
            key.clone(),
        )
        .await
        .unwrap();
    assert_eq!(original.result().await.unwrap(), 6);

    let fork = client
        .fork_workflow::<u32>(
            "original",
            4,
            cairn::ForkOptions::default().with_id("fork-4"),
        )
        .await
        .unwrap();
    assert_eq!(fork.id(), "fork-4");
    assert_eq!(fork.result().await.unwrap(), 6);
    let runs = |n| common::counted(&format!("{key}#{n}"));
    assert_eq!((runs(1), runs(2), runs(3)), (1, 2, 2));
    let steps = client.list_steps("fork-4").await.unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    let stream: Vec<String> = {
        use futures::StreamExt;
        client
            .read_stream::<String>("fork-4", "s")
            .map(|value| value.unwrap())
            .collect()
            .await
    };
    assert_eq!(stream, ["one"]);
    assert_eq!(
        db.query_text("SELECT forked_from FROM workflow_status WHERE workflow_uuid = 'fork-4'")
            .await
            .as_deref(),
        Some("original")
    );
    assert_eq!(
        db.query_text(
            "SELECT CASE WHEN was_forked_from THEN 'yes' ELSE 'no' END FROM workflow_status \
             WHERE workflow_uuid = 'original'"
        )
        .await
        .as_deref(),
        Some("yes")
    );

    let again = app
        .fork_workflow::<u32>("original", 1, cairn::ForkOptions::default())
        .await
        .unwrap();
    assert_ne!(again.id(), "original");
    assert_eq!(again.result().await.unwrap(), 6);
    assert_eq!((runs(1), runs(2), runs(3)), (2, 3, 3));

    let missing = client
        .fork_workflow::<u32>("missing", 1, cairn::ForkOptions::default())
        .await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    let taken = client
        .fork_workflow::<u32>(
            "original",
            1,
            cairn::ForkOptions::default().with_id("fork-4"),
        )
        .await;
    assert!(
        matches!(
            taken,
            Err(Error::InvalidArgument {
                argument: "workflow_id",
                ..
            })
        ),
        "{taken:?}"
    );
    client.close().await;
    app.shutdown().await.unwrap();
}

/// A delayed workflow's delay can be moved: shortened to now, it runs at once; a workflow
/// that is not delayed is left alone; a missing one is `NotFound`.
async fn a_delayed_workflow_runs_when_its_delay_is_moved(db: &TestDb) {
    let app = db
        .builder("manage")
        .queue(cairn::Queue::new("later"))
        .launch()
        .await
        .expect("launch");
    let client = Client::connect(&db.url).await.expect("connect a client");
    let key = format!("delay@{}", db.url);
    let options = cairn::EnqueueOptions::default().with_delay(Duration::from_secs(3600));
    let handle = client
        .enqueue_with(options, "later", three_steps, key)
        .await
        .unwrap();
    assert_eq!(handle.status().await.unwrap().state, WorkflowState::Delayed);
    assert!(
        client
            .set_workflow_delay(handle.id(), Duration::from_secs(7200))
            .await
            .unwrap()
    );
    assert_eq!(handle.status().await.unwrap().state, WorkflowState::Delayed);
    assert!(
        app.set_workflow_delay_until(handle.id(), chrono::Utc::now())
            .await
            .unwrap()
    );
    let outcome = tokio::time::timeout(Duration::from_secs(30), handle.result()).await;
    assert_eq!(outcome.expect("it runs once due").unwrap(), 6);
    assert!(
        !client
            .set_workflow_delay(handle.id(), Duration::ZERO)
            .await
            .unwrap()
    );
    let missing = client.set_workflow_delay("missing", Duration::ZERO).await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    client.close().await;
    app.shutdown().await.unwrap();
}

both_backends!(
    deleting_a_workflow_removes_every_row_it_owns,
    deleting_with_children_removes_the_whole_tree,
    deleting_a_running_workflow_stops_it,
    a_delete_inside_a_workflow_is_a_step,
    cancel_and_resume_many_at_once,
    a_fork_replays_the_steps_before_its_start,
    a_delayed_workflow_runs_when_its_delay_is_moved,
);
