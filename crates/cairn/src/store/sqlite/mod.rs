//! The SQLite backend: one writer thread with group commit, a small pool of readers.
//!
//! The database file is in WAL mode, so readers never wait for the writer. Every write goes
//! to the [`writer`] thread, which commits concurrent requests together; reads run on
//! separate connections on tokio's blocking pool. An in-memory database (`sqlite::memory:`)
//! exists only on the writer's connection, so there every read goes through the writer too.

mod comm;
mod ops;
mod schema;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_comm;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, mpsc};

use self::watch::Watcher;
use self::writer::{Message, Request};
use super::{
    ChangeSink, Checkpoint, Completion, InsertOutcome, NewMessage, NewWorkflow, Reclaimed,
    RecordOutcome, StepRecord, StoreOptions, SystemDatabase, WorkflowRow,
};
use crate::error::{Error, Result};

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most reader connections, whatever the pool size asks for (SQLite reads are cheap and
/// the blocking pool is shared with the rest of the process).
const MAX_READERS: usize = 4;

/// Statements kept prepared per connection.
const STATEMENT_CACHE: usize = 64;

/// Where the database lives, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    /// `sqlite::memory:`: private to this store, gone when it closes.
    Memory,
    /// A file, created if missing.
    File(PathBuf),
}

impl Location {
    /// Parse a SQLite URL the way DBOS (SQLAlchemy) does, so one `DBOS_SYSTEM_DATABASE_URL`
    /// names the same file for Cairn and the `dbos` CLI: `sqlite:///relative/path`,
    /// `sqlite:////absolute/path`; also `sqlite://path` and `sqlite:path` (path as written)
    /// and `sqlite::memory:`.
    fn parse(url: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::Config(format!(
                "system database URL `{url}` {why}; expected sqlite:///relative/path, sqlite:////absolute/path or sqlite::memory:"
            ))
        };
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or_else(|| invalid("is not a sqlite: URL"))?;
        let path = rest
            .strip_prefix("///")
            .or_else(|| rest.strip_prefix("//"))
            .unwrap_or(rest);
        if path == ":memory:" {
            return Ok(Location::Memory);
        }
        if path.is_empty() {
            return Err(invalid("names no file"));
        }
        if path.contains('?') || path.contains('#') {
            return Err(invalid(
                "has a query or fragment, which Cairn does not support",
            ));
        }
        Ok(Location::File(PathBuf::from(path)))
    }
}

/// The SQLite system database.
pub(crate) struct SqliteStore {
    /// The URL it was opened with, for messages.
    url: String,
    /// Requests to the writer thread.
    writer: mpsc::UnboundedSender<Message>,
    /// The writer thread, taken by [`SystemDatabase::close`] to join it.
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Set by `close`; later calls fail with [`Error::Shutdown`].
    closed: AtomicBool,
    /// Reader connections; `None` for an in-memory database (reads go to the writer).
    readers: Option<ReaderPool>,
    /// Running change watchers, stopped by `close`.
    watchers: Mutex<Vec<Watcher>>,
}

impl SqliteStore {
    /// Open (creating and migrating if needed) the database a `sqlite:` URL names.
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<Self> {
        let location = Location::parse(url)?;
        let opening = location.clone();
        let (conn, path) = tokio::task::spawn_blocking(move || open_writer(&opening))
            .await
            .map_err(|e| Error::database("opening the SQLite system database", e))??;
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = writer::spawn(conn, rx)?;
        let readers =
            path.map(|path| ReaderPool::new(path, options.pool_size.clamp(1, MAX_READERS)));
        tracing::debug!(url, "opened the SQLite system database");
        Ok(Self {
            url: url.to_owned(),
            writer: tx,
            writer_thread: Mutex::new(Some(thread)),
            closed: AtomicBool::new(false),
            readers,
            watchers: Mutex::new(Vec::new()),
        })
    }

