//! Transactional steps on a SQLite application database, over a rusqlite connection.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    COMPLETION_TABLE, Completion, Failed, Recorded, TransactionOptions, classify, encode_output,
    transaction_error,
};
use crate::engine::runtime::{Runtime, now_ms};
use crate::engine::step::StepCall;
use crate::error::{DatabaseErrorKind, DurableError, Error};
use crate::store::sqlite::error_kind;
use crate::store::sqlite::ops::record_step;
use crate::store::{RecordOutcome, StepRecord};

/// How long the connection waits inside SQLite for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A SQLite application database whose transactions run exactly once as steps of a
/// workflow: one rusqlite connection to a database file, plus the `transaction_completion`
/// table its records go to (created when missing, DBOS Go's layout).
///
/// Cheap to clone (one shared connection; transactions take turns, as SQLite's single
/// writer does anyway). When the file is the system database itself, the step's checkpoint is
/// written in the transaction and no completion table is used.
///
/// The body is synchronous, as rusqlite is: it runs on the calling thread, which tokio's
/// multi-threaded runtime is told may block (`block_in_place`), so keep transactions short.
#[derive(Clone)]
pub struct SqliteDatasource {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// The file, canonical, to tell whether it is the system database.
    file: PathBuf,
    conn: Mutex<Connection>,
    /// Whether the completion table was created (once, on first use off the system database).
    table_ready: AtomicBool,
}

impl std::fmt::Debug for SqliteDatasource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDatasource")
            .field("name", &self.inner.name)
            .field("file", &self.inner.file)
            .finish_non_exhaustive()
    }
}

impl SqliteDatasource {
    /// Open (creating if missing) the database file at `path`, in WAL mode, as a data
    /// source named `datasource`.
    pub fn open(path: impl AsRef<Path>) -> crate::Result<Self> {
        Self::open_named(path, "datasource")
    }

