//! Change detection across connections and processes: a thread polling `PRAGMA data_version`.
//!
//! SQLite has no LISTEN/NOTIFY. `data_version` is a per-connection counter that changes
//! whenever *another* connection (of this process or another) commits to the file, so a
//! dedicated connection polling it sees exactly the writes the engine did not make itself
//! (its own writes it announces in-process). Each change is delivered as `("*", "")`, which
//! tells waiters to re-check whatever they wait for.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::{database_error, open_reader};
use crate::error::{Error, Result};
use crate::store::ChangeSink;

/// A running watcher thread and the means to stop it.
pub(super) struct Watcher {
    /// Dropping (or sending on) this wakes the thread and makes it stop.
    stop: mpsc::Sender<()>,
    /// The thread, joined by [`Watcher::stop`].
    thread: JoinHandle<()>,
}

impl Watcher {
    /// Open a dedicated connection to `path`, read the current `data_version`, and start
    /// polling it every `poll` (blocking: call from a blocking context).
    pub(super) fn start(path: &Path, sink: ChangeSink, poll: Duration) -> Result<Self> {
        let conn = open_reader(path)?;
        let version = data_version(&conn)?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cairn-sqlite-watch".to_owned())
            .spawn(move || run(&conn, version, &sink, poll, &stopped))
            .map_err(|e| Error::database("starting the SQLite change watcher", e))?;
        Ok(Self { stop, thread })
    }

    /// Tell the thread to stop and wait for it (blocking, but at most one poll's work).
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the SQLite change watcher thread panicked");
        }
    }
}

/// Read the connection's `data_version`.
fn data_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
        .map_err(|e| database_error("reading the SQLite data_version", e))
}

/// The watcher loop: wait `poll` (or a stop), compare `data_version`, announce a change.
fn run(
    conn: &Connection,
    mut version: i64,
    sink: &ChangeSink,
    poll: Duration,
    stopped: &mpsc::Receiver<()>,
) {
    // A zero interval would spin; a millisecond is as eager as polling can usefully be.
    let poll = poll.max(Duration::from_millis(1));
    loop {
        match stopped.recv_timeout(poll) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        match data_version(conn) {
            Ok(now) if now != version => {
                version = now;
                sink("*", "");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "could not poll the SQLite database for changes");
            }
        }
    }
}
