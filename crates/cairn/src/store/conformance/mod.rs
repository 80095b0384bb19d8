//! The store's conformance suite: the contract of [`super::ops`], written once and run against
//! every backend compiled in.
//!
//! Each test is an async body over a [`TestStore`] (a fresh database and the [`Store`] opened on
//! it); [`conformance!`] turns `async fn name(db) { … }` into the tests `name::sqlite` and
//! `name::postgres`, each behind its cargo feature, as sqlx's test kit does for its drivers.
//! Operations go through [`Store::run`] exactly as the engine runs them; raw SQL
//! ([`TestStore::execute`], [`TestStore::rows`]) is only for setting up states no operation
//! produces and for inspecting columns no operation reads back. It is written in the dialect
//! both databases accept (no placeholders, no `::` casts; booleans read through `CASE`).
//!
//! Backend-specific behaviour (URL parsing, migrations, TLS, LISTEN, locks held by another
//! process) stays in each backend's own test module, which shares this module's fixtures.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::{
    Checkpoint, Completion, NewMessage, NewWorkflow, Op, StepRecord, Store, StoreOptions, Stored,
    WorkflowRow,
};
use crate::error::Result;
use crate::status::WorkflowState;

/// Turn each `async fn name(db) { … }` into a module `name` holding the body and one
/// `#[tokio::test]` per compiled-in backend (`name::sqlite`, `name::postgres`). The doc
/// comment written above the function documents the module: it states the invariant.
macro_rules! conformance {
    ($(
        $(#[$meta:meta])*
        async fn $name:ident($db:ident) $body:block
    )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            /// The test body, run once per backend.
            async fn body($db: &$crate::store::conformance::TestStore) $body

            /// The body against a fresh SQLite file.
            #[cfg(feature = "sqlite")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::store::conformance::TestStore::open(
                    $crate::store::conformance::Backend::Sqlite,
                )
                .await;
                let outcome = $crate::store::conformance::guard(body(&db)).await;
                db.finish(outcome).await;
            }

            /// The body against a fresh Postgres database.
            #[cfg(feature = "postgres")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = $crate::store::conformance::TestStore::open(
                    $crate::store::conformance::Backend::Postgres,
                )
                .await;
                let outcome = $crate::store::conformance::guard(body(&db)).await;
                db.finish(outcome).await;
            }
        }
    )*};
}

mod bulk;
mod comm;
mod control;
mod list;
mod liveness;
mod manage;
mod queues;
mod retry_safety;
mod schedules;
mod takeover;
mod workflows;

/// How long one test body may run before it counts as hung (an operation that keeps failing
/// transiently is retried forever by `Store::run`; this turns that into a failure).
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The time every fixture is stamped with (epoch milliseconds, November 2023).
pub(crate) const T0: i64 = 1_700_000_000_000;

/// The inputs of every fixture workflow.
pub(crate) const INPUTS: &str = r#"{"positionalArgs":[42],"namedArgs":{}}"#;

/// A backend the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A temporary SQLite file.
    #[cfg(feature = "sqlite")]
    Sqlite,
    /// A fresh database on `$CAIRN_TEST_POSTGRES`.
    #[cfg(feature = "postgres")]
    Postgres,
}

/// Raw access to the test database, beside the store.
enum Raw {
    /// The SQLite file; a connection is opened per statement.
    #[cfg(feature = "sqlite")]
    Sqlite { path: std::path::PathBuf },
    /// A Postgres database and a plain client on it (`search_path` set to the store's schema).
    #[cfg(feature = "postgres")]
    Postgres {
        name: String,
        client: tokio_postgres::Client,
    },
}

/// A fresh database for one test, the [`Store`] opened on it, and raw SQL access to it.
pub(crate) struct TestStore {
    /// The store under test (shared, so concurrent tests can spawn tasks on it).
    pub store: Arc<Store>,
    /// Raw access, for setup and inspection.
    raw: Raw,
}

