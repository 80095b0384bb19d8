//! The writer thread: the one connection that writes, committing requests in groups.
//!
//! Requests arrive on a channel. The thread blocks for one, drains whatever else is queued
//! (up to [`MAX_BATCH`]), runs them all in one `BEGIN IMMEDIATE … COMMIT`, and replies once the
//! commit is durable. Concurrent checkpoints thus share one fsync instead of paying one each.
//!
//! A failing request must roll back only itself. The group first runs optimistically, every
//! request straight in the transaction: requests almost never fail, and a savepoint per
//! request is not free (SQLite copies each page a request changes into the savepoint's
//! journal first; at 500 checkpoints a group that was the writer's largest cost). Should one
//! fail, the whole group is rolled back and run again with each request inside its own
//! savepoint, which isolates the failure as before.
//!
//! When the group itself fails (`BEGIN IMMEDIATE` refused because another process holds the
//! write lock, a failed `COMMIT`), every request of it gets the error with its kind, so a
//! transient one sends each request back to the store's retry loop.

use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{OnSqlite, error_kind};
use crate::error::{DatabaseErrorKind, Error, Result};

/// The most requests committed together.
const MAX_BATCH: usize = 512;

/// A message to the writer thread.
pub(super) enum Message {
    /// Run this request in the next group.
    Job(Box<dyn WriteJob>),
    /// Answer with the connection's `PRAGMA data_version` (between two groups): it changes
    /// only when another connection commits, which is what the change watcher looks for.
    DataVersion(std::sync::mpsc::Sender<rusqlite::Result<i64>>),
    /// Finish the requests queued before this one, then stop.
    Close,
}

/// A request the writer runs inside a group transaction.
pub(super) trait WriteJob: Send {
    /// Run the request's statements; a failed request's savepoint is rolled back.
    fn run(&mut self, conn: &Connection) -> Ran;

    /// Reply to the caller once the group's fate is known (`Err` if the group was lost).
    fn finish(self: Box<Self>, group: std::result::Result<(), &GroupFailure>);
}

/// How one request of a group went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    /// It succeeded; its writes stay in the group.
    Ok,
    /// It failed; `transient` if its error was a transient database failure.
    Failed { transient: bool },
}

/// Why a whole group of requests was rolled back.
pub(super) struct GroupFailure {
    /// What the writer was doing.
    context: &'static str,
    /// Whether the failure can pass by itself: a group that could not begin because another
    /// process holds the write lock is transient, and every request of it is retried.
    kind: DatabaseErrorKind,
    /// The driver's error.
    error: rusqlite::Error,
}

impl GroupFailure {
    /// A failure of the group while doing `context`, as transient as the driver's error.
    fn new(context: &'static str, error: rusqlite::Error) -> Self {
        Self {
            context,
            kind: error_kind(&error),
            error,
        }
    }

    /// An [`Error`] for one request of the failed group (each caller gets its own copy),
    /// naming what that request was and what the writer was doing.
    fn to_error(&self, request: &str) -> Error {
        let context = format!("{request} ({})", self.context);
        match &self.error {
            rusqlite::Error::SqliteFailure(code, message) => Error::database_of(
                self.kind,
                context,
                rusqlite::Error::SqliteFailure(*code, message.clone()),
            ),
            other => {
                Error::database_of(self.kind, context, std::io::Error::other(other.to_string()))
            }
        }
    }
}

/// An operation and the channel its result goes back on.
struct Request<O: OnSqlite> {
    /// The operation.
    op: Arc<O>,
    /// Its result, held until the group commits (`None` until it has run).
    result: Option<Result<O::Output>>,
    /// Where the caller waits.
    reply: oneshot::Sender<Result<O::Output>>,
}

/// A job for the writer that runs `op`, and the receiver its result will arrive on.
pub(super) fn request<O: OnSqlite>(
    op: Arc<O>,
) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<O::Output>>) {
    let (reply, rx) = oneshot::channel();
    let job = Request {
        op,
        result: None,
        reply,
    };
    (Box::new(job), rx)
}

impl<O: OnSqlite> WriteJob for Request<O> {
    fn run(&mut self, conn: &Connection) -> Ran {
        let result = self.op.on_sqlite(conn);
        let ran = match &result {
            Ok(_) => Ran::Ok,
            Err(e) => Ran::Failed {
                transient: e.is_transient(),
            },
        };
        self.result = Some(result);
        ran
    }

    fn finish(self: Box<Self>, group: std::result::Result<(), &GroupFailure>) {
        let result = match (self.result, group) {
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)) | None, Err(failure)) => Err(failure.to_error(&self.op.describe())),
            (None, Ok(())) => Err(Error::database(
                self.op.describe(),
                std::io::Error::other("the SQLite writer committed a group without running it"),
            )),
        };
        // The caller may have gone away (its future dropped); nothing to do then.
        let _ = self.reply.send(result);
    }
}

/// Start the writer thread on `conn`.
pub(super) fn spawn(
    conn: Connection,
    rx: mpsc::UnboundedReceiver<Message>,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cairn-sqlite-writer".to_owned())
        .spawn(move || run(&conn, rx))
        .map_err(|e| Error::database("starting the SQLite writer thread", e))
}

