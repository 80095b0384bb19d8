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

// ---- Workflow attributes -----------------------------------------------------------------

/// A workflow that finishes at once.
#[cairn::workflow]
async fn tagged() -> Result<u32, cairn::Error> {
    Ok(1)
}

/// A workflow that replaces another's attributes as one of its steps.
#[cairn::workflow]
async fn retagger(target: String) -> Result<(), cairn::Error> {
    manager()?
        .update_workflow_attributes(&target, Some(serde_json::json!({"by": "workflow"})), false)
        .await
}

/// Attributes given at a start or an enqueue are recorded, shown by `status()`, and found by
/// the listing's attribute filter; anything but an object is refused before anything runs.
async fn attributes_set_at_start_are_shown_and_searchable(db: &TestDb) {
    let manager = Arc::new(Manager::default());
    let app = db
        .builder("manage")
        .state(Arc::clone(&manager))
        .queue(cairn::Queue::new("tags"))
        .launch()
        .await
        .expect("launch");
    let client = Client::connect(&db.url).await.expect("connect a client");
    let started_attrs = serde_json::json!({"team": "red", "tier": 1});
    let started = app
        .start_with(
            cairn::StartOptions::id("attr-started").with_attributes(started_attrs.clone()),
            tagged,
            (),
        )
        .await
        .unwrap();
    started.result().await.unwrap();
    let enqueued_attrs = serde_json::json!({"team": "blue", "nested": {"a": [1, 2]}});
    let enqueued = client
        .enqueue_with(
            cairn::EnqueueOptions::id("attr-enqueued").with_attributes(enqueued_attrs.clone()),
            "tags",
            tagged,
            (),
        )
        .await
        .unwrap();
    enqueued.result().await.unwrap();
    let plain = app.start(tagged, ()).await.unwrap();
    plain.result().await.unwrap();

    assert_eq!(
        client.status("attr-started").await.unwrap().attributes,
        Some(started_attrs)
    );
    assert_eq!(
        client.status("attr-enqueued").await.unwrap().attributes,
        Some(enqueued_attrs)
    );
    assert_eq!(client.status(plain.id()).await.unwrap().attributes, None);

    for (team, expected) in [("red", "attr-started"), ("blue", "attr-enqueued")] {
        let found = client
            .list_workflows(cairn::ListWorkflowsOptions::new().attribute("team", team))
            .await
            .unwrap();
        let ids: Vec<&str> = found.iter().map(|s| s.workflow_id.as_str()).collect();
        assert_eq!(ids, [expected], "team {team}");
    }

    for refused in [
        serde_json::json!(3),
        serde_json::json!(["a"]),
        serde_json::json!("x"),
    ] {
        let start = app
            .start_with(
                cairn::StartOptions::default().with_attributes(refused.clone()),
                tagged,
                (),
            )
            .await;
        assert!(
            matches!(
                start,
                Err(Error::InvalidArgument {
                    argument: "attributes",
                    ..
                })
            ),
            "{refused}: {start:?}"
        );
        let enqueue = client
            .enqueue_with(
                cairn::EnqueueOptions::default().with_attributes(refused.clone()),
                "tags",
                tagged,
                (),
            )
            .await;
        assert!(
            matches!(
                enqueue,
                Err(Error::InvalidArgument {
                    argument: "attributes",
                    ..
                })
            ),
            "{refused}: {enqueue:?}"
        );
    }
    client.close().await;
    app.shutdown().await.unwrap();
}

