//! Transactional steps over sqlx pools (Postgres and SQLite): the body's writes and the
//! step's record commit in one transaction, failures roll back, conflicts are retried, a
//! committed transaction is never run again; and on the system database itself the writes
//! commit with the checkpoint. Every test runs with the system database on both backends.

#![cfg(all(feature = "sqlx-postgres", feature = "sqlx-sqlite"))]

mod common;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use cairn::StartOptions;
use cairn::datasource::{SqlxPgDatasource, SqlxSqliteDatasource, TransactionOptions};
use common::{Backend, TestDb, pg_client, postgres_server};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// An application database behind an sqlx data source of the test's backend kind.
#[derive(Clone, Debug)]
enum Orders {
    Postgres(SqlxPgDatasource, String),
    Sqlite(SqlxSqliteDatasource, PathBuf),
}

type Call = Pin<Box<dyn Future<Output = Result<i64, cairn::Error>> + Send>>;

/// The table every test writes: one row per order.
const PG_ORDERS: &str =
    "CREATE TABLE IF NOT EXISTS public.orders (id BIGSERIAL PRIMARY KEY, item TEXT NOT NULL)";
const SQLITE_ORDERS: &str =
    "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY AUTOINCREMENT, item TEXT NOT NULL)";

impl Orders {
    /// A fresh application database of `backend`'s kind, with an empty `orders` table.
    async fn fresh(backend: Backend) -> Self {
        let name = format!("cairn_app_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                Self::sqlite_at(&std::env::temp_dir().join(format!("{name}.sqlite"))).await
            }
            Backend::Postgres => {
                pg_client(&format!("{}/postgres", postgres_server()))
                    .await
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create app database");
                Self::postgres_at(format!("{}/{name}", postgres_server())).await
            }
        }
    }

    /// The test's system database itself as the application database (launch first).
    async fn system(db: &TestDb) -> Self {
        match db.backend {
            Backend::Sqlite => {
                let path = db.url.strip_prefix("sqlite:///").expect("sqlite url");
                Self::sqlite_at(Path::new(path)).await
            }
            Backend::Postgres => Self::postgres_at(db.url.clone()).await,
        }
    }

    async fn sqlite_at(file: &Path) -> Self {
        let options = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .expect("open app database");
        sqlx::raw_sql(SQLITE_ORDERS)
            .execute(&pool)
            .await
            .expect("orders table");
        Orders::Sqlite(
            SqlxSqliteDatasource::new(pool).name("orders"),
            file.to_path_buf(),
        )
    }

    async fn postgres_at(url: String) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("pool");
        sqlx::raw_sql(PG_ORDERS)
            .execute(&pool)
            .await
            .expect("orders table");
        Orders::Postgres(SqlxPgDatasource::new(pool).name("orders"), url)
    }

    /// Insert an order in a transactional step named `insert_order`, returning its id; `fail`
    /// makes the body fail after its insert (so the transaction must roll back).
    fn insert(&self, item: &str, fail: bool) -> Call {
        const INSERT: &str = "INSERT INTO orders (item) VALUES ($1) RETURNING id";
        let item = item.to_owned();
        let failure =
            || cairn::Error::Application(cairn::PortableError::new("OutOfStock", "out of stock"));
        match self {
            Orders::Postgres(ds, _) => Box::pin(ds.transaction("insert_order", move |tx| {
                let item = item.clone();
                Box::pin(async move {
                    common::count(&format!("body {item}"));
                    let id: i64 = sqlx::query_scalar(INSERT)
                        .bind(&item)
                        .fetch_one(&mut **tx)
                        .await?;
                    if fail { Err(failure()) } else { Ok(id) }
                })
            })),
            Orders::Sqlite(ds, _) => Box::pin(ds.transaction("insert_order", move |tx| {
                let item = item.clone();
                Box::pin(async move {
                    common::count(&format!("body {item}"));
                    let id: i64 = sqlx::query_scalar(INSERT)
                        .bind(&item)
                        .fetch_one(&mut **tx)
                        .await?;
                    if fail { Err(failure()) } else { Ok(id) }
                })
            })),
        }
    }

    /// Add one to the counter `key` by reading it and writing it back (a lost update unless
    /// the transaction is serializable), waiting at `gate` on the first attempts so that two
    /// calls overlap. Postgres only.
    fn increment(&self, key: &str, gate: &str) -> Call {
        let Orders::Postgres(ds, _) = self else {
            panic!("increment needs a Postgres application database");
        };
        let (key, gate) = (key.to_owned(), gate.to_owned());
        let options = TransactionOptions::default().interval(Duration::from_millis(1));
        Box::pin(ds.transaction_with("increment", options, move |tx| {
            let (key, gate) = (key.clone(), gate.clone());
            Box::pin(async move {
                let attempt = common::count(&format!("attempt {key}"));
                let n: i64 = sqlx::query_scalar("SELECT n FROM counters WHERE key = $1")
                    .bind(&key)
                    .fetch_one(&mut **tx)
                    .await?;
                if attempt <= 2 {
                    // Both first attempts read before either writes.
                    common::reached(&gate);
                    common::until_released(&gate).await;
                }
                sqlx::query("UPDATE counters SET n = $2 WHERE key = $1")
                    .bind(&key)
                    .bind(n + 1)
                    .execute(&mut **tx)
                    .await?;
                Ok(n + 1)
            })
        }))
    }

    /// Run SQL on the application database outside Cairn.
    async fn execute(&self, sql: &str) {
        match self {
            Orders::Postgres(ds, _) => sqlx::raw_sql(sql).execute(ds.pool()).await.map(drop),
            Orders::Sqlite(ds, _) => sqlx::raw_sql(sql).execute(ds.pool()).await.map(drop),
        }
        .expect("sql");
    }

    /// One integer from a query on the application database.
    async fn count(&self, sql: &str) -> i64 {
        match self {
            Orders::Postgres(ds, _) => sqlx::query_scalar(sql).fetch_one(ds.pool()).await,
            Orders::Sqlite(ds, _) => sqlx::query_scalar(sql).fetch_one(ds.pool()).await,
        }
        .expect("query")
    }

    /// How many orders of `item` there are.
    async fn orders_of(&self, item: &str) -> i64 {
        self.count(&format!(
            "SELECT count(*) FROM orders WHERE item = '{item}'"
        ))
        .await
    }

    /// Whether the completion table exists in the application database.
    async fn has_completion_table(&self) -> bool {
        let sql = match self {
            Orders::Postgres(..) => {
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'dbos' AND tablename = 'transaction_completion'"
            }
            Orders::Sqlite(..) => {
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'transaction_completion'"
            }
        };
        self.count(sql).await > 0
    }

    /// The completion table as this database names it.
    fn completion_table(&self) -> &'static str {
        match self {
            Orders::Postgres(..) => "dbos.transaction_completion",
            Orders::Sqlite(..) => "transaction_completion",
        }
    }

    /// The output recorded in the completion table for `workflow_id`'s operation `step`.
    async fn completion_output(&self, workflow_id: &str, step: i32) -> Option<String> {
        let sql = format!(
            "SELECT output FROM {} WHERE workflow_id = $1 AND step_id = $2",
            self.completion_table()
        );
        let row: Option<Option<String>> = match self {
            Orders::Postgres(ds, _) => {
                sqlx::query_scalar(&sql)
                    .bind(workflow_id)
                    .bind(step)
                    .fetch_optional(ds.pool())
                    .await
            }
            Orders::Sqlite(ds, _) => {
                sqlx::query_scalar(&sql)
                    .bind(workflow_id)
                    .bind(step)
                    .fetch_optional(ds.pool())
                    .await
            }
        }
        .expect("query");
        row.flatten()
    }

    /// Remove the application database (not the system database it may be).
    async fn drop_db(self) {
        match self {
            Orders::Sqlite(ds, file) => {
                ds.pool().close().await;
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
                }
            }
            Orders::Postgres(ds, url) => {
                ds.pool().close().await;
                let Some(name) = url
                    .rsplit('/')
                    .next()
                    .filter(|n| n.starts_with("cairn_app_"))
                else {
                    return;
                };
                let admin = pg_client(&format!("{}/postgres", postgres_server())).await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            }
        }
    }
}