/// Run a test body, catching its panic and bounding its time, so that the database is
/// cleaned up whatever happens (see [`TestStore::finish`]).
pub(crate) async fn guard(body: impl Future<Output = ()>) -> std::thread::Result<()> {
    match tokio::time::timeout(TEST_TIMEOUT, AssertUnwindSafe(body).catch_unwind()).await {
        Ok(outcome) => outcome,
        Err(_) => {
            // Printed here: a payload re-raised with `resume_unwind` skips the panic hook.
            let message = format!("the test did not finish within {TEST_TIMEOUT:?}");
            eprintln!("{message}");
            Err(Box::new(message))
        }
    }
}

impl TestStore {
    /// A fresh, migrated database on `backend`, with the store opened on it.
    pub(crate) async fn open(backend: Backend) -> Self {
        match backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let path = std::env::temp_dir()
                    .join(format!("cairn-store-{}.sqlite", uuid::Uuid::new_v4()));
                // An absolute path after `sqlite:///` gives SQLAlchemy's four-slash form.
                let url = format!("sqlite:///{}", path.display());
                let store = super::open(&url, &StoreOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("opening {url}: {e}"));
                let store = Arc::new(store);
                Self {
                    store,
                    raw: Raw::Sqlite { path },
                }
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let name = format!("cairn_store_{}", uuid::Uuid::new_v4().simple());
                pg::admin()
                    .await
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create the test database");
                let url = pg::url(&name);
                let store = match super::open(&url, &StoreOptions::default()).await {
                    Ok(store) => Arc::new(store),
                    Err(e) => {
                        pg::drop_database(&name).await;
                        panic!("opening {url}: {e}");
                    }
                };
                let client = pg::client(&name).await;
                client
                    .batch_execute("SET search_path TO dbos")
                    .await
                    .expect("set search_path");
                Self {
                    store,
                    raw: Raw::Postgres { name, client },
                }
            }
        }
    }

    /// Close the store, remove the database, then re-raise the body's panic, if any.
    pub(crate) async fn finish(self, outcome: std::thread::Result<()>) {
        // Bounded: a close that hangs must not hide the body's own failure.
        if tokio::time::timeout(Duration::from_secs(30), self.store.close())
            .await
            .is_err()
        {
            eprintln!("closing the store took more than 30 s");
        }
        match self.raw {
            #[cfg(feature = "sqlite")]
            Raw::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                // Executor lock files beside it (`<file>.executor-<id>-<hash>.lock`).
                let prefix = format!("{}.executor-", path.display());
                let beside = path.parent().and_then(|dir| std::fs::read_dir(dir).ok());
                for entry in beside.into_iter().flatten().flatten() {
                    if entry.path().display().to_string().starts_with(&prefix) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
            #[cfg(feature = "postgres")]
            Raw::Postgres { name, client } => {
                drop(client);
                pg::drop_database(&name).await;
            }
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Run an operation through [`Store::run`], failing the test (with what it was doing) if
    /// it returns an error.
    pub(crate) async fn run<O: Op>(&self, op: O) -> O::Output {
        let what = op.describe();
        match self.store.run(op).await {
            Ok(output) => output,
            Err(e) => panic!("{what}: {e}"),
        }
    }

    /// Run an operation through [`Store::run`], returning its result as is.
    pub(crate) async fn attempt<O: Op>(&self, op: O) -> Result<O::Output> {
        self.store.run(op).await
    }

    /// Insert `PENDING` workflows (see [`workflow`]) with these ids.
    pub(crate) async fn pending(&self, ids: &[&str]) {
        for id in ids {
            self.run(super::InsertWorkflow(workflow(id, WorkflowState::Pending)))
                .await;
        }
    }

    /// A workflow's row, which must exist.
    pub(crate) async fn row(&self, workflow_id: &str) -> WorkflowRow {
        self.run(super::GetWorkflow {
            workflow_id: workflow_id.to_owned(),
        })
        .await
        .unwrap_or_else(|| panic!("workflow {workflow_id} has no row"))
    }

    /// A workflow's checkpoint at `function_id`, if any.
    pub(crate) async fn checkpoint(
        &self,
        workflow_id: &str,
        function_id: i32,
    ) -> Option<Checkpoint> {
        self.run(super::GetCheckpoint {
            workflow_id: workflow_id.to_owned(),
            function_id,
        })
        .await
    }

    /// Run SQL statements (`;`-separated) on the test database, outside the store.
    pub(crate) async fn execute(&self, sql: &str) {
        match &self.raw {
            #[cfg(feature = "sqlite")]
            Raw::Sqlite { path } => sqlite_connection(path)
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            #[cfg(feature = "postgres")]
            Raw::Postgres { client, .. } => client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
        }
    }

    /// The rows a query returns, every value as text (`NULL` as `None`). Read booleans as
    /// `CASE WHEN b THEN 1 ELSE 0 END`: the two databases print them differently.
    pub(crate) async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match &self.raw {
            #[cfg(feature = "sqlite")]
            Raw::Sqlite { path } => sqlite_rows(path, sql),
            #[cfg(feature = "postgres")]
            Raw::Postgres { client, .. } => client
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
                .into_iter()
                .filter_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect(),
        }
    }

    /// The rows a query returns, each as its values joined with `|` (`NULL` for a null), which
    /// compares compactly.
    pub(crate) async fn lines(&self, sql: &str) -> Vec<String> {
        self.rows(sql)
            .await
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|v| v.unwrap_or_else(|| "NULL".to_owned()))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    /// The single integer a query returns (`SELECT COUNT(*) …`).
    pub(crate) async fn count(&self, sql: &str) -> i64 {
        let rows = self.rows(sql).await;
        match rows.as_slice() {
            [row] => match row.as_slice() {
                [Some(value)] => value
                    .parse()
                    .unwrap_or_else(|e| panic!("{sql}: {value} is not an integer: {e}")),
                other => panic!("{sql}: expected one non-null value, got {other:?}"),
            },
            other => panic!("{sql}: expected one row, got {other:?}"),
        }
    }
}

/// A plain connection to the SQLite file, waiting out the store's writer.
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite_connection(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open the SQLite file");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("set a busy timeout");
    conn
}

/// The rows of a query on the SQLite file, every value as text.
#[cfg(feature = "sqlite")]
fn sqlite_rows(path: &std::path::Path, sql: &str) -> Vec<Vec<Option<String>>> {
    use rusqlite::types::ValueRef;
    let conn = sqlite_connection(path);
    let mut statement = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let width = statement.column_count();
    statement
        .query_map([], |row| {
            (0..width)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => None,
                        ValueRef::Integer(n) => Some(n.to_string()),
                        ValueRef::Real(x) => Some(x.to_string()),
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                    })
                })
                .collect()
        })
        .and_then(|rows| rows.collect())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The test Postgres server.