/// Updating attributes replaces them by default, merges top-level keys with `merge`, and
/// clears them with `None`; a missing workflow is `NotFound`; inside a workflow the update is
/// a step under DBOS's name.
async fn updating_attributes_replaces_merges_and_clears(db: &TestDb) {
    let (app, client) = launch(db).await;
    let handle = app
        .start_with(
            cairn::StartOptions::id("attr-update")
                .with_attributes(serde_json::json!({"a": 1, "b": {"x": 1}})),
            tagged,
            (),
        )
        .await
        .unwrap();
    handle.result().await.unwrap();
    let attributes = async || client.status("attr-update").await.unwrap().attributes;

    client
        .update_workflow_attributes("attr-update", Some(serde_json::json!({"c": 3})), false)
        .await
        .unwrap();
    assert_eq!(attributes().await, Some(serde_json::json!({"c": 3})));

    app.update_workflow_attributes(
        "attr-update",
        Some(serde_json::json!({"d": 4, "c": {"y": 2}})),
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        attributes().await,
        Some(serde_json::json!({"c": {"y": 2}, "d": 4}))
    );
    let found = client
        .list_workflows(cairn::ListWorkflowsOptions::new().attribute("d", 4))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);

    client
        .update_workflow_attributes("attr-update", None, false)
        .await
        .unwrap();
    assert_eq!(attributes().await, None);
    // Merging into none starts from an empty object.
    client
        .update_workflow_attributes("attr-update", Some(serde_json::json!({"e": 5})), true)
        .await
        .unwrap();
    assert_eq!(attributes().await, Some(serde_json::json!({"e": 5})));

    let refused = client
        .update_workflow_attributes("attr-update", Some(serde_json::json!([1])), false)
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::InvalidArgument {
                argument: "attributes",
                ..
            })
        ),
        "{refused:?}"
    );
    let merge_none = client
        .update_workflow_attributes("attr-update", None, true)
        .await;
    assert!(
        matches!(
            merge_none,
            Err(Error::InvalidArgument {
                argument: "attributes",
                ..
            })
        ),
        "{merge_none:?}"
    );
    let missing = client
        .update_workflow_attributes("missing", Some(serde_json::json!({})), false)
        .await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");

    let retag = app.start(retagger, "attr-update".to_owned()).await.unwrap();
    retag.result().await.unwrap();
    assert_eq!(
        attributes().await,
        Some(serde_json::json!({"by": "workflow"}))
    );
    let steps = client.list_steps(retag.id()).await.unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["DBOS.updateWorkflowAttributes"]);
    client.close().await;
    app.shutdown().await.unwrap();
}

both_backends!(
    attributes_set_at_start_are_shown_and_searchable,
    updating_attributes_replaces_merges_and_clears,
);

// ---- Event history -----------------------------------------------------------------------

/// A workflow that sets `k` three times and `j` once.
#[cairn::workflow]
async fn eventful() -> Result<(), cairn::Error> {
    cairn::set_event("k", &1u32).await?;
    cairn::set_event("j", &"jay").await?;
    cairn::set_event("k", &2u32).await?;
    cairn::set_event("k", &serde_json::json!({"three": 3})).await?;
    Ok(())
}

/// A workflow that reads another's event history as one of its steps.
#[cairn::workflow]
async fn history_reader(target: String) -> Result<usize, cairn::Error> {
    Ok(manager()?.get_event_history(&target, None).await?.len())
}

/// The event history lists every value set, in the order set, for all keys or one; the
/// latest value is still what `get_event` answers.
async fn event_history_lists_every_value_in_order(db: &TestDb) {
    let (app, client) = launch(db).await;
    let handle = app
        .start_with(cairn::StartOptions::id("eventful"), eventful, ())
        .await
        .unwrap();
    handle.result().await.unwrap();

    let history = app.get_event_history("eventful", None).await.unwrap();
    let seen: Vec<(&str, serde_json::Value)> = history
        .iter()
        .map(|e| (e.key.as_str(), e.value.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("k", serde_json::json!(1)),
            ("j", serde_json::json!("jay")),
            ("k", serde_json::json!(2)),
            ("k", serde_json::json!({"three": 3})),
        ]
    );
    assert!(
        history
            .windows(2)
            .all(|w| w[0].function_id < w[1].function_id)
    );
    assert_eq!(history[1].raw, "\"jay\"");

    let k = client
        .get_event_history("eventful", Some("k"))
        .await
        .unwrap();
    let values: Vec<serde_json::Value> = k.into_iter().map(|e| e.value).collect();
    assert_eq!(
        values,
        [
            serde_json::json!(1),
            serde_json::json!(2),
            serde_json::json!({"three": 3})
        ]
    );
    let latest: Option<serde_json::Value> = client
        .get_event("eventful", "k", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(latest, Some(serde_json::json!({"three": 3})));
    assert!(
        client
            .get_event_history("missing", None)
            .await
            .unwrap()
            .is_empty()
    );

    let reader = app
        .start(history_reader, "eventful".to_owned())
        .await
        .unwrap();
    assert_eq!(reader.result().await.unwrap(), 4);
    let steps = client.list_steps(reader.id()).await.unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["DBOS.getEventHistory"]);
    client.close().await;
    app.shutdown().await.unwrap();
}

