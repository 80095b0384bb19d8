//! Transactional steps on an application database reached through an sqlx pool: Postgres
//! ([`SqlxPgDatasource`], feature `sqlx-postgres`) or SQLite ([`SqlxSqliteDatasource`],
//! feature `sqlx-sqlite`).
//!
//! The body is written as sqlx's own `Connection::transaction` callbacks are: a closure that
//! gets the live `&mut sqlx::Transaction` and returns a boxed future,
//! `|tx| Box::pin(async move { … })`. Cairn begins, records and commits around it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Pool, Transaction};
use tokio::sync::OnceCell;

use super::{
    COMPLETION_TABLE, Completion, Failed, Isolation, Recorded, TransactionOptions, classify,
    encode_output, transaction_error,
};
use crate::engine::runtime::{Runtime, now_ms};
use crate::engine::step::StepCall;
use crate::error::{DatabaseErrorKind, DurableError, Error};
use crate::store::StepRecord;

#[cfg(feature = "sqlx-postgres")]
pub use postgres::SqlxPgDatasource;
#[cfg(feature = "sqlx-sqlite")]
pub use sqlite::SqlxSqliteDatasource;

/// The shared state of one data source, whichever database it reaches.
struct Inner<DB: sqlx::Database> {
    name: String,
    pool: Pool<DB>,
    /// The schema of the completion table (Postgres only).
    #[cfg_attr(not(feature = "sqlx-postgres"), allow(dead_code))]
    schema: String,
    /// The completion table as statements name it (schema-qualified and quoted on Postgres).
    table: String,
    /// Which database the pool reaches, read on first use (Postgres only, to compare with
    /// the Postgres system database).
    #[cfg_attr(
        not(all(feature = "sqlx-postgres", feature = "postgres")),
        allow(dead_code)
    )]
    identity: OnceCell<String>,
    /// The completion table exists (checked, or created, on first use off the system database).
    table_ready: OnceCell<()>,
}

impl<DB: sqlx::Database> Inner<DB> {
    fn new(pool: Pool<DB>, name: &str, schema: &str, table: String) -> Self {
        Self {
            name: name.to_owned(),
            pool,
            schema: schema.to_owned(),
            table,
            identity: OnceCell::new(),
            table_ready: OnceCell::new(),
        }
    }

    /// A driver error of this data source, classified.
    fn driver(&self, e: sqlx::Error) -> Error {
        transaction_error(&self.name, kind_of(&e), e)
    }
}

/// What the two databases do differently; the rest of a transactional step is shared.
trait Backend: sqlx::Database {
    /// The statement that begins a transaction.
    fn begin(isolation: Isolation) -> &'static str;

    /// The guarded checkpoint insert, when `inner`'s pool reaches `rt`'s system database.
    fn system_checkpoint(
        inner: &Inner<Self>,
        rt: &Runtime,
    ) -> impl Future<Output = Result<Option<Arc<str>>, Error>> + Send;

    /// Create the completion table unless it exists.
    fn create_table(inner: &Inner<Self>) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// The completion record of an earlier run of a step, if its transaction committed.
    fn recorded(
        inner: &Inner<Self>,
        at: &Completion,
    ) -> impl Future<Output = Result<Option<Recorded>, sqlx::Error>> + Send;

    /// Write the completion record in `tx`.
    fn insert_completion(
        tx: &mut Transaction<'static, Self>,
        table: &str,
        at: &Completion,
        output: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Write the checkpoint in `tx` with `statement`; whether it was written (not written:
    /// the workflow is no longer this execution's).
    fn insert_checkpoint(
        tx: &mut Transaction<'static, Self>,
        statement: &str,
        checkpoint: &StepRecord,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
}

/// Whether an sqlx error can pass by itself: a serialization failure or deadlock (Postgres),
/// a busy or locked database (SQLite), a lost connection or an exhausted pool.
fn kind_of(e: &sqlx::Error) -> DatabaseErrorKind {
    match e {
        sqlx::Error::Database(db) => database_kind(db.as_ref()),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
            DatabaseErrorKind::Transient
        }
        _ => DatabaseErrorKind::Permanent,
    }
}

/// [`kind_of`] for an error the database itself returned, by its code.
fn database_kind(db: &dyn sqlx::error::DatabaseError) -> DatabaseErrorKind {
    #[cfg(feature = "sqlx-postgres")]
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        let code = pg.code();
        let transient = code.starts_with("08")
            || matches!(
                code,
                "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
            );
        return if transient {
            DatabaseErrorKind::Transient
        } else {
            DatabaseErrorKind::Permanent
        };
    }
    #[cfg(feature = "sqlx-sqlite")]
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // The extended result code; its low byte is the primary one (SQLITE_BUSY 5,
        // SQLITE_LOCKED 6).
        let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
        if matches!(code & 0xff, 5 | 6) {
            return DatabaseErrorKind::Transient;
        }
    }
    DatabaseErrorKind::Permanent
}

