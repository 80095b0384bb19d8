//! Behaviour of the SQLite store on temporary database files.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::Connection;

use super::{Location, SqliteStore};
use crate::error::Error;
use crate::store::{
    Completion, InsertOutcome, NewWorkflow, PORTABLE_JSON, RecordOutcome, SCHEMA_VERSION,
    StepRecord, StoreOptions, SystemDatabase, status,
};

/// A fresh database file path in the temp directory, removed (with its WAL files) on drop.
pub(super) struct TempDb(pub(super) PathBuf);

impl TempDb {
    pub(super) fn new() -> Self {
        Self(
            std::env::temp_dir().join(format!("cairn-sqlite-test-{}.sqlite", uuid::Uuid::new_v4())),
        )
    }

    pub(super) fn url(&self) -> String {
        format!("sqlite:///{}", self.0.display())
    }

    pub(super) async fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.url(), &StoreOptions::default())
            .await
            .expect("open")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// A workflow row to insert, owned by `owner-<id>` when `PENDING`.
pub(super) fn workflow(id: &str, status: &'static str) -> NewWorkflow {
    NewWorkflow {
        id: id.to_owned(),
        name: "checkout".to_owned(),
        status,
        queue_name: None,
        executor_id: "local".to_owned(),
        app_version: "v1".to_owned(),
        application_name: Some("shop".to_owned()),
        inputs: r#"{"positionalArgs":[42],"namedArgs":{}}"#.to_owned(),
        creator_xid: format!("owner-{id}"),
        parent_workflow_id: None,
        timeout_ms: None,
        deadline_epoch_ms: None,
        now_ms: 1_000,
    }
}

/// A checkpoint of `workflow_id` at `function_id`, written as `owner`.
pub(super) fn step(workflow_id: &str, owner: &str, function_id: i32, output: &str) -> StepRecord {
    StepRecord {
        workflow_id: workflow_id.to_owned(),
        owner_xid: owner.to_owned(),
        function_id,
        function_name: "charge".to_owned(),
        output: Some(output.to_owned()),
        error: None,
        child_workflow_id: None,
        started_at_epoch_ms: 2_000,
        completed_at_epoch_ms: 2_005,
        application_name: Some("shop".to_owned()),
    }
}

/// A successful completion of `workflow_id` by `owner`.
pub(super) fn completion(workflow_id: &str, owner: &str) -> Completion {
    Completion {
        workflow_id: workflow_id.to_owned(),
        owner_xid: owner.to_owned(),
        status: status::SUCCESS,
        output: Some("\"done\"".to_owned()),
        error: None,
        now_ms: 3_000,
    }
}

/// The URL forms resolve to the right place; anything else is a configuration error.
#[test]
fn urls_name_a_file_or_memory() {
    let file = |p: &str| Some(Location::File(PathBuf::from(p)));
    assert_eq!(
        Location::parse("sqlite::memory:").ok(),
        Some(Location::Memory)
    );
    assert_eq!(
        Location::parse("sqlite://:memory:").ok(),
        Some(Location::Memory)
    );
    // As SQLAlchemy (and so DBOS) reads them: three slashes relative, four absolute.
    assert_eq!(
        Location::parse("sqlite:///rel/db.sqlite").ok(),
        file("rel/db.sqlite")
    );
    assert_eq!(
        Location::parse("sqlite:////abs/db.sqlite").ok(),
        file("/abs/db.sqlite")
    );
    assert_eq!(
        Location::parse("sqlite://rel/db.sqlite").ok(),
        file("rel/db.sqlite")
    );
    assert_eq!(Location::parse("sqlite:db.sqlite").ok(), file("db.sqlite"));
    for bad in [
        "sqlite:",
        "sqlite://",
        "postgres://x",
        "sqlite:///db?mode=ro",
        "db.sqlite",
    ] {
        match Location::parse(bad) {
            Err(Error::Config(message)) => assert!(message.contains(bad), "{message}"),
            other => panic!("{bad}: expected a config error, got {other:?}"),
        }
    }
}

/// An empty file gets the whole schema at version 125; re-opening changes nothing.
#[tokio::test]
async fn migration_creates_version_125_and_reopening_keeps_it() {
    let db = TempDb::new();
    db.open().await.close().await;
    let catalogue = |conn: &Connection| -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let (first, versions) = {
        let conn = Connection::open(&db.0).unwrap();
        let versions: Vec<i64> = conn
            .prepare("SELECT version FROM dbos_migrations")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|v| v.unwrap())
            .collect();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        (catalogue(&conn), versions)
    };
    assert_eq!(versions, vec![SCHEMA_VERSION]);
    assert!(
        first.len() > 30,
        "expected the full schema, got {} objects",
        first.len()
    );

    db.open().await.close().await;
    let conn = Connection::open(&db.0).unwrap();
    assert_eq!(catalogue(&conn), first);
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM dbos_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
}