both_backends!(event_history_lists_every_value_in_order);

// ── Application versions ────────────────────────────────────────────────────────────────

/// A workflow that reads the latest application version as one of its steps.
#[cairn::workflow]
async fn latest_reader() -> Result<Option<String>, cairn::Error> {
    let latest = manager()?.latest_application_version().await?;
    Ok(latest.map(|v| v.name))
}

/// Record version `name` at `timestamp` for `owner` (NULL when `None`), as another
/// deployment would have.
async fn add_version(db: &TestDb, name: &str, timestamp: i64, owner: Option<&str>) {
    let owner = owner.map_or("NULL".to_owned(), |o| format!("'{o}'"));
    db.execute(&format!(
        "INSERT INTO application_versions \
         (version_id, version_name, version_timestamp, created_at, application_name) \
         VALUES ('id-{name}', '{name}', {timestamp}, {timestamp}, {owner})"
    ))
    .await;
}

/// An application sees its own and unclaimed versions, newest first, and a client without an
/// application name sees all; promoting a version makes it the latest and claims an
/// unclaimed one; another application's version is refused; a missing one answers `false`.
/// Inside a workflow, reading the latest version is a step under DBOS's name.
async fn application_versions_are_listed_and_promoted(db: &TestDb) {
    let (app, client) = launch(db).await;
    let mine = app
        .latest_application_version()
        .await
        .unwrap()
        .expect("the application registered its version");
    assert_eq!(mine.application_name.as_deref(), Some("manage"));
    add_version(db, "old", 1, Some("manage")).await;
    add_version(db, "shared", 2, None).await;
    add_version(db, "foreign", 3, Some("other")).await;

    let names = |versions: Vec<cairn::ApplicationVersion>| -> Vec<String> {
        versions.into_iter().map(|v| v.name).collect()
    };
    assert_eq!(
        names(app.list_application_versions().await.unwrap()),
        [mine.name.as_str(), "shared", "old"]
    );
    assert_eq!(
        names(client.list_application_versions().await.unwrap()),
        [mine.name.as_str(), "foreign", "shared", "old"]
    );

    assert!(app.promote_application_version("old").await.unwrap());
    let latest = app.latest_application_version().await.unwrap().unwrap();
    assert_eq!(latest.name, "old");
    assert!(latest.timestamp_ms >= mine.timestamp_ms, "{latest:?}");
    assert_eq!(latest.created_at_ms, 1);

    let owner = |name: &str| {
        let sql = format!(
            "SELECT application_name FROM application_versions WHERE version_name = '{name}'"
        );
        async move { db.query_text(&sql).await }
    };
    assert!(app.promote_application_version("shared").await.unwrap());
    assert_eq!(owner("shared").await.as_deref(), Some("manage"));
    let refused = app.promote_application_version("foreign").await;
    let owned_elsewhere = matches!(
        refused,
        Err(Error::InvalidArgument {
            argument: "version",
            ..
        })
    );
    assert!(owned_elsewhere, "{refused:?}");
    assert!(!app.promote_application_version("missing").await.unwrap());
    assert!(client.promote_application_version("foreign").await.unwrap());
    assert_eq!(owner("foreign").await.as_deref(), Some("other"));

    let reader = app.start(latest_reader, ()).await.unwrap();
    assert_eq!(reader.result().await.unwrap().as_deref(), Some("foreign"));
    let steps = client.list_steps(reader.id()).await.unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["DBOS.getLatestApplicationVersion"]);
    client.close().await;
    app.shutdown().await.unwrap();
}