    /// [`SqliteDatasource::open`] under another name (used in logs and errors).
    pub fn open_named(path: impl AsRef<Path>, name: &str) -> crate::Result<Self> {
        let path = path.as_ref();
        let failed = |e| transaction_error(name, error_kind(&e), e);
        let conn = Connection::open(path).map_err(failed)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(failed)?;
        let file = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                file,
                conn: Mutex::new(conn),
                table_ready: AtomicBool::new(false),
            }),
        })
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.inner.file
    }

    /// Run `body` in a transaction on this database as a step named `name`, with the
    /// default [`TransactionOptions`]. See [`SqliteDatasource::transaction_with`].
    pub fn transaction<T, E, F>(
        &self,
        name: &'static str,
        body: F,
    ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Serialize + DeserializeOwned + Send,
        E: DurableError + From<Error>,
        F: FnMut(&Transaction<'_>) -> Result<T, E> + Send,
    {
        self.transaction_with(name, TransactionOptions::default(), body)
    }

    /// Run `body` in a transaction (`BEGIN IMMEDIATE`) on this database as a step named
    /// `name`.
    ///
    /// Inside a workflow the step's output is recorded in the same transaction as the body's
    /// writes, so they commit exactly once: a replay (or a recovery after a crash between the
    /// commit and the workflow's checkpoint) returns the recorded output and does not run
    /// `body`. An attempt that fails because the database is locked (the body's error being
    /// a `rusqlite::Error` or a transient [`Error`]) is rolled back and tried again, up to
    /// [`TransactionOptions::max_attempts`]; any other error rolls it back and is the step's
    /// error. Outside a workflow it is a plain transaction, retried the same way.
    pub fn transaction_with<T, E, F>(
        &self,
        name: &'static str,
        options: TransactionOptions,
        mut body: F,
    ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Serialize + DeserializeOwned + Send,
        E: DurableError + From<Error>,
        F: FnMut(&Transaction<'_>) -> Result<T, E> + Send,
    {
        let mut call = StepCall::begin(name);
        let checkpoint = (!call.is_replay()).then(|| call.checkpoint()).flatten();
        let written = call.written_flag();
        let runtime = call.runtime();
        let inner = Arc::clone(&self.inner);
        async move {
            let run = async {
                let record = record_of(&inner, checkpoint, runtime.as_deref())?;
                let mut attempt = 1;
                loop {
                    let outcome = blocking(|| inner.attempt(name, &record, &mut body));
                    match outcome {
                        Ok(value) => {
                            if matches!(record, Record::Checkpoint(_)) {
                                written.store(true, Ordering::Release);
                            }
                            return Ok(value);
                        }
                        Err(failed) => {
                            failed
                                .back_off(&options, &inner.name, name, &mut attempt)
                                .await?;
                        }
                    }
                }
            };
            call.run(None, run).await
        }
    }
}

/// Where a call's record goes.
enum Record {
    /// Outside a workflow: nowhere.
    None,
    /// The completion table.
    Completion(Completion),
    /// The system database's checkpoint (this file is the system database).
    Checkpoint(StepRecord),
}

fn record_of(
    inner: &Inner,
    checkpoint: Option<StepRecord>,
    runtime: Option<&Runtime>,
) -> Result<Record, Error> {
    let Some(checkpoint) = checkpoint else {
        return Ok(Record::None);
    };
    let system_file = runtime
        .and_then(|rt| rt.store.as_sqlite())
        .and_then(|store| store.file())
        .map(|file| file.canonicalize().unwrap_or(file));
    if system_file.as_deref() == Some(inner.file.as_path()) {
        return Ok(Record::Checkpoint(checkpoint));
    }
    Ok(Record::Completion(Completion {
        workflow_id: checkpoint.workflow_id,
        function_id: checkpoint.function_id,
    }))
}

impl Inner {
    /// One run of the transaction: the recorded outcome if an earlier run committed, else
    /// begin, the body, the record, commit.
    fn attempt<T, E, F>(&self, step: &str, record: &Record, body: &mut F) -> Result<T, Failed<E>>
    where
        T: Serialize + DeserializeOwned,
        E: DurableError + From<Error>,
        F: FnMut(&Transaction<'_>) -> Result<T, E>,
    {
        let fail = |e: Error| classify(E::from(e), |_: &rusqlite::Error| false);
        let driver = |e: rusqlite::Error| transaction_error(&self.name, error_kind(&e), e);
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Record::Completion(at) = record {
            self.ensure_table(&conn).map_err(driver).map_err(fail)?;
            if let Some(recorded) = recorded(&conn, at).map_err(driver).map_err(fail)? {
                return recorded.decode(at).map_err(Failed::Final);
            }
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(driver)
            .map_err(fail)?;
        let value = body(&tx).map_err(|error| {
            classify(error, |e: &rusqlite::Error| {
                error_kind(e) == DatabaseErrorKind::Transient
            })
        })?;
        // Dropping `tx` on any early return rolls it back.
        match record {
            Record::None => {}
            Record::Completion(at) => {
                let output = encode_output(&value, step).map_err(fail)?;
                tx.execute(
                    &format!(
                        "INSERT INTO {COMPLETION_TABLE} (workflow_id, step_id, output, error, serialization, created_at) \
                         VALUES (?1, ?2, ?3, NULL, 'portable_json', ?4)"
                    ),
                    rusqlite::params![at.workflow_id, at.function_id, output, now_ms()],
                )
                .map_err(driver)
                .map_err(fail)?;
            }
            Record::Checkpoint(checkpoint) => {
                let mut checkpoint = checkpoint.clone();
                checkpoint.output = Some(encode_output(&value, step).map_err(fail)?);
                checkpoint.completed_at_epoch_ms = now_ms();
                match record_step(&tx, &checkpoint)
                    .map_err(driver)
                    .map_err(fail)?
                {
                    RecordOutcome::Recorded => {}
                    // Not this execution's to write any more: the writes must not commit.
                    _ => return Err(fail(Error::OwnershipLost(checkpoint.workflow_id))),
                }
            }
        }
        tx.commit().map_err(driver).map_err(fail)?;
        Ok(value)
    }

    /// Create the completion table unless this data source already did.
    fn ensure_table(&self, conn: &Connection) -> rusqlite::Result<()> {
        if self.table_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {COMPLETION_TABLE} ( \
                 workflow_id TEXT NOT NULL, \
                 step_id INTEGER NOT NULL, \
                 output TEXT, \
                 error TEXT, \
                 serialization TEXT, \
                 created_at INTEGER NOT NULL DEFAULT 0, \
                 PRIMARY KEY (workflow_id, step_id))"
        ))?;
        self.table_ready.store(true, Ordering::Release);
        Ok(())
    }
}

/// The completion record of an earlier run of a step, if its transaction committed.
fn recorded(conn: &Connection, at: &Completion) -> rusqlite::Result<Option<Recorded>> {
    conn.prepare_cached(&format!(
        "SELECT output, error, serialization FROM {COMPLETION_TABLE} WHERE workflow_id = ?1 AND step_id = ?2"
    ))?
    .query_row(rusqlite::params![at.workflow_id, at.function_id], |row| {
        Ok(Recorded {
            output: row.get(0)?,
            error: row.get(1)?,
            serialization: row.get(2)?,
        })
    })
    .optional()
}

/// Run blocking work on this thread, telling a multi-threaded runtime to move its other
/// tasks elsewhere meanwhile.
fn blocking<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// A driver error in a transactional step's body, as Cairn's error (so `?` works in a body
/// whose error type is [`Error`]): a locked database is transient, and the transaction is
/// retried.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        transaction_error("datasource", error_kind(&e), e)
    }
}