/// A driver error in a transactional step's body, as Cairn's error (so `?` works in a body
/// whose error type is [`Error`]): a serialization failure, a deadlock, a busy database or a
/// lost connection is transient, and the transaction is retried.
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        transaction_error("datasource", kind_of(&e), e)
    }
}

/// Begin the step call now (taking its operation id) and return its run.
fn transaction<DB, T, E, F>(
    inner: &Arc<Inner<DB>>,
    name: &'static str,
    options: TransactionOptions,
    body: F,
) -> impl Future<Output = Result<T, E>> + Send + use<DB, T, E, F>
where
    DB: Backend,
    T: Serialize + DeserializeOwned + Send,
    E: DurableError + From<Error>,
    F: for<'t> FnMut(&'t mut Transaction<'static, DB>) -> BoxFuture<'t, Result<T, E>> + Send,
{
    let mut call = StepCall::begin(name);
    let checkpoint = (!call.is_replay()).then(|| call.checkpoint()).flatten();
    let written = call.written_flag();
    let runtime = call.runtime();
    let inner = Arc::clone(inner);
    async move {
        let run = Run {
            name,
            inner: &inner,
            options,
            checkpoint,
            runtime,
            written,
        };
        call.run(None, run.execute(body)).await
    }
}

/// One transactional step call.
struct Run<'a, DB: sqlx::Database> {
    name: &'static str,
    inner: &'a Inner<DB>,
    options: TransactionOptions,
    /// The checkpoint this call writes, inside a workflow (and not replaying).
    checkpoint: Option<StepRecord>,
    /// The calling workflow's runtime, whose system database may be this very database.
    runtime: Option<Arc<Runtime>>,
    /// Set once the checkpoint was written in the transaction (system database only).
    written: Arc<AtomicBool>,
}

/// Where the step's record goes.
enum Record {
    /// Outside a workflow: nowhere.
    None,
    /// The completion table of the application database.
    Completion(Completion),
    /// The system database's checkpoint, with this guarded insert.
    Checkpoint(StepRecord, Arc<str>),
}

