//! What only the Postgres backend does, against the test server (`$CAIRN_TEST_POSTGRES`,
//! default `postgres://postgres@127.0.0.1:5432`): creating and migrating the database, DBOS's
//! TLS modes, LISTEN announcements, and what the server's refusals and killed
//! connections become. The store's contract itself is tested once for both backends in
//! `store::conformance`. Each test works in a fresh `cairn_store_<uuid>` database, dropped at
//! the end whatever happens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::PostgresStore;
use crate::error::{DatabaseErrorKind, Error};
use crate::status::WorkflowState;
use crate::store::conformance::{guard, message, owner, pg, step, workflow};
use crate::store::{
    ChangeSink, GetCheckpoint, InsertOutcome, InsertWorkflow, RecordOutcome, RecordStep,
    SCHEMA_VERSION, SendMessage, SetEvent, Store, StoreOptions, WriteStream,
};

/// Run `body` with the name of a fresh database (not created yet: the store's connect creates
/// it), and drop that database afterwards, also when the body panics.
async fn with_database<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let name = format!("cairn_store_{}", uuid::Uuid::new_v4().simple());
    let outcome = guard(body(name.clone())).await;
    pg::drop_database(&name).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Open the store on database `name` with default options.
async fn open(name: &str) -> Store {
    crate::store::open(&pg::url(name), &StoreOptions::default())
        .await
        .expect("open the store")
}

