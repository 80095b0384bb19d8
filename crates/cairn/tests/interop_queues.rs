//! Interoperability of queues with DBOS Transact 3.4, the real thing: the Python package
//! `dbos==3.4.0` run from `$CAIRN_DBOS_PYTHON` (`scripts/python-venv.sh` makes one), driving
//! `scripts/interop/queues.py` and DBOS's own `dbos` CLI.
//!
//! DBOS's client enqueues onto queues a Cairn process serves (positional arguments, priority,
//! deduplication, delay) and gets the results; DBOS's CLI lists what Cairn enqueued. (A plain
//! SQL `enqueue_workflow(...)` call is covered by `queues_dispatch.rs`.)

mod common;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use cairn::{Cairn, EnqueueOptions, Error, Queue};
use common::TestDb;
use common::dbos::{dbos_url, run_cli, run_python};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Workflows
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum QueueError {
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

#[cairn::step]
async fn compose(name: String, count: i64) -> Result<String, QueueError> {
    Ok(format!("{name} x{count}"))
}

/// Three positional arguments of different types, a step, a JSON object out.
#[cairn::workflow]
async fn label(name: String, count: i64, tags: Vec<String>) -> Result<Value, QueueError> {
    let text = compose(name, count).await?;
    Ok(json!({"label": text, "tags": tags}))
}

/// The order the [`ranked`] workflows of each test (by key) started in.
static STARTS: LazyLock<Mutex<HashMap<String, Vec<u32>>>> = LazyLock::new(Default::default);

/// Note its start under `key`, return its seed.
#[cairn::workflow]
async fn ranked(key: String, seed: u32) -> Result<u32, QueueError> {
    STARTS
        .lock()
        .expect("starts")
        .entry(key)
        .or_default()
        .push(seed);
    Ok(seed)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An application serving no queue of the test's (only DBOS's internal one).
async fn unserved(db: &TestDb) -> Cairn {
    db.builder("cairn-test")
        .listen_queues(Vec::<String>::new())
        .shutdown_grace(Duration::from_millis(20))
        .launch()
        .await
        .expect("launch")
}

/// An application serving `queue`, polling it often so the tests do not wait long.
async fn serving(db: &TestDb, queue: Queue) -> Cairn {
    db.builder("cairn-test")
        .queue(queue.polling_interval(Duration::from_millis(50)))
        .launch()
        .await
        .expect("launch")
}

/// `DBOSClient.enqueue` each item of `spec` (see `queues.py`); the ids, `None` where DBOS
/// refused the enqueue as a duplicate.
async fn dbos_enqueue(db: &TestDb, spec: Value) -> Vec<Option<String>> {
    let out = run_python("queues.py", &["enqueue", &dbos_url(db), &spec.to_string()]).await;
    out["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("ids: {out:#}"))
        .iter()
        .map(|id| id.as_str().map(str::to_owned))
        .collect()
}

/// The results and statuses of the workflows as `DBOSClient` gets them (waiting for each).
async fn dbos_results(db: &TestDb, ids: &[&str]) -> (Value, Value) {
    let url = dbos_url(db);
    let mut args = vec!["results", url.as_str()];
    args.extend_from_slice(ids);
    let out = run_python("queues.py", &args).await;
    (out["results"].clone(), out["statuses"].clone())
}

async fn column(db: &TestDb, column: &str, id: &str) -> Option<String> {
    db.query_text(&format!(
        "SELECT CAST({column} AS TEXT) FROM workflow_status WHERE workflow_uuid = '{id}'"
    ))
    .await
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// DBOS's client enqueues a Cairn workflow with three positional arguments (portable JSON)
/// onto a queue a Cairn process serves: Cairn runs it, and `handle.get_result()` in Python
/// returns its output.
async fn dbos_client_enqueues_a_cairn_workflow_and_gets_its_result(db: &TestDb) {
    let app = serving(db, Queue::new("interop")).await;
    let ids = dbos_enqueue(
        db,
        json!([{"workflow_name": "label", "queue_name": "interop",
                "args": ["ann", 3, ["a", "b"]]}]),
    )
    .await;
    let id = ids[0].clone().expect("enqueued");
    let (results, statuses) = dbos_results(db, &[&id]).await;
    assert_eq!(results, json!([{"label": "ann x3", "tags": ["a", "b"]}]));
    assert_eq!(statuses, json!(["SUCCESS"]));
    let status = app.status(&id).await.expect("status");
    assert_eq!(status.queue_name.as_deref(), Some("interop"));
    assert_eq!(
        status.executor_id.as_deref(),
        Some(app.executor_id()),
        "this process ran it"
    );
    app.shutdown().await.expect("shutdown");
}

/// Workflows DBOS's client enqueued with priorities onto a queue with priorities enabled
/// start lowest priority first (none, written as 0, first of all), one at a time.
async fn priorities_dbos_wrote_order_the_queue(db: &TestDb) {
    let key = format!("prio@{}", db.url);
    // Enqueued while no process serves the queue, so all wait when the server arrives.
    let parked = unserved(db).await;
    let spec: Vec<Value> = [
        (1, Some(5)),
        (2, Some(1)),
        (3, None),
        (4, Some(9)),
        (5, Some(2)),
    ]
    .into_iter()
    .map(|(seed, priority)| {
        let mut item = json!({"workflow_name": "ranked", "queue_name": "ranked",
                                  "workflow_id": format!("ranked-{seed}"),
                                  "args": [key, seed]});
        if let Some(p) = priority {
            item["priority"] = json!(p);
        }
        item
    })
    .collect();
    let ids = dbos_enqueue(db, Value::Array(spec)).await;
    assert!(ids.iter().all(Option::is_some), "{ids:?}");
    assert_eq!(
        column(db, "priority", "ranked-3").await.as_deref(),
        Some("0")
    );
    assert_eq!(
        column(db, "priority", "ranked-4").await.as_deref(),
        Some("9")
    );
    parked.shutdown().await.expect("shutdown");

    let app = serving(
        db,
        Queue::new("ranked")
            .worker_concurrency(1)
            .priority_enabled(true),
    )
    .await;
    let ids: Vec<String> = ids.into_iter().flatten().collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (results, statuses) = dbos_results(db, &ids).await;
    assert_eq!(results, json!([1, 2, 3, 4, 5]));
    assert_eq!(statuses, json!(vec!["SUCCESS"; 5]));
    let order = STARTS.lock().expect("starts")[&key].clone();
    assert_eq!(order, [3, 2, 5, 1, 4]);
    app.shutdown().await.expect("shutdown");
}

/// DBOS itself refuses a second enqueue with a deduplication id its first still holds, and
/// so does Cairn, naming DBOS's workflow; once that workflow has run, the id is free again.
async fn a_deduplication_id_dbos_wrote_is_honoured(db: &TestDb) {
    let parked = unserved(db).await;
    let item = |id: &str| {
        json!({"workflow_name": "label", "queue_name": "dedup", "workflow_id": id,
               "deduplication_id": "cart-1", "args": [id, 1, []]})
    };
    let ids = dbos_enqueue(db, json!([item("first"), item("second")])).await;
    assert_eq!(
        ids,
        [Some("first".to_owned()), None],
        "DBOS refused the second"
    );
    let refused = parked
        .enqueue_with(
            EnqueueOptions::id("third").with_deduplication_id("cart-1"),
            "dedup",
            label,
            ("third".to_owned(), 1, vec![]),
        )
        .await;
    match refused {
        Err(Error::Deduplicated { existing, .. }) => assert_eq!(existing, "first"),
        other => panic!("expected Deduplicated, got {other:?}"),
    }
    parked.shutdown().await.expect("shutdown");

    let app = serving(db, Queue::new("dedup")).await;
    let (results, _) = dbos_results(db, &["first"]).await;
    assert_eq!(results, json!([{"label": "first x1", "tags": []}]));
    assert_eq!(
        column(db, "deduplication_id", "first").await,
        None,
        "released when the workflow finished"
    );
    let ids = dbos_enqueue(db, json!([item("again")])).await;
    assert_eq!(ids, [Some("again".to_owned())]);
    let (results, _) = dbos_results(db, &["again"]).await;
    assert_eq!(results, json!([{"label": "again x1", "tags": []}]));
    app.shutdown().await.expect("shutdown");
}

/// A delay DBOS's client wrote (`DELAYED` until `delay_until_epoch_ms`) is respected: the
/// Cairn process starts the workflow no earlier.
async fn a_delay_dbos_wrote_is_respected(db: &TestDb) {
    let app = serving(db, Queue::new("later")).await;
    let ids = dbos_enqueue(
        db,
        json!([{"workflow_name": "label", "queue_name": "later", "workflow_id": "late",
                "delay_seconds": 1.0, "args": ["late", 2, ["z"]]}]),
    )
    .await;
    assert_eq!(ids, [Some("late".to_owned())]);
    let until: i64 = column(db, "delay_until_epoch_ms", "late")
        .await
        .expect("delay_until_epoch_ms written")
        .parse()
        .expect("a number");
    let (results, statuses) = dbos_results(db, &["late"]).await;
    assert_eq!(results, json!([{"label": "late x2", "tags": ["z"]}]));
    assert_eq!(statuses, json!(["SUCCESS"]));
    let started = app
        .status("late")
        .await
        .expect("status")
        .started_at_ms
        .expect("started");
    assert!(
        started >= until,
        "started at {started}, before the delay ended at {until}"
    );
    app.shutdown().await.expect("shutdown");
}

/// `dbos workflow queue list` shows the workflows Cairn enqueued on a queue no process
/// serves: their ids, name, queue, `ENQUEUED` status and inputs.
async fn dbos_cli_lists_cairn_queued_workflows(db: &TestDb) {
    let app = unserved(db).await;
    for (id, name) in [("parked-1", "ann"), ("parked-2", "bob")] {
        app.enqueue_with(
            EnqueueOptions::id(id),
            "parked",
            label,
            (name.to_owned(), 2, vec!["t".to_owned()]),
        )
        .await
        .expect("enqueue");
    }
    let listed = run_cli(&[
        "workflow",
        "queue",
        "list",
        "-s",
        &dbos_url(db),
        "-q",
        "parked",
    ])
    .await;
    let rows = listed
        .as_array()
        .unwrap_or_else(|| panic!("a JSON list: {listed:#}"));
    let mut ids: Vec<&str> = rows
        .iter()
        .map(|r| r["workflow_id"].as_str().expect("workflow_id"))
        .collect();
    ids.sort();
    assert_eq!(ids, ["parked-1", "parked-2"], "{listed:#}");
    for row in rows {
        assert_eq!(row["status"], json!("ENQUEUED"), "{row:#}");
        assert_eq!(row["name"], json!("label"), "{row:#}");
        assert_eq!(row["queue_name"], json!("parked"), "{row:#}");
    }
    let first = rows
        .iter()
        .find(|r| r["workflow_id"] == json!("parked-1"))
        .expect("parked-1");
    assert_eq!(
        first["input"]["args"],
        json!(["ann", 2, ["t"]]),
        "{first:#}"
    );
    app.shutdown().await.expect("shutdown");
}

both_backends!(
    dbos_client_enqueues_a_cairn_workflow_and_gets_its_result,
    priorities_dbos_wrote_order_the_queue,
    a_deduplication_id_dbos_wrote_is_honoured,
    a_delay_dbos_wrote_is_respected,
    dbos_cli_lists_cairn_queued_workflows,
);