impl<DB: Backend> Run<'_, DB> {
    async fn execute<T, E, F>(self, mut body: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: DurableError + From<Error>,
        F: for<'t> FnMut(&'t mut Transaction<'static, DB>) -> BoxFuture<'t, Result<T, E>>,
    {
        let record = self.record().await?;
        let mut attempt = 1;
        loop {
            // Before every attempt: a run that committed (an earlier execution's, or this
            // call's own whose commit succeeded unseen) is not run again.
            if let Record::Completion(at) = &record
                && let Some(recorded) = DB::recorded(self.inner, at)
                    .await
                    .map_err(|e| self.inner.driver(e))?
            {
                return recorded.decode(at);
            }
            let failed = match self.attempt(&record, &mut body).await {
                Ok(value) => return Ok(value),
                Err(failed) => failed,
            };
            failed
                .back_off(&self.options, &self.inner.name, self.name, &mut attempt)
                .await?;
        }
    }

    /// Where this call's record goes, finding out on first use whether the pool reaches the
    /// system database (and otherwise creating the completion table when missing).
    async fn record(&self) -> Result<Record, Error> {
        let Some(checkpoint) = &self.checkpoint else {
            return Ok(Record::None);
        };
        if let Some(rt) = &self.runtime
            && let Some(statement) = DB::system_checkpoint(self.inner, rt).await?
        {
            return Ok(Record::Checkpoint(checkpoint.clone(), statement));
        }
        self.inner
            .table_ready
            .get_or_try_init(|| async {
                DB::create_table(self.inner)
                    .await
                    .map_err(|e| self.inner.driver(e))
            })
            .await?;
        Ok(Record::Completion(Completion {
            workflow_id: checkpoint.workflow_id.clone(),
            function_id: checkpoint.function_id,
        }))
    }

    /// One run of the transaction: begin, the body, the record, commit.
    async fn attempt<T, E, F>(&self, record: &Record, body: &mut F) -> Result<T, Failed<E>>
    where
        T: Serialize,
        E: DurableError + From<Error>,
        F: for<'t> FnMut(&'t mut Transaction<'static, DB>) -> BoxFuture<'t, Result<T, E>>,
    {
        let fail = |e: Error| classify(E::from(e), |_: &sqlx::Error| false);
        let mut tx = self
            .inner
            .pool
            .begin_with(DB::begin(self.options.isolation))
            .await
            .map_err(|e| fail(self.inner.driver(e)))?;
        let value = match body(&mut tx).await {
            Ok(value) => value,
            Err(error) => {
                // A failed rollback leaves the connection to sqlx, which tests it before
                // pooling it again.
                let _ = tx.rollback().await;
                return Err(classify(error, |e: &sqlx::Error| {
                    kind_of(e) == DatabaseErrorKind::Transient
                }));
            }
        };
        // Encoded before the record's await: the future holds no `&T` (so `T` need not be
        // `Sync`).
        let output = match record {
            Record::None => Ok(None),
            Record::Completion(_) | Record::Checkpoint(..) => {
                encode_output(&value, self.name).map(Some)
            }
        };
        let written = match output {
            Ok(output) => self.write_record(&mut tx, record, output).await,
            Err(unencodable) => Err(unencodable),
        };
        if let Err(error) = written {
            let _ = tx.rollback().await;
            return Err(fail(error));
        }
        tx.commit().await.map_err(|e| fail(self.inner.driver(e)))?;
        if matches!(record, Record::Checkpoint(..)) {
            self.written.store(true, Ordering::Release);
        }
        Ok(value)
    }

    /// Write the step's record in the transaction.
    async fn write_record(
        &self,
        tx: &mut Transaction<'static, DB>,
        record: &Record,
        output: Option<String>,
    ) -> Result<(), Error> {
        match (record, output) {
            (Record::Completion(at), Some(output)) => {
                DB::insert_completion(tx, &self.inner.table, at, &output)
                    .await
                    .map_err(|e| self.inner.driver(e))
            }
            (Record::Checkpoint(checkpoint, statement), output) => {
                let mut checkpoint = checkpoint.clone();
                checkpoint.output = output;
                checkpoint.completed_at_epoch_ms = now_ms();
                let written = DB::insert_checkpoint(tx, statement, &checkpoint)
                    .await
                    .map_err(|e| self.inner.driver(e))?;
                if written {
                    Ok(())
                } else {
                    // Not this execution's to write any more (cancelled, taken over): the
                    // writes must not commit either.
                    Err(Error::OwnershipLost(checkpoint.workflow_id))
                }
            }
            (Record::None, _) | (Record::Completion(_), None) => Ok(()),
        }
    }
}

#[cfg(feature = "sqlx-postgres")]
mod postgres {
    use sqlx::{PgPool, Postgres};

    use super::*;
    use crate::datasource::DEFAULT_SCHEMA;

    /// A Postgres application database, reached through an sqlx [`PgPool`], whose
    /// transactions run exactly once as steps of a workflow.
    ///
    /// Cheap to clone (one shared pool). Creating one does no I/O: on first use it finds out
    /// whether its database is the system database (then the step's checkpoint is written in
    /// the transaction itself) and otherwise creates the `dbos.transaction_completion` table
    /// when missing. Put it in the application's state
    /// ([`CairnBuilder::state`](crate::CairnBuilder::state)) and take it with
    /// [`cairn::state`](crate::state) in workflows.
    ///
    /// The role needs `CREATE` on the database (for the schema) unless the table exists;
    /// create it ahead of time with the application's own migrations otherwise (the layout of
    /// DBOS Go: `workflow_id TEXT, step_id INT4, output TEXT, error TEXT, serialization TEXT,
    /// created_at BIGINT, PRIMARY KEY (workflow_id, step_id)`).
    ///
    /// ```no_run
    /// use cairn::datasource::SqlxPgDatasource;
    ///
    /// #[cairn::workflow]
    /// async fn place_order(item: String) -> Result<i64, cairn::Error> {
    ///     let orders = cairn::state::<SqlxPgDatasource>()?;
    ///     let id = orders
    ///         .transaction("insert_order", |tx| {
    ///             let item = item.clone();
    ///             Box::pin(async move {
    ///                 let id: i64 =
    ///                     sqlx::query_scalar("INSERT INTO orders (item) VALUES ($1) RETURNING id")
    ///                         .bind(item)
    ///                         .fetch_one(&mut **tx)
    ///                         .await?;
    ///                 Ok::<_, cairn::Error>(id)
    ///             })
    ///         })
    ///         .await?;
    ///     Ok(id)
    /// }
    /// ```
    #[derive(Clone)]
    pub struct SqlxPgDatasource {
        inner: Arc<Inner<Postgres>>,
    }

