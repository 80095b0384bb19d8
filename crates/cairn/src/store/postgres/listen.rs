//! Change announcements: `LISTEN` on a dedicated connection (not from the pool), driven by a
//! task of its own that hands every notification to the engine's sink, reconnects with
//! backoff after a loss (a server restart ends the session with `57P01`, then refuses
//! connections while it is down), and ends when the store closes. An outage is logged once
//! when it begins and once when listening resumes, however many attempts it took.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connect::Target;
use super::error::failure;
use crate::error::{DatabaseErrorKind, Error, Result};
use crate::store::ChangeSink;

/// The channels Cairn listens on (the trigger's, the ones events and streams announce on,
/// and the one Cairn's enqueues announce on, which wakes the queue dispatcher).
const LISTEN_SQL: &str = "LISTEN dbos_notifications_channel; LISTEN dbos_workflow_events_channel; \
     LISTEN dbos_streams_channel; LISTEN cairn_queue_channel";

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between reconnection attempts (as the store's retry loop: parked waits
/// re-check only once the listener is back).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long `close` waits for a listener task before aborting it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The listeners of one store: where to connect, the shutdown signal, and the running tasks.
pub(super) struct Listeners {
    /// The pool's configuration (with its connect timeout and TCP keepalives).
    config: Config,
    /// The pool's TLS connector.
    tls: MakeRustlsConnect,
    /// The URL with its password masked, for messages.
    redacted: String,
    /// `true` once the store is closed.
    shutdown: watch::Sender<bool>,
    /// The listener tasks started so far.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// How a listening session ended.
enum End {
    /// The store closed.
    Stopped,
    /// The connection failed or was lost.
    Lost(Error),
}

impl Listeners {
    /// Listeners connecting where the pool connects (after `bootstrap` settled the TLS mode).
    pub(super) fn new(target: &Target) -> Self {
        Self {
            config: target.config.clone(),
            tls: target.tls.clone(),
            redacted: target.redacted.clone(),
            shutdown: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Start a listener delivering to `sink`; returns once it is listening, or with the
    /// (classified) error of its first connection attempt (then nothing keeps running). After
    /// [`close`](Self::close): [`Error::Shutdown`].
    pub(super) async fn start(&self, sink: ChangeSink) -> Result<()> {
        let stop = self.shutdown.subscribe();
        if *stop.borrow() {
            return Err(Error::Shutdown);
        }
        let (ready, listening) = oneshot::channel();
        let session = Session {
            config: self.config.clone(),
            tls: self.tls.clone(),
            context: format!("listening for changes on {}", self.redacted),
            sink,
        };
        let task = tokio::spawn(run(session, stop, ready));
        self.lock().push(task);
        match listening.await {
            Ok(outcome) => outcome,
            // The task ended without a word: the store closed while it was connecting.
            Err(_) => Err(Error::Shutdown),
        }
    }

    /// Signal every listener to stop and wait for them (aborting any that does not end).
    pub(super) async fn close(&self) {
        self.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.lock());
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                abort.abort();
            }
        }
    }

    /// The task list, even if a panic poisoned its lock.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a listener task connects to and delivers to.
struct Session {
    config: Config,
    tls: MakeRustlsConnect,
    /// `listening for changes on <url>`, for errors.
    context: String,
    sink: ChangeSink,
}

/// A listener task: sessions one after the other until the store closes. The first session's
/// outcome goes to `ready`; after a loss it reconnects with backoff and, once listening again,
/// delivers `("*", "")` so waiters re-check what they may have missed.
async fn run(
    session: Session,
    mut stop: watch::Receiver<bool>,
    ready: oneshot::Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = MIN_BACKOFF;
    // When the current outage began, if one is in progress.
    let mut outage: Option<Instant> = None;
    loop {
        let mut listened = false;
        match session
            .listen(&mut stop, &mut ready, &mut outage, &mut listened)
            .await
        {
            End::Stopped => return,
            End::Lost(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e));
                    return;
                }
                if outage.is_none() {
                    outage = Some(Instant::now());
                    tracing::warn!(error = %e, "lost the change listener connection; reconnecting until the database is back");
                } else {
                    tracing::debug!(error = %e, retry_in = ?backoff, "the change listener could not reconnect yet");
                }
            }
        }
        if listened {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|closed| *closed) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl Session {
    /// One connection: connect, `LISTEN`, then deliver notifications until it is lost or the
    /// store closes. Sets `listened` once the `LISTEN`s took effect; then ends `outage`.
    async fn listen(
        &self,
        stop: &mut watch::Receiver<bool>,
        ready: &mut Option<oneshot::Sender<Result<()>>>,
        outage: &mut Option<Instant>,
        listened: &mut bool,
    ) -> End {
        let (client, mut connection) = tokio::select! {
            connected = self.config.connect(self.tls.clone()) => match connected {
                Ok(pair) => pair,
                Err(e) => return self.lost(e),
            },
            _ = stop.wait_for(|closed| *closed) => return End::Stopped,
        };
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        let listen = client.batch_execute(LISTEN_SQL);
        tokio::pin!(listen);
        loop {
            tokio::select! {
                done = &mut listen => match done {
                    Ok(()) => break,
                    Err(e) => return self.lost(e),
                },
                message = messages.next() => if let Some(end) = self.deliver(message) {
                    return end;
                },
                _ = stop.wait_for(|closed| *closed) => return End::Stopped,
            }
        }
        *listened = true;
        match ready.take() {
            Some(ready) => {
                let _ = ready.send(Ok(()));
            }
            None => {
                if let Some(since) = outage.take() {
                    tracing::info!(lasted = ?since.elapsed(), "the change listener is listening again");
                }
                (self.sink)("*", "");
            }
        }
        loop {
            tokio::select! {
                message = messages.next() => if let Some(end) = self.deliver(message) {
                    return end;
                },
                _ = stop.wait_for(|closed| *closed) => return End::Stopped,
            }
        }
    }

    /// Hand a notification to the sink; returns how the session ended if the connection did.
    fn deliver(
        &self,
        message: Option<std::result::Result<AsyncMessage, tokio_postgres::Error>>,
    ) -> Option<End> {
        match message {
            Some(Ok(AsyncMessage::Notification(n))) => {
                (self.sink)(n.channel(), n.payload());
                None
            }
            Some(Ok(AsyncMessage::Notice(notice))) => {
                tracing::debug!(%notice, "notice on the change listener connection");
                None
            }
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(self.lost(e)),
            None => Some(End::Lost(Error::database_of(
                DatabaseErrorKind::Transient,
                self.context.clone(),
                std::io::Error::other("the server closed the connection"),
            ))),
        }
    }

    /// The session ended with a driver error (classified, with the server's words).
    fn lost(&self, e: tokio_postgres::Error) -> End {
        End::Lost(failure(e, self.context.clone()))
    }
}
