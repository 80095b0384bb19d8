//! Change detection across connections and processes: a thread polling `PRAGMA data_version`.
//!
//! SQLite has no LISTEN/NOTIFY. `data_version` is a per-connection counter that changes
//! whenever *another* connection (of this process or another) commits to the file. It is read
//! on the writer's own connection (the thread asks the writer between two groups): so it sees
//! exactly the writes this store did not make, which the engine announces in-process itself.
//! Read on a connection of its own, it would see every one of the writer's commits too and
//! wake every waiter and the watchdog hundreds of times a second under load, each to find
//! nothing new. Each change is delivered as `("*", "")`, which tells waiters to re-check
//! whatever they wait for.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::writer::Message;
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
    /// Read the writer connection's current `data_version` and start polling it every `poll`
    /// (blocking: call from a blocking context).
    pub(super) fn start(
        writer: UnboundedSender<Message>,
        sink: ChangeSink,
        poll: Duration,
    ) -> Result<Self> {
        let version = data_version(&writer)?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cairn-sqlite-watch".to_owned())
            .spawn(move || run(&writer, version, &sink, poll, &stopped))
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

/// Ask the writer thread for its connection's `data_version` and wait for the answer.
fn data_version(writer: &UnboundedSender<Message>) -> Result<i64> {
    let gone = || {
        Error::database(
            "reading the SQLite data_version",
            std::io::Error::other("the SQLite writer thread has stopped"),
        )
    };
    let (reply, answer) = mpsc::channel();
    writer
        .send(Message::DataVersion(reply))
        .map_err(|_| gone())?;
    answer
        .recv()
        .map_err(|_| gone())?
        .map_err(|e| super::database_error("reading the SQLite data_version", e))
}

/// The watcher loop: wait `poll` (or a stop), compare `data_version`, announce a change.
/// Ends when told to, or when the writer thread has stopped.
fn run(
    writer: &UnboundedSender<Message>,
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
        if writer.is_closed() {
            return;
        }
        match data_version(writer) {
            Ok(now) if now != version => {
                version = now;
                sink("*", "");
            }
            Ok(_) => {}
            // Closing: the writer stopped before this thread was told to.
            Err(_) if writer.is_closed() => return,
            Err(error) => {
                tracing::warn!(%error, "could not poll the SQLite database for changes");
            }
        }
    }
}