#[cairn::workflow]
async fn place_order(item: String) -> Result<i64, cairn::Error> {
    let orders = cairn::state::<Orders>()?;
    orders.insert(&item, false).await
}

#[cairn::workflow]
async fn place_failing_order(item: String) -> Result<i64, cairn::Error> {
    let orders = cairn::state::<Orders>()?;
    orders.insert(&item, true).await
}

#[cairn::workflow]
async fn bump(key: String) -> Result<i64, cairn::Error> {
    let counters = cairn::state::<Orders>()?;
    counters.increment(&key, &format!("gate {key}")).await
}

fn item() -> String {
    format!("item-{}", uuid::Uuid::new_v4().simple())
}

async fn app_with(db: &TestDb, orders: &Orders) -> cairn::Cairn {
    db.builder("datasource-sqlx-test")
        .state(orders.clone())
        .launch()
        .await
        .expect("launch")
}

/// The body's row and the completion record are both there, once, and the step's output is
/// the recorded one; the checkpoint in the system database holds the same output.
async fn an_sqlx_transactional_step_writes_once_and_records_its_output_beside_its_writes(
    db: &TestDb,
) {
    for app_backend in [Backend::Sqlite, Backend::Postgres] {
        let orders = Orders::fresh(app_backend).await;
        let app = app_with(db, &orders).await;
        let item = item();
        let handle = app
            .start_with(
                StartOptions::id(format!("order-{item}")),
                place_order,
                item.clone(),
            )
            .await
            .unwrap();
        let id = handle.result().await.unwrap();
        assert_eq!(orders.orders_of(&item).await, 1);
        assert_eq!(common::counted(&format!("body {item}")), 1);
        let recorded = orders.completion_output(handle.id(), 1).await;
        assert_eq!(recorded.as_deref(), Some(id.to_string().as_str()));
        let steps = app.list_steps(handle.id()).await.unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].name, "insert_order");
        assert_eq!(
            steps[0].raw_output.as_deref(),
            Some(id.to_string().as_str())
        );
        app.shutdown().await.unwrap();
        orders.drop_db().await;
    }
}

