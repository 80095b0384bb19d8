//! The writer thread: the one connection that writes, committing requests in groups.
//!
//! Requests arrive on a channel. The thread blocks for one, drains whatever else is queued
//! (up to [`MAX_BATCH`]), runs them all in one `BEGIN IMMEDIATE … COMMIT`, each inside its own
//! savepoint so that a failing request rolls back only itself, and replies once the commit is
//! durable. Concurrent checkpoints thus share one fsync instead of paying one each.

use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// The most requests committed together.
const MAX_BATCH: usize = 512;

/// A message to the writer thread.
pub(super) enum Message {
    /// Run this request in the next group.
    Job(Box<dyn WriteJob>),
    /// Finish the requests queued before this one, then stop.
    Close,
}

/// A request the writer runs inside a group transaction.
pub(super) trait WriteJob: Send {
    /// Run the request's statements; returns whether it succeeded (a failed request's
    /// savepoint is rolled back).
    fn run(&mut self, conn: &Connection) -> bool;

    /// Reply to the caller once the group's fate is known (`Err` if the group was lost).
    fn finish(self: Box<Self>, group: std::result::Result<(), &GroupFailure>);
}

/// Why a whole group of requests was rolled back.
pub(super) struct GroupFailure {
    /// What the writer was doing.
    context: &'static str,
    /// The driver's error.
    error: rusqlite::Error,
}

impl GroupFailure {
    /// An [`Error`] for one request of the failed group (each caller gets its own copy).
    fn to_error(&self) -> Error {
        match &self.error {
            rusqlite::Error::SqliteFailure(code, message) => Error::database(
                self.context,
                rusqlite::Error::SqliteFailure(*code, message.clone()),
            ),
            other => Error::database(self.context, std::io::Error::other(other.to_string())),
        }
    }
}

/// A closure and the channel its result goes back on.
pub(super) struct Request<T, F> {
    /// The statements to run; taken when run.
    work: Option<F>,
    /// The closure's result, held until the group commits.
    result: Option<Result<T>>,
    /// Where the caller waits.
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Request<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    /// A job for the writer that runs `work`, and the receiver its result will arrive on.
    pub(super) fn job(work: F) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<T>>) {
        let (reply, rx) = oneshot::channel();
        (
            Box::new(Request {
                work: Some(work),
                result: None,
                reply,
            }),
            rx,
        )
    }
}

impl<T, F> WriteJob for Request<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = match self.work.take() {
            Some(work) => work(conn),
            None => Err(Error::database(
                "running a SQLite write",
                std::io::Error::other("request ran twice"),
            )),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, group: std::result::Result<(), &GroupFailure>) {
        let result = match (self.result, group) {
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)) | None, Err(failure)) => Err(failure.to_error()),
            (None, Ok(())) => Err(Error::database(
                "running a SQLite write",
                std::io::Error::other("request was not run"),
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
        .spawn(move || run(conn, rx))
        .map_err(|e| Error::database("starting the SQLite writer thread", e))
}

/// The writer thread's loop: one group per iteration until [`Message::Close`] or every
/// sender is gone.
fn run(conn: Connection, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    loop {
        let mut closing = false;
        match rx.blocking_recv() {
            Some(Message::Job(job)) => batch.push(job),
            Some(Message::Close) | None => closing = true,
        }
        while !closing && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Message::Job(job)) => batch.push(job),
                Ok(Message::Close) => closing = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_group(&conn, &mut batch);
        }
        if closing {
            break;
        }
    }
    rx.close();
    // Requests that raced with close are dropped; their callers see the writer gone.
    drop(conn);
}

/// Run `batch` in one transaction, each request in its own savepoint, and reply to all.
fn commit_group(conn: &Connection, batch: &mut Vec<Box<dyn WriteJob>>) {
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        let failure = GroupFailure {
            context: "beginning a SQLite write transaction",
            error,
        };
        batch.drain(..).for_each(|job| job.finish(Err(&failure)));
        return;
    }
    let mut lost: Option<GroupFailure> = None;
    for job in batch.iter_mut() {
        if let Err(error) = run_in_savepoint(conn, job.as_mut()) {
            lost = Some(GroupFailure {
                context: "running a SQLite write",
                error,
            });
            break;
        }
    }
    let lost = lost.or_else(|| {
        let error = conn.execute_batch("COMMIT").err()?;
        Some(GroupFailure {
            context: "committing a SQLite write transaction",
            error,
        })
    });
    match lost {
        None => batch.drain(..).for_each(|job| job.finish(Ok(()))),
        Some(failure) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            tracing::error!(error = %failure.error, "{}; the group of writes was rolled back", failure.context);
            batch.drain(..).for_each(|job| job.finish(Err(&failure)));
        }
    }
}

/// Run one request inside `SAVEPOINT`; a failed request is rolled back to it. An `Err` here
/// means the surrounding transaction itself is gone or unusable.
fn run_in_savepoint(conn: &Connection, job: &mut dyn WriteJob) -> rusqlite::Result<()> {
    conn.prepare_cached("SAVEPOINT cairn_request")?
        .execute([])?;
    let ok = job.run(conn);
    if conn.is_autocommit() {
        // Some errors (I/O, out of memory) make SQLite roll back the whole transaction.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some("the write transaction was rolled back by SQLite".to_owned()),
        ));
    }
    if !ok {
        conn.prepare_cached("ROLLBACK TO cairn_request")?
            .execute([])?;
    }
    conn.prepare_cached("RELEASE cairn_request")?.execute([])?;
    Ok(())
}
