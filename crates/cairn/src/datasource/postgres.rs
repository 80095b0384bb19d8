//! Transactional steps on a Postgres application database, over a deadpool-postgres pool.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{Object, Pool};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use super::{
    COMPLETION_TABLE, Completion, DEFAULT_SCHEMA, Failed, Recorded, TransactionOptions, classify,
    encode_output, transaction_error,
};
use crate::engine::runtime::{Runtime, now_ms};
use crate::engine::step::StepCall;
use crate::error::{DatabaseErrorKind, DurableError, Error};
use crate::store::StepRecord;
use crate::store::postgres::connect::quote_ident;
use crate::store::postgres::error::kind_of;
use crate::store::postgres::{DATABASE_IDENTITY, step_params};

/// A Postgres application database whose transactions run exactly once as steps of a
/// workflow: a deadpool-postgres pool the application already has, plus where the
/// completion records go.
///
/// Cheap to clone (one shared pool). Creating one does no I/O: on first use it finds out
/// whether its database is the system database (then the step's checkpoint is written in the
/// transaction itself) and otherwise creates the `dbos.transaction_completion` table when
/// missing. Put it in the application's state ([`CairnBuilder::state`](crate::CairnBuilder::state))
/// and take it with [`cairn::state`](crate::state) in workflows.
///
/// The role needs `CREATE` on the database (for the schema) unless the table exists; create
/// it ahead of time with the application's own migrations otherwise (the layout of DBOS Go:
/// `workflow_id TEXT, step_id INT4, output TEXT, error TEXT, serialization TEXT,
/// created_at BIGINT, PRIMARY KEY (workflow_id, step_id)`).
#[derive(Clone)]
pub struct PostgresDatasource {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    pool: Pool,
    /// The completion table, schema-qualified and quoted.
    table: String,
    schema: String,
    /// Which database the pool reaches (see [`DATABASE_IDENTITY`]), read on first use.
    identity: OnceCell<String>,
    /// The completion table exists (checked, or created, on first use off the system database).
    table_ready: OnceCell<()>,
}

impl std::fmt::Debug for PostgresDatasource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresDatasource")
            .field("name", &self.inner.name)
            .field("table", &self.inner.table)
            .finish_non_exhaustive()
    }
}

impl PostgresDatasource {
    /// A data source over `pool`, named `datasource`, keeping its records in schema `dbos`.
    pub fn new(pool: Pool) -> Self {
        Self::build(pool, "datasource", DEFAULT_SCHEMA)
    }

    /// This data source under another name (used in logs and errors). Default: `datasource`.
    pub fn name(self, name: impl Into<String>) -> Self {
        let inner = &self.inner;
        Self::build(inner.pool.clone(), &name.into(), &inner.schema)
    }

    /// This data source keeping its completion table in another schema. Default: `dbos`.
    pub fn schema(self, schema: impl Into<String>) -> Self {
        let inner = &self.inner;
        Self::build(inner.pool.clone(), &inner.name, &schema.into())
    }

    fn build(pool: Pool, name: &str, schema: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                pool,
                table: format!("{}.{COMPLETION_TABLE}", quote_ident(schema)),
                schema: schema.to_owned(),
                identity: OnceCell::new(),
                table_ready: OnceCell::new(),
            }),
        }
    }

    /// The pool the transactions run on.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Run `body` in a transaction on this database as a step named `name`, with the
    /// default [`TransactionOptions`] (serializable, conflicts retried). See
    /// [`PostgresDatasource::transaction_with`].
    pub fn transaction<T, E, F, Fut>(
        &self,
        name: &'static str,
        body: F,
    ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F, Fut>
    where
        T: Serialize + DeserializeOwned + Send,
        E: DurableError + From<Error>,
        F: FnMut(PgTransaction) -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        self.transaction_with(name, TransactionOptions::default(), body)
    }

    /// Run `body` in a transaction on this database as a step named `name`.
    ///
    /// Inside a workflow the step's output is recorded in the same transaction as the body's
    /// writes, so they commit exactly once: a replay (or a recovery after a crash between the
    /// commit and the workflow's checkpoint) returns the recorded output and does not run
    /// `body`. `body` runs once per attempt: an attempt that fails with a serialization
    /// failure, a deadlock or a lost connection (the body's error being that driver error or
    /// a transient [`Error`]) is rolled back and tried again, up to
    /// [`TransactionOptions::max_attempts`]. Any other error rolls the transaction back and is
    /// the step's error. Outside a workflow it is a plain transaction, retried the same way.
    ///
    /// The operation id is taken when this is called, like every durable call.
    pub fn transaction_with<T, E, F, Fut>(
        &self,
        name: &'static str,
        options: TransactionOptions,
        body: F,
    ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F, Fut>
    where
        T: Serialize + DeserializeOwned + Send,
        E: DurableError + From<Error>,
        F: FnMut(PgTransaction) -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        let mut call = StepCall::begin(name);
        let checkpoint = (!call.is_replay()).then(|| call.checkpoint()).flatten();
        let written = call.written_flag();
        let runtime = call.runtime();
        let inner = Arc::clone(&self.inner);
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
}