/// A database at an older version is refused with what to do, and not written to.
#[tokio::test]
async fn an_older_schema_is_refused_and_left_untouched() {
    let db = TempDb::new();
    {
        let conn = Connection::open(&db.0).unwrap();
        conn.execute_batch(
            "CREATE TABLE dbos_migrations (version INTEGER NOT NULL PRIMARY KEY); INSERT INTO dbos_migrations VALUES (120);",
        )
        .unwrap();
    }
    let before = std::fs::read(&db.0).unwrap();
    match SqliteStore::open(&db.url(), &StoreOptions::default()).await {
        Err(Error::SchemaVersion {
            found: 120,
            expected: 125,
            hint,
        }) => assert!(hint.contains("dbos migrate")),
        Err(other) => panic!("expected a schema version error, got {other}"),
        Ok(_) => panic!("expected a schema version error, got a store"),
    }
    assert_eq!(
        std::fs::read(&db.0).unwrap(),
        before,
        "the refused file changed"
    );
}

/// A newer version is used with a warning.
#[tokio::test]
async fn a_newer_schema_is_used() {
    let db = TempDb::new();
    db.open().await.close().await;
    Connection::open(&db.0)
        .unwrap()
        .execute("UPDATE dbos_migrations SET version = 126", [])
        .unwrap();
    let store = db.open().await;
    assert_eq!(
        store
            .insert_workflow(&workflow("wf", status::PENDING))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    store.close().await;
}

/// A start writes the status and input rows; a second start with the same id writes nothing.
#[tokio::test]
async fn inserting_twice_is_idempotent() {
    let db = TempDb::new();
    let store = db.open().await;
    assert_eq!(
        store
            .insert_workflow(&workflow("wf", status::PENDING))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    let mut again = workflow("wf", status::ENQUEUED);
    again.name = "other".to_owned();
    assert_eq!(
        store.insert_workflow(&again).await.unwrap(),
        InsertOutcome::Existing {
            name: Some("checkout".to_owned()),
            status: Some("PENDING".to_owned())
        }
    );
    let row = store.get_workflow("wf").await.unwrap().expect("row");
    assert_eq!(row.status.as_deref(), Some("PENDING"));
    assert_eq!(row.owner_xid.as_deref(), Some("owner-wf"));
    assert_eq!(row.recovery_attempts, Some(1));
    assert_eq!(row.started_at_epoch_ms, Some(1_000));
    assert_eq!((row.created_at, row.updated_at), (1_000, 1_000));
    assert_eq!(row.serialization.as_deref(), Some(PORTABLE_JSON));
    assert_eq!(
        row.inputs.as_deref(),
        Some(r#"{"positionalArgs":[42],"namedArgs":{}}"#)
    );
    assert_eq!(row.output, None);

    store
        .insert_workflow(&workflow("queued", status::ENQUEUED))
        .await
        .unwrap();
    let queued = store.get_workflow("queued").await.unwrap().expect("row");
    assert_eq!(
        (
            queued.owner_xid,
            queued.recovery_attempts,
            queued.started_at_epoch_ms
        ),
        (None, Some(0), None)
    );
    assert_eq!(store.get_workflow("missing").await.unwrap(), None);
    store.close().await;
}

/// A checkpoint lands only for the owner of a PENDING workflow, and only once per id.
#[tokio::test]
async fn record_step_checks_the_owner_and_detects_duplicates() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("wf", status::PENDING))
        .await
        .unwrap();
    assert_eq!(
        store
            .record_step(&step("wf", "owner-wf", 2, "\"b\""))
            .await
            .unwrap(),
        RecordOutcome::Recorded
    );
    assert_eq!(
        store
            .record_step(&step("wf", "owner-wf", 1, "\"a\""))
            .await
            .unwrap(),
        RecordOutcome::Recorded
    );
    assert_eq!(
        store
            .record_step(&step("wf", "intruder", 3, "\"c\""))
            .await
            .unwrap(),
        RecordOutcome::NotOwner {
            status: Some("PENDING".to_owned())
        }
    );
    assert_eq!(
        store
            .record_step(&step("nowhere", "owner-wf", 1, "1"))
            .await
            .unwrap(),
        RecordOutcome::NotOwner { status: None }
    );
    match store
        .record_step(&step("wf", "owner-wf", 1, "\"again\""))
        .await
        .unwrap()
    {
        RecordOutcome::Duplicate(existing) => assert_eq!(existing.output.as_deref(), Some("\"a\"")),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    let checkpoints = store.list_checkpoints("wf").await.unwrap();
    assert_eq!(
        checkpoints
            .iter()
            .map(|c| c.function_id)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(checkpoints[0].serialization.as_deref(), Some(PORTABLE_JSON));
    assert_eq!(checkpoints[0].completed_at_epoch_ms, Some(2_005));
    assert_eq!(
        store.get_checkpoint("wf", 2).await.unwrap(),
        Some(checkpoints[1].clone())
    );
    assert_eq!(store.get_checkpoint("wf", 3).await.unwrap(), None);
    store.close().await;
}

/// Only the owner completes a workflow, once; afterwards nobody can checkpoint it.
#[tokio::test]
async fn complete_workflow_is_owner_guarded() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("wf", status::PENDING))
        .await
        .unwrap();
    assert!(
        !store
            .complete_workflow(&completion("wf", "intruder"))
            .await
            .unwrap()
    );
    assert!(
        store
            .complete_workflow(&completion("wf", "owner-wf"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_workflow(&completion("wf", "owner-wf"))
            .await
            .unwrap()
    );
    let row = store.get_workflow("wf").await.unwrap().expect("row");
    assert_eq!(row.status.as_deref(), Some("SUCCESS"));
    assert_eq!(
        (row.owner_xid, row.completed_at, row.updated_at),
        (None, Some(3_000), 3_000)
    );
    assert_eq!(row.output.as_deref(), Some("\"done\""));
    assert_eq!(
        store
            .record_step(&step("wf", "owner-wf", 1, "1"))
            .await
            .unwrap(),
        RecordOutcome::NotOwner {
            status: Some("SUCCESS".to_owned())
        }
    );
    store.close().await;
}

/// Recovery takes over this executor's PENDING workflows: new owner, one more attempt.
#[tokio::test]
async fn reclaim_pending_increments_attempts_and_moves_ownership() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("mine", status::PENDING))
        .await
        .unwrap();
    let mut unclaimed = workflow("unclaimed", status::PENDING);
    unclaimed.application_name = None;
    store.insert_workflow(&unclaimed).await.unwrap();
    let mut elsewhere = workflow("elsewhere", status::PENDING);
    elsewhere.executor_id = "other".to_owned();
    store.insert_workflow(&elsewhere).await.unwrap();
    let mut other_app = workflow("other-app", status::PENDING);
    other_app.application_name = Some("billing".to_owned());
    store.insert_workflow(&other_app).await.unwrap();
    store
        .insert_workflow(&workflow("done", status::PENDING))
        .await
        .unwrap();
    store
        .complete_workflow(&completion("done", "owner-done"))
        .await
        .unwrap();
    store
        .record_step(&step("mine", "owner-mine", 1, "1"))
        .await
        .unwrap();

    let reclaimed = store
        .reclaim_pending("local", "v1", Some("shop"), "recovery", 5_000)
        .await
        .unwrap();
    let mut ids: Vec<_> = reclaimed
        .iter()
        .map(|r| r.row.workflow_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["mine", "unclaimed"]);
    let mine = reclaimed
        .iter()
        .find(|r| r.row.workflow_id == "mine")
        .expect("mine");
    assert_eq!(mine.row.recovery_attempts, Some(2));
    assert_eq!(mine.row.owner_xid.as_deref(), Some("recovery"));
    assert_eq!(mine.row.updated_at, 5_000);
    assert_eq!(mine.checkpoints.len(), 1);
    assert_eq!(
        store
            .record_step(&step("mine", "owner-mine", 2, "2"))
            .await
            .unwrap(),
        RecordOutcome::NotOwner {
            status: Some("PENDING".to_owned())
        }
    );
    assert_eq!(
        store
            .record_step(&step("mine", "recovery", 2, "2"))
            .await
            .unwrap(),
        RecordOutcome::Recorded
    );

    let all = store
        .reclaim_pending("local", "v1", None, "again", 6_000)
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        3,
        "no name filter: mine, unclaimed and other-app"
    );
    assert_eq!(
        store
            .get_workflow("mine")
            .await
            .unwrap()
            .expect("row")
            .recovery_attempts,
        Some(3)
    );

    assert!(!store.dead_letter("mine", "recovery", 7_000).await.unwrap());
    assert!(store.dead_letter("mine", "again", 7_000).await.unwrap());
    let dead = store.get_workflow("mine").await.unwrap().expect("row");
    assert_eq!(
        dead.status.as_deref(),
        Some(status::MAX_RECOVERY_ATTEMPTS_EXCEEDED)
    );
    assert_eq!(
        (dead.owner_xid, dead.started_at_epoch_ms, dead.completed_at),
        (None, None, Some(7_000))
    );
    store.close().await;
}