    /// Run `work` on the writer thread in the next group transaction.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let (job, reply) = Request::job(work);
        self.writer
            .send(Message::Job(job))
            .map_err(|_| self.writer_gone())?;
        reply.await.map_err(|_| self.writer_gone())?
    }

    /// Run `work` on a reader connection (on the writer for an in-memory database).
    async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        match &self.readers {
            Some(pool) => pool.run(work).await,
            None => self.write(work).await,
        }
    }

    /// The error for a writer thread that no longer answers.
    fn writer_gone(&self) -> Error {
        if self.closed.load(Ordering::Acquire) {
            Error::Shutdown
        } else {
            Error::database(
                format!("writing to {}", self.url),
                std::io::Error::other("the SQLite writer thread has stopped"),
            )
        }
    }
}

/// Open the writer connection, migrate, and switch to WAL. Returns the connection and, for a
/// file, its canonical path (so readers find the same file whatever the working directory).
fn open_writer(location: &Location) -> Result<(Connection, Option<PathBuf>)> {
    let db_err = |e| Error::database("opening the SQLite system database", e);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match location {
        Location::Memory => Connection::open_in_memory_with_flags(flags),
        Location::File(path) => Connection::open_with_flags(path, flags),
    }
    .map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_err)?;
    // Check the schema before anything else changes the file: a refused database stays as it was.
    schema::migrate(&conn)?;
    if let Location::File(path) = location {
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(db_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "could not switch the SQLite database to WAL mode");
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let path =
        match location {
            Location::Memory => None,
            Location::File(path) => Some(std::fs::canonicalize(path).map_err(|e| {
                Error::database(format!("resolving the path {}", path.display()), e)
            })?),
        };
    Ok((conn, path))
}

/// Open a read-only connection to the database file.
fn open_reader(path: &Path) -> Result<Connection> {
    let db_err = |e| Error::database("opening a SQLite reader connection", e);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    // Read-write at the file level (WAL readers need the shared-memory file), read-only in SQL.
    conn.pragma_update(None, "query_only", "ON")
        .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Reader connections, opened on demand, at most `permits` in use at once.
struct ReaderPool {
    /// The database file.
    path: PathBuf,
    /// Connections not in use.
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection that may be in use.
    permits: Semaphore,
}

impl ReaderPool {
    /// A pool of up to `size` connections to `path`.
    fn new(path: PathBuf, size: usize) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
        }
    }

    /// Run `work` on a reader connection on tokio's blocking pool.
    async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        // Held until the connection is back in `idle`, so at most `size` connections exist.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::database("waiting for a SQLite reader connection", e))?;
        let idle = self.idle.lock().map_err(|_| poisoned())?.pop();
        let path = self.path.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match idle {
                Some(conn) => conn,
                None => match open_reader(&path) {
                    Ok(conn) => conn,
                    Err(e) => return (None, Err(e)),
                },
            };
            let result = work(&conn);
            (Some(conn), result)
        })
        .await
        .map_err(|e| Error::database("running a SQLite read", e))?;
        if let Some(conn) = conn {
            self.idle.lock().map_err(|_| poisoned())?.push(conn);
        }
        result
    }

    /// Close the idle connections (in-flight ones close when their reads finish).
    fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

/// The error for a reader pool whose lock a panicking thread poisoned.
fn poisoned() -> Error {
    Error::database(
        "using the SQLite reader pool",
        std::io::Error::other("its lock was poisoned by a panic"),
    )
}

impl SystemDatabase for SqliteStore {
    async fn send_message(
        &self,
        msg: &NewMessage,
        sender: Option<&StepRecord>,
    ) -> Result<RecordOutcome> {
        let (msg, sender) = (msg.clone(), sender.cloned());
        let now_ms = epoch_ms();
        self.write(move |conn| comm::send_message(conn, &msg, sender.as_ref(), now_ms))
            .await
    }

    async fn consume_message(
        &self,
        rec: &StepRecord,
        topic: &str,
    ) -> Result<(RecordOutcome, Option<super::Stored>)> {
        let (rec, topic) = (rec.clone(), topic.to_owned());
        self.write(move |conn| comm::consume_message(conn, &rec, &topic))
            .await
    }