/// The writer thread's loop: one group per iteration until [`Message::Close`] or every
/// sender is gone.
fn run(conn: &Connection, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    loop {
        let mut closing = false;
        match rx.blocking_recv() {
            Some(Message::Job(job)) => batch.push(job),
            Some(Message::DataVersion(reply)) => answer_data_version(conn, &reply),
            Some(Message::Close) | None => closing = true,
        }
        while !closing && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Message::Job(job)) => batch.push(job),
                // No transaction is open while a group is gathered.
                Ok(Message::DataVersion(reply)) => answer_data_version(conn, &reply),
                Ok(Message::Close) => closing = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_group(conn, &mut batch);
        }
        if closing {
            break;
        }
    }
    // Requests that raced with close are dropped; their callers see the writer gone.
    rx.close();
}

/// Send the connection's `data_version` to whoever asked (who may have gone away).
fn answer_data_version(conn: &Connection, reply: &std::sync::mpsc::Sender<rusqlite::Result<i64>>) {
    let version = conn.query_row("PRAGMA data_version", [], |row| row.get(0));
    let _ = reply.send(version);
}

/// Run `batch` in one transaction and reply to all: optimistically first, then (if a request
/// failed) again with each request in its own savepoint.
fn commit_group(conn: &Connection, batch: &mut Vec<Box<dyn WriteJob>>) {
    let outcome = match run_optimistic(conn, batch) {
        Ok(Optimistic::Committed) => Ok(()),
        // Nothing of the optimistic run may stay: roll it all back, isolate each request.
        Ok(Optimistic::RequestFailed) => conn
            .execute_batch("ROLLBACK")
            .map_err(|e| GroupFailure::new("rolling back a SQLite write transaction", e))
            .and_then(|()| run_isolated(conn, batch)),
        Err(failure) => Err(failure),
    };
    match outcome {
        Ok(()) => batch.drain(..).for_each(|job| job.finish(Ok(()))),
        Err(failure) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            if failure.kind == DatabaseErrorKind::Transient {
                // Each request is retried; the store's retry loop reports the outage once.
                tracing::debug!(error = %failure.error, "{}; the group of writes was rolled back", failure.context);
            } else {
                tracing::error!(error = %failure.error, "{}; the group of writes was rolled back", failure.context);
            }
            batch.drain(..).for_each(|job| job.finish(Err(&failure)));
        }
    }
}

/// How an optimistic run ended, short of a [`GroupFailure`].
enum Optimistic {
    /// Every request succeeded and the group committed.
    Committed,
    /// A request failed; the transaction is still open, with the earlier requests' writes.
    RequestFailed,
}

/// Run every request of `batch` straight in one transaction, stopping at the first that
/// fails, and commit if none did. `Err` means the transaction itself is gone or unusable (it
/// may still be open: the caller rolls back).
fn run_optimistic(
    conn: &Connection,
    batch: &mut [Box<dyn WriteJob>],
) -> std::result::Result<Optimistic, GroupFailure> {
    begin(conn)?;
    for job in batch.iter_mut() {
        if run_bare(conn, job.as_mut())? != Ran::Ok {
            return Ok(Optimistic::RequestFailed);
        }
    }
    commit(conn)?;
    Ok(Optimistic::Committed)
}

/// Run every request of `batch` in one transaction, each in its own savepoint (a failed one
/// is rolled back to it), and commit.
fn run_isolated(
    conn: &Connection,
    batch: &mut [Box<dyn WriteJob>],
) -> std::result::Result<(), GroupFailure> {
    begin(conn)?;
    for job in batch.iter_mut() {
        run_in_savepoint(conn, job.as_mut())?;
    }
    commit(conn)
}

/// Begin a group's transaction. `SQLITE_BUSY` here: another process held the write lock
/// beyond the busy timeout.
fn begin(conn: &Connection) -> std::result::Result<(), GroupFailure> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| GroupFailure::new("beginning a SQLite write transaction", e))
}

/// Commit a group's transaction.
fn commit(conn: &Connection) -> std::result::Result<(), GroupFailure> {
    conn.execute_batch("COMMIT")
        .map_err(|e| GroupFailure::new("committing a SQLite write transaction", e))
}

/// Run one request straight in the transaction. An `Err` means the transaction itself is
/// gone or unusable.
fn run_bare(conn: &Connection, job: &mut dyn WriteJob) -> std::result::Result<Ran, GroupFailure> {
    let ran = job.run(conn);
    if conn.is_autocommit() {
        return Err(rolled_back_by_sqlite(ran));
    }
    Ok(ran)
}

/// The failure of a group whose transaction SQLite rolled back by itself while a request ran
/// (I/O, out of memory, a lock it could not get): as transient as the request's error.
fn rolled_back_by_sqlite(ran: Ran) -> GroupFailure {
    let mut failure = GroupFailure::new(
        "running a SQLite write",
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some("the write transaction was rolled back by SQLite".to_owned()),
        ),
    );
    if ran == (Ran::Failed { transient: true }) {
        failure.kind = DatabaseErrorKind::Transient;
    }
    failure
}

/// Run one request inside `SAVEPOINT`; a failed request is rolled back to it. An `Err` here
/// means the surrounding transaction itself is gone or unusable.
fn run_in_savepoint(
    conn: &Connection,
    job: &mut dyn WriteJob,
) -> std::result::Result<(), GroupFailure> {
    let statement = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(drop)
            .map_err(|e| GroupFailure::new("running a SQLite write", e))
    };
    statement("SAVEPOINT cairn_request")?;
    let ran = run_bare(conn, job)?;
    if ran != Ran::Ok {
        statement("ROLLBACK TO cairn_request")?;
    }
    statement("RELEASE cairn_request")
}