/// A child start and the parent's checkpoint commit together, guarded by the parent's owner.
#[tokio::test]
async fn a_child_start_is_recorded_as_the_parents_step() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("parent", status::PENDING))
        .await
        .unwrap();
    let mut child = workflow("parent-1", status::PENDING);
    child.parent_workflow_id = Some("parent".to_owned());
    let mut record = step("parent", "owner-parent", 1, "");
    record.output = None;
    record.child_workflow_id = Some("parent-1".to_owned());
    assert_eq!(
        store.insert_child_workflow(&record, &child).await.unwrap(),
        (RecordOutcome::Recorded, InsertOutcome::Inserted)
    );
    let checkpoint = store
        .get_checkpoint("parent", 1)
        .await
        .unwrap()
        .expect("checkpoint");
    assert_eq!(checkpoint.child_workflow_id.as_deref(), Some("parent-1"));
    let row = store
        .get_workflow("parent-1")
        .await
        .unwrap()
        .expect("child");
    assert_eq!(row.parent_workflow_id.as_deref(), Some("parent"));

    match store.insert_child_workflow(&record, &child).await.unwrap() {
        (RecordOutcome::Duplicate(existing), InsertOutcome::Existing { .. }) => {
            assert_eq!(existing, checkpoint)
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    let mut intruder = record.clone();
    intruder.owner_xid = "intruder".to_owned();
    intruder.function_id = 2;
    let mut second = child.clone();
    second.id = "parent-2".to_owned();
    let (outcome, _) = store
        .insert_child_workflow(&intruder, &second)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RecordOutcome::NotOwner {
            status: Some("PENDING".to_owned())
        }
    );
    assert_eq!(
        store.get_workflow("parent-2").await.unwrap(),
        None,
        "a refused child start wrote the child"
    );
    store.close().await;
}