    async fn has_message(&self, workflow_id: &str, topic: &str) -> Result<bool> {
        let (workflow_id, topic) = (workflow_id.to_owned(), topic.to_owned());
        self.read(move |conn| comm::has_message(conn, &workflow_id, &topic))
            .await
    }

    async fn set_event(&self, rec: &StepRecord, key: &str, value: &str) -> Result<RecordOutcome> {
        let (rec, key, value) = (rec.clone(), key.to_owned(), value.to_owned());
        self.write(move |conn| comm::set_event(conn, &rec, &key, &value))
            .await
    }

    async fn get_event(&self, workflow_id: &str, key: &str) -> Result<Option<super::Stored>> {
        let (workflow_id, key) = (workflow_id.to_owned(), key.to_owned());
        self.read(move |conn| comm::get_event(conn, &workflow_id, &key))
            .await
    }

    async fn list_events(&self, workflow_id: &str) -> Result<Vec<(String, super::Stored)>> {
        let workflow_id = workflow_id.to_owned();
        self.read(move |conn| comm::list_events(conn, &workflow_id))
            .await
    }

    async fn write_stream(
        &self,
        rec: &StepRecord,
        key: &str,
        value: &str,
    ) -> Result<RecordOutcome> {
        let (rec, key, value) = (rec.clone(), key.to_owned(), value.to_owned());
        self.write(move |conn| comm::write_stream(conn, &rec, &key, &value))
            .await
    }

    async fn read_stream(
        &self,
        workflow_id: &str,
        key: &str,
        from_offset: i32,
    ) -> Result<Vec<(i32, super::Stored)>> {
        let (workflow_id, key) = (workflow_id.to_owned(), key.to_owned());
        self.read(move |conn| comm::read_stream(conn, &workflow_id, &key, from_offset))
            .await
    }

    async fn cancel_workflows(&self, workflow_ids: &[String], now_ms: i64) -> Result<Vec<String>> {
        let workflow_ids = workflow_ids.to_vec();
        self.write(move |conn| comm::cancel_workflows(conn, &workflow_ids, now_ms))
            .await
    }

    async fn descendants(&self, workflow_id: &str) -> Result<Vec<String>> {
        let workflow_id = workflow_id.to_owned();
        self.read(move |conn| comm::descendants(conn, &workflow_id))
            .await
    }

    async fn resume_workflow(
        &self,
        workflow_id: &str,
        executor_id: &str,
        app_version: &str,
        new_owner: &str,
        now_ms: i64,
    ) -> Result<Option<Reclaimed>> {
        let workflow_id = workflow_id.to_owned();
        let executor_id = executor_id.to_owned();
        let app_version = app_version.to_owned();
        let new_owner = new_owner.to_owned();
        self.write(move |conn| {
            comm::resume_workflow(
                conn,
                &workflow_id,
                &executor_id,
                &app_version,
                &new_owner,
                now_ms,
            )
        })
        .await
    }

    /// A read, then (only if something waits) one write transaction.
    async fn claim_enqueued(&self, claim: &super::QueueClaim) -> Result<Vec<Reclaimed>> {
        let claim = claim.clone();
        self.write(move |conn| ops::claim_enqueued(conn, &claim))
            .await
    }