/// Open the store on database `name` and insert a `PENDING` fixture workflow `w`.
async fn open_with_workflow(name: &str) -> Store {
    let store = open(name).await;
    assert_eq!(
        store
            .run(InsertWorkflow(workflow("w", WorkflowState::Pending)))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    store
}

/// One `i64` from a query.
async fn count(sql: &tokio_postgres::Client, query: &str) -> i64 {
    sql.query_one(query, &[]).await.expect(query).get(0)
}

/// Wait (up to ten seconds) until a session of database `name` other than `sql`'s waits for
/// a lock, and return its pid.
async fn blocked_session(sql: &tokio_postgres::Client) -> i32 {
    for _ in 0..200 {
        let rows = sql
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(row) = rows.first() {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no session of the store ever waited for the lock");
}

/// An empty database is created, migrated to 125, and a second open keeps it as is.
#[tokio::test]
async fn an_empty_database_is_created_and_migrated_to_125() {
    with_database(|name| async move {
        open(&name).await.close().await;
        open(&name).await.close().await;
        let sql = pg::client(&name).await;
        let versions: Vec<i64> = sql
            .query("SELECT version FROM dbos.dbos_migrations", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, [SCHEMA_VERSION]);
        assert_eq!(
            count(
                &sql,
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'dbos'"
            )
            .await,
            13
        );
    })
    .await;
}

/// A schema at an older version is refused with a hint, and nothing in it changes.
#[tokio::test]
async fn an_older_schema_is_refused_and_left_untouched() {
    with_database(|name| async move {
        open(&name).await.close().await;
        let sql = pg::client(&name).await;
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
        match crate::store::open(&pg::url(&name), &options).await {
            Err(Error::SchemaVersion {
                found: 100,
                expected: 125,
                hint,
            }) => {
                assert!(hint.contains("dbos migrate"), "{hint}")
            }
            Err(e) => panic!("expected a schema version error, got {e}"),
            Ok(_) => panic!("expected a schema version error, got a store"),
        }
        assert_eq!(
            count(
                &sql,
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'old'"
            )
            .await,
            1
        );
        assert_eq!(
            count(&sql, "SELECT version FROM old.dbos_migrations").await,
            100
        );
    })
    .await;
}

/// A schema newer than Cairn's is used (with a warning) and left at its version.
#[tokio::test]
async fn a_newer_schema_is_used_as_is() {
    with_database(|name| async move {
        open(&name).await.close().await;
        let sql = pg::client(&name).await;
        sql.batch_execute("UPDATE dbos.dbos_migrations SET version = 126")
            .await
            .unwrap();
        open_with_workflow(&name).await.close().await;
        assert_eq!(
            count(&sql, "SELECT version FROM dbos.dbos_migrations").await,
            126
        );
    })
    .await;
}

/// An unknown sslmode is a configuration error that names it and hides the password.
#[tokio::test]
async fn an_unknown_sslmode_is_a_config_error() {
    let result = crate::store::open(
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
/// server's self-signed one, permanently (retrying would not make it valid).
#[tokio::test]
async fn sslmode_require_encrypts_and_verify_full_checks_the_certificate() {
    with_database(|name| async move {
        open(&name).await.close().await;
        let with_mode =
            |mode: &str| pg::url(&name).replace("sslmode=disable", &format!("sslmode={mode}"));
        let store = PostgresStore::connect(&with_mode("require"), &StoreOptions::default())
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
        match PostgresStore::connect(&with_mode("verify-full"), &StoreOptions::default()).await {
            Err(e @ Error::Database { .. }) => assert!(!e.is_transient(), "{e}"),
            Err(e) => panic!("expected a database error, got {e}"),
            Ok(_) => panic!("verify-full accepted a self-signed certificate"),
        }
    })
    .await;
}

/// Connections killed under the pool are replaced: the next operation lands (one attempt
/// either lands or fails as transient, naming what it was doing), and none panics.
#[tokio::test]
async fn a_killed_connection_is_an_error_not_a_panic() {
    with_database(|name| async move {
        let store = open_with_workflow(&name).await;
        let sql = pg::client(&name).await;
        let kill_all = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                        WHERE datname = current_database() AND pid <> pg_backend_pid()";
        sql.execute(kill_all, &[]).await.unwrap();
        match store
            .run_once(Arc::new(RecordStep(step("w", &owner("w"), 3))))
            .await
        {
            Ok(outcome) => assert_eq!(outcome, RecordOutcome::Recorded),
            Err(e @ Error::Database { .. }) => {
                assert!(e.is_transient(), "{e}");
                assert!(
                    e.to_string().contains("recording step 3 of workflow w"),
                    "{e}"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        sql.execute(kill_all, &[]).await.unwrap();
        assert!(matches!(
            store
                .run(RecordStep(step("w", &owner("w"), 3)))
                .await
                .unwrap(),
            RecordOutcome::Recorded | RecordOutcome::Duplicate(_)
        ));
        assert_eq!(
            store
                .run(RecordStep(step("w", &owner("w"), 4)))
                .await
                .unwrap(),
            RecordOutcome::Recorded
        );
        store.close().await;
    })
    .await;
}

/// A connection killed (`pg_terminate_backend`) while its operation waits in the server: one
/// attempt fails as transient, and `Store::run` retries until the operation lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_during_an_operation_is_retried() {
    with_database(|name| async move {
        let store = Arc::new(open_with_workflow(&name).await);
        let sql = pg::client(&name).await;
        let locker = pg::client(&name).await;
        let lock = "BEGIN; LOCK TABLE dbos.operation_outputs IN ACCESS EXCLUSIVE MODE";

        // One attempt, killed while it waits for the lock: transient.
        locker.batch_execute(lock).await.unwrap();
        let once = Arc::clone(&store);
        let attempt = tokio::spawn(async move {
            once.run_once(Arc::new(RecordStep(step("w", &owner("w"), 1))))
                .await
        });
        let pid = blocked_session(&sql).await;
        sql.execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        match attempt.await.expect("the attempt's task") {
            Err(e) => assert!(e.is_transient(), "expected a transient error, got {e}"),
            Ok(outcome) => panic!("the attempt landed through the lock: {outcome:?}"),
        }
        locker.batch_execute("ROLLBACK").await.unwrap();
        let checkpoint = GetCheckpoint {
            workflow_id: "w".to_owned(),
            function_id: 1,
        };
        assert_eq!(store.run(checkpoint).await.unwrap(), None);

        // The same through `Store::run`: retried after the kill, and lands.
        locker.batch_execute(lock).await.unwrap();
        let retried = Arc::clone(&store);
        let run =
            tokio::spawn(async move { retried.run(RecordStep(step("w", &owner("w"), 1))).await });
        let pid = blocked_session(&sql).await;
        sql.execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        locker.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(
            run.await.expect("the run's task").unwrap(),
            RecordOutcome::Recorded
        );
        store.close().await;
    })
    .await;
}

/// A statement the server refuses is a permanent error whose message carries the server's
/// SQLSTATE and words, and what Cairn was doing.
#[tokio::test]
async fn a_refused_statement_is_permanent_and_says_why() {
    with_database(|name| async move {
        let store = open_with_workflow(&name).await;
        pg::client(&name)
            .await
            .batch_execute(
                "ALTER TABLE dbos.operation_outputs ADD CONSTRAINT no_forbidden \
                 CHECK (function_name <> 'forbidden')",
            )
            .await
            .unwrap();
        let forbidden = crate::store::StepRecord {
            function_name: "forbidden".to_owned(),
            ..step("w", &owner("w"), 1)
        };
        match store.run(RecordStep(forbidden)).await {
            Err(
                e @ Error::Database {
                    kind: DatabaseErrorKind::Permanent,
                    ..
                },
            ) => {
                let text = e.to_string();
                assert!(text.contains("recording step 1 of workflow w"), "{text}");
                assert!(text.contains("23514"), "no SQLSTATE: {text}");
                assert!(
                    text.contains("violates check constraint"),
                    "no server words: {text}"
                );
                assert!(text.contains("no_forbidden"), "{text}");
            }
            other => panic!("expected a permanent database error, got {other:?}"),
        }

        // An id the primary key's index cannot hold (program limit exceeded, 54000).
        let long_id: String = (0..100)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        match store
            .run(InsertWorkflow(workflow(&long_id, WorkflowState::Pending)))
            .await
        {
            Err(
                e @ Error::Database {
                    kind: DatabaseErrorKind::Permanent,
                    ..
                },
            ) => {
                let text = e.to_string();
                assert!(text.contains("54000"), "no SQLSTATE: {text}");
                assert!(text.contains("index row"), "no server words: {text}");
            }
            other => panic!("expected a permanent database error, got {other:?}"),
        }
        store.close().await;
    })
    .await;
}

/// What a test sink has received.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A sink recording every announcement, and its record.
fn recorder() -> (ChangeSink, Received) {
    let received: Received = Arc::default();
    let sink_received = Arc::clone(&received);
    let sink: ChangeSink = Arc::new(move |channel: &str, payload: &str| {
        sink_received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((channel.to_owned(), payload.to_owned()));
    });
    (sink, received)
}

/// Wait (up to ten seconds) until the sink has received `(channel, payload)`.
async fn received(received: &Received, channel: &str, payload: &str) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let hit = received
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|(c, p)| c == channel && p == payload);
            if hit {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "no ({channel}, {payload}) announcement");
}

/// The number of `LISTEN` sessions on the test database.
async fn listeners(sql: &tokio_postgres::Client) -> i64 {
    count(
        sql,
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .await
}

/// Sends, events and stream writes are announced as `workflow::key`; after the connection is
/// killed the listener reconnects and says `*`; at close it stops.
#[tokio::test]
async fn changes_are_announced_until_close() {
    with_database(|name| async move {
        let store = open_with_workflow(&name).await;
        let (sink, got) = recorder();
        store
            .watch_changes(sink, Duration::from_secs(1))
            .await
            .unwrap();
        let internal = |function_id, name: &str| crate::store::StepRecord {
            function_name: name.to_owned(),
            output: None,
            ..step("w", &owner("w"), function_id)
        };

        let send = |topic: &str, uuid: &str| SendMessage {
            message: message("w", topic, "1", uuid),
            sender: None,
        };
        store.run(send("topic", "m1")).await.unwrap();
        received(&got, "dbos_notifications_channel", "w::topic").await;
        let set = SetEvent {
            record: internal(1, "DBOS.setEvent"),
            key: "k".to_owned(),
            value: "1".to_owned(),
        };
        store.run(set.clone()).await.unwrap();
        received(&got, "dbos_workflow_events_channel", "w::k").await;
        let write = WriteStream {
            record: internal(2, "DBOS.writeStream"),
            key: "s".to_owned(),
            value: "1".to_owned(),
        };
        store.run(write).await.unwrap();
        received(&got, "dbos_streams_channel", "w::s").await;
        // A replay announces nothing new.
        let before = got.lock().unwrap_or_else(|p| p.into_inner()).len();
        store.run(set).await.unwrap();

        let sql = pg::client(&name).await;
        assert_eq!(listeners(&sql).await, 1);
        sql.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap();
        received(&got, "*", "").await;
        let events = got.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(
            events[before],
            ("*".to_owned(), String::new()),
            "{events:?}"
        );
        store.run(send("again", "m2")).await.unwrap();
        received(&got, "dbos_notifications_channel", "w::again").await;

        tokio::time::timeout(Duration::from_secs(10), store.close())
            .await
            .expect("close hangs");
        let mut left = listeners(&sql).await;
        for _ in 0..50 {
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            left = listeners(&sql).await;
        }
        assert_eq!(left, 0, "the listener connection outlived close");
        let after = got.lock().unwrap_or_else(|p| p.into_inner()).len();
        sql.execute(
            "SELECT pg_notify('dbos_notifications_channel', 'w::late')",
            &[],
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(got.lock().unwrap_or_else(|p| p.into_inner()).len(), after);
        assert!(
            store
                .watch_changes(recorder().0, Duration::from_secs(1))
                .await
                .is_err()
        );
    })
    .await;
}