    impl std::fmt::Debug for SqlxPgDatasource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SqlxPgDatasource")
                .field("name", &self.inner.name)
                .field("table", &self.inner.table)
                .finish_non_exhaustive()
        }
    }

    impl SqlxPgDatasource {
        /// A data source over `pool`, named `datasource`, keeping its records in schema
        /// `dbos`.
        pub fn new(pool: PgPool) -> Self {
            Self::build(pool, "datasource", DEFAULT_SCHEMA)
        }

        /// This data source under another name (used in logs and errors). Default:
        /// `datasource`.
        pub fn name(self, name: impl Into<String>) -> Self {
            let inner = &self.inner;
            Self::build(inner.pool.clone(), &name.into(), &inner.schema)
        }

        /// This data source keeping its completion table in another schema. Default: `dbos`.
        pub fn schema(self, schema: impl Into<String>) -> Self {
            let inner = &self.inner;
            Self::build(inner.pool.clone(), &inner.name, &schema.into())
        }

        fn build(pool: PgPool, name: &str, schema: &str) -> Self {
            let table = format!("{}.{COMPLETION_TABLE}", quote_ident(schema));
            Self {
                inner: Arc::new(Inner::new(pool, name, schema, table)),
            }
        }

        /// The pool the transactions run on.
        pub fn pool(&self) -> &PgPool {
            &self.inner.pool
        }

        /// Run `body` in a transaction on this database as a step named `name`, with the
        /// default [`TransactionOptions`] (serializable, conflicts retried). See
        /// [`SqlxPgDatasource::transaction_with`].
        pub fn transaction<T, E, F>(
            &self,
            name: &'static str,
            body: F,
        ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
        where
            T: Serialize + DeserializeOwned + Send,
            E: DurableError + From<Error>,
            F: for<'t> FnMut(&'t mut Transaction<'static, Postgres>) -> BoxFuture<'t, Result<T, E>>
                + Send,
        {
            self.transaction_with(name, TransactionOptions::default(), body)
        }

        /// Run `body` in a transaction (`BEGIN ISOLATION LEVEL …`, the level of `options`)
        /// on this database as a step named `name`.
        ///
        /// Inside a workflow the step's output is recorded in the same transaction as the
        /// body's writes, so they commit exactly once: a replay (or a recovery after a crash
        /// between the commit and the workflow's checkpoint) returns the recorded output and
        /// does not run `body`. `body` runs once per attempt: an attempt that fails with a
        /// serialization failure, a deadlock or a lost connection (the body's error being that
        /// `sqlx::Error` or a transient [`Error`]) is rolled back and tried again, up to
        /// [`TransactionOptions::max_attempts`]. Any other error rolls the transaction back
        /// and is the step's error. Outside a workflow it is a plain transaction, retried the
        /// same way. Do not commit or roll back `tx` yourself.
        ///
        /// The operation id is taken when this is called, like every durable call.
        pub fn transaction_with<T, E, F>(
            &self,
            name: &'static str,
            options: TransactionOptions,
            body: F,
        ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
        where
            T: Serialize + DeserializeOwned + Send,
            E: DurableError + From<Error>,
            F: for<'t> FnMut(&'t mut Transaction<'static, Postgres>) -> BoxFuture<'t, Result<T, E>>
                + Send,
        {
            transaction(&self.inner, name, options, body)
        }
    }

    /// A Postgres identifier, quoted.
    fn quote_ident(name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }

    impl Backend for Postgres {
        fn begin(isolation: Isolation) -> &'static str {
            match isolation {
                Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
                Isolation::RepeatableRead => "BEGIN ISOLATION LEVEL REPEATABLE READ",
                Isolation::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            }
        }

        async fn system_checkpoint(
            inner: &Inner<Self>,
            rt: &Runtime,
        ) -> Result<Option<Arc<str>>, Error> {
            // Without the Postgres system database compiled in, it cannot be this database.
            #[cfg(feature = "postgres")]
            if let Some(store) = rt.store.as_postgres() {
                use crate::store::postgres::DATABASE_IDENTITY;
                let identity = inner
                    .identity
                    .get_or_try_init(|| async {
                        sqlx::query_scalar::<_, String>(DATABASE_IDENTITY)
                            .fetch_one(&inner.pool)
                            .await
                            .map_err(|e| inner.driver(e))
                    })
                    .await?;
                if store.identity().await? == identity.as_str() {
                    return Ok(Some(store.record_step_statement()));
                }
            }
            #[cfg(not(feature = "postgres"))]
            let _ = (inner, rt);
            Ok(None)
        }

        async fn create_table(inner: &Inner<Self>) -> Result<(), sqlx::Error> {
            let exists = sqlx::query(
                "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2",
            )
            .bind(&inner.schema)
            .bind(COMPLETION_TABLE)
            .fetch_optional(&inner.pool)
            .await?;
            if exists.is_some() {
                return Ok(());
            }
            let create = format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; \
                 CREATE TABLE IF NOT EXISTS {table} ( \
                     workflow_id TEXT NOT NULL, \
                     step_id INT4 NOT NULL, \
                     output TEXT, \
                     error TEXT, \
                     serialization TEXT, \
                     created_at BIGINT NOT NULL DEFAULT (EXTRACT(EPOCH FROM now()) * 1000)::bigint, \
                     PRIMARY KEY (workflow_id, step_id))",
                schema = quote_ident(&inner.schema),
                table = inner.table,
            );
            // Two processes creating it at once: one of them sees a unique violation on the
            // catalog, and the table is there all the same.
            match sqlx::raw_sql(&create).execute(&inner.pool).await {
                Ok(_) => Ok(()),
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(()),
                Err(e) => Err(e),
            }
        }

        async fn recorded(
            inner: &Inner<Self>,
            at: &Completion,
        ) -> Result<Option<Recorded>, sqlx::Error> {
            let select = format!(
                "SELECT output, error, serialization FROM {} WHERE workflow_id = $1 AND step_id = $2",
                inner.table
            );
            let row: Option<(Option<String>, Option<String>, Option<String>)> =
                sqlx::query_as(&select)
                    .bind(&at.workflow_id)
                    .bind(at.function_id)
                    .fetch_optional(&inner.pool)
                    .await?;
            Ok(row.map(|(output, error, serialization)| Recorded {
                output,
                error,
                serialization,
            }))
        }

        async fn insert_completion(
            tx: &mut Transaction<'static, Self>,
            table: &str,
            at: &Completion,
            output: &str,
        ) -> Result<(), sqlx::Error> {
            let insert = format!(
                "INSERT INTO {table} (workflow_id, step_id, output, error, serialization, created_at) \
                 VALUES ($1, $2, $3, NULL, 'portable_json', (EXTRACT(EPOCH FROM now()) * 1000)::bigint)"
            );
            sqlx::query(&insert)
                .bind(&at.workflow_id)
                .bind(at.function_id)
                .bind(output)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        async fn insert_checkpoint(
            tx: &mut Transaction<'static, Self>,
            statement: &str,
            rec: &StepRecord,
        ) -> Result<bool, sqlx::Error> {
            // The parameters of `step_params`, in its order.
            let written = sqlx::query(statement)
                .bind(&rec.workflow_id)
                .bind(&rec.owner_xid)
                .bind(rec.function_id)
                .bind(&rec.function_name)
                .bind(&rec.output)
                .bind(&rec.error)
                .bind(&rec.child_workflow_id)
                .bind(rec.started_at_epoch_ms)
                .bind(rec.completed_at_epoch_ms)
                .bind(&rec.application_name)
                .fetch_optional(&mut **tx)
                .await?;
            Ok(written.is_some())
        }
    }
}

