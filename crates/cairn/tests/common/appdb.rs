//! An application database beside a test's system database, for transactional steps: a
//! fresh SQLite file or a fresh Postgres database, or the system database itself.

use cairn::datasource::{PgTransaction, PostgresDatasource, SqliteDatasource, TransactionOptions};

use super::{Backend, TestDb, pg_client, postgres_server};

/// A data source of the test's backend kind.
#[derive(Clone, Debug)]
pub enum AppDb {
    Postgres(PostgresDatasource, String),
    Sqlite(SqliteDatasource),
}

/// The table every test writes: one row per order.
const PG_ORDERS: &str =
    "CREATE TABLE IF NOT EXISTS public.orders (id BIGSERIAL PRIMARY KEY, item TEXT NOT NULL)";
const SQLITE_ORDERS: &str =
    "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY AUTOINCREMENT, item TEXT NOT NULL)";

impl AppDb {
    /// A fresh application database of `backend`'s kind, with an empty `orders` table.
    pub async fn fresh(backend: Backend) -> Self {
        let name = format!("cairn_app_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let file = std::env::temp_dir().join(format!("{name}.sqlite"));
                Self::sqlite_at(&file)
            }
            Backend::Postgres => {
                let admin = pg_client(&format!("{}/postgres", postgres_server())).await;
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create app database");
                Self::postgres_at(format!("{}/{name}", postgres_server())).await
            }
        }
    }

    /// The test's system database itself as the application database (launch first).
    pub async fn system(db: &TestDb) -> Self {
        match db.backend {
            Backend::Sqlite => {
                let path = db.url.strip_prefix("sqlite:///").expect("sqlite url");
                Self::sqlite_at(std::path::Path::new(path))
            }
            Backend::Postgres => Self::postgres_at(db.url.clone()).await,
        }
    }

    /// Where the application database is, for another process: a Postgres URL or a
    /// SQLite file path.
    pub fn location(&self) -> String {
        match self {
            AppDb::Postgres(_, url) => url.clone(),
            AppDb::Sqlite(ds) => ds.file().display().to_string(),
        }
    }

    /// The existing application database at `location` (see [`AppDb::location`]).
    pub async fn at(location: &str) -> Self {
        if location.starts_with("postgres") {
            Self::postgres_at(location.to_owned()).await
        } else {
            Self::sqlite_at(std::path::Path::new(location))
        }
    }

    fn sqlite_at(file: &std::path::Path) -> Self {
        let ds = SqliteDatasource::open(file).expect("open app database");
        let conn = super::sqlite::Connection::open(file).expect("open");
        conn.execute_batch(SQLITE_ORDERS).expect("orders table");
        AppDb::Sqlite(ds)
    }

    async fn postgres_at(url: String) -> Self {
        pg_client(&url)
            .await
            .batch_execute(PG_ORDERS)
            .await
            .expect("orders table");
        let config = deadpool_postgres::Config {
            url: Some(url.clone()),
            ..Default::default()
        };
        let pool = config
            .create_pool(
                Some(deadpool_postgres::Runtime::Tokio1),
                tokio_postgres::NoTls,
            )
            .expect("pool");
        AppDb::Postgres(PostgresDatasource::new(pool).name("orders"), url)
    }

    /// Insert an order in a transactional step named `insert_order`, returning its id; `fail`
    /// makes the body fail after its insert (so the transaction must roll back).
    pub fn insert(
        &self,
        item: &str,
        fail: bool,
    ) -> impl Future<Output = Result<i64, cairn::Error>> + Send + use<> {
        self.insert_with(item, fail, || {})
    }

    /// [`AppDb::insert`], calling `before` in the body before it writes.
    pub fn insert_with(
        &self,
        item: &str,
        fail: bool,
        before: fn(),
    ) -> impl Future<Output = Result<i64, cairn::Error>> + Send + use<> {
        let item = item.to_owned();
        let failure =
            || cairn::Error::Application(cairn::PortableError::new("OutOfStock", "out of stock"));
        let call: std::pin::Pin<Box<dyn Future<Output = Result<i64, cairn::Error>> + Send>> =
            match self {
                AppDb::Postgres(ds, _) => Box::pin(ds.transaction("insert_order", move |tx| {
                    let item = item.clone();
                    async move {
                        super::count(&format!("body {item}"));
                        before();
                        let id = pg_insert(&tx, &item).await?;
                        if fail { Err(failure()) } else { Ok(id) }
                    }
                })),
                AppDb::Sqlite(ds) => Box::pin(ds.transaction("insert_order", move |tx| {
                    super::count(&format!("body {item}"));
                    before();
                    tx.execute("INSERT INTO orders (item) VALUES (?1)", [&item])?;
                    if fail {
                        Err(failure())
                    } else {
                        Ok(tx.last_insert_rowid())
                    }
                })),
            };
        call
    }

    /// Add one to the counter `key` by reading it and writing it back (a lost update unless
    /// the transaction is serializable), waiting at `gate` on the first attempt so that two
    /// calls overlap. Postgres only.
    pub fn increment(
        &self,
        key: &str,
        gate: &str,
    ) -> impl Future<Output = Result<i64, cairn::Error>> + Send + use<> {
        let AppDb::Postgres(ds, _) = self else {
            panic!("increment needs a Postgres application database");
        };
        let (key, gate) = (key.to_owned(), gate.to_owned());
        let options = TransactionOptions::default().interval(std::time::Duration::from_millis(1));
        ds.transaction_with("increment", options, move |tx| {
            let (key, gate) = (key.clone(), gate.clone());
            async move {
                let attempt = super::count(&format!("attempt {key}"));
                let row = tx
                    .query_one("SELECT n FROM counters WHERE key = $1", &[&key])
                    .await?;
                let n: i64 = row.get(0);
                if attempt <= 2 {
                    // Both first attempts read before either writes.
                    super::reached(&gate);
                    super::until_released(&gate).await;
                }
                tx.execute(
                    "UPDATE counters SET n = $2 WHERE key = $1",
                    &[&key, &(n + 1)],
                )
                .await?;
                Ok(n + 1)
            }
        })
    }

    /// Run SQL on the application database outside Cairn.
    pub async fn execute(&self, sql: &str) {
        match self {
            AppDb::Postgres(_, url) => pg_client(url).await.batch_execute(sql).await.expect("sql"),
            AppDb::Sqlite(ds) => {
                let conn = super::sqlite::Connection::open(ds.file()).expect("open");
                conn.execute_batch(sql).expect("sql");
            }
        }
    }

    /// One integer from a query on the application database.
    pub async fn count(&self, sql: &str) -> i64 {
        match self {
            AppDb::Postgres(_, url) => pg_client(url)
                .await
                .query_one(sql, &[])
                .await
                .expect("query")
                .get(0),
            AppDb::Sqlite(ds) => {
                let conn = super::sqlite::Connection::open(ds.file()).expect("open");
                conn.query_row(sql, [], |row| row.get(0)).expect("query")
            }
        }
    }

    /// Whether the completion table exists in the application database.
    pub async fn has_completion_table(&self) -> bool {
        let sql = match self {
            AppDb::Postgres(..) => {
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'dbos' AND tablename = 'transaction_completion'"
            }
            AppDb::Sqlite(_) => {
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'transaction_completion'"
            }
        };
        self.count(sql).await > 0
    }

    /// The output recorded in the completion table for `workflow_id`'s operation `step`.
    pub async fn completion_output(&self, workflow_id: &str, step: i32) -> Option<String> {
        match self {
            AppDb::Postgres(_, url) => pg_client(url)
                .await
                .query_opt(
                    "SELECT output FROM dbos.transaction_completion WHERE workflow_id = $1 AND step_id = $2",
                    &[&workflow_id, &step],
                )
                .await
                .expect("query")
                .and_then(|row| row.get(0)),
            AppDb::Sqlite(ds) => {
                let conn = super::sqlite::Connection::open(ds.file()).expect("open");
                conn.query_row(
                    "SELECT output FROM transaction_completion WHERE workflow_id = ?1 AND step_id = ?2",
                    super::sqlite::params![workflow_id, step],
                    |row| row.get(0),
                )
                .ok()
            }
        }
    }

    /// Remove the application database (not the system database it may be).
    pub async fn drop_db(self) {
        match self {
            AppDb::Sqlite(ds) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", ds.file().display()));
                }
            }
            AppDb::Postgres(ds, url) => {
                drop(ds);
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

async fn pg_insert(tx: &PgTransaction, item: &str) -> Result<i64, cairn::Error> {
    let row = tx
        .query_one(
            "INSERT INTO orders (item) VALUES ($1) RETURNING id",
            &[&item],
        )
        .await?;
    Ok(row.get(0))
}
