//! What only the SQLite backend does: URL forms, the in-memory database, migrating the file,
//! watching other connections' commits, and waiting out another process's write lock. The
//! store's contract itself is tested once for both backends in `store::conformance`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::Location;
use crate::error::Error;
use crate::status::WorkflowState;
use crate::store::conformance::{owner, sqlite_connection, step, workflow};
use crate::store::{
    ChangeSink, ConsumeMessage, GetCheckpoint, GetWorkflow, InsertOutcome, InsertWorkflow,
    ListCheckpoints, PeekMessage, RecordOutcome, RecordStep, SCHEMA_VERSION, SendMessage, Store,
    StoreOptions,
};

/// A fresh database file path in the temp directory, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    /// A new, unique path (nothing is created until the store opens it).
    fn new() -> Self {
        Self(
            std::env::temp_dir().join(format!("cairn-sqlite-test-{}.sqlite", uuid::Uuid::new_v4())),
        )
    }

    /// The URL naming the file (an absolute path after `sqlite:///`).
    fn url(&self) -> String {
        format!("sqlite:///{}", self.0.display())
    }

    /// Open the store on the file.
    async fn open(&self) -> Store {
        crate::store::open(&self.url(), &StoreOptions::default())
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

/// Insert a `PENDING` fixture workflow.
async fn pending(store: &Store, id: &str) {
    assert_eq!(
        store
            .run(InsertWorkflow(workflow(id, WorkflowState::Pending)))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
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

/// An empty file gets the whole schema at version 125 in WAL mode; re-opening changes nothing.
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
    let first = {
        let conn = Connection::open(&db.0).unwrap();
        let versions: Vec<i64> = conn
            .prepare("SELECT version FROM dbos_migrations")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(versions, [SCHEMA_VERSION]);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        catalogue(&conn)
    };
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
    Connection::open(&db.0)
        .unwrap()
        .execute_batch(
            "CREATE TABLE dbos_migrations (version INTEGER NOT NULL PRIMARY KEY); \
             INSERT INTO dbos_migrations VALUES (120);",
        )
        .unwrap();
    let before = std::fs::read(&db.0).unwrap();
    match crate::store::open(&db.url(), &StoreOptions::default()).await {
        Err(Error::SchemaVersion {
            found: 120,
            expected: 125,
            hint,
        }) => {
            assert!(hint.contains("dbos migrate"), "{hint}")
        }
        Err(other) => panic!("expected a schema version error, got {other}"),
        Ok(_) => panic!("expected a schema version error, got a store"),
    }
    assert_eq!(
        std::fs::read(&db.0).unwrap(),
        before,
        "the refused file changed"
    );
}

/// A newer version is used (with a warning) and left at its version.
#[tokio::test]
async fn a_newer_schema_is_used() {
    let db = TempDb::new();
    db.open().await.close().await;
    Connection::open(&db.0)
        .unwrap()
        .execute("UPDATE dbos_migrations SET version = 126", [])
        .unwrap();
    let store = db.open().await;
    pending(&store, "wf").await;
    store.close().await;
    let version: i64 = Connection::open(&db.0)
        .unwrap()
        .query_row("SELECT version FROM dbos_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 126);
}

/// An in-memory database is one database for reads and writes alike.
#[tokio::test]
async fn an_in_memory_database_works() {
    let store = crate::store::open("sqlite::memory:", &StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(store.backend(), "sqlite");
    pending(&store, "wf").await;
    assert_eq!(
        store
            .run(RecordStep(step("wf", &owner("wf"), 1)))
            .await
            .unwrap(),
        RecordOutcome::Recorded
    );
    let checkpoints = store
        .run(ListCheckpoints {
            workflow_id: "wf".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(checkpoints.len(), 1);
    let row = store
        .run(GetWorkflow {
            workflow_id: "wf".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(row.and_then(|r| r.status), Some(WorkflowState::Pending));
    store.close().await;
}

/// The watcher fires when another connection commits (not when the store itself does), and
/// stops at close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_changes_sees_other_connections_and_stops_at_close() {
    let db = TempDb::new();
    let store = db.open().await;
    pending(&store, "wf").await;
    let fired = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fired);
    let sink: ChangeSink = Arc::new(move |channel: &str, payload: &str| {
        assert_eq!((channel, payload), ("*", ""));
        counter.fetch_add(1, Ordering::SeqCst);
    });
    store
        .watch_changes(sink, Duration::from_millis(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(fired.load(Ordering::SeqCst), 0, "nothing committed yet");
    // The store's own commits are announced by the engine itself, not by the watcher (which
    // would wake every waiter at every commit).
    pending(&store, "own").await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        fired.load(Ordering::SeqCst),
        0,
        "the store's own commit was announced as another connection's"
    );

    let other = Connection::open(&db.0).unwrap();
    other
        .execute(
            "INSERT INTO notifications (destination_uuid, topic, message, message_uuid) \
             VALUES ('wf', 't', '1', 'ext')",
            [],
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while fired.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        fired.load(Ordering::SeqCst) >= 1,
        "the watcher missed another connection's commit"
    );
    let peek = PeekMessage {
        workflow_id: "wf".to_owned(),
        topic: "t".to_owned(),
    };
    assert!(store.run(peek).await.unwrap().is_some());

    let started = Instant::now();
    store.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close hung on the watcher"
    );
    let before = fired.load(Ordering::SeqCst);
    other
        .execute(
            "INSERT INTO notifications (destination_uuid, topic, message, message_uuid) \
             VALUES ('wf', 't', '2', 'ext2')",
            [],
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        fired.load(Ordering::SeqCst),
        before,
        "the watcher outlived close"
    );
    assert!(matches!(
        store
            .watch_changes(Arc::new(|_: &str, _: &str| {}), Duration::from_millis(10))
            .await,
        Err(Error::Shutdown)
    ));
}

/// An in-memory database has nothing to watch, and says so by doing nothing.
#[tokio::test]
async fn watch_changes_on_memory_is_a_no_op() {
    let store = crate::store::open("sqlite::memory:", &StoreOptions::default())
        .await
        .unwrap();
    store
        .watch_changes(Arc::new(|_: &str, _: &str| {}), Duration::from_millis(5))
        .await
        .unwrap();
    pending(&store, "wf").await;
    let message = crate::store::NewMessage {
        destination_id: "wf".to_owned(),
        topic: "t".to_owned(),
        message: "1".to_owned(),
        message_uuid: "u".to_owned(),
    };
    store
        .run(SendMessage {
            message,
            sender: None,
        })
        .await
        .unwrap();
    let record = crate::store::StepRecord {
        function_name: "DBOS.recv".to_owned(),
        ..step("wf", &owner("wf"), 1)
    };
    let (_, consumed) = store
        .run(ConsumeMessage {
            record,
            topic: "t".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(consumed.map(|s| s.text).as_deref(), Some("1"));
    store.close().await;
}

/// Another connection holding the write lock (`BEGIN IMMEDIATE`) for `hold`; returns once the
/// lock is taken, with the thread that releases it.
fn hold_write_lock(path: &Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let conn = sqlite_connection(path);
    let (locked, taken) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        conn.execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        let _ = locked.send(());
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT")
            .expect("release the write lock");
    });
    taken.recv().expect("the lock holder started");
    holder
}

/// A write lock another connection holds for longer than the busy timeout is waited out by
/// `Store::run`: the write lands once the lock is released, and no error surfaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_out_another_connections_lock() {
    let db = TempDb::new();
    let store = db.open().await;
    pending(&store, "w").await;
    let holder = hold_write_lock(&db.0, Duration::from_millis(2_500));
    let started = Instant::now();
    let outcome = store.run(RecordStep(step("w", &owner("w"), 1))).await;
    let waited = started.elapsed();
    holder.join().expect("the lock holder");
    assert_eq!(outcome.unwrap(), RecordOutcome::Recorded);
    assert!(
        waited >= Duration::from_millis(1_500),
        "the write did not wait for the lock: {waited:?}"
    );
    store.close().await;
}

/// During another connection's long write lock one attempt of a write fails as transient
/// (`SQLITE_BUSY` after the busy timeout) and writes nothing, while reads still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_attempt_during_a_lock_is_transient() {
    let db = TempDb::new();
    let store = db.open().await;
    pending(&store, "w").await;
    let holder = hold_write_lock(&db.0, Duration::from_millis(3_000));
    let attempt = store
        .run_once(Arc::new(RecordStep(step("w", &owner("w"), 1))))
        .await;
    let read = store
        .run_once(Arc::new(GetWorkflow {
            workflow_id: "w".to_owned(),
        }))
        .await;
    holder.join().expect("the lock holder");
    match attempt {
        Err(e) => assert!(e.is_transient(), "expected a transient error, got {e}"),
        Ok(outcome) => panic!("the write landed through another connection's lock: {outcome:?}"),
    }
    assert!(read.expect("a read during the lock").is_some());
    let checkpoint = GetCheckpoint {
        workflow_id: "w".to_owned(),
        function_id: 1,
    };
    assert_eq!(store.run(checkpoint).await.unwrap(), None);
    assert_eq!(
        store
            .run(RecordStep(step("w", &owner("w"), 1)))
            .await
            .unwrap(),
        RecordOutcome::Recorded
    );
    store.close().await;
}

/// A request of the writer's tests: inserts its number, then succeeds or (`fails`) reports a
/// failure, leaving its row in the transaction for the writer to undo.
struct InsertThen {
    value: i64,
    fails: bool,
    /// Whether the group committed, sent by `finish`.
    told: std::sync::mpsc::Sender<(i64, bool)>,
}

impl super::writer::WriteJob for InsertThen {
    fn run(&mut self, conn: &Connection) -> super::writer::Ran {
        conn.execute("INSERT INTO t (v) VALUES (?1)", [self.value])
            .expect("insert");
        if self.fails {
            super::writer::Ran::Failed { transient: false }
        } else {
            super::writer::Ran::Ok
        }
    }

    fn finish(self: Box<Self>, group: std::result::Result<(), &super::writer::GroupFailure>) {
        let _ = self.told.send((self.value, group.is_ok()));
    }
}

/// A group runs its requests without a savepoint each; when one fails after writing, the
/// group is redone with savepoints: the failed request leaves nothing, every other request of
/// the group is committed, and each is answered.
#[test]
fn a_request_failing_in_a_group_is_undone_alone() {
    let db = TempDb::new();
    let conn = Connection::open(&db.0).unwrap();
    conn.execute("CREATE TABLE t (v INTEGER)", []).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (told, answers) = std::sync::mpsc::channel();
    // Queued before the writer starts, so they are one group.
    for value in 0..100 {
        let job = InsertThen {
            value,
            fails: value == 37 || value == 80,
            told: told.clone(),
        };
        tx.send(super::writer::Message::Job(Box::new(job)))
            .unwrap_or_else(|_| panic!("queue"));
    }
    tx.send(super::writer::Message::Close)
        .unwrap_or_else(|_| panic!("close"));
    super::writer::spawn(conn, rx).unwrap().join().unwrap();
    drop(told);
    let answered: Vec<(i64, bool)> = answers.iter().collect();
    assert_eq!(answered.len(), 100, "every request is answered");
    assert!(answered.iter().all(|&(_, committed)| committed));
    let check = Connection::open(&db.0).unwrap();
    let rows: Vec<i64> = check
        .prepare("SELECT v FROM t ORDER BY v")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let expected: Vec<i64> = (0..100).filter(|v| *v != 37 && *v != 80).collect();
    assert_eq!(
        rows, expected,
        "the failed requests' rows are gone, the others' kept once"
    );
}