/// A body that fails after writing leaves no row and no completion record; its error is the
/// workflow's.
async fn a_failed_sqlx_transaction_is_rolled_back_and_its_error_is_the_steps(db: &TestDb) {
    let orders = Orders::fresh(db.backend).await;
    let app = app_with(db, &orders).await;
    let item = item();
    let handle = app.start(place_failing_order, item.clone()).await.unwrap();
    let error = handle.result().await.unwrap_err();
    assert_eq!(error.to_string(), "out of stock");
    assert_eq!(
        orders.orders_of(&item).await,
        0,
        "the failed transaction's insert was rolled back"
    );
    assert_eq!(orders.completion_output(handle.id(), 1).await, None);
    app.shutdown().await.unwrap();
    orders.drop_db().await;
}

/// A transaction that committed before its workflow's checkpoint was lost (a crash between
/// the two) is not run again: the step returns the output recorded beside its writes.
async fn a_committed_sqlx_transaction_is_replayed_from_its_record_without_running(db: &TestDb) {
    let orders = Orders::fresh(db.backend).await;
    let workflow_id = format!("replay-{}", uuid::Uuid::new_v4().simple());
    let (table, created_at) = match &orders {
        Orders::Postgres(..) => (
            "CREATE SCHEMA IF NOT EXISTS dbos; CREATE TABLE dbos.transaction_completion",
            "BIGINT",
        ),
        Orders::Sqlite(..) => ("CREATE TABLE transaction_completion", "INTEGER"),
    };
    orders
        .execute(&format!(
            "{table} (workflow_id TEXT NOT NULL, step_id INTEGER NOT NULL, output TEXT, \
             error TEXT, serialization TEXT, created_at {created_at} NOT NULL DEFAULT 0, \
             PRIMARY KEY (workflow_id, step_id)); \
             INSERT INTO {} (workflow_id, step_id, output, error, serialization) \
             VALUES ('{workflow_id}', 1, '4242', NULL, 'portable_json')",
            orders.completion_table()
        ))
        .await;
    let app = app_with(db, &orders).await;
    let item = item();
    let handle = app
        .start_with(
            StartOptions::id(workflow_id.clone()),
            place_order,
            item.clone(),
        )
        .await
        .unwrap();
    assert_eq!(handle.result().await.unwrap(), 4242);
    assert_eq!(common::counted(&format!("body {item}")), 0, "no body ran");
    assert_eq!(orders.orders_of(&item).await, 0);
    let steps = app.list_steps(&workflow_id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].raw_output.as_deref(), Some("4242"));
    app.shutdown().await.unwrap();
    orders.drop_db().await;
}