#[cfg(feature = "postgres")]
pub(crate) mod pg {
    use tokio_postgres::NoTls;

    /// The server URL: `$CAIRN_TEST_POSTGRES`, or the local server as user `postgres`.
    pub(crate) fn server() -> String {
        std::env::var("CAIRN_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
    }

    /// The URL of database `name` on the test server (TLS off unless the server URL says).
    pub(crate) fn url(name: &str) -> String {
        let mut url = url::Url::parse(&server()).expect("CAIRN_TEST_POSTGRES is a URL");
        url.set_path(&format!("/{name}"));
        if !url.query_pairs().any(|(key, _)| key == "sslmode") {
            url.query_pairs_mut().append_pair("sslmode", "disable");
        }
        url.to_string()
    }

    /// A plain client on database `name` of the test server.
    pub(crate) async fn client(name: &str) -> tokio_postgres::Client {
        let url = url(name);
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e:?}"));
        tokio::spawn(connection);
        client
    }

    /// A client on the server's `postgres` database, for creating and dropping databases.
    pub(crate) async fn admin() -> tokio_postgres::Client {
        client("postgres").await
    }

    /// Drop database `name`, closing every connection still on it.
    pub(crate) async fn drop_database(name: &str) {
        if let Err(e) = admin()
            .await
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
        {
            eprintln!("could not drop the test database {name}: {e:?}");
        }
    }
}