#[cfg(feature = "sqlx-sqlite")]
mod sqlite {
    use sqlx::{Sqlite, SqlitePool};

    use super::*;

    /// The system database's guarded checkpoint insert, as the SQLite store writes it
    /// (`record_step_as`): only while the workflow is this execution's, or was cancelled after
    /// the step began; one row when written.
    #[cfg(feature = "sqlite")]
    const RECORD_STEP: &str = "INSERT INTO operation_outputs (workflow_uuid, function_id, function_name, output, error, \
         child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization, application_name, \
         retention_timestamp) \
         SELECT ?1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?9 WHERE EXISTS (SELECT 1 FROM workflow_status \
         WHERE workflow_uuid = ?1 AND (status = 'PENDING' AND owner_xid = ?2 \
         OR status = 'CANCELLED' AND owner_xid IS NULL AND updated_at >= ?8)) \
         ON CONFLICT (workflow_uuid, function_id) DO NOTHING";

    /// A SQLite application database, reached through an sqlx [`SqlitePool`], whose
    /// transactions run exactly once as steps of a workflow, recording them in its
    /// `transaction_completion` table (created when missing, DBOS Go's layout).
    ///
    /// Cheap to clone (one shared pool). Creating one does no I/O. When the pool's file is
    /// the system database itself, the step's checkpoint is written in the transaction and no
    /// completion table is used. Transactions begin with `BEGIN IMMEDIATE`, so they take
    /// SQLite's write lock up front and wait for it (the pool's busy timeout) rather than fail
    /// halfway.
    ///
    /// ```no_run
    /// use cairn::datasource::SqlxSqliteDatasource;
    ///
    /// #[cairn::workflow]
    /// async fn place_order(item: String) -> Result<i64, cairn::Error> {
    ///     let orders = cairn::state::<SqlxSqliteDatasource>()?;
    ///     let id = orders
    ///         .transaction("insert_order", |tx| {
    ///             let item = item.clone();
    ///             Box::pin(async move {
    ///                 let done = sqlx::query("INSERT INTO orders (item) VALUES (?1)")
    ///                     .bind(item)
    ///                     .execute(&mut **tx)
    ///                     .await?;
    ///                 Ok::<_, cairn::Error>(done.last_insert_rowid())
    ///             })
    ///         })
    ///         .await?;
    ///     Ok(id)
    /// }
    /// ```
    #[derive(Clone)]
    pub struct SqlxSqliteDatasource {
        inner: Arc<Inner<Sqlite>>,
    }