/// Two serializable read-modify-write transactions on Postgres that overlap: one fails with
/// a serialization failure (an `sqlx::Error` through `?`) and runs again, so neither update
/// is lost.
async fn conflicting_sqlx_transactions_are_retried_and_no_update_is_lost(db: &TestDb) {
    let counters = Orders::fresh(Backend::Postgres).await;
    let key = format!("k{}", uuid::Uuid::new_v4().simple());
    counters
        .execute(&format!(
            "CREATE TABLE counters (key TEXT PRIMARY KEY, n BIGINT NOT NULL); \
             INSERT INTO counters VALUES ('{key}', 0)"
        ))
        .await;
    let app = app_with(db, &counters).await;
    let gate = format!("gate {key}");
    let first = app.start(bump, key.clone()).await.unwrap();
    let second = app.start(bump, key.clone()).await.unwrap();
    common::wait_reached(&gate).await;
    common::wait_reached(&gate).await;
    common::release(&gate);
    let mut outputs = vec![
        first.result().await.unwrap(),
        second.result().await.unwrap(),
    ];
    outputs.sort_unstable();
    assert_eq!(outputs, vec![1, 2]);
    let n = counters
        .count(&format!("SELECT n FROM counters WHERE key = '{key}'"))
        .await;
    assert_eq!(n, 2, "no update was lost");
    assert!(
        common::counted(&format!("attempt {key}")) >= 3,
        "the transaction that lost the conflict ran again"
    );
    app.shutdown().await.unwrap();
    counters.drop_db().await;
}

/// On the system database itself there is no completion table: the order and the step's
/// checkpoint commit in one transaction.
async fn on_the_system_database_sqlx_writes_commit_with_the_checkpoint(db: &TestDb) {
    let probe = db.launch().await;
    probe.shutdown().await.unwrap();
    let orders = Orders::system(db).await;
    let app = app_with(db, &orders).await;
    let item = item();
    let handle = app.start(place_order, item.clone()).await.unwrap();
    let id = handle.result().await.unwrap();
    assert_eq!(orders.orders_of(&item).await, 1);
    assert!(
        !orders.has_completion_table().await,
        "no completion table on the system database"
    );
    let steps = app.list_steps(handle.id()).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(
        steps[0].raw_output.as_deref(),
        Some(id.to_string().as_str())
    );
    app.shutdown().await.unwrap();
    match orders {
        Orders::Postgres(ds, _) => ds.pool().close().await,
        Orders::Sqlite(ds, _) => ds.pool().close().await,
    }
}

/// Outside a workflow an sqlx transactional step is a plain transaction: it writes, and
/// records nothing.
async fn outside_a_workflow_an_sqlx_transaction_writes_and_records_nothing(db: &TestDb) {
    let orders = Orders::fresh(db.backend).await;
    let item = item();
    let id = orders.insert(&item, false).await.unwrap();
    assert!(id > 0);
    assert_eq!(orders.orders_of(&item).await, 1);
    assert!(!orders.has_completion_table().await);
    orders.drop_db().await;
}

both_backends!(
    an_sqlx_transactional_step_writes_once_and_records_its_output_beside_its_writes,
    a_failed_sqlx_transaction_is_rolled_back_and_its_error_is_the_steps,
    a_committed_sqlx_transaction_is_replayed_from_its_record_without_running,
    conflicting_sqlx_transactions_are_retried_and_no_update_is_lost,
    on_the_system_database_sqlx_writes_commit_with_the_checkpoint,
    outside_a_workflow_an_sqlx_transaction_writes_and_records_nothing,
);