/// The ownership token fixtures use for workflow `id` (its `creator_xid`).
pub(crate) fn owner(id: &str) -> String {
    format!("owner-{id}")
}

/// A workflow `checkout` of application `shop`, executor `local`, version `v1`, created at
/// [`T0`] by [`owner`]`(id)`; an `ENQUEUED` one is on queue `orders`.
pub(crate) fn workflow(id: &str, status: WorkflowState) -> NewWorkflow {
    NewWorkflow {
        id: id.to_owned(),
        name: "checkout".to_owned(),
        queue_name: (status == WorkflowState::Enqueued).then(|| "orders".to_owned()),
        status,
        executor_id: "local".to_owned(),
        app_version: Some("v1".to_owned()),
        application_name: Some("shop".to_owned()),
        inputs: INPUTS.to_owned(),
        creator_xid: owner(id),
        parent_workflow_id: None,
        timeout_ms: None,
        deadline_epoch_ms: None,
        config_name: None,
        now_ms: T0,
        attributes: None,
    }
}

/// A successful step `step<n>` (output `"out<n>"`) of `workflow_id`, written as `owner`.
pub(crate) fn step(workflow_id: &str, owner: &str, function_id: i32) -> StepRecord {
    StepRecord {
        workflow_id: workflow_id.to_owned(),
        owner_xid: owner.to_owned(),
        function_id,
        function_name: format!("step{function_id}"),
        output: Some(format!("\"out{function_id}\"")),
        error: None,
        child_workflow_id: None,
        started_at_epoch_ms: T0 + 100,
        completed_at_epoch_ms: T0 + 200,
        application_name: Some("shop".to_owned()),
    }
}

/// An internal operation `name` (no output) at `function_id`, written by the workflow's owner.
pub(crate) fn internal(workflow_id: &str, function_id: i32, name: &str) -> StepRecord {
    StepRecord {
        function_name: name.to_owned(),
        output: None,
        ..step(workflow_id, &owner(workflow_id), function_id)
    }
}

/// The same record, written by someone who does not own the workflow.
pub(crate) fn as_intruder(record: StepRecord) -> StepRecord {
    StepRecord {
        owner_xid: "intruder".to_owned(),
        ..record
    }
}

/// A successful completion (output `"done"`) of `workflow_id` by `owner`, at `T0 + 1000`.
pub(crate) fn completion(workflow_id: &str, owner: &str) -> Completion {
    Completion {
        workflow_id: workflow_id.to_owned(),
        owner_xid: owner.to_owned(),
        status: WorkflowState::Success,
        output: Some("\"done\"".to_owned()),
        error: None,
        now_ms: T0 + 1_000,
    }
}

/// A message to `destination` on `topic` with `message_uuid` `uuid`.
pub(crate) fn message(destination: &str, topic: &str, text: &str, uuid: &str) -> NewMessage {
    NewMessage {
        destination_id: destination.to_owned(),
        topic: topic.to_owned(),
        message: text.to_owned(),
        message_uuid: uuid.to_owned(),
    }
}

/// The texts of stored values, for comparisons.
pub(crate) fn texts<K>(values: Vec<(K, Stored)>) -> Vec<(K, String)> {
    values.into_iter().map(|(k, v)| (k, v.text)).collect()
}

/// Owned strings, for comparing with operation outputs.
pub(crate) fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

/// The ids of reclaimed or claimed workflows, sorted.
pub(crate) fn ids(reclaimed: &[super::Reclaimed]) -> Vec<String> {
    let mut ids: Vec<String> = reclaimed
        .iter()
        .map(|r| r.row.workflow_id.clone())
        .collect();
    ids.sort();
    ids
}

/// The function ids of checkpoints, in their order.
pub(crate) fn function_ids(checkpoints: &[Checkpoint]) -> Vec<i32> {
    checkpoints.iter().map(|c| c.function_id).collect()
}