/// One transactional step call.
struct Run<'a> {
    name: &'static str,
    inner: &'a Inner,
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

impl Run<'_> {
    async fn execute<T, E, F, Fut>(self, mut body: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: DurableError + From<Error>,
        F: FnMut(PgTransaction) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let record = self.record().await?;
        let mut attempt = 1;
        loop {
            // Before every attempt: a run that committed (an earlier execution's, or this
            // call's own whose commit succeeded unseen) is not run again.
            if let Record::Completion(at) = &record
                && let Some(recorded) = self.recorded(at).await?
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
    /// system database.
    async fn record(&self) -> Result<Record, Error> {
        let Some(checkpoint) = &self.checkpoint else {
            return Ok(Record::None);
        };
        if let Some(rt) = &self.runtime
            && let Some(store) = rt.store.as_postgres()
            && store.identity().await? == self.identity().await?
        {
            return Ok(Record::Checkpoint(
                checkpoint.clone(),
                store.record_step_statement(),
            ));
        }
        self.ensure_table().await?;
        Ok(Record::Completion(Completion {
            workflow_id: checkpoint.workflow_id.clone(),
            function_id: checkpoint.function_id,
        }))
    }

    /// One run of the transaction: begin, the body, the record, commit.
    async fn attempt<T, E, F, Fut>(&self, record: &Record, body: &mut F) -> Result<T, Failed<E>>
    where
        T: Serialize,
        E: DurableError + From<Error>,
        F: FnMut(PgTransaction) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let fail = |e: Error| classify(E::from(e), |_: &tokio_postgres::Error| false);
        let conn = Arc::new(self.connection().await.map_err(fail)?);
        let begin = format!("BEGIN ISOLATION LEVEL {}", self.options.isolation.sql());
        conn.batch_execute(&begin)
            .await
            .map_err(|e| fail(self.driver(e)))?;
        let outcome = body(PgTransaction {
            conn: Arc::clone(&conn),
        })
        .await;
        let value = match outcome {
            Ok(value) => value,
            Err(error) => {
                self.abandon(conn).await;
                return Err(classify(error, |e: &tokio_postgres::Error| {
                    kind_of(e) == DatabaseErrorKind::Transient
                }));
            }
        };
        let output = match record {
            Record::None => None,
            Record::Completion(_) | Record::Checkpoint(..) => {
                match encode_output(&value, self.name) {
                    Ok(output) => Some(output),
                    Err(unencodable) => {
                        self.abandon(conn).await;
                        return Err(fail(unencodable));
                    }
                }
            }
        };
        let finish = async {
            match (record, output) {
                (Record::Completion(at), Some(output)) => {
                    let insert = format!(
                        "INSERT INTO {} (workflow_id, step_id, output, error, serialization, created_at) \
                         VALUES ($1, $2, $3, NULL, 'portable_json', (EXTRACT(EPOCH FROM now()) * 1000)::bigint)",
                        self.inner.table
                    );
                    conn.execute(&insert, &[&at.workflow_id, &at.function_id, &output])
                        .await
                        .map_err(|e| self.driver(e))?;
                }
                (Record::Checkpoint(checkpoint, statement), output) => {
                    let mut checkpoint = checkpoint.clone();
                    checkpoint.output = output;
                    checkpoint.completed_at_epoch_ms = now_ms();
                    let written = conn
                        .query(&**statement, &step_params(&checkpoint))
                        .await
                        .map_err(|e| self.driver(e))?;
                    if written.is_empty() {
                        // Not this execution's to write any more (cancelled, taken over):
                        // the writes must not commit either.
                        return Err(Error::OwnershipLost(checkpoint.workflow_id.clone()));
                    }
                }
                _ => {}
            }
            conn.batch_execute("COMMIT")
                .await
                .map_err(|e| self.driver(e))
        };
        match finish.await {
            Ok(()) => {
                if matches!(record, Record::Checkpoint(..)) {
                    self.written.store(true, Ordering::Release);
                }
                Ok(value)
            }
            Err(error) => {
                self.abandon(conn).await;
                Err(fail(error))
            }
        }
    }

    /// Roll the transaction back. A connection whose rollback fails may still be inside the
    /// transaction, and the pool would hand it out again as it is: detach it (it closes).
    async fn abandon(&self, conn: Arc<Object>) {
        if conn.batch_execute("ROLLBACK").await.is_err() {
            drop(Arc::into_inner(conn).map(Object::take));
        }
    }

    /// The completion record of an earlier run of this step, if its transaction committed.
    async fn recorded(&self, at: &Completion) -> Result<Option<Recorded>, Error> {
        let conn = self.connection().await?;
        let select = format!(
            "SELECT output, error, serialization FROM {} WHERE workflow_id = $1 AND step_id = $2",
            self.inner.table
        );
        let rows = conn
            .query(&select, &[&at.workflow_id, &at.function_id])
            .await
            .map_err(|e| self.driver(e))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let read = |e| self.driver(e);
        Ok(Some(Recorded {
            output: row.try_get(0).map_err(read)?,
            error: row.try_get(1).map_err(read)?,
            serialization: row.try_get(2).map_err(read)?,
        }))
    }

    /// Which database the pool reaches, read once.
    async fn identity(&self) -> Result<&str, Error> {
        let identity = self
            .inner
            .identity
            .get_or_try_init(|| async {
                let conn = self.connection().await?;
                let row = conn
                    .query_one(DATABASE_IDENTITY, &[])
                    .await
                    .map_err(|e| self.driver(e))?;
                row.try_get::<_, String>(0).map_err(|e| self.driver(e))
            })
            .await?;
        Ok(identity)
    }

    /// Create the completion table (and its schema) unless it exists; once per data source.
    async fn ensure_table(&self) -> Result<(), Error> {
        self.inner
            .table_ready
            .get_or_try_init(|| async {
                let conn = self.connection().await?;
                let exists = conn
                    .query(
                        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2",
                        &[&self.inner.schema, &COMPLETION_TABLE],
                    )
                    .await
                    .map_err(|e| self.driver(e))?;
                if !exists.is_empty() {
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
                    schema = quote_ident(&self.inner.schema),
                    table = self.inner.table,
                );
                // Two processes creating it at once: one of them sees a unique violation on
                // the catalog, which the next statement's look resolves.
                match conn.batch_execute(&create).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.code().is_some_and(|c| c.code() == "23505") => Ok(()),
                    Err(e) => Err(self.driver(e)),
                }
            })
            .await?;
        Ok(())
    }

    async fn connection(&self) -> Result<Object, Error> {
        self.inner.pool.get().await.map_err(|e| {
            let kind = match &e {
                deadpool_postgres::PoolError::Backend(e) => kind_of(e),
                deadpool_postgres::PoolError::Timeout(_) => DatabaseErrorKind::Transient,
                _ => DatabaseErrorKind::Permanent,
            };
            transaction_error(&self.inner.name, kind, e)
        })
    }

    /// A driver error of this data source, classified.
    fn driver(&self, e: tokio_postgres::Error) -> Error {
        transaction_error(&self.inner.name, kind_of(&e), e)
    }
}

/// The transaction a transactional step's body runs in: a pooled connection inside `BEGIN`,
/// used like a [`tokio_postgres::Client`] (it derefs to deadpool's client wrapper, so
/// `prepare_cached` works too). Cairn commits or rolls back when the body returns; do not
/// issue `COMMIT` or `ROLLBACK` yourself.
///
/// An owned handle, so the body's future may borrow the caller's variables freely; clones
/// are the same transaction.
#[derive(Clone)]
pub struct PgTransaction {
    conn: Arc<Object>,
}

impl Deref for PgTransaction {
    type Target = deadpool_postgres::ClientWrapper;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl std::fmt::Debug for PgTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTransaction").finish_non_exhaustive()
    }
}

/// A driver error in a transactional step's body, as Cairn's error (so `?` works in a body
/// whose error type is [`Error`]): a serialization failure, deadlock or lost connection is
/// transient, and the transaction is retried.
impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        transaction_error("datasource", kind_of(&e), e)
    }
}