    /// Poll `PRAGMA data_version` on a dedicated connection; nothing for an in-memory
    /// database, which no other connection can write.
    async fn watch_changes(&self, sink: ChangeSink, poll: Duration) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let Some(pool) = &self.readers else {
            return Ok(());
        };
        let path = pool.path.clone();
        let watcher = tokio::task::spawn_blocking(move || Watcher::start(&path, sink, poll))
            .await
            .map_err(|e| Error::database("starting the SQLite change watcher", e))??;
        let mut watchers = self.watchers.lock().map_err(|_| poisoned())?;
        // Checked under the lock `close` drains under, so no watcher outlives the store.
        if self.closed.load(Ordering::Acquire) {
            drop(watchers);
            let _ = tokio::task::spawn_blocking(move || watcher.stop()).await;
            return Err(Error::Shutdown);
        }
        watchers.push(watcher);
        Ok(())
    }

    async fn insert_workflow(&self, wf: &NewWorkflow) -> Result<InsertOutcome> {
        let wf = wf.clone();
        self.write(move |conn| ops::insert_workflow(conn, &wf))
            .await
    }

    async fn insert_child_workflow(
        &self,
        parent: &StepRecord,
        child: &NewWorkflow,
    ) -> Result<(RecordOutcome, InsertOutcome)> {
        let (parent, child) = (parent.clone(), child.clone());
        self.write(move |conn| ops::insert_child_workflow(conn, &parent, &child))
            .await
    }

    async fn record_step(&self, rec: &StepRecord) -> Result<RecordOutcome> {
        let rec = rec.clone();
        self.write(move |conn| ops::record_step(conn, &rec)).await
    }

    async fn get_checkpoint(
        &self,
        workflow_id: &str,
        function_id: i32,
    ) -> Result<Option<Checkpoint>> {
        let workflow_id = workflow_id.to_owned();
        self.read(move |conn| ops::get_checkpoint(conn, &workflow_id, function_id))
            .await
    }

    async fn list_checkpoints(&self, workflow_id: &str) -> Result<Vec<Checkpoint>> {
        let workflow_id = workflow_id.to_owned();
        self.read(move |conn| ops::list_checkpoints(conn, &workflow_id))
            .await
    }

    async fn complete_workflow(&self, c: &Completion) -> Result<bool> {
        let c = c.clone();
        self.write(move |conn| ops::complete_workflow(conn, &c))
            .await
    }

    async fn get_workflow(&self, workflow_id: &str) -> Result<Option<WorkflowRow>> {
        let workflow_id = workflow_id.to_owned();
        self.read(move |conn| ops::get_workflow(conn, &workflow_id))
            .await
    }

    async fn reclaim_pending(
        &self,
        executor_id: &str,
        app_version: &str,
        application_name: Option<&str>,
        new_owner: &str,
        now_ms: i64,
    ) -> Result<Vec<Reclaimed>> {
        let executor_id = executor_id.to_owned();
        let app_version = app_version.to_owned();
        let application_name = application_name.map(str::to_owned);
        let new_owner = new_owner.to_owned();
        self.write(move |conn| {
            ops::reclaim_pending(
                conn,
                &executor_id,
                &app_version,
                application_name.as_deref(),
                &new_owner,
                now_ms,
            )
        })
        .await
    }

    async fn dead_letter(&self, workflow_id: &str, owner_xid: &str, now_ms: i64) -> Result<bool> {
        let (workflow_id, owner_xid) = (workflow_id.to_owned(), owner_xid.to_owned());
        self.write(move |conn| ops::dead_letter(conn, &workflow_id, &owner_xid, now_ms))
            .await
    }

    async fn register_app_version(
        &self,
        version: &str,
        application_name: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let version = version.to_owned();
        let application_name = application_name.map(str::to_owned);
        self.write(move |conn| {
            ops::register_app_version(conn, &version, application_name.as_deref(), now_ms)
        })
        .await
    }

    /// Stop accepting calls, let the writer commit what is queued, and join it.
    async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Queued before `Close`, so the writer commits every earlier request first.
        let _ = self.writer.send(Message::Close);
        let thread = self
            .writer_thread
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some(thread) = thread {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => tracing::error!(url = %self.url, "the SQLite writer thread panicked"),
                Err(e) => {
                    tracing::error!(url = %self.url, error = %e, "could not join the SQLite writer thread")
                }
            }
        }
        let watchers: Vec<Watcher> = self
            .watchers
            .lock()
            .map(|mut list| list.drain(..).collect())
            .unwrap_or_default();
        if !watchers.is_empty() {
            let stopping =
                tokio::task::spawn_blocking(move || watchers.into_iter().for_each(Watcher::stop));
            if let Err(e) = stopping.await {
                tracing::error!(url = %self.url, error = %e, "could not stop the SQLite change watchers");
            }
        }
        if let Some(pool) = &self.readers {
            pool.clear();
        }
    }
}

/// The current time in epoch milliseconds (0 if the clock is before 1970).
fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
