//! Behaviour of the Postgres store against the local server (127.0.0.1:5432, user postgres).
//! Each test creates a fresh `cairn_t_<uuid>` database through the connect path and drops it.

use std::sync::Arc;

use tokio_postgres::NoTls;

use super::*;
use crate::store::{PORTABLE_JSON, SCHEMA_VERSION};

/// The test server, without a database.
const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A fresh database for one test.
pub(super) struct TestDb {
    name: String,
}

impl TestDb {
    /// A new, unique database name (nothing is created until [`TestDb::open`]).
    pub(super) fn new() -> Self {
        Self {
            name: format!("cairn_t_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The URL Cairn connects with.
    pub(super) fn url(&self) -> String {
        format!("{SERVER}/{}?sslmode=disable", self.name)
    }

    /// Connect (creating and migrating the database) with default options.
    pub(super) async fn open(&self) -> PostgresStore {
        PostgresStore::connect(&self.url(), &StoreOptions::default())
            .await
            .expect("connect")
    }

    /// A plain client on the test database, for inspecting and tampering.
    pub(super) async fn sql(&self) -> tokio_postgres::Client {
        raw_client(&self.name).await
    }

    /// Drop the database, closing any connection left on it.
    pub(super) async fn drop(self) {
        let admin = raw_client("postgres").await;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop database");
    }
}

/// A plain driver connection to a database of the test server.
pub(super) async fn raw_client(dbname: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 user=postgres dbname={dbname}"),
        NoTls,
    )
    .await
    .expect("raw connect");
    tokio::spawn(connection);
    client
}

/// A workflow of app `shop`, executor `local`, version `v1`, created by `owner-of-<id>`.
pub(super) fn workflow(id: &str, status: &'static str) -> NewWorkflow {
    NewWorkflow {
        id: id.to_owned(),
        name: "checkout".to_owned(),
        status,
        queue_name: (status == status::ENQUEUED).then(|| "orders".to_owned()),
        executor_id: "local".to_owned(),
        app_version: "v1".to_owned(),
        application_name: Some("shop".to_owned()),
        inputs: r#"{"positionalArgs":[42],"namedArgs":{}}"#.to_owned(),
        creator_xid: format!("owner-of-{id}"),
        parent_workflow_id: None,
        timeout_ms: None,
        deadline_epoch_ms: None,
        now_ms: 1_700_000_000_000,
    }
}

/// A successful step `step<n>` written by `owner`.
pub(super) fn step(workflow_id: &str, owner: &str, function_id: i32) -> StepRecord {
    StepRecord {
        workflow_id: workflow_id.to_owned(),
        owner_xid: owner.to_owned(),
        function_id,
        function_name: format!("step{function_id}"),
        output: Some(format!("\"out{function_id}\"")),
        error: None,
        child_workflow_id: None,
        started_at_epoch_ms: 1_700_000_000_100,
        completed_at_epoch_ms: 1_700_000_000_200,
        application_name: Some("shop".to_owned()),
    }
}

/// A successful completion written by `owner`.
fn completion(workflow_id: &str, owner: &str) -> Completion {
    Completion {
        workflow_id: workflow_id.to_owned(),
        owner_xid: owner.to_owned(),
        status: status::SUCCESS,
        output: Some("\"done\"".to_owned()),
        error: None,
        now_ms: 1_700_000_001_000,
    }
}

/// An empty database is created, migrated to 125, and a second connect keeps it as is.
#[tokio::test]
async fn an_empty_database_is_created_and_migrated_to_125() {
    let db = TestDb::new();
    db.open().await.close().await;
    db.open().await.close().await;
    let sql = db.sql().await;
    let versions: Vec<i64> = sql
        .query("SELECT version FROM dbos.dbos_migrations", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![SCHEMA_VERSION]);
    let tables: i64 = sql
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'dbos'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 13);
    drop(sql);
    db.drop().await;
}

/// The catalogue Cairn creates equals the one DBOS 3.4 created in `dbosref` (skipped if absent).
#[tokio::test]
async fn the_catalogue_equals_the_one_dbos_creates() {
    let Ok((reference, connection)) =
        tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=dbosref", NoTls).await
    else {
        eprintln!("no dbosref database: skipping the catalogue comparison");
        return;
    };
    tokio::spawn(connection);
    let db = TestDb::new();
    db.open().await.close().await;
    let ours = catalogue(&db.sql().await).await;
    let theirs = catalogue(&reference).await;
    assert!(ours.len() > 100, "catalogue too small: {}", ours.len());
    assert_eq!(ours, theirs);
    db.drop().await;
}

/// Columns, constraints, indexes, functions and triggers of schema `dbos`, one line each.
async fn catalogue(client: &tokio_postgres::Client) -> Vec<String> {
    const QUERY: &str = "
        SELECT 'column ' || c.relname || ' '
            || row_number() OVER (PARTITION BY c.relname ORDER BY a.attnum) || ' ' || a.attname || ' '
            || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' '
            || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'dbos'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL
        SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'dbos'::regnamespace
        UNION ALL
        SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'dbos'
        UNION ALL
        SELECT 'function ' || pg_get_functiondef(oid) FROM pg_proc WHERE pronamespace = 'dbos'::regnamespace
        UNION ALL
        SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = 'dbos'::regnamespace AND NOT t.tgisinternal
        UNION ALL
        SELECT 'version ' || version FROM dbos.dbos_migrations
        ORDER BY 1";
    client
        .query(QUERY, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A schema at an older version is refused with a hint, and nothing in it changes.
#[tokio::test]
async fn an_older_schema_is_refused_and_left_untouched() {
    let db = TestDb::new();
    db.open().await.close().await;
    let sql = db.sql().await;
    sql.batch_execute(
        "CREATE SCHEMA old; CREATE TABLE old.dbos_migrations (version bigint PRIMARY KEY);
         INSERT INTO old.dbos_migrations VALUES (100);",
    )
    .await
    .unwrap();
    let options = StoreOptions {
        schema: "old".to_owned(),
        ..StoreOptions::default()
    };
    match PostgresStore::connect(&db.url(), &options).await {
        Err(Error::SchemaVersion {
            found: 100,
            expected: 125,
            hint,
        }) => assert!(hint.contains("dbos migrate")),
        Err(e) => panic!("expected a schema version error, got {e}"),
        Ok(_) => panic!("expected a schema version error, got a store"),
    }
    let tables: i64 = sql
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'old'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
    let version: i64 = sql
        .query_one("SELECT version FROM old.dbos_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 100);
    drop(sql);
    db.drop().await;
}

/// A schema newer than Cairn's is used (with a warning) and left at its version.
#[tokio::test]
async fn a_newer_schema_is_used_as_is() {
    let db = TestDb::new();
    db.open().await.close().await;
    let sql = db.sql().await;
    sql.batch_execute("UPDATE dbos.dbos_migrations SET version = 126")
        .await
        .unwrap();
    let store = db.open().await;
    assert_eq!(
        store
            .insert_workflow(&workflow("w", status::PENDING))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    store.close().await;
    let version: i64 = sql
        .query_one("SELECT version FROM dbos.dbos_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 126);
    drop(sql);
    db.drop().await;
}

/// An insert writes DBOS's row shape; a second insert of the id changes nothing.
#[tokio::test]
async fn inserting_an_existing_id_leaves_the_row_untouched() {
    let db = TestDb::new();
    let store = db.open().await;
    let wf = workflow("w1", status::PENDING);
    assert_eq!(
        store.insert_workflow(&wf).await.unwrap(),
        InsertOutcome::Inserted
    );
    let again = NewWorkflow {
        name: "other".to_owned(),
        status: status::ENQUEUED,
        ..wf.clone()
    };
    assert_eq!(
        store.insert_workflow(&again).await.unwrap(),
        InsertOutcome::Existing {
            name: Some("checkout".to_owned()),
            status: Some("PENDING".to_owned())
        }
    );
    let row = store.get_workflow("w1").await.unwrap().expect("row");
    assert_eq!(row.status.as_deref(), Some("PENDING"));
    assert_eq!(row.recovery_attempts, Some(1));
    assert_eq!(row.owner_xid.as_deref(), Some("owner-of-w1"));
    assert_eq!(row.started_at_epoch_ms, Some(wf.now_ms));
    assert_eq!((row.created_at, row.updated_at), (wf.now_ms, wf.now_ms));
    assert_eq!(row.serialization.as_deref(), Some(PORTABLE_JSON));
    assert_eq!(row.inputs.as_deref(), Some(wf.inputs.as_str()));
    assert_eq!(row.application_name.as_deref(), Some("shop"));
    assert_eq!((row.output, row.error), (None, None));

    assert_eq!(
        store
            .insert_workflow(&workflow("q1", status::ENQUEUED))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    let queued = store.get_workflow("q1").await.unwrap().expect("row");
    assert_eq!(queued.recovery_attempts, Some(0));
    assert_eq!((queued.owner_xid, queued.started_at_epoch_ms), (None, None));
    assert_eq!(queued.queue_name.as_deref(), Some("orders"));
    let sql = db.sql().await;
    let row = sql
        .query_one(
            "SELECT s.creator_xid, s.priority, i.retention_timestamp FROM dbos.workflow_status s
             JOIN dbos.workflow_input i USING (workflow_uuid) WHERE workflow_uuid = 'q1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "owner-of-q1");
    assert_eq!(row.get::<_, i32>(1), 0);
    assert_eq!(row.get::<_, i64>(2), wf.now_ms);
    assert!(store.get_workflow("missing").await.unwrap().is_none());
    store.close().await;
    drop(sql);
    db.drop().await;
}

/// Twenty concurrent inserts of one id: exactly one inserts, the others see its row.
#[tokio::test]
async fn twenty_concurrent_inserts_of_one_id_insert_once() {
    let db = TestDb::new();
    let store = Arc::new(db.open().await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_workflow(&workflow("same", status::PENDING))
                    .await
            })
        })
        .collect();
    let mut inserted = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            InsertOutcome::Inserted => inserted += 1,
            InsertOutcome::Existing { name, status } => {
                assert_eq!(
                    (name.as_deref(), status.as_deref()),
                    (Some("checkout"), Some("PENDING"))
                );
            }
        }
    }
    assert_eq!(inserted, 1);
    store.close().await;
    db.drop().await;
}

/// Only the owner of a PENDING workflow records; a recorded id comes back as a duplicate.
#[tokio::test]
async fn a_step_is_recorded_only_by_its_owner_and_only_once() {
    let db = TestDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("w", status::PENDING))
        .await
        .unwrap();
    let owner = "owner-of-w";
    assert_eq!(
        store.record_step(&step("w", owner, 1)).await.unwrap(),
        RecordOutcome::Recorded
    );
    let mut failed = step("w", owner, 2);
    (failed.output, failed.error) = (None, Some(r#"{"name":"E","message":"m"}"#.to_owned()));
    assert_eq!(
        store.record_step(&failed).await.unwrap(),
        RecordOutcome::Recorded
    );

    let recorded = Checkpoint {
        function_id: 1,
        function_name: "step1".to_owned(),
        output: Some("\"out1\"".to_owned()),
        error: None,
        child_workflow_id: None,
        serialization: Some(PORTABLE_JSON.to_owned()),
        started_at_epoch_ms: Some(1_700_000_000_100),
        completed_at_epoch_ms: Some(1_700_000_000_200),
    };
    let mut retry = step("w", owner, 1);
    retry.output = Some("\"different\"".to_owned());
    assert_eq!(
        store.record_step(&retry).await.unwrap(),
        RecordOutcome::Duplicate(recorded.clone())
    );
    assert_eq!(
        store.get_checkpoint("w", 1).await.unwrap(),
        Some(recorded.clone())
    );
    assert_eq!(store.get_checkpoint("w", 9).await.unwrap(), None);
    let all = store.list_checkpoints("w").await.unwrap();
    assert_eq!(
        all.iter().map(|c| c.function_id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(all[0], recorded);
    assert_eq!(
        all[1].error.as_deref(),
        Some(r#"{"name":"E","message":"m"}"#)
    );

    assert_eq!(
        store.record_step(&step("w", "intruder", 3)).await.unwrap(),
        RecordOutcome::NotOwner {
            status: Some("PENDING".to_owned())
        }
    );
    assert_eq!(
        store.record_step(&step("nope", owner, 1)).await.unwrap(),
        RecordOutcome::NotOwner { status: None }
    );
    assert!(
        store
            .complete_workflow(&completion("w", owner))
            .await
            .unwrap()
    );
    assert_eq!(
        store.record_step(&step("w", owner, 3)).await.unwrap(),
        RecordOutcome::NotOwner {
            status: Some("SUCCESS".to_owned())
        }
    );
    let sql = db.sql().await;
    let row = sql
        .query_one(
            "SELECT application_name, retention_timestamp FROM dbos.operation_outputs
             WHERE workflow_uuid = 'w' AND function_id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("shop"));
    assert_eq!(row.get::<_, i64>(1), 1_700_000_000_200);
    store.close().await;
    drop(sql);
    db.drop().await;
}

/// Completion lands only for the current owner of a PENDING workflow, and only once.
#[tokio::test]
async fn only_the_owner_completes_a_workflow() {
    let db = TestDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("w", status::PENDING))
        .await
        .unwrap();
    assert!(
        !store
            .complete_workflow(&completion("w", "intruder"))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_workflow("w")
            .await
            .unwrap()
            .unwrap()
            .status
            .as_deref(),
        Some("PENDING")
    );
    assert!(
        store
            .complete_workflow(&completion("w", "owner-of-w"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_workflow(&completion("w", "owner-of-w"))
            .await
            .unwrap()
    );
    let row = store.get_workflow("w").await.unwrap().unwrap();
    assert_eq!(row.status.as_deref(), Some("SUCCESS"));
    assert_eq!(row.owner_xid, None);
    assert_eq!(row.completed_at, Some(1_700_000_001_000));
    assert_eq!(row.updated_at, 1_700_000_001_000);
    assert_eq!(row.output.as_deref(), Some("\"done\""));
    assert!(
        !store
            .complete_workflow(&completion("missing", "x"))
            .await
            .unwrap()
    );
    store.close().await;
    db.drop().await;
}

/// Reclaiming takes this executor's PENDING rows of this version and app (or unclaimed),
/// gives them a new owner and one more attempt, and returns their checkpoints.
#[tokio::test]
async fn reclaiming_pending_workflows_bumps_attempts_and_loads_checkpoints() {
    let db = TestDb::new();
    let store = db.open().await;
    let mut other_executor = workflow("other-executor", status::PENDING);
    other_executor.executor_id = "elsewhere".to_owned();
    let mut other_app = workflow("other-app", status::PENDING);
    other_app.application_name = Some("bank".to_owned());
    let mut unclaimed = workflow("unclaimed", status::PENDING);
    unclaimed.application_name = None;
    for wf in [
        workflow("a", status::PENDING),
        workflow("b", status::PENDING),
        other_executor,
        other_app,
        unclaimed,
    ] {
        store.insert_workflow(&wf).await.unwrap();
    }
    store
        .insert_workflow(&workflow("queued", status::ENQUEUED))
        .await
        .unwrap();
    for id in [1, 2] {
        store
            .record_step(&step("a", "owner-of-a", id))
            .await
            .unwrap();
    }
    let reclaimed = store
        .reclaim_pending("local", "v1", Some("shop"), "new-owner", 1_800_000_000_000)
        .await
        .unwrap();
    let mut ids: Vec<&str> = reclaimed
        .iter()
        .map(|r| r.row.workflow_id.as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a", "b", "unclaimed"]);
    for r in &reclaimed {
        assert_eq!(r.row.recovery_attempts, Some(2));
        assert_eq!(r.row.owner_xid.as_deref(), Some("new-owner"));
        assert_eq!(r.row.updated_at, 1_800_000_000_000);
        assert!(r.row.inputs.is_some());
        let expected: &[i32] = if r.row.workflow_id == "a" {
            &[1, 2]
        } else {
            &[]
        };
        assert_eq!(
            r.checkpoints
                .iter()
                .map(|c| c.function_id)
                .collect::<Vec<_>>(),
            expected
        );
    }
    assert!(matches!(
        store
            .record_step(&step("a", "owner-of-a", 3))
            .await
            .unwrap(),
        RecordOutcome::NotOwner { .. }
    ));
    assert_eq!(
        store.record_step(&step("a", "new-owner", 3)).await.unwrap(),
        RecordOutcome::Recorded
    );

    let all = store
        .reclaim_pending("local", "v1", None, "third", 1_800_000_000_001)
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(
        store
            .reclaim_pending("local", "v2", None, "x", 0)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
    db.drop().await;
}

/// Dead-lettering is owner-guarded and takes the workflow out of PENDING and its queue.
#[tokio::test]
async fn a_dead_lettered_workflow_leaves_the_pending_set() {
    let db = TestDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("w", status::PENDING))
        .await
        .unwrap();
    assert!(!store.dead_letter("w", "intruder", 5).await.unwrap());
    assert!(store.dead_letter("w", "owner-of-w", 5).await.unwrap());
    let row = store.get_workflow("w").await.unwrap().unwrap();
    assert_eq!(
        row.status.as_deref(),
        Some(status::MAX_RECOVERY_ATTEMPTS_EXCEEDED)
    );
    assert_eq!(
        (row.owner_xid, row.started_at_epoch_ms, row.queue_name),
        (None, None, None)
    );
    assert_eq!((row.updated_at, row.completed_at), (5, Some(5)));
    assert!(
        store
            .reclaim_pending("local", "v1", None, "x", 6)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
    db.drop().await;
}

/// A child's rows and the parent's checkpoint commit together, only under the parent's owner.
#[tokio::test]
async fn a_child_start_commits_with_the_parents_checkpoint() {
    let db = TestDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("p", status::PENDING))
        .await
        .unwrap();
    let mut parent_step = step("p", "owner-of-p", 1);
    (parent_step.function_name, parent_step.output) = ("child".to_owned(), None);
    parent_step.child_workflow_id = Some("p-1".to_owned());
    let mut child = workflow("p-1", status::PENDING);
    child.parent_workflow_id = Some("p".to_owned());
    assert_eq!(
        store
            .insert_child_workflow(&parent_step, &child)
            .await
            .unwrap(),
        (RecordOutcome::Recorded, InsertOutcome::Inserted)
    );
    let row = store.get_workflow("p-1").await.unwrap().unwrap();
    assert_eq!(row.parent_workflow_id.as_deref(), Some("p"));
    assert_eq!(row.inputs.as_deref(), Some(child.inputs.as_str()));

    let (recorded, existing) = store
        .insert_child_workflow(&parent_step, &child)
        .await
        .unwrap();
    match recorded {
        RecordOutcome::Duplicate(cp) => assert_eq!(cp.child_workflow_id.as_deref(), Some("p-1")),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert_eq!(
        existing,
        InsertOutcome::Existing {
            name: Some("checkout".to_owned()),
            status: Some("PENDING".to_owned())
        }
    );

    let mut intruder = parent_step.clone();
    (intruder.owner_xid, intruder.function_id) = ("intruder".to_owned(), 2);
    let other_child = workflow("p-2", status::PENDING);
    let (recorded, _) = store
        .insert_child_workflow(&intruder, &other_child)
        .await
        .unwrap();
    assert_eq!(
        recorded,
        RecordOutcome::NotOwner {
            status: Some("PENDING".to_owned())
        }
    );
    assert!(store.get_workflow("p-2").await.unwrap().is_none());

    // A new checkpoint naming an existing workflow records the step and reports the row.
    let mut reuse = parent_step.clone();
    reuse.function_id = 3;
    let (recorded, existing) = store
        .insert_child_workflow(&reuse, &workflow("p", status::PENDING))
        .await
        .unwrap();
    assert_eq!(recorded, RecordOutcome::Recorded);
    assert_eq!(
        existing,
        InsertOutcome::Existing {
            name: Some("checkout".to_owned()),
            status: Some("PENDING".to_owned())
        }
    );
    store.close().await;
    db.drop().await;
}

/// Registering a version twice leaves one row.
#[tokio::test]
async fn registering_an_app_version_is_idempotent() {
    let db = TestDb::new();
    let store = db.open().await;
    store
        .register_app_version("v1", Some("shop"), 10)
        .await
        .unwrap();
    store
        .register_app_version("v1", Some("shop"), 11)
        .await
        .unwrap();
    store.register_app_version("v2", None, 12).await.unwrap();
    let sql = db.sql().await;
    let rows = sql
        .query("SELECT version_name, version_timestamp, application_name FROM dbos.application_versions ORDER BY 1", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, i64>(1), 10);
    assert_eq!(rows[1].get::<_, Option<String>>(2), None);
    store.close().await;
    drop(sql);
    db.drop().await;
}

/// An unknown sslmode is a configuration error that names it and hides the password.
#[tokio::test]
async fn an_unknown_sslmode_is_a_config_error() {
    let result = PostgresStore::connect(
        "postgres://u:secret@127.0.0.1/x?sslmode=bogus",
        &StoreOptions::default(),
    )
    .await;
    match result {
        Err(Error::Config(message)) => {
            assert!(message.contains("bogus"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("expected a config error, got a store"),
    }
}

/// `require` encrypts without checking the certificate; `verify-full` refuses the local
/// server's self-signed one.
#[tokio::test]
async fn sslmode_require_encrypts_and_verify_full_checks_the_certificate() {
    let db = TestDb::new();
    db.open().await.close().await;
    let url = format!("{SERVER}/{}?sslmode=require", db.name);
    let store = PostgresStore::connect(&url, &StoreOptions::default())
        .await
        .expect("connect with require");
    let client = store.pool.get().await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl);
    drop(client);
    store.close().await;
    let url = format!("{SERVER}/{}?sslmode=verify-full", db.name);
    assert!(matches!(
        PostgresStore::connect(&url, &StoreOptions::default()).await,
        Err(Error::Database { .. })
    ));
    db.drop().await;
}

/// A connection killed under the pool gives a database error naming the operation (or is
/// replaced transparently); the next operation works.
#[tokio::test]
async fn a_killed_connection_is_an_error_not_a_panic() {
    let db = TestDb::new();
    let store = db.open().await;
    store
        .insert_workflow(&workflow("w", status::PENDING))
        .await
        .unwrap();
    let sql = db.sql().await;
    sql.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        &[],
    )
    .await
    .unwrap();
    match store.record_step(&step("w", "owner-of-w", 3)).await {
        Ok(outcome) => assert_eq!(outcome, RecordOutcome::Recorded),
        Err(Error::Database { context, .. }) => {
            assert_eq!(context, "recording step 3 of workflow w")
        }
        Err(e) => panic!("unexpected error {e}"),
    }
    assert!(matches!(
        store
            .record_step(&step("w", "owner-of-w", 3))
            .await
            .unwrap(),
        RecordOutcome::Recorded | RecordOutcome::Duplicate(_)
    ));
    store.close().await;
    drop(sql);
    db.drop().await;
}