    impl std::fmt::Debug for SqlxSqliteDatasource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SqlxSqliteDatasource")
                .field("name", &self.inner.name)
                .field("file", &self.inner.pool.connect_options().get_filename())
                .finish_non_exhaustive()
        }
    }

    impl SqlxSqliteDatasource {
        /// A data source over `pool`, named `datasource`.
        pub fn new(pool: SqlitePool) -> Self {
            Self::build(pool, "datasource")
        }

        /// This data source under another name (used in logs and errors). Default:
        /// `datasource`.
        pub fn name(self, name: impl Into<String>) -> Self {
            Self::build(self.inner.pool.clone(), &name.into())
        }

        fn build(pool: SqlitePool, name: &str) -> Self {
            Self {
                inner: Arc::new(Inner::new(pool, name, "", COMPLETION_TABLE.to_owned())),
            }
        }

        /// The pool the transactions run on.
        pub fn pool(&self) -> &SqlitePool {
            &self.inner.pool
        }

        /// Run `body` in a transaction on this database as a step named `name`, with the
        /// default [`TransactionOptions`]. See [`SqlxSqliteDatasource::transaction_with`].
        pub fn transaction<T, E, F>(
            &self,
            name: &'static str,
            body: F,
        ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
        where
            T: Serialize + DeserializeOwned + Send,
            E: DurableError + From<Error>,
            F: for<'t> FnMut(&'t mut Transaction<'static, Sqlite>) -> BoxFuture<'t, Result<T, E>>
                + Send,
        {
            self.transaction_with(name, TransactionOptions::default(), body)
        }

        /// Run `body` in a transaction (`BEGIN IMMEDIATE`) on this database as a step named
        /// `name`.
        ///
        /// Inside a workflow the step's output is recorded in the same transaction as the
        /// body's writes, so they commit exactly once: a replay (or a recovery after a crash
        /// between the commit and the workflow's checkpoint) returns the recorded output and
        /// does not run `body`. An attempt that fails because the database is busy or locked
        /// (the body's error being that `sqlx::Error` or a transient [`Error`]) is rolled back
        /// and tried again, up to [`TransactionOptions::max_attempts`]; any other error rolls
        /// it back and is the step's error. Outside a workflow it is a plain transaction,
        /// retried the same way. The isolation level of `options` is ignored (SQLite's
        /// transactions are serializable). Do not commit or roll back `tx` yourself.
        ///
        /// The operation id is taken when this is called, like every durable call.
        pub fn transaction_with<T, E, F>(
            &self,
            name: &'static str,
            options: TransactionOptions,
            body: F,
        ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
        where
            T: Serialize + DeserializeOwned + Send,
            E: DurableError + From<Error>,
            F: for<'t> FnMut(&'t mut Transaction<'static, Sqlite>) -> BoxFuture<'t, Result<T, E>>
                + Send,
        {
            transaction(&self.inner, name, options, body)
        }
    }

    impl Backend for Sqlite {
        fn begin(_: Isolation) -> &'static str {
            "BEGIN IMMEDIATE"
        }

        async fn system_checkpoint(
            inner: &Inner<Self>,
            rt: &Runtime,
        ) -> Result<Option<Arc<str>>, Error> {
            // Without the SQLite system database compiled in, it cannot be this file.
            #[cfg(feature = "sqlite")]
            if let Some(system) = rt.store.as_sqlite().and_then(|store| store.file()) {
                let canonical = |p: &std::path::Path| p.canonicalize().unwrap_or(p.to_path_buf());
                let options = inner.pool.connect_options();
                if canonical(&system) == canonical(options.get_filename()) {
                    return Ok(Some(Arc::from(RECORD_STEP)));
                }
            }
            #[cfg(not(feature = "sqlite"))]
            let _ = (inner, rt);
            Ok(None)
        }

        async fn create_table(inner: &Inner<Self>) -> Result<(), sqlx::Error> {
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {COMPLETION_TABLE} ( \
                     workflow_id TEXT NOT NULL, \
                     step_id INTEGER NOT NULL, \
                     output TEXT, \
                     error TEXT, \
                     serialization TEXT, \
                     created_at INTEGER NOT NULL DEFAULT 0, \
                     PRIMARY KEY (workflow_id, step_id))"
            );
            sqlx::raw_sql(&create).execute(&inner.pool).await?;
            Ok(())
        }

        async fn recorded(
            inner: &Inner<Self>,
            at: &Completion,
        ) -> Result<Option<Recorded>, sqlx::Error> {
            let select = format!(
                "SELECT output, error, serialization FROM {COMPLETION_TABLE} WHERE workflow_id = ?1 AND step_id = ?2"
            );
            let row: Option<(Option<String>, Option<String>, Option<String>)> =
                sqlx::query_as(&select)
                    .bind(&at.workflow_id)
                    .bind(at.function_id)
                    .fetch_optional(&inner.pool)
                    .await?;
            Ok(row.map(|(output, error, serialization)| Recorded {
                output,
                error,
                serialization,
            }))
        }

        async fn insert_completion(
            tx: &mut Transaction<'static, Self>,
            table: &str,
            at: &Completion,
            output: &str,
        ) -> Result<(), sqlx::Error> {
            let insert = format!(
                "INSERT INTO {table} (workflow_id, step_id, output, error, serialization, created_at) \
                 VALUES (?1, ?2, ?3, NULL, 'portable_json', ?4)"
            );
            sqlx::query(&insert)
                .bind(&at.workflow_id)
                .bind(at.function_id)
                .bind(output)
                .bind(now_ms())
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        async fn insert_checkpoint(
            tx: &mut Transaction<'static, Self>,
            statement: &str,
            rec: &StepRecord,
        ) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(statement)
                .bind(&rec.workflow_id)
                .bind(&rec.owner_xid)
                .bind(rec.function_id)
                .bind(&rec.function_name)
                .bind(&rec.output)
                .bind(&rec.error)
                .bind(&rec.child_workflow_id)
                .bind(rec.started_at_epoch_ms)
                .bind(rec.completed_at_epoch_ms)
                .bind(crate::store::PORTABLE_JSON)
                .bind(&rec.application_name)
                .execute(&mut **tx)
                .await?;
            Ok(done.rows_affected() == 1)
        }
    }
}
