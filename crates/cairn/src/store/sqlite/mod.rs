//! The SQLite backend: one writer thread with group commit, a small pool of readers.
//!
//! The database file is in WAL mode, so readers never wait for the writer. Every operation
//! implements [`OnSqlite`] once; [`SqliteStore::run`] sends a write to the [`writer`] thread,
//! which commits concurrent requests together, and a read to a connection on tokio's blocking
//! pool. An in-memory database (`sqlite::memory:`) exists only on the writer's connection, so
//! there every read goes through the writer too.
//!
//! Driver errors are classified by [`database_error`]: `SQLITE_BUSY` and `SQLITE_LOCKED`
//! (another connection or process holds the lock) are transient, so the store's retry loop
//! waits the lock out; everything else is permanent.

mod bulk;
mod comm;
mod list;
pub(crate) mod liveness;
mod manage;
pub(crate) mod ops;
mod queues;
mod schedules;
mod schema;
mod stats;
mod takeover;
#[cfg(test)]
mod tests;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::ffi::ErrorCode;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, mpsc};

use self::watch::Watcher;
use self::writer::Message;
use super::{ChangeSink, Operation, StoreOptions};
use crate::error::{DatabaseErrorKind, Error, Result};

/// An operation as SQLite runs it.
pub(crate) trait OnSqlite: Operation {
    /// Whether it writes: writes run on the writer thread and commit in a group; reads run on
    /// a reader connection.
    const WRITES: bool;

    /// Run it on `conn` (inside the writer's group transaction for a write).
    fn on_sqlite(&self, conn: &Connection) -> Result<Self::Output>;
}

/// How long a connection waits inside SQLite for another connection's lock before failing
/// with `SQLITE_BUSY`. Long enough to absorb another process's ordinary transactions (SQLite's
/// busy handler re-tries within milliseconds), short enough that a lock held for longer goes
/// back to the store's retry loop, which backs off, logs the outage once and stops at
/// shutdown, instead of blocking the writer thread (and `close`) for many seconds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// The most reader connections, whatever the pool size asks for (SQLite reads are cheap and
/// the blocking pool is shared with the rest of the process).
const MAX_READERS: usize = 4;

/// Statements kept prepared per connection.
const STATEMENT_CACHE: usize = 64;

/// The writer connection's page cache, in KiB (allocated only as the database grows).
const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// Where the database lives, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
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
    pub(crate) fn parse(url: &str) -> Result<Self> {
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
    /// The writer thread, taken by [`SqliteStore::close`] to join it.
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Set by `close`; later calls fail with [`Error::Shutdown`].
    closed: AtomicBool,
    /// Reader connections; `None` for an in-memory database (reads go to the writer).
    readers: Option<ReaderPool>,
    /// Running change watchers, stopped by `close`.
    watchers: Mutex<Vec<Watcher>>,
}

impl SqliteStore {
    /// The database file, or `None` for an in-memory database (which no other connection
    /// can open).
    pub(crate) fn file(&self) -> Option<PathBuf> {
        match Location::parse(&self.url) {
            Ok(Location::File(path)) => Some(path),
            _ => None,
        }
    }

    /// Open (creating and migrating if needed) the database a `sqlite:` URL names.
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<Self> {
        let location = Location::parse(url)?;
        let opening = location.clone();
        let create = options.create;
        let (conn, path) = tokio::task::spawn_blocking(move || open_writer(&opening, create))
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

    /// Run one attempt of an operation: a write in the writer's next group transaction, a
    /// read on a reader connection (on the writer for an in-memory database). The operation
    /// moves into the thread that runs it; nothing is copied.
    pub(crate) async fn run<O: OnSqlite>(&self, op: Arc<O>) -> Result<O::Output> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        match &self.readers {
            Some(pool) if !O::WRITES => pool.run(move |conn| op.on_sqlite(conn)).await,
            _ => self.write(op).await,
        }
    }

    /// Run `op` on the writer thread in the next group transaction.
    async fn write<O: OnSqlite>(&self, op: Arc<O>) -> Result<O::Output> {
        let (job, reply) = writer::request(op);
        self.writer
            .send(Message::Job(job))
            .map_err(|_| self.writer_gone())?;
        reply.await.map_err(|_| self.writer_gone())?
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

    /// Deliver `("*", "")` to `sink` whenever another connection or process commits, by
    /// polling `PRAGMA data_version` on the writer's connection every `poll` (so this store's
    /// own commits, which the engine announces itself, are not seen). Nothing for an
    /// in-memory database, which no other connection can write. Stopped by `close`.
    pub(crate) async fn watch_changes(&self, sink: ChangeSink, poll: Duration) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        if self.readers.is_none() {
            return Ok(());
        }
        let writer = self.writer.clone();
        let watcher = tokio::task::spawn_blocking(move || Watcher::start(writer, sink, poll))
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

    /// Stop accepting operations, let the writer commit what is queued, join it, and stop
    /// the change watchers. Later operations fail with [`Error::Shutdown`].
    pub(crate) async fn close(&self) {
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

/// A driver error as Cairn's error, saying what Cairn was doing. `SQLITE_BUSY` and
/// `SQLITE_LOCKED` (with their extended codes, e.g. `BUSY_SNAPSHOT`, `LOCKED_SHAREDCACHE`)
/// mean another connection or process holds a lock: transient. Anything else is permanent.
pub(super) fn database_error(context: impl Into<String>, error: rusqlite::Error) -> Error {
    Error::database_of(error_kind(&error), context, error)
}

/// Whether a driver error can pass by itself (see [`database_error`]).
pub(crate) fn error_kind(error: &rusqlite::Error) -> DatabaseErrorKind {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DatabaseErrorKind::Transient,
        _ => DatabaseErrorKind::Permanent,
    }
}

/// A closure turning a driver error into an [`Error`] whose context is what `op` was doing
/// (its [`Operation::describe`], built only when something failed).
pub(super) fn failed<O: Operation>(op: &O) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| database_error(op.describe(), e)
}

/// Open the writer connection, migrate, and switch to WAL. Returns the connection and, for a
/// file, its canonical path (so readers find the same file whatever the working directory).
/// Without `create`, a missing file or schema is refused and nothing is written.
fn open_writer(location: &Location, create: bool) -> Result<(Connection, Option<PathBuf>)> {
    let db_err = |e| database_error("opening the SQLite system database", e);
    if let (Location::File(path), false) = (location, create)
        && !path.exists()
    {
        return Err(Error::SchemaVersion {
            found: 0,
            expected: crate::store::SCHEMA_VERSION,
            hint: format!(
                "there is no SQLite system database at {}; launch a Cairn application with this URL first (it creates the database)",
                path.display()
            ),
        });
    }
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
    schema::migrate(&conn, create)?;
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
    // Negative: KiB. The writer touches the indexes' pages all over; SQLite's default of 2 MB
    // made it read them back from the OS again and again once the database outgrew that.
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
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
    let db_err = |e| database_error("opening a SQLite reader connection", e);
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