// ── Retention ───────────────────────────────────────────────────────────────────────────

/// Run `busy` to completion as `id`.
async fn finished(app: &Cairn, id: &str) {
    let handle = app
        .start_with(cairn::StartOptions::id(id), busy, 1)
        .await
        .unwrap();
    app.send(id, "nudge", &1u32).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 2);
}

/// Set `workflow_id`'s `created_at`.
async fn created_at(db: &TestDb, workflow_id: &str, ms: i64) {
    db.execute(&format!(
        "UPDATE workflow_status SET created_at = {ms} WHERE workflow_uuid = '{workflow_id}'"
    ))
    .await;
}

/// Finished workflows created before the cutoff go with every row they own; a cutoff before
/// them deletes nothing; a running (`PENDING`) and an `ENQUEUED` workflow stay whatever
/// their age.
async fn retention_deletes_old_finished_workflows_with_every_row(db: &TestDb) {
    let (app, client) = launch(db).await;
    for id in ["done-a", "done-b", "done-c"] {
        finished(&app, id).await;
        assert!(!gone(db, id).await);
    }
    let running = start_waiting(&app, &client).await;
    let queued = client.enqueue("nobody-serves-this", busy, 3).await.unwrap();
    for id in [running.id(), queued.id()] {
        created_at(db, id, 1).await;
    }

    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(client.delete_finished_before(an_hour_ago).await.unwrap(), 0);
    assert!(!gone(db, "done-a").await);

    let soon = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(app.delete_finished_before(soon).await.unwrap(), 3);
    for id in ["done-a", "done-b", "done-c"] {
        assert!(gone(db, id).await, "{id}: {:?}", footprint(db, id).await);
    }
    let (running, queued) = (running.status(), queued.status());
    assert_eq!(running.await.unwrap().state, WorkflowState::Pending);
    assert_eq!(queued.await.unwrap().state, WorkflowState::Enqueued);
    assert_eq!(client.delete_finished_before(soon).await.unwrap(), 0);
    client.close().await;
    app.shutdown().await.unwrap();
}

/// Trimming keeps the newest finished workflows by creation time; workflows tied with the
/// last one kept stay too; trimming to 0 deletes every finished one and no unfinished one.
async fn trimming_keeps_the_newest_finished_workflows(db: &TestDb) {
    let (app, client) = launch(db).await;
    for (n, id) in ["t1", "t2", "t3", "t4"].into_iter().enumerate() {
        finished(&app, id).await;
        created_at(db, id, 1_000 + n as i64).await;
    }
    let running = start_waiting(&app, &client).await;
    created_at(db, running.id(), 1).await;

    assert_eq!(client.trim_finished_to(5).await.unwrap(), 0);
    assert_eq!(client.trim_finished_to(2).await.unwrap(), 2);
    assert!(gone(db, "t1").await && gone(db, "t2").await);
    assert!(!gone(db, "t3").await && !gone(db, "t4").await);

    created_at(db, "t3", 2_000).await;
    created_at(db, "t4", 2_000).await;
    assert_eq!(app.trim_finished_to(1).await.unwrap(), 0, "ties are kept");

    assert_eq!(app.trim_finished_to(0).await.unwrap(), 2);
    assert!(gone(db, "t3").await && gone(db, "t4").await);
    let status = running.status().await.unwrap();
    assert_eq!(status.state, WorkflowState::Pending);
    client.close().await;
    app.shutdown().await.unwrap();
}

both_backends!(
    application_versions_are_listed_and_promoted,
    retention_deletes_old_finished_workflows_with_every_row,
    trimming_keeps_the_newest_finished_workflows,
);