/// Registering a version twice keeps one row.
#[tokio::test]
async fn registering_an_app_version_is_idempotent() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .register_app_version("v1", Some("shop"), 1)
        .await
        .unwrap();
    store
        .register_app_version("v1", Some("shop"), 2)
        .await
        .unwrap();
    store.register_app_version("v2", None, 3).await.unwrap();
    store.register_app_version("v2", None, 4).await.unwrap();
    store.close().await;
    let conn = Connection::open(&db.0).unwrap();
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM application_versions", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(count, 2);
}

/// Concurrent checkpoints from many tasks all land (committed in groups by the writer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkpoints_all_land() {
    let db = TempDb::new();
    let store = Arc::new(db.open().await);
    for w in 0..20 {
        store
            .insert_workflow(&workflow(&format!("wf{w}"), status::PENDING))
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let id = format!("wf{}", i % 20);
                store
                    .record_step(&step(&id, &format!("owner-{id}"), i / 20, &i.to_string()))
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), RecordOutcome::Recorded);
    }
    for w in 0..20 {
        assert_eq!(
            store
                .list_checkpoints(&format!("wf{w}"))
                .await
                .unwrap()
                .len(),
            10
        );
    }
    store.close().await;
    assert!(matches!(
        store.record_step(&step("wf0", "owner-wf0", 99, "1")).await,
        Err(Error::Shutdown)
    ));
}

/// An in-memory database is one database for reads and writes alike.
#[tokio::test]
async fn an_in_memory_database_works() {
    let store = SqliteStore::open("sqlite::memory:", &StoreOptions::default())
        .await
        .unwrap();
    store
        .insert_workflow(&workflow("wf", status::PENDING))
        .await
        .unwrap();
    store
        .record_step(&step("wf", "owner-wf", 1, "1"))
        .await
        .unwrap();
    assert_eq!(store.list_checkpoints("wf").await.unwrap().len(), 1);
    assert!(store.get_workflow("wf").await.unwrap().is_some());
    store.close().await;
}

/// Throughput probe, not a pass/fail timing: 1,000 workflows checkpointing concurrently.
/// Run with `cargo test --release -p cairn --lib store::sqlite -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_probe() {
    const WORKFLOWS: usize = 1_000;
    const STEPS: i32 = 20;
    let db = TempDb::new();
    let store = Arc::new(db.open().await);
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..WORKFLOWS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let id = format!("wf{w}");
                store
                    .insert_workflow(&workflow(&id, status::PENDING))
                    .await?;
                for s in 0..STEPS {
                    store
                        .record_step(&step(&id, &format!("owner-{id}"), s, "\"x\""))
                        .await?;
                }
                store
                    .complete_workflow(&completion(&id, &format!("owner-{id}")))
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().unwrap());
    }
    let elapsed = started.elapsed();
    let steps = WORKFLOWS * STEPS as usize;
    println!(
        "{steps} steps in {elapsed:?}: {:.0} steps/s",
        steps as f64 / elapsed.as_secs_f64()
    );
    store.close().await;
}
